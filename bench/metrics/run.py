#!/usr/bin/env python3
"""Metrics benchmark (issue 11 item 6), measured like ../shared/bench
(server pinned to CPU 1 with `--threads 1`, `taskset -c 0 wrk -t1 -c32`,
keep-alive, the query benchmark's wrk scripts).

1. POST /get by key on 100,000 documents: moltendb WITHOUT the metrics
   module vs WITH it loaded AND scraped (GET /metrics) once a second during
   its runs. Both servers run for the whole session; the measurement is
   many short rounds, in two modes:
   - alternate: each round one run of each server back to back, the order
     alternating (AB, BA, ...), so a slow phase of the shared machine hits
     both sides alike;
   - together: each round drives both servers at the same time, each with
     its own pinned wrk; the scheduler shares CPU 1 between the two, and
     whatever else runs on the machine slows both at the same moment.
   Per round: the throughput ratio with/without, and the ratio of the
   server's CPU time per request (from /proc/<pid>/task/*/schedstat, so
   time spent waiting for the CPU while other processes ran does not
   count). Reported: the median of the per-round ratios and their spread.
   Target: throughput ratio >= 0.97.
0. Before that, bench/metrics/hotpath.c times the core's per-request
   metrics work alone (no HTTP), in CPU ns.
2. The time of one scrape of GET /metrics and of GET /system/metrics
   (client side, keep-alive), at 100,000 documents and at 1,000,000, next
   to the server-side mean from the server's own
   moltendb_http_request_duration_seconds. Target: < 10 ms at 1,000,000.

The machine load (`uptime`) is recorded before, after, and at each round.

Usage: python3 bench/metrics/run.py [--rounds 20] [--duration 10s]
       [--modes alternate,together] [--docs 1000000] [--skip-build]
Results: bench/results/metrics-<stamp>.md (and .raw.log with wrk's output).
Reuses the query benchmark's helpers (bench/query/run.py) and wrk scripts.
"""
import argparse
import glob
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


