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
