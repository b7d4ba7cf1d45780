import subprocess
import sys

import pytest
import torch
import torchvision

from medtransfer.weights.backbones import load_weights
from medtransfer.weights.convert import convert_file
from medtransfer.weights.demo import random_resnet50, write_demo_weights

PREFIX_FORMATS = [("supervised", "torchvision"), ("moco-v2", "moco"), ("swav", "swav"), ("pirl", "pirl")]


@pytest.fixture(scope="module")
def reference():
    return random_resnet50(seed=3, calibrate=False)


@pytest.mark.parametrize("model, fmt", PREFIX_FORMATS)
def test_prefix_formats_convert_by_name_exactly(tmp_path, reference, model, fmt, monkeypatch):
    monkeypatch.setattr("medtransfer.weights.demo.random_model", lambda arch, seed: reference)
    write_demo_weights(tmp_path / "src", fmt=fmt, model=model)
    meta = convert_file(tmp_path / "src", tmp_path / "out.pt", fmt=fmt, model=model)
    net, loaded = load_weights(tmp_path / "out.pt")
    state = net.state_dict()
    for key, value in reference.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert loaded.source_format == fmt and len(loaded.source_sha256) == 64
    assert meta.dropped and all(meta.dropped.values())  # every dropped key has a reason


def test_moco_drops_key_encoder_queue_and_head(tmp_path):
    write_demo_weights(tmp_path / "src", fmt="moco", model="moco-v2")
    dropped = convert_file(tmp_path / "src", tmp_path / "out.pt", fmt="moco").dropped
    reasons = set(dropped.values())
    assert reasons == {"MoCo MLP projection head", "MoCo momentum (key) encoder", "MoCo negative-key queue"}
    assert "module.encoder_q.fc.0.weight" in dropped


def test_pirl_uses_model_not_ema(tmp_path):
    state = {"module.encoder." + k: v for k, v in random_resnet50(1, calibrate=False).items() if k[:3] != "fc."}
    ema = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"model": state, "model_ema": ema}, tmp_path / "pirl.pth")
    convert_file(tmp_path / "pirl.pth", tmp_path / "out.pt", fmt="pirl")
    net, _ = load_weights(tmp_path / "out.pt")
    assert torch.equal(net.state_dict()["conv1.weight"], state["module.encoder.conv1.weight"])


def test_other_architecture_is_rejected_with_names(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth: the weights are a resnet18 backbone, not the resnet50"):
        convert_file(tmp_path / "r18.pth", tmp_path / "out.pt", fmt="torchvision")
    state = torchvision.models.resnet18().state_dict()
    del state["conv1.weight"]  # fits no architecture: every problem is listed
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth: the weights do not fit a resnet50 backbone.*missing"):
        convert_file(tmp_path / "r18.pth", tmp_path / "out.pt", fmt="torchvision")
    assert not (tmp_path / "out.pt").exists()


def test_wrong_format_names_the_likely_format(tmp_path):
    write_demo_weights(tmp_path / "swav.pth", fmt="swav", model="swav")
    with pytest.raises(ValueError, match=r"swav\.pth: cannot convert it as format `moco` \(expected a dict with a "
                                         r"'state_dict' entry.*looks like format `swav`.*Set `format: swav`"):
        convert_file(tmp_path / "swav.pth", tmp_path / "out.pt", fmt="moco")
    with pytest.raises(ValueError, match=r"as format `torchvision` \(the weights do not fit a resnet50.*"
                                         r"`swav`.*323 keys, e\.g\. \['module\.conv1\.weight', 'module\.bn1\.weight'"):
        convert_file(tmp_path / "swav.pth", tmp_path / "out.pt", fmt="torchvision")
    assert not (tmp_path / "out.pt").exists()


def test_truncated_file_is_reported_and_nothing_written(tmp_path):
    write_demo_weights(tmp_path / "full.pth", fmt="torchvision", model="supervised")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cut\.pth: cannot read this as a PyTorch weights file.*truncated"):
        convert_file(tmp_path / "cut.pth", tmp_path / "out.pt", fmt="torchvision")
    assert list(tmp_path.glob("out*")) == []


def test_unknown_format_and_normalisation(tmp_path):
    with pytest.raises(ValueError, match="unknown weights format 'keras'.*byol"):
        convert_file(tmp_path / "x", tmp_path / "y", fmt="keras")
    with pytest.raises(ValueError, match="unknown normalisation 'zscore'"):
        convert_file(tmp_path / "x", tmp_path / "y", fmt="moco", normalisation="zscore")


def test_weights_files_never_execute_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth: names the Python global print, which safe"):
        convert_file(tmp_path / "evil.pth", tmp_path / "out.pt", fmt="moco")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medtransfer.weights", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.slow  # three fresh interpreters importing torch; test_weights_hostile.py runs the CLI in-process
def test_cli_inspect_and_convert(tmp_path):
    write_demo_weights(tmp_path / "moco.pth.tar", fmt="moco", model="moco-v2")
    shown = _cli("inspect", tmp_path / "moco.pth.tar")
    assert shown.returncode == 0 and '"format": "moco"' in shown.stdout and "module.encoder_k" in shown.stdout
    done = _cli("convert", "--format", "moco", tmp_path / "moco.pth.tar", tmp_path / "out.pt")
    assert done.returncode == 0, done.stderr
    assert "dropped 328 keys" in done.stdout
    bad = _cli("convert", "--format", "pirl", tmp_path / "moco.pth.tar", tmp_path / "bad.pt")
    assert bad.returncode == 1 and "'model' entry" in bad.stderr and not (tmp_path / "bad.pt").exists()
