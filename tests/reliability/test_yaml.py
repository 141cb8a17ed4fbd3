"""The bounded YAML reader shared by the KB, scenario and plan loaders: table-driven hostile
inputs, each refused with one short line, plus hypothesis-driven round trips and random text."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmrec import safeyaml
from slmrec.kb import read_yaml
from tests.reliability.conftest import one_line


def _bomb(levels: int, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


BAD_YAML = [
    ("duplicate-top-key", "a: 1\na: 2\n", "duplicate key 'a'"),
    ("duplicate-nested-key", "m:\n  x: 1\n  y: 2\n  x: 3\n", "duplicate key 'x'"),
    ("duplicate-in-list-item", "l:\n  - {id: a, id: b}\n", "duplicate key 'id'"),
    ("duplicate-flow-key", "{k: 1, k: 1}\n", "duplicate key 'k'"),
    ("duplicate-quoted-key", "'q': 1\n\"q\": 2\n", "duplicate key 'q'"),
    ("duplicate-numeric-key", "1: a\n1: b\n", "duplicate key '1'"),
    ("alias-bomb-9x9", _bomb(9), "expands to more than"),
    ("alias-bomb-wide", _bomb(4, 200), "expands to more than"),
    ("alias-bomb-mapping", "a: &a {k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7, k8: 8}\n"
     + "\n".join(f"b{i}: &b{i} [" + ", ".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 10) + "]"
                 for i in range(7)) + "\n", "expands to more than"),
    ("deep-nesting", "[" * 200 + "]" * 200 + "\n", "nested more than"),
    ("deep-mapping", "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v\n",
     "nested more than"),
    ("python-object-tag", "!!python/object/apply:os.system ['echo pwned']\n", "invalid yaml"),
    ("python-name-tag", "x: !!python/name:os.system\n", "invalid yaml"),
    ("unknown-tag", "x: !custom 1\n", "invalid yaml"),
    ("undefined-alias", "x: *nowhere\n", "invalid yaml"),
    ("tab-indent", "a:\n\t- b\n", "invalid yaml"),
    ("unclosed-flow", "a: [1, 2\n", "invalid yaml"),
    ("two-documents", "a: 1\n---\nb: 2\n", "invalid yaml"),
]


@pytest.mark.parametrize("text,needle", [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML])
def test_hostile_yaml_is_one_short_line(tmp_path, text, needle):
    path = tmp_path / "in.yaml"
    path.write_text(text)
    data, _, problems = read_yaml(path)
    assert data is None and len(problems) == 1
    line = one_line(problems[0], needle)
    assert len(line) < 300


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(safeyaml, "MAX_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    _, _, problems = read_yaml(path)
    one_line(problems[0], "larger than")


@pytest.mark.parametrize("name,raw,needle", [
    ("not-utf8", b"a: \xff\xfe\n", "cannot read"),
    ("fifo", None, "not a regular file"),
    ("folder", "dir", "not a regular file"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_unreadable_yaml_files(tmp_path, name, raw, needle):
    import os

    path = tmp_path / "in.yaml"
    if raw is None:
        os.mkfifo(path)  # reading it would block forever: refused as not a regular file
    elif raw == "dir":
        path.mkdir()
    else:
        path.write_bytes(raw)
    _, _, problems = read_yaml(path)
    one_line(problems[0], needle)


def test_rejected_values_are_quoted_short():
    assert len(safeyaml.clip("x" * 10_000_000)) <= 80
    assert len(safeyaml.clip(list(range(100_000)))) <= 80
    assert safeyaml.clip("short") == "'short'"


def test_a_huge_message_is_cut_at_the_problem():
    from slmrec.errors import Problem

    assert len(str(Problem("f", "v" * 1_000_000))) < 700


# ---- hypothesis: what the loader accepts round-trips; what it refuses it refuses cleanly ------

# YAML folds line breaks inside scalars (NEL, LS, PS): plain text is text without them.
chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))
keys = st.text(chars, min_size=1, max_size=8)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.text(chars, max_size=20))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_any_plain_document_round_trips(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    loaded, _ = safeyaml.load(text)

    def same(a, b):
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
        return a == b
    assert same(data, loaded)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!,'\" \n\t#|>?%@`0123456789.")),
               max_size=120))
def test_random_text_either_loads_or_is_one_problem(text):
    try:
        safeyaml.load(text)
    except safeyaml.YamlProblem as exc:
        assert "\n" not in exc.message and len(exc.message) < 300
