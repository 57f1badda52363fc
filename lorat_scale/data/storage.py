"""Byte-range reads of shard members: ``os.pread`` on local and parallel file systems, HTTP range requests on URLs.

The random-access shard reader (``shards.ShardStore``) reads one frame as one range ``[offset, offset + size)``
of a tar file, so a training pair costs the bytes of its two frames, not a whole record.

* Local paths (and ``file://``): one ``os.pread`` per frame on a cached file descriptor (a small LRU per
  process, reopened after ``fork``: DataLoader workers never share a descriptor).
* ``http://`` / ``https://``: ``GET`` with ``Range: bytes=a-b`` through urllib3 (kept-alive connections,
  timeouts). A reply that is not ``206`` with exactly the asked bytes is refused: a server that ignores
  ``Range`` would send the whole shard for every frame.
* Faults (issue "dead or slow storage"): connection refused, timeouts, broken connections, HTTP 5xx/429/408
  and local ``EIO``/``ESTALE`` are retried with exponential backoff (``DataConfig.io_retries``,
  ``io_backoff``, ``io_timeout``). When the retries are spent, ``StorageError`` names the URL, the byte range,
  the attempts and the cause. It is deliberately not an ``OSError``: the pair sampler counts and skips bad
  *data* (``OSError``/``ValueError``), while an unreachable server must stop the run, not be skipped as
  corrupt frames.

Every read adds to ``READ_STATS`` (this process): requests, payload bytes, retries. The training samples carry
the bytes they cost (``counters["bytes_read"]``), so the figure is exact across loader workers.
"""
from __future__ import annotations

import errno
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

__all__ = ["StorageError", "RangeReader", "READ_STATS", "is_url", "join_url"]

# Per-process read counters (reset by whoever measures; the training path uses per-sample deltas).
READ_STATS: dict[str, int] = {"requests": 0, "bytes": 0, "retries": 0}

# HTTP statuses worth retrying: the server is busy, restarting or behind an overloaded proxy.
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# Local errors of network/parallel file systems that usually pass (NFS stale handles, Lustre EIO).
RETRY_ERRNO = {errno.EIO, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR}


class StorageError(RuntimeError):
    """Shard storage could not be read after the retries; the message names the URL, range and cause."""


def is_url(path: str) -> bool:
    """True for ``http(s)://`` locations (read with range requests)."""
    return str(path).startswith(("http://", "https://"))


def join_url(base: str, name: str) -> str:
    """``base/name`` for folders and URLs alike."""
    return f"{str(base).rstrip('/')}/{name}"


