"""The loss zoo: every segmentation loss of the toolkit, built by name with ``build_loss``."""
