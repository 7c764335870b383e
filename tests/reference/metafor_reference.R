# Reference values from metafor for bayesmeta's classical engine.
#
# Run from the repository root:   Rscript tests/reference/metafor_reference.R
# Writes tests/reference/metafor_reference.json (numbers with 17 significant digits).
# CI has no R: the JSON is committed and tests/test_metafor_reference.py reads it.
#
# Iterative estimators are run with tight controls (threshold/tol 1e-12) so the reference
# is the converged root, not metafor's default stopping point (threshold 1e-5); the controls
# are recorded in the JSON.
suppressPackageStartupMessages({library(metafor); library(jsonlite)})

ctrl <- list(threshold = 1e-12, tol = 1e-12, maxiter = 10000)
ci_ctrl <- list(tol = 1e-12, maxiter = 10000, tau2.max = 1e6)  # default tau2.max = 100 truncates k = 2
methods <- c("FE", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
tests <- c("z", "knha", "adhoc")

num <- function(x) if (is.null(x) || length(x) == 0) NA_real_ else as.numeric(x)

# ---- datasets (yi, vi) -----------------------------------------------------------------
bcg <- escalc("RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg,
              slab = paste(author, year))
meld <- read.csv("data/meld_2014_fig3.csv", check.names = FALSE)
meld_md <- escalc("MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i,
                  data = meld)
meld2 <- meld_md[meld_md$time == 2, ]
nw <- dat.nielweise2007
nw_or <- escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw)
homog <- data.frame(yi = c(0.10, 0.12, 0.08, 0.11, 0.09, 0.13),
                    vi = c(0.010, 0.020, 0.015, 0.010, 0.030, 0.025))
extreme <- data.frame(yi = c(0.10, 0.50, -0.20, 0.30, 0.05),
                      vi = c(1e-4, 1.0, 100.0, 0.5, 0.02))   # variance ratio 1e6

datasets <- list(
  bcg = list(yi = as.numeric(bcg$yi), vi = as.numeric(bcg$vi), study = attr(bcg$yi, "slab"),
             measure = "RR", note = "dat.bcg, log risk ratio (Colditz 1994)"),
  homog = list(yi = homog$yi, vi = homog$vi, study = paste("s", 1:6), measure = "GEN",
               note = "constructed, Q < df (DL tau^2 = 0)"),
  meld2 = list(yi = as.numeric(meld2$yi), vi = as.numeric(meld2$vi), study = meld2$study,
               measure = "MD", note = "k = 2: MELD change, 2 wk, 2014 Figure 3 arm data"),
  sparse = list(yi = as.numeric(nw_or$yi), vi = as.numeric(nw_or$vi),
                study = paste(nw$author, nw$year), measure = "OR",
                note = "dat.nielweise2007 log OR, escalc default add=1/2 to='only0' (zero and double-zero cells)"),
  extreme = list(yi = extreme$yi, vi = extreme$vi, study = paste("s", 1:5), measure = "GEN",
                 note = "constructed, variance ratio 1e6")
)

fit_one <- function(d, m, t) {
  res <- try(rma(d$yi, d$vi, method = m, test = t, control = ctrl), silent = TRUE)
  if (inherits(res, "try-error")) return(list(error = as.character(res)))
  out <- list(estimate = num(res$beta), se = num(res$se), statistic = num(res$zval),
              p = num(res$pval), ci_low = num(res$ci.lb), ci_high = num(res$ci.ub),
              df = if (t == "z") NA_real_ else num(res$ddf),
              tau2 = num(res$tau2), se_tau2 = num(res$se.tau2), i2 = num(res$I2),
              h2 = num(res$H2), q = num(res$QE), q_p = num(res$QEp), k = res$k,
              weights = as.numeric(weights(res)))
  if (m != "FE") {
    pr <- predict(res)
    out$pi_low <- num(pr$pi.lb); out$pi_high <- num(pr$pi.ub)
    if (t == "z") {
      ci <- try(confint(res, control = ci_ctrl), silent = TRUE)
      if (!inherits(ci, "try-error")) {
        r <- ci$random
        out$tau2_ci <- as.numeric(r["tau^2", c("ci.lb", "ci.ub")])
        out$tau_ci <- as.numeric(r["tau", c("ci.lb", "ci.ub")])
        out$i2_ci <- as.numeric(r["I^2(%)", c("ci.lb", "ci.ub")])
        out$h2_ci <- as.numeric(r["H^2", c("ci.lb", "ci.ub")])
      }
    }
  }
  out
}

rma_grid <- list()
for (dn in names(datasets)) for (m in methods) for (t in tests)
  rma_grid[[paste(dn, m, t, sep = "|")]] <- fit_one(datasets[[dn]], m, t)

# ---- Mantel-Haenszel and Peto ------------------------------------------------------------
mh_fit <- function(ai, bi, ci, di, measure) {
  r <- rma.mh(ai = ai, bi = bi, ci = ci, di = di, measure = measure)
  list(estimate = num(r$beta), se = num(r$se), statistic = num(r$zval), p = num(r$pval),
       ci_low = num(r$ci.lb), ci_high = num(r$ci.ub), q = num(r$QE), q_p = num(r$QEp),
       i2 = num(r$I2), h2 = num(r$H2), k = r$k, k_yi = r$k.yi,
       cmh = num(r$MH), cmh_p = num(r$MHp))
}
peto_fit <- function(ai, bi, ci, di) {
  r <- rma.peto(ai = ai, bi = bi, ci = ci, di = di)
  list(estimate = num(r$beta), se = num(r$se), statistic = num(r$zval), p = num(r$pval),
       ci_low = num(r$ci.lb), ci_high = num(r$ci.ub), q = num(r$QE), q_p = num(r$QEp),
       i2 = num(r$I2), h2 = num(r$H2), k = r$k)
}
tables <- list(
  sparse = list(ai = nw$ai, bi = nw$n1i - nw$ai, ci = nw$ci, di = nw$n2i - nw$ci,
                study = paste(nw$author, nw$year)),
  bcg = list(ai = dat.bcg$tpos, bi = dat.bcg$tneg, ci = dat.bcg$cpos, di = dat.bcg$cneg,
             study = paste(dat.bcg$author, dat.bcg$year)))
