"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers, with
checkpoints judged by the benchmark's own measure."""

import json
from itertools import islice
from pathlib import Path

from lm_eval.models.huggingface import HFLM
from torch.utils.data import DataLoader
from transformers.trainer_utils import EvalLoopOutput
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from finetune.config import TaskArguments
from finetune.data import Table, load_task, read_rows, training_sets
from finetune.model import hub_name, load_model, load_tokenizer, save_model_args
from finetune.predict import PREDICT_TASK, choice_logliks
from finetune.report import write_training_log
from lm_eval_tasks.tweet_sentiment.utils import macro_f1


def compute_dtype(sft: SFTConfig) -> str:
    """The base weights' dtype follows the mixed-precision mode; the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return "bfloat16"
    if sft.fp16:
        return "float16"
    return "float32"


class BenchmarkSFTTrainer(SFTTrainer):
    """SFTTrainer whose every evaluation also scores the validation rows as the benchmark does, 3 label
    log-likelihoods a row through lm-eval, and reports `eval_macro_f1` for `metric_for_best_model`.
    Validation loss also prices EOS and the label prior, and can fall while the answers collapse onto one class.

    Hooked into `evaluation_loop` because the metric must be in the metrics before `Trainer.evaluate` logs them
    and picks the best checkpoint: `compute_metrics` sees only the gold answer's logits (which trl's fused LM head
    does not even build), and a callback's `on_evaluate` runs after the log."""

    def __init__(self, *args, validation_docs: list[dict], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validation_docs = validation_docs
        self.scoring_task = load_task(PREDICT_TASK)
        self._lm: HFLM | None = None

    def validation_macro_f1(self) -> float:
        """Macro-F1 of the model as it is now on the validation rows, answered as `tweet_sentiment_mc` answers."""
        if self._lm is None:  # the wrapper holds the model itself, so it sees every later step's weights
            self._lm = HFLM(
                pretrained=self.model,
                tokenizer=self.processing_class,
                batch_size=self.args.per_device_eval_batch_size,
            )
        with self.compute_loss_context_manager():
            logliks = choice_logliks(self._lm, self.scoring_task, self.validation_docs, self.args.disable_tqdm)
        pairs = [(doc["label"], row.index(max(row))) for doc, row in zip(self.validation_docs, logliks, strict=True)]
        return macro_f1(pairs)

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if metric_key_prefix == "eval" and self.validation_docs:
            output.metrics[f"{metric_key_prefix}_macro_f1"] = self.validation_macro_f1()
        return output


DATA_REPORT = "data_report.json"


def user_tables(task_args: TaskArguments) -> dict[str, Table]:
    """The user's train and validation files, checked row by row before any model is loaded."""
    files = {"train": task_args.train_file, "validation": task_args.validation_file}
    return {
        split: read_rows(
            Path(path),
            text_column=task_args.text_column,
            label_column=task_args.label_column,
            min_confidence=task_args.min_confidence,
            skip_bad_rows=task_args.skip_bad_rows,
        )
        for split, path in files.items()
        if path
    }


def build_trainer(
    task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, tables: dict[str, Table] | None = None
) -> BenchmarkSFTTrainer:
    """An SFTTrainer on the task's prompt-completion pairs (the pinned splits or the user's files, through the
    task's own prompt): loss on the answer and EOS only; checkpoints also scored by validation macro-F1."""
    model_args.dtype = compute_dtype(sft)
    tables = user_tables(task_args) if tables is None else tables
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
        processing_class=load_tokenizer(model_args),
        peft_config=get_peft_config(model_args),
        validation_docs=validation,
    )
    for config in trainer.model.peft_config.values():
        config.base_model_name_or_path = hub_name(model_args.model_name_or_path)
    if sft.fp16:
        # trl casts a quantized model's LoRA weights to bf16, which fp16's gradient scaler cannot unscale (T4)
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return trainer


def train(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> Path:
    """Train, keep the best adapter, and save it with how its base was loaded and its loss curve."""
    tables = user_tables(task_args)
    trainer = build_trainer(task_args, sft, model_args, tables)
    trainer.train(resume_from_checkpoint=True if task_args.resume else None)
    out = Path(sft.output_dir)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        save_model_args(model_args, out)
        write_training_log(trainer.state.log_history, out)
        if tables:
            report = {split: table.report() for split, table in tables.items()}
            (out / DATA_REPORT).write_text(json.dumps(report, indent=1))
    return out
