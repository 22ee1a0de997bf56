#!/usr/bin/env python3
"""Query benchmark for moltendb (issue 4), measured like ../shared/bench:
server pinned to CPU 1, `taskset -c 0 wrk -t1 -c32` (pinned) or no taskset
with `wrk -t2 -c64` (unpinned), medians of several runs, keep-alive.

It builds a Release tree (build-bench/), starts a minimal libmicrohttpd
"ceiling" server (bench/ceiling.c) and moltendb with storage-memory, loads
100,000 documents of ~200 bytes, and measures in the same run:
  - POST /get by key: req/s, p50, p99, next to the ceiling (ratio)
  - a where query matching 1% (one client): p50, p99
  - a sorted query with count 10 (one client): p50, p99
  - /set of one document (one client: p50; 32 clients: req/s)
  - /set of a 1,000-document batch (one client): p50
Results: bench/results/query-<stamp>.md (and .raw.log with wrk's output).

Usage: python3 bench/query/run.py [--reps 3] [--duration 10s] [--skip-build]
Everything listens on 127.0.0.1 only; every process is stopped on exit.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LUA = os.path.join(ROOT, "bench", "query", "lua")
BUILD = os.path.join(ROOT, "build-bench")
RESULTS = os.path.join(ROOT, "bench", "results")
PROCS = []

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mdbtest import free_port  # noqa: E402  (one free-port helper for tests and benchmarks)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def start(cmd, cpus, log):
    p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=log, stderr=subprocess.STDOUT)
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_port(port, timeout=30):
    t = time.time() + timeout
    while time.time() < t:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def post(port, path, body, token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    c.request("POST", path, json.dumps(body), h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def doc(n, groups=100):
    return {"name": "item-%d" % n, "group": n % groups, "price": (n * 7919) % 100000,
            "in_stock": n % 2 == 0, "tags": ["alpha", "beta"],
            "description": "a benchmark document of about two hundred bytes",
            "rating": (n % 5) + 0.5, "sku": "SKU-%08d" % n}


def load(port, token, n=100000, batch=1000):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for start_n in range(1, n + 1, batch):
        data = {"k%d" % i: doc(i) for i in range(start_n, min(n, start_n + batch - 1) + 1)}
        c.request("POST", "/set", json.dumps({"collection": "bench", "data": data}),
                  {"Content-Type": "application/json", "Authorization": "Bearer " + token})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("load failed: %d %s" % (r.status, body[:200]))
    c.close()


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(val) * UNITS[unit]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors}


def wrk(port, script, mode, duration, env, raw, conns=None):
    if mode == "pinned":
        cmd = ["taskset", "-c", "0", "wrk", "-t1", "-c%d" % (conns or 32)]
    else:
        cmd = ["wrk", "-t2", "-c%d" % (conns or 64)]
    if conns == 1:
        cmd = (["taskset", "-c", "0"] if mode == "pinned" else []) + ["wrk", "-t1", "-c1"]
    cmd += ["-d", duration, "--latency", "-s", os.path.join(LUA, script),
            "http://127.0.0.1:%d" % port]
    e = dict(os.environ)
    e.update(env)
    e["MDB_LUA_DIR"] = LUA
    out = subprocess.run(cmd, capture_output=True, text=True, env=e).stdout
    raw.write("$ %s %s\n%s\n" % (" ".join("%s=%s" % kv for kv in env.items()), " ".join(cmd), out))
    raw.flush()
    return parse_wrk(out)


def med(samples, key):
    vals = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--modes", default="pinned,unpinned")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sh(["apt-get", "install", "-y", "-qq", "wrk"])
    if not a.skip_build:
        sh(["cmake", "-S", ROOT, "-B", BUILD, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], stdout=subprocess.DEVNULL)
        sh(["cmake", "--build", BUILD, "-j2"], stdout=subprocess.DEVNULL)
        sh(["cc", "-O2", "-o", os.path.join(BUILD, "ceiling"), os.path.join(ROOT, "bench", "ceiling.c"),
            "-lmicrohttpd"])
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    raw = open(os.path.join(RESULTS, "query-%s.raw.log" % stamp), "w")
    work = tempfile.mkdtemp(prefix="mdbbench-")
    rows = []
    try:
        for mode in a.modes.split(","):
            threads = "1" if mode == "pinned" else "2"
            cpus = "1" if mode == "pinned" else "0,1"
            cport, mport = free_port(), free_port()
            log = open(os.path.join(work, "server-%s.log" % mode), "wb")
            start([os.path.join(BUILD, "ceiling"), "-p", str(cport), "-t", threads], cpus, log)
            conf = os.path.join(work, "bench.conf")
            with open(conf, "w") as f:
                f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n")
            srv = start([os.path.join(BUILD, "moltendb"), "--config", conf, "--module-dir",
                         os.path.join(BUILD, "modules"), "--dev-mode", "--host", "127.0.0.1",
                         "--port", str(mport), "--threads", threads, "--jwt-secret",
                         "bench-secret-0123456789abcdef0123456789", "--root-user", "bench",
                         "--root-password", "bench-password", "--rate-limit-requests", "1000000000",
                         "--cors-origin", "http://localhost"], cpus, log)
            wait_port(cport)
            wait_port(mport)
            st, body = post(mport, "/login", {"username": "bench", "password": "bench-password"})
            token = json.loads(body)["token"]
            t0 = time.time()
            load(mport, token)
            print("[%s] loaded 100,000 documents in %.1f s" % (mode, time.time() - t0), flush=True)
            env = {"MDB_TOKEN": token}
            res = {k: [] for k in ("ceiling", "get_key", "where", "sorted", "set1", "set1c", "set1000")}
            for rep in range(a.reps):
                res["ceiling"].append(wrk(cport, "get_key.lua", mode, a.duration, env, raw))
                res["get_key"].append(wrk(mport, "get_key.lua", mode, a.duration, env, raw))
                if mode == "pinned":
                    res["where"].append(wrk(mport, "get_where.lua", mode, a.duration, env, raw, conns=1))
                    res["sorted"].append(wrk(mport, "get_sorted.lua", mode, a.duration, env, raw, conns=1))
                    res["set1"].append(wrk(mport, "set_docs.lua", mode, a.duration, env, raw, conns=1))
                    res["set1c"].append(wrk(mport, "set_docs.lua", mode, a.duration, env, raw))
                    res["set1000"].append(wrk(mport, "set_docs.lua", mode, a.duration,
                                              dict(env, MDB_BATCH="1000"), raw, conns=1))
                print("[%s] rep %d: ceiling %.0f req/s, get_key %.0f req/s" % (
                    mode, rep + 1, res["ceiling"][-1]["rps"], res["get_key"][-1]["rps"]), flush=True)
            rss = 0
            with open("/proc/%d/status" % srv.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
            rows.append((mode, res, rss))
            stop_all()
            PROCS.clear()
    finally:
        stop_all()
        raw.close()
    out = []
    out.append("# moltendb query benchmark, %s UTC\n" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    out.append("Machine: nproc %d; %s. Settings: --duration %s, medians of %d runs; storage-memory; "
               "100,000 documents of ~200 bytes (`bench/query/run.py`). pinned = server on CPU 1, "
               "`taskset -c 0 wrk -t1 -c32`, server `--threads 1`; unpinned = `wrk -t2 -c64`, "
               "server `--threads 2`. Raw output: `query-%s.raw.log`.\n"
               % (os.cpu_count(), os.uname().release, a.duration, a.reps, stamp))
    out.append("| measurement | mode | req/s | p50 ms | p99 ms | errors |")
    out.append("|---|---|---:|---:|---:|---:|")
    names = [("ceiling", "ceiling (fixed 200-byte reply)"), ("get_key", "POST /get by key"),
             ("where", "where, 1% of 100k (1 client)"), ("sorted", "sort + count 10 (1 client)"),
             ("set1", "/set 1 doc (1 client)"), ("set1c", "/set 1 doc (32 clients)"),
             ("set1000", "/set 1,000-doc batch (1 client)")]
    summary = []
    for mode, res, rss in rows:
        for key, label in names:
            if not res[key]:
                continue
            out.append("| %s | %s | %.0f | %.3f | %.3f | %d |" % (
                label, mode, med(res[key], "rps"), med(res[key], "p50"), med(res[key], "p99"),
                sum(s["errors"] for s in res[key])))
        ratio = med(res["get_key"], "rps") / med(res["ceiling"], "rps")
        summary.append("- %s: GET by key = %.2f x the ceiling's req/s (target >= 0.60); server RSS "
                       "after the run %.0f MiB" % (mode, ratio, rss / 1048576))
        if res["where"]:
            summary.append("- where 1%% p50 %.2f ms (target < 20 ms); 1,000-doc /set p50 %.2f ms "
                           "(target < 50 ms)" % (med(res["where"], "p50"), med(res["set1000"], "p50")))
    out.append("")
    out += summary
    write_results(out, "query-%s.md" % stamp)


def write_results(lines, name):
    """The report: bench/results/<name>, echoed to stdout."""
    text = "\n".join(lines) + "\n"
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print("written to", path)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
