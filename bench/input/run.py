#!/usr/bin/env python3
"""Oversized batches against the real server (issue 9 item 6): how long does
a /set whose `data` is an array of millions of empty documents take to be
refused, and how far does the server's peak RSS grow?

    python3 bench/input/run.py [--bin build/moltendb] [--base OTHER_BIN]
                               [--rounds 3] [--base-mb 1]

Each round starts a fresh server (storage-memory, auth-jwt, query-engine,
dev mode; tests/integration/mdbtest.py) per binary and
sends one body of each size; binaries alternate within a round (A, B, A, B)
so a loaded machine affects both alike. The baseline binary (--base) only
gets bodies up to --base-mb MB: before the fix a 10 MB body took ~20 s and
several GB of RSS, too much for a shared machine.

Results go to bench/results/input-<stamp>.md. Standard library only.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import mdbtest  # noqa: E402  (the test suite's server wrapper)


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid):
    """User + system CPU time the server has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def start(binary, modules):
    mdbtest.BIN = binary
    return mdbtest.Server(module_dir=modules)


def one(binary, modules, mb):
    srv = start(binary, modules)
    proc, port, token = srv.proc, srv.port, srv.login()
    try:
        n = (mb * 1024 * 1024 - 100) // 3
        body = b'{"collection":"c","data":[' + b",".join([b"{}"] * n) + b"]}"
        before, cpu0 = hwm_kb(proc.pid), cpu_ms(proc.pid)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        t0 = time.perf_counter()
        c.request("POST", "/set", body, {"Content-Type": "application/json",
                                         "Authorization": "Bearer " + token})
        r = c.getresponse()
        payload = r.read()
        ms = (time.perf_counter() - t0) * 1000
        grown = (hwm_kb(proc.pid) - before) / 1024
        cpu = cpu_ms(proc.pid) - cpu0
        return n, r.status, ms, grown, payload.decode("utf-8", "replace")[:90], cpu
    finally:
        srv.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "moltendb"))
    ap.add_argument("--modules", default=os.path.join(ROOT, "build", "modules"))
    ap.add_argument("--base", help="baseline binary (its modules beside it in modules/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-mb", type=int, default=1)
    a = ap.parse_args()
    load_before = open("/proc/loadavg").read().split()[:3]
    variants = [("this build", a.bin, a.modules, [1, 10])]
    if a.base:
        variants.append(("baseline", a.base, os.path.join(os.path.dirname(a.base), "modules"),
                         [mb for mb in (1, 10) if mb <= a.base_mb]))
    runs = {}
    for rnd in range(a.rounds):
        for mb in (1, 10):
            for name, binary, modules, sizes in variants:
                if mb in sizes:
                    res = one(binary, modules, mb)
                    runs.setdefault((name, mb), []).append(res)
                    print(rnd, name, mb, "MB", res[1], "%.0f ms" % res[2], "cpu %.0f ms" % res[5],
                          "+%.0f MB" % res[3],
                          flush=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = os.path.join(ROOT, "bench", "results", "input-%s.md" % stamp)
    with open(out, "w") as f:
        f.write("# oversized array batches, %s UTC\n\n" % time.strftime("%Y-%m-%d %H:%M",
                                                                       time.gmtime()))
        f.write("Machine: nproc %d, load average before %s, after %s (shared, noisy); "
                "storage-memory, dev mode; `python3 bench/input/run.py %s`. Binaries "
                "interleaved per round.\n\n" % (os.cpu_count(), " ".join(load_before),
                                                 " ".join(load_after), " ".join(sys.argv[1:])))
        f.write("| binary | body | documents | status | median ms | max ms | server CPU ms "
                "(median) | peak RSS growth MB (median) | reply |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for (name, mb), rs in sorted(runs.items()):
            f.write("| %s | %d MB | %d | %d | %.0f | %.0f | %.0f | %.0f | %s |\n" % (
                name, mb, rs[0][0], rs[0][1], statistics.median(r[2] for r in rs),
                max(r[2] for r in rs), statistics.median(r[5] for r in rs),
                statistics.median(r[3] for r in rs),
                rs[0][4].replace("|", "\\|")))
    print("wrote", out)


if __name__ == "__main__":
    main()
