"""`finetune evaluate`: one base, many adapters, one comparison; adapters that do not fit are refused up front."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, LlamaConfig
from trl import ModelConfig

import finetune.model as model_module
from finetune import FinetuneError
from finetune.benchmark import BASE_NAME, TASK_GROUP, load_tasks
from finetune.evaluate import active, evaluate
from finetune.model import AdapterMismatch, adapter_at, base_config, check_fits, load_model
from finetune.report import write_report


@pytest.fixture(scope="module")
def second_adapter_dir(tiny_model_dir: Path, train_tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    shared = load_model(base_config(str(tiny_model_dir)), adapters)
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


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("llama-3.1-8b-qlora", "llama-3_1-8b-qlora"),  # peft makes the name a module's, which may not hold a dot
        ("tiny-adapter@v2", "tiny-adapter@v2"),  # a folder that exists is a folder, not ID@REVISION on the Hub
    ],
)
def test_an_adapter_folder_with_dots_or_an_at_sign_in_its_name_is_scored(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path, folder: str, name: str
) -> None:
    copy = shutil.copytree(tiny_adapter_dir, tmp_path / folder)
    evaluation = evaluate(
        base_config(str(tiny_model_dir)), [str(copy)], tasks=load_tasks(["tweet_sentiment_mc"]), limit=4
    )
    assert evaluation.adapters == {name: str(copy)}
    assert len(evaluation.pairs[name]["tweet_sentiment_mc"]) == 4


def test_an_adapter_is_scored_on_the_base_revision_it_was_trained_on_or_refused(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "at-v1")
    recorded = json.loads((adapter / "model_args.json").read_text())
    (adapter / "model_args.json").write_text(json.dumps({**recorded, "model_revision": "v1"}))
    with pytest.raises(AdapterMismatch, match=r"at revision 'v1', not 'main': pass --model_revision v1"):
        load_model(base_config(str(tiny_model_dir)), {"a": str(adapter)})
    assert load_model(base_config(str(tiny_model_dir)), {"a": str(adapter)}, allow_other_base=True) is not None
    assert load_model(base_config(str(tiny_model_dir)), {"a": str(tiny_adapter_dir)}) is not None


def test_a_hub_revision_may_be_a_pull_request_ref_or_a_branch_with_an_at_sign() -> None:
    assert adapter_at("me/ad@refs/pr/3") == ("me/ad", {"revision": "refs/pr/3"})
    assert adapter_at("me/ad@exp@2") == ("me/ad", {"revision": "exp@2"})  # a Hub id has no '@', a branch may
    assert adapter_at("me/ad") == ("me/ad", {})


def test_a_revision_of_an_id_that_is_also_a_local_folder_is_refused_not_read_from_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "me" / "ad").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FinetuneError, match="me/ad is a folder here"):
        adapter_at("me/ad@v2")


def test_base_is_loaded_once_for_a_comparison_of_two_adapters(
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    second_adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    loads = []
    real = model_module.create_model_from_path

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "create_model_from_path", counting)
    evaluation = evaluate(
        base_config(str(tiny_model_dir)),
        [str(tiny_adapter_dir), str(second_adapter_dir)],
        load_tasks([TASK_GROUP]),
        limit=4,
    )
    assert loads == [str(tiny_model_dir)]
    assert list(evaluation.results) == [BASE_NAME, "tiny-adapter", "other-adapter"]

    text = write_report(evaluation, tmp_path)
    assert "| tiny-adapter | tweet_sentiment_gen |" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rows"] == {"tweet_sentiment_gen": 4, "tweet_sentiment_mc": 4}
    assert metrics["results"]["other-adapter"] == evaluation.results["other-adapter"]
    for picture in ["comparison.png", "confusion_base_tweet_sentiment_gen.png", "training_loss_tiny-adapter.png"]:
        assert (tmp_path / picture).stat().st_size > 0


def test_an_adapter_for_other_shapes_is_refused_before_scoring(
    tiny_adapter_dir: Path, make_tiny_llama, tmp_path: Path
) -> None:
    wider = tmp_path / "tiny-llama"
    make_tiny_llama(vocab_size=800, eos_id=0, hidden_size=48).save_pretrained(wider)
    with pytest.raises(AdapterMismatch, match="does not fit base"):
        load_model(base_config(str(wider)), {"a": str(tiny_adapter_dir)})


def test_an_adapter_for_another_base_name_is_refused_unless_allowed(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "some-other-model"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(renamed)
    with pytest.raises(AdapterMismatch, match="was trained on"):
        load_model(base_config(str(renamed)), {"a": str(tiny_adapter_dir)})
    assert isinstance(load_model(base_config(str(renamed)), {"a": str(tiny_adapter_dir)}, True), PeftModel)


def test_a_missing_adapter_is_named_before_the_base_is_loaded(tiny_model_dir: Path) -> None:
    with pytest.raises(FinetuneError, match="no adapter at tester/no-such-adapter: not a folder"):
        load_model(base_config(str(tiny_model_dir)), {"a": "tester/no-such-adapter"})


def test_a_base_larger_than_free_memory_is_refused_before_loading_at_its_size_in_each_form(tmp_path: Path) -> None:
    LlamaConfig(  # the Llama 3.1 405B shape: too large for any machine this runs on, in 16, 8 or 4 bits
        hidden_size=16384, intermediate_size=53248, num_hidden_layers=126, num_attention_heads=128,
        num_key_value_heads=8, vocab_size=128256,
    ).save_pretrained(tmp_path)  # fmt: skip
    needs = {}
    for form, how in {
        "bfloat16": {"dtype": "bfloat16"},
        "8 bits": {"load_in_8bit": True},
        "4 bits": {"load_in_4bit": True},
    }.items():
        with pytest.raises(FinetuneError, match=f"GiB in {form}, more than the") as refused:
            check_fits(str(tmp_path), ModelConfig(model_name_or_path=str(tmp_path), **how))
        needs[form] = float(re.search(r"at least ([\d.]+) GiB", str(refused.value)).group(1))
    assert needs["8 bits"] == pytest.approx(needs["bfloat16"] / 2, rel=0.01)
    assert needs["4 bits"] == pytest.approx(needs["bfloat16"] / 4, rel=0.01)
