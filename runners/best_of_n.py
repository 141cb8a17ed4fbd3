"""Best-of-N sampling: draw N continuations per prompt and keep the one a verifier scores best.

The verifier is reference-based: character-bigram F1 against the validation document's true
continuation (runners/alignment.py:overlap_reward), so the gain of N samples over one is measured,
not assumed. Prompts come from the validation split, decontaminated (runners/preference_data.py).
"""

from __future__ import annotations

import time

import torch
from pydantic import Field

from runners.alignment import overlap_reward
from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.preference_data import continuations


class BestOfNParams(RunnerParams):
    n: int = Field(4, ge=1, le=256, description="samples per prompt")
    prompts: int = Field(8, ge=1, le=10_000)
    new_tokens: int = Field(16, ge=1, le=4096)
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(0.95, gt=0, le=1)


class BestOfN(Runner):
    id = "best-of-n"
    Params = BestOfNParams
    summary = "sample N continuations and keep the verifier's best; reports the gain over one sample"

    def run(self, ctx: StepContext, params: BestOfNParams) -> StepResult:
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        model.eval()
        tok = ctx.tokenizer
        pairs = continuations(ctx.corpus, "validation", params.prompts)
        if not pairs:
            raise StepFailed(f"{self.id}: the validation split has no prompts")
        torch.manual_seed(ctx.seed)
        first, best, t0 = [], [], time.perf_counter()
        with torch.no_grad():
            for prompt, answer in pairs:
                ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=params.temperature, top_p=params.top_p,
                                     num_return_sequences=params.n, max_new_tokens=params.new_tokens,
                                     pad_token_id=model.config.eos_token_id)
                texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
                scores = overlap_reward(texts, [answer] * len(texts))
                first.append(scores[0])
                best.append(max(scores))
        wall = time.perf_counter() - t0
        metrics = {"reward_one_sample": sum(first) / len(first), "reward_best_of_n": sum(best) / len(best),
                   "n": float(params.n), "wall_s": wall, "samples_per_s": len(pairs) * params.n / wall}
        metrics["reward_gain"] = metrics["reward_best_of_n"] - metrics["reward_one_sample"]
        notes = [f"best of {params.n} on {len(pairs)} validation prompts: verifier score "
                 f"{metrics['reward_one_sample']:.3f} -> {metrics['reward_best_of_n']:.3f} at {params.n}x the sampling cost"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
