import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LOGIN_PAGE, REPO
from medtransfer.weights.download import DownloadError, _gdrive_id, fetch

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


def test_http_download_verifies_pinned_sha(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    out = tmp_path / "w.pth"
    assert fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0) == SHA
    assert out.read_bytes() == BODY
    assert not (tmp_path / "w.pth.part").exists()


def test_dropped_connection_is_resumed_with_a_range_request(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["drop"]
    out = tmp_path / "w.pth"
    fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0)
    assert out.read_bytes() == BODY
    (_, first_range, first_mode), (_, second_range, _) = http_server.requests
    assert first_mode == "drop" and first_range is None
    assert second_range == f"bytes={len(BODY) // 2}-"  # resumed, not restarted


def test_server_without_ranges_restarts_cleanly(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["drop"]
    http_server.ranges = False  # answers 200 with the whole body to a range request
    out = tmp_path / "w.pth"
    fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0)
    assert out.read_bytes() == BODY


def test_corrupted_body_is_retried_then_accepted(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["corrupt"]
    out = tmp_path / "w.pth"
    fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0)
    assert out.read_bytes() == BODY
    assert [mode for _, _, mode in http_server.requests] == ["corrupt", "ok"]


def test_persistently_corrupted_body_fails_and_leaves_nothing(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["corrupt"] * 3
    out = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="sha256 mismatch after 3 attempts"):
        fetch(http_server.url + "/w.pth", out, sha256=SHA, retries=3, backoff=0)
    assert not out.exists() and not (tmp_path / "w.pth.part").exists()


def test_lock_file_records_first_hash_and_enforces_it(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    lock = tmp_path / "lock.json"
    url = http_server.url + "/w.pth"
    fetch(url, tmp_path / "a.pth", lock_file=lock, backoff=0)
    assert json.loads(lock.read_text()) == {url: SHA}
    http_server.files["/w.pth"] = BODY[::-1]  # the source changed behind our back
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(url, tmp_path / "b.pth", lock_file=lock, retries=2, backoff=0)
    assert not (tmp_path / "b.pth").exists()


def test_http_error_is_reported_after_retries(http_server, tmp_path):
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        fetch(http_server.url + "/missing.pth", tmp_path / "x", retries=2, backoff=0)


def test_file_urls_absolute_and_relative(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)
    assert fetch(src.as_uri(), tmp_path / "a.bin") == SHA
    monkeypatch.chdir(tmp_path)
    assert fetch("file:src.bin", tmp_path / "b.bin", sha256=SHA) == SHA
    with pytest.raises(DownloadError, match="does not exist"):
        fetch("file:nope.bin", tmp_path / "c.bin")


def test_login_only_url_explains_the_alternatives(tmp_path):
    url = "https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip"
    with pytest.raises(DownloadError, match="gs://simclr-checkpoints/simclrv1/1x.*`path`"):
        fetch(url, tmp_path / "x.zip")


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL 'ftp://x/y'"):
        fetch("ftp://x/y", tmp_path / "y")


@pytest.mark.parametrize("url, expected", [
    ("gdrive:1AbCdEfGhIjKlMn", "1AbCdEfGhIjKlMn"),
    ("https://drive.google.com/file/d/1AbCdEfGhIjKlMn/view?usp=sharing", "1AbCdEfGhIjKlMn"),
    ("https://drive.google.com/uc?id=1AbCdEfGhIjKlMn", "1AbCdEfGhIjKlMn"),
    ("https://example.org/file", None),
])
def test_google_drive_ids(url, expected):
    assert _gdrive_id(url) == expected


def test_a_sha256_prefix_pins_like_torchvision_file_names(http_server, tmp_path):
    http_server.files["/resnet50.pth"] = BODY
    url = http_server.url + "/resnet50.pth"
    assert fetch(url, tmp_path / "a.pth", sha256=SHA[:8], backoff=0) == SHA
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(url, tmp_path / "b.pth", sha256="0676ba61", retries=1, backoff=0)


def test_repeated_drops_resume_each_time(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["drop", "drop", "drop"]
    out = tmp_path / "w.pth"
    fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0)
    assert out.read_bytes() == BODY
    starts = [int(r.split("=")[1].split("-")[0]) if r else 0 for _, r, _ in http_server.requests]
    assert starts == sorted(starts) and len(set(starts)) == 4  # every retry picks up where it stopped


def test_a_corrupt_body_is_fetched_afresh_not_resumed(http_server, tmp_path):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = ["corrupt"]
    fetch(http_server.url + "/w.pth", tmp_path / "w.pth", sha256=SHA, backoff=0)
    assert [r for _, r, _ in http_server.requests] == [None, None]


@pytest.mark.parametrize("mode, why", [("html", "Content-Type text/html"),
                                       ("html_octet", "its first bytes are HTML")])
def test_an_html_page_instead_of_the_file_is_named(http_server, tmp_path, mode, why):
    http_server.files["/w.pth"] = BODY
    http_server.behaviour["/w.pth"] = [mode]
    out = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match=rf"sent an HTML page titled 'Google Drive - Virus scan warning' "
                                            rf"\({why}\) instead of the file.*`path:`"):
        fetch(http_server.url + "/w.pth", out, backoff=0)
    assert len(http_server.requests) == 1  # not retried: it would only fetch the page again
    assert not out.exists() and not (tmp_path / "w.pth.part").exists()


def test_google_drive_html_is_named(tmp_path, monkeypatch):
    import gdown

    def fake_download(id, output, **kwargs):  # what an expired link gives: the page, saved
        Path(output).write_bytes(LOGIN_PAGE)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    with pytest.raises(DownloadError, match="HTML page titled .*the fetched file is HTML"):
        fetch("gdrive:1AbCdEfGhIjKlMn", tmp_path / "w.pkl", backoff=0)
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """A file handle on a disk that fills up after ``room`` bytes (ENOSPC, as write(2) says)."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(http_server, tmp_path, monkeypatch):
    http_server.files["/w.pth"] = BODY
    real_open = open

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return _FullDisk(handle, 300_000) if "w" in mode or "a" in mode else handle

    monkeypatch.setattr("medtransfer.weights.download.open", opener, raising=False)
    out = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match=r"cannot write .*w.pth.part \(No space left on device; \d+ MiB free"
                                            r".*partial file was removed"):
        fetch(http_server.url + "/w.pth", out, sha256=SHA, backoff=0)
    assert len(http_server.requests) == 1 and not out.exists() and not (tmp_path / "w.pth.part").exists()


def test_full_disk_on_a_local_copy(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)

    def copy(a, b):
        Path(b).write_bytes(BODY[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("medtransfer.weights.download.shutil.copyfile", copy)
    with pytest.raises(DownloadError, match="No space left on device"):
        fetch(src.as_uri(), tmp_path / "out" / "w.bin")
    assert list((tmp_path / "out").iterdir()) == []


FILE_SIZE_LIMITED = """
import resource, signal, sys
from medtransfer.weights.download import DownloadError, fetch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    fetch(sys.argv[1], sys.argv[2], backoff=0)
except DownloadError as err:
    print(err)
    sys.exit(3)
"""


def test_file_size_limit_in_a_real_process(http_server, tmp_path):
    """The OS refuses the write (RLIMIT_FSIZE: EFBIG), not a mock."""
    http_server.files["/w.pth"] = BODY
    out = tmp_path / "w.pth"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, http_server.url + "/w.pth", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "File too large" in proc.stdout and "partial file was removed" in proc.stdout
    assert list(tmp_path.iterdir()) == []
