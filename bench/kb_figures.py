"""The KB's own measured figures (`basis: measured`, source slmrec-measured), regenerated.

Every figure is one chain of runners applied to a freshly loaded SmolLM2-135M, scored on a declared
fixed slice of the validation split, its first 4,096 tokens (16x256; the whole split holds 7,190,
and 14 whole-split evaluations take over an hour on one shared core), with the spread over its 4
contiguous parts of 1,024 tokens, and compared with the unchanged model on the same tokens. A figure is the perplexity change in percent
(value) with the lowest and highest change among the 4 parts (low, high); a recovery figure is the
share of a damage step's perplexity loss that the following step wins back, part by part.

Baseline: the bundled SmolLM2-135M-Instruct weights are a Q4_1 GGUF dequantised to fp32, so
"fp32" here is already a 4-bit model held in fp32 (int8 looks lossless on it; int4 re-quantizes).

Run: `python -m bench.kb_figures` (or `python -m bench kb_figures`), then
`python -m bench.kb_figures --write-kb` rewrites every KB evidence entry that cites
`bench/kb_figures.py: <id>` from the JSON (low, high and the figures in its setting);
tests/runners/test_runners_kb_figures.py fails when a KB figure and
bench/results/kb_figures.json disagree by more than the figure's spread, or when FIGURES changed
since the JSON was written. `KB_FIGURES=id,id` re-measures some figures only and keeps the others
from the existing JSON (same baseline and slice required).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table

MODEL = "smollm2-135m"
BASELINE = "SmolLM2-135M as bundled: its Q4_1 GGUF dequantised to fp32"
EVAL = {"seq_len": 256, "n_blocks": 16, "batch_size": 4}  # validation[0:4096]
CAL = {"samples": 8, "seq_len": 256}  # 2,048 of the calibration split's 5,184 tokens
SHORT_TRAIN = {"batch_size": 2, "seq_len": 32}
# id -> chain of (runner, params); "recovers" names the figure whose loss the last step recovers.
FIGURES: dict[str, dict] = {
    "rtn-int8-g128": {"what": "RTN int8 weights, group 128, embedding table int8",
        "chain": [("weight-only-quant", {"bits": 8, "group_size": 128, "embedding_bits": 8})]},
    "rtn-int4-g128": {"what": "RTN int4 weights, group 128, embedding table int8",
        "chain": [("weight-only-quant", {"bits": 4, "group_size": 128, "embedding_bits": 8})]},
    "gptq-int4-g128": {"what": "GPTQ int4 (act-order), group 128, 8x256 calibration tokens, embedding table int8",
        "chain": [("gptq", {"bits": 4, "group_size": 128, "embedding_bits": 8, **CAL})]},
    "rtn-int8-g32": {"what": "RTN int8 weights, group 32, embedding table int8",
        "chain": [("weight-only-quant", {"bits": 8, "group_size": 32, "embedding_bits": 8})]},
    "rtn-int4-g32": {"what": "RTN int4 weights, group 32, embedding table int8",
        "chain": [("weight-only-quant", {"bits": 4, "group_size": 32, "embedding_bits": 8})]},
    "cast-fp16": {"what": "cast to fp16",
        "chain": [("cast", {"dtype": "fp16"})]},
    "wanda-30": {"what": "Wanda 30% per output row on 8x256 calibration tokens, no healing",
        "chain": [("wanda-prune", {"sparsity": 0.3, **CAL})]},
    "structured-mlp-10": {"what": "10% of MLP channels removed by activation importance (8x256 calibration tokens), no healing",
        "chain": [("structured-prune", {"target": "mlp", "fraction": 0.1, **CAL})]},
    "structured-mlp-20": {"what": "20% of MLP channels removed by activation importance (8x256 calibration tokens), no healing",
        "chain": [("structured-prune", {"target": "mlp", "fraction": 0.2, **CAL})]},
    "structured-mlp-30": {"what": "30% of MLP channels removed by activation importance (8x256 calibration tokens), no healing",
        "chain": [("structured-prune", {"target": "mlp", "fraction": 0.3, **CAL})]},
    "layer-drop-12": {"what": "12.5% of blocks dropped (30 -> 26) by block-similarity importance, no healing",
        "chain": [("layer-drop", {"fraction": 0.125, **CAL})]},
    "layer-drop-25": {"what": "25% of blocks dropped by block-similarity importance, no healing",
        "chain": [("layer-drop", {"fraction": 0.25, **CAL})]},
    "dynamic-int8": {"what": "torch.ao dynamic int8 on every nn.Linear (activations int8 per tensor), tied head kept float",
        "chain": [("dynamic-int8", {})]},
    "cast-bf16": {"what": "cast to bf16",
        "chain": [("cast", {"dtype": "bf16"})]},
    "magnitude-30-layer": {"what": "30% per-layer magnitude pruning, no healing",
        "chain": [("magnitude-prune", {"sparsity": 0.3, "scope": "layer"})]},
    "magnitude-50-layer": {"what": "50% per-layer magnitude pruning, no healing",
        "chain": [("magnitude-prune", {"sparsity": 0.5, "scope": "layer"})]},
    "wanda-50": {"what": "Wanda 50% per output row on 8x256 calibration tokens, no healing",
        "chain": [("wanda-prune", {"sparsity": 0.5, **CAL})]},
    "structured-mlp-25": {"what": "25% of MLP channels removed by activation importance (8x256 calibration tokens), no healing",
        "chain": [("structured-prune", {"target": "mlp", "fraction": 0.25, **CAL})]},
    "heads-33": {"what": "query heads 9 -> 6 by activation importance (KV heads kept), no healing",
        "chain": [("structured-prune", {"target": "heads", "fraction": 0.333, **CAL})]},
    "layer-drop-20": {"what": "20% of blocks dropped (30 -> 24) by block-similarity importance, no healing",
        "chain": [("layer-drop", {"fraction": 0.2, **CAL})]},
    "layer-drop-20-then-logit-distill-12": {"what": "after dropping 20% of blocks, 12 steps of logit distillation (2x32 tokens of the train split, teacher = the unpruned model); value = share of the perplexity loss recovered",
        
        "chain": [("layer-drop", {"fraction": 0.2, **CAL}),
                  ("logit-distill", {"steps": 12, "lr": 3e-4, **SHORT_TRAIN})],
        "recovers": "layer-drop-20"},
    # KV-cache figures decode every block one token at a time through the cache (no runner
    # changes the weights); their change is against the same decoding through a plain cache.
    "kv4-hqq-g64": {"what": "4-bit HQQ key/value cache (group 64, last 16 tokens unquantized, the kv-cache-quant runner's defaults), a 16-token prefill, then decoded token by token",
        "chain": [], "kv_cache": {"nbits": 4, "q_group_size": 64, "residual_length": 16}},
    "kv8-hqq-g64": {"what": "8-bit HQQ key/value cache (group 64, last 16 tokens unquantized), a 16-token prefill, then decoded token by token",
        "chain": [], "kv_cache": {"nbits": 8, "q_group_size": 64, "residual_length": 16}},
    "lora-r8-20": {"what": "LoRA r=8 on q/k/v/o, 20 steps of 2x32 tokens of the train split (topics disjoint from validation), merged",
        "chain": [("lora", {"rank": 8, "steps": 20, "lr": 2e-3, **SHORT_TRAIN})]},
}


def _apply(chain, corpus, workdir: Path):
    from runners.base import StepContext
    from runners.models import load_model
    from runners.registry import get_runner_class
    from runners.training import set_seed

    model, tok = load_model(MODEL)
    teacher: list = []

    def load_teacher():
        if not teacher:
            teacher.append(load_model(MODEL))
        return teacher[0]

    wall = 0.0
    for rid, params in chain:
        cls = get_runner_class(rid)
        set_seed(0)
        ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                          log=lambda m: None, load_teacher=load_teacher if cls.needs_teacher else None)
        t0 = time.perf_counter()
        out = cls().run(ctx, cls.Params(**params))
        wall += time.perf_counter() - t0
        model, tok = out.model, out.tokenizer or tok
    teacher.clear()
    return model, wall


def _plain_cache(model):
    from transformers import DynamicCache
    return lambda: DynamicCache(config=model.config)


def _quantized_cache(model, kv: dict):
    from transformers.cache_utils import QuantizedCache
    return lambda: QuantizedCache(backend="hqq", config=model.config, **kv)


def _change(rep, base) -> tuple[float, float, float]:
    r, lo, hi = rep.ratio(base)
    return 100 * (r - 1), 100 * (lo - 1), 100 * (hi - 1)


def _recovery(healed, damaged, base) -> tuple[float, float, float]:
    whole = (damaged.ppl - healed.ppl) / (damaged.ppl - base.ppl)
    parts = [(d - h) / (d - b) for h, d, b in zip(healed.parts, damaged.parts, base.parts)]
    return whole, min(parts), max(parts)


def _kept(only: list[str], base) -> dict:
    """With KB_FIGURES set: the other figures from the existing JSON, if it measured the same base."""
    import json
    path = Path(__file__).resolve().parent / "results" / "kb_figures.json"
    if not only or not path.is_file():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("slice") != base.slice or abs(old.get("base", {}).get("ppl", 0) - base.ppl) > 1e-3:
        raise SystemExit("KB_FIGURES: the existing kb_figures.json measured another baseline or slice; "
                         "re-run every figure")
    return {fid: f for fid, f in old.get("figures", {}).items() if fid not in only and fid in FIGURES}


def main() -> dict:
    import torch

    from runners.data import load_corpus
    from runners.evaluate import perplexity_report
    from runners.models import load_model

    only = [s for s in os.environ.get("KB_FIGURES", "").split(",") if s]
    unknown = [s for s in only if s not in FIGURES]
    if unknown:
        raise SystemExit(f"KB_FIGURES: unknown figure(s) {', '.join(unknown)}; valid: {', '.join(FIGURES)}")
    load_start = os.getloadavg()[0]
    model, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    base = perplexity_report(model, corpus, **EVAL)
    del model
    reports, figures, decoded_base = {}, {}, None
    with tempfile.TemporaryDirectory(prefix="slmrec-kb-figures-") as tmp:
        for fid, spec in FIGURES.items():
            if only and fid not in only and not any(FIGURES[o].get("recovers") == fid for o in only):
                continue
            print(f"   {fid}", flush=True)
            workdir = Path(tmp) / fid
            workdir.mkdir()
            try:
                model, wall = _apply(spec["chain"], corpus, workdir)
            except Exception as exc:  # noqa: BLE001  (one failing figure must not lose the others)
                figures[fid] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            kv = spec.get("kv_cache")
            rep = reports[fid] = perplexity_report(model, corpus, **EVAL,
                                                   decode_cache=_quantized_cache(model, kv) if kv else None)
            if kv and decoded_base is None:
                decoded_base = perplexity_report(model, corpus, **EVAL, decode_cache=_plain_cache(model))
            del model
            if kv:
                value, low, high = _change(rep, decoded_base)
                kind = "ppl-change-pct"
            elif spec.get("recovers"):
                value, low, high = _recovery(rep, reports[spec["recovers"]], base)
                kind = "recovery"
            else:
                value, low, high = _change(rep, base)
                kind = "ppl-change-pct"
            figures[fid] = {"kind": kind, "value": round(value, 3), "low": round(low, 3),
                            "high": round(high, 3), "ppl": round(rep.ppl, 3),
                            "parts": [round(p, 3) for p in rep.parts], "step_s": round(wall, 1),
                            "chain": [[rid, params] for rid, params in spec["chain"]],
                            "recovers": spec.get("recovers")}
            if kv:
                figures[fid].update(kv_cache=kv, decoded_base_ppl=round(decoded_base.ppl, 3))
    figures = {**_kept(only, base), **figures}
    rows = [[fid, f.get("kind", "error"), f.get("value"), f.get("low"), f.get("high"), f.get("ppl"), f.get("step_s")]
            for fid, f in figures.items()]

    load_end = os.getloadavg()[0]
    return {
        "title": f"the KB's measured figures on {MODEL}, on validation[0:4096] with the spread of 4 parts",
        "baseline": BASELINE, "slice": base.slice, "tokens": base.tokens,
        "base": {"ppl": round(base.ppl, 3), "parts": [round(p, 3) for p in base.parts]},
        "figures": figures, "eval": EVAL, "threads": torch.get_num_threads(),
        "load_avg_1m": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "markdown": md_table(rows, ["figure", "kind", "value", "low", "high", "ppl", "step s"])
        + f"\n\n{BASELINE}: ppl {base.ppl:.2f} on {base.slice} (parts "
          f"{', '.join(f'{p:.2f}' for p in base.parts)}). value: perplexity change in % (recovery: "
          f"share of the loss won back); low/high: the lowest and highest over the 4 parts.",
    }


CITE = "bench/kb_figures.py: "


def setting(fid: str, results: dict) -> str:
    """The KB setting text of a figure, with its numbers from the results JSON."""
    fig, base = results["figures"][fid], results["base"]["ppl"]
    if fig["kind"] == "recovery":
        damaged = results["figures"][fig["recovers"]]["ppl"]
        numbers = (f"ppl {base:.2f} -> {damaged:.2f} after the damage -> {fig['ppl']:.2f}: "
                   f"{fig['value']:.2f} of the loss recovered (parts {fig['low']:.2f} to {fig['high']:.2f})")
    elif fig.get("kv_cache"):
        numbers = (f"ppl {fig['decoded_base_ppl']:.2f} with a plain cache -> {fig['ppl']:.2f}, "
                   f"{fig['value']:+.1f}% (parts {fig['low']:+.1f}% to {fig['high']:+.1f}%)")
    else:
        numbers = (f"ppl {base:.2f} -> {fig['ppl']:.2f}, {fig['value']:+.1f}% "
                   f"(parts {fig['low']:+.1f}% to {fig['high']:+.1f}%)")
    return (f"SmolLM2-135M on {results['slice']} of the bundled pydoc corpus (validation topics held out "
            f"from train and calibration; spread over 4 parts of 1,024 tokens): {FIGURES[fid]['what']}: "
            f"{numbers} ({CITE}{fid})")


def flow(value) -> str:
    """A one-line YAML flow rendering in the KB's style (strings double-quoted unless plain)."""
    import json
    import re
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value) and value.lower() not in ("true", "false", "null", "yes", "no")
    return value if plain else json.dumps(value, ensure_ascii=False)


