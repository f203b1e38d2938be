"""The length-grouped training order of `finetune train`: drawn from the run's seed and the epoch, and on several
processes balanced so that every process of a step gets rows of the same lengths."""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


def step_balanced_order(
    lengths: list[int], per_device: int, processes: int, mega_batch_mult: int, generator: torch.Generator | None = None
) -> list[int]:
    """transformers' length-grouped order over mega-batches of whole steps, each step's rows dealt one by one.

    accelerate hands a step's consecutive batches to the processes in turn; with transformers' order they are
    batches of different lengths and every process waits for the longest (on the pinned 3,200 rows that caps 4
    GPUs at 2.96x one, `bench/ddp_balance.py`). Dealt this way, batch p of a step holds its sorted rows p, p + N,
    p + 2N..., as long as its neighbours' batches: no sampler of transformers or accelerate orders rows so."""
    world = per_device * processes
    order = get_length_grouped_indices(lengths, world, mega_batch_mult=mega_batch_mult, generator=generator)
    dealt = []
    for start in range(0, len(order), world):
        step = order[start : start + world]
        if len(step) < world:  # the epoch's last, partial step: left as transformers orders it
            dealt.extend(step)
            continue
        dealt.extend(row for process in range(processes) for row in step[process::processes])
    return dealt


class StepBalancedSampler(Sampler[int]):
    """`group_by_length` drawn from the run's seed and the epoch, and on several processes with each step's rows
    of the same lengths on every process. Its mega-batches hold as many steps as transformers' single-process
    ones hold batches, so a process's batch spans the same share of the sorted rows and pads as much as it would
    alone. transformers' own sampler draws from the global generator, whose state when a run resumed after its
    first epoch is not the uninterrupted run's: the resumed epoch skipped the first batches of another order."""

    def __init__(self, grouped: LengthGroupedSampler, per_device: int, processes: int, seed: int) -> None:
        self.lengths = grouped.lengths
        self.per_device, self.processes = per_device, processes
        self.mega_batch_mult = max(1, min(len(self.lengths) // (grouped.batch_size * 4), 50))  # transformers' rule
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer before each epoch, a resumed one included."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = step_balanced_order(self.lengths, self.per_device, self.processes, self.mega_batch_mult, generator)
        return iter(order)
