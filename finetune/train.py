"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers, with
checkpoints judged by the benchmark's own measure."""

import shutil
from dataclasses import replace
from pathlib import Path

import torch
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from peft import LoraConfig
from peft.utils.error import NoMatchingPeftModuleError
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import EvalLoopOutput
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config
from trl.trainer import utils as trl_utils

from finetune import FinetuneError, first_line
from finetune.benchmark import Benchmark, choice_scores, load_benchmark, scoring_lm
from finetune.config import TaskArguments
from finetune.dataset import DATA_REPORT, TrainingData, training_data, user_tables
from finetune.guard import Diverged, DivergenceGuard, advice
from finetune.interrupt import Interrupted, StopOnSignal, interrupted_message
from finetune.launch import is_main_process, under_fsdp
from finetune.model import check_base, hub_name, load_model, load_tokenizer, save_model_args
from finetune.outputs import (
    OutputExists,
    as_umask_allows,
    check_output,
    is_used,
    move_into,
    set_aside,
    staging_folder,
)
from finetune.report import write_training_log
from finetune.sampler import StepBalancedSampler


def compute_dtype(sft: SFTConfig) -> str:
    """The base weights' dtype follows the mixed-precision mode; the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return "bfloat16"
    if sft.fp16:
        return "float16"
    return "float32"


def loading_args(model_args: ModelConfig, dtype: str) -> ModelConfig:
    """How the base loads for this run, as a new config (the parsed one is left as the user gave it): in the
    mixed-precision mode's `dtype` (`compute_dtype`), and under FSDP with the 4-bit weights packed into that dtype,
    since FSDP shards floating-point tensors only (peft's FSDP + QLoRA guide; every trainable weight shares it,
    which rules out fp16's fp32 LoRA)."""
    loading = replace(model_args, dtype=dtype)
    if not (under_fsdp() and loading.load_in_4bit):
        return loading
    if loading.dtype != "bfloat16":
        raise FinetuneError(f"FSDP + QLoRA trains in bf16 here, not {loading.dtype}: pass --bf16 true --fp16 false")
    return replace(loading, bnb_4bit_quant_storage=loading.dtype)


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
        choices: Task,
        validation_docs: list[dict],
        validation_loss: bool = True,
        balance_length_groups: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.choices = choices
        self.validation_docs = validation_docs
        self.validation_loss = validation_loss
        self.balance_length_groups = balance_length_groups
        self._lm: HFLM | None = None
        self.last_scores: dict = {}

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if not isinstance(sampler, LengthGroupedSampler) or not self.balance_length_groups:
            return sampler
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return StepBalancedSampler(sampler, self.args.train_batch_size, self.args.world_size, seed)

    def validation_scores(self) -> dict:
        """The model as it is now on the validation rows, answered as `tweet_sentiment_mc` answers (`choice_scores`),
        in eval mode (dropout off) as the loss pass would be; the next training step switches it back."""
        if self._lm is None:  # the wrapper holds the model itself, so it sees every later step's weights
            self._lm = scoring_lm(self.model, self.processing_class, self.args.per_device_eval_batch_size)
        self.model.eval()
        with self.compute_loss_context_manager():
            self.last_scores = choice_scores(self._lm, self.choices, self.validation_docs, self.args.disable_tqdm)
        return self.last_scores

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
            metrics = validation_metrics(self.validation_scores(), metric_key_prefix)
            return EvalLoopOutput(
                predictions=None, label_ids=None, metrics=metrics, num_samples=len(self.validation_docs)
            )
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if scored:
            output.metrics.update(validation_metrics(self.validation_scores(), metric_key_prefix))
        return output


def validation_metrics(scores: dict, prefix: str = "eval") -> dict[str, float]:
    """What an evaluation logs of `choice_scores`: the numbers (the label's name is the guard's to say)."""
    return {f"{prefix}_macro_f1": scores["macro_f1"], f"{prefix}_top_label_share": scores["top_label_share"]}


def lora_config(model_args: ModelConfig, top_layers: float | None, model: PreTrainedModel) -> LoraConfig:
    """trl's LoRA config, on the top `top_layers` share of the base's blocks where one is given (peft's
    `layers_to_transform`): a recipe that trains "the top third" means the same on a base of 16 blocks as on one of
    30. peft takes `layers_to_transform` with module names only, so `all-linear` is spelled out here."""
    config = get_peft_config(model_args)
    if top_layers is None:
        return config
    targets = linear_names(model) if config.target_modules == "all-linear" else config.target_modules
    if isinstance(targets, str):
        raise FinetuneError(
            f"lora_top_layers takes module names or all-linear as lora_target_modules, not the pattern {targets!r}"
        )
    depth = model.config.num_hidden_layers
    count = max(1, round(depth * top_layers))
    return replace(config, target_modules=targets, layers_to_transform=list(range(depth - count, depth)))


def linear_names(model: PreTrainedModel) -> list[str]:
    """What peft's `all-linear` targets, by name: every linear layer but the output head (4-bit ones included)."""
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    return sorted(names)


def score_answers_only_on_cpu() -> None:
    """trl's fused LM head scores only the labelled positions (the answer) on CUDA and XPU, and every position
    elsewhere, so that Neuron compiles one shape; a CPU compiles nothing, and there the full-vocabulary
    log-probabilities of every prompt position were 60% of a demo step (11.8 -> 4.5 s; docs/benchmarks.md, "CPU").
    The same arithmetic on fewer rows. trl has no option for it: its device test, read at every forward, is widened
    to the CPU."""
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "widened_to_cpu", False):
        return  # a trl without this test (another 1.x) keeps its own choice: slower on a CPU, the same loss

    def compact(device: torch.device) -> bool:
        return original(device) or device.type == "cpu"

    compact.widened_to_cpu = True
    trl_utils._use_triton = compact


