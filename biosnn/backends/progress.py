"""Progress bars for simulations (tqdm), shared by the backends."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

__all__ = ["ProgressBar", "tail_progress", "STANDALONE_REPORT_CODE"]

# C++ report function for Brian2's standalone devices: one machine-readable line per report.
STANDALONE_REPORT_CODE = 'std::cout << "BIOSNN_PROGRESS " << completed << std::endl << std::flush;'


class ProgressBar:
    """A tqdm bar over simulated time (0..1), or nothing when disabled or not wanted.

    Disabled when ``enabled`` is false or ``BIOSNN_PROGRESS=0`` is set.
    """

    def __init__(self, enabled: bool, description: str, duration_s: float):
        self.bar = None
        if enabled and os.environ.get("BIOSNN_PROGRESS", "1") != "0":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=1000, desc=description, unit="‰", leave=False, file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] "
                                       + f"{duration_s:g} s simulated")
        self._done = 0

    def update(self, fraction: float):
        if self.bar is None:
            return
        target = int(max(0.0, min(1.0, fraction)) * 1000)
        if target > self._done:
            self.bar.update(target - self._done)
            self._done = target

    def close(self):
        if self.bar is not None:
            self.update(1.0)
            self.bar.close()

    def brian2_report(self, elapsed, completed, start, duration):
        """Callable for ``Network.run(report=...)`` in runtime mode."""
        self.update(float(completed))


def tail_progress(stdout_file: Path, bar: ProgressBar, finished: threading.Event, poll_s: float = 0.2):
    """Follow a standalone binary's stdout file and move ``bar`` (run in a thread) until ``finished`` is set.

    ``finished`` ends the wait between polls at once (a sleep of ``poll_s`` here cost a
    run 0.1 s on average, 0.2 s at most, after its binary had exited).
    """
    pos = 0
    while True:
        done = finished.is_set()
        try:
            with open(stdout_file, "r") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            for line in chunk.splitlines():
                if line.startswith("BIOSNN_PROGRESS "):
                    try:
                        bar.update(float(line.split()[1]))
                    except ValueError:
                        pass
        except FileNotFoundError:
            pass
        if done:
            return
        finished.wait(poll_s)  # not time.sleep: the run's end must not wait out a poll period
