"""Supervised and preference training through TRL's own trainers, one runner parametrised by KB data.

A KB method names the trainer (`trainer: dpo`) and, in `options`, the TRL config fields that make
it what it is (`loss_type=simpo, cpo_alpha=0` turns CPO into SimPO). Examples are built offline
from the step's corpus (runners/preference_data.py): train split for training, validation split
for the measurement, which is the policy's preference accuracy (log p(chosen) > log p(rejected))
before and after, or the reward model's accuracy.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from typing import Literal

import torch
from pydantic import Field, model_validator

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import model_stats
from runners.peft_methods import parse_options
from runners.preference_data import continuations, preference_pairs, unpaired_feedback
from runners.training import oom_guard

# trainer -> (module, trainer class, config class, data kind)
TRAINERS: dict[str, tuple[str, str, str, str]] = {
    "sft": ("trl", "SFTTrainer", "SFTConfig", "completion"),
    "dpo": ("trl", "DPOTrainer", "DPOConfig", "preference"),
    "kto": ("trl", "KTOTrainer", "KTOConfig", "unpaired"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", "preference"),
    "cpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", "preference"),
    "reward": ("trl", "RewardTrainer", "RewardConfig", "preference"),
    "grpo": ("trl", "GRPOTrainer", "GRPOConfig", "prompt"),
    "gkd": ("trl.experimental.gkd", "GKDTrainer", "GKDConfig", "messages"),
}
REFERENCE_TRAINERS = {"dpo", "kto"}  # keep a frozen copy of the policy (passed, never loaded by name)
Trainer = Literal["sft", "dpo", "kto", "orpo", "cpo", "reward", "grpo", "gkd"]


def trl_class(module: str, name: str):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    return getattr(importlib.import_module(module), name)


class TRLParams(RunnerParams):
    trainer: Trainer = Field("sft", description="TRL trainer")
    options: str = Field("", description="extra TRL config fields, 'key=value, key=value'")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(1e-5, gt=0, le=1.0)
    batch_size: int = Field(4, ge=2, le=4096)
    max_length: int = Field(128, ge=16, le=32768)
    examples: int = Field(64, ge=4, le=1_000_000, description="training examples built from the train split")
    eval_examples: int = Field(16, ge=2, le=100_000, description="validation examples for the measurement")
    adapter_rank: int = Field(0, ge=0, le=1024, description="0: train all weights; r: train a LoRA adapter of rank r, merged after")

    @model_validator(mode="after")
    def _options_are_config_fields(self) -> "TRLParams":
        from slmrec.errors import did_you_mean
        module, _, config, _ = TRAINERS[self.trainer]
        fields = {f.name for f in dataclasses.fields(trl_class(module, config))}
        for key in parse_options(self.options):
            if key not in fields:
                raise ValueError(f"options: {key!r} is not a field of TRL's {config}{did_you_mean(key, fields)}")
        return self


def dataset(ctx: StepContext, kind: str, split: str, n: int, max_length: int = 128):
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    disable_progress_bar()
    if kind == "preference":
        rows = preference_pairs(ctx.corpus, split, n)
    elif kind == "unpaired":
        rows = unpaired_feedback(ctx.corpus, split, n)
    elif kind == "prompt":
        rows = [{"prompt": p, "answer": c} for p, c in continuations(ctx.corpus, split, n)]
    elif kind == "messages":
        rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
                for p, c in continuations(ctx.corpus, split, n)]
    elif ctx.corpus.pair_splits.get(split):
        rows = [{"prompt": p, "completion": c} for p, c in continuations(ctx.corpus, split, n)]
    else:  # plain text: language modelling on windows of the split, as the hand-written loops do
        tok = ctx.corpus.tokenizer
        rows = [{"text": tok.decode(b)} for b in ctx.corpus.blocks(split, max_length, n)]
    return Dataset.from_list(rows)


# A plain template for tokenizers that ship none (GKD's collator formats conversations with it).
PLAIN_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}\n{% endif %}")


def completion_logprob(model, tok, prompt: str, completion: str) -> float:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return float(logp[len(p) - 1:].gather(1, targets[len(p) - 1:, None]).sum())


def preference_accuracy(model, tok, pairs: list[dict]) -> tuple[float, float]:
    """Share of pairs where the model gives the chosen completion the higher log-probability, and
    the mean margin (nats)."""
    model.eval()
    margins = [completion_logprob(model, tok, ex["prompt"], ex["chosen"]) -
               completion_logprob(model, tok, ex["prompt"], ex["rejected"]) for ex in pairs]
    return sum(m > 0 for m in margins) / len(margins), sum(margins) / len(margins)


def _bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)}


def overlap_reward(completions, answer, **_):
    """GRPO's reward: character-bigram F1 of a completion against the document's true continuation
    (graded even for a weak model, so the group advantages are not all zero)."""
    out = []
    for comp, ref in zip(completions, answer):
        a, b = _bigrams(str(comp)), _bigrams(ref)
        common = len(a & b)
        out.append(0.0 if not common else 2 * common / (len(a) + len(b)))
    return out


def reward_model_from(lm):
    """A sequence-classification head on the step model's own backbone (same weights, 1 label)."""
    from transformers import AutoModelForSequenceClassification
    cfg = lm.config.__class__.from_dict(lm.config.to_dict())
    cfg.num_labels, cfg.pad_token_id = 1, lm.config.pad_token_id or lm.config.eos_token_id
    rm = AutoModelForSequenceClassification.from_config(cfg)
    getattr(rm, rm.base_model_prefix).load_state_dict(getattr(lm, lm.base_model_prefix).state_dict())
    return rm


