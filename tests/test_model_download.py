"""Fetching published weights by name (`python -m porting.models download`, `--download`), only when asked.

Every transfer goes to a real HTTP server on 127.0.0.1 run by the test (port 0, its own
thread, stopped in the fixture's teardown); it answers Range requests the way RFC 7233
says (206 with Content-Range, 416 past the end) and can cut, stall or misannounce.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from error_catalog import jpeg
from helpers import randomize, write_net
from PIL import Image

import porting
from porting import fetch, models
from prototxt import fcn

ROOT = Path(__file__).resolve().parents[1]
NAME = "voc-fcn8s"
FILENAME = "fcn8s-heavy-pascal.caffemodel"  # the authors' name, as their caffemodel-url spells it
STALL_LIMIT_S = 10.0  # a stalled answer gives up by itself after this (the teardown ends it sooner)


@dataclass
class Behaviour:
    """What the server does on the next requests of one file."""

    cut_after: int | None = None  # first answer: the whole Content-Length announced, then close after this many bytes
    stall_after: int | None = None  # first answer: this many bytes, then silence
    announce: int | None = None  # a wrong Content-Length on every full answer


@dataclass
class Server:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range header, status)
    stop: threading.Event = field(default_factory=threading.Event)


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet: the test reads `state.requests`
            pass

        def do_GET(self):
            name = self.path.lstrip("/")
            ranged = self.headers.get("Range")
            if name not in state.files:
                return self._answer(404, {}, b"")
            data = state.files[name]
            behaviour = state.behaviour.setdefault(name, Behaviour())
            if behaviour.stall_after == 0:
                behaviour.stall_after = None
                state.requests.append((name, ranged, 0))
                state.stop.wait(STALL_LIMIT_S)
                return
            start = int(re.fullmatch(r"bytes=(\d+)-", ranged).group(1)) if ranged else 0
            if start >= len(data):
                return self._answer(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
            if ranged:
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                return self._answer(206, headers, data[start:])
            if behaviour.cut_after is not None:
                cut, behaviour.cut_after = behaviour.cut_after, None
                return self._answer(200, {}, data, send=cut)
            if behaviour.stall_after is not None:
                stall, behaviour.stall_after = behaviour.stall_after, None
                self._answer(200, {}, data, send=stall)
                state.stop.wait(STALL_LIMIT_S)
                return
            return self._answer(200, {}, data, length=behaviour.announce)

        def _answer(self, status, headers, body, send=None, length=None):
            state.requests.append((self.path.lstrip("/"), self.headers.get("Range"), status))
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(length or len(body))}.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[:send])
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (a free port) serving `files`; stopped, its threads ended, after the test."""
    state = Server(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache ($FCN_MODELS_DIR); no mirror set."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(models.MODELS_DIR_VARIABLE, str(folder))
    monkeypatch.delenv(models.MODELS_MIRROR_VARIABLE, raising=False)
    return folder


@pytest.fixture(scope="module")
def narrow_files(tmp_path_factory) -> tuple[Path, bytes]:
    """voc-fcn8s's deploy net at 1/16 width (a `prototxt/` folder) and random weights for it, as caffemodel bytes."""
    folder = tmp_path_factory.mktemp("narrow")
    torch.manual_seed(0)
    net = randomize(porting.CaffeNet(fcn.build(NAME, "deploy", width=1 / 16)), seed=5, bilinear_deconv=True)
    (folder / "prototxt" / NAME).mkdir(parents=True)
    prototxt, caffemodel = write_net(net, folder, "weights")
    prototxt.rename(folder / "prototxt" / NAME / "deploy.prototxt")
    return folder / "prototxt", caffemodel.read_bytes()


@pytest.fixture
def weights(narrow_files, server, monkeypatch) -> bytes:
    """The registry's voc-fcn8s pointed at the narrow net; the server holds its weights under the authors' name."""
    prototxt_dir, data = narrow_files
    monkeypatch.setattr(models, "PROTOTXT_DIR", prototxt_dir)
    server.files[FILENAME] = data
    return data


def download(*argv: str) -> int:
    return models.main(["download", *argv])


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_whole_transfer_lands_in_the_cache(cache, server, weights, capsys):
    assert download(NAME, "--mirror", server.url) == 0
    assert (cache / FILENAME).read_bytes() == weights
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # no part file, no temporary
    assert server.requests == [(FILENAME, None, 200)]
    assert f"wrote {cache / FILENAME}: {len(weights):,} bytes" in capsys.readouterr().err
    assert download(NAME, "--mirror", server.url) == 0  # already there: nothing fetched again
    assert len(server.requests) == 1


def test_a_cut_transfer_resumes_with_a_range_request(cache, server, weights):
    half = len(weights) // 2
    server.behaviour[FILENAME] = Behaviour(cut_after=half)
    assert download(NAME, "--mirror", server.url, "--quiet") == 0
    assert server.requests == [(FILENAME, None, 200), (FILENAME, f"bytes={half}-", 206)]
    assert (cache / FILENAME).read_bytes() == weights
    assert not fetch.part_path(cache / FILENAME).exists()


def test_a_part_left_by_an_earlier_run_is_resumed(cache, server, weights):
    cache.mkdir()
    fetch.part_path(cache / FILENAME).write_bytes(weights[:1000])
    assert download(NAME, "--mirror", server.url, "--quiet") == 0
    assert server.requests == [(FILENAME, "bytes=1000-", 206)]
    assert (cache / FILENAME).read_bytes() == weights


def test_a_complete_part_left_before_its_rename_lands(cache, server, weights):
    cache.mkdir()
    fetch.part_path(cache / FILENAME).write_bytes(weights)
    assert download(NAME, "--mirror", server.url, "--quiet") == 0
    assert server.requests == [(FILENAME, f"bytes={len(weights)}-", 416)]
    assert (cache / FILENAME).read_bytes() == weights


def test_a_dead_link_names_the_url_the_file_and_where_a_copy_goes(cache, server, narrow_files, capsys):
    assert download(NAME, "--mirror", f"{server.url}/gone") == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{server.url}/gone/{FILENAME}" in line and "HTTP 404" in line and str(cache / FILENAME) in line
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_names_the_url_the_file_and_where_a_copy_goes(cache, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert download(NAME, "--mirror", f"http://127.0.0.1:{port}") == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"http://127.0.0.1:{port}/{FILENAME}" in line and "refused" in line and str(cache / FILENAME) in line


def test_a_size_other_than_announced_is_refused(cache, server, weights, capsys):
    server.behaviour[FILENAME] = Behaviour(announce=len(weights) + 4096)
    assert download(NAME, "--mirror", server.url, "--quiet") == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"announced {len(weights) + 4096} bytes, then {len(weights)}" in line
    assert not (cache / FILENAME).exists() and not fetch.part_path(cache / FILENAME).exists()


def test_a_stalled_server_times_out_quickly(cache, server, weights, capsys):
    server.behaviour[FILENAME] = Behaviour(stall_after=0)
    began = time.monotonic()
    assert download(NAME, "--mirror", server.url, "--timeout", "0.3") == 1
    assert time.monotonic() - began < 5
    line = one_error_line(capsys.readouterr().err)
    assert "no answer within 0.3 s" in line and FILENAME in line and not (cache / FILENAME).exists()


def test_a_transfer_stalled_midway_resumes(cache, server, weights):
    server.behaviour[FILENAME] = Behaviour(stall_after=3000)
    assert download(NAME, "--mirror", server.url, "--timeout", "0.3", "--quiet") == 0
    assert server.requests == [(FILENAME, None, 200), (FILENAME, "bytes=3000-", 206)]
    assert (cache / FILENAME).read_bytes() == weights


def test_an_unwritable_cache_is_a_clear_error(tmp_path, server, weights, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(models.MODELS_DIR_VARIABLE, str(blocker / "models"))
    assert download(NAME, "--mirror", server.url) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(blocker / "models") in line and models.MODELS_DIR_VARIABLE in line and "Not a directory" in line
    assert server.requests == []


def test_a_second_download_of_the_same_file_is_refused(cache, server, weights, capsys):
    import fcntl

    cache.mkdir()
    part = fetch.part_path(cache / FILENAME)
    part.write_bytes(weights[:10])
    with part.open("ab") as other:  # another process's download holds the part
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert download(NAME, "--mirror", server.url) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{part}: another download of {FILENAME}" in line
    assert server.requests == [] and part.read_bytes() == weights[:10]


@pytest.fixture
def hashed(weights, server, monkeypatch):
    """A test-only registry entry whose sha256 is recorded (hashlib's digest of the served bytes)."""

    def register(digest: str) -> models.PublishedModel:
        entry = models.PublishedModel(
            "test-hashed", f"{NAME}/deploy.prototxt", f"http://unused.invalid/{FILENAME}", "voc", "voc2011seg11valid",
            sha256=digest,
        )  # fmt: skip
        monkeypatch.setitem(models.MODELS, entry.name, entry)
        return entry

    return register


def test_the_recorded_sha256_is_checked(cache, server, weights, hashed, capsys):
    hashed(hashlib.sha256(weights).hexdigest())
    assert download("test-hashed", "--mirror", server.url, "--quiet") == 0
    assert (cache / FILENAME).read_bytes() == weights
    (cache / FILENAME).unlink()
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    hashed(wrong)
    assert download("test-hashed", "--mirror", server.url, "--quiet") == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"its sha256 is {hashlib.sha256(weights).hexdigest()}, expected {wrong}" in line
    assert not (cache / FILENAME).exists() and not fetch.part_path(cache / FILENAME).exists()


def test_the_mirror_variable_and_dir(tmp_path, cache, server, weights, monkeypatch):
    monkeypatch.setenv(models.MODELS_MIRROR_VARIABLE, server.url + "/")
    other = tmp_path / "elsewhere"
    assert download(NAME, "--dir", str(other), "--quiet") == 0
    assert (other / FILENAME).read_bytes() == weights and not cache.exists()
    assert server.requests == [(FILENAME, None, 200)]


def test_listing_and_download_share_the_command(cache, server, weights, capsys):
    assert models.main([NAME]) == 0
    assert "(cached)" not in capsys.readouterr().out
    assert models.main(["--quiet", "download", NAME, "--mirror", server.url]) == 0
    assert models.main([]) == 0
    listing = capsys.readouterr().out
    assert f"{FILENAME}  <- {models.get(NAME).url} (cached)" in listing and len(models.MODELS) > 1
    with pytest.raises(SystemExit) as exit_info:
        models.main(["download"])  # a name is required
    assert exit_info.value.code == 2


def test_download_arguments_are_documented():
    parser = models.download_parser()
    assert parser.prog == "python -m porting.models download"
    assert all(action.help and action.help.strip() for action in parser._actions)


def test_piped_download_draws_no_bar(cache, server, weights, tmp_path):
    env = {**os.environ, models.MODELS_DIR_VARIABLE: str(cache), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "porting.models", "download", NAME, "--mirror", server.url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and result.stdout == ""
    assert (cache / FILENAME).read_bytes() == weights


# ---------------------------------------------------------------- --model and --download on the commands


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an address fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args[0] if args else kwargs}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    image = tmp_path / "photo.jpg"
    image.write_bytes(jpeg(24, 32))
    return {
        "eval.segment": [str(image), "--model", NAME, "--out", str(tmp_path / "seg"), "--quiet", "--device", "cpu"],
        "porting.convert": ["--model", NAME, "--out", str(tmp_path / "m.pt"), "--quiet"],
        "porting.onnx": ["--model", NAME, "--out", str(tmp_path / "m.onnx"), "--quiet"],
    }


def _main(module: str):
    return __import__(module, fromlist=["main"]).main


@pytest.mark.parametrize("module", ["eval.segment", "porting.convert", "porting.onnx"])
def test_a_plain_model_flag_never_downloads(module, tmp_path, cache, server, weights, no_network, monkeypatch, capsys):
    monkeypatch.setenv(models.MODELS_MIRROR_VARIABLE, server.url)  # even with a mirror at hand
    assert _main(module)(_commands(tmp_path)[module]) == 1
    line = one_error_line(capsys.readouterr().err)
    for part in (
        str(cache / FILENAME),
        models.get(NAME).url,
        f"python -m porting.models download {NAME}",
        "--download",
    ):
        assert part in line
    assert server.requests == [] and not cache.exists()


def test_a_plain_model_flag_on_eval_table_never_downloads(tmp_path, cache, server, weights, no_network, capsys):
    from eval.table import main as table
    from fcndata.synthetic import write_synthetic

    paths = write_synthetic(tmp_path / "data", n_train=1, n_val=3, size=(16, 20))
    argv = ["--split", "voc2011seg11valid", "--voc-root", str(paths.voc_root), "--sbd-root", str(paths.sbd_root)]
    assert table([*argv, "--model", NAME, "--quiet", "--device", "cpu"]) == 1
    assert f"python -m porting.models download {NAME}" in one_error_line(capsys.readouterr().err)
    assert server.requests == []


def test_download_flag_on_segment_and_convert(tmp_path, cache, server, weights, monkeypatch):
    """`--download` fetches once; then the cached file serves every command as the file given by hand would."""
    monkeypatch.setenv(models.MODELS_MIRROR_VARIABLE, server.url)
    commands = _commands(tmp_path)
    given = tmp_path / "given.caffemodel"
    given.write_bytes(weights)

    assert _main("porting.convert")([*commands["porting.convert"], "--download"]) == 0
    assert server.requests == [(FILENAME, None, 200)] and (cache / FILENAME).read_bytes() == weights
    by_hand = tmp_path / "by-hand.pt"
    assert (
        _main("porting.convert")(["--model", NAME, "--caffemodel", str(given), "--out", str(by_hand), "--quiet"]) == 0
    )
    ours, theirs = porting.load(tmp_path / "m.pt").state_dict(), porting.load(by_hand).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)

    (cache / FILENAME).unlink()
    assert _main("eval.segment")([*commands["eval.segment"], "--download"]) == 0
    assert len(server.requests) == 2
    segment_given = ["--model", NAME, "--caffemodel", str(given), "--out", str(tmp_path / "by-hand"), "--quiet"]
    assert _main("eval.segment")([commands["eval.segment"][0], *segment_given, "--device", "cpu"]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "seg" / "photo.png")),
        np.asarray(Image.open(tmp_path / "by-hand" / "photo.png")),
    )

    from porting.onnx import _load_net, build_parser  # the export itself is tested in test_onnx.py

    net = _load_net(build_parser().parse_args(commands["porting.onnx"]))  # cached: no --caffemodel, no download
    assert all(torch.equal(net.state_dict()[key], value) for key, value in ours.items())
    assert len(server.requests) == 2


