"""The reference downloader and the one fixture that finds the files.

The downloader cannot reach GitHub here, so it runs against local sources laid out as the
upstream repositories are (a file:// mirror, or a download function standing in for one),
built from the reference copy the fixture finds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fetch_reference
import pytest
from fetch_reference import AUTHORS, CAFFE, FILES, FetchError, fetch, is_complete, listed, upstream, url_of

TESTS = Path(__file__).resolve().parent


def mirror(reference_dir: Path, root: Path) -> str:
    """A file:// copy of the two repositories at their pinned commits; returns its base URL."""
    for local in FILES:
        repository, path = upstream(local)
        target = root / repository.name / repository.commit / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reference_dir / local, target)
    return root.as_uri() + "/{repo}/{commit}/{path}"


def test_file_list_and_sha256_are_those_of_the_reference_copy(reference_dir: Path):
    present = {
        path.relative_to(reference_dir).as_posix()
        for path in reference_dir.rglob("*")
        if path.is_file() and path != reference_dir / "README.md"
    }
    assert present == set(FILES)
    for local, digest in FILES.items():
        assert hashlib.sha256((reference_dir / local).read_bytes()).hexdigest() == digest, local


def test_pins_are_the_commits_the_reference_readme_names(reference_dir: Path):
    readme = (reference_dir / "README.md").read_text()
    assert AUTHORS.name in readme and AUTHORS.commit in readme
    assert CAFFE.name in readme and CAFFE.commit in readme


def test_upstream_paths_follow_the_documented_layout():
    assert upstream("fcn-berkeleyvision/voc-fcn8s/deploy.prototxt") == (AUTHORS, "voc-fcn8s/deploy.prototxt")
    assert upstream("fcn-berkeleyvision-extra/nyud-fcn32s-hha/test.prototxt") == (
        AUTHORS,
        "nyud-fcn32s-hha/test.prototxt",
    )
    assert upstream("fcn-berkeleyvision-extra/data/pascal-README.md") == (AUTHORS, "data/pascal/README.md")
    assert upstream("caffe-models/bvlc_alexnet/deploy.prototxt") == (CAFFE, "models/bvlc_alexnet/deploy.prototxt")
    assert url_of("fcn-berkeleyvision/demo/image.jpg") == (
        "https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/"
        "1305c7378a9f0ab44b2c936f4d60e4687e3d8743/demo/image.jpg"
    )
    with pytest.raises(ValueError, match="not under"):
        upstream("elsewhere/file.txt")


def test_every_file_has_its_own_upstream_path():
    sources = [upstream(local) for local in FILES]
    assert len(set(sources)) == len(sources)


def test_listed_matches_whole_path_parts():
    nets = listed("fcn-berkeleyvision/voc-fcn*/*.prototxt")
    assert "fcn-berkeleyvision/voc-fcn8s/deploy.prototxt" in nets
    assert not [name for name in nets if not name.startswith("fcn-berkeleyvision/voc-fcn")]
    assert len(listed("fcn-berkeleyvision/voc-fcn*/solver.prototxt")) == 4


def test_fetch_from_a_mirror_fills_a_complete_copy_once(reference_dir: Path, tmp_path: Path):
    base_url = mirror(reference_dir, tmp_path / "mirror")
    dest = tmp_path / "cache"
    assert not is_complete(dest)
    fetched = fetch(dest, base_url=base_url)
    assert len(fetched) == len(FILES) and is_complete(dest)
    for local in FILES:
        assert (dest / local).read_bytes() == (reference_dir / local).read_bytes()
    assert fetch(dest, base_url=base_url) == []  # already there: nothing downloaded again


