"""A preset's margin: `finetune train PRESET` at its learning rate and at multiples of it, over several seeds, each
adapter then scored by `finetune evaluate` on the pinned test rows. A recipe that holds at twice its learning rate
on the base it was tuned on has room to hold on the next base; the spread over seeds says how much one run's score
means. Prints a table (and writes margin.md / margin.json into the output folder).

    python bench/margin.py PRESET [--factors 1 2] [--seeds 42 1 2] [--parallel N] [--output_dir DIR] [-- FLAGS]

`--parallel N` runs N trainings at once (small bases leave a GPU mostly idle; time them with 1). FLAGS after `--`
go to every `finetune train` (e.g. `--model_name_or_path BASE`). Runs keep the divergence guard on, as users do: a
run it stops is scored on the checkpoint it kept, and the table says so.
"""

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from benchlib import run_finetune, scored_as_trained

from finetune.config import parse_train_args

GUARD_EXIT = 3  # finetune.guard.Diverged


@dataclass
class Run:
    factor: float
    seed: int
    learning_rate: float
    macro_f1: float | None = None
    accuracy: float | None = None
    wall_s: float = 0.0
    train_runtime_s: float | None = None
    stopped_by_guard: bool = False
    error: str = ""


def train_and_score(
    preset: str, run: Run, out: Path, flags: list[str], base_flags: list[str], tasks: list[str], batch_size: int
) -> Run:
    folder, log = out / f"x{run.factor:g}-s{run.seed}", out / f"x{run.factor:g}-s{run.seed}.log"
    trained = run_finetune("train", preset, *flags, "--learning_rate", f"{run.learning_rate:g}", "--seed",
                           str(run.seed), "--output_dir", str(folder), "--overwrite", "true", log=log)  # fmt: skip
    run.wall_s = trained.wall_s
    run.stopped_by_guard = trained.code == GUARD_EXIT
    if trained.code not in (0, GUARD_EXIT):
        run.error = f"train exited {trained.code} (see {log})"
        return run
    history = json.loads((folder / "train_log.json").read_text())
    run.train_runtime_s = next((row["train_runtime"] for row in history if "train_runtime" in row), None)
    report = out / f"report-x{run.factor:g}-s{run.seed}"
    scored = run_finetune("evaluate", *base_flags, "--adapter", str(folder), "--tasks", *tasks, "--batch_size",
                          str(batch_size), "--output_dir", str(report), "--overwrite", log=log)  # fmt: skip
    if scored.code:
        run.error = f"evaluate exited {scored.code} (see {log})"
        return run
    results = json.loads((report / "metrics.json").read_text())["results"][folder.name.replace(".", "_")]
    run.macro_f1, run.accuracy = results[tasks[0]]["macro_f1"], results[tasks[0]]["acc"]
    return run


def table(runs: list[Run], reference: float | None) -> str:
    lines = ["| x lr | learning rate | seed | macro-F1 | accuracy | train s | wall s | guard |", "|" + "---|" * 8]
    for r in runs:
        f1 = "—" if r.macro_f1 is None else f"{r.macro_f1:.3f}"
        acc = "—" if r.accuracy is None else f"{r.accuracy:.3f}"
        lines.append(f"| {r.factor:g} | {r.learning_rate:g} | {r.seed} | {f1} | {acc} | {r.train_runtime_s or '—'} "
                     f"| {r.wall_s} | {'stopped' if r.stopped_by_guard else ''}{r.error} |")  # fmt: skip
    lines += ["", "| x lr | mean macro-F1 | min | max | spread | lowest vs reference |", "|---|---|---|---|---|---|"]
    for factor in sorted({r.factor for r in runs}):
        scores = [r.macro_f1 for r in runs if r.factor == factor and r.macro_f1 is not None]
        if not scores:
            continue
        gap = f"{min(scores) - reference:+.3f}" if reference is not None else "—"
        lines.append(f"| {factor:g} | {statistics.mean(scores):.3f} | {min(scores):.3f} | {max(scores):.3f} | "
                     f"{max(scores) - min(scores):.3f} | {gap} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["tweet_sentiment_gen"], help="the first is tabled")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--reference", type=float, help="the preset's documented macro-F1, for the last column")
    args, flags = parser.parse_known_args()
    flags = [flag for flag in flags if flag != "--"]
    _, sft, model_args = parse_train_args([args.preset, *flags])  # its learning rate and base; the flags checked
    base_flags = scored_as_trained(model_args)
    out = args.output_dir or Path("runs") / f"margin-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    runs = [Run(f, s, sft.learning_rate * f) for f in args.factors for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        score = lambda run: train_and_score(args.preset, run, out, flags, base_flags, args.tasks, args.batch_size)  # noqa: E731
        runs = list(pool.map(score, runs))
    text = table(runs, args.reference)
    (out / "margin.md").write_text(text + "\n")
    (out / "margin.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(text)


if __name__ == "__main__":
    main()
