"""auth-jwt seen from other modules and from the outside: the 403 texts of
query-engine routes driven by delegated scopes (exact, prefix, collection
and wildcard), revocation taking effect on the next request despite the
token cache, refresh raced from many threads, configuration from the
environment, and refusal to start without an auth provider."""
import json
import threading
import time

import mdbtest
from mdbtest import Server, expect_error, run_binary

AUTH_ONLY = ["storage-memory", "auth-jwt"]
WITH_QE = ["storage-memory", "auth-jwt", "query-engine"]


def need_qe():
    if not mdbtest.module_available("query-engine"):
        mdbtest.skip("query-engine is not built")


def delegate(s, scopes, client="client", ttl=None):
    body = {"client_id": client, "scopes": scopes}
    if ttl is not None:
        body["ttl_secs"] = ttl
    r = s.post("/auth/delegate", body)
    assert r.status == 200, r
    return r.json


def seed(s):
    data = {"lp1": {"cpu": "a"}, "lp2": {"cpu": "b"}, "store_A_1": {"cpu": "c"},
            "store_A_2": {"cpu": "d"}, "store_B_1": {"cpu": "e"}}
    r = s.post("/set", {"collection": "laptops", "data": data})
    assert r.status == 200, r
    r = s.post("/set", {"collection": "desktops", "data": {"d1": {"x": 1}}})
    assert r.status == 200, r


def keys_of(r):
    assert r.status == 200, r
    body = r.json
    return sorted(d["_key"] for d in (body if isinstance(body, list) else [body]))


