"""A run store with one completed two-step run (predicted and measured) and one failed run: shared
by the app tests (conftest) and the browser bench."""

from __future__ import annotations

from pathlib import Path

PLAN_YAML = ("format: 1\nname: app-test-plan\nbase_model: smollm2-135m\nsteps:\n"
             "- method: magnitude-pruning\n- method: dynamic-int8\n")


def fill(store_path: Path | str, out_dir: Path) -> tuple[object, int, int]:
    """(store, completed run id, failed run id)."""
    from slmrec.evidence import RunStore

    store = RunStore(store_path)
    rid = store.start_run(plan_yaml=PLAN_YAML, plan_hash="h1", base_model="smollm2-135m",
                          name="app-test-plan", out_dir=out_dir)
    store.record_step(rid, 0, "magnitude-pruning", runner="magnitude-prune",
                      params={"sparsity": 0.5}, wall_s=2.5,
                      metrics={"ppl": 14.1, "size_mb": 520.0, "sparsity": 0.5,
                               "checkpoint_s": 0.8, "measure_s": 3.1},
                      predicted={"ppl": {"value": 13.8, "low": 13.0, "high": 16.0},
                                 "size_mb": {"value": 538.0, "low": 530.0, "high": 545.0}})
    store.record_step(rid, 1, "dynamic-int8", runner="dynamic-int8", wall_s=1.5,
                      metrics={"ppl": 15.3, "size_mb": 250.0, "decode_ms_per_token": 41.0,
                               "checkpoint_s": 0.5, "measure_s": 2.9},
                      predicted={"ppl": {"value": 15.0, "low": 14.0, "high": 18.0},
                                 "size_mb": {"value": 248.0, "low": 240.0, "high": 260.0},
                                 "decode_ms_per_token": {"value": 0.25, "low": 0.2,
                                                         "high": 0.3}})
    store.record_step(rid, None, "plan", metrics={"ppl": 15.3}, predicted={"ppl": {"value": 15.0}})
    store.finish_run(rid, "completed")
    failed = store.start_run(plan_yaml=PLAN_YAML, plan_hash="h2", base_model="smollm2-135m",
                             name="app-failing-plan")
    store.record_step(failed, 0, "gptq", status="failed", reason="out of memory: test")
    store.finish_run(failed, "failed", "step 1 (gptq) failed: out of memory: test")
    return store, rid, failed


if __name__ == "__main__":  # fill a store with another checkout's RunStore (bench/app_browser.py)
    import sys

    fill(sys.argv[1], Path(sys.argv[2]))
