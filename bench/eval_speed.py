"""Evaluation time of the benchmark through lm-eval, per variant, after the model is loaded: the pinned 300
test rows and the whole 3,534-row test split, base and base + adapter, for each dtype:batch setting given.

    python bench/eval_speed.py --adapter runs/embedded-gpu --full-data DIR \
        --settings float32:16 bfloat16:256 bfloat16:256:merged

`float32:16` is what `finetune evaluate` does by default. `--profile` (on a GPU) writes each variant's GPU kernel
time by kind into --out (bench/benchlib.write_kernel_summary). `merged` folds the adapter into the base weights
(peft's `merge_and_unload`) before scoring it, so no LoRA matmuls run. DIR holds the source's `test.jsonl`
(mteb layout); without --full-data the `_full` variants read `$TWEET_SENTIMENT_DATA_DIR`, else the Hub.
"""

import argparse
import os
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import benchlib
import torch
from lm_eval import simple_evaluate
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from finetune.benchmark import BASE_NAME, TaskError, load_tasks, task_manager
from finetune.evaluate import active, environment_recorded, language_model
from finetune.model import base_config, load_model, load_tokenizer

FULL = ("tweet_sentiment_gen_full", "tweet_sentiment_mc_full")


@dataclass(frozen=True)
class Setting:
    dtype: str
    batch_size: int
    merged: bool

    @classmethod
    def parse(cls, text: str) -> "Setting":
        parts = text.split(":")
        return cls(parts[0], int(parts[1]), len(parts) > 2 and parts[2] == "merged")

    def __str__(self) -> str:
        return f"{self.dtype}:{self.batch_size}" + (":merged" if self.merged else "")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def score(lm: HFLM, manager: TaskManager, task: Task, limit: int | None = None, profile: Path | None = None) -> dict:
    """One variant through lm-eval's evaluator, on the task as loaded once (as `finetune evaluate` scores it); the
    manager is the package's, since lm-eval would otherwise index its own thousands of tasks inside the timing.
    For a generative variant, also how many tokens the answers took, and the share that ran to `max_gen_toks`
    without ending: decoding runs until every answer of a batch has ended, so one such answer makes its whole batch
    run to the cap."""
    name = task.config.task
    sync()
    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if profile else nullcontext() as prof
    ):
        start = time.perf_counter()
        with environment_recorded(in_files=False):  # as `finetune evaluate` asks, writing no lm-eval files
            out = simple_evaluate(
                model=lm, tasks=[task], task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=True
            )
        sync()
        seconds = time.perf_counter() - start
    if profile:
        benchlib.write_kernel_summary(prof, seconds, profile)
    values = out["results"][name]
    row = {
        "task": name,
        "seconds": seconds,
        "n": int(out["n-samples"][name]["effective"]),
        "acc": values["acc,none"],
        "macro_f1": values["macro_f1,none"],
        "invalid": values["invalid,none"],
    }
    samples = sorted(out["samples"][name], key=lambda sample: sample["doc_id"])
    row["answers"] = [answer(sample["filtered_resps"]) for sample in samples]
    if task.config.output_type == "generate_until":
        lengths = [len(lm.tok_encode(s["resps"][0][0])) for s in samples]
        cap = out["configs"][name]["generation_kwargs"]["max_gen_toks"]
        row["answer_tokens"] = sum(lengths) / len(lengths)
        row["unended"] = sum(n >= cap for n in lengths) / len(lengths)
    return row


def answer(responses: list) -> str | int:
    """A row's answer: the generated text, or the index of the choice with the highest log-likelihood."""
    if isinstance(responses[0], str):
        return responses[0]
    return max(range(len(responses)), key=lambda i: responses[i][0])


def same_as_first(rows: list[dict]) -> None:
    """Each row's share of answers equal, row by row, to those of the first setting that scored the same model on
    the same variant: a faster setting is one to use only where it answers as the reference does."""
    first: dict[tuple, list] = {}
    for row in rows:
        reference = first.setdefault(
            (row["model"] if row["model"] != "merged" else "adapter", row["task"]), row["answers"]
        )
        row["same"] = sum(a == b for a, b in zip(row["answers"], reference)) / len(reference)


