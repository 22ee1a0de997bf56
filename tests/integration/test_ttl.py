"""Collection TTL and capped collections end to end: the store's clock rules,
query-engine's lazy 404 / stats / _expiresAt, the ttl-sweeper's background
drop (on time, memory returned, zero wake-ups when idle), maxSize FIFO, and
persistence through storage-wal (restart, snapshot + restart, expiry during
downtime).

Behaviour runs with storage-memory auth-jwt query-engine ttl-sweeper;
persistence with storage-wal auth-jwt query-engine ttl-sweeper.
"""
import calendar
import json
import os
import re
import time

import mdbtest
from mdbtest import expect_error, wait_for

MEM = ["storage-memory", "auth-jwt", "query-engine", "ttl-sweeper"]
WAL = ["storage-wal", "auth-jwt", "query-engine", "ttl-sweeper"]
KEY = "ttl-test-encryption-password"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ")


def need(mods):
    for m in mods:
        if not mdbtest.module_available(m):
            mdbtest.skip("module %s is not built" % m)


class Srv:
    """A server with an admin token and a few shortcuts."""

    def __init__(self, mods=MEM, workdir=None, args=(), wal_key=KEY):
        need(mods)
        a = list(args)
        # a restart appends to the same server.log: remember where this run starts
        old = os.path.join(workdir, "server.log") if workdir else None
        self.log_from = os.path.getsize(old) if old and os.path.exists(old) else 0
        if "storage-wal" in mods:
            a += ["--encryption-key", wal_key] if wal_key else ["--disable-encryption"]
        self.s = mdbtest.Server(modules=mods, workdir=workdir, args=a)
        self.dir = self.s.dir
        self.token = self.s.login()

    def post(self, path, body):
        return self.s.request("POST", path, body, token=self.token)

    def get(self, path):
        return self.s.request("GET", path, token=self.token)

    def ok(self, path, body):
        r = self.post(path, body)
        assert r.status == 200, "%s %s -> %r" % (path, json.dumps(body)[:200], r)
        return r.json

    def stats(self, coll):
        return self.ok("/stats", {"collection": coll})

    def sweeper(self):
        r = self.get("/system/ttl")
        assert r.status == 200, r
        return r.json

    def log(self):
        """This run's part of server.log."""
        with open(self.s.log_path, "rb") as f:
            f.seek(self.log_from)
            return f.read().decode("utf-8", "replace")

    def stop(self):
        self.s.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.s.__exit__(*exc)


def iso_ms(iso):
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) * 1000


def sweep_lines(srv, coll):
    """(unix ms, N) of each 'collection <coll> expired: N documents dropped' log line."""
    out = []
    pat = re.compile(r"\[ttl-sweeper\] collection '%s' expired: (\d+) documents dropped" %
                     re.escape(coll))
    for line in srv.log().splitlines():
        m = pat.search(line)
        t = LOG_TS.match(line)
        if m and t:
            ms = calendar.timegm(time.strptime(t.group(1), "%Y-%m-%dT%H:%M:%S")) * 1000
            out.append((ms + int(t.group(2)), int(m.group(1))))
    return out


def swept(srv, coll):
    """True once the sweeper dropped coll: its clock stopped, no 'expired' flag."""
    st = srv.stats(coll)
    return st["count"] == 0 and "expired" not in st and "expiresAt" not in st


