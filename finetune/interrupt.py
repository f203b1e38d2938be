"""SIGTERM (a preempted machine) or Ctrl-C during training: stop after the current step with a checkpoint, agreed by
every process, and say how to resume."""

import signal
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from finetune import FinetuneError


class Interrupted(FinetuneError):
    """Training stopped by a signal after saving a checkpoint; the process exits as the signal would."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal(TrainerCallback):
    """SIGTERM (a preempted machine) or SIGINT (Ctrl-C) ends training at the end of the current step with a
    checkpoint, through the Trainer's own controls; a second signal acts as it would without us."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[int, object] = {}
        self.processes: torch.distributed.ProcessGroup | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self.handle) for number in self.SIGNALS}
        if args.world_size > 1:
            self.processes = torch.distributed.new_group(backend="gloo")

    def handle(self, number: int, frame: object) -> None:
        self.received = signal.Signals(number)
        self.restore()

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        if self.processes is not None:
            self.received = self.received_by_any(self.processes)
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def received_by_any(self, processes: torch.distributed.ProcessGroup) -> signal.Signals | None:
        """The signal any process has received, agreed by all after every step: a signal reaches the processes on
        either side of a step's end, and one process stopping alone would save while the others wait for it in
        the next step's all-reduce. The flag goes through a CPU (gloo) group: read back from a GPU, it would make
        every step wait for its queued kernels before the next step's are launched."""
        number = torch.tensor(self.received or 0)
        torch.distributed.all_reduce(number, op=torch.distributed.ReduceOp.MAX, group=processes)
        return signal.Signals(number.item()) if number.item() else None

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.restore()
        if self.processes is not None:
            torch.distributed.destroy_process_group(self.processes)
            self.processes = None


def interrupted_message(
    received: signal.Signals, state: TrainerState, out: Path, replaced: Path | None, command: str | None
) -> str:
    message = (
        f"stopped by {received.name} after step {state.global_step} of {state.max_steps}; checkpoint saved in "
        f"{out / f'checkpoint-{state.global_step}'}; resume with: {command or 'the same command and --resume true'}"
    )
    if replaced is not None:
        message += f" (the run it replaces is kept in {replaced.parent}: delete it when this one is done)"
    return message
