"""The plan executor: validate everything, then run the steps in order, measuring after each.

    execute(plan, out_dir=..., model=None, data=None, resume=False, store=None, seed=0)

1. Bind: every step to its runner and its parameters (KB defaults overlaid with the step's own,
   validated by the runner's `Params`), checked together with the plan itself against the KB
   (`slmrec.plan.validate_plan`), model and teacher sources and the predicted peak memory. All
   problems are raised together as one `SlmrecError` before any model is loaded.
2. Run: load the base model (or, with `resume`, the last intact checkpoint), the corpus and, only
   when a step asks for it, the teacher. Each step runs under a fixed per-step seed, is measured
   (`model_stats` plus the evaluate runner's perplexity and latency on a small validation
   slice), checkpointed atomically into `out_dir/steps/NN-method/`, and recorded in
   `out_dir/state.json` and the run store.
3. A failing step (StepFailed, non-finite loss or perplexity, out of memory, a parameter only the
   model could reject) ends the run as `failed` with its reason; earlier checkpoints stay intact
   and `resume` continues from the last of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil
from pydantic import ValidationError

from runners.base import RunnerParams, StepContext, StepFailed
from runners.checkpoint import checkpoint_digest
from runners.registry import RUNNERS, get_runner_class
from runners.report import RunReport, StepReport, write_reports
from runners.resume import read_state, restore
from slmrec.errors import Problem, SlmrecError, did_you_mean
from slmrec.kb import KB, load_kb
from slmrec.plan import Plan, load_plan, validate_plan
from slmrec.safeio import os_error, write_text
from slmrec.safeyaml import clip

STATE_FORMAT = 1
# Runners that leave the model as it is: no new checkpoint, their metrics are the measurement.
READ_ONLY_RUNNERS = frozenset({"evaluate", "export", "load-pretrained"})
# The per-step measurement: a declared fixed slice of 2,048 validation tokens (8x256), with the
# spread of its 4 parts beside the figure (probe_ppl_low/high): 254 tokens let one model's ratio
# to another swing by 25% between slices. The evaluate runner scores the whole split instead.
MEASURE_PARAMS: dict[str, Any] = {"seq_len": 256, "ppl_blocks": 8, "batch_size": 4,
                                  "prompt_len": 16, "decode_tokens": 4, "repeats": 1,
                                  "latency": True, "serialise": False}
# Latency metrics a following evaluate step measures on the very same model (see _run_step).
LATENCY_METRICS = ("prefill_ms", "decode_ms_per_token", "peak_memory_mb")


# ------------------------------------------------------------------------------------------------
# Binding and validation (no model is loaded here)
# ------------------------------------------------------------------------------------------------


@dataclass
class BoundStep:
    index: int
    method: str
    runner_id: str
    runner_cls: type
    params: RunnerParams
    predicted: dict[str, dict]

    @property
    def label(self) -> str:
        return f"step {self.index + 1} ({self.method})"

    @property
    def folder(self) -> str:
        return f"{self.index + 1:02d}-{self.method}"

    @property
    def params_dict(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")


def plan_hash(plan: Plan) -> str:
    """Hash of what the run executes (base model, teacher, steps with parameters): editing
    predictions or explanations does not invalidate a resumable run, changing a step does."""
    core = {"base_model": plan.base_model, "teacher": plan.teacher,
            "steps": [{"method": s.method, "params": s.params} for s in plan.steps]}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_model_source(name: str, kb: KB | None = None) -> str | None:
    """A loadable source for `name`: a bundled model id, an existing folder, or a KB catalog
    model with local weights; None when nothing here can load it."""
    from runners.models import BUNDLED_MODELS

    if name in BUNDLED_MODELS:
        return name
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    card = kb.models.get(name) if kb is not None else None
    if card is not None and card.local and card.local in BUNDLED_MODELS:
        return card.local
    return None


def _source_problem(name: str, kb: KB, file: str, record: str, fld: str) -> Problem | None:
    if resolve_model_source(name, kb) is not None:
        return None
    from runners.models import BUNDLED_MODELS

    bundled = ", ".join(sorted(BUNDLED_MODELS)) or "none"
    if name in kb.models:
        msg = (f"model '{name}' is in the catalog but has no weights on this machine; pass "
               f"--model with a bundled model ({bundled}) or a local folder")
    else:
        msg = (f"cannot load model '{name}': not a bundled model ({bundled}), not an existing "
               f"folder{did_you_mean(name, list(BUNDLED_MODELS) + list(kb.models))}")
    return Problem(file, msg, record, fld)


def bind_plan(plan: Plan, kb: KB, *, file: str = "<plan>", model: str | None = None,
              data: str | os.PathLike | None = None, seed: int | None = None) -> list[BoundStep]:
    """Validate the whole plan for execution; return the bound steps or raise every problem."""
    problems = list(validate_plan(plan, kb, file))
    executable = sorted(m.id for m in kb.methods.values() if m.runner and m.plannable)
    bound: list[BoundStep] = []
    for i, step in enumerate(plan.steps):
        label, where = f"step {i + 1} ({step.method})", f"steps[{i}]"
        method = kb.methods.get(step.method)
        if method is None:
            continue  # validate_plan reported it
        if not method.runner:
            problems.append(Problem(file, f"method '{method.id}' is not executable here (no "
                                    f"runner); executable methods: {', '.join(executable) or 'none'}",
                                    label, f"{where}.method"))
            continue
        if method.runner not in RUNNERS:
            problems.append(Problem(file, f"method '{method.id}' names runner '{method.runner}', "
                                    f"which is not registered{did_you_mean(method.runner, RUNNERS)}",
                                    label, f"{where}.method"))
            continue
        try:
            cls = get_runner_class(method.runner)
        except Exception as exc:  # a broken runner module: a problem of this plan's step
            problems.append(Problem(file, f"runner '{method.runner}' cannot be loaded: "
                                    f"{type(exc).__name__}: {exc}", label, f"{where}.method"))
            continue
        merged = {n: spec.default for n, spec in method.params.items() if spec.default is not None}
        merged.update(step.params)
        try:
            params = cls.Params.model_validate(merged)
        except ValidationError as exc:
            valid = ", ".join(cls.Params.model_fields) or "none"
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "?"
                origin = "" if name in step.params else f" (the KB default of method '{method.id}')"
                if err["type"] == "extra_forbidden":
                    msg = (f"runner '{method.runner}' does not accept parameter '{name}'{origin}"
                           f"{did_you_mean(name, cls.Params.model_fields)}; valid: {valid}")
                elif err["type"] == "missing":
                    msg = f"runner '{method.runner}' needs parameter '{name}'; valid: {valid}"
                else:
                    msg = f"bad value {clip(err.get('input'))}{origin}: {err['msg']}"
                problems.append(Problem(file, msg, label, f"{where}.params.{name}"))
            continue
        bound.append(BoundStep(i, method.id, method.runner, cls, params,
                               {k: p.model_dump(mode="json") for k, p in step.predicted.items()}))
    if model is not None:
        p = _source_problem(model, kb, "--model", None, None)
        if p:
            problems.append(p)
    elif plan.base_model in kb.models or Path(plan.base_model).expanduser().exists() \
            or resolve_model_source(plan.base_model, kb):
        p = _source_problem(plan.base_model, kb, file, "plan", "base_model")
        if p:
            problems.append(p)
    if plan.teacher is not None and any(b.runner_cls.needs_teacher for b in bound):
        p = _source_problem(plan.teacher, kb, file, "plan", "teacher")
        if p:
            problems.append(p)
    problems += _input_problems(model or plan.base_model, kb, data, seed, problems)
    if problems:
        raise SlmrecError(problems)
    return bound


MAX_SEED = 2**31 - 1


def _input_problems(source_name: str, kb: KB, data, seed, found: list[Problem]) -> list[Problem]:
    """The run's other inputs, checked before any model loads: the corpus file (size, text),
    the seed, and a local model folder (config, safetensors headers, tensor names)."""
    from runners.data import read_corpus_text
    from runners.models import check_model_folder

    out: list[Problem] = []
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= MAX_SEED):
        out.append(Problem("--seed", f"seed must be an integer from 0 to {MAX_SEED}, got "
                           f"{clip(seed)}"))
    if data is not None:
        if not Path(data).expanduser().exists():
            out.append(Problem("--data", f"corpus file {clip(str(data))} does not exist"))
        else:
            try:
                read_corpus_text(data)  # read and dropped: bounded, and far cheaper than a model
            except SlmrecError as exc:
                out += exc.problems
    source = resolve_model_source(source_name, kb)
    if source is not None and not any(p.field == "base_model" or p.file == "--model"
                                      for p in found):
        try:
            check_model_folder(source)
        except SlmrecError as exc:
            out += exc.problems
    return out


PEAK_KEYS = ("peak_memory_mb", "inference_memory_mb", "step_peak_memory_mb")


def predicted_peak_mb(plan: Plan) -> float | None:
    """The plan's predicted peak memory: the largest plan-level or step figure."""
    figures = []
    for preds in [plan.predicted] + [s.predicted for s in plan.steps]:
        for key in PEAK_KEYS:
            p = preds.get(key)
            v = None if p is None else p.value if p.value is not None else p.high
            if v is not None:
                figures.append(float(v))
    return max(figures) if figures else None


