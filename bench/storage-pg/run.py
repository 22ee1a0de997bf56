#!/usr/bin/env python3
"""storage-pg benchmark (not a test): see README.md next to this file.

Usage: bench/storage-pg/run.py [BUILD_DIR]        (default: build)
Env:   SECONDS_PER_RUN (5), PIN (1: nodes on CPU 1, load on CPU 0), LAG_SAMPLES (500),
       PARTS ("main,ordering": which sections), ORDERING_ROUNDS (3)
Writes bench/results/storage-pg-<UTC stamp>.md.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
os.environ.setdefault("MDB_BIN", os.path.join(BUILD, "moltendb"))
os.environ.setdefault("MDB_MODULE_DIR", os.path.join(BUILD, "modules"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import mdbtest  # noqa: E402
import pgtest  # noqa: E402

SECS = os.environ.get("SECONDS_PER_RUN", "5")
PIN = os.environ.get("PIN", "1") == "1" and os.cpu_count() >= 2
LAG_SAMPLES = os.environ.get("LAG_SAMPLES", "500")
PARTS = os.environ.get("PARTS", "main,ordering").split(",")
ORDERING_ROUNDS = int(os.environ.get("ORDERING_ROUNDS", "3"))
SRV_PIN = ["taskset", "-c", "1"] if PIN else []
LOAD_PIN = ["taskset", "-c", "0"] if PIN else []


def node(storage, extra):
    mods = [storage, "auth-jwt", "query-engine"]
    srv = mdbtest.Server(modules=mods, args=["--encryption-key", "bench-key"] + extra,
                         start=False, env={"ASAN_OPTIONS": "detect_leaks=0"})
    srv.args = SRV_PIN + srv.args
    srv.start()
    srv.login()
    return srv


def pgload(*args):
    out = subprocess.run(LOAD_PIN + [LOADER] + [str(a) for a in args], capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("pgload %s failed: %s%s" % (args, out.stdout, out.stderr))
    return out.stdout.strip()


def spawn(*args):
    return subprocess.Popen(LOAD_PIN + [LOADER] + [str(a) for a in args],
                            stdout=subprocess.PIPE, text=True)


def field(line, name):
    m = re.search(r"%s=([0-9.]+)" % name, line)
    return float(m.group(1)) if m else float("nan")


def row(label, line):
    return "| %s | %.0f | %.2f | %.2f | %d |" % (label, field(line, "req/s"), field(line, "p50_ms"),
                                               field(line, "p99_ms"), field(line, "errors"))


def preload(srv, n):
    for base in range(0, n, 1000):
        data = {"k%d" % i: {"n": i, "p": "x" * 160} for i in range(base, min(n, base + 1000))}
        r = srv.post("/set", {"collection": "bench", "data": data})
        assert r.status == 200, r


def pg_node(pg, prefix, extra=()):
    return node("storage-pg", ["--pg-conninfo", pg.conninfo, "--pg-table-prefix", prefix]
                + list(extra))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def ordering(pg, out):
    """Counter row vs advisory lock, interleaved rounds (A, B, A, B ...) so
    that the load of a shared machine hits both alike."""
    kinds = ("counter-row", "advisory-lock")
    pairs = {k: [pg_node(pg, "o%d_" % i, ["--pg-ordering", k]) for _ in range(2)]
             for i, k in enumerate(kinds)}
    res = {(k, n): [] for k in kinds for n in (1, 2)}
    for rnd in range(ORDERING_ROUNDS):
        for k in kinds:
            a, b = pairs[k]
            res[(k, 1)].append(pgload("set", "127.0.0.1", a.port, a.login(), 64, SECS,
                                      "r%d_1_" % rnd))
            pa = spawn("set", "127.0.0.1", a.port, a.login(), 32, SECS, "r%d_a_" % rnd)
            pb = spawn("set", "127.0.0.1", b.port, a.login(), 32, SECS, "r%d_b_" % rnd)
            res[(k, 2)].append((pa.communicate()[0].strip(), pb.communicate()[0].strip()))
    out.append("## Ordering: counter row vs advisory lock (64 clients, interleaved)")
    out.append("")
    out.append("%d rounds; each round runs both variants back to back, one node (64 clients) "
               "then two nodes (32 + 32 clients). req/s: median of the rounds (two nodes: "
               "A + B); p99: median of the rounds' p99 (two nodes: the worse node)."
               % ORDERING_ROUNDS)
    out.append("")
    out.append("| ordering | nodes | req/s per round | median req/s | median p99 ms |")
    out.append("|---|---:|---|---:|---:|")
    for k in kinds:
        one = res[(k, 1)]
        rates = [field(x, "req/s") for x in one]
        out.append("| %s | 1 | %s | %.0f | %.0f |" % (
            k, ", ".join("%.0f" % r for r in rates), pct(rates, 0.5),
            pct([field(x, "p99_ms") for x in one], 0.5)))
        two = res[(k, 2)]
        rates = [field(la, "req/s") + field(lb, "req/s") for la, lb in two]
        out.append("| %s | 2 | %s | %.0f | %.0f |" % (
            k, ", ".join("%.0f" % r for r in rates), pct(rates, 0.5),
            pct([max(field(la, "p99_ms"), field(lb, "p99_ms")) for la, lb in two], 0.5)))
    out.append("")
    for ns in pairs.values():
        for n in ns:
            n.stop()


def main():
    global LOADER
    work = tempfile.mkdtemp(prefix="pgbench-")
    LOADER = os.path.join(work, "pgload")
    subprocess.run(["gcc", "-O2", "-o", LOADER, os.path.join(HERE, "pgload.c"), "-lpthread"],
                   check=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = []
    pg = pgtest.Postgres(fsync=True)
    try:
        out.append("# storage-pg benchmark, %s" % time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()))
        out.append("")
        out.append("Machine: %d CPUs, %s; nodes pinned to CPU 1 and load to CPU 0: %s "
                   "(PostgreSQL unpinned); %ss per run; encryption on; auth-jwt; PostgreSQL %s "
                   "(fsync on, synchronous_commit on) on the same machine over TCP loopback."
                   % (os.cpu_count(), os.uname().release, PIN, SECS,
                      pg.sql("SHOW server_version").strip()))
        out.append("")
        out.append("Load (uptime) before: %s" % subprocess.run(
            ["uptime"], capture_output=True, text=True).stdout.strip())
        out.append("")
        if "ordering" in PARTS:
            ordering(pg, out)
        if "main" in PARTS:
            main_part(pg, out)
        out.append("Load (uptime) after: %s" % subprocess.run(
            ["uptime"], capture_output=True, text=True).stdout.strip())
        out.append("")
    finally:
        pg.destroy()
        subprocess.run(["rm", "-rf", work])
    text = "\n".join(out) + "\n"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", "storage-pg-%s.md" % stamp)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print("written to", path)


def main_part(pg, out):
    out.append("## Writes: POST /set of one ~200-byte document per request")
    out.append("")
    out.append("| setup | req/s | p50 ms | p99 ms | errors |")
    out.append("|---|---:|---:|---:|---:|")
    wal = node("storage-wal", ["--write-mode", "sync"])
    for c in (1, 64):
        out.append(row("storage-wal sync, 1 node, %d clients" % c,
                       pgload("set", "127.0.0.1", wal.port, wal.login(), c, SECS, "w")))
    wal.stop()
    a = pg_node(pg, "b1_")
    for c in (1, 64):
        out.append(row("storage-pg, 1 node, %d clients" % c,
                       pgload("set", "127.0.0.1", a.port, a.login(), c, SECS, "s%d_" % c)))
    b = pg_node(pg, "b1_")
    pa = spawn("set", "127.0.0.1", a.port, a.login(), 32, SECS, "a")
    pb = spawn("set", "127.0.0.1", b.port, a.login(), 32, SECS, "b")
    la, lb = pa.communicate()[0].strip(), pb.communicate()[0].strip()
    out.append(row("storage-pg, 2 nodes at once, 32+32 clients: node A", la))
    out.append(row("storage-pg, 2 nodes at once, 32+32 clients: node B", lb))
    out.append("| storage-pg, 2 nodes at once: **total** | %.0f | | | |"
               % (field(la, "req/s") + field(lb, "req/s")))
    out.append("")
    out.append("## Reads: POST /get of one random key among 10,000, 64 clients in all")
    out.append("")
    out.append("| setup | req/s | p50 ms | p99 ms | errors |")
    out.append("|---|---:|---:|---:|---:|")
    preload(a, 10000)
    wait = time.time() + 30
    while b.post("/get", {"collection": "bench", "keys": "k9999"}).status != 200:
        assert time.time() < wait, "preload did not reach node B"
        time.sleep(0.05)
    out.append(row("1 node, 64 clients",
                   pgload("get", "127.0.0.1", a.port, a.login(), 64, SECS, 10000)))
    pa = spawn("get", "127.0.0.1", a.port, a.login(), 32, SECS, 10000)
    pb = spawn("get", "127.0.0.1", b.port, a.login(), 32, SECS, 10000)
    la, lb = pa.communicate()[0].strip(), pb.communicate()[0].strip()
    out.append(row("2 nodes, 32 clients each: node A", la))
    out.append(row("2 nodes, 32 clients each: node B", lb))
    out.append("| 2 nodes: **total** | %.0f | | | |" % (field(la, "req/s") + field(lb, "req/s")))
    out.append("")
    out.append("## Replication lag: write on A, poll B until it answers 200")
    out.append("")
    out.append("| while | samples | p50 ms | p99 ms | max ms |")
    out.append("|---|---:|---:|---:|---:|")
    l0 = pgload("lag", "127.0.0.1", a.port, "127.0.0.1", b.port, a.login(), LAG_SAMPLES)
    bg = spawn("set", "127.0.0.1", a.port, a.login(), 16, 10, "bg")
    time.sleep(0.5)
    l1 = pgload("lag", "127.0.0.1", a.port, "127.0.0.1", b.port, a.login(), LAG_SAMPLES)
    lbg = bg.communicate()[0].strip()
    for label, line in (("idle", l0), ("A also takes 16 writing clients (%.0f req/s)"
                                       % field(lbg, "req/s"), l1)):
        out.append("| %s | %d | %.2f | %.2f | %.2f |" % (
            label, field(line, "samples"), field(line, "p50_ms"), field(line, "p99_ms"),
            field(line, "max_ms")))
    out.append("")
    a.stop()
    b.stop()


if __name__ == "__main__":
    main()
