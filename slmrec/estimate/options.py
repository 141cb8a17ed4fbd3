"""Options: one method with concrete parameter values, resolved once per KB."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from slmrec.estimate.evidence import ZERO, Range, match_evidence
from slmrec.schema import Method

STRUCTURE_FIELDS = ("params_fraction_removed", "mlp_fraction_removed", "layers_fraction_removed",
                    "heads_fraction_removed", "kv_heads", "vocab_size", "rank_fraction")
TRANSFORM_FIELDS = ("weight_bits", "embedding_bits", "activation_bits", "kv_cache_bits", "sparsity",
                    *STRUCTURE_FIELDS, "adds_params_fraction")



@dataclass
class Option:
    method: str
    params: dict[str, Any]
    t: dict[str, float]                      # resolved transform numbers
    structure: str | None
    group_overhead_bits: float
    fields: frozenset[str]                   # transform fields this option sets
    quality: Range | None                    # None: quality unknown (see quality_status)
    quality_status: str                      # ok | lossless | missing | unpublished | uncovered
    recovery: Range | None
    speedup: Range | None
    cost: dict[str, Any]
    lossy: bool
    int_quant: bool                          # sets integer weight bits (< 16)
    edits_structure: bool                    # removes structure or zeroes weights
    trains_all: bool                         # updates every weight with a full optimizer
    from_scratch: bool = False               # leaves random weights (a design choice)
    format: str | None = None                # storage format id the step writes (kb formats)
    formats_by_bits: tuple[tuple[float, str], ...] = ()  # (input bits bound, format): follows its input
    sources: tuple[str, ...] = ()
    key: tuple = ()

    def __post_init__(self) -> None:
        self.key = (self.method, tuple(sorted((k, str(v)) for k, v in self.params.items())))

    def label(self) -> str:
        if not self.params:
            return self.method
        return self.method + "(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return params.get(value[1:])
    return value


def default_params(m: Method) -> dict[str, Any]:
    return {k: s.default for k, s in m.params.items() if s.default is not None}


def param_grid(m: Method, limit: int = 64) -> list[dict[str, Any]]:
    """Defaults, with every parameter that declares `search` values varied over them."""
    base = default_params(m)
    searched = [(k, list(s.search)) for k, s in m.params.items() if s.search]
    if not searched:
        return [base]
    out = []
    for combo in itertools.product(*(vals for _, vals in searched)):
        p = dict(base)
        p.update({k: v for (k, _), v in zip(searched, combo)})
        out.append(p)
        if len(out) >= limit:
            break
    return out


def compile_option(m: Method, params: dict[str, Any], model_params: float | None = None) -> Option:
    """Resolve a method at these parameters; `model_params` weights its evidence by scale."""
    tr = m.effects.transform_for(params)
    t: dict[str, float] = {}
    for name in TRANSFORM_FIELDS:
        v = _resolve(getattr(tr, name), params)
        if v is not None and not isinstance(v, bool):
            try:
                t[name] = float(v)
            except (TypeError, ValueError):
                continue
    gs = _resolve(tr.group_size, params)
    if gs is not None:
        try:
            t["group_size"] = float(gs)
        except (TypeError, ValueError):
            pass
    fmt = _resolve(tr.format, params)
    fields = frozenset(k for k in t if k != "group_size")
    wb = t.get("weight_bits")
    int_quant = wb is not None and wb < 16
    edits = bool(t.get("sparsity")) or any(
        t.get(f) for f in ("params_fraction_removed", "mlp_fraction_removed",
                           "layers_fraction_removed", "heads_fraction_removed")) or "kv_heads" in t or "rank_fraction" in t \
        or "vocab_size" in t
    lossy = (int_quant or edits or tr.init_from_scratch
             or ("activation_bits" in t and t["activation_bits"] < 16)
             or ("kv_cache_bits" in t and t["kv_cache_bits"] < 16))
    # A figure against another method (`versus`: full fine-tuning, LoRA, another system) is not a change of
    # the step's input model; speed figures count only when they time decoding.
    q = match_evidence([e for e in m.effects.quality if not e.versus], params, model_params)
    if isinstance(q, Range):
        quality, status = q, "ok"
    elif lossy:
        quality, status = None, (q or "missing")
    else:
        quality, status = ZERO, "lossless"
    rec = match_evidence([e for e in m.effects.recovery if not e.versus], params, model_params)
    spd = match_evidence([e for e in m.effects.speedup
                          if e.scope in (None, "decode", "end-to-end")], params, model_params)
    c = m.cost
    cost = {
        "passes": c.passes,
        "tokens": _num(_resolve(c.tokens, params)),
        "optimizer": c.optimizer,
        "trainable_fraction": _num(_resolve(c.trainable_fraction, params)),
        "teacher_resident": c.teacher_resident,
        "hessian": c.hessian,
        "bits_during": _num(_resolve(c.weight_bits_during, params)),
    }
    if m.requires.training and cost["passes"] == "none":
        cost["passes"] = "train"
    return Option(
        method=m.id, params=params, t=t, structure=tr.sparsity_structure,
        group_overhead_bits=tr.group_overhead_bits, fields=fields, quality=quality,
        quality_status=status, recovery=rec if isinstance(rec, Range) else None,
        speedup=spd if isinstance(spd, Range) else None, cost=cost, lossy=lossy,
        int_quant=int_quant, edits_structure=edits, trains_all=(cost["optimizer"] == "full"),
        from_scratch=tr.init_from_scratch, format=str(fmt) if fmt else None,
        formats_by_bits=tuple(m.effects.formats_by_input_bits(params)),
        sources=tuple(m.sources))


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
