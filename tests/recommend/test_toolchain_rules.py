"""Agreement of the rule checker with the ordering/compatibility rules toolchains declare
(docs/toolchain-rules.yaml: llm-compressor, Model Optimizer, Pruna, Olive, Neural Compressor).

The checker is what plan validation applies (`validate_plan`: order, conflicts, requirements,
slots, no structural edit or full training of integer-quantized weights). Agreement is reported;
the test fails if it drops below what was measured when the table was compiled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slmrec.kb import load_kb
from slmrec.plan import Plan, Step, validate_plan

TABLE = Path(__file__).resolve().parents[2] / "docs" / "toolchain-rules.yaml"
MEASURED_AGREEMENT = 11 / 15   # docs/recommender.md records the four disagreements
RULE_WORDS = ("must come before", "conflict", "both set", "appears twice", "requires",
              "quantized to integers")


def verdicts():
    kb = load_kb()
    rules = yaml.safe_load(TABLE.read_text(encoding="utf-8"))["rules"]
    out = []
    for r in rules:
        plan = Plan(base_model="smollm2-360m", steps=[Step(method=m) for m in r["chain"]])
        problems = [p.message for p in validate_plan(plan, kb)
                    if any(w in p.message for w in RULE_WORDS)]
        ours = "forbidden" if problems else "allowed"
        out.append((r, ours, problems))
    return out


def test_every_rule_is_sourced_and_names_known_methods():
    kb = load_kb()
    for r in yaml.safe_load(TABLE.read_text(encoding="utf-8"))["rules"]:
        assert r["source"].startswith("https://") and r["verdict"] in ("allowed", "forbidden")
        assert all(m in kb.methods for m in r["chain"]), r["chain"]


def test_checker_agrees_with_the_toolchains(capsys):
    got = verdicts()
    agree = [g for g in got if g[0]["verdict"] == g[1]]
    share = len(agree) / len(got)
    with capsys.disabled():
        print(f"\ntoolchain agreement: {len(agree)}/{len(got)} = {share:.2f}")
        for r, ours, problems in got:
            if r["verdict"] != ours:
                print(f"  disagree [{r['tool']}] {' -> '.join(r['chain'])}: tool {r['verdict']}, "
                      f"checker {ours} ({'; '.join(problems)[:160]})")
    assert len({r["tool"] for r, _, _ in got}) >= 4
    assert share >= MEASURED_AGREEMENT - 1e-9


@pytest.mark.parametrize("tool", ["llm-compressor", "modelopt", "pruna", "olive"])
def test_each_named_toolchain_has_rules(tool):
    assert any(r["tool"] == tool for r, _, _ in verdicts())
