"""Training throughput of `finetune train` on a Llama-3.1-8B-shaped model with random weights (the real
weights are gated; the arithmetic is the same), the seed's training arguments and ours back to back in one
process on one card, on the pinned 3,200 training rows.

    python bench/train_throughput.py                          # the seed's arguments and the H100 preset, nf4
    python bench/train_throughput.py --quant bf16             # case 2: plain bf16 LoRA (16 GB of weights)
    python bench/train_throughput.py --quant nf4 --variants seed fast --profile fast

For each variant it prints examples/s and non-padding tokens/s at steady state (over whole epochs, the first
left out; the seed's arguments, an epoch of which takes half an hour, over a window of 10 steps, the first 2 left
out) and end to end, MFU (4N FLOP per token), peak `torch.cuda.max_memory_allocated` and the
padding share of the batches. The first run writes the random model (16 GB) to --model-dir. The variants are
bench/benchlib.py's `VARIANTS_8B`, which scaleout_train.py runs on several GPUs.
"""

import argparse
import os
import traceback
from pathlib import Path

import benchlib
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finetune.outputs import cache_dir

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quant", choices=("nf4", "bf16"), default="nf4", help="4-bit nf4 base, or plain bf16")
    parser.add_argument("--variants", nargs="+", default=["seed", "h100"], choices=benchlib.VARIANTS_8B)
    parser.add_argument("--model-dir", type=Path, default=cache_dir() / "llama-3.1-8b-shape-random")
    parser.add_argument("--tokenizer", default="embedded", help="Hub id, folder or `embedded` (SmolLM2's)")
    benchlib.add_window_args(parser)
    parser.add_argument("--peak-tflops", type=float, default=benchlib.H100_BF16_DENSE_TFLOPS)
    parser.add_argument(
        "--profile", nargs="*", default=[], help="variants to profile 3 more steps of, after the timed ones"
    )
    parser.add_argument("--out", type=Path, help="folder for results JSON and profiles")
    parser.add_argument("--build-only", action="store_true", help="write the random model and exit")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    build_random_model(args.model_dir)
    if args.build_only:
        return
    benchlib.add_tokenizer(args.model_dir, args.tokenizer)
    env = benchlib.environment()
    env["measured_bf16_matmul_tflops"] = f"{benchlib.matmul_tflops():.0f}"
    print("ENV", env, flush=True)
    rows = []
    for name in args.variants:
        v = benchlib.timed_as_asked(benchlib.VARIANTS_8B[name], args)
        profile_dir = (args.out or Path(".")) if name in args.profile else None
        result, error = None, ""
        try:
            result = benchlib.run_variant(
                name, v, args.model_dir, args.quant, profile_dir, args.peak_tflops, args.epochs
            )
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
