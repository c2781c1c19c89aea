"""Helpers shared by the Caffe-side scripts (they run in Caffe's own Python, never in the project's).

Parameters cross in `.npz` files keyed `<layer>.<blob index>`, as the project's `state_dict()` is.
"""

import numpy as np


def load_params(net, path):
    """Set `net`'s parameter blobs from the `.npz` file at `path` (each array reshaped to its blob)."""
    with np.load(path) as params:
        for key in params.files:
            layer, index = key.rsplit(".", 1)
            blob = net.params[layer][int(index)]
            blob.data[...] = params[key].reshape(blob.data.shape)


def read_params(net):
    """`net`'s parameter blobs as `<layer>.<blob index>` -> a copy of the data."""
    return {f"{layer}.{i}": blob.data.copy() for layer, blobs in net.params.items() for i, blob in enumerate(blobs)}
