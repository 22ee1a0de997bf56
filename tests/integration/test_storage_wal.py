"""storage-wal against the real binary: restart, crash safety in both write
modes, encryption at rest, wrong key, torn/corrupt logs, snapshots and
their failure, point-in-time recovery."""
import glob
import json
import os
import random
import signal
import subprocess
import threading
import time

import mdbtest

KEY = "wal-test-encryption-password"
# auth-jwt when it is built; otherwise the core's test-auth fixture (fixed tokens).
AUTH = "auth-jwt" if mdbtest.module_available("auth-jwt") else "test-auth"


def need():
    if not mdbtest.module_available("storage-wal") or not mdbtest.module_available("query-engine"):
        mdbtest.skip("storage-wal or query-engine not built")
    if AUTH == "test-auth" and not mdbtest.module_available("test-auth", mdbtest.FIXTURE_DIR):
        mdbtest.skip("no auth module built")


def server(workdir=None, args=(), start=True, wait=True, key=KEY):
    a = list(args)
    if key is not None:
        a += ["--encryption-key", key]
    srv = mdbtest.Server(modules=["storage-wal", AUTH, "query-engine"], args=a,
                         workdir=workdir, auth=(AUTH == "auth-jwt"),
                         module_dir=mdbtest.MODULE_DIR + ":" + mdbtest.FIXTURE_DIR,
                         start=start, wait=wait)
    return srv


def token(srv):
    return srv.login() if AUTH == "auth-jwt" else "admin-token"


def reader_token(srv):
    if AUTH == "test-auth":
        return "reader-token"
    r = srv.post("/auth/delegate", {"client_id": "reader", "scopes": ["read:*:*"]})
    assert r.status == 200, r
    return r.json["token"]


def put(srv, coll, data, tok=None):
    return srv.request("POST", "/set", {"collection": coll, "data": data},
                       token=tok or token(srv))


def get_all(srv, coll, keys=None):
    """Every document of coll (or the given keys) with its system fields, by key."""
    out = {}
    body = {"collection": coll, "fields": ["_key", "_v", "_seq", "name", "n", "payload"],
            "count": 1000, "order": "asc"}
    if keys is not None:
        for i in range(0, len(keys), 1000):
            b = dict(body, keys=keys[i:i + 1000])
            del b["order"]
            r = srv.request("POST", "/get", b, token=token(srv))
            if r.status == 404:
                continue
            assert r.status == 200, r
            for d in r.json:
                out[d["_key"]] = d
        return out
    offset = 0
    while True:
        r = srv.request("POST", "/get", dict(body, offset=offset), token=token(srv))
        if r.status == 404:
            return out
        assert r.status == 200, r
        for d in r.json:
            out[d["_key"]] = d
        if len(r.json) < 1000:
            return out
        offset += 1000


def data_files(srv):
    """Every file the database wrote (not the test's config and server log)."""
    files = []
    for root, _, names in os.walk(srv.dir):
        for n in names:
            if n not in ("server.log", "moltendb.conf"):
                files.append(os.path.join(root, n))
    return files


def snapshot(srv, tok=None):
    return srv.request("POST", "/snapshot", token=tok or token(srv))


# ---- tests -------------------------------------------------------------------------
def test_restart_keeps_data_v_and_seq():
    need()
    srv = server()
    assert put(srv, "users", {"u1": {"name": "alice"}, "u2": {"name": "bob"}}).status == 200
    assert put(srv, "users", {"u1": {"name": "alice2"}}).status == 200
    r = srv.request("POST", "/update", {"collection": "users", "data": {"u2": {"n": 5}}},
                    token=token(srv))
    assert r.status == 200, r
    assert put(srv, "users", {"u3": {"name": "carol"}}).status == 200
    r = srv.request("POST", "/delete", {"collection": "users", "keys": "u3"}, token=token(srv))
    assert r.status == 200, r
    assert put(srv, "other", {"x": {"n": 1.5}}).status == 200
    # Values that stress the line format: escapes, unicode, non-objects, numbers.
    odd = {"num": 5, "str": "h\u00e9llo \"q\" \\ \u2028 ,\"_t\":1}",
           "arr": [1, {"a": None}], "obj": {"k\"ey": {"n": [1.5, -0.0, 1e300, 12345678901234567]}}}
    assert put(srv, "odd", odd).status == 200
    odd_before = [srv.request("POST", "/get", {"collection": "odd", "keys": k},
                              token=token(srv)).body for k in sorted(odd)]
    before = {c: get_all(srv, c) for c in ("users", "other")}
    assert before["users"]["u1"]["_v"] == 2 and before["users"]["u2"]["_v"] == 2
    assert "u3" not in before["users"]
    srv.stop()
    srv2 = server(workdir=srv.dir)
    after = {c: get_all(srv2, c) for c in ("users", "other")}
    assert after == before, (after, before)
    odd_after = [srv2.request("POST", "/get", {"collection": "odd", "keys": k},
                              token=token(srv2)).body for k in sorted(odd)]
    assert odd_after == odd_before, (odd_after, odd_before)
    assert b"1e+300" in odd_after[2] and odd_after[1] == b"5", odd_after
    assert "replayed" in srv2.log()
    # New writes continue the _seq counter instead of reusing numbers.
    assert put(srv2, "users", {"u4": {"name": "dave"}}).status == 200
    seqs = [d["_seq"] for d in get_all(srv2, "users").values()]
    assert len(seqs) == len(set(seqs)), seqs
    srv2.stop()


