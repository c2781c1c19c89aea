"""MATLAB label files (.mat) of PASCAL-Context, NYUDv2 and SIFT Flow: one integer map per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .errors import DatasetError


def load_label_map(path: Path, variable: str, layout: str) -> np.ndarray:
    """The integer HxW array stored as `variable` in a .mat file, as int64.

    Args:
        path: the .mat file.
        variable: the MATLAB variable holding the map (`LabelMap`, `segmentation`, `S`).
        layout: the dataset's expected layout, appended to the errors.
    Returns:
        The map as an int64 HxW array (values are checked by the dataset).
    Raises:
        DatasetError: the file is missing, unreadable, lacks `variable`, or holds no 2-D integer map.
    """
    try:
        mat = scipy.io.loadmat(path, variable_names=[variable])
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found. {layout}") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/MatReadError on damaged files
        raise DatasetError(f"{path}: corrupt or unreadable .mat file: {exc}") from None
    if variable not in mat:
        found = ", ".join(sorted(name for name, _, _ in scipy.io.whosmat(path))) or "none"
        raise DatasetError(f"{path}: no variable '{variable}' (found: {found}). {layout}")
    array = np.asarray(mat[variable])
    if (
        array.ndim != 2
        or array.dtype.kind not in "uif"
        or (array.dtype.kind == "f" and not np.all(array == np.round(array)))
    ):
        raise DatasetError(
            f"{path}: '{variable}' must be an integer HxW map, found {array.dtype} with shape {array.shape}"
        )
    return array.astype(np.int64)
