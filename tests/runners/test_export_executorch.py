"""ExecuTorch export: the .pte (XNNPACK) runs in ExecuTorch's Python runtime and gives the source
model's logits, for the whole sequence and through its KV cache (prefill, then one token at a
time); the 8da4w program stays close. Skipped when the optional `executorch` extra is absent,
except the missing-extra error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runners.models import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = [5, 17, 42, 99, 7, 250, 3, 11, 64, 128]
# quant -> max |logit difference| allowed against the float model, as a fraction of max |logit|
TOL = {"none": 1e-4, "8da4w": 0.15}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)


@pytest.fixture(scope="module")
def ref(tiny):
    with torch.no_grad():
        return tiny[0](input_ids=torch.tensor([IDS])).logits[0].numpy()


@pytest.mark.parametrize("quant", list(TOL))
def test_pte_runs_in_executorch_with_the_source_logits(quant, tiny, ref, tmp_path):
    pytest.importorskip("executorch", reason="ExecuTorch is the optional `executorch` extra")
    from runners.export.executorch import export_executorch
    from runners.runtime import open_session
    from runners.runtime.measure import latency
    path = export_executorch(tiny[0], tmp_path / "tiny.pte", quant, max_seq_len=32)
    sess = open_session("executorch", path)
    scale = np.abs(ref).max()
    got = sess.logits(IDS)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < TOL[quant] * scale
    step = sess.prefill(IDS[:6])  # decode through the program's own cache gives the same logits
    for i in range(6, len(IDS)):
        step = sess.step(IDS[i])
    assert np.abs(step - got[-1]).max() < max(1e-4, TOL[quant] / 10) * scale
    if quant == "none":  # the float program differs from the float model only by rounding
        assert np.abs(step - ref[-1]).max() < 1e-4 * scale
    else:  # quantization moved the logits: the check above is not vacuous
        assert np.abs(got - ref).max() > 1e-4 * scale
    lat = latency(sess, tiny[0].config.vocab_size, prompt_len=8, new_tokens=4, repeats=1)
    assert lat["runtime"] == "executorch" and lat["threads"] == 1 and lat["decode_ms_per_token"] > 0


def test_missing_executorch_names_the_extra(monkeypatch, tiny, tmp_path):
    import importlib.util

    from runners.export import executorch as et
    from slmrec.errors import SlmrecError
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(SlmrecError) as e:
        et.export_executorch(tiny[0], tmp_path / "x.pte")
    msg = str(e.value)
    assert "executorch" in msg and "[executorch]" in msg and "\n" not in msg.strip()


def test_export_step_without_executorch_fails_in_one_line(monkeypatch, tiny, tmp_path):
    import importlib.util

    from runners.base import StepContext, StepFailed
    from runners.export import Export
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    runner = Export()
    ctx = StepContext(model=tiny[0], tokenizer=tiny[1], corpus=None, workdir=tmp_path)
    with pytest.raises(StepFailed, match=r"pip install -e '\.\[executorch\]'"):
        runner.run(ctx, runner.Params(format="executorch", executorch_quant="8da4w", max_seq_len=64))
    assert not list(tmp_path.glob("*.pte"))
