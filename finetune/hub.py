"""`finetune push`: publish a trained adapter (or the model merged with it) to the Hugging Face Hub.

Everything goes up in one commit, so a failed push leaves the repo as it was, never half-published.
The model card carries the tweet_sentiment results of a `finetune evaluate` report, both as the
Hub's machine-readable `model-index` and as a before -> after table, with the commands that
reproduce them.
"""

import importlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
LOSS_PLOT = "training_loss.png"
TRAIN_LOG = "train_log.json"  # as finetune.train writes it; not imported, to keep `push` free of torch/trl
DATASET = "mteb/tweet_sentiment_extraction"
LICENSE = "apache-2.0"
TAGS = ["lora", "peft", "tweet-sentiment", "lm-eval"]
# The `embedded` model is the Q4_1 GGUF of this model, dequantized by `finetune model-path` into a folder
# of the same name; the Hub only accepts Hub ids as `base_model`, so adapters trained on it point here.
EMBEDDED_UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# huggingface_hub 1.x talks through httpx, 2.x through httpx2: take the errors of the client it uses.
HTTP = importlib.import_module(HfHubHTTPError.__bases__[0].__module__.split(".")[0])


@dataclass(frozen=True)
class Base:
    """How the base model is named in each place: the card's YAML, `finetune evaluate`, lm_eval."""

    hub_id: str | None  # None for a local folder, which the Hub does not accept as `base_model`
    finetune: str
    lm_eval: str


def push(
    adapter: Path,
    repo: str,
    report: Path | None = None,
    private: bool = False,
    merged: bool = False,
    revision: str | None = None,
    license: str = LICENSE,
) -> str:
    """Publish `adapter` to `repo` in one commit and return the commit's URL.

    Every check that can fail (token, repo name, adapter folder, report) runs before anything is sent."""
    token = get_token()
    if token is None:
        raise SystemExit("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was sent)")
    if not HUB_ID.match(repo):
        raise SystemExit(f"--repo must be OWNER/NAME, got {repo!r}")
    config = read_adapter_config(adapter)
    base = base_reference(config.get("base_model_name_or_path") or "")
    results = report_results(report, adapter) if report is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = merge_adapter(base, adapter, Path(tmp)) if merged else adapter
        card = model_card(repo, base, config, read_train_log(adapter), results, merged, revision, license)
        operations = [*model_files(folder, merged, adapter), CommitOperationAdd("README.md", str(card).encode())]
        return upload(repo, operations, token, private, revision, merged)


def read_adapter_config(adapter: Path) -> dict:
    """The adapter's own config; its absence means this is not a folder `finetune train` wrote."""
    missing = [name for name in ADAPTER_FILES if not (adapter / name).is_file()]
    if missing:
        raise SystemExit(f"{adapter} is not an adapter folder: it has no {', '.join(missing)}")
    return json.loads((adapter / "adapter_config.json").read_text())


def read_train_log(adapter: Path) -> list[dict]:
    log = adapter / TRAIN_LOG
    return json.loads(log.read_text()) if log.is_file() else []


def base_reference(trained_on: str) -> Base:
    """Names for the base the adapter was trained on, which is a Hub id or a local folder."""
    path = Path(trained_on)
    if not trained_on or not path.exists():
        return Base(trained_on if HUB_ID.match(trained_on) else None, trained_on, trained_on)
    if path.name == EMBEDDED_UPSTREAM.split("/")[1]:
        from finetune.model import EMBEDDED, cache_dir  # heavy (torch, peft): only for this case

        if path.resolve() == (cache_dir() / path.name).resolve():
            return Base(EMBEDDED_UPSTREAM, EMBEDDED, "$(finetune model-path)")
    return Base(None, str(path), str(path))


