"""Batches of cached uint8 images on their way to the device, overlapping the model's work.

A background thread gathers each batch from the cache (a memmap: reading it is the disk and
memory work) while the model runs on the previous one. On a GPU each batch is gathered into a
pinned (page-locked) staging buffer, one of a small ring, and copied to the device on a side
stream, so the copy of batch k+1 overlaps the compute of batch k and nothing waits for a
pageable copy; the compute stream waits on the copy's event, not on the whole device. The
batches stay uint8 until they are on the device (4x less to copy than float32); converting
and normalising them is the caller's work on the device (docs/performance.md, "GPU data path").

On a CPU the same thread gathers ahead; the arrays are handed over as they are.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

_DONE = object()


class DeviceBatches:
    """Iterate ``(item, gather(item))`` for each item of ``items``, the gathered array as a
    uint8 tensor on ``device``.

    ``gather`` returns a C-contiguous uint8 array of at most ``max_bytes`` bytes (any shape);
    ``depth`` batches are in flight at once. The yielded tensor is only valid until the next
    one is requested on a GPU (its staging slot is reused): copy what you keep.
    """

    def __init__(self, gather: Callable[[Any], np.ndarray], items: Iterable[Any], device: str | torch.device,
                 *, max_bytes: int, depth: int = 3) -> None:
        self.gather, self.items, self.device = gather, items, torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.depth = max(depth, 2)
        self.max_bytes = max_bytes
        self._error: BaseException | None = None

    def _worker(self, ready: queue.Queue, free: queue.Queue | None, staging: list[torch.Tensor] | None,
                stop: threading.Event) -> None:
        try:
            for item in self.items:
                if stop.is_set():
                    return
                array = np.ascontiguousarray(self.gather(item))
                if staging is None:
                    ready.put((item, None, array))
                    continue
                if array.nbytes > self.max_bytes:
                    raise ValueError(f"a batch of {array.nbytes} bytes does not fit the {self.max_bytes}-byte "
                                     "staging buffer; this is a bug in the caller's max_bytes")
                slot = free.get()
                if slot is _DONE:
                    return
                staging[slot][:array.size].numpy().reshape(array.shape)[...] = array
                ready.put((item, slot, array.shape))
        except BaseException as err:  # handed to the consumer, raised there
            self._error = err
        finally:
            ready.put(_DONE)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        ready: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        staging = free = None
        if self.cuda:
            staging = [torch.empty(self.max_bytes, dtype=torch.uint8).pin_memory() for _ in range(self.depth)]
            free = queue.Queue()
            for slot in range(self.depth):
                free.put(slot)
        thread = threading.Thread(target=self._worker, args=(ready, free, staging, stop), daemon=True)
        thread.start()
        try:
            if self.cuda:
                yield from self._cuda(ready, free, staging)
            else:
                while (got := ready.get()) is not _DONE:
                    yield got[0], torch.from_numpy(got[2])
        finally:
            stop.set()
            if free is not None:
                free.put(_DONE)
            while thread.is_alive():  # unblock a worker waiting to hand over a batch
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()
        if self._error is not None:
            raise self._error

    def _cuda(self, ready: queue.Queue, free: queue.Queue,
              staging: list[torch.Tensor]) -> Iterator[tuple[Any, torch.Tensor]]:
        copy_stream = torch.cuda.Stream(self.device)
        compute = torch.cuda.current_stream(self.device)

        def launch() -> tuple[Any, int, torch.Tensor, torch.cuda.Event] | None:
            got = ready.get()
            if got is _DONE:
                return None
            item, slot, shape = got
            with torch.cuda.stream(copy_stream):
                host = staging[slot][:int(np.prod(shape))].view(shape)
                dev = host.to(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(copy_stream)
            return item, slot, dev, done

        nxt = launch()
        while nxt is not None:
            item, slot, dev, done = nxt
            nxt = launch()  # the next copy is queued before this batch's compute
            compute.wait_event(done)
            dev.record_stream(compute)  # allocated on the copy stream, used on the compute stream
            yield item, dev
            done.synchronize()  # long finished by now; the slot may be refilled
            free.put(slot)
