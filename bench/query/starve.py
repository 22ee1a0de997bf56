#!/usr/bin/env python3
"""Do slow queries hold up cheap requests? (issue 9 item 5)

    python3 bench/query/starve.py --variant before=/tmp/old-build \\
        --variant after=build [--rounds 3] [--seconds 10] [--clients 4]

Each variant is a build folder (moltendb and modules/). Rounds run the
variants interleaved (A, B, A, B...), so that the load of a shared machine
hits them alike. One round of one variant: a server (storage-memory, dev
mode, --threads 2) gets --docs documents with a 1 KB text; --clients
threads send, back to back, a query of 250 substring searches none of
which matches (every document is tested against all of them: seconds per
query); meanwhile two probers send, every 50 ms and each time on a new
connection (as a load balancer's health check does), GET /system/health
and a read by key (POST /get with "keys"). Latencies are aggregated per
variant over the rounds: p50 / p99 / max, and the slow queries completed.
A probe that fails or takes over 30 s counts as 30 s.

Results go to bench/results/starve-<stamp>.md. Standard library only.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
PASSWORD = "bench-root-password"
TEXT = "lorem ipsum dolor " * 60
SLOW = {"collection": "big", "count": 10,
        "where": {"$or": [{"t": {"$contains": "zq%dzq" % i}} for i in range(250)]}}
FAIL_MS = 30000.0

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mdbtest import free_port  # noqa: E402


def call(port, method, path, body=None, token=None, conn=None, timeout=30):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                  headers=h)
        r = c.getresponse()
        payload = r.read()
        return r.status, payload, (time.perf_counter() - t0) * 1000
    finally:
        if own:
            c.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def one_round(folder, a):
    work = tempfile.mkdtemp(prefix="mdb-starve-")
    conf = os.path.join(work, "moltendb.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n")
    port = free_port()
    log = open(os.path.join(work, "server.log"), "wb")
    srv = subprocess.Popen([os.path.join(folder, "moltendb"), "--config", conf, "--module-dir",
                            os.path.join(folder, "modules"), "--host", "127.0.0.1", "--port",
                            str(port), "--dev-mode", "--threads", "2", "--db-path",
                            os.path.join(work, "db.log"), "--jwt-secret", SECRET,
                            "--root-user", "root", "--root-password", PASSWORD,
                            "--rate-limit-requests", "100000000", "--shutdown-timeout", "1"],
                           stdout=log, stderr=log, cwd=work)
    out = {"health": [], "key": [], "slow": []}
    try:
        for _ in range(200):
            try:
                if call(port, "GET", "/system/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        token = json.loads(call(port, "POST", "/login",
                                {"username": "root", "password": PASSWORD})[1])["token"]
        for b in range(0, a.docs, 1000):
            data = {"d%06d" % i: {"n": i, "t": TEXT + str(i)}
                    for i in range(b, min(a.docs, b + 1000))}
            assert call(port, "POST", "/set", {"collection": "big", "data": data}, token)[0] == 200
        stop = threading.Event()

        def hammer():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            while not stop.is_set():
                try:
                    st, _, ms = call(port, "POST", "/get", SLOW, token, conn=c)
                    if st == 404:
                        out["slow"].append(ms)
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.close()

        def probe(name, method, path, body, tok):
            while not stop.is_set():
                try:
                    st, _, ms = call(port, method, path, body, tok)
                    out[name].append(ms if st == 200 else FAIL_MS)
                except (OSError, http.client.HTTPException):
                    out[name].append(FAIL_MS)
                time.sleep(0.05)

        hs = [threading.Thread(target=hammer) for _ in range(a.clients)]
        for h in hs:
            h.start()
        time.sleep(0.5)
        ps = [threading.Thread(target=probe, args=("health", "GET", "/system/health", None, None)),
              threading.Thread(target=probe, args=("key", "POST", "/get",
                                                   {"collection": "big", "keys": "d000007"},
                                                   token))]
        for p in ps:
            p.start()
        time.sleep(a.seconds)
        stop.set()
        for t in ps + hs:
            t.join()
    finally:
        srv.kill()  # not a shutdown benchmark: queued slow queries are not waited for
        srv.wait()
        log.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", required=True,
                    help="label=build-folder (holding moltendb and modules/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--docs", type=int, default=3000)
    a = ap.parse_args()
    variants = [(l, os.path.abspath(f)) for l, f in (v.split("=", 1) for v in a.variant)]
    load_before = os.getloadavg()
    agg = {label: {"health": [], "key": [], "slow": []} for label, _ in variants}
    for rnd in range(a.rounds):
        for label, folder in variants:
            r = one_round(folder, a)
            for k in r:
                agg[label][k] += r[k]
            print("round %d %s: health p99 %.1f ms, key p99 %.1f ms, slow queries %d"
                  % (rnd + 1, label, pct(r["health"], 0.99), pct(r["key"], 0.99), len(r["slow"])),
                  flush=True)
    load_after = os.getloadavg()
    lines = ["# slow queries against cheap requests, %s UTC"
             % time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "",
             "Machine: nproc %d, load average %.1f / %.1f / %.1f before, %.1f / %.1f / %.1f after "
             "(shared with other work). Server: storage-memory, dev mode, --threads 2; %d "
             "documents with a 1 KB text." % ((os.cpu_count(),) + load_before + load_after +
                                              (a.docs,)),
             "`python3 bench/query/starve.py %s --rounds %d --seconds %g --clients %d --docs %d`, "
             "variants interleaved per round." % (" ".join("--variant " + v for v in a.variant),
                                                  a.rounds, a.seconds, a.clients, a.docs), "",
             "%d clients send, back to back, a query of 250 substring searches that matches "
             "nothing (seconds each); probes every 50 ms on new connections. Failed probes "
             "count as %.0f ms." % (a.clients, FAIL_MS), "",
             "| variant | probe | n | p50 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|---:|"]
    for label, _ in variants:
        for k, name in (("health", "GET /system/health"), ("key", "POST /get by key")):
            xs = agg[label][k]
            lines.append("| %s | %s | %d | %.1f | %.1f | %.1f |"
                         % (label, name, len(xs), pct(xs, 0.5), pct(xs, 0.99), max(xs or [0])))
    lines += ["", "| variant | slow queries completed | median ms |", "|---|---:|---:|"]
    for label, _ in variants:
        xs = agg[label]["slow"]
        lines.append("| %s | %d | %.0f |" % (label, len(xs), pct(xs, 0.5)))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = os.path.join(ROOT, "bench", "results", "starve-%s.md" % stamp)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("written to", path)


if __name__ == "__main__":
    sys.exit(main())
