"""`finetune demo`: the whole job on a laptop CPU, offline: train the quick preset on the embedded model,
then score base and adapter with the benchmark's generative variant and show before -> after."""

import time
from pathlib import Path

from finetune.benchmark import load_benchmark
from finetune.config import parse_train_args
from finetune.evaluate import evaluate
from finetune.outputs import check_output
from finetune.report import write_report
from finetune.train import train

DEMO_PRESET = "embedded-cpu-quick"


def demo(out: Path, overrides: list[str], limit: int | None = None) -> str | None:
    """The report's text and timings; None on the processes other than the first under `accelerate launch`. The
    report scores the variant the adapter learned to answer (the generative one), on its first `limit` rows if
    set; `finetune evaluate` scores the multiple-choice one too, which would add about a quarter to the demo's time
    on 2 cores."""
    started = time.perf_counter()
    task_args, sft, model_args = parse_train_args([DEMO_PRESET, "--output_dir", str(out / "adapter"), *overrides])
    check_output(out / "report", task_args.overwrite, flag="--overwrite true")
    benchmark = load_benchmark(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    adapter = train(benchmark, task_args, sft, model_args)
    trained = time.perf_counter()
    evaluation = evaluate(model_args, [str(adapter)], tasks={benchmark.task.config.task: benchmark.task}, limit=limit)
    if evaluation is None:
        return None
    text = write_report(evaluation, out / "report", task_args.overwrite)
    done = time.perf_counter()
    timing = (
        f"\ntrain {trained - started:.0f} s, evaluate base + adapter {done - trained:.0f} s, "
        f"total {done - started:.0f} s; report in {out / 'report'}\n"
    )
    return text + timing
