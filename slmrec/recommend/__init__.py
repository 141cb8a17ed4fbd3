"""The recommender: scenario -> goals -> space -> search -> lifecycle plan -> explanation.

Files, in the order data flows through them:

- `rules.py`   one checker of order, conflicts, requirements and slots (also used by plan
               validation and `graph follows`);
- `goals.py`   what the scenario implies the lifecycle must achieve, and which goals a chain covers;
- `space.py`   the options the scenario allows, and one reason for each method left out;
- `value.py`   expected task gain (scaled by the data held) and family priors for missing figures;
- `devices.py` memory of a training step on the device where it runs;
- `search.py`  branch and bound over the fit-the-target chains;
- `lifecycle.py` adds the stages the goals call for (adaptation, alignment, evaluation, export);
- `core.py`    the entry point `recommend`, plans, why and why not;
- `counterfactuals.py` the smallest relaxation that changes the top plan.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recommendation", "recommend"]


def __getattr__(name: str) -> Any:  # lazy: plan validation imports `rules` without the search
    if name in __all__:
        from slmrec.recommend import core

        return getattr(core, name)
    raise AttributeError(name)
