"""Display formatting for people: probabilities, estimates with intervals, NNT, level order,
column headers and a glossary.

Every function here turns stored (unrounded) numbers into text; nothing is computed that a
table or CSV would need. Ratio measures are stored on the log scale and shown on the natural
scale (``ratio=True``).
"""

from __future__ import annotations

import math
import re

__all__ = ["prob", "num", "estimate_ci", "nnt_altman", "level_sort_key", "sorted_levels",
           "clean_label", "human_header", "HEADERS", "GLOSSARY", "glossary_terms", "MISSING"]

MISSING = "NA"
INF = "\u221e"  # ∞


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def prob(p, digits: int = 3) -> str:
    """A probability with ``digits`` decimals, never rounded to a certainty.

    Values that would print as 1.000 or 0.000 are shown as "> 0.999" / "< 0.001" (for
    ``digits=3``): a posterior probability estimated from draws or quadrature is never exactly
    0 or 1, and "1.000" reads as certainty. NaN/None gives "NA".
    """
    if not _finite(p):
        return MISSING
    p = float(p)
    text = f"{p:.{digits}f}"
    one, zero = f"{1:.{digits}f}", f"{0:.{digits}f}"
    if p >= 1 or text == one:
        return "> " + f"{1 - 10 ** -digits:.{digits}f}"
    if p <= 0 or text == zero:
        return "< " + f"{10 ** -digits:.{digits}f}"
    return text


def num(x, digits: int = 2, *, keep_small: bool = False) -> str:
    """One number for display: ``digits`` decimals; infinities as "∞"/"-∞"; NaN as "NA".

    ``keep_small``: a nonzero value too small for ``digits`` decimals gets two significant
    digits (a ratio of 0.0043 is not "0.00", which would read as no odds at all).
    """
    if x is None:
        return MISSING
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return INF if x > 0 else "-" + INF
    if keep_small and x != 0 and abs(x) < 0.5 * 10 ** -digits:
        return f"{x:.2g}" if abs(x) >= 1e-4 else f"{x:.1e}"
    text = f"{x:.{digits}f}"
    if text.startswith("-") and float(text) == 0:  # "-0.00" reads as a sign that is not there
        text = text[1:]
    return text


def estimate_ci(est, lo, hi, *, ratio: bool = False, digits: int = 2) -> str:
    """"est [lo, hi]" for display.

    Parameters
    ----------
    est, lo, hi : float
        Point estimate and interval bounds on the analysis scale.
    ratio : bool
        The values are log ratios (logOR, logRR, log HR): shown exponentiated, on the scale a
        reader knows (0.62 [0.45, 0.85], not -0.48 [-0.80, -0.16]).
    digits : int
        Decimals (2 by default; ratios too small for that keep two significant digits).
    """
    vals = [float("nan") if v is None else float(v) for v in (est, lo, hi)]
    if ratio:
        vals = [math.exp(v) if math.isfinite(v) else (math.inf if v == math.inf else
                                                        0.0 if v == -math.inf else v)
                for v in vals]
    e, a, b = (num(v, digits, keep_small=ratio) for v in vals)
    if a == MISSING and b == MISSING:
        return e
    return f"{e} [{a}, {b}]"


def _nnt_number(rd: float, digits: int) -> str:
    """1/|rd| for display: whole patients rounded up (the convention of the Cochrane Handbook,
    section 12.5.4.3: a fractional patient cannot be treated, and rounding up never overstates
    a benefit) or ``digits`` decimals."""
    x = 1.0 / abs(rd)
    if digits <= 0:
        # round(., 9) first: 1/0.1 is 10.000000000000002 in binary and must stay 10
        return f"{math.ceil(round(x, 9)):d}"
    return f"{x:.{digits}f}"


def nnt_altman(rd_lo, rd_hi, rd_mid, *, digits: int = 0) -> str:
    """Number needed to treat with its interval in Altman's form (BMJ 1998;317:1309-12).

    ``rd_lo, rd_hi, rd_mid`` are the lower and upper interval bounds and the point estimate of
    an absolute risk difference (proportions, not percent) oriented so that positive values
    are a benefit of the treatment. The NNT is 1/RD; its interval is the reciprocal of the
    RD interval (Altman 1998):

    - RD interval entirely above 0: "NNTB 7 (4 to 25)";
    - entirely below 0: "NNTH 9 (5 to 40)";
    - containing 0: the NNT interval passes through infinity, written from the lower RD bound
      to the upper: "NNTB 12 (NNTH 40 to ∞ to NNTB 5)";
    - a bound exactly 0: "NNTB 7 (4 to ∞)".

    NNTB = number needed to treat for one more patient to benefit, NNTH = to harm. Numbers are
    whole patients rounded up (``digits=0``) or shown with ``digits`` decimals. Missing inputs
    give "NA".
    """
    if not (_finite(rd_mid) and _finite(rd_lo) and _finite(rd_hi)):
        return MISSING
    lo, hi, mid = float(rd_lo), float(rd_hi), float(rd_mid)
    if lo > hi:
        lo, hi = hi, lo

    def point(rd):
        if rd == 0:
            return f"NNT {INF}"
        return f"{'NNTB' if rd > 0 else 'NNTH'} {_nnt_number(rd, digits)}"

    head = point(mid)
    if lo > 0:      # benefit throughout: NNTB from 1/hi (smallest) to 1/lo
        ci = f"{_nnt_number(hi, digits)} to {_nnt_number(lo, digits)}"
    elif hi < 0:    # harm throughout: NNTH from 1/|lo| (smallest) to 1/|hi|
        ci = f"{_nnt_number(lo, digits)} to {_nnt_number(hi, digits)}"
    elif lo == 0 and hi == 0:
        ci = INF
    elif lo == 0:   # benefit up to hi, down to no effect
        ci = f"{_nnt_number(hi, digits)} to {INF}"
    elif hi == 0:
        ci = f"{_nnt_number(lo, digits)} to {INF}"
    else:           # crosses 0: NNTH ... to ∞ to NNTB ...
        ci = f"NNTH {_nnt_number(lo, digits)} to {INF} to NNTB {_nnt_number(hi, digits)}"
    return f"{head} ({ci})"


