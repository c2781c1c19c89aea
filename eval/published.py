"""The published FCN results (PASCAL VOC, NYUDv2, SIFT Flow, PASCAL-Context), as data, each with its source.

Values are in percent, exactly as printed in the source; None where the source gives no
number. `PUBLISHED[split][net]` lists every source for that net on that split; nets that a
training stage produces are keyed by the stage's name (`prototxt.stages.STAGES`). The test
splits are scored by the PASCAL evaluation server only; they are here for reference and
never compared with local measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from fcndata import SEG11VALID_COUNT, nyud, pascalcontext, siftflow
from fcndata.splits import VOC2011_SEGVAL_COUNT
from prototxt.stages import STAGES

from .metrics import METRICS


@dataclass(frozen=True)
class Source:
    label: str  # short name for table rows
    citation: str  # where the numbers are printed


@dataclass(frozen=True)
class Published:
    source: Source
    pixel_acc: float | None = None
    mean_acc: float | None = None
    mean_iu: float | None = None
    fw_iu: float | None = None

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


CVPR2015_TABLE2 = Source(
    "CVPR15 T2",
    "Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015, "
    "Table 2 (seg11valid; nets trained with the CVPR recipe)",
)
CVPR2015_TABLE3 = Source(
    "CVPR15 T3",
    "Long, Shelhamer, Darrell, CVPR 2015, Table 3 (PASCAL VOC 2011 and 2012 test, evaluation server)",
)
REFERENCE_README = Source(
    "repo README",
    "github.com/shelhamer/fcn.berkeleyvision.org README: mean IU of the released PASCAL models "
    "(heavy recipe; FCN-8s also 67.2 on seg12test)",
)
PYTORCH_FCN = Source(
    "pytorch-fcn",
    "github.com/wkentaro/pytorch-fcn README: the released caffemodels re-scored on seg11valid "
    "(third party, not the authors)",
)

CVPR2015_TABLE1 = Source(
    "CVPR15 T1",
    "Long, Shelhamer, Darrell, CVPR 2015, Table 1 (FCN-32s cast from three ILSVRC classifiers; mean IU on "
    "PASCAL VOC 2011 val; forward time for a 500x500 input on a Tesla K40c, averaged over 20 trials)",
)


@dataclass(frozen=True)
class BackboneRow:
    """One column of CVPR 2015 Table 1, as printed."""

    net: str  # the row's name in the paper
    mean_iu: float
    forward_ms: float
    conv_layers: int
    parameters_m: int  # millions, rounded as printed
    receptive_field: int
    max_stride: int


#: backbone -> its Table 1 entry (FCN-AlexNet's base in the authors' files is CaffeNet, the same architecture)
TABLE1: dict[str, BackboneRow] = {
    "alexnet": BackboneRow("FCN-AlexNet", 39.8, 50, 8, 57, 355, 32),
    "vgg16": BackboneRow("FCN-VGG16", 56.0, 210, 16, 134, 404, 32),
    "googlenet": BackboneRow("FCN-GoogLeNet", 42.5, 59, 22, 6, 907, 32),
}
#: the Table 1 row of each backbone's FCN-32s run (`prototxt.backbone.BACKBONE_RUNS` names them)
TABLE1_ROW_OF_BACKBONE = {"vgg16": "vgg16", "alexnet": "alexnet", "caffenet": "alexnet", "googlenet": "googlenet"}

CVPR2015_TABLE4 = Source(
    "CVPR15 T4",
    "Long, Shelhamer, Darrell, CVPR 2015, Table 4 (NYUDv2 test, 654 images, 40 classes; RGBD = color-d early "
    "fusion, RGB-HHA = color-hha late fusion)",
)
CVPR2015_TABLE5 = Source(
    "CVPR15 T5",
    "Long, Shelhamer, Darrell, CVPR 2015, Table 5 (SIFT Flow test, 200 images; the two-headed FCN-16s: semantic "
    "metrics, and geometric pixel accuracy; semantic means leave out the classes absent from the test set)",
)
ARXIV2015_CONTEXT = Source(
    "arXiv 1411.4038v2 T6",
    "Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic Segmentation, arXiv 1411.4038v2, "
    "Table 6 (appendix B: PASCAL-Context, 59-class task, VOC2010 val). The PAMI version's tables (arXiv "
    "1605.06211) for PASCAL-Context, NYUDv2 and SIFT Flow could not be read here and are not included",
)

# Image count of the exact set each split's published numbers were measured on; a run on
# another set (a subset via --ids, the synthetic data) is not compared with them.
PUBLISHED_SET_SIZE: dict[str, int] = {
    "voc2011seg11valid": SEG11VALID_COUNT,
    "voc2011val": VOC2011_SEGVAL_COUNT,
    "pascalcontext-val": pascalcontext.VAL_IMAGES,
    "nyud-test": nyud.TEST_IMAGES,
    "siftflow-test": siftflow.TEST_IMAGES,
}

PUBLISHED: dict[str, dict[str, tuple[Published, ...]]] = {
    "voc2011seg11valid": {
        "fcn32s-fixed": (Published(CVPR2015_TABLE2, 83.0, 59.7, 45.4, 72.0),),
        "fcn32s": (
            Published(CVPR2015_TABLE2, 89.1, 73.3, 59.4, 81.4),
            Published(REFERENCE_README, mean_iu=63.6),
            Published(PYTORCH_FCN, 90.49, 76.48, 63.63, 83.47),
        ),
        "fcn16s": (
            Published(CVPR2015_TABLE2, 90.0, 75.7, 62.4, 83.0),
            Published(REFERENCE_README, mean_iu=65.0),
            Published(PYTORCH_FCN, 91.00, 78.07, 65.01, 84.27),
        ),
        "fcn8s": (
            Published(CVPR2015_TABLE2, 90.3, 75.9, 62.7, 83.2),
            Published(REFERENCE_README, mean_iu=65.5),
            Published(PYTORCH_FCN, 91.23, 77.61, 65.51, 84.55),
        ),
        "fcn8s-atonce": (
            Published(REFERENCE_README, mean_iu=65.4),
            Published(PYTORCH_FCN, 91.13, 78.50, 65.40, 84.44),
        ),
        "fcn-alexnet": (Published(REFERENCE_README, mean_iu=48.0),),
        "fcn32s-caffenet": (Published(REFERENCE_README, mean_iu=48.0),),  # the authors' FCN-AlexNet is CaffeNet cast
    },
    "voc2011val": {
        "fcn32s": (Published(CVPR2015_TABLE1, mean_iu=TABLE1["vgg16"].mean_iu),),
        "fcn32s-alexnet": (Published(CVPR2015_TABLE1, mean_iu=TABLE1["alexnet"].mean_iu),),
        "fcn32s-caffenet": (Published(CVPR2015_TABLE1, mean_iu=TABLE1["alexnet"].mean_iu),),
        "fcn32s-googlenet": (Published(CVPR2015_TABLE1, mean_iu=TABLE1["googlenet"].mean_iu),),
    },
    "pascalcontext-val": {
        "pascalcontext-fcn32s": (Published(ARXIV2015_CONTEXT, 63.8, 42.7, 31.8, 48.3),),
        "pascalcontext-fcn16s": (Published(ARXIV2015_CONTEXT, 65.7, 46.2, 34.8, 50.7),),
        "pascalcontext-fcn8s": (Published(ARXIV2015_CONTEXT, 65.9, 46.5, 35.1, 51.0),),
    },
    "nyud-test": {
        "nyud-fcn32s-color": (Published(CVPR2015_TABLE4, 60.0, 42.2, 29.2, 43.9),),
        "nyud-fcn32s-color-d": (Published(CVPR2015_TABLE4, 61.5, 42.4, 30.5, 45.5),),
        "nyud-fcn32s-hha": (Published(CVPR2015_TABLE4, 57.1, 35.2, 24.2, 40.4),),
        "nyud-fcn32s-color-hha": (Published(CVPR2015_TABLE4, 64.3, 44.9, 32.8, 48.0),),
        "nyud-fcn16s-color-hha": (Published(CVPR2015_TABLE4, 65.4, 46.1, 34.0, 49.5),),
    },
    "siftflow-test": {
        "siftflow-fcn16s sem": (Published(CVPR2015_TABLE5, 85.2, 51.7, 39.5, 76.1),),
        "siftflow-fcn16s geo": (Published(CVPR2015_TABLE5, pixel_acc=94.3),),
    },
    "voc2011test": {"fcn8s": (Published(CVPR2015_TABLE3, mean_iu=62.7),)},
    "voc2012test": {
        "fcn8s": (Published(CVPR2015_TABLE3, mean_iu=62.2), Published(REFERENCE_README, mean_iu=67.2)),
    },
}

NET_NAMES = (
    *STAGES,
    "fcn32s-fixed",
    "fcn-alexnet",
    "fcn32s-alexnet",
    "fcn32s-caffenet",
    "fcn32s-googlenet",
    # the other families' nets, as the authors name them
    *(net for split in ("pascalcontext-val", "nyud-test") for net in PUBLISHED[split]),
    "siftflow-fcn32s",
    "siftflow-fcn16s",
    "siftflow-fcn8s",
)
#: name a file or run may start with -> the published net it is: every published net's own
#: name, and each stage's net directory name ("voc-fcn32s") for its stage
_ALIASES = {
    **{net: net for net in NET_NAMES},
    **{stage.net: stage.name for stage in STAGES.values()},
}


def published_name(name: str) -> str | None:
    """The published net a run or file name refers to, by longest matching prefix.

    "fcn8s-heavy-pascal" -> "fcn8s", "fcn8s-atonce-pascal" -> "fcn8s-atonce",
    "voc-fcn32s" -> "fcn32s"; None when nothing matches.
    """
    key = name.lower()
    matches = [alias for alias in _ALIASES if key == alias or key.startswith(alias + "-")]
    return _ALIASES[max(matches, key=len)] if matches else None


def published_rows(split: str, model: str) -> list[tuple[str, dict[str, float | None]]]:
    """Every published row of `model` on `split`, its heads' too (SIFT Flow's "siftflow-fcn16s sem" and "... geo").

    Args:
        split: a split of `PUBLISHED`, e.g. "nyud-test".
        model: a net, run or file name (`published_name`).

    Returns:
        (source label, {metric: percent or None}) per row; a head's label ends in the head, e.g. "CVPR15 T5 geo".
    """
    key = published_name(model)
    if key is None:
        return []
    found = [
        (row.source.label + net.removeprefix(key), row)
        for net, rows in PUBLISHED.get(split, {}).items()
        if net == key or net.startswith(key + " ")
        for row in rows
    ]
    return [(label, {metric: row.value(metric) for metric in METRICS}) for label, row in found]
