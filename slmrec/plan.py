"""Plans: an ordered chain of method steps with predictions and explanations, as YAML.

A plan is validated completely before anything runs: unknown methods, bad parameters, order
violations, conflicts and missing requirements are all collected and reported together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slmrec.errors import Problem, SlmrecError, did_you_mean, fields_at, unknown
from slmrec.kb import KB, read_yaml
from slmrec.schema import MAX_PLAN_STEPS, nonfinite_paths

PLAN_FORMAT = 1


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prediction(_Rec):
    value: float | None = None
    low: float | None = None
    high: float | None = None
    unit: str = ""
    basis: str = Field(default="analytic", description="analytic | evidence | calibrated | none")
    sources: list[str] = Field(default_factory=list)
    note: str | None = None


class Step(_Rec):
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    why: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    predicted: dict[str, Prediction] = Field(default_factory=dict)


class Rejection(_Rec):
    method: str
    component: str | None = None
    reason: str
    kind: str = Field(description="requirement | constraint | relation | evidence | dominated | "
                                  "other")
    sources: list[str] = Field(default_factory=list)


class Counterfactual(_Rec):
    relax: str = Field(description="the single constraint relaxed, e.g. memory_mb")
    to: Any = None
    change: str = Field(description="how the top plan would change")


class Plan(_Rec):
    format: int = PLAN_FORMAT
    name: str | None = None
    scenario: dict[str, Any] | None = None
    base_model: str
    hardware: str | None = None
    teacher: str | None = None
    steps: list[Step]
    predicted: dict[str, Prediction] = Field(default_factory=dict)
    rejected: list[Rejection] = Field(default_factory=list)
    counterfactuals: list[Counterfactual] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    goals: dict[str, str] = Field(default_factory=dict, description="goal id -> the step that "
                                  "serves it, or why it is not covered")
    kb_version: str | None = None
    score: float | None = Field(default=None, description="recommender score (lower is better)")
    feasible: bool = Field(default=True, description="meets every constraint of its scenario")
    violations: list[str] = Field(default_factory=list, description="constraints it breaks")

    def to_yaml(self, full: bool = True) -> str:
        if full:
            data = self.model_dump(mode="json", exclude_defaults=False)
            return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        # leaf mappings (a prediction, a parameter set) on one line each; prose stays a block
        return yaml.dump(self.brief(), Dumper=_BriefDumper, sort_keys=False, allow_unicode=True,
                         width=100)

    def brief(self) -> dict:
        """What a reader (and `slmrec run`/`predict`) needs: the scenario, the steps with their
        why and headline predictions, the goals; no per-metric source lists, no why-not table."""
        keep = ("size_mb", "inference_memory_mb", "decode_ms_per_token", "quality_loss_pct",
                "task_gain_pct", "step_peak_memory_mb", "step_hours")

        def preds(p: dict) -> dict:
            return {k: {x: v for x, v in p[k].model_dump(mode="json").items()
                        if x in ("value", "low", "high", "unit") and v is not None}
                    for k in keep if k in p}

        out = self.model_dump(mode="json", exclude_defaults=True,
                              exclude={"rejected", "steps", "predicted", "counterfactuals"})
        out["steps"] = [{"method": s.method, **({"params": s.params} if s.params else {}),
                         **({"why": s.why} if s.why else {}), "predicted": preds(s.predicted)}
                        for s in self.steps]
        out["predicted"] = preds(self.predicted)
        out["format"] = self.format
        return out

    def save(self, path: Path | str, full: bool = False) -> Path:
        """Write atomically: a half-written plan never replaces a good one. By default the
        brief form (`brief`); `full=True` keeps every source list and the why-not table."""
        from slmrec.safeio import write_text  # noqa: PLC0415

        return write_text(path, self.to_yaml(full))


class _BriefDumper(yaml.SafeDumper):
    """Flow style for mappings and lists of short scalars, block style for the rest."""


def _short(v: object) -> bool:
    return not isinstance(v, (dict, list)) and len(str(v)) <= 40


def _repr_dict(d: yaml.SafeDumper, data: dict):
    flow = all(_short(v) for v in data.values()) and len(str(data)) <= 90
    return d.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _repr_list(d: yaml.SafeDumper, data: list):
    return d.represent_sequence("tag:yaml.org,2002:seq", data,
                                flow_style=all(_short(v) for v in data))


_BriefDumper.add_representer(dict, _repr_dict)
_BriefDumper.add_representer(list, _repr_list)


def parse_plan(data: object, file: str = "<plan>") -> Plan:
    if not isinstance(data, dict):
        raise SlmrecError.one(file, f"a plan must be a mapping, got {type(data).__name__}")
    check_plan_data(data, file)
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = unknown("field", str(err["loc"][-1]), fields_at(Plan, err["loc"]))
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(Problem(file, msg, "plan", loc))
        raise SlmrecError(problems) from None


def check_plan_data(data: dict, file: str) -> None:
    """Before the plan model: its format version, its length, and no NaN or infinite number
    anywhere in it (a NaN passes every `>` limit)."""
    from slmrec.safeyaml import clip  # noqa: PLC0415

    fmt = data.get("format", PLAN_FORMAT)
    if isinstance(fmt, bool) or fmt != PLAN_FORMAT:
        raise SlmrecError.one(file, f"plan format {clip(fmt)} is not one this slmrec reads "
                              f"(format {PLAN_FORMAT}); make the plan again with `slmrec "
                              "recommend`", "plan", "format")
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_PLAN_STEPS:
        raise SlmrecError.one(file, f"{len(steps)} steps; a plan holds at most {MAX_PLAN_STEPS}",
                              "plan", "steps")
    bad = nonfinite_paths(data)
    if bad:
        raise SlmrecError([Problem(file, "must be a finite number (NaN and infinity are not)",
                                   "plan", where) for where in bad])


def load_plan(path: Path | str, kb: KB | None = None) -> Plan:
    """Read and fully validate a plan file; raise SlmrecError listing every problem."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise SlmrecError.one(shown, "plan file does not exist")
    data, _, problems = read_yaml(path)
    if problems:
        raise SlmrecError(problems)
    plan = parse_plan(data, shown)
    if kb is not None:
        problems = validate_plan(plan, kb, shown)
        if problems:
            raise SlmrecError(problems)
    return plan


