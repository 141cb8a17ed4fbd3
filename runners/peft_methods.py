"""One runner for every parameter-efficient method that PEFT implements, parametrised by KB data.

A KB method names the PEFT adapter type (`adapter: loha`, `adapter: prompt_tuning`, ...) and, in
`options`, the PEFT config fields that make it what it is (`use_dora=true`, `use_rslora=true`,
`init_lora_weights=pissa`). The runner maps the generic knobs (rank, alpha, targets, virtual
tokens, steps) onto whichever of PEFT's config fields the adapter type has, trains with the shared
loop, and merges the adapter into the weights when the method allows it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Literal

import torch
from pydantic import Field, model_validator

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.finetune import _batches, adapter_targets
from runners.models import model_stats
from runners.training import set_seed, train

# The adapter types this runner is tested with (tests/runners/test_peft_methods.py).
Adapter = Literal["lora", "loha", "lokr", "ia3", "adalora", "vera", "boft", "oft", "hra", "fourierft",
                  "ln_tuning", "randlora", "prompt_tuning", "prefix_tuning", "p_tuning"]
PROMPT_LEARNING = {"prompt_tuning", "prefix_tuning", "p_tuning"}


def _top_level_items(text: str) -> list[str]:
    """Split on commas outside brackets, so values may be YAML lists or mappings."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [i.strip() for i in items + [cur] if i.strip()]


def parse_options(text: str) -> dict[str, object]:
    """'use_dora=true, loftq_config={loftq_bits: 4, loftq_iter: 1}' -> a dict of PEFT/TRL config values."""
    import yaml
    out: dict[str, object] = {}
    for item in _top_level_items(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


def config_class(adapter: str):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    return PEFT_TYPE_TO_CONFIG_MAPPING[adapter.upper()]


class PeftParams(RunnerParams):
    adapter: Adapter = Field("lora", description="PEFT adapter type")
    options: str = Field("", description="extra PEFT config fields, 'key=value, key=value'")
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0, le=4096)
    targets: Literal["attention", "attention+mlp"] = Field("attention", description="which block linears get adapters")
    virtual_tokens: int = Field(8, ge=1, le=1024, description="soft-prompt length (prompt and prefix tuning)")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    merge: bool = Field(True, description="fold the adapter into the weights where the method allows")

    @model_validator(mode="after")
    def _options_are_config_fields(self) -> "PeftParams":
        from slmrec.errors import did_you_mean
        opts = parse_options(self.options)
        fields = {f.name for f in dataclasses.fields(config_class(self.adapter))}
        for key in opts:
            if key not in fields:
                raise ValueError(f"options: {key!r} is not a field of PEFT's {self.adapter} config"
                                 f"{did_you_mean(key, fields)}")
        return self


def peft_config(params: PeftParams, targets: list[str], mlp: list[str]):
    """PEFT config of the adapter type: generic knobs onto the fields that type has, then options."""
    cls = config_class(params.adapter)
    fields = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, object] = {"task_type": "CAUSAL_LM"}
    generic = {"r": params.rank, "lora_alpha": params.alpha, "alpha": params.alpha,
               "num_virtual_tokens": params.virtual_tokens, "total_step": params.steps,
               "target_r": params.rank, "init_r": math.ceil(1.5 * params.rank)}
    kw.update({k: v for k, v in generic.items() if k in fields})
    if "target_modules" in fields and params.adapter not in PROMPT_LEARNING:
        kw["target_modules"] = targets
        if "feedforward_modules" in fields:
            kw["feedforward_modules"] = [n for n in targets if n in mlp]
    if params.adapter == "ln_tuning":
        kw["target_modules"] = ["norm"]
    kw.update(parse_options(params.options))
    return cls(**kw)


def validation_loss(model, ctx: StepContext, seq_len: int, n: int = 4) -> float:
    """Mean next-token loss on the first validation blocks, through the (peft) model's own forward."""
    ids = ctx.corpus.blocks("validation", seq_len, n)
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


class PeftAdapter(Runner):
    id = "peft"
    Params = PeftParams
    summary = "any PEFT adapter (LoRA variants, LoHa, LoKr, IA3, AdaLoRA, VeRA, soft prompts) trained with the base frozen"

    def run(self, ctx: StepContext, params: PeftParams) -> StepResult:
        from peft import get_peft_model
        model, names, notes = adapter_targets(ctx.model, self.id, params.targets)
        mlp = [n for n in names if "mlp" in n or "feed_forward" in n]
        gen = set_seed(ctx.seed)
        try:
            cfg = peft_config(params, names, mlp)
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.filterwarnings("ignore", category=UserWarning)
                model = get_peft_model(model, cfg)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise StepFailed(f"{self.id}: PEFT refused the {params.adapter} config: {str(e).splitlines()[0]}") from None
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        before = validation_loss(model, ctx, params.seq_len)
        batch, source = _batches(ctx, params.seq_len, params.batch_size, gen)
        allocate = getattr(model.base_model, "update_and_allocate", None)  # AdaLoRA's rank budget

        def loss(step):
            if allocate is not None and step > 0:
                allocate(step - 1)  # the previous step's gradients are still in place here
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=False)
        after = validation_loss(model, ctx, params.seq_len)
        metrics.update(trainable_params=float(trainable), trainable_fraction=trainable / total,
                       val_loss_before=before, val_loss_after=after)
        notes.append(f"{params.adapter} ({cfg.peft_type.value}) on "
                     f"{'soft prompts' if params.adapter in PROMPT_LEARNING else f'{len(names)} linears'}, "
                     f"{trainable / total:.2%} trainable, data: {source}")
        if params.merge and params.adapter not in PROMPT_LEARNING:
            try:
                model = model.merge_and_unload()
            except (AttributeError, NotImplementedError, ValueError) as e:
                notes.append(f"{params.adapter} cannot be merged ({str(e).splitlines()[0]}); kept separate")
        elif params.merge:
            notes.append(f"{params.adapter} learns virtual tokens, which cannot be merged into weights; kept separate")
        stats = model_stats(model)
        metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
        return StepResult(model=model.eval(), metrics=metrics, notes=notes)
