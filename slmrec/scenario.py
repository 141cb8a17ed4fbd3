"""Scenarios: what the user has and needs, as YAML (`kb/scenarios/<name>.yaml`).

A scenario names the task, the base model (catalog id, local folder, or `choose`), the target
hardware (profile id or custom figures), the workload, budgets, the quality tolerance, the data
the user holds (graded tiers with amounts), teacher access, where lifecycle steps may run and what
they may cost, and preferences. Every problem of a scenario file is reported at once, one line
each, naming the file, the field and what would be valid.

The vocabulary of data tiers lives in one small table here (`STANDS_IN`, `TEACHER_TIERS`): a
richer tier can stand in for a poorer one, and teacher logits imply teacher text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slmrec.errors import Problem, SlmrecError, did_you_mean, fields_at, unknown
from slmrec.estimate import TOKENS_PER_UNIT, Arch
from slmrec.kb import KB, SHIPPED_KB, read_yaml
from slmrec.schema import ComputeScale, DataTier, Hardware, Precision, TeacherAccess
from slmrec.schema import BandwidthGBs, MemoryGB, Tflops, Tokens

# ---- data-tier vocabulary (the only place these semantics live) -----------------------------
# The unit of each amount a scenario gives, and a default amount when only the tier is named.
DATA_UNITS = {"calibration": "samples", "unlabeled": "tokens", "labeled": "examples",
              "preference": "pairs"}
DEFAULT_AMOUNTS = {"calibration": 128, "unlabeled": 1e7, "labeled": 10_000, "preference": 5_000}
# A tier the user holds -> the requirement tiers it can satisfy. Any text can calibrate; labeled
# examples and preference pairs are also unlabeled text.
STANDS_IN: dict[str, tuple[str, ...]] = {
    "calibration": ("calibration",),
    "unlabeled": ("unlabeled", "calibration"),
    "labeled": ("labeled", "unlabeled", "calibration"),
    "preference": ("preference", "unlabeled", "calibration"),
}
# Teacher access -> the teacher tiers it provides (logits imply text).
TEACHER_TIERS: dict[str, tuple[str, ...]] = {"none": (), "text": ("teacher-text",),
                                             "logits": ("teacher-logits", "teacher-text")}
ACCESS_RANK = {"none": 0, "text": 1, "logits": 2}
COMPUTE_RANK = {c.value: i for i, c in enumerate(ComputeScale)}
OBJECTIVES = ("quality", "memory", "latency", "size", "prefill", "cost")
CHOOSE = "choose"


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CustomHardware(_Rec):
    """Inline figures for a target that has no profile in kb/hardware.yaml."""

    name: str = "custom hardware"
    kind: Literal["cpu", "gpu", "soc", "npu"] = "cpu"
    memory_gb: MemoryGB
    memory_bandwidth_gbs: BandwidthGBs
    peak_tflops: dict[Precision, Tflops] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)
    capabilities: list[str] = Field(default_factory=list)

    def to_hardware(self, id: str = "custom") -> Hardware:
        return Hardware(id=id, name=self.name, kind=self.kind, memory_gb=self.memory_gb,
                        memory_bandwidth_gbs=self.memory_bandwidth_gbs,
                        peak_tflops=self.peak_tflops, precisions=self.precisions,
                        capabilities=self.capabilities, sources=["scenario-figures"])


class Workload(_Rec):
    context: Tokens = Field(default=2048, description="tokens held in the KV cache")
    prompt_tokens: Tokens = Field(default=512, description="tokens in one prefill")
    batch: int = Field(default=1, gt=0, le=1_000_000, description="sequences decoded together")


class Budgets(_Rec):
    memory_mb: float | None = Field(default=None, gt=0, description="inference peak memory")
    size_mb: float | None = Field(default=None, gt=0, description="size on disk")
    decode_ms_per_token: float | None = Field(default=None, gt=0)
    prefill_ms: float | None = Field(default=None, gt=0)


class Data(_Rec):
    calibration: float = Field(default=0, ge=0, description="calibration samples")
    unlabeled: float = Field(default=0, ge=0, description="unlabeled domain tokens")
    labeled: float = Field(default=0, ge=0, description="labeled examples")
    preference: float = Field(default=0, ge=0, description="preference pairs")

    def tiers(self) -> set[str]:
        """Requirement tiers this data satisfies (through STANDS_IN), 'none' always."""
        out = {"none"}
        for tier in DATA_UNITS:
            if getattr(self, tier) > 0:
                out.update(STANDS_IN[tier])
        return out

    def tokens(self) -> dict[str, float]:
        """Tokens available to each requirement tier (every tier that stands in counts)."""
        out: dict[str, float] = {}
        for tier, unit in DATA_UNITS.items():
            amount = getattr(self, tier) * TOKENS_PER_UNIT[unit]
            if amount > 0:
                for need in STANDS_IN[tier]:
                    out[need] = out.get(need, 0.0) + amount
        return out


class Teacher(_Rec):
    access: TeacherAccess = TeacherAccess.none
    model: str | None = Field(default=None, description="catalog id, local folder or a name")
    tokenizer: str | None = Field(default=None, description="tokenizer family, if not a catalog model")
    local: bool | None = Field(default=None, description="runs where the data is (default: a "
                                                         "catalog model or a folder is local)")


class Compute(_Rec):
    hardware: str | CustomHardware | None = Field(
        default=None, description="where lifecycle steps run (default: the target)")
    memory_mb: float | None = Field(default=None, gt=0, description="peak memory of any step")
    tflop: float | None = Field(default=None, gt=0, description="total compute of all steps")
    hours: float | None = Field(default=None, gt=0, description="total time of all steps")
    scale: ComputeScale = ComputeScale.fine_tune


class Preferences(_Rec):
    objectives: list[Literal["quality", "memory", "latency", "size", "prefill", "cost"]] = Field(
        default_factory=lambda: ["quality", "memory", "latency"], min_length=1)
    privacy: bool = Field(default=False, description="data stays on the device: steps run on "
                                                     "the target and only a local teacher may see it")
    include: list[str] = Field(default_factory=list, description="methods the plan must contain")
    exclude: list[str] = Field(default_factory=list, description="methods the plan must not use")
    max_steps: int = Field(default=5, ge=1, le=12, description="steps that change the model, "
                           "the stages the goals call for included; evaluation and deployment "
                           "steps come on top")
    runnable: bool = Field(default=False, description="plan only methods this installation can "
                                                      "execute (a registered runner)")
    conservative: bool = Field(default=False, description="check tolerance against the high "
                                                          "end of the quality range")


class Scenario(_Rec):
    name: str = ""
    description: str = ""
    task: str = Field(min_length=1)
    base_model: str = Field(min_length=1, description="catalog id, local folder or 'choose'")
    candidates: list[str] = Field(default_factory=list, description="models 'choose' may pick")
    base_bits: float = Field(default=16, gt=0, le=32, description="bits per weight of the "
                                                                  "base checkpoint")
    hardware: str | CustomHardware
    workload: Workload = Field(default_factory=Workload)
    budgets: Budgets = Field(default_factory=Budgets)
    tolerance_pct: float = Field(default=5.0, ge=0, description="relative quality loss allowed")
    data: Data = Field(default_factory=Data)
    teacher: Teacher = Field(default_factory=Teacher)
    compute: Compute = Field(default_factory=Compute)
    preferences: Preferences = Field(default_factory=Preferences)
    goals: list[str] = Field(default_factory=list, description="goals the lifecycle must reach "
                             "besides those the scenario implies (ids in kb/goals.yaml)")
    update_every_days: float | None = Field(default=None, gt=0, description="how often the "
                                            "model must be refreshed (implies keep-current)")

    @field_validator("data", mode="before")
    @classmethod
    def _data_shorthand(cls, v: Any) -> Any:
        if v is None or v == "none" or v == []:
            return {}
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):  # tiers named without amounts get a typical amount
            return {t: DEFAULT_AMOUNTS.get(t, 1) for t in v} if all(isinstance(t, str) for t in v) else v
        return v

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_shorthand(cls, v: Any) -> Any:
        if v is None or v == "none":
            return {}
        if isinstance(v, str):  # "logits:llama-3.2-1b" or "text"
            access, _, model = v.partition(":")
            return {"access": access, **({"model": model} if model else {})}
        return v

    @model_validator(mode="after")
    def _teacher_model(self) -> "Scenario":
        if self.teacher.access is not TeacherAccess.none and not self.teacher.model:
            raise ValueError("teacher.model is required when teacher.access is "
                             f"'{self.teacher.access.value}'")
        return self

    # ---- resolution against the KB ---------------------------------------------------------

    def target(self, kb: KB) -> Hardware:
        if isinstance(self.hardware, CustomHardware):
            return self.hardware.to_hardware()
        return kb.hardware[self.hardware]

    def compute_target(self, kb: KB) -> Hardware:
        hw = self.compute.hardware
        if self.preferences.privacy or hw is None:
            return self.target(kb)
        if isinstance(hw, CustomHardware):
            return hw.to_hardware("custom-compute")
        return kb.hardware[hw]

    def step_memory_budget_mb(self, kb: KB) -> float:
        hw_mb = self.compute_target(kb).memory_gb * 1000
        return min(hw_mb, self.compute.memory_mb) if self.compute.memory_mb else hw_mb

    def memory_budget_mb(self, kb: KB) -> float:
        hw_mb = self.target(kb).memory_gb * 1000
        return min(hw_mb, self.budgets.memory_mb) if self.budgets.memory_mb else hw_mb

    def candidate_models(self, kb: KB) -> list[str]:
        if self.base_model != CHOOSE:
            return [self.base_model]
        return list(self.candidates) or sorted(kb.models)

    def arch(self, kb: KB, model: str) -> Arch:
        if model in kb.models:
            return Arch.from_card(kb.models[model])
        path = Path(model).expanduser()
        if (path / "config.json").is_file():
            return Arch.from_config(path)
        raise SlmrecError.one("<scenario>", f"base model '{model}' has no catalog card and no "
                                            f"config.json to read its architecture from")

    def teacher_arch(self, kb: KB) -> Arch | None:
        t = self.teacher
        if t.access is TeacherAccess.none or not t.model:
            return None
        if t.model in kb.models:
            return Arch.from_card(kb.models[t.model])
        path = Path(t.model).expanduser()
        if (path / "config.json").is_file():
            arch = Arch.from_config(path)
            if t.tokenizer:
                arch.tokenizer = t.tokenizer
            return arch
        return None

    def teacher_tokenizer(self, kb: KB) -> str | None:
        if self.teacher.tokenizer:
            return self.teacher.tokenizer
        arch = self.teacher_arch(kb)
        return arch.tokenizer if arch else None

    def teacher_is_local(self, kb: KB) -> bool:
        if self.teacher.local is not None:
            return self.teacher.local
        return self.teacher_arch(kb) is not None

    def effective_teacher_access(self, kb: KB) -> tuple[str, str | None]:
        """(access, why it was reduced) after privacy is applied."""
        access = self.teacher.access.value
        if access != "none" and self.preferences.privacy and not self.teacher_is_local(kb):
            return "none", ("privacy: the data may not leave the device and teacher "
                            f"'{self.teacher.model}' is remote")
        return access, None

    def available_tiers(self, kb: KB) -> set[str]:
        access, _ = self.effective_teacher_access(kb)
        return self.data.tiers() | set(TEACHER_TIERS[access])

    def summary(self) -> str:
        hw = self.hardware if isinstance(self.hardware, str) else self.hardware.name
        b = self.budgets
        parts = [f"{self.base_model} on {hw}"]
        for label, v, unit in (("memory", b.memory_mb, "MB"), ("size", b.size_mb, "MB"),
                               ("decode", b.decode_ms_per_token, "ms/token"),
                               ("prefill", b.prefill_ms, "ms")):
            if v:
                parts.append(f"{label} <= {v:g} {unit}")
        parts.append(f"tolerance {self.tolerance_pct:g}%")
        held = [f"{t} {getattr(self.data, t):g} {u}" for t, u in DATA_UNITS.items()
                if getattr(self.data, t)]
        parts.append("data: " + (", ".join(held) or "none"))
        t = self.teacher
        parts.append("teacher: " + (f"{t.access.value} ({t.model})" if t.access.value != "none" else "none"))
        return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Loading, validation and lookup
# --------------------------------------------------------------------------------------------


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "CustomHardware", "function-after[_teacher_model(), Scenario]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_scenario(data: object, file: str, kb: KB, name: str | None = None) -> Scenario:
    """Validate a scenario mapping completely; raise SlmrecError with every problem."""
    if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]:
        name = data["name"]
    label = f"scenario '{name}'" if name else "scenario"
    if not isinstance(data, dict):
        raise SlmrecError.one(file, f"a scenario must be a mapping, got {type(data).__name__}", label)
    problems: list[Problem] = check_scenario(data, kb, file, label)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        seen = set()
        for err in exc.errors():
            loc = err["loc"]
            if "CustomHardware" in loc and isinstance(data.get("hardware"), str):
                continue  # a string hardware failed only as inline figures: not a second problem
            if loc and loc[0] == "hardware" and len(loc) > 1 and loc[1] == "str" \
                    and isinstance(data.get("hardware"), dict):
                continue
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                valid = fields_at(Scenario, loc)
                msg = unknown("field", str(loc[-1]), valid) + (f"; valid: {', '.join(valid)}" if valid else "")
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] in ("literal_error", "enum"):
                msg = f"{msg} (got {err.get('input')!r})"
            where = _loc(loc) or None
            key = (where, msg)
            if key not in seen:
                seen.add(key)
                problems.append(Problem(file, msg, label, where))
        raise SlmrecError(problems) from None
    if name and not sc.name:
        sc.name = name
    if problems:
        raise SlmrecError(problems)
    return sc


def check_scenario(raw: dict, kb: KB, file: str, label: str = "scenario") -> list[Problem]:
    """Cross-references against the KB (ids exist, figures are usable), read from the raw
    mapping so they are reported even when other fields are malformed."""
    problems: list[Problem] = []

    def model_ok(m: str) -> bool:
        return m in kb.models or (Path(m).expanduser() / "config.json").is_file()

    base = raw.get("base_model")
    if isinstance(base, str) and base and base != CHOOSE and not model_ok(base):
        hint = " (a local folder needs a config.json)" if Path(base).expanduser().is_dir() else ""
        problems.append(Problem(file, unknown("base model", base, kb.models)
                                + f"{hint}; valid: a catalog id ({', '.join(sorted(kb.models)) or 'none'}), "
                                  "a local model folder, or 'choose'", label, "base_model"))
    cands = raw.get("candidates")
    for i, c in enumerate(cands if isinstance(cands, list) else []):
        if isinstance(c, str) and c not in kb.models:
            problems.append(Problem(file, unknown("base model", c, kb.models), label,
                                    f"candidates[{i}]"))
    if base == CHOOSE and not cands and not kb.models:
        problems.append(Problem(file, "'choose' needs a model catalog (kb models) or candidates",
                                label, "base_model"))
    compute = raw.get("compute") if isinstance(raw.get("compute"), dict) else {}
    for fld, hw in (("hardware", raw.get("hardware")), ("compute.hardware", compute.get("hardware"))):
        if isinstance(hw, str) and hw not in kb.hardware:
            problems.append(Problem(file, unknown("hardware profile", hw, kb.hardware)
                                    + f"; valid: {', '.join(sorted(kb.hardware)) or 'none'}, "
                                      "or inline figures (memory_gb, memory_bandwidth_gbs, "
                                      "peak_tflops, precisions)", label, fld))
        elif isinstance(hw, dict) and isinstance(hw.get("capabilities"), list):
            for i, cap in enumerate(hw["capabilities"]):
                if isinstance(cap, str) and cap not in kb.capabilities:
                    problems.append(Problem(file, unknown("capability", cap, kb.capabilities),
                                            label, f"{fld}.capabilities[{i}]"))
    prefs = raw.get("preferences") if isinstance(raw.get("preferences"), dict) else {}
    for fld in ("include", "exclude"):
        vals = prefs.get(fld)
        for i, m in enumerate(vals if isinstance(vals, list) else []):
            if isinstance(m, str) and m not in kb.methods:
                problems.append(Problem(file, unknown("method", m, kb.methods), label,
                                        f"preferences.{fld}[{i}]"))
    goals = raw.get("goals")
    for i, g in enumerate(goals if isinstance(goals, list) else []):
        if isinstance(g, str) and kb.goals and g not in kb.goals:
            problems.append(Problem(file, unknown("goal", g, kb.goals)
                                    + f"; valid: {', '.join(kb.goals)}", label, f"goals[{i}]"))
    both = {m for m in (prefs.get("include") or []) if isinstance(m, str)} & \
        {m for m in (prefs.get("exclude") or []) if isinstance(m, str)}
    for m in sorted(both):
        problems.append(Problem(file, f"method '{m}' is both included and excluded", label,
                                "preferences.exclude"))
    t = raw.get("teacher")
    if isinstance(t, str) and t != "none":
        access, _, model = t.partition(":")
        t = {"access": access, "model": model or None}
    if isinstance(t, dict) and t.get("access") == "logits":
        model = t.get("model")
        if isinstance(model, str) and model not in kb.models and not t.get("tokenizer") \
                and not (Path(model).expanduser() / "config.json").is_file():
            problems.append(Problem(file, f"teacher '{model}' is not a catalog model or a local "
                                          f"folder{did_you_mean(model, kb.models)}; logit access "
                                          "needs its tokenizer: give teacher.tokenizer", label,
                                    "teacher.model"))
    return problems


def scenario_dirs(kb: KB | None = None) -> list[Path]:
    roots = list(kb.roots) if kb is not None and kb.roots else [SHIPPED_KB]
    return [r / "scenarios" for r in roots if (r / "scenarios").is_dir()]


def list_scenarios(kb: KB | None = None) -> dict[str, Path]:
    """Named scenarios: later KB roots override earlier ones."""
    out: dict[str, Path] = {}
    for d in scenario_dirs(kb):
        for p in sorted(d.glob("*.yaml")):
            out[p.stem] = p
    return out


def load_scenario(ref: str | Path, kb: KB) -> Scenario:
    """A scenario by name (kb/scenarios/<name>.yaml) or by file path, fully validated."""
    path = Path(ref)
    named = list_scenarios(kb)
    if not path.suffix and str(ref) in named:
        path = named[str(ref)]
    elif not path.is_file():
        if str(ref) in named:
            path = named[str(ref)]
        else:
            raise SlmrecError.one(str(ref), unknown("scenario", str(ref), named)
                                  + f"; valid: a file path or one of {', '.join(named) or 'none'}")
    data, _, problems = read_yaml(path)
    if problems:
        raise SlmrecError(problems)
    return parse_scenario(data, _display(path), kb, path.stem)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def scenario_from_dict(data: dict, kb: KB, name: str = "inline") -> Scenario:
    return parse_scenario(data, "<flags>", kb, name)


def to_dict(sc: Scenario) -> dict:
    return sc.model_dump(mode="json", exclude_defaults=True)


def dump_yaml(sc: Scenario) -> str:
    return yaml.safe_dump(to_dict(sc), sort_keys=False, allow_unicode=True, width=100)


def data_tier_ok(tier: str, sc: Scenario, kb: KB) -> bool:
    return tier == DataTier.none.value or tier in sc.available_tiers(kb)
