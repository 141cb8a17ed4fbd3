"""Typed records of the knowledge base.

Every record forbids unknown fields, so a typo in `kb/` is reported instead of silently ignored.
Cross-references (a method's component, a relation's ends, cited sources) are plain ids here;
`slmrec.kb` resolves and checks them, because a record alone cannot know what else exists.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal, Union

import math

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, field_validator,
                      model_validator)

# ---- numbers: finite and physically bounded (a NaN compares false with every limit, an inf or
# a zero rate divides into nonsense, so both are refused where a record is read) ----------------

Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Bits = Annotated[float, Field(ge=1, le=64, allow_inf_nan=False)]
# Hardware: from a microcontroller to a large cluster node, with room to spare.
MemoryGB = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False,
                                  description="GB, 0 < x <= 1e6")]
BandwidthGBs = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False,
                                      description="GB/s, 0 < x <= 1e6")]
Tflops = Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False,
                                description="TFLOPS (TOPS), 0 < x <= 1e7")]
Tokens = Annotated[int, Field(gt=0, le=100_000_000, description="tokens, 1..1e8")]
Count = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]
MAX_PLAN_STEPS = 64  # longer plans are refused before any check that grows with their length


def nonfinite_paths(data: object, path: str = "", limit: int = 10) -> list[str]:
    """Dotted paths of NaN/inf floats inside plain data (dicts, lists), at most `limit`."""
    out: list[str] = []
    stack = [(path, data)]
    while stack and len(out) < limit:
        where, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            out.append(where or "<value>")
        elif isinstance(v, dict):
            stack.extend((f"{where}.{k}" if where else str(k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return out


ID_PATTERN = r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$"
_ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, Field(pattern=ID_PATTERN, description="lower-case kebab-case id")]
# A number, or "$name": a reference to the step parameter `name` resolved when a plan is built.
ParamRef = Annotated[str, Field(pattern=r"^\$[a-z_][a-z0-9_]*$")]


def _ranged_value(lo: float, hi: float, lo_open: bool = False):
    """A number within [lo, hi] (or (lo, hi]) or a "$param" reference, as one type so that a bad
    number is one problem, not one per union member."""
    def check(v):
        if isinstance(v, str):
            return v
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise ValueError(f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {v:g}")
        return v
    return Annotated[Union[Annotated[float, Field(allow_inf_nan=True)], ParamRef],
                     AfterValidator(check)]


Value = _ranged_value(-math.inf, math.inf)
BitsValue = _ranged_value(1, 64)
FractionValue = _ranged_value(0, 1)
PositiveValue = _ranged_value(0, 1e15, lo_open=True)
NonNegativeValue = _ranged_value(0, 1e18)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ComponentClass(str, Enum):
    main = "main"
    optional = "optional"
    cross_cutting = "cross-cutting"


class RelationKind(str, Enum):
    precedes = "precedes"      # from must come before to when both are in a chain
    requires = "requires"      # from cannot be used unless to is present (or its output is)
    conflicts = "conflicts"    # from and to must not both be in one chain (symmetric)
    recovers = "recovers"      # from heals the quality that to lost
    co_adapts = "co-adapts"    # from and to are tuned jointly (symmetric)
    reuses = "reuses"          # from applies the technique of to in another stage
    feeds_back = "feeds-back"  # from's outcome triggers a revisit of to (kept out of stage order)
    constrains = "constrains"  # from's choice limits what to may choose


SYMMETRIC_KINDS = frozenset({RelationKind.conflicts, RelationKind.co_adapts})


class DataTier(str, Enum):
    none = "none"
    calibration = "calibration"          # a few hundred unlabeled samples
    unlabeled = "unlabeled"              # unlabeled (domain) text, token counts
    labeled = "labeled"                  # labeled task examples / instruction pairs
    preference = "preference"            # chosen/rejected pairs
    teacher_logits = "teacher-logits"    # teacher output distributions
    teacher_text = "teacher-text"        # teacher generations only


class TeacherAccess(str, Enum):
    none = "none"
    text = "text"
    logits = "logits"


class ComputeScale(str, Enum):
    """Compute relative to the model's size, coarsest first."""

    none = "none"                        # no model passes (a format change, a runtime flag)
    calibration = "calibration"          # forward passes over a small calibration set
    fine_tune = "fine-tune"              # thousands to millions of training tokens
    continued_pretraining = "continued-pretraining"  # billions of tokens, a fraction of pre-training
    pretraining = "pretraining"          # the full pre-training budget