def test_403_texts_of_query_routes():
    need_qe()
    with Server(modules=WITH_QE) as s:
        seed(s)
        ro = delegate(s, ["read:laptops:*"])["token"]
        expect_error(s.post("/set", {"collection": "laptops", "data": {"x": {}}}, token=ro), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        expect_error(s.post("/update", {"collection": "laptops", "data": {"lp1": {"a": 1}}},
                            token=ro), 403, "Forbidden: token requires 'write:laptops:*' scope")
        expect_error(s.post("/delete", {"collection": "laptops", "keys": "lp1"}, token=ro), 403,
                     "Forbidden: token requires 'delete:laptops:*' scope")
        expect_error(s.post("/get", {"collection": "desktops"}, token=ro), 403,
                     "Forbidden: token has no read access to collection 'desktops'")
        # A write-level key scope never grants collection-level writes.
        wk = delegate(s, ["write:laptops:lp1"])["token"]
        expect_error(s.post("/set", {"collection": "laptops", "data": {"lp1": {}}}, token=wk), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        key = delegate(s, ["read:laptops:lp1"])["token"]
        expect_error(s.request("GET", "/collections/laptops", token=key), 403,
                     "Forbidden: token requires 'read:laptops:*' scope")
        expect_error(s.post("/get", {"collection": "laptops", "keys": ["lp1", "lp2"]}, token=key),
                     403, "Forbidden: token lacks 'read:laptops:lp2' scope")
        expect_error(s.request("GET", "/collections/laptops/docs/lp2", token=key), 403,
                     "Forbidden: token lacks 'read:laptops:lp2' scope")
        # What the same tokens may do.
        assert s.post("/get", {"collection": "laptops", "keys": "lp1"}, token=ro).status == 200
        assert keys_of(s.post("/get", {"collection": "laptops"}, token=key)) == ["lp1"]
        r = s.request("GET", "/collections/laptops/docs/lp1", token=key)
        assert r.status == 200 and r.json["_key"] == "lp1", r
        # The module's own admin-only routes refuse scoped tokens too.
        expect_error(s.post("/auth/delegate", {"client_id": "x", "scopes": []}, token=ro), 403,
                     "Admin access required to delegate tokens")


def test_prefix_and_wildcard_scopes():
    need_qe()
    with Server(modules=WITH_QE) as s:
        seed(s)
        pre = delegate(s, ["read:laptops:store_A_*", "read:laptops:lp1"])["token"]
        # Prefix plus a concrete key: only keys the patterns match (policy item 5;
        # query-engine returns the union of the exact and prefix patterns).
        got = keys_of(s.post("/get", {"collection": "laptops"}, token=pre))
        assert {"store_A_1", "store_A_2"} <= set(got) <= {"lp1", "store_A_1", "store_A_2"}, got
        # A prefix-only token reads its keys on /get as well (policy item 5).
        only = delegate(s, ["read:laptops:store_B_*"])["token"]
        r = s.post("/get", {"collection": "laptops"}, token=only)
        assert keys_of(r) == ["store_B_1"], r
        assert keys_of(s.post("/get", {"collection": "laptops", "keys": ["store_A_2", "lp1"]},
                              token=pre)) == ["lp1", "store_A_2"]
        expect_error(s.post("/get", {"collection": "laptops", "keys": ["store_B_1"]}, token=pre),
                     403, "Forbidden: token lacks 'read:laptops:store_B_1' scope")
        r = s.request("GET", "/collections/laptops/docs/store_A_1", token=pre)
        assert r.status == 200, r
        anycoll = delegate(s, ["read:*:*"])["token"]
        assert len(keys_of(s.post("/get", {"collection": "laptops"}, token=anycoll))) == 5
        assert keys_of(s.post("/get", {"collection": "desktops"}, token=anycoll)) == ["d1"]
        expect_error(s.post("/set", {"collection": "desktops", "data": {"d2": {}}}, token=anycoll),
                     403, "Forbidden: token requires 'write:desktops:*' scope")
        # No action wildcard: '*:laptops:*' grants nothing and is refused at delegation.
        r = s.post("/auth/delegate", {"client_id": "c", "scopes": ["*:laptops:*"]})
        expect_error(r, 400, "Invalid scope '*:laptops:*'. Expected format: 'action:collection:key'")
        # A delegated admin token reaches everything.
        adm = delegate(s, ["*:*:*"], client="ops")["token"]
        assert s.post("/delete", {"collection": "desktops", "keys": "d1"}, token=adm).status == 200


def test_revocation_beats_the_token_cache():
    need_qe()
    with Server(modules=WITH_QE) as s:
        seed(s)
        t = delegate(s, ["read:laptops:*"])
        for _ in range(5):  # verified once, then served from the cache
            assert s.post("/get", {"collection": "laptops", "keys": "lp1"},
                          token=t["token"]).status == 200
        r = s.request("DELETE", "/auth/tokens/" + t["jti"], {}, token=s.login())
        assert r.status == 200, r
        expect_error(s.post("/get", {"collection": "laptops", "keys": "lp1"}, token=t["token"]),
                     401, "Token has been revoked")
        # Other tokens are unaffected.
        other = delegate(s, ["read:laptops:*"])["token"]
        assert s.post("/get", {"collection": "laptops", "keys": "lp1"}, token=other).status == 200


def test_refresh_cannot_be_spent_twice():
    with Server(modules=AUTH_ONLY) as s:
        t = delegate(s, ["read:a:*"])["token"]
        results = []
        lock = threading.Lock()
        start = threading.Event()

        def worker():
            start.wait()
            r = s.request("POST", "/auth/refresh", token=t)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=worker) for _ in range(12)]
        for th in threads:
            th.start()
        start.set()
        for th in threads:
            th.join()
        ok = [r for r in results if r.status == 200]
        assert len(ok) == 1, results
        for r in results:
            if r.status != 200:
                expect_error(r, 401, "Token has been revoked")
        # The one new token works.
        assert s.request("POST", "/auth/refresh", token=ok[0].json["token"]).status == 200


