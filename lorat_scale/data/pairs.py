"""LoRAT training-pair sampling and the training transform, as the official training code does them.

The sample at ``(seed, epoch, index)`` is a pure function of those three numbers (and the data):
the epoch plan (which dataset and sequence each index uses) comes from a generator seeded with
``(seed, epoch)``, and everything inside one sample from ``default_rng([seed, epoch, index])``.
A resumed run therefore sees exactly the samples it would have seen.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from lorat_scale import crop
from lorat_scale.boxes import cell_mask
from lorat_scale.config import DataConfig
from lorat_scale.data import augment
from lorat_scale.data.decode import decode_image, decode_image_reduced, decode_region, image_size, region_decoding
from lorat_scale.data.sequence import BadImageError, Sequence

__all__ = [
    "FrameLoader",
    "collate",
    "split_counts",
    "PairSamplingError",
    "JitteredCrop",
    "load_frame",
    "sample_frames",
    "jitter_search_params",
    "make_pair",
    "PairDataset",
]

log = logging.getLogger(__name__)

FrameLoader = Callable[[Sequence, int], np.ndarray]
MAX_RESAMPLES = 100  # pairs re-drawn (bad frame, no valid frame, jitter failure) before giving up


class PairSamplingError(RuntimeError):
    """No usable pair could be drawn; the message names the dataset."""


# Encoded bytes and frames read by this process (files or shard ranges); make_pair reports its share.
IO_COUNTS = {"bytes": 0, "frames": 0}
# How this process decoded the frames of its pairs read as bytes (_Frame): whole, a region, at a reduced scale.
DECODE_COUNTS = {"full": 0, "region": 0, "reduced": 0}


def read_bytes(seq: Sequence, i: int) -> bytes:
    """``seq``'s encoded frame ``i`` (file, in-memory record or shard range), counted in ``IO_COUNTS``."""
    try:
        data = seq.read_bytes(i)
    except BadImageError:
        raise  # names its shard, byte range, sequence and frame already
    except OSError as e:
        raise BadImageError(f"{seq.frame_name(i)}: cannot read frame ({e.strerror or e})", "missing") from e
    IO_COUNTS["bytes"] += len(data)
    IO_COUNTS["frames"] += 1
    return data


def load_frame(seq: Sequence, i: int) -> np.ndarray:
    """Default frame loader: ``Sequence.load_frame`` (strict decode, size checked; ``BadImageError`` names the file),
    its bytes counted in ``IO_COUNTS``."""
    return seq.load_frame(i, read_bytes(seq, i))