class SourceKind(str, Enum):
    survey = "survey"
    paper = "paper"
    documentation = "documentation"
    practitioner = "practitioner"
    measured = "measured"                # our own measurement (says so, and where)


class EvidenceBasis(str, Enum):
    reported = "reported"          # the paper's own figure
    survey = "survey"              # a survey's table
    documentation = "documentation"
    measured = "measured"          # slmrec's own measurement
    unpublished = "unpublished"    # nothing published: no number is given
    not_transferable = "not-transferable"  # published, but for a setting that does not carry over


class Precision(str, Enum):
    fp32 = "fp32"
    tf32 = "tf32"
    fp16 = "fp16"
    bf16 = "bf16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"
    fp4 = "fp4"


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


class Source(Record):
    id: Id
    title: str = Field(min_length=1)
    authors: list[str] = Field(default_factory=list)
    year: int = Field(ge=1950, le=2100)
    venue: str | None = None
    kind: SourceKind
    arxiv: str | None = Field(default=None, pattern=r"^\d{4}\.\d{4,5}$")
    doi: str | None = Field(default=None, pattern=r"^10\.\d{4,9}/\S+$")
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    path: str | None = Field(default=None, description="our own measurement: where in this "
                                                       "repository it is produced")
    note: str | None = None

    @model_validator(mode="after")
    def _identifiable(self) -> "Source":
        if not (self.arxiv or self.doi or self.url or self.path):
            raise ValueError("a source needs a verifiable identifier: arxiv, doi or url "
                             "(or, for our own measurement, path)")
        if self.path and self.kind is not SourceKind.measured:
            raise ValueError("path identifies our own measurements only (kind: measured)")
        if self.kind in (SourceKind.paper, SourceKind.survey) and not self.authors:
            raise ValueError("a paper or survey needs its authors")
        return self

    @property
    def identifier(self) -> str:
        if self.arxiv:
            return f"arXiv:{self.arxiv}"
        if self.doi:
            return f"doi:{self.doi}"
        return self.url or self.path or ""


# --------------------------------------------------------------------------------------------
# Lifecycle components
# --------------------------------------------------------------------------------------------


class Pathway(Record):
    id: Id
    name: str
    summary: str
    sources: list[Id] = Field(min_length=1)


class Component(Record):
    id: Id
    name: str
    cls: ComponentClass = Field(alias="class")
    order: int | None = Field(default=None, ge=0, description="position among main components")
    summary: str
    pathways: list[Pathway] = Field(default_factory=list)
    sources: list[Id] = Field(min_length=1)

    @model_validator(mode="after")
    def _order_for_main(self) -> "Component":
        if self.cls is ComponentClass.main and self.order is None:
            raise ValueError("a main component needs an order")
        return self


class Capability(Record):
    """A hardware or runtime capability a method may need to run or to benefit."""

    id: Id
    summary: str
    sources: list[Id] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


class ParamSpec(Record):
    type: Literal["int", "float", "str", "bool"]
    default: float | int | str | bool | None = None
    min: float | None = None
    max: float | None = None
    choices: list[float | int | str] | None = None
    search: list[float | int | str | bool] | None = Field(
        default=None, description="values the recommender explores"
    )
    description: str = ""

    @model_validator(mode="after")
    def _default_is_valid(self) -> "ParamSpec":
        for v in ([self.default] if self.default is not None else []) + list(self.search or []):
            problem = self.check(v)
            if problem:
                raise ValueError(f"value {v!r}: {problem}")
        return self

    def check(self, value: object) -> str | None:
        """Return why `value` is not valid for this parameter, or None."""
        py = {"int": int, "float": (int, float), "str": str, "bool": bool}[self.type]
        if isinstance(value, bool) and self.type != "bool":
            return f"expected {self.type}, got a boolean"
        if not isinstance(value, py):
            return f"expected {self.type}, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**62:
            return "is out of range"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {self.choices}"
        if self.min is not None and value < self.min:  # type: ignore[operator]
            return f"must be >= {self.min}"
        if self.max is not None and value > self.max:  # type: ignore[operator]
            return f"must be <= {self.max}"
        return None


class Amount(Record):
    count: float = Field(gt=0)
    unit: Literal["samples", "tokens", "examples", "pairs"]
    note: str | None = None


