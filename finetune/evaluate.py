"""`finetune evaluate`: the tweet_sentiment benchmark through lm-eval's own evaluator, on a base and any
number of LoRA adapters (disk or Hub), with the base loaded once and the adapters swapped in by peft."""

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from finetune import report
from finetune.data import TASK_GROUP, task_manager
from finetune.model import check_adapter_fits, resolve_model
from finetune.train import TRAIN_LOG

BASE_NAME = "base"
METRICS = ("acc", "macro_f1", "f1_negative", "f1_neutral", "f1_positive", "invalid")


@dataclass
class Evaluation:
    base: str
    adapters: dict[str, str]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    pairs: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)


def adapter_names(adapters: list[str]) -> dict[str, str]:
    """Short unique display names: a folder's name or a Hub id, numbered where two clash."""
    names: dict[str, str] = {}
    for source in adapters:
        name = source.rstrip("/").split("/")[-1] if Path(source).exists() else source
        unique, n = name, 2
        while unique in names or unique == BASE_NAME:
            unique, n = f"{name}-{n}", n + 1
        names[unique] = source
    return names


def read_adapter_config(source: str) -> PeftConfig:
    """peft's config of an adapter folder or Hub repo; peft says only "can't find" for a missing repo
    and for an unreachable Hub alike, so the message names both."""
    try:
        return PeftConfig.from_pretrained(source)
    except ValueError as err:
        raise SystemExit(
            f"no adapter at {source}: not a folder with adapter_config.json, nor a Hub repo reachable from here ({err})"
        ) from None


def load_with_adapters(
    base: str, adapters: dict[str, str], dtype: torch.dtype, allow_other_base: bool = False, load_in_4bit: bool = False
) -> PreTrainedModel | PeftModel:
    """Load the base once and attach every adapter, refusing any that does not fit before any scoring.
    `load_in_4bit` scores a QLoRA adapter on the nf4 base it was trained on, as on a 16 GB GPU."""
    configs = {name: read_adapter_config(source) for name, source in adapters.items()}
    quantization = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        if load_in_4bit
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=dtype, quantization_config=quantization, device_map="auto" if torch.cuda.is_available() else None
    )
    for name, source in adapters.items():
        check_adapter_fits(model, base, source, configs[name], allow_other_base)
    if not adapters:
        return model
    names = iter(adapters.items())
    first, source = next(names)
    model = PeftModel.from_pretrained(model, source, adapter_name=first)
    for name, source in names:
        model.load_adapter(source, adapter_name=name)
    return model


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


def run_benchmark(lm: HFLM, manager: TaskManager, tasks: tuple[str, ...], limit: int | None) -> tuple[dict, dict]:
    """Scores per variant, and the (gold, answer) pair of every scored row, through lm-eval's evaluator."""
    out = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=True, bootstrap_iters=0
    )
    scores = {
        variant: {m: float(values[f"{m},none"]) for m in METRICS}
        for variant, values in out["results"].items()
        if variant != TASK_GROUP and "acc,none" in values
    }
    pairs = {variant: [tuple(s["macro_f1"]) for s in samples] for variant, samples in out["samples"].items()}
    return scores, pairs


def evaluate(
    base: str,
    adapters: list[str],
    tasks: tuple[str, ...] = (TASK_GROUP,),
    limit: int | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    allow_other_base: bool = False,
    load_in_4bit: bool = False,
) -> Evaluation:
    base_path = resolve_model(base)
    names = adapter_names(adapters)
    model = load_with_adapters(base_path, names, dtype, allow_other_base, load_in_4bit)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = task_manager()
    evaluation = Evaluation(base=base, adapters=names)
    for name in [BASE_NAME, *names]:
        with active(model, name):
            evaluation.results[name], evaluation.pairs[name] = run_benchmark(lm, manager, tasks, limit)
    return evaluation


def write_report(evaluation: Evaluation, out: Path) -> str:
    """metrics.json, report.md, the comparison and confusion PNGs, and each adapter's loss curve."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {"base": evaluation.base, "adapters": evaluation.adapters}
    (out / "metrics.json").write_text(json.dumps({**meta, "results": evaluation.results}, indent=1))
    report.plot_comparison(evaluation.results, out / "comparison.png")
    sections = [report.table(evaluation.results)]
    for model, per_variant in evaluation.pairs.items():
        for variant, pairs in per_variant.items():
            report.plot_confusion(
                pairs, out / f"confusion_{model.replace('/', '--')}_{variant}.png", f"{model} · {variant}"
            )
            sections.append(f"### {model} · {variant}\n\n```\n{report.class_report(pairs)}```")
    for name, source in evaluation.adapters.items():
        log = Path(source) / TRAIN_LOG
        if log.exists():
            report.plot_training_loss(json.loads(log.read_text()), out / f"training_loss_{name}.png")
    text = "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(text)
    return text
