# Reference values from metafor for the classical twin of the Gaussian hierarchical model
# (bayesmeta.ghm_reml): rma.mv with fixed cell means (mods = ~ 0 + cell), a study intercept, a
# study x time random effect with struct CS / AR / CAR, and a sampling covariance V from vcalc.
#
# Run from the repository root:   Rscript tests/reference/metafor_rmamv_struct.R
# Writes tests/reference/metafor_rmamv_struct.json (numbers with 17 significant digits).
# CI has no R: the JSON is committed and tests/test_ghm_reml.py reads it.
#
# Datasets (each written into the JSON with the results):
#   meld2014  2014 Figure 3 arm data (2 studies x weeks 2, 4, 24), MD = m1i - m2i,
#             vi = sd1i^2/n1i + sd2i^2/n2i (data/meld_2014_fig3.csv)
#   sim       simulated with seed 1: 12 studies, subgroups A/B, times 1, 2, 4, 8 (2-4 per
#             study), study intercept SD 0.4, study x time AR(1) SD 0.6 rho 0.7, sampling SE
#             0.15-0.4 (a seed whose REML optima are interior for CS, AR and CAR)
#   bcg       dat.bcg log odds ratios (one cell, one row per study): the univariate special case
# V: vcalc(obs = time, rho = r) for the exchangeable form, vcalc(time1 = time, phi = r) for the
# decay form, cluster = study, subgroup = subgroup.
# Optimiser: nlminb, optim BFGS and optim Nelder-Mead with tight tolerances; the fit with the
# highest log-likelihood is kept (see fit_mv) and its control recorded per case.
suppressPackageStartupMessages({library(metafor); library(jsonlite)})

ctrls <- list(list(optimizer = "nlminb", rel.tol = 1e-11, iter.max = 10000, eval.max = 20000),
              list(optimizer = "optim", optmethod = "BFGS", reltol = 1e-15, maxit = 10000),
              list(optimizer = "optim", optmethod = "Nelder-Mead", reltol = 1e-16,
                   maxit = 100000))

num <- function(x) if (is.null(x) || length(x) == 0) NA_real_ else as.numeric(x)

# every optimiser in ctrls, keeping the fit with the highest log-likelihood (on flat
# likelihoods nlminb and BFGS stop ~1e-11 below the optimum, and nlminb reports "false
# convergence" when a component goes to its boundary at 0, where metafor's log-variance
# parameter diverges; Nelder-Mead with reltol 1e-16 then gets closest)
fit_mv <- function(d, V, random, struct, method, test) {
  best <- NULL
  for (ct in ctrls) {
    f <- tryCatch(
      if (is.null(struct)) {
        rma.mv(d$yi, V, mods = ~ 0 + cell, random = random, data = d, method = method,
               test = test, control = ct)
      } else {
        rma.mv(d$yi, V, mods = ~ 0 + cell, random = random, struct = struct, data = d,
               method = method, test = test, control = ct)
      }, error = function(e) NULL)
    if (!is.null(f) && (is.null(best) || logLik(f) > logLik(best))) {
      f$used_control <- ct
      best <- f
    }
  }
  if (is.null(best)) stop("no optimiser converged")
  best
}

# ---- data ----------------------------------------------------------------------------------
m <- read.csv("data/meld_2014_fig3.csv")
meld <- data.frame(study = m$study, subgroup = "all", time = m$time,
                   yi = m$m1i - m$m2i, vi = m$sd1i^2 / m$n1i + m$sd2i^2 / m$n2i)

set.seed(1)
times <- c(1, 2, 4, 8)
rows <- list()
for (j in 1:12) {
  g <- if (j <= 6) "A" else "B"
  u <- rnorm(1, 0, 0.4)
  obs <- sort(sample(times, sample(2:4, 1)))
  e <- as.numeric(arima.sim(list(ar = 0.7), n = 4, sd = 0.6 * sqrt(1 - 0.49)))
  names(e) <- times
  for (t in obs) {
    se <- runif(1, 0.15, 0.4)
    mu <- if (g == "A") -1 + 0.1 * t else -0.5
    rows[[length(rows) + 1]] <- data.frame(study = paste0("s", j), subgroup = g, time = t,
                                           yi = mu + u + e[as.character(t)] + rnorm(1, 0, se),
                                           vi = se^2)
  }
}
sim <- do.call(rbind, rows)

