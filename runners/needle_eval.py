"""Needle in a haystack: hide a fact at several depths of held-out filler text and ask for it.

The filler is validation text; the needle is "The secret number is N." with a random 4-digit N.
Two figures per depth: whether greedy decoding after the question returns N (retrieval
accuracy), and how many nats more likely N becomes because the needle is in the context (the
log-probability of N with the needle minus without it), which still moves for models too small
to retrieve exactly.
"""

from __future__ import annotations

import random

import torch
from pydantic import Field, field_validator

from runners.base import Runner, RunnerParams, StepContext, StepResult


class NeedleParams(RunnerParams):
    context: int = Field(256, ge=32, le=131072, description="haystack length in tokens")
    depths: str = Field("0.1, 0.5, 0.9", description="comma-separated needle positions (0: start, 1: end)")
    trials: int = Field(4, ge=1, le=1000)

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: str) -> str:
        try:
            ds = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"depths: {v!r} is not a comma-separated list of numbers") from None
        if not ds or not all(0 <= d <= 1 for d in ds):
            raise ValueError("depths: give numbers between 0 and 1")
        return v


def _logprob(model, ids: list[int], target: list[int]) -> float:
    x = torch.tensor([ids + target])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0, len(ids) - 1:-1].float(), -1)
    return float(logp.gather(1, torch.tensor(target)[:, None]).sum())


class NeedleEval(Runner):
    id = "needle-eval"
    Params = NeedleParams
    summary = "retrieve a fact hidden at several depths of a long held-out context"

    def run(self, ctx: StepContext, params: NeedleParams) -> StepResult:
        model, tok = ctx.model, ctx.tokenizer
        model.eval()
        enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        stream = ctx.corpus.streams["validation"].tolist()
        rng = random.Random(ctx.seed)
        question = enc(" What is the secret number? The secret number is")
        depths = [float(x) for x in params.depths.split(",") if x.strip()]
        metrics, hits_all, gains_all = {}, [], []
        for d in depths:
            hits, gains = [], []
            for _ in range(params.trials):
                n = str(rng.randint(1000, 9999))
                needle, answer = enc(f" The secret number is {n}."), enc(f" {n}")
                start = rng.randint(0, max(0, len(stream) - params.context))
                hay = stream[start:start + params.context - len(needle) - len(question)]
                at = int(d * len(hay))
                with_needle = hay[:at] + needle + hay[at:] + question
                gains.append(_logprob(model, with_needle, answer) - _logprob(model, hay + question, answer))
                with torch.no_grad():
                    x = torch.tensor([with_needle])
                    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                         max_new_tokens=len(answer), pad_token_id=model.config.eos_token_id)
                hits.append(tok.decode(out[0, x.shape[1]:]).strip().startswith(n))
            metrics[f"retrieval_acc@{d:g}"] = sum(hits) / len(hits)
            metrics[f"logprob_gain@{d:g}"] = sum(gains) / len(gains)
            hits_all += hits
            gains_all += gains
        metrics["retrieval_acc"] = sum(hits_all) / len(hits_all)
        metrics["logprob_gain"] = sum(gains_all) / len(gains_all)
        notes = [f"{params.context}-token haystacks of validation text, needle at depths {depths}: retrieval "
                 f"{metrics['retrieval_acc']:.0%}, the needle raises log p(answer) by {metrics['logprob_gain']:.2f} nats"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
