"""The explicit list of runners. A KB method names its runner id in `runner:`.

Targets are lazy "module:Class" strings so that listing or validating a plan imports no torch.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from slmrec.errors import SlmrecError, unknown

RUNNERS: dict[str, str] = {
    "load-pretrained": "runners.init:LoadPretrained",
    "init-from-config": "runners.init:InitFromConfig",
    "causal-lm-train": "runners.pretrain:CausalLMTrain",
    "logit-distill": "runners.distill:LogitDistill",
    "sequence-distill": "runners.distill:SequenceDistill",
    "magnitude-prune": "runners.prune:MagnitudePrune",
    "wanda-prune": "runners.prune:WandaPrune",
    "sparsegpt-prune": "runners.prune:SparseGPTPrune",
    "structured-prune": "runners.prune:StructuredPrune",
    "layer-drop": "runners.prune:LayerDrop",
    "dynamic-int8": "runners.quantize:DynamicInt8",
    "cast": "runners.quantize:Cast",
    "weight-only-quant": "runners.quantize:WeightOnlyQuant",
    "gptq": "runners.quantize:GPTQ",
    "lora": "runners.finetune:LoRA",
    "full-finetune": "runners.finetune:FullFinetune",
    "evaluate": "runners.evaluate:Evaluate",
    "export": "runners.export:Export",
    # library-backed runners (peft, trl, lm-eval, transformers generation)
    "peft": "runners.peft_methods:PeftAdapter",
    "trl": "runners.alignment:TRLTrain",
    "trl-distill": "runners.alignment:TRLDistill",
    "merge": "runners.merge:Merge",
    "kv-cache-quant": "runners.decoding:KVCacheQuant",
    "speculative-decoding": "runners.decoding:SpeculativeDecoding",
    "prompt-caching": "runners.decoding:PromptCaching",
    "torch-compile": "runners.decoding:TorchCompile",
    "lm-eval": "runners.lmeval:LMEval",
    "accelerate-train": "runners.launch:AccelerateTrain",
    "mha-to-gqa": "runners.attention_convert:MHAToGQA",
    "decontamination-check": "runners.decontaminate:DecontaminationCheck",
    "profile": "runners.profiling:Profile",
    "prompt-lookup-decoding": "runners.decoding:PromptLookupDecoding",
    "chunked-prefill": "runners.decoding:ChunkedPrefill",
    "slm-draft": "runners.decoding:SLMDraft",
    "calibration-eval": "runners.calibration_eval:CalibrationEval",
    "best-of-n": "runners.best_of_n:BestOfN",
    "rejection-sampling-ft": "runners.best_of_n:RejectionSamplingFT",
    "spectrum": "runners.selective_finetune:Spectrum",
    "lisa": "runners.selective_finetune:LISA",
    "needle-eval": "runners.needle_eval:NeedleEval",
    # bitsandbytes 4-bit on CPU (runners/qlora.py, runners/nf4.py)
    "qlora": "runners.qlora:QLoRA",
}


def runner_ids() -> list[str]:
    return sorted(RUNNERS)


@lru_cache(maxsize=None)
def get_runner_class(runner_id: str):
    target = RUNNERS.get(runner_id)
    if target is None:
        raise SlmrecError.one("runners/registry.py", unknown("runner", runner_id, RUNNERS))
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if getattr(cls, "id", None) != runner_id:
        raise RuntimeError(f"{target} declares id {getattr(cls, 'id', None)!r}, registered as {runner_id!r}")
    return cls


def get_runner(runner_id: str):
    return get_runner_class(runner_id)()


def runnable_methods(kb) -> list[str]:
    """KB methods whose `runner:` names a registered runner (each has a tiny-model test under
    tests/runners/). No runner module is imported."""
    return sorted(m.id for m in kb.methods.values() if m.runner in RUNNERS)
