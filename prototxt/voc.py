"""PASCAL VOC as the authors' nets are built for it: class names, input mean, ignore label, seg11valid size.

The generated nets and solvers carry these facts (21 score channels, the data layers'
mean, the loss's ignore label, the validation solver's test_iter), so they are defined
here, below the data package (imports run porting -> prototxt -> fcndata); `fcndata`
re-exports them for the datasets.
"""

from __future__ import annotations

#: The 20 PASCAL VOC object classes with background first; a label value is its index.
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(CLASS_NAMES)
#: Label of pixels the ground truth leaves out of learning and scoring (VOC's void outlines).
IGNORE_LABEL = 255
#: Per-channel BGR mean of the ILSVRC images the VGG16 classifier was trained on; the authors'
#: data layers subtract it from every 0..255 input image.
MEAN_BGR: tuple[float, float, float] = (104.00699, 116.66877, 122.67892)
#: Images of seg11valid: VOC2011 segmentation val minus SBD train ("736 images", CVPR 2015 footnote 7).
SEG11VALID_COUNT = 736
