"""lss-vlm: a vision-language benchmark toolkit for lumbar spinal stenosis on multi-view MRI."""

__version__ = "0.1.0"