def check_memory(plan: Plan, file: str = "<plan>") -> None:
    need = predicted_peak_mb(plan)
    have = psutil.virtual_memory().available / 2**20
    if need is not None and need > have:
        raise SlmrecError.one(file, f"the plan predicts a peak memory of {need:,.0f} MB but this "
                              f"machine has {have:,.0f} MB available; free memory, choose a "
                              "smaller plan, or pass --allow-memory-overrun to try anyway",
                              "plan", "predicted.peak_memory_mb")


# ------------------------------------------------------------------------------------------------
# Helpers for the run
# ------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def machine_info() -> dict[str, Any]:
    """The machine a run or a benchmark measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__.split("+")[0]}


def _resident_mb(model) -> float:
    """Bytes of the model's tensors in memory (shared tensors once; torch.ao packed weights)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w) and "quantized" in type(m).__module__:
            total += w().numel()
    return total / 1e6


class PeakRSS:
    """Samples this process's resident memory in a thread. `.peak_mb` is the absolute peak,
    `.rise_mb` the peak above the level at entry (what the block itself needed)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0
        self._proc, self._stop = psutil.Process(), threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self.start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6

    @property
    def rise_mb(self) -> float:
        return max(0, self.peak - self.start) / 1e6


def _floats(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(v)  # 0-d tensors, numpy scalars
            except (TypeError, ValueError):
                continue
        out[k] = float(v)
    return out


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", ())
    return isinstance(exc, MemoryError) or (oom and isinstance(exc, oom)) or \
        (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


STAT_KEYS = ("params", "size_mb", "sparsity", "bits_per_weight")


class _Measurer:
    """The per-step probe: the evaluate runner's perplexity and latency measurements on a small,
    fixed validation slice, plus model_stats (skipped when the step's runner already reported
    those four figures for the model it returned; model_stats walks every weight)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.params = get_runner_class("evaluate").Params.model_validate(MEASURE_PARAMS)

    def __call__(self, model, tokenizer, corpus, workdir: Path, latency: bool = True,
                 reported: dict | None = None) -> dict[str, float]:
        from runners.evaluate import latency as measure_latency
        from runners.evaluate import perplexity_report
        from runners.models import model_stats
        from runners.training import base_model, oom_guard

        p = self.params
        reported = reported or {}
        if all(k in reported for k in STAT_KEYS):
            metrics = {k: reported[k] for k in STAT_KEYS}
        else:
            metrics = {k: v for k, v in _floats(model_stats(model)).items()}
        _seed_all(self.seed)
        with oom_guard("measuring"):
            probe = perplexity_report(model, corpus, p.seq_len, p.ppl_blocks, p.batch_size)
            metrics["ppl"] = probe.ppl
            metrics["probe_ppl_low"], metrics["probe_ppl_high"] = probe.spread
            if latency:
                vocab = min(len(tokenizer), base_model(model).config.vocab_size)
                metrics.update(measure_latency(model, vocab, p.prompt_len, p.decode_tokens,
                                               p.repeats))
        metrics["probe_ppl"] = metrics["ppl"]
        return _floats(metrics)


