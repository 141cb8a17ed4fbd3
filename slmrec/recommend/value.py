"""What a step is worth when the KB gives no exact figure, and how much the user's data buys.

- `task_gain(m, params, held)`: the expected relative improvement (%) on the scenario's task
  objective, from the method's `effects.task_gain` (or a prior), scaled by the data the user
  holds against the amount the figure used. Below that amount the gain shrinks along a power law
  and the low end drops further (confidence falls); there is never a hard wall.
- `quality_prior(m, option)`: for a lossy method whose quality effect is unpublished, a wide
  prior from its family's sourced evidence (same weight bits where the family has them), marked
  low-confidence, so the method can be planned and ranked by its pessimistic end.

Priors are read from the KB (evidence of other methods of the same family, or serving the same
goal): nothing here names a method.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from slmrec.estimate import TOKENS_PER_UNIT, Option, Range, match_evidence
from slmrec.kb import KB
from slmrec.schema import EvidenceBasis, Method

# Fine-tuning gains grow as a power of the fine-tuning data with a small exponent (Zhang et al.
# 2024, "When Scaling Meets LLM Finetuning", arXiv:2402.17193: a multiplicative power law in
# data whose exponent is well below 1). DATA_EXPONENT scales the expected gain below the usual
# amount; the low end uses twice the exponent, so the range widens as data shrinks.
DATA_EXPONENT = 0.3
DATA_SOURCE = "zhang2024-finetune-scaling"


@dataclass
class Gain:
    value: float
    low: float
    high: float
    sources: tuple[str, ...]
    confidence: str           # high | medium | low
    note: str

    def text(self) -> str:
        return (f"expected task gain {self.value:+.1f}% [{self.low:+.1f}, {self.high:+.1f}] "
                f"({self.confidence} confidence; {self.note})")


def _numeric(evidence) -> list:
    """Figures that say how the step changes the model it is applied to. A figure with a
    `baseline` (LoRA against full fine-tuning, PiSSA against LoRA) compares two ways of doing the
    step, not the step against its input, so it is neither a gain nor a prior (the estimator reads
    quality the same way)."""
    return [e for e in evidence if e.basis not in (EvidenceBasis.unpublished,
                                                   EvidenceBasis.not_transferable)
            and e.low is not None and not e.baseline]


def _family_root(m: Method) -> str:
    return m.family.split("/")[0]


def _prior(kb: KB, m: Method, attr: str, peers: list[Method], what: str) -> Range | None:
    ev = [(p, e) for p in peers if p.id != m.id for e in _numeric(getattr(p.effects, attr))]
    if not ev:
        return None
    mids = [(e.low + e.high) / 2 for _, e in ev]
    names = sorted({p.id for p, _ in ev})
    return Range(statistics.median(mids), min(e.low for _, e in ev), max(e.high for _, e in ev),
                 tuple(dict.fromkeys(e.source for _, e in ev)), "prior",
                 f"no published figure: {what} prior from {', '.join(names[:4])}"
                 + (" ..." if len(names) > 4 else ""))


def gain_evidence(kb: KB, m: Method, params: dict) -> tuple[Range | None, str, float | None]:
    """(range, confidence, usual data tokens) of the method's own task gain, else a prior from
    its family, else from the methods serving the same goals."""
    own = _numeric(m.effects.task_gain)
    if own:
        got = match_evidence(own, params)
        if not isinstance(got, Range):
            got = match_evidence(own, {})
        if isinstance(got, Range):
            data = [e.data for e in own if e.data is not None]
            usual = statistics.median(d.count * TOKENS_PER_UNIT[d.unit] for d in data) \
                if data else None
            return got, "high" if len(own) > 1 else "medium", usual
    fam = [p for p in kb.methods.values() if _family_root(p) == _family_root(m)]
    got = _prior(kb, m, "task_gain", fam, "family")
    if got is None and m.serves:
        peers = [p for p in kb.methods.values() if set(p.serves) & set(m.serves)
                 and p.requires.data == m.requires.data]
        got = _prior(kb, m, "task_gain", peers, "goal") or _prior(
            kb, m, "task_gain", [p for p in kb.methods.values() if set(p.serves) & set(m.serves)],
            "goal")
    if got is None:
        return None, "none", None
    # the data the prior's own figures used
    peers_data = [e.data for p in kb.methods.values() if p.id != m.id
                  for e in _numeric(p.effects.task_gain) if e.data is not None
                  and e.source in got.sources]
    usual = statistics.median(d.count * TOKENS_PER_UNIT[d.unit] for d in peers_data) \
        if peers_data else None
    return got, "low", usual


def task_gain(kb: KB, m: Method, params: dict, held_tokens: dict[str, float]) -> Gain | None:
    """Expected task gain of `m` for the data the scenario holds (tokens per requirement tier)."""
    rng, conf, usual = gain_evidence(kb, m, params)
    if rng is None:
        return None
    if usual is None and m.requires.data_amount is not None:
        a = m.requires.data_amount
        usual = a.count * TOKENS_PER_UNIT[a.unit]
    tier = m.requires.data.value
    have = held_tokens.get(tier)
    note = rng.note or "sourced figure"
    value, low, high = rng.value, rng.low, rng.high
    if usual and have is not None and have < usual:
        r = have / usual
        value *= r ** DATA_EXPONENT
        low *= r ** (2 * DATA_EXPONENT)
        high *= r ** DATA_EXPONENT
        conf = "low" if r < 0.1 else ("medium" if conf == "high" else conf)
        note += (f"; scaled for {have / usual:.2g}x the data the figure used "
                 f"(power law, {DATA_SOURCE})")
        srcs = rng.sources + (DATA_SOURCE,)
    elif not usual:
        # the figure cannot be scaled to the user's data: it may not transfer at all
        srcs = rng.sources
        low = min(low, 0.0)
        conf = "low"
        note += "; the data the figure used is unknown, so its pessimistic end is no gain"
    else:
        srcs = rng.sources
    return Gain(value, min(low, value), max(high, value), tuple(dict.fromkeys(srcs)), conf, note)


def quality_prior(kb: KB, m: Method, o: Option) -> Range | None:
    """A wide prior for a lossy option whose quality effect is unpublished: the range of the
    family's sourced quality evidence at the same weight bits (or any bits), low-confidence."""
    fam = [p for p in kb.methods.values() if p.family == m.family] or \
        [p for p in kb.methods.values() if _family_root(p) == _family_root(m)]
    bits = o.t.get("weight_bits", o.t.get("kv_cache_bits", o.t.get("activation_bits")))
    pool = [p for p in fam if p.id != m.id and _numeric(p.effects.quality)]
    if not pool:
        pool = [p for p in kb.methods.values() if _family_root(p) == _family_root(m)
                and p.id != m.id and _numeric(p.effects.quality)]
    if not pool:
        return None
    ev = [(p, e) for p in pool for e in _numeric(p.effects.quality)]
    if bits is not None:
        same = [(p, e) for p, e in ev if _bits_of(e, p) == bits]
        ev = same or ev
    mids = [(e.low + e.high) / 2 for _, e in ev]
    names = sorted({p.id for p, _ in ev})
    return Range(statistics.median(mids), min(e.low for _, e in ev),
                 max(max(e.high for _, e in ev), 0.0),
                 tuple(dict.fromkeys(e.source for _, e in ev)), "prior",
                 f"no published figure: family prior from {', '.join(names[:4])}"
                 + (" ..." if len(names) > 4 else "") + " (low confidence)")


def _bits_of(e, p: Method) -> float | None:
    for k in ("bits", "weight_bits", "kv_bits", "kv_cache_bits"):
        v = e.when.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    wb = p.effects.transform.weight_bits
    return float(wb) if isinstance(wb, (int, float)) else None
