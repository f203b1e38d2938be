"""Case 3: the embedded SmolLM2-135M-Instruct trained on the whole pinned split (3,200 rows, 3 epochs, validation
and checkpoints as the preset says), the preset's former arguments and ours back to back in one process, each
followed by the macro-F1 of its adapter on the pinned 300 test rows (lm-eval, fp32, as `finetune evaluate`).

    python bench/smollm2_train.py --variants before fast-b64 --out results/

Per variant: load (`finetune.train.trainer_for`: data, model, trainer), train (`trainer.train()`, validation and
checkpoints included), save, their sum (the run), an epoch's pure training time at steady state (median step x
steps per epoch), the wall time of the first epoch (validation, checkpoints and one-off kernel compilation
included), tokens/s, peak memory, padding share, macro-F1.
"""

import argparse
import math
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import benchlib
import torch
from transformers.models.llama import modeling_llama

from finetune.benchmark import load_tasks
from finetune.config import parse_train_args
from finetune.evaluate import language_model, run_benchmark
from finetune.model import base_config, load_model, load_tokenizer
from finetune.train import trainer_for

PRESET = "embedded-gpu"
# `embedded-gpu` as of commit 62e99b2, spelled out so that the row stays the same when the preset changes.
BEFORE = ("--lora_dropout", "0.05", "--per_device_train_batch_size", "32", "--learning_rate", "0.0005",
          "--warmup_steps", "20", "--eval_steps", "25", "--save_steps", "25", "--per_device_eval_batch_size", "64",
          "--train_sampling_strategy", "random", "--use_liger_kernel", "false", "--metric_for_best_model", "eval_loss",
          "--greater_is_better", "false")  # fmt: skip
FAST = ("--lora_dropout", "0", "--use_liger_kernel", "true", "--train_sampling_strategy", "group_by_length",
        "--per_device_eval_batch_size", "256")  # fmt: skip


def fast(batch: int, lr: str, warmup: int, every: int, *more: str) -> tuple[str, ...]:
    return (*FAST, "--per_device_train_batch_size", str(batch), "--learning_rate", lr, "--warmup_steps", str(warmup),
            "--eval_steps", str(every), "--save_steps", str(every), *more)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    args: tuple[str, ...]
    about: str


VARIANTS = {
    "before": Variant(BEFORE, "embedded-gpu at 62e99b2: batch 32, lr 5e-4, dropout 0.05, validate+save every 25"),
    "fast-b32": Variant(fast(32, "0.0005", 20, 50), "same optimisation, dropout 0, Liger, grouped, validate every 50"),
    "fast-b64": Variant(fast(64, "0.001", 10, 25), "batch 64, lr 1e-3, dropout 0, Liger, grouped, validate every 25"),
    "fast-b128": Variant(fast(128, "0.001", 5, 25), "batch 128, lr 1e-3, dropout 0, Liger, grouped, every 25"),
    "fast-b256": Variant(
        fast(256, "0.002", 3, 13, "--validation_loss", "false"),
        "batch 256 (13 steps an epoch), lr 2e-3, validate by macro-F1 alone once an epoch",
    ),
    "fast-b256-lr3e-3": Variant(fast(256, "0.003", 3, 13, "--validation_loss", "false"), "fast-b256 at lr 3e-3"),
    "b64-random": Variant(fast(64, "0.001", 10, 25, "--train_sampling_strategy", "random"), "fast-b64 in random order"),
    "preset": Variant((), "the embedded-gpu preset as it is in this checkout"),
}