def report_results(report: Path, adapter: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{"base": {variant: metrics}, "adapter": {variant: metrics}} from a `finetune evaluate` report.

    The adapter is found by its folder (the source it was evaluated from), or, for a report made
    elsewhere, by the folder's name; a report without it is refused rather than published wrongly."""
    path = report / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{report} has no metrics.json: run `finetune evaluate --adapter {adapter} --out {report}`")
    metrics = json.loads(path.read_text())
    sources = metrics.get("adapters", {})
    here = adapter.resolve()
    names = [n for n, s in sources.items() if Path(s).exists() and Path(s).resolve() == here]
    names = names or [n for n, s in sources.items() if Path(s).name == adapter.name]
    if len(names) != 1 or names[0] not in metrics.get("results", {}):
        held = ", ".join(sources.values()) or "none"
        raise SystemExit(
            f"{path} has no results for adapter {adapter} (it holds: {held}); "
            f"run `finetune evaluate --adapter {adapter} --out {report}`, or push without --report"
        )
    return {"base": metrics["results"].get("base", {}), "adapter": metrics["results"][names[0]]}


def merge_adapter(base: Base, adapter: Path, out: Path) -> Path:
    """The merged 16-bit model, written where the commit will read it from."""
    if not base.finetune:
        raise SystemExit(f"{adapter}/adapter_config.json does not name its base model, so it cannot be merged")
    from finetune.model import merge  # heavy (torch, transformers, peft): only for --merged

    return merge(base.finetune, str(adapter), out)


def model_files(folder: Path, merged: bool, adapter: Path) -> list[CommitOperationAdd]:
    """What a user of the repo needs: the weights and config, the tokenizer, the loss curve.
    Checkpoints, training_args.bin and the card that the Trainer wrote are left behind."""
    if merged:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md")
    else:
        names = [n for n in (*ADAPTER_FILES, *TOKENIZER_FILES) if (folder / n).is_file()]
    operations = [CommitOperationAdd(name, str(folder / name)) for name in names]
    if (adapter / LOSS_PLOT).is_file():
        operations.append(CommitOperationAdd(LOSS_PLOT, str(adapter / LOSS_PLOT)))
    return operations


def eval_results(results: dict[str, dict[str, dict[str, float]]]) -> list[EvalResult]:
    """The adapter's accuracy and macro-F1 per task variant, as the Hub's model-index.

    The model-index groups results by task type and dataset config, so each lm-eval variant
    (`tweet_sentiment_gen`, `tweet_sentiment_mc`) is given as a config of its own to stay separate."""
    return [
        EvalResult(
            task_type="text-classification",
            task_name=variant,
            dataset_type=DATASET,
            dataset_name="tweet_sentiment_extraction",
            dataset_config=variant,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=metrics[key],
            **({"metric_args": {"average": "macro"}} if key == "macro_f1" else {}),
        )
        for variant, metrics in sorted(results["adapter"].items())
        for key, metric_type, metric_name in (("acc", "accuracy", "accuracy"), ("macro_f1", "f1", "macro-F1"))
    ]


def model_card(
    repo: str,
    base: Base,
    config: dict,
    log: list[dict],
    results: dict | None,
    merged: bool,
    revision: str | None,
    license: str,
) -> ModelCard:
    """The card a Hub user reads first: what this is, how it was trained, what it scores, how to check.
    Its YAML header (base model, library, dataset, model-index) is what the Hub indexes and searches."""
    data = ModelCardData(
        base_model=base.hub_id,
        library_name="transformers" if merged else "peft",
        datasets=[DATASET],
        pipeline_tag="text-generation",
        tags=[*TAGS, *(["merged"] if merged else [])],
        license=license,
        # the model-index names the model; without results there is no model-index to name it in
        model_name=repo.split("/")[1] if results else None,
        eval_results=eval_results(results) if results else None,
    )
    sections = [
        intro(repo, base, merged, revision),
        training_section(config, log),
        results_section(results, merged),
        reproduce_section(repo, base, merged),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def intro(repo: str, base: Base, merged: bool, revision: str | None) -> str:
    on = f"[{base.hub_id}](https://huggingface.co/{base.hub_id})" if base.hub_id else f"`{base.finetune}`"
    what = f"{on} merged with a LoRA adapter" if merged else f"A LoRA adapter for {on}"
    lines = [
        f"# {repo.split('/')[1]}",
        "",
        f"{what}, fine-tuned to label tweet sentiment (negative / neutral / positive) "
        f"on [{DATASET}](https://huggingface.co/datasets/{DATASET}).",
    ]
    if base.finetune == "embedded":
        lines += ["", f"It was trained on the Q4_1 GGUF of {EMBEDDED_UPSTREAM}, dequantized (`finetune model-path`)."]
    elif base.hub_id is None:
        lines += ["", "The base model was a local folder, so the card cannot link it."]
    if revision:
        lines += ["", f"This version is on the branch `{revision}`."]
    return "\n".join(lines)


def training_section(config: dict, log: list[dict]) -> str:
    targets = sorted({name.split(".")[-1] for name in config.get("target_modules") or []})
    rows = [
        ("LoRA rank r", config.get("r")),
        ("lora_alpha", config.get("lora_alpha")),
        ("lora_dropout", config.get("lora_dropout")),
        ("target modules", ", ".join(targets)),
        ("steps", max((row["step"] for row in log if "step" in row), default=None)),
        ("train loss", next((row["train_loss"] for row in log if "train_loss" in row), None)),
        ("best validation loss", min((row["eval_loss"] for row in log if "eval_loss" in row), default=None)),
    ]
    table = "\n".join(
        f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in rows
        if value not in (None, "")
    )
    return f"## Training\n\n| setting | value |\n|---|---|\n{table}"


def results_section(results: dict | None, merged: bool) -> str:
    if not results:
        return "## Results\n\nNo evaluation was published with this model (`finetune push --report` adds it)."
    lines = ["| variant | accuracy | macro-F1 | invalid answers |", "|---|---|---|---|"]
    for variant, after in sorted(results["adapter"].items()):
        before = results["base"].get(variant, {})
        cells = [f"{_score(before.get(m))} → {_score(after.get(m))}" for m in ("acc", "macro_f1", "invalid")]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    source = "the base with the adapter, before merging" if merged else "the base with the adapter"
    return (
        "## Results: base → fine-tuned\n\n"
        f"tweet_sentiment through lm-eval, as `finetune evaluate` measured the base alone and {source}.\n\n"
        + "\n".join(lines)
    )


def reproduce_section(repo: str, base: Base, merged: bool) -> str:
    model_args = f"pretrained={repo}" if merged else f"pretrained={base.lm_eval},peft={repo}"
    evaluate = (
        f"finetune evaluate --base {repo}" if merged else f"finetune evaluate --base {base.finetune} --adapter {repo}"
    )
    return (
        "## Reproduce\n\n```bash\n"
        f"lm_eval --include_path $(finetune tasks-path) --tasks tweet_sentiment --model hf --model_args {model_args}\n"
        f"{evaluate}\n```"
    )


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def upload(
    repo: str, operations: list[CommitOperationAdd], token: str, private: bool, revision: str | None, merged: bool
) -> str:
    """Create the repo (and branch) if needed, then send every file in a single commit."""
    api = HfApi(token=token)
    what = "merged model" if merged else "LoRA adapter"
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.create_commit(repo, operations, commit_message=f"Upload {what}", revision=revision)
    except (HTTP.HTTPError, OfflineModeIsEnabled, ValueError, RuntimeError) as err:
        raise SystemExit(f"push to {repo} failed: {failure(err, api.endpoint)}; no commit was made") from None
    return info.commit_url


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
    cause = err.__cause__
    return " ".join(str(err).split()) + (f" ({' '.join(str(cause).split())})" if cause else "")
