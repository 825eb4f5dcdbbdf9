"""The dora adapter: events in, messages out. What to answer is scheduling.py's; how, the engine's and the tracker's."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter, deque

from . import codecs, overlay
from .choices import ChoicesFile, KeptChoice, attention_key, choices_path, dtype_key, memory_group_key
from .devices import cpu_has_fast_bf16, resolve_dtype
from .domain import Frame, InputError, Masks, Phrases
from .engine import Segmenter
from .joining import join_dataflow
from .loading import ModelLoadError, load_checkpoint
from .memory_attention import AttentionPath
from .model import Sam2Backend
from .phrases import PhraseSearch
from .sam3 import Sam3Finder
from .scheduling import BOX_INPUTS, RESET, DetectionFilter, Remove, SchedulePolicy, SegmentScheduler, TrackScheduler
from .settings import ConfigError, Limits, Settings
from .stats import Stages, Stats
from .throttle import Throttle
from .video import Sam2StreamingModel

log = logging.getLogger("dora_sam2")

PROMPT_INPUTS = ("bbox", "boxes2d", "points")
OUTPUTS = ("mask", "masks", "overlay", "boxes2d")
BAD_INPUT_LINES = 20  # per input every 10 s: each distinct problem is seen, a flood of them is not
MIN_WAKE_SECONDS = 0.01  # a wait on dora is never shorter: a deadline just passed does not spin the loop


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.from_env()
        checkpoint = load_checkpoint(settings.model, video=settings.mode == "track", device=settings.device,
                                     dtype=settings.dtype, image_size=settings.image_size, threads=settings.threads,
                                     compile=settings.compile)
        model = checkpoint.model
        stages = Stages()  # the finder's stage times and the engine's or tracker's, in one stats line
        search = phrase_search(settings, checkpoint.finder, stages)
    except (ConfigError, ModelLoadError) as error:
        log.error("%s", error)
        sys.exit(1)
    if settings.warmup:
        measured = False
        if settings.dtype == "auto" and model.device.type == "cpu" and cpu_has_fast_bf16():
            measured = _measure_dtype(model, settings)
        what = "decode (the measuring's encodes were its first encode)" if measured else "first encode + decode"
        log.info("warm-up: %s took %.2f s", what, checkpoint.warmup())
        if settings.mode == "track" and model.device.type == "cpu":
            _choose_attention(model, settings)
            _choose_memory_group(model, settings)

    # Registering with the daemon only now, model loaded and warm, makes dora start the dataflow once we
    # can answer: no frames pile up while weights load.
    node = join_dataflow()
    config = _node_config(node)
    stats = Stats(stages, settings.stats_every)
    answering = scheduler(settings, model, camera_inputs(config["inputs"]), stats, search,
                          [name for name in config["inputs"] if name in BOX_INPUTS])
    adapter = Adapter(node, answering, stats, config["outputs"], settings.mask_layout, settings.limits)
    adapter.run(settings.every_frame, keep=settings.frame_buffer)
    if settings.stats_file:
        stats.write(settings.stats_file)


def _measure_dtype(model: Sam2Backend, settings: Settings) -> bool:
    """DTYPE=auto on a CPU with native bf16: the faster of bf16 and fp32, measured, not assumed; or, where
    an earlier start on this machine measured it for this model, size and libraries, what it found
    (choices.py). True when measured now."""
    def measure() -> tuple[str, dict[str, float]]:
        seconds = model.choose_dtype_by_measuring()
        return str(model.dtype).removeprefix("torch."), {str(d).removeprefix("torch."): s for d, s in seconds.items()}

    return _kept_or_measured(
        settings, "DTYPE=auto", "one encode", dtype_key(model, settings.compile), ChoicesFile.find_dtype,
        ChoicesFile.keep_dtype, lambda kept: model.keep_dtype(resolve_dtype(kept, model.device)), measure,
        force=("DTYPE forces one", "set DTYPE to force one"))


def _choose_attention(model: Sam2Backend, settings: Settings) -> None:
    """Track mode on a CPU: memory attention the way that runs fastest here in the node's dtype (the fused
    kernel, or blocks of some size: memory_attention.AttentionPath), measured, or read where an earlier
    start measured it for this machine, model, size, dtype and libraries (choices.py)."""
    streaming = Sam2StreamingModel(model)
    if len(streaming.attention_paths) < 2:  # several heads: the fused kernel is the only way
        return

    def measure() -> tuple[str, dict[str, float]]:
        seconds = streaming.choose_attention_by_measuring()
        return str(model.attention_path), {str(path): s for path, s in seconds.items()}

    dtype = str(model.dtype).removeprefix("torch.")
    _kept_or_measured(
        settings, "memory attention", f"one layer in {dtype}", attention_key(model, settings.compile),
        ChoicesFile.find_attention, ChoicesFile.keep_attention,
        lambda kept: setattr(model, "attention_path", AttentionPath.named(kept)), measure)


def _choose_memory_group(model: Sam2Backend, settings: Settings) -> None:
    """Track mode on a CPU: how many objects' memories to encode in one batch, the number that costs least
    per object here, measured or read as `_choose_attention`'s path is."""
    streaming = Sam2StreamingModel(model)

    def measure() -> tuple[str, dict[str, float]]:
        seconds = streaming.choose_memory_group_by_measuring()
        return str(model.memory_group), {f"{group} at once": s for group, s in seconds.items()}

    dtype = str(model.dtype).removeprefix("torch.")
    _kept_or_measured(
        settings, "memory encoder batch", f"one object's memory in {dtype}",
        memory_group_key(model, settings.compile), ChoicesFile.find_memory_group, ChoicesFile.keep_memory_group,
        lambda kept: setattr(model, "memory_group", int(kept)), measure)