def start_server(work, name, modules, port):
    conf = os.path.join(work, "%s.conf" % name)
    with open(conf, "w") as f:
        for m in modules:
            f.write("module = %s\n" % m)
    log = open(os.path.join(work, "%s.log" % name), "wb")
    p = q.start([os.path.join(q.BUILD, "moltendb"), "--config", conf, "--module-dir",
                 os.path.join(q.BUILD, "modules"), "--dev-mode", "--host", "127.0.0.1",
                 "--port", str(port), "--threads", "1", "--jwt-secret", SECRET,
                 "--root-user", "bench", "--root-password", "bench-password",
                 "--rate-limit-requests", "1000000000", "--cors-origin", "http://localhost"],
                "1", log)
    q.wait_port(port)
    st, body = q.post(port, "/login", {"username": "bench", "password": "bench-password"})
    return p, json.loads(body)["token"]


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_ns(pid):
    """CPU time (ns) of every thread of the process so far."""
    total = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def proc_stat():
    """{cpu: (busy, steal, total)} jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                steal = v[7] if len(v) > 7 else 0
                out[line.split()[0]] = (sum(v[:8]) - idle, steal, sum(v[:8]))
    return out


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


def measure(sides, duration, raw):
    """Drive every server of `sides` ({port, token, pid, scrape}) at once,
    each with its own pinned wrk, for `duration`; one result per side."""
    s0, c0 = proc_stat(), [cpu_ns(x["pid"]) for x in sides]
    res = [None] * len(sides)
    scrapers = [Scraper(x["port"], x["token"]) if x["scrape"] else None for x in sides]

    def drive(i):
        res[i] = q.wrk(sides[i]["port"], "get_key.lua", "pinned", duration,
                       {"MDB_TOKEN": sides[i]["token"]}, raw)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(sides))]
    for t in scrapers + threads:
        if t:
            t.start()
    for t in threads:
        t.join()
    for sc in scrapers:
        if sc:
            sc.halt.set()
            sc.join()
    c1, s1 = [cpu_ns(x["pid"]) for x in sides], proc_stat()
    d = {k: tuple(b - a for a, b in zip(s0[k], s1[k])) for k in s1 if k in s0}
    busy = "/".join("%.0f" % (100.0 * d[k][0] / max(1, d[k][2])) for k in sorted(d))
    steal = sum(x[1] for x in d.values()) * 100.0 / max(1, sum(x[2] for x in d.values()))
    secs = float(duration.rstrip("s"))
    for i, r in enumerate(res):
        r["us_req"] = (c1[i] - c0[i]) / 1000.0 / max(1.0, r["rps"] * secs)
        r["busy"], r["steal"] = busy, steal
        r["scrapes"] = len(scrapers[i].times) if scrapers[i] else 0
        r["scrape_failures"] = scrapers[i].failures if scrapers[i] else 0
    return res


def get(c, path, token):
    c.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status, body[:200])
    return body


def server_mean_ms(c, token, route):
    """Server-side (sum, count) of the request duration histogram of `route`."""
    text = get(c, "/metrics", token).decode()
    s = n = 0.0
    for line in text.splitlines():
        tag = '{route="%s"} ' % route
        if line.startswith("moltendb_http_request_duration_seconds_sum" + tag):
            s = float(line.split()[-1])
        elif line.startswith("moltendb_http_request_duration_seconds_count" + tag):
            n = float(line.split()[-1])
    return s, n


def scrape_times(port, pid, token, path, n=100):
    """Client-side times (ms) of n scrapes of `path`, the server-side mean
    (ms) of the same scrapes, the server's CPU time per scrape (ms), and
    the size of the last answer."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    s0, n0 = server_mean_ms(c, token, path)
    cpu0 = cpu_ns(pid)
    out, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(get(c, path, token))
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    cpu = (cpu_ns(pid) - cpu0) / 1e6 / n
    s1, n1 = server_mean_ms(c, token, path)
    c.close()
    if path == "/metrics":  # the two reads of the histogram are scrapes too
        n1 -= 1
    srv = (s1 - s0) * 1000 / (n1 - n0) if n1 > n0 else float("nan")
    return out, srv, cpu, size


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def scrape_rows(label, port, pid, token):
    rows = []
    for path in ("/metrics", "/system/metrics"):
        t, srv, cpu, size = scrape_times(port, pid, token, path)
        rows.append("| %s | %s | %d | %.2f | %.2f | %.2f | %.2f | %.3f |" % (
            label, path, size, statistics.median(t), pct(t, 0.9), max(t), srv, cpu))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--docs", type=int, default=1000000)
    ap.add_argument("--modes", default="alternate,together")
    ap.add_argument("--skip-build", action="store_true")
    a = ap.parse_args()
    if not q.shutil.which("wrk"):
        q.sh(["apt-get", "install", "-y", "-qq", "wrk"])
    if not a.skip_build:
        q.sh(["cmake", "-S", q.ROOT, "-B", q.BUILD, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
             stdout=q.subprocess.DEVNULL)
        q.sh(["cmake", "--build", q.BUILD, "-j2"], stdout=q.subprocess.DEVNULL)
        q.sh(["cmake", "--build", q.BUILD, "-j2", "--target", "metrics_hotpath"],
             stdout=q.subprocess.DEVNULL)
    os.makedirs(q.RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    raw = open(os.path.join(q.RESULTS, "metrics-%s.raw.log" % stamp), "w")
    work = tempfile.mkdtemp(prefix="mdbbench-metrics-")
    base_mods = ["storage-memory", "auth-jwt", "query-engine"]
    load_before = uptime()
    # 0. the per-request metrics work alone (CPU time, no HTTP)
    hot = json.loads(q.subprocess.run([os.path.join(q.BUILD, "metrics_hotpath")],
                                      capture_output=True, text=True, check=True).stdout)
    print("hot path: %s" % hot, flush=True)
    rounds, scrape_out = [], []
    try:
        # 1. with vs without, pinned, interleaved rounds
        pa, pb = q.free_port(), q.free_port()
        sa, ta = start_server(work, "without", base_mods, pa)
        sb, tb = start_server(work, "with", base_mods + ["metrics"], pb)
        q.load(pa, ta)
        q.load(pb, tb)
        print("loaded 100,000 documents into both servers; load %s" % uptime(), flush=True)
        A = {"port": pa, "token": ta, "pid": sa.pid, "scrape": False}
        B = {"port": pb, "token": tb, "pid": sb.pid, "scrape": True}
        measure([A], "2s", raw)  # warm both (first touches, wrk's connections)
        measure([B], "2s", raw)
        for mode in a.modes.split(","):
            for i in range(a.rounds):
                load = uptime()
                res = {"load": load, "mode": mode}
                if mode == "together":
                    res["order"] = "-"
                    res["without"], res["with"] = measure([A, B], a.duration, raw)
                else:
                    res["order"] = "without" if i % 2 == 0 else "with"
                    for side in (("without", "with") if i % 2 == 0 else ("with", "without")):
                        res[side] = measure([A if side == "without" else B], a.duration, raw)[0]
                rounds.append(res)
                print("%s round %d (load %s): without %.0f req/s %.2f us/req, with %.0f req/s "
                      "%.2f us/req (scraped %d times): ratio %.3f" % (
                          mode, i + 1, load, res["without"]["rps"], res["without"]["us_req"],
                          res["with"]["rps"], res["with"]["us_req"], res["with"]["scrapes"],
                          res["with"]["rps"] / res["without"]["rps"]), flush=True)
        scrape_out += scrape_rows("100,000", pb, sb.pid, tb)
        q.stop_all()
        q.PROCS.clear()
        # 2. scrape time at 1,000,000 documents
        pc = q.free_port()
        sc, tc = start_server(work, "big", base_mods + ["metrics", "ttl-sweeper"], pc)
        t0 = time.time()
        q.load(pc, tc, n=a.docs)
        print("loaded %d documents in %.0f s" % (a.docs, time.time() - t0), flush=True)
        scrape_out += scrape_rows("{:,}".format(a.docs), pc, sc.pid, tc)
        q.stop_all()
        q.PROCS.clear()
    finally:
        q.stop_all()
        raw.close()
    load_after = uptime()

    out = ["# moltendb metrics benchmark, %s UTC\n" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "Machine: nproc %d; kernel %s; load average (1/5/15 min) %s before, %s after."
           % (os.cpu_count(), os.uname().release, load_before, load_after),
           "`bench/metrics/run.py --rounds %d --duration %s --modes %s`: both servers on CPU 1 "
           "(`--threads 1`, storage-memory, auth-jwt, query-engine; \"with\" adds the metrics "
           "module and is scraped, GET /metrics, once a second during its runs), load from "
           "`taskset -c 0 wrk -t1 -c32 -s bench/query/lua/get_key.lua` (POST /get by key over "
           "100,000 documents). **alternate**: each round runs the two servers back to back, "
           "the order alternating. **together**: each round drives both at the same time, each "
           "with its own wrk, so whatever else runs on the machine slows both alike and the "
           "scheduler shares CPU 1 between them. us/req = the server's CPU time per request "
           "(all its threads, from schedstat). busy = %% busy of cpu0/cpu1 during the run; "
           "steal = hypervisor steal %%. Raw wrk output: `metrics-%s.raw.log`.\n"
           % (a.rounds, a.duration, a.modes, stamp)]
    for mode in a.modes.split(","):
        rr = [r for r in rounds if r["mode"] == mode]
        if not rr:
            continue
        ratios = [r["with"]["rps"] / r["without"]["rps"] for r in rr]
        costs = [r["without"]["us_req"] / r["with"]["us_req"] for r in rr]
        qs = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        cq = statistics.quantiles(costs, n=4) if len(costs) > 1 else [costs[0]] * 3
        out += ["## %s\n" % mode,
                "| round | first | load 1m | without req/s | with req/s | ratio | without us/req "
                "| with us/req | cost ratio | busy | steal % | scrapes |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for i, r in enumerate(rr):
            w, m = r["without"], r["with"]
            out.append("| %d | %s | %s | %.0f | %.0f | %.3f | %.2f | %.2f | %.3f | %s | %.1f | %d |"
                       % (i + 1, r["order"], r["load"].split()[0], w["rps"], m["rps"],
                          m["rps"] / w["rps"], w["us_req"], m["us_req"], w["us_req"] / m["us_req"],
                          m["busy"], (w["steal"] + m["steal"]) / 2, m["scrapes"]))
        errors = sum(r[k]["errors"] for r in rr for k in ("without", "with"))
        fails = sum(r["with"]["scrape_failures"] for r in rr)
        out += ["",
                "- %s: throughput ratio with/without, median of %d rounds: **%.3f** (target >= "
                "0.97); quartiles %.3f-%.3f, range %.3f-%.3f" % (
                    mode, len(ratios), statistics.median(ratios), qs[0], qs[2], min(ratios),
                    max(ratios)),
                "- %s: CPU cost ratio (without us/req / with us/req; 1.0 = the same cost), median "
                "**%.3f**; quartiles %.3f-%.3f, range %.3f-%.3f" % (
                    mode, statistics.median(costs), cq[0], cq[2], min(costs), max(costs)),
                "- %s: ratio of the median req/s %.3f (without %.0f, with %.0f); HTTP errors %d; "
                "failed scrapes %d" % (
                    mode, statistics.median(r["with"]["rps"] for r in rr) /
                    statistics.median(r["without"]["rps"] for r in rr),
                    statistics.median(r["without"]["rps"] for r in rr),
                    statistics.median(r["with"]["rps"] for r in rr), errors, fails),
                ""]
    out += ["## hot path and scrapes\n",
            "- the core's per-request metrics work alone (`metrics_hotpath`, bench/metrics/hotpath.c: "
            "core_metrics_request_begin + _end, %d iterations, CPU time): **%.0f ns** per request on "
            "one thread, %.0f ns each on two threads at once (empty loop %.1f ns); it runs whether "
            "or not the metrics module is loaded. One rendering of its registry (%d bytes): %.0f us."
            % (hot["iterations"], hot["one_thread_ns"], hot["two_threads_ns"],
               hot["empty_loop_ns"], hot["render_bytes"], hot["render_us"]),
            "",
            "Scrape times (100 scrapes each, keep-alive, admin token; client = round trip seen by "
            "the client, server = mean of the server's own request duration histogram for the "
            "route, server CPU = the server's CPU time per scrape (schedstat; what the scrape "
            "costs when the machine is not shared); target < 10 ms at 1,000,000 documents):",
            "",
            "| documents | route | bytes | client median ms | client p90 ms | client max ms "
            "| server mean ms | server CPU ms |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"] + scrape_out
    text = "\n".join(out) + "\n"
    path = os.path.join(q.RESULTS, "metrics-%s.md" % stamp)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print("written to", path)


if __name__ == "__main__":
    # a SIGTERM still stops the servers and wrk (the finally blocks)
    q.signal.signal(q.signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        main()
    finally:
        q.stop_all()
