"""`finetune evaluate`: one base, many adapters, one comparison; adapters that do not fit are refused up front."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama, train_tiny
from peft import PeftModel
from transformers import AutoModelForCausalLM

import finetune.evaluate as evaluate_module
from finetune.evaluate import BASE_NAME, active, evaluate, load_with_adapters, write_report
from finetune.model import AdapterMismatch


@pytest.fixture(scope="module")
def second_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(
        tiny_model_dir, tmp_path_factory.mktemp("second") / "other-adapter", "--seed", "1", "--max_steps", "3"
    )


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.arange(1, 40).unsqueeze(0)).logits


def test_swapping_adapters_on_one_base_matches_loading_each_alone(
    tiny_model_dir: Path, tiny_adapter_dir: Path, second_adapter_dir: Path
) -> None:
    adapters = {"first": str(tiny_adapter_dir), "second": str(second_adapter_dir)}
    shared = load_with_adapters(str(tiny_model_dir), adapters, torch.float32)
    seen = {}
    for name in [BASE_NAME, *adapters]:
        with active(shared, name):
            seen[name] = logits(shared)
    alone = {BASE_NAME: logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir))}
    for name, source in adapters.items():
        alone[name] = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), source))
    for name in seen:
        torch.testing.assert_close(seen[name], alone[name], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(seen["first"], seen[BASE_NAME])
    assert not torch.allclose(seen["first"], seen["second"])


def test_base_is_loaded_once_for_a_comparison_of_two_adapters(
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    second_adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    loads = []
    real = AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module.AutoModelForCausalLM, "from_pretrained", counting)
    evaluation = evaluate(str(tiny_model_dir), [str(tiny_adapter_dir), str(second_adapter_dir)], limit=4)
    assert loads == [str(tiny_model_dir)]
    assert list(evaluation.results) == [BASE_NAME, "tiny-adapter", "other-adapter"]

    text = write_report(evaluation, tmp_path)
    assert "| tiny-adapter | tweet_sentiment_gen |" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"]["other-adapter"]["tweet_sentiment_mc"]["invalid"] == 0.0
    for picture in ["comparison.png", "confusion_base_tweet_sentiment_gen.png", "training_loss_tiny-adapter.png"]:
        assert (tmp_path / picture).stat().st_size > 0


def test_an_adapter_for_other_shapes_is_refused_before_scoring(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    wider = tmp_path / "tiny-llama"
    model = tiny_llama(vocab_size=800, eos_id=0)
    model.config.hidden_size = 48
    AutoModelForCausalLM.from_config(model.config).save_pretrained(wider)
    with pytest.raises(AdapterMismatch, match="does not fit base"):
        load_with_adapters(str(wider), {"a": str(tiny_adapter_dir)}, torch.float32)


def test_an_adapter_for_another_base_name_is_refused_unless_allowed(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "some-other-model"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(renamed)
    with pytest.raises(AdapterMismatch, match="was trained on"):
        load_with_adapters(str(renamed), {"a": str(tiny_adapter_dir)}, torch.float32)
    assert isinstance(load_with_adapters(str(renamed), {"a": str(tiny_adapter_dir)}, torch.float32, True), PeftModel)
