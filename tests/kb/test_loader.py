"""The loader: a valid KB loads; every kind of broken KB gives one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slmrec.errors import SlmrecError
from slmrec.kb import load_kb
from slmrec.schema import Method, Relation, Source
from tests.kb.tinykb import METHODS, write_tiny_kb


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_kb(tmp_path / "kb")


def _edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _problems(root: Path) -> list[str]:
    with pytest.raises(SlmrecError) as info:
        load_kb([root], shipped=False)
    return [str(p) for p in info.value.problems]


def test_tiny_kb_loads(tiny):
    kb = load_kb([tiny], shipped=False)
    assert set(kb.methods) == {m["id"] for m in METHODS}
    assert len(kb.relations) == 8
    assert kb.where("gqa").startswith(str(Path("methods") / "all.yaml")) or "all.yaml" in kb.where("gqa")
    assert len(kb.version) == 12


def test_schema_round_trip(tiny):
    kb = load_kb([tiny], shipped=False)
    for rec in [*kb.methods.values(), *kb.sources.values(), *kb.relations.values()]:
        dumped = rec.model_dump(by_alias=True, mode="json", exclude_defaults=True)
        assert type(rec).model_validate(dumped) == rec
    rel = next(iter(kb.relations.values()))
    assert Relation.model_validate({"from": rel.src, "to": rel.dst, "kind": rel.kind.value,
                                    "note": rel.note, "sources": rel.sources}).key == rel.key


def _methods(tiny):
    return tiny / "methods" / "all.yaml"


# Each case: (what is broken, how to break the tiny KB, substrings every expected line holds).
BROKEN = [
    ("unknown component reference",
     lambda k: _edit(_methods(k), lambda d: d["methods"][2].update(component="compresion")),
     ["methods/all.yaml", "method 'prune'", "field 'component'", "unknown component 'compresion'",
      "did you mean 'compression'"]),
    ("relation to unknown method",
     lambda k: _edit(k / "relations.yaml", lambda d: d["relations"][3].update(to="rtm")),
     ["relations.yaml", "relation 'prune precedes rtm'", "field 'to'", "did you mean 'rtn'"]),
    ("method cites unknown source",
     lambda k: _edit(_methods(k), lambda d: d["methods"][0].update(sources=["frame2052"])),
     ["method 'gqa'", "field 'sources[0]'", "unknown source 'frame2052'", "did you mean 'frame2025'"]),
    ("duplicate id across files",
     lambda k: (k / "methods" / "more.yaml").write_text(yaml.safe_dump({"methods": [METHODS[1]]})),
     ["methods/more.yaml", "method 'lora'", "duplicate id; first defined at"]),
    ("wrong type",
     lambda k: _edit(k / "sources.yaml", lambda d: d["sources"][0].update(year="twenty")),
     ["sources.yaml", "source 'frame2025'", "field 'year'", "valid integer"]),
    ("missing required field",
     lambda k: _edit(_methods(k), lambda d: d["methods"][1].pop("summary")),
     ["method 'lora'", "field 'summary'", "required field is missing"]),
    ("unknown field",
     lambda k: _edit(_methods(k), lambda d: d["methods"][1].update(sumary="typo")),
     ["method 'lora'", "field 'sumary'", "unknown field 'sumary'", "did you mean 'summary'"]),
    ("bad YAML syntax",
     lambda k: (k / "relations.yaml").write_text("relations:\n  - from: a\n    to: [b\n"),
     ["relations.yaml:", "invalid YAML"]),
    ("empty file",
     lambda k: (k / "methods" / "empty.yaml").write_text("\n"),
     ["methods/empty.yaml", "file is empty"]),
    ("cycle among precedes",
     lambda k: _edit(k / "relations.yaml", lambda d: d["relations"].append(
         {"from": "compression", "to": "init", "kind": "precedes", "note": "loop", "sources": ["frame2025"]})),
     ["relations.yaml", "cycle among 'precedes' relations", "init", "compression"]),
    ("relation kind that does not exist",
     lambda k: _edit(k / "relations.yaml", lambda d: d["relations"][4].update(kind="recover")),
     ["relation 'lora recover prune'", "field 'kind'", "'recovers'"]),
    ("source without title",
     lambda k: _edit(k / "sources.yaml", lambda d: d["sources"][1].pop("title")),
     ["source 'quant2022'", "field 'title'", "required field is missing"]),
    ("source without identifier",
     lambda k: _edit(k / "sources.yaml", lambda d: d["sources"][2].pop("url")),
     ["source 'tool-docs'", "verifiable identifier"]),
    ("id not in kebab-case",
     lambda k: _edit(_methods(k), lambda d: d["methods"][3].update(id="RTN_4bit")),
     ["method 'RTN_4bit'", "field 'id'", "pattern"]),
    ("unknown section",
     lambda k: _edit(_methods(k), lambda d: d.update(method=d.pop("methods"))),
     ["methods/all.yaml", "unknown section 'method'", "did you mean 'methods'"]),
    ("evidence range reversed",
     lambda k: _edit(_methods(k), lambda d: d["methods"][2]["effects"]["quality"][0].update(low=30)),
     ["method 'prune'", "effects.quality[0]", "low (30.0) is greater than high (20.0)"]),
    ("transform references an undeclared parameter",
     lambda k: _edit(_methods(k), lambda d: d["methods"][3]["effects"]["transform"].update(weight_bits="$bitz")),
     ["method 'rtn'", "effects.transform.weight_bits", "unknown parameter 'bitz'", "did you mean 'bits'"]),
    ("conflict contradicts co-adaptation",
     lambda k: _edit(k / "relations.yaml", lambda d: d["relations"].append(
         {"from": "gptq", "to": "rtn", "kind": "co-adapts", "note": "x", "sources": ["quant2022"]})),
     ["relation 'rtn conflicts gptq'", "declared to conflict and also co-adapts"]),
    ("unknown capability",
     lambda k: _edit(_methods(k), lambda d: d["methods"][3]["requires"].update(hardware_to_benefit=["int4-kernel"])),
     ["method 'rtn'", "requires.hardware_to_benefit[0]", "did you mean 'int4-kernels'"]),
]


@pytest.mark.parametrize("name,breaker,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_kb_names_file_record_field(tiny, name, breaker, expected):
    breaker(tiny)
    lines = _problems(tiny)
    assert any(all(e in line for e in expected) for line in lines), "\n".join(lines)
    assert all("\n" not in line for line in lines)


def test_all_problems_of_a_file_reported_together(tiny):
    def three_mistakes(d):
        d["methods"][0]["component"] = "inti"
        d["methods"][1]["sumary"] = "typo"
        d["methods"][2]["sources"] = ["nope"]

    _edit(_methods(tiny), three_mistakes)
    _edit(tiny / "sources.yaml", lambda d: d["sources"][0].update(year="x"))
    lines = _problems(tiny)
    assert any("method 'gqa'" in line and "inti" in line for line in lines)
    assert any("method 'lora'" in line and "sumary" in line for line in lines)
    assert any("source 'frame2025'" in line and "year" in line for line in lines)


def test_yaml_error_reports_line(tiny):
    (tiny / "relations.yaml").write_text("relations:\n  - from: a\n    to: [b\n")
    (line,) = _problems(tiny)
    assert "relations.yaml:" in line and "invalid YAML" in line


def test_safe_load_refuses_python_objects(tiny):
    (tiny / "evil.yaml").write_text("sources: !!python/object/apply:os.system ['true']\n")
    lines = _problems(tiny)
    assert any("evil.yaml" in line and "invalid YAML" in line for line in lines)


def test_overlay_adds_and_overrides(tiny, tmp_path):
    overlay = tmp_path / "overlay"
    (overlay / "methods").mkdir(parents=True)
    changed = dict(METHODS[1], summary="overridden summary")
    added = dict(METHODS[1], id="dora", name="DoRA")
    (overlay / "methods" / "extra.yaml").write_text(yaml.safe_dump({"methods": [changed, added]}))
    kb = load_kb([tiny, overlay], shipped=False)
    assert kb.methods["lora"].summary == "overridden summary"
    assert "dora" in kb.methods
    assert "extra.yaml" in kb.where("dora")


def test_missing_kb_directory(tmp_path):
    lines = _problems(tmp_path / "nope")
    assert len(lines) == 1 and lines[0].endswith("nope: KB directory does not exist")


@pytest.mark.parametrize("args,code,needle", [
    (["kb", "validate"], 0, "ok:"),
    (["kb", "validate", "--kb", "{broken}"], 2, "did you mean 'compression'"),
    (["kb", "show", "gptq-typo-xyz"], 2, "unknown id"),
    (["graph", "export", "--format", "png", "-o", "{out}"], 2, "unknown format 'png'"),
    (["kb", "nonsense"], 2, "invalid choice"),
])
def test_cli_exit_codes(tmp_path, args, code, needle):
    broken = write_tiny_kb(tmp_path / "broken")
    _edit(broken / "methods" / "all.yaml", lambda d: d["methods"][2].update(component="compresion"))
    args = [a.format(broken=broken, out=tmp_path / "g.png") for a in args]
    proc = subprocess.run([sys.executable, "-m", "slmrec.cli", *args], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_method_record_rejects_unpublished_with_numbers():
    with pytest.raises(Exception, match="unpublished"):
        Method.model_validate({**METHODS[2], "effects": {"quality": [
            {"low": 1, "high": 2, "source": "quant2022", "basis": "unpublished", "note": "n"}]}})


def test_source_paper_needs_authors():
    with pytest.raises(Exception, match="authors"):
        Source.model_validate({"id": "x2020-y", "title": "t", "year": 2020, "kind": "paper",
                               "arxiv": "2001.00001"})
