"""SAM 2 segmentation for dora-rs: boxes, clicks or words (SAM 3) in, masks and tracks out.

The node `dora-sam2` (node.py: dora events in, messages out; codecs.py: messages to domain objects and
back; scheduling.py, engine.py and tracking.py: what to answer and how; model.py, video.py: the model),
its sister nodes `dora-sam2-click`, `dora-sam2-rerun` and `dora-sam2-dataset`, and `dora_sam2.masks` for
the nodes that read its answers."""

__version__ = "0.8.0"
