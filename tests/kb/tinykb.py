"""A tiny but complete KB written into a folder, for loader and graph tests."""

from __future__ import annotations

from pathlib import Path

import yaml

SOURCES = [
    {"id": "frame2025", "title": "A lifecycle framework", "authors": ["A. Author"], "year": 2025,
     "kind": "survey", "arxiv": "2506.07695"},
    {"id": "quant2022", "title": "A quantization paper", "authors": ["B. Author"], "year": 2022,
     "kind": "paper", "arxiv": "2210.17323"},
    {"id": "tool-docs", "title": "Tool documentation", "year": 2024, "kind": "documentation",
     "url": "https://example.org/docs"},
]
COMPONENTS = [
    {"id": "init", "name": "Initialization", "class": "main", "order": 0, "summary": "start",
     "sources": ["frame2025"],
     "pathways": [{"id": "from-scratch", "name": "From scratch", "summary": "design",
                   "sources": ["frame2025"]}]},
    {"id": "training", "name": "Training", "class": "main", "order": 1, "summary": "train",
     "sources": ["frame2025"]},
    {"id": "compression", "name": "Compression", "class": "main", "order": 2, "summary": "shrink",
     "sources": ["frame2025"]},
    {"id": "retrieval", "name": "Retrieval", "class": "optional", "summary": "rag",
     "sources": ["frame2025"]},
    {"id": "governance", "name": "Governance", "class": "cross-cutting", "summary": "licences",
     "sources": ["frame2025"]},
]
CAPABILITIES = [{"id": "int4-kernels", "summary": "packed 4-bit kernels"}]
METHODS = [
    {"id": "gqa", "name": "Grouped-query attention", "component": "init", "family": "attention",
     "pathway": "from-scratch", "summary": "share key/value heads", "sources": ["frame2025"],
     "effects": {"transform": {"kv_heads": "$kv_heads"}},
     "params": {"kv_heads": {"type": "int", "default": 2, "min": 1}}},
    {"id": "lora", "name": "LoRA", "component": "training", "family": "peft",
     "summary": "low-rank adapters", "sources": ["tool-docs"],
     "requires": {"data": "labeled", "training": True, "compute": "fine-tune"},
     "effects": {"recovery": [{"low": 0.3, "high": 0.8, "source": "tool-docs"}]},
     "params": {"rank": {"type": "int", "default": 8, "search": [4, 8]}}},
    {"id": "prune", "name": "Structured pruning", "component": "compression", "family": "pruning",
     "summary": "remove channels", "sources": ["quant2022"],
     "effects": {"transform": {"params_fraction_removed": "$fraction"},
                 "quality": [{"low": 5, "high": 20, "source": "quant2022", "when": {"fraction": 0.3}}]},
     "params": {"fraction": {"type": "float", "default": 0.3, "min": 0, "max": 0.9}}},
    {"id": "rtn", "name": "Round to nearest", "component": "compression", "family": "quantization",
     "summary": "int4 weights by rounding", "sources": ["quant2022"],
     "requires": {"hardware_to_benefit": ["int4-kernels"]},
     "effects": {"transform": {"weight_bits": "$bits"},
                 "quality": [{"low": 1, "high": 10, "source": "quant2022", "when": {"bits": 4}}]},
     "params": {"bits": {"type": "int", "default": 8, "choices": [4, 8]}}},
    {"id": "gptq", "name": "GPTQ", "component": "compression", "family": "quantization",
     "summary": "second-order rounding with calibration", "sources": ["quant2022"],
     "requires": {"data": "calibration"},
     "effects": {"transform": {"weight_bits": 4}}},
    {"id": "rag", "name": "Retrieval-augmented generation", "component": "retrieval",
     "family": "rag", "summary": "retrieve passages", "sources": ["frame2025"], "plannable": False},
]
RELATIONS = [
    {"from": "init", "to": "training", "kind": "precedes", "note": "stage order", "sources": ["frame2025"]},
    {"from": "training", "to": "compression", "kind": "precedes", "note": "stage order", "sources": ["frame2025"]},
    {"from": "compression", "to": "init", "kind": "feeds-back", "note": "loop", "sources": ["frame2025"]},
    {"from": "prune", "to": "rtn", "kind": "precedes", "note": "structure before bits", "sources": ["quant2022"]},
    {"from": "lora", "to": "prune", "kind": "recovers", "note": "heals pruning", "sources": ["tool-docs"]},
    {"from": "rtn", "to": "gptq", "kind": "conflicts", "note": "one format per weight", "sources": ["quant2022"]},
    {"from": "init", "to": "prune", "kind": "reuses", "note": "derive from larger", "sources": ["frame2025"]},
    {"from": "governance", "to": "init", "kind": "constrains", "note": "licences", "sources": ["frame2025"]},
]
HARDWARE = [
    {"id": "laptop", "name": "Laptop", "kind": "cpu", "memory_gb": 8, "memory_bandwidth_gbs": 40,
     "peak_tflops": {"fp32": 0.5}, "precisions": ["fp32"], "sources": ["tool-docs"]},
]
MODELS = [
    {"id": "tiny-1", "name": "Tiny", "family": "tiny", "architecture": "llama", "params": 1e6,
     "layers": 2, "hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2, "vocab": 256,
     "context": 128, "tied_embeddings": True, "tokenizer": "tiny-bpe", "license": "apache-2.0",
     "sources": ["tool-docs"]},
]


def write_tiny_kb(root: Path) -> Path:
    """Write the tiny KB split over files the way the shipped KB is."""
    files = {
        "sources.yaml": {"sources": SOURCES},
        "lifecycle.yaml": {"components": COMPONENTS, "capabilities": CAPABILITIES},
        "methods/all.yaml": {"methods": METHODS},
        "relations.yaml": {"relations": RELATIONS},
        "hardware.yaml": {"hardware": HARDWARE, "models": MODELS},
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return root
