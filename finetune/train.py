"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers."""

import json
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from finetune.config import TaskArguments
from finetune.data import load_task, training_sets
from finetune.model import resolve_model
from finetune.report import plot_training_loss

TRAIN_LOG = "train_log.json"


def compute_dtype(sft: SFTConfig) -> torch.dtype:
    """The base weights' dtype follows the mixed-precision mode (`ModelConfig.dtype` is set from it);
    the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return torch.bfloat16
    if sft.fp16:
        return torch.float16
    return torch.float32


def load_base_for_training(model_args: ModelConfig, sft: SFTConfig) -> PreTrainedModel:
    dtype = compute_dtype(sft)
    model_args.dtype = dtype
    quantization = get_quantization_config(model_args)
    return AutoModelForCausalLM.from_pretrained(
        resolve_model(model_args.model_name_or_path),
        revision=model_args.model_revision,
        dtype=dtype,
        quantization_config=quantization,
        # k-bit weights cannot be moved after loading: place them on this process's GPU now
        device_map={"": PartialState().local_process_index} if quantization else None,
        attn_implementation=model_args.attn_implementation,
    )


def build_trainer(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """An SFTTrainer on the task's prompt-completion pairs: loss on the answer and EOS only."""
    train_set, eval_set = training_sets(load_task(task_args.task), task_args.train_limit, task_args.eval_limit)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(model_args.model_name_or_path), revision=model_args.model_revision
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = SFTTrainer(
        model=load_base_for_training(model_args, sft),
        args=sft,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if sft.fp16:
        # trl casts a quantized model's LoRA weights to bf16, which fp16's gradient scaler cannot unscale (T4)
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return trainer


def train(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> Path:
    """Train, keep the adapter with the lowest validation loss, and save it with its loss curve."""
    trainer = build_trainer(task_args, sft, model_args)
    trainer.train(resume_from_checkpoint=True if task_args.resume else None)
    out = Path(sft.output_dir)
    trainer.save_model(str(out))
    history = trainer.state.log_history
    (out / TRAIN_LOG).write_text(json.dumps(history, indent=1))
    plot_training_loss(history, out / "training_loss.png")
    return out
