"""`finetune push`: publish a trained adapter (or the model merged with it) to the Hugging Face Hub.

Everything goes up in one commit, so a failed push leaves the repo as it was, never half-published.
The model card carries the tweet_sentiment results of a `finetune evaluate` report, both as the
Hub's machine-readable `model-index` and as a before -> after table, with the commands that reproduce them.
"""

import importlib
import json
import re
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects

from finetune import FinetuneError
from finetune.benchmark import BASE_NAME, LmEvalArgs
from finetune.model import EMBEDDED, EMBEDDED_UPSTREAM, MODEL_ARGS
from finetune.report import LOSS_PLOT, METRICS, cell, read_training_log
from lm_eval_tasks.tweet_sentiment.utils import HUB_DATASET, HUB_REVISION

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# What a user of an adapter repo needs; checkpoints, training_args.bin and the Trainer's own card stay behind.
ADAPTER_PATTERNS = [*ADAPTER_FILES, "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                    "vocab.json", "merges.txt", LOSS_PLOT, MODEL_ARGS]  # fmt: skip
CARD_TEMPLATE = Path(__file__).with_name("model_card.md")
TAGS = ["lora", "peft", "tweet-sentiment", "lm-eval"]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# huggingface_hub 1.x talks through httpx, 2.x through httpx2: take the errors of the client it uses.
HTTP = importlib.import_module(HfHubHTTPError.__bases__[0].__module__.split(".")[0])


class HubError(FinetuneError):
    """A push that could not be made; nothing was committed."""


def push(
    api: HfApi,
    adapter: Path,
    repo: str,
    report: Path | None = None,
    private: bool = False,
    merged: bool = False,
    revision: str | None = None,
) -> str:
    """Publish `adapter` to `repo` in one commit and return the commit's URL.
    Every check that can fail (token, repo name, adapter folder, report) runs before anything is sent."""
    if (api.token or get_token()) is None:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was sent)")
    if not HUB_ID.match(repo):
        raise HubError(f"--repo_id must be OWNER/NAME, got {repo!r}")
    config, model_args = read_adapter(adapter)
    results = report_results(report, adapter) if report is not None else None
    card = model_card(repo, config, model_args, read_training_log(adapter), results, merged, revision)
    with tempfile.TemporaryDirectory() as tmp:
        if merged:
            from finetune.model import base_config, merge  # torch and peft: only for --merged

            base = base_config(model_args["model_name_or_path"], "bfloat16", revision=model_args["model_revision"])
            folder = merge(base, str(adapter), Path(tmp))
            files = [CommitOperationAdd(name, str(folder / name)) for name in publish_files(folder, ["*"])]
            files += (
                [CommitOperationAdd(LOSS_PLOT, str(adapter / LOSS_PLOT))] if (adapter / LOSS_PLOT).is_file() else []
            )
        else:
            files = [CommitOperationAdd(name, str(adapter / name)) for name in publish_files(adapter, ADAPTER_PATTERNS)]
        return upload(api, repo, [*files, CommitOperationAdd("README.md", str(card).encode())], private, revision)


def read_adapter(adapter: Path) -> tuple[dict, dict]:
    """The adapter's peft config and how its base was loaded; without them this is no `finetune train` output."""
    missing = [name for name in (*ADAPTER_FILES, MODEL_ARGS) if not (adapter / name).is_file()]
    if missing:
        raise HubError(f"{adapter} is not an adapter folder of `finetune train`: it has no {', '.join(missing)}")
    return json.loads((adapter / ADAPTER_FILES[0]).read_text()), json.loads((adapter / MODEL_ARGS).read_text())


