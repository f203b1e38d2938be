"""The one module the bench scripts share (they never import each other): per-step wall times, the tokens each
training batch really holds (and the padding around them), MFU, the machine's own matrix-multiply ceiling, and
the 8B-shaped training variants that train_throughput.py times on one card and scaleout_train.py on several, and
`finetune` commands run as a user runs them (margin.py, whole_job.py).

Why a collate-function wrapper and a callback rather than the trainer's logs: `trainer.state.log_history`
averages over logging windows and counts tokens without padding only since the start, so it cannot give a
steady-state rate with the first (compilation, allocator, autotuning) steps left out, nor a padding share.
"""

import argparse
import contextlib
import gc
import importlib.metadata
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainerCallback
from transformers.models.llama import modeling_llama
from trl import ModelConfig

from finetune.config import parse_train_args
from finetune.model import resolve_model
from finetune.train import trainer_for

# The benchmark's pinned test rows, generative and multiple-choice: what every adapter of the bench is scored on.
PINNED = ("tweet_sentiment_gen", "tweet_sentiment_mc")


@dataclass
class Command:
    """How a `finetune` command ended, and its wall time with loading."""

    code: int
    wall_s: float


def run_finetune(*args: str, log: Path) -> Command:
    """`finetune ARGS` in a process of its own, as a user runs it (loading included in its time), its output
    appended to `log`."""
    started = time.perf_counter()
    with log.open("a") as out:
        code = subprocess.run([sys.executable, "-m", "finetune.cli", *args], stdout=out, stderr=out).returncode
    return Command(code, round(time.perf_counter() - started, 1))


def scored_as_trained(model_args: ModelConfig) -> list[str]:
    """`finetune evaluate`'s flags for the base a training config names, loaded as it was trained (4-bit or not)."""
    flags = ["--model_name_or_path", model_args.model_name_or_path, "--model_revision", model_args.model_revision]
    return flags + (["--load_in_4bit"] if model_args.load_in_4bit else [])


# LoRA on a frozen base: forward 2N, backward through the activations 2N, no gradients for the N frozen
# weights (the adapters' own FLOPs are ~2% at r=64 and are not counted).
FLOP_PER_PARAM_TOKEN = 4
# NVIDIA's datasheet figure for dense bf16 on an H100 SXM; the H200 has the same tensor cores.
H100_BF16_DENSE_TFLOPS = 989.0
GIB = 2**30


