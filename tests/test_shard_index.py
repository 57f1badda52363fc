"""Random-access shards (format 2): exact pairs vs. the raw folders, 2,048 simulated readers, HTTP range reads,
dead/slow servers, damaged shards, checksums, manifest counts, layouts the reader refuses, the writer's CLI."""
from __future__ import annotations

import os
import signal
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from _data_trees import build_shards, custom_tree, got10k_tree, lasot_tree
from _http_server import RangeServer
from _http_server import spawn as spawn_server
from lorat_scale.config import DataConfig
from lorat_scale.data.pairs import IO_COUNTS, PairDataset, collate
from lorat_scale.data.readers import read_dataset
from lorat_scale.data.sequence import BadImageError
from lorat_scale.data.shards import (ShardLayoutError, load_shards, make_shards, read_manifest, sidecar_name,
                                     write_manifest)
from lorat_scale.data.storage import READ_STATS, RetryPolicy, StorageError
from lorat_scale.data.stream_pairs import ShardPairDataset

CFG = DataConfig(max_frame_gap=6, seed=7, pairs_per_epoch=24)
TZ, TX = 56, 112  # small crops: these tests are about which bytes are read, not resizing
FAST = RetryPolicy(retries=2, backoff=0.01, timeout=1.0)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.fixture(scope="module")
def raw_and_shards(tmp_path_factory, shared_data):
    """Three real sources (LaSOT with occluded frames cut into records of 10, GOT-10k, COCO) and their shards."""
    tmp = tmp_path_factory.mktemp("src")
    las = read_dataset("lasot", lasot_tree(tmp, shared_data, n=40), "train")
    got = read_dataset("got10k", got10k_tree(tmp, shared_data), "train")
    coco = read_dataset("coco", shared_data / "det/coco128")[:30]
    out = []
    for name, seqs in (("lasot", las), ("got10k", got), ("coco", coco)):
        make_shards(seqs, tmp / name, {"format": name}, core=10, readers=3, progress=False)
        out.append(tmp / name)
    return [las, got, coco], out


def test_shard_pairs_equal_raw_folder_pairs(raw_and_shards):
    """The LoRAT pair distribution is exact: the same seed gives the same pairs, bit for bit, from either."""
    raw, folders = raw_and_shards
    shards = [load_shards(f) for f in folders]
    for r, s in zip(raw, shards):  # the index keeps the reader's sequences, order, boxes and validity
        assert [x.key for x in r] == [x.key for x in s]
        for x, y in zip(r, s):
            np.testing.assert_array_equal(x.boxes, y.boxes)
            assert x.valid.tolist() == y.valid.tolist() and x.frame_size == y.frame_size
    a, b = PairDataset(raw, CFG, TZ, TX), PairDataset(shards, CFG, TZ, TX)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert _same(x, y), (epoch, i, x["key"], y["key"])
            # Exactly the bytes of the frames the pair decodes were read (2, or 1 for a same-frame pair).
            seq = next(q for q in raw[x["source"]] if q.key == x["sequence"])
            want = {x["template_frame"], x["search_frame"]}
            if x["counters"]["resampled"] == 0:
                assert y["counters"]["bytes_read"] == sum(os.path.getsize(seq.frames[f]) for f in want)
    assert {s["source"] for s in (b[i] for i in range(len(b)))} == {0, 1, 2}


def test_standard_tar_members_and_index(raw_and_shards):
    raw, folders = raw_and_shards
    m = read_manifest(folders[0])
    assert m["format_version"] == 2 and m["layout"] == {"core": 10, "margin": 0, "readers": 3, "split_sequences": 1}
    seq = load_shards(folders[0])[0]
    names = []
    for s in m["shards"]:
        with tarfile.open(folders[0] / s["name"]) as t:  # plain tar: the stdlib lists and extracts it
            names += t.getnames()
            for i in np.flatnonzero(seq.extra["shard"] == m["shards"].index(s)):
                member = next(x for x in t.getmembers() if x.offset_data == seq.extra["offset"][i])
                assert t.extractfile(member).read() == open(raw[0][0].frames[i], "rb").read()
    # webdataset naming: <key>.json + <key>.<frame>.jpg; occluded frames (3, 4) are not stored
    assert "lasot-airplane-2-w0000.json" in names and "lasot-airplane-2-w0000.000002.jpg" in names
    assert "lasot-airplane-2-w0000.000003.jpg" not in names and len([n for n in names if n.endswith("jpg")]) == 38


