"""Runners: the executable side of the KB (one class per runner id, listed in runners/registry.py)."""

import logging


class _NoHubKernelNotice(logging.Filter):
    """bitsandbytes (the NF4 / QLoRA / GaLore runners) tries, when it is imported on a CPU with
    AVX512-BF16, to fetch an optional 4-bit matmul kernel from the Hugging Face hub through the
    `kernels` package, and logs a warning when it cannot. slmrec never downloads at run time, and
    bitsandbytes falls back to its own CPU kernels, so this one message is dropped; every other
    bitsandbytes message still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoHubKernelNotice())
