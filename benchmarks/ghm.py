"""Gaussian hierarchical model on the bundled nested data: timings and headline numbers.

``python benchmarks/ghm.py [--repeat N]`` prints (Markdown) and writes ``benchmarks/ghm.md``:

1. exact-engine time per fit (median of N repeats, wall and CPU seconds, in one process after
   a warm-up fit) for each bundled nested dataset and time structure, with the rule used
   (tensor quadrature or QMC importance sampling), nodes and accuracy diagnostic; the classical
   twin (REML) beside it;
2. headline estimates under the new model (defaults: fixed subgroups, exchangeable times,
   within-source correlation r = 0.5, scale-aware default priors) and their sensitivity to r:
   2014 MELD MD (average of weeks 2, 4, 24), 2023 MELD all-patients average of weeks 4, 12, 24,
   2023 MELD and TB subgroup contrasts ACLF - cirrhosis (at a common week where both are
   observed, and of the subgroup levels).

The machine is shared: read timings as orders of magnitude; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bayesmeta import ghm_exact, ghm_reml  # noqa: E402
from bayesmeta.exceptions import SpecError  # noqa: E402
from bayesmeta.fits import Param  # noqa: E402


def markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.3g}"
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])

Z975 = 1.959963984540054


def meld2014() -> pd.DataFrame:
    d = pd.read_csv(ROOT / "data" / "meld_2014_fig3.csv")
    return pd.DataFrame(dict(study=d["study"], time=d["time"], yi=d["m1i"] - d["m2i"],
                             vi=d["sd1i"] ** 2 / d["n1i"] + d["sd2i"] ** 2 / d["n2i"],
                             n1i=d["n1i"], n2i=d["n2i"]))


def pooled2023(outcome: str, subgroups: bool) -> pd.DataFrame:
    p = pd.read_csv(ROOT / "data" / "msc_2023_pooled.csv")
    p = p[(p["outcome"] == outcome) & (p["time_wk"] > 0)]
    p = p[~p["note"].fillna("").str.startswith("AMBIGUOUS")]
    p = p[(p["subgroup"] != "all") if subgroups else (p["subgroup"] == "all")]
    return pd.DataFrame(dict(yi=p["estimate"], time=p["time_wk"].astype(int),
                             sei=(p["ci_high"] - p["ci_low"]) / (2 * Z975),
                             subgroup=p["subgroup"], source="2023", row_kind="pooled"))


DATASETS = {
    "2014 MELD (arm MD, 2 studies x 3 weeks)": (meld2014, {}),
    "2023 MELD subgroups": (lambda: pooled2023("MELD", True),
                            {"contrasts": [("ACLF", "cirrhosis")]}),
    "2023 MELD all patients": (lambda: pooled2023("MELD", False), {}),
    "2023 TB subgroups": (lambda: pooled2023("TB", True),
                          {"contrasts": [("ACLF", "cirrhosis")]}),
}


def timings(repeat: int) -> pd.DataFrame:
    rows = []
    ghm_exact.fit_ghm(meld2014())  # warm-up (imports, first calls)
    for name, (load, opts) in DATASETS.items():
        data = load()
        for ts in ("exchangeable", "ar1", "car"):
            for sub in ("fixed", "random"):
                if sub == "random" and "subgroups" not in name:
                    continue
                wall, cpu = [], []
                for _ in range(repeat):
                    t0, c0 = time.perf_counter(), time.process_time()
                    f = ghm_exact.fit_ghm(data, time_structure=ts, subgroup=sub, **opts)
                    f.summary(0.95)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                dg = f.diagnostics()
                acc = (f"error {dg['error_estimate']:.1e}" if dg["rule"] == "tensor" else
                       f"k-hat {dg['khat']:.2f}, MC error {dg['max_mc_error_sd']:.3f} SD"
                       if dg["rule"] == "qmc-is" else "closed form")
                rows.append({"dataset": name, "time structure": ts, "subgroups": sub,
                             "rows": len(data), "hyperparameters": dg["dims"],
                             "rule": dg["rule"], "nodes": dg["nodes"], "accuracy": acc,
                             "wall s (median)": statistics.median(wall),
                             "CPU s (median)": statistics.median(cpu)})
        wall = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            ghm_reml.fit_ghm_reml(data, **opts).summary(0.95)
            wall.append(time.perf_counter() - t0)
        rows.append({"dataset": name, "time structure": "(cells fixed)", "subgroups": "REML twin",
                     "rows": len(data), "hyperparameters": np.nan, "rule": "REML",
                     "nodes": np.nan, "accuracy": "", "wall s (median)": statistics.median(wall),
                     "CPU s (median)": np.nan})
    return pd.DataFrame(rows)


def _get(fit, p: Param):
    s = fit.summary(0.95)
    if p not in s.index:
        return None
    r = s.loc[p]
    return (f"{r['estimate']:.2f} (SD {r['se']:.2f}) [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            + (" *" if r["note"].startswith("extrapolation") else ""))


def headline() -> pd.DataFrame:
    items = [
        ("2014 MELD, average of weeks 2, 4, 24", meld2014, {},
         Param("mu", time="avg(2,4,24)")),
        ("2023 MELD all patients, average of weeks 4, 12, 24", lambda: pooled2023("MELD", False),
         {}, Param("mu", time="avg(4,12,24)")),
        ("2023 MELD contrast ACLF - cirrhosis at week 24", lambda: pooled2023("MELD", True),
         {"contrasts": [("ACLF", "cirrhosis")]},
         Param("contrast", subgroup="ACLF - cirrhosis", time="24")),
        ("2023 MELD contrast of subgroup levels", lambda: pooled2023("MELD", True),
         {"contrasts": [("ACLF", "cirrhosis")]}, Param("contrast", subgroup="ACLF - cirrhosis")),
        ("2023 TB contrast of subgroup levels (no common week)", lambda: pooled2023("TB", True),
         {"contrasts": [("ACLF", "cirrhosis")]}, Param("contrast", subgroup="ACLF - cirrhosis")),
    ]
    rows = []
    for label, load, opts, par in items:
        data = load()
        row = {"estimand": label}
        for ts in ("exchangeable", "ar1", "car"):
            row[f"{ts}, r = 0.5"] = _get(ghm_exact.fit_ghm(data, time_structure=ts, **opts), par)
        for r in (0.0, 0.8, 0.9):
            try:
                row[f"exchangeable, r = {r:g}"] = _get(ghm_exact.fit_ghm(data, r=r, **opts),
                                                       par)
            except SpecError:
                row[f"exchangeable, r = {r:g}"] = "n/a (no row pairs to correlate)"
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    t = timings(args.repeat)
    h = headline()
    text = ["# Gaussian hierarchical model: timings and headline numbers", "",
            "Shared 2-core machine: timings are orders of magnitude (median of "
            f"{args.repeat} repeats, one process, after a warm-up fit).", "",
            markdown(t), "",
            "Posterior mean (SD) [95% ETI]; * = involves a subgroup not observed at that week "
            "(extrapolation).", "", markdown(h), ""]
    out = "\n".join(text)
    (HERE / "ghm.md").write_text(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
