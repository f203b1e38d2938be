"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers."""

import json
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from finetune.config import TaskArguments
from finetune.data import Table, load_task, read_rows, training_sets
from finetune.model import hub_name, load_model, load_tokenizer, save_model_args
from finetune.report import write_training_log


def compute_dtype(sft: SFTConfig) -> str:
    """The base weights' dtype follows the mixed-precision mode; the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return "bfloat16"
    if sft.fp16:
        return "float16"
    return "float32"


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
) -> SFTTrainer:
    """An SFTTrainer on the task's prompt-completion pairs (the pinned splits or the user's files, through the
    task's own prompt): loss on the answer and EOS only."""
    model_args.dtype = compute_dtype(sft)
    tables = user_tables(task_args) if tables is None else tables
    train_set, eval_set = training_sets(
        load_task(task_args.task),
        task_args.train_limit,
        task_args.eval_limit,
        train_docs=tables["train"].rows if "train" in tables else None,
        validation_docs=tables["validation"].rows if "validation" in tables else None,
    )
    trainer = SFTTrainer(
        model=load_model(model_args),
        args=sft,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=load_tokenizer(model_args),
        peft_config=get_peft_config(model_args),
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
