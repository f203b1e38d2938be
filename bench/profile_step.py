"""Where a training step goes: torch.profiler over a few optimizer steps of a preset (no validation, nothing
saved). On a GPU: kernel time by kind and how long the GPU sat idle (bench/benchlib.Profiler, the table of
docs/benchmarks.md case 1); on a CPU: each operator's own CPU time, matrix multiplications apart.

    python bench/profile_step.py [PRESET] [--steps 4] [--skip 1] [--out DIR] [--KEY VALUE ...]

Under `accelerate launch` (DDP) each process profiles its own card into its own file (`-rankN`), e.g. the 8B
shape on 4 GPUs: `accelerate launch --config_file finetune/accelerate/ddp.yaml --num_processes 4
bench/profile_step.py llama-3.1-8b-qlora-h100 --model_name_or_path MODEL_DIR --steps 14 --skip 10 --out OUT`.

PRESET defaults to `embedded-cpu-quick` (the demo's). Any other `--KEY VALUE` is a `finetune train` argument on top
of it, e.g. `--lora_target_modules all-linear` (LoRA on all 30 blocks, where the demo's preset adapts the top 10
so that the backward pass stops there), or case 3's `fast-b64` on a GPU: `embedded-gpu --per_device_train_batch_size 64
--lora_dropout 0 --use_liger_kernel true --train_sampling_strategy group_by_length`.
"""

import argparse
import tempfile
from pathlib import Path

import benchlib
import torch

from finetune.config import parse_train_args
from finetune.train import trainer_for

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
           "aten::_scaled_dot_product_flash_attention_for_cpu_backward")  # fmt: skip


def print_cpu_operators(window: benchlib.ProfileWindow, steps: int, rows: int) -> None:
    ops = sorted(window.prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    matmul = sum(e.self_cpu_time_total for e in ops if e.key in MATMULS) / 1e6
    print(f"{torch.get_num_threads()} threads, {steps} steps of {rows} rows profiled: "
          f"{window.wall_s:.1f} s wall, {window.wall_s / steps:.2f} s a step")  # fmt: skip
    rest = total - matmul
    print(f"operators' own CPU time {total:.1f} s: matrix multiplications and attention {matmul:.1f} s "
          f"({100 * matmul / total:.0f}%), everything else {rest:.1f} s ({100 * rest / total:.0f}%)")  # fmt: skip
    print("\n| operator | own CPU s | share | calls |\n|---|---|---|---|")
    for e in ops[:15]:
        own = e.self_cpu_time_total / 1e6
        print(f"| `{e.key}` | {own:.2f} | {100 * own / total:.1f}% | {e.count} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", default="embedded-cpu-quick", help="preset name or YAML config")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps in all")
    parser.add_argument("--skip", type=int, default=1, help="first steps left out of the profile")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the GPU profile's text file")
    args, extra = parser.parse_known_args()
    if not 1 <= args.skip < args.steps:  # the window opens when step `skip` ends and must close on a later one
        parser.error(f"--skip must be at least 1 and below --steps ({args.steps}), got {args.skip}")
    task_args, sft, model_args = parse_train_args([args.preset, "--output_dir", tempfile.mkdtemp(prefix="profile-"),
        "--max_steps", str(args.steps), "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--disable_tqdm", "true", *extra])  # fmt: skip
    trainer = trainer_for(task_args, sft, model_args)
    on_gpu = torch.cuda.is_available() and not sft.use_cpu
    name = Path(args.preset).stem + (f"-rank{sft.process_index}" if sft.world_size > 1 else "")
    window = (benchlib.Profiler(args.skip, args.out / f"profile-{name}.txt") if on_gpu
              else benchlib.ProfileWindow(args.skip, torch.profiler.ProfilerActivity.CPU))  # fmt: skip
    trainer.add_callback(window)
    trainer.train()
    if not on_gpu:
        print_cpu_operators(window, args.steps - args.skip, sft.per_device_train_batch_size)


if __name__ == "__main__":
    main()
