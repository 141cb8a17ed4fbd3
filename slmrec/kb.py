"""Load the knowledge base from YAML, validate every record and reference, report all problems.

A KB is one or more directories. Every `*.yaml` file (outside `scenarios/`) is a mapping whose
top-level keys are sections (`sources`, `components`, `capabilities`, `methods`, `relations`,
`hardware`, `models`), each a list of records. Later directories overlay earlier ones: a record
with an id that already exists replaces it (a relation is identified by from, kind and to).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, get_args

import networkx as nx
import yaml
from pydantic import BaseModel, ValidationError

from slmrec import safeyaml
from slmrec.errors import Problem, SlmrecError, unknown
from slmrec.schema import (
    SECTIONS,
    BaseModelCard,
    Capability,
    Component,
    Format,
    Goal,
    ComponentClass,
    Hardware,
    Method,
    Record,
    Relation,
    RelationKind,
    Runtime,
    Source,
    SYMMETRIC_KINDS,
    TensorType,
)

SHIPPED_KB = Path(__file__).resolve().parent.parent / "kb"


@dataclass(frozen=True)
class Origin:
    file: str
    line: int | None


@dataclass
class KB:
    sources: dict[str, Source] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    capabilities: dict[str, Capability] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)
    relations: dict[tuple[str, str, str], Relation] = field(default_factory=dict)
    hardware: dict[str, Hardware] = field(default_factory=dict)
    models: dict[str, BaseModelCard] = field(default_factory=dict)
    goals: dict[str, Goal] = field(default_factory=dict)
    tensor_types: dict[str, TensorType] = field(default_factory=dict)
    formats: dict[str, Format] = field(default_factory=dict)
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    origin: dict[object, Origin] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)
    version: str = ""

    # ---- lookups -----------------------------------------------------------------------------

    def section(self, name: str) -> dict:
        return getattr(self, name)

    def record(self, id: str) -> Record | None:
        for name in ("methods", "components", "sources", "hardware", "models", "capabilities",
                     "goals"):
            rec = self.section(name).get(id)
            if rec is not None:
                return rec
        return None

    def kind_of(self, id: str) -> str | None:
        for name, kind in (("methods", "method"), ("components", "component"),
                           ("sources", "source"), ("hardware", "hardware"),
                           ("models", "model"), ("capabilities", "capability"),
                           ("goals", "goal")):
            if id in self.section(name):
                return kind
        return None

    def all_ids(self) -> list[str]:
        return [i for s in ("methods", "components", "sources", "hardware", "models",
                            "capabilities", "goals") for i in self.section(s)]

    def require(self, id: str, kind: str = "methods") -> Record:
        """The record, or a user error with a did-you-mean suggestion."""
        rec = self.section(kind).get(id)
        if rec is None:
            noun = {"methods": "method", "components": "component", "sources": "source",
                    "hardware": "hardware profile", "models": "base model",
                    "capabilities": "capability", "goals": "goal"}[kind]
            raise SlmrecError.one("kb", unknown(noun, id, self.section(kind)))
        return rec

    def main_components(self) -> list[Component]:
        mains = [c for c in self.components.values() if c.cls is ComponentClass.main]
        return sorted(mains, key=lambda c: (c.order, c.id))

    def methods_of(self, component: str) -> list[Method]:
        return [m for m in self.methods.values() if m.component == component]

    def relations_from(self, id: str, kind: RelationKind | None = None) -> list[Relation]:
        return [r for r in self.relations.values()
                if (kind is None or r.kind == kind)
                and (r.src == id or (r.kind in SYMMETRIC_KINDS and r.dst == id))]

    def relations_to(self, id: str, kind: RelationKind | None = None) -> list[Relation]:
        return [r for r in self.relations.values()
                if (kind is None or r.kind == kind)
                and (r.dst == id or (r.kind in SYMMETRIC_KINDS and r.src == id))]

    @cached_property
    def relation_index(self) -> dict[str, dict[str, set[str]]]:
        """kind -> node -> neighbours, symmetric kinds in both directions (read-only use)."""
        index: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for r in self.relations.values():
            index[r.kind.value][r.src].add(r.dst)
            if r.kind in SYMMETRIC_KINDS:
                index[r.kind.value][r.dst].add(r.src)
        return index

    def where(self, key: object) -> str:
        o = self.origin.get(key)
        if not o:
            return "<kb>"
        return f"{o.file}:{o.line}" if o.line else o.file


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> tuple[object, dict[tuple, int], list[Problem]]:
    """Parse a YAML file safely; return (data, line of each top-level list item, problems)."""
    shown = _display(path)
    try:
        if not path.is_file():
            return None, {}, [Problem(shown, "not a regular file")]
        if path.stat().st_size > safeyaml.MAX_BYTES:
            return None, {}, [Problem(shown, f"file is larger than {safeyaml.MAX_BYTES // 2**20} "
                                             "MB; refusing to parse it")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [Problem(shown, f"cannot read file: {exc}")]
    if not text.strip():
        return None, {}, [Problem(shown, "file is empty; expected a mapping of sections "
                                         f"({', '.join(SECTIONS)})")]
    try:
        data, node = safeyaml.load(text)
    except safeyaml.YamlProblem as exc:
        return None, {}, [Problem(shown, exc.message, line=exc.line)]
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(value_node, yaml.SequenceNode):
                for i, item in enumerate(value_node.value):
                    lines[(key_node.value, i)] = item.start_mark.line + 1
    return data, lines, []


def _kb_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml")
                  if "scenarios" not in p.relative_to(root).parts[:-1])


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _record_label(section: str, item: object) -> str:
    noun = section.rstrip("s") if section != "hardware" else "hardware"
    if isinstance(item, dict):
        if section == "relations":
            return f"relation '{item.get('from', '?')} {item.get('kind', '?')} {item.get('to', '?')}'"
        if "id" in item:
            return f"{noun} '{item['id']}'"
    return noun


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The record class a validation error location points into (for did-you-mean lists)."""
    for part in loc:
        if isinstance(part, int):
            continue
        fld = cls.model_fields.get(str(part)) or next(
            (f for f in cls.model_fields.values() if f.alias == part), None)
        if fld is None:
            return cls
        todo, found = [fld.annotation], None
        while todo and found is None:
            t = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                found = t
            else:
                todo += list(get_args(t))
        if found is None:
            return cls
        cls = found
    return cls