class Requirements(Record):
    data: DataTier = DataTier.none
    data_amount: Amount | None = None
    teacher: TeacherAccess = TeacherAccess.none
    tokenizer_match: bool = Field(
        default=False, description="teacher and student must share a tokenizer/vocabulary"
    )
    tokenizer_mismatch: bool = Field(
        default=False, description="useful only when teacher and student tokenizers differ "
                                   "(cross-tokenizer distillation); with a shared tokenizer the "
                                   "same-tokenizer methods do the job")
    training: bool = False
    compute: ComputeScale = ComputeScale.none
    hardware_to_run: list[Id] = Field(default_factory=list, description="capability ids")
    hardware_to_run_any: list[Id] = Field(
        default_factory=list, description="capability ids of which at least one is needed")
    hardware_to_benefit: list[Id] = Field(default_factory=list, description="capability ids")
    note: str | None = None

    @model_validator(mode="after")
    def _tokenizers(self) -> "Requirements":
        if self.tokenizer_match and self.tokenizer_mismatch:
            raise ValueError("tokenizer_match and tokenizer_mismatch cannot both be true")
        if self.tokenizer_mismatch and self.teacher == TeacherAccess.none:
            raise ValueError("tokenizer_mismatch needs a teacher (requires.teacher)")
        return self


class Evidence(Record):
    """A measured or reported range, with where it comes from.

    `low`/`high` are absent exactly when `basis` is `unpublished`: then `note` says so.
    """

    low: float | None = None
    high: float | None = None
    source: Id
    basis: EvidenceBasis = EvidenceBasis.reported
    metric: str | None = Field(default=None, description="what was measured, e.g. wikitext2-ppl")
    setting: str | None = Field(default=None, description="model and conditions of the figure")
    when: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="step parameters this figure applies to"
    )
    baseline: str | None = Field(
        default=None, description="the reference the figure is measured against, in words (the "
                                  "base model as bundled, a full KV cache); see `versus` for a "
                                  "figure against another method")
    versus: str | None = Field(
        default=None, description="the other method or system the figure compares against "
                                  "(LoRA against full fine-tuning): not a change of the step's "
                                  "input, so the estimator and the recommender never read it as one")
    model_params: float | None = Field(
        default=None, gt=0, description="parameters of the model the figure was measured on")
    scope: Literal["decode", "prefill", "throughput", "ttft", "training", "end-to-end"] | None = \
        Field(default=None, description="what a speed figure times")
    data: Amount | None = Field(
        default=None, description="how much data the figure's setting used (task gains scale "
                                  "with it)")
    note: str | None = None

    @model_validator(mode="after")
    def _range(self) -> "Evidence":
        if self.basis in (EvidenceBasis.unpublished, EvidenceBasis.not_transferable):
            if self.low is not None or self.high is not None:
                raise ValueError(f"a {self.basis.value} effect carries no number")
            if not self.note:
                raise ValueError(f"a {self.basis.value} effect needs a note saying what is known")
            return self
        if self.low is None or self.high is None:
            raise ValueError("low and high are required unless basis is 'unpublished'")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        return self


class Transform(Record):
    """What a step does to the model, declaratively. Values may reference step params ($name)."""

    weight_bits: BitsValue | None = None
    group_size: PositiveValue | None = Field(default=None, description="weights per quantization group")
    group_overhead_bits: NonNegativeFinite = Field(default=32.0, le=256,
                                                   description="scale+zero bits per group")
    embedding_bits: BitsValue | None = Field(
        default=None, description="bits of the embedding table (and a head tied to it) after an "
                                  "integer format; absent: the table keeps its precision")
    activation_bits: BitsValue | None = None
    kv_cache_bits: BitsValue | None = None
    sparsity: FractionValue | None = Field(default=None, description="fraction of weights zeroed")
    sparsity_structure: Literal["unstructured", "semi-structured", "structured"] | None = None
    params_fraction_removed: FractionValue | None = Field(
        default=None, description="fraction of non-embedding parameters physically removed"
    )
    mlp_fraction_removed: FractionValue | None = Field(
        default=None, description="fraction of MLP intermediate channels physically removed"
    )
    layers_fraction_removed: FractionValue | None = None
    heads_fraction_removed: FractionValue | None = None
    kv_heads: PositiveValue | None = None
    vocab_size: PositiveValue | None = None
    rank_fraction: FractionValue | None = Field(default=None, description="low-rank: kept rank share")
    adds_params_fraction: NonNegativeValue | None = Field(
        default=None, description="extra parameters at inference (unmerged adapters, drafts)"
    )
    init_from_scratch: bool = False
    format: Id | ParamRef | None = Field(
        default=None, description="storage format id (kb formats) the step writes; its per-tensor "
                                  "layout then decides size and bits read per token")
    note: str | None = None