class _Frame:
    """One frame of a pair. Its bytes and header are read at once; its pixels are decoded once its crops are known,
    in the cheapest way ``cfg`` allows: at a reduced DCT scale (``reduced_decode``), only the region the crops read
    (``region_decode``, exact), else whole (``fast_jpeg``: with the fast IDCT and upsampling). A custom ``loader``
    decodes whole frames at once."""

    def __init__(self, seq: Sequence, i: int, loader: FrameLoader, cfg: DataConfig) -> None:
        self.seq, self.i, self.cfg = seq, i, cfg
        self.img: np.ndarray | None = None
        self.factor, self.origin = 1.0, None  # decoded at factor x the frame's size / region's top-left pixel
        if loader is not load_frame:
            self.img = loader(seq, i)
            self.wh = (self.img.shape[1], self.img.shape[0])
            return
        self.data = read_bytes(seq, i)
        try:
            self.wh = image_size(self.data)
        except OSError as e:
            raise BadImageError(f"{seq.frame_name(i)}: cannot decode image ({e})", "corrupt") from e
        want = seq.size_of(i)
        if want is not None and tuple(self.wh) != tuple(want):
            raise BadImageError(f"{seq.frame_name(i)}: frame is {self.wh[0]}x{self.wh[1]}, expected {want[0]}x"
                                f"{want[1]} (the size {seq.key}'s boxes are measured on)", "size")

    def crops(self, wanted: list[tuple[np.ndarray, int]]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """``crop.crop_image`` of each (requested params, output size) on this frame (padding: its mean colour)."""
        if self.img is None:
            try:
                self._decode(wanted)
            except OSError as e:
                raise BadImageError(f"{self.seq.frame_name(self.i)}: cannot decode image ({e})", "corrupt") from e
        return [self._crop(p, out) for p, out in wanted]

    def _decode(self, wanted: list[tuple[np.ndarray, int]]) -> None:
        """Decode what the crops ``wanted`` read: reduced, a region, or the whole frame."""
        scale = max(float(p[0].max()) for p, _ in wanted)  # output px per frame px of the finest crop
        if self.cfg.reduced_decode and scale <= 0.5:
            self.img, self.factor = decode_image_reduced(self.data, scale, fast=self.cfg.fast_jpeg)
            DECODE_COUNTS["reduced" if self.factor < 1.0 else "full"] += 1
            return
        if self.cfg.region_decode and region_decoding() is None:
            regions = [crop.crop_regions(self.wh, p, out) for p, out in wanted]
            if all(dst == (0, 0, out, out) for (dst, _), (_, out) in zip(regions, wanted)):  # no padding
                x0, y0 = min(src[0] for _, src in regions), min(src[1] for _, src in regions)
                x1, y1 = max(src[2] for _, src in regions), max(src[3] for _, src in regions)
                self.img, self.origin = decode_region(self.data, (x0, y0, x1, y1)), (x0, y0)
                DECODE_COUNTS["region"] += 1
                return
        self.img = decode_image(self.data, fast=self.cfg.fast_jpeg)
        DECODE_COUNTS["full"] += 1

    def _crop(self, params: np.ndarray, out: int) -> tuple[torch.Tensor, np.ndarray]:
        """crop.crop_image on what was decoded; params in frame coordinates."""
        if self.origin is not None:
            return crop.crop_image(self.img, params, out, region=(*self.wh, *self.origin))
        if self.factor == 1.0:
            return crop.crop_image(self.img, params, out)
        p = params.copy()
        p[0] /= self.factor  # x_crop = s * x + t = (s / f) * x_small + t, with x_small = f * x
        c, adj = crop.crop_image(self.img, p, out)
        adj = adj.copy()
        adj[0] *= self.factor
        return c, adj


def sample_frames(seq: Sequence, rng: np.random.Generator, max_gap: int) -> tuple[int, int] | None:
    """(template, search) frame indices per LoRAT's interval rule, or None if no valid frame."""
    # A shard window's template comes from its core only; its margins serve as search frames.
    templates = seq.template_indices() if hasattr(seq, "template_indices") else seq.valid_indices()
    if templates.size == 0:
        return None
    t = int(templates[rng.integers(templates.size)])
    if seq.is_image:
        return t, t
    valid = seq.valid_indices()
    gap = np.abs(valid - t)
    cand = valid[(gap > 0) & (gap <= max_gap)]
    s = int(cand[rng.integers(cand.size)]) if cand.size else t  # no candidate: the same frame
    return t, s


@dataclass
class JitteredCrop:
    """A search-crop jitter that passed the min-object-size rule."""

    params_requested: np.ndarray
    params: np.ndarray  # adjusted
    box_crop: np.ndarray  # search box in crop pixels (adjusted params), unclipped


def jitter_search_params(
    box: np.ndarray,
    frame_size_wh: tuple[int, int],
    cfg: DataConfig,
    search_size: int,
    area_factor: float,
    rng: np.random.Generator,
) -> JitteredCrop | None:
    """Jittered search-crop params leaving >= min_object_size px of object, or None after the retries."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    base = crop.siamfc_params(box, area_factor, search_size)[0, 0]
    for _ in range(cfg.crop_retries):
        scale = 1.0 / np.exp(rng.standard_normal(2) * cfg.scale_jitter)  # per axis: aspect jitters too
        mean_side = 0.5 * (bw * base * scale[0] + bh * base * scale[1])  # object size in output px
        shift = rng.uniform(-1.0, 1.0, size=2) * cfg.translate_jitter * mean_side
        req = crop.siamfc_params(box, area_factor, search_size, scale_jitter=scale, shift=shift)
        adj = crop.adjusted_params(frame_size_wh, req, search_size)
        b = crop.map_boxes(adj, box)
        c = np.clip(b, 0.0, search_size)
        if c[2] - c[0] >= cfg.min_object_size and c[3] - c[1] >= cfg.min_object_size:
            return JitteredCrop(req, adj, b)
    return None


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the block with one torch thread, restoring the previous count.

    F.interpolate's output differs in the last bits with the thread count (its vector/tail split
    follows the per-thread chunks), so pinning one thread makes a sample bit-identical whether it is
    built in the main process or in a DataLoader worker (which runs one thread). Small per-pair
    tensors gain nothing from more threads; the switch costs < 1 us.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def make_pair(
    sequences: list[Sequence],
    cfg: DataConfig,
    rng: np.random.Generator,
    template_size: int = 112,
    search_size: int = 224,
    seq_index: int | None = None,
    load_frame: FrameLoader = load_frame,
    augment_images: bool = True,
    patch_size: int = 14,
) -> dict:
    """One training sample (ARCHITECTURE.md "A training sample") drawn with ``rng`` from ``sequences``.

    ``patch_size`` is the model's (``ModelConfig.patch_size``): the cell size of the template mask
    and of the label map, which must match the model's token grids.
    """
    if not sequences:
        raise PairSamplingError("no sequences to sample from")
    check_grid(template_size, search_size, patch_size)
    with _one_torch_thread():
        return _make_pair(sequences, cfg, rng, template_size, search_size, seq_index, load_frame, augment_images,
                          patch_size)


def check_grid(template_size: int, search_size: int, patch_size: int) -> None:
    """Crop sides must be whole numbers of patches (else the labels would not match the model's grid)."""
    for name, size in (("template_size", template_size), ("search_size", search_size)):
        if patch_size <= 0 or size % patch_size:
            raise ValueError(f"{name} {size} is not a multiple of patch_size {patch_size}")


def _make_pair(
    sequences: list[Sequence],
    cfg: DataConfig,
    rng: np.random.Generator,
    template_size: int,
    search_size: int,
    seq_index: int | None,
    load_frame: FrameLoader,
    augment_images: bool,
    patch: int,
) -> dict:
    """make_pair's body (run with one torch thread)."""
    tz, tx = template_size, search_size
    errors = []
    # Data-quality and IO counters of this sample; summed per batch by ``collate``, once.
    counters = {"resampled": 0, "bad_frames": 0, "bytes_read": 0, "frames_read": 0}
    io0 = dict(IO_COUNTS)
    for attempt in range(MAX_RESAMPLES):
        counters["resampled"] = attempt
        si = seq_index if (attempt == 0 and seq_index is not None) else int(rng.integers(len(sequences)))
        seq = sequences[si]
        frames = sample_frames(seq, rng, cfg.max_frame_gap)
        if frames is None:
            continue
        t, s = frames
        # Frame numbers in the whole sequence (a shard window starts at seq.offset): keys stay unique.
        key = f"{seq.key}/{seq.offset + t}/{seq.offset + s}"
        z_box, x_box = seq.boxes[t], seq.boxes[s]
        def skip_bad(e: Exception, key: str = key) -> None:
            """Raise or count-and-log a bad frame/box, by ``data.on_bad_sample``."""
            if cfg.on_bad_sample == "raise":
                raise e
            log.warning("skipping bad sample %s: %s", key, e)
            errors.append(str(e))
            counters["bad_frames"] += 1

        try:
            crop.check_box(z_box, f"{key} template box")
            crop.check_box(x_box, f"{key} search box")
            x_frame = _Frame(seq, s, load_frame, cfg)
        except (OSError, ValueError) as e:
            skip_bad(e)
            continue
        jit = jitter_search_params(x_box, x_frame.wh, cfg, tx, cfg.search_area_factor, rng)
        if jit is None:
            continue  # the whole pair is re-sampled (LoRAT's rejection rule)
        # Out-of-frame area is padded with each image's own mean colour (training transform).
        z_req = crop.siamfc_params(z_box, cfg.template_area_factor, tz)
        try:
            if t == s:  # one frame, decoded once for both crops
                (z, z_params), (x, _) = x_frame.crops([(z_req, tz), (jit.params_requested, tx)])
                z_frame = x_frame
            else:
                z_frame = _Frame(seq, t, load_frame, cfg)
                (x, _), = x_frame.crops([(jit.params_requested, tx)])
                (z, z_params), = z_frame.crops([(z_req, tz)])
        except OSError as e:
            skip_bad(e)
            continue
        z_box_c = crop.map_boxes(z_params, z_box)
        x_box_c = jit.box_crop
        if augment_images:
            z, z_box_c, x, x_box_c = augment.augment_pair(
                z, z_box_c, x, x_box_c, rng, flip_prob=cfg.flip_prob, jitter=cfg.color_jitter, inplace=True
            )
        else:
            z, x = augment.normalize(z), augment.normalize(x)
        x_box_c = np.clip(x_box_c, 0.0, tx)  # boxes are clipped to the crop after augmentation
        if cfg.reduced_decode:
            counters["reduced_frames"] = int(x_frame.factor < 1.0) + int(t != s and z_frame.factor < 1.0)
        counters["bytes_read"] = IO_COUNTS["bytes"] - io0["bytes"]
        counters["frames_read"] = IO_COUNTS["frames"] - io0["frames"]
        return {
            "z": z,
            "x": x,
            "z_feat_mask": torch.from_numpy(cell_mask(z_box_c, patch, (tz // patch, tz // patch))),
            "target_box": torch.from_numpy((x_box_c / tx).astype(np.float32)),
            "positive_map": torch.from_numpy(cell_mask(x_box_c, patch, (tx // patch, tx // patch)).astype(bool)),
            # Where the pair comes from, as fields (the datasets add "source" and "position").
            "sequence": seq.key,
            "template_frame": seq.offset + t,
            "search_frame": seq.offset + s,
            "key": key,  # the same, as one string for logs and error reports
            "counters": counters,
        }
    ds = sequences[0].dataset
    raise PairSamplingError(
        f"dataset {ds!r}: no usable pair after {MAX_RESAMPLES} draws"
        + (f" (last error: {errors[-1]})" if errors else " (no valid frames or the jitter always failed)")
    )


def split_counts(total: int, weights: list[float]) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainders, sums to total)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def rank_and_world(rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """(rank, world size) from the arguments, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is None or world is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world = w if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return int(rank), int(world)


def collate(samples: list[dict]) -> dict:
    """Stack a micro-batch; the samples' data-quality and IO counters are summed (once) under ``counters``."""
    counters: dict[str, int] = {}
    for s in samples:
        for k, v in (s.pop("counters", None) or {}).items():
            counters[k] = counters.get(k, 0) + int(v)
        counters["no_positive"] = counters.get("no_positive", 0) + int(not bool(s["positive_map"].any()))
        counters["same_frame"] = counters.get("same_frame", 0) + int(s["template_frame"] == s["search_frame"])
    batch = torch.utils.data.default_collate(samples)
    batch["counters"] = counters
    return batch


def worker_init_fn(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's signature
    """``DataLoader(worker_init_fn=...)``: one OpenCV and one torch thread per loader worker (no oversubscription)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def fork_safe_opencv() -> None:
    """Call in the parent before starting loader workers: OpenCV's thread pool does not survive ``fork``.

    A forked worker that touches the pool it inherited (``cv2.setNumThreads``, or a parallel cv2 call) waits
    forever on the parent's condition variable (seen: ``pthread_cond_destroy`` in a worker after a parent ran
    GaussianBlur). With one OpenCV thread in the parent there is no pool to inherit; the parent does no image
    work while workers load.
    """
    import cv2

    cv2.setNumThreads(1)


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset of training pairs: index -> sample, deterministic in (cfg.seed, epoch, index).

    ``patch_size`` is the model's (``ModelConfig.patch_size``): labels and template mask are on its grid.
    ``rank``/``world_size`` (default: torch.distributed, else RANK/WORLD_SIZE) choose this rank's batches in
    ``epoch_loader``.
    """

    def __init__(
        self,
        sources: list[list[Sequence]],
        cfg: DataConfig,
        template_size: int = 112,
        search_size: int = 224,
        epoch: int = 0,
        load_frame: FrameLoader = load_frame,
        augment_images: bool = True,
        pairs_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        patch_size: int = 14,
    ) -> None:
        sources = [list(s) for s in sources]
        if not sources or any(len(s) == 0 for s in sources):
            raise ValueError("PairDataset needs at least one source, and every source at least one sequence")
        weights = list(cfg.weights) or [1.0] * len(sources)
        if len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"data.weights {weights} must give one non-negative weight per source ({len(sources)})")
        self.sources, self.cfg, self.weights = sources, cfg, weights
        check_grid(template_size, search_size, patch_size)
        self.template_size, self.search_size, self.patch_size = template_size, search_size, patch_size
        self.load_frame, self.augment_images = load_frame, augment_images
        self.length = int(pairs_per_epoch if pairs_per_epoch is not None else cfg.pairs_per_epoch)
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Build the epoch plan (which dataset and sequence each index draws from).

        ``start`` (samples this rank already consumed) is accepted for the common dataset interface: here
        every index is drawn independently, so the loader simply starts at the right batch.
        """
        if getattr(self, "_plan_epoch", None) == int(epoch):
            return  # the plan is a function of (seed, epoch): already built
        self.epoch = self._plan_epoch = int(epoch)
        # spawn_key keeps this stream apart from the per-sample default_rng([seed, epoch, index]).
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.cfg.seed, self.epoch], spawn_key=(1,))))
        counts = split_counts(self.length, self.weights)
        ds_of_index = rng.permutation(np.repeat(np.arange(len(self.sources)), counts))
        seq_of_index = np.empty(self.length, dtype=np.int64)
        for d, n in enumerate(counts):
            if n == 0:
                continue
            m = len(self.sources[d])
            # Without replacement within a dataset: shuffled passes over all sequences, tiled.
            order = np.concatenate([rng.permutation(m) for _ in range(-(-int(n) // m))])[:n]
            seq_of_index[ds_of_index == d] = order
        self._plan_ds, self._plan_seq = ds_of_index, seq_of_index

    def __len__(self) -> int:
        return self.length

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.cfg.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"pair index {index} out of range [0, {self.length})")
        d, s = int(self._plan_ds[index]), int(self._plan_seq[index])
        sample = make_pair(
            self.sources[d],
            self.cfg,
            self.rng_for(index),
            self.template_size,
            self.search_size,
            seq_index=s,
            load_frame=self.load_frame,
            augment_images=self.augment_images,
            patch_size=self.patch_size,
        )
        sample["source"], sample["position"] = d, int(index)
        return sample

    def epoch_loader(self, epoch: int, steps: range, global_batch: int, micro_batch: int, num_workers: int,
                     seed: int = 0) -> torch.utils.data.DataLoader:
        """This rank's micro-batches of the optimizer steps ``steps`` of ``epoch``, in order.

        Step ``k`` uses indices ``[k * global_batch, (k + 1) * global_batch)``, split by
        ``train.distributed.micro_batch_indices``: every index once per epoch over all ranks, the same count
        on every rank and (round-robin by batch) on every loader worker; a resumed run starts at its step.
        """
        from lorat_scale.train.distributed import micro_batch_indices

        self.set_epoch(epoch, steps.start * global_batch // self.world_size)
        batches = [mb for k in steps for mb in micro_batch_indices(k, global_batch, micro_batch, self.world_size,
                                                                     self.rank)]
        if num_workers > 0:
            fork_safe_opencv()
        # Own generator: creating a loader must not consume the global torch RNG (bit-exact resume).
        return torch.utils.data.DataLoader(self, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                                           pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init_fn,
                                           generator=torch.Generator().manual_seed(seed))

    def counters(self) -> dict[str, int]:
        """Dataset-level counters beyond those the samples carry (none for this dataset)."""
        return {}