def test_async_writes_reach_disk_by_the_flush_timer_and_survive_sigkill():
    """Async mode loses at most the writes of the last flush interval: the
    flush timer alone (no later request, no shutdown) puts acknowledged
    writes in the log, and then a SIGKILL loses none of them. Waits for the
    log to hold the whole batch of the last write (bounded), rather than
    sleeping for a guess of the interval, so a loaded machine cannot make it
    fail."""
    need()
    plain = ["--disable-encryption"]
    srv = server(key=None, args=plain)
    for i in range(20):
        r = put(srv, "a", {"k%d_%d" % (i, j): {"n": i * 100 + j} for j in range(25)})
        assert r.status == 200, r
    acked = time.monotonic()
    log = os.path.join(srv.dir, "db.log")
    while True:
        with open(log, "rb") as f:
            data = f.read()
        # The batch must be whole (its TX_COMMIT line ended): a read can see
        # a write still in progress, and a SIGKILL can cut that write short.
        tail = data[data.find(b'"k19_24"'):] if b'"k19_24"' in data else b""
        commit = tail.find(b'"TX_COMMIT"')
        if commit >= 0 and b"\n" in tail[commit:]:
            break
        # 50 ms is the interval; 20 s only bounds a broken timer's wait.
        assert time.monotonic() - acked < 20, "the flush timer did not write the log"
        time.sleep(0.02)
    srv.kill()
    srv2 = server(workdir=srv.dir, key=None, args=plain)
    docs = get_all(srv2, "a")
    assert len(docs) == 500, len(docs)
    assert docs["k19_24"]["n"] == 1924
    srv2.stop()


def _writer(srv, tok, prefix, acked, stop, errors, killed=None):
    i = 0
    while not stop.is_set():
        key = "%s_%d" % (prefix, i)
        i += 1
        try:
            r = srv.request("POST", "/set", {"collection": "s", "data": {key: {"n": i}}},
                            token=tok, timeout=5)
        except Exception:
            return  # the server was killed mid-request: not acknowledged
        if killed is not None and killed.is_set():
            # Once SIGKILL is on its way the port may pass to another
            # test's server (same JWT secret): a 200 read now need not
            # be this server's. Counting fewer writes is always safe.
            return
        if r.status == 200:
            acked.append(key)
        else:
            errors.append(r)
            return


def _snapshotter(srv, tok, stop, errors):
    while not stop.is_set():
        try:
            r = srv.request("POST", "/snapshot", token=tok, timeout=5)
        except Exception:
            return  # killed mid-snapshot
        if r.status != 200:
            errors.append(r)
            return


def crash_rounds(rounds, writers, snapshots=False, window=(0.05, 0.4)):
    """Sync mode: writers (and a snapshot loop) run until SIGKILL at a random
    moment; each restart checks every write acknowledged so far. Returns the
    workdir and the acknowledged keys, after a final restart and check."""
    workdir = None
    acked = []
    for rnd in range(rounds + 1):
        srv = server(workdir=workdir, args=["--write-mode", "sync"])
        workdir = srv.dir
        if acked:
            have = get_all(srv, "s", keys=list(acked))
            missing = [k for k in acked if k not in have]
            replayed = [l for l in srv.log_since_start().splitlines() if "replayed" in l]
            assert not missing, "round %d lost %d of %d acknowledged writes: %r; %s" % (
                rnd, len(missing), len(acked), missing[:5], replayed)
        if rnd == rounds:
            srv.stop()
            return workdir, acked
        tok = token(srv)
        stop, killed = threading.Event(), threading.Event()
        errors = []
        threads = [threading.Thread(target=_writer, args=(srv, tok, "r%d_t%d" % (rnd, t), acked,
                                                          stop, errors, killed))
                   for t in range(writers)]
        if snapshots:
            threads.append(threading.Thread(target=_snapshotter, args=(srv, tok, stop, errors)))
        for t in threads:
            t.start()
        time.sleep(random.uniform(*window))
        killed.set()
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        srv.logf.close()
        assert not errors, errors[:3]


