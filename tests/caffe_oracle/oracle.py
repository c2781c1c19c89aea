"""Real Caffe as the test oracle: find the build, run Caffe-side scripts in their own process.

Caffe runs in its own virtual environment (numpy<2, pycaffe) made by `bash tests/caffe_oracle/build.sh`;
the project's environment (numpy 2, torch) cannot import it. Arrays cross through `.npz` files in a
work folder: the project side writes the inputs, a script under `tests/caffe_oracle/` runs in Caffe's
Python with that folder as its argument and writes its results there.

Where Caffe is found: `$FCN_CAFFE_HOME` (the prefix build.sh printed), else the newest finished build
under `${XDG_CACHE_HOME:-~/.cache}/fcn-faithfully/caffe-*`. Without one the `caffe` tier skips with one
line saying how to build it; under `FCN_REQUIRE_CAFFE=1` (CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
#: the authors' Python files (../shared/caffe/fcn-scripts beside the checkout, or $FCN_AUTHORS_SCRIPTS)
AUTHORS_SCRIPTS = Path(os.environ.get("FCN_AUTHORS_SCRIPTS") or REPOSITORY.parent / "shared" / "caffe" / "fcn-scripts")
NOT_BUILT = (
    "Caffe is not built: run `bash tests/caffe_oracle/build.sh` (it builds ../shared/caffe/caffe-9b89154.tar.gz, "
    "or the BVLC Caffe source tree or tarball named by FCN_CAFFE_SOURCE; ~10 minutes on 2 cores)"
)


class CaffeFailed(RuntimeError):
    """A Caffe-side script exited non-zero; the message holds its stderr."""


@dataclass(frozen=True)
class CaffeInstall:
    """A finished build of tests/caffe_oracle/build.sh."""

    prefix: Path

    @property
    def python(self) -> Path:
        return self.prefix / "venv" / "bin" / "python"

    def environment(self, pythonpath: tuple[Path, ...] = ()) -> dict[str, str]:
        """The process environment for Caffe's Python: pycaffe and `pythonpath` importable, glog quiet."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in (self.prefix / "src" / "python", HERE, *pythonpath))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, (str(self.prefix / "build" / "lib"), os.environ.get("LD_LIBRARY_PATH")))
        )
        env["GLOG_minloglevel"] = "2"
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
        return env

    def run(self, script: str, workdir: Path, pythonpath: tuple[Path, ...] = (), timeout: float = 900) -> str:
        """Run `tests/caffe_oracle/<script>` in Caffe's Python with `workdir` as its one argument.

        Args:
            script: the file name of a Caffe-side script beside this module.
            workdir: the folder the script reads its inputs from and writes its results to (also its cwd).
            pythonpath: folders to put on PYTHONPATH after pycaffe (e.g. the authors' data layers).
            timeout: seconds before the process is killed.

        Returns:
            The script's stdout.

        Raises:
            CaffeFailed: the script exited non-zero (its stderr is in the message).
        """
        completed = subprocess.run(
            [str(self.python), str(HERE / script), str(workdir)],
            cwd=workdir,
            env=self.environment(pythonpath),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if completed.returncode != 0:
            raise CaffeFailed(f"{script} exited with {completed.returncode}:\n{completed.stderr[-4000:]}")
        return completed.stdout


def find_caffe() -> CaffeInstall | None:
    """The Caffe build to test against, or None when there is none."""
    given = os.environ.get("FCN_CAFFE_HOME")
    if given:
        return CaffeInstall(Path(given)) if (Path(given) / "ready").is_file() else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcn-faithfully"
    builds = sorted(cache.glob("caffe-*/ready"), key=lambda stamp: stamp.stat().st_mtime)
    return CaffeInstall(builds[-1].parent) if builds else None


def caffe_required() -> bool:
    return os.environ.get("FCN_REQUIRE_CAFFE", "") not in ("", "0")


# ---- the generic net job (tests/caffe_oracle/net_job.py on the Caffe side)


@dataclass
class NetCase:
    """One net for Caffe to run: forward layer by layer, then (optionally) backward.

    Attributes:
        prototxt: the net text (Input layers for its inputs; `force_backward: true` where bottom diffs of
            the inputs are wanted).
        params: `<layer>.<blob index>` -> array, loaded into the net before the forward.
        inputs: input blob name -> array.
        phase: "TRAIN" or "TEST".
        backward: run the backward pass after the forward.
        top_diffs: output blob name -> its diff, for nets without a loss.
    """

    prototxt: str
    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    phase: str = "TRAIN"
    backward: bool = True
    top_diffs: dict[str, np.ndarray] | None = None


@dataclass
class NetResult:
    """What Caffe computed for a NetCase.

    Attributes:
        tops: layer name -> its first top as that layer computed it (before later in-place layers).
        blobs: blob name -> its data after the whole forward.
        input_diffs: input blob name -> its diff after backward.
        param_diffs: `<layer>.<blob index>` -> the parameter's diff after backward.
    """

    tops: dict[str, np.ndarray]
    blobs: dict[str, np.ndarray]
    input_diffs: dict[str, np.ndarray]
    param_diffs: dict[str, np.ndarray]


def run_nets(caffe: CaffeInstall, cases: list[NetCase], workdir: Path) -> list[NetResult]:
    """Run every case in one Caffe process (one process start for many cases).

    Args:
        caffe: the build.
        cases: the nets, their weights and inputs.
        workdir: an empty folder for the exchange files.

    Returns:
        One NetResult per case, in order.
    """
    jobs = []
    for index, case in enumerate(cases):
        stem = workdir / f"case{index}"
        stem.mkdir(parents=True, exist_ok=True)
        (stem / "net.prototxt").write_text(case.prototxt)
        np.savez(stem / "params.npz", **case.params)
        np.savez(stem / "inputs.npz", **case.inputs)
        np.savez(stem / "top_diffs.npz", **(case.top_diffs or {}))
        jobs.append({"dir": str(stem), "phase": case.phase, "backward": case.backward})
    (workdir / "jobs.json").write_text(json.dumps(jobs))
    caffe.run("net_job.py", workdir)
    results = []
    for job in jobs:
        with np.load(Path(job["dir"]) / "out.npz") as out:
            groups: dict[str, dict[str, np.ndarray]] = {"top": {}, "blob": {}, "input_diff": {}, "param_diff": {}}
            for key in out.files:
                group, name = key.split("/", 1)
                groups[group][name] = out[key]
        results.append(NetResult(groups["top"], groups["blob"], groups["input_diff"], groups["param_diff"]))
    return results


def assert_close_to_caffe(ours: np.ndarray, caffe: np.ndarray, what: str, rtol: float) -> float:
    """Assert |ours - caffe| <= rtol * max|caffe| elementwise; return that relative error.

    Args:
        ours: the project's array.
        caffe: Caffe's array (the reference).
        what: names the blob in the failure message.
        rtol: tolerance relative to the reference blob's largest magnitude.

    Returns:
        max|ours - caffe| / max(max|caffe|, tiny).
    """
    ours = np.asarray(ours, dtype=np.float64)
    caffe = np.asarray(caffe, dtype=np.float64)
    assert ours.shape == caffe.shape, f"{what}: shape {ours.shape}, Caffe {caffe.shape}"
    scale = max(float(np.abs(caffe).max(initial=0.0)), 1e-30)
    error = float(np.abs(ours - caffe).max(initial=0.0)) / scale
    assert np.isfinite(ours).all() == np.isfinite(caffe).all(), f"{what}: non-finite values differ"
    assert error <= rtol, f"{what}: max error {error:.3g} of the blob's largest |value| {scale:.3g} (tolerance {rtol})"
    return error


if __name__ == "__main__":  # `python tests/caffe_oracle/oracle.py`: where Caffe is, or how to build it
    found = find_caffe()
    print(found.prefix if found else NOT_BUILT, file=sys.stdout if found else sys.stderr)
    sys.exit(0 if found else 1)
