"""Training throughput on several GPUs of one host: bench/train_throughput.py's 8B-shaped 4-bit nf4 QLoRA run
(the same variants, bench/benchlib.py's `VARIANTS_8B`, same per-device arguments) under `accelerate launch`, DDP or
FSDP. Each process times its optimizer steps and counts the non-padding tokens of its own batches; the first adds
them up and prints one RESULT line: processes, tokens/s and examples/s at steady state (all processes together),
and the peak `torch.cuda.max_memory_allocated` of every card.

    accelerate launch --num_processes N [--config_file finetune/accelerate/fsdp_qlora.yaml] \\
        bench/scaleout_train.py --model-dir DIR --tokenizer DIR [--variant b64] [--out results.jsonl] [--KEY VALUE ...]

Any other `--KEY VALUE` is a `finetune train` argument added to the variant's (e.g. `--ddp_find_unused_parameters
true`, to measure DDP's search for unused parameters on and off).

The model folder is written once beforehand: `python bench/train_throughput.py --build-only --model-dir DIR`.
"""

import argparse
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import benchlib
import torch
from accelerate import PartialState
from accelerate.utils import gather_object


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="the 8B-shaped folder train_throughput.py wrote")
    parser.add_argument("--tokenizer", default="embedded", help="Hub id, folder or `embedded` (SmolLM2's)")
    parser.add_argument("--variant", default="b64", choices=benchlib.VARIANTS_8B)
    benchlib.add_window_args(parser)
    parser.add_argument("--label", default="DDP", help="how the processes share the work, for the RESULT line")
    parser.add_argument("--out", type=Path, help="JSON Lines file the first process appends its row to")
    args, extra = parser.parse_known_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    state = PartialState()
    with state.main_process_first():
        benchlib.add_tokenizer(args.model_dir, args.tokenizer)
    v = benchlib.timed_as_asked(benchlib.VARIANTS_8B[args.variant], args)
    v = replace(v, args=(*v.args, *extra))
    result = benchlib.run_variant(
        args.variant, v, args.model_dir, "nf4", None, benchlib.H100_BF16_DENSE_TFLOPS, args.epochs
    )
    ranks = gather_object([asdict(result)])
    if not state.is_main_process:
        return
    row = {
        "label": args.label,
        "processes": state.num_processes,
        "variant": args.variant,
        "arguments": " ".join([v.preset, *v.args]),
        "steps": result.steps,
        "skipped": result.skipped,
        # the processes step together (DDP and FSDP synchronise every step), so their rates add up
        "tokens_per_s": sum(r["tokens_per_s"] for r in ranks),
        "examples_per_s": sum(r["examples_per_s"] for r in ranks),
        "e2e_tokens_per_s": sum(r["e2e_tokens_per_s"] for r in ranks),
        "peak_gib_per_card": [round(r["peak_gib"], 2) for r in ranks],
        "padding_per_card": [round(r["padding_share"], 3) for r in ranks],
        "mfu_per_card": sum(r["mfu"] for r in ranks) / len(ranks),
        "cpu_threads_per_process": torch.get_num_threads(),
        "environment": benchlib.environment(),
    }
    print("RESULT", json.dumps(row), flush=True)
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
