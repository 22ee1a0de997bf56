"""Graceful stop under fault injection: SIGTERM while clients write, with an
LD_PRELOAD shim (tests/shims/epoll_delay.c) that delays the main thread's
epoll_ctl(EPOLL_CTL_DEL) by 3 ms -- the window in which libmicrohttpd
0.9.75's MHD_quiesce_daemon aborts the process. Every cycle must exit 0, and
every write acknowledged before or during the stop (async mode, so only the
shutdown flush makes it durable) must be there after a restart.

MDB_SHUTDOWN_CYCLES sets the number of cycles (default 12; more by hand)."""
import os
import random
import signal
import tempfile
import threading
import time

import mdbtest

SHIM = os.path.join(mdbtest.FIXTURE_DIR, "epoll_delay.so")
AUTH = "auth-jwt" if mdbtest.module_available("auth-jwt") else "test-auth"


def need():
    for m in ("storage-wal", "query-engine"):
        if not mdbtest.module_available(m):
            mdbtest.skip(m + " not built")
    if AUTH == "test-auth" and not mdbtest.module_available("test-auth", mdbtest.FIXTURE_DIR):
        mdbtest.skip("no auth module built")
    assert os.path.exists(SHIM), "shim not built: " + SHIM


def server(workdir=None, shim_log=None):
    env = {}
    if shim_log:
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env = {"LD_PRELOAD": SHIM, "MDB_SHIM_EPOLL_LOG": shim_log,
               # the sanitizer build wants its runtime first; the shim is harmless
               "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
    # A long flush interval: acknowledged async writes reach the disk only
    # through the shutdown flush.
    return mdbtest.Server(modules=["storage-wal", AUTH, "query-engine"],
                          args=["--write-mode", "async", "--flush-interval-ms", "1000",
                                "--threads", "4"],
                          workdir=workdir, auth=(AUTH == "auth-jwt"), env=env,
                          module_dir=mdbtest.MODULE_DIR + ":" + mdbtest.FIXTURE_DIR)


def token(srv):
    return srv.login() if AUTH == "auth-jwt" else "admin-token"


def writer(srv, tok, prefix, acked, errors):
    i = 0
    while True:
        key = "%s_%d" % (prefix, i)
        i += 1
        try:
            r = srv.request("POST", "/set", {"collection": "s", "data": {key: {"n": i}}},
                            token=tok, timeout=10)
        except Exception:
            return  # refused or cut by the stop: not acknowledged
        if r.status == 200:
            acked.append(key)
        elif r.status != 503:
            errors.append(r)
            return


def missing_keys(srv, keys):
    tok = token(srv)
    have = set()
    for i in range(0, len(keys), 1000):
        r = srv.request("POST", "/get", {"collection": "s", "keys": keys[i:i + 1000],
                                         "fields": ["_key"], "count": 1000}, token=tok)
        if r.status == 404:
            continue
        assert r.status == 200, r
        have.update(d["_key"] for d in r.json)
    return [k for k in keys if k not in have]


def test_sigterm_under_epoll_delay_never_aborts_nor_loses_writes():
    need()
    cycles = int(os.environ.get("MDB_SHUTDOWN_CYCLES", "8"))
    workdir = tempfile.mkdtemp(prefix="mdbtest-")
    acked = []
    aborts = lost = 0
    for cycle in range(cycles + 1):
        shim_log = os.path.join(workdir, "shim-%d.log" % cycle)
        srv = server(workdir, shim_log)
        # Every write acknowledged in the earlier cycles must be here.
        gone = missing_keys(srv, list(acked))
        lost += len(gone)
        print("cycle %d: %d acknowledged so far, %d lost %r" % (cycle, len(acked), len(gone),
                                                                gone[:3]), flush=True)
        with open(shim_log) as f:
            assert f.read().startswith("l"), "the epoll_ctl shim was not loaded"
        if cycle == cycles:
            srv.stop()
            break
        tok = token(srv)
        errors = []
        threads = [threading.Thread(target=writer,
                                    args=(srv, tok, "c%d_t%d" % (cycle, t), acked, errors))
                   for t in range(6)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.2, 0.5))
        srv.signal(signal.SIGTERM)
        rc = srv.wait_exit(60)
        for t in threads:
            t.join()
        srv.logf.close()
        log = srv.log()
        if rc != 0:
            aborts += 1
            print("cycle %d: exit %s\n%s" % (cycle, rc, log[-2000:]), flush=True)
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log
        assert not errors, errors[:3]
    assert aborts == 0 and lost == 0, "%d aborts, %d acknowledged writes lost in %d cycles" % (
        aborts, lost, cycles)
    assert len(acked) > cycles * 10, len(acked)


if __name__ == "__main__":
    mdbtest.main()
