"""Checked downloads: resumable, retried, sha256-verified, written atomically.

Sources: ``http(s)://`` (resumed with HTTP range requests), ``file://`` or
``file:relative/path`` (relative to the working directory), and Google Drive
(``gdrive:<id>`` or a drive.google.com link, through gdown). The bytes go to
``<out>.part`` while in flight, so a partial download never looks finished, and
only a verified file is renamed to ``out``.

Verification: a pinned ``sha256`` when the registry or config knows it (a prefix of at
least 8 hex digits counts, as torchvision embeds one in its file names); otherwise
the hash is recorded in a JSON lock file on first download and enforced afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from medtransfer.runtime import sha256_file
from medtransfer.writers import write_json_atomic

log = logging.getLogger(__name__)
CHUNK = 1 << 20
LOGIN_ONLY = {
    "storage.cloud.google.com": (
        "needs a Google login. The SimCLR-v1 files are also in the public bucket "
        "gs://simclr-checkpoints/simclrv1/1x (https://storage.googleapis.com/simclr-checkpoints/simclrv1/1x/...): "
        "set that as the model's `url`, or download the file by hand and set the model's `path` to it"
    ),
}


# Errors of a full disk or quota (EFBIG: a file-size limit): retrying cannot help.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
HTML_START = (b"<!doctype html", b"<html", b"<head", b"<body")


class DownloadError(RuntimeError):
    """A download that cannot succeed as configured (retrying will not help)."""


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(HTML_START)


def _html_error(url: str, head: bytes, why: str) -> DownloadError:
    """The error for a web page where a weights file was expected (naming the page's title)."""
    match = re.search(rb"<title[^>]*>(.*?)</title>", head, re.I | re.S)
    title = f" titled {' '.join(match.group(1).decode('utf-8', 'replace').split())[:120]!r}" if match else ""
    return DownloadError(
        f"{url}: the server sent an HTML page{title} ({why}) instead of the file. That is what an "
        "expired or private share link, a login page or Google Drive's 'cannot scan this file for "
        "viruses' page looks like. Open the URL in a browser: if it needs a login or a confirmation, "
        "download the file by hand and set the model's `path:` to it; otherwise fix its `url:`."
    )


def _disk_full_error(url: str, part: Path, err: OSError) -> DownloadError:
    free = shutil.disk_usage(part.parent).free if part.parent.exists() else 0
    return DownloadError(
        f"{url}: cannot write {part} ({err.strerror or err}; {free / 2**20:.0f} MiB free on that "
        "filesystem). The partial file was removed. Free some space (or raise the quota / file-size "
        "limit) and run again, or put the workflow's resources/ folder on a larger disk."
    )


def _gdrive_id(url: str) -> str | None:
    if url.startswith("gdrive:"):
        return url.split(":", 1)[1].lstrip("/")
    if "drive.google.com" in url:
        match = re.search(r"(?:id=|/d/)([\w-]{10,})", url)
        return match.group(1) if match else None
    return None


def _local_path(url: str) -> Path | None:
    if not url.startswith("file:"):
        return None
    parsed = urllib.parse.urlparse(url)
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(urllib.request.url2pathname(url[len("file:"):]))


def _http_fetch(url: str, part: Path, timeout: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size with a range request."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "medtransfer"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range past the end: what we have is complete
            return
        raise
    with response:
        resumed = response.status == 206
        if response.headers.get_content_type() == "text/html":
            raise _html_error(url, response.read(1 << 16), "Content-Type text/html")
        mode = "ab" if resumed else "wb"
        expected = response.headers.get("Content-Length")
        got = 0
        with open(part, mode) as handle:
            for block in iter(lambda: response.read(CHUNK), b""):
                if not got and not resumed and _looks_like_html(block):
                    raise _html_error(url, block, "its first bytes are HTML")
                handle.write(block)
                got += len(block)
    if expected is not None and got < int(expected):
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    if host in LOGIN_ONLY:
        raise DownloadError(f"{url} {LOGIN_ONLY[host]}")
    local, drive = _local_path(url), _gdrive_id(url)
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"{url}: local file {local} does not exist")
        shutil.copyfile(local, part)
    elif drive is not None:
        import gdown  # only Google Drive sources need it

        if gdown.download(id=drive, output=str(part), quiet=True, resume=True) is None:
            raise ConnectionError(f"gdown could not fetch Google Drive id {drive}")
    elif url.startswith(("http://", "https://")):
        _http_fetch(url, part, timeout)
    else:
        raise DownloadError(f"unsupported URL {url!r}; use http(s)://, file://, file:relative/path or gdrive:<id>")


def _check_not_html(url: str, part: Path) -> None:
    """Any source (a Google Drive fetch, a local file) may hold a web page instead of weights."""
    with open(part, "rb") as handle:
        head = handle.read(1 << 16)
    if _looks_like_html(head):
        raise _html_error(url, head, "the fetched file is HTML")


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[dict[str, str]]:
    """Read-modify-write the lock file under an exclusive lock (parallel jobs share it)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file.with_name(lock_file.name + ".flock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        entries = json.loads(lock_file.read_text()) if lock_file.exists() else {}
        before = dict(entries)
        yield entries
        if entries != before:
            write_json_atomic(lock_file, entries)


def expected_sha256(url: str, sha256: str = "", lock_file: Path | None = None) -> str:
    if sha256:
        return sha256.lower()
    if lock_file is not None and lock_file.exists():
        return json.loads(lock_file.read_text()).get(url, "")
    return ""


def fetch(
    url: str, out: str | os.PathLike, *, sha256: str = "", lock_file: str | os.PathLike | None = None,
    retries: int = 4, timeout: float = 60.0, backoff: float = 1.0,
) -> str:
    """Download ``url`` to ``out`` and return its sha256; see the module docstring."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    lock = Path(lock_file) if lock_file else None
    want = expected_sha256(url, sha256, lock)
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, part, timeout)
            _check_not_html(url, part)
        except DownloadError:
            part.unlink(missing_ok=True)  # nothing to resume from: the next run starts afresh
            raise
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts: OSErrors too
            if getattr(err, "errno", None) in DISK_FULL:
                part.unlink(missing_ok=True)  # never leave a truncated file behind
                raise _disk_full_error(url, part, err) from err
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {retries} attempts ({err}); the partial file "
                                    f"{part} is kept and the next run resumes from it") from err
            log.warning("download of %s failed (%s); retry %d/%d", url, err, attempt, retries)
            time.sleep(backoff * attempt)
            continue
        got = sha256_file(part)
        if not want or got.startswith(want):  # a pin may be a prefix (torchvision's file names)
            break
        part.unlink()  # a wrong body is never resumed from
        if attempt == retries:
            raise DownloadError(
                f"{url}: sha256 mismatch after {retries} attempts: expected {want}, got {got}. If the file "
                "legitimately changed, update the model's `sha256` (or remove its entry from the lock file)"
            )
        log.warning("sha256 mismatch for %s (got %s); retry %d/%d", url, got, attempt, retries)
    if lock is not None:
        with _locked(lock) as entries:
            if entries.get(url, got) != got:
                part.unlink()
                raise DownloadError(f"{url}: sha256 {got} differs from {entries[url]} recorded in {lock}")
            entries[url] = got
    os.replace(part, out)
    return got