def _parse_records(path: Path) -> tuple[list[tuple[str, Record, int | None]], list[Problem]]:
    shown = _display(path)
    data, lines, problems = read_yaml(path)
    if problems:
        return [], problems
    if not isinstance(data, dict):
        return [], [Problem(shown, f"expected a mapping of sections ({', '.join(SECTIONS)}), "
                                   f"got {type(data).__name__}")]
    out: list[tuple[str, Record, int | None]] = []
    for section, items in data.items():
        if section not in SECTIONS:
            problems.append(Problem(shown, unknown("section", str(section), SECTIONS)
                                    + f"; valid sections: {', '.join(SECTIONS)}"))
            continue
        if not isinstance(items, list):
            problems.append(Problem(shown, f"section '{section}' must be a list of records, "
                                           f"got {type(items).__name__}"))
            continue
        cls = SECTIONS[section]
        for i, item in enumerate(items):
            line = lines.get((section, i))
            label = _record_label(section, item)
            if not isinstance(item, dict):
                problems.append(Problem(shown, f"each entry must be a mapping, got "
                                               f"{type(item).__name__}", label, line=line))
                continue
            try:
                out.append((section, cls.model_validate(item), line))
            except ValidationError as exc:
                for err in exc.errors():
                    msg = err["msg"]
                    if err["type"] == "extra_forbidden":
                        owner = _model_at(cls, err["loc"][:-1])
                        valid = [f.alias or n for n, f in owner.model_fields.items()]
                        msg = unknown("field", str(err["loc"][-1]), valid)
                    elif err["type"] == "missing":
                        msg = "required field is missing"
                    elif err["type"] == "enum":
                        msg = f"{msg} (got {err.get('input')!r})"
                    problems.append(Problem(shown, msg, label, _loc(err["loc"]) or None, line))
    return out, problems


