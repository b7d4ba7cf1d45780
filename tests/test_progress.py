import logging

from medtransfer.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_logs_rate_and_eta_at_a_steady_interval(caplog):
    clock = Clock()
    progress = Progress("extract", 100, unit="images", interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="medtransfer.progress"):
        for _ in range(100):
            clock.now += 0.5  # 2 images/s
            progress.update()
    lines = [r.getMessage() for r in caplog.records]
    # one line per 10 s of a 50 s loop (at 10, 20, 30, 40 and the last at 50)
    assert len(lines) == 5
    assert lines[0] == "extract: 20/100 images (20%), 2 images/s, elapsed 0m10s, ETA 0m40s"
    assert lines[-1].startswith("extract: 100/100 images (100%)") and lines[-1].endswith("ETA 0m00s")


def test_progress_of_an_empty_loop_and_before_any_work():
    progress = Progress("x", 0, clock=lambda: 0.0)
    assert "ETA unknown" in progress.line() and "(100%)" in progress.line()
