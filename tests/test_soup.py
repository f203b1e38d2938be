"""`finetune soup`: the uniform soup of adapters is the mean of their weight updates, so a soup of one adapter
is that adapter, rank-stabilized ones included (peft alone scales those by sqrt(r)), also once saved and reloaded."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from finetune import FinetuneError
from finetune.soup import SOUP, make_soup

TOKENS = torch.tensor([[5, 17, 42, 8, 99, 3]])


def trained_lora(model: torch.nn.Module, **options: object) -> PeftModel:
    """Random A and B (peft's init makes B zero, an update of nothing), as training leaves them."""
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, **options)
    return get_peft_model(model, config, adapter_name="member")


@pytest.mark.parametrize("options", [{}, {"use_rslora": True}], ids=["lora", "rslora"])
def test_a_soup_of_one_adapter_answers_as_that_adapter(make_tiny_llama, tmp_path: Path, options: dict) -> None:
    model = trained_lora(make_tiny_llama(vocab_size=128, eos_id=0), **options).eval()
    with torch.no_grad(), model.disable_adapter():
        base = model(TOKENS).logits
    with torch.no_grad():
        member = model(TOKENS).logits
        make_soup(model, ["member"])
        model.set_adapter(SOUP)
        soup = model(TOKENS).logits
    assert (member - base).abs().max() > 1e-2  # the adapter changes the answer, so the comparison can fail
    torch.testing.assert_close(soup, member, rtol=1e-4, atol=1e-5)

    model.save_pretrained(tmp_path, selected_adapters=[SOUP])
    reloaded = PeftModel.from_pretrained(make_tiny_llama(vocab_size=128, eos_id=0), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(TOKENS).logits, member, rtol=1e-4, atol=1e-5)


def test_dora_adapters_are_refused(make_tiny_llama) -> None:
    model = trained_lora(make_tiny_llama(vocab_size=128, eos_id=0), use_dora=True)
    with pytest.raises(FinetuneError, match="DoRA"):
        make_soup(model, ["member"])