def _kept_or_measured(settings: Settings, what: str, unit: str, key: dict, find, keep, use, measure,
                      force: tuple[str, str] | None = None) -> bool:
    """A choice read from choices.py's file where an earlier start kept one under `key` (then `use`-d),
    else `measure`-d now (which applies it) and kept; one log line either way. True when measured now."""
    choices = ChoicesFile(choices_path())
    kept: KeptChoice | None = None if settings.remeasure else find(choices, key)
    if kept is not None:
        use(kept.value)
        log.info("%s: %s, as measured on this machine at %s (%s: %s), read from %s; REMEASURE=1 measures again%s",
                 what, kept.value, kept.measured, unit, kept.timings(), choices.path, f", {force[0]}" if force else "")
        return False
    value, seconds = measure()
    why = "REMEASURE=1" if settings.remeasure else "none kept for this machine, model, input size and versions"
    saved = keep(choices, key, value, seconds)
    where = f", the choice saved in {choices.path} for later starts" if saved else ""
    timings = ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in seconds.items())
    log.info("%s: %s takes %s here: %s kept%s; measured now (%s)%s", what, unit, timings, value,
             f" ({force[1]})" if force else "", why, where)
    return True


def phrase_search(settings: Settings, finder: Sam3Finder | None, stages: Stages | None = None) -> PhraseSearch:
    """The phrases to find (TEXT, then the `text` input) and SAM 3's finder (None for a model that cannot
    read words), timed into `stages`; ConfigError for TEXT without a finder."""
    search = PhraseSearch(finder, settings.model, min_score=settings.phrase_min_score,
                          limit=settings.max_objects, stages=stages)
    try:
        search.use(Phrases(settings.text), input_id="TEXT")
    except InputError as error:
        raise ConfigError(f"TEXT is set, but {error.problem}.") from None
    return search


def scheduler(settings: Settings, model: Sam2Backend, cameras: list[str], stats: Stats,
              search: PhraseSearch | None = None, box_inputs: list[str] | None = None):
    """The engine (segment) or a tracker per camera (track), behind the policy of what to answer;
    `box_inputs`, the detector inputs wired to the node (a camera's first frames wait for them)."""
    s = settings
    detections = DetectionFilter(s.min_confidence, s.classes, s.limits.max_boxes)
    if s.mode == "track":
        return TrackScheduler(Sam2StreamingModel(model), stats, cameras, SchedulePolicy.from_settings(s), detections,
                              s.limits, search, box_inputs=box_inputs or ())
    segmenter = Segmenter(model, s.frame_buffer, cameras=cameras, stages=stats.stages)
    return SegmentScheduler(segmenter, stats, s.every_frame, detections, search)


