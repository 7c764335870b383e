# Independent brms (Stan) reference for bayesmeta.mcmc.fit_nested (issue 3, §2.3; "the bar is set
# by ... brms (nested models)"). Writes tests/reference/brms_nested.json, read by
# tests/test_brms_reference.py. CI has no R: the JSON is committed.
#
# Run from the repository root:   Rscript tests/reference/brms_nested.R
# (R 4.2.2, brms 2.18.0, rstan 2.21, posterior 1.4.0 from Debian r-cran-*; ~5 min on 2 cores.)
#
# Model (one subgroup, study rows only, so h_r = 1 for every row):
#   bayesmeta:  y_r ~ N(mu_t + u_j, se_r^2 + tau_t^2),  mu_t = mu + sigma_time z_t,
#               u_j = sigma_study z_j,  log tau_t = log tau0 + sigma_logtau z'_t
#   brms:       bf(yi | se(sei, sigma = TRUE) ~ 1 + (1 | time) + (1 | study),
#                  sigma ~ 1 + (1 | time))
#   se(., sigma = TRUE): the likelihood is normal(Y | mu, sqrt(square(sigma) + se2)) -- residual
#   sigma added in quadrature to the known SE (checked in make_stancode(), saved below).
#   sigma has a log link: sigma = exp(Intercept_sigma + r_time__sigma), so
#   tau0 = exp(b_sigma_Intercept), sigma_logtau = sd_time__sigma_Intercept, tau_t = sigma at t.
#   With no population-level predictors brms does not centre: b_Intercept = Intercept = mu
#   (generated quantities `real b_Intercept = Intercept;`), so the Intercept prior is the mu prior.
#   sd(time) = sigma_time, sd(study) = sigma_study (brms: r = sd * z, non-centred, sd >= 0, so a
#   normal(0, c) prior on class sd is a half-normal(c), normalised by normal_lccdf(0 | 0, c)).
#   The mean's (1 | time) and sigma's (1 | time) are independent (no |ID| correlation term),
#   as in bayesmeta (z_cell and z_logtau independent).
#
# Priors (identical densities in both programs):
#   mu           ~ Normal(0, 10)          brms prior(normal(0, 10), class = Intercept)
#                                         bayesmeta priors.Normal(0, 10)
#   sigma_time, sigma_study ~ HalfNormal(c)  brms prior(normal(0, c), class = sd)
#                                         bayesmeta het_prior = priors.HalfNormal(c)
#   log tau0     ~ Normal(a, b)           brms prior(normal(a, b), class = Intercept, dpar = sigma)
#                                         bayesmeta tau_prior = priors.LogNormalTau2(2a, 2b)
#                                         (log tau0^2 = 2 log tau0 ~ N(2a, (2b)^2))
#   sigma_logtau ~ HalfNormal(d)          brms prior(normal(0, d), class = sd, dpar = sigma)
#                                         bayesmeta sigma_logtau_sd = d
#
# Datasets:
#   meld2014: data/meld_2014_fig3.csv (2014 paper Fig. 3 arm data; 2 studies x weeks 2, 4, 24);
#             yi = m1i - m2i, sei = sqrt(sd1i^2/n1i + sd2i^2/n2i). Prior-dominated (2 studies).
#   sim6x3:   6 studies x weeks 2, 4, 24, simulated once (numpy default_rng(20240611)) from
#             mu = -2, sigma_time = 1, sigma_study = 1.5, tau0 = 0.8, sigma_logtau = 0.3,
#             sei ~ U(0.4, 1.0); values rounded to 3 decimals and written out below, so R and
#             Python fit the identical table (the JSON carries it too).

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jsonlite)
})
# Debian's r-cran-bh is a virtual package (headers in libboost-dev, /usr/include/boost), so
# rstan's boost_lib option is empty there: point it at the system headers.
if (!file.exists(rstan::rstan_options("boost_lib")) && dir.exists("/usr/include/boost"))
  rstan::rstan_options(boost_lib = "/usr/include")

args_all <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args_all[grep("^--file=", args_all)])
root <- if (length(script)) normalizePath(file.path(dirname(script), "..", "..")) else getwd()
out_path <- file.path(root, "tests", "reference", "brms_nested.json")