mh <- list(); peto <- list()
for (tn in names(tables)) {
  tb <- tables[[tn]]
  for (ms in c("OR", "RR", "RD")) mh[[paste(tn, ms, sep = "|")]] <- mh_fit(tb$ai, tb$bi, tb$ci, tb$di, ms)
  peto[[tn]] <- peto_fit(tb$ai, tb$bi, tb$ci, tb$di)
}

# ---- escalc ------------------------------------------------------------------------------
esc <- function(e) list(yi = as.numeric(e$yi), vi = as.numeric(e$vi))
escalc_ref <- list(
  MD = esc(meld_md),
  SMD = esc(escalc("SMD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i,
                   data = meld)),
  MC = esc(escalc("MN", mi = m1i, sdi = sd1i, ni = n1i, data = meld)),
  OR = esc(nw_or),
  RR = esc(escalc("RR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw)),
  RD = esc(escalc("RD", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw)),
  PETO = esc(escalc("PETO", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw)),
  OR_drop00 = esc(escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw, drop00 = TRUE)),
  OR_all = esc(escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw, to = "all")),
  OR_none = esc(escalc("OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = nw, to = "none")),
  RR_bcg = esc(bcg)
)

# ---- subgroups: per-level fits and meta-regression QM ---------------------------------------
sub_sets <- list(
  bcg_alloc = list(yi = as.numeric(bcg$yi), vi = as.numeric(bcg$vi), g = as.character(dat.bcg$alloc)),
  meld_time = list(yi = as.numeric(meld_md$yi), vi = as.numeric(meld_md$vi), g = as.character(meld_md$time)))
subgroups <- list()
for (sn in names(sub_sets)) {
  s <- sub_sets[[sn]]
  levs <- unique(s$g)
  for (m in c("FE", "DL", "REML")) for (t in c("z", "knha")) {
    per <- lapply(levs, function(l) {
      r <- rma(s$yi[s$g == l], s$vi[s$g == l], method = m, test = t, control = ctrl)
      list(level = l, estimate = num(r$beta), se = num(r$se), tau2 = num(r$tau2), q = num(r$QE))
    })
    est <- sapply(per, `[[`, "estimate"); se <- sapply(per, `[[`, "se")
    w <- 1 / se^2
    qb <- sum(w * (est - sum(w * est) / sum(w))^2)
    mr <- rma(s$yi, s$vi, mods = ~ factor(s$g, levels = levs), method = m, test = t, control = ctrl)
    subgroups[[paste(sn, m, t, sep = "|")]] <- list(
      levels = levs, per_level = per, q_between = qb, q_between_df = length(levs) - 1,
      q_between_p = pchisq(qb, length(levs) - 1, lower.tail = FALSE),
      qm = num(mr$QM), qm_p = num(mr$QMp), qm_df = num(mr$QMdf[1]), qm_df2 = num(mr$QMdf[2]),
      mods_tau2 = num(mr$tau2))
  }
}
subgroup_data <- lapply(sub_sets, function(s) list(yi = s$yi, vi = s$vi, g = s$g))

# ---- two-level model on the MELD arm data (all 3 weeks) -----------------------------------
mv <- list()
for (m in c("REML", "ML")) {
  r <- rma.mv(yi, vi, random = ~ 1 | study/time, data = meld_md, method = m,
              control = list(optimizer = "optim", optmethod = "Nelder-Mead", reltol = 1e-15,
                              maxit = 10000))  # nlminb stops ~1e-5 early on this flat surface
  mv[[m]] <- list(estimate = num(r$beta), se = num(r$se), statistic = num(r$zval),
                  p = num(r$pval), ci_low = num(r$ci.lb), ci_high = num(r$ci.ub),
                  sigma2 = as.numeric(r$sigma2), q = num(r$QE), q_p = num(r$QEp),
                  loglik = num(logLik(r)))
}
mv_data <- list(yi = as.numeric(meld_md$yi), vi = as.numeric(meld_md$vi),
                study = meld_md$study, time = meld_md$time)

out <- list(
  meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
              metadat = as.character(packageVersion("metadat")),
              jsonlite = as.character(packageVersion("jsonlite")),
              control = ctrl, confint_control = ci_ctrl,
              script = "tests/reference/metafor_reference.R", created = format(Sys.time(), "%Y-%m-%d")),
  grid = list(datasets = names(datasets), methods = methods, tests = tests),
  datasets = datasets, rma = rma_grid, mh = mh, peto = peto, tables = tables,
  escalc = escalc_ref, subgroups = subgroups, subgroup_data = subgroup_data,
  multilevel = mv, multilevel_data = mv_data)

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
           "tests/reference/metafor_reference.json")
cat("wrote tests/reference/metafor_reference.json\n")
