"""LoRAT training pairs streamed from shards: ``ShardStream`` records -> ``make_pair`` samples, mixed by source.

    ds = ShardPairDataset(["/data/shards/lasot-train", "/data/shards/got10k-vot_train"], cfg.data,
                          template_size=112, search_size=224, batch_size=micro_batch)
    loader = ds.epoch_loader(epoch, range(first_step, last_step), global_batch, micro_batch, num_workers)
    ...; log(ds.counters())   # stream counters: records, bad_records, ..., failed_pairs, empty_records, passes

The streaming fallback for storage without random access (docs/DATA.md); ``shards=`` sources are read by
range (``shards.load_shards`` + ``PairDataset``) unless ``data.shard_access=stream``. The shards must have been
written with ``--margin >= data.max_frame_gap`` (else a template's search frames are not all in its record:
refused) and with at least ranks x lanes shards (``make-shards --readers``; refused too).

**Layout of an epoch.** Every rank yields exactly ``pairs_per_epoch // world_size`` samples (rank-local
index ``j``; global ``position = j * world_size + rank``, unique over ranks). The rank's samples are cut
into batches of ``batch_size`` (the DataLoader's); batch ``b`` belongs to *lane* ``b % lanes``. A lane
owns its own split of every source's shards (``ShardStream`` with ``worker_info=(rank, world, lane,
lanes)``: no record is read by two lanes or ranks) and its own sampling state. DataLoader worker ``w``
serves the batches ``b0 + w, b0 + w + num_workers, ...`` (the order in which the DataLoader collects
them, ``b0`` = first batch after a resume), so the loader yields ``j`` in increasing order and the
samples do not depend on ``num_workers`` (``lanes`` must be a multiple of it; default
``DataConfig.num_workers``).

**Determinism.** Given the shard order, the sample at ``position`` is a pure function of (seed, epoch,
position): the source of each position comes from a plan drawn with (seed, epoch) - exact per-epoch
counts ``pairs_per_epoch * weight / sum(weights)`` in a random order, as ``PairDataset`` does, rather
than an independent draw per position (which would let a 5 % source drift by +-20 % in an epoch);
the record it uses from the lane's deterministic record sequence; the pair from
``make_pair([window], cfg, default_rng([seed, epoch, rank, lane, position]))``.

**Exact sampling from windows** (docs/DATA.md "Exact LoRAT sampling from shard windows"). LoRAT picks a
sequence uniformly, then a template uniformly among its valid frames. A record (window ``w``, weight
``w.weight`` = its core valid frames / the sequence's valid frames; the weights of a sequence's windows
sum to 1) yields ``n_w = floor(c * weight + u)`` pairs, ``u ~ U[0, 1)`` drawn per record visit from a
seeded generator (stochastic rounding: ``E[n_w] = c * weight`` exactly, and ``n_w`` is ``floor`` or
``ceil`` of it, the least variance any unbiased integer rule has). Per pass over the records, sequence S
then yields ``c * sum(weights) = c`` pairs in expectation whatever number of windows it was cut into,
and a template frame of S is drawn ``c * weight_w / core_valid_w = c / valid(S)`` times: uniform over
the sequence, uniform over sequences. ``c`` is one constant per source, so its value changes only the
IO, never the distribution: ``c = pairs_per_record / mean item weight`` (from the manifest), so that a
record visit yields ``pairs_per_record`` pairs on average. Scaling k was chosen over accepting a record
with probability ``weight``: both read every record of a pass (a tar stream cannot skip a record
without reading it), but acceptance draws all k pairs of a visit from one window (clumps of k
correlated pairs) where scaling spreads them over the windows. The epoch stops mid-pass (and the
stream drops a rank's few surplus records); the records cut off are those the shuffled shard/record
order puts last, unrelated to which sequence they hold.

**Bytes read per pair vs. diversity** (figures from docs/DATA.md, LaSOT-like 640x360, core 400): a
record is ~11.8 MiB, so k = 1 / 4 / 16 pairs per record read ~12,070 / 3,018 / 754 KiB per pair
(x4-5 at 720p). Reading every record once per epoch while LoRAT draws 32,768 pairs per dataset is
k ~ 4.2 for LaSOT (2.83 MiB per pair) and k ~ 1.1 for TrackingNet (9.5 MiB per pair). Larger k reads
less, but the k pairs of a record come from <= core + 2 * margin frames of one sequence, and an epoch
visits only ``pairs / k`` records (every record is still visited over epochs: the shard order changes
every epoch). To keep k correlated pairs out of one batch, each lane keeps ``open_records`` records per
source open and draws each pair from one of them at random. Memory per lane and source: that many
records plus ``DataConfig.stream_shuffle_buffer`` in the stream (~12 MiB each).

**Resume.** ``set_epoch(epoch, start=j0)`` (``j0`` = samples this rank already consumed, a
multiple of ``batch_size``): each lane replays its record sequence up to ``j0`` without drawing pairs
(records are read, no image is decoded), so the remainder is identical to an uninterrupted run with
the same world size, ``lanes`` and ``batch_size``.

**Counters**: every sample carries make_pair's ``counters`` (resampled, bad_frames, bytes read), summed
once by ``pairs.collate``. ``counters()`` adds what only the stream knows: the streams' ``StreamStats``
(records, items, bad_records, bad_image, bad_box, bad_tar, refills; summed over sources, and per source
as ``src<i>/<name>``), failed_pairs (no usable pair in a window after ``pairs.MAX_RESAMPLES`` draws: drawn
from another open record instead), empty_records (records that rounded to 0 pairs) and passes (extra
passes over a lane's shards). Shared memory: the DataLoader workers' counts are visible in the main process.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from collections.abc import Iterator, Sequence as Seq
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from .pairs import (PairSamplingError, check_grid, collate, fork_safe_opencv, make_pair, rank_and_world,
                    split_counts, worker_init_fn)
from .sequence import Sequence
from .shards import ShardLayoutError, read_manifest, shard_urls
from .stream import ShardStream, StreamStats

__all__ = ["ShardSource", "ShardPairDataset", "pairs_for_record", "worker_init_fn"]

log = logging.getLogger(__name__)

PAIR_FIELDS = ("failed_pairs", "empty_records", "passes")
MAX_EMPTY_PASSES = 100  # passes in a row without a single pair before a lane gives up on a source


def pairs_for_record(weight: float, scale: float, u: float) -> int:
    """Pairs a record of ``weight`` yields: ``floor(scale * weight + u)``, unbiased for ``u ~ U[0, 1)``."""
    return int(math.floor(scale * weight + u))


@dataclass(frozen=True)
class ShardSource:
    """One training source: shard URLs, items per shard, and the mean item weight (sets the pair scale)."""

    urls: tuple[str, ...]
    counts: tuple[int, ...]
    mean_weight: float = 1.0  # mean Sequence.weight of the items; 1 for whole sequences / images
    name: str = ""
    margin: int = 10**9  # context frames each side of a record's core (the layout's --margin)
    split_sequences: int = 0  # sequences cut into several records (margins matter only for them)

    @classmethod
    def from_manifest(cls, manifest: str | os.PathLike, base: str | None = None) -> "ShardSource":
        """The finished shards of a manifest (a shard folder or manifest.json); ``base`` = URL prefix."""
        m = read_manifest(manifest)
        done = [s for s in m["shards"] if s.get("done")]
        if not done:
            raise ValueError(f"{manifest}: no finished shard; run `lorat-scale make-shards` to completion")
        items = sum(int(s["items"]) for s in done)
        records = sum(int(s["records"]) for s in done)
        if items != records:
            mean_w = 1.0  # image records (COCO): one item per object, every object weight 1
        else:
            # Windows of one sequence weigh 1 together: mean weight = sequences / windows.
            seqs = (m.get("totals") or {}).get("sequences") or sum(int(s["sequences"]) for s in done)
            mean_w = min(1.0, seqs / max(items, 1))
        lay = m.get("layout", {})
        return cls(tuple(shard_urls(manifest, base)), tuple(int(s["items"]) for s in done), mean_w, str(manifest),
                   int(lay.get("margin", 0)), int(lay.get("split_sequences", 0)))

    @classmethod
    def parse(cls, spec: "str | os.PathLike | ShardSource") -> "ShardSource":
        """``MANIFEST`` or ``MANIFEST::BASE_URL`` (e.g. ``/data/shards/lasot::pipe:curl -s https://h/lasot``)."""
        if isinstance(spec, ShardSource):
            return spec
        path, sep, base = str(spec).partition("::")
        return cls.from_manifest(path, base if sep else None)


class ShardPairDataset(torch.utils.data.IterableDataset):
    """Training pairs from shard streams, one stream per source; see the module docstring.

    ``sources``: shard folders / manifests (``MANIFEST::BASE_URL`` for remote shards) or ``ShardSource``s;
    ``rank``/``world_size``: default torch.distributed, else ``RANK``/``WORLD_SIZE``; ``pairs_per_record``
    (k) and ``open_records``: default ``cfg.stream_pairs_per_record`` / ``cfg.stream_open_records``;
    ``batch_size``: the DataLoader's (``batch_size=None`` loaders: 1); ``lanes``: default
    ``cfg.num_workers``, a multiple of the loader's workers; ``pairs_per_epoch``: default ``cfg``'s;
    ``patch_size``: the model's (``ModelConfig.patch_size``), the cell size of the template mask and labels.
    """

    def __init__(self, sources: Seq["str | os.PathLike | ShardSource"], cfg: DataConfig, template_size: int = 112,
                 search_size: int = 224, epoch: int = 0, rank: int | None = None, world_size: int | None = None,
                 pairs_per_record: float | None = None, batch_size: int = 1, lanes: int | None = None,
                 open_records: int | None = None, pairs_per_epoch: int | None = None, start: int = 0,
                 augment_images: bool = True, patch_size: int = 14) -> None:
        self.sources = [ShardSource.parse(s) for s in sources]
        if not self.sources:
            raise ValueError("ShardPairDataset needs at least one source (a shard folder or manifest)")
        weights = list(cfg.weights) or [1.0] * len(self.sources)
        if len(weights) != len(self.sources) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"data.weights {weights} must give one non-negative weight per source "
                             f"({len(self.sources)}), not all zero")
        # Defaults from the config (data.stream_pairs_per_record / data.stream_open_records).
        pairs_per_record = cfg.stream_pairs_per_record if pairs_per_record is None else pairs_per_record
        open_records = cfg.stream_open_records if open_records is None else open_records
        if pairs_per_record <= 0:
            raise ValueError(f"pairs_per_record={pairs_per_record} must be > 0")
        if batch_size < 1 or open_records < 1:
            raise ValueError(f"batch_size={batch_size} and open_records={open_records} must be >= 1")
        self.cfg, self.weights = cfg, [float(w) for w in weights]
        check_grid(template_size, search_size, patch_size)
        self.template_size, self.search_size, self.patch_size = template_size, search_size, patch_size
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.pairs_per_record, self.batch_size, self.open_records = float(pairs_per_record), batch_size, open_records
        self.lanes = int(lanes if lanes is not None else max(cfg.num_workers, 1))
        if self.lanes < 1:
            raise ValueError(f"lanes={self.lanes} must be >= 1")
        self.pairs_per_epoch = int(pairs_per_epoch if pairs_per_epoch is not None else cfg.pairs_per_epoch)
        self.per_rank = self.pairs_per_epoch // self.world_size  # the remainder (< world_size) is dropped
        if self.per_rank < 1:
            raise ValueError(f"pairs_per_epoch={self.pairs_per_epoch} < world size {self.world_size}")
        self.augment_images = augment_images
        # Pairs per unit of weight, per source: a record visit yields pairs_per_record on average.
        self.scales = [self.pairs_per_record / s.mean_weight for s in self.sources]
        # Created here, before DataLoader workers start, so that their counts are shared with us.
        self.stream_stats = [StreamStats() for _ in self.sources]
        self._pair_stats = mp.Array("q", len(PAIR_FIELDS))
        self._check_layout()
        self.set_epoch(epoch, start)

    # ------------------------------------------------------------------------------ epoch, resume
    def _check_layout(self) -> None:
        """Refuse shards that cannot serve this sampling: margins below the frame gap, fewer shards than readers."""
        for s in self.sources:
            if s.margin < self.cfg.max_frame_gap and s.split_sequences:
                raise ShardLayoutError(
                    f"{s.name}: written with margin {s.margin} < data.max_frame_gap={self.cfg.max_frame_gap} and "
                    f"{s.split_sequences} sequences cut into records: streamed records would lack search frames. "
                    "Read them with data.shard_access=random, or rewrite with make-shards --margin "
                    f"{self.cfg.max_frame_gap}")
            readers = self.world_size * self.lanes
            if len(s.urls) < readers:
                raise ShardLayoutError(
                    f"{s.name}: {len(s.urls)} shards for {self.world_size} ranks x {self.lanes} loader lanes = {readers} "
                    f"stream readers: rewrite with make-shards --readers {self.world_size}x{self.lanes} (or more), or "
                    "read them with data.shard_access=random (any number of readers)")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and the first rank-local sample to yield (= samples this rank already consumed)."""
        sp = int(start)
        if not 0 <= sp <= self.per_rank:
            raise ValueError(f"start={sp} outside [0, {self.per_rank}] (samples per rank this epoch)")
        if sp % self.batch_size and sp != self.per_rank:
            raise ValueError(f"start={sp} is not a multiple of batch_size={self.batch_size}: the DataLoader "
                             "consumes whole batches")
        self.epoch, self.start_position = int(epoch), sp
        # Source of every global position: exact per-epoch counts, in a (seed, epoch)-seeded order.
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.cfg.seed, self.epoch], spawn_key=(4,))))
        counts = split_counts(self.per_rank * self.world_size, self.weights)
        self.plan = rng.permutation(np.repeat(np.arange(len(self.sources), dtype=np.int16), counts))

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Resume point: epoch and ``consumed`` samples of this rank (default: the current start), plus the layout."""
        return {"epoch": self.epoch, "position": self.start_position if consumed is None else int(consumed),
                "seed": self.cfg.seed, "world_size": self.world_size, "lanes": self.lanes,
                "batch_size": self.batch_size, "pairs_per_epoch": self.pairs_per_epoch,
                "pairs_per_record": self.pairs_per_record, "open_records": self.open_records,
                "num_sources": len(self.sources)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s epoch and position; refuses a layout under which the remainder would differ."""
        mine = self.state_dict()
        diff = [f"{k}: saved {state[k]}, now {mine[k]}" for k in mine if k not in ("epoch", "position")
                and k in state and state[k] != mine[k]]
        if diff:
            raise ValueError("cannot resume the pair stream exactly: " + "; ".join(diff))
        self.set_epoch(int(state["epoch"]), int(state["position"]))

    def __len__(self) -> int:
        """Samples this rank yields in the current epoch (from ``start``)."""
        return self.per_rank - self.start_position

    def epoch_loader(self, epoch: int, steps: range, global_batch: int, micro_batch: int, num_workers: int,
                     seed: int = 0) -> torch.utils.data.DataLoader:
        """This rank's micro-batches of the optimizer steps ``steps`` of ``epoch``, in order (as PairDataset's)."""
        if micro_batch != self.batch_size:
            raise ValueError(f"micro_batch={micro_batch} but the stream was built for batch_size={self.batch_size}")
        # The stream yields this rank's samples in order from a position (= samples already consumed).
        self.set_epoch(epoch, steps.start * global_batch // self.world_size)
        if num_workers > 0:
            fork_safe_opencv()
        return torch.utils.data.DataLoader(self, batch_size=micro_batch, num_workers=num_workers, collate_fn=collate,
                                           pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init_fn,
                                           generator=torch.Generator().manual_seed(seed))

    # ------------------------------------------------------------------------------ counters
    def counters(self, per_source: bool = False) -> dict[str, int]:
        """Stream bad-data counters (summed over sources) and pair counters; ``per_source`` adds ``src<i>/<name>``."""
        out: dict[str, int] = dict.fromkeys(StreamStats.FIELDS, 0)
        for i, st in enumerate(self.stream_stats):
            for k, v in st.as_dict().items():
                out[k] += v
                if per_source:
                    out[f"src{i}/{k}"] = v
        with self._pair_stats.get_lock():
            out.update(zip(PAIR_FIELDS, list(self._pair_stats)))
        return out

    def _count(self, field: str, n: int = 1) -> None:
        """Increment a pair counter (shared by all workers)."""
        if n:
            with self._pair_stats.get_lock():
                self._pair_stats[PAIR_FIELDS.index(field)] += n

    # ------------------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            worker_init_fn(info.id)  # also without worker_init_fn: a worker must not spawn a thread pool per op
        if self.lanes % nw:
            raise ValueError(f"lanes={self.lanes} is not a multiple of the DataLoader's num_workers={nw}: a lane "
                             "must be served by one worker (set lanes = num_workers)")
        bsz = self.batch_size
        first = self.start_position // bsz
        lanes: dict[int, _Lane] = {}
        for b in range(first + worker, -(-self.per_rank // bsz), nw):
            lane = b % self.lanes
            if lane not in lanes:
                lanes[lane] = _Lane(self, lane)
                lanes[lane].skip_batches(first)  # resume: replay this lane's earlier batches
            for j in range(b * bsz, min((b + 1) * bsz, self.per_rank)):
                yield lanes[lane].sample(j)

    def source_of(self, j: int) -> int:
        """Source index of this rank's sample ``j``."""
        return int(self.plan[j * self.world_size + self.rank])


