"""Download one file into a folder over HTTP, resumably, landing it whole or not at all.

The bytes go to `<name>.part` beside the target; a transfer cut short is resumed from
that file with an HTTP Range request (within the call, and on the next call after a
crash). The size the server announced (Content-Length, or the total of a
Content-Range) and, where known, a sha256 are checked before the part is renamed to
the target. A server silent for `timeout` seconds counts as a failure; a second
process downloading the same file is refused (the part is locked). Every failure
is one `FetchError` naming the URL, the file and where a copy obtained elsewhere goes.
(`porting.models` puts the published weights in its cache with it.)
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError

from porting.atomic import land
from porting.errors import FcnError
from porting.progress import progress_bar

log = logging.getLogger(__name__)

#: seconds without a byte from the server before a transfer is given up
TIMEOUT = 60.0
#: requests per file: the first, and resumptions after a cut that brought new bytes
ATTEMPTS = 5
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+)")


class FetchError(FcnError):
    """A download that failed: unreachable or missing address, a stalled or cut transfer, a wrong size or hash."""


class FolderError(FetchError):
    """The folder the file goes to cannot be created or written."""


class _StartOver(Exception):
    """The part file does not fit the file on the server: it was emptied, the next request starts at byte 0."""


def source_url(url: str, mirror: str | None = None) -> str:
    """`url`, or `<mirror>/<its file name>` when a mirror is given."""
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def part_path(target: Path) -> Path:
    """Where the bytes of `target` collect until the whole file is there: `<name>.part` beside it."""
    return target.with_name(f"{target.name}.part")


def fetch(
    url: str, target: Path, *, sha256: str | None = None, timeout: float = TIMEOUT, progress: bool = True
) -> Path:
    """Download `url` to `target`, resuming from `target`'s part file when one is there.

    Args:
        url: an http(s) (or file) address.
        target: the file to create; its folder is created if missing.
        sha256: the expected hex digest, checked before the file gets its name (None: unchecked).
        timeout: seconds the server may stay silent.
        progress: a progress bar on a terminal (it is never drawn into a pipe or a file).

    Returns:
        `target`, complete.

    Raises:
        FetchError: the folder is not writable (`FolderError`), another process is downloading the
            same file, the address is unreachable or missing, the transfer stalled or was cut short
            more than `ATTEMPTS` times, or the size or hash is wrong.
    """
    part = part_path(target)
    with _claimed(target, part):
        return _fetch(url, target, part, sha256, timeout, progress)


def _fetch(url: str, target: Path, part: Path, sha256: str | None, timeout: float, progress: bool) -> Path:
    total: int | None = None
    ended = False
    for _ in range(ATTEMPTS):
        before = _size(part)
        if before:
            log.info("resuming %s at byte %d", target.name, before)
        try:
            announced, ended = _request(url, target, part, timeout, progress)
        except _StartOver:
            continue
        if total is not None and announced is not None and announced != total:
            part.unlink(missing_ok=True)
            raise FetchError(_failed(url, target, f"the server announced {total} bytes, then {announced}"))
        total = total if announced is None else announced
        got = _size(part)
        if (got >= total if total is not None else ended) or got == before:
            break
    got = _size(part)
    resume = f"; run the download again to resume from {part}"
    if total is not None and got != total:
        if got > total:
            part.unlink(missing_ok=True)
        raise FetchError(
            _failed(url, target, f"received {got} of the {total} bytes the server announced")
            + (resume if got < total else "")
        )
    if total is None and not ended:
        raise FetchError(_failed(url, target, f"the transfer broke off after {got} bytes") + resume)
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise FetchError(_failed(url, target, f"its sha256 is {digest}, expected {sha256}"))
    land(part, target)
    return target


def _failed(url: str, target: Path, reason: str) -> str:
    return f"cannot download {target.name} from {url}: {reason}. A copy obtained elsewhere goes to {target}"


@contextmanager
def _claimed(target: Path, part: Path) -> Iterator[None]:
    """Hold an exclusive lock on `part` (created if missing) while the download runs.

    A second download of the same file (another process) is refused instead of writing
    into the same part; the lock ends with the process, so none is ever left stale. An
    empty part created here is removed again when the download fails before any byte.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = part.exists()
        handle = part.open("ab")
    except OSError as error:
        raise FolderError(f"{target.parent}: cannot write {target.name} there ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FetchError(
                f"{part}: another download of {target.name} is writing it; wait for that one to finish"
            ) from None
        yield
    finally:
        handle.close()
        if not existed and part.exists() and part.stat().st_size == 0:
            part.unlink()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _request(url: str, target: Path, part: Path, timeout: float, progress: bool) -> tuple[int | None, bool]:
    """One GET appending to `part` from its current size.

    Returns the file size the server announced (None: unannounced) and whether the body
    ended normally; a cut or stalled body just ends the request (the caller resumes). An
    error answer, or no answer at all, raises FetchError.
    """
    offset = _size(part)
    headers = {"User-Agent": "fcn-faithfully", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and offset:
            whole = re.fullmatch(r"bytes \*/(\d+)", error.headers.get("Content-Range", "") if error.headers else "")
            if whole and int(whole.group(1)) == offset:
                return offset, True  # the part holds the whole file (a crash between the last byte and the rename)
            os.truncate(part, 0)
            raise _StartOver from None
        raise FetchError(_failed(url, target, f"HTTP {error.code} {error.reason}")) from None
    except (OSError, HTTPException) as error:
        raise FetchError(_failed(url, target, _reason(error, timeout))) from None
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                os.truncate(part, 0)
                raise _StartOver
            total: int | None = int(match.group(2))
        else:  # the whole file (a server without ranges, or a file: address): the part starts again
            if offset:
                log.info("%s: the server sends the whole file again; starting from byte 0", target.name)
            offset = 0
            total = int(length) if length is not None else None
        return total, _copy(response, part, offset, total, target.name, progress, timeout)


def _reason(error: BaseException, timeout: float) -> str:
    reason = getattr(error, "reason", None) or error
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def _copy(response, part: Path, offset: int, total: int | None, name: str, progress: bool, timeout: float) -> bool:
    """Append the body to `part` (rewrite it when `offset` is 0); True when it ended normally."""
    with (
        part.open("ab" if offset else "wb") as out,
        progress_bar(total=total, desc=name, unit="B", unit_scale=True, enabled=progress) as bar,
    ):
        bar.update(offset)
        while True:
            try:
                chunk = response.read1(CHUNK)  # what has arrived: a stall keeps the bytes before it
            except (OSError, HTTPException) as error:  # cut or stalled: keep what arrived
                log.warning("%s: transfer interrupted at byte %d (%s)", name, out.tell(), _reason(error, timeout))
                return False
            if not chunk:
                return True
            try:
                out.write(chunk)
            except OSError as error:  # e.g. a full disk: the part stays, for a resume once there is room
                raise FetchError(f"{part}: cannot write the download ({error.strerror or error})") from None
            bar.update(len(chunk))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
