"""`finetune soup`: the uniform soup of adapters trained on one base (Wortsman et al. 2022: average fine-tunes that
share a starting point). peft's `add_weighted_adapter` with combination "cat" and weights 1/n stacks the members'
low-rank factors, so the soup's weight update is exactly the mean of theirs."""

from pathlib import Path

from lm_eval.api.task import Task
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from trl import ModelConfig

from finetune import FinetuneError
from finetune.benchmark import choice_scores
from finetune.evaluate import adapter_names, language_model
from finetune.model import load_model, load_tokenizer, save_model_args
from finetune.outputs import check_output, written

SOUP = "default"  # peft saves the adapter of this name at the folder's top, where every command looks


def make_soup(model: PeftModel, names: list[str]) -> None:
    """Adds adapter SOUP, the uniform soup of `names`. peft (0.21.2, its issue #3761) folds each member's scale into
    the soup's weights and gives the soup alpha = r, a scale of 1, but the soup inherits `use_rslora`, which makes
    its scale sqrt(r): reset here. DoRA and LoRA biases are no sum of low-rank factors, so no soup is made of them."""
    configs = [model.peft_config[name] for name in names]
    if any(config.use_dora or config.lora_bias for config in configs):
        raise FinetuneError("DoRA adapters or LoRA biases cannot be averaged by stacking their factors")
    model.add_weighted_adapter(names, [1 / len(names)] * len(names), SOUP, combination_type="cat")
    if model.peft_config[SOUP].use_rslora:
        model.peft_config[SOUP].use_rslora = False
        for module in model.modules():
            if isinstance(module, LoraLayer) and SOUP in module.scaling:
                module.scaling[SOUP] = 1.0


def soup(
    choices: Task,
    validation_docs: list[dict],
    model_args: ModelConfig,
    adapters: list[str],
    out: Path,
    batch_size: int = 16,
    overwrite: bool = False,
) -> dict[str, float]:
    """Save the soup of `adapters` as an adapter folder at `out`, and return the validation macro-F1 of each member
    and of the soup, scored as `finetune train` scores its checkpoints."""
    if len(adapters) < 2:
        raise FinetuneError("a soup takes at least two adapters (--adapter A --adapter B)")
    check_output(out, overwrite)
    names = adapter_names(adapters)
    model = load_model(model_args, names)
    make_soup(model, list(names))
    tokenizer = load_tokenizer(model_args)
    lm = language_model(model, tokenizer, batch_size)
    scores = {}
    for name in [*names, SOUP]:
        model.set_adapter(name)
        scores[name] = choice_scores(lm, choices, validation_docs)["macro_f1"]
    with written(out, overwrite) as staging:
        model.save_pretrained(staging, selected_adapters=[SOUP])
        tokenizer.save_pretrained(staging)
        save_model_args(model_args, staging)
    return scores