class TransformCase(Transform):
    """A transform that holds only for some parameter values (LoRA adds parameters only unmerged).

    Its fields override the method's base transform when every `when` entry equals the step's
    parameter value; the first matching case wins.
    """

    when: dict[str, float | int | str | bool] = Field(
        min_length=1, description="step parameters (name: value) under which this case holds")
    input_bits_at_most: float | None = Field(
        default=None, gt=0, le=64,
        description="the case holds only when the model the step receives stores its weight "
                    "matrices at no more than this many bits per weight (scales included): an "
                    "export that follows its input's bits")

    @model_validator(mode="after")
    def _bits_case_names_a_format(self):
        if self.input_bits_at_most is not None and self.format is None:
            raise ValueError("input_bits_at_most needs a `format`: the format written for such "
                             "an input")
        return self

    def matches(self, params: dict[str, object]) -> bool:
        return all(k in params and params[k] == v
                   and isinstance(params[k], bool) == isinstance(v, bool)
                   for k, v in self.when.items())


class StepCost(Record):
    """How the step itself consumes memory and compute (the estimator reads this)."""

    passes: Literal["none", "forward", "train"] = "none"
    tokens: NonNegativeValue | None = Field(default=None, description="tokens processed by the step")
    optimizer: Literal["none", "full", "adapter"] = "none"
    trainable_fraction: FractionValue | None = None
    teacher_resident: bool = False
    resident_frozen_models: int = Field(
        default=0, ge=0, description="frozen copies held besides the trained model (a DPO "
                                     "reference, an RLHF reward and critic)")
    hessian: bool = Field(default=False, description="per-layer hidden x hidden fp32 Hessian")
    weight_bits_during: BitsValue | None = Field(
        default=None, description="bits the frozen base is held at while the step runs"
    )


class Effects(Record):
    transform: Transform = Field(default_factory=Transform)
    transform_cases: list[TransformCase] = Field(
        default_factory=list, description="transforms that hold only for some parameter values; "
                                          "they override `transform` field by field")
    quality: list[Evidence] = Field(
        default_factory=list, description="relative quality loss in % (negative: a gain)"
    )
    recovery: list[Evidence] = Field(
        default_factory=list, description="fraction (0..1) of accumulated loss recovered"
    )
    speedup: list[Evidence] = Field(
        default_factory=list, description="decode speed-up factor not explained by the transform"
    )
    task_gain: list[Evidence] = Field(
        default_factory=list, description="relative improvement in % on the scenario's task "
                                          "objective (kept apart from general-text quality)"
    )

    def transform_for(self, params: dict[str, object]) -> Transform:
        """The base transform with the first case whose `when` matches `params` applied (cases
        that also depend on the input model's bits are left to `formats_by_input_bits`)."""
        for case in self.transform_cases:
            if case.input_bits_at_most is None and case.matches(params):
                override = case.model_dump(exclude={"when", "input_bits_at_most"},
                                           exclude_unset=True)
                return self.transform.model_copy(update=override)
        return self.transform

    def formats_by_input_bits(self, params: dict[str, object]) -> list[tuple[float, str]]:
        """(bits bound, format) of the matching cases that depend on the input model's bits,
        tightest bound first: the step writes the first format whose bound the input meets."""
        got = [(float(c.input_bits_at_most), str(c.format)) for c in self.transform_cases
               if c.input_bits_at_most is not None and c.format and c.matches(params)]
        return sorted(got)


