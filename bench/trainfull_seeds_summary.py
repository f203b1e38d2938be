"""The table and the picture of bench/trainfull_seeds.sh, from its OUT folder: each run's and each soup's macro-F1 on
the pinned validation rows (what picks a recipe) beside its scores on test (what the issue's target reads), and the
mean of each recipe's seeds. The picture shows whether validation ranks the runs the way the full test split does.

    python bench/trainfull_seeds_summary.py OUT    (writes OUT/validation-vs-test.png)
    python bench/trainfull_seeds_summary.py OUT --validation-only    (a DEV_SIZE sweep: no test scores)
"""

import argparse
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET = 0.80  # issue 8: accuracy on the full 3,534 test rows


def validation(out: Path, name: str) -> float:
    """A run's best macro-F1 of its validations (the checkpoint it kept); a soup's as adapter_soup.py printed it."""
    if name.startswith("soup-"):
        printed = (out / f"{name}.txt").read_text()
        return float(re.search(r"validation macro-F1 (\S+)\s+soup", printed).group(1))
    log = json.loads((out / name / "train_log.json").read_text())
    return max(entry["eval_macro_f1"] for entry in log if "eval_macro_f1" in entry)


def recipe_of(run: str) -> str:
    return run.rsplit("-s", 1)[0]


def print_validation(out: Path, runs: list[str]) -> None:
    """Each run's validation macro-F1 and each recipe's mean over its seeds, best mean first."""
    scores = {name: validation(out, name) for name in runs}
    for name, score in scores.items():
        print(f"{name} | validation macro-F1 {score:.4f}")
    means = {r: statistics.mean(scores[n] for n in runs if recipe_of(n) == r) for r in {recipe_of(n) for n in runs}}
    for name, mean in sorted(means.items(), key=lambda item: -item[1]):
        print(f"mean of {name} | {mean:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--validation-only", action="store_true")
    args = parser.parse_args()
    out = args.out
    runs = [line.split()[0] for line in (out / "runs.txt").read_text().splitlines()]
    if args.validation_only:
        print_validation(out, runs)
        return
    tests = json.loads((out / "report/metrics.json").read_text())["results"]
    tests |= json.loads((out / "soup-report/metrics.json").read_text())["results"]
    rows = {name: (validation(out, name), tests[name]) for name in runs + sorted(n for n in tests if "soup-" in n)}

    print("run | validation macro-F1 | macro-F1, pinned 300 | accuracy, full 3,534")
    for name, (val, test) in rows.items():
        print(f"{name} | {val:.4f} | {test['tweet_sentiment_mc']['macro_f1']:.4f} | "
              f"{test['tweet_sentiment_mc_full']['acc']:.4f}")  # fmt: skip
    recipes = sorted({recipe_of(name) for name in runs})
    for recipe in recipes:
        seeds = [rows[name] for name in runs if recipe_of(name) == recipe]
        print(f"mean of {recipe} ({len(seeds)} seeds) | {statistics.mean(v for v, _ in seeds):.4f} | "
              f"{statistics.mean(t['tweet_sentiment_mc']['macro_f1'] for _, t in seeds):.4f} | "
              f"{statistics.mean(t['tweet_sentiment_mc_full']['acc'] for _, t in seeds):.4f}")  # fmt: skip

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for i, recipe in enumerate(recipes):
        members = [name for name in rows if recipe_of(name) == recipe]
        soup = [f"soup-{recipe}"]
        for names, marker, size, label in ((members, "o", 50, recipe), (soup, "*", 180, f"{recipe} soup")):
            points = [(rows[name][0], rows[name][1]["tweet_sentiment_mc_full"]["acc"]) for name in names]
            ax.scatter(*zip(*points), color=f"C{i}", marker=marker, s=size, label=label)
            for name, point in zip(names, points):
                ax.annotate(name, point, fontsize=7, xytext=(4, 3), textcoords="offset points", color=f"C{i}")
    ax.axhline(TARGET, color="grey", linestyle="--", linewidth=1, label="target accuracy 0.80")
    ax.set_xlabel("macro-F1 on the 800 pinned validation rows (picks the recipe)")
    ax.set_ylabel("accuracy on the full 3,534 test rows")
    ax.set_title("embedded-gpu-trainfull recipes x seeds (dots) and their soups (stars)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "validation-vs-test.png", dpi=120)
    print(f"picture: {out / 'validation-vs-test.png'}")


if __name__ == "__main__":
    main()
