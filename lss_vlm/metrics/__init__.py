"""lss_vlm.metrics"""
