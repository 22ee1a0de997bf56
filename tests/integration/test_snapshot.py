"""POST /snapshot is the core's: it answers after the snapshot is durable
and every after-snapshot hook ran (with its module's ctx); storage-memory
says there is nothing to snapshot. storage-wal's scheduled snapshots and
keep-backups retention go through the same path."""
import errno
import glob
import os
import time

import mdbtest
from mdbtest import expect_error, wait_for

ADMIN = "admin-token"
MODDIR = "%s:%s" % (mdbtest.MODULE_DIR, mdbtest.FIXTURE_DIR)


def server(storage="storage-wal", extra=(), args=(), conf_extra="", **kw):
    mods = [storage, "test-auth", "query-engine", "snap-hook"] + list(extra)
    a = list(args)
    if storage == "storage-wal":
        a += ["--disable-encryption"]
    return mdbtest.Server(modules=mods, auth=False, module_dir=MODDIR, args=a,
                          conf_extra=conf_extra, **kw)


def put(s, n=3, coll="things"):
    r = s.request("POST", "/set", {"collection": coll,
                                   "data": {"k%d" % i: {"n": i} for i in range(n)}}, token=ADMIN)
    assert r.status == 200, r


def seen(s):
    return s.request("GET", "/snap-hook/seen").json


def test_reply_comes_after_durable_snapshot_and_hooks():
    with server() as s:
        put(s)
        r = s.request("POST", "/snapshot", token=ADMIN)
        assert r.status == 200, r
        body = r.json
        assert body["message"] == "Snapshot taken successfully", body
        snap = body["snapshot"]
        assert snap["path"] == os.path.join(s.dir, "db.log.snapshot.bin"), snap
        assert snap["bytes"] == os.path.getsize(snap["path"]) > 0, snap
        assert snap["durationMs"] >= 0, snap
        # The hooks ran before the reply: no waiting here.
        h = seen(s)
        assert h["calls"] == 1 and h["calls10"] == 1, h
        assert h["ctx"] == "snap-hook" and h["trigger"] == "api", h
        assert h["path"] == snap["path"] and h["bytes"] == snap["bytes"], h
        assert h["fileBytes"] == snap["bytes"], h
        # A hook asking for a snapshot is refused instead of deadlocking.
        assert h["nested"] == -errno.EDEADLK, h
        r = s.request("POST", "/snapshot", token=ADMIN)
        assert r.status == 200, r
        assert seen(s)["calls"] == 2


def test_only_admins_snapshot():
    with server() as s:
        expect_error(s.request("POST", "/snapshot", token="reader-token"), 403,
                     "Forbidden: snapshot requires admin scope")
        assert seen(s)["calls"] == 0


def test_in_memory_has_nothing_to_snapshot_and_fires_nothing():
    with server(storage="storage-memory") as s:
        put(s)
        r = s.request("POST", "/snapshot", token=ADMIN)
        assert r.status == 200, r
        assert r.json["snapshot"] is None, r.json
        assert "Nothing to snapshot" in r.json["message"], r.json
        h = seen(s)
        assert h["calls"] == 0 and h["calls10"] == 0, h


def test_keep_backups_keeps_exactly_n():
    with server(args=["--keep-backups", "2", "--keep-logs"]) as s:
        bdir = os.path.join(s.dir, "backup")
        os.makedirs(bdir, exist_ok=True)
        foreign = os.path.join(bdir, "notes.bak")
        with open(foreign, "w") as f:
            f.write("not a snapshot")
        made = []
        for i in range(6):
            put(s, n=2, coll="c%d" % i)
            r = s.request("POST", "/snapshot", token=ADMIN)
            assert r.status == 200, r
            baks = sorted(glob.glob(os.path.join(bdir, "db.log.snapshot.bin.*.bak")))
            made = [b for b in baks if b not in made] + made
            assert len(baks) == min(i, 2), (i, baks)
        # The two kept are the newest: the last one holds c0..c4.
        baks = glob.glob(os.path.join(bdir, "db.log.snapshot.bin.*.bak"))
        assert len(baks) == 2, baks
        newest = max(baks, key=os.path.getmtime)
        assert b"c4" in open(newest, "rb").read(), newest
        assert os.path.exists(foreign)
        assert len(glob.glob(os.path.join(bdir, "db.log.*.log"))) == 6  # keep-logs untouched
        assert "keep-backups = 2: removed the 1 oldest snapshot backup(s)" in s.log()


def test_scheduled_snapshot_by_time():
    with server(args=["--snapshot-every", "1s"]) as s:
        put(s)
        h = wait_for(lambda: (lambda x: x if x["calls"] >= 2 else None)(seen(s)), 30,
                     "two scheduled snapshots")
        assert h["trigger"] == "storage-wal", h
        assert h["fileBytes"] == h["bytes"] > 0, h
        s.wait_log("scheduled snapshot (snapshot-every)", timeout=30)


def test_scheduled_snapshot_by_log_size():
    with server(args=["--snapshot-log-size", "8K"]) as s:
        time.sleep(0.5)
        assert seen(s)["calls"] == 0  # a fresh log is far below 8K
        for i in range(8):
            r = s.request("POST", "/set", {"collection": "big", "data": {
                "k%d" % i: {"payload": "x" * 2000}}}, token=ADMIN)
            assert r.status == 200, r
        h = wait_for(lambda: (lambda x: x if x["calls"] >= 1 else None)(seen(s)), 30,
                     "a log-size snapshot")
        assert h["trigger"] == "storage-wal", h
        s.wait_log("scheduled snapshot (snapshot-log-size)", timeout=30)
        # The snapshot compacted the log below the threshold: no second one.
        wait_for(lambda: os.path.getsize(os.path.join(s.dir, "db.log")) < 8192, 10,
                 "a compacted log")
        time.sleep(1.0)
        assert seen(s)["calls"] == 1, seen(s)


def test_schedule_keys_are_checked_and_shown():
    s = server(args=["--snapshot-every", "soon"], start=False)
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    assert "storage-wal.snapshot-every: 'soon' is not a duration" in s.log(), s.log()
    s = server(args=["--snapshot-log-size", "12Q"], start=False)
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    assert "storage-wal.snapshot-log-size: '12Q' is not a size" in s.log(), s.log()
    s = server(start=False, args=["--snapshot-every", "15m", "--keep-backups", "7"])
    rc, out, err = mdbtest.run_binary(s.args[1:] + ["--print-config"])
    assert rc == 0, (out, err)
    assert "storage-wal.snapshot-every = 15m  # flag:--snapshot-every" in out, out
    assert "storage-wal.snapshot-log-size = 0  # default" in out, out
    assert "storage-wal.keep-backups = 7  # flag:--keep-backups" in out, out


if __name__ == "__main__":
    mdbtest.main()
