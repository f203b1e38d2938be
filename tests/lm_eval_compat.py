"""Score a tiny random Llama on the first rows of every tweet_sentiment variant with whichever lm-eval this
interpreter has, and print one JSON line per variant: lm-eval's version, each row's (gold, answer) and the
variant's scores. `tests/test_lm_eval_compat.py` runs it under two lm-eval releases and compares the lines.

    python tests/lm_eval_compat.py MODEL_DIR ADAPTER_DIR ROWS DATA_DIR

DATA_DIR holds train.jsonl and test.jsonl in the source's layout, for the `_full` and `_trainfull` variants.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import lm_eval  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import lm_eval_tasks  # noqa: E402
from lm_eval_tasks.tweet_sentiment.utils import FULL_DATA_ENV  # noqa: E402

VARIANTS = [
    "tweet_sentiment_gen",
    "tweet_sentiment_mc",
    "tweet_sentiment_gen_full",
    "tweet_sentiment_mc_full",
    "tweet_sentiment_gen_trainfull",
]
METRICS = ("acc", "macro_f1", "f1_negative", "f1_neutral", "f1_positive", "invalid")


def main(model_dir: str, adapter_dir: str, rows: int, data_dir: str) -> None:
    os.environ[FULL_DATA_ENV] = data_dir
    logging.disable(logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    manager = TaskManager(include_path=str(Path(lm_eval_tasks.__file__).parent), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=VARIANTS, task_manager=manager, limit=rows, log_samples=True, bootstrap_iters=0
    )
    for variant in VARIANTS:
        # lm-eval 0.5 may key a variant by its path (GROUP::VARIANT); 0.4 by its name
        [samples] = [v for k, v in out["samples"].items() if k.split("::")[-1] == variant]
        [results] = [v for k, v in out["results"].items() if k.split("::")[-1] == variant]
        line = {
            "lm_eval": lm_eval.__version__,
            "variant": variant,
            "rows": [s["macro_f1"] for s in sorted(samples, key=lambda s: s["doc_id"])],
            "answers": [s["filtered_resps"] for s in sorted(samples, key=lambda s: s["doc_id"])],
            "scores": {metric: results[f"{metric},none"] for metric in METRICS},
        }
        print(json.dumps(line))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
