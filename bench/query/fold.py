#!/usr/bin/env python3
"""Case-insensitive where queries, two builds side by side (issue 15 item 6).

Starts the moltendb of two build trees (--before, --after) with
storage-memory, loads the same 100,000 documents into each (one collection
with ASCII names, one with accented Latin and Greek names that
both builds fold alike), and measures one
client's latency for string equality, a hashed $in and $contains over the
whole collection, in interleaved rounds (before, after, before, after...)
so that the machine's load hits both alike. Server on CPU 1, wrk on CPU 0,
`wrk -t1 -c1`, medians over the rounds.

Usage: python3 bench/query/fold.py --before DIR --after DIR [--rounds 3] [--duration 5s]
Results: bench/results/query-fold-<stamp>.md (and .raw.log).
"""
import argparse
import http.client
import json
import os
import subprocess
import tempfile
import time

import run  # bench/query/run.py: server start/stop, wrk runner, medians

WORDS = {"ascii": "item-%d", "greek": "ÉLÉMENT-ΑΛΦΑ-%d"}
QUERIES = [
    ("eq", "ascii", {"name": "ITEM-77777"}),
    ("in (20, hashed)", "ascii", {"name": {"$in": ["ITEM-%d" % (i * 4999) for i in range(20)]}}),
    ("contains", "ascii", {"name": {"$contains": "EM-7777"}}),
    ("eq", "greek", {"name": "élément-αλφα-77777"}),
    ("in (20, hashed)", "greek", {"name": {"$in": ["élément-αλφα-%d" % (i * 4999)
                                                   for i in range(20)]}}),
    ("contains", "greek", {"name": {"$contains": "ΦΑ-7777"}}),
]


def load(port, token, coll, pattern, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for s in range(0, n, 1000):
        data = {"k%d" % i: {"name": pattern % i, "group": i % 100} for i in range(s, min(n, s + 1000))}
        c.request("POST", "/set", json.dumps({"collection": coll, "data": data}),
                  {"Content-Type": "application/json", "Authorization": "Bearer " + token})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--docs", type=int, default=100000)
    a = ap.parse_args()
    os.makedirs(run.RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    raw = open(os.path.join(run.RESULTS, "query-fold-%s.raw.log" % stamp), "w")
    work = tempfile.mkdtemp(prefix="mdbfold-")
    conf = os.path.join(work, "bench.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = query-engine\n")
    load_before = open("/proc/loadavg").read().split()[:3]
    servers = {}
    try:
        for name in ("before", "after"):
            build = os.path.abspath(getattr(a, name))
            port = run.free_port()
            log = open(os.path.join(work, name + ".log"), "wb")
            run.start([os.path.join(build, "moltendb"), "--config", conf, "--module-dir",
                       os.path.join(build, "modules"), "--dev-mode", "--host", "127.0.0.1", "--port",
                       str(port), "--threads", "1", "--jwt-secret", "bench-secret-0123456789abcdef0123",
                       "--root-user", "bench", "--root-password", "bench-password",
                       "--rate-limit-requests", "1000000000"], "1", log)
            run.wait_port(port)
            st, body = run.post(port, "/login", {"username": "bench", "password": "bench-password"})
            token = json.loads(body)["token"]
            for coll, pattern in WORDS.items():
                load(port, token, coll, pattern, a.docs)
            servers[name] = (port, token)
        res = {}
        for rnd in range(a.rounds):
            for label, coll, where in QUERIES:
                body = json.dumps({"collection": coll, "where": where, "count": 10}, ensure_ascii=False)
                for name in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
                    port, token = servers[name]
                    st, reply = run.post(port, "/get", json.loads(body), token)
                    assert st == 200, (name, body, st, reply[:200])  # both builds agree here
                    r = run.wrk(port, "get_body.lua", "pinned", a.duration,
                                {"MDB_TOKEN": token, "MDB_BODY": body}, raw, conns=1)
                    res.setdefault((label, coll, name), []).append(r)
            print("round %d done" % (rnd + 1), flush=True)
    finally:
        run.stop_all()
        raw.close()
    load_after = open("/proc/loadavg").read().split()[:3]
    out = ["# Case-insensitive where queries, before and after, %s UTC\n"
           % time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "Machine: nproc %d; load average %s at the start, %s at the end. %d documents per "
           "collection, `wrk -t1 -c1 -d %s` on CPU 0, server `--threads 1` on CPU 1, %d interleaved "
           "rounds (medians), storage-memory (`bench/query/fold.py`). before = `%s`, after = `%s`. "
           "Raw output: `query-fold-%s.raw.log`.\n"
           % (os.cpu_count(), " ".join(load_before), " ".join(load_after), a.docs, a.duration,
              a.rounds, a.before, a.after, stamp),
           "| query | strings | before p50 ms | after p50 ms | after/before | before req/s | after req/s |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for label, coll, where in QUERIES:
        b, f = res[(label, coll, "before")], res[(label, coll, "after")]
        bp, fp = run.med(b, "p50"), run.med(f, "p50")
        out.append("| %s | %s | %.2f | %.2f | %.2f | %.1f | %.1f |" % (
            label, coll, bp, fp, fp / bp, run.med(b, "rps"), run.med(f, "rps")))
    run.write_results(out, "query-fold-%s.md" % stamp)


if __name__ == "__main__":
    try:
        main()
    finally:
        run.stop_all()
