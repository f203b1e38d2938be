"""Does padding-free training keep examples apart? trl's `padding_free=True` flattens a batch into one
sequence with `position_ids` restarting at 0 for each example and no attention mask. This runs the embedded
model on real training rows that way and compares the logits with running each row alone, per attention
implementation. A difference at rounding level means no attention across examples; the control row (the
same flat sequence with positions that do not restart) shows what attention across examples looks like.

    python bench/padding_free_check.py [--model embedded] [--rows 8] [--attn sdpa eager flex_attention]
"""

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from finetune.data import load_task, training_sets
from finetune.model import resolve_model


def rows_as_ids(tokenizer, n: int) -> list[list[int]]:
    """The first n training rows as the trainer sees them: prompt, then completion and EOS."""
    train, _ = training_sets(load_task(), train_limit=n)
    return [tokenizer(r["prompt"] + r["completion"])["input_ids"] + [tokenizer.eos_token_id] for r in train]


@torch.no_grad()
def max_difference(model, ids: list[list[int]], restart_positions: bool, use_cache: bool = False) -> float:
    """Largest |logit| difference between the flat sequence and each row on its own, over the largest |logit|."""
    alone = torch.cat([model(input_ids=torch.tensor([x], device="cuda")).logits[0] for x in ids])
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": x} for x in ids])
    inputs = {k: v.to("cuda") if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
    if not restart_positions:
        flat_ids = inputs["input_ids"]
        inputs = {"input_ids": flat_ids, "position_ids": torch.arange(flat_ids.shape[1], device="cuda")[None]}
    flat = model(**inputs, use_cache=use_cache).logits[0]
    return ((flat - alone).abs().max() / alone.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--attn", nargs="+", default=["sdpa", "eager", "flex_attention"])
    args = parser.parse_args()
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = rows_as_ids(tokenizer, args.rows)
    print(f"{args.rows} rows, {sum(map(len, ids))} tokens, {torch.cuda.get_device_name()}")
    print(
        "| attention | flat vs alone, use_cache=False (training) | same, use_cache=True | control: positions not "
        "restarting | seconds |"
    )
    print("|---|---|---|---|---|")
    for attn in args.attn:
        start = time.perf_counter()
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn).cuda()
            same, control = max_difference(model, ids, True), max_difference(model, ids, False)
            cached = max_difference(model, ids, True, use_cache=True)
            seconds = time.perf_counter() - start
            print(f"| {attn} | {same:.1e} | {cached:.1e} | {control:.1e} | {seconds:.1f} |", flush=True)
        except Exception as err:  # noqa: BLE001 - a missing kernel package is a result here, not a failure
            print(f"| {attn} | not available: {type(err).__name__}: {str(err)[:120]} | | |", flush=True)


if __name__ == "__main__":
    main()
