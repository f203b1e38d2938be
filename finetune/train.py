"""`finetune train`: one LoRA / QLoRA run with trl's SFTTrainer on the task's own prompt and answers."""

from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from finetune import FinetuneError
from finetune.config import TaskArguments
from finetune.data import load_task, training_sets
from finetune.launch import under_fsdp
from finetune.model import hub_name, load_model, load_tokenizer, save_model_args
from finetune.report import write_training_log


def compute_dtype(sft: SFTConfig) -> str:
    """The base weights' dtype follows the mixed-precision mode; the LoRA weights stay in fp32 (see `build_trainer`)."""
    if sft.bf16:
        return "bfloat16"
    if sft.fp16:
        return "float16"
    return "float32"


def build_trainer(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """An SFTTrainer on the task's prompt-completion pairs: loss on the answer and EOS only."""
    model_args.dtype = compute_dtype(sft)
    if under_fsdp() and model_args.load_in_4bit:
        shard_4bit_weights(model_args)
    train_set, eval_set = training_sets(load_task(task_args.task), task_args.train_limit, task_args.eval_limit)
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


def train(task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> Path:
    """Train, keep the best adapter, and save it with how its base was loaded and its loss curve."""
    trainer = build_trainer(task_args, sft, model_args)
    if trainer.is_world_process_zero():
        print(f"finetune train: {effective_batch(trainer.args)}", flush=True)
    trainer.train(resume_from_checkpoint=True if task_args.resume else None)
    out = Path(sft.output_dir)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        save_model_args(model_args, out)
        write_training_log(trainer.state.log_history, out)
    return out