_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def level_sort_key(label):
    """Sort key for factor levels such as follow-up times or doses.

    Numeric levels sort by value ("4" < "12" < "24", not "12" < "24" < "4"); a label that
    starts with a number sorts by that number, then by the rest ("4 months" < "12 months");
    labels with a number inside sort naturally ("week 4" < "week 12"); plain text comes after
    every number-led label, alphabetically (case-insensitive); missing values last.
    """
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return (3, (), "")
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        return (0, float(label), "")
    s = str(label).strip()
    m = _NUM.match(s)
    if m:
        return (0, float(m.group()), s[m.end():].strip().lower())
    parts = re.split(r"(\d+(?:\.\d+)?)", s.lower())
    if len(parts) > 1:
        nat = tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))
        return (1, nat, s.lower())
    return (2, (), s.lower())


def sorted_levels(levels) -> list:
    """Distinct ``levels`` (first occurrence kept) in :func:`level_sort_key` order."""
    return sorted(dict.fromkeys(levels), key=level_sort_key)


#: Human headers for column names that appear in displayed tables (CSV files keep the raw
#: names). Interval columns say "lower"/"upper": the level is stated in the table caption.
HEADERS: dict[str, str] = {
    "analysis": "analysis", "outcome": "outcome", "source": "source", "method": "method",
    "parameter": "parameter", "subgroup": "subgroup", "time": "time", "study": "study",
    "estimate": "estimate", "se": "SE", "sd": "SD", "ci_low": "lower limit",
    "ci_high": "upper limit", "level": "interval level", "interval": "interval type",
    "scale": "scale", "statistic": "test statistic", "df": "df", "p_value": "P",
    "p": "P", "median": "median", "mean": "mean", "mcse": "MCSE", "ess_bulk": "ESS (bulk)",
    "ess_tail": "ESS (tail)", "r_hat": "R-hat", "flag": "flag",
    "yi": "effect (yi)", "vi": "variance (vi)", "sei": "SE (sei)", "weight": "weight (%)",
    "weight_pct": "weight (%)", "n1i": "n treated", "n2i": "n control", "ni": "n",
    "ai": "events treated", "ci": "events control", "k": "studies",
    "tau": "\u03c4", "tau2": "\u03c4\u00b2", "i2": "I\u00b2", "h2": "H\u00b2", "q": "Q",
    "q_df": "Q df", "q_p": "P (Q)", "pi_low": "prediction lower", "pi_high": "prediction upper",
    "or_median": "OR (median)", "or_mean": "OR (mean)", "or_ci_low": "OR lower",
    "or_ci_high": "OR upper", "p_or_gt_1": "P(OR > 1)",
    "p_or_gt_threshold": "P(OR > threshold)", "threshold": "threshold",
    "control_survival": "control survival",
    "survival_diff_mean": "survival difference (mean)",
    "survival_diff_median": "survival difference (median)",
    "survival_diff_ci_low": "survival difference lower",
    "survival_diff_ci_high": "survival difference upper",
    "nnt": "NNT", "nnt_ci_low": "NNT lower", "nnt_ci_high": "NNT upper",
    "clean": "diagnostics passed", "rows": "rows", "model": "model",
    "diagnostics": "diagnostics", "divergences": "divergent transitions",
    "r_hat_max": "max R-hat", "ess_bulk_min": "min ESS (bulk)", "ebfmi": "E-BFMI",
    "ebfmi_min": "min E-BFMI", "setting": "setting", "verdict": "verdict",
    "diagnosis": "diagnosis", "published": "published", "recomputed": "recomputed",
    "bayesian": "Bayesian", "classical": "classical", "bayesian_ci_low": "Bayesian lower",
    "bayesian_ci_high": "Bayesian upper", "item": "item", "quantity": "quantity",
    "p_benefit": "P(benefit)", "seconds": "seconds", "n_per_arm": "n per arm",
    "trial_se_logor": "trial SE (log OR)", "tipping_or": "tipping OR",
    "assurance_significant_benefit": "assurance (significant benefit)",
    "weight_pct_printed": "printed weight (%)", "p_printed": "printed P",
}


