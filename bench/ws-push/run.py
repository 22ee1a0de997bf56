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
Usage: python3 bench/ws-push/run.py [--reps 5] [--duration 5] [--subscribers 1000]
       [--writers 1] [--build DIR] [--no-rt] [--unpinned]   (DIR: an existing
       optimised build; default builds build-bench/, RelWithDebInfo)
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


def start_server(build, work, log, queue_size=0):
    port = free_port()
    conf = os.path.join(work, "bench.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n"
                "module = ws-push\n")
        if queue_size:
            f.write("[ws-push]\nqueue-size = %d\n" % queue_size)
    cmd = PIN_SERVER + [os.path.join(build, "moltendb"), "--config", conf,
           "--module-dir", os.path.join(build, "modules"), "--host", "127.0.0.1",
           "--port", str(port), "--dev-mode", "--threads", "1", "--jwt-secret", SECRET,
           "--root-user", "root", "--root-password", "bench-password",
           "--rate-limit-requests", "100000000", "--max-connections-per-ip", "0", "--db-path", os.path.join(work, "db.log")]
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


def thread_cpu(pid):
    """CPU seconds per thread name of a live process."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def one_run(build, wsbench, subs, args, raw):
    work = tempfile.mkdtemp(prefix="wsbench-")
    log = open(os.path.join(work, "server.log"), "wb")
    srv, port = start_server(build, work, log, args.queue_size)
    try:
        root = post(port, "/login", {"username": "root", "password": "bench-password"})["token"]
        tf = os.path.join(work, "tokens.txt")
        tokens(port, root, subs, tf)
        env = dict(os.environ)
        if args.rt:
            env["WSBENCH_RT"] = "1"
        if args.rate:
            env["WSBENCH_RATE"] = str(args.rate)
        b = subprocess.Popen(PIN_LOAD + [wsbench, "127.0.0.1", str(port), root, tf,
                             str(args.duration), str(args.writers)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cpu0 = None
        lines = []
        for line in b.stdout:
            if line.strip() == "LIVE":
                cpu0 = thread_cpu(srv.pid)  # from the first write on
            else:
                lines.append(line)
        err = b.stderr.read()
        rc = b.wait(timeout=args.duration + 180)
        cpu1 = thread_cpu(srv.pid)  # every event delivered (or the run failed)
        raw.write("subscribers=%d rc=%d\n%s%s\n" % (subs, rc, "".join(lines), err))
        if rc != 0 or not lines:
            raise SystemExit("wsbench failed (%d): %s %s" % (rc, "".join(lines), err))
        r = json.loads(lines[-1])
        d = {k: v - (cpu0 or {}).get(k, 0) for k, v in cpu1.items()}
        r["ws_cpu_s"] = d.get("ws-push", 0)
        r["http_cpu_s"] = sum(v for k, v in d.items() if k != "ws-push")
        return r
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        with open(os.path.join(work, "server.log"), "rb") as f:
            raw.write(f.read().decode("utf-8", "replace")[-3000:] + "\n")


def us_per(r, cpu, what):
    n = r[what]
    return r[cpu] * 1e6 / n if n else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--build")
    ap.add_argument("--rate", type=float, default=0,
                    help="pace the writer at this many writes/s (default: as fast as it can)")
    ap.add_argument("--queue-size", type=int, default=0,
                    help="the server's ws-push queue-size (default: the module's)")
    ap.add_argument("--unpinned", action="store_true", help="no taskset (both share both CPUs)")
    ap.add_argument("--no-rt", dest="rt", action="store_false",
                    help="load generator at normal priority (default: SCHED_FIFO when root)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        args.rt = False
    if args.unpinned:
        PIN_SERVER.clear()
        PIN_LOAD.clear()
    build = args.build and os.path.abspath(args.build)
    if not build:
        build = os.path.join(ROOT, "build-bench")
        subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", build, "-j2"], check=True, stdout=subprocess.DEVNULL)
    wsbench = os.path.join(build, "wsbench")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-o", wsbench,
                    os.path.join(ROOT, "bench", "ws-push", "wsbench.c"), "-lpthread"], check=True)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raw = open(os.path.join(RESULTS, "ws-push-%s.raw.log" % stamp), "w")
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
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
    up1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    med = lambda rs, f: statistics.median(f(r) for r in rs)
    b_rps, f_rps = med(base, lambda r: r["writes_per_s"]), med(full, lambda r: r["writes_per_s"])
    ratios = [f["writes_per_s"] / b["writes_per_s"] for b, f in zip(base, full)]
    pin = "unpinned" if args.unpinned else "pinned to CPU %d"
    lines = [
        "# ws-push fan-out benchmark, %s" % stamp, "",
        "Machine: nproc %d. `uptime` before: `%s`; after: `%s`." % (os.cpu_count(), up0, up1), "",
        "Server (`--threads 1`, storage-memory, dev mode) %s; load generator "
        "(`bench/ws-push/wsbench.c`: %d writer connection(s) + every subscriber on one epoll "
        "thread) %s, %s. %d rounds of %gs, interleaved (baseline, subscribers, baseline, ...), "
        "fresh server per run; medians. Subscriber mix: 1/4 admin, 1/4 `read:bench:*`, 1/4 "
        "prefix `read:bench:g<d>-*` (10%% of keys), 1/4 one key each." % (
            pin.replace(" %d", "") if args.unpinned else pin % 1, args.writers,
            pin.replace(" %d", "") if args.unpinned else pin % 0,
            "SCHED_FIFO (writer above reader)" if args.rt else "normal priority",
            args.reps, args.duration), "",
        "Writer: %s; ws-push `queue-size`: %s." % (
            "paced at %g writes/s" % args.rate if args.rate else "as fast as it can",
            args.queue_size or "the default (4096)"), "",
        "CPU columns: server HTTP threads per write, the ws-push thread per delivery, the load "
        "generator's writer per write and its subscriber reader per delivery (from the first "
        "write until every event was received; kernel time included).", "",
        "| | subscribers | writes/s | deliveries | fan-out p50 | p99 | max | lost | out of order "
        "| http us/write | ws us/delivery | writer us/write | reader us/delivery |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in (("baseline", base), ("fan-out", full)):
        for i, r in enumerate(rs):
            lines.append("| %s run %d | %d | %.0f | %d | %.2f ms | %.2f ms | %.2f ms | %d | %d "
                         "| %.1f | %.3f | %.1f | %.3f |" % (
                             name, i + 1, r["subscribers"], r["writes_per_s"], r["deliveries"],
                             r["lat_p50_us"] / 1000, r["lat_p99_us"] / 1000,
                             r["lat_max_us"] / 1000, r["lost"], r["out_of_order"],
                             us_per(r, "http_cpu_s", "writes"), us_per(r, "ws_cpu_s", "deliveries"),
                             us_per(r, "writer_cpu_s", "writes"),
                             us_per(r, "reader_cpu_s", "deliveries")))
    lines += ["", "Medians: writer %.0f writes/s alone, %.0f writes/s with %d subscribers "
              "(ratio of medians %.2f; per-round ratios %s, median %.2f; target >= 0.8); fan-out "
              "p99 %.2f ms (target < 50 ms); lost %d, out of order %d (target 0)." % (
                  b_rps, f_rps, args.subscribers, f_rps / b_rps if b_rps else 0,
                  ", ".join("%.2f" % x for x in ratios), statistics.median(ratios),
                  med(full, lambda r: r["lat_p99_us"]) / 1000, sum(r["lost"] for r in full),
                  sum(r["out_of_order"] for r in full)),
              "",
              "CPU medians: baseline http %.1f us/write, writer %.1f us/write; with subscribers "
              "http %.1f us/write, writer %.1f us/write, ws-push %.3f us/delivery, reader %.3f "
              "us/delivery, %.0f deliveries per write." % (
                  med(base, lambda r: us_per(r, "http_cpu_s", "writes")),
                  med(base, lambda r: us_per(r, "writer_cpu_s", "writes")),
                  med(full, lambda r: us_per(r, "http_cpu_s", "writes")),
                  med(full, lambda r: us_per(r, "writer_cpu_s", "writes")),
                  med(full, lambda r: us_per(r, "ws_cpu_s", "deliveries")),
                  med(full, lambda r: us_per(r, "reader_cpu_s", "deliveries")),
                  med(full, lambda r: r["deliveries"] / r["writes"] if r["writes"] else 0)), ""]
    path = os.path.join(RESULTS, "ws-push-%s.md" % stamp)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print("written to", path)


if __name__ == "__main__":
    main()
