"""GGUF export of a Llama-architecture model for llama.cpp, through the `gguf` package's writer and
quantizers: llama.cpp's tensor names and metadata keys, q/k rows permuted to llama.cpp's rotary
layout (as its convert_hf_to_gguf.py does), and the tokenizer (gpt2-style BPE) with its merges,
special tokens and chat template.

Types: F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (the block quantizers the gguf package implements),
the k-quant mixtures in K_QUANTS (llama.cpp's own quantizer through llama-cpp-python, the `deploy`
extra: the gguf package has no k-quant quantizer), and `auto`: the type that carries the model's
packed GPTQ/RTN codes as they are (runners/export/gguf_blocks.py), F16 for a float model.
Packed weights whose grid a type cannot hold are dequantised and re-quantized (a second rounding),
and the export says which (see docs/deploy.md).
"""

from __future__ import annotations

import ctypes
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from runners.export.gguf_blocks import CARRIERS, Codes, auto_type, carry, why_not
from slmrec.errors import SlmrecError

TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
# k-quant mixtures written by llama.cpp's quantizer (llama_model_quantize), its LLAMA_FTYPE_* names
K_QUANTS = {"Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
            "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
            "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M"}
ALL_TYPES = ("auto", *TYPES, *K_QUANTS)
# general.file_type values (llama.cpp's LLAMA_FTYPE_*)
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7}
# The embedding table (also the output head when tied) stays at 8 bits in 4/5-bit files, as
# llama.cpp's own quantize keeps the output at higher precision.
TABLE_TYPE = {"Q4_0": "Q8_0", "Q4_1": "Q8_0", "Q5_0": "Q8_0", "Q5_1": "Q8_0"}
TABLES = ("token_embd.weight", "output.weight")
LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
         "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def _weights(model) -> dict[str, "torch.Tensor | Codes"]:
    """Every tensor of the model by HF name: fp32, or the codes of a packed slmrec weight
    (runners/export/codes.py lists them; an untied table's inner linear is listed as the table)."""
    from runners.export.codes import quantized_weights
    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    out: dict = {}
    for q in quantized_weights(model):
        out[f"{q.name}.weight"] = Codes.of(q)
        if q.bias is not None:
            out[f"{q.name}.bias"] = q.bias
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            continue
        if "quantized" in type(m).__module__:
            raise SlmrecError.one("export", "a torch.ao dynamic-int8 model cannot be exported to GGUF; "
                                  "export the float model with a GGUF quantization type instead")
        for pn, p in list(m.named_parameters(recurse=False)):
            out[f"{name}.{pn}"] = p.detach().float()
    return out


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf.py)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _check(model) -> None:
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise SlmrecError.one("export", f"GGUF export supports Llama-architecture models; this is "
                              f"'{getattr(cfg, 'model_type', '?')}'")
    if hasattr(model, "peft_config"):
        raise SlmrecError.one("export", "merge the LoRA adapters first (lora with merge: true)")
    layers = model.model.layers
    widths = {(lay.self_attn.q_proj.out_features if hasattr(lay.self_attn.q_proj, "out_features") else None,
               lay.mlp.gate_proj.out_features) for lay in layers}
    if len(widths) > 1:
        raise SlmrecError.one("export", "layers of different widths (structured pruning) cannot be "
                              "described by GGUF's per-model llama metadata")


def _tokenizer(writer, tokenizer, vocab_size: int) -> None:
    import gguf
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text())
        if data["model"]["type"] != "BPE":
            raise SlmrecError.one("export", f"GGUF export handles BPE tokenizers; this one is {data['model']['type']}")
        vocab = {**data["model"]["vocab"], **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}
        special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
        tokens = [f"[PAD{i}]" for i in range(vocab_size)]
        types = [gguf.TokenType.UNUSED] * vocab_size
        for tok, i in vocab.items():
            if i < vocab_size:
                tokens[i] = tok
                types[i] = gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre(vocab))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


# llama.cpp's pre-tokenizer name for the bundled models' tokenizers (their GGUF's tokenizer.ggml.pre)
PRE_TOKENIZER = {"smollm2-135m": "smollm"}


def _pre(vocab: dict[str, int]) -> str:
    """llama.cpp's pre-tokenizer name: a bundled model's when the vocabulary is the same (compared
    with its converted folder, when cached), else the generic one. Token ids given directly are
    unaffected; only text tokenization inside llama.cpp depends on it."""
    from runners.models import cache_root
    for model_id, pre in PRE_TOKENIZER.items():
        f = cache_root() / "models" / model_id / "tokenizer.json"
        if f.is_file():
            data = json.loads(f.read_text())
            theirs = {**data["model"]["vocab"], **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}
            if theirs == vocab:
                return pre
    return "default"