def reward_accuracy(rm, tok, pairs: list[dict]) -> float:
    rm.eval()
    wins = 0
    with torch.no_grad():
        for ex in pairs:
            s = [float(rm(**tok(ex["prompt"] + c, return_tensors="pt")).logits[0, 0]) for c in (ex["chosen"], ex["rejected"])]
            wins += s[0] > s[1]
    return wins / len(pairs)


def train_config(params: TRLParams, workdir, config_cls, seed: int):
    fields = {f.name for f in dataclasses.fields(config_cls)}
    kw = dict(output_dir=str(workdir / "trl"), max_steps=params.steps, learning_rate=params.lr,
              per_device_train_batch_size=params.batch_size, gradient_accumulation_steps=1,
              logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
              seed=seed, dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0)
    if "max_length" in fields:
        kw["max_length"] = params.max_length
    if params.trainer == "grpo":
        kw.update(num_generations=2, max_completion_length=16, generation_batch_size=params.batch_size)
    if params.trainer == "gkd":
        kw.update(max_new_tokens=16)
    kw.update(parse_options(params.options))
    return config_cls(**kw)


class TRLTrain(Runner):
    id = "trl"
    Params = TRLParams
    summary = "SFT and preference optimisation (DPO, KTO, ORPO, CPO/SimPO, GRPO) and reward modelling through TRL"

    def run(self, ctx: StepContext, params: TRLParams) -> StepResult:
        return run_trl(ctx, params, teacher=None, runner_id=self.id)


class TRLDistill(Runner):
    id = "trl-distill"
    Params = TRLParams
    needs_teacher = True
    summary = "on-policy distillation from the plan's teacher through TRL's GKD trainer"

    def run(self, ctx: StepContext, params: TRLParams) -> StepResult:
        if ctx.load_teacher is None:
            raise StepFailed(f"{self.id}: the plan names no teacher")
        teacher, ttok = ctx.load_teacher()
        if len(ttok) != len(ctx.tokenizer) or ttok.get_vocab() != ctx.tokenizer.get_vocab():
            raise StepFailed(f"{self.id}: GKD compares token distributions, so teacher and student need the same tokenizer")
        return run_trl(ctx, params, teacher=teacher, runner_id=self.id)