class Method(Record):
    id: Id
    name: str
    component: Id
    family: str = Field(min_length=1)
    pathway: Id | None = Field(default=None, description="Initialization pathway id")
    summary: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    requires: Requirements = Field(default_factory=Requirements)
    effects: Effects = Field(default_factory=Effects)
    cost: StepCost = Field(default_factory=StepCost)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    serves: list[Id] = Field(default_factory=list, description="goal ids this method serves")
    yields: list[Literal["artifact", "runtime"]] = Field(
        default_factory=list, description="what the step hands to the target: an artifact (a "
                                          "file in a format a runtime loads) or a runtime that "
                                          "serves the model (goals may require one to be served)")
    runner: str | None = Field(default=None, description="runner id that executes this method")
    plannable: bool = Field(
        default=True, description="false for methods that are knowledge only, not plan steps"
    )
    sources: list[Id] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _param_names(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in v:
            if not re.match(r"^[a-z_][a-z0-9_]*$", name):
                raise ValueError(f"parameter name {name!r} must be snake_case")
        return v


# --------------------------------------------------------------------------------------------
# Relations
# --------------------------------------------------------------------------------------------


class Relation(Record):
    src: Id = Field(alias="from")
    dst: Id = Field(alias="to")
    kind: RelationKind
    note: str = Field(min_length=1)
    sources: list[Id] = Field(min_length=1)
    condition: str | None = Field(default=None, description="when the relation holds")

    @property
    def key(self) -> tuple[str, str, str]:
        if self.kind in SYMMETRIC_KINDS:
            a, b = sorted((self.src, self.dst))
            return (a, self.kind.value, b)
        return (self.src, self.kind.value, self.dst)

    @property
    def id(self) -> str:
        return f"{self.src} {self.kind.value} {self.dst}"


# --------------------------------------------------------------------------------------------
# Hardware and base models
# --------------------------------------------------------------------------------------------


class Hardware(Record):
    id: Id
    name: str
    kind: Literal["cpu", "gpu", "soc", "npu"]
    memory_gb: MemoryGB = Field(description="memory the model can use")
    memory_bandwidth_gbs: BandwidthGBs
    peak_tflops: dict[Precision, Tflops] = Field(
        min_length=1, description="dense peak per precision (TOPS for integer types)"
    )
    precisions: list[Precision] = Field(
        min_length=1, description="precisions with native compute kernels (speed credit)"
    )
    capabilities: list[Id] = Field(default_factory=list)
    cores: int | None = Field(default=None, gt=0, le=1_000_000)
    tdp_w: PositiveFinite | None = None
    note: str | None = None
    sources: list[Id] = Field(min_length=1)


class LayerWidths(Record):
    """Per-layer widths of a model whose layers differ (OpenELM's layer-wise scaling): one entry
    per layer, first to last. The card's uniform `heads`, `kv_heads` and `intermediate` then hold
    the widest layer; parameter counts, KV cache and compute read the per-layer means."""

    heads: list[PositiveInt] = Field(min_length=1)
    kv_heads: list[PositiveInt] = Field(min_length=1)
    intermediate: list[PositiveInt] = Field(min_length=1)
    rule: str | None = Field(default=None, description="how the widths were produced (e.g. the "
                                                       "config's multipliers)")


class BaseModelCard(Record):
    id: Id
    name: str
    family: str
    architecture: str = Field(description="transformers architecture class family, e.g. llama")
    params: float = Field(gt=0, le=1e14, allow_inf_nan=False, description="total parameters")
    layers: int = Field(gt=0, le=100_000)
    hidden: int = Field(gt=0, le=10_000_000)
    intermediate: int = Field(gt=0, le=100_000_000)
    heads: int = Field(gt=0, le=100_000)
    kv_heads: int = Field(gt=0, le=100_000)
    head_dim: int | None = Field(default=None, gt=0, le=1_000_000)
    vocab: int = Field(gt=0, le=100_000_000)
    context: Tokens
    tied_embeddings: bool
    mlp: Literal["gated", "plain"] = Field(
        default="gated", description="gated MLPs (SwiGLU/GeGLU) hold three matrices, plain two")
    sliding_window: int | None = Field(default=None, gt=0, description="local attention window")
    global_every: int | None = Field(
        default=None, gt=0, description="one global-attention layer every N layers; the others "
                                        "use sliding_window")
    active_params: float | None = Field(
        default=None, gt=0, description="parameters used per token (mixture of experts)")
    attention_layers: int | None = Field(
        default=None, gt=0, description="hybrid models: layers with attention (and a KV cache); "
                                        "the others are convolution or recurrent blocks")
    layer_widths: LayerWidths | None = Field(
        default=None, description="per-layer heads, KV heads and MLP widths when layers differ")
    per_layer_embedding_params: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="parameters in per-layer embedding tables (Gemma 3n PLE): looked up per token "
                    "like the embedding, so they may stay in slower memory; counted in `params`")
    effective_params: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="the parameter count the makers publish as effective (Gemma 3n 'E2B'); "
                    "`params` stays the total")
    kv_shared_layers: int | None = Field(
        default=None, gt=0, description="the last N layers reuse the KV cache of earlier layers "
                                        "and hold none of their own")
    tokenizer: Id = Field(description="tokenizer family; equal ids share a vocabulary")
    license: str
    released: int | None = None
    local: str | None = Field(default=None, description="bundled model id the runners can load")
    sources: list[Id] = Field(min_length=1)

    @model_validator(mode="after")
    def _heads(self) -> "BaseModelCard":
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.global_every is not None and self.sliding_window is None:
            raise ValueError("global_every needs sliding_window (the window of the other layers)")
        if self.global_every is not None and self.global_every > self.layers:
            raise ValueError(f"global_every ({self.global_every}) exceeds layers ({self.layers})")
        if self.sliding_window is not None and self.sliding_window > self.context:
            raise ValueError(f"sliding_window ({self.sliding_window}) exceeds context "
                             f"({self.context})")
        if self.attention_layers is not None and self.attention_layers > self.layers:
            raise ValueError(f"attention_layers ({self.attention_layers}) exceeds layers "
                             f"({self.layers})")
        if self.active_params is not None and self.active_params > self.params:
            raise ValueError(f"active_params ({self.active_params:g}) exceeds params "
                             f"({self.params:g})")
        for name in ("per_layer_embedding_params", "effective_params"):
            value = getattr(self, name)
            if value is not None and value >= self.params:
                raise ValueError(f"{name} ({value:g}) must be below params ({self.params:g})")
        if self.kv_shared_layers is not None and self.kv_shared_layers >= self.layers:
            raise ValueError(f"kv_shared_layers ({self.kv_shared_layers}) must be below layers "
                             f"({self.layers})")
        if self.layer_widths is not None:
            self._check_layer_widths(self.layer_widths)
        return self

    def _check_layer_widths(self, w: LayerWidths) -> None:
        for name in ("heads", "kv_heads", "intermediate"):
            values = getattr(w, name)
            if len(values) != self.layers:
                raise ValueError(f"layer_widths.{name} has {len(values)} entries; layers is "
                                 f"{self.layers}")
            if getattr(self, name) != max(values):
                raise ValueError(f"{name} ({getattr(self, name)}) must be the widest layer's, "
                                 f"max(layer_widths.{name}) = {max(values)}")
        for i, (h, kv) in enumerate(zip(w.heads, w.kv_heads)):
            if h % kv:
                raise ValueError(f"layer_widths: layer {i} has {h} heads, not a multiple of its "
                                 f"{kv} kv_heads")

    def _mean(self, name: str) -> float:
        if self.layer_widths is None:
            return getattr(self, name)
        values = getattr(self.layer_widths, name)
        return sum(values) / len(values)

    @property
    def mean_heads(self) -> float:
        """Query heads per layer, averaged over layers (the uniform value when layers agree)."""
        return self._mean("heads")

    @property
    def mean_kv_heads(self) -> float:
        return self._mean("kv_heads")

    @property
    def mean_intermediate(self) -> float:
        return self._mean("intermediate")

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.hidden // self.heads


