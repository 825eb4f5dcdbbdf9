"""Timing the ways to run the same work here, for the choices start-up makes by measuring (the dtype, the
memory attention path, the memory encoder's batch).

A measured choice is kept for later starts (choices.py), so a burst of other work on the machine during
the measuring would be kept with it: a node started beside a training run once timed blocks of 256 at
64 ms against 8 ms for the others. So the candidates are timed in rounds, every candidate once a round,
and each keeps its best round: a burst shorter than a round slows one sample of a few candidates, never
every sample of one.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Iterable, TypeVar

Candidate = TypeVar("Candidate", bound=Hashable)


def best_seconds(candidates: Iterable[Candidate], run: Callable[[Candidate], object], repeats: int = 2,
                 clock: Callable[[], float] = time.perf_counter) -> dict[Candidate, float]:
    """Seconds of `run(candidate)` for each candidate: run once untimed first (its lazy set-up: kernels
    picked, buffers allocated), then the best of `repeats` rounds, each timing every candidate in turn."""
    candidates = list(candidates)
    for candidate in candidates:
        run(candidate)
    seconds = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for candidate in candidates:
            started = clock()
            run(candidate)
            seconds[candidate] = min(seconds[candidate], clock() - started)
    return seconds
