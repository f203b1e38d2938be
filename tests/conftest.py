"""Fixtures: a tiny random Llama with a tokenizer trained in-process on the pinned tweets, offline, and
what tests build from it (adapters, independent scores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR, LABELS, PROMPT  # noqa: E402

EOS = "<|end|>"
TINY_CONFIG = Path(__file__).parent / "tiny.yaml"


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of ~800 tokens, learned from the pinned tweets and the prompt."""
    texts = [json.loads(line)["text"] for line in (DATA_DIR / "train.jsonl").read_text().splitlines()]
    texts += [PROMPT] * 50 + [" " + " ".join(LABELS)] * 50
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS)


def tiny_llama(vocab_size: int, eos_id: int, hidden_size: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=eos_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def make_tiny_llama() -> Callable[..., LlamaForCausalLM]:
    return tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama folder, usable wherever a Hub id is."""
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = train_tokenizer()
    tiny_llama(len(tokenizer), tokenizer.eos_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def train_tiny() -> Callable[..., Path]:
    """`finetune train tests/tiny.yaml --model_name_or_path MODEL --output_dir OUT [overrides]`, in-process."""

    def run(model_dir: Path, out: Path, *overrides: str) -> Path:
        from finetune.benchmark import load_benchmark
        from finetune.config import parse_train_args
        from finetune.train import train

        argv = [str(TINY_CONFIG), "--model_name_or_path", str(model_dir), "--output_dir", str(out), *overrides]
        task_args, sft, model_args = parse_train_args(argv)
        return train(load_benchmark(task_args.task), task_args, sft, model_args)

    return run


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir: Path, train_tiny: Callable[..., Path], tmp_path_factory) -> Path:
    """A LoRA adapter trained for a few steps on the tiny model."""
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "tiny-adapter")


@pytest.fixture(scope="session")
def label_logliks() -> Callable[..., list[list[float]]]:
    """Log-likelihood of ` negative`, ` neutral`, ` positive` after each prompt, summed over the label's tokens by
    a plain forward pass: the multiple-choice score computed without lm-eval, to check lm-eval's against."""

    def score(model: torch.nn.Module, tokenizer, texts: list[str]) -> list[list[float]]:
        rows = []
        for text in texts:
            context = tokenizer(PROMPT.format(text=text), add_special_tokens=False)["input_ids"]
            row = []
            for label in LABELS:
                whole = tokenizer(PROMPT.format(text=text) + " " + label, add_special_tokens=False)["input_ids"]
                assert whole[: len(context)] == context, "the label starts a new token"
                with torch.no_grad():
                    logprobs = model(input_ids=torch.tensor([whole])).logits[0].float().log_softmax(-1)
                row.append(sum(logprobs[i - 1, whole[i]].item() for i in range(len(context), len(whole))))
            rows.append(row)
        return rows

    return score
