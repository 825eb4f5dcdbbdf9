"""A synthetic world: seeded video clips with exact ground truth, to train and measure trackers on.

A `Scene` (scene.py) says everything a clip holds: objects with a look and a pose on every frame,
foreground occluders, the background, light and camera shake. Builders (scenarios.py) make one from a
seed: `random_scene`, or one built around an event (`occlusion`, `crossing`, `exit_and_return`). The
renderer (render.py) draws it with an id buffer beside the image, so each object's mask on each frame is
exactly its visible pixels; `truth.frames` yields them; writer.py writes clips as a dataset in
`dora-sam2-dataset`'s layout, and `dora-sam2-world` (cli.py) is the command. numpy and OpenCV only.

    from dora_sam2.world import Format, occlusion, frames
    scene = occlusion(seed=7, fmt=Format(320, 240, fps=30, frames=90), hidden_seconds=1.0)
    for frame in frames(scene):
        frame.rgb, [(o.track_id, o.mask, o.visibility) for o in frame.objects]
"""

from .render import Footage, render
from .scenarios import SCENARIOS, crossing, exit_and_return, occlusion, random_scene
from .scene import Event, Format, Look, Scene, Texture, Thing, from_json, to_json
from .truth import FrameTruth, ObjectTruth, frames

__all__ = ["SCENARIOS", "Event", "Footage", "Format", "FrameTruth", "Look", "ObjectTruth", "Scene", "Texture", "Thing",
           "crossing", "exit_and_return", "frames", "from_json", "occlusion", "random_scene", "render", "to_json"]