def export_gguf(model, tokenizer, path, qtype: str = "auto", name: str = "model",
                log: dict | None = None, threads: int = 1) -> Path:
    """Write `model` as one .gguf of type `qtype` (ALL_TYPES). `log`, when given, receives the type
    written ("type"), how many packed weights were carried as they are ("carried") and which
    were re-quantized, with why ("requantized": {tensor: reason})."""
    if qtype not in ALL_TYPES:
        raise SlmrecError.one("export", f"unknown GGUF type '{qtype}'; valid: {', '.join(ALL_TYPES)}")
    _check(model)
    log = {} if log is None else log
    weights = _weights(model)
    if qtype in K_QUANTS:
        return _k_quant(model, tokenizer, Path(path), qtype, name, weights, log, threads)
    if qtype == "auto":
        qtype = _auto(weights)
    log.update(type=qtype, carried=0, requantized={})
    _write(model, tokenizer, Path(path), qtype, name, weights, log)
    return Path(path)


def _auto(weights: dict) -> str:
    """F16 for a float model; else the type that carries its packed matrices (gguf_blocks.CARRIERS),
    or the widest type of that bit width when none carries them all (they are then re-quantized)."""
    codes = [c for hf, c in weights.items() if isinstance(c, Codes) and _gguf_name(hf)[0] not in TABLES]
    if not codes:
        return "F16"
    return auto_type(codes) or CARRIERS.get(max(c.bits for c in codes), ("Q8_0",))[-1]


def _k_quant(model, tokenizer, path: Path, qtype: str, name: str, weights: dict, log: dict,
             threads: int) -> Path:
    """An F32 GGUF quantized to a k-quant mixture by llama.cpp's own quantizer."""
    try:
        import llama_cpp
    except ImportError:
        raise SlmrecError.one("export", f"GGUF type {qtype} is quantized by llama.cpp: install the "
                              "`deploy` extra (pip install -e '.[deploy]'), or use Q4_0/Q4_1/Q8_0") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp) / "f32.gguf"
        _write(model, tokenizer, src, "F32", name, weights, {"carried": 0, "requantized": {}})
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, K_QUANTS[qtype])
        params.nthread = threads
        llama_cpp.llama_backend_init()
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(path).encode(), ctypes.byref(params))
    if rc != 0:
        raise SlmrecError.one("export", f"llama.cpp could not quantize to {qtype} (llama_model_quantize "
                              f"returned {rc})")
    packed = sum(isinstance(c, Codes) for c in weights.values())
    log.update(type=qtype, carried=0,
               requantized={"all packed weights": "k-quants are re-quantized by llama.cpp"} if packed else {})
    return path


def _write(model, tokenizer, path: Path, qtype: str, name: str, weights: dict, log: dict) -> None:
    import gguf
    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(FILE_TYPE[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer(w, tokenizer, cfg.vocab_size)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf, t in weights.items():
        gname, kind = _gguf_name(hf)
        if gname is None or (tied and gname == "output.weight"):
            continue
        perm = n_head if gname.endswith("attn_q.weight") else n_kv if gname.endswith("attn_k.weight") else None
        if perm is not None:
            t = t.rows(lambda a: _permute(a, perm)) if isinstance(t, Codes) else _permute(t.numpy(), perm)
        target = qtype if kind == "matrix" else "F32"
        _add(w, gname, t, TABLE_TYPE.get(qtype, qtype) if gname in TABLES else target, log)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _gguf_name(hf: str) -> tuple[str | None, str]:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight", "matrix"
    if hf == "model.norm.weight":
        return "output_norm.weight", "vector"
    if hf == "lm_head.weight":
        return "output.weight", "matrix"
    parts = hf.split(".")
    if parts[:2] == ["model", "layers"]:
        i, rest = parts[2], ".".join(parts[3:-1])
        if rest in LAYER:
            return f"blk.{i}.{LAYER[rest]}.{parts[-1]}", "matrix" if parts[-1] == "weight" and "norm" not in rest else "vector"
    raise SlmrecError.one("export", f"tensor '{hf}' has no llama.cpp name (attention biases and "
                          "other extras are not part of the llama GGUF layout)")


def _add(writer, name: str, t, qtype: str, log: dict) -> None:
    import gguf
    if isinstance(t, Codes):
        raw = carry(t, qtype)
        if raw is not None:
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[qtype])
            log["carried"] += 1
            return
        log["requantized"][name] = f"to {qtype}: {why_not(t, qtype) or 'a float type'}"
        t = t.dequantize()
    a = np.ascontiguousarray(t.numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
    gtype = gguf.GGMLQuantizationType[qtype]
    if qtype in ("F32", "F16") or a.ndim == 1:
        writer.add_tensor(name, a.astype(np.float16 if qtype == "F16" and a.ndim > 1 else np.float32))
        return
    block = gguf.GGML_QUANT_SIZES[gtype][0]
    if a.shape[-1] % block:  # rows not a whole number of blocks: keep this tensor in F16
        writer.add_tensor(name, a.astype(np.float16))
        return
    writer.add_tensor(name, gguf.quants.quantize(a, gtype), raw_dtype=gtype)
