# Export public meta-analysis datasets from R's metadat package into bayesmeta's data/ folder.
#
# Usage (from the repository root):  Rscript tests/reference/metadat_export.R
# Needs: R >= 4, metadat (Debian: r-cran-metadat). After running, refresh the sha256 values in
# data/MANIFEST.json (python data/scripts/update_manifest.py) and commit both.
#
# Column names follow metafor's vocabulary (group 1 = experimental / treated arm):
#   ai, bi = events / non-events in group 1; ci, di = events / non-events in group 2;
#   n1i, n2i = group sizes. Values are copied unchanged from metadat.

suppressPackageStartupMessages(library(metadat))

out_dir <- file.path("data")
if (!dir.exists(out_dir)) stop("run from the repository root (data/ not found)")

write_data <- function(df, name) {
  path <- file.path(out_dir, paste0(name, ".csv"))
  con <- file(path, open = "w", encoding = "UTF-8")
  write.csv(df, con, row.names = FALSE, na = "", fileEncoding = "UTF-8")
  close(con)
  cat(sprintf("wrote %s (%d rows)\n", path, nrow(df)))
}

# BCG vaccine trials (Colditz et al. 1994): 2x2 tables + moderators.
bcg <- metadat::dat.bcg
write_data(data.frame(
  study = paste(bcg$author, bcg$year), trial = bcg$trial, author = bcg$author, year = bcg$year,
  ai = bcg$tpos, bi = bcg$tneg, ci = bcg$cpos, di = bcg$cneg,
  n1i = bcg$tpos + bcg$tneg, n2i = bcg$cpos + bcg$cneg,
  ablat = bcg$ablat, alloc = bcg$alloc, stringsAsFactors = FALSE), "bcg")

# Pagliaro et al. 1992: prevention of first bleeding in cirrhosis, arm level (3 treatments).
pag <- metadat::dat.pagliaro1992
write_data(data.frame(study = pag$study, trt = pag$trt, xi = pag$xi, ni = pag$ni,
                      stringsAsFactors = FALSE), "pagliaro1992_arms")

# ... and as pairwise 2x2 contrasts of each active treatment against the same trial's control
# (the 2 three-arm trials contribute two contrasts sharing one control arm).
rows <- list()
for (s in unique(pag$study)) {
  d <- pag[pag$study == s, ]
  ctrl <- d[d$trt == "control", ]
  stopifnot(nrow(ctrl) == 1)
  for (t in c("beta-blockers", "sclerotherapy")) {
    a <- d[d$trt == t, ]
    if (nrow(a) == 1) {
      rows[[length(rows) + 1]] <- data.frame(
        study = s, subgroup = t, ai = a$xi, n1i = a$ni, ci = ctrl$xi, n2i = ctrl$ni,
        stringsAsFactors = FALSE)
    }
  }
}
write_data(do.call(rbind, rows), "pagliaro1992")

# Niel-Weise et al. 2007: sparse 2x2 (zero cells, one double-zero study).
nw <- metadat::dat.nielweise2007
write_data(data.frame(study = paste(nw$author, nw$year), author = nw$author, year = nw$year,
                      ai = nw$ai, n1i = nw$n1i, ci = nw$ci, n2i = nw$n2i,
                      stringsAsFactors = FALSE), "nielweise2007")

# Hahn et al. 2001: very sparse 2x2 (3 of 12 studies double-zero).
hahn <- metadat::dat.hahn2001
write_data(data.frame(study = hahn$study, ai = hahn$ai, n1i = hahn$n1i, ci = hahn$ci,
                      n2i = hahn$n2i, stringsAsFactors = FALSE), "hahn2001")

cat(sprintf("R %s, metadat %s\n", getRversion(), packageVersion("metadat")))
