"""On-device profiling: prefill and decode latency and memory at several context lengths, and
where the time goes (torch.profiler's operator table), on the machine the step runs on."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from runners.base import Runner, RunnerParams, StepContext, StepResult


class ProfileParams(RunnerParams):
    contexts: str = Field("64, 256", description="comma-separated prompt lengths")
    new_tokens: int = Field(16, ge=1, le=4096)
    repeats: int = Field(2, ge=1, le=100)
    top_ops: int = Field(5, ge=1, le=50)

    @field_validator("contexts")
    @classmethod
    def _lengths(cls, v: str) -> str:
        try:
            lengths = [int(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"contexts: {v!r} is not a comma-separated list of integers") from None
        if not lengths or min(lengths) < 1:
            raise ValueError("contexts: give at least one positive prompt length")
        return v


def op_table(model, vocab: int, length: int, top: int) -> list[tuple[str, float]]:
    """(operator, share of self CPU time) of one prefill of `length` tokens."""
    from torch.profiler import ProfilerActivity, profile
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(input_ids=ids)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [(e.key, e.self_cpu_time_total / total) for e in ranked]


class Profile(Runner):
    id = "profile"
    Params = ProfileParams
    summary = "latency and memory per context length on this device, with the operator time table"

    def run(self, ctx: StepContext, params: ProfileParams) -> StepResult:
        from runners.evaluate import latency
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        vocab = model.config.vocab_size
        lengths = [int(x) for x in params.contexts.split(",") if x.strip()]
        metrics, notes = {}, []
        for n in lengths:
            with torch.no_grad():
                lat = latency(model, vocab, n, params.new_tokens, params.repeats)
            metrics.update({f"{k}@{n}": v for k, v in lat.items()})
        ops = op_table(model, vocab, lengths[-1], params.top_ops)
        metrics.update({f"op_share.{name}": share for name, share in ops})
        notes.append(f"threads {torch.get_num_threads()}; prefill of {lengths[-1]} tokens spends "
                     + ", ".join(f"{share:.0%} in {name}" for name, share in ops))
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