# --------------------------------------------------------------------------------------------
# Loading and cross-reference validation
# --------------------------------------------------------------------------------------------


def _key(section: str, rec: Record) -> object:
    return rec.key if isinstance(rec, Relation) else rec.id  # type: ignore[attr-defined]


def load_kb(paths: Iterable[Path | str] | None = None, *, shipped: bool = True) -> KB:
    """Load the shipped KB (unless `shipped=False`) overlaid with `paths`; raise on any problem."""
    roots = ([SHIPPED_KB] if shipped else []) + [Path(p) for p in (paths or [])]
    env = os.environ.get("SLMREC_KB")
    if env and shipped and not paths:
        roots.append(Path(env))
    kb = KB(roots=roots)
    problems: list[Problem] = []
    digest = hashlib.sha256()
    for root in roots:
        if not root.is_dir():
            problems.append(Problem(_display(root), "KB directory does not exist"))
            continue
        files = _kb_files(root)
        if not files:
            problems.append(Problem(_display(root), "KB directory holds no *.yaml files"))
        seen_here: dict[object, str] = {}
        for path in files:
            records, errs = _parse_records(path)
            problems += errs
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes() if path.is_file() else b"")
            for section, rec, line in records:
                key = _key(section, rec)
                label = _record_label(section, rec.model_dump(by_alias=True, mode="json"))
                first = seen_here.get((section, key))
                if first is not None:
                    problems.append(Problem(_display(path), f"duplicate id; first defined at {first}",
                                            label, "id", line))
                    continue
                other = next((s for s in SECTIONS if s != section and s != "relations"
                              and section != "relations" and key in kb.section(s)), None)
                if other:
                    problems.append(Problem(_display(path), f"id already used by a record in "
                                            f"'{other}' ({kb.where(key)}); ids are global",
                                            label, "id", line))
                    continue
                seen_here[(section, key)] = f"{_display(path)}:{line}"
                kb.section(section)[key] = rec
                kb.origin[key] = Origin(_display(path), line)
    kb.version = digest.hexdigest()[:12]
    problems += check_references(kb)
    if problems:
        raise SlmrecError(problems)
    return kb


def serve_problem(m: Method, goal: Goal) -> str | None:
    """Why `m` cannot serve `goal` under the goal's `served_by` condition, or None."""
    need = goal.served_by
    if need.yields and not set(need.yields) & set(m.yields):
        return (f"cannot serve goal '{goal.id}': only a step that yields "
                f"{' or '.join(need.yields)} may (goal served_by.yields); the method's yields is "
                f"{m.yields or 'empty'}")
    if need.training and not (m.requires.training or m.cost.passes == "train"):
        return (f"cannot serve goal '{goal.id}': only a step that trains may (goal "
                "served_by.training); the method neither requires training nor has cost.passes "
                "'train'")
    return None


