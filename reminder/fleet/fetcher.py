"""Downloads for ``tuf.ngclient`` with an overall deadline: a server that sends a byte
every few seconds passes every per-read socket timeout, and held ``fleet sync`` for ever.

The clock starts when the request does, so it covers connecting, the status line and
headers, and the body. The request runs in a worker thread: if no headers have come within
``deadline`` seconds, the connection's socket is shut down (which ends the worker's read)
and the download fails. Past ``deadline`` seconds, a body whose average rate is under
``min_rate`` bytes per second fails, and none may take longer than ``deadline`` plus its
length (the server's Content-Length, at most TUF's bound) at ``min_rate``. Reads return as
soon as any data arrives, so both limits are checked at least once per socket timeout.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
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
            self.max_length, self.request_started = None, None
            self.connections: weakref.WeakSet = weakref.WeakSet()
            _track_connections(self._proxy_env, self.connections)

        def _fetch(self, url):
            """The request (connect, status line, headers) within ``deadline`` seconds."""
            self.request_started, box = time.monotonic(), {}

            def request():
                try:
                    box["chunks"] = Urllib3Fetcher._fetch(self, url)
                except BaseException as error:  # handed to the caller's thread
                    box["error"] = error

            worker = threading.Thread(target=request, daemon=True, name="reminder-fetch")
            worker.start()
            worker.join(deadline)
            if worker.is_alive():
                for connection in list(self.connections):
                    _shut(connection)
                worker.join(5)
                raise exceptions.SlowRetrievalError(f"{url} sent no complete response headers within {deadline:.0f} s")
            if "error" in box:
                raise box["error"]
            return box["chunks"]

        @contextmanager
        def download_file(self, url, max_length):
            self.max_length = max_length
            with super().download_file(url, max_length) as handle:
                yield handle

        def _chunks(self, response):
            received, started = 0, self.request_started or time.monotonic()
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


def _track_connections(proxy_env, connections: weakref.WeakSet) -> None:
    """Make every connection that ``proxy_env``'s pool managers open register itself in
    ``connections`` once connected, so that a request past its deadline can be cut."""
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def tracked(pool_class):
        class Connection(pool_class.ConnectionCls):
            def connect(self):
                super().connect()
                connections.add(self)

        return type(f"Tracked{pool_class.__name__}", (pool_class,), {"ConnectionCls": Connection})

    classes = {"http": tracked(HTTPConnectionPool), "https": tracked(HTTPSConnectionPool)}
    original = proxy_env.get_pool_manager

    def get_pool_manager(*args, **kwargs):
        manager = original(*args, **kwargs)
        manager.pool_classes_by_scheme = classes
        return manager

    proxy_env.get_pool_manager = get_pool_manager


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass


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