def test_sync_acknowledged_writes_survive_sigkill_under_load():
    need()
    _, acked = crash_rounds(20, writers=8)
    assert len(acked) > 20 * 8, len(acked)


def test_no_plaintext_on_disk_when_encrypted():
    need()
    srv = server()
    marker = "PLAINTEXT-MARKER-7f3a9c"
    assert put(srv, "secretcoll", {"secretkey1": {"payload": marker}}).status == 200
    assert snapshot(srv).status == 200
    assert put(srv, "secretcoll", {"secretkey2": {"payload": marker + "-2"}}).status == 200
    assert snapshot(srv).status == 200  # leaves a .bak too
    assert put(srv, "secretcoll", {"secretkey3": {"payload": marker + "-3"}}).status == 200
    srv.stop()
    files = data_files(srv)
    assert any(f.endswith(".bak") for f in files), files
    for f in files:
        with open(f, "rb") as fh:
            raw = fh.read()
        for needle in (marker.encode(), b"secretcoll", b"secretkey"):
            assert needle not in raw, "%s found in %s" % (needle, f)
        assert os.stat(f).st_mode & 0o077 == 0, "%s is readable by others" % f
    srv2 = server(workdir=srv.dir)
    assert len(get_all(srv2, "secretcoll")) == 3
    srv2.stop()


def test_wrong_key_refuses_to_start():
    need()
    srv = server()
    assert put(srv, "c", {"k": {"n": 1}}).status == 200
    srv.stop()
    before = open(os.path.join(srv.dir, "db.log"), "rb").read()
    bad = server(workdir=srv.dir, key="not-the-right-key", start=False)
    bad.start(wait=False)
    rc = bad.wait_exit()
    bad.logf.close()
    assert rc != 0
    assert "encryption key does not match this database" in bad.log(), bad.log()
    assert open(os.path.join(srv.dir, "db.log"), "rb").read() == before
    good = server(workdir=srv.dir)
    assert get_all(good, "c")["k"]["n"] == 1
    good.stop()


def test_second_server_on_same_database_refused():
    need()
    srv = server()
    assert put(srv, "c", {"k": {"n": 1}}).status == 200
    other = server(workdir=srv.dir, start=False)
    other.start(wait=False)
    assert other.wait_exit() != 0
    other.logf.close()
    assert "in use by another moltendb process" in other.log(), other.log()
    assert get_all(srv, "c")["k"]["n"] == 1
    srv.stop()


def test_disk_full_goes_read_only_and_keeps_acknowledged_writes():
    need()
    if os.geteuid() != 0:
        mdbtest.skip("needs root to mount a small tmpfs")
    srv = server(start=False, args=["--write-mode", "sync"])
    data = os.path.join(srv.dir, "data")
    os.mkdir(data)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", data],
                      capture_output=True).returncode != 0:
        mdbtest.skip("cannot mount a tmpfs here")
    try:
        srv.args += ["--db-path", os.path.join(data, "db.log")]
        srv.start()
        acked, statuses = [], []
        for i in range(400):
            r = put(srv, "c", {"k%d" % i: {"payload": "%d-" % i + "y" * 4000}})
            statuses.append(r.status)
            if r.status == 200:
                acked.append("k%d" % i)
            elif r.status == 503:
                body = mdbtest.expect_error(r, 503)
                assert body["error"].startswith("Service unavailable -- storage fault: "), body
                break
            else:
                # The write whose sync failed is not acknowledged.
                mdbtest.expect_error(r, 500)
        assert statuses[-1] == 503, statuses[-5:]
        assert len(acked) > 10, len(acked)
        assert "storage fault" in srv.log()
        # Reads go on.
        r = srv.request("POST", "/get", {"collection": "c", "keys": acked[0]}, token=token(srv))
        assert r.status == 200, r
        srv.stop(expect=None)
        # Restart on the still-full disk: every acknowledged write is there.
        srv2 = server(workdir=srv.dir, args=["--write-mode", "sync", "--db-path",
                                             os.path.join(data, "db.log")])
        have = get_all(srv2, "c", keys=acked)
        assert sorted(have) == sorted(acked), (len(have), len(acked))
        srv2.stop(expect=None)
    finally:
        subprocess.run(["umount", "-l", data], capture_output=True)