class _Cursor:
    """A lane's place in one source: the record stream (pass after pass) and the open records."""

    def __init__(self, ds: ShardPairDataset, src: int, lane: int):
        self.ds, self.src, self.lane = ds, src, lane
        self.passes = -1
        self.records: Iterator[Sequence] = iter(())
        self.round_rng: np.random.Generator | None = None
        self.pool: list[list[Any]] = []  # [window, pairs it still owes]
        self.pass_items = self.pass_paid = self.empty_passes = 0
        c = ds.cfg
        # Which open record each pair uses: a generator per (lane, source), consumed in sample order.
        self.pick = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [c.seed, ds.epoch, ds.rank, lane, src], spawn_key=(2,))))

    def _new_pass(self) -> None:
        """Start the next pass over this lane's shards of the source (pass 0 = the stream's own epoch order)."""
        ds, c = self.ds, self.ds.cfg
        self.passes += 1
        if self.passes:
            ds._count("passes")
        # Later passes reshuffle shards and records with a seed derived from (seed, epoch, source, pass).
        seed = c.seed if self.passes == 0 else int(
            np.random.SeedSequence([c.seed, ds.epoch, self.src, self.passes]).generate_state(1)[0])
        s = ds.sources[self.src]
        stream = ShardStream(list(s.urls), list(s.counts), cfg=dataclasses.replace(c, seed=seed), epoch=ds.epoch,
                             stats=ds.stream_stats[self.src], worker_info=(ds.rank, ds.world_size, self.lane, ds.lanes))
        self.records = iter(stream)
        self.round_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [c.seed, ds.epoch, ds.rank, self.lane, self.src, self.passes], spawn_key=(3,))))

    def next_record(self) -> tuple[Sequence, int]:
        """The next record with at least one pair to give, and its pair count ``n_w``."""
        while True:
            for seq in self.records:
                self.pass_items += 1
                n = pairs_for_record(seq.weight, self.ds.scales[self.src], float(self.round_rng.random()))
                if n > 0:
                    self.pass_paid += 1
                    return seq, n
                self.ds._count("empty_records")
            if self.passes >= 0:  # the current pass is exhausted
                where = f"source {self.src} ({self.ds.sources[self.src].name}), rank {self.ds.rank} lane {self.lane}"
                if self.pass_items == 0:
                    raise RuntimeError(f"{where}: its shards gave no record (too few items for "
                                       f"{self.ds.world_size} ranks x {self.ds.lanes} lanes: write more shards, "
                                       "make-shards --readers)")
                self.empty_passes = 0 if self.pass_paid else self.empty_passes + 1
                if self.empty_passes >= MAX_EMPTY_PASSES:
                    raise RuntimeError(f"{where}: {MAX_EMPTY_PASSES} passes without a pair (every record weight x "
                                       f"scale {self.ds.scales[self.src]:.3g} rounds to 0)")
            self._new_pass()
            self.pass_items = self.pass_paid = 0

    def take(self) -> tuple[Sequence, list[Sequence]]:
        """The window the next pair uses (one owed pair paid), and the other open windows (fallbacks)."""
        while len(self.pool) < self.ds.open_records:
            seq, n = self.next_record()
            self.pool.append([seq, n])
        i = int(self.pick.integers(len(self.pool)))
        seq = self.pool[i][0]
        self.pool[i][1] -= 1
        others = [p[0] for k, p in enumerate(self.pool) if k != i]
        if self.pool[i][1] == 0:
            del self.pool[i]  # refilled at the next take: no record is read past the epoch's last pair
        return seq, others


