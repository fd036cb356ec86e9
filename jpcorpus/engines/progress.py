"""Progress on the driver: one tqdm bar per stage, with documents/s and MB/s where they apply."""

from __future__ import annotations

import sys
import time


class StageProgress:
    """``stage(name, total, unit)`` opens a bar (closing the last); ``advance(n, nbytes)`` moves it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.nbytes = 0
        self.started = time.perf_counter()
        self.name = ""

    def stage(self, name: str, total: int | None = None, unit: str = "docs") -> None:
        self.close()
        self.name, self.nbytes, self.started = name, 0, time.perf_counter()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc=name, total=total, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5, smoothing=0.1)

    def advance(self, n: int = 1, nbytes: int = 0, note: str = "") -> None:
        self.nbytes += nbytes
        if self.bar is None:
            return
        if self.nbytes:
            secs = max(time.perf_counter() - self.started, 1e-9)
            note = f"{self.nbytes / 1e6:,.1f} MB, {self.nbytes / 1e6 / secs:.2f} MB/s" + (f", {note}" if note else "")
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
