"""One scenario builder for the lifecycle tests on the shipped KB: a small Pi-class target that
each test extends with the data, teacher or budgets it is about."""

from __future__ import annotations

from slmrec.scenario import parse_scenario


def sc(kb, **fields):
    data = {"task": "test", "base_model": "smollm2-360m", "hardware": "raspberry-pi-5-8gb",
            "budgets": {"memory_mb": 700}, "tolerance_pct": 5}
    data.update(fields)
    return parse_scenario(data, "<test>", kb, "test")
