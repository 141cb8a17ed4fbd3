"""Predicted vs written size of the export step: SmolLM2-135M quantized to 4 bits, then exported
to GGUF at each type the export runner writes.

The prediction is `Estimator.predict_chain` for rtn-weight-only(bits=4) -> gguf-export(gguf_type);
the file is written by the export runner's writer (runners/export/gguf.py) from SmolLM2-135M's
weights (packed weights are dequantised before export, so the file's size depends on the type
and the shapes only). Before the export step followed its format, every row was predicted at
the 4-bit model's size (85.6 MB). Run: `python -m bench export_sizes`.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench._common import ratio

MODEL = "smollm2-135m"
TYPES = ("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0")


def main() -> dict:
    from runners.export.gguf import export_gguf
    from runners.models import load_model
    from slmrec.estimate import Arch, Estimator, compile_option, default_params
    from slmrec.kb import load_kb

    kb = load_kb()
    est = Estimator(kb, Arch.from_card(kb.models[MODEL]), kb.hardware["laptop-2core-avx2"])
    q, e = kb.methods["rtn-weight-only"], kb.methods["gguf-export"]
    model, tok = load_model(MODEL, dtype="float32")
    rows, errs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for t in TYPES:
            chain = [compile_option(q, {**default_params(q), "bits": 4}),
                     compile_option(e, {**default_params(e), "gguf_type": t})]
            steps = est.predict_chain(chain).steps
            path = export_gguf(model, tok, Path(tmp) / f"m.{t}.gguf", t, MODEL)
            written = path.stat().st_size / 1e6
            pred = steps[1]["size_mb"].value
            errs.append(abs(pred / written - 1))
            rows.append({"gguf_type": t, "format": chain[1].format, "quantized_mb":
                         steps[0]["size_mb"].value, "predicted_mb": pred, "written_mb": written})
            path.unlink()
    md = ["| gguf_type | format | 4-bit model predicted MB | export predicted MB | file written MB "
          "| error |", "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['gguf_type']} | {r['format']} | {r['quantized_mb']:.1f} | {r['predicted_mb']:.1f} "
           f"| {r['written_mb']:.1f} | {100 * (r['predicted_mb'] / r['written_mb'] - 1):+.1f}% |"
           for r in rows]
    md += ["", "Predicted sizes count tensors only; the file adds the tokenizer and metadata."]
    return {
        "title": "export step: predicted vs written GGUF size (SmolLM2-135M, 4-bit then export)",
        "ratios": {"export_size_median_abs_err": ratio(statistics.median(errs), "<= 0.03",
                                                       f"{len(rows)} GGUF types"),
                   "export_size_max_abs_err": ratio(max(errs), "<= 0.08")},
        "rows": rows, "markdown": "\n".join(md),
    }