def validate_plan(plan: Plan, kb: KB, file: str = "<plan>") -> list[Problem]:
    """Every problem of `plan` against the KB (methods, params, order, conflicts, requirements)."""
    problems: list[Problem] = []
    steps = plan.steps
    if not steps:
        problems.append(Problem(file, "a plan needs at least one step", "plan", "steps"))
    if plan.base_model not in kb.models and not Path(plan.base_model).expanduser().exists() \
            and not _is_bundled(plan.base_model):
        problems.append(Problem(file, unknown("base model", plan.base_model, kb.models)
                                + "; use a catalog id or a local model folder", "plan", "base_model"))
    if plan.hardware and plan.hardware not in kb.hardware and not (
            plan.hardware == "custom" and isinstance((plan.scenario or {}).get("hardware"), dict)):
        problems.append(Problem(file, unknown("hardware profile", plan.hardware, kb.hardware),
                                "plan", "hardware"))
    for i, step in enumerate(steps):
        label, where = f"step {i + 1} ({step.method})", f"steps[{i}]"
        m = kb.methods.get(step.method)
        if m is None:
            problems.append(Problem(file, unknown("method", step.method, kb.methods), label,
                                    f"{where}.method"))
            continue
        if not m.plannable:
            problems.append(Problem(file, f"method '{m.id}' is knowledge, not a plan step", label,
                                    f"{where}.method"))
        for name, value in step.params.items():
            spec = m.params.get(name)
            if spec is None:
                valid = ", ".join(m.params) or "none"
                problems.append(Problem(file, f"unknown parameter '{name}'"
                                        f"{did_you_mean(name, m.params)}; valid: {valid}",
                                        label, f"{where}.params.{name}"))
                continue
            why = spec.check(value)
            if why:
                problems.append(Problem(file, f"bad value {_clip(value)}: {why}", label,
                                        f"{where}.params.{name}"))
    problems += _order_problems(plan, kb, file)
    problems += _quantized_then_structural(plan, kb, file)
    problems += _requirement_problems(plan, kb, file)
    return problems


def _step_option(step: Step, kb: KB):
    from slmrec.estimate import compile_option, default_params  # noqa: PLC0415 (import cycle)

    m = kb.methods[step.method]
    params = default_params(m)
    params.update(step.params)
    return compile_option(m, params)


