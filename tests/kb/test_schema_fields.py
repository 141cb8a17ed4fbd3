"""The schema fields that let the KB say what it could not: each is checked, each error is one
line naming file, record and field, and each is used by the shipped KB where it applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slmrec.errors import SlmrecError
from slmrec.kb import load_kb
from slmrec.schema import BaseModelCard, Effects, Evidence, EvidenceBasis
from tests.kb.tinykb import MODELS, write_tiny_kb

GOALS = [{"id": "fit-target", "name": "Fit", "summary": "fits", "sources": ["frame2025"]}]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    root = write_tiny_kb(tmp_path / "kb")
    (root / "goals.yaml").write_text(yaml.safe_dump({"goals": GOALS}))
    return root


def _edit_method(root: Path, index: int, fn) -> None:
    path = root / "methods" / "all.yaml"
    data = yaml.safe_load(path.read_text())
    fn(data["methods"][index])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _edit_model(root: Path, fn) -> None:
    path = root / "hardware.yaml"
    data = yaml.safe_load(path.read_text())
    fn(data["models"][0])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _set(path: str, value):
    """A function that sets a dotted path of a record (creating mappings on the way)."""
    keys = path.split(".")

    def fn(rec: dict) -> None:
        for k in keys[:-1]:
            rec = rec.setdefault(k, {})
        rec[keys[-1]] = value
    return fn


def _quality(**extra):
    return _set("effects.quality", [{"low": 5, "high": 20, "source": "quant2022",
                                     "when": {"fraction": 0.3}, **extra}])


# (case, method index in tinykb.METHODS or "model", edit, substrings of one expected line)
BROKEN = [
    ("transform case on an unknown parameter", 1,
     _set("effects.transform_cases", [{"when": {"merged": False}, "adds_params_fraction": 0.01}]),
     ["method 'lora'", "effects.transform_cases[0].when", "unknown parameter 'merged'"]),
    ("transform case value the parameter refuses", 3,
     _set("effects.transform_cases", [{"when": {"bits": 3}, "group_size": 32}]),
     ["method 'rtn'", "effects.transform_cases[0].when.bits", "must be one of [4, 8]"]),
    ("transform case referencing an undeclared parameter", 3,
     _set("effects.transform_cases", [{"when": {"bits": 4}, "group_size": "$grp"}]),
     ["method 'rtn'", "effects.transform_cases[0].group_size", "unknown parameter 'grp'"]),
    ("transform case without a condition", 3,
     _set("effects.transform_cases", [{"when": {}, "group_size": 32}]),
     ["method 'rtn'", "effects.transform_cases[0].when", "at least 1"]),
    ("transform case with an unknown field", 3,
     _set("effects.transform_cases", [{"when": {"bits": 4}, "weight_bit": 4}]),
     ["method 'rtn'", "weight_bit", "did you mean 'weight_bits'"]),
    ("transform case on the input's bits without a format", 3,
     _set("effects.transform_cases", [{"when": {"bits": 4}, "input_bits_at_most": 5}]),
     ["method 'rtn'", "effects.transform_cases[0]", "input_bits_at_most needs a `format`"]),
    ("evidence for a parameter value the method refuses", 3,
     _set("effects.quality", [{"low": 1, "high": 2, "source": "quant2022", "when": {"bits": 3}}]),
     ["method 'rtn'", "effects.quality[0].when.bits", "must be one of [4, 8]"]),
    ("speed scope that does not exist", 2, _quality(scope="decoding"),
     ["method 'prune'", "effects.quality[0].scope", "'decode'"]),
    ("model scale that is not positive", 2, _quality(model_params=0),
     ["method 'prune'", "effects.quality[0].model_params", "greater than 0"]),
    ("not-transferable with a number", 2, _quality(basis="not-transferable", note="n"),
     ["method 'prune'", "a not-transferable effect carries no number"]),
    ("not-transferable without a note", 2,
     _set("effects.quality", [{"source": "quant2022", "basis": "not-transferable"}]),
     ["method 'prune'", "needs a note"]),
    ("evidence data amount in an unknown unit", 2, _quality(data={"count": 10, "unit": "rows"}),
     ["method 'prune'", "effects.quality[0].data.unit"]),
    ("any-of hardware naming an unknown capability", 3,
     _set("requires.hardware_to_run_any", ["int4-kernel"]),
     ["method 'rtn'", "requires.hardware_to_run_any[0]", "did you mean 'int4-kernels'"]),
    ("negative count of resident frozen models", 1, _set("cost.resident_frozen_models", -1),
     ["method 'lora'", "cost.resident_frozen_models", "greater than or equal to 0"]),
    ("method serving an unknown goal", 1, _set("serves", ["fit-targte"]),
     ["method 'lora'", "serves[0]", "unknown goal 'fit-targte'", "did you mean 'fit-target'"]),
    ("task gain citing an unknown source", 1,
     _set("effects.task_gain", [{"low": 1, "high": 2, "source": "quant2202"}]),
     ["method 'lora'", "effects.task_gain[0].source", "did you mean 'quant2022'"]),
    ("MLP kind that does not exist", "model", _set("mlp", "swiglu"),
     ["model 'tiny-1'", "field 'mlp'", "'gated'"]),
    ("global layers without a window", "model", _set("global_every", 2),
     ["model 'tiny-1'", "global_every needs sliding_window"]),
    ("window wider than the context", "model", _set("sliding_window", 512),
     ["model 'tiny-1'", "sliding_window (512) exceeds context (128)"]),
    ("more active than total parameters", "model", _set("active_params", 2e6),
     ["model 'tiny-1'", "active_params (2e+06) exceeds params (1e+06)"]),
    ("per-layer widths for fewer layers than the model has", "model",
     _set("layer_widths", {"heads": [4], "kv_heads": [2], "intermediate": [128]}),
     ["model 'tiny-1'", "layer_widths.heads has 1 entries; layers is 2"]),
    ("uniform width that is not the widest layer", "model",
     _set("layer_widths", {"heads": [2, 2], "kv_heads": [2, 2], "intermediate": [64, 128]}),
     ["model 'tiny-1'", "heads (4) must be the widest layer's", "max(layer_widths.heads) = 2"]),
    ("a layer whose heads do not group over its KV heads", "model",
     _set("layer_widths", {"heads": [3, 4], "kv_heads": [2, 2], "intermediate": [64, 128]}),
     ["model 'tiny-1'", "layer 0 has 3 heads, not a multiple of its 2 kv_heads"]),
    ("a per-layer width of zero", "model",
     _set("layer_widths", {"heads": [4, 4], "kv_heads": [2, 2], "intermediate": [0, 128]}),
     ["model 'tiny-1'", "layer_widths.intermediate[0]", "greater than 0"]),
    ("per-layer width field misspelt", "model",
     _set("layer_widths", {"head": [4, 4], "kv_heads": [2, 2], "intermediate": [64, 128]}),
     ["model 'tiny-1'", "did you mean 'heads'"]),
    ("per-layer embeddings as large as the model", "model",
     _set("per_layer_embedding_params", 1e6),
     ["model 'tiny-1'", "per_layer_embedding_params (1e+06) must be below params (1e+06)"]),
    ("effective count above the total", "model", _set("effective_params", 3e6),
     ["model 'tiny-1'", "effective_params (3e+06) must be below params"]),
    ("every layer sharing another's KV cache", "model", _set("kv_shared_layers", 2),
     ["model 'tiny-1'", "kv_shared_layers (2) must be below layers (2)"]),
]


@pytest.mark.parametrize("name,target,fn,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_new_field_errors_name_file_record_field(tiny, name, target, fn, expected):
    if target == "model":
        _edit_model(tiny, fn)
    else:
        _edit_method(tiny, target, fn)
    with pytest.raises(SlmrecError) as info:
        load_kb([tiny], shipped=False)
    lines = [str(p) for p in info.value.problems]
    assert any(all(e in line for e in expected) for line in lines), "\n".join(lines)
    assert all("\n" not in line and "Traceback" not in line for line in lines)


def test_valid_new_fields_load(tiny):
    _edit_method(tiny, 1, _set("serves", ["fit-target"]))
    _edit_method(tiny, 1, _set("cost.resident_frozen_models", 1))
    _edit_method(tiny, 1, _set("params.merge", {"type": "bool", "default": True}))
    _edit_method(tiny, 1, _set("effects.transform_cases",
                               [{"when": {"merge": False}, "adds_params_fraction": 0.01}]))
    _edit_method(tiny, 2, _quality(baseline="dense model", model_params=7e9, scope="decode",
                                   data={"count": 128, "unit": "samples"}))
    _edit_model(tiny, _set("sliding_window", 64))
    _edit_model(tiny, _set("global_every", 2))
    kb = load_kb([tiny], shipped=False)
    assert kb.methods["lora"].serves == ["fit-target"]
    ev = kb.methods["prune"].effects.quality[0]
    assert (ev.baseline, ev.model_params, ev.scope, ev.data.count) == ("dense model", 7e9,
                                                                      "decode", 128)
    assert kb.models["tiny-1"].global_every == 2


@pytest.mark.parametrize("params,added", [
    ({"merge": True, "rank": 8}, None),
    ({"merge": False, "rank": 8}, 0.01),
    ({"merge": False, "rank": 16}, 0.02),      # the first matching case wins, in order
    ({"rank": 8}, None),                       # an absent parameter matches no case
    ({"merge": 0, "rank": 8}, None),           # 0 is not False: types must agree
])
def test_transform_cases_apply_only_when_they_match(params, added):
    eff = Effects.model_validate({
        "transform": {"weight_bits": 16},
        "transform_cases": [
            {"when": {"merge": False, "rank": 8}, "adds_params_fraction": 0.01},
            {"when": {"merge": False}, "adds_params_fraction": 0.02},
        ]})
    tr = eff.transform_for(params)
    assert tr.adds_params_fraction == added
    assert tr.weight_bits == 16                # the base transform's fields stay


def test_estimator_reads_the_matching_case():
    from slmrec.estimate import compile_option

    kb = load_kb()
    lora = kb.methods["lora"]
    merged = compile_option(lora, {"rank": 8, "merge": True})
    unmerged = compile_option(lora, {"rank": 8, "merge": False})
    assert "adds_params_fraction" not in merged.t
    assert unmerged.t["adds_params_fraction"] > 0


def test_estimator_ignores_evidence_without_numbers():
    from slmrec.estimate import match_evidence

    evs = [Evidence(source="s", basis=EvidenceBasis.not_transferable, note="other setting"),
           Evidence(source="s", low=1.0, high=3.0, when={"bits": 4})]
    r = match_evidence(evs, {"bits": 4})
    assert (r.low, r.high) == (1.0, 3.0)
    assert match_evidence(evs[:1], {"bits": 4}) == "unpublished"


def test_layer_widths_load_and_feed_the_estimator_their_means(tiny):
    widths = {"heads": [2, 4], "kv_heads": [1, 2], "intermediate": [64, 128], "rule": "linear"}
    _edit_model(tiny, _set("layer_widths", widths))
    _edit_model(tiny, _set("kv_shared_layers", 1))
    _edit_model(tiny, _set("per_layer_embedding_params", 2e5))
    _edit_model(tiny, _set("effective_params", 5e5))
    card = load_kb([tiny], shipped=False).models["tiny-1"]
    assert (card.mean_heads, card.mean_kv_heads, card.mean_intermediate) == (3.0, 1.5, 96.0)
    assert (card.kv_shared_layers, card.effective_params) == (1, 5e5)
    from slmrec.estimate.arch import Arch
    arch = Arch.from_card(card)
    assert (arch.heads, arch.kv_heads, arch.intermediate) == (3.0, 1.5, 96.0)
    uniform = BaseModelCard.model_validate(MODELS[0])
    assert (uniform.mean_heads, uniform.mean_intermediate) == (4, 128)


def test_tiny_model_card_is_valid_as_written():
    assert BaseModelCard.model_validate(MODELS[0]).mlp == "gated"


@pytest.mark.parametrize("extra,counted", [
    ({}, True),                                        # relative to the step's input model
    ({"baseline": "the base model as bundled"}, True),  # names the input: still counted
    ({"versus": "full fine-tuning"}, False),           # another method: not a change of the input
])
def test_estimator_reads_only_input_relative_quality(extra, counted):
    from slmrec.estimate import compile_option
    from slmrec.schema import Method

    m = Method.model_validate({
        "id": "m", "name": "m", "component": "compression", "family": "f", "summary": "s",
        "sources": ["s"], "effects": {"transform": {"weight_bits": 4},
                                      "quality": [{"low": 2, "high": 4, "source": "s", **extra}]}})
    opt = compile_option(m, {})
    assert (opt.quality is not None) == counted
    assert opt.quality_status == ("ok" if counted else "missing")


@pytest.mark.parametrize("scope,counted", [(None, True), ("decode", True), ("end-to-end", True),
                                           ("prefill", False), ("throughput", False),
                                           ("training", False), ("ttft", False)])
def test_estimator_reads_only_decode_speedups(scope, counted):
    from slmrec.estimate import compile_option
    from slmrec.schema import Method

    ev = {"low": 2, "high": 3, "source": "s", **({"scope": scope} if scope else {})}
    m = Method.model_validate({"id": "m", "name": "m", "component": "deployment", "family": "f",
                               "summary": "s", "sources": ["s"], "effects": {"speedup": [ev]}})
    assert (compile_option(m, {}).speedup is not None) == counted
