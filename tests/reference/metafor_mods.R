# Reference values from metafor for meta-regression (moderators) in bayesmeta's classical engine.
#
# Run from the repository root:   Rscript tests/reference/metafor_mods.R
# Writes tests/reference/metafor_mods.json (numbers with 17 significant digits; R, metafor and
# metadat versions recorded in "meta"). CI has no R: the JSON is committed and
# tests/test_metafor_mods.py reads it.
#
# Data: Viechtbauer (2007, Z Psychol 215:104-121) meta-regression example, from metadat's
# dat.linde2005 (St John's wort vs placebo, log risk ratio of response): the 17 trials in rows
# 7-10 and 13-25, with moderators dose (weekly dosage in g times duration in weeks, centred at
# 34) and baseline HRSD score (centred at 20) and their interaction: k = 17, p = 4 (intercept +
# 3 moderators). Every tau^2 estimator bayesmeta offers is fitted with tight controls
# (threshold/tol 1e-12) so that iterative estimators are compared at their converged root.
suppressPackageStartupMessages({library(metafor); library(metadat); library(jsonlite)})

ctrl <- list(threshold = 1e-12, tol = 1e-12, maxiter = 10000)
methods <- c("FE", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
tests <- c("z", "knha")

d <- dat.linde2005[c(7:10, 13:25), ]
d <- escalc(measure = "RR", ai = ai, ci = ci, n1i = n1i, n2i = n2i, data = d)
dose <- (d$dosage * 7 / 1000) * d$duration - 34
base <- d$baseline - 20
X <- cbind(intrcpt = 1, dose = dose, baseline = base, interaction = dose * base)

num <- function(x) if (is.null(x) || length(x) == 0) NA_real_ else as.numeric(x)

fits <- list()
for (m in methods) for (t in tests) {
  r <- rma(d$yi, d$vi, mods = X[, -1], method = m, test = t, control = ctrl)
  fits[[paste(m, t, sep = "|")]] <- list(
    tau2 = num(r$tau2), se_tau2 = num(r$se.tau2), beta = as.numeric(r$beta),
    se = as.numeric(r$se), qm = num(r$QM), qm_p = num(r$QMp), qm_df = as.numeric(r$QMdf),
    qe = num(r$QE), k = r$k, p = r$p)
}

# SJ's two stages spelled out (metafor's initial value and one step), as a check on the formula
sj <- rma(d$yi, d$vi, mods = X[, -1], method = "SJ", control = ctrl)
t0 <- sum((d$yi - mean(d$yi))^2) / length(d$yi)

out <- list(
  meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
              metadat = as.character(packageVersion("metadat")),
              jsonlite = as.character(packageVersion("jsonlite")), control = ctrl,
              script = "tests/reference/metafor_mods.R",
              data = "metadat::dat.linde2005 rows 7-10, 13-25; escalc RR; mods dose, baseline, dose:baseline",
              created = format(Sys.time(), "%Y-%m-%d")),
  data = list(yi = as.numeric(d$yi), vi = as.numeric(d$vi), X = unname(X),
              columns = colnames(X), study = paste(d$study, d$year)),
  methods = methods, tests = tests, fits = fits,
  sj_initial = t0, sj_tau2 = num(sj$tau2))

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE, matrix = "rowmajor"),
           "tests/reference/metafor_mods.json")
cat("wrote tests/reference/metafor_mods.json\n")
