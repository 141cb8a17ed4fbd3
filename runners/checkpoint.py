"""slmrec checkpoints: a safetensors folder that round-trips every model state the runners make.

Folder: config.json (the model's current config, so pruned shapes rebuild), model.safetensors
(tensors as stored: packed int4/int8 codes, dynamic-int8 codes, floats; tied tensors once),
slmrec.json (the recipe: module kinds to rebuild before loading the tensors), tokenizer files,
and adapter/ for an unmerged peft LoRA. Written to a temp folder, then renamed into place.

The same folder is a standard transformers folder wherever one exists: weight-only quantized
weights are written in the compressed-tensors layout with its `quantization_config`
(runners/quant/layout.py), so plain `AutoModelForCausalLM.from_pretrained` loads the same logits.
A state with no standard layout (dynamic int8, partial quantization groups, converted GPT-2
Conv1D) stores its weights as slmrec-model.safetensors instead: plain transformers then refuses
the folder (no model.safetensors) rather than loading it silently wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

from slmrec.errors import SlmrecError

FORMAT = "slmrec-checkpoint"
VERSION = 1
RECIPE = "slmrec.json"
WEIGHTS = "model.safetensors"
OWN_WEIGHTS = "slmrec-model.safetensors"  # a state no standard loader reads correctly
ADAPTER = "adapter"


def is_checkpoint(folder) -> bool:
    return (Path(folder) / RECIPE).is_file()


def _is_dynamic(m) -> bool:
    import torch.ao.nn.quantized.dynamic as nnqd
    return isinstance(m, nnqd.Linear)


def _base_of(model):
    """(base model, peft model or None)."""
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency; tolerate its absence for plain models
        return model, None
    if isinstance(model, PeftModel):
        return model.get_base_model(), model
    return model, None


def checkpoint_state(model):
    """(tensors to store, recipe) for `model`, without writing anything."""
    import torch

    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    base, peft_model = _base_of(model)
    recipe: dict = {"format": FORMAT, "version": VERSION, "model_class": type(base).__name__,
                    "conv1d_to_linear": list(getattr(base, "_slmrec_conv1d", [])),
                    "quant": {}, "dynamic_int8": {}, "aliases": {}, "lora": None}
    skip: list[str] = []
    tensors: dict[str, torch.Tensor] = {}
    for name, m in base.named_modules():
        if isinstance(m, QuantLinear):
            recipe["quant"][name] = {"kind": "linear", "in": m.in_features, "out": m.out_features,
                                     "bits": m.bits, "group_size": m.group_size, "bias": m.bias is not None}
        elif isinstance(m, QuantEmbedding):
            entry = {"kind": "embedding", "compute_dtype": str(m.compute_dtype).removeprefix("torch.")}
            if m.tied:
                entry["tied_to"] = next(n for n, x in base.named_modules() if x is m.table)
            else:
                t = m.table
                entry.update({"in": t.in_features, "out": t.out_features, "bits": t.bits,
                              "group_size": t.group_size})
            recipe["quant"][name] = entry
        elif _is_dynamic(m):
            w = m.weight()
            entry = {"in": m.in_features, "out": m.out_features, "bias": m.bias() is not None,
                     "qscheme": "per_tensor" if w.qscheme() == torch.per_tensor_affine else "per_channel"}
            tensors[f"{name}.int8_weight"] = w.int_repr().contiguous()
            if entry["qscheme"] == "per_tensor":
                tensors[f"{name}.w_scale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
                tensors[f"{name}.w_zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
            else:
                entry["axis"] = w.q_per_channel_axis()
                tensors[f"{name}.w_scale"] = w.q_per_channel_scales().contiguous()
                tensors[f"{name}.w_zero_point"] = w.q_per_channel_zero_points().contiguous()
            if m.bias() is not None:
                tensors[f"{name}.bias"] = m.bias().detach().contiguous()
            recipe["dynamic_int8"][name] = entry
            skip.append(name + ".")
    seen: dict[tuple, str] = {}
    for key, t in base.state_dict(keep_vars=False).items():
        if any(key.startswith(s) for s in skip):
            continue
        if peft_model is not None:
            if "lora_" in key:
                continue  # adapters are stored by peft in adapter/
            key = key.replace(".base_layer.", ".")
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if ident in seen:  # tied: store once, rebuild the tie at load
            recipe["aliases"][key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t.detach().contiguous()
    floats = [p.dtype for p in base.parameters() if p.is_floating_point()]
    recipe["dtype"] = str(floats[0] if floats else torch.float32).removeprefix("torch.")
    if peft_model is not None:
        recipe["lora"] = ADAPTER
    return tensors, recipe


def save_checkpoint(model, tokenizer, folder) -> Path:
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        from runners.quant.layout import LAYOUT, to_standard, why_not_standard
        tensors, recipe = checkpoint_state(model)
        base, peft_model = _base_of(model)
        config = base.config.to_dict()
        recipe["tie_word_embeddings"] = bool(getattr(base.config, "tie_word_embeddings", False))
        reason = why_not_standard(base, recipe)
        if reason is None:
            to_standard(tensors, recipe, config)
            recipe.update(weights=WEIGHTS, layout=LAYOUT if recipe["quant"] else "transformers")
        else:
            recipe.update(weights=OWN_WEIGHTS, layout="slmrec", not_standard=reason)
        save_file(tensors, str(tmp / recipe["weights"]), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if peft_model is not None:
            peft_model.save_pretrained(str(tmp / ADAPTER), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=1))  # last: marks a complete folder
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:6]}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def checkpoint_digest(folder) -> str:
    """sha256 over every file of a checkpoint folder (relative names and bytes, in name order):
    recorded in state.json when the step completes, verified before `--resume` trusts it."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SlmrecError.one(str(path), "missing: not a complete slmrec checkpoint")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlmrecError.one(str(path), f"corrupt JSON ({e})") from None