@dataclass
class _Live:
    """What the loop carries from step to step."""

    model: Any
    tokenizer: Any
    corpus: Any
    load_teacher: Callable[[], Any]
    measure: _Measurer
    out: Path
    data: str | None
    seed: int
    progress: bool
    say: Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------


def execute(plan: Plan | str | os.PathLike, *, out_dir: str | os.PathLike, kb: KB | None = None,
            model: str | None = None, data: str | os.PathLike | None = None,
            resume: bool = False, store: Any = None, allow_memory_overrun: bool = False,
            seed: int = 0, plan_file: str | None = None, progress: bool = True,
            log: Callable[[str], None] | None = None) -> RunReport:
    """Run `plan` into `out_dir`; return the report (status completed or failed).

    `store`: a RunStore, a path, None for the default store ($SLMREC_STORE or
    ~/.local/share/slmrec/runs.sqlite) or False for none. User mistakes raise SlmrecError before
    anything heavy happens; a failing step does not raise: the report says `failed`, and why.
    Ctrl-C, SIGTERM and SIGHUP record the run as interrupted (resumable) and re-raise
    KeyboardInterrupt. Bookkeeping faults (a full disk, a locked or damaged run store) are notes
    on the run and warnings, never a lost run: see docs/reliability.md.
    """
    from tqdm.auto import tqdm

    from runners import bookkeeping as bk
    from slmrec.evidence import HEARTBEAT_S, RunStore

    if not isinstance(plan, Plan):
        plan_file = plan_file or str(plan)
        plan = load_plan(plan)
    file = plan_file or "<plan>"
    kb = kb if kb is not None else load_kb()
    out = Path(out_dir).expanduser()
    data = None if data is None else str(Path(data).expanduser())

    def say(msg: str) -> None:
        (log or tqdm.write)(msg)

    bound = bind_plan(plan, kb, file=file, model=model, data=data, seed=seed)
    source = resolve_model_source(model or plan.base_model, kb)
    assert source is not None  # bind_plan checked it
    swapped = model is not None and source != resolve_model_source(plan.base_model, kb)
    if not allow_memory_overrun and not swapped:  # predictions are for the plan's own model
        check_memory(plan, file)
    digest = plan_hash(plan)
    key = {"plan_hash": digest, "model": source, "data": data, "seed": seed}
    state_path = out / "state.json"
    if out.exists() and not out.is_dir():
        raise SlmrecError.one(str(out), "--out is an existing file, not a folder; choose a "
                              "folder path")
    if not resume and state_path.exists():
        raise SlmrecError.one(str(out), "this folder already holds a run (state.json); pass "
                              "--resume to continue it, or choose another --out folder")
    state = read_state(state_path, key) if resume else None
    run_store = None if store is False else store if isinstance(store, RunStore) \
        else RunStore(store)
    if run_store is not None:
        run_store.reap_stale()  # rows of runs whose process died become `interrupted`
    lock = bk.claim(out)  # from here on, the folder is ours until the `finally` below
    try:
        if not resume and state_path.exists():  # another run finished here since the check
            raise SlmrecError.one(str(out), "this folder already holds a run (state.json); pass "
                                  "--resume to continue it, or choose another --out folder")
        if plan_kb_differs(plan, kb):
            say(f"warning: {plan_kb_note(plan, kb)}")
        try:
            (out / "steps").mkdir(exist_ok=True)
            write_text(out / "plan.yaml", plan.to_yaml())
        except OSError as exc:
            raise os_error(out, exc, "cannot write into the run folder") from None
        report = _new_report(plan, kb, bound, state, out, source, digest, seed)
        checksums = dict(state.get("checksums") or {}) if state else {}
        _open_in_store(report, run_store, plan, kb, state, digest, source, out, seed)
    except BaseException:
        bk.release(lock)
        raise
    ledger = bk.Ledger(run_store, report, say)
    teacher_steps = [b for b in bound if b.runner_cls.needs_teacher]
    teacher_source = resolve_model_source(plan.teacher, kb) if plan.teacher else source
    report.teacher = teacher_source if teacher_steps else None
    notes = [plan_kb_note(plan, kb)] if plan_kb_differs(plan, kb) else []
    if swapped:
        notes.append(f"the plan's predictions are for '{plan.base_model}'; this run measures "
                     f"'{source}' (--model), so ratios compare different models")
    if teacher_steps and plan.teacher is None:
        notes.append(f"the plan names no teacher: {', '.join(b.label for b in teacher_steps)} "
                     f"distil from the base model '{source}' itself")
    report.notes += [n for n in notes if n not in report.notes]

    def save_state() -> None:
        _write_json(state_path, {"format": STATE_FORMAT, **key, "checksums": checksums,
                                 "report": report.to_dict()})

    def record(d: BoundStep) -> None:
        ds = report.steps[d.index]
        ledger.call(f"step {d.index + 1}", "record_step", d.index, d.method, metrics=ds.metrics,
                    predicted=d.predicted, status="completed", runner=d.runner_id,
                    params=d.params_dict, wall_s=ds.wall_s, checkpoint=ds.checkpoint,
                    context=_context(report, d, report.base_metrics if d.index == 0
                                     else report.steps[d.index - 1].metrics))

    t_run = time.perf_counter()
    user_error: SlmrecError | None = None
    try:
        with bk.terminate_as_interrupt(), bk.Heartbeat(run_store, report.run_id, HEARTBEAT_S):
            from runners.data import load_corpus
            from runners.models import load_checkpoint, load_model

            start, model_obj, tok = restore(report, out, say, load_checkpoint, checksums,
                                             verify=not (state and "checksums" not in state))
            for d in bound[:start]:  # a resumed run: rows a faulty store lost are written again
                record(d)
            if model_obj is None:
                say(f"loading base model {source}")
                model_obj, tok = load_model(source)
            teacher_cache: dict[str, Any] = {}

            def load_teacher():
                if "model" not in teacher_cache:
                    say(f"loading teacher {teacher_source}")
                    teacher_cache["model"] = load_model(teacher_source)
                return teacher_cache["model"]

            live = _Live(model_obj, tok, load_corpus(tok, path=data, seed=seed), load_teacher,
                         _Measurer(seed), out, data, seed, progress, say)
            if not report.base_metrics:
                say("measuring the input model")
                report.base_metrics = live.measure(live.model, live.tokenizer, live.corpus,
                                                   out / "work" / "00-input")
                _derive(report.base_metrics, {}, {})
            save_state()
            bar = tqdm(total=len(bound), initial=start, desc="plan", unit="step",
                       disable=not progress, position=0)
            try:
                for b in bound[start:]:
                    bar.set_postfix_str(b.label)
                    srep = report.steps[b.index]
                    inputs = report.base_metrics if b.index == 0 else report.steps[b.index - 1].metrics
                    following = bound[b.index + 1] if b.index + 1 < len(bound) else None
                    try:
                        reason = _run_step(b, srep, inputs, live, report, following)
                    except KeyboardInterrupt:
                        report.failed_step = b.index
                        raise
                    if reason is not None:
                        srep.status, srep.reason = "failed", reason
                        report.status, report.failed_step = "failed", b.index
                        report.reason = f"{b.label} failed: {reason}"
                        ledger.call(f"step {b.index + 1}", "record_step", b.index, b.method,
                                    status="failed", reason=reason, runner=b.runner_id,
                                    params=b.params_dict)
                        say(f"error: {report.reason}")
                        break
                    if srep.checkpoint and srep.checkpoint != (
                            report.steps[b.index - 1].checkpoint if b.index else None):
                        checksums[srep.checkpoint] = checkpoint_digest(out / srep.checkpoint)
                    done = [b]
                    if b.index > 0 and _backfill(report.steps[b.index - 1], srep):
                        done.insert(0, bound[b.index - 1])
                    for d in done:
                        record(d)
                    save_state()
                    bar.update(1)
                    if teacher_cache and not any(t.index > b.index for t in teacher_steps):
                        teacher_cache.clear()  # the last step that needed the teacher is done
            finally:
                bar.close()
            if report.status == "running":
                report.status = "completed"
    except bk.Terminated as exc:
        report.status, report.reason = "interrupted", exc.reason
    except KeyboardInterrupt:
        report.status, report.reason = "interrupted", "interrupted by the user"
    except SlmrecError as exc:  # e.g. an unreadable model folder: recorded, then raised
        report.status, user_error = "failed", exc
        report.reason = "; ".join(str(p) for p in exc.problems)
    except Exception as exc:  # noqa: BLE001  (outside any step: loading, the corpus, the disk)
        report.status = "failed"
        report.reason = f"{type(exc).__name__}: {exc} (traceback in error.log)"
        bk.guarded("error.log", lambda: _log_error(out, "run"), report, say)
    finally:
        # Each write on its own: one failing (a full disk, a locked store) never skips the rest.
        with bk.terminate_as_interrupt_deferred() as deferred:
            report.finished = _now()
            report.wall_s = time.perf_counter() - t_run
            _finalise(report)
            bk.guarded("state.json", save_state, report, say)
            bk.guarded("report.json/report.md", lambda: write_reports(report, out), report, say)
            if report.final_metrics:
                ledger.call("the plan-level measurements", "record_step", None, "plan",
                            metrics=report.final_metrics, predicted=report.final_predicted,
                            context=_context(report, None, report.base_metrics))
            ledger.call("the run's end", "finish_run", report.status, report.reason)
            bk.release(lock)
        if deferred.signum is not None and report.status != "interrupted":
            report.status = "interrupted"
        if run_store is not None:
            _track(report, out, run_store, say)
    if report.status == "interrupted":
        raise KeyboardInterrupt
    if user_error is not None:
        raise user_error
    return report


