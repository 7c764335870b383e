"""``bayesmeta classical DATA.csv --measure M [...]``: classical meta-analysis of a CSV file.

Scripting contract::

    bayesmeta classical DATA.csv --measure {MD,SMD,OR,RR,RD,PETO,MC,GEN}
        [--method {FE,MH,PETO,DL,REML,ML,PM,HE,SJ,EB,HS}] [--test {z,knha}] [--by COLUMN]
        [--missing-level LABEL] [--preset {revman5,revman_web}] [--level P] [--log] [--json]

Input columns use metafor's names (MD/SMD: m1i sd1i n1i m2i sd2i n2i; OR/RR/RD/PETO: ai n1i ci
n2i or ai bi ci di; MC: mi sdi ni; GEN: yi with vi or sei; optional ``study``). ``--json``
prints one object with keys ``k, measure, method, test, estimate, se, ci_low, ci_high,
statistic, p, df, tau2, tau, i2, h2, q, q_df, q_p, pi_low, pi_high, studies`` and, with
``--by``, ``subgroups`` and ``subgroup_test``. JSON estimates are on the analysis scale (log
for OR/RR/PETO), with intervals at ``--level`` (0.95). The printed text shows ratio measures
exponentiated (``--log``: as pooled, on the log scale). Bad input, a repeated option or an
option that does not apply exits with code 2 and a one-line message.

Defaults: ``--method REML`` (metafor's default), ``PETO`` for ``--measure PETO``, ``DL`` with
``--preset revman5``. With ``--preset revman5`` and a 2x2 measure, ``--method DL`` is RevMan 5's
"M-H, Random" (DL tau² from Q around the MH estimate) and ``--method MH`` adds RevMan's
continuity correction before the MH estimate.
"""

from __future__ import annotations

import json
import math
import sys
import warnings

import pandas as pd

from bayesmeta.exceptions import DataWarning

