"""One branch-and-bound search per candidate base model, sharing one board; the closest plan
when nothing is feasible."""

from __future__ import annotations

from typing import Any

from slmrec.recommend.search import Board, Candidate, Search
from slmrec.recommend.space import KBIndex, Space, build_space
from slmrec.scenario import CHOOSE, Scenario

EXTRA_CORES = 2            # fit-the-target chains kept beyond top_k for the lifecycle stage
SCALING_EXPONENT = 0.076   # loss ~ N^-0.076 (Kaplan et al. 2020): compares base models in 'choose'


def _spaces(idx: KBIndex, sc: Scenario, calibration: Any) -> list[Space]:
    return [build_space(idx, sc, m, calibration=calibration) for m in sc.candidate_models(idx.kb)]


def _searches(idx: KBIndex, sc: Scenario, top_k: int, calibration: Any, pareto: bool,
              spaces: list[Space] | None = None, need: dict[str, set] | None = None,
              **settings) -> tuple[list[Search], Board]:
    """One search per candidate base model, sharing one board (best first, so the others prune
    against it)."""
    spaces = spaces or _spaces(idx, sc, calibration)
    refs = None
    priors = {sp.model: 0.0 for sp in spaces}
    if sc.base_model == CHOOSE and len(spaces) > 1:
        # one yardstick for every candidate: the largest base model's figures, and a size prior
        biggest = max(spaces, key=lambda sp: sp.arch.params)
        refs = biggest.refs
        for sp in spaces:
            priors[sp.model] = 100 * ((biggest.arch.params / sp.arch.params) ** SCALING_EXPONENT - 1)
    runs = [Search(sp, k=top_k, pareto=pareto, prior_q=priors[sp.model], refs=refs,
                   need_any=(need or {}).get(sp.model)) for sp in spaces]
    if need is not None:  # a model with nothing new cannot beat the plans already found
        runs = [r for r in runs if r.need_any]
    board = Board(top_k)
    for r in sorted(runs, key=lambda r: r.root_bound()):
        r.run(board=board, **settings)
    return runs, board


def _closest(runs: list[Search]) -> list[tuple[Candidate, Search]]:
    board = Board(1)
    for r in runs:
        r.run(board=board, mode="closest", k=1)
    by_model = {r.sp.model: r for r in runs}
    out = [(c, by_model[c.model]) for c in board.top]
    for r in runs:
        r.reset(mode="rank")
    return out


def _static_binding(runs: list[Search]) -> list[str]:
    out = []
    for r in runs:
        for m in r.sp.include:
            why = r.sp.rejected.get(m)
            if why:
                out.append(f"preferences.include names '{m}', which {why.reason}")
    return out