class GoalServedBy(Record):
    """What a method must be to serve a goal (checked by the loader for every `serves`)."""

    yields: list[Literal["artifact", "runtime"]] = Field(
        default_factory=list, description="the method must yield one of these (method `yields`)")
    training: bool = Field(default=False, description="the method must train the model")


class Goal(Record):
    """What a lifecycle must achieve for a scenario; methods say which goals they serve."""

    id: Id
    name: str
    summary: str = Field(min_length=1)
    sources: list[Id] = Field(min_length=1)
    served_by: GoalServedBy = Field(default_factory=GoalServedBy)


# --------------------------------------------------------------------------------------------
# Storage formats and runtime profiles (what the estimator prices sizes and speeds with)
# --------------------------------------------------------------------------------------------

TensorClass = Literal["embed", "output", "attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate",
                      "ffn_up", "ffn_down", "norm"]


class TensorType(Record):
    """How one storage type lays out weights: `bytes` per block of `block` weights (a float type
    has block 1), plus what a quantized checkpoint keeps beside the packed values."""

    id: Id
    name: str
    block: int = Field(gt=0, description="weights per block (a row must be a multiple)")
    bytes: float = Field(gt=0, description="bytes one block takes, scales and minimums included")
    fallback: Id | None = Field(default=None, description="type used when a row is not a "
                                                          "multiple of block")
    column_bits: float = Field(default=0.0, ge=0, description="extra bits per input column "
                                                              "(GPTQ's g_idx)")
    row_bits: float = Field(default=0.0, ge=0, description="extra bits per output row (a "
                                                           "per-channel scale)")
    dequantizes: bool = Field(default=False, description="kernels unpack it before the matmul")
    note: str | None = None
    sources: list[Id] = Field(min_length=1)

    @property
    def bits(self) -> float:
        return self.bytes * 8 / self.block


