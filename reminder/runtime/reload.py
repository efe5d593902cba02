"""Hot reload: notice that the bundle under a running stream was replaced, and load it
in the background so that the stream swaps models between two batches."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from reminder.errors import ReminderError
from reminder.runtime.predictor import Predictor, resolve_bundle


class Reloader:
    """Watches the bundle path; loads a changed bundle in the background."""

    def __init__(self, path: Path, make: Callable[[Path], Predictor], interval: float, log):
        self.path, self.make, self.interval, self.log = path, make, interval, log
        self.signature = self._signature()
        self.checked = time.monotonic()
        self.thread: threading.Thread | None = None
        self.result: tuple[Predictor | None, str | None, Path] | None = None

    def _signature(self):
        try:
            target = resolve_bundle(self.path).resolve()
            stat = (target / "manifest.json").stat() if target.is_dir() else target.stat()
        except (OSError, ReminderError):
            return None
        return str(target), stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _load(self, attempts: int = 3) -> None:
        """Load the bundle the path resolves to now. A failure counts only if the path
        still resolves to the same bundle: an install that switched ``current`` again
        while it loaded is loaded again (up to ``attempts`` times), not reported broken."""
        target = None
        for _ in range(attempts):
            try:
                target = resolve_bundle(self.path)
                self.result = (self.make(target), None, target)
                return
            except Exception as error:  # any failure keeps the running model
                message = str(error) if isinstance(error, ReminderError) else f"{type(error).__name__}: {error}"
                self.result = (None, message, target if target is not None else self.path)
                try:
                    moved = resolve_bundle(self.path) != target
                except ReminderError:
                    moved = False
                if not moved:
                    return

    def poll(self) -> tuple[Predictor | None, str | None, Path] | None:
        """``(new predictor, None, bundle)`` or ``(None, error, bundle)`` once a reload
        finished, else None; ``bundle`` is the resolved folder that was loaded."""
        if self.thread is not None:
            if self.thread.is_alive():
                return None
            self.thread, result, self.result = None, self.result, None
            return result
        now = time.monotonic()
        if now - self.checked < self.interval:
            return None
        self.checked = now
        signature = self._signature()
        if signature is None or signature == self.signature:
            return None
        self.signature = signature
        self.log(f"bundle at {self.path} changed; loading it")
        self.thread = threading.Thread(target=self._load, name="reminder-reload", daemon=True)
        self.thread.start()
        return None

    def close(self) -> None:
        """Wait for a load in progress and drop what it loaded. Interpreter shutdown kills a
        daemon thread inside ONNX Runtime's or OpenVINO's native code ("terminate called
        without an active exception", exit 134): a stream stopped by SIGTERM mid-reload must
        let the load finish first."""
        if self.thread is not None:
            self.thread.join()
        if self.result is not None and self.result[0] is not None:
            self.result[0].close()
        self.thread, self.result = None, None
