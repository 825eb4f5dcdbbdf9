"""Work done for the last few inputs, kept for the next call that asks again: a frame is encoded once
however many prompts, phrases or models read it."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Generic, TypeVar

K, V = TypeVar("K"), TypeVar("V")


class LastComputed(Generic[K, V]):
    """What `compute` gave for the last `kept` keys. A key is found again by `same`: identity unless told
    (a Frame object is one frame), or a comparison where the same input comes again as a new object (a
    frame's pixels, prepared anew by each model that reads them)."""

    def __init__(self, kept: int = 1, same: Callable[[K, K], bool] = operator.is_):
        self.kept = kept
        self._same = same
        self._items: list[tuple[K, V]] = []  # the most recently asked for last

    def get(self, key: K, compute: Callable[[], V]) -> V:
        for i, (known, value) in enumerate(self._items):
            if self._same(known, key):
                self._items.append(self._items.pop(i))
                return value
        value = compute()
        self._items.append((key, value))
        del self._items[:max(len(self._items) - self.kept, 0)]
        return value

    def clear(self) -> None:
        """Forget it all: what was computed no longer holds (the model changed its dtype)."""
        self._items.clear()