def run_trl(ctx: StepContext, params: TRLParams, teacher, runner_id: str) -> StepResult:
    module, trainer_name, config_name, kind = TRAINERS[params.trainer]
    if (params.trainer == "gkd") != (teacher is not None):
        raise StepFailed(f"{runner_id}: trainer {params.trainer} runs under "
                         f"{'trl-distill' if params.trainer == 'gkd' else 'trl'}")
    model, tok, notes = ctx.model, ctx.tokenizer, []
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if kind == "messages" and not tok.chat_template:
        tok.chat_template = PLAIN_CHAT_TEMPLATE
        notes.append("the tokenizer has no chat template; conversations are joined by newlines")
    torch.manual_seed(ctx.seed)
    train_ds = dataset(ctx, kind, "train", params.examples, params.max_length)
    eval_pairs = preference_pairs(ctx.corpus, "validation", params.eval_examples)
    metrics: dict[str, float] = {}
    policy = model
    if params.trainer == "reward":
        policy = reward_model_from(model)
    else:
        metrics["pref_acc_before"], metrics["pref_margin_before"] = preference_accuracy(model, tok, eval_pairs)
    extra = {}
    if params.adapter_rank:
        from peft import LoraConfig
        extra["peft_config"] = LoraConfig(r=params.adapter_rank, lora_alpha=2 * params.adapter_rank,
                                          target_modules="all-linear", task_type="SEQ_CLS" if params.trainer == "reward" else "CAUSAL_LM")
    if params.trainer in REFERENCE_TRAINERS and not params.adapter_rank:
        import copy
        extra["ref_model"] = copy.deepcopy(model).eval()  # the frozen reference policy
    if params.trainer == "grpo":
        extra["reward_funcs"] = overlap_reward
    if teacher is not None:
        extra["teacher_model"] = teacher
    config = train_config(params, ctx.workdir, trl_class(module, config_name), ctx.seed)
    with warnings.catch_warnings(), oom_guard(runner_id):
        warnings.simplefilter("ignore")
        try:
            trainer = trl_class(module, trainer_name)(model=policy, args=config, train_dataset=train_ds,
                                                      processing_class=tok, **extra)
        except (ValueError, TypeError) as e:
            raise StepFailed(f"{runner_id}: TRL refused the {params.trainer} setup: {str(e).splitlines()[0]}") from None
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)  # the per-step dicts go to metrics, not stdout
        out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if not losses or not all(map(torch.isfinite, torch.tensor(losses))):
        raise StepFailed(f"{runner_id}: {params.trainer} loss became {losses[-1] if losses else 'undefined'}; lower lr")
    tail = losses[-max(1, len(losses) // 4):]
    metrics.update(first_loss=losses[0], train_loss=sum(tail) / len(tail), wall_s=float(out.metrics["train_runtime"]))
    trained = trainer.model
    if hasattr(trained, "peft_config"):
        trained = trained.merge_and_unload()
    artifacts = {}
    if params.trainer == "reward":
        metrics["reward_acc"] = reward_accuracy(trained, tok, eval_pairs)
        folder = ctx.workdir / "reward_model"
        trained.save_pretrained(folder, safe_serialization=True)
        artifacts["reward_model"] = str(folder)
        notes.append("trained a reward model on the step's backbone (saved as an artifact); the policy is unchanged")
        result_model = model
    else:
        result_model = trained
        metrics["pref_acc_after"], metrics["pref_margin_after"] = preference_accuracy(trained, tok, eval_pairs)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    notes.append(f"TRL {trainer_name}, {params.steps} steps on {len(train_ds)} {kind} examples from the train split, "
                 f"optimizer {type(optimizer).__module__}.{type(optimizer).__name__}; measured on {len(eval_pairs)} validation preference pairs")
    stats = model_stats(result_model)
    metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
    return StepResult(model=result_model.eval(), metrics=metrics, artifacts=artifacts, notes=notes)
