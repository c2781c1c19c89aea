"""Caffe side of the solver comparison: caffe.SGDSolver runs, weights after every update and the log's
display lines. Runs in Caffe's own Python (pycaffe, numpy<2), never in the project's.

    python solver_job.py WORKDIR

WORKDIR/jobs.json lists case folders; each holds solver.prototxt (its `net` a net.prototxt whose data
layer is feed_layer.FeedLayer), params.npz (`<layer>.<i>`: the weights loaded before the first update)
and the feed. One `solver.step(max_iter)` runs the case, as `caffe train` does (the smoothed loss is
reset at every `step` call). Results: out.npz with `<k>/<layer>.<i>`, the weights after k updates
(k = 0 .. max_iter), and out.json with the displayed smoothed loss and learning rate per iteration
and how many updates clip_gradients scaled down (`{"loss": {iter: value}, "lr": {iter: value},
"clipped": count}`), read from Caffe's own log lines.
"""

import json
import os
import re
import sys
from pathlib import Path

import caffe
import numpy as np
from caffe_side import load_params, read_params

LOSS_LINE = re.compile(r"Iteration (\d+) \(.*\), loss = (\S+)")
RATE_LINE = re.compile(r"Iteration (\d+), lr = (\S+)")
CLIP_LINE = re.compile(r"Gradient clipping: scaling down gradients")


def run_case(folder):
    log_path = folder / "caffe.log"
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 2)  # glog writes to fd 2
        try:
            solver = caffe.SGDSolver(str(folder / "solver.prototxt"))
            load_params(solver.net, folder / "params.npz")
            after = []
            solver.add_callback(lambda: after.append(read_params(solver.net)), lambda: None)
            solver.step(solver.param.max_iter)
            after.append(read_params(solver.net))
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    out = {f"{k}/{key}": value for k, blobs in enumerate(after) for key, value in blobs.items()}
    np.savez(folder / "out.npz", **out)
    text = log_path.read_text()
    display = {
        "loss": {int(i): float(v) for i, v in LOSS_LINE.findall(text)},
        "lr": {int(i): float(v) for i, v in RATE_LINE.findall(text)},
        "clipped": len(CLIP_LINE.findall(text)),
    }
    (folder / "out.json").write_text(json.dumps(display))


def main(workdir):
    caffe.set_mode_cpu()
    caffe.init_log(0, True)  # INFO to stderr: the display lines (run_case sends them to a file)
    for job in json.loads((workdir / "jobs.json").read_text()):
        run_case(Path(job["dir"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