# ---- expiry, lazy 404, sweep ---------------------------------------------------------------
def test_expiry_gives_404_and_sweep_drops_on_time():
    with Srv() as srv:
        # nothing has a TTL yet: the sweeper thread has never woken up
        srv.ok("/set", {"collection": "plain", "data": {"a": {"v": 1}}})
        time.sleep(0.2)
        sw = srv.sweeper()
        assert sw["wakeups"] == 0 and sw["scheduled"] == 0 and sw["nextExpiry"] is None, sw

        srv.ok("/set", {"collection": "cache", "ttl": 1,
                        "data": {"k1": {"v": 1}, "k2": {"v": 2}, "k3": {"v": 3}}})
        sw = srv.sweeper()
        assert sw["scheduled"] == 1, sw
        exp_ms = sw["nextExpiryMs"]
        st = srv.stats("cache")
        assert st["count"] == 3 and st["ttl"] == 1 and ISO.match(st["expiresAt"]), st
        assert iso_ms(st["expiresAt"]) == exp_ms // 1000 * 1000, (st, exp_ms)
        assert srv.ok("/get", {"collection": "cache", "keys": "k1"})["v"] == 1

        wait_for(lambda: time.time() * 1000 >= exp_ms + 50, 5, "the expiry")
        expect_error(srv.post("/get", {"collection": "cache", "keys": "k1"}), 404,
                     "No documents found")
        expect_error(srv.post("/get", {"collection": "cache"}), 404, "No documents found")
        expect_error(srv.get("/collections/cache"), 404, "No documents found")
        expect_error(srv.get("/collections/cache/docs/k2"), 404, "No documents found")
        # the sweeper dropped it: count 0, clock stopped, TTL kept
        wait_for(lambda: swept(srv, "cache"), 3, "the sweep")
        st = srv.stats("cache")
        assert st == {"statusCode": 200, "collection": "cache", "count": 0, "ttl": 1}, st
        lines = sweep_lines(srv, "cache")
        assert len(lines) == 1 and lines[0][1] == 3, srv.log()
        # woke exactly at the expiry (no polling interval in between)
        late = lines[0][0] - exp_ms
        assert 0 <= late < 500, "swept %d ms after the expiry" % late
        sw = srv.sweeper()
        assert sw["sweeps"] == 1 and sw["documentsDropped"] == 3 and sw["scheduled"] == 0, sw
        assert sw["wakeups"] <= 4, sw
        # whole-database stats: total counts only live documents
        all_ = srv.get("/stats").json
        assert all_["collections"]["cache"]["count"] == 0, all_
        assert all_["total"] == 1, all_
        # idle again: no further wake-ups
        w0 = srv.sweeper()["wakeups"]
        time.sleep(0.5)
        assert srv.sweeper()["wakeups"] == w0
        # a new insert restarts the collection from _v 1 with the same TTL
        srv.ok("/set", {"collection": "cache", "data": {"k1": {"v": 9}}})
        d = srv.ok("/get", {"collection": "cache", "keys": "k1", "fields": ["v", "_seq"]})
        assert d["_v"] == 1 and d["_seq"] == 0 and d["v"] == 9, d
        assert srv.sweeper()["scheduled"] == 1


def test_lazy_expiry_without_sweeper():
    """query-engine alone: expired reads 404 and stats flag it; nothing drops it."""
    with Srv(mods=["storage-memory", "auth-jwt", "query-engine"]) as srv:
        srv.ok("/schema", {"collection": "c", "ttl": 1})
        srv.ok("/set", {"collection": "c", "data": {"a": {"v": 1}, "b": {"v": 2}}})
        exp = srv.stats("c")["expiresAt"]
        time.sleep(1.3)
        expect_error(srv.post("/get", {"collection": "c", "keys": ["a", "b"]}), 404,
                     "No documents found")
        time.sleep(0.3)
        st = srv.stats("c")
        assert st["count"] == 0 and st["expired"] is True and st["expiresAt"] == exp, \
            "query-engine: expired collection stats wrong: %r" % st
        all_ = srv.get("/stats").json
        assert all_["collections"]["c"]["expired"] is True and all_["total"] == 0, all_


def test_update_does_not_extend_set_does():
    with Srv() as srv:
        srv.ok("/set", {"collection": "u", "ttl": 2, "data": {"a": {"v": 1}}})
        srv.ok("/set", {"collection": "s", "ttl": 2, "data": {"a": {"v": 1}}})
        exp_u = srv.sweeper()["nextExpiryMs"]
        st_u, st_s = srv.stats("u"), srv.stats("s")
        time.sleep(1.1)
        # /update does not move the clock
        assert srv.ok("/update", {"collection": "u", "data": {"a": {"v": 2}}})["updated"] == 1
        assert srv.stats("u")["expiresAt"] == st_u["expiresAt"]
        # /set (here an overwrite) does: now + ttl
        srv.ok("/set", {"collection": "s", "data": {"a": {"v": 2}}})
        st_s2 = srv.stats("s")
        assert iso_ms(st_s2["expiresAt"]) >= iso_ms(st_s["expiresAt"]) + 1000, (st_s, st_s2)
        # past the first expiry: u is gone, s is still there
        wait_for(lambda: time.time() * 1000 >= exp_u + 100, 5, "u's expiry")
        expect_error(srv.post("/get", {"collection": "u", "keys": "a"}), 404,
                     "No documents found")
        d = srv.ok("/get", {"collection": "s", "keys": "a"})
        assert d["v"] == 2 and d["_v"] == 2, d
        wait_for(lambda: swept(srv, "u"), 3, "u's sweep")
        assert srv.stats("s")["count"] == 1
        # and s goes two seconds after its last /set
        wait_for(lambda: swept(srv, "s"), 4, "s's sweep")
        assert len(sweep_lines(srv, "s")) == 1 and len(sweep_lines(srv, "u")) == 1