class FormatRule(Record):
    """Tensors of these classes (in these layers) are stored as `type`."""

    tensors: list[TensorClass] = Field(min_length=1)
    type: Id
    layers: Literal["all", "more-bits"] | None = Field(
        default=None, description="more-bits: llama.cpp's use_more_bits (first and last eighth, "
                                  "every third between)")
    first: int | None = Field(default=None, ge=0, description="only the first N layers")
    first_fraction: float | None = Field(default=None, gt=0, le=1,
                                         description="only layers i < n*fraction")
    min_gqa: int | None = Field(default=None, gt=0, description="only when heads/kv_heads >= N")
    misfit: Id | None = Field(default=None, description="type instead when a row is not a "
                                                        "multiple of the rule type's block")


class Format(Record):
    """A checkpoint format: a default tensor type, rules per tensor class (first match wins)."""

    id: Id
    name: str
    container: Literal["gguf", "safetensors", "pte", "onnx"]
    default: Id
    rules: list[FormatRule] = Field(default_factory=list)
    extends: Id | None = Field(default=None, description="a format whose rules follow these")
    unties_embeddings: bool = Field(default=False, description="a tied table is written twice "
                                                               "(embedding and head)")
    norm_type: Id = Field(default="ggml-f32", description="type of 1-D tensors (norms, biases)")
    overhead_bytes: float = Field(default=0.0, ge=0, description="fixed metadata bytes")
    aliases: list[str] = Field(default_factory=list)
    note: str | None = None
    sources: list[Id] = Field(min_length=1)


class RuntimeFit(Record):
    """A runtime's decode/prefill constants on one hardware class (fitted to published speeds)."""

    hardware_class: str = Field(min_length=1)
    bandwidth_efficiency: float = Field(gt=0, le=1.2)
    compute_efficiency: float = Field(default=0.5, gt=0, le=1.2)
    token_ms: float = Field(default=0.0, ge=0, description="fixed time per decoded token")
    layer_ms: float = Field(default=0.0, ge=0, description="fixed time per layer per token")
    dequant_layer_ms: float = Field(default=0.0, ge=0, description="extra per layer when "
                                                                   "weights are dequantized")
    dequant_byte_cost: float = Field(default=0.0, ge=0, description="extra time per weight byte "
                                     "unpacked on the fly, in units of that byte's read time at "
                                     "peak bandwidth (kernels that dequantise per layer)")
    rows: int = Field(default=0, ge=0, description="published rows the fit used")
    basis: Literal["fitted", "assumed"] = "fitted"


class Runtime(Record):
    """An inference runtime family and its per-hardware-class constants."""

    id: Id
    name: str
    methods: list[Id] = Field(default_factory=list, description="deployment methods that run it")
    fits: list[RuntimeFit] = Field(min_length=1)
    unpacks_weights: bool = Field(default=False, description="its kernels unpack packed integer "
                                  "weights per layer before the multiply, so a per-byte cost "
                                  "(dequant_byte_cost) is fitted; fused block kernels do not")
    note: str | None = None
    sources: list[Id] = Field(min_length=1)


# Top-level keys a KB file may hold, and the record type of each.
SECTIONS: dict[str, type[Record]] = {
    "goals": Goal,
    "sources": Source,
    "components": Component,
    "capabilities": Capability,
    "methods": Method,
    "relations": Relation,
    "hardware": Hardware,
    "models": BaseModelCard,
    "tensor_types": TensorType,
    "formats": Format,
    "runtimes": Runtime,
}


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))
