# Reference numbers for the generic pipeline's classical fits on user-shaped designs.
#
# Usage (from the repository root):  Rscript tests/reference/metafor_pipeline.R
# Needs: R >= 4, metafor, metadat, jsonlite (Debian: r-cran-metafor r-cran-metadat
# r-cran-jsonlite). Writes tests/reference/metafor_pipeline.json.
#
# Inputs are the committed CSVs in tests/data/:
#   yusuf1985_table6.csv  metadat::dat.yusuf1985, table 6 without "Snow 1" (no counts in
#                         metadat); two different trials labelled
#                         "Barber": metafor treats every row as a study)
#   design_binary.csv     cumulative deaths per arm, trial x week x disease
#   design_continuous.csv arm means/SDs/n, trial x week x disease
suppressPackageStartupMessages({library(metafor); library(jsonlite)})
if (!dir.exists("tests/data")) stop("run from the repository root")

num <- function(x) as.numeric(x)
fit_list <- function(res) list(estimate = num(coef(res))[1], se = num(res$se)[1],
                               ci_low = num(res$ci.lb)[1], ci_high = num(res$ci.ub)[1],
                               tau2 = num(res$tau2), k = res$k)
out <- list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
            metadat = as.character(packageVersion("metadat")))

# duplicate first-author labels: every row a study
y <- read.csv("tests/data/yusuf1985_table6.csv")
es <- escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = y)
out$yusuf_reml <- fit_list(rma(yi, vi, data = es, method = "REML"))
mh <- rma.mh(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = y)
out$yusuf_mh <- list(estimate = num(coef(mh)), se = num(mh$se), k = mh$k)

cells <- function(es, name) {
  res <- list()
  for (g in unique(es$disease)) for (w in unique(es$week)) {
    sub <- es[es$disease == g & es$week == w, ]
    if (nrow(sub) == 0) next
    res[[paste(g, w, sep = "|")]] <- fit_list(rma(yi, vi, data = sub, method = "REML"))
  }
  res
}
tests_fe <- function(es) {
  res <- list()
  for (w in unique(es$week)) {
    sub <- es[es$week == w, ]
    m <- rma(yi, vi, mods = ~ factor(disease), data = sub, method = "FE")
    res[[as.character(w)]] <- list(QM = num(m$QM), QMdf = num(m$QMdf[1]), QMp = num(m$QMp))
  }
  res
}
multilevel <- function(es) {
  m <- rma.mv(yi, vi, random = ~ 1 | trial / week, data = es, method = "REML")
  list(estimate = num(coef(m)), se = num(m$se), ci_low = num(m$ci.lb), ci_high = num(m$ci.ub),
       sigma2 = num(m$sigma2))
}

# classical twin of the nested model (bayesmeta.nested_part.twin): fixed cell means (disease x
# week), a trial intercept and a trial x week effect (CS), sampling errors of one trial's weeks
# within a disease correlated r = 0.5 (vcalc), REML, Wald z; and the equally weighted average of
# each disease's weeks as a linear combination of the cell means.
twin <- function(es) {
  es$cell <- factor(paste(es$disease, es$week, sep = "|"))
  es$row <- seq_len(nrow(es))
  V <- vcalc(vi, cluster = trial, subgroup = disease, obs = factor(week), rho = 0.5, data = es)
  # several optimisers, the fit with the highest restricted log-likelihood kept (nlminb stops
  # short of the optimum when a component is at its boundary 0)
  ctrls <- list(list(optimizer = "nlminb", rel.tol = 1e-11, iter.max = 10000, eval.max = 20000),
                list(optimizer = "optim", optmethod = "BFGS", reltol = 1e-15, maxit = 10000),
                list(optimizer = "optim", optmethod = "Nelder-Mead", reltol = 1e-16,
                     maxit = 100000))
  m <- NULL
  for (ct in ctrls) {
    f <- tryCatch(rma.mv(yi, V, mods = ~ 0 + cell, random = list(~ 1 | trial, ~ 1 | row),
                         data = es, method = "REML", control = ct), error = function(e) NULL)
    if (!is.null(f) && (is.null(m) || logLik(f) > logLik(m))) m <- f
  }
  cells <- sub("^cell", "", rownames(m$beta))
  out <- list(cells = list(), windows = list(), sigma2 = num(m$sigma2),
              logLik = num(logLik(m)))
  for (i in seq_along(cells)) {
    out$cells[[cells[i]]] <- list(estimate = num(m$beta[i]), se = num(m$se[i]),
                                  ci_low = num(m$ci.lb[i]), ci_high = num(m$ci.ub[i]))
  }
  for (g in unique(es$disease)) {
    L <- as.numeric(startsWith(cells, paste0(g, "|")))
    L <- L / sum(L)
    p <- predict(m, newmods = rbind(L))
    out$windows[[g]] <- list(estimate = num(p$pred), se = num(p$se), ci_low = num(p$ci.lb),
                             ci_high = num(p$ci.ub))
  }
  out
}

b <- read.csv("tests/data/design_binary.csv")
eb <- escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = b)
out$binary <- list(cells = cells(eb), tests_fe = tests_fe(eb), multilevel = multilevel(eb),
                   twin = twin(eb))
mhc <- list()
for (g in unique(b$disease)) for (w in unique(b$week)) {
  sub <- b[b$disease == g & b$week == w, ]
  m <- rma.mh(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = sub)
  mhc[[paste(g, w, sep = "|")]] <- list(estimate = num(coef(m)), se = num(m$se))
}
out$binary$mh <- mhc

cdat <- read.csv("tests/data/design_continuous.csv")
ec <- escalc("MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i,
             data = cdat)
out$continuous <- list(cells = cells(ec), tests_fe = tests_fe(ec), multilevel = multilevel(ec),
                       twin = twin(ec))

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/reference/metafor_pipeline.json")
cat("wrote tests/reference/metafor_pipeline.json\n")