def test_explicit_drop_unschedules():
    with Srv() as srv:
        srv.ok("/set", {"collection": "d", "ttl": 1, "data": {"a": {}}})
        assert srv.sweeper()["scheduled"] == 1
        srv.ok("/delete", {"collection": "d", "drop": True})
        assert srv.sweeper()["scheduled"] == 0
        expect_error(srv.post("/stats", {"collection": "d"}), 404, "Collection not found")
        time.sleep(1.3)
        sw = srv.sweeper()
        assert sw["sweeps"] == 0 and sweep_lines(srv, "d") == [], sw
        # dropping removed the TTL too: a new TTL may be registered
        srv.ok("/set", {"collection": "d", "ttl": 7, "data": {"a": {}}})
        assert srv.stats("d")["ttl"] == 7


def test_ttl_set_once_409():
    with Srv() as srv:
        srv.ok("/schema", {"collection": "c", "ttl": 5})
        srv.ok("/schema", {"collection": "c", "ttl": 5})  # same value: fine
        srv.ok("/set", {"collection": "c", "ttl": 5, "data": {"a": {"v": 1}}})
        body = expect_error(srv.post("/schema", {"collection": "c", "ttl": 6}), 409)
        assert "'c'" in body["error"] and "5" in body["error"], body
        body = expect_error(srv.post("/set", {"collection": "c", "ttl": 60,
                                              "data": {"b": {"v": 2}}}), 409)
        assert "cannot be changed" in body["error"], body
        # the refused /set inserted nothing
        expect_error(srv.post("/get", {"collection": "c", "keys": "b"}), 404)
        assert srv.stats("c")["ttl"] == 5
        # registering a TTL alone does not start the clock
        srv.ok("/schema", {"collection": "fresh", "ttl": 1})
        st = srv.stats("fresh")
        assert st["count"] == 0 and st["ttl"] == 1 and "expiresAt" not in st, st
        assert srv.sweeper()["scheduled"] == 1  # only c
        # after an expiry the TTL is still the collection's (still set once)
        srv.ok("/set", {"collection": "fresh", "data": {"a": {}}})
        wait_for(lambda: swept(srv, "fresh"), 4, "the sweep")
        expect_error(srv.post("/schema", {"collection": "fresh", "ttl": 2}), 409)
        srv.ok("/schema", {"collection": "fresh", "ttl": 1})


def test_expires_at_is_virtual_and_opt_in():
    with Srv() as srv:
        srv.ok("/set", {"collection": "c", "ttl": 300, "data": {"a": {"v": 1}, "b": {"v": 2}}})
        srv.ok("/set", {"collection": "p", "data": {"a": {"v": 1}}})
        exp = srv.stats("c")["expiresAt"]
        # a steady writer only pushes the deadline later: the sleeping sweeper
        # is not woken for that (it notices at the old deadline, minutes away)
        time.sleep(0.1)  # let the thread take the signal of the first schedule
        w0 = srv.sweeper()["wakeups"]
        for i in range(20):
            srv.ok("/set", {"collection": "c", "data": {"w%d" % i: {}}})
        assert srv.sweeper()["wakeups"] == w0
        srv.ok("/delete", {"collection": "c", "keys": ["w%d" % i for i in range(20)]})
        exp = srv.stats("c")["expiresAt"]
        d = srv.ok("/get", {"collection": "c", "keys": "a"})
        assert "_expiresAt" not in d, d
        d = srv.ok("/get", {"collection": "c", "keys": "a", "fields": ["v", "_expiresAt"]})
        assert d["_expiresAt"] == exp and d["v"] == 1, d
        docs = srv.ok("/get", {"collection": "c", "fields": ["_expiresAt"]})
        assert len(docs) == 2 and all(x["_expiresAt"] == exp for x in docs), docs
        assert all("_expiresAt" not in x for x in srv.ok("/get", {"collection": "c"}))
        assert "_expiresAt" not in srv.get("/collections/c/docs/a").json
        # never stored: excluded fields and a non-TTL collection do not produce it
        d = srv.ok("/get", {"collection": "c", "keys": "a", "excludedFields": ["v"]})
        assert "_expiresAt" not in d, d
        d = srv.ok("/get", {"collection": "p", "keys": "a", "fields": ["v", "_expiresAt"]})
        assert "_expiresAt" not in d, d
        # it cannot be written either (the '_' rule)
        expect_error(srv.post("/set", {"collection": "c", "data": {"x": {"_expiresAt": 1}}}), 400)