def publish_files(folder: Path, patterns: list[str]) -> list[str]:
    """The top-level files of `folder` that match `patterns`; a README there is the Trainer's, not our card."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return list(filter_repo_objects(names, allow_patterns=patterns, ignore_patterns=["README.md"]))


def report_results(report: Path, adapter: Path) -> dict:
    """The base's and this adapter's metrics, the rows scored and lm-eval's flags they were asked with (none in a
    report without them), from a `finetune evaluate` report.
    The adapter is found by its folder, or (a report made elsewhere, whose folders are not here) by the folder's
    name."""
    path = report / METRICS
    if not path.is_file():
        raise HubError(f"{report} has no {METRICS}: run `finetune evaluate --adapter {adapter} --output_dir {report}`")
    metrics = json.loads(path.read_text())
    sources = metrics["adapters"]
    names = [n for n, s in sources.items() if Path(s).exists() and Path(s).resolve() == adapter.resolve()]
    names = names or [n for n, s in sources.items() if not Path(s).exists() and Path(s).name == adapter.name]
    if len(names) != 1:
        held = ", ".join(sources.values()) or "none"
        raise HubError(
            f"{path} has no results for adapter {adapter} (it holds: {held}); "
            f"run `finetune evaluate --adapter {adapter} --output_dir {report}`, or push without --report_dir"
        )
    return {
        "base": metrics["results"][BASE_NAME],
        "adapter": metrics["results"][names[0]],
        "rows": metrics["rows"],
        "lm_eval_args": metrics.get("lm_eval_args", {}),
    }


PINNED_ROWS, FULL_ROWS = 300, 3534  # the pinned sample shipped with the task; the source's whole test split


def scored_split(variant: str, rows: int) -> tuple[str, str, dict]:
    """What a variant scored, as the model-index says it: the task (group) name, the split and the dataset args.
    A `_full` variant scores the source's test split, or with `--limit N` its first N rows (`test[:N]`, the `datasets`
    slice of what lm-eval takes); a pinned variant a 300-row stratified sample of it, which is no split of the source,
    so its split reads `test[pinned-300]` (`[:N]` after it under `--limit`) and no leaderboard that compares
    `split: test` takes it for the whole split."""
    full = variant.endswith("_full")
    whole = FULL_ROWS if full else PINNED_ROWS
    split = "test" if full else f"test[pinned-{PINNED_ROWS}]"
    sample = "the whole test split" if full else f"the pinned {PINNED_ROWS}-row stratified sample of test"
    if rows != whole:
        split, sample = f"{split}[:{rows}]", f"the first {rows} rows of {sample}"
    return ("tweet_sentiment_full" if full else "tweet_sentiment"), split, {"rows": rows, "sample": sample}


def eval_results(results: dict) -> list[EvalResult]:
    """The adapter's accuracy and macro-F1 per variant as the Hub's model-index: one entry per set of rows scored (the
    pinned sample, the whole test split), each naming its rows in its split and `dataset_args`, and the variant in
    each metric's config. huggingface_hub merges results that share task type, dataset, config, split and revision
    into one entry, whose `args` are the first result's: the split is what keeps the two apart."""
    return [
        EvalResult(
            task_type="text-classification",
            task_name=task_name,
            dataset_type=HUB_DATASET,
            dataset_name=HUB_DATASET.split("/")[1],
            dataset_split=split,
            dataset_revision=HUB_REVISION,
            dataset_args=args,
            metric_type=metric_type,
            metric_name=f"{metric_name} ({variant})",
            metric_config=variant,
            metric_value=metrics[key],
            **({"metric_args": {"average": "macro"}} if key == "macro_f1" else {}),
        )
        for variant, metrics in sorted(results["adapter"].items())
        for task_name, split, args in [scored_split(variant, results["rows"][variant])]
        for key, metric_type, metric_name in (("acc", "accuracy", "accuracy"), ("macro_f1", "f1", "macro-F1"))
    ]


def target_modules(value: str | list[str] | None) -> str:
    """peft keeps a list of module names, or one regular expression as it was given (the demo preset's)."""
    if isinstance(value, str):
        return f"`{value}`"
    return ", ".join(sorted({name.split(".")[-1] for name in value or []}))


def training_rows(config: dict, log: list[dict]) -> list[tuple[str, str]]:
    """LoRA settings from the adapter's config, steps and losses from the Trainer's log."""
    rows = [
        ("LoRA rank r", config.get("r")),
        ("lora_alpha", config.get("lora_alpha")),
        ("rank-stabilized (scale lora_alpha / √r)", config.get("use_rslora") or None),
        ("lora_dropout", config.get("lora_dropout")),
        ("target modules", target_modules(config.get("target_modules"))),
        ("steps", max((row["step"] for row in log if "step" in row), default=None)),
        ("train loss", next((row["train_loss"] for row in log if "train_loss" in row), None)),
        ("best validation loss", min((row["eval_loss"] for row in log if "eval_loss" in row), default=None)),
    ]
    return [
        (name, cell(f"{value:.4g}" if isinstance(value, float) else str(value)))
        for name, value in rows
        if value not in (None, "")
    ]


