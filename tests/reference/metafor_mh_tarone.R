# Reference values from metafor for Tarone's (and Breslow-Day's) test of homogeneity of odds
# ratios, as reported by rma.mh(measure = "OR") (fields TA, TAp, BD, BDp, k.pos).
#
# Run from the repository root:   Rscript tests/reference/metafor_mh_tarone.R
# Writes tests/reference/metafor_mh_tarone.json (numbers with 17 significant digits).
# CI has no R: the JSON is committed and tests/test_mh_tarone.py reads it.
#
# metafor uses the raw counts (no continuity correction) and counts a table only when its
# expected cell a under the MH odds ratio is > 0 and it has events and non-events
# (k.pos tables, df = k.pos - 1).
suppressPackageStartupMessages({library(metafor); library(jsonlite)})

num <- function(x) if (is.null(x) || length(x) == 0) NA_real_ else as.numeric(x)

bcg <- dat.bcg
nw <- dat.nielweise2007
hahn <- dat.hahn2001
tables <- list(
  bcg = list(ai = bcg$tpos, bi = bcg$tneg, ci = bcg$cpos, di = bcg$cneg,
             study = paste(bcg$author, bcg$year),
             note = "dat.bcg (Colditz 1994), tpos/tneg/cpos/cneg"),
  nielweise2007 = list(ai = nw$ai, bi = nw$n1i - nw$ai, ci = nw$ci, di = nw$n2i - nw$ci,
                       study = paste(nw$author, nw$year),
                       note = "dat.nielweise2007: sparse, zero cells and a double-zero table"),
  hahn2001 = list(ai = hahn$ai, bi = hahn$n1i - hahn$ai, ci = hahn$ci, di = hahn$n2i - hahn$ci,
                  study = as.character(hahn$study),
                  note = "dat.hahn2001: three double-zero tables, one table with a zero cell"),
  # constructed: table 2 has a zero cell (ai = 0, informative), table 4 no events in either arm
  handmade = list(ai = c(12, 0, 7, 0, 20), bi = c(38, 25, 43, 30, 80),
                  ci = c(6, 4, 9, 0, 10), di = c(44, 21, 41, 30, 90),
                  study = paste("s", 1:5),
                  note = "constructed: one table with a zero cell (s 2), one with no events (s 4)"),
  # constructed: as above plus a table with only events (both arms), which has no non-events
  handmade_full = list(ai = c(12, 0, 7, 0, 20, 15), bi = c(38, 25, 43, 30, 80, 0),
                       ci = c(6, 4, 9, 0, 10, 12), di = c(44, 21, 41, 30, 90, 0),
                       study = paste("s", 1:6),
                       note = "constructed: handmade plus s 6 with events only (bi = di = 0)")
)

fits <- list()
for (tn in names(tables)) {
  tb <- tables[[tn]]
  r <- rma.mh(ai = tb$ai, bi = tb$bi, ci = tb$ci, di = tb$di, measure = "OR")
  fits[[tn]] <- list(TA = num(r$TA), TAp = num(r$TAp), BD = num(r$BD), BDp = num(r$BDp),
                     k_pos = num(r$k.pos), df = num(r$k.pos) - 1, k = r$k,
                     estimate = num(r$beta), MH = num(r$MH), MHp = num(r$MHp))
}

out <- list(
  meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
              metadat = as.character(packageVersion("metadat")),
              jsonlite = as.character(packageVersion("jsonlite")),
              call = 'rma.mh(ai = ai, bi = bi, ci = ci, di = di, measure = "OR")',
              script = "tests/reference/metafor_mh_tarone.R",
              created = format(Sys.time(), "%Y-%m-%d")),
  tables = tables, tarone = fits)

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
           "tests/reference/metafor_mh_tarone.json")
cat("wrote tests/reference/metafor_mh_tarone.json\n")
