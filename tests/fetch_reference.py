"""Download the authors' reference files that the tests compare against, pinned by commit.

    python -m tests.fetch_reference [--dest DIR]

The tests look for these files in `$FCN_REFERENCE_DIR`, else in `../shared/reference` beside
the repository, else in the cache this command fills (`--dest`, default `CACHE_DIR`). Each
file comes from the authors' repository or Caffe's at the commit below, byte for byte, and
is checked against its sha256 before it is kept; nothing from these repositories is copied
into this one.

Layout (the same as `../shared/reference`): `fcn-berkeleyvision/X` and
`fcn-berkeleyvision-extra/X` are `X` in the authors' repository (but
`fcn-berkeleyvision-extra/data/pascal-README.md` is `data/pascal/README.md`), and
`caffe-models/X` is `models/X` in Caffe's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Repository:
    """A GitHub repository at a pinned commit."""

    name: str
    commit: str


AUTHORS = Repository("shelhamer/fcn.berkeleyvision.org", "1305c7378a9f0ab44b2c936f4d60e4687e3d8743")
CAFFE = Repository("BVLC/caffe", "9b891540183ddc834a02b2bd81b31afae71b2153")

#: raw-file address of `path` in `repo` at `commit`
BASE_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

#: where the command puts the files unless told otherwise, and the tests' last place to look
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcn-faithfully" / "reference"

#: local path -> sha256 of the file at the pinned commit
FILES: dict[str, str] = {
    "caffe-models/bvlc_alexnet/deploy.prototxt": "b564ba76416b4ac1e062c6621cbd80d9c19304ba152d9d791c75870f3182c4fa",
    "caffe-models/bvlc_alexnet/train_val.prototxt": "e17cc959f1f8b67c9c9cbd10db5ab8aa4513d0c2429c292391c04c1d9c949023",
    "caffe-models/bvlc_googlenet/deploy.prototxt": "fa36cd4112a3240a29600a5aa35333f31bec33daa1a6085b0af308a9f50f0c50",
    "caffe-models/bvlc_googlenet/train_val.prototxt": "18ddbb88c588600354625ecccd85dfe9a142b7d79778f4b8728cb2d5fe056784",
    "caffe-models/bvlc_reference_caffenet/deploy.prototxt": "922248a4d2f6aac1cc8e7e5dbd996cc2ecd3356480d67c198f6cf96b12311a04",
    "caffe-models/bvlc_reference_caffenet/train_val.prototxt": "7053c6a0210b3f4575283f6e1ea63408057d48741de827204d0a11b5adeb5c8f",
    "fcn-berkeleyvision-extra/data/nyud/README.md": "439afe124f34ee0db311e13ab88c088c4b115e1a9d5c14c1e303efb962e2aa03",
    "fcn-berkeleyvision-extra/data/nyud/classes.txt": "70c98794343c2996e43a8ee696dfc2d209789ff0d65420f4565ed9dd36c088aa",
    "fcn-berkeleyvision-extra/data/nyud/test.txt": "f717536bdff71424f6f7cd0674cf6ac4381b2cffaaf942230b962a9f40671e7a",
    "fcn-berkeleyvision-extra/data/nyud/train.txt": "8db94b4a9b33494c20319c6e79073aa7b842a683e6d263c3873d6ee95cebf759",
    "fcn-berkeleyvision-extra/data/nyud/val.txt": "cd278b1232fe5c2347994a9a3c13cd916aa2e72def51b9698993a2e8936797f5",
    "fcn-berkeleyvision-extra/data/pascal-README.md": "28852fc79564e3db241ab084cdef64c2a322b1c727e42fb37638d9bd499c11d1",
    "fcn-berkeleyvision-extra/data/pascal-context/README.md": "23474a57d8f508824e4f29a9acee744067678b3acfeda0be4979156471c25190",
    "fcn-berkeleyvision-extra/data/pascal-context/classes-400.txt": "5d1672fb298b429f37561402b297b98706f72713bb9a69650fe0961f8faf0fe1",
    "fcn-berkeleyvision-extra/data/pascal-context/classes-59.txt": "0a570a766be2aff841a7e9b2cb7f0ce8157bfa13ec4778276e352c7518132ed0",
    "fcn-berkeleyvision-extra/data/sift-flow/README.md": "d7ef5262a2f21275ee8c85553b2d2b4ad13b998192b82db73edfa8dcc7eb6f6d",
    "fcn-berkeleyvision-extra/data/sift-flow/classes.txt": "9e9c657a9acbb1d87eb505c3baa74809e5460247e297ac814cf6f0717c8da01f",
    "fcn-berkeleyvision-extra/data/sift-flow/test.txt": "d9d024d06b1ed2139b0e1bdbc78ede9897c3389cd588cd5c37268a931c1d36ae",
    "fcn-berkeleyvision-extra/data/sift-flow/trainval.txt": "4321de2b164556875661a66c64e6b5ebe1493a6e3dfa51d93700e3d17dbedfe7",
    "fcn-berkeleyvision-extra/ilsvrc-nets/README.md": "fd48bee782a5a105ef99be29c31036260bc8f30e1d49639a11b545c18ef37691",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-d/solver.prototxt": "91d239f98fc7dfa5ab7a354a08bd5a28c86c41e9973a7f42d33b3e6e32427d8e",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-d/test.prototxt": "c33345b78563490d3563f94d168f9098c4edc660ce8bbd9739ce49afc10f1576",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-d/trainval.prototxt": "dbf64806932927ecaa28e3c13439b46859b611ef121a073f634d1cfb449411bb",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-hha/caffemodel-url": "b1e51563fcbda84178b07bb822e22023d6b3d535dd39da81cbd92a19a5cccdf1",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-hha/solver.prototxt": "bdf5e670dfa4cdb59b8ef3e98107e27901755e55a0cee24dce756e1f9b5dd312",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-hha/test.prototxt": "df9b75ff5284fbb29257bee43ae58ee2d20b13fa4193b78b0c0e48331d0a250e",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color-hha/trainval.prototxt": "931faa59bac8c63e08092077f1a080e904032baf247491a54223164581fae806",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color/caffemodel-url": "b387e780f550c38ad47de28026d65176730659c91546748a3e1bbf61a15cdd90",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color/solver.prototxt": "91d239f98fc7dfa5ab7a354a08bd5a28c86c41e9973a7f42d33b3e6e32427d8e",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color/test.prototxt": "7612840df39ddab8bdb8b1a8bb7f9a7650e4dc1aa7791401638d5a3715d4aa23",
    "fcn-berkeleyvision-extra/nyud-fcn32s-color/trainval.prototxt": "00900c24f08e21fe0fcee3c540d0962c364e578912e5fccde3a0ba814e05bb2a",
    "fcn-berkeleyvision-extra/nyud-fcn32s-hha/caffemodel-url": "a24245af7411d98a7b02a841516574893ecc7c56661b77a5d268a2e25951dc83",
    "fcn-berkeleyvision-extra/nyud-fcn32s-hha/solver.prototxt": "91d239f98fc7dfa5ab7a354a08bd5a28c86c41e9973a7f42d33b3e6e32427d8e",
    "fcn-berkeleyvision-extra/nyud-fcn32s-hha/test.prototxt": "dc2f3f23866df2b70b1cc54c8b97ad4cb9fd4920b7459e7650c38b428d0e5345",
    "fcn-berkeleyvision-extra/nyud-fcn32s-hha/trainval.prototxt": "9ddcbb05c55d3d4743ba89ec207235ea1e007b11de634ddd1f00f520d074d575",
    "fcn-berkeleyvision-extra/pascalcontext-fcn16s/caffemodel-url": "7b84739f4e5b7f33b5ad10d89382b3aa4d3aecea8489c43390bb787810728f76",
    "fcn-berkeleyvision-extra/pascalcontext-fcn16s/solver.prototxt": "6c31b141a738647f87dde0001fd2c2258bf8d45cb6f16ed37c9804ada9f8c88f",
    "fcn-berkeleyvision-extra/pascalcontext-fcn16s/train.prototxt": "5394a22746301383556e611ffaed9295ab796ff92c945ab5189f27d5a953ca77",
    "fcn-berkeleyvision-extra/pascalcontext-fcn16s/val.prototxt": "a874dacd55f4e0d88e464d1b26264aab6936e036cd2dead86068cebb10c3e504",
    "fcn-berkeleyvision-extra/pascalcontext-fcn32s/caffemodel-url": "d551d2c5f946d4deec8880dfab78fb70f63413a02ccfd586e4df6e960b4b0982",
    "fcn-berkeleyvision-extra/pascalcontext-fcn32s/solver.prototxt": "c8d319e7ff0bd10ccb614d113dd258eeaee4454f62833ca7e090217f3aa3d01b",
    "fcn-berkeleyvision-extra/pascalcontext-fcn32s/train.prototxt": "cf6cd0fd68eae390fe11189fdd9bb1d33a2cb9bce9b1b01106e34ea8f4dddb2f",
    "fcn-berkeleyvision-extra/pascalcontext-fcn32s/val.prototxt": "c87f86eed3df1c813ac7975f135772177d32fb3348d1ba372fa46d9aa22b373f",
    "fcn-berkeleyvision-extra/pascalcontext-fcn8s/caffemodel-url": "01b02ed22e05119d59f990da1efd66e0f94e669953a2b0edfa10c8d058f5fe01",
    "fcn-berkeleyvision-extra/pascalcontext-fcn8s/solver.prototxt": "f749583a95fe7cad1567825ed7e59d6a2a0026ce387fd70ff55130a6a63799ee",
    "fcn-berkeleyvision-extra/pascalcontext-fcn8s/train.prototxt": "8c21cf4a256367a6b09cbdf54bc35c8dce4dc9c62d800379aa83238744e128d0",
    "fcn-berkeleyvision-extra/pascalcontext-fcn8s/val.prototxt": "9b1da4b4262d70e301d6435a46ec837050b54891d4aaa064cd813598b7a2dc7b",
    "fcn-berkeleyvision-extra/siftflow-fcn16s/caffemodel-url": "1869368c6de8787836a9e39268a47d964daf39a5d91fc9af2454dead23b6f989",
    "fcn-berkeleyvision-extra/siftflow-fcn16s/solver.prototxt": "66af5c190d682d4f655b0cf0b31f886b269ba3b7cb9ce721963c12a5721198e7",
    "fcn-berkeleyvision-extra/siftflow-fcn16s/test.prototxt": "506ef87d9b8e3c0fabb9c30b06089d9b3ce00ef174ed63912305fc59919f6d77",
    "fcn-berkeleyvision-extra/siftflow-fcn16s/trainval.prototxt": "c285dbca0bf3f76781b82384e9ae3b0c67987a60cbf49f31bea4c140658bd520",
    "fcn-berkeleyvision-extra/siftflow-fcn32s/caffemodel-url": "9236075791dbdcd531553e7625cce2d50d9bbf7eb14d200b378e33bb469093dd",
    "fcn-berkeleyvision-extra/siftflow-fcn32s/solver.prototxt": "c8b3edb5773dc49fa0bd20293eb3162461780b9f986fe31154f6dc99142601d6",
    "fcn-berkeleyvision-extra/siftflow-fcn32s/test.prototxt": "436ad2d33bd108b19570c4d1d9c1ae01a693c902e6fe8e8bfa9a0b2c3cbf80e3",
    "fcn-berkeleyvision-extra/siftflow-fcn32s/trainval.prototxt": "304ee9631e231be319b78aaae86d7fc0774c9dcca3fe85b095128a50b5025f24",
    "fcn-berkeleyvision-extra/siftflow-fcn8s/caffemodel-url": "b38b61e29e12c68ffd40c0cb1718b0bc54d3d47b4b9138af96e166c0897e6962",
    "fcn-berkeleyvision-extra/siftflow-fcn8s/solver.prototxt": "66af5c190d682d4f655b0cf0b31f886b269ba3b7cb9ce721963c12a5721198e7",
    "fcn-berkeleyvision-extra/siftflow-fcn8s/test.prototxt": "c72bb3773f7b4a5fac6acc98bff5037644d51f57747b98224113e1f3c9e0827b",
    "fcn-berkeleyvision-extra/siftflow-fcn8s/trainval.prototxt": "781f04af03c5c257593318ad4018af84d52bf7c1f7ac8d6ce8c0a89ca4c6f028",
    "fcn-berkeleyvision-extra/voc-fcn-alexnet/caffemodel-url": "58e40143b81665952f7d5a3ec0338b68f98ed42f02f8a02d25f201f423e438ef",
    "fcn-berkeleyvision-extra/voc-fcn-alexnet/solver.prototxt": "b9984d832c943f7686f4ca136b661d9c853bb29ab4c017c2ae8284f4f67676df",
    "fcn-berkeleyvision-extra/voc-fcn-alexnet/train.prototxt": "6bf85b119fba7429e150a4c91a0e5a3d7351e98433c6a2d46b182ccfe84ab419",
    "fcn-berkeleyvision-extra/voc-fcn-alexnet/val.prototxt": "0b82d428241f19ed905f9b6b487e8dabc97f25fac815f65a002c2704294831d6",
    "fcn-berkeleyvision/data/pascal/classes.txt": "7337a2b06728385fb3e1106416c67bfddf69628598b1f2f0db6a63cd63fb6b1e",
    "fcn-berkeleyvision/data/pascal/seg11valid.txt": "4ca991bd72c251fd2485eaa9e29536502ea3800d1b1c17c151fd6a04bcfbc2cc",
    "fcn-berkeleyvision/demo/image.jpg": "657b36fed1ea84a44fde2ad641d52726947e9ff23652836273730f7b1ee0d7d8",
    "fcn-berkeleyvision/demo/label.png": "baa7290b79283e4b4812436587af4585d5810da38752b4dfedf7b0ac910d6568",
    "fcn-berkeleyvision/demo/output.png": "954592a652351795e2176a9a3cb4c709fc0a3ec2fda76aa1fd6863df221e6a85",
    "fcn-berkeleyvision/voc-fcn16s/caffemodel-url": "18038f151d5df4defacdb33e40b4b938a16a1abf670ad2dc63a6d9c03337d957",
    "fcn-berkeleyvision/voc-fcn16s/solver.prototxt": "c877c6cefe96dfffaa4c22af5db76a45a7190ba7b0447445cd495565ff34a121",
    "fcn-berkeleyvision/voc-fcn16s/train.prototxt": "59f3e5a3787feb515f19aa6f9c6f35492098122d90eae3cff348d650c6bfdcc9",
    "fcn-berkeleyvision/voc-fcn16s/val.prototxt": "7573abda0b1b701e5305bc97eb357b168ffc98097d861a851f15b52a9f1cbc79",
    "fcn-berkeleyvision/voc-fcn32s/caffemodel-url": "cf681ae30174cf01358f75f3ab4da6454e0ce11f2e554191618548e54ac15734",
    "fcn-berkeleyvision/voc-fcn32s/solver.prototxt": "5648bc67aaa9d928a4845028e0b445d7043dc7140f12e7aca0da1583b2ab8aad",
    "fcn-berkeleyvision/voc-fcn32s/train.prototxt": "7bc33447253918600feada2ac214ca1f67cbe612ec67fdd596ec3c7f7168328e",
    "fcn-berkeleyvision/voc-fcn32s/val.prototxt": "fd7d3cd56d960a5129260cbd96d9e287161915dfe8fb34ad27cd8d2a4c11a624",
    "fcn-berkeleyvision/voc-fcn8s-atonce/caffemodel-url": "bf491bb57e41a145a5fb8a5b11b37f5fa031823784bec714ab9d614db1860ed6",
    "fcn-berkeleyvision/voc-fcn8s-atonce/solver.prototxt": "d997aa800d1c7417de1e0a6bf5c131a5d6420016f07fed99de77bb914f82bc2e",
    "fcn-berkeleyvision/voc-fcn8s-atonce/train.prototxt": "0514f149d8df66641459c51da0dff71344dcb5eef22ebf3cd1ef80869a09e97e",
    "fcn-berkeleyvision/voc-fcn8s-atonce/val.prototxt": "c791f892dd0fe9b9bb22e21bcc8d4e8ae9a3933b5b763e9a29fb8363cb4e740d",
    "fcn-berkeleyvision/voc-fcn8s/caffemodel-url": "6aa6331dd317eb0b9c19be53978de145786f9721319e32a9833b0746b92d381e",
    "fcn-berkeleyvision/voc-fcn8s/deploy.prototxt": "4e87632aba2cda27e7dc810a6197d6f66fcd631045a595dec6bb4a4c90b7e9ca",
    "fcn-berkeleyvision/voc-fcn8s/solver.prototxt": "108600b7f42d0bd09105ea52895b234dd27d9e5b21c6ca2bdc6c49bf7f0d6a60",
    "fcn-berkeleyvision/voc-fcn8s/train.prototxt": "e2984e1383f2fddeab41b0d695a2283808a6958e370dfd0d06dc80e185eed70f",
    "fcn-berkeleyvision/voc-fcn8s/val.prototxt": "c3017fe79b7472075576982abec5ce1ccd35c098f306580c0f6a02425b9b9f6f",
}

#: local paths whose upstream path is not the local one less its first folder
_RENAMED = {"fcn-berkeleyvision-extra/data/pascal-README.md": "data/pascal/README.md"}
_REPOSITORY_OF_FOLDER = {"fcn-berkeleyvision": AUTHORS, "fcn-berkeleyvision-extra": AUTHORS, "caffe-models": CAFFE}


class FetchError(Exception):
    """A download failed or a file is not the pinned one."""


def upstream(local: str) -> tuple[Repository, str]:
    """The repository and path inside it that the local reference path `local` comes from.

    Raises:
        ValueError: `local` is under no folder this layout knows.
    """
    folder, _, rest = local.partition("/")
    if folder not in _REPOSITORY_OF_FOLDER or not rest:
        raise ValueError(f"{local}: not under {', '.join(_REPOSITORY_OF_FOLDER)}")
    repository = _REPOSITORY_OF_FOLDER[folder]
    if local in _RENAMED:
        return repository, _RENAMED[local]
    return repository, f"models/{rest}" if repository is CAFFE else rest


def listed(pattern: str) -> list[str]:
    """The reference files (local paths) that `pattern` matches part by part (`*` stays inside a folder), sorted.

    Tests parametrize over this list at collection time, whether or not the files are present.
    """
    parts = len(PurePosixPath(pattern).parts)
    return sorted(
        local for local in FILES if len(PurePosixPath(local).parts) == parts and PurePosixPath(local).match(pattern)
    )


def url_of(local: str, base_url: str = BASE_URL) -> str:
    """The address `local` is downloaded from (`base_url` with `{repo}`, `{commit}`, `{path}`)."""
    repository, path = upstream(local)
    return base_url.format(repo=repository.name, commit=repository.commit, path=path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_complete(directory: Path) -> bool:
    """Whether `directory` holds every reference file with its pinned content."""
    return all(
        (directory / local).is_file() and sha256((directory / local).read_bytes()) == digest
        for local, digest in FILES.items()
    )


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def fetch(
    dest: Path,
    *,
    base_url: str = BASE_URL,
    download: Callable[[str], bytes] = _download,
    log: Callable[[str], None] = lambda message: None,
) -> list[Path]:
    """Put every file of `FILES` under `dest`, skipping those already there with the right content.

    Each file is written to a temporary name and renamed only once its sha256 matches, so an
    interrupted or tampered download never leaves a file that the tests would take as the pinned one.

    Args:
        dest: the directory to fill (created if missing).
        base_url: where files come from, formatted with `repo`, `commit` and `path`.
        download: reads one address (`urllib` by default).
        log: receives one line per file downloaded.

    Returns:
        The paths of the files downloaded now (empty when all were already present).

    Raises:
        FetchError: a download failed or its content is not the pinned one.
    """
    fetched = []
    for local, digest in FILES.items():
        target = dest / local
        if target.is_file() and sha256(target.read_bytes()) == digest:
            continue
        url = url_of(local, base_url)
        try:
            data = download(url)
        except OSError as error:
            raise FetchError(f"{local}: cannot download {url}: {error}") from None
        got = sha256(data)
        if got != digest:
            raise FetchError(f"{local}: {url} has sha256 {got}, expected {digest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as part:
            part.write(data)
        os.replace(part.name, target)
        fetched.append(target)
        log(f"fetched {local}")
    return fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fetch_reference",
        description="Download the authors' and Caffe's reference files the tests compare against "
        "(pinned commits, sha256-checked).",
    )
    parser.add_argument("--dest", type=Path, default=CACHE_DIR, help=f"directory to fill (default: {CACHE_DIR})")
    parser.add_argument(
        "--base-url",
        default=BASE_URL,
        help="address pattern with {repo}, {commit} and {path}, for a mirror (default: GitHub's raw files)",
    )
    args = parser.parse_args(argv)
    try:
        fetched = fetch(args.dest, base_url=args.base_url, log=lambda message: print(message, file=sys.stderr))
    except (FetchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {len(FILES)} reference files ({len(fetched)} downloaded now)", file=sys.stderr)
    if args.dest != CACHE_DIR:
        print(f"point the tests at it with FCN_REFERENCE_DIR={args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
