"""Calibration with context from measurement rows (the run store's shape), stored as JSON."""

from __future__ import annotations

import json

import pytest

from slmrec.calibrate import Calibration, Context
from slmrec.errors import SlmrecError
from slmrec.recommend import recommend


def rows(metric, pairs, method="gptq", load=None, params=None):
    hw = {"profile": "laptop-2core-avx2", "cores": 2}
    if load is not None:
        hw["load_avg_1m"] = load
    return [{"run_id": i, "step_index": 0, "method": method, "metric": metric, "predicted": p,
             "predicted_low": p, "predicted_high": p, "measured": m,
             "context": {"hardware": hw, "base_params": params}}
            for i, (p, m) in enumerate(pairs)]


@pytest.fixture(scope="module")
def shipped():
    from slmrec.kb import load_kb

    return load_kb()


def ctx(kb, method, metric_params=None):
    return Context(method, kb.methods[method].family, "cpu", "runtime-hf-transformers",
                   metric_params)


def test_offsets_stay_inside_a_family_and_shrink_with_few_rows(shipped):
    assert shipped.methods["gptq"].family != shipped.methods["magnitude-pruning"].family
    data = rows("quality_loss_pct", [(6, 16), (6, 17)])     # the demo: two GPTQ rows
    cal = Calibration.fit(data, kb=shipped)
    got = cal.correct("quality_loss_pct", 6, "gptq", context=ctx(shipped, "gptq"))
    assert 6 < got.value < 16.5            # moved towards the measurement, shrunk on 2 rows
    assert got.rows == 2 and "2 rows" in got.note
    # another method of GPTQ's family moves through the family offset only (less than GPTQ)
    same = cal.correct("quality_loss_pct", 6, "rtn-weight-only",
                       context=ctx(shipped, "rtn-weight-only"))
    assert same is not None and 6 < same.value < got.value
    # a method outside the family is not corrected at all
    assert cal.correct("quality_loss_pct", 6, "magnitude-pruning",
                       context=ctx(shipped, "magnitude-pruning")) is None


def test_more_rows_move_the_offset_further(shipped):
    few = Calibration.fit(rows("size_mb", [(100, 120)]), kb=shipped)
    many = Calibration.fit(rows("size_mb", [(100, 120)] * 12), kb=shipped)
    c = ctx(shipped, "gptq")
    assert few.correct("size_mb", 100, "gptq", context=c).value < \
        many.correct("size_mb", 100, "gptq", context=c).value <= 120.5


def test_latency_offsets_are_per_hardware_and_runtime(shipped):
    data = rows("decode_ms_per_token", [(30, 300), (30, 330), (40, 420), (35, 360), (30, 290)])
    cal = Calibration.fit(data, kb=shipped)
    fit = cal.fits["decode_ms_per_token"]
    assert "hardware:cpu" in fit.offsets and "runtime:runtime-hf-transformers" in fit.offsets
    assert fit.cv_after < fit.cv_before          # leave-one-out: correction helps
    # on another runtime and hardware, only the method/family offsets apply
    other = Context("gptq", shipped.methods["gptq"].family, "datacenter-gpu", "runtime-vllm")
    here = cal.correct("decode_ms_per_token", 30, "gptq", context=ctx(shipped, "gptq"))
    there = cal.correct("decode_ms_per_token", 30, "gptq", context=other)
    assert here.value > there.value


def test_loaded_machine_rows_are_flagged_and_weighted_down(shipped):
    calm = rows("decode_ms_per_token", [(30, 60)] * 3)
    busy = rows("decode_ms_per_token", [(30, 600)] * 3, load=7.5)
    cal = Calibration.fit(calm + busy, kb=shipped, alpha=0.5)
    fit = cal.fits["decode_ms_per_token"]
    assert fit.loaded == 3
    got = cal.correct("decode_ms_per_token", 30, "gptq", context=ctx(shipped, "gptq"))
    assert got.value < 30 * (60 * 600) ** 0.5 / 30   # below the unweighted geometric mean


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


def test_lower_bounds_every_correction(shipped):
    data = rows("size_mb", [(100, 80), (100, 85)]) + \
        rows("size_mb", [(100, 130)], method="magnitude-pruning")
    cal = Calibration.fit(data, kb=shipped)
    for m in ("gptq", "magnitude-pruning"):
        assert cal.lower("size_mb", 100) <= cal.correct("size_mb", 100, m,
                                                        context=ctx(shipped, m)).value


def test_recommend_uses_the_calibration(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 600}, data={"calibration": 128})
    plain = recommend(sc, kb, counterfactuals=False)
    method = plain.top.steps[-1].method
    cal = Calibration.fit(rows("inference_memory_mb", [(100, 150), (300, 450), (600, 900)],
                               method=method), kb=kb)
    rec = recommend(sc, kb, calibration=cal, counterfactuals=False)
    got = rec.top.predicted["inference_memory_mb"]
    assert got.basis == "calibrated" and "row" in (got.note or "")
    assert got.value <= 600    # the plan chosen under calibration meets the budget calibrated


def test_offsets_tell_a_methods_options_apart(shipped):
    # RTN int4 at group 32 measures below its prediction, at group 128 above: one method offset
    # would move both the same way; option offsets move each towards its own measurements
    def opt_rows(gs, pairs):
        out = rows("quality_loss_pct", pairs, method="rtn-weight-only")
        for r in out:
            r["context"]["params"] = {"bits": 4, "group_size": gs, "embedding_bits": 8}
        return out

    data = opt_rows(32, [(21, 14), (21, 15), (21, 14.5)]) + \
        opt_rows(128, [(36, 42), (36, 43), (36, 42.5)])
    cal = Calibration.fit(data, kb=shipped)
    assert "param:rtn-weight-only.group_size=32" in cal.fits["quality_loss_pct"].offsets
    assert "param:rtn-weight-only.embedding_bits=8" not in cal.fits["quality_loss_pct"].offsets

    def corrected(gs, pred):
        c = Context("rtn-weight-only", shipped.methods["rtn-weight-only"].family, "cpu",
                    "runtime-hf-transformers", None,
                    (("bits", "4"), ("embedding_bits", "8"), ("group_size", str(gs))))
        return cal.correct("quality_loss_pct", pred, "rtn-weight-only", context=c)

    g32, g128 = corrected(32, 21), corrected(128, 36)
    assert g32.value < 21 and g128.value > 36
    assert "group_size=32" in g32.note
    # the same correction through a bound calibration, given the step's parameters
    bound = cal.bind(shipped, "cpu", "runtime-hf-transformers", None)
    via = bound.correct("quality_loss_pct", 21, "rtn-weight-only",
                        params={"bits": 4, "group_size": 32, "embedding_bits": 8})
    assert via.value == pytest.approx(g32.value)


def test_scale_term_does_not_extrapolate_beyond_the_measured_sizes(shipped):
    data = rows("decode_ms_per_token", [(30, 60), (30, 66)], params=1e8) + \
        rows("decode_ms_per_token", [(30, 150), (30, 160)], params=1e9)
    cal = Calibration.fit(data, kb=shipped, alpha=0.5)
    assert cal.fits["decode_ms_per_token"].scale > 0

    def at(n):
        return cal.correct("decode_ms_per_token", 30, "gptq", context=ctx(shipped, "gptq", n)).value

    assert at(1e5) == pytest.approx(at(1e8)) and at(1e12) == pytest.approx(at(1e9))
    assert at(1e8) < at(3e8) < at(1e9)
