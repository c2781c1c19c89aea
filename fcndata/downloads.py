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
#: flag -> what it names and where to get that, for a message when the flag is missing
VOC_ROOT_FLAGS = {
    "--voc-root": f"the {VOC_ROOT_HELP}; get {VOC_DOWNLOAD}",
    "--sbd-root": f"{SBD_ROOT_HELP}; get {SBD_DOWNLOAD}",
}
#: what the VOC recipe needs, for a CLI's message when a root is missing
RECIPE_DATA = (
    f"training needs SBD (--sbd-root: {SBD_ROOT_HELP}; get {SBD_DOWNLOAD}) and validation needs PASCAL VOC 2011 "
    f"(--voc-root: {VOC_ROOT_HELP}; get {VOC_DOWNLOAD})"
)

#: help text of the other families' root flags
PASCALCONTEXT_ROOT_HELP = (
    "PASCAL-Context annotations folder (trainval/, labels.txt, 59_labels.txt); images from --voc-root/VOC2010"
)
NYUD_ROOT_HELP = "NYUDv2 folder of the authors' nyud.tar.gz (data/, segmentation/)"
SIFTFLOW_ROOT_HELP = "SIFT Flow folder (Images/, SemanticLabels/, GeoLabels/, trainval.txt, test.txt)"
#: what each family's folders hold and where to get them, for a message when one is missing
FAMILY_DATA: dict[str, str] = {
    "voc": "SBD's dataset/ folder (--sbd-root) and the folder holding VOC2011/ (--voc-root)",
    "pascalcontext": "the folder holding VOC2010/ (--voc-root) and the PASCAL-Context annotations folder with "
    "trainval/, labels.txt and 59_labels.txt (--pascalcontext-root)",
    "nyud": "the nyud folder of the authors' nyud.tar.gz (--nyud-root; http://dl.caffe.berkeleyvision.org/nyud.tar.gz)",
    "siftflow": "the SIFT Flow folder with Images/, SemanticLabels/, GeoLabels/, trainval.txt and test.txt "
    "(--siftflow-root; SiftFlowDataset.zip from http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/)",
}
