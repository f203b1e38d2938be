"""The divergence guard of `finetune train`: a run whose validation answers score below the base's, or collapse
onto one label, and get no better, at two evaluations in a row is stopped with its best checkpoint kept and a line
that says what to try. A recipe at the edge of stability on the base it was tuned on falls over on the next base:
the user hears so at the run's second evaluation, not from the report after it."""

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import SFTTrainer

from finetune import FinetuneError
from finetune.benchmark import COLLAPSE_SHARE

PATIENCE = 2  # bad evaluations in a row: one may be a transient of the first steps
STOPPED = "divergence_guard"  # the log entry of a stopped run, in train_log.json, which reports read


class Diverged(FinetuneError):
    """Training stopped by the guard, its best checkpoint saved as the adapter; exit 3, apart from bad input."""

    exit_code = 3

    def __init__(self, what: str, advice: str = "") -> None:
        super().__init__(f"{what}; {advice}" if advice else what)
        self.what = what  # without the advice, for a caller that gives its own (a sweep's trial)


class DivergenceGuard(TrainerCallback):
    """Scores the base on the validation rows before the first step, with the evaluations' own choice scoring,
    and logs it as step 0 (a resumed run finds it in its log); then judges every evaluation against it."""

    def __init__(self, trainer: SFTTrainer) -> None:
        self.trainer = trainer  # the BenchmarkSFTTrainer: its validation_scores(), last_scores and log()
        self.base: float | None = None
        self.previous: float | None = None  # the last evaluation's macro-F1 (the base's, before the first)
        self.bad = 0
        self.reason: str | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        logged = [row["eval_macro_f1"] for row in state.log_history if row.get("step") == 0 and "eval_macro_f1" in row]
        if logged:
            self.base = self.previous = logged[0]
            return
        scores = self.trainer.validation_scores()  # LoRA's B starts at zero: this is the base
        self.base = self.previous = scores["macro_f1"]
        self.trainer.log({"eval_macro_f1": scores["macro_f1"], "eval_top_label_share": scores["top_label_share"]})
        self.trainer.model.train()

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict, **kw
    ) -> None:
        if self.base is None or "eval_macro_f1" not in metrics or state.global_step == 0:
            return
        score, improving = metrics["eval_macro_f1"], metrics["eval_macro_f1"] > self.previous
        self.previous = score
        why = []
        if score < self.base:
            why.append(f"validation macro-F1 {score:.3f} is below the base's {self.base:.3f}")
        if metrics.get("eval_top_label_share", 0) >= COLLAPSE_SHARE:
            label = self.trainer.last_scores["top_label"]
            why.append(f"the answers collapsed onto `{label}` ({metrics['eval_top_label_share']:.0%} of them)")
        self.bad = self.bad + 1 if why and not improving else 0  # a slow start that climbs is left to climb
        if self.bad >= PATIENCE:
            self.reason = f"{' and '.join(why)}, and no better, {PATIENCE} evaluations in a row"
            self.trainer.log({STOPPED: self.reason})
            control.should_training_stop = True

    def message(self, state: TrainerState, args: TrainingArguments) -> str:
        """What happened, and what was kept (best by the run's own `metric_for_best_model`)."""
        best = state.best_model_checkpoint
        kept = (
            f"kept the best checkpoint ({best.rsplit('/', 1)[-1]}, {best_by(args)} {state.best_metric:.3f})"
            if best
            else "kept the last weights (no checkpoint was scored)"
        )
        return f"stopped at step {state.global_step} of {state.max_steps}: {self.reason}; {kept} as the adapter"


def best_by(args: TrainingArguments) -> str:
    metric = (args.metric_for_best_model or "loss").removeprefix("eval_")
    return "validation macro-F1" if metric == "macro_f1" else f"eval_{metric}"


def advice(learning_rate: float) -> str:
    return (
        f"try a lower --learning_rate (this run's: {learning_rate:g}) or `finetune sweep` "
        "(--divergence_guard false trains on regardless)"
    )
