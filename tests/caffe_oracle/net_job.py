"""Caffe side of oracle.run_nets: runs in Caffe's own Python (pycaffe, numpy<2), never in the project's.

    python net_job.py WORKDIR

WORKDIR/jobs.json lists cases; each case folder holds net.prototxt, params.npz (`<layer>.<i>`),
inputs.npz (input blob -> array) and top_diffs.npz. The forward runs one layer at a time so each
layer's first top is recorded as that layer computed it, before a later in-place layer overwrites
it; then the backward (from the loss, or from the given top diffs). Results go to the case's out.npz
as `top/<layer>`, `blob/<blob>`, `input_diff/<blob>`, `param_diff/<layer>.<i>`.
"""

import json
import sys
from pathlib import Path

import caffe
import numpy as np
from caffe_side import load_params

SEED = 1701


def run_case(folder, phase, backward):
    net = caffe.Net(str(folder / "net.prototxt"), caffe.TRAIN if phase == "TRAIN" else caffe.TEST)
    load_params(net, folder / "params.npz")
    with np.load(folder / "inputs.npz") as inputs:
        input_names = list(inputs.files)
        for name in input_names:
            net.blobs[name].reshape(*inputs[name].shape)
            net.blobs[name].data[...] = inputs[name]
    with np.load(folder / "top_diffs.npz") as loaded:
        top_diffs = {name: loaded[name] for name in loaded.files}
    net.reshape()
    out = {}
    for index, layer in enumerate(net._layer_names):
        net._forward(index, index)
        tops = net.top_names[layer]
        if tops:
            out["top/" + layer] = net.blobs[tops[0]].data.copy()
    for name, blob in net.blobs.items():
        out["blob/" + name] = blob.data.copy()
    if backward:
        for name, diff in top_diffs.items():
            net.blobs[name].diff[...] = diff
        net._backward(len(net.layers) - 1, 0)
        for name in input_names:
            out["input_diff/" + name] = net.blobs[name].diff.copy()
        for layer, blobs in net.params.items():
            for index, blob in enumerate(blobs):
                out[f"param_diff/{layer}.{index}"] = blob.diff.copy()
    np.savez(folder / "out.npz", **out)


def main(workdir):
    caffe.set_mode_cpu()
    caffe.set_random_seed(SEED)  # Dropout's masks (read back by the tests) the same on every run
    for job in json.loads((workdir / "jobs.json").read_text()):
        run_case(Path(job["dir"]), job["phase"], job["backward"])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