@dataclass
class RetryPolicy:
    """How hard to try before a read gives up (``DataConfig.io_*``)."""

    retries: int = 5  # extra attempts after the first
    backoff: float = 0.5  # first wait in seconds; doubles every retry (plus up to 25 % jitter), capped at 30 s
    timeout: float = 30.0  # seconds to connect, and between bytes of a reply

    def wait(self, attempt: int) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based)."""
        return min(30.0, self.backoff * 2 ** (attempt - 1)) * (1.0 + 0.25 * random.random())


def _cause(exc: BaseException) -> str:
    """Short human-readable cause of a failed request."""
    import urllib3

    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(exc, ConnectionRefusedError):
        text = str(reason)
        if "refused" in text.lower():
            return "connection refused (is the server running?)"
        return f"cannot connect ({text.split(': ', 1)[-1]})"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return "connect timeout"
    if isinstance(reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "read timeout (server too slow)"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return f"connection broken ({reason})"
    return f"{type(reason).__name__}: {reason}"


class RangeReader:
    """``read(location, offset, size) -> bytes`` for local paths and http(s) URLs, with retries (module docstring)."""

    def __init__(self, policy: RetryPolicy | None = None, max_open_files: int = 64) -> None:
        self.policy = policy or RetryPolicy()
        self.max_open_files = max_open_files
        self._pid = -1
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pool: Any = None

    # Handles are per process: dropped when pickled (spawned workers) and reopened after a fork.
    def __getstate__(self) -> dict:
        return {"policy": self.policy, "max_open_files": self.max_open_files}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["policy"], state["max_open_files"])

    def _own(self) -> None:
        """Forget handles inherited from a parent process (a forked DataLoader worker)."""
        if self._pid != os.getpid():
            self._pid, self._fds, self._pool = os.getpid(), OrderedDict(), None

    def close(self) -> None:
        """Close this process's file descriptors and connections."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
            if self._pool is not None:
                self._pool.clear()
        self._fds, self._pool = OrderedDict(), None

    def read(self, location: str, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of ``location``; ``StorageError`` once the retries are spent."""
        fetch = self._http if is_url(location) else self._local
        return self._retrying(f"{location}: bytes {offset}-{offset + size - 1}", lambda: fetch(location, offset, size))

    def read_all(self, location: str) -> bytes:
        """A whole (small) file or object: manifests and indexes. FileNotFoundError if it is not there."""
        if not is_url(location):
            path = urlparse(location).path if location.startswith("file://") else location
            with open(path, "rb") as f:
                return f.read()
        return self._retrying(location, lambda: self._http_get(location))

    def _retrying(self, what: str, fetch: Any) -> bytes:
        """``fetch()`` with retries and backoff on ``_Retry``; counted in READ_STATS."""
        self._own()
        t0 = time.monotonic()
        for attempt in range(self.policy.retries + 1):
            try:
                data = fetch()
                READ_STATS["requests"] += 1
                READ_STATS["bytes"] += len(data)
                return data
            except _Retry as e:
                cause = str(e)
            if attempt < self.policy.retries:
                READ_STATS["retries"] += 1
                time.sleep(self.policy.wait(attempt + 1))
        raise StorageError(f"{what}: gave up after {self.policy.retries + 1} attempts in "
                           f"{time.monotonic() - t0:.1f} s: {cause}")

    def _http_pool(self) -> Any:
        import urllib3

        if self._pool is None:
            t = urllib3.Timeout(connect=self.policy.timeout, read=self.policy.timeout)
            # retries=False: this class retries (urllib3's Retry does not cover a body cut off mid-read).
            self._pool = urllib3.PoolManager(num_pools=16, maxsize=4, timeout=t, retries=False)
        return self._pool

    # ---------------------------------------------------------------------------- local files
    def _fd(self, path: str) -> int:
        fd = self._fds.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            while len(self._fds) >= self.max_open_files:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[path] = fd  # most recently used last
        return fd

    def _local(self, location: str, offset: int, size: int) -> bytes:
        path = urlparse(location).path if location.startswith("file://") else location
        try:
            data = os.pread(self._fd(path), size, offset)
        except FileNotFoundError as e:
            # A shard that is not there is a storage problem (unmounted or moved), not a bad frame.
            raise StorageError(f"{path}: shard file not found ({e.strerror}); is the file system mounted?") from None
        except OSError as e:
            fd = self._fds.pop(path, None)
            if fd is not None:
                os.close(fd)
            if e.errno in RETRY_ERRNO:
                raise _Retry(f"{os.strerror(e.errno)}") from None
            raise StorageError(f"{path}: bytes {offset}-{offset + size - 1}: {e}") from None
        if len(data) != size:
            # The index points past the end: the shard was cut short (data damage, counted by the sampler).
            raise ShortReadError(f"{path}: only {len(data)} of {size} bytes at offset {offset} (shard truncated?)")
        return data

    # ---------------------------------------------------------------------------- http(s)
    def _request(self, url: str, headers: dict[str, str]) -> Any:
        """One GET; transport failures become ``_Retry`` with a readable cause."""
        import urllib3

        try:
            r = self._http_pool().request("GET", url, headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as e:
            raise _Retry(_cause(e)) from None
        if r.status in RETRY_STATUS:
            raise _Retry(f"HTTP {r.status} {r.reason}")
        return r

    def _http_get(self, url: str) -> bytes:
        r = self._request(url, {})
        if r.status == 404:
            raise FileNotFoundError(f"{url}: HTTP 404 Not Found")
        if r.status != 200:
            raise StorageError(f"{url}: HTTP {r.status} {r.reason}")
        return r.data

    def _http(self, url: str, offset: int, size: int) -> bytes:
        r = self._request(url, {"Range": f"bytes={offset}-{offset + size - 1}"})
        if r.status == 200:
            raise StorageError(f"{url}: the server ignored the Range header (HTTP 200, {len(r.data)} bytes): it would "
                               "send whole shards for every frame; serve the shards with range support "
                               "(any object store or nginx/apache), or use data.shard_access=stream")
        if r.status != 206:
            raise StorageError(f"{url}: bytes {offset}-{offset + size - 1}: HTTP {r.status} {r.reason}")
        if len(r.data) != size:
            raise ShortReadError(f"{url}: {len(r.data)} of {size} bytes at offset {offset} (shard truncated?)")
        return r.data


class _Retry(Exception):
    """A transient failure; the text is the cause reported if the retries run out."""


class ShortReadError(OSError):
    """Fewer bytes than the index promised: damaged or truncated shard (data damage, skipped by option)."""