class _Lane:
    """The sampling state of one lane: a cursor per source, advanced in sample order."""

    def __init__(self, ds: ShardPairDataset, lane: int):
        self.ds, self.lane = ds, lane
        self.cursors: dict[int, _Cursor] = {}

    def _cursor(self, src: int) -> _Cursor:
        """The lane's cursor in ``src`` (created on first use: an unused source is never read)."""
        if src not in self.cursors:
            self.cursors[src] = _Cursor(self.ds, src, self.lane)
        return self.cursors[src]

    def skip_batches(self, first: int) -> None:
        """Replay this lane's batches before batch ``first`` without drawing pairs (resume)."""
        bsz = self.ds.batch_size
        for b in range(self.lane, first, self.ds.lanes):
            for j in range(b * bsz, min((b + 1) * bsz, self.ds.per_rank)):
                self._cursor(self.ds.source_of(j)).take()

    def sample(self, j: int) -> dict:
        """This rank's sample ``j``: a make_pair sample plus ``position`` and ``source``."""
        ds, c = self.ds, self.ds.cfg
        src = ds.source_of(j)
        position = j * ds.world_size + ds.rank
        seq, others = self._cursor(src).take()
        rng = np.random.default_rng([c.seed, ds.epoch, ds.rank, self.lane, position])
        for k, window in enumerate([seq, *others]):
            try:
                s = make_pair([window], c, rng, ds.template_size, ds.search_size, seq_index=0,
                              augment_images=ds.augment_images, patch_size=ds.patch_size)
            except PairSamplingError as e:
                if c.on_bad_sample == "raise":
                    raise
                # Another open window of the same source stands in; the schedule is untouched, so a
                # resumed run (which replays the schedule only) stays identical.
                ds._count("failed_pairs")
                log.warning("no pair from %s (offset %d), position %d: %s", window.key, window.offset, position, e)
                continue
            s["position"], s["source"] = position, src
            return s
        raise PairSamplingError(f"source {src} position {position}: no usable pair in any of the {1 + len(others)} "
                                f"open records (last: {seq.key})")
