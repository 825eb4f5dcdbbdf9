"""The dora adapter: events in, messages out. All the thinking happens in the engine."""

from __future__ import annotations

import logging
import sys

from dora import Node

from . import codecs, overlay
from .domain import Frame, InputError, Masks, Prompt
from .engine import Segmenter
from .model import ModelLoadError, Sam2ImageModel
from .settings import ConfigError, Settings
from .stats import Stats

log = logging.getLogger("dora_sam2")

PROMPT_DECODERS = {"bbox": codecs.decode_boxes, "boxes2d": codecs.decode_boxes, "points": codecs.decode_points}
OUTPUTS = ("mask", "masks", "overlay")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.from_env()
        model = Sam2ImageModel.load(settings)
    except (ConfigError, ModelLoadError) as error:
        log.error("%s", error)
        sys.exit(1)
    if settings.warmup:
        log.info("warm-up: first encode + decode took %.2f s", model.warmup())

    # Registering with the daemon only now, model loaded and warm, makes dora start the dataflow once we
    # can answer: no frames pile up while weights load.
    node = Node()
    config = _node_config(node)
    segmenter = Segmenter(model, settings.frame_buffer, default_camera=_default_camera(config["inputs"]))
    sam2 = Sam2Node(node, segmenter, config["outputs"], settings.stats_every_s)
    sam2.run()
    if settings.stats_file:
        sam2.stats.write(settings.stats_file)


class Sam2Node:
    def __init__(self, node, segmenter: Segmenter, declared_outputs, stats_every_s: float = 10.0):
        self.node = node
        self.segmenter = segmenter
        self.outputs = [name for name in OUTPUTS if name in declared_outputs]
        if not self.outputs:
            log.warning("the dataflow declares none of the outputs %s for this node: nothing will be sent", OUTPUTS)
        self.stats = Stats(segmenter.stages, stats_every_s)
        self._ignored_inputs: set[str] = set()
        self._held: dict[tuple[str, str | None], Prompt] = {}  # prompts waiting one batch for their frame

    def run(self) -> None:
        for events in event_batches(self.node):
            self.handle(events)
        for prompt in self._held.values():  # the stream ended before their frames: answer, do not drop
            self.answer(prompt)
        self.stats.report(final=True)

    def handle(self, events: list[dict]) -> None:
        """One batch of queued events: keep every frame, answer only the newest prompt per source."""
        waited = {id(prompt) for prompt in self._held.values()}
        candidates: dict[tuple[str, str | None], list[Prompt]] = {key: [p] for key, p in self._held.items()}
        self._held = {}
        for event in events:
            if event["type"] != "INPUT":
                continue
            input_id = event["id"]
            try:
                if input_id.startswith("image"):
                    with self.segmenter.stages.time("frame_decode"):
                        frame = codecs.decode_frame(input_id, event["value"], event["metadata"])
                    self.segmenter.add_frame(frame)
                elif input_id in PROMPT_DECODERS:
                    prompt = PROMPT_DECODERS[input_id](input_id, event["value"], event["metadata"])
                    candidates.setdefault((input_id, prompt.image_id), []).append(prompt)
                elif input_id == "reset":
                    continue  # segment mode keeps no objects between prompts: nothing to drop
                else:
                    self._ignore(input_id)
            except InputError as error:
                log.warning("%s", error)
        for key, prompts in candidates.items():
            self._answer_newest(key, prompts, waited)
        self.stats.report()

    def _answer_newest(self, key, prompts: list[Prompt], waited: set[int]) -> None:
        """Newest wins; but dora may deliver boxes before the frame they came from, so a newest prompt
        whose frame is not here yet waits one batch for it while the newest older one is answered."""
        newest = prompts[-1]
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

    def send(self, frame: Frame, masks: Masks) -> None:
        with self.segmenter.stages.time("send"):
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


def _default_camera(inputs: list[str]) -> str | None:
    cameras = sorted(name for name in inputs if name.startswith("image"))
    return "image" if "image" in cameras else (cameras[0] if cameras else None)


if __name__ == "__main__":
    main()
