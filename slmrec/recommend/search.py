"""Branch and bound over chains of options, and the exhaustive enumeration it is checked against.

The decision levels are "slots": one level per transform field (weight bits, sparsity, each
structural field, KV-cache bits, ...) holding every option whose first field it is, so a chain
takes at most one option per level; then one binary level per option that has no transform
field (recovery steps, quality gains, speed-ups). A node fixes the choices of the levels before
it; its state is the model with those transforms applied (they commute). Before descending, a
lower bound of every metric is computed by applying, for each level still open, its most
reducing value to the node's state (all metrics are monotone in those values) and by assuming
the best quality ops still available. A node is pruned when the bound breaks a hard constraint,
or when it cannot enter the top-k and cannot reach the Pareto front.

At a leaf the chosen set is put in order (the canonical order of the KB index; a recovery step
also tries the place right before the first integer quantization and the end of the chain),
checked against the ordering rules, simulated step by step (step memory and compute depend on
the order), and scored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from slmrec.estimate import ModelState, Option, StepCost
from slmrec.recommend.devices import frozen_mb
from slmrec.recommend.rules import rules_for
from slmrec.recommend.space import Space

FIELD_ORDER = ("weight_bits", "params_fraction_removed", "mlp_fraction_removed", "layers_fraction_removed",
               "heads_fraction_removed", "sparsity", "kv_heads", "rank_fraction", "vocab_size",
               "kv_cache_bits", "activation_bits", "adds_params_fraction")
RISK_WEIGHT = 0.3          # share of the quality term taken at the pessimistic end
STEP_PENALTY = 0.01        # per step: of two equal plans, the shorter wins
COST_PENALTY = 0.01        # per decade of step TFLOP, unless 'cost' is an objective
MAX_RECOVERY = 2
PARETO_EPS = 0.05          # relative tolerance of the Pareto front in memory and latency
PARETO_EPS_Q = 0.25        # and in quality loss, percentage points
PARETO_BUDGET = 5000       # search nodes spent on the front alone before it is cut short
METRIC_OF = {"memory": "inference_memory_mb", "latency": "decode_ms_per_token",
             "size": "size_mb", "prefill": "prefill_ms"}
MODEL_KEYS = ("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
              "decode_ms_per_token", "prefill_ms")


@dataclass
class Candidate:
    options: tuple[Option, ...]            # in execution order
    metrics: dict[str, float]
    q: tuple[float, float, float]          # quality loss value, low, high (%)
    score: float
    violations: dict[str, tuple[float, float]]   # metric -> (predicted, limit)
    steps: list = field(default_factory=list, repr=False)   # (state, StepCost) per step
    prior_q: float = 0.0                   # the base model's quality offset ('choose')
    model: str = ""

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def key(self) -> tuple:
        return tuple(o.key for o in self.options)

    @property
    def methods(self) -> list[str]:
        return [o.method for o in self.options]


@dataclass
class Level:
    options: list[Option]
    field: str                             # the slot: a transform field, a data tier or a family
    groups: list[list[Option]] = field(default_factory=list)   # same effect, by quality


@dataclass
class Stats:
    nodes: int = 0
    leaves: int = 0
    evaluated: int = 0
    pruned: int = 0
    seconds: float = 0.0


class Search:
    """One search over a Space. `mode` 'rank' ranks feasible plans; 'closest' minimises the
    total relative violation (used when nothing is feasible)."""

    def __init__(self, space: Space, *, k: int = 5, mode: str = "rank", pareto: bool = True,
                 max_steps: int | None = None, bound: bool = True, prior_q: float = 0.0,
                 refs: dict[str, float] | None = None, need_any: set | None = None):
        self.sp = space
        self.k = k
        self.mode = mode
        self.pareto_on = pareto
        self.bound_on = bound
        self.max_steps = max_steps or space.sc.preferences.max_steps
        self.est = space.est
        self.conservative = space.sc.preferences.conservative
        self.weights = space.weights
        self.refs = refs or space.refs
        self.prior_q = prior_q           # quality offset of this base model (choose mode)
        self.need_any = need_any or set()  # plans must hold one of these options (new ones)
        self.set_limits(space.limits)
        self._state_memo: dict[tuple, ModelState] = {}
        self._bound_memo: dict[tuple, tuple] = {}
        self._sim_memo: dict[tuple, tuple] = {}
        self._prefix_memo: dict[tuple, tuple] = {}
        self._orders_memo: dict[frozenset, list] = {}
        self._rt_memo: dict[tuple, tuple] = {}
        self._floor_memo: dict[str, float] = {}
        self._rt_methods = frozenset(m for rt in space.kb.runtimes.values() for m in rt.methods)
        reach = dict.fromkeys([self.est.chain_runtime(()),
                               *(self.est.chain_runtime((o.method,)) for o in space.options
                                 if o.method in self._rt_methods)])
        self._bound_profiles = [self.est.profile_for(rt) for rt in reach]
        self.rules = rules_for(space.kb)
        self.has_requires = any(o.method in space.idx.requires for o in space.options)
        self._build_levels()
        self.reset()

    def set_limits(self, lim) -> None:
        self.limits = [(k, v) for k, v in lim.items()]
        self.tol = lim.quality_loss_pct
        self.tol_norm = max(self.tol if self.tol is not None else 5.0, 0.5)

    def reset(self, *, mode: str | None = None, cutoff: float | None = None,
              k: int | None = None, relax: str | None = None,
              pareto: bool | None = None) -> None:
        if mode:
            self.mode = mode
        if pareto is not None:
            self.pareto_on = pareto
        if k:
            self.k = k
        self.cutoff = cutoff             # only plans scoring below this are of interest
        self.relax = relax               # a limit lifted: find the smallest value of it that
        self.relaxed: Candidate | None = None   # some plan scoring below `cutoff` needs
        self.board = Board(self.k)
        self.stats = Stats()

    # ---- levels and bounds ----------------------------------------------------------------

    def _build_levels(self) -> None:
        """Slots: one level per transform field (options whose first field it is), one per
        data tier a training step consumes (training twice on the same data adds no new
        information, so a chain trains on each tier once), one per family for the rest (a chain
        holds one method per family). Each level contributes at most one option."""
        sp = self.sp
        kb = sp.kb
        slots: dict[str, list[Option]] = {}
        self.neutral: dict[str, Option] = {}
        self.filler: dict[str, Option] = {}   # effect-free steps another step may require
        self.tags: dict[tuple, frozenset[str]] = {}
        self.group: dict[tuple, str] = {}
        for o in sp.options:
            m = kb.methods[o.method]
            tags = {"family:" + m.family, "method:" + o.method}
            trains = o.cost["passes"] == "train" or m.requires.training
            tier = "tier:" + m.requires.data.value if trains and m.requires.data.value != "none" \
                else None
            if tier:
                tags.add(tier)
            self.tags[o.key] = frozenset(tags)
            self.group[o.key] = tier or "method:" + o.method
            primary = next((f for f in FIELD_ORDER if f in o.fields), None)
            useful = (primary is not None or o.recovery is not None
                      or (o.quality is not None and o.quality.value < 0)
                      or (o.speedup is not None and self.est.credit(o)[2] and o.speedup.value > 1))
            if not useful:
                if o.method in sp.include:
                    self.neutral.setdefault(o.method, o)
                self.filler.setdefault(o.method, o)
                continue
            slots.setdefault(primary or tier or "family:" + m.family, []).append(o)
        levels = []
        for f in FIELD_ORDER:
            if f in slots:
                levels.append(Level(sorted(slots.pop(f), key=self._standalone), f))
        rest = [Level(sorted(opts, key=self._standalone), key) for key, opts in slots.items()]
        rest.sort(key=lambda lv: (not lv.field.startswith("tier:"),
                                  all(o.recovery is None for o in lv.options),
                                  self._standalone(lv.options[0])))
        self.levels = levels + rest
        if self.need_any:  # decide the options a plan must hold first: the rest prunes early
            self.levels.sort(key=lambda lv: not any(o.key in self.need_any for o in lv.options))
        levels = self.levels
        self.sig: dict[tuple, tuple] = {}
        for lvl in levels:
            by_sig: dict[tuple, list[Option]] = {}
            for o in lvl.options:
                cred = self.est.credit(o)
                sig = (tuple(sorted(o.t.items())), o.structure, o.group_overhead_bits, cred,
                       (o.speedup.value, o.speedup.high) if o.speedup and cred[2] else None,
                       o.format,   # a storage format changes the state as much as its bits
                       self.est.chain_runtime((o.method,)) if o.method in self._rt_methods
                       else None)
                self.sig[o.key] = sig
                by_sig.setdefault((sig, o.recovery), []).append(o)
            lvl.groups = [sorted(g, key=lambda o: (o.quality.value, o.quality.high))
                          for g in by_sig.values()]
            lvl.groups.sort(key=lambda g: self._standalone(g[0]))
        self.include_methods = [m for m in sp.include if m not in self.neutral]
        self.last_level_of: dict[str, int] = {}
        self.last_need_level = -1
        for i, lvl in enumerate(levels):
            for o in lvl.options:
                self.last_level_of[o.method] = i
                if o.key in self.need_any:
                    self.last_need_level = i
        self._suffix()

    def _standalone(self, o: Option | None) -> float:
        s = self.sp.base if o is None else self.est.transform(self.sp.base, o)
        q = 0.0
        q_hi = 0.0
        if o is not None and o.quality is not None:
            q, q_hi = o.quality.value, o.quality.high
        return self._score(self._model_metrics(s), q, 0 if o is None else 1, 0.0, q_hi)

    def _suffix(self) -> None:
        """Per level i, the most reducing values offered by levels i.. (for lower bounds)."""
        n = len(self.levels)
        est = self.est
        self.suf_fields: list[dict[str, float]] = [dict() for _ in range(n + 1)]
        K = self.max_steps
        self.suf_gain: list[tuple[float, ...]] = [()] * (n + 1)
        self.suf_gain_hi: list[tuple[float, ...]] = [()] * (n + 1)
        gmin: dict[str, float] = {}
        gmin_hi: dict[str, float] = {}
        top: list[tuple[float, str]] = []
        top_hi: list[tuple[float, str]] = []
        self.suf_speed = [1.0] * (n + 1)
        self.suf_rec: list[list[tuple[float, float]]] = [[] for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            best = dict(self.suf_fields[i + 1])
            speed = 1.0
            recs = list(self.suf_rec[i + 1])
            for o in self.levels[i].options:
                prec, sparse, spd = est.credit(o)
                fmts = [f for f in (o.format, *(f for _, f in o.formats_by_bits)) if f]
                if fmts:   # a storage format is read as stored: its leanest tensor class
                    lo = min(self._format_floor(f) for f in fmts)
                    for k in ("store_bits", "read_bits", "embed_store", "embed_read"):
                        best[k] = min(best.get(k, lo), lo)
                for f, v in o.t.items():
                    if f == "weight_bits":
                        gs = o.t.get("group_size")
                        store = v + (o.group_overhead_bits / gs if gs and v < 16 else 0.0)
                        best["store_bits"] = min(best.get("store_bits", store), store)
                        if prec:
                            best["read_bits"] = min(best.get("read_bits", store), store)
                        if v >= 16:
                            best["embed_store"] = min(best.get("embed_store", v), v)
                            if prec:
                                best["embed_read"] = min(best.get("embed_read", v), v)
                    elif f == "embedding_bits":
                        best["embed_store"] = min(best.get("embed_store", v), v)
                        if prec:
                            best["embed_read"] = min(best.get("embed_read", v), v)
                    elif f in ("params_fraction_removed", "mlp_fraction_removed",
                               "layers_fraction_removed", "heads_fraction_removed"):
                        best[f] = max(best.get(f, 0.0), v)
                    elif f == "sparsity":
                        if sparse:
                            best["sparsity"] = max(best.get("sparsity", 0.0), v)
                            best["sparse_idx"] = min(best.get("sparse_idx", 2.0),
                                                     1.0 if (o.structure or "unstructured") == "unstructured" else 2.0)
                    elif f == "activation_bits":
                        if prec:
                            best[f] = min(best.get(f, v), v)
                    elif f in ("kv_cache_bits", "kv_heads", "rank_fraction", "vocab_size"):
                        best[f] = min(best.get(f, v), v)
                qv = o.quality
                g = self.group[o.key] if o.quality.value < 0 or o.quality.high < 0 else None
                if g is not None:
                    _keep_smallest(gmin, top, g, 1 + qv.value / 100, K)
                    _keep_smallest(gmin_hi, top_hi, g, 1 + qv.high / 100, K)
                if o.speedup is not None and spd:
                    speed = max(speed, o.speedup.value, o.speedup.high)
                if o.recovery is not None:
                    recs.append((min(max(o.recovery.value, 0), 1), min(max(o.recovery.low, 0), 1)))
            recs = sorted(recs, reverse=True)[:MAX_RECOVERY]
            self.suf_fields[i] = best
            self.suf_gain[i] = tuple(v for v, _ in top)
            self.suf_gain_hi[i] = tuple(v for v, _ in top_hi)
            self.suf_speed[i] = self.suf_speed[i + 1] * speed
            self.suf_rec[i] = recs

    def _format_floor(self, fmt: str) -> float:
        """The fewest bits per weight any tensor class takes in this format (on the base
        shape; fallbacks on narrower rows only add bits): a lower bound for bounds."""
        got = self._floor_memo.get(fmt)
        if got is None:
            est = self.est
            by = est.formats.bits_by_class(fmt, est.shape(self.sp.base))
            got = self._floor_memo[fmt] = min(by.values()) if by else 0.0
        return got

    def _optimistic(self, s: ModelState, used: frozenset, i: int) -> ModelState:
        best = self.suf_fields[i]
        o = s.copy()
        if "weight_bits" not in used:
            if "store_bits" in best:
                o.bits = min(o.bits, best["store_bits"])
            if "read_bits" in best:
                o.read_bits = min(o.read_bits, best["read_bits"])
            if "embed_store" in best:
                o.embed_bits = min(o.embed_bits, best["embed_store"])
            if "embed_read" in best:
                o.embed_read_bits = min(o.embed_read_bits, best["embed_read"])
        keep = 1.0
        for f in ("params_fraction_removed", "layers_fraction_removed", "heads_fraction_removed"):
            if f in best and f not in used:
                keep *= 1 - best[f]
        if "rank_fraction" in best and "rank_fraction" not in used:
            keep *= min(1.0, 2 * best["rank_fraction"])
        if keep < 1.0:
            o.qo, o.kvp, o.mlp, o.other = o.qo * keep, o.kvp * keep, o.mlp * keep, o.other * keep
            o.intermediate *= keep
        if "mlp_fraction_removed" in best and "mlp_fraction_removed" not in used:
            o.mlp *= 1 - best["mlp_fraction_removed"]
            o.intermediate *= 1 - best["mlp_fraction_removed"]
        if keep < 1.0:
            o.layers = max(1.0, o.layers * (1 - best.get("layers_fraction_removed", 0.0)))
            o.kv_heads = max(1.0, o.kv_heads * (1 - best.get("heads_fraction_removed", 0.0)))
            o.heads = max(1.0, o.heads * (1 - best.get("heads_fraction_removed", 0.0)))
        if "sparsity" in best and "sparsity" not in used and best["sparsity"] > (o.sparsity if o.sparse_credit else 0):
            o.sparsity = best["sparsity"]
            o.sparse_credit = True
            o.structure = "unstructured" if best.get("sparse_idx", 2.0) <= 1.0 else "semi-structured"
        if "kv_cache_bits" in best and "kv_cache_bits" not in used:
            o.kv_bits = min(o.kv_bits, best["kv_cache_bits"])
        if "kv_heads" in best and "kv_heads" not in used:
            new = min(o.kv_heads, best["kv_heads"])
            o.kvp *= new / o.kv_heads
            o.kv_heads = new
        if "vocab_size" in best and "vocab_size" not in used and best["vocab_size"] < o.vocab:
            o.embed *= best["vocab_size"] / o.vocab
            o.vocab = best["vocab_size"]
        if "activation_bits" in best and "activation_bits" not in used:
            o.act_bits = min(o.act_bits or 99.0, best["activation_bits"])
        if o.format and (o.layers, o.intermediate, o.heads, o.vocab) != \
                (s.layers, s.intermediate, s.heads, s.vocab):
            # narrower rows may fall back to wider types in a format (K-quants): bound the
            # reduced model by the format's leanest tensor type instead
            lo = self._format_floor(o.format)
            o.format = None
            o.bits = o.read_bits = o.embed_bits = o.embed_read_bits = lo
        o.speedup = o.speedup * self.suf_speed[i]
        o.extra = 0.0 if "adds_params_fraction" not in used else o.extra
        return o

    def _model_metrics(self, s: ModelState, order: tuple[Option, ...] | None = None) -> dict[str, float]:
        """Model metrics of a state; with `order`, priced with the runtime that chain deploys
        with, as its prediction is."""
        prof = self.est.profile_for(self._runtime_of(order)) if order is not None else None
        return dict(zip(MODEL_KEYS, self.est.metrics(s, prof)))

    def _lower_metrics(self, s: ModelState) -> dict[str, float]:
        """Model metrics under the fastest runtime any completion could deploy with (a chain
        is priced with its deployment step's runtime, so bounds take the least over them)."""
        return dict(zip(MODEL_KEYS, self.est.metrics(s, self._bound_profiles)))

    # ---- scoring --------------------------------------------------------------------------

    def _score(self, m: dict[str, float], q: float, n_steps: int, tflop: float,
               q_hi: float | None = None) -> float:
        """Weighted, normalised objectives. Risk-aware: the quality term leans towards the
        pessimistic end of the range (RISK_WEIGHT), so a wide prior ranks below a sourced figure
        with the same midpoint. Monotone in q and q_hi, so lower bounds of both bound it."""
        w = self.weights
        if q_hi is not None:
            q = (1 - RISK_WEIGHT) * q + RISK_WEIGHT * max(q_hi, q)
        score = w.get("quality", 0.0) * (q + self.prior_q) / self.tol_norm
        for obj, metric in METRIC_OF.items():
            if obj in w:
                ref = self.refs.get(metric) or 1.0
                score += w[obj] * m[metric] / ref
        cost = math.log10(1 + tflop) / 6
        score += w.get("cost", 0.0) * cost + (0 if "cost" in w else COST_PENALTY * cost)
        return score + STEP_PENALTY * n_steps

    def _violations(self, m: dict[str, float], q: float, q_hi: float) -> dict[str, tuple[float, float]]:
        out = {}
        for name, lim in self.limits:
            if name == "quality_loss_pct":
                v = q_hi if self.conservative else q
            elif name == "memory_mb":
                v = m["inference_memory_mb"]
            else:
                v = m.get(name)
            if v is not None and v > lim * (1 + 1e-9):
                out[name] = (v, lim)
        return out

    def _limit_value(self, name: str, m: dict[str, float], q: float, q_hi: float) -> float:
        if name == "quality_loss_pct":
            return q_hi if self.conservative else q
        if name == "memory_mb":
            return m["inference_memory_mb"]
        return m.get(name, 0.0)

    def _violation_total(self, viol: dict[str, tuple[float, float]]) -> float:
        tot = 0.0
        for name, (v, lim) in viol.items():
            tot += (v - lim) / max(lim, 1.0 if name == "quality_loss_pct" else 1e-9)
        return tot

    # ---- the search -----------------------------------------------------------------------

    def run(self, board: "Board | None" = None, **settings) -> "Search":
        """Search; `board` shares the top-k and the Pareto front with other searches (one per
        candidate base model), so each prunes against the best plans found so far."""
        if settings or board is not None:
            self.reset(**settings)
        if board is not None:
            self.board = board
        t0 = time.perf_counter()
        self._dfs(0, self.sp.base, (), frozenset(), frozenset(), (1.0, 1.0, 1.0),
                  (1.0, 1.0, 1.0), 0)
        self.stats.seconds = time.perf_counter() - t0
        return self

    @property
    def top(self) -> list[Candidate]:
        return self.board.top

    @property
    def archive(self) -> list[Candidate]:
        return self.board.archive

    def root_bound(self) -> float:
        """A lower bound of the score of any plan of this search (to order base models)."""
        m, q, q_hi = self._bound(0, self.sp.base, (), frozenset(), (1.0, 1.0, 1.0),
                                 (1.0, 1.0, 1.0), 0)
        return self._score(m, q, 0, 0.0, q_hi)

    def _threshold(self) -> float:
        top = self.board.top
        t = top[-1].score if len(top) >= self.board.k else math.inf
        if self.cutoff is not None:
            t = min(t, self.cutoff)
        return t

    def _dfs(self, i: int, s: ModelState, chosen: tuple, used: frozenset, fams: frozenset,
             loss: tuple, rec: tuple, n_rec: int) -> bool:
        """Explore below this node; True when its bound pruned it (a bound that only gets
        worse with a larger quality loss, so equal-effect siblings with more loss are skipped)."""
        self.stats.nodes += 1
        levels = self.levels
        n = len(levels)
        while i < n and (levels[i].field in used or levels[i].field in fams):
            i += 1
        if self.bound_on:
            why = self._prune(i, s, chosen, used, loss, rec, n_rec)
            if why:
                self.stats.pruned += 1
                return why == 2
        if i >= n or len(chosen) >= self.max_steps:
            self._leaf(chosen, loss, rec)
            return False
        memo = self._state_memo
        for group in levels[i].groups:
            pruned_q = None
            for o in group:
                q = o.quality
                if pruned_q is not None and q.value >= pruned_q.value and q.high >= pruned_q.high:
                    self.stats.pruned += 1
                    continue
                if not self._compatible(o, chosen, used, fams, n_rec):
                    continue
                key = (id(s), self.sig[o.key])
                s2 = memo.get(key)
                if s2 is None:
                    s2 = memo[key] = self.est.transform(s, o)
                loss2 = (loss[0] * (1 + q.value / 100), loss[1] * (1 + q.low / 100),
                         loss[2] * (1 + q.high / 100))
                rec2, n_rec2 = rec, n_rec
                if o.recovery is not None:
                    r = o.recovery
                    rec2 = (rec[0] * (1 - _clip(r.value)), rec[1] * (1 - _clip(r.high)),
                            rec[2] * (1 - _clip(r.low)))
                    n_rec2 += 1
                if self._dfs(i + 1, s2, chosen + (o,), used | o.fields, fams | self.tags[o.key],
                             loss2, rec2, n_rec2):
                    pruned_q = q
        self._dfs(i + 1, s, chosen, used, fams, loss, rec, n_rec)
        return False

    def _compatible(self, o: Option, chosen: tuple, used: frozenset, fams: frozenset,
                    n_rec: int) -> bool:
        if o.fields & used or self.tags[o.key] & fams:
            return False
        if o.recovery is not None and n_rec >= MAX_RECOVERY:
            return False
        if chosen:
            clash = self.rules.conflicts(o.method)
            if clash and any(c.method in clash for c in chosen):
                return False
        return True

    def _q_bound(self, loss: tuple, rec: tuple, n_rec: int, i: int,
                 slots: int) -> tuple[float, float]:
        recs = self.suf_rec[i][:max(0, MAX_RECOVERY - n_rec)]
        x, xh = loss[0], loss[2]
        for g in self.suf_gain[i][:slots]:
            x *= g
        for g in self.suf_gain_hi[i][:slots]:
            xh *= g
        x -= 1
        xh -= 1
        if x > 0:
            x *= rec[0]
            for r, _ in recs:
                x *= 1 - r
        if xh > 0:
            xh *= rec[2]
            for _, rl in recs:
                xh *= 1 - rl
        return x * 100, xh * 100

    def _bound(self, i: int, s: ModelState, chosen: tuple, used: frozenset, loss: tuple,
               rec: tuple, n_rec: int) -> tuple[dict[str, float], float, float]:
        """Lower bounds of the model metrics and of the quality loss below this node."""
        if i < len(self.levels):
            key = (id(s), i)
            m = self._bound_memo.get(key)
            if m is None:
                m = self._bound_memo[key] = self._cal_lower(
                    self._lower_metrics(self._optimistic(s, used, i)))
            q, q_hi = self._q_bound(loss, rec, n_rec, i, self.max_steps - len(chosen))
        else:
            key = (id(s), -1)
            m = self._bound_memo.get(key)
            if m is None:
                m = self._bound_memo[key] = self._cal_lower(self._lower_metrics(s))
            q, q_hi = self._q_final(loss, rec)
        cal = self.est.calibration
        if cal is not None:
            q, q_hi = cal.lower("quality_loss_pct", q), cal.lower("quality_loss_pct", q_hi)
        return m, q, q_hi

    def _cal_lower(self, m: dict[str, float]) -> dict[str, float]:
        cal = self.est.calibration
        return m if cal is None else {k: cal.lower(k, v) for k, v in m.items()}

    def _prune(self, i: int, s: ModelState, chosen: tuple, used: frozenset, loss: tuple,
               rec: tuple, n_rec: int) -> int:
        """0: explore; 1: pruned by the plan's shape (steps, includes); 2: pruned by bounds."""
        missing = 0
        if self.include_methods:
            have = {c.method for c in chosen}
            miss = [m for m in self.include_methods if m not in have]
            if any(self.last_level_of.get(m, -1) < i for m in miss):
                return 1
            missing = len(miss)
        if len(chosen) + missing > self.max_steps:
            return 1
        if self.need_any and i > self.last_need_level and \
                not any(c.key in self.need_any for c in chosen):
            return 1
        m, q, q_hi = self._bound(i, s, chosen, used, loss, rec, n_rec)
        viol = self._violations(m, q, q_hi)
        lb = self._score(m, q, len(chosen) + missing, 0.0, q_hi)
        if self.mode == "closest":
            top = self.board.top
            if not top:
                return 0
            total, best = self._violation_total(viol), top[0].metrics["violation"]
            return 2 if total > best + 1e-9 or (total >= best - 1e-9 and lb >= top[0].score - 1e-12) \
                else 0
        if viol:
            return 2
        if self.relax is not None:
            if self.cutoff is not None and lb >= self.cutoff - 1e-12:
                return 2
            r = self.relaxed
            return 2 if r is not None and self._limit_value(self.relax, m, q, q_hi) > \
                self._limit_value(self.relax, r.metrics, r.q[0], r.q[2]) + 1e-12 else 0
        if lb < self._threshold() - 1e-12:
            return 0
        if not self.pareto_on or self.cutoff is not None:
            return 2
        if self.board.dominated((q + self.prior_q, m["inference_memory_mb"],
                                 m["decode_ms_per_token"])):
            return 2
        # explored only for the Pareto front: within a budget, so huge KBs stay fast
        self.board.pareto_nodes += 1
        if self.board.pareto_nodes > self.board.pareto_budget:
            self.board.pareto_complete = False
            return 2
        return 0

    def _q_final(self, loss: tuple, rec: tuple) -> tuple[float, float]:
        x = (loss[0] - 1) * (rec[0] if loss[0] > 1 else 1)
        xh = (loss[2] - 1) * (rec[2] if loss[2] > 1 else 1)
        return x * 100, xh * 100

    # ---- leaves ---------------------------------------------------------------------------

    def _leaf(self, chosen: tuple, loss: tuple, rec: tuple) -> None:
        self.stats.leaves += 1
        sp = self.sp
        methods = [o.method for o in chosen]
        for m in self.include_methods:
            if m not in methods:
                return
        extra = tuple(o for mid, o in self.neutral.items() if mid not in methods)
        full = self.complete(chosen + extra)
        if full is None:
            return
        best = None
        for order in self._orders(full):
            cand = self.evaluate(order)
            if best is None or _better(cand, best, self.mode):
                best = cand
        if best is not None:
            self._offer(best)

    def complete(self, chain: tuple) -> tuple | None:
        """`chain` plus the effect-free steps its `requires` relations name (an export a
        quantized format needs, say); None when a requirement cannot be met or the chain grows
        past max_steps. Steps with effects are never added here: the search chooses those."""
        if not self.has_requires:
            return chain
        idx = self.sp.idx
        full = list(chain)
        i = 0
        while i < len(full):
            names = [o.method for o in full]
            for req in idx.requires.get(full[i].method, ()):
                if idx.satisfied(req, names):
                    continue
                fill = self.filler.get(req)
                if fill is None:
                    return None
                full.append(fill)
                names.append(fill.method)
            i += 1
        if len(full) > max(self.max_steps, len(chain)):
            return None
        return tuple(full)

    def _orders(self, chosen: tuple) -> list[tuple[Option, ...]]:
        """Valid execution orders worth trying for this set (usually one, a few with recovery)."""
        key = frozenset(o.key for o in chosen)
        got = self._orders_memo.get(key)
        if got is None:
            got = self._orders_memo[key] = self._make_orders(chosen)
        return got

    def _make_orders(self, chosen: tuple) -> list[tuple[Option, ...]]:
        idx = self.sp.idx
        base = sorted(chosen, key=lambda o: idx.rank.get(o.method, 0))
        base = self._fix_generic(base)
        if base is None:
            return []
        floats = [o for o in base if o.method in idx.floating]
        if not floats:
            return [tuple(base)] if self._valid(base) else []
        variants = [base]
        for f in floats:
            new = []
            for v in variants:
                rest = [o for o in v if o is not f]
                spots = {len(rest)}
                q_at = next((j for j, o in enumerate(rest) if o.int_quant), None)
                if q_at is not None:
                    spots.add(q_at)
                lossy = [j for j, o in enumerate(rest) if o.lossy]
                if lossy:
                    spots.add(lossy[-1] + 1)
                new.append(v)
                for j in sorted(spots):
                    cand = rest[:j] + [f] + rest[j:]
                    if cand != v:
                        new.append(cand)
            variants = new
        out, seen = [], set()
        for v in variants:
            key = tuple(o.key for o in v)
            if key in seen or not self._valid(v):
                continue
            seen.add(key)
            out.append(tuple(v))
        return out

    def _fix_generic(self, order: list[Option]) -> list[Option] | None:
        """Move structural edits and full training before integer quantization when the
        declared order allows it; None when it does not."""
        idx = self.sp.idx
        q_pos = next((j for j, o in enumerate(order) if o.int_quant), None)
        if q_pos is None:
            return order
        late = [o for o in order[q_pos + 1:] if (o.edits_structure or o.trains_all)
                and not o.int_quant and o.method not in idx.floating]
        if not late:
            return order
        head = order[:q_pos]
        tail = [o for o in order[q_pos:] if o not in late]
        new = head + late + tail
        return new if self._declared_ok(new) else None

    def _declared_ok(self, order: list[Option]) -> bool:
        return self.rules.ok([o.method for o in order])

    def _valid(self, order: list[Option]) -> bool:
        idx = self.sp.idx
        quantized: str | None = None   # the first integer quantization so far
        for j, o in enumerate(order):
            if o.from_scratch and not any(x.method in idx.pretrain_scale for x in order[j + 1:]):
                return False
            if quantized and (o.edits_structure or o.trains_all) and not o.int_quant \
                    and quantized not in self.rules.exempt(o.method):
                return False
            if o.int_quant and quantized is None:
                quantized = o.method
        return self.rules.ok([o.method for o in order])

    def simulate(self, order: tuple[Option, ...]) -> tuple[dict[str, float], tuple, list]:
        """Metrics, quality (value, low, high) and per-step (state, cost) of one ordered chain;
        memoised per prefix, since chains share prefixes and searches are re-run."""
        key = tuple(o.key for o in order)
        got = self._sim_memo.get(key)
        if got is not None:
            return got
        est = self.est
        steps: list = []
        s = self.sp.base
        j = len(order)
        while j > 0 and key[:j] not in self._prefix_memo:
            j -= 1
        if j:
            steps = list(self._prefix_memo[key[:j]])
            s = steps[-1][0]
        for o in order[j:]:
            before = s
            s, cost = est.apply(s, o)
            extra = frozen_mb(self.sp.kb, o, before)
            if extra:   # frozen reference/reward copies the estimator does not count
                cost = StepCost(cost.peak_memory_mb + extra, cost.tflop, cost.hours)
            steps.append((s, cost))
            self._prefix_memo[key[:len(steps)]] = tuple(steps)
        # priced with the chain's own runtime (its deployment step), as the final prediction is
        rt = self._runtime_of(order)
        m = dict(zip(MODEL_KEYS, est.metrics(s, est.profile_for(rt))))
        m["step_peak_memory_mb"] = max((c.peak_memory_mb for _, c in steps), default=0.0)
        m["step_tflop"] = sum(c.tflop for _, c in steps)
        m["step_hours"] = sum(c.hours for _, c in steps)
        q = (s.q, min(s.q_lo, s.q), max(s.q_hi, s.q))
        cal = est.calibration_for(rt)
        if cal is not None and order:
            last, lp = order[-1].method, order[-1].params
            for k2 in list(m):
                got2 = cal.correct(k2, m[k2], last, params=lp)
                if got2 is not None:
                    m[k2] = got2[0]
            got2 = cal.correct("quality_loss_pct", q[0], last, low=q[1], high=q[2], params=lp)
            if got2 is not None:
                q = tuple(got2)
        got = self._sim_memo[key] = (m, q, steps)
        return got

    def _runtime_of(self, order: tuple[Option, ...]) -> str | None:
        """The runtime the chain deploys with (None: the default one); memoised per method set,
        since only the last deployment step in the chain decides."""
        key = tuple(o.method for o in order if o.method in self._rt_methods)
        got = self._rt_memo.get(key)
        if got is None:
            got = self._rt_memo[key] = (self.est.chain_runtime(key),)
        return got[0]

    def evaluate(self, order: tuple[Option, ...]) -> Candidate:
        """Score one ordered chain against the current limits."""
        self.stats.evaluated += 1
        m, q, steps = self.simulate(order)
        m = dict(m)
        viol = self._violations(m, q[0], q[2])
        score = self._score(m, q[0], len(order), m["step_tflop"], q[2])
        if self.mode == "closest":
            m["violation"] = self._violation_total(viol)
        return Candidate(tuple(order), m, q, score, viol, steps, self.prior_q, self.sp.model)

    def _offer(self, c: Candidate) -> None:
        if self.mode == "closest":
            top = self.board.top
            if not top or _better(c, top[0], "closest"):
                self.board.top = [c]
            return
        if c.violations:
            return
        if self.cutoff is not None and c.score >= self.cutoff - 1e-12:
            return
        if self.relax is not None:
            r = self.relaxed
            if r is None:
                self.relaxed = c
                return
            v = self._limit_value(self.relax, c.metrics, c.q[0], c.q[2])
            w = self._limit_value(self.relax, r.metrics, r.q[0], r.q[2])
            if v < w - 1e-12 or (abs(v - w) <= 1e-12 and c.score < r.score):
                self.relaxed = c
            return
        self.board.offer(c, pareto=self.pareto_on and self.cutoff is None)


class Board:
    """The best plans found so far (top k by score) and the Pareto front over quality,
    inference memory and decode latency; shared by the searches of one recommendation.

    The front is an epsilon-front: a point within `eps` (relative, and `eps_q` percentage points
    of quality) of a kept point in every objective counts as covered. This keeps the front
    readable and lets the search prune far more; the exact front differs by at most eps. Nodes
    explored only for the front are capped (`pareto_budget`); `pareto_complete` says whether the
    cap was reached (the top-k plans are exact either way)."""

    def __init__(self, k: int = 5, eps: float = PARETO_EPS, eps_q: float = PARETO_EPS_Q,
                 pareto_budget: int = PARETO_BUDGET):
        self.k = k
        self.eps = eps
        self.eps_q = eps_q
        self.pareto_budget = pareto_budget   # nodes explored only for the front
        self.pareto_nodes = 0
        self.pareto_complete = True
        self.top: list[Candidate] = []
        self.archive: list[Candidate] = []

    @staticmethod
    def vector(c: Candidate) -> tuple[float, float, float]:
        return (c.q[0] + c.prior_q, c.metrics["inference_memory_mb"],
                c.metrics["decode_ms_per_token"])

    def dominated(self, v: tuple[float, float, float]) -> bool:
        e, eq = 1 + self.eps, self.eps_q
        for c in self.archive:
            a = self.vector(c)
            if a[0] <= v[0] + eq and a[1] <= v[1] * e and a[2] <= v[2] * e:
                return True
        return False

    def offer(self, c: Candidate, pareto: bool = True) -> None:
        key = (c.model, c.key)
        if all((t.model, t.key) != key for t in self.top) and not any(
                _padded(c, t) for t in self.top):
            self.top = [t for t in self.top if not _padded(t, c)]
            self.top.append(c)
            self.top.sort(key=lambda x: (x.score, len(x.options)))
            del self.top[self.k:]
        if pareto:
            v = self.vector(c)
            if not self.dominated(v):
                self.archive = [a for a in self.archive if not all(
                    x <= y + 1e-12 for x, y in zip(v, self.vector(a)))]
                self.archive.append(c)


_COMPARED = ("size_mb", "inference_memory_mb", "decode_ms_per_token", "prefill_ms")


def _padded(a: Candidate, b: Candidate) -> bool:
    """`a` is `b` plus steps that change nothing the scenario cares about (a padded plan)."""
    if a.model != b.model or len(a.options) <= len(b.options):
        return False
    keys = {o.key for o in a.options}
    if not all(o.key in keys for o in b.options):
        return False
    return a.q[0] >= b.q[0] - 1e-9 and all(
        a.metrics[k] >= b.metrics[k] * (1 - 1e-9) for k in _COMPARED)


def _keep_smallest(best: dict[str, float], top: list[tuple[float, str]], g: str, v: float,
                   k: int) -> None:
    """Track each group's smallest factor and the k smallest groups (values only decrease)."""
    if v >= best.get(g, 1.0):
        return
    best[g] = v
    for j, (_, h) in enumerate(top):
        if h == g:
            top[j] = (v, g)
            break
    else:
        top.append((v, g))
    top.sort()
    del top[k:]


def _clip(r: float) -> float:
    return min(max(r, 0.0), 1.0)


def _better(a: Candidate, b: Candidate, mode: str) -> bool:
    if mode == "closest":
        return (a.metrics["violation"], a.score) < (b.metrics["violation"], b.score)
    if a.feasible != b.feasible:
        return a.feasible
    return (a.score, len(a.options)) < (b.score, len(b.options))


def exhaustive(space: Space, *, k: int = 1, max_steps: int | None = None) -> Search:
    """Every valid chain, no bounds: the reference the branch and bound is checked against."""
    return Search(space, k=k, pareto=False, bound=False, max_steps=max_steps).run()

