"""Property: whatever bytes arrive, the readers give a valid net or a project error.

Hypothesis mutates and truncates real inputs (the authors' prototxt files, small nets of
our own in the V2, V1 and `input:` forms, and caffemodels of those nets written by
`porting.write_caffemodel` in the V2, V1 and legacy-dims layouts) and feeds them to
`parse_prototxt`, `parse_solver`, `read_caffemodel` and `porting.load` + a forward pass.
Every example must end in a result or an `FcnError`; any other exception fails.

Time and memory are bounded by running the readers in one long-lived worker process:
- memory: the worker caps its own address space (RLIMIT_AS) at what it uses after
  importing torch plus MEMORY_HEADROOM, so an input that makes a reader allocate from a
  forged size fails at once with MemoryError / an allocator error (reported as an escape)
  instead of swapping or being OOM-killed; capping the worker, not pytest, keeps the rest
  of the suite unaffected.
- time: hypothesis' per-example `deadline`, plus a hard HANG_SECONDS wait on the worker's
  reply, after which the worker is killed and restarted and the example fails as a hang.
The profile is fixed (derandomize, no example database) so every run tries the same inputs.
"""

from __future__ import annotations

import multiprocessing
import re
import resource
import tempfile
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
from error_catalog import TINY_NET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MEMORY_HEADROOM = 2 * 2**30
HANG_SECONDS = 20.0
SMALL_INPUT_VALUES = 10**6

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=120,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: the tiny net in the V1 format (`layers { type: ENUM }`, `input:`/`input_dim:`), as old model zoos ship
TINY_NET_V1 = """name: "tiny_v1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 16 input_dim: 16
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""

#: tokens that tend to make text structurally wrong rather than merely unparsable
TEXT_TOKENS = [
    "{",
    "}",
    ":",
    '"',
    "\n",
    "#",
    "\\",
    "'",
    "\x00",
    "é",
    "-",
    "nan",
    "inf",
    "1e999",
    "0x7fffffff",
    "layer {",
    "layers {",
    'bottom: "data"',
    'top: "data"',
    'bottom: "score"',
    'top: "conv1"',
    'type: "Python"',
    'type: "Crop"',
    "type: CONVOLUTION",
    "num_output: 99999999",
    "num_output: 0",
    "kernel_size: 0",
    "stride: 0",
    "group: 3",
    "dim: -1",
    "dim: 0",
    "dim: 2147483647",
    "input_dim: 1",
    'input: "data"',
    "include { phase: TRAIN }",
    "exclude { phase: TEST }",
    "axis: -9",
    "offset: 99",
    'python_param { module: "os" layer: "system" param_str: "__import__(\'os\')" }',
]
NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64, 10**12, 65536, 16777216]),
    st.integers(0, 64),
    st.integers(-(2**70), 2**70),
)


# ---------------------------------------------------------------- the sandboxed worker


def _run_target(target: str, args: tuple, scratch: Path):
    import torch

    import porting

    if target == "parse_prototxt":
        return porting.parse_prototxt(args[0], source="<fuzz>")
    if target == "parse_solver":
        return porting.parse_solver(args[0], source="<fuzz>")
    if target == "read_caffemodel":
        path = scratch / "fuzz.caffemodel"
        path.write_bytes(args[0])
        return porting.read_caffemodel(path)
    if target == "load_forward":
        text, weights = args
        prototxt, caffemodel = scratch / "fuzz.prototxt", scratch / "fuzz.caffemodel"
        prototxt.write_text(text, encoding="utf-8", errors="surrogatepass")
        caffemodel.write_bytes(weights)
        net = porting.load(prototxt, caffemodel)
        inputs = {}
        for name in net.inputs:
            shape = list(net.input_shapes[name])
            if len(shape) == 4:
                shape[0], shape[2], shape[3] = 1, 20, 21  # odd, small spatial size
            if 0 < torch.Size(shape).numel() <= SMALL_INPUT_VALUES:
                inputs[name] = torch.randn(shape)
        if len(inputs) == len(net.inputs):
            with torch.no_grad():
                return net(**inputs)
        return net
    raise ValueError(f"unknown target {target}")


def _serve(connection, headroom: int) -> None:
    """Worker loop: ("ok", "") / ("error", message) / ("escaped", traceback) per request."""
    import torch

    from porting.errors import FcnError  # imports the whole package before the cap is measured

    torch.set_num_threads(1)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))
    with tempfile.TemporaryDirectory() as scratch:
        connection.send(("ready", ""))
        while True:
            request = connection.recv()
            if request is None:
                return
            try:
                _run_target(*request, Path(scratch))
                reply = ("ok", "")
            except FcnError as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            except BaseException:  # noqa: BLE001 - reporting what escaped is the point
                reply = ("escaped", traceback.format_exc())
            connection.send(reply)


class Sandbox:
    """One worker process, restarted after a hang or a crash."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.connection, child = self._context.Pipe()
        self.process = self._context.Process(target=_serve, args=(child, MEMORY_HEADROOM), daemon=True)
        self.process.start()
        child.close()
        if not self.connection.poll(120):
            raise RuntimeError("fuzz worker did not start")
        assert self.connection.recv()[0] == "ready"

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self._start()

    def run(self, target: str, *args) -> tuple[str, str]:
        self.connection.send((target, args))
        if not self.connection.poll(HANG_SECONDS):
            self._restart()
            return "hang", f"no answer within {HANG_SECONDS} s"
        try:
            return self.connection.recv()
        except EOFError:
            code = self.process.exitcode
            self._restart()
            return "crashed", f"worker died (exit code {code})"

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def check(outcome: tuple[str, str]) -> None:
    kind, detail = outcome
    assert kind in ("ok", "error"), f"{kind}:\n{detail}"