def _track(report: RunReport, out: Path, run_store, say) -> None:
    """The MLflow view of the run (runners/tracking.py); a tracking failure never fails the run."""
    from runners.tracking import enabled, log_report
    if not enabled():
        return
    try:
        log_report(report, out, run_store.path)
    except Exception as exc:  # noqa: BLE001
        say(f"warning: MLflow tracking failed ({type(exc).__name__}: {exc}); the run store has the run")


def plan_kb_differs(plan: Plan, kb: KB) -> bool:
    return bool(plan.kb_version and kb.version and plan.kb_version != kb.version)


def plan_kb_note(plan: Plan, kb: KB) -> str:
    return (f"the plan was made with KB version {plan.kb_version}, this KB is {kb.version}: its "
            "predictions may not match what this KB would predict (re-run `slmrec recommend`)")


def _write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))


def _new_report(plan, kb, bound, state, out, source, digest, seed) -> RunReport:
    report = RunReport.from_dict(state["report"]) if state else \
        RunReport(status="running", out_dir=str(out))
    report.status, report.reason, report.failed_step = "running", None, None
    report.out_dir, report.plan_name, report.plan_hash = str(out), plan.name, digest
    report.kb_version, report.base_model, report.seed = kb.version, source, seed
    report.started, report.finished = _now(), None
    report.hardware = {**machine_info(), **({"profile": plan.hardware} if plan.hardware else {})}
    report.final_predicted = {k: p.model_dump(mode="json") for k, p in plan.predicted.items()}
    old = {s.index: s for s in report.steps}
    report.steps = [old.get(b.index) or StepReport(b.index, b.method) for b in bound]
    for b, s in zip(bound, report.steps):
        s.method, s.runner, s.params, s.predicted = b.method, b.runner_id, b.params_dict, b.predicted
        if s.status != "completed":
            s.status, s.reason = "pending", None
    return report


