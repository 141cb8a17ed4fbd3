"""Synthetic KBs of any size, grown from the shipped KB, for the recommender's scaling bench.

Every plannable method of the shipped KB is a template. A synthetic method is a clone of one
template with its evidence ranges scaled at random (quality by 0.5-2x, recovery and speed-up a
little), its family split into a few variants, and the template's relations copied to it with some
probability (so the KB keeps about as many relations per method as the real one, and `precedes`
stays acyclic: a clone only inherits its template's edges). Components, sources, capabilities,
hardware and models are the shipped ones.

    python -m bench.synthetic_kb 5000 out/kb-5k     # write a KB folder (loadable by load_kb)

`build_kb(n)` returns the same KB in memory without the YAML round trip (faster for the bench).
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import yaml

from slmrec.kb import KB, check_references, load_kb
from slmrec.schema import Method, Relation

FAMILY_VARIANTS = 20     # clones of one template spread over this many families
RELATION_KEEP = 0.5      # probability that a clone inherits each relation of its template


def _scale(ev: dict, lo: float, hi: float, rng: random.Random, clip: tuple | None = None) -> dict:
    if ev.get("low") is None:
        return ev
    f = rng.uniform(lo, hi)
    a, b = ev["low"] * f, ev["high"] * f
    if clip:
        a, b = min(max(a, clip[0]), clip[1]), min(max(b, clip[0]), clip[1])
    ev = dict(ev, low=min(a, b), high=max(a, b))
    return ev


def generate(n: int, seed: int = 0, base: KB | None = None) -> dict:
    """A KB as YAML-ready sections with about `n` methods (the shipped ones plus clones)."""
    rng = random.Random(seed)
    base = base or load_kb()
    dump = lambda r: r.model_dump(by_alias=True, mode="json", exclude_defaults=True)  # noqa: E731
    templates = [m for m in base.methods.values() if m.plannable]
    methods = [dump(m) for m in base.methods.values()]
    rel_by_node: dict[str, list[Relation]] = {}
    for r in base.relations.values():
        rel_by_node.setdefault(r.src, []).append(r)
        rel_by_node.setdefault(r.dst, []).append(r)
    relations = [dump(r) for r in base.relations.values()]
    i = 0
    while len(methods) < n:
        t = templates[i % len(templates)]
        i += 1
        mid = f"{t.id}-syn{i}"
        d = dump(t)
        d["id"] = mid
        d["name"] = f"{t.name} (synthetic {i})"
        d["family"] = f"{t.family}-v{i % FAMILY_VARIANTS}"
        eff = d.get("effects", {})
        for kind, lo, hi, clip in (("quality", 0.5, 2.0, None), ("recovery", 0.7, 1.2, (0.0, 1.0)),
                                   ("speedup", 0.8, 1.1, (1.0, 100.0))):
            if eff.get(kind):
                eff[kind] = [_scale(ev, lo, hi, rng, clip) for ev in eff[kind]]
        d.pop("runner", None)
        methods.append(d)
        for r in rel_by_node.get(t.id, []):
            if rng.random() > RELATION_KEEP:
                continue
            rd = dump(r)
            if r.src == t.id:
                rd["from"] = mid
            if r.dst == t.id:
                rd["to"] = mid
            if rd["from"] == rd["to"]:
                continue
            relations.append(rd)
    return {
        "sources": [dump(s) for s in base.sources.values()],
        "components": [dump(c) for c in base.components.values()],
        "capabilities": [dump(c) for c in base.capabilities.values()],
        "methods": methods,
        "relations": relations,
        "hardware": [dump(h) for h in base.hardware.values()],
        "models": [dump(m) for m in base.models.values()],
    }


def build_kb(n: int, seed: int = 0, base: KB | None = None) -> KB:
    """The synthetic KB in memory: records validated, references checked, no YAML."""
    base = base or load_kb()
    data = generate(n, seed, base)
    kb = KB(sources=dict(base.sources), components=dict(base.components),
            capabilities=dict(base.capabilities), hardware=dict(base.hardware),
            models=dict(base.models), roots=list(base.roots))
    for d in data["methods"]:
        m = Method.model_validate(d)
        kb.methods[m.id] = m
    for d in data["relations"]:
        r = Relation.model_validate(d)
        kb.relations[r.key] = r
    problems = check_references(kb)
    if problems:
        raise RuntimeError(f"synthetic KB is invalid: {problems[0]}")
    kb.version = hashlib.sha256(f"synthetic:{n}:{seed}:{base.version}".encode()).hexdigest()[:12]
    return kb


def write(n: int, out: Path | str, seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kb.yaml").write_text(yaml.safe_dump(generate(n, seed), sort_keys=False),
                                 encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.synthetic_kb N OUT_DIR")
    print(write(int(sys.argv[1]), sys.argv[2]))
