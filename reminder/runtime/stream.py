"""Streams: sources -> reader threads -> batched inference -> writer thread -> outputs.

One reader thread per source fills a mailbox: a live source keeps only its newest frame
(older ones are dropped and counted), a file source waits for room (a bounded queue), so
files are processed in full and in order. The inference loop takes up to ``batch`` frames
across the sources (waiting at most ``batch_timeout`` for a batch to fill, as DeepStream's
muxer does), runs them as one batch, and hands the results to a writer thread through a
bounded queue. Between batches it checks whether the bundle it was started with has been
replaced (an install's ``current`` switched, or the folder rewritten) and, once the new
bundle has loaded in the background, switches to it; if it fails to load, the old model
keeps running.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reminder.errors import ReminderError
from reminder.runtime.health import write_health
from reminder.runtime.outputs import Outputs
from reminder.runtime.predictor import Predictor, check_frame
from reminder.runtime.reload import Reloader
from reminder.runtime.sources import EndOfSource, open_source

_END = object()


@dataclass
class Frame:
    source: int
    index: int          # frames read from this source so far (including dropped ones)
    name: str           # the image's stem, or the frame number of a video
    image: np.ndarray   # BGR uint8 (H, W, 3)
    captured: float     # time.monotonic() when read


@dataclass
class StreamSummary:
    frames: dict[str, int] = field(default_factory=dict)     # processed, per source label
    dropped: dict[str, int] = field(default_factory=dict)    # live frames replaced by newer ones
    skipped: dict[str, int] = field(default_factory=dict)    # unreadable or invalid frames
    versions: list[str] = field(default_factory=list)        # bundle versions used, in order
    reload_failures: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    lost_outputs: list[str] = field(default_factory=list)  # overlays, labels or stats not written

    @property
    def total(self) -> int:
        return sum(self.frames.values())

    @property
    def fps(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


class _Mailbox:
    """Frames waiting for inference, per source, under one condition variable."""

    def __init__(self, sources, depth: int, stop: threading.Event):
        self.cond = threading.Condition()
        self.slots = [deque() for _ in sources]
        self.live = [s.live for s in sources]
        self.ended = [False] * len(sources)
        self.dropped = [0] * len(sources)
        self.depth, self.stop = depth, stop
        self.turn = 0

    def put(self, i: int, frame: Frame) -> None:
        with self.cond:
            if self.live[i]:
                self.dropped[i] += len(self.slots[i])
                self.slots[i].clear()
            else:
                while len(self.slots[i]) >= self.depth and not self.stop.is_set():
                    self.cond.wait(0.1)
            self.slots[i].append(frame)
            self.cond.notify_all()

    def end(self, i: int) -> None:
        with self.cond:
            self.ended[i] = True
            self.cond.notify_all()

    def _ready(self) -> int:
        return sum(len(s) for s in self.slots)

    def take(self, limit: int, timeout: float) -> list[Frame] | None:
        """Up to ``limit`` frames, round robin over the sources; ``None`` when every source
        has ended and nothing is left (or the stream was stopped)."""
        with self.cond:
            while not self._ready():
                if all(self.ended) or self.stop.is_set():
                    return None
                self.cond.wait(0.1)
            deadline = time.monotonic() + timeout
            while self._ready() < limit and not self.stop.is_set():
                # wait for the batch to fill only while some source may still deliver
                waiting = any(not e and not s for e, s in zip(self.ended, self.slots))
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    break
                self.cond.wait(left)
            batch = []
            while len(batch) < limit and self._ready():
                slot = self.slots[self.turn]
                if slot:
                    batch.append(slot.popleft())
                self.turn = (self.turn + 1) % len(self.slots)
            self.cond.notify_all()
            return batch


class Stream:
    """Runs a bundle on one or more sources. ``run()`` blocks until the files end, the
    sources drop out for good, ``max_frames`` are done, or ``stop()`` is called (from a
    callback or another thread); Ctrl-C stops it cleanly too.

    ``on_result(frame, prediction, record)`` is called in the writer thread for each frame;
    ``on_status(status: dict)`` about twice a second with FPS, latency and counters.
    """

    def __init__(self, bundle: str | Path, sources: Sequence[str], *, out: str | Path | None = None,
                 save: Sequence[str] = (), view: str = "overlay", alpha: float = 0.5, batch: int | None = None,
                 batch_timeout: float = 0.01, live: bool | None = None, watch: bool = True,
                 reload_interval: float = 1.0, max_frames: int | None = None, queue_depth: int = 8,
                 retries: int = 5, backoff: float = 0.5, on_result=None, on_status=None,
                 log: Callable[[str], None] = print, **predictor_options):
        if not sources:
            raise ReminderError("no `sources` given")
        if batch is not None and batch < 1:
            raise ReminderError(f"batch must be at least 1, got {batch}")
        if max_frames is not None and max_frames < 1:
            raise ReminderError(f"`max_frames` must be at least 1, got {max_frames}")
        Outputs.check(out, save)
        self.bundle, self.log = Path(bundle), log
        # OpenVINO: LATENCY for one camera, THROUGHPUT (parallel streams) for batched sources
        self.predictor_options = {"hint": "THROUGHPUT" if (batch or len(sources)) > 1 else "LATENCY",
                                  **predictor_options}
        self.predictor = self._make(self.bundle)
        self.sources = []
        try:
            for spec in sources:
                self.sources.append(open_source(spec, live=live))
        except BaseException:
            for source in self.sources:
                source.close()
            raise
        labels = [s.label for s in self.sources]
        for i, source in enumerate(self.sources):
            if labels.count(source.label) > 1:
                source.label = f"{source.label}_{i}"
        self.outputs = Outputs(Path(out) if out is not None else None, save, self.sources, view=view, alpha=alpha)
        self.batch = batch or len(self.sources)
        self.batch_timeout, self.queue_depth = batch_timeout, queue_depth
        self.retries, self.backoff = retries, backoff
        self.max_frames = max_frames
        self.served = predictor_options.get("backend") == "triton"  # a model on a Triton server
        self.reloader = None
        if watch and self.served:
            from reminder.runtime.triton import TritonWatcher

            self.reloader = TritonWatcher(str(bundle), self._make, reload_interval, lambda: self.predictor)
        elif watch:
            self.reloader = Reloader(self.bundle, self._make, reload_interval, log)
        self.on_result, self.on_status = on_result, on_status
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.summary = StreamSummary(versions=[self.predictor.version])

    def _make(self, path: Path) -> Predictor:
        predictor = Predictor(path, log=self.log, **self.predictor_options)
        # one inference before any frame arrives: backends that compile kernels on first use
        # (OpenVINO's for a new input shape) would otherwise let a live source run ahead and
        # drop its first frames, or a file source reach its end before the first result
        predictor.predict(np.zeros((*predictor.size, 3), np.uint8))
        return predictor

    def stop(self) -> None:
        self.stopping.set()

    # -- threads ---------------------------------------------------------------
    def _read(self, i: int, mailbox: _Mailbox) -> None:
        source = self.sources[i]
        index = 0
        try:
            while not self.stopping.is_set():
                try:
                    image = source.read()
                except EndOfSource:
                    if not source.live or not self._reconnect(source):
                        break
                    continue
                index += 1
                if image is None:
                    self.log(f"{source.description}: skipping unreadable frame {source.name}")
                    self._count(self.summary.skipped, source.label)
                    continue
                if getattr(source, "warning", None):
                    self.log(f"{source.description}: warning: {source.warning}")
                mailbox.put(i, Frame(i, index - 1, source.name, image, time.monotonic()))
        except Exception as error:  # a reader must never take the stream down silently
            self.log(f"{source.description}: reader stopped: {error}")
        finally:
            mailbox.end(i)

    def _reconnect(self, source) -> bool:
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            self.log(f"{source.description} dropped out; reconnecting in {delay:.1f} s "
                     f"(attempt {attempt} of {self.retries})")
            if self.stopping.wait(delay):
                return False
            if source.reconnect():
                self.log(f"{source.description} reconnected")
                return True
            delay = min(delay * 2, 30.0)
        self.log(f"{source.description} did not come back after {self.retries} attempts; ending it")
        return False

    def _write(self, results: queue.Queue, errors: list) -> None:
        while True:
            item = results.get()
            if item is _END:
                return
            if errors:
                continue  # drain, so the inference loop never blocks on a dead writer
            frame, prediction, predictor, record = item
            try:
                self.outputs.write(frame, prediction, predictor, record)
                if self.on_result is not None:
                    self.on_result(frame, prediction, record)
            except Exception as error:
                errors.append(error)
                self.stop()

    def _count(self, counter: dict, key: str, amount: int = 1) -> None:
        with self.lock:  # readers and the inference loop both count
            counter[key] = counter.get(key, 0) + amount

    # -- the inference loop ------------------------------------------------------
    def run(self) -> StreamSummary:
        mailbox = _Mailbox(self.sources, self.queue_depth, self.stopping)
        results: queue.Queue = queue.Queue(maxsize=self.queue_depth)
        writer_errors: list = []
        readers = [threading.Thread(target=self._read, args=(i, mailbox), name=f"reminder-read-{i}", daemon=True)
                   for i in range(len(self.sources))]
        writer = threading.Thread(target=self._write, args=(results, writer_errors), name="reminder-write",
                                  daemon=True)
        for thread in readers + [writer]:
            thread.start()
        start = last_status = time.monotonic()
        window: deque = deque(maxlen=120)   # (done time, latency ms) of recent frames
        failures = 0
        try:
            while not self.stopping.is_set():
                self._maybe_reload()
                frames = mailbox.take(self.batch, self.batch_timeout)
                if frames is None:
                    break
                frames = self._valid(frames)
                if not frames:
                    continue
                predictor = self.predictor
                began = time.monotonic()
                try:
                    predictions = self._predict(predictor, [f.image for f in frames])
                    failures = 0
                except Exception as error:  # logged and skipped; repeated failure is fatal
                    failures += 1
                    self.log(f"inference failed on a batch of {len(frames)} frames: {error}")
                    for frame in frames:
                        self._count(self.summary.skipped, self.sources[frame.source].label)
                    if failures >= 10:
                        raise ReminderError(f"inference failed on 10 batches in a row; last error: {error}") from None
                    continue
                done = time.monotonic()
                infer_ms = 1000 * (done - began)
                self.summary.batches += 1
                for frame, prediction in zip(frames, predictions):
                    latency = 1000 * (done - frame.captured)
                    window.append((done, latency))
                    source = self.sources[frame.source]
                    record = {"source": source.label, "frame": frame.index, "name": frame.name,
                              "time": round(time.time(), 3), "latency_ms": round(latency, 2),
                              "infer_ms": round(infer_ms, 2), "batch": len(frames), "version": predictor.version,
                              "shares": predictor.shares(prediction)}
                    self._count(self.summary.frames, source.label)
                    results.put((frame, prediction, predictor, record))
                if done - last_status >= 0.5 and self.on_status is not None:
                    last_status = done
                    self.on_status(self._status(window, mailbox, done - start))
                if self.max_frames is not None and self.summary.total >= self.max_frames:
                    break
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            self.stopping.set()
            if self.reloader is not None:  # a model half-loaded in a daemon thread aborts the exit
                self.reloader.close()
            for thread in readers:
                thread.join(timeout=5)
            results.put(_END)
            writer.join()
            self.predictor.close()
            self.outputs.close()
            for source in self.sources:
                source.close()
            for i, source in enumerate(self.sources):
                if mailbox.dropped[i]:
                    self.summary.dropped[source.label] = mailbox.dropped[i]
            self.summary.seconds = time.monotonic() - start
            self.summary.lost_outputs = list(self.outputs.lost)
        if writer_errors:
            error = writer_errors[0]
            raise error if isinstance(error, ReminderError) else ReminderError(f"writing outputs failed: {error}")
        return self.summary

    def _predict(self, predictor: Predictor, images: list) -> list:
        if not self.served:
            return predictor.predict(images)
        from reminder.runtime.triton import predict_with_backoff

        return predict_with_backoff(predictor, images, retries=self.retries, backoff=self.backoff, log=self.log,
                                    stopping=self.stopping)

    def _valid(self, frames: list[Frame]) -> list[Frame]:
        valid = []
        for frame in frames:
            source = self.sources[frame.source]
            try:
                check_frame(frame.image, f"{source.description} frame {frame.name}")
            except ReminderError as error:
                self.log(f"skipping: {error}")
                self._count(self.summary.skipped, source.label)
                continue
            valid.append(frame)
        return valid

    def _maybe_reload(self) -> None:
        if self.reloader is None:
            return
        outcome = self.reloader.poll()
        if outcome is None:
            return
        predictor, error, target = outcome
        install = self.bundle if (self.bundle / "current").is_symlink() else None
        if predictor is None:
            message = f"kept version {self.predictor.version}: the new bundle failed to load: {error}"
            self.log(message)
            self.summary.reload_failures.append(message)
            if install is not None:  # the fleet updater rolls back a version the runtime cannot load
                write_health(install, Path(target).name, False, error)
            return
        if install is not None:
            write_health(install, Path(target).name, True)
        self.log(f"switched from version {self.predictor.version} to {predictor.version} "
                 f"({len(predictor.classes)} classes, {predictor.backend_name})")
        old, self.predictor = self.predictor, predictor
        old.close()  # the writer renders with the old predictor's colours, never its backend
        self.summary.versions.append(predictor.version)

    def _status(self, window: deque, mailbox: _Mailbox, elapsed: float) -> dict:
        recent = [entry for entry in window if entry[0] >= window[-1][0] - 2.0]
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        return {"frames": self.summary.total, "fps": (len(recent) - 1) / span if span > 0 else 0.0,
                "latency_ms": float(np.mean([latency for _, latency in recent])) if recent else 0.0,
                "dropped": sum(mailbox.dropped), "skipped": sum(self.summary.skipped.values()),
                "version": self.predictor.version, "seconds": elapsed}


def run_stream(bundle: str | Path, sources: Sequence[str], **options) -> StreamSummary:
    """Open ``sources``, run ``bundle`` on them until they end; see :class:`Stream`."""
    return Stream(bundle, sources, **options).run()