def test_maxsize_fifo_and_overwrite():
    with Srv() as srv:
        srv.ok("/schema", {"collection": "ev", "maxSize": 3})
        srv.ok("/set", {"collection": "ev", "data": {"e1": {"n": 1}, "e2": {"n": 2},
                                                     "e3": {"n": 3}}})
        # overwriting e1 keeps its _seq: it stays first in line
        srv.ok("/set", {"collection": "ev", "data": {"e1": {"n": 10}}})
        d = srv.ok("/get", {"collection": "ev", "keys": "e1", "fields": ["n", "_seq"]})
        assert d["_seq"] == 0 and d["_v"] == 2, d
        srv.ok("/set", {"collection": "ev", "data": {"e4": {"n": 4}}})
        keys = sorted(x["_key"] for x in srv.ok("/get", {"collection": "ev"}))
        assert keys == ["e2", "e3", "e4"], keys
        st = srv.stats("ev")
        assert st["count"] == 3 and st["maxSize"] == 3, st
        # /update never evicts; a batch larger than the cap keeps its newest maxSize
        srv.ok("/update", {"collection": "ev", "data": {"e2": {"n": 20}}})
        srv.ok("/set", {"collection": "ev", "data": {"b%d" % i: {"n": i} for i in range(5)}})
        docs = srv.ok("/get", {"collection": "ev", "fields": ["_seq"], "order": "asc"})
        assert [x["_key"] for x in docs] == ["b2", "b3", "b4"], docs
        assert srv.get("/stats").json["collections"]["ev"] == {"count": 3, "maxSize": 3}
        # inline on /set, combined with a TTL: both reported, both enforced
        srv.ok("/set", {"collection": "top", "maxSize": 2, "ttl": 1,
                        "data": {"s1": {"v": 1}, "s2": {"v": 2}, "s3": {"v": 3}}})
        st = srv.stats("top")
        assert st["count"] == 2 and st["maxSize"] == 2 and st["ttl"] == 1, st
        wait_for(lambda: swept(srv, "top"), 4, "the sweep")
        st = srv.stats("top")
        assert st["count"] == 0 and st["maxSize"] == 2 and st["ttl"] == 1, st
        srv.ok("/set", {"collection": "top", "data": {"x%d" % i: {} for i in range(4)}})
        assert srv.stats("top")["count"] == 2


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_sweep_frees_memory():
    with Srv() as srv:
        pid = srv.s.proc.pid
        with open("/proc/%d/maps" % pid) as f:
            if "libasan" in f.read():
                mdbtest.skip("RSS says nothing under AddressSanitizer (quarantine)")
        # warm up the request path so its buffers are not counted as growth
        srv.ok("/set", {"collection": "warm", "data": {"w%d" % i: {"p": "x" * 1000}
                                                      for i in range(1000)}})
        srv.ok("/delete", {"collection": "warm", "keys": ["w%d" % i for i in range(1000)]})
        base = rss_kb(pid)
        pad = "y" * 1000
        n = 20000
        for b in range(0, n, 1000):
            srv.ok("/set", {"collection": "big", "ttl": 2,
                            "data": {"d%05d" % i: {"i": i, "p": pad} for i in range(b, b + 1000)}})
        assert srv.stats("big")["count"] == n
        full = rss_kb(pid)
        growth = full - base
        assert growth > 15000, "20,000 x 1 KB documents only grew RSS by %d kB" % growth
        wait_for(lambda: swept(srv, "big"), 6, "the sweep of 'big'")
        assert srv.get("/stats").json["total"] == 0
        # a few requests after, as glibc returns memory lazily
        for _ in range(3):
            srv.stats("big")
        time.sleep(0.2)
        after = rss_kb(pid)
        back = full - after
        assert back >= 0.3 * growth, \
            "RSS base %d kB, full %d kB, after sweep %d kB: only %d of %d kB came back" % (
                base, full, after, back, growth)
        assert sweep_lines(srv, "big")[0][1] == n


