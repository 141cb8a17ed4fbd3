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


def sample_best(model, tok, pairs, params, seed: int):
    """For each (prompt, reference): N sampled completions, the first one's and the best one's
    verifier score, and the best completion's text."""
    torch.manual_seed(seed)
    first, best, texts_best = [], [], []
    with torch.no_grad():
        for prompt, answer in pairs:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=params.temperature, top_p=params.top_p,
                                 num_return_sequences=params.n, max_new_tokens=params.new_tokens,
                                 pad_token_id=model.config.eos_token_id)
            texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
            scores = overlap_reward(texts, [answer] * len(texts))
            k = max(range(len(scores)), key=scores.__getitem__)
            first.append(scores[0])
            best.append(scores[k])
            texts_best.append(texts[k])
    return first, best, texts_best


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
        t0 = time.perf_counter()
        first, best, _ = sample_best(model, tok, pairs, params, ctx.seed)
        wall = time.perf_counter() - t0
        metrics = {"reward_one_sample": sum(first) / len(first), "reward_best_of_n": sum(best) / len(best),
                   "n": float(params.n), "wall_s": wall, "samples_per_s": len(pairs) * params.n / wall}
        metrics["reward_gain"] = metrics["reward_best_of_n"] - metrics["reward_one_sample"]
        notes = [f"best of {params.n} on {len(pairs)} validation prompts: verifier score "
                 f"{metrics['reward_one_sample']:.3f} -> {metrics['reward_best_of_n']:.3f} at {params.n}x the sampling cost"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class RFTParams(BestOfNParams):
    prompts: int = Field(32, ge=1, le=1_000_000, description="train-split prompts sampled")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(5e-5, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)


class RejectionSamplingFT(Runner):
    id = "rejection-sampling-ft"
    Params = RFTParams
    summary = "sample N completions per train prompt, keep the verifier's best, fine-tune on them"

    def run(self, ctx: StepContext, params: RFTParams) -> StepResult:
        from runners.training import set_seed, train
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        tok = ctx.tokenizer
        pairs = continuations(ctx.corpus, "train", params.prompts)
        if not pairs:
            raise StepFailed(f"{self.id}: the train split has no prompts")
        _, best, kept = sample_best(model.eval(), tok, pairs, params, ctx.seed)
        rows, pad = [], tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        for (prompt, _), completion in zip(pairs, kept):
            p, c = tok(prompt, add_special_tokens=False)["input_ids"], tok(completion, add_special_tokens=False)["input_ids"]
            rows.append((p + c, [-100] * len(p) + c))
        width = max(len(r[0]) for r in rows)
        ids = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows])
        labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
        gen = set_seed(ctx.seed)
        for p in model.parameters():
            p.requires_grad_(True)

        def loss(step):
            idx = torch.randint(0, len(ids), (params.batch_size,), generator=gen)
            return model(input_ids=ids[idx], labels=labels[idx]).loss

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=True)
        for p in model.parameters():
            p.requires_grad_(False)
        metrics.update(kept_examples=float(len(rows)), kept_reward_mean=sum(best) / len(best))
        notes = [f"kept the best of {params.n} samples for {len(rows)} train prompts (verifier score "
                 f"{metrics['kept_reward_mean']:.3f}) and fine-tuned {params.steps} steps on them"]
        return StepResult(model=model.eval(), metrics=metrics, notes=notes)
