"""Shard writer, manifest, resume and record decoding: exact round trips of real frames."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import webdataset as wds

from _data_trees import build_shards, custom_tree, lasot_tree
from lorat_scale.data.readers import read_dataset
from lorat_scale.data.sequence import Sequence
from lorat_scale.data.shards import (BadSampleError, decode_record, make_shards, plan_windows, read_manifest,
                                     shard_urls)


def _records(out):
    """Every decoded Sequence of a shard folder, in file order."""
    urls = shard_urls(out)
    ds = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
    return [s for sample in ds for s in decode_record(sample)]


def test_windows_tile_the_valid_frames():
    n = 57
    valid = np.ones(n, bool)
    valid[[0, 13, 14, 40]] = False
    valid[20:30] = False  # a core (20..29) with no valid frame is skipped
    seq = Sequence("s", "custom", [f"{i}.jpg" for i in range(n)], np.tile([1.0, 1, 5, 5], (n, 1)), valid)
    ws = plan_windows(seq, core=10, margin=4)
    assert [(w.core_lo, w.core_hi) for w in ws] == [(0, 10), (10, 20), (30, 40), (40, 50), (50, 57)]
    assert [(w.lo, w.hi) for w in ws] == [(0, 14), (6, 24), (26, 44), (36, 54), (46, 57)]
    in_core = np.zeros(n, int)
    for w in ws:
        in_core[w.core_lo:w.core_hi] += 1
    assert (in_core[valid] == 1).all()  # every valid frame is a template candidate exactly once
    assert plan_windows(seq, core=100, margin=4) == [plan_windows(seq, 100, 4)[0]] and len(plan_windows(seq, 49, 4)) == 1


def test_roundtrip_is_exact(tmp_path, shared_data):
    root = lasot_tree(tmp_path, shared_data, n=40)
    (src,) = read_dataset("lasot", root, "train")  # airplane-2, frames 4,5 occluded
    out = tmp_path / "shards"
    m = make_shards([src], out, {"format": "lasot"}, core=10, margin=5, readers=2, progress=False)
    assert m["totals"]["records"] == 4 and m["totals"]["sequences"] == 1 and m["num_shards"] == 2
    assert m["totals"]["frames"] == 15 + 20 + 20 + 15 - 2  # windows [0,15) [5,25) [15,35) [25,40), minus 2 invalid
    recs = sorted(_records(out), key=lambda s: s.offset)
    assert [r.offset for r in recs] == [0, 5, 15, 25] and [r.core for r in recs] == [(0, 10), (5, 15), (5, 15), (5, 15)]
    assert sum(r.weight for r in recs) == pytest.approx(1.0)
    assert recs[0].weight == pytest.approx(8 / 38)
    for r in recs:
        sl = slice(r.offset, r.offset + len(r))
        np.testing.assert_array_equal(r.boxes[r.valid], src.boxes[sl][src.valid[sl]])
        assert r.valid.tolist() == src.valid[sl].tolist() and r.frame_size == (640, 360)
        for i in np.flatnonzero(r.valid):  # original bytes, not re-encoded
            assert r.read_bytes(i) == open(src.frames[r.offset + i], "rb").read()
        assert len(r.frame_bytes) == int(r.valid.sum())  # invalid frames are not stored
    for s in m["shards"]:
        import hashlib
        assert hashlib.sha256((out / s["name"]).read_bytes()).hexdigest() == s["sha256"]


def test_resume_rewrites_only_unfinished(tmp_path, shared_data):
    out = build_shards(tmp_path, shared_data)
    m = read_manifest(out)
    names = [s["name"] for s in m["shards"]]
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}
    sha = {s["name"]: s["sha256"] for s in m["shards"]}
    # simulate a crash: shard 2 half-written (not done), shard 3 left as .partial
    m["shards"][2]["done"] = False
    (out / names[2]).write_bytes((out / names[2]).read_bytes()[:1000])
    m["shards"][3]["done"] = False
    os.replace(out / names[3], out / (names[3] + ".partial"))
    (out / "manifest.json").write_text(json.dumps(m))
    seqs = read_dataset("custom", tmp_path / "custom")
    m2 = make_shards(seqs, out, {"format": "custom"}, readers=5, progress=False)
    assert all(s["done"] for s in m2["shards"])
    assert {s["name"]: s["sha256"] for s in m2["shards"]} == sha  # byte-identical rewrite
    for n in names:
        rewritten = (out / n).stat().st_mtime_ns != stamps[n]
        assert rewritten == (n in (names[2], names[3]))
    # a different source no longer matches the recorded plan
    with pytest.raises(ValueError, match="plan hash differs"):
        make_shards(seqs[:-1], out, {"format": "custom"}, readers=5, progress=False)


def test_coco_one_record_per_image(tmp_path, shared_data):
    seqs = read_dataset("coco", shared_data / "det/coco128")[:40]
    images = {s.frames[0] for s in seqs}
    m = make_shards(seqs, tmp_path / "c", {"format": "coco"}, readers=2, progress=False)
    assert m["totals"]["records"] == len(images) and m["totals"]["items"] == 40
    got = _records(tmp_path / "c")
    assert sorted(s.name for s in got) == sorted(s.name for s in seqs)
    by = {s.name: s for s in seqs}
    for g in got:
        assert g.is_image and len(g) == 1
        np.testing.assert_array_equal(g.boxes, by[g.name].boxes)
        assert g.read_bytes(0) == open(by[g.name].frames[0], "rb").read()


def test_make_shards_script_parallel(tmp_path, shared_data, capsys):
    import importlib.util
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "data_prep" / "make_shards.py"
    spec = importlib.util.spec_from_file_location("make_shards_script", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = custom_tree(tmp_path, shared_data, n_seqs=4, n=3)
    out = tmp_path / "sh"
    assert mod.main(["--format", "custom", "--root", str(root), "--out", str(out), "--readers", "4",
                     "--num-workers", "2"]) == 0  # a process pool of 2
    assert "4 shards, 4 records, 4 sequences, 12 frames" in capsys.readouterr().out
    m = read_manifest(out)
    assert m["source"]["format"] == "custom" and len(m["source"]["fingerprint"]) == 64
    assert m["format_version"] == 2 and sum(s["bytes"] for s in m["shards"]) == m["totals"]["bytes"]


def _sample(out):
    """The first raw record of a shard folder."""
    return next(iter(wds.DataPipeline(wds.SimpleShardList(shard_urls(out)), wds.tarfile_to_samples())))


def test_decode_rejects_bad_records(tmp_path, shared_data):
    out = build_shards(tmp_path, shared_data, n_seqs=1, n=4, min_shards=1)
    good = _sample(out)
    assert len(decode_record(good)) == 1
    bad = dict(good)
    bad["000001.jpg"] = good["000001.jpg"][: len(good["000001.jpg"]) // 2]
    with pytest.raises(BadSampleError, match=rf"record {good['__key__']}/000001.jpg: JPEG has no end marker") as e:
        decode_record(bad)
    assert e.value.kind == "image"
    meta = json.loads(good["json"])
    meta["boxes"][2] = None  # valid frame without a box
    with pytest.raises(BadSampleError, match="frame 2 is marked valid but its box is") as e:
        decode_record({**good, "json": json.dumps(meta).encode()})
    assert e.value.kind == "box"
    meta["boxes"][2] = [600, 300, 700, 400]
    with pytest.raises(BadSampleError, match="leaves the 640x360 image"):
        decode_record({**good, "json": json.dumps(meta).encode()})
    no_json = {k: v for k, v in good.items() if k != "json"}
    with pytest.raises(BadSampleError, match="no .json member"):
        decode_record(no_json)
    with tarfile.open(shard_urls(out)[0]) as t:
        assert sorted(t.getnames()) == sorted(f"{good['__key__']}.{k}" for k in ("000000.jpg", "000001.jpg",
                                                                                  "000002.jpg", "000003.jpg", "json"))
    _ = io