def model_card(
    repo: str, config: dict, model_args: dict, log: list[dict], results: dict | None, merged: bool, revision: str | None
) -> ModelCard:
    """The card a Hub user reads first. Its YAML header (base model, library, data set, model-index) is what the
    Hub indexes; the base is named as the adapter records it (the embedded model by its upstream Hub id)."""
    base_name = model_args["model_name_or_path"]
    trained_on = config.get("base_model_name_or_path") or ""
    base_model = trained_on if HUB_ID.match(trained_on) and not Path(trained_on).exists() else None
    quantized = " --load_in_4bit" if model_args.get("load_in_4bit") else ""
    base_revision = model_args.get("model_revision") or "main"
    at_revision = "" if base_revision == "main" else f" --model_revision {base_revision}"
    # On a branch: a merged model is named with its revision, an adapter as `--adapter ID@BRANCH`; lm-eval's
    # `revision=` is the base's too, so its command reads the adapter's branch from a download
    on_branch = f",revision={revision}" if merged and revision else ""
    adapter = f"{repo.split('/')[1]}-{revision}" if revision and not merged else repo
    download = f"hf download {repo} --revision {revision} --local-dir {adapter}" if adapter != repo else None
    evaluate_adapter = f"{repo}@{revision}" if revision else repo
    merged_revision = f" --model_revision {revision}" if revision else ""
    lm_eval_base = "$(finetune model-path embedded)" if base_name == EMBEDDED else base_name
    evaluate_command = (
        f"finetune evaluate --model_name_or_path {repo}{merged_revision}"
        if merged
        else f"finetune evaluate --model_name_or_path {base_name} --adapter {evaluate_adapter}{at_revision}{quantized}"
    )
    asked = LmEvalArgs(**(results or {}).get("lm_eval_args", {})).flags()  # both commands ask as the report did
    flags = f" {asked}" if asked else ""
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers" if merged else "peft",
        datasets=[HUB_DATASET],
        pipeline_tag="text-generation",
        tags=[*TAGS, *(["merged"] if merged else [])],
        license="apache-2.0",
        model_name=repo.split("/")[1] if results else None,
        eval_results=eval_results(results) if results else None,
    )
    on = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{base_name}`"
    return ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE.read_text(),
        name=repo.split("/")[1],
        what=f"{on} merged with a LoRA adapter" if merged else f"A LoRA adapter for {on}",
        dataset=HUB_DATASET,
        embedded=base_name == EMBEDDED and trained_on == EMBEDDED_UPSTREAM,
        base_model=base_model,
        base_name=base_name,
        revision=revision,
        base_revision=None if merged or base_revision == "main" else base_revision,
        training=training_rows(config, log),
        merged=merged,
        results=results and results_rows(results),
        rows=results and ", ".join(f"{variant}: {n} rows" for variant, n in sorted(results["rows"].items())),
        download=download,
        asked=asked,
        lm_eval_args=f"pretrained={repo}{on_branch}" if merged else f"pretrained={lm_eval_base},peft={adapter}",
        lm_eval_flags=flags,
        evaluate_command=f"{evaluate_command}{flags}",
    )


def results_rows(results: dict) -> list[tuple[str, list[str]]]:
    """Per variant: accuracy, macro-F1 and invalid answers, base → adapter."""
    return [
        (variant, [f"{results['base'][variant][m]:.3f} → {after[m]:.3f}" for m in ("acc", "macro_f1", "invalid")])
        for variant, after in sorted(results["adapter"].items())
    ]


def upload(api: HfApi, repo: str, operations: list[CommitOperationAdd], private: bool, revision: str | None) -> str:
    """Create the repo (and branch) if needed, then send every file in a single commit."""
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        if private and not api.repo_info(repo).private:  # create_repo leaves an existing repo's visibility as it is
            raise HubError(
                f"{repo} exists and is public, which --private does not change: make it private on the Hub first, "
                "or push without --private; no commit was made"
            )
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        return api.create_commit(
            repo, operations, commit_message="Upload with finetune push", revision=revision
        ).commit_url
    except (HTTP.HTTPError, OfflineModeIsEnabled, ValueError) as err:
        raise HubError(f"push to {repo} failed: {failure(err, api.endpoint)}; no commit was made") from None


def failure(err: Exception, endpoint: str) -> str:
    """One line that says what went wrong, from huggingface_hub's multi-line errors."""
    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, unset it to push"
    if isinstance(err, RepositoryNotFoundError):
        return f"repo not found on {endpoint}, or not visible with this token"
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code
        hint = {401: "the token was rejected (check HF_TOKEN / `hf auth login`)", 403: "this token may not write there"}
        said = err.server_message or str(err).splitlines()[0]
        return f"the Hub answered {status}: " + (f"{hint[status]} ({said})" if status in hint else said)
    if isinstance(err, HTTP.TransportError):
        return f"could not reach {endpoint} ({type(err).__name__}: {err})"
    return " ".join(str(err).split())
