"""Caffe side of tests/test_caffe_authors.py: runs the authors' own files in Caffe's Python.

    python authors_job.py WORKDIR

WORKDIR/job.json names the task and its settings; results go to WORKDIR/out.npz (arrays) and
WORKDIR/out.json (printed text, losses). The authors' files come from a copy the test made (their
data layers, surgery.py and score.py on PYTHONPATH; each net's net.py and solve.py in
`<repo>/<net>/`, beside a `data/` folder laid out as their repository's), so `../data/...` paths
resolve as in their repository. Tasks:

- data: for each net, run its net.py (it writes the train/val prototxt), keep the Python data
  layer of each written file as a net of its own, and forward it K times: each forward's tops.
- interp: `surgery.interp` on a net of Deconvolution layers whose weights are set first.
- transplant: `surgery.transplant(new_net, net, suffix)` from each source in turn (a classifier,
  or the trained streams of a late-fusion net) into another net; the new net's parameters after.
- score: `score.do_seg_tests` over (score, label) pairs fed by a Python layer; its histogram and
  what it prints.
- solve: one stage of their recipe: net.py, the prototxt narrowed and Dropout out, the solver
  file, then their solve.py as a script; every update's loss (a solver callback), the weights
  at the first update's start and at the end, what seg_tests printed, and the trained weights
  saved where the next stage's solve.py reads them.
"""

import contextlib
import io
import json
import math
import os
import runpy
import sys
from pathlib import Path

import caffe
import numpy as np
from caffe.proto import caffe_pb2
from caffe_side import load_params, read_params
from google.protobuf import text_format


def read_net(path):
    param = caffe_pb2.NetParameter()
    text_format.Merge(Path(path).read_text(), param)
    return param


def data_task(job, workdir, out):
    repo = Path(job["repo"])
    for spec in job["nets"]:
        os.chdir(repo / spec["net"])
        runpy.run_path("net.py", run_name="__main__")
        for file, forwards in spec["files"].items():
            layer = read_net(file).layer[0]
            data_only = caffe_pb2.NetParameter()
            data_only.layer.add().CopyFrom(layer)
            Path(f"data-{file}").write_text(text_format.MessageToString(data_only))
            net = caffe.Net(f"data-{file}", caffe.TRAIN)
            for index in range(forwards):
                net.forward()
                for position, top in enumerate(layer.top):
                    out[f"{spec['net']}/{file}/{index}/{position}"] = net.blobs[top].data.copy()


def interp_task(job, workdir, out):
    import surgery

    net = caffe.Net(str(workdir / "net.prototxt"), caffe.TEST)
    load_params(net, workdir / "params.npz")
    surgery.interp(net, job["layers"])
    out.update(read_params(net))


def transplant_task(job, workdir, out):
    import surgery

    new_net = caffe.Net(str(workdir / "new.prototxt"), caffe.TEST)
    printed = io.StringIO()
    for source in job["sources"]:
        net = caffe.Net(str(workdir / source["prototxt"]), str(workdir / source["weights"]), caffe.TEST)
        with contextlib.redirect_stdout(printed):
            surgery.transplant(new_net, net, suffix=source["suffix"])
    out.update(read_params(new_net))
    return {"printed": printed.getvalue()}


class PairLayer(caffe.Layer):
    """Feeds the (score, label) pairs of an npz file, one per forward: the stand-in for a net's output."""

    def setup(self, bottom, top):
        self.pairs = np.load(self.param_str)
        self.index = 0

    def reshape(self, bottom, top):
        self.score = self.pairs[f"score{self.index}"]
        self.label = self.pairs[f"label{self.index}"]
        top[0].reshape(*self.score.shape)
        top[1].reshape(*self.label.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.score
        top[1].data[...] = self.label
        self.index += 1

    def backward(self, top, propagate_down, bottom):
        pass


def score_task(job, workdir, out):
    import score

    n = caffe.NetSpec()
    n.score, n.label = caffe.layers.Python(
        module="authors_job", layer="PairLayer", ntop=2, param_str=str(workdir / "pairs.npz")
    )
    n.loss = caffe.layers.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=False, ignore_label=255))
    (workdir / "score.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(workdir / "score.prototxt"), caffe.TEST)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        hist = score.do_seg_tests(net, 0, False, job["ids"], layer="score", gt="label")
    out["hist"] = hist
    return {"printed": printed.getvalue()}


def narrow(param, width, keep):
    """The net with its Convolution widths scaled (rounded half up, at least 1), layers named in
    `keep` (score layers) as they are, and its Dropout layers removed (in place, so nothing rewires)."""
    narrowed = caffe_pb2.NetParameter()
    narrowed.CopyFrom(param)
    del narrowed.layer[:]
    for layer in param.layer:
        if layer.type == "Dropout":
            continue
        copy = narrowed.layer.add()
        copy.CopyFrom(layer)
        if layer.type == "Convolution" and not layer.name.startswith(tuple(keep)):
            conv = copy.convolution_param
            conv.num_output = max(1, math.floor(conv.num_output * width + 0.5))
    return narrowed


def solve_task(job, workdir, out):
    repo = Path(job["repo"])
    folder = repo / job["net"]
    os.chdir(folder)
    (folder / "snapshot").mkdir(exist_ok=True)  # the solver file's snapshot_prefix "snapshot/train"
    runpy.run_path("net.py", run_name="__main__")
    for file in job["net_files"]:
        narrowed = narrow(read_net(file), job["width"], job["keep"])
        Path(file).write_text(text_format.MessageToString(narrowed))
    if job.get("make_fcn_weights"):  # the classifier cast into the FCN's convolutions, as ilsvrc-nets/vgg16-fcn
        import surgery

        classifier = caffe.Net(job["classifier_prototxt"], job["classifier_weights"], caffe.TEST)
        fcn = caffe.Net(job["net_files"][0], caffe.TEST)
        with contextlib.redirect_stdout(io.StringIO()):
            surgery.transplant(fcn, classifier)
        fcn.save(job["make_fcn_weights"])
        del fcn, classifier
    losses, solvers, start = [], [], {}
    original = caffe.SGDSolver

    def recording_solver(*args):
        """caffe.SGDSolver, recording the weights the first update starts from and every update's loss."""
        solver = original(*args)
        solvers.append(solver)

        def on_start():
            if not start:
                start.update(read_params(solver.net))

        def on_gradients_ready():
            losses.append(sum(float(solver.net.blobs[name].data) for name in solver.net.outputs))

        solver.add_callback(on_start, on_gradients_ready)
        return solver

    caffe.SGDSolver = recording_solver
    printed = io.StringIO()
    sys.argv = ["solve.py", "0"]
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path("solve.py", run_name="__main__")
    finally:
        caffe.SGDSolver = original
    solver = solvers[0]
    for key, value in start.items():
        out["start/" + key] = value
    for key, value in read_params(solver.net).items():
        out["final/" + key] = value
    if job.get("save"):
        solver.net.save(job["save"])
    return {"losses": losses, "printed": printed.getvalue()}


TASKS = {
    "data": data_task,
    "interp": interp_task,
    "transplant": transplant_task,
    "score": score_task,
    "solve": solve_task,
}


def main(workdir):
    caffe.set_mode_cpu()
    job = json.loads((workdir / "job.json").read_text())
    out = {}
    extra = TASKS[job["task"]](job, workdir, out) or {}
    np.savez(workdir / "out.npz", **out)
    (workdir / "out.json").write_text(json.dumps(extra))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