def build_trainer(
    benchmark: Benchmark,
    data: TrainingData,
    task_args: TaskArguments,
    sft: SFTConfig,
    model_args: ModelConfig,
    tokenizer: PreTrainedTokenizerBase,
) -> BenchmarkSFTTrainer:
    """An SFTTrainer on the run's prompt-completion pairs: loss on the answer and EOS only; checkpoints also scored
    by validation macro-F1. `model_args` is how the base loads (`loading_args`)."""
    score_answers_only_on_cpu()
    model = load_model(model_args)
    try:
        trainer = BenchmarkSFTTrainer(
            model=model,
            args=sft,
            train_dataset=data.train,
            eval_dataset=data.validation,
            processing_class=tokenizer,
            peft_config=lora_config(model_args, task_args.lora_top_layers, model),
            choices=benchmark.choices,
            validation_docs=data.validation_docs,
            validation_loss=task_args.validation_loss,
            balance_length_groups=task_args.balance_length_groups,
        )
    except NoMatchingPeftModuleError as err:
        raise FinetuneError(f"lora_target_modules {model_args.lora_target_modules!r}: {first_line(err)}") from None
    for config in trainer.model.peft_config.values():
        config.base_model_name_or_path = hub_name(model_args.model_name_or_path)
    if sft.fp16:
        # trl casts a quantized model's LoRA weights to bf16, which fp16's gradient scaler cannot unscale (T4)
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return trainer


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
    return set_aside(out) if is_used(out) and is_main_process() else None


def effective_batch(sft: SFTConfig) -> str:
    """What one optimizer step sees: the config's per-device batch on every process, times accumulation."""
    per_device, processes, steps = sft.per_device_train_batch_size, sft.world_size, sft.gradient_accumulation_steps
    return (
        f"effective batch {per_device * processes * steps} = {per_device} per device x {processes} "
        f"process{'es' if processes > 1 else ''} x {steps} accumulation"
    )


def prepare(
    benchmark: Benchmark, task_args: TaskArguments, model_args: ModelConfig, max_length: int | None
) -> tuple[TrainingData, PreTrainedTokenizerBase]:
    """What a run checks before any model loads, each in one line: the user's files row by row, the base, and each
    row's length in the base's tokens. Returns the run's rows and the base's tokenizer."""
    tables = user_tables(task_args)
    check_base(model_args)
    tokenizer = load_tokenizer(model_args)
    return training_data(benchmark, tables, task_args, tokenizer, max_length), tokenizer


def trainer_for(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> BenchmarkSFTTrainer:
    """The trainer `finetune train` would run on these configs, its folder not claimed: for benchmarks and tests."""
    benchmark = load_benchmark(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    model_args = loading_args(model_args, compute_dtype(sft))
    data, tokenizer = prepare(benchmark, task_args, model_args, sft.max_length)
    return build_trainer(benchmark, data, task_args, sft, model_args, tokenizer)


def train(
    benchmark: Benchmark,
    task_args: TaskArguments,
    sft: SFTConfig,
    model_args: ModelConfig,
    resume_command: str | None = None,
    callbacks: list[TrainerCallback] = (),
) -> Path:
    """Train, keep the best adapter, and save it with how its base was loaded, its loss curve and the report of
    the user's files; `callbacks` see every step and evaluation (`finetune sweep` reports to Optuna through one).
    The final files are written beside the run folder and renamed into it; a signal stops the run with a
    checkpoint and `Interrupted`, whose message says how to resume."""
    out = Path(sft.output_dir)
    model_args = loading_args(model_args, compute_dtype(sft))
    data, tokenizer = prepare(benchmark, task_args, model_args, sft.max_length)
    replaced = claim_run_folder(out, task_args)
    stop = StopOnSignal()
    try:
        trainer = build_trainer(benchmark, data, task_args, sft, model_args, tokenizer)
        guard = DivergenceGuard(trainer) if guarded(task_args, sft, data) else None
        for callback in [stop, *([guard] if guard else []), *callbacks]:
            trainer.add_callback(callback)
        if is_main_process():
            print(f"finetune train: {effective_batch(trainer.args)}", flush=True)
        trainer.train(resume_from_checkpoint=True if task_args.resume else None)
        stopped = stop.received is not None and trainer.state.global_step < trainer.state.max_steps
        if stopped:
            trainer.accelerator.wait_for_everyone()  # process zero's checkpoint is whole before any process exits
        elif is_main_process():
            save_adapter(trainer, out, model_args, data)
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
    if guard is not None and guard.reason is not None:
        raise Diverged(f"{out}: {guard.message(trainer.state, trainer.args)}", advice(sft.learning_rate))
    return out


def guarded(task_args: TaskArguments, sft: SFTConfig, data: TrainingData) -> bool:
    """The guard judges evaluations: without any (or without rows to score) it has nothing to judge."""
    return task_args.divergence_guard and sft.eval_strategy != "no" and bool(data.validation_docs)


def save_adapter(trainer: SFTTrainer, out: Path, model_args: ModelConfig, data: TrainingData) -> None:
    """The adapter, how its base was loaded, its loss curve and the data report, written beside the run folder and
    renamed into it file by file: the checkpoints stay where the Trainer and `--resume` find them."""
    staging = staging_folder(out, "final.")
    try:
        trainer.save_model(str(staging))
        save_model_args(model_args, staging)
        write_training_log(trainer.state.log_history, staging)
        report = data.report()
        if report is not None:
            (staging / DATA_REPORT).write_text(report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    as_umask_allows(staging)
    move_into(staging, out)
