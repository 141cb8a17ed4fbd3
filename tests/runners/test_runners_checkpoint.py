"""Model sources and checkpoints: every model state the runners produce survives save/load with
the same logits; bad folders and corrupt files give one clear error."""

from __future__ import annotations

import json

import pytest
import torch

from runners.checkpoint import RECIPE, WEIGHTS
from runners.models import load_checkpoint, load_model, model_stats, save_checkpoint, tiny_model
from runners.registry import get_runner
from slmrec.errors import SlmrecError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 11]])


def run(rid, ctx, **params):
    runner = get_runner(rid)
    return runner.run(ctx, runner.Params(**params)).model


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


STATES = {
    "plain": [],
    "untied": "untied",
    "magnitude": [("magnitude-prune", {"sparsity": 0.5})],
    "structured-mlp": [("structured-prune", {"target": "mlp", "fraction": 0.5, "samples": 2, "seq_len": 32})],
    "structured-heads": [("structured-prune", {"target": "heads", "fraction": 0.5, "samples": 2, "seq_len": 32})],
    "layer-drop": [("layer-drop", {"fraction": 0.5, "samples": 2, "seq_len": 32})],
    "rtn-int8": [("weight-only-quant", {"bits": 8})],
    "rtn-int4": [("weight-only-quant", {"bits": 4, "group_size": 24})],  # partial last group
    "rtn-int4-float-emb": [("weight-only-quant", {"bits": 4, "embedding_bits": None})],
    "gptq": [("gptq", {"bits": 4, "group_size": 32, "samples": 2, "seq_len": 32})],
    "dynamic-int8": [("dynamic-int8", {})],
    "fp16": [("cast", {"dtype": "fp16"})],
    "bf16": [("cast", {"dtype": "bf16"})],
    "lora-merged": [("lora", {"rank": 2, "steps": 2, "seq_len": 16, "batch_size": 2, "merge": True})],
    "lora-unmerged": [("lora", {"rank": 2, "steps": 2, "seq_len": 16, "batch_size": 2, "merge": False})],
    "prune-quant": [("structured-prune", {"target": "mlp", "fraction": 0.25, "samples": 2, "seq_len": 32}),
                    ("weight-only-quant", {"bits": 4, "group_size": 32})],
}


@pytest.mark.parametrize("state", list(STATES))
def test_round_trip_same_logits(state, tiny, make_ctx, tmp_path):
    model, tok = tiny
    if STATES[state] == "untied":
        model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, tie_embeddings=False)
        steps = [("weight-only-quant", {"bits": 4, "group_size": 16})]
    else:
        steps = STATES[state]
    ctx = make_ctx(model, tok)
    for rid, params in steps:
        ctx.model = run(rid, ctx, **params)
    before, stats = logits(ctx.model), model_stats(ctx.model)
    folder = save_checkpoint(ctx.model, tok, tmp_path / "ck")
    loaded, tok2 = load_checkpoint(folder)
    assert torch.equal(logits(loaded), before)
    assert model_stats(loaded) == stats
    assert tok2.encode("round trip") == tok.encode("round trip")
    recipe = json.loads((folder / RECIPE).read_text())
    disk = (folder / recipe["weights"]).stat().st_size
    if recipe["layout"].startswith("compressed-tensors"):
        # the standard layout stores int4 codes one per byte and a tied table twice (layout.py)
        assert stats["size_mb"] * 1e6 - 20_000 < disk < 2.5 * stats["size_mb"] * 1e6
    else:
        assert disk == pytest.approx(stats["size_mb"] * 1e6, rel=0.02, abs=20_000)


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_hf_folders_load_and_round_trip(family, hf_folders, tmp_path, make_ctx):
    model, tok = load_model(str(hf_folders[family]))
    if family == "gpt2":  # Conv1D became nn.Linear, so the quantizers see every projection
        assert type(model.transformer.h[0].attn.c_attn) is torch.nn.Linear
    ctx = make_ctx(model, tok)
    ctx.model = run("weight-only-quant", ctx, bits=4, group_size=32)
    before = logits(ctx.model)
    loaded, _ = load_checkpoint(save_checkpoint(ctx.model, tok, tmp_path / "ck"))
    assert torch.equal(logits(loaded), before)


def test_gpt2_plain_round_trip_and_layer_drop(hf_folders, tmp_path, make_ctx):
    model, tok = load_model(str(hf_folders["gpt2"]))
    ctx = make_ctx(model, tok)
    ctx.model = run("layer-drop", ctx, fraction=0.5, samples=2, seq_len=32)
    before = logits(ctx.model)
    loaded, _ = load_checkpoint(save_checkpoint(ctx.model, tok, tmp_path / "ck"))
    assert loaded.config.n_layer == 1 and torch.equal(logits(loaded), before)


def test_save_is_atomic_and_overwrites(tiny, tmp_path):
    model, tok = tiny
    folder = save_checkpoint(model, tok, tmp_path / "ck")
    save_checkpoint(model, tok, folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


@pytest.mark.parametrize("damage, match", [
    (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:1000]), "corrupt or truncated"),
    (lambda f: (f / WEIGHTS).unlink(), "missing"),
    (lambda f: (f / RECIPE).write_text("{not json"), "corrupt JSON"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()),
                                                          "intermediate_size": 7})), "does not match|shapes"),
])
def test_corrupt_checkpoint_names_the_file(tiny, tmp_path, damage, match):
    model, tok = tiny
    folder = save_checkpoint(model, tok, tmp_path / "ck")
    damage(folder)
    with pytest.raises(SlmrecError, match=match) as err:
        load_model(str(folder))
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("source, match", [
    ("HuggingFaceTB/SmolLM2-135M", "not a local folder; slmrec never downloads"),
    ("smollm2-136m", "did you mean 'smollm2-135m'"),
    ("./no/such/folder", "not found"),
])
def test_bad_sources(source, match):
    with pytest.raises(SlmrecError, match=match):
        load_model(source)


def test_pickle_only_folder_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(SlmrecError, match="safetensors only"):
        load_model(str(tmp_path))


def test_tiny_model_config_errors():
    with pytest.raises(SlmrecError, match="unknown config key 'layer'.*did you mean 'layers'"):
        tiny_model(layer=2)
    with pytest.raises(SlmrecError, match="shared .* not supported"):
        tiny_model(shared_blocks=True)


def test_tiny_model_efficient_design():
    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=1, intermediate=96)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert attn.k_proj.out_features == 16  # MQA: one 16-wide KV head
    assert mlp.gate_proj.out_features == 96 and model.lm_head.weight is model.model.embed_tokens.weight
    assert len(tok) == 512


def test_load_model_keeps_stored_dtype_unless_asked(tiny, make_ctx, tmp_path):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    folder = save_checkpoint(run("cast", ctx, dtype="bf16"), tok, tmp_path / "ck")
    assert next(load_model(str(folder))[0].parameters()).dtype == torch.bfloat16
    assert next(load_model(str(folder), dtype="fp32")[0].parameters()).dtype == torch.float32
    with pytest.raises(SlmrecError, match="unknown dtype 'int3'"):
        load_model(str(folder), dtype="int3")