def test_torn_tail_and_corrupt_middle():
    need()
    srv = server(key=None, args=["--disable-encryption"])
    for i in range(5):
        assert put(srv, "c", {"k%d" % i: {"n": i}}).status == 200
    srv.stop()
    log = os.path.join(srv.dir, "db.log")
    with open(log, "ab") as f:
        f.write(b'{"cmd":"INSERT","collection":"c","key":"torn","value":{"n"')
    srv2 = server(workdir=srv.dir, key=None, args=["--disable-encryption"])
    docs = get_all(srv2, "c")
    assert sorted(docs) == ["k%d" % i for i in range(5)], docs
    assert "torn" in srv2.log()
    srv2.stop()
    # Damage line 3 (the second record): startup stops and names file and line.
    lines = open(log, "rb").read().split(b"\n")
    lines[2] = lines[2].replace(b'"n":1', b'"n":1,,')
    open(log, "wb").write(b"\n".join(lines))
    bad = server(workdir=srv.dir, key=None, args=["--disable-encryption"], start=False)
    bad.start(wait=False)
    assert bad.wait_exit() != 0
    bad.logf.close()
    assert "db.log: corrupt record at line 3" in bad.log(), bad.log()
    ok = server(workdir=srv.dir, key=None, args=["--disable-encryption", "--skip-corrupt"])
    docs = get_all(ok, "c")
    assert sorted(docs) == ["k0", "k2", "k3", "k4"], docs
    ok.stop()


def test_snapshot_then_restart_and_backup():
    need()
    srv = server()
    assert put(srv, "c", {"k%d" % i: {"n": i} for i in range(100)}).status == 200
    r = srv.request("POST", "/schema", {"collection": "c", "maxSize": 102}, token=token(srv))
    assert r.status == 200, r
    r = snapshot(srv)
    assert r.status == 200, r
    snap = os.path.join(srv.dir, "db.log.snapshot.bin")
    assert r.json == {"statusCode": 200, "status": "ok",
                      "message": "Snapshot taken successfully",
                      "snapshot": {"path": snap, "bytes": os.path.getsize(snap),
                                   "durationMs": r.json["snapshot"]["durationMs"]}}, r.json
    assert os.path.exists(snap)
    assert not glob.glob(os.path.join(srv.dir, "backup", "*.bak"))
    # The log now holds only its header.
    assert os.path.getsize(os.path.join(srv.dir, "db.log")) < 1000
    assert put(srv, "c", {"late": {"n": 1000}}).status == 200
    r = srv.request("POST", "/delete", {"collection": "c", "keys": "k0"}, token=token(srv))
    assert r.status == 200, r
    before = get_all(srv, "c")
    r = snapshot(srv)
    assert r.status == 200, r
    baks = glob.glob(os.path.join(srv.dir, "backup", "db.log.snapshot.bin.*.bak"))
    assert len(baks) == 1, baks
    assert put(srv, "c", {"after2": {"n": 2000}}).status == 200
    before["after2"] = get_all(srv, "c", keys=["after2"])["after2"]
    srv.stop()
    srv2 = server(workdir=srv.dir)
    assert get_all(srv2, "c") == before
    assert len(before) == 101
    # maxSize survived snapshot and restart: 3 more documents evict the 2 oldest.
    assert put(srv2, "c", {"m1": {"n": 1}, "m2": {"n": 2}, "m3": {"n": 3}}).status == 200
    after = get_all(srv2, "c")
    assert len(after) == 102, len(after)
    # the keys of one /set object get their _seq in byte order (k0, k1, k10, ...)
    assert "k1" not in after and "k10" not in after and "k2" in after
    srv2.stop()


def test_snapshot_requires_admin():
    need()
    srv = server()
    r = snapshot(srv, tok=reader_token(srv))
    mdbtest.expect_error(r, 403, "Forbidden: snapshot requires admin scope")
    srv.stop()