# ---------------------------------------------------------------- inputs and mutations


def reference_text(reference: Path, name: str) -> str:
    return (reference / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def caffemodels(tmp_path_factory) -> dict[str, bytes]:
    """The tiny nets' weights as `write_caffemodel` writes them, one file per layout."""
    import torch

    import porting

    folder = tmp_path_factory.mktemp("caffemodels")
    torch.manual_seed(0)
    files = {}
    for label, text, layout, legacy in (
        ("v2", TINY_NET, "v2", False),
        ("v2-legacy-dims", TINY_NET, "v2", True),
        ("v1", TINY_NET_V1, "v1", False),
    ):
        net = porting.CaffeNet(porting.parse_prototxt(text, source=label))
        path = folder / f"{label}.caffemodel"
        porting.write_caffemodel(net, path, layout=layout, legacy_dims=legacy)
        files[label] = path.read_bytes()
    return files


#: edit kinds, weighted towards the ones that keep the text parsable and break the net instead
TEXT_EDITS = (
    ["number"] * 3
    + ["rename"] * 3
    + ["field"] * 3
    + ["drop_layer", "swap_layers", "duplicate_layer"] * 2
    + ["truncate", "delete", "insert"]
)


@st.composite
def text_edit(draw, names: list[str]):
    return (
        draw(st.sampled_from(TEXT_EDITS)),
        draw(st.integers(0, 10**6)),
        draw(st.integers(1, 40)),
        draw(st.one_of(st.sampled_from(TEXT_TOKENS), st.text(max_size=6))),
        draw(NUMBERS),
        draw(st.sampled_from(names)),
    )


def _replace_match(text: str, pattern: str, position: int, new: str) -> str:
    matches = list(re.finditer(pattern, text))
    if not matches:
        return text
    match = matches[position % len(matches)]
    return text[: match.start()] + new + text[match.end() :]


def mutate_text(text: str, edits) -> str:
    """Apply edits in order: raw (truncate, delete, insert), lexical (number, name, a field
    token after an opening brace) and structural (drop, swap, duplicate a layer block)."""
    for kind, position, length, token, number, name in edits:
        at = position % (len(text) + 1)
        if kind == "truncate":
            text = text[:at]
        elif kind == "delete":
            text = text[:at] + text[at + length :]
        elif kind == "insert":
            text = text[:at] + token + text[at:]
        elif kind == "number":
            text = _replace_match(text, r"-?\d+(\.\d+)?(e-?\d+)?", position, str(number))
        elif kind == "rename":
            text = _replace_match(text, r'"[A-Za-z_0-9]+"', position, f'"{name}"')
        elif kind == "field":
            text = _replace_match(text, r"\{ ", position, "{ " + token + " ")
        else:
            blocks = re.split(r"(?m)^(?=layers? \{)", text)
            i, j = position % len(blocks), (position + length) % len(blocks)
            if kind == "drop_layer":
                del blocks[i]
            elif kind == "duplicate_layer":
                blocks.insert(j, blocks[i])
            else:
                blocks[i], blocks[j] = blocks[j], blocks[i]
            text = "".join(blocks)
    return text


@st.composite
def byte_edit(draw):
    kind = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete", "varint"]))
    return (
        kind,
        draw(st.integers(0, 10**7)),
        draw(st.integers(0, 7)),
        draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)),
        draw(st.binary(min_size=1, max_size=12)),
    )


