"""Anchors: the same analyses in the reference software, timed in the same benchmark run.

* R metafor ``rma()`` (REML) on BCG's log risk ratios: one ``Rscript`` process (start-up,
  ``library(metafor)``, ``escalc``, ``rma``, print) and ``rma()`` alone (median of 50 fits).
* R bayesmeta ``bayesmeta()`` on the same data when the package is installed (Debian does not
  package it; skipped with that note otherwise).
* brms for the nested model (tests/reference/brms_nested.R's formula and priors, sim6x3 table):
  first fit in a fresh R session (Stan compile + sampling) and a refit with new data in the
  same session (``update(..., newdata =)``, no recompile), 4 chains x 2000 draws after 1000
  warm-up, as bayesmeta's defaults.

Each anchor is skipped with a note when R or the package is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from latency import ROOT, measure, sim6x3_csv

_METAFOR = r"""
suppressPackageStartupMessages(library(metafor))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
dat <- escalc("RR", ai = ai, bi = bi, ci = ci, di = di, data = d)
res <- rma(yi, vi, data = dat, method = "REML")
print(res)
ts <- replicate(50, system.time(rma(yi, vi, data = dat, method = "REML"))[["elapsed"]])
cat(sprintf('{"rma_s": %.6g, "metafor": "%s", "R": "%s"}\n', median(ts),
            as.character(packageVersion("metafor")), getRversion()))
"""

_BAYESMETA = r"""
if (!requireNamespace("bayesmeta", quietly = TRUE)) { cat("MISSING\n"); quit(status = 0) }
suppressPackageStartupMessages({library(bayesmeta); library(metafor)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
dat <- escalc("RR", ai = ai, bi = bi, ci = ci, di = di, data = d)
t0 <- proc.time()[["elapsed"]]
fit <- bayesmeta(y = dat$yi, sigma = sqrt(dat$vi), mu.prior.mean = 0, mu.prior.sd = 4,
                 tau.prior = function(t) dhalfnormal(t, scale = 0.5))
el <- proc.time()[["elapsed"]] - t0
cat(sprintf('{"fit_s": %.6g, "bayesmeta": "%s"}\n', el, as.character(packageVersion("bayesmeta"))))
"""

_BRMS = r"""
suppressPackageStartupMessages({library(brms)})
if (!file.exists(rstan::rstan_options("boost_lib")) && dir.exists("/usr/include/boost"))
  rstan::rstan_options(boost_lib = "/usr/include")
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$time <- factor(d$time, levels = c(2, 4, 24)); d$study <- factor(d$study)
f <- bf(yi | se(sei, sigma = TRUE) ~ 1 + (1 | time) + (1 | study), sigma ~ 1 + (1 | time))
pr <- c(set_prior("normal(0, 10)", class = "Intercept"), set_prior("normal(0, 2)", class = "sd"),
        set_prior("normal(0, 1)", class = "Intercept", dpar = "sigma"),
        set_prior("normal(0, 0.5)", class = "sd", dpar = "sigma"))
t0 <- proc.time()[["elapsed"]]
fit <- brm(f, data = d, family = gaussian(), prior = pr, chains = 4, iter = 3000, warmup = 1000,
           cores = 2, seed = 1, control = list(adapt_delta = 0.99), refresh = 0, silent = 2)
first <- proc.time()[["elapsed"]] - t0
d2 <- d; d2$yi <- d2$yi + 0.1
t0 <- proc.time()[["elapsed"]]
fit2 <- update(fit, newdata = d2, recompile = FALSE, seed = 2, refresh = 0, silent = 2)
refit <- proc.time()[["elapsed"]] - t0
cat(sprintf('{"first_s": %.6g, "refit_s": %.6g, "brms": "%s"}\n', first, refit,
            as.character(packageVersion("brms"))))
"""


def _rscript(code: str, *args, timeout=1800) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(code)
    res = measure(["Rscript", f.name, *map(str, args)], timeout=timeout)
    Path(f.name).unlink()
    res["json"] = None
    for line in reversed(res["stdout"].splitlines()):
        if line.startswith("{"):
            res["json"] = json.loads(line)
            break
    res["missing"] = "MISSING" in res["stdout"]
    return res


def _r_has(pkg: str) -> bool:
    if shutil.which("Rscript") is None:
        return False
    p = subprocess.run(["Rscript", "-e", f"cat(requireNamespace('{pkg}', quietly=TRUE))"],
                       capture_output=True, text=True)
    return p.stdout.strip().endswith("TRUE")


_OURS_REFIT = r"""
import json, sys, time, warnings
import pandas as pd
from bayesmeta import mcmc
d = pd.read_csv(sys.argv[1])
t0 = time.perf_counter(); a = mcmc.fit_nested(d, measure="MD", warn=False)
first = time.perf_counter() - t0
d2 = d.assign(yi=d["yi"] + 0.1)
t0 = time.perf_counter(); b = mcmc.fit_nested(d2, measure="MD", seed=2, warn=False)
print(json.dumps({"first_s": first, "refit_s": time.perf_counter() - t0}))
"""


def anchors() -> dict:
    """{anchor: figures or a 'skipped' note}."""
    import sys

    bcg = ROOT / "data" / "bcg.csv"
    out = {}
    if shutil.which("Rscript") is None:
        return {k: {"skipped": "R (Rscript) not on this machine"}
                for k in ("metafor", "bayesmeta", "brms")}
    if _r_has("metafor"):
        r = _rscript(_METAFOR, bcg)
        out["metafor"] = ({"process_s": r["wall"], "process_cpu": r["cpu"], **r["json"]}
                          if r["json"] else {"skipped": "failed: " + r["stderr"][-200:]})
    else:
        out["metafor"] = {"skipped": "R package metafor not installed"}
    if _r_has("bayesmeta"):
        r = _rscript(_BAYESMETA, bcg)
        out["bayesmeta"] = ({"process_s": r["wall"], "process_cpu": r["cpu"], **r["json"]}
                            if r["json"] else {"skipped": "failed: " + r["stderr"][-200:]})
    else:
        out["bayesmeta"] = {"skipped": "R package bayesmeta not installed (not packaged in "
                                       "Debian: `apt-cache policy r-cran-bayesmeta` has no "
                                       "candidate; CRAN is not reachable here)"}
    with tempfile.TemporaryDirectory() as tmp:
        sim = sim6x3_csv(Path(tmp) / "sim6x3.csv")
        if _r_has("brms"):
            print("  anchors: brms (Stan compile, a few minutes)", file=sys.stderr, flush=True)
            r = _rscript(_BRMS, sim, timeout=3600)
            out["brms"] = ({"process_s": r["wall"], "process_cpu": r["cpu"], **r["json"]}
                           if r["json"] else {"skipped": "failed: " + r["stderr"][-300:]})
        else:
            out["brms"] = {"skipped": "R package brms not installed (apt-get install "
                                      "r-cran-brms)"}
        from latency import PY, cache_env
        with tempfile.TemporaryDirectory() as cache:
            r = measure([PY, "-c", _OURS_REFIT, str(sim)], cache_env(cache))
            r2 = measure([PY, "-c", _OURS_REFIT, str(sim)], cache_env(cache))
        out["ours_nested_in_session"] = {
            "cold": json.loads(r["stdout"].strip().splitlines()[-1]) if r["rc"] == 0 else None,
            "warm": json.loads(r2["stdout"].strip().splitlines()[-1]) if r2["rc"] == 0 else None}
    return out
