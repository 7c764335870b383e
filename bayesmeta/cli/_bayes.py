"""``bayesmeta bayes DATA.csv --measure M [...]``: Bayesian meta-analysis of a table.

Scripting contract::

    bayesmeta bayes DATA.csv --measure {MD,SMD,OR,RR,RD,PETO,MC,GEN}
        [--model {nnhm,nested,binomial-normal,survival-published,survival-counts}]
        [--study COL] [--time COL] [--subgroup COL] [--outcome COL] [--contrast A:B]
        [--tau-prior SPEC] [--mu-prior SPEC] [--engine exact|mcmc] [--level P] [--seed N]
        [--direction lower_is_better|higher_is_better] [--threshold T ...] [--json]

Input columns use metafor's names (see ``bayesmeta classical --help``). With ``--time`` /
``--subgroup`` the models are fitted per cell (nnhm, binomial-normal) or across cells
(nested: cells within subgroups within the mean, a study's rows sharing a study effect); a
study label links its rows across time points. ``--json`` prints one object whose key
``rows`` lists the results table (the columns of ``results.csv``; a nested cell is a row with
parameter ``mu`` and ``subgroup``/``time`` set, a contrast a row with parameter ``contrast``,
``time`` set and ``subgroup`` "A - B"), plus ``warnings``. For a single NNHM without time or
subgroup the object also keeps ``engine, k, measure, mu, tau, theta_new`` (each ``{mean, sd,
median, q025, q975}``, always 95%), ``p_mu_negative``, ``log_evidence``, ``diagnostics``,
``mu_prior``, ``tau_prior``, ``prior_note``. Bad input exits with code 2.
"""

from __future__ import annotations

import json
import sys
import warnings

from bayesmeta.effect_sizes import MEASURES  # noqa: E402  (one list of measures)