def clean_label(label) -> str:
    """A label without a repeated prefix: "published: published (printed)" -> "published
    (printed)"; "bayesian: exact-NNHM" stays as it is."""
    s = str(label)
    if ": " in s:
        head, rest = s.split(": ", 1)
        if head.strip() and rest.lower().startswith(head.strip().lower()):
            return rest
    return s


def human_header(colname) -> str:
    """The header a reader sees for a column: :data:`HEADERS`, else the name with underscores
    as spaces and a repeated prefix dropped (:func:`clean_label`)."""
    name = str(colname)
    if name in HEADERS:
        return HEADERS[name]
    return clean_label(name).replace("_", " ")


#: Plain-language definitions of the terms a report may use. Keys are the term as printed.
GLOSSARY: dict[str, str] = {
    "NNHM": "normal-normal hierarchical model: each study's estimate is normal around its true "
            "effect, and true effects are normal around the overall mean mu with SD tau (the "
            "standard random-effects model, fitted here in a Bayesian way).",
    "ETI": "equal-tailed interval: the central interval that leaves the same probability "
           "(e.g. 2.5%) in each tail of the posterior.",
    "HDI": "highest-density interval: the narrowest interval holding the stated posterior "
           "probability.",
    "CrI": "credible interval: the range that holds the true value with the stated posterior "
           "probability, given the model and priors.",
    "CI": "confidence interval: a range built so that, over repeated studies, it covers the "
          "true value with the stated frequency.",
    "E-BFMI": "energy Bayesian fraction of missing information: a sampler check; values below "
              "0.3 mean the sampler explores the posterior's tails poorly.",
    "R-hat": "potential scale reduction: compares the spread within and between chains; 1.00 "
             "when the chains agree, above 1.01 means they have not converged.",
    "ESS": "effective sample size: how many independent draws the correlated MCMC draws are "
           "worth; at least 400 is wanted for stable intervals.",
    "MCSE": "Monte Carlo standard error: the error of a posterior summary that comes from using "
            "a finite number of draws (0 for exact quadrature).",
    "divergences": "divergent transitions: places where the sampler failed to follow the "
                   "posterior; any divergence makes the fit suspect.",
    "tau": "between-study standard deviation: how much the true effects differ from study to "
           "study (on the analysis scale).",
    "mu": "the overall (pooled) mean effect across studies.",
    "I\u00b2": "share of the total variability in the estimates that is due to real "
              "differences between studies rather than chance (0-100%).",
    "prediction interval": "the range in which the true effect of a new, similar study is "
                           "expected to lie; wider than the interval of the pooled mean.",
    "P(benefit)": "posterior probability that the treatment effect lies on the side of benefit "
                  "(e.g. OR > 1 for survival), given the data, model and priors.",
    "NNT": "number needed to treat: how many patients must be treated for one more of them to "
           "benefit (NNTB) or be harmed (NNTH); the reciprocal of the absolute risk "
           "difference. An interval that includes no effect runs through infinity.",
    "NNTB": "number needed to treat for one additional patient to benefit.",
    "NNTH": "number needed to treat for one additional patient to be harmed.",
    "OR": "odds ratio: the odds of the outcome with treatment divided by the odds without; 1 "
          "means no difference.",
    "RR": "risk ratio: the risk of the outcome with treatment divided by the risk without; 1 "
          "means no difference.",
    "MD": "mean difference: treatment mean minus control mean, in the outcome's units.",
    "SMD": "standardised mean difference: the mean difference divided by the pooled SD.",
    "DL": "DerSimonian-Laird: a moment estimator of tau\u00b2 (RevMan's default).",
    "REML": "restricted maximum likelihood: an estimator of tau\u00b2 (metafor's default).",
    "KNHA": "Knapp-Hartung adjustment: t-based intervals for the pooled mean that account for "
            "the uncertainty in tau\u00b2.",
    "MH": "Mantel-Haenszel: a fixed-effect pooling method for 2x2 tables.",
    "rho": "assumed correlation between estimates that share patients.",
    "prior": "the distribution describing what is assumed about a parameter before seeing the "
             "data.",
    "posterior": "the distribution of a parameter after combining the prior with the data.",
    "shrinkage": "Bayesian estimates of each study's true effect, pulled towards the pooled "
                 "mean in proportion to the study's imprecision.",
    "exact": "computed by numerical integration (quadrature), without Monte Carlo error.",
}


def glossary_terms(text: str, terms=None) -> list[str]:
    """The glossary terms that occur in ``text`` (whole words; case-sensitive for
    abbreviations, case-insensitive for terms written in lower case), in glossary order."""
    terms = GLOSSARY if terms is None else terms
    found = []
    for t in terms:
        flags = re.IGNORECASE if t.islower() else 0
        pat = r"(?<!\w)" + re.escape(t) + r"(?!\w)"
        if re.search(pat, text, flags):
            found.append(t)
    return found
