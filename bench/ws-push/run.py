#!/usr/bin/env python3
"""ws-push fan-out benchmark (issue 10), measured like ../shared/bench: the
server pinned to CPU 1 with --threads 1, the load generator (wsbench.c:
writer + every subscriber) pinned to CPU 0, medians of several runs, each
run on a fresh server, runs interleaved (baseline, subscribers, baseline...).

Per run: a writer doing POST /set of one document as fast as it can for
--duration seconds, with 0 subscribers (baseline) or --subscribers
authenticated subscribers: a quarter admin, a quarter collection read, a
quarter prefix scopes (read:bench:g<d>-*, 10% of the keys each), a quarter
key scopes (one key each). wsbench checks that every subscriber got every
event it may see, in order, none lost, and measures fan-out latency
(write acknowledged -> event received).

Results: bench/results/ws-push-<stamp>.md (and .raw.log).
Usage: python3 bench/ws-push/run.py [--reps 3] [--duration 10] [--subscribers 1000]
       [--writers 1] [--build DIR]   (DIR: an existing Release build; default
       builds build-bench/)
Everything listens on 127.0.0.1; every process is stopped on exit.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "bench", "results")
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
PROCS = []
PIN_SERVER = ["taskset", "-c", "1"]
PIN_LOAD = ["taskset", "-c", "0"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(port, path, body, token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    c.request("POST", path, body=json.dumps(body), headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200, (path, r.status, data)
    return json.loads(data)


def start_server(build, work, log):
    port = free_port()
    conf = os.path.join(work, "bench.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n"
                "module = ws-push\n")
    cmd = PIN_SERVER + [os.path.join(build, "moltendb"), "--config", conf,
           "--module-dir", os.path.join(build, "modules"), "--host", "127.0.0.1",
           "--port", str(port), "--dev-mode", "--threads", "1", "--jwt-secret", SECRET,
           "--root-user", "root", "--root-password", "bench-password",
           "--rate-limit-requests", "100000000", "--db-path", os.path.join(work, "db.log")]
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    PROCS.append(p)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def tokens(port, root, n, path):
    """The subscriber mix, one line per subscriber: '<kind> <n> <token>'."""
    coll = post(port, "/auth/delegate", {"client_id": "coll", "scopes": ["read:bench:*"]},
                root)["token"]
    prefix = [post(port, "/auth/delegate", {"client_id": "p%d" % d,
                                            "scopes": ["read:bench:g%d-*" % d]}, root)["token"]
              for d in range(10)]
    with open(path, "w") as f:
        for s in range(n):
            kind = s % 4
            if kind == 0:
                f.write("0 0 %s\n" % root)
            elif kind == 1:
                f.write("0 0 %s\n" % coll)
            elif kind == 2:
                d = (s // 4) % 10
                f.write("1 %d %s\n" % (d, prefix[d]))
            else:
                t = post(port, "/auth/delegate", {"client_id": "k%d" % s,
                                                  "scopes": ["read:bench:g%d-%d" % (s % 10, s)]},
                         root)["token"]
                f.write("2 %d %s\n" % (s, t))


def one_run(build, wsbench, subs, args, raw):
    work = tempfile.mkdtemp(prefix="wsbench-")
    log = open(os.path.join(work, "server.log"), "wb")
    srv, port = start_server(build, work, log)
    try:
        root = post(port, "/login", {"username": "root", "password": "bench-password"})["token"]
        tf = os.path.join(work, "tokens.txt")
        tokens(port, root, subs, tf)
        out = subprocess.run(PIN_LOAD + [wsbench, "127.0.0.1", str(port), root, tf,
                              str(args.duration), str(args.writers)],
                             capture_output=True, text=True, timeout=args.duration + 180)
        raw.write("subscribers=%d rc=%d\n%s%s\n" % (subs, out.returncode, out.stdout, out.stderr))
        if out.returncode != 0:
            raise SystemExit("wsbench failed (%d): %s %s" % (out.returncode, out.stdout,
                                                             out.stderr))
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        with open(os.path.join(work, "server.log"), "rb") as f:
            raw.write(f.read().decode("utf-8", "replace")[-3000:] + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--build")
    ap.add_argument("--unpinned", action="store_true", help="no taskset (both share both CPUs)")
    args = ap.parse_args()
    if args.unpinned:
        PIN_SERVER.clear()
        PIN_LOAD.clear()
    build = args.build
    if not build:
        build = os.path.join(ROOT, "build-bench")
        subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", build, "-j2"], check=True, stdout=subprocess.DEVNULL)
    wsbench = os.path.join(build, "wsbench")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-o", wsbench,
                    os.path.join(ROOT, "bench", "ws-push", "wsbench.c"), "-lpthread"], check=True)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raw = open(os.path.join(RESULTS, "ws-push-%s.raw.log" % stamp), "w")
    base, full = [], []
    try:
        for rep in range(args.reps):
            base.append(one_run(build, wsbench, 0, args, raw))
            full.append(one_run(build, wsbench, args.subscribers, args, raw))
            print("rep %d: baseline %s\n       subscribers %s" % (rep + 1, base[-1], full[-1]),
                  flush=True)
    finally:
        raw.close()
        for p in PROCS:
            if p.poll() is None:
                p.kill()
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    b_rps, f_rps = med(base, "writes_per_s"), med(full, "writes_per_s")
    lines = [
        "# ws-push fan-out benchmark, %s" % stamp, "",
        "Machine: nproc %d, load average %.1f at the end. Server (`--threads 1`, storage-memory, "
        "dev mode) %s; load generator (`bench/ws-push/wsbench.c`: %d writer connection(s) + "
        "every subscriber on one epoll thread) %s. %d runs of %gs each, interleaved, fresh "
        "server per run; medians. Subscriber mix: 1/4 admin, 1/4 `read:bench:*`, 1/4 prefix "
        "`read:bench:g<d>-*` (10%% of keys), 1/4 one key each." % (
            os.cpu_count(), os.getloadavg()[0],
            "unpinned" if args.unpinned else "pinned to CPU 1", args.writers,
            "unpinned" if args.unpinned else "pinned to CPU 0", args.reps, args.duration), "",
        "| | subscribers | writes/s | deliveries | fan-out p50 | p99 | max | lost | out of order |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in (("baseline", base), ("fan-out", full)):
        for i, r in enumerate(rs):
            lines.append("| %s run %d | %d | %.0f | %d | %.2f ms | %.2f ms | %.2f ms | %d | %d |" % (
                name, i + 1, r["subscribers"], r["writes_per_s"], r["deliveries"],
                r["lat_p50_us"] / 1000, r["lat_p99_us"] / 1000, r["lat_max_us"] / 1000,
                r["lost"], r["out_of_order"]))
    lines += ["", "Medians: writer %.0f writes/s alone, %.0f writes/s with %d subscribers "
              "(ratio %.2f, target >= 0.8); fan-out p99 %.2f ms (target < 50 ms); lost %d, "
              "out of order %d (target 0)." % (
                  b_rps, f_rps, args.subscribers, f_rps / b_rps if b_rps else 0,
                  med(full, "lat_p99_us") / 1000, sum(r["lost"] for r in full),
                  sum(r["out_of_order"] for r in full)), ""]
    path = os.path.join(RESULTS, "ws-push-%s.md" % stamp)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print("written to", path)


if __name__ == "__main__":
    main()