# ---- persistence (storage-wal) ------------------------------------------------------------
def test_meta_survives_restart_and_keeps_expiring():
    need(WAL)
    srv = Srv(mods=WAL)
    srv.ok("/set", {"collection": "long", "ttl": 300, "maxSize": 5,
                    "data": {"k%d" % i: {"n": i} for i in range(7)}})
    # "short" outlives a slow (sanitizer, loaded machine) restart, then
    # expires while watched; every check of it that needs it unexpired is
    # guarded by the clock, since a crowded CI host can stretch a restart
    srv.ok("/set", {"collection": "short", "ttl": 20, "data": {"a": {"v": 1}}})
    long_st, short_st = srv.stats("long"), srv.stats("short")
    assert long_st["count"] == 5, long_st
    srv.stop()
    srv2 = Srv(mods=WAL, workdir=srv.dir)
    try:
        st = srv2.stats("long")
        assert st == long_st, (st, long_st)
        short_exp = iso_ms(short_st["expiresAt"])
        if time.time() * 1000 < short_exp - 2000:  # not reached yet
            now = srv2.stats("short")
            assert now["expiresAt"] == short_st["expiresAt"], (now, short_st)
        expect_error(srv2.post("/schema", {"collection": "long", "ttl": 10}), 409)
        # maxSize still enforced: two more evict the two oldest
        srv2.ok("/set", {"collection": "long", "data": {"n1": {}, "n2": {}}})
        keys = sorted(x["_key"] for x in srv2.ok("/get", {"collection": "long"}))
        assert keys == ["k4", "k5", "k6", "n1", "n2"], keys
        # the restarted sweeper scheduled both and drops 'short' on time
        before_expiry = time.time() * 1000 < short_exp - 1000
        scheduled = srv2.sweeper()["scheduled"]
        if before_expiry:
            assert scheduled == 2, scheduled
        left = max(0.0, short_exp / 1000 - time.time())
        wait_for(lambda: swept(srv2, "short"), left + 12, "the sweep after restart")
        assert sweep_lines(srv2, "short")[0][1] == 1
    finally:
        srv2.stop()
    # the sweep was logged: after another restart 'short' is still empty, TTL kept
    srv3 = Srv(mods=WAL, workdir=srv.dir)
    try:
        st = srv3.stats("short")
        assert st["count"] == 0 and st["ttl"] == 20 and "expiresAt" not in st, st
        assert sweep_lines(srv3, "short") == []  # nothing left to drop at startup
        assert srv3.stats("long")["count"] == 5
    finally:
        srv3.stop()