def load_checkpoint(folder):
    """(model, tokenizer or None) from a folder written by save_checkpoint."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from runners.models import conv1d_to_linear, replace_module
    folder = Path(folder)
    recipe = _read_json(folder / RECIPE)
    if recipe.get("format") != FORMAT or recipe.get("version") != VERSION:
        raise SlmrecError.one(str(folder / RECIPE), f"not an {FORMAT} version {VERSION} recipe")
    lacking = [k for k in ("quant", "dynamic_int8", "aliases", "conv1d_to_linear")
               if not isinstance(recipe.get(k), (dict, list))]
    if lacking:
        raise SlmrecError.one(str(folder / RECIPE), f"corrupt recipe: '{lacking[0]}' missing")
    _read_json(folder / "config.json")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as e:
        raise SlmrecError.one(str(folder / "config.json"), f"invalid model config: {str(e).splitlines()[0]}") from None
    weights = folder / recipe.get("weights", WEIGHTS)
    if not weights.is_file():
        raise SlmrecError.one(str(weights), "missing: not a complete slmrec checkpoint")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SlmrecError.one(str(weights), f"corrupt or truncated safetensors file ({e})") from None
    if recipe.get("layout", "").startswith("compressed-tensors"):
        from runners.quant.layout import from_standard
        try:
            from_standard(tensors, recipe)
        except KeyError as k:
            raise SlmrecError.one(str(weights), f"packed module lacks tensor {k}") from None
    if hasattr(config, "quantization_config"):  # transformers' own loader reads it; ours rebuilds
        del config.quantization_config
    if "tie_word_embeddings" in recipe:
        config.tie_word_embeddings = recipe["tie_word_embeddings"]
    dtype = getattr(torch, recipe.get("dtype", "float32"))
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # no_init_weights also skips tying
    if recipe["conv1d_to_linear"]:
        model._slmrec_conv1d = conv1d_to_linear(model)
    _rebuild_quant(model, recipe)
    dynamic = _dynamic_modules(recipe, tensors)  # swapped in after loading the float tensors
    for alias, key in recipe["aliases"].items():
        if key in tensors:
            tensors[alias] = tensors[key]
    expected = {k for k in model.state_dict() if not any(k.startswith(n + ".") for n in dynamic)}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        what = f"missing tensors {missing[:3]}" if missing else f"unexpected tensors {unexpected[:3]}"
        raise SlmrecError.one(str(weights), f"does not match config.json and {RECIPE}: {what}")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:
        detail = str(e).splitlines()[-1].strip()
        raise SlmrecError.one(str(weights), f"tensor shapes do not match config.json: {detail}") from None
    for name, mod in dynamic.items():
        replace_module(model, name, mod)
    model.eval()
    tok = _load_tokenizer(folder)
    if recipe.get("lora"):
        from peft import PeftModel
        adapter = folder / recipe["lora"]
        if not (adapter / "adapter_config.json").is_file():
            raise SlmrecError.one(str(adapter), "missing adapter_config.json for the unmerged LoRA")
        check_adapter_folder(adapter)
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True).eval()
    return model, tok


def check_adapter_folder(adapter: Path) -> None:
    """Adapters load from safetensors only: peft falls back to torch.load (pickle) when
    adapter_model.safetensors is absent, so that case is refused before peft is called."""
    adapter = Path(adapter)
    if adapter.is_symlink() or not adapter.is_dir():
        raise SlmrecError.one(str(adapter), "the LoRA adapter folder is missing")
    pickles = sorted(p.name for p in adapter.iterdir()
                     if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if pickles:
        raise SlmrecError.one(str(adapter), f"holds pickle weights ({', '.join(pickles[:3])}); "
                              "slmrec loads adapters from adapter_model.safetensors only")
    st = adapter / "adapter_model.safetensors"
    if not st.is_file() or st.is_symlink():
        raise SlmrecError.one(str(st), "missing: slmrec loads LoRA adapters from safetensors only")


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        return None
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError) as e:
        raise SlmrecError.one(str(folder / "tokenizer.json"),
                              f"cannot load tokenizer: {str(e).splitlines()[0]}") from None


def _rebuild_quant(model, recipe: dict) -> None:
    """Swap in the packed module kinds the recipe names (empty), so the tensors load into them."""
    import torch

    from runners.models import replace_module
    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    for name, e in recipe["quant"].items():
        if e["kind"] == "linear":
            replace_module(model, name, QuantLinear(e["in"], e["out"], e["bits"], e["group_size"], e["bias"]))
    for name, e in recipe["quant"].items():
        if e["kind"] == "embedding":
            cdt = getattr(torch, e.get("compute_dtype", "float32"))
            if "tied_to" in e:
                emb = QuantEmbedding(model.get_submodule(e["tied_to"]), tied=True, compute_dtype=cdt)
            else:
                emb = QuantEmbedding(QuantLinear(e["in"], e["out"], e["bits"], e["group_size"]), False, cdt)
            replace_module(model, name, emb)


def _dynamic_modules(recipe: dict, tensors: dict) -> dict:
    """torch.ao dynamic int8 linears rebuilt from their stored int8 codes and scales."""
    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    out = {}
    for name, e in recipe["dynamic_int8"].items():
        try:
            q = tensors.pop(f"{name}.int8_weight")
            scale, zp = tensors.pop(f"{name}.w_scale"), tensors.pop(f"{name}.w_zero_point")
            bias = tensors.pop(f"{name}.bias", None)
        except KeyError as k:
            raise SlmrecError.one(WEIGHTS, f"dynamic-int8 module '{name}' lacks tensor {k}") from None
        if e["qscheme"] == "per_tensor":
            w = torch._make_per_tensor_quantized_tensor(q, float(scale[0]), int(zp[0]))
        else:
            w = torch._make_per_channel_quantized_tensor(q, scale, zp, e["axis"])
        mod = nnqd.Linear(e["in"], e["out"], bias_=e["bias"], dtype=torch.qint8)
        mod.set_weight_bias(w, bias)
        out[name] = mod
    return out


def model_stats(model) -> dict[str, float]:
    """params (logical weights as stored, ties counted once), nonzero_params, sparsity,
    size_mb (bytes of the serialised state, packed codes counted packed, 1 MB = 1e6 bytes),
    bits_per_weight (serialised bits per parameter)."""
    import torch

    from runners.quant.qlinear import QuantLinear
    tensors, _ = checkpoint_state(model)
    base, peft_model = _base_of(model)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if peft_model is not None:
        size += sum(p.numel() * p.element_size() for n, p in base.named_parameters() if "lora_" in n)
    params = nonzero = 0
    seen: set[int] = set()
    with torch.no_grad():
        for m in base.modules():
            if isinstance(m, QuantLinear):
                codes = _codes(m)
                params += codes.numel() + (m.bias.numel() if m.bias is not None else 0)
                nonzero += int((codes != _zeros_full(m)).sum())
            elif _is_dynamic(m):
                w = m.weight()
                params += w.numel()
                nonzero += int(w.dequantize().count_nonzero())
            else:
                for p in m.parameters(recurse=False):
                    if id(p) not in seen:
                        seen.add(id(p))
                        params += p.numel()
                        nonzero += int(p.count_nonzero())
    return {"params": float(params), "nonzero_params": float(nonzero),
            "sparsity": 1.0 - nonzero / params if params else 0.0,
            "size_mb": size / 1e6, "bits_per_weight": 8.0 * size / params if params else 0.0}


def _codes(m):
    from runners.quant.qlinear import unpack
    return unpack(m.qweight, m.bits, m.in_features)


def _zeros_full(m):
    from runners.quant.qlinear import _expand
    return _expand(m.zeros, m.group_size, m.in_features)