def _open_in_store(report, run_store, plan, kb, state, digest, source, out, seed) -> None:
    """The run's id in the store: the same id when resuming a run the store knows."""
    if run_store is None:
        report.store = report.run_id = None
        return
    report.store = str(run_store.path)
    if state and report.run_id is not None:
        try:
            if run_store.run(report.run_id)["plan_hash"] == digest:
                run_store.reopen_run(report.run_id)
                return
        except SlmrecError:
            pass
    report.run_id = run_store.start_run(plan_yaml=plan.to_yaml(), plan_hash=digest,
                                        base_model=source, kb_version=kb.version, out_dir=out,
                                        name=plan.name, seed=seed)


def _log_error(out: Path, what: str) -> None:
    with open(out / "error.log", "a", encoding="utf-8") as fh:
        fh.write(f"--- {_now()} {what}\n{traceback.format_exc()}\n")


def _derive(measured: dict, inputs: dict, base: dict) -> None:
    """Measured counterparts of the estimator's metric names (slmrec.estimate): quality change
    against the base model (cumulative, as predicted) and against the step's input."""
    if measured.get("probe_ppl") and base.get("probe_ppl"):
        measured["quality_loss_pct"] = 100 * (measured["probe_ppl"] / base["probe_ppl"] - 1)
    if measured.get("probe_ppl") and inputs.get("probe_ppl"):
        measured["step_quality_loss_pct"] = 100 * (measured["probe_ppl"] / inputs["probe_ppl"] - 1)
    if "peak_memory_mb" in measured:
        measured["inference_memory_mb"] = measured["peak_memory_mb"]
    if measured.get("decode_ms_per_token"):
        measured["throughput_tok_s"] = 1000 / measured["decode_ms_per_token"]


