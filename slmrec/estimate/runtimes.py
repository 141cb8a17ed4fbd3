"""Decode and prefill time per runtime family and hardware class (kb/runtimes.yaml).

A decode step reads every weight and the KV cache once, at a share of peak bandwidth the runtime
reaches on that hardware class, and pays fixed costs the runtime adds per token and per layer
(Python and kernel launches in eager PyTorch, graph replay in vLLM, a few microseconds in
llama.cpp); kernels that unpack quantized weights before the matmul add a further per-layer cost:

    decode_s = bytes_read / (bandwidth * bandwidth_efficiency) + token_ms/1000
               + layers * (layer_ms + dequant_layer_ms [if the weights are dequantized]) / 1000
               + dequant_bytes / bandwidth * dequant_byte_cost

The last term is the per-format cost of packed weights: a kernel that unpacks int8/int4 codes
per layer pays for every packed byte it reads (int8 codes, twice the bytes of int4 ones, pay
twice), so where unpacking is slow (eager PyTorch on a CPU) a packed int8 model can be predicted
slower than its fp32 base, as measured (docs/estimator.md, "CPU runtime profiles").

Compute bounds it from below (flops / (peak * compute_efficiency)). The constants are fitted by
`bench/estimator_accuracy.py` on one half of the published speeds in bench/data/ and reported on
the other half; a hardware class with no fitted row uses the runtime's `default` fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from slmrec.errors import SlmrecError, unknown
from slmrec.schema import Runtime, RuntimeFit

DEFAULT_RUNTIME = "runtime-hf-transformers"   # what this project's runners execute


@dataclass(frozen=True)
class Profile:
    runtime: str
    hardware_class: str
    bandwidth_efficiency: float
    compute_efficiency: float
    token_ms: float
    layer_ms: float
    dequant_layer_ms: float
    rows: int
    basis: str
    dequant_byte_cost: float = 0.0

    def decode_s(self, read_bytes: float, bandwidth_bps: float, layers: float,
                 dequantizes: bool, flops: float = 0.0, peak_flops: float = 0.0,
                 dequant_bytes: float = 0.0) -> float:
        t_mem = read_bytes / (bandwidth_bps * self.bandwidth_efficiency)
        if dequantizes:
            t_mem += dequant_bytes / bandwidth_bps * self.dequant_byte_cost
        t_cmp = flops / (peak_flops * self.compute_efficiency) if peak_flops else 0.0
        fixed = self.token_ms + layers * (self.layer_ms + (self.dequant_layer_ms if dequantizes
                                                           else 0.0))
        return max(t_mem, t_cmp) + fixed / 1000.0

    def prefill_s(self, flops: float, peak_flops: float, read_bytes: float,
                  bandwidth_bps: float, layers: float) -> float:
        t_cmp = flops / (peak_flops * self.compute_efficiency) if peak_flops else 0.0
        t_mem = read_bytes / (bandwidth_bps * self.bandwidth_efficiency)
        return max(t_cmp, t_mem) + (self.token_ms + layers * self.layer_ms) / 1000.0


def runtime_for_methods(kb, methods: list[str]) -> str | None:
    """The runtime a chain deploys with: the last step whose method a runtime profile lists."""
    for m in reversed(methods):
        for rt in kb.runtimes.values():
            if m in rt.methods:
                return rt.id
    return None


def profile(kb, runtime: str | None, hardware_class: str) -> Profile:
    """The runtime's fit for this hardware class (or its `default` fit)."""
    rid = runtime or DEFAULT_RUNTIME
    rt: Runtime | None = kb.runtimes.get(rid)
    if rt is None:
        by_method = runtime_for_methods(kb, [rid])
        rt = kb.runtimes.get(by_method) if by_method else None
    if rt is None:
        if not kb.runtimes:   # a KB without runtime profiles: the historical constants
            return Profile(rid, hardware_class, 0.7, 0.5, 0.0, 0.0, 0.0, 0, "assumed")
        raise SlmrecError.one("kb/runtimes.yaml", unknown("runtime", rid, kb.runtimes))
    fit: RuntimeFit | None = next((f for f in rt.fits if f.hardware_class == hardware_class), None)
    if fit is None:
        fit = next((f for f in rt.fits if f.hardware_class == "default"), rt.fits[0])
    return Profile(rt.id, fit.hardware_class, fit.bandwidth_efficiency, fit.compute_efficiency,
                   fit.token_ms, fit.layer_ms, fit.dequant_layer_ms, fit.rows, fit.basis,
                   fit.dequant_byte_cost)