def add_parser(subparsers):
    from bayesmeta.registry import BAYES_MODELS

    p = subparsers.add_parser(
        "bayes", help="Bayesian meta-analysis (exact quadrature or MCMC)",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n"
               "  bayesmeta bayes bcg.csv --measure RR\n"
               "  bayesmeta bayes trials.csv --measure MD --model nested --study trial "
               "--time week --subgroup disease --contrast A:B --level 0.9 --json\n"
               "  bayesmeta bayes counts.csv --measure OR --model binomial-normal --seed 1",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA.csv", help="one row per study (metafor column names)")
    p.add_argument("--measure", required=True, choices=MEASURES, type=str.upper,
                   help="effect measure")
    p.add_argument("--model", default="nnhm", choices=BAYES_MODELS,
                   help="Bayesian model (default nnhm)")
    p.add_argument("--study", metavar="COL", default=None,
                   help="column naming the study (default: a column named 'study')")
    p.add_argument("--time", metavar="COL", default=None, help="follow-up time column")
    p.add_argument("--subgroup", metavar="COL", default=None, help="subgroup column")
    p.add_argument("--outcome", metavar="COL", default=None,
                   help="outcome column (one analysis per outcome)")
    p.add_argument("--contrast", metavar="A:B", default=None,
                   help="subgroup contrast A minus B per time point (default: the first two "
                        "subgroups)")
    p.add_argument("--tau-prior", default=None, metavar="SPEC",
                   help="prior of tau, e.g. halfnormal:0.5, halfcauchy:1, turner2015-all "
                        "(default: by measure; scale-aware half-normal for MD)")
    p.add_argument("--mu-prior", default=None, metavar="SPEC",
                   help="prior of mu: normal:MEAN:SD or flat (default: unit-information normal)")
    p.add_argument("--engine", choices=("exact", "mcmc"), default=None,
                   help="exact quadrature where the model has it (default), or mcmc")
    p.add_argument("--time-structure", choices=("exchangeable", "ar1", "car"), default=None,
                   help="nested: how cells vary over time (default exchangeable)")
    p.add_argument("--subgroup-effect", choices=("fixed", "random"), default=None,
                   help="nested: subgroup means fixed (default, contrast prior stated) or random")
    p.add_argument("--within-r", default=None, metavar="R",
                   help="nested: correlation of one study's sampling errors across times: a "
                        "number in [0, 1), 'uniform' or beta:A:B (default 0.5, stated)")
    p.add_argument("--direction", choices=("lower_is_better", "higher_is_better"),
                   default=None, help="which sign of the effect is a benefit "
                                      "(default lower_is_better)")
    p.add_argument("--threshold", type=float, action="append", default=None, metavar="T",
                   help="clinically relevant threshold on the natural scale (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (mcmc engine)")
    p.add_argument("--level", type=float, default=0.95,
                   help="interval probability of the printed results (default 0.95)")
    p.add_argument("--log", action="store_true",
                   help="ratio measures: print only the log scale (default: the ratio too)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (analysis scale: log for ratio measures)")
    p.set_defaults(func=run)
    return p


from bayesmeta.cli import json_clean as _clean  # noqa: E402  (JSON: NaN/inf -> null)


def _effects(args):
    """The table as a design (identity rules, effect sizes, rows without one dropped with a
    warning): (yi, sei, labels, rows)."""
    import numpy as np

    from bayesmeta.design import Design

    d = Design.from_frame(args.data, args.measure, study=args.study, file=args.data)
    r = d.rows
    return (r["yi"].to_numpy(float), np.sqrt(r["vi"].to_numpy(float)), r["study"].tolist(), r)


def _priors(args, es):
    from bayesmeta.priors import default_mu_prior, default_tau_prior, parse_prior

    from bayesmeta.exceptions import SpecError

    def parse(option, text, kind):
        try:
            return parse_prior(text, kind=kind)
        except SpecError as err:  # name the option the user typed, keep the message and fix
            raise SpecError(f"{option} {text!r}: {err}") from err

    if args.tau_prior:
        tau_prior = parse("--tau-prior", args.tau_prior, "tau")
        note = f"tau prior given on the command line ({tau_prior.describe()})"
    else:
        tau_prior, note = default_tau_prior(args.measure, es)
        note = "default: " + note
    if args.mu_prior:
        mu_prior = parse("--mu-prior", args.mu_prior, "mu")
    else:
        mu_prior, _ = default_mu_prior(args.measure, es)
    return mu_prior, tau_prior, note


def _generic(args) -> bool:
    return (args.model != "nnhm" or any((args.time, args.subgroup, args.outcome,
                                         args.contrast, args.time_structure,
                                         args.subgroup_effect, args.within_r)))


def run(args) -> int:
    from bayesmeta.exceptions import SpecError

    if not (0 < args.level < 1):
        raise SpecError(f"--level must be in (0, 1), got {args.level}")
    if _generic(args):
        return _run_pipeline(args)
    yi, sei, labels, es = _effects(args)
    mu_prior, tau_prior, note = _priors(args, es)
    if (args.engine or "exact") == "exact":
        from bayesmeta.exact import fit_exact
        res = fit_exact(yi, sei, tau_prior=tau_prior, mu_prior=mu_prior, labels=labels,
                        level=args.level, measure=args.measure, prior_note=note)
        if args.json:
            out = res.to_dict()
            if args.level != 0.95:  # JSON contract: q025/q975 are always the 95% interval
                for p in ("mu", "tau", "theta_new"):
                    out[p]["q025"], out[p]["q975"] = res.interval(p, 0.95)
                out.pop("note", None)
            out["rows"] = _rows_exact(res, args)
            print(json.dumps(_clean(out)))
        else:
            print(res)
            _natural(args, {p: (res.summary(p)["median"], *res.interval(p, args.level))
                            for p in ("mu", "theta_new")})
        return 0
    return _run_mcmc(args, yi, sei, labels, mu_prior, tau_prior, note)


def _natural(args, rows: dict) -> None:
    """For a ratio measure (unless --log): the pooled ratio and the predictive ratio, as a
    person reads them (posterior median and equal-tailed interval, exponentiated)."""
    import math

    from bayesmeta.labels import EFFECT_NAMES
    from bayesmeta.vocab import is_ratio

    if args.log or not is_ratio(args.measure):
        return
    name = EFFECT_NAMES[args.measure]
    lvl = f"{100 * args.level:g}%"
    print(f"\nOn the {name} scale (exp of the log-scale posterior; median [{lvl} ETI]):")
    for p, (med, lo, hi) in rows.items():
        label = "pooled" if p == "mu" else "new study"
        print(f"  {label:>9} {name} {math.exp(med):.4f} [{math.exp(lo):.4f}, "
              f"{math.exp(hi):.4f}]")


def _rows_exact(res, args) -> list:
    from bayesmeta.fits import ExactFit
    from bayesmeta.vocab import scale_of

    f = ExactFit(model="nnhm", source="bayesian", method="exact-NNHM", measure=args.measure,
                 scale=scale_of(args.measure), result=res)
    return f.to_frame(args.level).to_dict("records")


def _run_pipeline(args) -> int:
    """Any model, any roles: the generic pipeline (bayesmeta.pipeline)."""
    from bayesmeta import pipeline
    from bayesmeta.exceptions import SpecError

    contrast = None
    if args.contrast:
        if args.contrast.count(":") != 1 or "" in args.contrast.split(":"):
            raise SpecError(f"--contrast {args.contrast!r}: give two subgroup levels as A:B")
        contrast = tuple(args.contrast.split(":"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        an = pipeline.analyze(
            args.data, measure=args.measure, study=args.study, time=args.time,
            subgroup=args.subgroup, outcome=args.outcome, models=[args.model],
            engine=args.engine, tau_prior=args.tau_prior, mu_prior=args.mu_prior,
            contrast=contrast, direction=args.direction,
            time_structure=args.time_structure, subgroup_effect=args.subgroup_effect,
            within_r=args.within_r,
            thresholds=list(args.threshold) if args.threshold else None,
            ci_prob=args.level, seed=args.seed, name="bayes", title="bayesmeta bayes")
    msgs = list(dict.fromkeys([str(w.message) for w in caught] + list(an.warnings)))
    if args.json:
        out = {"model": args.model, "measure": args.measure, "level": args.level,
               "k": an.design.k, "rows": an.to_frame(args.level).to_dict("records"),
               "warnings": msgs}
        print(json.dumps(_clean(out)))
    else:
        for m in msgs:
            print(f"warning: {m}", file=sys.stderr)
        an.warnings = []
        print(an)
    return 0


def _run_mcmc(args, yi, sei, labels, mu_prior, tau_prior, note) -> int:
    from bayesmeta.exceptions import EstimationError

    try:
        from bayesmeta.mcmc import fit_nnhm
    except ImportError as err:  # pragma: no cover - mcmc module is another owner's
        raise EstimationError(f"--engine mcmc is unavailable: bayesmeta.mcmc.fit_nnhm could not "
                              f"be imported ({err}); use --engine exact") from None
    kw = {} if args.seed is None else {"seed": args.seed}
    res = fit_nnhm(yi, sei, mu_prior=mu_prior, tau_prior=tau_prior, study=labels,
                   measure=args.measure, **kw)
    if not args.json:
        print(res)
        print(f"tau prior: {note}")
        import numpy as np
        a = (1 - args.level) / 2
        _natural(args, {p: (float(np.median(res.draws(p))),
                            *np.quantile(res.draws(p), [a, 1 - a])) for p in ("mu", "theta_new")})
        return 0
    summ = res.summary

    def d(label):
        s = summ.loc[label]
        lo = [c for c in summ.columns if c.endswith("_lb")][0]
        hi = [c for c in summ.columns if c.endswith("_ub")][0]
        return {"mean": float(s["mean"]), "sd": float(s["sd"]), "median": float(s["median"]),
                "q025": float(s[lo]), "q975": float(s[hi])}
    diag = res.diagnostics
    out = {"engine": "mcmc", "k": len(yi), "measure": args.measure,
           "mu": d("mu"), "tau": d("tau"), "theta_new": d("theta_new"),
           "p_mu_negative": res.prob("mu", below=0.0),
           "log_evidence": None,
           "diagnostics": {"r_hat_max": float(diag.r_hat_max),
                           "ess_bulk_min": float(diag.ess_bulk_min),
                           "divergences": int(diag.divergences)},
           "mu_prior": str(mu_prior), "tau_prior": str(tau_prior), "prior_note": note,
           "seed": res.settings.get("seed")}
    from bayesmeta.fits import DrawsFit
    from bayesmeta.vocab import scale_of

    f = DrawsFit(model="nnhm", source="bayesian", method=res.method, measure=args.measure,
                 scale=scale_of(args.measure), result=res)
    out["rows"] = f.to_frame(args.level).to_dict("records")
    print(json.dumps(_clean(out)))
    return 0
