#!/usr/bin/env python3
"""Query bombs against the real server: do they stay bounded, and does
/system/health stay responsive while the worst accepted queries run?

    python3 bench/query/bombs.py [--bin build/moltendb] [--seconds 10] [--clients 4]

1. Loads 10,000 documents (storage-memory, dev mode, default threads).
2. Sends the bombs of issue 9 (a $or of 30,000 leaves, $in with 200,000
   strings, fields with 300,000 names, sort with 200,000 specs, an array
   insert of 1,000,000 empty documents) and records status and time.
3. Runs --clients threads sending the largest queries the limits accept
   (README "Limits": a $or of 250 conditions, $in of 10,000 strings,
   fields of 1,024 names, 32 sort specs) for --seconds, while a prober
   sends GET /system/health every 20 ms on its own connection; reports
   health latency (p50 / p99 / max) next to an idle baseline.

Results go to bench/results/query-bombs-<stamp>.md. Standard library only.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mdbtest import free_port  # noqa: E402  (one free-port helper for tests and benchmarks)


class Client:
    def __init__(self, port, token=None):
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method, path, body=None):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        data = json.dumps(body).encode() if body is not None else None
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=h)
            r = self.conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        return r.status, payload, (time.perf_counter() - t0) * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def probe(port, stop, out):
    c = Client(port)
    while not stop.is_set():
        try:
            st, _, ms = c.call("GET", "/system/health")
            out.append(ms if st == 200 else 1e9)
        except OSError:
            out.append(1e9)
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "moltendb"))
    ap.add_argument("--modules", default=os.path.join(ROOT, "build", "modules"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="mdb-bombs-")
    conf = os.path.join(work, "moltendb.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n")
    port = free_port()
    log = open(os.path.join(work, "server.log"), "wb")
    srv = subprocess.Popen([a.bin, "--config", conf, "--module-dir", a.modules, "--host",
                            "127.0.0.1", "--port", str(port), "--dev-mode", "--db-path",
                            os.path.join(work, "db.log"), "--jwt-secret", SECRET, "--root-user",
                            "root", "--root-password", "bench-root-password",
                            "--rate-limit-requests", "100000000"], stdout=log, stderr=log, cwd=work)
    lines = []
    try:
        for _ in range(200):
            try:
                if Client(port).call("GET", "/system/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        st, body, _ = Client(port).call("POST", "/login", {"username": "root",
                                                            "password": "bench-root-password"})
        token = json.loads(body)["token"]
        c = Client(port, token)
        words = ["alpha", "Beta", "gamma", "DELTA", "eps"]
        for b in range(10):
            data = {"d%05d" % (b * 1000 + i): {"n": i, "s": words[i % 5], "o": {"x": i % 7},
                                               "tags": [words[(i + 1) % 5]]} for i in range(1000)}
            assert c.call("POST", "/set", {"collection": "big", "data": data})[0] == 200

        bombs = [
            ("$or of 30,000 leaves", {"collection": "big", "where": {
                "$or": [{"n": i} for i in range(30000)]}}),
            ("$in of 200,000 strings", {"collection": "big", "where": {
                "s": {"$in": ["w%d" % i for i in range(200000)]}}}),
            ("fields of 300,000 names", {"collection": "big", "keys": "d00001",
                                         "fields": ["f%d" % i for i in range(300000)]}),
            ("sort of 200,000 specs", {"collection": "big", "sort": ["f%d" % i for i in range(200000)]}),
        ]
        lines.append("## Bombs (issue 9 items 5, 6, 11)\n")
        lines.append("| request | status | ms | reply |")
        lines.append("|---|---:|---:|---|")
        for name, body in bombs:
            st, payload, ms = c.call("POST", "/get", body)
            lines.append("| %s | %d | %.0f | %s |" % (name, st, ms, payload[:90].decode()))
        st, payload, ms = c.call("POST", "/set", {"collection": "amp", "data": [{}] * 1000000})
        lines.append("| array insert of 1,000,000 documents | %d | %.0f | %s |"
                     % (st, ms, payload[:90].decode()))

        accepted = [
            ("$or of 250 equalities (one hashed set)", {"collection": "big", "count": 10, "where": {
                "$or": [{"n": 5000 + i} for i in range(250)]}}),
            ("$or of 250 range conditions", {"collection": "big", "count": 10, "where": {
                "$or": [{"o.x": {"$gt": 100 + i}} for i in range(250)]}}),
            ("$in of 10,000 strings", {"collection": "big", "count": 10, "where": {
                "s": {"$in": ["w%d" % i for i in range(9999)] + ["alpha"]}}}),
            ("fields of 1,024 names", {"collection": "big", "count": 1000,
                                       "fields": ["f%d" % i for i in range(1022)] + ["n", "o.x"]}),
            ("32 sort specs", {"collection": "big", "count": 10,
                               "sort": ["f%d" % i for i in range(31)] + ["n"]}),
        ]
        lines.append("\n## Largest accepted queries (10,000 documents), one at a time\n")
        lines.append("| query | status | median ms (5 runs) |")
        lines.append("|---|---:|---:|")
        for name, body in accepted:
            times = []
            for _ in range(5):
                st, _, ms = c.call("POST", "/get", body)
                times.append(ms)
            lines.append("| %s | %d | %.1f |" % (name, st, statistics.median(times)))

        idle = []
        stop = threading.Event()
        t = threading.Thread(target=probe, args=(port, stop, idle))
        t.start()
        time.sleep(min(3, a.seconds))
        stop.set()
        t.join()

        busy, done = [], []
        stop = threading.Event()

        def hammer(i):
            cc = Client(port, token)
            body = accepted[i % len(accepted)][1]
            while not stop.is_set():
                try:
                    done.append(cc.call("POST", "/get", body)[2])
                except OSError:
                    pass
        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(a.clients)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        t = threading.Thread(target=probe, args=(port, stop, busy))
        t.start()
        time.sleep(a.seconds)
        stop.set()
        t.join()
        for w in workers:
            w.join()
        lines.append("\n## /system/health while %d clients send those queries for %.0f s\n"
                     % (a.clients, a.seconds))
        lines.append("| phase | probes | p50 ms | p99 ms | max ms |")
        lines.append("|---|---:|---:|---:|---:|")
        for name, xs in (("idle", idle), ("under the heaviest accepted queries", busy)):
            lines.append("| %s | %d | %.2f | %.2f | %.2f |"
                         % (name, len(xs), pct(xs, 0.5), pct(xs, 0.99), max(xs)))
        lines.append("\nheavy queries completed: %d (median %.1f ms)"
                     % (len(done), statistics.median(done) if done else float("nan")))
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = os.path.join(ROOT, "bench", "results", "query-bombs-%s.md" % stamp)
    head = ["# query bombs, %s UTC" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "",
            "Machine: nproc %d; server: default threads (one per CPU), storage-memory, dev mode; "
            "`python3 bench/query/bombs.py --seconds %g --clients %d`. Shared, noisy machine." %
            (os.cpu_count(), a.seconds, a.clients), ""]
    with open(out, "w") as f:
        f.write("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))
    print("written to", out)


if __name__ == "__main__":
    sys.exit(main())