def write_kb(results: dict, root: Path | None = None) -> list[str]:
    """Rewrite, in kb/methods/*.yaml, every one-line evidence entry citing a figure; returns the
    figure ids written. low/high are the parts' range, rounded to 0.1 (percent) or 0.01."""
    import re

    import yaml
    root = root or Path(__file__).resolve().parents[1]
    cite = re.compile(re.escape(CITE) + r"([a-z0-9-]+)")
    written = []
    for path in sorted((root / "kb" / "methods").glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for i, line in enumerate(lines):
            m = cite.search(line)
            if not m or not line.lstrip().startswith("- {"):
                continue
            fid = m.group(1)
            fig = results["figures"][fid]
            entry = yaml.safe_load(line.strip()[2:])
            digits = 2 if fig["kind"] == "recovery" else 1
            low, high = fig["low"], fig["high"]
            if str(entry.get("metric", "")).endswith("-improvement"):  # a gain: the change negated
                low, high = -high, -low
            base = entry.get("baseline") or ""
            baseline = BASELINE if not base or base == BASELINE or "Q4_1" in base else f"{base}; {BASELINE}"
            entry.update(low=round(low, digits), high=round(high, digits), baseline=baseline,
                         model_params=134515008, setting=setting(fid, results))
            text = flow(entry)
            lines[i] = line[: len(line) - len(line.lstrip())] + "- " + text + "\n"
            written.append(fid)
        path.write_text("".join(lines), encoding="utf-8")
    return written


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["--write-kb"]:
        results = json.loads((Path(__file__).resolve().parent / "results" / "kb_figures.json").read_text())
        done = write_kb(results)
        print(f"rewrote {len(done)} KB figure(s): {', '.join(done)}")
        sys.exit(0)
    from bench.__main__ import main as bench_main
    sys.exit(bench_main(["kb_figures"]))
