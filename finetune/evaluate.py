"""`finetune evaluate`: the tweet_sentiment benchmark through lm-eval's own evaluator, on a base and any
number of LoRA adapters (disk or Hub), with the base loaded once and the adapters swapped in by peft; under
`accelerate launch`, lm-eval's data parallelism spreads the rows over the processes."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lm_eval.evaluator
from accelerate import Accelerator
from lm_eval import simple_evaluate
from lm_eval.api.task import Task
from lm_eval.loggers import EvaluationTracker
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import sanitize_model_name
from peft import PeftModel
from transformers import PreTrainedModel
from trl import ModelConfig

from finetune.benchmark import BASE_NAME, Evaluation, LmEvalArgs, scoring_lm, task_manager, variant_scores
from finetune.launch import process_state
from finetune.model import load_model, load_tokenizer


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


ADD_ENV_INFO = lm_eval.evaluator.add_env_info  # lm-eval's own, which `environment_recorded` stands in for
_ENVIRONMENT: dict[str, Any] = {}  # what it records, collected once a process


def _environment_once(storage: dict[str, Any]) -> None:
    if not _ENVIRONMENT:
        ADD_ENV_INFO(_ENVIRONMENT)
    storage.update(_ENVIRONMENT)


@contextlib.contextmanager
def environment_recorded(in_files: bool) -> Iterator[None]:
    """`simple_evaluate` records the environment on every call (torch's collect_env: a dozen subprocesses, pip and
    nvidia-smi among them, 0.5-0.7 s, as long as scoring 300 rows on a GPU). It goes only into lm-eval's own result
    files: while those are written it is collected once a process (packages and devices do not change within one),
    else not at all."""
    before = lm_eval.evaluator.add_env_info
    lm_eval.evaluator.add_env_info = _environment_once if in_files else lambda storage: None
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info = before


def language_model(model: PreTrainedModel | PeftModel, tokenizer, batch_size: int) -> HFLM:
    """lm-eval's HFLM over a model instance, data parallel over the processes of `accelerate launch`. lm-eval
    spreads rows only over a model it loads itself by name (one per process, so no adapters to swap); given an
    instance it assumes one process, so each process is told its global rank here, as HFLM does for its own."""
    lm = scoring_lm(model, tokenizer, batch_size)
    if process_state().num_processes > 1:
        accelerator = Accelerator()
        lm.accelerator, lm._rank, lm._world_size = accelerator, accelerator.process_index, accelerator.num_processes
    return lm


@dataclass(frozen=True)
class LmEvalFiles:
    """`--output_path P [--log_samples]`: lm-eval's own files for one model, written as its CLI writes them
    (`EvaluationTracker`), in P/NAME (the model's name in the report): results_DATE.json, and with `log_samples`
    samples_TASK_DATE.jsonl for every task."""

    output_path: Path
    log_samples: bool = False
    name: str = BASE_NAME

    def folder(self, name: str) -> Path:
        return self.output_path / sanitize_model_name(name)

    def save(self, tracker: EvaluationTracker, out: dict) -> None:
        config = tracker.general_config_tracker  # lm-eval names an instance's folder at random: ours is the model's
        config.model_name, config.model_name_sanitized = self.name, self.folder(self.name).name
        samples = out.pop("samples")
        tracker.save_results_aggregated(results=out, samples=samples if self.log_samples else None)
        if self.log_samples:
            for task_name in out["configs"]:
                tracker.save_results_samples(task_name=task_name, samples=samples[task_name])


def run_benchmark(
    lm: HFLM,
    tasks: dict[str, Task],
    limit: int | None,
    lm_eval_args: LmEvalArgs | None = None,
    files: LmEvalFiles | None = None,
) -> tuple[dict, dict] | None:
    """Scores per variant, and the (gold, answer) pair of every scored row in the task's order, through lm-eval's
    evaluator on the tasks as loaded, asked as `lm_eval_args` say; None on the processes other than the first, to
    which lm-eval gathers every row. With `files`, lm-eval's own results (and samples) files of this model too."""
    tracker = EvaluationTracker(output_path=str(files.output_path)) if files else None
    with environment_recorded(in_files=files is not None):
        out = simple_evaluate(  # without a manager of its own lm-eval indexes every task it ships, 14 s a call
            model=lm,
            tasks=list(tasks.values()),
            task_manager=task_manager(),
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            **({"evaluation_tracker": tracker} if tracker else {}),
            **(lm_eval_args or LmEvalArgs()).given(),
        )
    if out is None:
        return None
    pairs = {
        variant: [tuple(s["macro_f1"]) for s in sorted(samples, key=lambda s: s["doc_id"])]  # gathered rank by rank
        for variant, samples in out["samples"].items()
    }
    scores = variant_scores(out["results"])
    if tracker:
        files.save(tracker, out)
    return scores, pairs


def evaluate(
    model_args: ModelConfig,
    adapters: list[str] | dict[str, str],
    tasks: dict[str, Task],
    limit: int | None = None,
    batch_size: int = 16,
    allow_other_base: bool = False,
    lm_eval_args: LmEvalArgs | None = None,
    files: LmEvalFiles | None = None,
) -> Evaluation | None:
    """Load the base once, attach every adapter, and score each in turn (the base with adapters disabled) on the
    loaded tasks (`benchmark.load_tasks`), asked as `lm_eval_args` say (lm-eval's defaults unset). Adapters are
    named by folder or Hub id, or as a dict names them. With `files`, lm-eval's own files of each model go in a
    folder of its name under `files.output_path`. With several processes, the first returns the whole evaluation
    and the others None."""
    lm_eval_args = lm_eval_args or LmEvalArgs()
    names = adapters if isinstance(adapters, dict) else adapter_names(adapters)
    model = load_model(model_args, names, allow_other_base)
    lm = language_model(model, load_tokenizer(model_args), batch_size)
    evaluation = Evaluation(base=model_args.model_name_or_path, adapters=names, lm_eval_args=lm_eval_args)
    for name in [BASE_NAME, *names]:
        with active(model, name):
            scored = run_benchmark(lm, tasks, limit, lm_eval_args, files and replace(files, name=name))
        if scored is not None:
            evaluation.results[name], evaluation.pairs[name] = scored
    return evaluation if lm.rank == 0 else None
