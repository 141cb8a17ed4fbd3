"""`slmrec calibrate`: fit the estimator's corrections on the run store's measurements.

This closes the loop: runs record predicted against measured; the fitted corrections are then
passed to `slmrec recommend --calibration FILE`, whose predictions say "calibrated".
"""

from __future__ import annotations

import argparse

from slmrec.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit prediction corrections on measured runs")
    p.add_argument("--store", metavar="PATH", help="run store (default: $SLMREC_STORE or the user store)")
    p.add_argument("-o", "--output", metavar="FILE", default="calibration.json",
                   help="where to write the calibration JSON (default: calibration.json)")
    p.add_argument("--min-rows", type=int, default=1, help="measurements a metric needs to be "
                   "fitted (offsets with few rows are shrunk towards no correction anyway)")
    p.add_argument("--json", action="store_true", help="print the fitted calibration as JSON")
    p.set_defaults(handler=_calibrate)


def _calibrate(args) -> int:
    from slmrec.calibrate import Calibration
    from slmrec.errors import SlmrecError
    from slmrec.evidence import default_store_path

    from slmrec.safeio import check_target

    check_target(args.output)  # a bad -o is said before any work, not after it
    path = default_store_path(args.store)
    if not path.exists():
        raise SlmrecError.one(str(path), "no run store here yet; run a plan first "
                                         "(`slmrec run PLAN.yaml` or `make run`)")
    from slmrec.kb import load_kb

    cal = Calibration.from_store(path, min_rows=args.min_rows, kb=load_kb())
    if not cal.fits:
        raise SlmrecError.one(str(path), f"too few measurements to fit anything (each metric "
                                         f"needs {args.min_rows}); run more plans first")
    out = cal.save(args.output)
    if args.json:
        print_json(cal.to_json())
        return 0
    rows = []
    for metric, fit in sorted(cal.fits.items()):
        cv = "–" if fit.cv_before is None else f"{fit.cv_before:.3f} -> {fit.cv_after:.3f}"
        rows.append([metric, fit.n, fit.loaded, fit.kind, f"{fit.alpha:g}", cv,
                     ", ".join(f"{k} {c:+.2f} ({fit.rows[k]:g})"
                               for k, c in sorted(fit.offsets.items()))])
    print(table(rows, ["metric", "rows", "loaded", "space", "shrink", "LOO |err| before -> after",
                       "offsets (rows)"]))
    print(f"\nwrote {out} from {cal.rows_used} measurements in {path}; "
          f"use it with: slmrec recommend --calibration {out} ...")
    return 0