SEED <- 20240611L
CHAINS <- 4L
WARMUP <- 2000L
DRAWS <- 10000L  # per chain, after warm-up
ADAPT_DELTA <- 0.99
MAX_TREEDEPTH <- 12L
TIMES <- c(2, 4, 24)

formula <- bf(yi | se(sei, sigma = TRUE) ~ 1 + (1 | time) + (1 | study),
              sigma ~ 1 + (1 | time))

# ---- data ---------------------------------------------------------------------------------
meld <- read.csv(file.path(root, "data", "meld_2014_fig3.csv"))
meld <- data.frame(study = meld$study, time = meld$time, yi = meld$m1i - meld$m2i,
                   sei = sqrt(meld$sd1i^2 / meld$n1i + meld$sd2i^2 / meld$n2i))

sim <- read.table(header = TRUE, text = "
study time yi sei
S1 2 -6.137 0.572
S1 4 -5.419 0.908
S1 24 -4.295 0.960
S2 2 -2.413 0.953
S2 4 -1.424 0.931
S2 24 -0.362 0.433
S3 2 -0.904 0.954
S3 4 -3.135 0.680
S3 24 -3.007 0.435
S4 2 -3.829 0.443
S4 4 -4.258 0.619
S4 24 -3.542 0.782
S5 2 -1.819 0.804
S5 4 -2.836 0.421
S5 24 -1.882 0.798
S6 2 -6.713 0.969
S6 4 -6.853 0.854
S6 24 -4.196 0.701
")

# ---- priors per dataset -------------------------------------------------------------------
# mu_sd, het_scale (c), logtau_mean (a), logtau_sd (b), sigma_logtau_sd (d)
settings <- list(
  sim6x3 = list(data = sim, mu_mean = 0, mu_sd = 10, het_scale = 2, logtau_mean = 0,
                logtau_sd = 1, sigma_logtau_sd = 0.5),
  meld2014 = list(data = meld, mu_mean = 0, mu_sd = 10, het_scale = 3, logtau_mean = 0,
                  logtau_sd = 1, sigma_logtau_sd = 0.5)
)

make_priors <- function(s) {
  c(set_prior(sprintf("normal(%s, %s)", s$mu_mean, s$mu_sd), class = "Intercept"),
    set_prior(sprintf("normal(0, %s)", s$het_scale), class = "sd"),
    set_prior(sprintf("normal(%s, %s)", s$logtau_mean, s$logtau_sd), class = "Intercept",
              dpar = "sigma"),
    set_prior(sprintf("normal(0, %s)", s$sigma_logtau_sd), class = "sd", dpar = "sigma"))
}

summarise_one <- function(x) {
  # x: draws_array of one variable
  q <- quantile2(x, probs = c(0.025, 0.5, 0.975))
  mq <- mcse_quantile(x, probs = c(0.025, 0.5, 0.975))
  list(mean = mean(x), sd = sd(x), q025 = unname(q[1]), q50 = unname(q[2]),
       q975 = unname(q[3]), mcse_mean = mcse_mean(x), mcse_sd = mcse_sd(x),
       mcse_q025 = unname(mq[1]), mcse_q50 = unname(mq[2]), mcse_q975 = unname(mq[3]),
       ess_bulk = ess_bulk(x), ess_tail = ess_tail(x), rhat = rhat(x))
}

fit_one <- function(name, s) {
  d <- s$data
  d$time <- factor(d$time, levels = TIMES)
  d$study <- factor(d$study)
  pr <- make_priors(s)
  t0 <- proc.time()[["elapsed"]]
  fit <- brm(formula, data = d, family = gaussian(), prior = pr, chains = CHAINS,
             iter = WARMUP + DRAWS, warmup = WARMUP, cores = 2, seed = SEED,
             control = list(adapt_delta = ADAPT_DELTA, max_treedepth = MAX_TREEDEPTH),
             refresh = 0, silent = 2)
  elapsed <- proc.time()[["elapsed"]] - t0
  dr <- as_draws_array(fit)
  out <- list(
    mu = dr[, , "b_Intercept"],
    sigma_time = dr[, , "sd_time__Intercept"],
    sigma_study = dr[, , "sd_study__Intercept"],
    tau0 = exp(dr[, , "b_sigma_Intercept"]),
    sigma_logtau = dr[, , "sd_time__sigma_Intercept"]
  )
  for (t in TIMES) {
    out[[sprintf("mu[all, %s]", t)]] <- dr[, , "b_Intercept"] +
      dr[, , sprintf("r_time[%s,Intercept]", t)]
    out[[sprintf("tau[all, %s]", t)]] <- exp(dr[, , "b_sigma_Intercept"] +
      dr[, , sprintf("r_time__sigma[%s,Intercept]", t)])
  }
  summ <- lapply(out, function(x) summarise_one(as_draws_array(x)))
  np <- nuts_params(fit)
  div <- sum(np$Value[np$Parameter == "divergent__"])
  treedepth_max <- max(np$Value[np$Parameter == "treedepth__"])
  cat(sprintf("%s: %.1f s, %d divergences, max R-hat %.4f, min bulk ESS %.0f\n", name, elapsed,
              div, max(sapply(summ, `[[`, "rhat")), min(sapply(summ, `[[`, "ess_bulk"))))
  list(
    fit = fit,
    json = list(
      data = list(study = as.character(s$data$study), time = s$data$time, yi = s$data$yi,
                  sei = s$data$sei),
      priors = list(
        brms = as.data.frame(pr)[, c("prior", "class", "dpar")],
        bayesmeta = list(mu_prior = sprintf("Normal(mean=%s, sd=%s)", s$mu_mean, s$mu_sd),
                         het_prior = sprintf("HalfNormal(scale=%s)", s$het_scale),
                         tau_prior = sprintf("LogNormalTau2(mean=%s, sd=%s)",
                                             2 * s$logtau_mean, 2 * s$logtau_sd),
                         sigma_logtau_sd = s$sigma_logtau_sd),
        numbers = s[setdiff(names(s), "data")]),
      sampler = list(chains = CHAINS, warmup = WARMUP, draws_per_chain = DRAWS, seed = SEED,
                     adapt_delta = ADAPT_DELTA, max_treedepth = MAX_TREEDEPTH,
                     divergences = div, treedepth_max = treedepth_max,
                     seconds_incl_compile = elapsed),
      summary = summ)
  )
}

results <- list()
stancode <- NULL
for (name in names(settings)) {
  r <- fit_one(name, settings[[name]])
  results[[name]] <- r$json
  if (is.null(stancode)) stancode <- stancode(r$fit)
}
# the two facts the mapping rests on, checked in the generated Stan code
stopifnot(grepl("normal_lpdf(Y | mu, sqrt(square(sigma) + se2))", stancode, fixed = TRUE),
          grepl("sigma = exp(sigma);", stancode, fixed = TRUE),
          grepl("real b_Intercept = Intercept;", stancode, fixed = TRUE))

out <- list(
  generated_by = "tests/reference/brms_nested.R",
  created = format(Sys.time(), "%Y-%m-%dT%H:%M:%S%z"),
  R_version = R.version.string,
  brms_version = as.character(packageVersion("brms")),
  rstan_version = as.character(packageVersion("rstan")),
  stan_version = rstan::stan_version(),
  posterior_version = as.character(packageVersion("posterior")),
  formula = "bf(yi | se(sei, sigma = TRUE) ~ 1 + (1 | time) + (1 | study), sigma ~ 1 + (1 | time))",
  mapping = list(mu = "b_Intercept", sigma_time = "sd_time__Intercept",
                 sigma_study = "sd_study__Intercept", tau0 = "exp(b_sigma_Intercept)",
                 sigma_logtau = "sd_time__sigma_Intercept",
                 `mu[all, t]` = "b_Intercept + r_time[t,Intercept]",
                 `tau[all, t]` = "exp(b_sigma_Intercept + r_time__sigma[t,Intercept])"),
  summaries = paste("posterior 1.4.0: mean, sd, quantile2 (type 7) at 2.5/50/97.5%;",
                    "mcse_mean, mcse_sd, mcse_quantile; ess_bulk, ess_tail, rhat (rank-normalised)"),
  likelihood_stan = "target += normal_lpdf(Y | mu, sqrt(square(sigma) + se2)); sigma = exp(...)",
  stancode = as.character(stancode),
  datasets = results
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_path)
cat("wrote", out_path, "\n")
