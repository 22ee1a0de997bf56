#!/usr/bin/env python3
"""Metrics benchmark (issue 11), measured like ../shared/bench (server pinned
to CPU 1, `taskset -c 0 wrk -t1 -c32`, keep-alive, medians of several runs).

1. POST /get by key on 100,000 documents: moltendb without the metrics
   module vs with it loaded AND scraped (GET /metrics) once a second during
   the run. Both servers run in the same session and their repetitions are
   interleaved, so the ratio is fair on a noisy machine. Target >= 0.97.
2. The time of one scrape (GET /metrics, client side, keep-alive) of a
   server holding 1,000,000 documents. Target < 10 ms.

Usage: python3 bench/metrics/run.py [--reps 5] [--duration 10s] [--skip-build]
       [--docs 1000000]
Results: bench/results/metrics-<stamp>.md (and .raw.log with wrk's output).
Reuses the query benchmark's helpers (bench/query/run.py) and wrk scripts.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "query"))
import run as q  # noqa: E402  (bench/query/run.py)

SECRET = "bench-secret-0123456789abcdef0123456789"


def start_server(work, name, modules, port, cpus, threads, extra=()):
    conf = os.path.join(work, "%s.conf" % name)
    with open(conf, "w") as f:
        for m in modules:
            f.write("module = %s\n" % m)
    log = open(os.path.join(work, "%s.log" % name), "wb")
    p = q.start([os.path.join(q.BUILD, "moltendb"), "--config", conf, "--module-dir",
                 os.path.join(q.BUILD, "modules"), "--dev-mode", "--host", "127.0.0.1",
                 "--port", str(port), "--threads", threads, "--jwt-secret", SECRET,
                 "--root-user", "bench", "--root-password", "bench-password",
                 "--rate-limit-requests", "1000000000", "--cors-origin", "http://localhost"]
                + list(extra), cpus, log)
    q.wait_port(port)
    st, body = q.post(port, "/login", {"username": "bench", "password": "bench-password"})
    return p, json.loads(body)["token"]


class Scraper(threading.Thread):
    """GET /metrics once a second until stopped; keeps each scrape's time."""

    def __init__(self, port, token):
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.halt = threading.Event()
        self.times, self.failures = [], 0

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.halt.wait(1.0):
            t0 = time.perf_counter()
            try:
                c.request("GET", "/metrics", headers={"Authorization": "Bearer " + self.token})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.times.append((time.perf_counter() - t0) * 1000)
        c.close()


def scrape_times(port, token, n=50):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, r.status
        out.append((time.perf_counter() - t0) * 1000)
        size = len(body)
        time.sleep(0.02)
    c.close()
    return out, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--docs", type=int, default=1000000)
    ap.add_argument("--skip-build", action="store_true")
    a = ap.parse_args()
    if not a.skip_build:
        q.sh(["cmake", "-S", q.ROOT, "-B", q.BUILD, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
             stdout=q.subprocess.DEVNULL)
        q.sh(["cmake", "--build", q.BUILD, "-j2"], stdout=q.subprocess.DEVNULL)
    os.makedirs(q.RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    raw = open(os.path.join(q.RESULTS, "metrics-%s.raw.log" % stamp), "w")
    work = tempfile.mkdtemp(prefix="mdbbench-metrics-")
    base_mods = ["storage-memory", "auth-jwt", "query-engine"]
    res = {"without": [], "with": []}
    scrapes = []
    try:
        # 1. with vs without, pinned, interleaved
        pa, pb = q.free_port(), q.free_port()
        _, ta = start_server(work, "without", base_mods, pa, "1", "1")
        _, tb = start_server(work, "with", base_mods + ["metrics"], pb, "1", "1")
        q.load(pa, ta)
        q.load(pb, tb)
        print("loaded 100,000 documents into both servers", flush=True)
        for rep in range(a.reps):
            res["without"].append(q.wrk(pa, "get_key.lua", "pinned", a.duration,
                                        {"MDB_TOKEN": ta}, raw))
            s = Scraper(pb, tb)
            s.start()
            res["with"].append(q.wrk(pb, "get_key.lua", "pinned", a.duration,
                                     {"MDB_TOKEN": tb}, raw))
            s.halt.set()
            s.join()
            scrapes.append((len(s.times), s.failures))
            print("rep %d: without %.0f req/s, with (scraped %d times) %.0f req/s" % (
                rep + 1, res["without"][-1]["rps"], len(s.times), res["with"][-1]["rps"]),
                flush=True)
        q.stop_all()
        q.PROCS.clear()
        # 2. scrape time at 1,000,000 documents
        pc = q.free_port()
        big, tc = start_server(work, "big", base_mods + ["metrics", "ttl-sweeper"], pc, "1", "1")
        t0 = time.time()
        q.load(pc, tc, n=a.docs)
        print("loaded %d documents in %.0f s" % (a.docs, time.time() - t0), flush=True)
        times, size = scrape_times(pc, tc)
        q.stop_all()
        q.PROCS.clear()
    finally:
        q.stop_all()
        raw.close()
    wo, wi = q.med(res["without"], "rps"), q.med(res["with"], "rps")
    ratio = wi / wo
    out = ["# moltendb metrics benchmark, %s UTC\n" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "Machine: nproc %d; %s. `bench/metrics/run.py --reps %d --duration %s`: server on CPU 1 "
           "(`--threads 1`), `taskset -c 0 wrk -t1 -c32`, POST /get by key over 100,000 "
           "documents (storage-memory, auth-jwt, query-engine), repetitions interleaved. "
           "Raw output: `metrics-%s.raw.log`.\n" % (os.cpu_count(), os.uname().release, a.reps,
                                                    a.duration, stamp),
           "| server | req/s (median) | p50 ms | p99 ms | errors | runs (req/s) |",
           "|---|---:|---:|---:|---:|---|"]
    for key, label in (("without", "without the metrics module"),
                       ("with", "with metrics, GET /metrics every second")):
        out.append("| %s | %.0f | %.3f | %.3f | %d | %s |" % (
            label, q.med(res[key], "rps"), q.med(res[key], "p50"), q.med(res[key], "p99"),
            sum(s["errors"] for s in res[key]), ", ".join("%.0f" % s["rps"] for s in res[key])))
    out.append("")
    out.append("- ratio with/without: **%.3f** (target >= 0.97); scrapes during the runs: %s "
               "(count, failures per run)" % (ratio, scrapes))
    out.append("- scrape of a server holding %d documents (client side, keep-alive, %d scrapes, "
               "%d bytes): median **%.2f ms**, p90 %.2f ms, max %.2f ms (target < 10 ms)" % (
                   a.docs, len(times), size, statistics.median(times),
                   sorted(times)[int(len(times) * 0.9) - 1], max(times)))
    text = "\n".join(out) + "\n"
    path = os.path.join(q.RESULTS, "metrics-%s.md" % stamp)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print("written to", path)


if __name__ == "__main__":
    try:
        main()
    finally:
        q.stop_all()
