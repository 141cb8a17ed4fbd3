"""A small, realistic KB for the recommender tests (written into a folder, loaded with
`load_kb([dir], shipped=False)`). Figures are plausible, not sourced: this KB is test data."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

S = ["t-survey"]


def _src(i, kind="paper"):
    d = {"id": i, "title": f"Source {i}", "year": 2023, "kind": kind, "url": f"https://example.org/{i}"}
    if kind in ("paper", "survey"):
        d["authors"] = ["A. Author"]
    return d


SOURCES = [_src("t-survey", "survey"), _src("t-quant"), _src("t-prune"), _src("t-distill"),
           _src("t-peft"), _src("t-hw", "documentation"), _src("t-deploy", "documentation")]

COMPONENTS = [
    {"id": cid, "name": cid.title(), "class": "main", "order": i, "summary": cid, "sources": S}
    for i, cid in enumerate(["initialization", "pretraining", "post-training", "compression",
                             "evaluation", "deployment", "maintenance"])
] + [{"id": "retrieval-augmentation", "name": "RAG", "class": "optional", "summary": "rag",
      "sources": S}]

CAPABILITIES = [{"id": c, "summary": c} for c in (
    "cpu", "cuda", "int8-kernels", "int4-weight-kernels", "bf16-compute", "fp16-compute",
    "sparse-2-4-kernels", "unstructured-sparse-kernels")]


def q(low, high, src="t-quant", **when):
    return {"low": low, "high": high, "source": src, "when": when}


def M(id, component, family, **kw):
    d = {"id": id, "name": id, "component": component, "family": family, "summary": id,
         "sources": kw.pop("sources", S)}
    d.update(kw)
    return d


METHODS = [
    M("pretrained-selection", "initialization", "selection", runner="load-pretrained"),
    M("continued-pretraining", "pretraining", "training/continued",
      requires={"data": "unlabeled", "data_amount": {"count": 1e8, "unit": "tokens"},
                "training": True, "compute": "continued-pretraining"},
      effects={"quality": [q(-15, -5, "t-survey")]},
      cost={"passes": "train", "optimizer": "full"}),
    M("full-finetuning", "post-training", "finetune/full",
      requires={"data": "labeled", "data_amount": {"count": 1000, "unit": "examples"},
                "training": True, "compute": "fine-tune"},
      effects={"quality": [q(-8, -2, "t-peft")], "recovery": [q(0.5, 0.9, "t-peft")]},
      cost={"passes": "train", "optimizer": "full", "tokens": 2e6}),
    M("lora", "post-training", "finetune/peft",
      requires={"data": "labeled", "data_amount": {"count": 500, "unit": "examples"},
                "training": True, "compute": "fine-tune"},
      effects={"quality": [q(-5, -1, "t-peft")], "recovery": [q(0.3, 0.7, "t-peft")]},
      cost={"passes": "train", "optimizer": "adapter", "trainable_fraction": 0.01, "tokens": 2e6},
      params={"rank": {"type": "int", "default": 8, "search": [8, 16]}}, runner="lora"),
    M("qlora", "post-training", "finetune/peft-quantized",
      requires={"data": "labeled", "data_amount": {"count": 500, "unit": "examples"},
                "training": True, "compute": "fine-tune", "hardware_to_run": ["cuda"]},
      effects={"transform": {"weight_bits": 4, "group_size": 64},
               "quality": [q(0.5, 3, "t-peft")], "recovery": [q(0.2, 0.5, "t-peft")]},
      cost={"passes": "train", "optimizer": "adapter", "weight_bits_during": 4, "tokens": 2e6}),
    M("instruction-tuning", "post-training", "alignment/sft",
      requires={"data": "labeled", "training": True, "compute": "fine-tune"},
      effects={"quality": [q(-5, -2, "t-peft")]},
      cost={"passes": "train", "optimizer": "full", "tokens": 2e6}),
    M("dpo", "post-training", "alignment/preference",
      requires={"data": "preference", "training": True, "compute": "fine-tune"},
      effects={"quality": [q(-3, -1, "t-peft")]},
      cost={"passes": "train", "optimizer": "full", "tokens": 1e6}),
    M("bf16-cast", "compression", "precision/cast",
      requires={"hardware_to_benefit": ["bf16-compute"]},
      effects={"transform": {"weight_bits": 16}, "quality": [q(0, 0.1)]}, runner="cast",
      params={"dtype": {"type": "str", "default": "bf16", "choices": ["bf16"]}}),
    M("rtn-weight-only", "compression", "quantization/weight-only",
      requires={"hardware_to_benefit": ["int4-weight-kernels"]},
      effects={"transform": {"weight_bits": "$bits", "group_size": "$group_size"},
               "quality": [q(0, 0.5, bits=8), q(3, 9, bits=4)]},
      params={"bits": {"type": "int", "default": 8, "choices": [4, 8], "search": [8, 4]},
              "group_size": {"type": "int", "default": 128, "choices": [64, 128],
                             "search": [128, 64]}},
      runner="weight-only-quant"),
    M("gptq", "compression", "quantization/weight-only-calibrated",
      requires={"data": "calibration", "data_amount": {"count": 128, "unit": "samples"},
                "compute": "calibration", "hardware_to_benefit": ["int4-weight-kernels"]},
      effects={"transform": {"weight_bits": "$bits", "group_size": 128},
               "quality": [q(1, 4, bits=4), q(6, 20, bits=3)]},
      cost={"passes": "forward", "hessian": True},
      params={"bits": {"type": "int", "default": 4, "choices": [3, 4], "search": [4, 3]}},
      runner="gptq"),
    M("awq", "compression", "quantization/weight-only-activation-aware",
      requires={"data": "calibration", "data_amount": {"count": 128, "unit": "samples"},
                "compute": "calibration", "hardware_to_benefit": ["int4-weight-kernels"]},
      effects={"transform": {"weight_bits": 4, "group_size": 128},
               "quality": [q(1, 3.5)]},
      cost={"passes": "forward"}),
    M("nf4", "compression", "quantization/normal-float",
      requires={"hardware_to_run": ["cuda"]},
      effects={"transform": {"weight_bits": 4, "group_size": 64}, "quality": [q(2, 6)]}),
    M("dynamic-int8", "compression", "quantization/weight-activation",
      requires={"hardware_to_benefit": ["int8-kernels"]},
      effects={"transform": {"weight_bits": 8, "activation_bits": 8}, "quality": [q(0.5, 3)]},
      runner="dynamic-int8"),
    M("magnitude-pruning", "compression", "pruning/unstructured-magnitude",
      requires={"hardware_to_benefit": ["unstructured-sparse-kernels"]},
      effects={"transform": {"sparsity": "$sparsity", "sparsity_structure": "unstructured"},
               "quality": [q(2, 10, "t-prune", sparsity=0.3), q(10, 60, "t-prune", sparsity=0.5)]},
      params={"sparsity": {"type": "float", "default": 0.5, "min": 0, "max": 0.95,
                           "search": [0.3, 0.5]}},
      runner="magnitude-prune"),
    M("wanda", "compression", "pruning/unstructured-activation",
      requires={"data": "calibration", "compute": "calibration",
                "hardware_to_benefit": ["unstructured-sparse-kernels"]},
      effects={"transform": {"sparsity": 0.5, "sparsity_structure": "unstructured"},
               "quality": [q(5, 15, "t-prune")]},
      cost={"passes": "forward"}),
    M("semi-structured-2-4", "compression", "pruning/semi-structured",
      requires={"data": "calibration", "compute": "calibration",
                "hardware_to_benefit": ["sparse-2-4-kernels"]},
      effects={"transform": {"sparsity": 0.5, "sparsity_structure": "semi-structured"},
               "quality": [q(10, 30, "t-prune")]},
      cost={"passes": "forward"}),
    M("structured-width-pruning", "compression", "pruning/structured",
      effects={"transform": {"params_fraction_removed": "$fraction"},
               "quality": [q(8, 25, "t-prune", fraction=0.2), q(25, 80, "t-prune", fraction=0.4)]},
      params={"fraction": {"type": "float", "default": 0.2, "min": 0, "max": 0.9,
                           "search": [0.2, 0.4]}},
      runner="structured-prune"),
    M("layer-dropping", "compression", "pruning/depth",
      effects={"transform": {"layers_fraction_removed": 0.25}, "quality": [q(15, 50, "t-prune")]},
      runner="layer-drop"),
    M("logit-distillation", "compression", "distillation/logit",
      requires={"data": "teacher-logits", "teacher": "logits", "tokenizer_match": True,
                "training": True, "compute": "fine-tune"},
      effects={"recovery": [q(0.4, 0.8, "t-distill")]},
      cost={"passes": "train", "optimizer": "full", "teacher_resident": True, "tokens": 1e6},
      runner="logit-distill"),
    M("sequence-distillation", "compression", "distillation/sequence",
      requires={"data": "teacher-text", "teacher": "text", "training": True,
                "compute": "fine-tune"},
      effects={"recovery": [q(0.2, 0.6, "t-distill")]},
      cost={"passes": "train", "optimizer": "full", "tokens": 1e6},
      runner="sequence-distill"),
    M("quantization-aware-training", "compression", "quantization/training",
      requires={"data": "unlabeled", "training": True, "compute": "fine-tune",
                "hardware_to_benefit": ["int4-weight-kernels"]},
      effects={"transform": {"weight_bits": 4, "group_size": 128}, "quality": [q(0.5, 2)]},
      cost={"passes": "train", "optimizer": "full", "tokens": 5e6}),
    M("kv-cache-quantization", "compression", "quantization/kv-cache",
      effects={"transform": {"kv_cache_bits": "$bits"},
               "quality": [q(0, 0.5, bits=8), q(1, 3, bits=4)]},
      params={"bits": {"type": "int", "default": 8, "choices": [4, 8], "search": [8, 4]}}),
    M("perplexity-eval", "evaluation", "evaluation/perplexity", runner="evaluate"),
    M("speculative-decoding", "deployment", "inference/speculative",
      effects={"transform": {"adds_params_fraction": 0.1},
               "speedup": [q(1.5, 2.5, "t-deploy")]}),
    M("llama-cpp-runtime", "deployment", "runtime/llama-cpp",
      requires={"hardware_to_run": ["cpu"]},
      effects={"speedup": [q(1.1, 1.4, "t-deploy")]}),
    M("safetensors-export", "deployment", "export/safetensors", runner="export"),
    M("retrieval-index", "retrieval-augmentation", "rag", plannable=False),
]


def R(a, kind, b, src="t-survey"):
    return {"from": a, "to": b, "kind": kind, "note": f"{a} {kind} {b}", "sources": [src]}


RELATIONS = [
    R("initialization", "precedes", "pretraining"), R("pretraining", "precedes", "post-training"),
    R("post-training", "precedes", "compression"), R("compression", "precedes", "evaluation"),
    R("evaluation", "precedes", "deployment"),
    R("structured-width-pruning", "precedes", "logit-distillation", "t-prune"),
    R("logit-distillation", "precedes", "gptq", "t-distill"),
    R("logit-distillation", "recovers", "structured-width-pruning", "t-distill"),
    R("sequence-distillation", "recovers", "structured-width-pruning", "t-distill"),
    R("lora", "recovers", "compression", "t-peft"),
    R("magnitude-pruning", "conflicts", "semi-structured-2-4", "t-prune"),
    R("qlora", "conflicts", "quantization-aware-training", "t-peft"),
    R("dpo", "requires", "instruction-tuning", "t-peft"),
    R("instruction-tuning", "precedes", "dpo", "t-peft"),
]

HARDWARE = [
    {"id": "laptop-cpu", "name": "2-core laptop CPU", "kind": "cpu", "memory_gb": 8,
     "memory_bandwidth_gbs": 25, "peak_tflops": {"fp32": 0.2, "int8": 0.8},
     "precisions": ["fp32"], "capabilities": ["cpu", "int8-kernels", "int4-weight-kernels"],
     "sources": ["t-hw"]},
    {"id": "raspberry-pi-5", "name": "Raspberry Pi 5", "kind": "cpu", "memory_gb": 6,
     "memory_bandwidth_gbs": 17, "peak_tflops": {"fp32": 0.05, "fp16": 0.1, "int8": 0.2},
     "precisions": ["fp32", "fp16"], "capabilities": ["cpu", "int8-kernels", "int4-weight-kernels"],
     "sources": ["t-hw"]},
    {"id": "phone-soc", "name": "Phone SoC", "kind": "soc", "memory_gb": 3,
     "memory_bandwidth_gbs": 50, "peak_tflops": {"fp16": 2, "int8": 8},
     "precisions": ["fp16", "int8"], "capabilities": ["cpu", "int8-kernels", "int4-weight-kernels", "fp16-compute"],
     "sources": ["t-hw"]},
    {"id": "rtx-4090", "name": "RTX 4090", "kind": "gpu", "memory_gb": 24,
     "memory_bandwidth_gbs": 1008, "peak_tflops": {"fp32": 82, "bf16": 165, "fp16": 165, "int8": 660},
     "precisions": ["fp32", "bf16", "fp16", "int8"],
     "capabilities": ["cuda", "int8-kernels", "int4-weight-kernels", "bf16-compute", "fp16-compute",
                      "sparse-2-4-kernels"], "sources": ["t-hw"]},
    {"id": "a100", "name": "A100 80GB", "kind": "gpu", "memory_gb": 80,
     "memory_bandwidth_gbs": 2039, "peak_tflops": {"fp32": 19.5, "bf16": 312, "int8": 624},
     "precisions": ["fp32", "bf16", "fp16", "int8"],
     "capabilities": ["cuda", "int8-kernels", "int4-weight-kernels", "bf16-compute", "fp16-compute",
                      "sparse-2-4-kernels"], "sources": ["t-hw"]},
]


def card(id, params, layers, hidden, inter, heads, kv, vocab, tok, tied=True):
    return {"id": id, "name": id, "family": id.split("-")[0], "architecture": "llama",
            "params": params, "layers": layers, "hidden": hidden, "intermediate": inter,
            "heads": heads, "kv_heads": kv, "vocab": vocab, "context": 8192,
            "tied_embeddings": tied, "tokenizer": tok, "license": "apache-2.0", "sources": ["t-hw"]}


MODELS = [
    card("smollm2-135m", 134.5e6, 30, 576, 1536, 9, 3, 49152, "smollm2"),
    card("smollm2-360m", 361.8e6, 32, 960, 2560, 15, 5, 49152, "smollm2"),
    card("smollm2-1.7b", 1.71e9, 24, 2048, 8192, 32, 32, 49152, "smollm2"),
    card("qwen2.5-0.5b", 494e6, 24, 896, 4864, 14, 2, 151936, "qwen2.5"),
    card("llama-3.2-1b", 1.24e9, 16, 2048, 8192, 32, 8, 128256, "llama3"),
]


def kb_data() -> dict:
    return copy.deepcopy({"sources": SOURCES, "components": COMPONENTS,
                          "capabilities": CAPABILITIES, "methods": METHODS,
                          "relations": RELATIONS, "hardware": HARDWARE, "models": MODELS})


def write_kb(root: Path, data: dict | None = None) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "kb.yaml").write_text(yaml.safe_dump(data or kb_data(), sort_keys=False),
                                  encoding="utf-8")
    return root
