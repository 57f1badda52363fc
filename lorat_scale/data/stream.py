"""Streaming loader of shard records (webdataset), yielding ``Sequence`` objects to the pair sampler.

* Shards come from local paths or any URL webdataset opens (``pipe:``, ``http(s)://``, ...).
* Every epoch the shard list is shuffled with (seed, epoch), identically on every rank, then split
  across ranks (``wds.split_by_node``) and DataLoader workers (``wds.split_by_worker``): no
  record is read by two processes.
* Equal counts: from the per-shard item counts of the manifest, every rank yields exactly
  ``quota`` items, the smallest rank total (the few extra items of bigger ranks are left for this
  epoch; the shard order changes every epoch). A worker that runs short because bad records were
  skipped re-reads its shards from the start to fill its share, so DDP ranks never wait forever.
* Items are ``Sequence`` objects whose frames live in memory as encoded bytes
  (``Sequence.frame_bytes``); nothing is decoded here: the pair sampler decodes only the two
  frames it uses (``Sequence.load_frame``).
* Resume: ``skip`` items per worker are produced and dropped, so the rest of the epoch is exactly
  what an uninterrupted run would have produced (same shuffles, same bad-record skips).
* Bad data (corrupt/truncated frame bytes, NaN or out-of-image boxes, missing members, truncated
  tar files) is counted in ``StreamStats`` and logged with the shard and key, or raised, per
  ``DataConfig.on_bad_sample``.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import random
import re
from itertools import islice
from typing import Any, Iterator

import numpy as np
import torch
import webdataset as wds

from ..config import DataConfig
from .sequence import Sequence
from .shards import BadSampleError, decode_record, read_manifest, shard_urls
from .storage import StorageError

log = logging.getLogger(__name__)


class StreamStats:
    """Counters shared by all DataLoader workers of a process (a shared-memory int64 array).

    Created before the DataLoader starts its workers (they inherit it under fork, and receive
    it through process start-up under spawn), so the trainer reads the totals of all workers.
    """

    FIELDS = ("records", "items", "bad_records", "bad_image", "bad_box", "bad_tar", "refills")

    def __init__(self) -> None:
        self._arr = mp.Array("q", len(self.FIELDS))

    def add(self, field: str, n: int = 1) -> None:
        """Increment one counter."""
        with self._arr.get_lock():
            self._arr[self.FIELDS.index(field)] += n

    def as_dict(self) -> dict[str, int]:
        """Snapshot of all counters."""
        with self._arr.get_lock():
            return dict(zip(self.FIELDS, list(self._arr)))


def epoch_shards(urls: list[str], seed: int, epoch: int, shuffle: bool = True) -> list[str]:
    """The epoch's shard order: the same permutation on every rank (so the split stays disjoint)."""
    urls = list(urls)
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        urls = [urls[i] for i in rng.permutation(len(urls))]
    return urls


def assignment(n: int, world: int, num_workers: int) -> list[list[list[int]]]:
    """Shard positions of [rank][worker], mirroring wds.split_by_node then wds.split_by_worker."""
    return [[list(range(n))[r::world][w::num_workers] for w in range(num_workers)] for r in range(world)]


def quotas(counts: list[int], world: int, num_workers: int) -> tuple[int, list[list[int]]]:
    """(items per rank, items of each [rank][worker]) so that every rank yields the same number."""
    assign = assignment(len(counts), world, num_workers)
    have = [[sum(counts[i] for i in ws) for ws in r] for r in assign]
    quota = min(sum(r) for r in have)
    out = []
    for r in have:
        # Take the excess off the biggest workers first; deterministic from the counts alone.
        share = list(r)
        excess = sum(share) - quota
        for w in sorted(range(num_workers), key=lambda w: -share[w]):
            cut = min(excess, share[w] - min(share))
            share[w] -= cut
            excess -= cut
        w = 0
        while excess > 0:  # remaining excess spread evenly
            if share[w % num_workers] > 0:
                share[w % num_workers] -= 1
                excess -= 1
            w += 1
        out.append(share)
    return quota, out


