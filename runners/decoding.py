"""Decoding-time methods, measured against plain greedy decoding of the same model in the same run.

None of them changes the weights: each runner returns the step's model and reports what the method
does to decoding on validation prompts (time ratio, and whether the greedy output stays the same).
KV-cache quantization uses transformers' quantized cache with the HQQ backend (optimum-quanto's
backend compiles a C++ extension on first use, minutes on this CPU; see docs/library-runners.md),
speculative decoding uses transformers' assisted generation with a draft made from the model
itself by dropping layers (so the tokenizer matches), prompt caching reuses the key/value cache of
a shared prefix, and torch.compile compiles the forward pass.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Literal

import torch
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult


class DecodeParams(RunnerParams):
    prompts: int = Field(4, ge=1, le=1000, description="validation prompts decoded")
    prompt_tokens: int = Field(32, ge=1, le=8192)
    new_tokens: int = Field(32, ge=1, le=8192)


def _plain(model):
    return model.merge_and_unload() if hasattr(model, "peft_config") else model


def prompt_ids(ctx: StepContext, params: DecodeParams) -> list[torch.Tensor]:
    blocks = ctx.corpus.blocks("validation", params.prompt_tokens, params.prompts)
    return [b[None, :] for b in blocks]


def greedy(model, ids_list, new_tokens: int, **kw) -> tuple[list[torch.Tensor], float]:
    """Greedy continuations of each prompt (one at a time) and the total wall time."""
    outs, start = [], time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ids in ids_list:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=model.config.eos_token_id, **kw)
            outs.append(out[0, ids.shape[1]:])
    return outs, time.perf_counter() - start


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Share of generated tokens that agree position by position."""
    same = sum(int((x[: len(y)] == y[: len(x)]).sum()) for x, y in zip(a, b))
    return same / max(1, sum(max(len(x), len(y)) for x, y in zip(a, b)))


def compared(ctx, params, kw_method, model=None) -> tuple[dict[str, float], list, list]:
    model = model or _plain(ctx.model).eval()
    ids = prompt_ids(ctx, params)
    greedy(model, ids[:1], 2)  # warm-up, so neither side pays first-call costs
    base, t_base = greedy(model, ids, params.new_tokens)
    got, t_method = greedy(model, ids, params.new_tokens, **kw_method)
    n = sum(len(x) for x in base)
    return ({"tokens_per_s_plain": n / t_base, "tokens_per_s_method": n / t_method, "speedup": t_base / t_method,
             "greedy_agreement": agreement(base, got)}, base, got)


class KVParams(DecodeParams):
    kv_bits: Literal[2, 4, 8] = Field(4, description="bits per cached key/value element")
    group_size: int = Field(64, ge=8, le=1024)
    residual_length: int = Field(16, ge=0, le=8192, description="most recent tokens kept unquantized")
    ppl_seq_len: int = Field(128, ge=8, le=8192, description="tokens per validation block decoded through the cache")
    ppl_blocks: int = Field(2, ge=1, le=1000, description="validation blocks decoded through the cache")