def _measures_latency(b: BoundStep | None) -> bool:
    return b is not None and b.runner_id == "evaluate" and getattr(b.params, "latency", False)


def _backfill(prev: StepReport, srep: StepReport) -> bool:
    """An evaluate step measured latency on the model the step before produced: that step's probe
    skipped latency (see _run_step), so it takes these figures. True when anything was added."""
    if srep.runner != "evaluate" or prev.status != "completed":
        return False
    added = {k: srep.metrics[k] for k in LATENCY_METRICS
             if k in srep.metrics and k not in prev.metrics}
    prev.metrics.update(added)
    if added:
        _derive(prev.metrics, {}, {})
    return bool(added)


def _run_step(b: BoundStep, srep: StepReport, inputs: dict, live: _Live, report: RunReport,
              following: BoundStep | None = None) -> str | None:
    """Run, check, measure and checkpoint one step; update `live` and `srep`. Returns None on
    success, else why the step failed (KeyboardInterrupt propagates).

    The probe after the step skips latency when the next step is an evaluate that measures it
    on the same model anyway (decoding is the slowest part of a probe on CPU)."""
    from tqdm.auto import tqdm

    workdir = live.out / "work" / b.folder
    workdir.mkdir(parents=True, exist_ok=True)
    step_bar = tqdm(desc=f"  {b.method}", total=0, leave=False, disable=not live.progress,
                    position=1)

    def on_progress(done: int, total: int) -> None:
        if step_bar.total != total:
            step_bar.total = total
        step_bar.n = done
        step_bar.refresh()

    ctx = StepContext(model=live.model, tokenizer=live.tokenizer, corpus=live.corpus,
                      workdir=workdir, seed=live.seed + b.index, progress=on_progress,
                      log=live.say,
                      load_teacher=live.load_teacher if b.runner_cls.needs_teacher else None)
    try:
        _seed_all(live.seed * 1000 + b.index)
        resident = _resident_mb(live.model)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            result = b.runner_cls().run(ctx, b.params)
            wall = time.perf_counter() - t0
        if result is None or result.model is None:
            raise StepFailed(f"runner '{b.runner_id}' returned no model")
        metrics = _floats(result.metrics)
        for k in ("train_loss", "first_loss", "loss", "distill_loss"):
            if k in metrics and not math.isfinite(metrics[k]):
                raise StepFailed(f"training diverged: {k} is {metrics[k]} (lower the learning "
                                 "rate or check the data)")
        live.model = result.model
        if result.tokenizer is not None and result.tokenizer is not live.tokenizer:
            from runners.data import load_corpus

            live.tokenizer = result.tokenizer
            live.corpus = load_corpus(live.tokenizer, path=live.data, seed=live.seed)
        t1 = time.perf_counter()
        read_only = b.runner_id in READ_ONLY_RUNNERS and b.index > 0
        if read_only:  # the model is unchanged: reuse the previous probe, keep the step's own
            prev = report.steps[b.index - 1].metrics
            measured = {**{k: v for k, v in prev.items() if k not in _STEP_ONLY}, **metrics}
        else:
            measured = {**metrics, **live.measure(live.model, live.tokenizer, live.corpus,
                                                  workdir, not _measures_latency(following),
                                                  metrics)}
        deployed = _measure_deployed(result, live, measured)
        for k in ("ppl", "probe_ppl"):
            if k in measured and not math.isfinite(measured[k]):
                raise StepFailed(f"perplexity is {measured[k]} after the step: the model no "
                                 "longer produces finite outputs")
        _derive(measured, inputs, report.base_metrics)
        measured.update(wall_s=wall, step_hours=wall / 3600, measure_s=time.perf_counter() - t1,
                        step_peak_memory_mb=resident + mem.rise_mb, rss_peak_mb=mem.peak_mb)
        if read_only:
            ckpt = report.steps[b.index - 1].checkpoint
        elif b.runner_id in READ_ONLY_RUNNERS:
            ckpt = None
        else:
            ckpt = _checkpoint(live.model, live.tokenizer, live.out / "steps", b.folder)
        measured["checkpoint_s"] = time.perf_counter() - t1 - measured["measure_s"]
    except KeyboardInterrupt:
        raise
    except StepFailed as exc:
        return str(exc) or "the step failed"
    except SlmrecError as exc:
        return "; ".join(p.message for p in exc.problems)
    except Exception as exc:  # noqa: BLE001  (a failing step must not lose the run)
        try:
            _log_error(live.out, b.label)
        except OSError:  # the disk that failed the step may not take the log either
            pass
        if _is_oom(exc):
            reason = f"out of memory: {exc}"
        elif isinstance(exc, (ValueError, TypeError, ValidationError)):
            reason = f"bad parameter or input discovered while running: {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return reason + " (traceback in error.log)"
    finally:
        step_bar.close()
    srep.status, srep.reason, srep.wall_s, srep.metrics = "completed", None, wall, measured
    srep.checkpoint, srep.resumed = ckpt, False
    srep.artifacts = {k: str(v) for k, v in (result.artifacts or {}).items()}
    srep.notes = list(result.notes or []) + ([deployed] if deployed else [])
    return None


