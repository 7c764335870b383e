# Reference numbers for bayesmeta.bias: regtest (Egger; model = "lm" and "rma"), ranktest (Begg),
# trimfill (L0/R0, side auto/left/right), leave1out, from R's metafor.
#
# Run from the repository root (needs R with metafor + metadat; CI does not):
#     Rscript tests/reference/metafor_bias.R
# Writes tests/reference/metafor_bias.json. Numbers printed with 17 significant digits (%.17g) via jsonlite (digits = I(17)).
suppressPackageStartupMessages({
  library(metafor)
  library(metadat)
  library(jsonlite)
})

num <- function(x) if (is.null(x)) NA_real_ else unname(as.numeric(x))

bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
hack <- dat.hackshaw1998
datasets <- list(
  bcg = list(yi = as.numeric(bcg$yi), vi = as.numeric(bcg$vi),
             study = paste(bcg$author, bcg$year), note = "dat.bcg, escalc(measure='RR') (log RR)"),
  hackshaw1998 = list(yi = as.numeric(hack$yi), vi = as.numeric(hack$vi),
                      study = paste(hack$author, hack$year),
                      note = "dat.hackshaw1998 (log OR, yi/vi as shipped in metadat)"),
  bcg_k3 = list(yi = as.numeric(bcg$yi[1:3]), vi = as.numeric(bcg$vi[1:3]),
                study = paste(bcg$author, bcg$year)[1:3], note = "first 3 rows of dat.bcg (log RR)"),
  # equal variances -> ties in vi -> ranktest falls back to the normal approximation
  ties = list(yi = c(0.10, 0.35, -0.20, 0.52, 0.05, 0.80, 0.41, 0.22),
              vi = c(0.04, 0.04, 0.09, 0.09, 0.01, 0.16, 0.04, 0.01),
              study = paste("S", 1:8), note = "made-up, tied vi (normal-approximation ranktest)")
)

methods <- c("FE", "DL", "REML")
# Iterative tau² (REML) is run to a tight threshold so that the reference is the converged optimum
# (metafor's default threshold 1e-5 on the Fisher-scoring step leaves tau² off by ~1e-6 absolute,
# more than the OPTIMIZER tolerance of the tests). leave1out/regtest inherit the model's control;
# trimfill is given it explicitly (passed through to every internal rma.uni fit).
ctrl <- list(threshold = 1e-12, maxiter = 10000, stepadj = 0.5)

out <- list(
  R_version = R.version.string,
  metafor_version = as.character(packageVersion("metafor")),
  metadat_version = as.character(packageVersion("metadat")),
  generated = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
  datasets = list()
)