class KVCacheQuant(Runner):
    id = "kv-cache-quant"
    Params = KVParams
    summary = "decode with a quantized key/value cache (transformers QuantizedCache, HQQ backend)"

    def run(self, ctx: StepContext, params: KVParams) -> StepResult:
        cfg = {"backend": "hqq", "nbits": params.kv_bits, "q_group_size": params.group_size,
               "residual_length": params.residual_length}
        try:
            metrics, _, _ = compared(ctx, params, {"cache_implementation": "quantized", "cache_config": cfg})
        except ImportError as e:
            raise StepFailed(f"{self.id}: the HQQ backend is missing ({e}); pip install hqq") from None
        # the probe scores full forwards, which never read the cache: score the cache itself
        from transformers import DynamicCache
        from transformers.cache_utils import QuantizedCache

        from runners.evaluate import perplexity_report
        model, c = _plain(ctx.model).eval(), ctx.model.config
        kv = {"nbits": params.kv_bits, "q_group_size": params.group_size,
              "residual_length": params.residual_length}
        plain = perplexity_report(model, ctx.corpus, seq_len=params.ppl_seq_len, n_blocks=params.ppl_blocks,
                                  decode_cache=lambda: DynamicCache(config=c))
        quant = perplexity_report(model, ctx.corpus, seq_len=params.ppl_seq_len, n_blocks=params.ppl_blocks,
                                  decode_cache=lambda: QuantizedCache(backend="hqq", config=c, **kv))
        metrics.update(decoded_ppl_plain_cache=plain.ppl, decoded_ppl_quantized_cache=quant.ppl,
                       decoded_ppl_change_pct=100 * (quant.ppl / plain.ppl - 1))
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        per_token = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) * head_dim
        metrics.update(kv_bits=float(params.kv_bits), kv_bytes_per_token_fp=per_token * 4.0,
                       kv_bytes_per_token_quant=per_token * params.kv_bits / 8)
        notes = [f"{params.kv_bits}-bit HQQ key/value cache (last {params.residual_length} tokens unquantized): "
                 f"{metrics['greedy_agreement']:.0%} of greedy tokens unchanged, {metrics['speedup']:.2f}x plain speed; "
                 f"perplexity decoded through the cache on {plain.slice}: {plain.ppl:.2f} plain -> {quant.ppl:.2f} "
                 f"({metrics['decoded_ppl_change_pct']:+.1f}%; the probe's figure does not read the cache)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class SpecParams(DecodeParams):
    draft_fraction: float = Field(0.5, gt=0, lt=1, description="fraction of the model's layers the draft keeps (about its share of the non-embedding parameters)")
    draft_tokens: int = Field(4, ge=1, le=64, description="tokens the draft proposes per step")


def layer_dropped_draft(model, keep_fraction: float):
    """A draft sharing the model's tokenizer: a copy keeping evenly spaced decoder layers."""
    from runners.prune import decoder_layers
    draft = copy.deepcopy(model)
    owner, attr = decoder_layers(draft)
    layers = getattr(owner, attr)
    n = len(layers)
    keep = max(1, round(n * keep_fraction))
    idx = sorted({round(i * (n - 1) / max(1, keep - 1)) for i in range(keep)}) if keep > 1 else [0]
    setattr(owner, attr, torch.nn.ModuleList([layers[i] for i in idx]))
    for j, layer in enumerate(getattr(owner, attr)):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = j
    draft.config.num_hidden_layers = len(idx)
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = [draft.config.layer_types[i] for i in idx]
    return draft.eval(), len(idx), n


class SpeculativeDecoding(Runner):
    id = "speculative-decoding"
    Params = SpecParams
    summary = "assisted generation with a layer-dropped draft of the model itself (same tokenizer)"

    def run(self, ctx: StepContext, params: SpecParams) -> StepResult:
        model = _plain(ctx.model).eval()
        draft, kept, total = layer_dropped_draft(model, params.draft_fraction)
        draft.generation_config.num_assistant_tokens = params.draft_tokens
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        metrics, _, _ = compared(ctx, params, {"assistant_model": draft}, model)
        metrics.update(draft_layers=float(kept), model_layers=float(total))
        notes = [f"draft keeps {kept} of {total} layers, proposes {params.draft_tokens} tokens: "
                 f"{metrics['speedup']:.2f}x plain greedy, {metrics['greedy_agreement']:.0%} of tokens identical "
                 "(assisted greedy decoding is exact up to floating-point ties)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class PromptCacheParams(DecodeParams):
    prefix_tokens: int = Field(64, ge=1, le=32768, description="shared prefix (e.g. a system prompt) cached once")


class PromptCaching(Runner):
    id = "prompt-caching"
    Params = PromptCacheParams
    summary = "reuse the key/value cache of a shared prompt prefix across requests"

    def run(self, ctx: StepContext, params: PromptCacheParams) -> StepResult:
        from transformers import DynamicCache
        model = _plain(ctx.model).eval()
        prefix = ctx.corpus.blocks("validation", params.prefix_tokens, 1)[:1]
        suffixes = prompt_ids(ctx, params)
        full = [torch.cat([prefix, s], 1) for s in suffixes]
        with torch.no_grad():
            start = time.perf_counter()
            cache = DynamicCache(config=model.config)
            model(input_ids=prefix, past_key_values=cache, use_cache=True)
            t_prefix = time.perf_counter() - start
        greedy(model, full[:1], 2)
        base, t_base = greedy(model, full, params.new_tokens)
        got, t_cached = [], t_prefix
        for ids in full:
            out, t = greedy(model, [ids], params.new_tokens, past_key_values=copy.deepcopy(cache))
            got += out
            t_cached += t
        n = sum(len(x) for x in base)
        metrics = {"tokens_per_s_plain": n / t_base, "tokens_per_s_method": n / t_cached, "speedup": t_base / t_cached,
                   "greedy_agreement": agreement(base, got), "prefix_tokens": float(prefix.shape[1])}
        notes = [f"a {prefix.shape[1]}-token prefix cached once for {len(full)} requests: {metrics['speedup']:.2f}x, "
                 f"{metrics['greedy_agreement']:.0%} of greedy tokens identical"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class CompileParams(DecodeParams):
    backend: Literal["inductor", "aot_eager", "eager"] = Field("inductor", description="torch.compile backend")
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"


class TorchCompile(Runner):
    id = "torch-compile"
    Params = CompileParams
    summary = "compile the forward pass with torch.compile; measure decode speed and output agreement"

    def run(self, ctx: StepContext, params: CompileParams) -> StepResult:
        model = _plain(ctx.model).eval()
        compiled = copy.copy(model)
        start = time.perf_counter()
        compiled.forward = torch.compile(model.forward, backend=params.backend, mode=params.mode, dynamic=True)
        ids = prompt_ids(ctx, params)
        greedy(compiled, ids[:1], 2)  # compiles
        t_compile = time.perf_counter() - start
        base, t_base = greedy(model, ids, params.new_tokens)
        got, t_method = greedy(compiled, ids, params.new_tokens)
        n = sum(len(x) for x in base)
        metrics = {"tokens_per_s_plain": n / t_base, "tokens_per_s_method": n / t_method, "speedup": t_base / t_method,
                   "greedy_agreement": agreement(base, got), "compile_s": t_compile}
        notes = [f"torch.compile ({params.backend}, {params.mode}): compiled in {t_compile:.1f} s, "
                 f"{metrics['speedup']:.2f}x eager decode, {metrics['greedy_agreement']:.0%} of greedy tokens identical; "
                 "the saved weights are unchanged (compile again where the model is served)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class LookupParams(DecodeParams):
    lookup_tokens: int = Field(10, ge=1, le=256, description="tokens proposed from an n-gram match in the prompt")
    max_ngram: int = Field(2, ge=1, le=16)


class PromptLookupDecoding(Runner):
    id = "prompt-lookup-decoding"
    Params = LookupParams
    summary = "assisted generation whose draft is an n-gram match in the prompt (no draft model)"

    def run(self, ctx: StepContext, params: LookupParams) -> StepResult:
        metrics, _, _ = compared(ctx, params, {"prompt_lookup_num_tokens": params.lookup_tokens,
                                                "max_matching_ngram_size": params.max_ngram})
        notes = [f"prompt lookup ({params.lookup_tokens} tokens, n-grams up to {params.max_ngram}): "
                 f"{metrics['speedup']:.2f}x plain greedy, {metrics['greedy_agreement']:.0%} of tokens identical; "
                 "it gains where outputs copy the prompt (summaries, code edits, quoting)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class ChunkParams(RunnerParams):
    prompt_tokens: int = Field(256, ge=2, le=32768)
    chunk: int = Field(64, ge=1, le=32768, description="tokens per prefill chunk")


class ChunkedPrefill(Runner):
    id = "chunked-prefill"
    Params = ChunkParams
    summary = "prefill a long prompt in chunks through the KV cache; peak activation memory vs one pass"

    def run(self, ctx: StepContext, params: ChunkParams) -> StepResult:
        from transformers import DynamicCache

        from runners.evaluate import _PeakRss
        model = _plain(ctx.model).eval()
        ids = ctx.corpus.blocks("validation", params.prompt_tokens, 1)[:1]
        with torch.no_grad():
            model(input_ids=ids[:, :8])  # warm-up
            with _PeakRss() as whole_peak:
                t0 = time.perf_counter()
                whole = model(input_ids=ids).logits[:, -1]
                t_whole = time.perf_counter() - t0
            cache = DynamicCache(config=model.config)
            with _PeakRss() as chunk_peak:
                t0 = time.perf_counter()
                for s in range(0, ids.shape[1], params.chunk):
                    out = model(input_ids=ids[:, s:s + params.chunk], past_key_values=cache, use_cache=True)
                t_chunk = time.perf_counter() - t0
        diff = float((out.logits[:, -1] - whole).abs().max())
        metrics = {"prefill_ms_whole": 1000 * t_whole, "prefill_ms_chunked": 1000 * t_chunk,
                   "speedup": t_whole / t_chunk, "peak_mb_whole": whole_peak.delta / 1e6,
                   "peak_mb_chunked": chunk_peak.delta / 1e6, "max_logit_diff": diff,
                   "chunks": float(-(-ids.shape[1] // params.chunk))}
        notes = [f"{ids.shape[1]}-token prefill in chunks of {params.chunk}: {metrics['speedup']:.2f}x the single pass, "
                 f"peak memory above baseline {metrics['peak_mb_chunked']:.1f} vs {metrics['peak_mb_whole']:.1f} MB, "
                 f"last logits differ by {diff:.2e}"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)


class DraftParams(DecodeParams):
    draft_tokens: int = Field(4, ge=1, le=64, description="tokens the small model proposes per step")


class SLMDraft(Runner):
    id = "slm-draft"
    Params = DraftParams
    needs_teacher = True
    summary = "the step's small model drafts for the plan's larger (teacher) model; other tokenizers via universal assisted generation"

    def run(self, ctx: StepContext, params: DraftParams) -> StepResult:
        if ctx.load_teacher is None:
            raise StepFailed(f"{self.id}: the plan names no larger model (teacher) to draft for")
        target, ttok = ctx.load_teacher()
        target.eval()
        draft = _plain(ctx.model).eval()
        draft.generation_config.num_assistant_tokens = params.draft_tokens
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        same = ttok.get_vocab() == ctx.tokenizer.get_vocab()
        kw = {"assistant_model": draft}
        if not same:  # universal assisted generation: text is re-tokenized between the two models
            kw.update(tokenizer=ttok, assistant_tokenizer=ctx.tokenizer)
        texts = ctx.corpus.prompts("validation", params.prompts, params.prompt_tokens)
        ids = [ttok(t, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :params.prompt_tokens] for t in texts]
        greedy(target, ids[:1], 2)
        base, t_base = greedy(target, ids, params.new_tokens)
        got, t_method = greedy(target, ids, params.new_tokens, **kw)
        n = sum(len(x) for x in base)
        metrics = {"tokens_per_s_plain": n / t_base, "tokens_per_s_method": n / t_method, "speedup": t_base / t_method,
                   "greedy_agreement": agreement(base, got), "same_tokenizer": float(same)}
        notes = [f"the step model drafts {params.draft_tokens} tokens for the teacher "
                 f"({'same tokenizer' if same else 'different tokenizers: universal assisted generation'}): "
                 f"{metrics['speedup']:.2f}x the teacher alone, {metrics['greedy_agreement']:.0%} of greedy tokens identical"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
