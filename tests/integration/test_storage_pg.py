"""storage-pg against the real binary and a real PostgreSQL (pgtest.py): several
nodes on one shared log. Each test uses its own table prefix in one cluster."""
import itertools
import os
import signal
import threading
import time

import mdbtest
import pgtest
from mdbtest import wait_for

PG = None
_prefix = itertools.count(1)
KEY = "pg-test-encryption-password"


def need():
    if not mdbtest.module_available("storage-pg"):
        mdbtest.skip("storage-pg not built (libpq-dev missing)")
    if not mdbtest.module_available("auth-jwt") or not mdbtest.module_available("query-engine"):
        mdbtest.skip("auth-jwt or query-engine not built")
    global PG
    if PG is None:
        PG = pgtest.Postgres()
    return PG


def new_prefix():
    return "t%d_" % next(_prefix)


MODULES = ["storage-pg", "auth-jwt", "query-engine", "ttl-sweeper"]


class Node(mdbtest.Server):
    def __init__(self, prefix, extra=(), encrypt=False, key=KEY, conninfo=None, more=(), **kw):
        args = ["--pg-conninfo", conninfo or PG.conninfo, "--pg-table-prefix", prefix,
                "--pg-poll-interval-ms", "50"]
        args += ["--encryption-key", key] if encrypt else ["--disable-encryption"]
        super().__init__(modules=MODULES + list(more), args=args + list(extra), **kw)

    def login(self):
        # Argon2id of the root password: slow on a crowded machine.
        if self._token is None:
            r = self.request("POST", "/login", {"username": mdbtest.ROOT_USER,
                                                "password": mdbtest.ROOT_PASSWORD}, timeout=120)
            assert r.status == 200, r
            self._token = r.json["token"]
        return self._token


def nodes(n, prefix=None, **kw):
    prefix = prefix or new_prefix()
    return [Node(prefix, **kw) for _ in range(n)]


def put(srv, coll, data):
    return srv.post("/set", {"collection": coll, "data": data})


def get(srv, coll, key):
    r = srv.post("/get", {"collection": coll, "keys": key})
    return r.json if r.status == 200 else None


def get_all(srv, coll):
    """key -> document (with _v and _seq) of a whole collection."""
    out, offset = {}, 0
    while True:
        r = srv.post("/get", {"collection": coll, "fields": ["_key", "_v", "_seq", "n", "w"],
                              "count": 1000, "offset": offset, "order": "asc"})
        if r.status == 404:
            return out
        assert r.status == 200, r
        for d in r.json:
            out[d["_key"]] = d
        if len(r.json) < 1000:
            return out
        offset += 1000


def same_everywhere(ns, coll, timeout=10.0):
    """Wait until every node holds the same collection; return it."""
    def check():
        views = [get_all(n, coll) for n in ns]
        return views[0] if all(v == views[0] for v in views) else None
    return wait_for(check, timeout, "nodes to agree on %s" % coll)


def in_threads(fn, argsets):
    """Run fn(*args) for every args at once; return when all are done."""
    ts = [threading.Thread(target=fn, args=a) for a in argsets]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def insert_at_once(argsets, coll, n):
    """Writers at once, one per (node, tag), each inserting tag00, tag01 ...
    (n keys) into coll one request at a time; the failed answers."""
    errors = []

    def ins(node, tag):
        for i in range(n):
            r = put(node, coll, {"%s%02d" % (tag, i): {"n": i}})
            if r.status != 200:
                errors.append(r)
    in_threads(ins, argsets)
    return errors


def stop_all(ns):
    for n in ns:
        n.stop()


