"""Prior value objects. Independent references: scipy.stats distributions (densities, CDFs,
quantiles), numerical integration (normalisation, Jacobian of log-tau² priors), and the published
parameter values (Turner et al. 2015 Stat Med p. 993 and Table IV; Rhodes et al. 2015 J Clin
Epidemiol Sec. 3.3)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from bayesmeta.exceptions import SpecError
from bayesmeta.priors import (NAMED_PRIORS, Exponential, Flat, HalfCauchy, HalfNormal,
                              HalfStudentT, LogNormalTau2, LogStudentTTau2, Normal, Uniform,
                              default_mu_prior, default_tau_prior, parse_prior, prior_sets,
                              unit_information_sd)

TAU_PRIORS = [HalfNormal(0.5), HalfCauchy(1.0), HalfStudentT(3.0, 0.7), Uniform(0.1, 2.0),
              Exponential(2.0), LogNormalTau2(-2.56, 1.74), LogStudentTTau2(5.0, -3.44, 2.59)]
# scipy twins of each prior on tau
SCIPY = [stats.halfnorm(scale=0.5), stats.halfcauchy(scale=1.0), None,
         stats.uniform(0.1, 1.9), stats.expon(scale=0.5),
         stats.lognorm(s=1.74 / 2, scale=math.exp(-2.56 / 2)), None]


@pytest.mark.parametrize("prior,ref", list(zip(TAU_PRIORS, SCIPY)), ids=str)
def test_tau_prior_density_cdf_ppf(prior, ref):
    t = np.array([0.05, 0.3, 0.9, 1.7])
    if ref is not None:   # scipy's own implementation of the same distribution
        np.testing.assert_allclose(prior.logpdf_tau(t), ref.logpdf(t), rtol=1e-12)
        np.testing.assert_allclose(prior.cdf_tau(t), ref.cdf(t), rtol=1e-12)
        np.testing.assert_allclose(prior.ppf_tau([0.1, 0.5, 0.9]), ref.ppf([0.1, 0.5, 0.9]),
                                   rtol=1e-12)
    # numerical integration of the density (independent of the closed-form CDF)
    for x in (0.3, 0.9):
        lo = prior.lower
        num = integrate.quad(lambda u: prior.pdf_tau(u), lo, x, epsabs=1e-13, limit=200)[0] \
            if x > lo else 0.0
        np.testing.assert_allclose(prior.cdf_tau(x), num, atol=1e-9)
    np.testing.assert_allclose(prior.cdf_tau(prior.ppf_tau([0.2, 0.7])), [0.2, 0.7], atol=1e-12)
    assert np.all(prior.logpdf_tau([-1.0]) == -np.inf)


def test_log_tau2_priors_include_jacobian():
    """tau = exp(x/2) with x ~ t5(-3.44, 2.59): P(tau <= c) = P(x <= 2 log c) (scipy t), and the
    tau density integrates to that probability (so the Jacobian 2/tau is in logpdf_tau)."""
    p = NAMED_PRIORS["rhodes2015-smd"]
    for c in (0.05, 0.2, 1.0):
        ref = stats.t.cdf(2 * math.log(c), 5, -3.44, 2.59)
        num = integrate.quad(lambda u: p.pdf_tau(u), 0, c, points=[c / 100], limit=400,
                             epsabs=1e-12)[0]
        np.testing.assert_allclose([p.cdf_tau(c), num], [ref, ref], atol=1e-7)


def test_named_priors_have_published_values():
    """Turner et al. 2015: marginal log tau² ~ N(-2.56, 1.74²) (p. 993); all-cause mortality,
    pharmacological vs placebo/control N(-3.95, 1.34²) (Table IV). Rhodes et al. 2015: general
    setting log tau² ~ t5(-3.44, 2.59) (Sec. 3.3)."""
    assert NAMED_PRIORS["turner2015-all"] == LogNormalTau2(-2.56, 1.74)
    assert NAMED_PRIORS["turner2015-mortality-pharma"] == LogNormalTau2(-3.95, 1.34)
    assert NAMED_PRIORS["rhodes2015-smd"] == LogStudentTTau2(5.0, -3.44, 2.59)
    for p in NAMED_PRIORS.values():
        assert "doi:" in p.describe()


@pytest.mark.parametrize("text,expected", [
    ("halfnormal:0.5", HalfNormal(0.5)), ("HalfCauchy:1", HalfCauchy(1.0)),
    ("halfstudentt:3:0.5", HalfStudentT(3.0, 0.5)), ("uniform:0:2", Uniform(0.0, 2.0)),
    ("lognormal-tau2:-2.56:1.74", LogNormalTau2(-2.56, 1.74)),
    ("logt-tau2:5:-3.44:2.59", LogStudentTTau2(5, -3.44, 2.59)),
    ("exponential:2", Exponential(2.0)), ("normal:0:10", Normal(0.0, 10.0)), ("flat", Flat()),
    ("turner2015-all", LogNormalTau2(-2.56, 1.74)),
])
def test_parse_prior(text, expected):
    assert parse_prior(text) == expected


def test_str_is_readable():
    assert str(HalfNormal(0.5)) == "HalfNormal(scale=0.5)"
    assert str(Uniform(0, 2)) == "Uniform(lower=0, upper=2)"
    assert str(Normal(0, 10)) == "Normal(mean=0, sd=10)"
    assert str(Flat()) == "Flat()" and Flat().is_flat and not Normal(0, 1).is_flat


@pytest.mark.parametrize("text", ["halfnormal:0", "halfnormal:-1", "halfcauchy:nan",
                                  "uniform:2:1", "uniform:-1:1", "normal:0", "halfnorml:1",
                                  "turner2015", "", "normal:0:a"])
def test_parse_prior_errors(text):
    with pytest.raises(SpecError):
        parse_prior(text)


def test_did_you_mean_and_kind():
    with pytest.raises(SpecError, match="did you mean 'halfnormal'"):
        parse_prior("halfnormall:1")
    with pytest.raises(SpecError, match="not for mu"):
        parse_prior("halfnormal:1", kind="mu")
    with pytest.raises(SpecError, match="not for tau"):
        parse_prior("normal:0:1", kind="tau")


def test_mu_prior_logpdf():
    np.testing.assert_allclose(Normal(1, 2).logpdf([0.0, 3.0]),
                               stats.norm.logpdf([0.0, 3.0], 1, 2), rtol=1e-14)
    assert np.all(Flat().logpdf([1e9, -3.0]) == 0.0)


def test_unit_information_sd_closed_form():
    """s_u = sqrt(sum n / sum 1/v) (Röver et al. 2021); for equal studies with
    v = 2 sigma² (2/n) (two arms of n/2, outcome SD sigma), s_u = 2 sigma."""
    sigma, n = 3.0, np.array([40, 40, 40])
    vi = sigma ** 2 * (2 / (n / 2))
    su, how = unit_information_sd(vi, n)
    assert su == pytest.approx(2 * sigma, rel=1e-12) and "sum n" in how


def test_scale_aware_default_for_md_says_why():
    d = pd.DataFrame({"vi": [0.5, 0.8], "n1i": [20, 30], "n2i": [20, 30]})
    prior, reason = default_tau_prior("MD", d)
    su = math.sqrt(100 / (2 + 1.25))
    assert prior == HalfNormal(su / 4)
    assert "no empirical" in reason and "unit-information" in reason
    # sample sizes unknown: documented fallback n = 64 per study
    prior2, reason2 = default_tau_prior("MD", d[["vi"]])
    assert prior2 == HalfNormal(math.sqrt(64 * 2 / 3.25) / 4) and "assuming n = 64" in reason2
    with pytest.raises(SpecError):
        default_tau_prior("MD")
    assert default_tau_prior("OR")[0] == HalfNormal(0.5)
    assert default_tau_prior("SMD")[0] == HalfNormal(0.5)


def test_prior_sets():
    sets = prior_sets("OR")
    assert list(sets) == ["weakly_informative", "sceptical", "enthusiastic", "empirical"]
    assert sets["empirical"][1] == NAMED_PRIORS["turner2015-all"]
    mu_s = sets["sceptical"][0]
    # sceptical: P(|mu| > log 2) = 5% (normal closed form)
    assert 2 * stats.norm.sf(math.log(2), 0, mu_s.sd) == pytest.approx(0.05, rel=1e-9)
    mu_e = sets["enthusiastic"][0]
    assert stats.norm.sf(0, mu_e.mean, mu_e.sd) == pytest.approx(0.05, rel=1e-9)
    assert prior_sets("SMD")["empirical"][1] == NAMED_PRIORS["rhodes2015-smd"]
    d = pd.DataFrame({"vi": [0.5, 0.8], "n1i": [20, 30], "n2i": [20, 30]})
    md = prior_sets("MD", d)
    # MD empirical = Rhodes SMD prior scaled by the outcome SD: tau_MD = SD x tau_SMD, so
    # log tau² shifts by 2 log SD; here SD = s_u / 2 (closed form below) - not the default
    su = math.sqrt(100 / (1 / 0.5 + 1 / 0.8))
    emp = md["empirical"][1]
    assert emp != default_tau_prior("MD", d)[0]
    assert emp.mean == pytest.approx(-3.44 + 2 * math.log(su / 2), rel=1e-12)
    assert (emp.nu, emp.scale) == (5.0, 2.59)
    # quantiles scale exactly: tau_MD(q) = SD x tau_SMD(q)
    r = NAMED_PRIORS["rhodes2015-smd"]
    assert emp.ppf_tau(0.9) == pytest.approx(su / 2 * r.ppf_tau(0.9), rel=1e-12)
    # with per-arm SDs the pooled within-arm SD is used
    d2 = pd.DataFrame({"vi": [0.5, 0.8], "n1i": [20, 30], "n2i": [20, 30],
                       "sd1i": [2.0, 3.0], "sd2i": [2.0, 3.0]})
    sdp = math.sqrt((38 * 4 + 58 * 9) / 96)
    assert prior_sets("MD", d2)["empirical"][1].mean == pytest.approx(
        -3.44 + 2 * math.log(sdp), rel=1e-12)
    # not offered where no SD can be found or for RD
    assert "empirical" not in prior_sets("RD", d)
    # all-cause mortality: Turner 2015 Table IV on tau
    assert prior_sets("OR", outcome_type="all-cause mortality")["empirical"][1] == \
        NAMED_PRIORS["turner2015-mortality-pharma"]
    assert isinstance(default_mu_prior("MD")[0], Flat)
    with pytest.raises(SpecError):
        prior_sets("XYZ")


def test_to_pymc_variables():
    pm = pytest.importorskip("pymc")
    with pm.Model() as m:
        Normal(0, 1).to_pymc("mu")
        HalfNormal(0.5).to_pymc("tau")
        t2 = NAMED_PRIORS["turner2015-all"].to_pymc("tau_b")
    assert {v.name for v in m.free_RVs} == {"mu", "tau", "log_tau_b2"}
    assert [v.name for v in m.deterministics] == ["tau_b"]
    # the log-tau² variable's prior: compare draws' quantiles with ppf_tau (closed form)
    draws = pm.draw(t2, draws=20000, random_seed=1)
    q = np.quantile(draws, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(q, NAMED_PRIORS["turner2015-all"].ppf_tau([0.25, 0.5, 0.75]),
                               rtol=0.05)
