"""Pairs streamed from shards: sample format, determinism, resume, ranks x workers, mixing, exact window weights."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from _data_trees import build_shards
from lorat_scale.config import DataConfig
from lorat_scale.data.stream_pairs import ShardPairDataset, _Cursor, pairs_for_record, worker_init_fn

CFG = DataConfig(max_frame_gap=2, seed=3, num_workers=2)
TZ, TX = 56, 112  # small crops: the tests time frame decoding and sampling, not resizing


@pytest.fixture(scope="module")
def srcs(tmp_path_factory, shared_data):
    """Source 0: 6 sequences x 14 frames cut into windows (core 4, margin 2: 4 records each, weights 4/14 and
    2/14); source 1: 4 sequences x 6 frames, one record each (weight 1). 4 shards each (2 ranks x 2 lanes)."""
    a = build_shards(tmp_path_factory.mktemp("a"), shared_data, n_seqs=6, n=14, min_shards=4, core=4, margin=2)
    b = build_shards(tmp_path_factory.mktemp("b"), shared_data, n_seqs=4, n=6, min_shards=4)
    return [str(a), str(b)]


def _ds(srcs, cfg=CFG, **kw) -> ShardPairDataset:
    kw = {"pairs_per_epoch": 8, "rank": 0, "world_size": 1, "lanes": 2, "batch_size": 2, **kw}
    return ShardPairDataset(srcs, cfg, TZ, TX, **kw)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        for x, y in zip(a, b))


def test_sample_format_and_counters(srcs):
    ds = _ds(srcs, pairs_per_epoch=4)
    got = list(ds)
    assert len(got) == len(ds) == 4 and [s["position"] for s in got] == [0, 1, 2, 3]
    s = got[0]
    assert s["z"].shape == (3, TZ, TZ) and s["z"].dtype == torch.float32
    assert s["x"].shape == (3, TX, TX) and s["x"].dtype == torch.float32
    assert s["z_feat_mask"].shape == (TZ // 14, TZ // 14) and s["z_feat_mask"].dtype == torch.int64
    assert s["positive_map"].shape == (TX // 14, TX // 14) and s["positive_map"].dtype == torch.bool
    assert s["target_box"].shape == (4,) and ((s["target_box"] >= 0) & (s["target_box"] <= 1)).all()
    ds_name, seq, t, x = s["key"].split("/")
    assert ds_name == "custom" and seq.startswith("seq") and abs(int(t) - int(x)) <= CFG.max_frame_gap
    assert (s["sequence"], s["template_frame"], s["search_frame"]) == (f"custom/{seq}", int(t), int(x))
    assert set(s["counters"]) == {"resampled", "bad_frames", "bytes_read", "frames_read"} and s["source"] in (0, 1)
    assert s["counters"]["frames_read"] == 1 + (t != x) and s["counters"]["bytes_read"] > 1000
    c = ds.counters(per_source=True)
    for k in ("records", "items", "bad_records", "bad_image", "bad_box", "bad_tar", "refills",
              "failed_pairs", "empty_records", "passes", "src0/records"):
        assert k in c, k
    # Pair counts travel with the samples only (counted once, in collate), not also here.
    assert "pairs" not in c and "resampled" not in c and c["records"] >= 1 and c["bad_records"] == 0
    assert c["records"] == c["src0/records"] + c["src1/records"]


def test_deterministic_per_seed_epoch_position(srcs):
    ds = _ds(srcs)
    a = list(ds)
    assert _same(a, list(ds)) and _same(a, list(_ds(srcs)))  # same object twice, and a new one
    assert len({s["position"] for s in a}) == 8
    ds.set_epoch(1)
    assert [s["key"] for s in ds] != [s["key"] for s in a]
    assert [s["key"] for s in _ds(srcs, cfg=dataclasses.replace(CFG, seed=4))] != [s["key"] for s in a]


def test_resume_from_position(srcs):
    full = list(_ds(srcs, pairs_per_epoch=12))
    ds = _ds(srcs, pairs_per_epoch=12)
    ds.set_epoch(0, start=6)  # batch 3 of 6: lane 1 resumes first, lane 0 replays batches 0, 2
    assert len(ds) == 6 and _same(list(ds), full[6:])
    fresh = _ds(srcs, pairs_per_epoch=12)
    fresh.load_state_dict(ds.state_dict(consumed=10))
    assert _same(list(fresh), full[10:])
    with pytest.raises(ValueError, match="batch_size: saved 2, now 4"):
        _ds(srcs, pairs_per_epoch=12, batch_size=4).load_state_dict(ds.state_dict(consumed=4))
    with pytest.raises(ValueError, match="not a multiple of batch_size"):
        ds.set_epoch(0, start=3)


def test_two_ranks_two_workers_equal_counts_no_duplicates(srcs):
    per_rank = {}
    for rank in range(2):
        ds = _ds(srcs, pairs_per_epoch=12, rank=rank, world_size=2)
        dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=worker_init_fn,
                                         collate_fn=lambda b: b)
        got = [s for batch in dl for s in batch]
        assert [s["position"] for s in got] == [2 * j + rank for j in range(6)]  # loader order = j order
        assert ds.counters()["records"] >= 2  # counted in the worker processes, read here
        # Lanes, not loader workers, own the shards: the same samples in one process.
        assert [s["key"] for s in got] == [s["key"] for s in _ds(srcs, pairs_per_epoch=12, rank=rank, world_size=2)]
        per_rank[rank] = got
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    pos = [s["position"] for r in per_rank.values() for s in r]
    assert sorted(pos) == list(range(12))


def test_source_mixing_follows_weights(srcs):
    ds = _ds(srcs, cfg=dataclasses.replace(CFG, weights=[3.0, 1.0]), pairs_per_epoch=16)
    got = list(ds)
    assert [sum(s["source"] == i for s in got) for i in (0, 1)] == [12, 4]  # exact per-epoch counts
    # Source 1 holds whole 6-frame sequences (offset 0); source 0 windows of 14-frame ones.
    assert all(int(s["key"].split("/")[2]) < 6 for s in got if s["source"] == 1)
    big = _ds(srcs, pairs_per_epoch=1000)  # default weights: equal
    assert np.bincount(big.plan).tolist() == [500, 500]
    two_ranks = [_ds(srcs, pairs_per_epoch=1001, rank=r, world_size=2) for r in range(2)]
    assert [len(d) for d in two_ranks] == [500, 500]
    with pytest.raises(ValueError, match="one non-negative weight per source"):
        _ds(srcs, cfg=dataclasses.replace(CFG, weights=[1.0]))


def test_window_weights_make_template_frames_uniform(srcs):
    """Each record visit yields floor/ceil of c * weight pairs, with mean c * weight: every sequence
    gets c pairs per pass and every valid frame c / valid(S) template draws."""
    ds = _ds(srcs[:1], lanes=1, pairs_per_record=2)
    c = ds.scales[0]
    assert ds.sources[0].mean_weight == pytest.approx(6 / 24) and c == pytest.approx(8.0)
    cur = _Cursor(ds, 0, 0)
    visits: dict[tuple[str, int], list[int]] = {}
    weights, templates, per_seq_w = {}, {}, {}
    while cur.passes < 12:
        seq, n = cur.next_record()
        k = (seq.name, seq.offset)
        visits.setdefault(k, []).append(n)
        weights[k], templates[k] = seq.weight, len(seq.template_indices())
        assert n in (math.floor(c * seq.weight), math.ceil(c * seq.weight))
    assert len(visits) == 24  # every window visited (and paid) in every pass
    for k, ns in visits.items():
        per_seq_w[k[0]] = per_seq_w.get(k[0], 0.0) + weights[k]
        assert c * weights[k] / templates[k] == pytest.approx(c / 14)  # expected template draws per frame
        assert abs(np.mean(ns) - c * weights[k]) < 0.45  # 12-13 visits of a floor/ceil draw
    for name in per_seq_w:  # c pairs per sequence per pass, whatever its number of windows
        assert np.mean([sum(ns[p] for (n, _), ns in visits.items() if n == name) for p in range(12)]) == \
            pytest.approx(c, abs=0.5)
    assert all(w == pytest.approx(1.0) for w in per_seq_w.values())  # a sequence's windows weigh 1
    # the rounding is unbiased: E[floor(x + u)] = x
    rng = np.random.default_rng(0)
    assert np.mean([pairs_for_record(0.3, 8.0, rng.random()) for _ in range(20000)]) == pytest.approx(2.4, abs=0.02)


def test_worker_init_fn_pins_threads():
    import cv2

    before_t, before_cv = torch.get_num_threads(), cv2.getNumThreads()
    try:
        worker_init_fn(0)
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(before_t)
        cv2.setNumThreads(before_cv)


def test_labels_follow_the_model_patch_size(srcs):
    s = next(iter(_ds(srcs, pairs_per_epoch=2, lanes=1)))
    t = next(iter(ShardPairDataset(srcs, CFG, 64, 128, pairs_per_epoch=2, rank=0, world_size=1, lanes=1,
                                   patch_size=16)))
    assert s["positive_map"].shape == (8, 8) and t["positive_map"].shape == (8, 8) and t["z_feat_mask"].shape == (4, 4)
    with pytest.raises(ValueError, match="search_size 120 is not a multiple of patch_size 16"):
        ShardPairDataset(srcs, CFG, 64, 120, patch_size=16)
