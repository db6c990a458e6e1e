"""Data: the phantom, readers for real datasets, the manifest and the MONAI pipeline."""
