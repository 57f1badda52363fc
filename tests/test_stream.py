"""Streaming loader: node/worker split, equal counts, shuffling, resume, bad data, lazy decoding."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from _data_trees import build_shards
from lorat_scale.config import DataConfig
from lorat_scale.data.sequence import BadImageError
from lorat_scale.data.shards import BadSampleError, read_manifest, shard_urls
from lorat_scale.data.stream import ShardStream, StreamStats, per_worker_skip, quotas


@pytest.fixture()
def shards(tmp_path, shared_data):
    """11 one-record sequences over 5 shards (2 or 3 records each)."""
    return build_shards(tmp_path, shared_data, n_seqs=11, n=3, min_shards=5)


def _keys(stream):
    return [f"{s.name}@{s.offset}" for s in stream]


def test_two_ranks_two_workers_disjoint_equal(shards):
    counts = [s["items"] for s in read_manifest(shards)["shards"]]
    assert sum(counts) == 11 and len(counts) == 5 and len(set(counts)) > 1  # uneven on purpose
    per_rank = {}
    for rank in range(2):
        got = []
        for worker in range(2):
            st = ShardStream.from_manifest(shards, worker_info=(rank, 2, worker, 2), epoch=3)
            got += _keys(st)
        per_rank[rank] = got
    quota = quotas(counts, 2, 2)[0]  # smaller rank total over this assignment
    allk = per_rank[0] + per_rank[1]
    assert len(per_rank[0]) == len(per_rank[1]) == quota >= 4
    assert len(set(allk)) == len(allk)  # no record read twice


def test_wds_splitters_agree_with_explicit_ranks(shards, monkeypatch):
    # The real wds.split_by_node / split_by_worker (ranks from the environment) give the same items.
    for rank in range(2):
        for worker in range(2):
            explicit = _keys(ShardStream.from_manifest(shards, worker_info=(rank, 2, worker, 2)))
            for k, v in {"RANK": rank, "WORLD_SIZE": 2, "WORKER": worker, "NUM_WORKERS": 2}.items():
                monkeypatch.setenv(k, str(v))
            assert _keys(ShardStream.from_manifest(shards)) == explicit


def test_shuffle_deterministic_per_epoch(shards):
    a = _keys(ShardStream.from_manifest(shards, epoch=1))
    assert a == _keys(ShardStream.from_manifest(shards, epoch=1))
    b = _keys(ShardStream.from_manifest(shards, epoch=2))
    assert sorted(a) == sorted(b) and a != b and len(a) == 11
    cfg = DataConfig(seed=5)
    assert _keys(ShardStream.from_manifest(shards, epoch=1, cfg=cfg)) != a


def test_resume_skips_consumed_items(shards):
    full = _keys(ShardStream.from_manifest(shards, epoch=4, worker_info=(0, 1, 0, 1)))
    st = ShardStream.from_manifest(shards, worker_info=(0, 1, 0, 1))
    st.set_epoch(4, skip=5)
    assert _keys(st) == full[5:]
    assert st.stats.as_dict()["items"] == 6
    assert per_worker_skip(consumed=10, num_workers=2, batch_size=4) == [4 + 2, 4]  # batches w0,w1 + 2 of w0


def test_pipe_url_and_lazy_frames(shards, shared_data):
    urls = ["pipe:cat " + u for u in shard_urls(shards)]
    counts = [s["items"] for s in read_manifest(shards)["shards"]]
    seqs = list(ShardStream(urls, counts, shuffle=False))
    assert len(seqs) == 11
    s = seqs[0]
    assert all(isinstance(v, bytes) for v in s.frame_bytes.values())  # nothing decoded by the stream
    img = s.load_frame(1)
    name = int(s.name[3:])
    src = shared_data / "lasot/airplane/airplane-1/img" / f"{7 * name + 2:08d}.jpg"
    np.testing.assert_array_equal(img, np.asarray(Image.open(src).convert("RGB")))  # byte-identical decode


def _corrupt(shards, which: str):
    """Rewrite the first record of shard 0 with a bad member; return its key."""
    url = shard_urls(shards)[0]
    samples = list(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()))
    first = samples[0]
    if which == "jpeg":
        first["000001.jpg"] = first["000001.jpg"][:2000]
    else:
        meta = json.loads(first["json"])
        meta["boxes"][0] = [float("nan")] * 4
        first["json"] = json.dumps(meta).encode()
    with wds.TarWriter(url, encoder=False) as w:
        for smp in samples:
            w.write({k: v for k, v in smp.items() if k == "__key__" or not k.startswith("_")})
    return first["__key__"]


def test_bad_box_record_skipped_counted_logged_or_raised(shards, caplog):
    key = _corrupt(shards, "box")
    url0 = shard_urls(shards)[0]
    stats = StreamStats()
    with caplog.at_level(logging.WARNING, logger="lorat_scale.data.stream"):
        got = _keys(ShardStream.from_manifest(shards, stats=stats, shuffle=False, worker_info=(0, 1, 0, 1)))
    d = stats.as_dict()
    # 10 good records, then one re-read pass to refill the quota (it meets the bad record again)
    assert d["records"] == 11 and d["bad_records"] == 2 and d["bad_box"] == 2
    assert d["refills"] == 1 and len(got) == 11 and len(set(got)) == 10  # the count stays at the quota
    assert any(key in r.getMessage() and url0 in r.getMessage() for r in caplog.records)
    with pytest.raises(BadSampleError, match=key):
        list(ShardStream.from_manifest(shards, cfg=DataConfig(on_bad_sample="raise"), shuffle=False))


def test_bad_frame_costs_that_frame_not_the_record(shards, caplog):
    """Issue 16: one truncated frame in a record is dropped (counted, logged); the record's other frames stay."""
    key = _corrupt(shards, "jpeg")
    stats = StreamStats()
    with caplog.at_level(logging.WARNING, logger="lorat_scale.data.stream"):
        seqs = list(ShardStream.from_manifest(shards, stats=stats, shuffle=False, worker_info=(0, 1, 0, 1)))
    d = stats.as_dict()
    assert d["records"] == 11 and d["bad_records"] == 0 and d["bad_image"] == 1 and d["refills"] == 0
    (hit,) = [s for s in seqs if f"custom-{s.name}-w0000" == key]
    assert hit.valid.tolist() == [True, False, True] and "000001.jpg" not in hit.frame_bytes
    assert any(f"{key}/000001.jpg: JPEG has no end marker" in r.getMessage() for r in caplog.records)
    with pytest.raises(BadSampleError, match=f"{key}/000001.jpg"):
        list(ShardStream.from_manifest(shards, cfg=DataConfig(on_bad_sample="raise"), shuffle=False))


