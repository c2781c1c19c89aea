"""The published FCN results on PASCAL VOC, as data, each with its source.

Values are in percent, exactly as printed in the source; None where the source gives no
number. `PUBLISHED[split][net]` lists every source for that net on that split; nets that a
training stage produces are keyed by the stage's name (`prototxt.stages.STAGES`). The test
splits are scored by the PASCAL evaluation server only; they are here for reference and
never compared with local measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from fcndata import SEG11VALID_COUNT
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

# Image count of the exact set each split's published numbers were measured on; a run on
# another set (a subset via --ids, the synthetic data) is not compared with them.
PUBLISHED_SET_SIZE: dict[str, int] = {"voc2011seg11valid": SEG11VALID_COUNT, "voc2011val": VOC2011_SEGVAL_COUNT}

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
    "voc2011test": {"fcn8s": (Published(CVPR2015_TABLE3, mean_iu=62.7),)},
    "voc2012test": {
        "fcn8s": (Published(CVPR2015_TABLE3, mean_iu=62.2), Published(REFERENCE_README, mean_iu=67.2)),
    },
}

#: name a file or run may start with -> the published net it is: every published net's own
#: name, and each stage's net directory name ("voc-fcn32s") for its stage
_ALIASES = {
    **{net: net for split in PUBLISHED.values() for net in split},
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
    """(source label, {metric: percent or None}) for every published row of `model` on `split`."""
    key = published_name(model)
    rows = PUBLISHED.get(split, {}).get(key, ()) if key is not None else ()
    return [(row.source.label, {metric: row.value(metric) for metric in METRICS}) for row in rows]
