"""Where a training step of `finetune demo` goes on this CPU: torch.profiler over a few optimizer steps of the
`embedded-cpu-quick` preset (the demo's; no validation, nothing saved), each operator's own CPU time, matrix
multiplications apart from everything else.

    python bench/cpu_profile.py [--steps 4] [--skip 1] [--KEY VALUE ...]

Any other `--KEY VALUE` is a `finetune train` argument on top of the preset, e.g. `--lora_target_modules
'model\\.layers\\.2\\d\\..*_proj'` (LoRA on the top 10 of the 30 layers only, so the backward pass stops there).
"""

import argparse
import tempfile

import benchlib
import torch

from finetune.config import parse_train_args
from finetune.train import build_trainer

PRESET = "embedded-cpu-quick"
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
           "aten::_scaled_dot_product_flash_attention_for_cpu_backward")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps in all")
    parser.add_argument("--skip", type=int, default=1, help="first steps left out of the profile")
    args, extra = parser.parse_known_args()
    task_args, sft, model_args = parse_train_args([PRESET, "--output_dir", tempfile.mkdtemp(prefix="profile-"),
        "--max_steps", str(args.steps), "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--disable_tqdm", "true", *extra])  # fmt: skip
    trainer = build_trainer(task_args, sft, model_args)
    profiler = benchlib.ProfileWindow(args.skip, torch.profiler.ProfilerActivity.CPU)
    trainer.add_callback(profiler)
    trainer.train()
    ops = sorted(profiler.prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    matmul = sum(e.self_cpu_time_total for e in ops if e.key in MATMULS) / 1e6
    steps = args.steps - args.skip
    print(f"{torch.get_num_threads()} threads, {steps} steps of {sft.per_device_train_batch_size} rows profiled: "
          f"{profiler.wall_s:.1f} s wall, {profiler.wall_s / steps:.2f} s a step")  # fmt: skip
    rest = total - matmul
    print(f"operators' own CPU time {total:.1f} s: matrix multiplications and attention {matmul:.1f} s "
          f"({100 * matmul / total:.0f}%), everything else {rest:.1f} s ({100 * rest / total:.0f}%)")  # fmt: skip
    print("\n| operator | own CPU s | share | calls |\n|---|---|---|---|")
    for e in ops[:15]:
        own = e.self_cpu_time_total / 1e6
        print(f"| `{e.key}` | {own:.2f} | {100 * own / total:.1f}% | {e.count} |")


if __name__ == "__main__":
    main()
