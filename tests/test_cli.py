import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


def test_data_describe_names_source_and_layout():
    proc = _run("medtransfer.data", "describe", "chestx")
    assert proc.returncode == 0
    assert "Data_Entry_2017.csv" in proc.stdout and "download:" in proc.stdout


def test_data_index_reports_missing_root(tmp_path):
    proc = _run("medtransfer.data", "index", "bach", str(tmp_path / "nope"), str(tmp_path / "i.csv"))
    assert proc.returncode == 1
    assert "nope does not exist" in proc.stderr and "zenodo" in proc.stderr
    assert not (tmp_path / "i.csv").exists()
