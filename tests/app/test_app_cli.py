"""`slmrec app` serves on loopback only; the app never imports torch on its own; a broken KB is
reported inline, not as a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from slmrec.cli import main
from tests.app.conftest import ROOT


def test_app_command_binds_loopback(capsys):
    assert main(["app", "--port", "8765", "--print-command"]) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.port") + 1] == "8765"


def test_app_command_rejects_a_bad_port(capsys):
    assert main(["app", "--port", "70000"]) == 2
    assert "port must be between 1 and 65535" in capsys.readouterr().err


def test_pages_do_not_import_torch():
    """Every page renders in a fresh interpreter without pulling in torch."""
    script = textwrap.dedent(f"""
        import json, sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=120)
        at.run()
        out = {{}}
        for page in ["Explorer", "Compare", "Recommend", "Runs", "Sources"]:
            at.sidebar.radio(key="page").set_value(page).run()
            out[page] = [e.value for e in at.exception]
        out["torch"] = "torch" in sys.modules
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.pop("torch") is False
    assert all(v == [] for v in out.values()), out


def test_a_broken_kb_is_reported_inline(tmp_path, monkeypatch):
    bad = tmp_path / "badkb"
    bad.mkdir()
    (bad / "x.yaml").write_text("methods:\n- id: Bad Id\n  name: x\n", encoding="utf-8")
    monkeypatch.setenv("SLMREC_KB", str(bad))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors[0].startswith("The knowledge base has problems")
    assert any("x.yaml" in e and "method" in e for e in errors[1:])


# ---- CLI output a person reads in one screen ------------------------------------------------


def test_kb_show_lists_each_relation_once_and_fits_a_screen(capsys, kb):
    """Found: `kb show gptq` printed its conflict lines twice (62 lines)."""
    assert main(["kb", "show", "gptq"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 40 and all(len(line) <= 260 for line in lines[2:]), len(lines)
    conflicts = {r.dst if r.src == "gptq" else r.src for r in kb.relations.values()
                 if r.kind.value == "conflicts" and "gptq" in (r.src, r.dst)}
    heading = [line for line in lines if line.startswith("  conflicts with (")]
    assert heading == [heading[0]] and heading[0].startswith(f"  conflicts with ({len(conflicts)})")
    assert main(["kb", "show", "gptq", "--all"]) == 0
    everything = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(everything) if line.startswith("  conflicts with ("))
    end = next((i for i in range(start + 1, len(everything))
                if everything[i].startswith("  ") and not everything[i].startswith("    ")),
               len(everything))
    section = everything[start + 1:end]      # a method may also appear under another kind
    for other in conflicts:  # each conflict once, with its note
        assert sum(line.startswith(f"    {other}: ") for line in section) == 1, other


def _compare_store(tmp_path):
    from slmrec.evidence import RunStore
    from tests.app.demo_store import fill

    path = tmp_path / "cmp.sqlite"
    store, rid, _ = fill(path, tmp_path / "run1")
    other = store.start_run(plan_yaml="x", plan_hash="h3", base_model="smollm2-135m",
                            name="gptq-eval")
    store.record_step(other, 0, "gptq", runner="gptq",
                      metrics={"ppl": 30.5, "probe_ppl": 30.5, "size_mb": 120.0,
                               "checkpoint_s": 1.0})
    store.record_step(other, 1, "perplexity-eval", runner="evaluate",
                      metrics={"ppl": 12.0, "probe_ppl": 30.5, "size_mb": 120.0})
    store.record_step(other, None, "plan", metrics={"ppl": 12.0, "probe_ppl": 30.5})
    store.finish_run(other, "completed")
    return path, rid, other


def test_runs_compare_keeps_slices_apart_and_groups_by_step(capsys, tmp_path):
    """Found: `runs compare` set the eval step's perplexity beside the probe's and interleaved
    about 100 rows by method."""
    path, a, b = _compare_store(tmp_path)
    assert main(["runs", "compare", str(a), str(b), "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\nfinal model\n" in out and "\nstep 1: A magnitude-pruning, B gptq\n" in out
    assert "warning: ppl is measured on different text slices" in out
    final = out.split("\nfinal model\n")[1].split("\n\n")[0].splitlines()
    ppl = [line.split() for line in final if line.startswith("ppl ")]
    # One row per slice, and no ratio between the evaluate slice and the probe slice.
    assert sorted(r[1] for r in ppl) == ["evaluate", "probe"]
    assert all(r[-1] == "–" for r in ppl)
    assert "checkpoint_s" not in out and "more rows" in out
    assert main(["runs", "compare", str(a), str(b), "--store", str(path), "--all"]) == 0
    assert "checkpoint_s" in capsys.readouterr().out
    assert main(["runs", "compare", str(a), str(b), "--store", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["slice"] for r in data["rows"] if r["metric"] == "ppl"} == {"probe",
                                                                          "evaluate step"}
    assert data["warnings"]


def test_report_names_the_slice_of_each_perplexity_and_warns_when_they_differ():
    from runners.report import RunReport, StepReport, comparison_table, to_markdown

    report = RunReport(status="completed", out_dir="x", steps=[
        StepReport(0, "gptq", "gptq", status="completed", metrics={"ppl": 30.5,
                                                                   "probe_ppl": 30.5}),
        StepReport(1, "perplexity-eval", "evaluate", status="completed",
                   metrics={"ppl": 12.0, "probe_ppl": 30.5})],
        final_metrics={"ppl": 12.0, "probe_ppl": 30.5})
    text = to_markdown(report)
    assert "| step 1 | gptq | ppl | probe |" in text
    assert "| step 2 | perplexity-eval | ppl | evaluate step |" in text
    assert "| plan | final | ppl | evaluate step |" in text
    assert "> warning: ppl is measured on different text slices" in text
    assert "warning: ppl is measured on different text slices" in comparison_table(report)
    same = RunReport(status="completed", out_dir="x", steps=report.steps[:1],
                     final_metrics={"ppl": 30.5})
    assert "warning" not in to_markdown(same)


def test_the_resume_hint_reproduces_the_original_command(tmp_path):
    """Found: after an interrupt the printed `--resume` hint omitted --model and failed."""
    import shlex

    from slmrec.cli import build_parser
    from slmrec.cli.run_cmd import resume_command

    argv = ["run", "plan.yaml", "--model", "/models/my model", "--data", "corpus.txt",
            "--store", "s.sqlite", "--seed", "3", "--kb", "extra-kb", "--allow-memory-overrun"]
    parser = build_parser()
    args = parser.parse_args(argv)
    hint = resume_command(args, tmp_path / "run")
    again = parser.parse_args(shlex.split(hint)[1:])
    for key in ("plan", "model", "data", "store", "seed", "kb", "allow_memory_overrun",
                "no_store"):
        assert getattr(again, key) == getattr(args, key), key
    assert again.resume and again.out == str(tmp_path / "run")
