"""The dora adapter: events in, messages out. All the thinking happens in the engine."""

from __future__ import annotations

import itertools
import logging
import sys

from dora import Node

from . import codecs, overlay
from .domain import TIMESTAMP_TOLERANCE, Frame, InputError, Masks, Prompt
from .engine import Segmenter
from .model import ModelLoadError, Sam2ImageModel
from .settings import ConfigError, Settings
from .stats import Stages, Stats
from .tracking import Tracker
from .video import Sam2StreamingModel

log = logging.getLogger("dora_sam2")

PROMPT_DECODERS = {"bbox": codecs.decode_boxes, "boxes2d": codecs.decode_boxes, "points": codecs.decode_points}
BOX_INPUTS = ("bbox", "boxes2d")
OUTPUTS = ("mask", "masks", "overlay")
RESET = "reset"  # what a message on the `reset` input means, whatever it holds


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.from_env()
        model = Sam2ImageModel.load(settings, video=settings.mode == "track")
    except (ConfigError, ModelLoadError) as error:
        log.error("%s", error)
        sys.exit(1)
    if settings.warmup:
        log.info("warm-up: first encode + decode took %.2f s", model.warmup())

    # Registering with the daemon only now, model loaded and warm, makes dora start the dataflow once we
    # can answer: no frames pile up while weights load.
    node = Node()
    config = _node_config(node)
    if settings.mode == "track":
        sam2 = TrackNode(node, Sam2StreamingModel(model), config, settings)
    else:
        segmenter = Segmenter(model, settings.frame_buffer, cameras=camera_inputs(config["inputs"]))
        sam2 = Sam2Node(node, segmenter, config["outputs"], settings.stats_every_s)
    sam2.run()
    if settings.stats_file:
        sam2.stats.write(settings.stats_file)


class Adapter:
    """What both modes share: the event loop, the outputs, the stats."""

    def __init__(self, node, stages: Stages, declared_outputs, stats_every_s: float):
        self.node = node
        self.stages = stages
        self.outputs = [name for name in OUTPUTS if name in declared_outputs]
        if not self.outputs:
            log.warning("the dataflow declares none of the outputs %s for this node: nothing will be sent", OUTPUTS)
        self.stats = Stats(stages, stats_every_s)
        self._ignored_inputs: set[str] = set()

    def run(self) -> None:
        for events in event_batches(self.node):
            self.handle(events)
        self.finish()
        self.stats.report(final=True)

    def handle(self, events: list[dict]) -> None:
        raise NotImplementedError

    def inputs(self, events: list[dict]):
        """The batch's input events as the node's vocabulary: a Frame, a Prompt, or RESET. A bad message
        is one log line and skipped; an input this node does not read is said once."""
        for event in events:
            if event["type"] != "INPUT":
                continue
            input_id = event["id"]
            try:
                if input_id.startswith("image"):
                    with self.stages.time("frame_decode"):
                        item = codecs.decode_frame(input_id, event["value"], event["metadata"])
                elif input_id in PROMPT_DECODERS:
                    item = PROMPT_DECODERS[input_id](input_id, event["value"], event["metadata"])
                    self.stats.prompts += 1
                elif input_id == "reset":
                    item = RESET
                else:
                    self._ignore(input_id)
                    continue
            except InputError as error:
                log.warning("%s", error)
                continue
            yield item

    def finish(self) -> None:
        """The stream has ended."""

    def send(self, frame: Frame, masks: Masks) -> None:
        with self.stages.time("send"):
            self._send(frame, masks)
        self.stats.answered(masks.timestamp)

    def _send(self, frame: Frame, masks: Masks) -> None:
        metadata = codecs.masks_metadata(masks)
        if "mask" in self.outputs:
            self.node.send_output("mask", codecs.encode_masks_uint8(masks), metadata)
        if "masks" in self.outputs:
            self.node.send_output("masks", codecs.encode_masks_bool(masks), metadata)
        if "overlay" in self.outputs:  # drawn only when a dataflow asks for it
            self.node.send_output("overlay", *codecs.encode_overlay(frame, overlay.draw(frame, masks)))

    def _ignore(self, input_id: str) -> None:
        if input_id not in self._ignored_inputs:
            self._ignored_inputs.add(input_id)
            log.warning("input '%s' is not one this node reads (image*, bbox, boxes2d, points, reset); ignoring it", input_id)


