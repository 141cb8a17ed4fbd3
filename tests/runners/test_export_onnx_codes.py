"""ONNX export of RTN/GPTQ-quantized models carries their integer codes (runners/export/onnx_codes.py):
MatMulNBits / GatherBlockQuantized initializers hold exactly slmrec's codes, ONNX Runtime reproduces
slmrec's own quantized model, grids MatMulNBits cannot express are refused, and a plan's onnx export
step after a quantizer carries the codes and is measured in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from runners.export.codes import quantized_weights
from runners.models import tiny_model
from slmrec.errors import SlmrecError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = [5, 17, 42, 99, 7, 250, 3, 11, 64, 128, 300, 9]
SHAPE = dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=160, vocab=512)


def _quantized(method, bits, group, emb_bits):
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    m = tiny_model(**SHAPE)[0]
    if method == "gptq":
        from runners.quant.gptq import quantize_gptq
        calib = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
        quantize_gptq(m, calib, bits, group, 0.01, act_order=True)
    quantize_rtn(m, bits, group)
    quantize_embeddings(m, emb_bits, group)
    return m


def _reference(model):
    """slmrec's own logits, dequantise + matmul in fp32 (the packed CPU kernels round through bf16)."""
    from runners.quant import kernels
    before, kernels.KERNELS_ENABLED = kernels.KERNELS_ENABLED, False
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([IDS])).logits[0].numpy()
    finally:
        kernels.KERNELS_ENABLED = before


# (method, bits, group, embedding bits, accuracy_level) -> max |logit diff| / max |logit| allowed
CASES = {("rtn", 4, 32, 8, 0): 1e-5,   # 160-wide MLP: a partial last group of 32
         ("gptq", 4, 64, None, 0): 1e-5,  # tied head left float: a plain Gather and a float head
         ("rtn", 8, 16, 4, 0): 1e-5,
         ("rtn", 8, 64, 8, 4): 2e-2}   # int8 activations: close, not exact


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from runners.export.onnx import export_onnx
    out = {}
    for case in CASES:
        model = _quantized(*case[:4])
        path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m", accuracy_level=case[4])
        out[case] = (model, path)
    return out


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(map(str, c)))
def test_onnxruntime_reproduces_slmrecs_quantized_model(case, exported):
    from runners.runtime import open_session
    model, path = exported[case]
    ref = _reference(model)
    sess = open_session("onnxruntime", path)
    tol = CASES[case] * np.abs(ref).max()
    assert np.abs(sess.logits(IDS) - ref).max() <= tol
    step = sess.prefill(IDS[:7])  # KV-cache decode
    for t in IDS[7:]:
        step = sess.step(t)
    assert np.abs(step - ref[-1]).max() <= tol


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(map(str, c)))
def test_initializers_hold_the_codes_themselves(case, exported):
    import onnx
    from onnx import numpy_helper
    model, path = exported[case]
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node if n.domain == "com.microsoft"}
    weights = quantized_weights(model)
    assert len(nodes) == len(weights)
    for q in weights:
        op = "MatMulNBits" if q.kind == "linear" else "GatherBlockQuantized"
        node = nodes[f"{q.name}.{op}"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["bits"] == q.bits and attrs["block_size"] == q.group_size
        assert attrs.get("accuracy_level", 0) == (case[4] if op == "MatMulNBits" else 0)
        packed = inits[node.input[1 if op == "MatMulNBits" else 0]].reshape(q.shape[0], -1)
        codes = packed if q.bits == 8 else np.stack([packed & 15, packed >> 4], -1).reshape(q.shape[0], -1)
        assert np.array_equal(codes[:, : q.shape[1]], q.codes.numpy())
        assert np.array_equal(inits[node.input[2 if op == "MatMulNBits" else 2]].reshape(q.scale.shape),
                              q.scale.numpy())
    # every constant MatMul weight was carried (a float head tied to the table is not a constant)
    assert not any(n.op_type == "MatMul" and n.input[1] in inits for n in proto.graph.node)


@pytest.mark.parametrize("bits,group,problem", [(4, 48, "groups of 48"), (8, 8, "groups of 8")])
def test_a_grid_matmulnbits_cannot_express_is_refused_in_one_line(bits, group, problem, tmp_path):
    from runners.export.onnx import export_onnx
    model = _quantized("rtn", bits, group, None)
    with pytest.raises(SlmrecError) as e:
        export_onnx(model, tmp_path / "m")
    msg = str(e.value)
    assert problem in msg and "MatMulNBits" in msg and "\n" not in msg.strip()
    assert not (tmp_path / "m").exists()  # refused before writing anything


def test_plan_quantize_then_onnx_export_carries_the_codes_into_onnxruntime(tmp_path, monkeypatch):
    from runners.execute import execute
    from runners.models import save_checkpoint
    from slmrec.kb import load_kb
    from slmrec.plan import load_plan
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "runs.sqlite"))
    model, tok = tiny_model(**SHAPE)
    base = save_checkpoint(model, tok, tmp_path / "tiny")
    plan = {"name": "deploy-onnx", "base_model": str(base),
            "steps": [{"method": "rtn-weight-only", "params": {"bits": 4, "group_size": 32}},
                      {"method": "onnx-export", "params": {"accuracy_level": 0}}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    kb = load_kb()
    report = execute(load_plan(tmp_path / "plan.yaml", kb), kb=kb, out_dir=tmp_path / "run", progress=False)
    assert report.status == "completed", report.reason
    quant, export = report.steps
    assert export.artifacts["runtime"] == "onnxruntime"
    assert any("carried from their integer codes" in n for n in export.notes)
    assert any("measured on the exported file in onnxruntime" in n for n in export.notes)
    # the ONNX file's perplexity, measured in ONNX Runtime, is the quantized model's own
    assert export.metrics["ppl"] == pytest.approx(quant.metrics["ppl"], rel=2e-3)


def test_accuracy_level_copy_shares_the_weights_and_switches_the_kernels(exported):
    import onnx

    from runners.export.onnx import with_accuracy_level
    from runners.runtime import open_session
    case = ("rtn", 4, 32, 8, 0)
    model, path = exported[case]
    fast = with_accuracy_level(path, 4)
    levels = {onnx.helper.get_attribute_value(a) for n in onnx.load(str(fast), load_external_data=False).graph.node
              if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}
    ref = _reference(model)
    got = open_session("onnxruntime", fast).logits(IDS)
    assert np.abs(got - ref).max() <= 2e-2 * np.abs(ref).max()
