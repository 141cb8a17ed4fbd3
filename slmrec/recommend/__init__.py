"""The recommender: scenario -> goals -> space -> search -> lifecycle plan -> explanation.

Files, in the order data flows through them:

- `rules.py`      one checker of order, conflicts, requirements and slots (also used by plan
                  validation and `graph follows`);
- `goals.py`      what the scenario implies the lifecycle must achieve, and what a chain covers;
- `value.py`      expected task gain (scaled by the data held) and family priors;
- `space.py`      the options the scenario allows, and one reason for each method left out;
- `devices.py`    frozen model copies a training step holds on the device where it runs;
- `search.py`     branch and bound over the fit-the-target chains; `runs.py` one per base model;
- `lifecycle.py`  adds the stages the goals call for (adaptation, alignment, evaluation, export);
- `explain.py`, `explain_goals.py`, `whynot.py`, `counterfactuals.py`, `text.py`: the plan, why,
                  why not, what one relaxation would change;
- `core.py`       the entry point `recommend`; `predict.py` checks and predicts a written plan.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recommendation", "recommend"]


def __getattr__(name: str) -> Any:  # lazy: plan validation imports `rules` without the search
    if name in __all__:
        from slmrec.recommend import core

        return getattr(core, name)
    raise AttributeError(name)
