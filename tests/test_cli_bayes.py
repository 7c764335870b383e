"""``bayesmeta bayes``: its scripting contract.

Independent references: the MD effect sizes are the textbook closed form from the arm data
(2014 Figure 3, 2-week rows); posterior moments are checked against the brute-force nested
Gauss-Legendre integration of ``tests/test_exact.py`` (no shared code with the engine).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta.cli import main
from bayesmeta.priors import HalfNormal
from tests.test_exact import BruteForce
from tests.tolerances import QUADRATURE

ROOT = Path(__file__).parents[1]
KEYS = {"engine", "k", "measure", "mu", "tau", "theta_new", "p_mu_negative", "log_evidence"}


@pytest.fixture
def meld2(tmp_path):
    d = pd.read_csv(ROOT / "data" / "meld_2014_fig3.csv")
    d = d[d["time"] == 2][["study", "m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"]]
    p = tmp_path / "meld2.csv"
    d.to_csv(p, index=False)
    return p, d


def run_json(capsys, *argv):
    code = main(["bayes", *map(str, argv), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_json_contract_and_numbers(capsys, meld2):
    path, d = meld2
    out = run_json(capsys, path, "--measure", "MD", "--tau-prior", "halfnormal:1.5",
                   "--mu-prior", "normal:0:10")
    assert KEYS <= set(out) and out["engine"] == "exact" and out["k"] == 2
    for p in ("mu", "tau", "theta_new"):
        assert set(out[p]) == {"mean", "sd", "median", "q025", "q975"}
    # closed-form MD from arms, then the independent integration
    y = (d["m1i"] - d["m2i"]).to_numpy()
    s = np.sqrt(d["sd1i"] ** 2 / d["n1i"] + d["sd2i"] ** 2 / d["n2i"]).to_numpy()
    ref = BruteForce(y, s, HalfNormal(1.5), (0.0, 10.0))
    m, sd = ref.mean_sd(lambda mu, t: mu)
    np.testing.assert_allclose([out["mu"]["mean"], out["mu"]["sd"]], [m, sd], **QUADRATURE)
    np.testing.assert_allclose(out["tau"]["mean"], ref.expect(lambda mu, t: t), **QUADRATURE)
    np.testing.assert_allclose(out["p_mu_negative"], ref.cdf_mu(0.0), **QUADRATURE)
    np.testing.assert_allclose(out["log_evidence"], math.log(ref.Z) + ref.off, **QUADRATURE)


def test_flat_mu_prior_has_no_evidence(capsys, meld2):
    out = run_json(capsys, meld2[0], "--measure", "MD", "--tau-prior", "halfcauchy:1",
                   "--mu-prior", "flat")
    assert out["log_evidence"] is None
    # k = 2, flat mu, half-Cauchy: Var(mu) is infinite (posterior tail of tau ~ tau^-3)
    assert out["mu"]["sd"] is None and out["mu"]["q975"] is not None


def test_default_prior_for_md_is_scale_aware_and_explained(capsys, meld2):
    code = main(["bayes", str(meld2[0]), "--measure", "MD"])
    text = capsys.readouterr().out
    assert code == 0
    assert "unit-information" in text and "no empirical heterogeneity prior" in text


def test_named_empirical_prior(capsys):
    out = run_json(capsys, ROOT / "data" / "bcg.csv", "--measure", "OR",
                   "--tau-prior", "turner2015-all")
    assert out["tau_prior"] == "LogNormalTau2(mean=-2.56, sd=1.74)"
    assert out["k"] == 13 and out["measure"] == "OR"


@pytest.mark.parametrize("argv,msg", [
    (["--tau-prior", "halfnormal:0"], "must be > 0"),
    (["--tau-prior", "halfnormall:1"], "did you mean"),
    (["--mu-prior", "halfnormal:1"], "not for mu"),
    (["--level", "2"], "level"),
])
def test_bad_input_exit_code_2(capsys, meld2, argv, msg):
    code = main(["bayes", str(meld2[0]), "--measure", "MD", *argv])
    err = capsys.readouterr().err
    assert code == 2 and msg in err


def test_missing_columns_exit_code_2(capsys, tmp_path):
    p = tmp_path / "bad.csv"
    pd.DataFrame({"study": ["a", "b"], "yi": [0.1, 0.2]}).to_csv(p, index=False)
    code = main(["bayes", str(p), "--measure", "GEN"])
    assert code == 2 and "error" in capsys.readouterr().err


@pytest.mark.sampling
def test_mcmc_engine_json(capsys, meld2):
    out = run_json(capsys, meld2[0], "--measure", "MD", "--engine", "mcmc", "--seed", "1",
                   "--tau-prior", "halfnormal:1.5", "--mu-prior", "normal:0:10")
    assert out["engine"] == "mcmc" and set(out["diagnostics"]) == {
        "r_hat_max", "ess_bulk_min", "divergences"}
