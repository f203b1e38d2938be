"""Training throughput of `finetune train` on a Llama-3.1-8B-shaped model with random weights (the real
weights are gated; the cost is the same). Prints examples/s, non-padding tokens/s and peak GPU memory.

    python bench/qlora_throughput.py --tokenizer DIR --model-dir /tmp/llama8b --steps 20 [--key value ...]
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from finetune.config import parse_train_args
from finetune.train import build_trainer

LLAMA_31_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def build_random_model(folder: Path, tokenizer_dir: Path) -> None:
    """Random bf16 weights of the 8B shape, saved once so that 4-bit loading goes through from_pretrained."""
    if (folder / "config.json").exists():
        return
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**LLAMA_31_8B, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama8b"))
    parser.add_argument("--steps", type=int, default=20)
    args, overrides = parser.parse_known_args()
    build_random_model(args.model_dir, args.tokenizer)
    fixed = ["--model_name_or_path", str(args.model_dir), "--output_dir", "/tmp/bench-run", "--max_steps",
             str(args.steps), "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
             "--disable_tqdm", "true"]  # fmt: skip
    task_args, sft, model_args = parse_train_args(["llama-3.1-8b-qlora", *fixed, *overrides])
    trainer = build_trainer(task_args, sft, model_args)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    examples = args.steps * sft.per_device_train_batch_size * sft.gradient_accumulation_steps
    tokens = max(row.get("num_tokens", 0) for row in trainer.state.log_history)
    print(
        f"RESULT {' '.join(overrides) or 'preset'}: {examples / seconds:.1f} examples/s, "
        f"{tokens / seconds:.0f} tokens/s, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, "
        f"{args.steps} steps in {seconds:.1f} s on {torch.cuda.get_device_name()}"
    )


if __name__ == "__main__":
    main()
