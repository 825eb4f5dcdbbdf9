"""SAM 2 segmentation for dora-rs: a node (`dora-sam2`) and helpers to read its masks."""

__version__ = "0.7.0"