# ---- tests -------------------------------------------------------------------------
def test_write_on_a_is_readable_on_b_within_100ms():
    need()
    a, b = nodes(2)
    a.login(), b.login()  # (Argon2id: not part of any sample)
    lags = []
    for i in range(40):
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        assert put(src, "c", {"k%d" % i: {"n": i}}).status == 200
        t0 = time.time()
        wait_for(lambda: get(dst, "c", "k%d" % i), 5.0, "k%d on the other node" % i)
        t1 = time.time()
        # The last poll's own cost is the client's, not replication's: on a
        # crowded machine one request takes tens of ms. Take off what the
        # same read costs now that the key is there.
        c0 = time.time()
        assert get(dst, "c", "k%d" % i)
        lags.append(max(0.0, (t1 - t0) - (time.time() - c0)))
        # Read-your-writes on the writing node: no wait at all.
        assert get(src, "c", "k%d" % i) == {"_key": "k%d" % i, "n": i, "_v": 1}
    lags.sort()
    # The typical write must be visible within 100 ms; the machine is shared
    # (and the sanitizer build slow), so the tail only has a looser bound.
    assert lags[len(lags) // 2] < 0.1, lags
    assert lags[len(lags) * 9 // 10] < 0.5, lags
    view = same_everywhere([a, b], "c")
    assert len(view) == 40
    stop_all([a, b])


def test_write_on_a_is_pushed_to_b_ws():
    need()
    if not mdbtest.module_available("ws-push"):
        mdbtest.skip("ws-push not built")
    # python3-websockets and the protocol helpers of the ws-push tests.
    from test_ws_push import connect, recv_json, run
    a, b = nodes(2, more=["ws-push"])
    token = b.login()

    async def main():
        ws = await connect(b, token)
        got = []
        # A's inserts, overwrite, update and delete arrive on B's feed in
        # A's commit order, as B's own writes would.
        assert put(a, "live", {"p": {"n": 1}, "q": {"n": 2}}).status == 200
        assert put(a, "live", {"p": {"n": 3}}).status == 200
        assert a.post("/update", {"collection": "live", "data": {"q": {"m": 1}}}).status == 200
        assert a.post("/delete", {"collection": "live", "keys": ["p"]}).status == 200
        for _ in range(5):
            got.append(await recv_json(ws, 10))
        # And B's own write follows on the same feed.
        assert put(b, "live", {"r": {"n": 4}}).status == 200
        got.append(await recv_json(ws, 10))
        await ws.close()
        return got
    evs = run(main())
    ids = [e.pop("id") for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    ch = lambda k, v: {"collection": "live", "event": "change", "key": k, "new_v": v}
    assert evs == [ch("p", 1), ch("q", 1), ch("p", 2), ch("q", 2), ch("p", None), ch("r", 1)], evs
    stop_all([a, b])


def test_three_nodes_agree_and_encryption_keeps_plaintext_out_of_postgres():
    need()
    prefix = new_prefix()
    ns = nodes(3, prefix=prefix, encrypt=True)
    secret = "very-secret-plaintext-marker"
    for i, n in enumerate(ns):
        assert put(n, "sec", {"s%d" % i: {"w": secret, "n": i}}).status == 200
    view = same_everywhere(ns, "sec")
    assert sorted(view) == ["s0", "s1", "s2"]
    dump = PG.sql("SELECT encode(data, 'escape') FROM %slog" % prefix)
    # (base64 ciphertext may contain any short text: look for JSON context)
    assert "ENC" in dump and secret not in dump and '"sec"' not in dump, dump[:500]
    # A node with another key is refused with a clear error.
    bad = Node(prefix, encrypt=True, key="wrong-key", wait=False)
    assert bad.wait_exit(30) != 0
    assert "encryption key does not match" in bad.log(), bad.log()
    stop_all(ns)


def test_concurrent_v_guarded_writers_exactly_one_wins_per_version():
    need()
    a, b = nodes(2)
    keys = ["x%d" % i for i in range(5)]
    assert put(a, "g", {k: {"n": 0} for k in keys}).status == 200
    same_everywhere([a, b], "g")
    wins = []  # (key, guarded version, writer)
    lock = threading.Lock()
    errors = []

    def writer(node, name):
        try:
            for rnd in range(30):
                k = keys[rnd % len(keys)]
                d = get(node, "g", k)
                v = d["_v"]
                r = node.post("/update", {"collection": "g", "data": {k: {"n": rnd, "w": name,
                                                                           "_v": v}}})
                if r.status == 200:
                    with lock:
                        wins.append((k, v, name))
                elif r.status != 409:
                    errors.append(r)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=writer, args=(n, "%s%d" % (tag, i)))
          for i in range(3) for tag, n in (("a", a), ("b", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:5]
    guarded = [(k, v) for k, v, _ in wins]
    assert len(guarded) == len(set(guarded)), "two writers won the same version"
    view = same_everywhere([a, b], "g")
    for k in keys:
        won = sorted(v for kk, v in guarded if kk == k)
        # Every version from 1 up was won exactly once, and _v counts them.
        assert won == list(range(1, len(won) + 1)), (k, won)
        assert view[k]["_v"] == len(won) + 1, (k, view[k], won)
    assert any(w[2].startswith("a") for w in wins) and any(w[2].startswith("b") for w in wins)
    stop_all([a, b])


def test_seq_strictly_increasing_across_nodes():
    need()
    a, b = nodes(2)
    # Sequential writes alternating between nodes: _seq follows the order.
    for i in range(20):
        assert put((a, b)[i % 2], "s", {"k%02d" % i: {"n": i}}).status == 200
    view = same_everywhere([a, b], "s")
    seqs = [view["k%02d" % i]["_seq"] for i in range(20)]
    assert all(x < y for x, y in zip(seqs, seqs[1:])), seqs
    # Concurrent inserts on both nodes: every _seq is used once, no holes.
    errors = insert_at_once(((a, "a"), (b, "b"), (a, "c"), (b, "d")), "s2", 25)
    assert not errors, errors[:3]
    view = same_everywhere([a, b], "s2")
    seqs = sorted(d["_seq"] for d in view.values())
    assert seqs == list(range(100)), seqs
    # Each writer's own inserts got increasing _seq (acknowledged in order).
    for tag in "abcd":
        mine = [view["%s%02d" % (tag, i)]["_seq"] for i in range(25)]
        assert mine == sorted(mine), (tag, mine)
    stop_all([a, b])


def test_seq_counter_same_on_every_node_and_after_restart():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    # Overwrites keep a document's _seq but use up a counter value; that
    # value is in no document, so the log must carry it to B and to replay.
    keys = ["k%d" % i for i in range(6)]
    errors, puts = [], []
    lock = threading.Lock()

    def writer(node, tag, start):
        for i in range(24):
            k = keys[(start + i * 5) % len(keys)] if i % 3 else "%s%d" % (tag, i)
            r = put(node, "sq", {k: {"n": i, "w": tag}})
            with lock:
                (puts if r.status == 200 else errors).append(r)
    in_threads(writer, ((a, "a", 0), (b, "b", 1), (a, "c", 2)))
    assert not errors, errors[:3]
    # The last batches overwrite: the counter is past every document's _seq.
    for i, n in enumerate((a, b, a, b)):
        assert put(n, "sq", {keys[i]: {"n": -1, "w": "last"}}).status == 200
    view = same_everywhere([a, b], "sq")
    counter = len(puts) + 4
    assert max(d["_seq"] for d in view.values()) < counter - 1, view
    # B restarts from the log; C starts from a checkpoint taken on A.
    b.stop()
    b2 = Node(prefix, workdir=b.dir)
    assert a.post("/snapshot", None).status == 200
    c = Node(prefix)
    assert "from the checkpoint" in c.log() and "replayed 0 records from the checkpoint" not in \
        c.log(), c.log()
    assert same_everywhere([a, b2, c], "sq") == view
    # Every node counts on from the same value: the next insert, wherever
    # it is made, gets the _seq the counter gives.
    for i, n in enumerate((b2, c, a)):
        assert put(n, "sq", {"new%d" % i: {"n": i}}).status == 200
        want = counter + i
        for m in (a, b2, c):
            wait_for(lambda: get(m, "sq", "new%d" % i), 10, "new%d everywhere" % i)
        seqs = [get_all(m, "sq")["new%d" % i]["_seq"] for m in (a, b2, c)]
        assert seqs == [want] * 3, (i, seqs, want)
    stop_all([a, b2, c])


def test_advisory_lock_ordering_and_mixed_nodes_refused():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix, extra=["--pg-ordering", "advisory-lock"])
    errors = insert_at_once(((a, "a"), (b, "b"), (a, "c")), "adv", 20)
    assert not errors, errors[:3]
    view = same_everywhere([a, b], "adv")
    assert sorted(d["_seq"] for d in view.values()) == list(range(60))
    # One batch per write, numbered without holes although no counter row moves.
    assert PG.sql("SELECT count(*), min(seq), max(seq) FROM %slog" % prefix).strip() == "60|1|60"
    assert PG.sql("SELECT seq FROM %sorder" % prefix).strip() == "0"
    # A checkpoint and pruning keep the numbering going.
    assert a.post("/snapshot", None).status == 200
    PG.sql("DELETE FROM %slog" % prefix)
    assert put(b, "adv", {"after": {"n": 1}}).status == 200
    assert PG.sql("SELECT seq FROM %slog" % prefix).strip() == "61"
    wait_for(lambda: get(a, "adv", "after"), 5, "b's write on a")
    # A node that would order with the counter row is refused.
    bad = Node(prefix, wait=False)
    assert bad.wait_exit(30) != 0
    assert "orders batches with advisory-lock" in bad.log(), bad.log()
    stop_all([a, b])


def test_restart_catches_up():
    need()
    a, b = nodes(2)
    assert put(a, "r", {"k0": {"n": 0}}).status == 200
    same_everywhere([a, b], "r")
    b.stop()
    for i in range(1, 30):
        assert put(a, "r", {"k%d" % i: {"n": i}}).status == 200
    r = a.post("/update", {"collection": "r", "data": {"k0": {"n": 100}}})
    assert r.status == 200, r
    r = a.post("/delete", {"collection": "r", "keys": ["k1", "k2"]})
    assert r.status == 200, r
    b2 = Node(b.args[b.args.index("--pg-table-prefix") + 1], workdir=b.dir)
    view = same_everywhere([a, b2], "r", timeout=5)
    assert len(view) == 28 and view["k0"]["_v"] == 2 and view["k0"]["n"] == 100
    # And it goes on following.
    assert put(a, "r", {"late": {"n": 1}}).status == 200
    wait_for(lambda: get(b2, "r", "late"), 5, "late write on the restarted node")
    stop_all([a, b2])


def test_refused_log_insert_is_rolled_back_and_the_node_goes_on():
    """PostgreSQL refusing a batch's row (here a CHECK an operator added)
    fails that write with PostgreSQL's reason, gives its place in the order
    back (no hole, so no node stops on a gap), and leaves the connection
    usable: the next writes succeed and no node holds the refused batch."""
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    assert put(a, "c", {"k0": {"n": 0}}).status == 200
    PG.sql("ALTER TABLE %slog ADD CONSTRAINT small CHECK (records < 5)" % prefix)
    for _ in range(3):  # the same connection, again and again
        r = put(a, "c", {"big%d" % i: {"n": i} for i in range(5)})
        assert r.status == 500, r
        assert 'violates check constraint "small"' in r.json["error"], r.json
        assert put(a, "c", {"k1": {"n": 1}}).status == 200
    assert put(b, "c", {"k2": {"n": 2}}).status == 200
    view = same_everywhere([a, b], "c", timeout=5)
    assert sorted(view) == ["k0", "k1", "k2"], sorted(view)
    assert int(PG.sql("SELECT seq FROM %sorder" % prefix)) == \
        int(PG.sql("SELECT count(*) FROM %slog" % prefix))
    PG.sql("ALTER TABLE %slog DROP CONSTRAINT small" % prefix)
    assert put(a, "c", {"big%d" % i: {"n": i} for i in range(5)}).status == 200
    assert len(same_everywhere([a, b], "c", timeout=5)) == 8
    stop_all([a, b])


def test_sigkill_mid_load_keeps_every_acknowledged_write():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    acked, errors = [], []
    stop = threading.Event()

    def load(tag):
        i = 0
        while not stop.is_set():
            key = "%s%d" % (tag, i)
            try:
                r = a.request("POST", "/set", {"collection": "kill", "data": {key: {"n": i}}},
                              token=a.login(), timeout=5)
                if r.status == 200:
                    acked.append(key)
            except OSError:
                pass  # the node died under this request: not acknowledged
            i += 1
    a.login()
    ts = [threading.Thread(target=load, args=("w%d" % t,)) for t in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: len(acked) >= 100, 30, "100 acknowledged writes")
    a.signal(signal.SIGKILL)
    a.proc.wait()
    stop.set()
    for t in ts:
        t.join()
    assert len(acked) >= 100
    # B has them all, and so has A after a restart.
    view = wait_for(lambda: (lambda v: v if all(k in v for k in acked) else None)(
        get_all(b, "kill")), 10, "acknowledged writes on B")
    a2 = Node(prefix, workdir=a.dir)
    view2 = get_all(a2, "kill")
    missing = [k for k in acked if k not in view2]
    assert not missing, missing[:10]
    assert view2 == same_everywhere([a2, b], "kill")
    assert len(view) >= len(acked)
    stop_all([a2, b])


def test_maxsize_and_ttl_consistent_and_swept_once():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    r = a.post("/set", {"collection": "cap", "data": {"c0": {"n": 0}}, "maxSize": 10})
    assert r.status == 200, r
    errors = insert_at_once(((a, "a"), (b, "b")), "cap", 20)
    assert not errors, errors[:3]
    view = same_everywhere([a, b], "cap")
    assert len(view) == 10, view
    # The survivors are exactly the ten newest inserts.
    assert sorted(d["_seq"] for d in view.values()) == list(range(31, 41)), view
    # TTL: both sweepers race for the expiry; the drop is logged once.
    r = a.post("/set", {"collection": "ttl", "data": {"t0": {"n": 0}}, "ttl": 1})
    assert r.status == 200, r
    assert put(b, "ttl", {"t1": {"n": 1}}).status == 200
    for n in (a, b):
        wait_for(lambda: n.post("/get", {"collection": "ttl", "keys": "t1"}).status == 404, 15,
                 "expiry on every node")
    q = ("SELECT count(*) FROM %slog WHERE position('\"cmd\":\"DROP\"' in "
         "encode(data, 'escape')) > 0" % prefix)
    wait_for(lambda: int(PG.sql(q)) >= 1, 15, "the sweep's drop in the log")
    time.sleep(1.0)  # the other sweeper had its chance
    assert int(PG.sql(q)) == 1, PG.sql(q)
    stop_all([a, b])


def test_new_node_bootstraps_from_checkpoint_and_log_is_pruned():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix, extra=["--pg-prune-grace-s", "2"])
    for i in range(30):
        assert put((a, b)[i % 2], "cp", {"k%d" % i: {"n": i}}).status == 200
    r = b.post("/snapshot", None)
    assert r.status == 200 and r.json["status"] == "ok", r
    assert "checkpoint" in b.log()
    for i in range(30, 40):
        assert put(a, "cp", {"k%d" % i: {"n": i}}).status == 200
    assert a.post("/update", {"collection": "cp", "data": {"k0": {"n": -1}}}).status == 200
    assert a.post("/snapshot", None).status == 200
    time.sleep(2.2)  # past the prune grace: the next checkpoint prunes
    assert a.post("/snapshot", None).status == 200
    for i in range(40, 45):
        assert put(b, "cp", {"k%d" % i: {"n": i}}).status == 200
    # Two checkpoints kept; the log holds only what follows the oldest.
    assert PG.sql("SELECT count(*) FROM %scheckpoint" % prefix).strip() == "2"
    rows = int(PG.sql("SELECT count(*) FROM %slog" % prefix))
    assert rows == 5, rows
    c = Node(prefix)
    assert "from the checkpoint" in c.log()
    view = same_everywhere([a, b, c], "cp")
    assert len(view) == 45 and view["k0"]["n"] == -1 and view["k0"]["_v"] == 2
    assert put(c, "cp", {"fromc": {"n": 1}}).status == 200
    wait_for(lambda: get(a, "cp", "fromc"), 5, "c's write on a")
    stop_all([a, b, c])


def test_postgres_stopped_and_started_mid_load():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    acked, statuses = [], []
    stop = threading.Event()
    lock = threading.Lock()

    def load(node, tag):
        i = 0
        while not stop.is_set():
            key = "%s%d" % (tag, i)
            try:
                r = put(node, "load", {key: {"n": i}})
                with lock:
                    statuses.append(r.status)
                    if r.status == 200:
                        acked.append(key)
                    elif r.status != 503:
                        raise AssertionError(r)
            except OSError:
                pass
            i += 1
            time.sleep(0.005)
    ts = [threading.Thread(target=load, args=(n, t)) for n, t in ((a, "a"), (b, "b"))]
    for t in ts:
        t.start()
    wait_for(lambda: len(acked) >= 30, 30, "writes before the outage")
    PG.stop()
    try:
        # Writes are refused with a clear error; reads go on from memory.
        r = wait_for(lambda: (lambda r: r if r.status == 503 else None)(
            put(a, "load", {"during": {"n": 0}})), 10, "503 while PostgreSQL is down")
        body = mdbtest.expect_error(r, 503)
        assert "PostgreSQL" in body["error"], body
        assert get(a, "load", acked[0]) is not None
        time.sleep(0.5)
    finally:
        PG.start()
    n_before = len(acked)
    wait_for(lambda: len(acked) >= n_before + 30, 30, "writes after PostgreSQL came back")
    stop.set()
    for t in ts:
        t.join()
    assert 503 in statuses
    view = same_everywhere([a, b], "load", timeout=15)
    missing = [k for k in acked if k not in view]
    assert not missing, missing[:10]
    # The tail reconnected by itself: a write on A alone reaches B.
    assert put(a, "load", {"after": {"n": 1}}).status == 200
    wait_for(lambda: get(b, "load", "after"), 5, "a's write on b after the restart")
    stop_all([a, b])


def jti_of(token):
    import base64
    import json
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["jti"]


def test_token_revoked_on_a_is_refused_on_every_node():
    need()
    prefix = new_prefix()
    a, b = nodes(2, prefix=prefix)
    r = a.post("/auth/delegate", {"client_id": "svc", "scopes": ["read:*:*"]})
    assert r.status == 200, r
    tok = r.json["token"]
    jti = jti_of(tok)
    assert put(a, "rv", {"k": {"n": 1}}).status == 200
    wait_for(lambda: b.request("POST", "/get", {"collection": "rv", "keys": "k"},
                               token=tok).status == 200, 5, "the token working on b")
    r = a.request("DELETE", "/auth/tokens/" + jti, token=a.login())
    assert r.status == 200, r
    t0 = time.time()
    r = wait_for(lambda: (lambda r: r if r.status == 401 else None)(
        b.request("POST", "/get", {"collection": "rv", "keys": "k"}, token=tok)), 5,
        "the revocation on b")
    lag = time.time() - t0
    mdbtest.expect_error(r, 401, "Token has been revoked")
    assert lag < 1.0, lag
    # A node started afterwards knows it too (from the log), and the
    # revocations' collection is out of reach of HTTP routes.
    c = Node(prefix)
    mdbtest.expect_error(c.request("POST", "/get", {"collection": "rv", "keys": "k"}, token=tok),
                         401, "Token has been revoked")
    r = c.post("/get", {"collection": "@auth-jwt/revoked"})
    assert r.status == 400, r
    stop_all([a, b, c])


def main():
    try:
        mdbtest.main()
    finally:
        if PG is not None:
            PG.destroy()


if __name__ == "__main__":
    main()