def test_meta_survives_snapshot_and_restart():
    need(WAL)
    srv = Srv(mods=WAL)
    srv.ok("/set", {"collection": "capped", "ttl": 300, "maxSize": 3,
                    "data": {"k%d" % i: {"n": i} for i in range(4)}})
    srv.ok("/set", {"collection": "soon", "ttl": 20, "data": {"a": {}, "b": {}}})
    srv.ok("/set", {"collection": "gone", "ttl": 1, "data": {"a": {}}})
    wait_for(lambda: swept(srv, "gone"), 4, "the sweep of 'gone'")
    before = {c: srv.stats(c) for c in ("capped", "soon", "gone")}
    r = srv.post("/snapshot", {})
    assert r.status == 200, r
    # the log now holds only its header: the metadata must come from the snapshot
    assert os.path.getsize(os.path.join(srv.dir, "db.log")) < 1000
    srv.stop()
    srv2 = Srv(mods=WAL, workdir=srv.dir)
    try:
        for c, st in before.items():
            if c == "soon" and time.time() * 1000 > iso_ms(st["expiresAt"]) - 2000:
                # a slow (sanitizer, loaded) restart reached its expiry: dropped at
                # startup (404), swept, or not yet; the TTL stays while it exists
                r = srv2.post("/stats", {"collection": c})
                assert r.status in (200, 404), r
                if r.status == 200:
                    now = r.json
                    assert now["ttl"] == st["ttl"] and now["count"] in (0, st["count"]), (now, st)
                continue
            now = srv2.stats(c)
            assert now == st, (c, now, st)
        expect_error(srv2.post("/schema", {"collection": "capped", "ttl": 1}), 409)
        expect_error(srv2.post("/schema", {"collection": "gone", "ttl": 2}), 409)
        srv2.ok("/set", {"collection": "capped", "data": {"z": {}}})
        keys = sorted(x["_key"] for x in srv2.ok("/get", {"collection": "capped"}))
        assert keys == ["k2", "k3", "z"], keys
        left = max(0.0, iso_ms(before["soon"]["expiresAt"]) / 1000 - time.time())
        wait_for(lambda: srv2.post("/stats", {"collection": "soon"}).status == 404
                 or swept(srv2, "soon"), left + 12, "the sweep of 'soon' after restart")
    finally:
        srv2.stop()


def test_expiry_during_downtime_drops_at_startup():
    need(WAL)
    srv = Srv(mods=WAL)
    srv.ok("/set", {"collection": "c", "ttl": 1, "maxSize": 50,
                    "data": {"k%d" % i: {"n": i} for i in range(10)}})
    srv.ok("/set", {"collection": "keep", "data": {"a": {}}})
    exp = srv.sweeper()["nextExpiryMs"]
    srv.stop()
    wait_for(lambda: time.time() * 1000 > exp + 300, 5, "the expiry during downtime")
    srv2 = Srv(mods=WAL, workdir=srv.dir)
    try:
        # dropped whole during start-up, before the first request: no lazy
        # 'expired' phase, and /stats answers 404 like any unknown collection
        expect_error(srv2.post("/stats", {"collection": "c"}), 404, "Collection not found")
        assert "c" not in srv2.get("/stats").json["collections"]
        # gone with its metadata: a new TTL is no conflict
        srv2.ok("/schema", {"collection": "c", "ttl": 30})
        srv2.ok("/delete", {"collection": "c", "drop": True})
        lines = sweep_lines(srv2, "c")
        assert len(lines) == 1 and lines[0][1] == 10, srv2.log()
        log = srv2.log()
        assert log.index("expired: 10 documents dropped") < log.index("listening"), log
        assert srv2.stats("keep")["count"] == 1
        assert srv2.sweeper()["scheduled"] == 0
    finally:
        srv2.stop()
    srv3 = Srv(mods=WAL, workdir=srv.dir)
    try:
        expect_error(srv3.post("/stats", {"collection": "c"}), 404, "Collection not found")
        assert sweep_lines(srv3, "c") == []
    finally:
        srv3.stop()


def log_records(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def test_log_records_evictions_and_sweep():
    """Evictions are logged as DELETEs; a sweep as DROP + META (clock stopped)."""
    need(WAL)
    with Srv(mods=WAL, wal_key=None) as srv:
        srv.ok("/set", {"collection": "ev", "maxSize": 2, "ttl": 1,
                        "data": {"a": {}, "b": {}, "c": {}}})
        srv.ok("/set", {"collection": "ev", "data": {"d": {}}})
        wait_for(lambda: swept(srv, "ev"), 4, "the sweep")
        time.sleep(0.3)  # async writer flushes every 50 ms
        recs = [r for r in log_records(os.path.join(srv.dir, "db.log"))
                if r.get("collection") == "ev"]
        deletes = [r["key"] for r in recs if r["cmd"] == "DELETE"]
        assert deletes == ["a", "b"], recs
        cmds = [r["cmd"] for r in recs]
        drop = cmds.index("DROP")
        metas = [r for r in recs[drop:] if r["cmd"] == "META"]
        assert metas and metas[-1]["value"] == {"ttl": 1, "expiresAt": 0, "maxSize": 2}, recs
        assert "INSERT" not in cmds[drop:], recs


mdbtest.main()