def _quantized_then_structural(plan: Plan, kb: KB, file: str) -> list[Problem]:
    """Integer-quantized weights are packed: a later step may not prune them or train them all."""
    from slmrec.recommend.rules import rules_for  # noqa: PLC0415 (the recommender imports plan)

    rules = rules_for(kb)
    problems = []
    quantized_by = None
    for i, step in enumerate(plan.steps):
        if step.method not in kb.methods:
            continue
        try:
            o = _step_option(step, kb)
        except Exception:  # a bad parameter is reported elsewhere
            continue
        if quantized_by and (o.edits_structure or o.trains_all) and not o.int_quant \
                and quantized_by not in rules.exempt(step.method):
            what = "edits the structure of" if o.edits_structure else "trains every weight of"
            problems.append(Problem(file, f"{what} a model whose weights '{quantized_by}' already "
                                          "quantized to integers; put it before the quantization",
                                    f"step {i + 1} ({step.method})", f"steps[{i}]"))
        if o.int_quant and not quantized_by:
            quantized_by = step.method
    return problems


def _requirement_problems(plan: Plan, kb: KB, file: str) -> list[Problem]:
    """Teacher, tokenizer and (when the plan carries its scenario) data-tier requirements."""
    from slmrec.scenario import ACCESS_RANK, Scenario  # noqa: PLC0415 (import cycle)

    problems: list[Problem] = []
    sc = None
    if plan.scenario:
        try:
            sc = Scenario.model_validate(plan.scenario)
        except ValidationError as exc:
            err = exc.errors()[0]
            problems.append(Problem(file, f"embedded scenario is invalid: {err['msg']}", "plan",
                                    "scenario." + ".".join(str(x) for x in err["loc"])))
    tiers = sc.available_tiers(kb) if sc is not None else None
    access = sc.effective_teacher_access(kb)[0] if sc is not None else ("logits" if plan.teacher else "none")
    student = kb.models.get(plan.base_model)
    teacher = kb.models.get(plan.teacher) if plan.teacher else None
    for i, step in enumerate(plan.steps):
        m = kb.methods.get(step.method)
        if m is None:
            continue
        label, where = f"step {i + 1} ({step.method})", f"steps[{i}].method"
        need = m.requires
        if need.teacher.value != "none" and not plan.teacher:
            problems.append(Problem(file, f"needs a teacher ({need.teacher.value} access); the plan "
                                          "names none (field 'teacher')", label, where))
        elif ACCESS_RANK[need.teacher.value] > ACCESS_RANK[access]:
            problems.append(Problem(file, f"needs teacher {need.teacher.value} access; the scenario "
                                          f"gives {access}", label, where))
        if need.tokenizer_match and plan.teacher:
            st = student.tokenizer if student else None
            tt = (teacher.tokenizer if teacher else None) or (sc.teacher.tokenizer if sc else None)
            if st is None or tt is None or st != tt:
                problems.append(Problem(file, f"needs teacher and student to share a tokenizer: "
                                              f"teacher '{plan.teacher}' uses {tt or 'an unknown one'}, "
                                              f"student '{plan.base_model}' uses {st or 'an unknown one'}",
                                        label, where))
        if need.tokenizer_mismatch and plan.teacher:
            st = student.tokenizer if student else None
            tt = (teacher.tokenizer if teacher else None) or (sc.teacher.tokenizer if sc else None)
            if st is not None and st == tt:
                problems.append(Problem(file, f"is useful only when teacher and student tokenizers "
                                              f"differ: teacher '{plan.teacher}' and student "
                                              f"'{plan.base_model}' share {st}", label, where))
        tier = need.data.value
        if tiers is not None and tier != "none" and tier not in tiers:
            problems.append(Problem(file, f"needs data tier '{tier}'; the plan's scenario provides "
                                          f"{', '.join(sorted(tiers - {'none'})) or 'none'}",
                                    label, where))
    return problems


def _clip(value: object) -> str:
    from slmrec.safeyaml import clip  # noqa: PLC0415

    return clip(value)


def _is_bundled(name: str) -> bool:
    try:
        from runners.models import BUNDLED_MODELS
    except Exception:  # runners not importable: only catalog ids and folders are known
        return False
    return name in BUNDLED_MODELS


def _order_problems(plan: Plan, kb: KB, file: str) -> list[Problem]:
    """Order, conflicts, requirements and slots: the recommender's own rule checker."""
    from slmrec.recommend.rules import rules_for  # noqa: PLC0415 (the recommender imports plan)

    ids = [s.method for s in plan.steps]
    return [Problem(file, v.text, f"step {v.at + 1} ({ids[v.at]})",
                    f"steps[{v.at}]" + (".method" if v.kind == "requires" else ""))
            for v in rules_for(kb).check(ids)]
