"""`finetune evaluate`: the tweet_sentiment benchmark through lm-eval's own evaluator, on a base and any
number of LoRA adapters (disk or Hub), with the base loaded once and the adapters swapped in by peft; under
`accelerate launch`, lm-eval's data parallelism spreads the rows over the processes."""

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from peft import PeftModel
from transformers import PreTrainedModel
from trl import ModelConfig

from finetune import FinetuneError
from finetune.data import TASK_GROUP, load_tasks, task_manager
from finetune.launch import process_state
from finetune.model import load_model, load_tokenizer
from finetune.report import BASE_NAME
from lm_eval_tasks.tweet_sentiment.utils import LABELS

METRICS = ("acc", "macro_f1", *(f"f1_{label}" for label in LABELS), "invalid")


@dataclass
class Evaluation:
    base: str
    adapters: dict[str, str]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    pairs: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)


def adapter_names(adapters: list[str]) -> dict[str, str]:
    """Short unique display names: a folder's name or a Hub id as given (`ID@REVISION` kept whole, so two
    revisions of one repo are two rows), numbered where two clash, "." written "_" because peft makes each name a
    module's name, which torch refuses with a dot (`runs/llama-3.1-8b-qlora`)."""
    names: dict[str, str] = {}
    for source in adapters:
        name = (source.rstrip("/").split("/")[-1] if Path(source).exists() else source).replace(".", "_")
        unique, n = name, 2
        while unique in names or unique == BASE_NAME:
            unique, n = f"{name}-{n}", n + 1
        names[unique] = source
    return names


@contextlib.contextmanager
def active(model: PreTrainedModel | PeftModel, name: str) -> Iterator[None]:
    """Score the base with every adapter switched off, or exactly one adapter switched on."""
    if not isinstance(model, PeftModel):
        yield
    elif name == BASE_NAME:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(name)
        yield


def language_model(model: PreTrainedModel | PeftModel, tokenizer, batch_size: int) -> HFLM:
    """lm-eval's HFLM over a model instance, data parallel over the processes of `accelerate launch`. lm-eval
    spreads rows only over a model it loads itself by name (one per process, so no adapters to swap); given an
    instance it assumes one process, so each process is told its global rank here, as HFLM does for its own."""
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    if process_state().num_processes > 1:
        accelerator = Accelerator()
        lm.accelerator, lm._rank, lm._world_size = accelerator, accelerator.process_index, accelerator.num_processes
    return lm


def run_benchmark(
    lm: HFLM, manager: TaskManager, tasks: tuple[str, ...], limit: int | None
) -> tuple[dict, dict] | None:
    """Scores per variant, and the (gold, answer) pair of every scored row in the task's order, through lm-eval's
    evaluator; None on the processes other than the first, to which lm-eval gathers every row."""
    out = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=True, bootstrap_iters=0
    )
    if out is None:
        return None
    scores = {
        variant: {m: float(values[f"{m},none"]) for m in METRICS}
        for variant, values in out["results"].items()
        if variant != TASK_GROUP and "acc,none" in values
    }
    pairs = {
        variant: [tuple(s["macro_f1"]) for s in sorted(samples, key=lambda s: s["doc_id"])]  # gathered rank by rank
        for variant, samples in out["samples"].items()
    }
    return scores, pairs


def check_tasks(tasks: Iterable[str]) -> TaskManager:
    """Unknown task names and tasks whose data cannot be had, refused before any model loads (and, in `distill`,
    before anything trains)."""
    manager = task_manager()
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise FinetuneError(f"unknown task {', '.join(unknown)} (tasks: {', '.join(manager.all_tasks)})")
    load_tasks(list(tasks), manager)
    return manager


def evaluate(
    model_args: ModelConfig,
    adapters: list[str] | dict[str, str],
    tasks: tuple[str, ...] = (TASK_GROUP,),
    limit: int | None = None,
    batch_size: int = 16,
    allow_other_base: bool = False,
) -> Evaluation | None:
    """Load the base once, attach every adapter, and score each in turn (the base with adapters disabled).
    Adapters are named by folder or Hub id, or as a dict names them. With several processes, the first returns
    the whole evaluation and the others None."""
    manager = check_tasks(tasks)
    names = adapters if isinstance(adapters, dict) else adapter_names(adapters)
    model = load_model(model_args, names, allow_other_base)
    lm = language_model(model, load_tokenizer(model_args), batch_size)
    evaluation = Evaluation(base=model_args.model_name_or_path, adapters=names)
    for name in [BASE_NAME, *names]:
        with active(model, name):
            scored = run_benchmark(lm, manager, tasks, limit)
        if scored is not None:
            evaluation.results[name], evaluation.pairs[name] = scored
    return evaluation if lm.rank == 0 else None
