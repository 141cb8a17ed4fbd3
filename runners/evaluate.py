"""evaluate: perplexity on the whole validation split (or a declared fixed slice of it) with its
spread across contiguous slices, serialised size, parameters, sparsity, prefill and decode
latency, and peak inference memory, under stable metric names."""

from __future__ import annotations

import math
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepResult
from runners.models import model_stats
from runners.training import base_model, oom_guard


N_SLICES = 4  # contiguous parts of the scored text whose perplexities give the spread


@dataclass(frozen=True)
class PerplexityReport:
    """Perplexity on a named slice of a split, with the perplexity of each contiguous part of it.

    `slice` names the tokens scored, e.g. "validation[0:7190] (whole split)"; `parts` are the
    perplexities of N_SLICES contiguous parts of those tokens: their range is the spread a
    figure on this slice carries."""

    ppl: float
    slice: str
    tokens: int
    parts: tuple[float, ...]
    part_nll: tuple[tuple[float, int], ...]  # (summed NLL, predicted tokens) per part

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.parts), max(self.parts)

    def ratio(self, base: "PerplexityReport") -> tuple[float, float, float]:
        """(ratio, lowest, highest) of this perplexity over base's, part by part."""
        if self.slice != base.slice:
            raise ValueError(f"ratio across different slices: {self.slice} vs {base.slice}")
        parts = [a / b for a, b in zip(self.parts, base.parts)]
        return self.ppl / base.ppl, min(parts), max(parts)

    def describe(self) -> str:
        lo, hi = self.spread
        return f"ppl {self.ppl:.2f} on {self.slice}, {len(self.parts)} parts {lo:.2f}-{hi:.2f}"


def slice_name(corpus, split: str, seq_len: int, n_blocks: int | None) -> tuple[str, int]:
    """The name and token count of what perplexity scores: `n_blocks` None means the whole split."""
    total = len(corpus.streams[split])
    if n_blocks is None:
        return f"{split}[0:{total}] (whole split)", total
    k = len(corpus.blocks(split, seq_len, n_blocks))
    end = min(total, k * seq_len)
    return f"{split}[0:{end}] ({k}x{min(seq_len, end)})", end


