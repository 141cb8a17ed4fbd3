"""CPU runtime profiles: the per-byte cost of packed weights (kb/runtimes.yaml
`dequant_byte_cost`) and its fit in bench/estimator_accuracy.py, on rows built here."""

from __future__ import annotations

import pytest

from slmrec.estimate.runtimes import Profile


def _profile(cost: float) -> Profile:
    return Profile("rt", "cpu", 0.5, 0.5, 0.0, 0.0, 0.0, 0, "fitted", dequant_byte_cost=cost)


@pytest.mark.parametrize("cost, int8_slower_than_fp32", [(0.0, False), (4.0, False), (10.0, True)])
def test_packed_byte_cost_can_make_int8_slower_than_fp32(cost, int8_slower_than_fp32):
    bw, fp32, int8, int4 = 25.6e9, 540e6, 140e6, 75e6   # bytes a decode step reads
    p = _profile(cost)
    t_fp32 = p.decode_s(fp32, bw, 30, False)
    t_int8 = p.decode_s(int8, bw, 30, True, dequant_bytes=int8)
    t_int4 = p.decode_s(int4, bw, 30, True, dequant_bytes=int4)
    assert (t_int8 > t_fp32) == int8_slower_than_fp32
    extra8, extra4 = t_int8 - int8 / (bw * 0.5), t_int4 - int4 / (bw * 0.5)
    assert extra8 == pytest.approx(extra4 * int8 / int4)   # paid per packed byte


def test_fit_recovers_the_packed_byte_cost_from_few_rows(monkeypatch):
    from bench import estimator_accuracy as ea

    eff, cost = 0.4, 3.0
    feats = {"fp32": (20.0, 30, 0.0, 0.0), "fp32-long": (22.0, 30, 0.0, 0.0),
             "int8": (5.5, 30, 30, 5.0), "int4": (3.0, 30, 30, 2.5)}
    monkeypatch.setattr(ea, "_features", lambda kb, archs, r: feats[r["format"]])
    rows = [{"runtime": "rt", "hardware_class": "cpu", "format": f,
             "tok_s": 1000 / (ms / eff + deq_ms * cost)} for f, (ms, _, _, deq_ms) in feats.items()]
    fit = ea.fit_profiles(None, None, rows)[("rt", "cpu")]
    assert fit["bandwidth_efficiency"] == pytest.approx(eff, rel=1e-3)
    assert fit["dequant_byte_cost"] == pytest.approx(cost, rel=1e-3)
    assert fit["token_ms"] == fit["layer_ms"] == 0.0   # fewer than FULL_FIT_ROWS rows


def test_byte_cost_is_not_fitted_for_fused_block_kernels(monkeypatch):
    from types import SimpleNamespace

    from bench import estimator_accuracy as ea

    feats = {"f16": (20.0, 30, 0.0, 0.0), "q8": (10.0, 30, 30, 9.0), "q4": (6.0, 30, 30, 5.0)}
    monkeypatch.setattr(ea, "_features", lambda kb, archs, r: feats[r["format"]])
    rows = [{"runtime": rt, "hardware_class": "cpu", "format": f, "tok_s": 1000 / (ms + 2 * dq)}
            for rt in ("fused", "unpacking") for f, (ms, _, _, dq) in feats.items()]
    kb = SimpleNamespace(runtimes={"fused": SimpleNamespace(unpacks_weights=False),
                                   "unpacking": SimpleNamespace(unpacks_weights=True)})
    fits = ea.fit_profiles(kb, None, rows)
    assert fits[("fused", "cpu")]["dequant_byte_cost"] == 0.0
    assert fits[("unpacking", "cpu")]["dequant_byte_cost"] == pytest.approx(2.0, rel=1e-3)


@pytest.fixture(scope="module")
def kb():
    from slmrec.kb import load_kb
    return load_kb()


def test_cpu_profiles_of_the_shipped_kb(kb):
    from slmrec.estimate import Arch, Estimator, compile_option
    from slmrec.estimate.runtimes import runtime_for_methods

    hw = kb.hardware["laptop-2core-avx2"]
    est = Estimator(kb, Arch.from_card(kb.models["smollm2-135m"]), hw)
    assert est.profile.runtime == "runtime-hf-transformers" and est.profile.hardware_class == "cpu"
    assert runtime_for_methods(kb, ["rtn-weight-only", "onnx-export"]) == "runtime-onnxruntime"
    rtn = kb.methods["rtn-weight-only"]
    decode = {bits: est.predict_chain([compile_option(rtn, {"bits": bits, "group_size": 32})])
              .final["decode_ms_per_token"].value for bits in (4, 8)}
    base = est.predict_chain([]).final["decode_ms_per_token"].value
    # measured at one thread (bench/packed_decode_formats.py): int4 2.0x, int8 1.5-1.6x faster
    assert decode[4] < decode[8] < base
