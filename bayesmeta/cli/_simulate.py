"""``bayesmeta simulate``: coverage, width and bias of meta-analysis intervals by simulation."""

from __future__ import annotations

import json
import sys

from bayesmeta.cli._help import FORMATTER, epilog, nonnegative_int, positive_int


def add_parser(subparsers):
    p = subparsers.add_parser(
        "simulate", help="operating characteristics (coverage/width/bias) by simulation",
        description="Simulate meta-analyses (normal-normal model, unequal study sizes) and report "
                    "coverage, width and bias of DL/REML/PM (z, HKSJ) and exact-Bayes intervals "
                    "with Monte Carlo SEs. Resumable: finished chunks in --out are skipped.",
        epilog=epilog("bayesmeta simulate --n 2000 --k 2 3 5",
                      "bayesmeta simulate --n 20000 --scale logOR --workers 2 --out sim/ --json",
                      notes=("List options (--k, --tau, --scale, --priors) take several values; "
                             "given twice, their values are combined.",)),
        formatter_class=FORMATTER)
    p.add_argument("--n", type=positive_int, default=1000,
                   help="meta-analyses per scenario (1000)")
    p.add_argument("--k", type=positive_int, nargs="+", default=[2, 3, 5, 10, 20],
                   help="numbers of studies (2 3 5 10 20)")
    p.add_argument("--tau", type=float, nargs="+", default=None,
                   help="true tau values (default: the scale's grid)")
    p.add_argument("--scale", nargs="+", default=["logOR", "MD"], choices=["logOR", "MD"],
                   help="analysis scales (logOR MD)")
    p.add_argument("--priors", nargs="+", default=None,
                   help="prior sets for exact Bayes (default: all bundled sets)")
    p.add_argument("--scheduler", default=None, help="existing Dask scheduler tcp://HOST:PORT")
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help="local worker processes (default: CPUs; 0 = in-process)")
    p.add_argument("--chunk-size", type=positive_int, default=500,
                   help="meta-analyses per chunk (500)")
    p.add_argument("--seed", type=nonnegative_int, default=20240601,
                   help="random seed (20240601); the same seed gives the same table")
    p.add_argument("--out", default=None, help="output folder (chunks, CSV, JSON, figure)")
    p.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmeta.simulate import SimulationConfig, simulate

    cfg = SimulationConfig(n=args.n, ks=tuple(args.k), scales=tuple(args.scale),
                           taus=None if args.tau is None else tuple(args.tau),
                           prior_sets=None if args.priors is None else tuple(args.priors),
                           seed=args.seed, chunk_size=args.chunk_size)
    res = simulate(cfg, out=args.out, scheduler=args.scheduler, workers=args.workers,
                   quiet=args.quiet)
    print(f"simulate: {res.n_meta} meta-analyses ({res.n_run} this run) in {res.seconds:.1f} s "
          f"= {res.throughput:.0f}/s, {res.workers} worker(s), {res.mode}"
          + (f"; written to {res.out}" if res.out else ""), file=sys.stderr)
    if args.json:
        print(json.dumps(json.loads(res.table.to_json(orient="records")), indent=1))
    else:
        cols = ["scale", "k", "tau", "method", "n", "coverage", "coverage_mcse", "width",
                "bias", "bias_mcse"]
        print(res.table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0