METHODS = ("FE", "MH", "PETO", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
from bayesmeta.effect_sizes import MEASURES  # noqa: E402  (one list of measures)
from bayesmeta.cli._help import FORMATTER, epilog, probability, wrap  # noqa: E402


DESCRIPTION = """Classical meta-analysis of a CSV file (one row per study), computed as metafor
and RevMan 5 do: fixed effect (inverse variance, Mantel-Haenszel, Peto) or random effects with
a tau^2 estimator, Wald z or Knapp-Hartung t intervals, a prediction interval, heterogeneity
(Q, I^2, tau^2) and, with --by, one analysis per subgroup and the test for subgroup
differences.

Ratio measures (OR, RR, PETO) are printed on their natural scale (--log for the log scale on
which they are pooled); --json always gives the analysis scale (log for ratios)."""

EPILOG = epilog(
    "bayesmeta classical trials.csv --measure OR",
    "bayesmeta classical trials.csv --measure OR --method MH --preset revman5 --by subgroup",
    "bayesmeta classical trials.csv --measure MD --method REML --test knha --level 0.9",
    "bayesmeta classical trials.csv --measure RR --log --json",
    columns=True,
    notes=("Defaults: --method REML (metafor's), PETO for --measure PETO, DL with --preset "
           "revman5. With --preset revman5 and a 2x2 measure, --method DL is RevMan 5's "
           "'M-H, Random' and --method MH adds RevMan's continuity correction.",))


def add_parser(subparsers):
    p = subparsers.add_parser(
        "classical", help="classical (metafor/RevMan-compatible) meta-analysis of a CSV file",
        description=wrap(DESCRIPTION), epilog=EPILOG, formatter_class=FORMATTER)
    p.add_argument("data", metavar="DATA.csv",
                   help="one row per study, columns named as below (metafor's names)")
    p.add_argument("--measure", required=True, choices=MEASURES, type=str.upper,
                   metavar="{" + ",".join(MEASURES) + "}",
                   help="effect measure; the columns each one needs are listed below")
    p.add_argument("--method", choices=METHODS, type=str.upper, default=None,
                   metavar="{" + ",".join(METHODS) + "}",
                   help="FE, MH or PETO (fixed effect) or a tau^2 estimator for random effects "
                        "(default REML)")
    p.add_argument("--test", choices=("z", "knha"), default=None,
                   help="Wald z (default) or Knapp-Hartung t for the pooled estimate")
    p.add_argument("--level", type=probability, default=0.95, metavar="P",
                   help="confidence level of the intervals, between 0 and 1 (default 0.95)")
    p.add_argument("--by", metavar="COLUMN", default=None,
                   help="subgroup column: per-level results and test for subgroup differences")
    p.add_argument("--missing-level", metavar="LABEL", default=None,
                   help="with --by: rows with an empty subgroup cell form the level LABEL "
                        "(default: an empty cell is an error)")
    p.add_argument("--preset", choices=("revman5", "revman_web"), default=None,
                   help="reproduce RevMan 5 (DL, z, RevMan's MH) or RevMan Web (REML, "
                        "Knapp-Hartung) defaults")
    p.add_argument("--log", action="store_true",
                   help="print ratio measures on the log scale (default: natural scale)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (analysis scale: log for ratio measures)")
    p.set_defaults(func=run)
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


from bayesmeta.cli import json_clean as _clean  # noqa: E402  (JSON: NaN/inf -> null)


def _identify(df, args):
    """The design's row-identity rules (bayesmeta.design.identify_rows): the same label twice
    with different data is two studies (relabelled, with a warning); identical rows are an
    error; with --by a label may recur in different levels."""
    from bayesmeta.design import identify_rows, label_text

    if "study" not in df.columns:
        return df
    by = args.by if args.by and args.by in df.columns else None
    # columns literally named time/subgroup identify rows too (as io.read_table always did)
    time = "time" if "time" in df.columns and by != "time" else None
    sub = by or ("subgroup" if "subgroup" in df.columns else None)
    tmp = pd.DataFrame({"__row": df.attrs.get("rows", list(range(2, len(df) + 2))),
                        "__study": [label_text(v) for v in df["study"]],
                        "__time": [label_text(v) for v in df[time]] if time else "",
                        "__outcome": "",
                        "__subgroup": [label_text(v) for v in df[sub]] if sub else ""})
    for c in df.columns:
        if c not in tmp.columns:
            tmp[c] = df[c].to_numpy()

    def say(msg):
        warnings.warn(f"{args.data}: {msg}", DataWarning, stacklevel=3)
    out = identify_rows(tmp, {"study": "study", "time": time, "subgroup": sub,
                              "outcome": None}, "arms", args.data, say)
    df = df.copy()
    df["study"] = out["__study"].to_numpy()
    return df


def _analyse(df, args, method, test):
    """Fit one table (all rows, or one subgroup). Returns a ClassicalResult."""
    from bayesmeta import classical as cl
    from bayesmeta.effect_sizes import escalc, revman5_options

    m = args.measure
    studies = [str(s) for s in df["study"]] if "study" in df.columns else None
    revman5 = args.preset == "revman5"
    binary = m in ("OR", "RR", "RD")
    if method in ("MH", "PETO") or (revman5 and binary and method == "DL"):
        a, c = df["ai"].to_numpy(float), df["ci"].to_numpy(float)
        b = df["bi"].to_numpy(float) if "bi" in df.columns else df["n1i"].to_numpy(float) - a
        d = df["di"].to_numpy(float) if "di" in df.columns else df["n2i"].to_numpy(float) - c
        if method == "PETO":
            return cl.rma_peto(a, b, c, d, studies=studies, level=args.level)
        return cl.rma_mh(a, b, c, d, measure=m, studies=studies, preset=args.preset,
                         tau2_method="DL" if method == "DL" else None, level=args.level)
    opts = revman5_options(m) if revman5 else {}
    es = escalc(m, df, file=args.data, **opts)
    return cl.rma(es["yi"].to_numpy(), es["vi"].to_numpy(), studies=studies, method=method,
                  test=test, measure=m, preset=args.preset, level=args.level)


RATIO = ("OR", "RR", "PETO")


def _text(res, log: bool) -> str:
    """metafor-style printout; for a log-ratio scale (unless ``log``) the model results and the
    prediction interval are shown exponentiated, on the ratio scale a reader knows."""
    text = str(res)
    if log or res.scale not in ("logOR", "logRR"):
        return text
    ratio = res.scale[3:]
    lines = text.split("\n")
    head = next((i for i, ln in enumerate(lines) if ln.startswith("Model Results (")), None)
    e = math.exp

    def f4(x):
        return "NA" if x is None or not math.isfinite(x) else f"{e(x):.4f}"
    p = "NA" if not math.isfinite(res.p) else "<.0001" if res.p < 1e-4 else f"{res.p:.4f}"
    lev = f"{res.level:.0%}".replace(".0%", "%")
    block = [f"Model Results ({ratio}, natural scale = exp of the {res.scale} estimate; "
             "--log for the log scale):", "",
             f"{'estimate':>9} {'ci.lb':>8} {'ci.ub':>8} {'pval':>8}",
             f"{f4(res.estimate):>9} {f4(res.ci_low):>8} {f4(res.ci_high):>8} {p:>8}"]
    if head is None or len(lines) < head + 4:  # unknown layout: keep it, add the ratio block
        return text.rstrip("\n") + "\n\n" + "\n".join(block) + "\n"
    out = lines[:head] + block + lines[head + 4:]
    for i, ln in enumerate(out):
        if "prediction interval: [" in ln:
            tail = ln[ln.index("]") + 1:]
            out[i] = f"{lev} prediction interval ({ratio}): [{f4(res.pi_low)}, " \
                     f"{f4(res.pi_high)}]{tail}"
    return "\n".join(ln for ln in out
                     if not ln.startswith(f"Estimates on the {res.scale} scale"))


def run(args) -> int:
    from scipy import stats

    from bayesmeta.exceptions import DataError
    from bayesmeta.io import (check_role_values, read_table, suggest_column,
                              validate_measure_columns)

    m = args.measure
    method = args.method or ("PETO" if m == "PETO" else "DL" if args.preset == "revman5"
                             else "REML")
    test = args.test or ("knha" if args.preset == "revman_web" else "z")
    if method == "MH" and m not in ("OR", "RR", "RD"):
        return _fail(f"--method MH needs --measure OR, RR or RD, not {m}")
    if method == "PETO" and m not in ("OR", "PETO"):
        return _fail(f"--method PETO needs --measure OR or PETO, not {m}")
    if args.log and m not in RATIO:
        return _fail(f"--log applies to ratio measures ({', '.join(RATIO)}); {m} is already "
                     "on its natural scale")
    if method in ("MH", "PETO") and test == "knha":
        return _fail(f"--test knha is not available with --method {method}")
    if args.preset == "revman5":
        if method not in ("FE", "DL", "MH", "PETO"):
            return _fail(f"--preset revman5 offers FE, MH, PETO and DL only, not {method}")
        if test == "knha":
            return _fail("--preset revman5 uses Wald z tests; drop --test knha")
    text = (args.by,) if args.by else ()
    df = read_table(args.data, text=text + ("study",), unique=None)
    df = _identify(df, args)
    validate_measure_columns(df, "OR" if m == "PETO" else m, file=args.data)
    if args.by and args.by not in df.columns:
        cols = [str(c) for c in df.columns]
        sug = suggest_column(args.by, cols)
        raise DataError(f"--by column {args.by!r} not found; available: {', '.join(cols)}",
                        file=args.data, row=1, column=args.by,
                        fix=(f"Did you mean --by {sug}?" if sug else
                             "Give --by the header of the subgroup column (or add that "
                             "column to the file)."))
    if args.missing_level is not None and not args.by:
        return _fail("--missing-level applies to the --by column; add --by COLUMN")
    if args.by:
        df = check_role_values(
            df, [args.by], file=args.data, missing_level=args.missing_level,
            fix=f"Fill in the {args.by} of every row, remove the row, or name the level of "
                "such rows with --missing-level LABEL.")
    if args.by and "study" in df.columns:
        levels = df.groupby("study", sort=False)[args.by].nunique()
        rep = [str(s) for s, n in levels.items() if n > 1]
        if rep:
            warnings.warn(f"{len(rep)} stud{'y appears' if len(rep) == 1 else 'ies appear'} in "
                          f"several levels of {args.by!r} ({', '.join(rep[:8])}): the overall "
                          "estimate and the test for subgroup differences count them more "
                          "than once; use `bayesmeta bayes --model nested --time "
                          f"{args.by}` (or a spec) for an analysis that counts each study "
                          "once", DataWarning, stacklevel=2)
    if method in ("MH", "PETO") and args.preset == "revman_web":
        test = "z"
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        res = _analyse(df, args, method, test)
        out = res.to_dict()
        out["measure"] = args.measure
        text_out = [_text(res, args.log)]
        if args.by:
            g = df[args.by].astype(str)
            subs = {}
            for lev in dict.fromkeys(g):
                part = df[(g == lev).to_numpy()].reset_index(drop=True)
                subs[lev] = _analyse(part, args, method, test)
            # RevMan's test for subgroup differences: Q on the subgroup estimates with their
            # SEs (equals Q_total - sum Q_within for inverse-variance fixed effect)
            est = [r.estimate for r in subs.values()]
            w = [1 / r.se ** 2 for r in subs.values()]
            mbar = sum(wi * e for wi, e in zip(w, est)) / sum(w)
            q = sum(wi * (e - mbar) ** 2 for wi, e in zip(w, est))
            dfb = len(subs) - 1
            p = float(stats.chi2.sf(q, dfb)) if dfb > 0 else None
            out["subgroups"] = {lev: {**r.to_dict(), "measure": args.measure}
                                for lev, r in subs.items()}
            out["subgroup_test"] = {"q": q, "df": dfb, "p": p}
            for lev, r in subs.items():
                text_out.append(f"=== {args.by} = {lev} ===\n{_text(r, args.log)}")
            text_out.append(f"Test for subgroup differences: Chi^2 = {q:.2f}, df = {dfb}, "
                            f"P = {p if p is None else round(p, 4)}")
    if args.json:
        print(json.dumps(_clean(out)))
    else:
        print("\n".join(text_out))
    return 0
