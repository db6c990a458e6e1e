"""lss_vlm.models"""
