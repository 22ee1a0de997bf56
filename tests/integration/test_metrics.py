"""The metrics module end to end: GET /system/metrics (upstream JSON shape,
admin only), GET /metrics (Prometheus text 0.0.4 checked by the real
promtool), counters that move by exactly what the test did, and a fixture
module publishing its own metrics through the SDK.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import mdbtest
from mdbtest import expect_error

SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODDIR = "%s:%s" % (mdbtest.MODULE_DIR, mdbtest.FIXTURE_DIR)
MEM = ["storage-memory", "auth-jwt", "query-engine", "metrics"]
WAL = ["storage-wal", "auth-jwt", "query-engine", "metrics"]
CTYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)$')


def need(mods):
    for m in mods:
        if not (mdbtest.module_available(m) or mdbtest.module_available(m, mdbtest.FIXTURE_DIR)):
            mdbtest.skip("module %s is not built" % m)


def server(mods=MEM, **kw):
    need(mods)
    return mdbtest.Server(modules=mods, module_dir=MODDIR, **kw)


def delegate(s, scopes):
    r = s.post("/auth/delegate", {"client_id": "svc", "scopes": scopes})
    assert r.status == 200, r
    return r.json["token"]


def scrape(s, token=None):
    r = s.request("GET", "/metrics", token=token or s.login())
    assert r.status == 200, r
    assert r.header("Content-Type") == CTYPE, r.headers
    return r.body.decode()


def samples(text):
    """{'name{labels}': float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def promtool_check(text):
    tool = shutil.which("promtool")
    assert tool, "promtool is missing (Debian package prometheus; see .ci/install-deps)"
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    assert p.returncode == 0, "promtool: %s %s" % (p.stdout.decode(), p.stderr.decode())


def test_access_rules():
    s = server()
    try:
        for path in ("/system/metrics", "/metrics"):
            r = s.request("GET", path)
            expect_error(r, 401)
            scoped = delegate(s, ["read:laptops:*", "write:laptops:*"])
            expect_error(s.request("GET", path, token=scoped), 403, "Admin access required")
            assert s.request("GET", path, token=s.login()).status == 200
    finally:
        s.stop()


def check_json_shape(body, mode):
    assert set(body) == {"uptime_seconds", "process", "host", "database"}, body
    assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0
    assert set(body["process"]) == {"memory_used_bytes"}
    assert isinstance(body["process"]["memory_used_bytes"], int)
    assert body["process"]["memory_used_bytes"] > 1 << 20
    mem = body["host"]["memory"]
    assert set(mem) == {"total_bytes", "used_bytes", "free_bytes"}
    assert all(isinstance(v, int) for v in mem.values())
    assert mem["used_bytes"] + mem["free_bytes"] == mem["total_bytes"] > 0
    disks = body["host"]["disks"]
    assert isinstance(disks, list) and disks
    for d in disks:
        assert set(d) == {"mount", "total_bytes", "used_bytes", "available_bytes"}, d
        assert isinstance(d["mount"], str) and d["mount"].startswith("/")
        assert d["used_bytes"] == d["total_bytes"] - d["available_bytes"]
    assert len({d["mount"] for d in disks}) == len(disks)
    db = body["database"]
    assert set(db) == {"hot_keys_count", "wal_size_bytes", "storage_mode"}, db
    assert db["storage_mode"] == mode
    assert isinstance(db["hot_keys_count"], int) and isinstance(db["wal_size_bytes"], int)
    return db


def test_json_shape_in_memory():
    s = server()
    try:
        db = check_json_shape(s.request("GET", "/system/metrics", token=s.login()).json,
                              "in-memory")
        assert db == {"hot_keys_count": 0, "wal_size_bytes": 0, "storage_mode": "in-memory"}
        r = s.post("/set", {"collection": "c", "data": {"a": {"x": 1}, "b": {"x": 2}}})
        assert r.status == 200, r
        db = s.request("GET", "/system/metrics", token=s.login()).json["database"]
        assert db["hot_keys_count"] == 2 and db["wal_size_bytes"] == 0
    finally:
        s.stop()


def test_json_shape_wal():
    for mode in ("async", "sync"):
        s = server(WAL, args=["--write-mode", mode, "--disable-encryption"])
        try:
            r = s.post("/set", {"collection": "c", "data": {"k%d" % i: {"i": i} for i in range(5)}})
            assert r.status == 200, r
            db = check_json_shape(s.request("GET", "/system/metrics", token=s.login()).json, mode)
            assert db["hot_keys_count"] == 5
            assert db["wal_size_bytes"] > 0
        finally:
            s.stop()


def test_prometheus_text_passes_promtool():
    # every module that publishes metrics, so promtool sees all of them
    s = server(WAL + ["ttl-sweeper", "ws-push", "metrics-fixture"], args=["--disable-encryption"])
    try:
        s.post("/set", {"collection": "c", "data": {"a": {"x": 1}}})
        s.request("POST", "/fixture/hit/red", raw=b'{"a":1}')
        text = scrape(s)
        promtool_check(text)
        # every metric has HELP and TYPE, and carries the prefix
        names = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        assert names, text
        for name, typ in names:
            assert name.startswith("moltendb_"), name
            assert ("# HELP %s " % name) in text
            assert (typ == "counter") == name.endswith("_total"), name
    finally:
        s.stop()


def test_counters_move_by_exactly_what_was_done():
    s = server()
    try:
        key = 'moltendb_store_records_committed_total{op="insert"}'
        before = samples(scrape(s))
        n = 37
        for i in range(n):
            r = s.post("/set", {"collection": "c%d" % (i % 3), "data": {"k%d" % i: {"i": i}}})
            assert r.status == 200, r
        r = s.post("/delete", {"collection": "c0", "keys": ["k0", "k3"]})
        assert r.status == 200, r
        after = samples(scrape(s))
        assert after[key] - before[key] == n, (before[key], after[key])
        dkey = 'moltendb_store_records_committed_total{op="delete"}'
        assert after[dkey] - before[dkey] == 2
        assert after["moltendb_store_documents"] == n - 2
        assert after["moltendb_store_collections"] == 3
    finally:
        s.stop()


def settled(s, want, timeout=10.0):
    """Scrape until every key of `want` has exactly its value: a request's
    completion is counted just after its last byte leaves, so the count
    may lag the client by a moment (bounded wait). Returns the samples."""
    deadline = time.time() + timeout
    while True:
        v = samples(scrape(s))
        if all(v.get(k) == x for k, x in want.items()) or time.time() > deadline:
            for k, x in want.items():
                assert v.get(k) == x, "%s = %r, expected %r" % (k, v.get(k), x)
            return v
        time.sleep(0.05)


def test_http_request_metrics():
    s = server()
    try:
        s.post("/set", {"collection": "c", "data": {"a": {"x": 1}}})
        tok = s.login()
        ok = 'moltendb_http_requests_total{route="/get",class="2xx"}'
        nf = 'moltendb_http_requests_total{route="/get",class="4xx"}'
        none = 'moltendb_http_requests_total{route="none",class="4xx"}'
        dur = 'moltendb_http_request_duration_seconds_count{route="/get"}'
        quiet = {"moltendb_http_requests_in_flight": 1}  # only the scrape itself
        before = settled(s, quiet)
        n, body = 23, b'{"collection":"c","keys":"a"}'
        sent = 0
        for _ in range(n):
            r = s.request("POST", "/get", token=tok, raw=body)
            assert r.status == 200, r
            sent += len(r.body)
        r = s.request("POST", "/get", token=tok, raw=b'{"collection":"c","keys":"zz"}')
        assert r.status == 404, r
        sent += len(r.body)
        r = s.request("GET", "/no/such/route", token=tok)
        assert r.status == 404, r
        sent += len(r.body)
        after = settled(s, {ok: before[ok] + n, nf: before[nf] + 1, none: before[none] + 1,
                            dur: before[dur] + n + 1, **quiet})
        got_in = after["moltendb_http_received_bytes_total"] - before["moltendb_http_received_bytes_total"]
        assert got_in == n * len(body) + len(b'{"collection":"c","keys":"zz"}'), got_in
        # the bytes sent also hold the first scrape's answer
        got_out = after["moltendb_http_sent_bytes_total"] - before["moltendb_http_sent_bytes_total"]
        assert got_out >= sent, (got_out, sent)
    finally:
        s.stop()


def test_storage_wal_metrics():
    s = server(WAL, args=["--write-mode", "sync", "--disable-encryption"])
    try:
        s.login()
        before = samples(scrape(s))
        assert before["moltendb_storage_replay_duration_seconds"] >= 0
        assert before["moltendb_storage_read_only"] == 0
        n = 12
        for i in range(n):
            r = s.post("/set", {"collection": "c", "data": {"k%d" % i: {"i": i}, "j%d" % i: {}}})
            assert r.status == 200, r
        v = samples(scrape(s))
        d = lambda k: v[k] - before[k]
        assert d("moltendb_storage_appends_total") == n
        assert d("moltendb_storage_records_appended_total") == 2 * n
        # sync mode: every acknowledged write was covered by an fdatasync, and
        # each fdatasync made one group of batches durable
        syncs = d("moltendb_storage_fdatasyncs_total")
        assert 1 <= syncs <= n, syncs
        assert d("moltendb_storage_group_commit_batches_count") == syncs
        assert d("moltendb_storage_group_commit_batches_sum") == n
        assert v["moltendb_storage_log_bytes"] > 0
        assert d("moltendb_storage_written_bytes_total") > 0
        assert v["moltendb_storage_snapshot_last_success_time_seconds"] == 0
        t0 = time.time()
        r = s.post("/snapshot", {})
        assert r.status == 200, r
        v = samples(scrape(s))
        assert d('moltendb_storage_snapshots_total{result="ok"}') == 1
        assert d('moltendb_storage_snapshots_total{result="failed"}') == 0
        assert v["moltendb_storage_snapshot_duration_seconds_count"] == 1
        assert v["moltendb_storage_snapshot_bytes"] > 0
        assert int(t0) <= v["moltendb_storage_snapshot_last_success_time_seconds"] <= time.time()
    finally:
        s.stop()


def test_auth_metrics():
    s = server()
    try:
        tok = s.login()
        before = settled(s, {"moltendb_http_requests_in_flight": 1})
        r = s.request("POST", "/login", {"username": mdbtest.ROOT_USER, "password": "wrong"})
        expect_error(r, 401)
        scoped = delegate(s, ["read:c:*"])
        expect_error(s.request("GET", "/metrics", token=scoped), 403)
        expect_error(s.request("GET", "/metrics", token="not.a.token"), 401)
        expect_error(s.request("GET", "/metrics"), 401)
        r = s.request("DELETE", "/auth/tokens/some-jti", token=tok)
        assert r.status == 200, r
        v = settled(s, {"moltendb_http_requests_in_flight": 1,
                        'moltendb_http_denied_total{status="403"}':
                            before['moltendb_http_denied_total{status="403"}'] + 1,
                        'moltendb_http_denied_total{status="401"}':
                            before['moltendb_http_denied_total{status="401"}'] + 3})
        d = lambda k: v[k] - before[k]
        assert d('moltendb_auth_logins_total{result="ok"}') == 0
        assert d('moltendb_auth_logins_total{result="failed"}') == 1
        assert d('moltendb_auth_tokens_minted_total{kind="delegate"}') == 1
        assert d('moltendb_auth_tokens_minted_total{kind="login"}') == 0
        assert d("moltendb_auth_tokens_revoked_total") == 1
        assert d("moltendb_auth_rejected_total") == 2
        assert before['moltendb_auth_logins_total{result="ok"}'] == 1
    finally:
        s.stop()


def test_ttl_metrics():
    s = server(MEM + ["ttl-sweeper"])
    try:
        r = s.post("/set", {"collection": "brief", "ttl": 1,
                            "data": {"k%d" % i: {"i": i} for i in range(4)}})
        assert r.status == 200, r
        r = s.post("/set", {"collection": "later", "ttl": 3600, "data": {"a": {}}})
        assert r.status == 200, r
        v = samples(scrape(s))
        assert v["moltendb_ttl_collections_scheduled"] in (1, 2)  # brief may be gone already
        settled(s, {"moltendb_ttl_collections_expired_total": 1,
                    "moltendb_ttl_documents_dropped_total": 4,
                    "moltendb_ttl_collections_scheduled": 1}, timeout=20)
    finally:
        s.stop()


def test_process_metrics():
    s = server()
    try:
        v = samples(scrape(s))
        assert v["moltendb_process_resident_memory_bytes"] > 1 << 20
        assert v["moltendb_process_open_fds"] >= 3
        assert v["moltendb_process_threads"] >= 2
        assert v["moltendb_process_start_time_seconds"] > 1.7e9
    finally:
        s.stop()


def test_fixture_module_metrics():
    s = server(MEM + ["metrics-fixture"])
    try:
        for _ in range(3):
            assert s.request("POST", "/fixture/hit/red", raw=b"x" * 10).status == 200
        assert s.request("POST", "/fixture/hit/green", raw=b"y" * 300).status == 200
        expect_error(s.request("POST", "/fixture/hit/blue", raw=b"z"), 400)
        v = samples(scrape(s))
        assert v['moltendb_fixture_hits_total{color="red"}'] == 3
        assert v['moltendb_fixture_hits_total{color="green"}'] == 1
        assert v['moltendb_fixture_body_bytes_bucket{le="1"}'] == 0
        assert v['moltendb_fixture_body_bytes_bucket{le="16"}'] == 3
        assert v['moltendb_fixture_body_bytes_bucket{le="256"}'] == 3
        assert v['moltendb_fixture_body_bytes_bucket{le="4096"}'] == 4
        assert v['moltendb_fixture_body_bytes_bucket{le="+Inf"}'] == 4
        assert v["moltendb_fixture_body_bytes_count"] == 4
        assert v["moltendb_fixture_body_bytes_sum"] == 330
        assert v["moltendb_fixture_last_body_bytes"] == 300
        # registering after init() is refused, and nothing appears
        r = s.request("GET", "/fixture/late")
        assert r.json["rc"] == -1, r  # -EPERM
        assert "fixture_late_total" not in scrape(s)
        assert "may only be registered from init()" in s.log()
    finally:
        s.stop()


def dashboard_exprs():
    path = os.path.join(SOURCE_DIR, "packaging", "grafana", "moltendb.json")
    with open(path) as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"]
    exprs = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            exprs.append(t["expr"])
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            exprs.append(v["definition"])
    assert len(exprs) > 20, exprs
    return exprs


def test_grafana_dashboard_uses_only_real_metrics():
    exprs = dashboard_exprs()
    # every module that publishes metrics, so the coverage check below sees them all
    s = server(WAL + ["ttl-sweeper", "ws-push"], args=["--disable-encryption"])
    try:
        text = scrape(s)
    finally:
        s.stop()
    names = set(k.split("{")[0] for k in samples(text))
    series = set(samples(text))
    used = set()
    for e in exprs:
        for name in re.findall(r"\bmoltendb_[a-zA-Z0-9_]+", e):
            assert name in names, "dashboard uses %s, which no scrape shows (%s)" % (name, e)
            used.add(name)
        # label matchers name label values that exist
        for name, labels in re.findall(r"\b(moltendb_[a-zA-Z0-9_]+)\{([^}]*)\}", e):
            for k, v in re.findall(r'(\w+)="([^"]*)"', labels):
                assert any(x.startswith(name + "{") and ('%s="%s"' % (k, v)) in x
                           for x in series), "no series %s{%s=%r}" % (name, k, v)
    # and the dashboard covers every family the server publishes
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for fam in families:
        assert any(u == fam or u.startswith(fam + "_") for u in used), "not on the dashboard: " + fam
    # every expression is valid PromQL: promtool parses them as recording rules
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "moltendb:panel_%d" % i,
         "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(x for x in exprs if not x.startswith("label_values"))]}]}
    d = tempfile.mkdtemp(prefix="mdbtest-grafana-")
    path = os.path.join(d, "rules.yml")
    with open(path, "w") as f:
        json.dump(rules, f)  # JSON is YAML
    tool = shutil.which("promtool")
    assert tool, "promtool is missing"
    p = subprocess.run([tool, "check", "rules", path], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    shutil.rmtree(d)


def test_separate_listener():
    port = mdbtest.free_port()
    s = server(args=["--metrics-listen", "127.0.0.1:%d" % port])
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")  # no token
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, (r.status, body)
        assert r.getheader("Content-Type") == CTYPE
        assert "# TYPE moltendb_http_requests_total counter" in body
        promtool_check(body)
        for method, path, status in (("GET", "/system/metrics", 404), ("GET", "/", 404),
                                     ("POST", "/metrics", 405)):
            c.request(method, path, body=b"{}" if method == "POST" else None)
            r = c.getresponse()
            data = r.read()
            assert r.status == status, (method, path, r.status)
            assert json.loads(data)["statusCode"] == status
        c.close()
        # the main listener still wants an admin token
        expect_error(s.request("GET", "/metrics"), 401)
        assert "serving GET /metrics without authentication" in s.log()
    finally:
        s.stop()


def test_listener_is_off_by_default_and_bad_addresses_refused():
    s = server()
    try:
        assert "without authentication" not in s.log()
    finally:
        s.stop()
    for bad in ("9538", "localhost:9538", "127.0.0.1:0", "127.0.0.1:70000", "[::1]9538"):
        s = server(args=["--metrics-listen", bad], wait=False)
        rc = s.wait_exit(timeout=60)
        assert rc != 0, bad
        assert "expected an IP address and a port" in s.log(), s.log()


def listener_samples(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, r.status
        return samples(body)
    finally:
        c.close()


def test_rate_limited_requests_are_counted():
    port = mdbtest.free_port()
    # the last --rate-limit-requests wins over the harness's own
    s = server(args=["--metrics-listen", "127.0.0.1:%d" % port, "--rate-limit-requests", "5"])
    try:
        limited = 0
        for _ in range(12):
            r = s.request("GET", "/system/health")
            if r.status == 429:
                limited += 1
        assert limited >= 6, limited  # the readiness probe used some of the 5
        v = listener_samples(port)
        assert v["moltendb_auth_rate_limited_total"] == limited
    finally:
        s.stop()


if __name__ == "__main__":
    mdbtest.main()