for (nm in names(datasets)) {
  d <- datasets[[nm]]
  entry <- list(yi = d$yi, vi = d$vi, study = d$study, note = d$note,
                regtest = list(), ranktest = NULL, trimfill = list(), leave1out = list())

  # Egger, classic: weighted lm of yi on sei (weights 1/vi); t test of the sei coefficient,
  # which equals the intercept of the regression of yi/sei on 1/sei.
  rl <- regtest(d$yi, d$vi, model = "lm")
  entry$regtest[["lm"]] <- list(call = "regtest(yi, vi, model='lm')", zval = num(rl$zval),
                                pval = num(rl$pval), dfs = num(rl$dfs), est = num(rl$est),
                                ci_lb = num(rl$ci.lb), ci_ub = num(rl$ci.ub),
                                slope = num(coef(rl$fit)[2]), intercept = num(coef(rl$fit)[1]))
  if (length(d$yi) > 3) {
    for (m in methods) {
      for (tst in c("z", "knha")) {
        fit <- rma(d$yi, d$vi, method = m, test = tst, control = ctrl)
        r <- regtest(fit)
        entry$regtest[[paste0("rma_", m, "_", tst)]] <- list(
          call = sprintf("regtest(rma(yi, vi, method='%s', test='%s'))", m, tst),
          zval = num(r$zval), pval = num(r$pval), dfs = num(r$dfs), est = num(r$est),
          ci_lb = num(r$ci.lb), ci_ub = num(r$ci.ub), tau2 = num(r$fit$tau2),
          slope = num(r$fit$beta[2]), slope_se = num(r$fit$se[2]))
      }
    }
  }

  rk <- ranktest(d$yi, d$vi)
  entry$ranktest <- list(call = "ranktest(yi, vi)", tau = num(rk$tau), pval = num(rk$pval))

  for (m in methods) {
    fit <- rma(d$yi, d$vi, method = m, control = ctrl)
    for (est in c("L0", "R0")) {
      for (side in c("auto", "left", "right")) {
        tf <- if (side == "auto") trimfill(fit, estimator = est, control = ctrl)
              else trimfill(fit, estimator = est, side = side, control = ctrl)
        filled <- tf$fill
        entry$trimfill[[paste(m, est, side, sep = "_")]] <- list(
          call = sprintf("trimfill(rma(yi, vi, method='%s'), estimator='%s'%s)", m, est,
                         if (side == "auto") "" else sprintf(", side='%s'", side)),
          side = tf$side, k0 = num(tf$k0), se_k0 = num(tf$se.k0), p_k0 = num(tf$p.k0),
          estimate = num(tf$beta), se = num(tf$se), ci_lb = num(tf$ci.lb), ci_ub = num(tf$ci.ub),
          zval = num(tf$zval), pval = num(tf$pval), tau2 = num(tf$tau2),
          k = num(tf$k), fill_yi = num(tf$yi[filled]), fill_vi = num(tf$vi[filled]))
      }
    }
  }

  for (m in methods) {
    for (tst in c("z", "knha")) {
      fit <- rma(d$yi, d$vi, method = m, test = tst, control = ctrl)
      l1 <- leave1out(fit)
      stat <- if (tst == "z") l1$zval else l1$tval
      entry$leave1out[[paste0(m, "_", tst)]] <- list(
        call = sprintf("leave1out(rma(yi, vi, method='%s', test='%s'))", m, tst),
        estimate = num(l1$estimate), se = num(l1$se), stat = num(stat), pval = num(l1$pval),
        ci_lb = num(l1$ci.lb), ci_ub = num(l1$ci.ub), Q = num(l1$Q), Qp = num(l1$Qp),
        tau2 = if (m == "FE") rep(0, length(d$yi)) else num(l1$tau2),
        I2 = num(l1$I2), H2 = num(l1$H2))
    }
  }
  out$datasets[[nm]] <- entry
}

# Own writer: jsonlite caps numbers at 15 significant digits; the contract is %.17g.
to_json <- function(x, indent = "") {
  ind2 <- paste0(indent, "  ")
  if (is.list(x)) {
    if (!is.null(names(x))) {
      items <- vapply(names(x), function(n) paste0(ind2, toJSON(n, auto_unbox = TRUE), ": ",
                                                   to_json(x[[n]], ind2)), "")
      return(paste0("{\n", paste(items, collapse = ",\n"), "\n", indent, "}"))
    }
    items <- vapply(x, function(e) paste0(ind2, to_json(e, ind2)), "")
    return(paste0("[\n", paste(items, collapse = ",\n"), "\n", indent, "]"))
  }
  scal <- function(v) {
    if (is.na(v)) return("null")
    if (is.character(v)) return(as.character(toJSON(v, auto_unbox = TRUE)))
    if (is.logical(v)) return(if (v) "true" else "false")
    sprintf("%.17g", v)
  }
  s <- vapply(seq_along(x), function(i) scal(x[i]), "")
  if (length(x) == 1 && is.null(attr(x, "as_array"))) return(s)
  paste0("[", paste(s, collapse = ", "), "]")
}
arr <- function(v) { attr(v, "as_array") <- TRUE; v }
for (nm in names(out$datasets)) {
  for (key in names(out$datasets[[nm]]$trimfill)) {
    tf <- out$datasets[[nm]]$trimfill[[key]]
    tf$fill_yi <- arr(tf$fill_yi); tf$fill_vi <- arr(tf$fill_vi)
    out$datasets[[nm]]$trimfill[[key]] <- tf
  }
  for (key in names(out$datasets[[nm]]$leave1out)) {
    l1 <- out$datasets[[nm]]$leave1out[[key]]
    for (f in names(l1)) if (f != "call") l1[[f]] <- arr(l1[[f]])
    out$datasets[[nm]]$leave1out[[key]] <- l1
  }
  for (f in c("yi", "vi", "study")) out$datasets[[nm]][[f]] <- arr(out$datasets[[nm]][[f]])
}
writeLines(to_json(out), "tests/reference/metafor_bias.json")
cat("wrote tests/reference/metafor_bias.json\n")
