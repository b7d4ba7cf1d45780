"""DeviceBatches: cached images gathered ahead by a thread (pinned memory and a side stream on a GPU)."""

import threading

import numpy as np
import pytest
import torch

from medtransfer.data.batches import DeviceBatches

IMAGES = np.random.default_rng(0).integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)


def _batches(device: str, size: int = 5, **kw):
    starts = range(0, len(IMAGES), size)
    return DeviceBatches(lambda s: np.array(IMAGES[s:s + size]), starts, device,
                         max_bytes=size * IMAGES[0].nbytes, **kw)


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_every_batch_in_order_and_equal(device):
    seen = []
    for start, batch in _batches(device):
        assert batch.device.type == device and batch.dtype == torch.uint8
        seen.append((start, batch.cpu().numpy().copy()))
    assert [s for s, _ in seen] == [0, 5, 10, 15, 20]
    assert np.array_equal(np.concatenate([b for _, b in seen]), IMAGES)


@pytest.mark.parametrize("device", _devices())
def test_batches_of_varying_shape_share_the_staging_buffers(device):
    """Training batches of the whole-image cache are padded to their own size."""
    shapes = [(2, 8, 6, 3), (3, 5, 8, 3), (1, 8, 8, 3), (3, 4, 4, 3)]
    arrays = [np.full(s, i, np.uint8) for i, s in enumerate(shapes)]
    got = [(i, b.cpu().numpy().copy()) for i, b in DeviceBatches(lambda i: arrays[i], range(4), device,
                                                                  max_bytes=3 * 8 * 8 * 3, depth=2)]
    assert [i for i, _ in got] == [0, 1, 2, 3]
    for (_, batch), expected in zip(got, arrays):
        assert np.array_equal(batch, expected)


def test_an_error_while_gathering_reaches_the_consumer():
    def gather(start):
        if start == 10:
            raise OSError("cache.npy: read error at image 10")
        return np.array(IMAGES[start:start + 5])

    with pytest.raises(OSError, match="image 10"):
        list(DeviceBatches(gather, range(0, 23, 5), "cpu", max_bytes=5 * IMAGES[0].nbytes))


@pytest.mark.parametrize("device", _devices())
def test_stopping_early_ends_the_gathering_thread(device):
    before = threading.active_count()
    drawn = []

    def items():
        for start in range(0, 1000, 5):  # far more than are consumed
            drawn.append(start)
            yield start % 20

    batches = iter(DeviceBatches(lambda s: np.array(IMAGES[s:s + 5]), items(), device, max_bytes=5 * IMAGES[0].nbytes))
    next(batches)
    batches.close()
    assert threading.active_count() == before
    assert len(drawn) < 10  # a bounded read-ahead, not the whole sequence


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batches_come_through_pinned_memory_and_a_side_stream(monkeypatch):
    copies = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if self.device.type == "cpu" and kwargs.get("non_blocking"):
            copies.append((self.is_pinned(), torch.cuda.current_stream() != torch.cuda.default_stream()))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    assert np.array_equal(np.concatenate([b.cpu().numpy() for _, b in _batches("cuda")]), IMAGES)
    assert copies and all(pinned and side for pinned, side in copies)
