"""Downloads for ``tuf.ngclient`` with an overall deadline: a server that sends a byte
every few seconds passes every per-read socket timeout, and held ``fleet sync`` for ever.

Past ``deadline`` seconds, a download whose average rate is under ``min_rate`` bytes per
second fails, and none may take longer than ``deadline`` plus its length (the server's
Content-Length, at most TUF's bound) at ``min_rate``. Reads return as soon as any data
arrives, so both limits are checked at least once per socket timeout.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from reminder.errors import ReminderError


def deadline_fetcher(*, deadline: float = 60.0, min_rate: float = 50_000.0, socket_timeout: float = 30.0):
    """A ``tuf.ngclient`` fetcher (Urllib3Fetcher) that gives up on slow downloads."""
    import urllib3
    from tuf.api import exceptions
    from tuf.ngclient import Urllib3Fetcher

    if deadline <= 0 or min_rate <= 0:
        raise ReminderError(f"the download deadline ({deadline} s) and minimum rate ({min_rate} B/s) must be positive")

    class DeadlineFetcher(Urllib3Fetcher):
        def __init__(self):
            super().__init__(socket_timeout=min(socket_timeout, deadline), chunk_size=1 << 16)
            self.max_length = None

        @contextmanager
        def download_file(self, url, max_length):
            self.max_length = max_length
            with super().download_file(url, max_length) as handle:
                yield handle

        def _chunks(self, response):
            received, started = 0, time.monotonic()
            length = int(response.headers.get("Content-Length") or self.max_length or 0)
            budget = deadline + min(length, self.max_length or length) / min_rate
            try:
                while True:
                    elapsed = time.monotonic() - started
                    if elapsed > budget or (elapsed > deadline and received / elapsed < min_rate):
                        raise exceptions.SlowRetrievalError(
                            f"{response.geturl() or 'a download'} came too slowly: {received} bytes in "
                            f"{elapsed:.0f} s (at least {min_rate:.0f} B/s expected)")
                    data = response.read1(self.chunk_size)
                    if not data:
                        break
                    received += len(data)
                    yield data
            except urllib3.exceptions.TimeoutError as error:
                raise exceptions.SlowRetrievalError(f"no data for {self.socket_timeout} s") from error
            finally:
                response.release_conn()

    return DeadlineFetcher()


def describe_error(error: BaseException) -> str:
    """``Type: message`` of a download or TUF error and of the root cause it wraps (TUF's
    own messages are often empty: 'SlowRetrievalError:')."""
    def text(e: BaseException) -> str:
        message = str(e).strip()
        return f"{type(e).__name__}: {message}" if message else type(e).__name__

    root, seen = error, {id(error)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    return text(error) if root is error else f"{text(error)} (caused by {text(root)})"