def per_worker_skip(consumed: int, num_workers: int, batch_size: int) -> list[int]:
    """Items already taken from each worker after ``consumed`` items of a DataLoader (round-robin by batch)."""
    batches = consumed // batch_size
    out = [(batches // num_workers + (w < batches % num_workers)) * batch_size for w in range(max(num_workers, 1))]
    out[batches % max(num_workers, 1)] += consumed % batch_size
    return out


class ShardStream(torch.utils.data.IterableDataset):
    """An epoch of ``Sequence`` items from webdataset shards; see the module docstring."""

    def __init__(self, urls: list[str], counts: list[int], cfg: DataConfig | None = None, epoch: int = 0,
                 skip: int | list[int] = 0, shuffle: bool = True, stats: StreamStats | None = None,
                 worker_info: tuple[int, int, int, int] | None = None):
        if len(urls) != len(counts):
            raise ValueError(f"{len(urls)} shard URLs but {len(counts)} counts")
        self.urls, self.counts = list(urls), list(counts)
        self.cfg = cfg or DataConfig()
        self.epoch = epoch
        self.skip = skip
        self.shuffle = shuffle
        self.stats = stats or StreamStats()
        self.worker_info = worker_info  # (rank, world, worker, num_workers) override, for tests/tools

    @classmethod
    def from_manifest(cls, manifest: str, base: str | None = None, **kw: Any) -> "ShardStream":
        """A stream over the finished shards of a manifest (``base`` = URL prefix, e.g. ``pipe:curl -s ...``)."""
        m = read_manifest(manifest)
        counts = [s["items"] for s in m["shards"] if s.get("done")]
        return cls(shard_urls(manifest, base), counts, **kw)

    def set_epoch(self, epoch: int, skip: int | list[int] = 0) -> None:
        """Select the epoch (shard order, shuffles) and how many items per worker to drop (resume)."""
        self.epoch, self.skip = epoch, skip

    def _info(self) -> tuple[int, int, int, int]:
        """(rank, world, worker, num_workers), as webdataset's splitters see them."""
        return self.worker_info or wds.utils.pytorch_worker_info()

    def per_rank(self) -> int:
        """Items every rank yields per epoch."""
        _, world, _, nw = self._info()
        return quotas(self.counts, world, nw)[0]

    def _handler(self, exn: Exception) -> bool:
        """webdataset error handler for tar-level errors (unreadable URL, truncated tar)."""
        text = " ".join(str(a) for a in exn.args)
        # A transport failure (a `pipe:` command such as curl exiting non-zero, a refused connection) is not a
        # damaged shard: it stops the run with the URL and the cause instead of being skipped as bad data.
        # An empty stream from a `pipe:` command is the same failure seen before its exit status arrives.
        if (isinstance(exn, (ConnectionError, TimeoutError)) or re.search(r"\bexit (status )?[1-9]", text)
                or ("empty file" in text and "pipe:" in text)):
            raise StorageError(f"reading shard stream failed: {text} (storage unreachable or the command failed; "
                               "not counted as bad data)") from exn
        if self.cfg.on_bad_sample == "raise":
            raise exn
        # webdataset reports one broken tar twice (member iterator, then file expander; the first
        # appends " @ <file>" to the message): count and log it once.
        args = [str(a) for a in exn.args] or [""]
        core, _, src = args[0].partition(" @ ")
        key = (type(exn).__name__, core, src or (args[1] if len(args) > 1 else ""))
        if key not in self._seen_tar_errors:
            self._seen_tar_errors.add(key)
            self.stats.add("bad_tar")
            log.warning("skipped unreadable shard data: %s", " ".join(args))
        return True

    def _decode(self, src: Iterator[dict]) -> Iterator[Sequence]:
        """Records -> Sequences; bad records counted and logged (with shard and key) or raised."""
        for sample in src:
            problems: list[str] = []
            try:
                # A bad frame costs that frame (marked invalid, counted), not the record.
                seqs = decode_record(sample, check_images=self.cfg.check_images,
                                     problems=None if self.cfg.on_bad_sample == "raise" else problems)
            except BadSampleError as e:
                if self.cfg.on_bad_sample == "raise":
                    raise
                self.stats.add("bad_records")
                if e.kind in ("image", "box"):
                    self.stats.add(f"bad_{e.kind}")
                log.warning("skipped bad record: %s", e)
                continue
            for p in problems:
                self.stats.add("bad_image")
                log.warning("skipped bad frame: %s", p)
            self.stats.add("records")
            yield from seqs

    def _pipeline(self, urls: list[str], rank: int, world: int, worker: int, nw: int, rng_seed: list[int]) -> wds.DataPipeline:
        """shards -> node split -> worker split -> tar samples -> decoded Sequences -> shuffled."""
        if self.worker_info is None:
            splitters = [wds.split_by_node, wds.split_by_worker]
        else:  # explicit ranks (tests, offline tools): the same islice rule as the wds splitters
            splitters = [lambda src: islice(src, rank, None, world), lambda src: islice(src, worker, None, nw)]
        stages = [wds.SimpleShardList(urls), *splitters, wds.tarfile_to_samples(handler=self._handler), self._decode]
        if self.shuffle and self.cfg.stream_shuffle_buffer > 1:
            buf = self.cfg.stream_shuffle_buffer
            stages.append(wds.shuffle(buf, initial=buf, rng=random.Random(str(rng_seed))))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[Sequence]:
        rank, world, worker, nw = self._info()
        if len(self.urls) < world * nw:
            raise ValueError(f"{len(self.urls)} shards for {world} ranks x {nw} workers: every worker needs at "
                             "least one shard (write more shards: make-shards --readers)")
        order = epoch_shards(list(range(len(self.urls))), self.cfg.seed, self.epoch, self.shuffle)
        urls = [self.urls[i] for i in order]
        _, share = quotas([self.counts[i] for i in order], world, nw)
        want = share[rank][worker]
        skip = self.skip[worker] if isinstance(self.skip, (list, tuple)) else int(self.skip)
        produced = 0
        rounds = 0
        while produced < want:
            self._seen_tar_errors: set[tuple[str, str, str]] = set()
            it = iter(self._pipeline(urls, rank, world, worker, nw, [self.cfg.seed, self.epoch, rank, worker, rounds]))
            got = 0
            for seq in it:
                got += 1
                if produced >= skip:
                    self.stats.add("items")
                    yield seq
                produced += 1
                if produced >= want:
                    break
            if got == 0:
                raise RuntimeError(f"rank {rank} worker {worker}: its shards yielded no usable record "
                                   f"(all bad?); stats {self.stats.as_dict()}")
            rounds += 1
            if produced < want:
                self.stats.add("refills")  # bad records left this worker short: read its shards again
