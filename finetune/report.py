"""What a person reads after a run: the training log and loss curve beside an adapter, and the report of an
evaluation (metrics.json, report.md, the before -> after comparison and confusion matrices)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from finetune.benchmark import BASE_NAME, COLLAPSE_SHARE, Evaluation  # noqa: E402
from finetune.guard import STOPPED  # noqa: E402
from finetune.outputs import written  # noqa: E402
from lm_eval_tasks.tweet_sentiment.utils import INVALID, LABELS  # noqa: E402

SHOWN_METRICS = ("acc", "macro_f1", "invalid")
ANSWER_NAMES = [*LABELS, "invalid"]
TRAIN_LOG = "train_log.json"
LOSS_PLOT = "training_loss.png"
METRICS = "metrics.json"
# Every scored row's (gold, answer) per model and variant, in the task's order: for row-by-row comparisons.
ANSWERS = "answers.json"


def write_training_log(history: list[dict], out: Path) -> None:
    """The Trainer's log history and its loss curve, kept beside the adapter for reports and model cards."""
    (out / TRAIN_LOG).write_text(json.dumps(history, indent=1))
    plot_training_loss(history, out / LOSS_PLOT)


def read_training_log(adapter: Path) -> list[dict]:
    log = adapter / TRAIN_LOG
    return json.loads(log.read_text()) if log.is_file() else []


def write_report(evaluation: Evaluation, out: Path, overwrite: bool = False) -> str:
    """metrics.json, answers.json, report.md, the comparison and confusion PNGs, and each local adapter's loss
    curve; written beside `out` and renamed into place."""
    with written(out, overwrite) as staging:
        return fill_report(evaluation, staging)


def fill_report(evaluation: Evaluation, out: Path) -> str:
    rows = {variant: len(pairs) for variant, pairs in next(iter(evaluation.pairs.values())).items()}
    histories = {name: read_training_log(Path(source)) for name, source in evaluation.adapters.items()}
    found = warnings(evaluation) + [
        f"{name}: its training was stopped by the divergence guard: {row[STOPPED]}"
        for name, history in histories.items()
        for row in history
        if STOPPED in row
    ]
    meta = {"base": evaluation.base, "adapters": evaluation.adapters, "rows": rows, "warnings": found}
    if asked := evaluation.lm_eval_args.given():  # lm-eval's flags, where any was given
        meta["lm_eval_args"] = asked
    (out / METRICS).write_text(json.dumps({**meta, "results": evaluation.results}, indent=1))
    (out / ANSWERS).write_text(json.dumps(evaluation.pairs))
    plot_comparison(evaluation.results, out / "comparison.png")
    sections = [table(evaluation.results)]
    if found:
        sections.insert(0, "**Warnings**\n\n" + "\n".join(f"- {line}" for line in found))
    if asked:
        sections.insert(0, f"Asked with lm-eval's `{evaluation.lm_eval_args.flags()}` (every model alike).")
    for model, per_variant in evaluation.pairs.items():
        for variant, pairs in per_variant.items():
            plot_confusion(pairs, out / f"confusion_{model.replace('/', '--')}_{variant}.png", f"{model} · {variant}")
            sections.append(f"### {model} · {variant}\n\n```\n{class_report(pairs)}```")
    for name, history in histories.items():
        if history:
            plot_training_loss(history, out / f"training_loss_{name}.png")
    text = "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(text)
    return text