def test_failed_snapshot_leaves_log_and_data_intact():
    need()
    srv = server()
    assert put(srv, "c", {"k%d" % i: {"n": i} for i in range(50)}).status == 200
    assert snapshot(srv).status == 200
    assert put(srv, "c", {"x%d" % i: {"n": i} for i in range(50)}).status == 200
    time.sleep(0.2)
    log = os.path.join(srv.dir, "db.log")
    snap = os.path.join(srv.dir, "db.log.snapshot.bin")
    log_before = open(log, "rb").read()
    snap_before = open(snap, "rb").read()
    os.mkdir(os.path.join(srv.dir, "db.log.snapshot.bin.tmp"))  # the temp file cannot be made
    r = snapshot(srv)
    body = mdbtest.expect_error(r, 500)
    assert body["error"].startswith("Failed to take snapshot: "), body
    assert open(log, "rb").read() == log_before
    assert open(snap, "rb").read() == snap_before
    # Writes still work and everything survives a restart.
    assert put(srv, "c", {"y": {"n": 7}}).status == 200
    srv.stop()
    os.rmdir(os.path.join(srv.dir, "db.log.snapshot.bin.tmp"))
    srv2 = server(workdir=srv.dir)
    assert len(get_all(srv2, "c")) == 101
    srv2.stop()


def test_writes_during_snapshot_are_kept():
    need()
    srv = server()
    assert put(srv, "big", {"k%d" % i: {"payload": "x" * 200} for i in range(1000)}).status == 200
    tok = token(srv)
    acked, errors, stop = [], [], threading.Event()
    t = threading.Thread(target=_writer, args=(srv, tok, "during", acked, stop, errors))
    t.start()
    for _ in range(3):
        r = snapshot(srv)
        assert r.status == 200, r
    stop.set()
    t.join()
    assert not errors, errors
    assert acked
    srv.stop()
    srv2 = server(workdir=srv.dir)
    have = get_all(srv2, "s", keys=acked)
    assert sorted(have) == sorted(acked)
    assert len(get_all(srv2, "big")) == 1000
    srv2.stop()


def test_sync_writes_survive_sigkill_during_snapshots():
    """Crash at random moments while snapshots compact the log under load."""
    need()
    workdir, acked = crash_rounds(8, writers=4, snapshots=True, window=(0.1, 0.5))
    assert acked
    assert glob.glob(os.path.join(workdir, "backup", "*.bak"))


def recover(srv, *args):
    env = dict(os.environ)
    env["MOLTENDB_MODULE_DIR"] = mdbtest.MODULE_DIR + ":" + mdbtest.FIXTURE_DIR
    return mdbtest.run_binary(["recover", "--config", srv.conf] + list(args), env=env)


def test_recover_to_time():
    need()
    srv = server()
    assert put(srv, "c", {"a%d" % i: {"n": i} for i in range(10)}).status == 200
    assert snapshot(srv).status == 200
    assert put(srv, "c", {"b1": {"n": 1}}).status == 200
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    assert put(srv, "c", {"b2": {"n": 2}}).status == 200
    r = srv.request("POST", "/delete", {"collection": "c", "keys": "a0"}, token=token(srv))
    assert r.status == 200, r
    srv.stop()
    log = os.path.join(srv.dir, "db.log")
    out = os.path.join(srv.dir, "restored.snapshot.bin")
    # Without --snapshot the live snapshot next to the log is the start.
    rc, so, se = recover(srv, "--log", log, "--to-time", str(cut), "--out", out,
                         "--encryption-key", KEY)
    assert rc == 0, (rc, so, se)
    assert "Recovered" in so, so
    assert "starting from the snapshot" in se, se
    assert os.stat(out).st_mode & 0o077 == 0
    # Wrong key: exit code 3; bad usage: 2; existing --out: 1.
    rc, so, se = recover(srv, "--log", log, "--out", out + ".x", "--encryption-key", "nope")
    assert rc == 3, (rc, so, se)
    assert not os.path.exists(out + ".x")
    rc, so, se = recover(srv, "--log", log)
    assert rc == 2, (rc, so, se)
    rc, so, se = recover(srv, "--log", log, "--out", out, "--encryption-key", KEY)
    assert rc == 1, (rc, so, se)
    # Serve the recovered state: the snapshot alone, with an empty log.
    fresh = server(start=False)
    os.replace(out, os.path.join(fresh.dir, "db.log.snapshot.bin"))
    fresh.start()
    docs = get_all(fresh, "c")
    assert sorted(docs) == sorted(["a%d" % i for i in range(10)] + ["b1"]), sorted(docs)
    fresh.stop()


