"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers, with
checkpoints judged by the benchmark's own measure."""

import json
import shutil
import signal
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from lm_eval.models.huggingface import HFLM
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import (
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import EvalLoopOutput
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from finetune import FinetuneError
from finetune.config import TaskArguments
from finetune.data import (
    Table,
    check_training_task,
    drop_too_long,
    load_task,
    prompt_completion,
    read_rows,
    training_sets,
)
from finetune.launch import process_state, under_fsdp
from finetune.model import check_base, hub_name, load_model, load_tokenizer, save_model_args
from finetune.outputs import OutputExists, check_output, is_used, move_into, set_aside
from finetune.predict import PREDICT_TASK, choice_macro_f1
from finetune.report import write_training_log


def compute_dtype(sft: SFTConfig) -> str:
    """The base weights' dtype follows the mixed-precision mode; the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return "bfloat16"
    if sft.fp16:
        return "float16"
    return "float32"


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


class BenchmarkSFTTrainer(SFTTrainer):
    """SFTTrainer whose every evaluation also scores the validation rows as the benchmark does, 3 label
    log-likelihoods a row through lm-eval, and reports `eval_macro_f1` for `metric_for_best_model`.
    Validation loss also prices EOS and the label prior, and can fall while the answers collapse onto one class.

    Hooked into `evaluation_loop` because the metric must be in the metrics before `Trainer.evaluate` logs them
    and picks the best checkpoint: `compute_metrics` sees only the gold answer's logits (which trl's fused LM head
    does not even build), and a callback's `on_evaluate` runs after the log."""

    def __init__(
        self,
        *args,
        validation_docs: list[dict],
        validation_loss: bool = True,
        balance_length_groups: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.validation_docs = validation_docs
        self.validation_loss = validation_loss
        self.balance_length_groups = balance_length_groups
        self.scoring_task = load_task(PREDICT_TASK)
        self._lm: HFLM | None = None

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler) or not self.balance_length_groups:
            return sampler
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return StepBalancedSampler(sampler, self.args.train_batch_size, self.args.world_size, seed)

    def validation_macro_f1(self) -> float:
        """Macro-F1 of the model as it is now on the validation rows, answered as `tweet_sentiment_mc` answers."""
        if self._lm is None:  # the wrapper holds the model itself, so it sees every later step's weights
            self._lm = HFLM(
                pretrained=self.model,
                tokenizer=self.processing_class,
                batch_size=self.args.per_device_eval_batch_size,
            )
        with self.compute_loss_context_manager():
            return choice_macro_f1(self._lm, self.scoring_task, self.validation_docs, self.args.disable_tqdm)

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        scored = metric_key_prefix == "eval" and self.validation_docs
        if scored and not self.validation_loss:
            self.model.eval()  # as the loss pass would (dropout off); the next training step switches it back
            metrics = {f"{metric_key_prefix}_macro_f1": self.validation_macro_f1()}
            return EvalLoopOutput(
                predictions=None, label_ids=None, metrics=metrics, num_samples=len(self.validation_docs)
            )
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if scored:
            output.metrics[f"{metric_key_prefix}_macro_f1"] = self.validation_macro_f1()
        return output


DATA_REPORT = "data_report.json"


def user_tables(task_args: TaskArguments) -> dict[str, Table]:
    """The user's train and validation files, checked row by row before any model is loaded. --min_confidence
    filters the training rows only: checkpoints chosen on the confident (easy) rows alone would be chosen on
    another task."""
    files = {"train": task_args.train_file, "validation": task_args.validation_file}
    return {
        split: read_rows(
            Path(path),
            text_column=task_args.text_column,
            label_column=task_args.label_column,
            min_confidence=task_args.min_confidence if split == "train" else None,
            skip_bad_rows=task_args.skip_bad_rows,
        )
        for split, path in files.items()
        if path
    }