b <- dat.bcg
bcg <- data.frame(study = paste(b$author, b$year), subgroup = "all", time = 1,
                  yi = log(b$tpos * b$cneg / (b$tneg * b$cpos)),
                  vi = 1 / b$tpos + 1 / b$tneg + 1 / b$cpos + 1 / b$cneg)

# ---- fits ----------------------------------------------------------------------------------
prep <- function(d) {
  d$cell <- factor(paste(d$subgroup, d$time, sep = "_"))
  d$row <- seq_len(nrow(d))
  d$sid <- paste(d$study, d$subgroup, sep = "|")
  d$tfac <- factor(d$time)
  d
}

vmat <- function(d, form, r) {
  if (form == "exchangeable") {
    vcalc(vi, cluster = study, subgroup = subgroup, obs = tfac, rho = r, data = d)
  } else {
    vcalc(vi, cluster = study, subgroup = subgroup, time1 = time, phi = r, data = d)
  }
}

out_fit <- function(f, d) {
  cf <- coef(summary(f))
  list(cells = sub("^cell", "", rownames(cf)), beta = num(cf$estimate), se = num(cf$se),
       ci_lb = num(cf$ci.lb), ci_ub = num(cf$ci.ub), pval = num(cf$pval),
       sigma2 = num(f$sigma2), tau2 = num(f$tau2), rho = num(f$rho),
       logLik = num(logLik(f)), k = f$k, p = f$p, test = f$test, ddf = num(f$ddf))
}

cases <- list()
add <- function(name, data, form, r, struct, method, test = "z", param = "sigma") {
  d <- prep(data)
  V <- vmat(d, form, r)
  if (struct == "CS" && param == "sigma") {
    f <- fit_mv(d, V, list(~ 1 | study, ~ 1 | row), NULL, method, test)
  } else if (struct == "CS") {
    f <- fit_mv(d, V, ~ tfac | sid, "CS", method, test)
  } else {
    f <- fit_mv(d, V, list(~ 1 | study, ~ time | sid), struct, method, test)
  }
  cases[[name]] <<- list(data = data, correlation = form, r = r, struct = struct,
                         method = method, test = test, param = param,
                         control = f$used_control, fit = out_fit(f, d))
}

for (meth in c("REML", "ML")) {
  for (st in c("CS", "AR", "CAR")) {
    add(paste("sim", st, meth, sep = "_"), sim, "exchangeable", 0.5, st, meth)
  }
  add(paste("sim_CS_decay", meth, sep = "_"), sim, "decay", 0.8, "CS", meth)
  add(paste("sim_AR_decay", meth, sep = "_"), sim, "decay", 0.8, "AR", meth)
  add(paste("meld2014_CS", meth, sep = "_"), meld, "exchangeable", 0.5, "CS", meth)
}
add("sim_CS_REML_t", sim, "exchangeable", 0.5, "CS", "REML", test = "t")
add("sim_AR_REML_t", sim, "exchangeable", 0.5, "AR", "REML", test = "t")
# metafor's (tau2, rho) form of CS: random = ~ time | study (each study is in one subgroup)
add("sim_CSrho_REML", sim, "exchangeable", 0.5, "CS", "REML", param = "rho")

# univariate special case: one cell, each study one row (no study intercept), KNHA and z
ub <- rma(yi, vi, data = bcg, method = "REML", test = "knha")
uz <- rma(yi, vi, data = bcg, method = "REML", test = "z")
univ <- list(data = bcg,
             knha = list(beta = num(ub$beta), se = num(ub$se), ci_lb = num(ub$ci.lb),
                         ci_ub = num(ub$ci.ub), pval = num(ub$pval), tau2 = num(ub$tau2)),
             z = list(beta = num(uz$beta), se = num(uz$se), ci_lb = num(uz$ci.lb),
                      ci_ub = num(uz$ci.ub), pval = num(uz$pval), tau2 = num(uz$tau2)))

out <- list(
  meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
              jsonlite = as.character(packageVersion("jsonlite")),
              controls = ctrls, script = "tests/reference/metafor_rmamv_struct.R",
              created = format(Sys.time(), "%Y-%m-%d")),
  cases = cases, univariate = univ)

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
           "tests/reference/metafor_rmamv_struct.json")
cat("wrote tests/reference/metafor_rmamv_struct.json\n")