class Sam2Node(Adapter):
    """MODE=segment: each prompt answered on the frame it was computed on."""

    def __init__(self, node, segmenter: Segmenter, declared_outputs, stats_every_s: float = 10.0):
        super().__init__(node, segmenter.stages, declared_outputs, stats_every_s)
        self.segmenter = segmenter
        self._held: dict[tuple[str, str | None], Prompt] = {}  # prompts waiting for their frame

    def finish(self) -> None:
        for prompt in self._held.values():  # the stream ended before their frames: answer, do not drop
            self.answer(prompt)

    def handle(self, events: list[dict]) -> None:
        """One batch of queued events: keep every frame, answer only the newest prompt per source."""
        waited = {id(prompt) for prompt in self._held.values()}
        candidates: dict[tuple[str, str | None], list[Prompt]] = {key: [p] for key, p in self._held.items()}
        self._held = {}
        for item in self.inputs(events):
            if isinstance(item, Frame):
                self.segmenter.add_frame(item)
            elif isinstance(item, Prompt):
                candidates.setdefault((item.input_id, item.image_id), []).append(item)
            # RESET: segment mode keeps no objects between prompts, so there is nothing to drop
        for key, prompts in candidates.items():
            self._answer_newest(key, prompts, waited)
        self.stats.report()

    def _answer_newest(self, key, prompts: list[Prompt], waited: set[int]) -> None:
        """Newest wins; but dora may deliver boxes before the frame they came from. A newest prompt whose
        frame is not here yet waits one batch for it while the newest older one is answered, and one
        whose camera has sent no frame at all waits for that first frame."""
        newest = prompts[-1]
        if self.segmenter.awaits_first_frame(newest):
            self._held[key] = newest
            self.stats.skipped += len(prompts) - 1  # none of them could be answered, and newest wins
            return
        if id(newest) in waited or not self.segmenter.awaits_frame(newest):
            chosen, skipped = newest, len(prompts) - 1
        else:
            self._held[key] = newest
            chosen, skipped = (prompts[-2], len(prompts) - 2) if len(prompts) > 1 else (None, 0)
        self.stats.skipped += skipped
        if chosen is not None:
            self.answer(chosen)

    def answer(self, prompt: Prompt) -> None:
        try:
            frame, masks = self.segmenter.segment(prompt)
        except InputError as error:
            log.warning("%s", error)
            return
        except Exception as error:  # the model failed on this frame (out of memory, ...): the next one may not
            log.error("input '%s': segmentation failed on this frame (%s: %s); skipping it",
                      prompt.input_id, type(error).__name__, error)
            return
        self.send(frame, masks)


