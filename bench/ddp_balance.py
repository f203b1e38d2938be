"""How evenly the training samplers share each step's work among DDP processes, on CPU, from the real rows: the
pinned 3,200 training rows (or another task's) tokenized as the trainer tokenizes them (SmolLM2's tokenizer, which
the 8B-shaped benchmark also uses), ordered by the samplers transformers builds (`LengthGroupedSampler`,
`RandomSampler`, `BatchRebalanceSampler`) or `finetune train` builds under DDP (`balanced`: `StepBalancedSampler`,
what `group_by_length` becomes unless `--balance_length_groups false`), and dealt to the
processes as accelerate deals them (`BatchSamplerShard`).

    python bench/ddp_balance.py [--per-device 128] [--processes 1 2 4] [--steps 50] [--seed 42] [--task TASK]

Each step waits for its slowest process. If a process's time grows with the tokens its padded batch holds, a
step costs the largest padded batch of the step, and data parallelism can at most reach
`predicted x` = (real tokens / sum over steps of the largest padded batch) over the same ratio on one process.
The gap between that and a measured ratio (docs/benchmarks.md, "Scale-out") is what imbalance does not explain.
"""

import argparse
import tempfile
from collections.abc import Iterator

import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler, RandomSampler
from transformers.trainer_pt_utils import BatchRebalanceSampler, LengthGroupedSampler

from finetune.benchmark import TRAIN_TASK, load_benchmark, prompt_completion
from finetune.config import parse_train_args
from finetune.model import load_tokenizer
from finetune.sampler import StepBalancedSampler

SAMPLERS = ("group_by_length", "balanced", "random", "batch_rebalance")


def token_lengths(task: str) -> list[int]:
    """Prompt, answer and EOS of every training row, in tokens, as the trainer's `input_ids` hold them."""
    _, _, model_args = parse_train_args(["embedded-cpu-quick", "--output_dir", tempfile.mkdtemp()])
    tokenizer = load_tokenizer(model_args)
    benchmark = load_benchmark(task)  # refuses a variant that `finetune train` would not train on
    train = prompt_completion(benchmark.task, benchmark.task.training_docs())
    prompts = tokenizer(list(train["prompt"]), add_special_tokens=False)["input_ids"]
    answers = tokenizer(list(train["completion"]), add_special_tokens=False)["input_ids"]
    return [len(p) + len(a) + 1 for p, a in zip(prompts, answers, strict=True)]


def rank_batches(kind: str, lengths: list[int], per_device: int, processes: int, rank: int, seed: int) -> Iterator:
    """One process's batches over endless epochs; every process draws the same permutation, as under DDP."""
    for epoch in range(10_000):
        torch.manual_seed(seed + epoch)
        if kind == "batch_rebalance":  # rank-aware itself: the Trainer does not wrap it in accelerate's shard
            sampler = BatchRebalanceSampler(
                lengths, per_device * processes, processes, 1, seed=seed, rank=rank, drop_last=False
            )
            sampler.set_epoch(epoch)
            yield from sampler
            continue
        if kind == "random":
            sampler = RandomSampler(lengths, generator=torch.Generator().manual_seed(seed + epoch))
        else:
            sampler = LengthGroupedSampler(per_device, lengths=lengths)
            if kind == "balanced":  # as `finetune train` orders group_by_length, on one process too
                sampler = StepBalancedSampler(sampler, per_device, processes, seed)
                sampler.set_epoch(epoch)
        yield from BatchSamplerShard(BatchSampler(sampler, per_device, drop_last=False), processes, rank)


def measure(kind: str, lengths: list[int], per_device: int, processes: int, steps: int, seed: int) -> dict:
    ranks = [rank_batches(kind, lengths, per_device, processes, r, seed) for r in range(processes)]
    real = padded = slowest = 0
    for _ in range(steps):
        batches = [next(batches) for batches in ranks]
        cells = [len(b) * max(lengths[i] for i in b) for b in batches]
        real += sum(lengths[i] for b in batches for i in b)
        padded += sum(cells)
        slowest += max(cells)
    return {"padding": 1 - real / padded, "balance": padded / (processes * slowest), "real_per_slowest": real / slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-device", type=int, default=128, help="rows a process trains on a step")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=50, help="steps counted, from the first")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--task", default=TRAIN_TASK, help="whose training rows (`tweet_sentiment_gen_trainfull`: 26,680)"
    )
    args = parser.parse_args()
    lengths = token_lengths(args.task)
    mean = sum(lengths) / len(lengths)
    print(f"{len(lengths)} rows, {mean:.1f} tokens a row (min {min(lengths)}, max {max(lengths)}); "
          f"batch {args.per_device} a process, {args.steps} steps\n")  # fmt: skip
    print("| sampler | processes | padding | balance (mean / slowest padded batch) | predicted x 1 process |")
    print("|---|---|---|---|---|")
    for kind in SAMPLERS:
        one = measure(kind, lengths, args.per_device, 1, args.steps, args.seed)
        for n in args.processes:
            m = one if n == 1 else measure(kind, lengths, args.per_device, n, args.steps, args.seed)
            ratio = m["real_per_slowest"] / one["real_per_slowest"]
            print(f"| `{kind}` | {n} | {100 * m['padding']:.1f}% | {m['balance']:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
