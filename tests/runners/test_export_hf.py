"""Every runner's checkpoint folder, opened by its standard consumer: plain
`transformers.AutoModelForCausalLM.from_pretrained` either loads the same logits as slmrec's own
model, or refuses the folder loudly. It never loads it silently wrong."""

from __future__ import annotations

import json

import pytest
import torch

from runners.checkpoint import OWN_WEIGHTS, RECIPE, WEIGHTS
from runners.models import load_checkpoint, save_checkpoint, tiny_model
from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 11]])


@pytest.fixture(autouse=True)
def _dequantise_path(monkeypatch):
    """Compare the stored weights, not kernels: slmrec's packed CPU kernels (bf16 activations for
    int4) round differently from dequantise + F.linear, which is what transformers runs."""
    from runners.quant import kernels
    monkeypatch.setattr(kernels, "KERNELS_ENABLED", False)

# state -> (steps, whether a standard layout exists). The tiny model is 64 wide, 128 in the MLP.
STATES = {
    "plain": ([], True),
    "rtn-int8": ([("weight-only-quant", {"bits": 8, "group_size": 32})], True),
    "rtn-int4": ([("weight-only-quant", {"bits": 4, "group_size": 32})], True),
    "rtn-int4-float-emb": ([("weight-only-quant", {"bits": 4, "group_size": 64, "embedding_bits": None})], True),
    "gptq-int4": ([("gptq", {"bits": 4, "group_size": 32, "samples": 2, "seq_len": 32})], True),
    "rtn-int4-partial-group": ([("weight-only-quant", {"bits": 4, "group_size": 48})], False),
    "dynamic-int8": ([("dynamic-int8", {})], False),
    "bf16": ([("cast", {"dtype": "bf16"})], True),
    "prune-quant": ([("structured-prune", {"target": "mlp", "fraction": 0.25, "samples": 2, "seq_len": 32}),
                     ("weight-only-quant", {"bits": 8, "group_size": 32})], True),
}


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def _plain_load(folder):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False).eval()


@pytest.mark.parametrize("state", list(STATES))
def test_plain_transformers_loads_same_logits_or_refuses(state, tiny, make_ctx, tmp_path):
    model, tok = tiny
    steps, standard = STATES[state]
    ctx = make_ctx(model, tok)
    for rid, params in steps:
        runner = get_runner(rid)
        ctx.model = runner.run(ctx, runner.Params(**params)).model
    ours = _logits(ctx.model)
    folder = save_checkpoint(ctx.model, tok, tmp_path / "ck")
    recipe = json.loads((folder / RECIPE).read_text())
    assert (folder / WEIGHTS).is_file() is standard, recipe.get("not_standard")
    if standard:
        theirs = _plain_load(folder)
        atol = 2e-2 if state == "bf16" else 1e-4
        torch.testing.assert_close(_logits(theirs), ours, atol=atol, rtol=0)
        if any(s[0] in ("weight-only-quant", "gptq") for s in steps):
            qc = json.loads((folder / "config.json").read_text())["quantization_config"]
            assert qc["quant_method"] == "compressed-tensors"
    else:
        assert (folder / OWN_WEIGHTS).is_file()
        with pytest.raises((OSError, ValueError, RuntimeError)):
            _plain_load(folder)
    # slmrec's own pre-flight check and loader still read its folder back exactly
    from runners.models import check_model_folder
    check_model_folder(str(folder))
    again, _ = load_checkpoint(folder)
    torch.testing.assert_close(_logits(again), ours, atol=1e-5, rtol=0)


def test_untied_quantized_embedding_round_trips(tmp_path):
    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, tie_embeddings=False)
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    quantize_rtn(model, 4, 16)
    quantize_embeddings(model, 8, 16)
    ours = _logits(model)
    folder = save_checkpoint(model, tok, tmp_path / "ck")
    # dequantised by compressed-tensors in its own op order: equal to float rounding
    torch.testing.assert_close(_logits(_plain_load(folder)), ours, atol=1e-3, rtol=0)
    torch.testing.assert_close(_logits(load_checkpoint(folder)[0]), ours, atol=1e-5, rtol=0)