def check_references(kb: KB) -> list[Problem]:
    """Every cross-reference resolves; orderings are acyclic and consistent."""
    problems: list[Problem] = []

    def ref(key: object, label: str, fld: str, value: str, table: dict, noun: str) -> None:
        if value not in table:
            o = kb.origin.get(key)
            problems.append(Problem(o.file if o else "<kb>", unknown(noun, value, table), label,
                                    fld, o.line if o else None))

    def cite(key: object, label: str, fld: str, ids: list[str]) -> None:
        for i, s in enumerate(ids):
            ref(key, label, f"{fld}[{i}]", s, kb.sources, "source")

    for c in kb.components.values():
        cite(c.id, f"component '{c.id}'", "sources", c.sources)
        for j, p in enumerate(c.pathways):
            cite(c.id, f"component '{c.id}'", f"pathways[{j}].sources", p.sources)
    for cap in kb.capabilities.values():
        cite(cap.id, f"capability '{cap.id}'", "sources", cap.sources)
    for m in kb.methods.values():
        label = f"method '{m.id}'"
        ref(m.id, label, "component", m.component, kb.components, "component")
        comp = kb.components.get(m.component)
        if m.pathway and comp is not None:
            ref(m.id, label, "pathway", m.pathway, {p.id: p for p in comp.pathways},
                f"pathway of '{comp.id}'")
        cite(m.id, label, "sources", m.sources)
        for i, g in enumerate(m.serves):
            ref(m.id, label, f"serves[{i}]", g, kb.goals, "goal")
            why = serve_problem(m, kb.goals[g]) if g in kb.goals else None
            if why:
                o = kb.origin.get(m.id)
                problems.append(Problem(o.file if o else "<kb>", why, label, f"serves[{i}]",
                                        o.line if o else None))
        for fld in ("hardware_to_run", "hardware_to_run_any", "hardware_to_benefit"):
            for i, cap in enumerate(getattr(m.requires, fld)):
                ref(m.id, label, f"requires.{fld}[{i}]", cap, kb.capabilities, "capability")
        for kind in ("quality", "recovery", "speedup", "task_gain"):
            for i, ev in enumerate(getattr(m.effects, kind)):
                ref(m.id, label, f"effects.{kind}[{i}].source", ev.source, kb.sources, "source")
                for k in ev.when:
                    if k not in m.params:
                        ref(m.id, label, f"effects.{kind}[{i}].when", k, m.params, "parameter")
        for j, case in enumerate(m.effects.transform_cases):
            fld = f"effects.transform_cases[{j}]"
            for k, v in case.when.items():
                spec = m.params.get(k)
                if spec is None:
                    ref(m.id, label, f"{fld}.when", k, m.params, "parameter")
                elif spec.check(v):
                    o = kb.origin.get(m.id)
                    problems.append(Problem(o.file if o else "<kb>", f"{k}={v!r}: {spec.check(v)}",
                                            label, f"{fld}.when.{k}", o.line if o else None))
            for name, v in case:
                if isinstance(v, str) and v.startswith("$") and v[1:] not in m.params:
                    ref(m.id, label, f"{fld}.{name}", v[1:], m.params, "parameter")
        for part, obj in (("effects.transform", m.effects.transform), ("cost", m.cost)):
            for fld, v in obj:
                if isinstance(v, str) and v.startswith("$") and v[1:] not in m.params:
                    ref(m.id, label, f"{part}.{fld}", v[1:], m.params, "parameter")
    nodes = {**kb.methods, **kb.components}
    for r in kb.relations.values():
        label = f"relation '{r.id}'"
        ref(r.key, label, "from", r.src, nodes, "method or component")
        ref(r.key, label, "to", r.dst, nodes, "method or component")
        cite(r.key, label, "sources", r.sources)
        if r.src == r.dst:
            o = kb.origin.get(r.key)
            problems.append(Problem(o.file if o else "<kb>", "a relation cannot link a node to "
                                    "itself", label, "to", o.line if o else None))
    for h in kb.hardware.values():
        cite(h.id, f"hardware '{h.id}'", "sources", h.sources)
        for i, cap in enumerate(h.capabilities):
            ref(h.id, f"hardware '{h.id}'", f"capabilities[{i}]", cap, kb.capabilities,
                "capability")
    for b in kb.models.values():
        cite(b.id, f"model '{b.id}'", "sources", b.sources)
    for g in kb.goals.values():
        cite(g.id, f"goal '{g.id}'", "sources", g.sources)
    _check_formats(kb, ref, cite)
    if not problems:
        problems += _check_orderings(kb)
    return problems