def check_lengths(
    tables: dict[str, Table], task_args: TaskArguments, tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> None:
    """Each row's prompt, answer and EOS in tokens against trl's `max_length`, beyond which the answer is cut."""
    if not tables or max_length is None:
        return
    task = load_task(task_args.task)
    for table in tables.values():
        pairs = prompt_completion(task, table.rows)
        ids = tokenizer([p + c for p, c in zip(pairs["prompt"], pairs["completion"])])["input_ids"]
        drop_too_long(table, [len(row) + 1 for row in ids], max_length, task_args.skip_bad_rows)


def build_trainer(
    task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, tables: dict[str, Table] | None = None
) -> BenchmarkSFTTrainer:
    """An SFTTrainer on the task's prompt-completion pairs (the pinned splits or the user's files, through the
    task's own prompt): loss on the answer and EOS only; checkpoints also scored by validation macro-F1."""
    model_args.dtype = compute_dtype(sft)
    if under_fsdp() and model_args.load_in_4bit:
        shard_4bit_weights(model_args)
    tokenizer = load_tokenizer(model_args)
    if tables is None:
        tables = user_tables(task_args)
        check_lengths(tables, task_args, tokenizer, sft.max_length)
    task = load_task(task_args.task)
    validation = tables["validation"].rows if "validation" in tables else task.validation_docs()
    validation = list(islice(validation, task_args.eval_limit))
    train_set, eval_set = training_sets(
        task,
        task_args.train_limit,
        train_docs=tables["train"].rows if "train" in tables else None,
        validation_docs=validation,
    )
    trainer = BenchmarkSFTTrainer(
        model=load_model(model_args),
        args=sft,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        validation_docs=validation,
        validation_loss=task_args.validation_loss,
        balance_length_groups=task_args.balance_length_groups,
    )
    for config in trainer.model.peft_config.values():
        config.base_model_name_or_path = hub_name(model_args.model_name_or_path)
    if sft.fp16:
        # trl casts a quantized model's LoRA weights to bf16, which fp16's gradient scaler cannot unscale (T4)
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return trainer


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


def claim_run_folder(out: Path, task_args: TaskArguments) -> Path | None:
    """The Trainer keeps its checkpoints in output_dir, where `--resume` finds them: a used folder is continued
    only with --resume, and replaced only with --overwrite, by moving it aside until the new adapter is complete.
    Returns where the replaced folder waits."""
    if task_args.resume:
        if not any(out.glob("checkpoint-*")):
            raise FinetuneError(f"{out}: no checkpoint to resume from (run without --resume to start)")
        return None
    if is_used(out) and not task_args.overwrite:
        raise OutputExists(
            f"{out}: the folder is not empty; pass --resume true to continue its run, or --overwrite true to replace it"
        )
    check_output(out, overwrite=True)
    return set_aside(out) if is_used(out) and process_state().is_main_process else None


def shard_4bit_weights(model_args: ModelConfig) -> None:
    """FSDP shards floating-point tensors only: the 4-bit weights are packed into the compute dtype, the base is
    loaded in it (peft's FSDP + QLoRA guide), and every trainable weight shares it, which rules out fp16's fp32 LoRA."""
    if model_args.dtype != "bfloat16":
        raise FinetuneError(f"FSDP + QLoRA trains in bf16 here, not {model_args.dtype}: pass --bf16 true --fp16 false")
    model_args.bnb_4bit_quant_storage = model_args.dtype


def effective_batch(sft: SFTConfig) -> str:
    """What one optimizer step sees: the config's per-device batch on every process, times accumulation."""
    per_device, processes, steps = sft.per_device_train_batch_size, sft.world_size, sft.gradient_accumulation_steps
    return (
        f"effective batch {per_device * processes * steps} = {per_device} per device x {processes} "
        f"process{'es' if processes > 1 else ''} x {steps} accumulation"
    )


def checked_data(task_args: TaskArguments, model_args: ModelConfig, max_length: int | None) -> dict[str, Table]:
    """What a training run checks before any model loads, each in one line: the task, the user's files row by
    row, the base, and each row's length in the base's tokens. Returns the user's files."""
    check_training_task(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    tables = user_tables(task_args)
    check_base(model_args)
    check_lengths(tables, task_args, load_tokenizer(model_args), max_length)
    return tables


def train(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, resume_command: str | None = None) -> Path:
    """Train, keep the best adapter, and save it with how its base was loaded, its loss curve and the report of
    the user's files. The final files are written beside the run folder and renamed into it; a signal stops the
    run with a checkpoint and `Interrupted`, whose message says how to resume."""
    out = Path(sft.output_dir)
    model_args.dtype = compute_dtype(sft)
    tables = checked_data(task_args, model_args, sft.max_length)
    replaced = claim_run_folder(out, task_args)
    stop = StopOnSignal()
    try:
        trainer = build_trainer(task_args, sft, model_args, tables)
        trainer.add_callback(stop)
        if trainer.is_world_process_zero():
            print(f"finetune train: {effective_batch(trainer.args)}", flush=True)
        trainer.train(resume_from_checkpoint=True if task_args.resume else None)
        stopped = stop.received is not None and trainer.state.global_step < trainer.state.max_steps
        if stopped:
            trainer.accelerator.wait_for_everyone()  # process zero's checkpoint is whole before any process exits
        elif trainer.is_world_process_zero():
            save_adapter(trainer, out, model_args, tables)
        else:
            trainer.save_model()  # a collective call under DeepSpeed and FSDP; only process zero writes
    except BaseException:  # the run it replaces is put back, unless a signal stopped this one with a checkpoint
        if replaced is not None and stop.received is None:
            shutil.rmtree(out, ignore_errors=True)
            replaced.rename(out)
            replaced.parent.rmdir()
        raise
    if stopped:
        message = interrupted_message(stop.received, trainer.state, out, replaced, resume_command)
        raise Interrupted(message, stop.received)
    if replaced is not None:
        shutil.rmtree(replaced.parent)
    return out


def save_adapter(trainer: SFTTrainer, out: Path, model_args: ModelConfig, tables: dict[str, Table]) -> None:
    """The adapter, how its base was loaded, its loss curve and the data report, written beside the run folder and
    renamed into it file by file: the checkpoints stay where the Trainer and `--resume` find them."""
    staging = out.with_name(f".{out.name}.final.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        trainer.save_model(str(staging))
        save_model_args(model_args, staging)
        write_training_log(trainer.state.log_history, staging)
        if tables:  # `used`: after train_limit / eval_limit, which apply to the user's files too
            used = {"train": len(trainer.train_dataset), "validation": len(trainer.eval_dataset)}
            report = {split: {**table.report(), "used": used[split]} for split, table in tables.items()}
            (staging / DATA_REPORT).write_text(json.dumps(report, indent=1))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    move_into(staging, out)


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