class Adapter:
    """dora events in, as Frames, Prompts and RESET for the scheduler; its answers out, as messages."""

    def __init__(self, node, scheduler, stats: Stats, declared_outputs, mask_layout: str = "union",
                 limits: Limits = Limits()):
        self.node = node
        self.mask_layout = mask_layout
        self.limits = limits
        self._bad_input = Throttle(log, burst=BAD_INPUT_LINES)
        self.scheduler = scheduler
        self.stats = stats
        self.stages = stats.stages
        self.outputs = [name for name in OUTPUTS if name in declared_outputs]
        if not self.outputs:
            log.warning("the dataflow declares none of the outputs %s for this node: nothing will be sent", OUTPUTS)
        self._ignored_inputs: set[str] = set()

    def run(self, every_frame: bool = False, keep: int = 30) -> None:
        """Live, events are pumped off dora's queues while the model works (EventPump); with EVERY_FRAME
        they are taken from dora in batches, dora's queues holding the rest."""
        if every_frame:
            for events in event_batches(self.node, self.scheduler.wake_in):
                self.handle(events)
        else:
            for events, dropped in EventPump(self.node, keep).batches():
                self._count_dropped(dropped)
                self.handle(events)
        self.finish()

    def _count_dropped(self, dropped: Counter) -> None:
        """Inputs the pump dropped as stale count as skipped, as those the scheduler passes over do."""
        for input_id, count in dropped.items():
            if input_id in PROMPT_INPUTS:
                self.stats.prompts += count
            if input_id in PROMPT_INPUTS or (input_id.startswith("image") and self.scheduler.answers_frames):
                self.stats.skipped += count

    def handle(self, events: list[dict]) -> None:
        for frame, masks in self.scheduler.handle(self.inputs(events)):
            self.send(frame, masks)
        self.stats.report()

    def finish(self) -> None:
        """The stream has ended: what the scheduler still holds is answered."""
        for frame, masks in self.scheduler.finish():
            self.send(frame, masks)
        self.stats.report(final=True)

    def inputs(self, events: list[dict]):
        """The batch's input events as the node's vocabulary: a Frame, a Prompt, or RESET. A bad message
        is one log line (at most BAD_INPUT_LINES per input every 10 s) and skipped; an input this node
        does not read is said once."""
        for event in events:
            if event["type"] != "INPUT":
                continue
            input_id, value, metadata = event["id"], event["value"], event["metadata"]
            try:
                if input_id.startswith("image"):
                    with self.stages.time("frame_decode"):
                        item = codecs.decode_frame(input_id, value, metadata, self.limits)
                elif input_id in ("bbox", "boxes2d"):
                    item = codecs.decode_boxes(input_id, value, metadata)
                    self.stats.prompts += 1
                elif input_id == "points":
                    item = codecs.decode_points(input_id, value, metadata, self.limits)
                    self.stats.prompts += 1
                elif input_id == "text":
                    item = codecs.decode_text(input_id, value, metadata, self.limits)
                elif input_id == "reset":
                    item = RESET
                elif input_id == "remove":
                    item = Remove(codecs.decode_track_ids(input_id, value, self.limits))
                else:
                    self._ignore(input_id)
                    continue
            except InputError as error:
                self._bad_input.warning(input_id, "%s", error)
                continue
            yield item

    def send(self, frame: Frame, masks: Masks) -> None:
        try:
            self._send(frame, masks)
        except Exception as error:  # noqa: BLE001 - one answer dora could not take must not end the node
            self._bad_input.error("send", "could not send the answer on %s's frame (%s: %s); going on",
                                  frame.image_id, type(error).__name__, error)

    def _send(self, frame: Frame, masks: Masks) -> None:
        with self.stages.time("send"):
            if "mask" in self.outputs:
                self.node.send_output("mask", *codecs.encode_mask(masks, self.mask_layout))
            if "masks" in self.outputs:
                self.node.send_output("masks", *codecs.encode_masks(masks))
            if "overlay" in self.outputs:  # drawn only when a dataflow asks for it
                self.node.send_output("overlay", *codecs.encode_overlay(frame, overlay.draw(frame, masks)))
            if "boxes2d" in self.outputs:
                self.node.send_output("boxes2d", *codecs.encode_boxes2d(masks))
        self.stats.answered(masks.timestamp)

    def _ignore(self, input_id: str) -> None:
        if input_id not in self._ignored_inputs:
            self._ignored_inputs.add(input_id)
            log.warning("input '%s' is not one this node reads (image*, bbox, boxes2d, points, text, reset, remove); "
                        "ignoring it", input_id)


def event_batches(node, wake_in=lambda: None):
    """Each wait for an event also takes whatever queued behind it, so stale work can be skipped. Where
    `wake_in` gives seconds (frames held for a detector that may never speak), the wait ends by then, and
    the batch is dora's timeout event alone, which the adapter passes over: the scheduler's clock has moved."""
    while True:
        seconds = wake_in()
        event = node.next() if seconds is None else node.next(timeout=max(seconds, MIN_WAKE_SECONDS))
        if event is None:
            return
        yield [event, *_drain(node)]


class EventPump:
    """dora's events taken as they arrive, on a thread, while the model works.

    A model that takes seconds would otherwise leave dora's input queues (10 by default) full behind it,
    and dora warns on every event it then drops: hundreds of lines that read as faults. Live mode wants
    only the newest anyway. The pump keeps the newest `keep` events of each input, in arrival order, and
    counts what it drops. Not for EVERY_FRAME, which must drop nothing: there dora's own queue_size and
    queue_policy (backpressure) govern."""

    def __init__(self, node, keep: int):
        self.node = node
        self.keep = keep
        self._events: deque[dict] = deque()
        self._per_input: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._ended = False
        self._ready = threading.Condition()
        threading.Thread(target=self._pump, name="dora-events", daemon=True).start()

    def batches(self):
        """Each batch: everything that arrived since the last one (at least one event), and how many
        events of each input were dropped meanwhile."""
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._events or self._ended)
                if not self._events:
                    return
                batch, self._events = list(self._events), deque()
                dropped, self._dropped = self._dropped, Counter()
                self._per_input.clear()
            yield batch, dropped

    def _pump(self) -> None:
        while True:
            try:
                event = self.node.next()
            except RuntimeError:  # the channel closes while a dataflow ends
                event = None
            with self._ready:
                if event is None:
                    self._ended = True
                else:
                    self._add(event)
                self._ready.notify()
            if event is None:
                return

    def _add(self, event: dict) -> None:
        self._events.append(event)
        if event["type"] != "INPUT":
            return
        self._per_input[event["id"]] += 1
        if self._per_input[event["id"]] > self.keep:  # drop that input's oldest queued event
            oldest = next(e for e in self._events if e["type"] == "INPUT" and e["id"] == event["id"])
            self._events.remove(oldest)
            self._per_input[event["id"]] -= 1
            self._dropped[event["id"]] += 1


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