def test_truncated_shard(shards):
    url0 = shard_urls(shards)[0]
    data = open(url0, "rb").read()
    n0 = read_manifest(shards)["shards"][0]["items"]
    with open(url0, "wb") as f:
        f.write(data[: len(data) // 2])
    stats = StreamStats()
    got = list(ShardStream.from_manifest(shards, stats=stats, shuffle=False, worker_info=(0, 1, 0, 1)))
    d = stats.as_dict()
    # once per pass over the broken shard: the first pass, then the refill pass
    assert d["bad_tar"] == 2 and d["refills"] == 1 and len(got) == 11
    assert d["records"] >= 11 - n0  # the other shards are all read
    with pytest.raises(Exception, match="shard-000000.tar|unexpected end|truncated"):
        list(ShardStream.from_manifest(shards, cfg=DataConfig(on_bad_sample="raise"), shuffle=False))


def test_corrupt_frame_bytes_fail_on_decode_with_key(shards):
    _corrupt(shards, "jpeg")
    cfg = DataConfig(check_images=False)  # stream does not check: the pair sampler's decode must fail clearly
    seqs = list(ShardStream.from_manifest(shards, cfg=cfg, shuffle=False, worker_info=(0, 1, 0, 1)))
    assert len(seqs) == 11 and all(s.load_frame(0).shape == (360, 640, 3) for s in seqs)
    bad = [s for s in seqs if len(s.frame_bytes["000001.jpg"]) == 2000]
    assert len(bad) == 1
    with pytest.raises(BadImageError, match=rf"custom/{bad[0].name}/000001.jpg: cannot decode"):
        bad[0].load_frame(1)


def test_dataloader_two_workers_share_stats(shards):
    import torch
    stats = StreamStats()
    st = ShardStream.from_manifest(shards, stats=stats, epoch=0)
    dl = torch.utils.data.DataLoader(st, batch_size=None, num_workers=2, collate_fn=lambda x: x)
    got = [s.key + f"@{s.offset}" for s in dl]
    assert len(got) == len(set(got)) == quotas([s["items"] for s in read_manifest(shards)["shards"]], 1, 2)[0]
    assert stats.as_dict()["items"] == len(got)  # counted in the worker processes, read here
    _ = os


def test_quotas_and_too_few_shards(shards):
    # 5 shards [3,2,2,2,2] over 2 ranks x 2 workers: rank 0 holds positions 0,2,4 (w0: 0,4; w1: 2), rank 1: 1,3
    quota, share = quotas([3, 2, 2, 2, 2], 2, 2)
    # rank 0 has 5 + 2 items and gives up 3 from its biggest worker; rank 1 has 2 + 2
    assert quota == 4 and share == [[2, 2], [2, 2]]
    with pytest.raises(ValueError, match="5 shards for 3 ranks x 2 workers"):
        list(ShardStream.from_manifest(shards, worker_info=(0, 3, 0, 2)))
