"""Calibration from measurement rows (the run store's shape), stored as JSON."""

from __future__ import annotations

import json

import pytest

from slmrec.calibrate import Calibration
from slmrec.errors import SlmrecError
from slmrec.recommend import recommend


def rows(metric, pairs, method="gptq"):
    return [{"run_id": i, "step_index": 0, "method": method, "metric": metric, "predicted": p,
             "predicted_low": p, "predicted_high": p, "measured": m, "context": {}}
            for i, (p, m) in enumerate(pairs)]


def test_fits_a_ratio_per_method_and_an_offset_for_quality():
    data = rows("size_mb", [(100, 120), (200, 240), (400, 480)]) + \
        rows("size_mb", [(100, 100), (300, 300), (500, 500)], method="rtn-weight-only") + \
        rows("quality_loss_pct", [(1, 3), (2, 5), (4, 9), (3, 7)])
    cal = Calibration.fit(data)
    assert cal.correct("size_mb", 250, "gptq")[0] == pytest.approx(300, rel=0.03)
    assert cal.correct("size_mb", 250, "rtn-weight-only")[0] == pytest.approx(250, rel=0.03)
    v, lo, hi = cal.correct("quality_loss_pct", 5, "gptq")
    assert v == pytest.approx(11, rel=0.05) and lo <= v <= hi
    assert cal.correct("decode_ms_per_token", 3, "gptq") is None   # too few rows: no fit
    assert cal.lower("size_mb", 250) <= cal.correct("size_mb", 250, "rtn-weight-only")[0]


def test_ignores_unusable_rows():
    data = rows("size_mb", [(100, None), (None, 3), (-1, 5), (float("nan"), 1)]) + \
        [{"metric": "unknown", "predicted": 1, "measured": 2}]
    assert Calibration.fit(data).fits == {}


def test_save_load_round_trip_and_bad_files(tmp_path):
    cal = Calibration.fit(rows("size_mb", [(100, 110), (200, 220), (300, 330)]))
    back = Calibration.load(cal.save(tmp_path / "cal.json"))
    assert back.correct("size_mb", 150, "gptq") == cal.correct("size_mb", 150, "gptq")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 9}))
    with pytest.raises(SlmrecError, match="calibration JSON"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(SlmrecError, match="does not exist"):
        Calibration.load(tmp_path / "missing.json")


def test_recommend_uses_the_calibration(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 600}, data={"calibration": 128})
    plain = recommend(sc, kb, counterfactuals=False)
    method = plain.top.steps[-1].method
    cal = Calibration.fit(rows("inference_memory_mb", [(100, 150), (300, 450), (600, 900)],
                               method=method))
    rec = recommend(sc, kb, calibration=cal, counterfactuals=False)
    got = rec.top.predicted["inference_memory_mb"]
    assert got.basis == "calibrated"
    assert got.value <= 600    # the plan chosen under calibration meets the budget calibrated