def _reader_batches(world: int, workers: int, pairs: int, global_batch: int, micro: int, first_step: int = 0):
    """[rank][worker] -> pair indices that reader loads this epoch (DataLoader dispatches batches round-robin)."""
    ds = PairDataset(_tiny_sources(), DataConfig(pairs_per_epoch=pairs), rank=0, world_size=world)
    out = []
    for rank in range(world):
        ds.rank = rank  # a simulated rank (the epoch plan is shared: a function of seed and epoch)
        steps = range(first_step, pairs // global_batch)
        loader = ds.epoch_loader(0, steps, global_batch, micro, num_workers=workers)
        batches = list(loader.batch_sampler)
        out.append([[i for b in batches[w::workers] for i in b] for w in range(workers)])
    return out


_TINY: list = []


def _tiny_sources():
    """A few annotation-only sequences (the split into readers never opens a frame)."""
    if not _TINY:
        from lorat_scale.data.sequence import Sequence

        n = 50
        _TINY.append([[Sequence(f"s{k}", "synth", [f"{i}.jpg" for i in range(n)], np.tile([1.0, 1, 30, 30], (n, 1)),
                                np.ones(n, bool), (64, 64)) for k in range(2000)]])
    return _TINY[0]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # loaders are built, never started
def test_2048_readers_equal_work_no_pair_twice_exact_resume():
    """64 nodes x 8 GPUs x 4 loader workers over LoRAT's 131,072-pair epoch (micro-batch 16, global 8,192)."""
    world, workers, pairs, gb, micro = 64 * 8, 4, 131072, 8192, 16
    full = _reader_batches(world, workers, pairs, gb, micro)
    counts = {len(w) for r in full for w in r}
    assert counts == {pairs // (world * workers)}  # 64 pairs for each of the 2,048 readers
    allidx = np.concatenate([np.array(w) for r in full for w in r])
    assert len(allidx) == pairs and len(np.unique(allidx)) == pairs  # every pair once, none twice
    # Resume after 5 of the 16 steps: every reader continues with exactly the pairs it had left.
    resumed = _reader_batches(world, workers, pairs, gb, micro, first_step=5)
    per_step = gb // world  # pairs per rank per step
    for r in range(0, world, 37):
        left = sorted(i for w in full[r] for i in w)[5 * per_step:]
        assert sorted(i for w in resumed[r] for i in w) == left


def test_two_ranks_two_workers_real_loader_resume(raw_and_shards):
    """Real DataLoader workers on real shards: ranks disjoint, samples independent of workers, exact resume."""
    _, folders = raw_and_shards
    shards = [load_shards(f) for f in folders]
    cfg = DataConfig(max_frame_gap=6, seed=1, pairs_per_epoch=16)
    seen = []
    for rank in range(2):
        ds = PairDataset(shards, cfg, TZ, TX, rank=rank, world_size=2)
        one = [b for b in ds.epoch_loader(2, range(4), 4, 2, num_workers=0)]
        two = [b for b in ds.epoch_loader(2, range(4), 4, 2, num_workers=2)]
        assert all(_same({k: v for k, v in a.items() if k != "counters"},
                         {k: v for k, v in b.items() if k != "counters"}) for a, b in zip(one, two))
        late = [b for b in ds.epoch_loader(2, range(2, 4), 4, 2, num_workers=2)]
        assert [b["key"] for b in late] == [b["key"] for b in one[2:]]
        assert all(torch.equal(a["x"], b["x"]) for a, b in zip(late, one[2:]))
        seen += [int(p) for b in one for p in b["position"]]
    assert sorted(seen) == list(range(16))


def test_http_range_reads_equal_local(raw_and_shards):
    raw, folders = raw_and_shards
    root = folders[0].parent
    srv = RangeServer(root).start()
    try:
        local = load_shards(folders[0])
        remote = load_shards(f"{srv.url}/lasot", FAST)
        assert remote[0].store.urls[0].startswith("http://127.0.0.1:")
        a, b = PairDataset([local], CFG, TZ, TX), PairDataset([remote], CFG, TZ, TX)
        srv.log.clear()
        got = 0
        for i in range(8):
            x = a[i]
            b0 = READ_STATS["bytes"]
            y = b[i]
            got += READ_STATS["bytes"] - b0
            assert _same(x, y)
        frames = [r for r in srv.log if r[0].endswith(".tar")]
        assert frames and all(r[1] and r[1].startswith("bytes=") for r in frames)  # only range requests
        assert sum(r[2] for r in frames) == got
        assert max(r[2] for r in frames) < 40_000  # a frame (~21 kB), never a record or a shard
    finally:
        srv.stop()


def test_slow_busy_and_rangeless_servers(raw_and_shards):
    _, folders = raw_and_shards
    srv = RangeServer(folders[0].parent).start()
    try:
        seqs = load_shards(f"{srv.url}/lasot", FAST)
        seq = seqs[0]
        i = int(np.flatnonzero(seq.valid)[0])
        r0 = READ_STATS["retries"]
        srv.fail_next = 2  # two 503s, then fine: retried with backoff
        assert len(seq.read_bytes(i)) == seq.extra["nbytes"][i] and READ_STATS["retries"] - r0 == 2
        srv.fail_next = 5
        with pytest.raises(StorageError, match=r"127\.0\.0\.1.*shard-.*gave up after 3 attempts.*HTTP 503"):
            seq.read_bytes(i)
        srv.fail_next = 0
        srv.delay = 1.5  # slower than the 1 s read timeout
        with pytest.raises(StorageError, match=r"shard-\d+\.tar: bytes \d+-\d+: gave up.*read timeout"):
            seq.read_bytes(i)
        srv.delay = 0.0
        srv.ignore_range = True
        with pytest.raises(StorageError, match="ignored the Range header"):
            seq.read_bytes(i)
    finally:
        srv.stop()


def test_killed_server_stops_training_with_a_clear_error(raw_and_shards, tmp_path):
    """A dead server is not data corruption: the sampler does not skip it as bad frames, it stops, naming the cause."""
    _, folders = raw_and_shards
    proc, url = spawn_server(folders[0].parent, tmp_path / "url")
    try:
        ds = PairDataset([load_shards(f"{url}/lasot", FAST)], DataConfig(max_frame_gap=6, pairs_per_epoch=8), TZ, TX)
        assert ds[0]["counters"]["bytes_read"] > 0  # served
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gave_up = rf"{url}/lasot/shard-\d+\.tar.*gave up after 3 attempts.*connection refused"
        with pytest.raises(StorageError, match=gave_up):
            ds[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _damage(folder: Path, seq, i: int, how: str) -> None:
    """Flip bytes inside frame ``i``'s member, or cut the shard before it."""
    p = folder / read_manifest(folder)["shards"][int(seq.extra["shard"][i])]["name"]
    data = bytearray(p.read_bytes())
    off = int(seq.extra["offset"][i])
    if how == "flip":
        data[off + 500:off + 520] = bytes(b ^ 0xFF for b in data[off + 500:off + 520])
        p.write_bytes(bytes(data))
    else:
        p.write_bytes(bytes(data[:off + 100]))


def test_damaged_frame_is_a_counted_skip_losing_only_that_frame(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=1, n=8)
    (src,) = read_dataset("custom", root)
    make_shards([src], tmp_path / "sh", {"format": "custom"}, progress=False)
    (seq,) = load_shards(tmp_path / "sh")
    _damage(tmp_path / "sh", seq, 3, "flip")
    crc = r"shard-000000\.tar: bytes \d+-\d+ \(custom/seq0 frame 3\): crc32 mismatch"
    with pytest.raises(BadImageError, match=crc):
        seq.read_bytes(3)
    assert seq.read_bytes(2) == open(src.frames[2], "rb").read()  # the other frames are intact
    cfg = DataConfig(max_frame_gap=8, pairs_per_epoch=40, seed=2)
    ds = PairDataset([[seq]], cfg, TZ, TX)
    got = [ds[i] for i in range(40)]
    bad = sum(s["counters"]["bad_frames"] for s in got)
    used = {f for s in got for f in (s["template_frame"], s["search_frame"])}
    assert bad >= 1 and 3 not in used and len(used) == 7  # frame 3 lost, every other frame still drawn
    with pytest.raises(BadImageError, match="crc32 mismatch"):
        for i in range(40):
            PairDataset([[seq]], DataConfig(max_frame_gap=8, pairs_per_epoch=40, seed=2, on_bad_sample="raise"),
                        TZ, TX)[i]
    _damage(tmp_path / "sh", seq, 6, "cut")  # truncated shard: a short read is data damage too
    with pytest.raises(OSError, match=r"only \d+ of \d+ bytes .*truncated"):
        seq.read_bytes(6)


def test_sha256_checked_on_rerun_and_check_data(tmp_path, shared_data, capsys):
    from lorat_scale.cli import main as cli

    out = build_shards(tmp_path, shared_data, n_seqs=4, n=3, min_shards=2)
    m = read_manifest(out)
    p = out / m["shards"][1]["name"]
    good = p.read_bytes()
    flipped = bytearray(good)
    flipped[1000] ^= 0xFF
    p.write_bytes(bytes(flipped))  # same size: only the checksum can tell
    assert cli(["check-data", "--format", "shards", "--root", str(out)]) == 1
    assert f"{p}: sha256 differs from the manifest" in capsys.readouterr().out
    stamp = (out / m["shards"][0]["name"]).stat().st_mtime_ns
    make_shards(read_dataset("custom", tmp_path / "custom"), out, {"format": "custom"}, readers=2, progress=False)
    assert p.read_bytes() == good  # the rerun rewrote the damaged shard, byte-identical to the original
    assert (out / m["shards"][0]["name"]).stat().st_mtime_ns == stamp  # and kept the intact one
    assert cli(["check-data", "--format", "shards", "--root", str(out)]) == 0


def test_wrong_manifest_counts_are_refused(tmp_path, shared_data):
    out = build_shards(tmp_path, shared_data, n_seqs=4, n=3, min_shards=2)
    m = read_manifest(out)
    m["shards"][0]["frames"] += 1
    write_manifest(out / "manifest.json", m)
    counts = r"shards\[0\]\.frames \(shard-000000\.tar\): manifest says \d+, the index holds"
    with pytest.raises(ShardLayoutError, match=counts):
        load_shards(out)
    m["shards"][0]["frames"] -= 1
    m["index"]["sequences"] = 5
    write_manifest(out / "manifest.json", m)
    with pytest.raises(ShardLayoutError, match="index.sequences: manifest says 5, the index holds 4"):
        load_shards(out)
    m["index"]["sequences"] = 4
    m["shards"][1]["done"] = False
    write_manifest(out / "manifest.json", m)
    with pytest.raises(ShardLayoutError, match="1 of 2 shards unfinished.*rerun the same make-shards"):
        load_shards(out)
    m["format_version"] = 1
    write_manifest(out / "manifest.json", m)
    with pytest.raises(ShardLayoutError, match="shard format 1.*rewrite them"):
        load_shards(out)


def test_stream_refuses_layouts_it_cannot_serve(tmp_path, shared_data):
    cfg = DataConfig(max_frame_gap=3, num_workers=2)
    no_margin = build_shards(tmp_path / "a", shared_data, n_seqs=2, n=12, min_shards=2, core=4)
    with pytest.raises(ShardLayoutError, match=r"margin 0 < data.max_frame_gap=3 and 2 sequences cut.*--margin 3"):
        ShardPairDataset([no_margin], cfg, TZ, TX, lanes=1)
    ok = build_shards(tmp_path / "b", shared_data, n_seqs=2, n=12, min_shards=2, core=4, margin=3)
    ShardPairDataset([ok], cfg, TZ, TX, lanes=1)
    with pytest.raises(ShardLayoutError, match=r"2 shards for 2 ranks x 2 loader lanes = 4 .*--readers 2x2"):
        ShardPairDataset([ok], cfg, TZ, TX, rank=0, world_size=2, lanes=2)
    # Random access serves any layout and any number of readers.
    assert len(PairDataset([load_shards(no_margin)], dict_cfg(cfg), TZ, TX, rank=3, world_size=512)) == 8


def dict_cfg(cfg: DataConfig) -> DataConfig:
    import dataclasses

    return dataclasses.replace(cfg, pairs_per_epoch=8)


def test_make_shards_empty_folders_and_bad_first_frame(tmp_path, shared_data, capsys):
    """Issue 16, writer side: an unreadable first frame costs that frame only; an empty sequence folder is refused
    (rc 1, named) or, with --on-error skip, left out and named; nothing usable at all is an error, never rc 0."""
    from lorat_scale.cli import main as cli
    from lorat_scale.data.sequence import Sequence

    root = custom_tree(tmp_path, shared_data, n_seqs=3, n=5)
    seqs = read_dataset("custom", root)
    first = root / "seq1" / "1.jpg"
    first.unlink()
    first.write_bytes(b"not a jpeg at all")  # garbage where frame 1 was
    out = tmp_path / "sh"
    m = make_shards(seqs, out, {"format": "custom"}, readers=2, progress=False)
    assert m["totals"]["frames"] == 14 and m["totals"]["num_missing"] == 1 and m["totals"]["sequences"] == 3
    by = {s.name: s for s in load_shards(out)}
    assert by["seq1"].valid.tolist() == [False, True, True, True, True] and by["seq0"].valid.all()
    empty = Sequence("nothing", "custom", [], np.zeros((0, 4)), np.zeros(0, bool))
    m = make_shards([*seqs, empty], tmp_path / "sh2", {"format": "custom"}, progress=False)
    assert m["dropped"] == ["custom/nothing: no frames (empty folder?)"] and m["index"]["sequences"] == 3
    with pytest.raises(ValueError, match="no sequence has a valid frame.*custom/nothing: no frames"):
        make_shards([empty], tmp_path / "sh3", {"format": "custom"}, progress=False)
    (root / "empty").mkdir()  # a sequence folder with boxes but no images
    (root / "empty" / "groundtruth.txt").write_text("1,1,5,5\n")
    (root / "seq1" / "1.jpg").unlink()
    os.symlink(seqs[1].frames[1], root / "seq1" / "1.jpg")
    rc = cli(["make-shards", "--format", "custom", "--root", str(root), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 1 and "empty" in err and not (tmp_path / "e" / "index.npz").exists()
    rc = cli(["make-shards", "--format", "custom", "--root", str(root), "--out", str(tmp_path / "e"),
              "--on-error", "skip", "--num-workers", "1"])
    cap = capsys.readouterr()
    assert rc == 0 and "custom/empty" in cap.err and "3 sequences" in cap.out


def test_readers_size_the_shards(tmp_path, shared_data):
    from lorat_scale.data.shards import parse_readers

    assert parse_readers("64x8x4") == 2048 and parse_readers(12) == 12
    with pytest.raises(ValueError, match="NODESxGPUSxWORKERS"):
        parse_readers("64x0x4")
    out = build_shards(tmp_path, shared_data, n_seqs=9, n=3, min_shards="2x2x2")
    m = read_manifest(out)
    assert m["num_shards"] == 8 and m["layout"]["readers"] == 8
    assert all((out / sidecar_name(s["name"])).is_file() for s in m["shards"])
    assert m["index"]["sequences"] == 9 and m["index"]["stored_frames"] == 27


def test_collate_counts_once(raw_and_shards):
    raw, _ = raw_and_shards
    ds = PairDataset(raw, CFG, TZ, TX)
    samples = [ds[i] for i in range(4)]
    per = [dict(s["counters"]) for s in samples]
    b = collate(samples)
    assert b["counters"]["bytes_read"] == sum(p["bytes_read"] for p in per)
    assert b["counters"]["same_frame"] == sum(s["template_frame"] == s["search_frame"] for s in samples)
    assert b["template_frame"].tolist() == [s["template_frame"] for s in samples]
    assert IO_COUNTS["frames"] > 0


def test_stream_dead_server_is_a_storage_error_not_bad_data(tmp_path, shared_data):
    """The streaming fallback over a `pipe:` download from a server that is gone: a clear StorageError, not 'all bad'.

    The pipe is a Python one-liner (what `curl -s -f URL` does, without needing curl on the machine)."""
    from lorat_scale.data.stream import ShardStream

    out = build_shards(tmp_path, shared_data, n_seqs=2, n=3, min_shards=2)
    srv = RangeServer(out)  # bound, then closed: nothing listens on this port any more
    srv.httpd.server_close()
    counts = [s["items"] for s in read_manifest(out)["shards"]]
    get = "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())"
    urls = [f"pipe:{sys.executable} -c '{get}' {srv.url}/{s['name']}" for s in read_manifest(out)["shards"]]
    with pytest.raises(StorageError, match=r"http://127\.0\.0\.1:\d+/shard-00000\d\.tar.*not counted"):
        list(ShardStream(urls, counts, shuffle=False, worker_info=(0, 1, 0, 1)))
