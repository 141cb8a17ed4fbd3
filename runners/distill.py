"""Distillation runners: logit distillation (same vocabulary) and sequence-level distillation
(teacher-generated text, any tokenizers)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.data import eos_ids
from runners.training import base_model, oom_guard, set_seed, train


def _teacher(ctx: StepContext, what: str):
    if ctx.load_teacher is None:
        raise StepFailed(f"{what}: needs a teacher model; set the plan's teacher")
    teacher, t_tok = ctx.load_teacher()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, t_tok


def vocab_mismatch(teacher, t_tok, student, s_tok) -> str | None:
    """Why the teacher's logits cannot be compared with the student's, or None."""
    tv, sv = base_model(teacher).config.vocab_size, base_model(student).config.vocab_size
    if tv != sv:
        return f"output vocabularies differ (teacher {tv}, student {sv})"
    if t_tok is not None and s_tok is not None:
        ta, sa = t_tok.get_vocab(), s_tok.get_vocab()
        if ta != sa:
            differ = sum(1 for k, v in sa.items() if ta.get(k) != v)
            return f"tokenizers differ ({differ} of {len(sa)} student tokens map to other ids)"
    return None


def kd_loss(s_logits, t_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * next-token cross-entropy."""
    s, t = s_logits[:, :-1].float(), t_logits[:, :-1].float()
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                  log_target=True, reduction="none").sum(-1).mean()
    loss = alpha * temperature**2 * kl
    if alpha < 1:
        ce = F.cross_entropy(s.reshape(-1, s.shape[-1]), labels[:, 1:].reshape(-1))
        loss = loss + (1 - alpha) * ce
    return loss


@torch.no_grad()
def mean_kl(student, teacher, ids: torch.Tensor) -> float:
    """KL(teacher || student) per token at temperature 1 on fixed ids."""
    return float(kd_loss(student(input_ids=ids).logits, teacher(input_ids=ids).logits, ids, 1.0, 1.0))


class LogitParams(RunnerParams):
    steps: int = Field(60, ge=1, le=1_000_000)
    lr: float = Field(5e-4, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    temperature: float = Field(2.0, gt=0, le=100.0, description="softening of both distributions")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KL term (rest: cross-entropy)")
    keep_sparsity: bool = Field(True, description="pruned (zero) weights stay zero")


class LogitDistill(Runner):
    id = "logit-distill"
    Params = LogitParams
    needs_teacher = True
    summary = "train the student on the teacher's softened next-token distribution (same vocabulary)"

    def run(self, ctx: StepContext, params: LogitParams) -> StepResult:
        teacher, t_tok = _teacher(ctx, self.id)
        student = ctx.model
        why = vocab_mismatch(teacher, t_tok, student, ctx.tokenizer)
        if why:
            raise StepFailed(f"{self.id}: {why}; logit distillation needs one shared vocabulary. "
                             "Use sequence-distill, which trains on teacher-generated text and works across tokenizers")
        gen = set_seed(ctx.seed)
        probe = ctx.corpus.blocks("validation", params.seq_len, 2)
        with oom_guard(self.id):
            kl_start = mean_kl(student, teacher, probe)
        for p in student.parameters():
            p.requires_grad_(True)

        def loss(step):
            ids = ctx.corpus.sample("train", params.seq_len, params.batch_size, gen)
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits
            return kd_loss(student(input_ids=ids).logits, t_logits, ids, params.temperature, params.alpha)

        metrics = train(student, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=params.keep_sparsity)
        with oom_guard(self.id):
            metrics.update(kl_start=kl_start, kl_end=mean_kl(student, teacher, probe))
        return StepResult(model=student, metrics=metrics,
                          notes=[f"validation KL(teacher||student) {kl_start:.3f} -> {metrics['kl_end']:.3f}"])


class SequenceParams(RunnerParams):
    prompts: int = Field(16, ge=1, le=100_000, description="corpus prompts the teacher continues")
    prompt_tokens: int = Field(24, ge=1, le=4096)
    new_tokens: int = Field(48, ge=1, le=4096, description="tokens the teacher generates per prompt")
    sample_temperature: float = Field(0.0, ge=0.0, le=10.0, description="0: greedy")
    steps: int = Field(40, ge=1, le=1_000_000)
    lr: float = Field(5e-4, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(64, ge=8, le=32768)
    keep_sparsity: bool = Field(True, description="pruned (zero) weights stay zero")


class SequenceDistill(Runner):
    id = "sequence-distill"
    Params = SequenceParams
    needs_teacher = True
    summary = "the teacher writes continuations of corpus prompts; the student trains on that text (any tokenizers)"

    def run(self, ctx: StepContext, params: SequenceParams) -> StepResult:
        teacher, t_tok = _teacher(ctx, self.id)
        if t_tok is None:
            raise StepFailed(f"{self.id}: the teacher has no tokenizer to generate text with")
        gen = set_seed(ctx.seed)
        start = time.perf_counter()
        texts = []
        prompts = ctx.corpus.prompts("train", params.prompts, params.prompt_tokens)
        pad = t_tok.pad_token_id if t_tok.pad_token_id is not None else t_tok.eos_token_id
        with oom_guard(self.id), torch.no_grad():
            for i, prompt in enumerate(prompts):
                ids = t_tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
                out = teacher.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=params.new_tokens, do_sample=params.sample_temperature > 0,
                                       temperature=params.sample_temperature or None, top_p=None, top_k=None,
                                       pad_token_id=pad)
                texts.append(t_tok.decode(out[0], skip_special_tokens=True))
                ctx.progress(i + 1, len(prompts))
        s_tok = ctx.tokenizer
        stream: list[int] = []
        for text in texts:
            stream += s_tok(text, add_special_tokens=False)["input_ids"] + eos_ids(s_tok)
        data = torch.tensor(stream, dtype=torch.long)
        seq_len = min(params.seq_len, len(data) - 1)
        if seq_len < 2:
            raise StepFailed(f"{self.id}: the teacher produced no usable text")
        gen_s = time.perf_counter() - start
        student = ctx.model
        for p in student.parameters():
            p.requires_grad_(True)

        def loss(step):
            starts = torch.randint(0, len(data) - seq_len, (params.batch_size,), generator=gen)
            ids = torch.stack([data[s: s + seq_len] for s in starts.tolist()])
            return student(input_ids=ids, labels=ids).loss

        metrics = train(student, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=params.keep_sparsity)
        metrics["wall_s"] += gen_s
        return StepResult(model=student, metrics=metrics,
                          notes=[f"teacher wrote {len(texts)} continuations ({len(data)} student tokens) "
                                 f"in {gen_s:.1f} s"])
