"""Training throughput of `finetune train` on a Llama-3.1-8B-shaped model with random weights (the real
weights are gated; the arithmetic is the same), the seed's training arguments and ours back to back in one
process on one card, on the pinned 3,200 training rows.

    python bench/train_throughput.py --quant nf4              # case 1: 4-bit nf4 QLoRA
    python bench/train_throughput.py --quant bf16             # case 2: plain bf16 LoRA (16 GB of weights)
    python bench/train_throughput.py --quant nf4 --variants seed fast --profile fast

For each variant it prints examples/s and non-padding tokens/s at steady state (the first `skip` optimizer
steps left out) and end to end, MFU (4N FLOP per token), peak `torch.cuda.max_memory_allocated` and the
padding share of the batches. The first run writes the random model (16 GB) to --model-dir.
"""

import argparse
import math
import os
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import benchlib
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.models.llama import modeling_llama

from finetune.config import parse_train_args
from finetune.model import cache_dir, resolve_model
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

SEED_PRESET = "llama-3.1-8b-qlora"
NO_QUANT = ["--load_in_4bit", "false", "--use_bnb_nested_quant", "false"]


@dataclass(frozen=True)
class Variant:
    """Training arguments on top of a preset, and how many optimizer steps to time (`skip` of them left
    out of the steady state)."""

    preset: str
    args: tuple[str, ...]
    steps: int
    skip: int
    about: str


def big_batch(batch: int) -> tuple[str, ...]:
    """The 80 GB card's arguments without the speed-ups measured on/off below."""
    return ("--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", "1",
            "--gradient_checkpointing", "false", "--optim", "adamw_torch_fused")  # fmt: skip


def fast(batch: int) -> tuple[str, ...]:
    return (*big_batch(batch), "--lora_dropout", "0", "--train_sampling_strategy", "group_by_length",
            "--use_liger_kernel", "true")  # fmt: skip


VARIANTS: dict[str, Variant] = {
    "seed": Variant(
        SEED_PRESET,
        (
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "8",
            "--gradient_checkpointing",
            "true",
            "--optim",
            "paged_adamw_32bit",
        ),
        10,
        2,
        "the seed article's: batch 1 x accumulation 8, checkpointing, paged AdamW, dropout 0.1",
    ),
    "b64": Variant(SEED_PRESET, big_batch(64), 12, 3, "batch 64, no checkpointing, fused AdamW (2026-11-26 best)"),
    "fast": Variant(SEED_PRESET, fast(128), 14, 4, "batch 128 + length-grouped + Liger + dropout 0"),
    "fast-b256": Variant(SEED_PRESET, fast(256), 12, 4, "fast at batch 256"),
    "fast-b64": Variant(SEED_PRESET, fast(64), 14, 4, "fast at batch 64"),
    "fast-random": Variant(
        SEED_PRESET, (*fast(128), "--train_sampling_strategy", "random"), 14, 4, "fast without length grouping"
    ),
    "fast-tforder": Variant(
        SEED_PRESET,
        (*fast(128), "--balance_length_groups", "false"),
        14,
        4,
        "fast in transformers' own length-grouped order (drawn from the global generator, not from seed + epoch)",
    ),
    "fast-rebalance": Variant(
        SEED_PRESET,
        (*fast(128), "--train_sampling_strategy", "batch_rebalance"),
        14,
        4,
        "fast with transformers' batch_rebalance sampler (each step's rows split across processes by padded cost)",
    ),
    "fast-noliger": Variant(SEED_PRESET, (*fast(128), "--use_liger_kernel", "false"), 14, 4, "fast without Liger"),
    "fast-dropout": Variant(SEED_PRESET, (*fast(128), "--lora_dropout", "0.1"), 14, 4, "fast with dropout 0.1"),
    "fast-padfree": Variant(
        SEED_PRESET,
        (*fast(128), "--train_sampling_strategy", "random", "--padding_free", "true", "--max_length", "None"),
        14,
        4,
        "fast, padding-free (one flat sequence, sdpa block-diagonal mask) instead of grouping",
    ),
    "ckpt-b256": Variant(
        SEED_PRESET,
        (*fast(256), "--gradient_checkpointing", "true"),
        12,
        4,
        "fast at batch 256 with gradient checkpointing (the 16 GB budget)",
    ),
    "ckpt-b192": Variant(
        SEED_PRESET,
        (*fast(192), "--gradient_checkpointing", "true"),
        12,
        4,
        "fast at batch 192 with gradient checkpointing",
    ),
    "ckpt-b128": Variant(
        SEED_PRESET,
        (*fast(128), "--gradient_checkpointing", "true"),
        14,
        4,
        "fast at batch 128 with gradient checkpointing",
    ),
    "fast-compile": Variant(SEED_PRESET, (*fast(128), "--torch_compile", "true"), 16, 6, "fast + torch.compile"),
}


