"""Data-parallel training over processes of one machine (`dora-sam2-train --processes N`).

Each process draws its own samples and computes its own gradients; one all-reduce a step averages them,
so every process takes the same optimiser step and their models stay equal: N samples a step, as a
batch of N would give. The model's operations are too small to split well over threads: on 2 cores, two
processes of one thread trained 1.4x the samples a second of one thread on single frames and 1.6x with
clips, two threads 1.4x and 1.3x (BENCHMARKS.md); and threads that wait on each other slow down far more
when another program takes a core. A step waits for the slowest process's sample (frames hold 1 to 8
objects) and the all-reduce (5.5 ms for `micro`'s 1.3 M gradients). torch.distributed's gloo, met
through a file in a temporary directory: nothing listens on a port.
"""

from __future__ import annotations

import logging
import signal
import tempfile
from dataclasses import dataclass

import torch

MAX_PROCESSES = 64  # --processes: one per core is the most that helps


@dataclass(frozen=True)
class Shared:
    """What every process agrees on after a step."""

    counted: int  # processes whose step gave a gradient (a sample that could not be read, or a loss that
    # is not finite, gives none)
    seconds: float  # the step's time, the mean over processes: every schedule and checkpoint reads one clock
    stop: bool  # one process was asked to stop: Ctrl-C reaches all of them, not at the same step


class Replicas:
    """This process's place among the run's processes, and the collectives a training step needs."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def share(self, parameters: list[torch.nn.Parameter], counted: bool, seconds: float, stop: bool) -> Shared:
        """Averages each parameter's gradient over the processes whose step counted, in place; a parameter
        that no process gave a gradient keeps none, as in one process (AdamW then leaves it be)."""
        import torch.distributed as dist

        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in parameters]
        touched = [float(p.grad is not None) for p in parameters]
        flat = torch.cat(grads + [torch.tensor(touched + [float(counted), seconds, float(stop)])])
        dist.all_reduce(flat)
        total = sum(p.numel() for p in parameters)
        counted_by, seconds_sum, stops = flat[-3:].tolist()
        if counted_by:
            offset = 0
            for p, was_touched in zip(parameters, flat[total : total + len(parameters)].tolist()):
                n = p.numel()
                p.grad = (flat[offset : offset + n] / counted_by).view_as(p) if was_touched else None
                offset += n
        return Shared(int(counted_by), seconds_sum / self.world, stops > 0)

    def gather(self, value) -> list:
        """Every process's `value` (any picklable), in rank order, on every process."""
        import torch.distributed as dist

        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values


def run(processes: int, worker, args: tuple, log_format: str) -> None:
    """Runs `worker(replicas, *args)` in `processes` new processes and waits for all of them.

    The parent ignores Ctrl-C while they run: it reaches every process of the terminal's group, and the
    workers stop together at the next step and save what they learned."""
    import torch.multiprocessing as mp

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with tempfile.TemporaryDirectory(prefix="dora-sam2-train-") as rendezvous:
            mp.spawn(_entry, args=(processes, f"file://{rendezvous}/init", worker, args, log_format),
                     nprocs=processes, join=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _entry(rank: int, world: int, init: str, worker, args: tuple, log_format: str) -> None:
    import torch.distributed as dist

    # the first process speaks for the run; the others only when something is wrong
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=log_format)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        worker(Replicas(rank, world), *args)
    finally:
        dist.destroy_process_group()
