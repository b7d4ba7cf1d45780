import hashlib
import json

import pytest

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