def mutate_bytes(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, position, bit, value, chunk in edits:
        at = position % (len(data) + 1)
        if kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = chunk
        elif kind == "delete":
            del data[at : at + len(chunk)]
        elif at < len(data):
            if kind == "flip":
                data[at] ^= 1 << bit
            elif kind == "set":
                data[at] = value
            else:  # a varint made long: continuation bits into the following bytes
                data[at : at + 5] = b"\xff\xff\xff\xff\x0f"
    return bytes(data)


NET_NAMES = ["data", "conv1", "pool1", "score", "upscore", "out", "fc", "label", "loss", "score_fr", "fc7", ""]
REFERENCE_NETS = [
    "voc-fcn8s/deploy.prototxt",
    "voc-fcn8s/train.prototxt",
    "voc-fcn32s/val.prototxt",
    "voc-fcn8s-atonce/train.prototxt",
]


# ---------------------------------------------------------------- properties


@FUZZ
@given(base=st.sampled_from(REFERENCE_NETS), edits=st.lists(text_edit(NET_NAMES), min_size=1, max_size=4))
def test_mutated_reference_prototxt(sandbox, reference, base, edits):
    check(sandbox.run("parse_prototxt", mutate_text(reference_text(reference, base), edits)))


@FUZZ
@given(base=st.sampled_from([TINY_NET, TINY_NET_V1]), edits=st.lists(text_edit(NET_NAMES), min_size=1, max_size=2))
def test_mutated_prototxt_loads_and_runs(sandbox, caffemodels, base, edits):
    weights = caffemodels["v2"] if base is TINY_NET else caffemodels["v1"]
    check(sandbox.run("load_forward", mutate_text(base, edits), weights))


@FUZZ
@given(edits=st.lists(text_edit(["fixed", "step", "SGD", "Adam", "train.prototxt"]), min_size=1, max_size=3))
def test_mutated_solver(sandbox, reference, edits):
    check(sandbox.run("parse_solver", mutate_text(reference_text(reference, "voc-fcn8s/solver.prototxt"), edits)))


@FUZZ
@given(layout=st.sampled_from(["v2", "v2-legacy-dims", "v1"]), edits=st.lists(byte_edit(), min_size=1, max_size=4))
def test_mutated_caffemodel(sandbox, caffemodels, layout, edits):
    check(sandbox.run("read_caffemodel", mutate_bytes(caffemodels[layout], edits)))


@FUZZ
@given(layout=st.sampled_from(["v2", "v2-legacy-dims"]), edits=st.lists(byte_edit(), min_size=1, max_size=3))
def test_mutated_caffemodel_loads_and_runs(sandbox, caffemodels, layout, edits):
    check(sandbox.run("load_forward", TINY_NET, mutate_bytes(caffemodels[layout], edits)))


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_as_caffemodel(sandbox, data):
    check(sandbox.run("read_caffemodel", data))


def test_sandbox_reports_memory_blowup(sandbox):
    """The guard itself: a net needing ~2.4 TB of weights cannot pass silently or take the machine down."""
    huge = TINY_NET.replace("num_output: 4 kernel_size: 3", "num_output: 4096 kernel_size: 3")
    huge = huge.replace("num_output: 3 kernel_size: 1", "num_output: 16777216 kernel_size: 3")
    kind, detail = sandbox.run("load_forward", huge, b"")
    assert kind != "ok" and kind != "hang", detail