def test_recover_before_the_latest_snapshot_with_keep_logs():
    need()
    srv = server(args=["--keep-logs"])
    assert put(srv, "c", {"a": {"n": 1}}).status == 200
    assert snapshot(srv).status == 200          # S1; the first log is kept
    assert put(srv, "c", {"b": {"n": 2}}).status == 200
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    assert put(srv, "c", {"c": {"n": 3}}).status == 200
    time.sleep(1.1)  # another second: distinct backup names
    assert snapshot(srv).status == 200          # S2; S1 -> .bak, the log after S1 -> .log
    assert put(srv, "c", {"d": {"n": 4}}).status == 200
    srv.stop()
    backup = os.path.join(srv.dir, "backup")
    baks = sorted(glob.glob(os.path.join(backup, "db.log.snapshot.bin.*.bak")))
    logs = sorted(glob.glob(os.path.join(backup, "db.log.*.log")))
    assert len(baks) == 1 and len(logs) == 2, (baks, logs)
    ts = baks[0].split(".")[-2]
    pair = os.path.join(backup, "db.log.%s.log" % ts)
    assert pair in logs, (pair, logs)
    for f in baks + logs:
        assert os.stat(f).st_mode & 0o077 == 0, f
    out = os.path.join(srv.dir, "pitr.bin")
    rc, so, se = recover(srv, "--snapshot", baks[0], "--log", pair, "--to-time", str(cut),
                         "--out", out, "--encryption-key", KEY)
    assert rc == 0, (rc, so, se)
    fresh = server(start=False)
    os.replace(out, os.path.join(fresh.dir, "db.log.snapshot.bin"))
    fresh.start()
    assert sorted(get_all(fresh, "c")) == ["a", "b"], sorted(get_all(fresh, "c"))
    fresh.stop()


def test_recover_changes_the_key():
    need()
    srv = server()
    assert put(srv, "c", {"k%d" % i: {"n": i} for i in range(20)}).status == 200
    srv.stop()
    log = os.path.join(srv.dir, "db.log")
    rotated = os.path.join(srv.dir, "rotated.bin")
    plain = os.path.join(srv.dir, "plain.bin")
    rc, so, se = recover(srv, "--log", log, "--out", rotated, "--encryption-key", KEY,
                         "--out-encryption-key", "the-new-key")
    assert rc == 0, (rc, so, se)
    rc, so, se = recover(srv, "--log", log, "--out", plain, "--encryption-key", KEY,
                         "--out-plaintext")
    assert rc == 0, (rc, so, se)
    assert b'"collection":"c"' in open(plain, "rb").read()
    assert b'"collection":"c"' not in open(rotated, "rb").read()
    # The old key no longer opens the rotated copy; the new one does.
    old = server(start=False)
    os.replace(rotated, os.path.join(old.dir, "db.log.snapshot.bin"))
    old.start(wait=False)
    assert old.wait_exit() != 0
    old.logf.close()
    assert "encryption key does not match" in old.log(), old.log()
    new = server(workdir=old.dir, key="the-new-key")
    assert len(get_all(new, "c")) == 20
    assert put(new, "c", {"after": {"n": 1}}).status == 200
    new.stop()
    new2 = server(workdir=old.dir, key="the-new-key")
    assert len(get_all(new2, "c")) == 21
    new2.stop()
    unenc = server(start=False, key=None, args=["--disable-encryption"])
    os.replace(plain, os.path.join(unenc.dir, "db.log.snapshot.bin"))
    unenc.start()
    assert len(get_all(unenc, "c")) == 20
    unenc.stop()


def test_recover_to_seq_plaintext():
    need()
    srv = server(key=None, args=["--disable-encryption"])
    for i in range(6):
        assert put(srv, "c", {"k%d" % i: {"n": i}}).status == 200
    srv.stop()
    out = os.path.join(srv.dir, "out.bin")
    rc, so, se = recover(srv, "--log", os.path.join(srv.dir, "db.log"), "--to-seq", "4",
                         "--out", out)
    assert rc == 0, (rc, so, se)
    fresh = server(start=False, key=None, args=["--disable-encryption"])
    os.replace(out, os.path.join(fresh.dir, "db.log.snapshot.bin"))
    fresh.start()
    assert sorted(get_all(fresh, "c")) == ["k0", "k1", "k2", "k3"]
    fresh.stop()


mdbtest.main()