def test_eval_table_pairs_caffemodels_first_with_prototxts_then_models(tmp_path, cache, server, weights, no_network):
    from eval.nets import net_sources
    from eval.table import build_parser

    cache.mkdir()
    (cache / FILENAME).write_bytes(weights)
    other = tmp_path / "other.caffemodel"
    other.write_bytes(weights)
    prototxt = models.get(NAME).deploy_path()
    parser = build_parser()
    argv = ["--split", "voc2011seg11valid", "--prototxt", str(prototxt), "--caffemodel", str(other), "--model", NAME]
    nets = net_sources(parser.parse_args(argv), parser)
    assert [net.name for net in nets] == ["other", NAME]
    expected = porting.load(prototxt, other).state_dict()
    for source in nets:
        state = source.load().state_dict()
        assert all(torch.equal(state[key], value) for key, value in expected.items())
    with pytest.raises(SystemExit):  # more weights than nets
        net_sources(parser.parse_args([*argv, "--caffemodel", str(other), "--caffemodel", str(other)]), parser)


def test_download_flag_without_model_is_a_usage_error(tmp_path, capsys):
    commands = _commands(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _main("porting.convert")(
            ["--prototxt", "p", "--caffemodel", "w", "--out", str(tmp_path / "m.pt"), "--download"]
        )
    assert exit_info.value.code == 2 and "--download" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _main("eval.segment")([commands["eval.segment"][0], "--checkpoint", "m.pt", "--out", "o", "--download"])
    assert exit_info.value.code == 2


def test_the_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(models.MODELS_DIR_VARIABLE, str(tmp_path / "mine"))
    assert models.models_dir() == tmp_path / "mine" and models.get(NAME).cached() == tmp_path / "mine" / FILENAME
    monkeypatch.delenv(models.MODELS_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.models_dir() == tmp_path / "xdg" / "fcn-faithfully" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.models_dir() == tmp_path / "home" / ".cache" / "fcn-faithfully" / "models"