def _check_formats(kb: KB, ref, cite) -> None:
    """Formats name tensor types that exist; runtimes name deployment methods that exist."""
    for t in kb.tensor_types.values():
        cite(t.id, f"tensor type '{t.id}'", "sources", t.sources)
        if t.fallback:
            ref(t.id, f"tensor type '{t.id}'", "fallback", t.fallback, kb.tensor_types,
                "tensor type")
    for f in kb.formats.values():
        label = f"format '{f.id}'"
        cite(f.id, label, "sources", f.sources)
        ref(f.id, label, "default", f.default, kb.tensor_types, "tensor type")
        ref(f.id, label, "norm_type", f.norm_type, kb.tensor_types, "tensor type")
        if f.extends:
            ref(f.id, label, "extends", f.extends, kb.formats, "format")
        for i, r in enumerate(f.rules):
            ref(f.id, label, f"rules[{i}].type", r.type, kb.tensor_types, "tensor type")
            if r.misfit:
                ref(f.id, label, f"rules[{i}].misfit", r.misfit, kb.tensor_types, "tensor type")
    for rt in kb.runtimes.values():
        cite(rt.id, f"runtime '{rt.id}'", "sources", rt.sources)
        for i, m in enumerate(rt.methods):
            ref(rt.id, f"runtime '{rt.id}'", f"methods[{i}]", m, kb.methods, "method")


def _check_orderings(kb: KB) -> list[Problem]:
    """`precedes` among main-stage nodes is acyclic; no pair is both ordered and conflicting."""
    problems: list[Problem] = []
    main = {c.id for c in kb.main_components()}

    def stage(node: str) -> str | None:
        if node in kb.components:
            return node
        m = kb.methods.get(node)
        return m.component if m else None

    order = nx.DiGraph()
    for r in kb.relations.values():
        if r.kind is RelationKind.precedes and stage(r.src) in main and stage(r.dst) in main:
            order.add_edge(r.src, r.dst, key=r.key)
    for cycle in nx.simple_cycles(order):
        edge = order.edges[cycle[-1], cycle[0]]["key"]
        o = kb.origin.get(edge)
        problems.append(Problem(o.file if o else "<kb>",
                                "cycle among 'precedes' relations: " + " -> ".join(cycle + [cycle[0]]),
                                f"relation '{' '.join(edge)}'", "to", o.line if o else None))
        if len(problems) >= 20:
            break
    pairs = defaultdict(set)
    for r in kb.relations.values():
        pairs[frozenset((r.src, r.dst))].add(r.kind)
    for r in kb.relations.values():
        kinds = pairs[frozenset((r.src, r.dst))]
        if r.kind is RelationKind.conflicts and kinds & {RelationKind.co_adapts, RelationKind.requires}:
            o = kb.origin.get(r.key)
            clash = sorted(k.value for k in kinds & {RelationKind.co_adapts, RelationKind.requires})
            problems.append(Problem(o.file if o else "<kb>",
                                    f"'{r.src}' and '{r.dst}' are declared to conflict and also "
                                    f"{' and '.join(clash)}", f"relation '{r.id}'", "kind",
                                    o.line if o else None))
    return problems


def iter_citations(kb: KB) -> Iterator[tuple[str, str, str]]:
    """(source id, citing record label, field) for every citation in the KB."""
    for c in kb.components.values():
        for s in c.sources:
            yield s, f"component:{c.id}", "sources"
    for m in kb.methods.values():
        for s in m.sources:
            yield s, f"method:{m.id}", "sources"
        for kind in ("quality", "recovery", "speedup", "task_gain"):
            for ev in getattr(m.effects, kind):
                yield ev.source, f"method:{m.id}", f"effects.{kind}"
    for r in kb.relations.values():
        for s in r.sources:
            yield s, f"relation:{r.id}", "sources"
    for h in kb.hardware.values():
        for s in h.sources:
            yield s, f"hardware:{h.id}", "sources"
    for b in kb.models.values():
        for s in b.sources:
            yield s, f"model:{b.id}", "sources"
    for g in kb.goals.values():
        for s in g.sources:
            yield s, f"goal:{g.id}", "sources"
    for section in ("tensor_types", "formats", "runtimes"):
        for r in kb.section(section).values():
            for s in r.sources:
                yield s, f"{section.rstrip('s')}:{r.id}", "sources"


def kb_json(kb: KB) -> str:
    """A canonical JSON dump (used by exports and tests)."""
    return json.dumps({name: [r.model_dump(by_alias=True, mode="json")
                              for r in kb.section(name).values()] for name in SECTIONS},
                      sort_keys=True)
