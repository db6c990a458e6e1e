"""lss_vlm.engine"""