def test_concurrent_revocations_all_persist():
    with Server(modules=AUTH_ONLY) as s:
        work = s.dir
        root = s.login()
        jtis = ["conc-%02d" % i for i in range(40)]
        errors = []

        def worker(chunk):
            for j in chunk:
                r = s.request("DELETE", "/auth/tokens/" + j, {}, token=root)
                if r.status != 200:
                    errors.append(r)

        threads = [threading.Thread(target=worker, args=(jtis[i::8],)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        saved = json.load(open(work + "/db.revocations.json"))
        assert sorted(k for k in saved["entries"] if k.startswith("conc-")) == jtis
    with Server(modules=AUTH_ONLY, workdir=work) as s:
        # The file passed its check at start-up, and every entry is enforced.
        for j in (jtis[0], jtis[17], jtis[39]):
            tok = mdbtest_forge(j)
            expect_error(s.request("POST", "/auth/refresh", token=tok), 401,
                         "Token has been revoked")
        assert s.request("POST", "/auth/refresh", token=mdbtest_forge("not-revoked")).status == 200


def test_revocation_file_follows_db_path():
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="mdbtest-dbp-")
    os.mkdir(os.path.join(d, "data"))
    with Server(modules=AUTH_ONLY, args=["--db-path", os.path.join(d, "data", "app.db")]) as s:
        t = delegate(s, ["read:a:*"])
        assert s.request("DELETE", "/auth/tokens/" + t["jti"], {}, token=s.login()).status == 200
        assert os.listdir(os.path.join(d, "data")) == ["app.revocations.json"]
        assert not [f for f in os.listdir(s.dir) if "revocations" in f]


def test_revocation_with_storage_wal():
    if not mdbtest.module_available("storage-wal"):
        mdbtest.skip("storage-wal is not built")
    mods = ["storage-wal", "auth-jwt"]
    with Server(modules=mods) as s:
        work = s.dir
        t = delegate(s, ["read:a:*"])
        assert s.request("DELETE", "/auth/tokens/" + t["jti"], {}, token=s.login()).status == 200
    with Server(modules=mods, workdir=work) as s:
        expect_error(s.request("POST", "/auth/refresh", token=t["token"]), 401,
                     "Token has been revoked")


def mdbtest_forge(jti):
    import base64
    import hashlib
    import hmac

    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps({"sub": "x", "jti": jti, "exp": int(time.time()) + 600,
                         "scopes": ["read:a:*"]}).encode())
    sig = hmac.new(mdbtest.JWT_SECRET.encode(), (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64u(sig)


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def test_login_burst_is_bounded():
    # 16 HTTP threads, 16 logins at once: every one succeeds, and the
    # Argon2id checks (64 MiB each) run a few at a time, not all together.
    with Server(modules=AUTH_ONLY, args=["--threads", "16"]) as s:
        before = peak_rss_mib(s.proc.pid)
        results = []
        start = threading.Event()

        def worker():
            start.wait()
            results.append(s.request("POST", "/login", {"username": mdbtest.ROOT_USER,
                                                        "password": mdbtest.ROOT_PASSWORD},
                                     timeout=60))

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for th in threads:
            th.start()
        start.set()
        for th in threads:
            th.join()
        assert [r.status for r in results] == [200] * 16, results
        grew = peak_rss_mib(s.proc.pid) - before
        assert grew < 6 * 64, "peak RSS grew by %d MiB" % grew


def test_config_from_environment():
    env = {"MOLTENDB_JWT_SECRET": mdbtest.JWT_SECRET, "MOLTENDB_ROOT_USER": "envroot",
           "MOLTENDB_ROOT_PASSWORD": "env-pass", "MOLTENDB_ROOT_TOKEN_TTL": "77",
           "MOLTENDB_RATE_LIMIT_REQS": "100000"}
    with Server(modules=AUTH_ONLY, auth=False, env=env) as s:
        r = s.request("POST", "/login", {"username": "envroot", "password": "env-pass"})
        assert r.status == 200, r
        tok = r.json["token"]
        part = tok.split(".")[1]
        import base64
        c = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        assert c["sub"] == "envroot" and c["exp"] - c["iat"] == 77, c
        expect_error(s.request("POST", "/login", {"username": "root", "password": "env-pass"}),
                     401, "Invalid credentials")
        assert "env-pass" not in s.log() and mdbtest.JWT_SECRET not in s.log()


def test_short_secret_warns_but_starts():
    with Server(modules=AUTH_ONLY, auth=False, args=[
            "--jwt-secret", "short", "--root-user", "root", "--root-password", "pw",
            "--rate-limit-requests", "100000"]) as s:
        assert s.request("POST", "/login", {"username": "root", "password": "pw"}).status == 200
        log = s.log()
        assert "shorter than 32 bytes" in log, log
        assert "short" not in log.replace("shorter", ""), log


def test_bad_trusted_proxies_refuse_start():
    s = Server(modules=AUTH_ONLY, start=False, args=["--trusted-proxies", "10.0.0.1,not-an-ip"])
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    assert "trusted-proxies" in s.log(), s.log()


def get_from(s, source_ip, headers=None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10,
                                      source_address=(source_ip, 0))
    conn.request("GET", "/system/health", headers=headers or {})
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def test_trusted_proxy_cidr():
    with Server(modules=AUTH_ONLY, auth=False, args=[
            "--jwt-secret", mdbtest.JWT_SECRET, "--root-user", "root", "--root-password", "pw",
            "--rate-limit-requests", "2", "--rate-limit-window", "60",
            "--trusted-proxies", " 10.9.9.9 , 127.0.0.64/26 "]) as s:
        # 127.0.0.70 is inside 127.0.0.64/26: its forwarded client is counted.
        xff = {"X-Forwarded-For": "203.0.113.7"}
        assert [get_from(s, "127.0.0.70", xff) for _ in range(3)] == [200, 200, 429]
        assert get_from(s, "127.0.0.71", xff) == 429  # same client via another proxy
        assert get_from(s, "127.0.0.71", {"X-Forwarded-For": "203.0.113.8"}) == 200
        # 127.0.0.200 is outside the range: the header is ignored, the peer counts.
        assert [get_from(s, "127.0.0.200", xff) for _ in range(3)] == [200, 200, 429]
        assert get_from(s, "127.0.0.200", {"X-Forwarded-For": "198.51.100.1"}) == 429
        # A forwarded value that is not an address falls back to X-Real-IP, then the peer.
        assert get_from(s, "127.0.0.72", {"X-Forwarded-For": "junk",
                                          "X-Real-IP": "198.51.100.2"}) == 200


def test_no_auth_provider_refuses_start():
    s = Server(modules=["storage-memory"], start=False)
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    log = s.log()
    assert "auth" in log, log


def test_hostile_inputs_never_crash():
    with Server(modules=AUTH_ONLY) as s:
        for body in ({"username": "root", "password": None},
                     {"username": {"a": 1}, "password": "x"},
                     {"username": "root", "password": "p" * 100000},
                     {"username": "root"},
                     "just a string", 12, None):
            r = s.request("POST", "/login", body)
            expect_error(r, 400)
        # An embedded NUL does not cut the password or the name short.
        for body in ({"username": mdbtest.ROOT_USER, "password": mdbtest.ROOT_PASSWORD + "\u0000x"},
                     {"username": mdbtest.ROOT_USER + "\u0000x", "password": mdbtest.ROOT_PASSWORD}):
            expect_error(s.request("POST", "/login", body), 401, "Invalid credentials")
        # Every form of broken bearer token gets a 401 envelope.
        for tok in ("", ".", "..", "a.b", "a.b.c.d", "\u00e9t\u00e9.x.y", "eyJ.eyJ.", "x" * 9000):
            r = s.request("POST", "/auth/refresh",
                          headers={"Authorization": ("Bearer " + tok).encode("utf-8")})
            expect_error(r, 401)
        r = s.request("POST", "/auth/refresh", headers={"Authorization": "Bearer"})
        expect_error(r, 401, "Missing or invalid Authorization header")
        # Not ASCII: the header itself is invalid (behavior.md 3.1 item 1).
        r = s.request("POST", "/auth/refresh",
                      headers={"Authorization": b"Bearer \xff\xfe\x80.x.y"})
        expect_error(r, 401, "Missing or invalid Authorization header")
        # Delegation with hostile shapes.
        for body in ({"client_id": "x" * 100000, "scopes": []},
                     {"client_id": "", "scopes": []},
                     {"client_id": "x", "scopes": [["read:a:*"]]},
                     {"client_id": "x", "scopes": ["read:a:*"], "ttl_secs": 1e300},
                     {"client_id": "x", "scopes": ["read:a:*"], "ttl_secs": 10 ** 30},
                     {"client_id": "x", "scopes": ["read:a:" + "k" * 10000]},
                     {"client_id": "a\u0000b", "scopes": []},
                     {"client_id": "x", "scopes": ["read:a:k\u0000x"]}):
            expect_error(s.post("/auth/delegate", body), 400)
        expect_error(s.request("DELETE", "/auth/tokens/" + "j" * 500, {}, token=s.login()), 400)
        # Within the scope count, but the token would be too big to ever use.
        many = ["read:a_rather_long_collection_name_%03d:*" % i for i in range(400)]
        expect_error(s.post("/auth/delegate", {"client_id": "x", "scopes": many}), 400,
                     "Scopes too large: the token would exceed 8192 bytes")
        # The largest token that is minted also works.
        fits = ["read:c%03d:*" % i for i in range(300)]
        r = s.post("/auth/delegate", {"client_id": "x", "scopes": fits})
        assert r.status == 200, r
        assert s.request("POST", "/auth/refresh", token=r.json["token"]).status == 200
        assert s.request("GET", "/system/health").status == 200


def test_print_config_lists_keys():
    conf = mdbtest.tempfile.mkdtemp() + "/m.conf"
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\n[auth-jwt]\nmax-tracked-peers = 500\n")
    rc, out, err = run_binary(["--config", conf, "--module-dir", mdbtest.MODULE_DIR,
                               "--print-config", "--root-password", "hunter2-secret",
                               "--jwt-secret", "jwt-very-secret", "--root-user", "root"])
    assert rc == 0, err
    assert "hunter2" not in out + err and "jwt-very-secret" not in out + err
    assert "auth-jwt.max-tracked-peers = 500" in out, out
    assert "auth-jwt.rate-limit-window = 60" in out, out


if __name__ == "__main__":
    mdbtest.main()