def run_setting(
    setting: Setting,
    base: str,
    adapter: str | None,
    tasks: dict[str, Task],
    warmup: Task,
    manager: TaskManager,
    limit: int | None = None,
    profile_dir: Path | None = None,
) -> tuple[list, int]:
    """Every task for the base, then for base + adapter, with one model per setting loaded as
    `finetune evaluate` loads it (on the GPU where there is one); the rows measured and how many tasks failed
    (a task failing must not lose the others' numbers)."""
    model_args = base_config(base, setting.dtype)
    tokenizer = load_tokenizer(model_args)
    rows, failed = [], 0
    model = load_model(model_args, {"adapter": adapter} if adapter else None)
    lm = language_model(model, tokenizer, setting.batch_size)
    score(lm, manager, warmup, limit=16)  # warm-up: CUDA context, cuBLAS handles, allocator
    for state in [BASE_NAME] + (["adapter"] if adapter else []):
        if state == "adapter" and setting.merged:
            model = model.merge_and_unload()
            lm = language_model(model, tokenizer, setting.batch_size)
        for task_name, task in tasks.items():
            name = state if not setting.merged or state == BASE_NAME else "merged"
            profile = (
                profile_dir / f"profile-{setting}-{name}-{task_name}.txt".replace(":", "-") if profile_dir else None
            )
            try:
                with active(model, state):
                    row = score(lm, manager, task, limit, profile)
            except Exception:  # noqa: BLE001 - said, counted, and the exit status says so
                traceback.print_exc()
                failed += 1
                continue
            row.update(setting=str(setting), model=name)
            rows.append(row)
            print("RESULT", row, flush=True)
    del lm, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="embedded", help="Hub id, folder or `embedded`")
    parser.add_argument("--adapter", help="LoRA adapter folder or Hub id")
    parser.add_argument(  # argparse does not pass a default through `type`
        "--settings", nargs="+", default=[Setting.parse(s) for s in ("float32:16", "bfloat16:256")], type=Setting.parse
    )
    parser.add_argument("--tasks", nargs="+", default=[*benchlib.PINNED, *FULL])
    parser.add_argument("--full-data", type=Path, help="folder with the source's test.jsonl (mteb layout)")
    parser.add_argument("--limit", type=int, help="score only the first N rows of each variant (a smoke test)")
    parser.add_argument("--out", type=Path, help="folder for the results JSON")
    parser.add_argument("--profile", action="store_true", help="GPU kernels of each variant (torch.profiler), in --out")
    args = parser.parse_args()
    if args.profile and args.out is None:
        parser.error("--profile writes its files into --out")
    profile_dir = args.out if args.profile and torch.cuda.is_available() else None
    if args.full_data:
        os.environ["TWEET_SENTIMENT_DATA_DIR"] = str(args.full_data)
    manager = task_manager()
    tasks, failed = {}, 0
    for name in args.tasks:  # one by one, so that a `_full` variant without its data loses only its own rows
        try:
            tasks.update(load_tasks([name], manager))
        except TaskError as err:
            print(f"eval_speed: {err}", file=sys.stderr, flush=True)
            failed += 1
    warmup = load_tasks([benchlib.PINNED[0]], manager)[benchlib.PINNED[0]]
    env = benchlib.environment()
    print("ENV", env, flush=True)
    rows = []
    for setting in args.settings:
        try:
            measured, failures = run_setting(
                setting, args.base, args.adapter, tasks, warmup, manager, args.limit, profile_dir
            )
            rows, failed = rows + measured, failed + failures
        except Exception:  # noqa: BLE001 - one setting failing must not lose the others' numbers
            traceback.print_exc()
            failed += 1
    same_as_first(rows)
    header = (
        "| setting | model | task | rows | seconds | rows/s | acc | macro-F1 | invalid | answer tokens | unended "
        f"| answers as {rows[0]['setting'] if rows else '-'} |"
    )
    print("\n" + header + "\n" + "|---" * 12 + "|")
    for r in rows:
        tokens = f"{r['answer_tokens']:.2f} | {100 * r['unended']:.0f}%" if "answer_tokens" in r else " |"
        print(f"| {r['setting']} | {r['model']} | {r['task']} | {r['n']} | {r['seconds']:.2f} | "
              f"{r['n'] / r['seconds']:.0f} | {r['acc']:.3f} | {r['macro_f1']:.3f} | {r['invalid']:.3f} | "
              f"{tokens} | {100 * r['same']:.1f}% |")  # fmt: skip
    if args.out:
        benchlib.write_json(
            args.out / "eval-speed.json", [{k: v for k, v in r.items() if k != "answers"} for r in rows], env
        )
    if failed:
        raise SystemExit(f"{failed} setting(s) or task(s) failed (said above); the table holds the rest")


if __name__ == "__main__":
    main()
