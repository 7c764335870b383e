"""``bayesmeta bayes DATA.csv --measure M [...]``: Bayesian random-effects meta-analysis (NNHM).

Scripting contract (issue 3)::

    bayesmeta bayes DATA.csv --measure {MD,SMD,OR,RR,RD,PETO,MC,GEN}
        [--tau-prior halfnormal:S|halfcauchy:S|halfstudentt:NU:S|uniform:A:B|
                     lognormal-tau2:M:S|logt-tau2:NU:M:S|exponential:R|
                     turner2015-all|turner2015-mortality-pharma|rhodes2015-smd]
        [--mu-prior normal:M:S|flat] [--engine exact|mcmc] [--seed N] [--level P] [--json]

Input columns are those of ``bayesmeta classical`` (metafor names). Without ``--tau-prior`` the
weakly informative default of :func:`bayesmeta.priors.default_tau_prior` is used (HalfNormal(0.5)
for log ratios and SMD; a scale-aware half-normal for raw mean differences) and the output says
which prior and why. Without ``--mu-prior``: :func:`bayesmeta.priors.default_mu_prior`.

``--json`` prints ``engine, k, measure, mu, tau, theta_new`` (each ``{mean, sd, median, q025,
q975}``), ``p_mu_negative``, ``log_evidence`` (exact engine; null with a flat mu prior),
``diagnostics`` (mcmc engine: ``{r_hat_max, ess_bulk_min, divergences}``), plus ``mu_prior``,
``tau_prior`` and ``prior_note``. Bad input exits with code 2.
"""

from __future__ import annotations

import json
import warnings

from bayesmeta.effect_sizes import MEASURES  # noqa: E402  (one list of measures)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bayes", help="Bayesian random-effects meta-analysis (exact quadrature or MCMC)",
        description=__doc__.split("\n\n")[0])
    p.add_argument("data", metavar="DATA.csv", help="one row per study (metafor column names)")
    p.add_argument("--measure", required=True, choices=MEASURES, type=str.upper)
    p.add_argument("--tau-prior", default=None, metavar="SPEC",
                   help="prior of tau, e.g. halfnormal:0.5 or turner2015-all "
                        "(default: measure-dependent, see --help of priors)")
    p.add_argument("--mu-prior", default=None, metavar="SPEC",
                   help="prior of mu: normal:MEAN:SD or flat (default: unit-information normal)")
    p.add_argument("--engine", choices=("exact", "mcmc"), default="exact")
    p.add_argument("--seed", type=int, default=None, help="random seed (mcmc engine)")
    p.add_argument("--level", type=float, default=0.95,
                   help="credible-interval probability for the printed table (default 0.95)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


from bayesmeta.cli import json_clean as _clean  # noqa: E402  (JSON: NaN/inf -> null)


def _effects(args):
    """Read the CSV and return (yi, sei, labels, es-frame) with rows lacking yi/vi dropped."""
    import numpy as np

    from bayesmeta.effect_sizes import escalc
    from bayesmeta.exceptions import DataError, DataWarning
    from bayesmeta.io import read_table, validate_measure_columns

    df = read_table(args.data, text=("study",))
    validate_measure_columns(df, "OR" if args.measure == "PETO" else args.measure,
                             file=args.data)
    es = escalc(args.measure, df, file=args.data)
    labels = ([str(s) for s in es["study"]] if "study" in es.columns
              else [f"study {i + 1}" for i in range(len(es))])
    yi, vi = es["yi"].to_numpy(float), es["vi"].to_numpy(float)
    ok = np.isfinite(yi) & np.isfinite(vi)
    if not ok.all():
        dropped = [lab for lab, g in zip(labels, ok) if not g]
        warnings.warn(f"{len(dropped)} stud{'y' if len(dropped) == 1 else 'ies'} without an "
                      f"effect size left out of the Bayesian analysis: {', '.join(dropped)}",
                      DataWarning, stacklevel=2)
        es = es[ok].reset_index(drop=True)
        labels = [lab for lab, g in zip(labels, ok) if g]
        yi, vi = yi[ok], vi[ok]
    if yi.size == 0:
        raise DataError("no study has an effect size", file=args.data)
    return yi, np.sqrt(vi), labels, es


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


def run(args) -> int:
    from bayesmeta.exceptions import SpecError

    if not (0 < args.level < 1):
        raise SpecError(f"--level must be in (0, 1), got {args.level}")
    yi, sei, labels, es = _effects(args)
    mu_prior, tau_prior, note = _priors(args, es)
    if args.engine == "exact":
        from bayesmeta.exact import fit_exact
        res = fit_exact(yi, sei, tau_prior=tau_prior, mu_prior=mu_prior, labels=labels,
                        level=args.level, measure=args.measure, prior_note=note)
        if args.json:
            out = res.to_dict()
            if args.level != 0.95:  # JSON contract: q025/q975 are always the 95% interval
                for p in ("mu", "tau", "theta_new"):
                    out[p]["q025"], out[p]["q975"] = res.interval(p, 0.95)
                out.pop("note", None)
            print(json.dumps(_clean(out)))
        else:
            print(res)
        return 0
    return _run_mcmc(args, yi, sei, labels, mu_prior, tau_prior, note)


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
    print(json.dumps(_clean(out)))
    return 0