def test_a_file_with_other_content_is_refused_and_not_kept(reference_dir: Path, tmp_path: Path):
    tampered = "fcn-berkeleyvision/voc-fcn8s/deploy.prototxt"

    def download(url: str) -> bytes:
        data = (reference_dir / next(local for local in FILES if url_of(local) == url)).read_bytes()
        return data + b"\n# changed\n" if url == url_of(tampered) else data

    dest = tmp_path / "cache"
    with pytest.raises(FetchError, match=rf"{tampered}: .* has sha256 [0-9a-f]{{64}}, expected {FILES[tampered]}"):
        fetch(dest, download=download)
    assert not (dest / tampered).exists()
    assert not [p for p in (dest / tampered).parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_stale_file_is_downloaded_again(reference_dir: Path, tmp_path: Path):
    base_url = mirror(reference_dir, tmp_path / "mirror")
    dest = tmp_path / "cache"
    fetch(dest, base_url=base_url)
    stale = dest / "caffe-models" / "bvlc_googlenet" / "deploy.prototxt"
    stale.write_text("not the pinned file")
    assert fetch(dest, base_url=base_url) == [stale]
    assert is_complete(dest)


def test_a_failed_download_names_the_file_and_address(tmp_path: Path):
    def download(url: str) -> bytes:
        raise OSError("network unreachable")

    with pytest.raises(FetchError, match=r"cannot download https://raw\.githubusercontent\.com/.*network unreachable"):
        fetch(tmp_path, download=download)


def test_cli_fills_a_directory_from_a_mirror(reference_dir: Path, tmp_path: Path, capsys):
    base_url = mirror(reference_dir, tmp_path / "mirror")
    assert fetch_reference.main(["--dest", str(tmp_path / "out"), "--base-url", base_url]) == 0
    assert is_complete(tmp_path / "out")
    assert f"{len(FILES)} reference files ({len(FILES)} downloaded now)" in capsys.readouterr().err
    assert fetch_reference.main(["--dest", str(tmp_path / "out"), "--base-url", str(tmp_path / "nowhere")]) == 0


def test_cli_reports_a_failure_in_one_line(tmp_path: Path, capsys):
    assert (
        fetch_reference.main(["--dest", str(tmp_path / "out"), "--base-url", (tmp_path / "none").as_uri() + "/{path}"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot download" in err and "Traceback" not in err


# ---------------------------------------------------------------- the fixture, in a clone without ../shared


def run_clone(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on a one-test suite that needs the reference, in a copy of tests/ with nothing beside it."""
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True, exist_ok=True)
    for name in ("conftest.py", "fetch_reference.py"):
        shutil.copy(TESTS / name, clone / "tests" / name)
    shutil.copytree(
        TESTS / "caffe_oracle", clone / "tests" / "caffe_oracle", dirs_exist_ok=True
    )  # conftest's `caffe` fixture
    (clone / "tests" / "test_needs_reference.py").write_text(
        "def test_reads_a_net(reference_dir):\n"
        "    assert (reference_dir / 'fcn-berkeleyvision' / 'voc-fcn8s' / 'deploy.prototxt').is_file()\n"
        "\n\ndef test_needs_nothing():\n    pass\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FCN_")}
    environment.update({"XDG_CACHE_HOME": str(tmp_path / "empty-cache"), **env})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_reference_files_those_tests_skip_naming_the_command(tmp_path: Path):
    result = run_clone(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "python -m tests.fetch_reference" in result.stdout


def test_required_reference_turns_the_skip_into_a_failure(tmp_path: Path):
    result = run_clone(tmp_path, FCN_REQUIRE_REFERENCE="1")
    assert result.returncode == 1
    assert "1 failed, 1 passed" in result.stdout or "1 passed, 1 error" in result.stdout
    assert "python -m tests.fetch_reference" in result.stdout


def test_reference_dir_from_the_environment_or_the_fetch_cache(reference_dir: Path, tmp_path: Path):
    assert "2 passed" in run_clone(tmp_path, FCN_REFERENCE_DIR=str(reference_dir), FCN_REQUIRE_REFERENCE="1").stdout
    cache = tmp_path / "cache-home"
    fetch(cache / "fcn-faithfully" / "reference", base_url=mirror(reference_dir, tmp_path / "mirror"))
    assert "2 passed" in run_clone(tmp_path, XDG_CACHE_HOME=str(cache), FCN_REQUIRE_REFERENCE="1").stdout


def test_a_reference_dir_that_does_not_exist_is_a_usage_error(tmp_path: Path):
    result = run_clone(tmp_path, FCN_REFERENCE_DIR=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert (
        "FCN_REFERENCE_DIR" in result.stdout + result.stderr and "is not a directory" in result.stdout + result.stderr
    )
