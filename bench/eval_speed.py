"""Evaluation time of the benchmark through lm-eval, per variant, after the model is loaded: the pinned 300
test rows and the whole 3,534-row test split, base and base + adapter, for each dtype:batch setting given.

    python bench/eval_speed.py --adapter runs/embedded-gpu --full-data DIR \
        --settings float32:16 bfloat16:256 bfloat16:256:merged

`float32:16` is what `finetune evaluate` does by default. `merged` folds the adapter into the base weights
(peft's `merge_and_unload`) before scoring it, so no LoRA matmuls run. DIR holds the source's `test.jsonl`
(mteb layout); without --full-data the `_full` variants read `$TWEET_SENTIMENT_DATA_DIR`, else the Hub.
"""

import argparse
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import benchlib
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import lm_eval_tasks
from finetune.model import resolve_model

PINNED = ("tweet_sentiment_gen", "tweet_sentiment_mc")
FULL = ("tweet_sentiment_gen_full", "tweet_sentiment_mc_full")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def task_manager() -> TaskManager:
    """The task folder of this package only, indexed once (lm-eval's own ~10k tasks are not scanned)."""
    return TaskManager(include_path=str(Path(lm_eval_tasks.__file__).parent), include_defaults=False)


def load(base: str, adapter: str | None, dtype: torch.dtype, merged: bool = False):
    """The base on the GPU, with the adapter attached (or folded in)."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=dtype).to("cuda").eval()
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
        if merged:
            model = model.merge_and_unload()
    return model


def score(lm: HFLM, manager: TaskManager, task: str, limit: int | None = None) -> dict:
    """One variant through lm-eval's evaluator; the seconds include lm-eval building the task."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=False
    )
    seconds = time.perf_counter() - start
    values = out["results"][task]
    return {
        "task": task,
        "seconds": seconds,
        "n": int(out["n-samples"][task]["effective"]),
        "acc": values["acc,none"],
        "macro_f1": values["macro_f1,none"],
        "invalid": values["invalid,none"],
    }


def run_setting(setting: Setting, base: str, adapter: str | None, tasks: list[str], manager: TaskManager) -> list:
    """Every task for the base, then for base + adapter, with one loaded model per setting."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(base))
    rows = []
    model = load(base, adapter, DTYPES[setting.dtype], merged=False)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=setting.batch_size)
    score(lm, manager, PINNED[0], limit=16)  # warm-up: CUDA context, cuBLAS handles, allocator
    states = ["base"] + (["adapter"] if adapter else [])
    for state in states:
        if state == "adapter" and setting.merged:
            model = model.merge_and_unload()
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=setting.batch_size)
        for task in tasks:
            if isinstance(model, PeftModel) and state == "base":
                with model.disable_adapter():
                    row = score(lm, manager, task)
            else:
                row = score(lm, manager, task)
            row.update(setting=str(setting), model=state if not setting.merged or state == "base" else "merged")
            rows.append(row)
            print("RESULT", row, flush=True)
    del lm, model
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="embedded", help="Hub id, folder or `embedded`")
    parser.add_argument("--adapter", help="LoRA adapter folder or Hub id")
    parser.add_argument("--settings", nargs="+", default=["float32:16", "bfloat16:256"], type=Setting.parse)
    parser.add_argument("--tasks", nargs="+", default=[*PINNED, *FULL])
    parser.add_argument("--full-data", type=Path, help="folder with the source's test.jsonl (mteb layout)")
    parser.add_argument("--out", type=Path, help="folder for the results JSON")
    args = parser.parse_args()
    if args.full_data:
        os.environ["TWEET_SENTIMENT_DATA_DIR"] = str(args.full_data)
    manager = task_manager()
    env = benchlib.environment()
    print("ENV", env, flush=True)
    rows = []
    for setting in args.settings:
        try:
            rows += run_setting(setting, args.base, args.adapter, args.tasks, manager)
        except Exception:  # noqa: BLE001 - one setting failing must not lose the others' numbers
            traceback.print_exc()
    print("\n| setting | model | task | rows | seconds | rows/s | acc | macro-F1 | invalid |\n" + "|---" * 9 + "|")
    for r in rows:
        print(f"| {r['setting']} | {r['model']} | {r['task']} | {r['n']} | {r['seconds']:.2f} | "
              f"{r['n'] / r['seconds']:.0f} | {r['acc']:.3f} | {r['macro_f1']:.3f} | {r['invalid']:.3f} |")  # fmt: skip
    if args.out:
        benchlib.write_json(args.out / "eval-speed.json", rows, env)


if __name__ == "__main__":
    main()