class TrackNode(Adapter):
    """MODE=track: every frame answered with all live tracks; prompts start and refresh them."""

    def __init__(self, node, model: Sam2StreamingModel, config: dict, settings: Settings):
        super().__init__(node, Stages(), config["outputs"], settings.stats_every_s)
        self.model = model
        self.settings = settings
        self.cameras = camera_inputs(config["inputs"])
        self.trackers: dict[str, Tracker] = {}  # one per camera
        self._ids = itertools.count(1)  # shared, so an id names one object across cameras
        self._detections: dict[str, Prompt] = {}  # per camera, newest wins, until its frame is here
        self._clicks: dict[str, list[Prompt]] = {}  # per camera, all of them, in order

    def handle(self, events: list[dict]) -> None:
        """Prompts wait for the next frame of their camera; only each camera's newest frame is answered."""
        frames: dict[str, Frame] = {}
        for item in self.inputs(events):
            if isinstance(item, Frame):
                self.stats.skipped += item.image_id in frames
                frames[item.image_id] = item
            elif isinstance(item, Prompt):
                self._queue(item)
            else:  # RESET: frames before it are answered with the tracks they had
                self._step_all(frames)
                frames = {}
                self.reset()
        self._step_all(frames)
        self._report_tracks()
        self.stats.report()

    def _step_all(self, frames: dict[str, Frame]) -> None:
        for camera, frame in frames.items():
            self.step(camera, frame)

    def step(self, camera: str, frame: Frame) -> None:
        detections = self._detections.pop(camera, None)
        if detections is not None and _taken_after(detections, frame):  # its frame is still on the way
            self._detections[camera], detections = detections, None
        tracker = self._tracker(camera)
        try:
            masks = tracker.step(frame, detections, self._clicks.pop(camera, []))
        except Exception as error:  # the model failed on this frame (out of memory, ...): the next one may not
            log.error("input '%s': tracking failed on this frame (%s: %s); skipping it",
                      camera, type(error).__name__, error)
            return
        self.send(frame, masks)

    def reset(self) -> None:
        """Drop every track, and prompts not yet applied: what comes after the reset starts afresh."""
        for tracker in self.trackers.values():
            tracker.reset()
        self._detections.clear()
        self._clicks.clear()

    def _queue(self, prompt: Prompt) -> None:
        try:
            camera = self._camera(prompt)
        except InputError as error:
            log.warning("%s", error)
            return
        if prompt.input_id in BOX_INPUTS:
            self.stats.skipped += camera in self._detections
            self._detections[camera] = prompt
        else:
            self._clicks.setdefault(camera, []).append(prompt)

    def _camera(self, prompt: Prompt) -> str:
        if prompt.image_id is not None:
            if self.cameras and prompt.image_id not in self.cameras:
                raise InputError(prompt.input_id, f"image_id {prompt.image_id!r} names no camera input "
                                                  f"(this node reads {', '.join(self.cameras)})")
            return prompt.image_id
        camera = self.cameras[0] if self.cameras else next(iter(self.trackers), None)
        if camera is None:
            raise InputError(prompt.input_id, "prompt arrived before any image; it is dropped")
        return camera

    def _tracker(self, camera: str) -> Tracker:
        if camera not in self.trackers:
            s = self.settings
            self.trackers[camera] = Tracker(self.model, s.max_objects, s.lost_frames, s.match_iou,
                                            ids=self._ids, stages=self.stages)
        return self.trackers[camera]

    def _report_tracks(self) -> None:
        trackers = self.trackers.values()
        self.stats.tracking = {
            "started": sum(t.started for t in trackers),
            "ended": sum(t.ended for t in trackers),
            "live": sum(len(t.tracks) for t in trackers),
        }


def _taken_after(prompt: Prompt, frame: Frame) -> bool:
    return (prompt.timestamp is not None and frame.timestamp is not None
            and prompt.timestamp - frame.timestamp > TIMESTAMP_TOLERANCE)


def event_batches(node):
    """Each wait for an event also takes whatever queued behind it, so stale work can be skipped."""
    while True:
        event = node.next()
        if event is None:
            return
        yield [event, *_drain(node)]


def _drain(node) -> list:
    try:
        return list(node.drain() or [])
    except (RuntimeError, AttributeError):  # the channel closes while a dataflow ends; dora 0.5 has no drain
        return []


def _node_config(node) -> dict:
    try:
        config = node.node_config()
        return {"inputs": list(config.get("inputs", {})), "outputs": list(config.get("outputs", []))}
    except AttributeError:  # dora 0.5: send on every output we know; undeclared ones are dropped by dora
        return {"inputs": [], "outputs": list(OUTPUTS)}


def camera_inputs(inputs: list[str]) -> list[str]:
    """The dataflow's camera inputs, the default camera first: `image` if there is one, else by name.
    Prompts that name no camera (`image_id`) go to the default."""
    return sorted((name for name in inputs if name.startswith("image")), key=lambda name: (name != "image", name))


if __name__ == "__main__":
    main()