@dataclass
class BatchLog:
    """Per training micro-batch: examples, tokens that are real text, and the tokens the tensors hold."""

    examples: list[int] = field(default_factory=list)
    real_tokens: list[int] = field(default_factory=list)
    tensor_tokens: list[int] = field(default_factory=list)

    def wrap(self, collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
        def counted(features: list[dict]) -> dict:
            batch = collate(features)
            self.examples.append(len(features))
            self.real_tokens.append(sum(len(f["input_ids"]) for f in features))
            self.tensor_tokens.append(batch["input_ids"].numel())
            return batch

        return counted


def count_training_batches(trainer) -> BatchLog:
    """Record what each training batch holds. Only the training loader is wrapped: the trainer's
    validation batches go through the same collator and must not be counted."""
    log = BatchLog()
    make_loader = trainer.get_train_dataloader

    def counted_loader():
        collate = trainer.data_collator  # the loader (accelerate's copy included) keeps the one it is built with
        trainer.data_collator = log.wrap(collate)
        try:
            return make_loader()
        finally:
            trainer.data_collator = collate

    trainer.get_train_dataloader = counted_loader
    return log


class StepTimer(TrainerCallback):
    """Wall time at the end of each optimizer step, after a device sync so that queued kernels count: every step,
    or only `synced_steps` (the ends of a window), so that the host queues the next step's kernels while the device
    finishes this one, as in a user's run; the times between those steps are then the host's and only their sums
    over the window mean anything. An interval that also ran a validation or a checkpoint save is marked, so that
    pure training time can be told apart from the time a run spends on evaluation and saving."""

    def __init__(self, synced_steps: set[int] | None = None) -> None:
        self.synced_steps = synced_steps
        self.start = 0.0
        self.ends: list[float] = []
        self.busy: list[bool] = []  # interval i (ending at ends[i]) also evaluated or saved
        self._pending = False

    def on_train_begin(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.synced_steps is None or state.global_step in self.synced_steps:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.busy.append(self._pending)
        self._pending = False

    def on_evaluate(self, args, state, control, **kwargs):
        self._pending = True

    def on_save(self, args, state, control, **kwargs):
        self._pending = True


def micro_batches_per_step(n_batches_per_epoch: int, accumulation: int, steps: int) -> list[int]:
    """How many micro-batches each optimizer step consumed: `accumulation`, except the last step of an
    epoch, which takes what is left (transformers' training loop)."""
    per_epoch = [accumulation] * (n_batches_per_epoch // accumulation)
    if n_batches_per_epoch % accumulation:
        per_epoch.append(n_batches_per_epoch % accumulation)
    out: list[int] = []
    while len(out) < steps:
        out.extend(per_epoch)
    return out[:steps]


@dataclass
class Throughput:
    steps: int
    skipped: int
    examples_per_s: float
    tokens_per_s: float
    e2e_examples_per_s: float
    e2e_tokens_per_s: float
    train_seconds: float
    padding_share: float
    mfu: float
    peak_gib: float
    tokens_per_example: float


def summarize(
    timer: StepTimer,
    batches: BatchLog,
    batches_per_epoch: int,
    accumulation: int,
    skip: int,
    n_params: int,
    peak_tflops: float,
) -> Throughput:
    """Steady state: steps `skip+1`.. to the last, over the non-padding tokens those steps trained on,
    leaving out intervals that evaluated or saved. End to end: every step, from `on_train_begin`."""
    steps = len(timer.ends)
    per_step = micro_batches_per_step(batches_per_epoch, accumulation, steps)
    bounds = [0, *itertools.accumulate(per_step)]
    step_examples = [sum(batches.examples[bounds[i] : bounds[i + 1]]) for i in range(steps)]
    step_tokens = [sum(batches.real_tokens[bounds[i] : bounds[i + 1]]) for i in range(steps)]
    step_tensor = [sum(batches.tensor_tokens[bounds[i] : bounds[i + 1]]) for i in range(steps)]
    durations = [timer.ends[0] - timer.start] + [timer.ends[i] - timer.ends[i - 1] for i in range(1, steps)]
    kept = [i for i in range(skip, steps) if not timer.busy[i]]
    seconds = sum(durations[i] for i in kept) or math.nan
    tokens = sum(step_tokens[i] for i in kept)
    total = timer.ends[-1] - timer.start
    tokens_per_s = tokens / seconds
    return Throughput(
        steps=steps,
        skipped=skip,
        examples_per_s=sum(step_examples[i] for i in kept) / seconds,
        tokens_per_s=tokens_per_s,
        e2e_examples_per_s=sum(step_examples) / total,
        e2e_tokens_per_s=sum(step_tokens) / total,
        train_seconds=total,
        padding_share=1 - sum(step_tokens) / max(1, sum(step_tensor)),
        mfu=tokens_per_s * FLOP_PER_PARAM_TOKEN * n_params / (peak_tflops * 1e12),
        peak_gib=torch.cuda.max_memory_allocated() / GIB,
        tokens_per_example=sum(step_tokens) / max(1, sum(step_examples)),
    )


def counted_params(model: torch.nn.Module) -> int:
    """N of the 4N rule: the base model's weights that take part in a token's forward pass, i.e. all but
    the input embedding (a lookup). 4-bit weights count as their unpacked size."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    total = 0
    for name, p in base.named_parameters():
        if "lora_" in name or name.endswith("embed_tokens.weight"):
            continue
        total += p.numel() * (2 if p.dtype == torch.uint8 else 1)  # bitsandbytes packs two 4-bit values a byte
    return total


def matmul_tflops(n: int = 8192, iters: int = 30) -> float:
    """This card's measured dense bf16 ceiling (a large square product, random data), for context beside
    the datasheet peak that MFU divides by."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


def environment() -> dict[str, str]:
    """The card and the versions every number depends on."""
    versions = {}
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel", "lm-eval"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cuda": str(torch.version.cuda),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **versions,
    }


@contextlib.contextmanager
def restored_modules(*modules) -> Iterator[None]:
    """Liger patches module globals (`modeling_llama.apply_rotary_pos_emb`, `LlamaRMSNorm`, ...), not only
    the model instance: undo that after a run so the next configuration in the same process is unpatched."""
    saved = [dict(vars(m)) for m in modules]
    try:
        yield
    finally:
        for module, before in zip(modules, saved, strict=True):
            for name in set(vars(module)) - set(before):
                delattr(module, name)
            for name, value in before.items():
                if vars(module).get(name) is not value:
                    setattr(module, name, value)


def free_card() -> None:
    """Drop what Python no longer references and hand the cached blocks back, so the next configuration in the
    process starts from an empty card and its own peak."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def release(trainer) -> None:
    """Free the model, optimizer and caches so the next configuration starts from an empty card."""
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    free_card()


def write_json(path: Path | None, rows: list[dict], env: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))


def as_row(name: str, args: list[str], result: Throughput | None, error: str = "") -> dict:
    return {"variant": name, "arguments": " ".join(args), "error": error, **(asdict(result) if result else {})}


def print_table(rows: list[dict], peak_tflops: float) -> None:
    """The RESULT lines a reader greps, then a markdown table."""
    head = "| variant | ex/s steady | tok/s steady | ex/s e2e | tok/s e2e | MFU | peak GiB | padding |"
    print("\n" + head + "\n" + "|---" * 8 + "|")
    for r in rows:
        if r["error"]:
            print(f"| {r['variant']} | {r['error']} |" + " |" * 6)
            continue
        print(
            f"| {r['variant']} | {r['examples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['e2e_examples_per_s']:.1f} "
            f"| {r['e2e_tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | {r['peak_gib']:.1f} "
            f"| {100 * r['padding_share']:.0f}% |"
        )
    print(f"(MFU: {FLOP_PER_PARAM_TOKEN}N FLOP per non-padding token over {peak_tflops:.0f} TFLOP/s dense bf16)")


# Kernel-name fragments, first match wins: where the GPU time of a training step goes.
KERNEL_KINDS = (
    ("communication (NCCL, another stream)", ("nccl",)),
    ("4-bit dequantize (bitsandbytes)", ("dequant", "kgemm_4bit", "kquantize")),
    ("attention", ("fmha", "flash", "attention", "efficient_attention", "cutlass::kernel<pytorchmemeff")),
    ("matmul (cuBLAS/CUTLASS)", ("gemm", "gemv", "nvjet", "cutlass", "xmma", "cublas", "splitk", "matmul")),
    ("Liger / Triton fused", ("liger", "rms_norm", "rope", "swiglu", "silu_mul", "triton")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("copies, casts, elementwise", ("elementwise", "vectorized", "copy", "cat", "fill", "index", "reduce", "dropout")),
)


class ProfileWindow(TrainerCallback):
    """torch.profiler from the end of step `after_step` to the end of training, so that the first steps'
    one-off work (and the steps a bench times) stay out of it."""

    def __init__(self, after_step: int, activity: torch.profiler.ProfilerActivity) -> None:
        self.after_step, self.activity = after_step, activity
        self.prof: torch.profiler.profile | None = None
        self.t0 = 0.0
        self.wall_s = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.after_step:
            self.prof = torch.profiler.profile(activities=[self.activity])
            self.prof.start()
            self.t0 = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        if self.prof is None:
            return
        if self.activity == torch.profiler.ProfilerActivity.CUDA:
            torch.cuda.synchronize()
        self.wall_s = time.perf_counter() - self.t0
        self.prof.stop()


class Profiler(ProfileWindow):
    """GPU time by kind of kernel, the top kernels, and how much of the wall time the GPU had nothing to run."""

    def __init__(self, after_step: int, path: Path) -> None:
        super().__init__(after_step, torch.profiler.ProfilerActivity.CUDA)
        self.path = path

    def on_train_end(self, args, state, control, **kwargs):
        super().on_train_end(args, state, control, **kwargs)
        if self.prof is not None:
            write_kernel_summary(self.prof, self.wall_s, self.path)


def write_kernel_summary(prof: torch.profiler.profile, wall_s: float, path: Path) -> None:
    """GPU kernel time by kind and the top kernels against the wall time of the profiled window; printed and
    written to `path`."""
    wall_us = wall_s * 1e6
    by_name: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.time_range.elapsed_us()
    busy = sum(by_name.values())
    kinds: dict[str, float] = {}
    for name, us in by_name.items():
        kind = next((k for k, frags in KERNEL_KINDS if any(f in name.lower() for f in frags)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us
    lines = [
        f"profiled wall {wall_us / 1e3:.0f} ms, GPU kernels {busy / 1e3:.0f} ms "
        f"({100 * busy / wall_us:.0f}% busy; kernels of all streams summed)",
        "",
        "| kind | ms | share of kernel time |",
        "|---|---|---|",
    ]
    for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {us / 1e3:.0f} | {100 * us / max(busy, 1e-9):.0f}% |")
    lines += ["", "top kernels:"]
    for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"{us / 1e3:9.1f} ms  {name[:150]}")
    text = "\n".join(lines)
    print("PROFILE " + path.name + "\n" + text, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


EPOCHS = 2  # whole epochs a variant trains by default; the first is left out of the steady state
WINDOW_SKIP = 2  # steps of a window left out of the steady state
PROFILED_STEPS = 3  # steps a profile covers, after the timed ones
SEED_PRESET = "llama-3.1-8b-qlora"
NO_QUANT = ["--load_in_4bit", "false", "--use_bnb_nested_quant", "false"]


@dataclass(frozen=True)
class Variant:
    """Training arguments on top of a preset. `window` (steps, of which the first `skip` are left out of the steady
    state) is for a variant too slow to time over whole epochs; the others run whole epochs, the first left out."""

    preset: str
    args: tuple[str, ...]
    about: str
    window: tuple[int, int] | None = None


def big_batch(batch: int) -> tuple[str, ...]:
    """The 80 GB card's arguments without the speed-ups measured on/off below."""
    return ("--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", "1",
            "--activation_checkpointing", "false", "--optim", "adamw_torch_fused")  # fmt: skip


def fast(batch: int) -> tuple[str, ...]:
    return (*big_batch(batch), "--lora_dropout", "0", "--train_sampling_strategy", "group_by_length",
            "--use_liger_kernel", "true")  # fmt: skip


# The 8B shape's variants, one card (train_throughput.py) or several of one host (scaleout_train.py) alike, so
# that a scale-out ratio divides two runs of the same arguments.
VARIANTS_8B: dict[str, Variant] = {
    "seed": Variant(
        SEED_PRESET,
        (
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "8",
            "--activation_checkpointing",
            "true",
            "--optim",
            "paged_adamw_32bit",
        ),
        "the seed article's: batch 1 x accumulation 8, checkpointing, paged AdamW, dropout 0.1",
        (10, WINDOW_SKIP),  # an epoch is 400 of its steps, about half an hour on an H100
    ),
    "h100": Variant("llama-3.1-8b-qlora-h100", (), "the llama-3.1-8b-qlora-h100 preset as it is in this checkout"),
    "h100-compile": Variant(
        "llama-3.1-8b-qlora-h100",
        ("--torch_compile", "true"),
        "the H100 preset with torch.compile (compiled in the first epoch, which the steady state leaves out)",
    ),
    "h100-pad16": Variant(
        "llama-3.1-8b-qlora-h100",
        ("--pad_to_multiple_of", "16"),
        "the H100 preset with batches padded to a multiple of 16 tokens (fewer distinct shapes, a little more padding)",
    ),
    "h100-compile-graphs": Variant(
        "llama-3.1-8b-qlora-h100",
        ("--torch_compile", "true", "--torch_compile_mode", "reduce-overhead", "--pad_to_multiple_of", "16"),
        "the H100 preset compiled with CUDA graphs (torch.compile's reduce-overhead), padded to multiples of 16",
    ),
    "h100-single-quant": Variant(
        "llama-3.1-8b-qlora-h100",
        ("--use_bnb_nested_quant", "false"),
        "the H100 preset without nested quantization (its 4-bit scales not quantized again: one dequantization less)",
    ),
    "b64": Variant(SEED_PRESET, big_batch(64), "batch 64, no checkpointing, fused AdamW (2026-11-26 best)"),
    "fast": Variant(SEED_PRESET, fast(128), "batch 128 + length-grouped + Liger + dropout 0"),
    "fast-b256": Variant(SEED_PRESET, fast(256), "fast at batch 256"),
    "fast-b64": Variant(SEED_PRESET, fast(64), "fast at batch 64"),
    "fast-random": Variant(
        SEED_PRESET, (*fast(128), "--train_sampling_strategy", "random"), "fast without length grouping"
    ),
    "fast-tforder": Variant(
        SEED_PRESET,
        (*fast(128), "--balance_length_groups", "false"),
        "fast in transformers' own length-grouped order (drawn from the global generator, not from seed + epoch)",
    ),
    "fast-rebalance": Variant(
        SEED_PRESET,
        (*fast(128), "--train_sampling_strategy", "batch_rebalance"),
        "fast with transformers' batch_rebalance sampler (each step's rows split across processes by padded cost)",
    ),
    "fast-noliger": Variant(SEED_PRESET, (*fast(128), "--use_liger_kernel", "false"), "fast without Liger"),
    "fast-dropout": Variant(SEED_PRESET, (*fast(128), "--lora_dropout", "0.1"), "fast with dropout 0.1"),
    "fast-padfree": Variant(
        SEED_PRESET,
        (*fast(128), "--train_sampling_strategy", "random", "--padding_free", "true", "--max_length", "None"),
        "fast, padding-free (one flat sequence, sdpa block-diagonal mask) instead of grouping",
    ),
    "ckpt-b256": Variant(
        SEED_PRESET,
        (*fast(256), "--activation_checkpointing", "true"),
        "fast at batch 256 with gradient checkpointing (the 16 GB budget)",
    ),
    "ckpt-b192": Variant(
        SEED_PRESET,
        (*fast(192), "--activation_checkpointing", "true"),
        "fast at batch 192 with gradient checkpointing",
    ),
    "ckpt-b128": Variant(
        SEED_PRESET,
        (*fast(128), "--activation_checkpointing", "true"),
        "fast at batch 128 with gradient checkpointing",
    ),
    "fast-compile": Variant(SEED_PRESET, (*fast(128), "--torch_compile", "true"), "fast + torch.compile"),
}


def epochs_with_a_steady_one(text: str) -> int:
    epochs = int(text)
    if epochs < 2:
        raise argparse.ArgumentTypeError(f"at least 2, the first being left out of the steady state (got {epochs})")
    return epochs


def add_window_args(parser: argparse.ArgumentParser) -> None:
    """How long each variant trains: whole epochs, or a window of steps (the throughput scripts' shared flags)."""
    parser.add_argument(
        "--epochs", type=epochs_with_a_steady_one, default=EPOCHS, help="whole epochs per variant, the first left out"
    )
    parser.add_argument("--steps", type=int, help="a fixed window of optimizer steps instead of whole epochs")
    parser.add_argument("--skip", type=int, default=WINDOW_SKIP, help="first steps of a --steps window left out")


def timed_as_asked(variant: Variant, args: argparse.Namespace) -> Variant:
    """The variant with the window the flags set, if they set one."""
    return replace(variant, window=(args.steps, args.skip)) if args.steps else variant


def add_tokenizer(folder: Path, tokenizer: str) -> None:
    """`finetune train` reads the tokenizer from the model folder; any tokenizer with ids < 128,256 will do
    (the default, SmolLM2's, gives ~50 tokens a row, like Llama 3.1's)."""
    if not (folder / "tokenizer_config.json").exists():
        AutoTokenizer.from_pretrained(resolve_model(tokenizer)).save_pretrained(folder)


def run_variant(
    name: str, variant: Variant, model_dir: Path, quant: str, profile_dir: Path | None, peak: float, epochs: int
) -> Throughput:
    """One configuration, start to end: build the trainer (model load included), train, measure, free. Whole
    epochs unless the variant has a window; a profile covers PROFILED_STEPS more steps, after the timed ones."""
    profiled = PROFILED_STEPS if profile_dir else 0
    length = (
        ["--max_steps", str(variant.window[0] + profiled)] if variant.window else ["--num_train_epochs", str(epochs)]
    )
    fixed = ["--model_name_or_path", str(model_dir), "--output_dir", tempfile.mkdtemp(prefix="bench-"), *length,
             "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
             "--disable_tqdm", "true", "--logging_steps", "1000", "--bf16", "true", "--fp16", "false"]  # fmt: skip
    argv = [variant.preset, *fixed, *(NO_QUANT if quant == "bf16" else []), *variant.args]
    task_args, sft, model_args = parse_train_args(argv)
    with restored_modules(modeling_llama):
        trainer = trainer_for(task_args, sft, model_args)
        batches = count_training_batches(trainer)
        rows = math.ceil(len(trainer.train_dataset) / sft.world_size)  # this process's share of an epoch
        n_batches = math.ceil(rows / sft.per_device_train_batch_size)
        if variant.window:
            steps, skip = variant.window
        else:  # the first epoch is left out: compilation, allocator growth, first-seen lengths
            skip = math.ceil(n_batches / sft.gradient_accumulation_steps)
            steps = skip * epochs
            if profiled:
                trainer.args.max_steps = steps + profiled  # past the last epoch, as past a window
        timer = StepTimer(synced_steps={skip, steps})  # the steady window's ends; its steps run as a user's do
        trainer.add_callback(timer)
        if profile_dir:
            trainer.add_callback(Profiler(steps, profile_dir / f"profile-{quant}-{name}.txt"))
        torch.cuda.reset_peak_memory_stats()
        try:
            trainer.train()
            timer.ends = timer.ends[:steps]
            return summarize(
                timer, batches, n_batches, sft.gradient_accumulation_steps, skip, counted_params(trainer.model), peak
            )
        finally:
            release(trainer)
