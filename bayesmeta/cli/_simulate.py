"""``bayesmeta simulate``: coverage, width and bias of meta-analysis intervals by simulation."""

from __future__ import annotations

import json
import sys

from bayesmeta.cli._help import FORMATTER, epilog, nonnegative_int, positive_int

#: options that apply to one model only
_MODEL_OPTIONS = {"nnhm": (("scale", "--scale"), ("priors", "--priors")),
                  "nested": (("r_true", "--r-true"),)}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "simulate", help="operating characteristics (coverage/width/bias) by simulation",
        description="Simulate meta-analyses and report coverage, width and bias of their "
                    "intervals with Monte Carlo SEs. Model nnhm (default): normal-normal data, "
                    "unequal study sizes; DL/REML/PM (z, HKSJ) and exact-Bayes intervals. "
                    "Model nested: study x time x subgroup data from the Gaussian hierarchical "
                    "model; exact GHM (r 0.5 and 0) and REML (z, t) intervals of the subgroup "
                    "contrast per time and of the cells. Settings come from a simulation spec "
                    "([simulation] section) and/or the options (an option overrides the spec). "
                    "Resumable: finished chunks in --out are skipped.",
        epilog=epilog("bayesmeta simulate --n 2000 --k 2 3 5",
                      "bayesmeta simulate --n 20000 --scale logOR --workers 2 --out sim/ --json",
                      "bayesmeta simulate models/simulations/simulation_nested.toml "
                      "--workers 2 --out nsim/",
                      "bayesmeta simulate --model nested --n 100 --tau 0 0.5 1 --r-true 0.7",
                      notes=("List options (--k, --tau, --r-true, --scale, --priors) take "
                             "several values; given twice, their values are combined.",
                             "--scale and --priors apply to model nnhm only, --r-true to "
                             "model nested only; the other model rejects them.")),
        formatter_class=FORMATTER)
    p.add_argument("spec", nargs="?", default=None,
                   help="simulation spec (TOML with a [simulation] section); default: none "
                        "(the options and their defaults)")
    p.add_argument("--model", choices=["nnhm", "nested"], default=None,
                   help="what to simulate (default: the spec's [simulation] model, else nnhm)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="meta-analyses per scenario (default: the spec's n_per_cell; without a "
                        "spec 1000 for nnhm, 250 for nested)")
    p.add_argument("--k", type=positive_int, nargs="+", default=None,
                   help="numbers of studies (nnhm: 2 3 5 10 20; nested, per subgroup: 3)")
    p.add_argument("--tau", type=float, nargs="+", default=None,
                   help="true tau values (default: the scale's grid; nested 0 0.25 0.5 0.8 1)")
    p.add_argument("--r-true", type=float, nargs="+", default=None, dest="r_true",
                   help="nested: true correlation of a study's sampling errors across times "
                        "(0 0.7)")
    p.add_argument("--scale", nargs="+", default=None, choices=["logOR", "MD"],
                   help="nnhm: analysis scales (logOR MD)")
    p.add_argument("--priors", nargs="+", default=None,
                   help="nnhm: prior sets for exact Bayes (default: all bundled sets)")
    p.add_argument("--scheduler", default=None, help="existing Dask scheduler tcp://HOST:PORT")
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help="local worker processes (default: CPUs; 0 = in-process)")
    p.add_argument("--chunk-size", type=positive_int, default=None,
                   help="meta-analyses per chunk (nnhm 500, nested 50)")
    p.add_argument("--seed", type=nonnegative_int, default=None,
                   help="random seed (default: the spec's, else 20240601 for nnhm and "
                        "20240611 for nested); the same seed gives the same table")
    p.add_argument("--out", default=None, help="output folder (chunks, CSV, JSON, figure)")
    p.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


def config_from_args(args):
    """The simulation configuration of the parsed options (and spec, if given)."""
    import dataclasses

    from bayesmeta.exceptions import SpecError
    from bayesmeta.ghm_sim import NestedSimConfig
    from bayesmeta.simulate import SimulationConfig, config_from_spec

    if args.spec is not None:
        from bayesmeta.spec import load_spec

        spec = load_spec(args.spec)
        if not spec.is_simulation:
            raise SpecError(f"{args.spec} is not a simulation spec (it has no [simulation] "
                            "section)", file=str(args.spec),
                            fix="Give a spec with a [simulation] section, or none.")
        model = spec.simulation.model
        if args.model is not None and args.model != model:
            raise SpecError(f"--model {args.model} contradicts the spec's [simulation] model = "
                            f"{model!r}", file=str(args.spec), key="simulation.model",
                            fix="Drop --model, or change the spec.")
    else:
        spec, model = None, args.model or "nnhm"
    other = "nested" if model == "nnhm" else "nnhm"
    for dest, opt in _MODEL_OPTIONS[other]:
        if getattr(args, dest) is not None:
            how = ("set [simulation] model in the spec" if spec is not None
                   else f"give --model {other}")
            raise SpecError(f"{opt} does not apply to model {model!r}", key=opt,
                            fix=f"Drop {opt}, or {how}.")
    if spec is not None:
        cfg = config_from_spec(spec.simulation, spec.given.get("simulation", ()),
                               level=float(spec.report.ci_prob), n=args.n, seed=args.seed,
                               chunk_size=args.chunk_size)
    elif model == "nested":
        d = NestedSimConfig()
        cfg = NestedSimConfig(n=args.n or d.n, seed=d.seed if args.seed is None else args.seed,
                              chunk_size=args.chunk_size or d.chunk_size)
    else:
        d = SimulationConfig()
        cfg = SimulationConfig(n=args.n or d.n, seed=d.seed if args.seed is None else args.seed,
                               chunk_size=args.chunk_size or d.chunk_size)
    change = {}
    if args.k is not None:
        change["ks"] = tuple(args.k)
    if args.tau is not None:
        change["taus"] = tuple(args.tau)
    if model == "nested":
        if args.r_true is not None:
            change["r_trues"] = tuple(args.r_true)
    else:
        if args.scale is not None:
            change["scales"] = tuple(args.scale)
        if args.priors is not None:
            change["prior_sets"] = tuple(args.priors)
    return dataclasses.replace(cfg, **change) if change else cfg


def run(args) -> int:
    from bayesmeta.ghm_sim import NestedSimConfig
    from bayesmeta.simulate import simulate

    cfg = config_from_args(args)
    res = simulate(cfg, out=args.out, scheduler=args.scheduler, workers=args.workers,
                   quiet=args.quiet)
    print(f"simulate: {res.n_meta} meta-analyses ({res.n_run} this run) in {res.seconds:.1f} s "
          f"= {res.throughput:.2f}/s, {res.workers} worker(s), {res.mode}"
          + (f"; written to {res.out}" if res.out else ""), file=sys.stderr)
    if args.json:
        print(json.dumps(json.loads(res.table.to_json(orient="records")), indent=1))
    else:
        if isinstance(cfg, NestedSimConfig):
            cols = ["k", "tau", "r_true", "estimand", "method", "n", "coverage",
                    "coverage_mcse", "width", "bias", "bias_mcse"]
        else:
            cols = ["scale", "k", "tau", "method", "n", "coverage", "coverage_mcse", "width",
                    "bias", "bias_mcse"]
        print(res.table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0
