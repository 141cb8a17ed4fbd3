"""Report rendering: ratios, percentage-point differences, NaN-safe JSON."""

from __future__ import annotations

import json

from runners.report import (RunReport, StepReport, comparison_rows, comparison_table,
                            compare_one, read_report, to_markdown, write_reports)


def _report() -> RunReport:
    step = StepReport(0, "rtn", runner="weight-only-quant", status="completed", wall_s=1.0,
                      metrics={"size_mb": 150.0, "quality_loss_pct": 2.5, "ppl": float("nan")},
                      predicted={"size_mb": {"value": 100.0, "low": 90.0, "high": 120.0},
                                 "quality_loss_pct": {"value": 1.0, "low": 0.0, "high": 2.0}})
    return RunReport(status="completed", out_dir="x", plan_name="p", steps=[step],
                     final_metrics={"size_mb": 150.0},
                     final_predicted={"size_mb": {"value": 100.0}})


def test_ratio_and_difference():
    r = compare_one("step 1", "rtn", "size_mb", {"value": 100.0, "low": 90, "high": 120}, 150.0)
    assert r["ratio"] == 1.5 and r["difference"] is None and r["within_range"] is False
    q = compare_one("step 1", "rtn", "quality_loss_pct", {"value": 1.0}, 2.5)
    assert q["ratio"] is None and q["difference"] == 1.5
    none = compare_one("plan", "final", "ppl", None, 12.0)
    assert none["predicted"] is None and none["ratio"] is None


def test_table_markdown_and_json_round_trip(tmp_path):
    report = _report()
    table = comparison_table(report)
    assert "1.5×" in table and "+1.50 pp" in table and "vs predicted" in table
    md = to_markdown(report)
    assert "| step 1 | rtn | size_mb | – | 100 | 90–120 | 150 | 1.5× | no |" in md
    js, _ = write_reports(report, tmp_path)
    data = json.loads(js.read_text())                  # strict JSON: NaN became null
    assert data["steps"][0]["metrics"]["ppl"] is None
    assert len(data["comparison"]) == len(comparison_rows(report))
    assert read_report(tmp_path).steps[0].predicted["size_mb"]["value"] == 100.0