def _measure_deployed(result, live: _Live, measured: dict) -> str | None:
    """An export step's artifact is measured in the runtime it names (runners/runtime): its
    perplexity and latency replace the PyTorch probe's in `measured`. Returns a note saying which
    runtime was measured, or None for a PyTorch artifact."""
    from runners.runtime.measure import measure_deployed
    from runners.training import base_model
    vocab = min(len(live.tokenizer), base_model(live.model).config.vocab_size)
    out = measure_deployed(result.artifacts, vocab, live.corpus, live.measure.params)
    if out is None:
        return None
    measured.update(out[0])
    if "size_mb" in result.metrics:  # the exported file's size, not the model's in PyTorch
        measured["size_mb"] = float(result.metrics["size_mb"])
    return out[1]


# Metrics that belong to one step and are not carried over to a following read-only step.
_STEP_ONLY = frozenset({"train_loss", "first_loss", "wall_s", "measure_s", "checkpoint_s",
                        "step_peak_memory_mb", "rss_peak_mb", "step_hours",
                        "step_quality_loss_pct"})


def _context(report: RunReport, b: BoundStep | None, inputs: dict) -> dict:
    return {"base_model": report.base_model, "base_params": report.base_metrics.get("params"),
            "base_metrics": report.base_metrics, "input_metrics": inputs,
            "hardware": report.hardware, "params": b.params_dict if b else {},
            "runner": b.runner_id if b else None, "seed": report.seed,
            "kb_version": report.kb_version}


def _finalise(report: RunReport) -> None:
    """Plan-level measurements of a completed run: the latest value of each metric over the
    steps, total step wall time, the largest step peak and the quality change against the input."""
    done = [s for s in report.steps if s.status == "completed"]
    if report.status != "completed" or not done:
        report.final_metrics = {}
        return
    final: dict[str, float] = {}
    for s in done:
        final.update({k: v for k, v in s.metrics.items() if k not in _STEP_ONLY})
    final["wall_s"] = sum(s.wall_s or 0 for s in done)
    final["step_hours"] = final["wall_s"] / 3600
    for k in ("step_peak_memory_mb", "rss_peak_mb"):
        final[k] = max(s.metrics.get(k, 0) for s in done)
    if final.get("probe_ppl") and report.base_metrics.get("probe_ppl"):
        final["quality_loss_pct"] = 100 * (final["probe_ppl"] / report.base_metrics["probe_ppl"] - 1)
    report.final_metrics = final


def _checkpoint(model, tokenizer, steps_dir: Path, name: str) -> str:
    """save_checkpoint writes into a temporary folder and renames it into place (atomic)."""
    from runners.models import save_checkpoint

    save_checkpoint(model, tokenizer, steps_dir / name)
    return str(Path("steps") / name)