def build_random_model(folder: Path) -> None:
    """Random bf16 weights of the 8B shape, written once so that 4-bit loading goes through from_pretrained."""
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return  # one shard or several: transformers 5 writes 16 GB as one file (max_shard_size 50GB)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: 16 GB on the card, not 32 + 16
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(LlamaConfig(**LLAMA_31_8B))
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def add_tokenizer(folder: Path, tokenizer: str) -> None:
    """`finetune train` reads the tokenizer from the model folder; any tokenizer with ids < 128,256 will do
    (the default, SmolLM2's, gives ~50 tokens a row, like Llama 3.1's)."""
    if not (folder / "tokenizer_config.json").exists():
        AutoTokenizer.from_pretrained(resolve_model(tokenizer)).save_pretrained(folder)


def run_variant(name: str, variant: Variant, model_dir: Path, quant: str, profile_dir: Path | None, peak: float):
    """One configuration, start to end: build the trainer (model load included), train, measure, free."""
    steps = variant.steps + (3 if profile_dir else 0)
    fixed = ["--model_name_or_path", str(model_dir), "--output_dir", tempfile.mkdtemp(prefix="bench-"),
             "--max_steps", str(steps), "--eval_strategy", "no", "--save_strategy", "no",
             "--load_best_model_at_end", "false", "--disable_tqdm", "true", "--logging_steps", "1000",
             "--bf16", "true", "--fp16", "false"]  # fmt: skip
    argv = [variant.preset, *fixed, *(NO_QUANT if quant == "bf16" else []), *variant.args]
    task_args, sft, model_args = parse_train_args(argv)
    with benchlib.restored_modules(modeling_llama):
        trainer = build_trainer(task_args, sft, model_args)
        batches = benchlib.count_training_batches(trainer)
        timer = benchlib.StepTimer()
        trainer.add_callback(timer)
        if profile_dir:
            trainer.add_callback(benchlib.Profiler(variant.steps, profile_dir / f"profile-{quant}-{name}.txt"))
        torch.cuda.reset_peak_memory_stats()
        try:
            trainer.train()
            timer.ends = timer.ends[: variant.steps]
            n_batches = math.ceil(len(trainer.train_dataset) / sft.per_device_train_batch_size)
            return benchlib.summarize(
                timer, batches, n_batches, sft.gradient_accumulation_steps, variant.skip,
                benchlib.counted_params(trainer.model), peak,
            )  # fmt: skip
        finally:
            benchlib.release(trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quant", choices=("nf4", "bf16"), default="nf4", help="4-bit nf4 base, or plain bf16")
    parser.add_argument("--variants", nargs="+", default=["seed", "b64", "fast"], choices=VARIANTS)
    parser.add_argument("--model-dir", type=Path, default=cache_dir() / "llama-3.1-8b-shape-random")
    parser.add_argument("--tokenizer", default="embedded", help="Hub id, folder or `embedded` (SmolLM2's)")
    parser.add_argument("--steps", type=int, help="optimizer steps per variant (default: the variant's own)")
    parser.add_argument("--skip", type=int, help="first steps left out of the steady state (default: the variant's)")
    parser.add_argument("--peak-tflops", type=float, default=benchlib.H100_BF16_DENSE_TFLOPS)
    parser.add_argument("--profile", nargs="*", default=[], help="variants to profile 3 extra steps of")
    parser.add_argument("--out", type=Path, help="folder for results JSON and profiles")
    parser.add_argument("--build-only", action="store_true", help="write the random model and exit")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    build_random_model(args.model_dir)
    if args.build_only:
        return
    add_tokenizer(args.model_dir, args.tokenizer)
    env = benchlib.environment()
    env["measured_bf16_matmul_tflops"] = f"{benchlib.matmul_tflops():.0f}"
    print("ENV", env, flush=True)
    rows = []
    for name in args.variants:
        v = VARIANTS[name]
        v = Variant(v.preset, v.args, args.steps or v.steps, v.skip if args.skip is None else args.skip, v.about)
        profile_dir = (args.out or Path(".")) if name in args.profile else None
        result, error = None, ""
        try:
            result = run_variant(name, v, args.model_dir, args.quant, profile_dir, args.peak_tflops)
        except torch.OutOfMemoryError:
            error = "out of memory"
        except Exception as err:  # noqa: BLE001 - one configuration failing must not lose the others' numbers
            traceback.print_exc()
            error = f"{type(err).__name__}: {str(err)[:200]}"
        if error:  # outside the except block, so the traceback's frames (and their tensors) are gone
            benchlib.free_card()
        row = benchlib.as_row(name, [v.preset, *v.args], result, error)
        row["about"], row["quant"] = v.about, args.quant
        rows.append(row)
        print("RESULT", row, flush=True)
    benchlib.print_table(rows, args.peak_tflops)
    if args.out:
        benchlib.write_json(args.out / f"train-{args.quant}.json", rows, env)


if __name__ == "__main__":
    main()