@torch.no_grad()
def perplexity_report(model, corpus, seq_len: int = 256, n_blocks: int | None = None, batch_size: int = 4,
                      split: str = "validation", n_slices: int = N_SLICES,
                      decode_cache=None) -> PerplexityReport:
    """exp(mean next-token NLL) over the whole split (n_blocks None: every full block of seq_len
    tokens plus the shorter rest) or over its first n_blocks blocks, with per-part perplexities.

    With `decode_cache` (a callable returning a fresh transformers cache), each block is decoded
    one token at a time through that cache, as generation reads it: the figure of a KV-cache
    method (a quantized cache) is then on the same tokens as the plain one."""
    model.eval()
    name, _ = slice_name(corpus, split, seq_len, n_blocks)
    stream = corpus.streams[split]
    if n_blocks is None:
        k = len(stream) // seq_len
        pieces = ([stream[: k * seq_len].view(k, seq_len)] if k else []) + \
                 ([stream[k * seq_len:][None]] if len(stream) - k * seq_len >= 2 else [])
    else:
        pieces = [corpus.blocks(split, seq_len, n_blocks)]
    per_block: list[tuple[float, int]] = []
    for blocks in pieces:
        for i in range(0, len(blocks), batch_size):
            ids = blocks[i: i + batch_size]
            logits = (model(input_ids=ids).logits if decode_cache is None
                      else _decoded_logits(model, ids, decode_cache))[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").sum(-1)
            per_block += [(float(v), ids.shape[1] - 1) for v in nll]
    n = max(1, min(n_slices, len(per_block)))
    bounds = [round(j * len(per_block) / n) for j in range(n + 1)]
    groups = [per_block[a:b] for a, b in zip(bounds, bounds[1:])]
    part_nll = tuple((sum(v for v, _ in g), sum(c for _, c in g)) for g in groups)
    total_nll, count = sum(v for v, _ in part_nll), sum(c for _, c in part_nll)
    return PerplexityReport(ppl=math.exp(total_nll / count), slice=name, tokens=count + len(per_block),
                            parts=tuple(math.exp(v / c) for v, c in part_nll), part_nll=part_nll)


DECODE_PREFILL = 16  # tokens of a block read in one call before decoding, as a prompt is


@torch.no_grad()
def _decoded_logits(model, ids: torch.Tensor, make_cache) -> torch.Tensor:
    """Logits of each row of `ids` through a fresh cache per row: its first DECODE_PREFILL tokens
    in one call (a prompt), then one token at a time, as generation reads the cache. (A quantized
    cache quantizes its first update whole; one token of a small model can be narrower than a
    quantization group.)"""
    rows = []
    for row in ids:
        cache = make_cache()
        out = model(input_ids=row[None, :DECODE_PREFILL], cache=cache, use_cache=True)
        cache, steps = out.cache, [out.logits[0]]
        for t in range(DECODE_PREFILL, row.shape[0]):
            out = model(input_ids=row[None, t: t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits[0, -1:])
        rows.append(torch.cat(steps))
    return torch.stack(rows)


def perplexity(model, corpus, seq_len: int = 256, n_blocks: int | None = None, batch_size: int = 4,
               split: str = "validation") -> float:
    """The perplexity figure of perplexity_report (the whole split unless n_blocks is given)."""
    return perplexity_report(model, corpus, seq_len, n_blocks, batch_size, split).ppl


def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


class _PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond.

    Linux's VmHWM cannot be read relative to a point in time without resetting it for the whole
    process, so a sampler thread is used instead; it may miss spikes shorter than ~1 ms.
    """

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.base)


def _in_memory_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    for m in model.modules():  # dynamic-int8 weights live in packed params, not parameters
        w = getattr(m, "weight", None)
        if callable(w) and "quantized" in type(m).__module__:
            total += w().numel()
    return total


@torch.no_grad()
def latency(model, vocab: int, prompt_len: int, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median prefill ms for prompt_len tokens and mean ms per greedily decoded token (KV cache),
    after one untimed warm-up run: packed weights build their kernels at first use, which would
    otherwise be timed as the step's latency."""
    model.eval()
    ids = torch.randint(0, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    prefill, decode = [], []
    with _PeakRss() as peak:
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            prefill.append(time.perf_counter() - t0)
            past, nxt = out.cache, out.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=nxt, cache=past, use_cache=True)
                past, nxt = out.cache, out.logits[:, -1:].argmax(-1)
            decode.append((time.perf_counter() - t0) / max(1, new_tokens))
            if r == 0:  # the warm-up run
                prefill.clear()
                decode.clear()
    return {"prefill_ms": 1000 * statistics.median(prefill),
            "decode_ms_per_token": 1000 * statistics.median(decode),
            "peak_memory_mb": (_in_memory_bytes(model) + peak.delta) / 1e6}


def serialised_mb(model, tokenizer, workdir: Path) -> float:
    """Write the checkpoint and measure its weight files (model + adapter) on disk."""
    from runners.checkpoint import save_checkpoint
    folder = Path(workdir) / ".size-probe"
    save_checkpoint(model, tokenizer, folder)
    try:
        return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class EvaluateParams(RunnerParams):
    seq_len: int = Field(256, ge=8, le=8192, description="tokens per perplexity block")
    ppl_blocks: int | None = Field(None, ge=1, le=1024, description="validation blocks for perplexity; "
                                   "null scores the whole validation split")
    batch_size: int = Field(4, ge=1, le=256)
    prompt_len: int = Field(64, ge=1, le=8192, description="prefill length for latency")
    decode_tokens: int = Field(16, ge=1, le=1024, description="greedy tokens for decode latency")
    repeats: int = Field(3, ge=1, le=50)
    latency: bool = Field(True, description="measure prefill/decode latency and peak memory")
    serialise: bool = Field(True, description="write the checkpoint to measure size on disk")


class Evaluate(Runner):
    id = "evaluate"
    Params = EvaluateParams
    summary = "perplexity, size, params, sparsity, latency and peak memory of the current model"

    def run(self, ctx: StepContext, params: EvaluateParams) -> StepResult:
        torch.manual_seed(ctx.seed)
        model = ctx.model
        stats = model_stats(model)
        metrics = {k: stats[k] for k in ("params", "sparsity", "bits_per_weight", "size_mb")}
        notes = []
        with oom_guard("evaluate"):
            ctx.progress(0, 3)
            rep = perplexity_report(model, ctx.corpus, params.seq_len, params.ppl_blocks, params.batch_size)
            lo, hi = rep.spread
            metrics.update(ppl=rep.ppl, ppl_low=lo, ppl_high=hi, ppl_tokens=float(rep.tokens))
            notes.append(f"perplexity on {rep.slice}; ppl_low/ppl_high: lowest and highest of "
                         f"{len(rep.parts)} contiguous parts")
            ctx.progress(1, 3)
            if params.latency:
                vocab = min(len(ctx.tokenizer), base_model(model).config.vocab_size)
                metrics.update(latency(model, vocab, params.prompt_len, params.decode_tokens, params.repeats))
                notes.append(f"latency on {torch.get_num_threads()} CPU threads; peak_memory_mb = "
                             "weights in memory + sampled RSS rise during inference")
            ctx.progress(2, 3)
            if params.serialise:
                metrics["size_mb"] = serialised_mb(model, ctx.tokenizer, ctx.workdir)
            ctx.progress(3, 3)
        return StepResult(model=model, metrics=metrics, notes=notes)
