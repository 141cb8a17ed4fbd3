"""The on-disk layout of packed weights: compressed-tensors "int-quantized", which plain
`transformers.AutoModelForCausalLM.from_pretrained` loads (with the `compressed-tensors` package)
to the same logits as slmrec's own modules.

Per quantized module `m` (a linear, or an embedding table):
  m.weight             int8 (out, in)   signed code = slmrec code - 2**(bits-1)
  m.weight_scale       fp16 (out, G)    one scale per row and group of `group_size` columns
  m.weight_zero_point  int8 (out, G)    signed zero point, same offset as the codes
dequantised as (weight - weight_zero_point) * weight_scale, which is slmrec's (code - zero) * scale.

Why this layout and not another (measured with transformers 5.24.0 and compressed-tensors 0.20.1
on CPU, see docs/deploy.md): "pack-quantized" (int4 packed eight per int32) fails to load an
asymmetric checkpoint (the zero point is created unpacked on load, then unpacked again), so int4
codes are stored one per byte here; compressed-tensors requires every quantized width to be a
multiple of the group size, so a model with a partial last group has no standard layout (see
`why_not_standard`); an embedding quantized while tied to the head cannot be loaded tied, so the
folder unties them and stores the table twice (once as the embedding, once as the head).
"""

from __future__ import annotations

import torch

LAYOUT = "compressed-tensors/int-quantized"


def why_not_standard(model, recipe: dict) -> str | None:
    """None when the checkpoint can be written in a layout plain transformers loads correctly,
    else the reason (the folder is then written so that plain transformers refuses it)."""
    if recipe["dynamic_int8"]:
        return "torch.ao dynamic-int8 modules have no transformers loading format"
    if recipe["conv1d_to_linear"]:
        return "GPT-2 Conv1D layers converted to Linear store their weights transposed"
    for name, e in _quantized(recipe):
        if e["in"] % e["group_size"]:
            return (f"'{name}' has {e['in']} input columns, not a multiple of group_size "
                    f"{e['group_size']} (compressed-tensors needs whole groups; use a group size "
                    "that divides every width, e.g. 64 or 32 for SmolLM2)")
    return None


def _quantized(recipe: dict):
    """(module name, entry) of every stored packed table, once: a tied embedding stores none, and
    an untied embedding owns the table registered under it as `.q`."""
    q = recipe["quant"]
    for name, e in q.items():
        inner = name.endswith(".q") and q.get(name[:-2], {}).get("kind") == "embedding"
        if "tied_to" not in e and not inner:
            yield name, e


def _stored(name: str, e: dict) -> str:
    """Where slmrec's state keeps the packed buffers of module `name`."""
    return f"{name}.q" if e["kind"] == "embedding" else name


def to_standard(tensors: dict, recipe: dict, config: dict) -> None:
    """Rename slmrec's packed buffers into the compressed-tensors layout, in place, and add the
    `quantization_config` to `config` (a config.json dict)."""
    if not recipe["quant"]:
        return
    groups: dict[tuple[int, int], list[str]] = {}
    owners = dict(_quantized(recipe))
    for name, e in recipe["quant"].items():
        if "tied_to" not in e and name not in owners:
            continue
        src = e if "tied_to" not in e else recipe["quant"][e["tied_to"]]
        key = _stored(name, e) if "tied_to" not in e else _stored(e["tied_to"], src)
        off = 1 << (src["bits"] - 1)
        codes = _unpack(tensors[f"{key}.qweight"], src["bits"], src["in"])
        out = {"weight": (codes.to(torch.int16) - off).to(torch.int8),
               "weight_scale": tensors[f"{key}.scales"],
               "weight_zero_point": (tensors[f"{key}.zeros"].to(torch.int16) - off).to(torch.int8)}
        for suffix, t in out.items():  # a tied copy gets its own storage (safetensors refuses shared)
            tensors[f"{name}.{suffix}"] = t.clone() if "tied_to" in e else t.contiguous()
        groups.setdefault((src["bits"], src["group_size"]), []).append(name)
        if "tied_to" in e:
            config["tie_word_embeddings"] = False  # a quantized table cannot load tied
    for name, e in _quantized(recipe):
        key = _stored(name, e)
        for suffix in ("qweight", "scales", "zeros"):
            del tensors[f"{key}.{suffix}"]
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "int-quantized",
        "quantization_status": "compressed", "ignore": [],
        "config_groups": {f"group_{i}": _scheme(bits, gs, names)
                          for i, ((bits, gs), names) in enumerate(sorted(groups.items()))}}


def _scheme(bits: int, group_size: int, names: list[str]) -> dict:
    return {"targets": ["re:^" + n.replace(".", r"\.") + "$" for n in sorted(names)],
            "format": "int-quantized", "input_activations": None, "output_activations": None,
            "weights": {"num_bits": bits, "type": "int", "symmetric": False, "strategy": "group",
                        "group_size": group_size, "dynamic": False, "observer": "minmax"}}


def from_standard(tensors: dict, recipe: dict) -> None:
    """The inverse of to_standard, in place: compressed-tensors tensors back to slmrec's buffers."""
    from runners.quant.qlinear import pack
    for name, e in recipe["quant"].items():
        if "tied_to" in e:
            for suffix in ("weight", "weight_scale", "weight_zero_point"):
                tensors.pop(f"{name}.{suffix}", None)
    for name, e in _quantized(recipe):
        off = 1 << (e["bits"] - 1)
        key = _stored(name, e)
        codes = tensors.pop(f"{name}.weight").to(torch.int16) + off
        tensors[f"{key}.qweight"] = pack(codes.to(torch.uint8), e["bits"])
        tensors[f"{key}.scales"] = tensors.pop(f"{name}.weight_scale").half()
        tensors[f"{key}.zeros"] = (tensors.pop(f"{name}.weight_zero_point").to(torch.int16) + off).to(torch.uint8)


def _unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    from runners.quant.qlinear import unpack
    return unpack(packed, bits, cols)


def own_names(names: set[str], recipe: dict) -> set[str]:
    """Tensor names of a checkpoint file as slmrec's modules name them (for checks that read
    names only, without loading tensors)."""
    if not str(recipe.get("layout", "")).startswith("compressed-tensors"):
        return set(names)
    names = set(names)
    suffixes = (("weight", "qweight"), ("weight_scale", "scales"), ("weight_zero_point", "zeros"))
    for name, e in recipe["quant"].items():
        if "tied_to" in e:
            names -= {f"{name}.{ct}" for ct, _ in suffixes}
    for name, e in _quantized(recipe):
        for ct, own in suffixes:
            if f"{name}.{ct}" in names:
                names.discard(f"{name}.{ct}")
                names.add(f"{_stored(name, e)}.{own}")
    return names
