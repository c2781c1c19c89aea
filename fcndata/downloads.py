"""Where each dataset comes from and which folder the CLIs' root flags name: the one place for these hints."""

from __future__ import annotations

VOC_DOWNLOAD = (
    "PASCAL VOC 2011 and 2012 (VOCtrainval_25-May-2011.tar, VOCtrainval_11-May-2012.tar) from "
    "http://host.robots.ox.ac.uk/pascal/VOC/"
)
SBD_DOWNLOAD = (
    "SBD from the Berkeley semantic contours page (benchmark.tgz, Hariharan et al. 2011; it unpacks to "
    "benchmark_RELEASE/dataset)"
)
#: help text of `--voc-root` and `--sbd-root`
VOC_ROOT_HELP = "folder holding VOC2011/ and VOC2012/ (usually VOCdevkit)"
SBD_ROOT_HELP = "SBD's dataset/ folder (img/, cls/, train.txt, val.txt)"
#: what the VOC recipe needs, for a CLI's message when a root is missing
RECIPE_DATA = (
    f"training needs SBD (--sbd-root: {SBD_ROOT_HELP}; get {SBD_DOWNLOAD}) and validation needs PASCAL VOC 2011 "
    f"(--voc-root: {VOC_ROOT_HELP}; get {VOC_DOWNLOAD})"
)
