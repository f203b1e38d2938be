"""The uniform soup of adapters trained on one base (Wortsman et al. 2022: average fine-tunes that share a starting
point): peft's `add_weighted_adapter` with combination "cat" and weights 1/n stacks the members' low-rank factors,
so the soup's weight update is exactly the mean of theirs. Prints the macro-F1 of each member and of the soup on the
pinned validation rows, scored as `finetune train` scores checkpoints, and saves the soup as an adapter folder that
`finetune evaluate` takes.

    python bench/adapter_soup.py OUT ADAPTER ADAPTER [ADAPTER ...] [--base embedded]
"""

import argparse

from peft import PeftModel
from peft.tuners.lora import LoraLayer

from finetune.data import load_task
from finetune.evaluate import adapter_names, language_model
from finetune.model import base_config, load_model, load_tokenizer
from finetune.predict import PREDICT_TASK, choice_macro_f1

SOUP = "default"  # peft saves the adapter of this name at the folder's top, where evaluate looks


def make_soup(model: PeftModel, names: list[str]) -> None:
    """Adds adapter SOUP, the uniform soup of `names`. peft (0.21.2, its issue #3761) folds each member's scale into
    the soup's weights and gives the soup alpha = r, a scale of 1, but the soup inherits `use_rslora`, which makes
    its scale sqrt(r): reset here. DoRA and LoRA biases are no sum of low-rank factors, so no soup is made of them."""
    configs = [model.peft_config[name] for name in names]
    if any(config.use_dora or config.lora_bias for config in configs):
        raise SystemExit("adapter_soup: DoRA adapters or LoRA biases cannot be averaged by stacking their factors")
    model.add_weighted_adapter(names, [1 / len(names)] * len(names), SOUP, combination_type="cat")
    if model.peft_config[SOUP].use_rslora:
        model.peft_config[SOUP].use_rslora = False
        for module in model.modules():
            if isinstance(module, LoraLayer) and SOUP in module.scaling:
                module.scaling[SOUP] = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("adapters", nargs="+")
    parser.add_argument("--base", default="embedded")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    names = adapter_names(args.adapters)
    model_args = base_config(args.base)
    model = load_model(model_args, names)
    make_soup(model, list(names))
    model.save_pretrained(args.out, selected_adapters=[SOUP])
    lm = language_model(model, load_tokenizer(model_args), args.batch_size)
    task = load_task(PREDICT_TASK)
    docs = list(task.validation_docs())
    for name in [*names, SOUP]:
        model.set_adapter(name)
        f1 = choice_macro_f1(lm, task, docs, disable_tqdm=True)
        print(f"validation macro-F1 {f1:.4f}  {'soup -> ' + args.out if name == SOUP else name}", flush=True)


if __name__ == "__main__":
    main()