def train_variant(name: str, variant: Variant, runs: Path, skip: int) -> dict:
    """Load, train and save as `finetune train` does, with the measurements around each part."""
    out = runs / name
    task_args, sft, model_args = parse_train_args([PRESET, "--output_dir", str(out), "--disable_tqdm", "true",
                                                   *variant.args])  # fmt: skip
    with benchlib.restored_modules(modeling_llama):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer = trainer_for(task_args, sft, model_args)
        t_load = time.perf_counter() - t0
        batches = benchlib.count_training_batches(trainer)
        timer = benchlib.StepTimer()
        trainer.add_callback(timer)
        torch.cuda.reset_peak_memory_stats()
        t1 = time.perf_counter()
        trainer.train()
        t_train = time.perf_counter() - t1
        trainer.save_model(str(out))
        t_save = time.perf_counter() - t1 - t_train
        per_epoch = math.ceil(len(trainer.train_dataset) / sft.per_device_train_batch_size)
        tp = benchlib.summarize(timer, batches, per_epoch, sft.gradient_accumulation_steps, skip,
                                benchlib.counted_params(trainer.model), benchlib.H100_BF16_DENSE_TFLOPS)  # fmt: skip
        steps_per_epoch = math.ceil(per_epoch / sft.gradient_accumulation_steps)  # the timer times optimizer steps
        durations = [b - a for a, b in zip([timer.start, *timer.ends], timer.ends, strict=False)]
        clean = [d for d, busy in zip(durations, timer.busy, strict=True) if not busy][skip:]
        median = statistics.median(clean)
        row = {
            "variant": name, "about": variant.about, "arguments": " ".join([PRESET, *variant.args]),
            "load_s": t_load, "train_s": t_train, "save_s": t_save, "run_s": t_load + t_train + t_save,
            "steps": tp.steps, "epochs": sft.num_train_epochs, "epoch_steady_s": median * steps_per_epoch,
            "epoch1_wall_s": timer.ends[steps_per_epoch - 1] - timer.start,
            "validate_and_save_s": sum(d - median for d, busy in zip(durations, timer.busy, strict=True) if busy),
            "tokens_per_s": tp.tokens_per_s, "examples_per_s": tp.examples_per_s,
            "e2e_examples_per_s": tp.e2e_examples_per_s, "peak_gib": tp.peak_gib, "padding_share": tp.padding_share,
            "best_checkpoint": trainer.state.best_model_checkpoint, "best_validation": trainer.state.best_metric,
        }  # fmt: skip
        benchlib.release(trainer)
    return row


def macro_f1(adapter: Path, batch_size: int) -> dict:
    """The adapter scored as `finetune evaluate` scores it: fp32 base, peft adapter, lm-eval, pinned 300."""
    model_args = base_config("embedded")
    model = load_model(model_args, {"adapter": str(adapter)})
    lm = language_model(model, load_tokenizer(model_args), batch_size)
    results, _ = run_benchmark(lm, load_tasks(list(benchlib.PINNED)), None)
    scores = {}
    for task, r in results.items():
        kind = task.rsplit("_", 1)[-1]
        scores.update({f"macro_f1_{kind}": r["macro_f1"], f"acc_{kind}": r["acc"], f"invalid_{kind}": r["invalid"]})
    del lm, model
    torch.cuda.empty_cache()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["before", "preset"], choices=VARIANTS)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-smollm2"), help="where adapters are written")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the steady state")
    parser.add_argument("--out", type=Path, help="folder for the results JSON")
    args = parser.parse_args()
    env = benchlib.environment()
    print("ENV", env, flush=True)
    rows = []
    for name in args.variants:
        try:
            row = train_variant(name, VARIANTS[name], args.runs, args.skip)
        except Exception:  # noqa: BLE001 - one configuration failing must not lose the others' numbers
            traceback.print_exc()
            continue
        row.update(macro_f1(args.runs / name, 64))
        rows.append(row)
        print("RESULT", row, flush=True)
    print("\n| variant | run s | load | train | save | epoch (steady) | 1st epoch wall | validate+save | tok/s | "
          "peak GiB | padding | best validation | macro-F1 gen | mc |\n" + "|---" * 14 + "|")  # fmt: skip
    for r in rows:
        print(f"| {r['variant']} | {r['run_s']:.1f} | {r['load_s']:.1f} | {r['train_s']:.1f} | {r['save_s']:.1f} | "
              f"{r['epoch_steady_s']:.2f} | {r['epoch1_wall_s']:.1f} | {r['validate_and_save_s']:.1f} | "
              f"{r['tokens_per_s']:,.0f} | {r['peak_gib']:.2f} | {100 * r['padding_share']:.0f}% | "
              f"{r['best_validation']:.3f} | {r['macro_f1_gen']:.3f} | {r['macro_f1_mc']:.3f} |")  # fmt: skip
    if args.out:
        benchlib.write_json(args.out / "smollm2.json", rows, env)


if __name__ == "__main__":
    main()
