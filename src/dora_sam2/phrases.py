"""Phrases (SAM 3): the concepts in use and what finds them on a frame, for both schedulers: an answer in
segment mode, a detection round for the tracker in track mode. No dora here, and no torch: the finder
(sam3.py's `Sam3Finder`) is handed in, or None for a model that cannot read words."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .domain import Frame, InputError, Masks, Phrases, Prompt
from .precision import retried_in_float32
from .stats import Stages
from .throttle import Throttle

log = logging.getLogger("dora_sam2")

PHRASES_SHOWN, PHRASE_SHOWN_CHARS = 8, 40  # a log line names a few phrases, each cut short: a sender wrote them


def quoted(texts: Sequence[str]) -> str:
    """Phrases as a log line quotes them: the first PHRASES_SHOWN, each cut at PHRASE_SHOWN_CHARS."""
    shown = [repr(t if len(t) <= PHRASE_SHOWN_CHARS else t[:PHRASE_SHOWN_CHARS] + "...") for t in texts[:PHRASES_SHOWN]]
    more = f" and {len(texts) - PHRASES_SHOWN} more" if len(texts) > PHRASES_SHOWN else ""
    return ", ".join(shown) + more


class PhraseSearch:
    """The phrases in use and what reads them (SAM 3's `Sam3Finder`, or None for a model that cannot):
    every instance of every phrase on a frame, as an answer or as a detection round for the tracker."""

    def __init__(self, finder, model_name: str, phrases: Phrases = Phrases(()), min_score: float = 0.5,
                 limit: int = 16, stages: Stages | None = None):
        self.finder = finder
        self.model_name = model_name
        self.min_score = min_score
        self.limit = limit  # MAX_OBJECTS: the best-scored instances of all phrases together
        self.stages = stages if stages is not None else Stages()
        self.phrases = Phrases(())
        self.changed = False  # set by `use`, cleared by the caller that acts on it
        self._say = Throttle(log, burst=3)  # a person changes phrases a few times a minute; a sender, every message
        self.use(phrases)

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def use(self, phrases: Phrases, input_id: str = "text") -> None:
        """Phrases replacing those in use (none: stop finding). InputError for a model that cannot read words."""
        if phrases and self.finder is None:
            raise InputError(input_id, f"MODEL={self.model_name} cannot read words: phrases are found by SAM 3 "
                                       "(MODEL=facebook/sam3, or a local SAM 3 checkpoint); SAM 2 and EdgeTAM "
                                       "answer boxes and clicks")
        if phrases.exemplars is not None and self.finder is not None and not self.finder.reads_exemplars:
            self._say.warning("exemplars", "input '%s': exemplar boxes need torchvision (SAM 3 pools them with its "
                              "roi_align): install a torchvision built for this torch; the phrases are used without "
                              "them", input_id)
            phrases = Phrases(phrases.texts)
        self.changed = True  # even the same phrases again: the sender wants a fresh look
        self.phrases = phrases
        if phrases:
            self._say.log(logging.INFO, "finding", "finding %s", quoted(phrases.texts))

    def find(self, frame: Frame) -> Masks:
        """The frame's instances as an answer. One SAM 3 scores whose mask is empty at the frame's size is
        left out: its box would be nothing (0, 0, 0, 0), which a box reader downstream refuses."""
        found = self.found(frame)
        seen = found.masks.any(axis=(1, 2))
        return found if seen.all() else found[seen]  # all seen, as is usual: the masks are not copied

    def found(self, frame: Frame) -> Masks:
        """Every instance: its mask, labelled by its phrase, with SAM 3's score and box. Where float16
        overflowed, found again in float32 (the finder forgets what it kept in float16)."""
        with self.stages.time("find"):
            return retried_in_float32(lambda: self.finder.find(frame, self.phrases, self.min_score, self.limit),
                                      self.finder.fall_back_to_float32)

    def detections(self, frame: Frame) -> Prompt:
        """The instances as a detector's round for the tracker: their boxes, labelled by phrase."""
        found = self.found(frame)
        return Prompt.from_boxes("text", found.boxes, found.class_names, image_id=frame.image_id,
                                 timestamp=frame.timestamp, confidences=found.scores)