def warnings(evaluation: Evaluation) -> list[str]:
    """What a table of scores hides: answers that collapsed onto one label, and adapters that score below the base
    (both were seen: an adapter answering `neutral` for 295 of 300 rows, its macro-F1 down from 0.45 to 0.22), and
    a label that no scored gold row has (a `--limit` run), whose F1 counts as 0 in every model's macro-F1."""
    found = absent_labels(next(iter(evaluation.pairs.values()), {}))
    base = evaluation.results.get(BASE_NAME, {})
    for model, per_variant in evaluation.pairs.items():
        for variant, pairs in per_variant.items():
            answers = [answer for _, answer in pairs]
            label, count = max(((i, answers.count(i)) for i in range(len(LABELS))), key=lambda item: item[1])
            if answers and count / len(answers) >= COLLAPSE_SHARE:
                found.append(
                    f"{model} · {variant}: answers collapsed onto `{LABELS[label]}` ({count} of {len(answers)}, "
                    f"{count / len(answers):.0%}; the mark is {COLLAPSE_SHARE:.0%} of answers on one label)"
                )
            ours, theirs = evaluation.results[model][variant]["macro_f1"], base.get(variant, {}).get("macro_f1")
            if model != BASE_NAME and theirs is not None and ours < theirs:
                found.append(f"{model} · {variant}: macro-F1 {ours:.3f} is below the base's {theirs:.3f}")
    return found


def absent_labels(per_variant: dict[str, list[tuple[int, int]]]) -> list[str]:
    """The gold rows are the same for every model, so one model's pairs tell."""
    found = []
    for variant, pairs in per_variant.items():
        missing = sorted(set(range(len(LABELS))) - {gold for gold, _ in pairs})
        if pairs and missing:
            names = ", ".join(f"`{LABELS[i]}`" for i in missing)
            found.append(
                f"{variant}: no gold row of {names} among the {len(pairs)} scored; macro-F1 counts its F1 as 0 "
                f"(at most {(len(LABELS) - len(missing)) / len(LABELS):.2f} is reachable)"
            )
    return found


def plot_training_loss(history: list[dict], path: Path) -> None:
    """Training and validation loss by step, from the Trainer's log history."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(row["step"], row[key]) for row in history if key in row]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    ax.set(xlabel="step", ylabel="loss (answer tokens)", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _answer_index(pred: int) -> int:
    return len(LABELS) if pred == INVALID else pred


def plot_confusion(pairs: list[tuple[int, int]], path: Path, title: str) -> None:
    """Gold rows against answered columns; invalid answers get a column of their own."""
    golds = [g for g, _ in pairs]
    answers = [_answer_index(p) for _, p in pairs]
    matrix = confusion_matrix(golds, answers, labels=range(len(ANSWER_NAMES)))[: len(LABELS)]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=color)
    ax.set_xticks(range(len(ANSWER_NAMES)), ANSWER_NAMES)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set(title=title, ylabel="gold", xlabel="answer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def class_report(pairs: list[tuple[int, int]]) -> str:
    golds, preds = zip(*pairs)
    return classification_report(
        golds, preds, labels=list(range(len(LABELS))), target_names=list(LABELS), digits=3, zero_division=0
    )


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: one row per model and variant, with accuracy, macro-F1 and invalid rate."""
    lines = ["| model | variant | " + " | ".join(SHOWN_METRICS) + " |", "|---|---|" + "---|" * len(SHOWN_METRICS)]
    for model, variants in results.items():
        for variant, metrics in variants.items():
            cells = " | ".join(f"{metrics[m]:.3f}" for m in SHOWN_METRICS)
            lines.append(f"| {cell(model)} | {cell(variant)} | {cells} |")
    return "\n".join(lines)


def cell(text: str) -> str:
    """A name as a Markdown table cell: an unescaped `|` (a folder may be named `a|b`) would end the cell early."""
    return text.replace("|", "\\|")


def plot_comparison(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Macro-F1 of every model, one group of bars per task variant."""
    variants = sorted({v for per_model in results.values() for v in per_model})
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(1.5 + 2.2 * len(variants), 4))
    for i, (model, per_variant) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(variants))]
        bars = ax.bar(xs, [per_variant[v]["macro_f1"] for v in variants], width, label=model)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(variants))], variants)
    ax.set(ylabel="macro-F1", ylim=(0, 1), title="tweet_sentiment, pinned test split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
