"""Black-box tests of auth-jwt: login, the 401 forms, every 403 text of the
module, delegation, refresh, revocation (immediate and across restarts),
rate limiting, bad input, and refusal to start without secrets."""
import base64
import hashlib
import hmac
import http.client
import json
import math
import os
import stat
import statistics
import time

import mdbtest
from mdbtest import Server, expect_error, run_binary

MODULES = ["storage-memory", "auth-jwt"]


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claims_of(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def forge(claims, secret=mdbtest.JWT_SECRET, alg="HS256", header=None):
    h = b64u(json.dumps(dict({"alg": alg, "typ": "JWT"}, **(header or {}))).encode())
    p = b64u(json.dumps(claims).encode())
    if alg == "none":
        return h + "." + p + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), (h + "." + p).encode(), digest).digest()
    return h + "." + p + "." + b64u(sig)


def delegate(s, scopes, client="client", ttl=None, token=None):
    body = {"client_id": client, "scopes": scopes}
    if ttl is not None:
        body["ttl_secs"] = ttl
    return s.post("/auth/delegate", body, token=token)


def test_login_ok_and_claims():
    with Server(modules=MODULES, args=["--root-token-ttl", "1234"]) as s:
        r = s.request("POST", "/login", {"username": mdbtest.ROOT_USER,
                                         "password": mdbtest.ROOT_PASSWORD})
        assert r.status == 200, r
        tok = r.json["token"]
        head = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
        assert head["alg"] == "HS256"
        c = claims_of(tok)
        assert c["sub"] == mdbtest.ROOT_USER
        assert c["scopes"] == ["*:*:*"]
        assert c["exp"] - c["iat"] == 1234
        assert abs(c["iat"] - time.time()) < 30
        assert len(c["jti"]) == 36
        # Signed with --jwt-secret: a token we sign the same way is accepted.
        mine = forge({"sub": "x", "jti": "j1", "exp": int(time.time()) + 60, "scopes": []})
        r = s.request("POST", "/auth/refresh", token=mine)
        assert r.status == 200, r


def test_login_failures_look_the_same():
    with Server(modules=MODULES) as s:
        bad_pw = {"username": mdbtest.ROOT_USER, "password": "wrong"}
        bad_user = {"username": "nobody", "password": mdbtest.ROOT_PASSWORD}
        t_pw, t_user = [], []
        for _ in range(8):
            t0 = time.time()
            expect_error(s.request("POST", "/login", bad_pw), 401, "Invalid credentials")
            t_pw.append(time.time() - t0)
            t0 = time.time()
            expect_error(s.request("POST", "/login", bad_user), 401, "Invalid credentials")
            t_user.append(time.time() - t0)
        # Both run the Argon2id check (tens of ms): same cost. An unknown
        # user that skipped it would answer in well under a millisecond, a
        # ratio near 100; a loaded machine (2 cores, shared) has been seen to
        # stretch the minimum of one side threefold, so the bound is 10.
        a, b = min(t_pw), min(t_user)
        assert max(a, b) / min(a, b) < 10, (t_pw, t_user)
        assert statistics.median(t_user) > 0.005, t_user


def test_unknown_crit_header_is_refused():
    """RFC 7515 section 4.1.11: a token naming header extensions the server
    does not understand in "crit" is not accepted, even if well signed."""
    with Server(modules=MODULES) as s:
        claims = {"sub": "x", "jti": "c1", "exp": int(time.time()) + 60, "scopes": []}
        assert s.request("POST", "/auth/refresh", token=forge(claims)).status == 200
        for crit in (["b64"], ["exp"], "b64", []):
            claims["jti"] = "c-%r" % (crit,)
            r = s.request("POST", "/auth/refresh", token=forge(claims, header={"crit": crit}))
            expect_error(r, 401)


def test_revocation_with_huge_exp_is_kept():
    """An exp near INT64_MAX saturates: the entry stays (it used to wrap to a
    past deadline, be pruned, and let the token in again)."""
    with Server(modules=MODULES) as s:
        t = delegate(s, ["read:a:*"]).json
        r = s.request("DELETE", "/auth/tokens/" + t["jti"], {"exp": 9223372036854775807},
                      token=s.login())
        assert r.status == 200, r
        work = s.dir
    with Server(modules=MODULES, workdir=work) as s:
        assert "ready: 1 revoked token id(s) remembered" in s.log(), s.log()
        expect_error(s.request("POST", "/auth/refresh", token=t["token"]), 401,
                     "Token has been revoked")


def test_login_bad_input():
    with Server(modules=MODULES) as s:
        expect_error(s.request("POST", "/login", {"username": "root"}), 400,
                     "'username' and 'password' must be strings")
        expect_error(s.request("POST", "/login", {"username": 5, "password": []}), 400)
        expect_error(s.request("POST", "/login", [1, 2]), 400)
        r = s.request("POST", "/login", raw=b'{"username": "root", "password": ',
                      headers={"Content-Type": "application/json"})
        body = expect_error(r, 400)
        assert "Invalid JSON" in body["error"], body
        r = s.request("POST", "/login", {"username": "u" * 1000000, "password": "p"})
        expect_error(r, 400, "'username' or 'password' is too long")
        r = s.request("POST", "/login", raw=b"\xff\xfe\x00garbage")
        expect_error(r, 400)
        assert s.request("GET", "/system/health").status == 200


def test_401_forms():
    with Server(modules=MODULES) as s:
        missing = "Missing or invalid Authorization header"
        expect_error(s.request("POST", "/auth/refresh"), 401, missing)
        expect_error(s.request("POST", "/auth/refresh", headers={"Authorization": "Basic abc"}),
                     401, missing)
        expect_error(s.request("POST", "/auth/refresh", headers={"Authorization": "bearer x"}),
                     401, missing)
        bad = "Invalid or expired token"
        expect_error(s.request("POST", "/auth/refresh", token="garbage"), 401, bad)
        expect_error(s.request("POST", "/auth/refresh", token="a" * 10240), 401, bad)
        conn = s.connection()
        conn.putrequest("POST", "/auth/refresh")
        conn.putheader("Authorization", b"Bearer \x01\x02\xff\xfe.\x00x.y")
        conn.endheaders()
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 401 and body["error"] in (bad, missing), body
        now = int(time.time())
        expired = forge({"sub": "x", "jti": "j", "exp": now - 30, "scopes": []})
        expect_error(s.request("POST", "/auth/refresh", token=expired), 401, bad)
        # Within the 5 s leeway it still works.
        fresh = forge({"sub": "x", "jti": "j2", "exp": now - 1, "scopes": []})
        assert s.request("POST", "/auth/refresh", token=fresh).status == 200
        wrong_key = forge({"sub": "x", "jti": "j", "exp": now + 60}, secret="not-the-secret")
        expect_error(s.request("POST", "/auth/refresh", token=wrong_key), 401, bad)
        none_alg = forge({"sub": "x", "jti": "j", "exp": now + 60, "scopes": ["*:*:*"]}, alg="none")
        expect_error(s.request("POST", "/auth/refresh", token=none_alg), 401, bad)
        hs512 = forge({"sub": "x", "jti": "j", "exp": now + 60}, alg="HS512")
        expect_error(s.request("POST", "/auth/refresh", token=hs512), 401, bad)
        no_jti = forge({"sub": "x", "exp": now + 60})
        expect_error(s.request("POST", "/auth/refresh", token=no_jti), 401, bad)
        empty_jti = forge({"sub": "x", "jti": "", "exp": now + 60})
        expect_error(s.request("POST", "/auth/refresh", token=empty_jti), 401,
                     "Token missing required jti claim")
        # 10,000 scopes in a token over 8 KiB: refused before any work. (Headers over
        # ~30 KiB are refused by libmicrohttpd itself with 431.)
        many = forge({"sub": "x", "jti": "j", "exp": now + 60,
                      "scopes": ["r:%d:*" % i for i in range(10000)]})
        r = s.request("POST", "/auth/refresh", token=many)
        assert r.status in (401, 431), r
        many = forge({"sub": "x", "jti": "j", "exp": now + 60,
                      "scopes": ["r:%d:*" % i for i in range(1500)]})
        assert len(many) > 8192
        expect_error(s.request("POST", "/auth/refresh", token=many), 401, bad)
        assert s.request("GET", "/system/health").status == 200


def test_delegation_rules_and_403_texts():
    with Server(modules=MODULES) as s:
        r = delegate(s, ["read:laptops:*", "write:laptops:lp1"], client="laptop-svc", ttl=120)
        assert r.status == 200, r
        body = r.json
        assert body["client_id"] == "laptop-svc"
        assert body["scopes"] == ["read:laptops:*", "write:laptops:lp1"]
        c = claims_of(body["token"])
        assert c["sub"] == "laptop-svc" and c["jti"] == body["jti"]
        assert c["exp"] - c["iat"] == 120
        assert c["scopes"] == body["scopes"]
        scoped = body["token"]
        expect_error(delegate(s, ["read:x:*"], token=scoped), 403,
                     "Admin access required to delegate tokens")
        expect_error(s.request("DELETE", "/auth/tokens/abc", {}, token=scoped), 403,
                     "Admin access required to revoke tokens")
        expect_error(s.request("POST", "/snapshot", token=scoped), 403,
                     "Forbidden: snapshot requires admin scope")
        # A delegated admin may delegate, but not mint admin tokens.
        admin2 = delegate(s, ["*:*:*"], client="ops").json["token"]
        expect_error(delegate(s, ["*:*:*"], token=admin2), 403,
                     "Only the root user can mint '*:*:*' (admin) tokens")
        assert delegate(s, ["read:a:*"], token=admin2).status == 200
        expect_error(delegate(s, ["readlaptops"]), 400,
                     "Invalid scope 'readlaptops'. Expected format: 'action:collection:key'")
        expect_error(delegate(s, ["fly:laptops:*"]), 400,
                     "Invalid scope 'fly:laptops:*'. Expected format: 'action:collection:key'")
        expect_error(s.post("/auth/delegate", {"scopes": []}), 400)
        expect_error(s.post("/auth/delegate", {"client_id": "x", "scopes": "read:a:*"}), 400)
        expect_error(s.post("/auth/delegate", {"client_id": "x", "scopes": [1]}), 400)
        expect_error(delegate(s, ["read:a:*"], ttl=-1), 400)
        expect_error(delegate(s, ["read:a:*"], ttl="60"), 400)
        expect_error(delegate(s, ["read:c%d:*" % i for i in range(10000)]), 400,
                     "Too many scopes (max 1024)")
        assert delegate(s, []).status == 200  # an empty scope list is allowed


def test_refresh_rules():
    with Server(modules=MODULES) as s:
        old = delegate(s, ["read:a:*"], client="svc").json
        expect_error(s.request("POST", "/auth/refresh", token=s.login()), 403,
                     "Admin tokens cannot be refreshed \u2014 re-delegate via POST /auth/delegate")
        r = s.request("POST", "/auth/refresh", token=old["token"])
        assert r.status == 200, r
        new = r.json
        assert new["expires_in"] == 3600 and new["jti"] != old["jti"]
        c = claims_of(new["token"])
        assert c["sub"] == "svc" and c["scopes"] == ["read:a:*"] and c["jti"] == new["jti"]
        expect_error(s.request("POST", "/auth/refresh", token=old["token"]), 401,
                     "Token has been revoked")
        r = s.request("POST", "/auth/refresh", {"ttl_secs": 60}, token=new["token"])
        assert r.status == 200 and r.json["expires_in"] == 60, r
        newer = r.json["token"]
        c = claims_of(newer)
        assert c["exp"] - c["iat"] == 60
        expect_error(s.request("POST", "/auth/refresh", {"ttl_secs": "x"}, token=newer), 400)


def test_revocation_immediate_and_persistent():
    work = None
    with Server(modules=MODULES) as s:
        work = s.dir
        t = delegate(s, ["read:a:*"]).json
        assert s.request("POST", "/auth/refresh", token=forge(
            {"sub": "probe", "jti": "probe-1", "exp": int(time.time()) + 60})).status == 200
        r = s.request("DELETE", "/auth/tokens/" + t["jti"], {}, token=s.login())
        assert r.status == 200, r
        assert r.json == {"revoked": t["jti"], "message": "Token has been revoked successfully"}
        expect_error(s.request("POST", "/auth/refresh", token=t["token"]), 401,
                     "Token has been revoked")
        path = os.path.join(work, "db.revocations.json")
        assert os.path.exists(path), os.listdir(work)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        saved = json.load(open(path))
        assert t["jti"] in saved["entries"] and len(saved["sig"]) == 64
    assert mdbtest.JWT_SECRET not in open(os.path.join(work, "server.log")).read()
    with Server(modules=MODULES, workdir=work) as s:
        expect_error(s.request("POST", "/auth/refresh", token=t["token"]), 401,
                     "Token has been revoked")
    # A tampered file refuses to start.
    data = json.load(open(path))
    data["entries"][t["jti"]] = 1
    json.dump(data, open(path, "w"))
    s = Server(modules=MODULES, workdir=work, start=False)
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    assert "revocation list failed its integrity check" in s.log(), s.log()


def test_revocation_write_failure():
    with Server(modules=MODULES) as s:
        # The temp file cannot be created (a directory is in the way), even as root.
        os.mkdir(os.path.join(s.dir, "db.revocations.json.tmp"))
        t = delegate(s, ["read:a:*"]).json
        r = s.request("POST", "/auth/refresh", token=t["token"])
        expect_error(r, 500, "Unexpected error: the old token could not be revoked")
        # All or nothing: the old token still works, and can be refreshed later.
        os.rmdir(os.path.join(s.dir, "db.revocations.json.tmp"))
        r = s.request("POST", "/auth/refresh", token=t["token"])
        assert r.status == 200, r
        os.mkdir(os.path.join(s.dir, "db.revocations.json.tmp"))
        other = delegate(s, ["read:a:*"]).json
        r = s.request("DELETE", "/auth/tokens/" + other["jti"], {}, token=s.login())
        expect_error(r, 500, "Internal error: revocation store unavailable")
        # Not on disk, but refused from now on all the same (fail safe).
        expect_error(s.request("POST", "/auth/refresh", token=other["token"]), 401,
                     "Token has been revoked")
        assert "could not persist the revocation list" in s.log()
        os.rmdir(os.path.join(s.dir, "db.revocations.json.tmp"))


def test_revocation_in_memory_writes_no_file():
    with Server(modules=["storage-memory", "auth-jwt"], args=["--in-memory"]) as s:
        t = delegate(s, ["read:a:*"]).json
        assert s.request("DELETE", "/auth/tokens/" + t["jti"], {}, token=s.login()).status == 200
        expect_error(s.request("POST", "/auth/refresh", token=t["token"]), 401,
                     "Token has been revoked")
        assert not [f for f in os.listdir(s.dir) if "revocations" in f]
        # A jti is printable ASCII (we mint UUIDs): other bytes are refused, so
        # nothing undecodable is stored or echoed back into the JSON reply.
        for bad in ("%ff%fe", "a%0ab", "caf%c3%a9", "a%20b"):
            expect_error(s.request("DELETE", "/auth/tokens/" + bad, {}, token=s.login()), 400,
                         "jti must be printable ASCII")


def request_from(s, source_ip, path="/system/health", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10,
                                      source_address=(source_ip, 0))
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return mdbtest.Response(r.status, r.getheaders(), data)


def test_rate_limit():
    s = Server(modules=MODULES, auth=False, args=[
        "--jwt-secret", mdbtest.JWT_SECRET, "--root-user", "root", "--root-password", "pw",
        "--rate-limit-requests", "5", "--rate-limit-window", "4"], wait=False)
    try:
        time.sleep(0.3)
        deadline = time.time() + 30
        while time.time() < deadline:  # wait for the port without spending the budget
            try:
                import socket
                socket.create_connection(("127.0.0.1", s.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.time()
        for i in range(5):
            r = request_from(s, "127.0.0.1")
            assert r.status == 200, (i, r)
        r = request_from(s, "127.0.0.1")
        elapsed = time.time() - t0
        body = expect_error(r, 429, "Rate limit exceeded")
        assert body["limit"] == 5
        # The real seconds left in the 4 s window, rounded up (not a constant).
        assert math.ceil(4 - elapsed) <= body["retry_after_seconds"] <= 4, (body, elapsed)
        assert r.header("Retry-After") == str(body["retry_after_seconds"])
        # Another peer has its own budget; a spoofed header does not help.
        assert request_from(s, "127.0.0.2").status == 200
        r = request_from(s, "127.0.0.1", headers={"X-Forwarded-For": "9.9.9.9"})
        assert r.status == 429, r
        time.sleep(body["retry_after_seconds"] + 0.2)
        assert request_from(s, "127.0.0.1").status == 200
    finally:
        s.stop()


def test_rate_limit_trusted_proxy():
    with Server(modules=MODULES, auth=False, args=[
            "--jwt-secret", mdbtest.JWT_SECRET, "--root-user", "root", "--root-password", "pw",
            "--rate-limit-requests", "3", "--rate-limit-window", "30",
            "--trusted-proxies", "127.0.0.3"]) as s:
        for _ in range(3):
            assert request_from(s, "127.0.0.3", headers={"X-Forwarded-For": "10.0.0.1"}).status == 200
        r = request_from(s, "127.0.0.3", headers={"X-Forwarded-For": "10.0.0.1, 127.0.0.3"})
        assert r.status == 429, r
        assert request_from(s, "127.0.0.3", headers={"X-Forwarded-For": "10.0.0.2"}).status == 200
        assert request_from(s, "127.0.0.3", headers={"X-Real-IP": "10.0.0.9"}).status == 200


def test_refuses_to_start_without_secrets():
    for missing, flag, env in (("jwt-secret", "--jwt-secret", "MOLTENDB_JWT_SECRET"),
                               ("root-user", "--root-user", "MOLTENDB_ROOT_USER"),
                               ("root-password", "--root-password", "MOLTENDB_ROOT_PASSWORD")):
        args = {"--jwt-secret": mdbtest.JWT_SECRET, "--root-user": "root", "--root-password": "pw"}
        del args[flag]
        s = Server(modules=MODULES, auth=False, start=False,
                   args=[x for kv in args.items() for x in kv])
        s.start(wait=False)
        assert s.wait_exit(30) == 1
        log = s.log()
        assert "auth-jwt.%s is required" % missing in log and flag in log and env in log, log


def test_secrets_not_printed():
    conf = os.path.join(mdbtest.tempfile.mkdtemp(), "m.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\n")
    rc, out, err = run_binary(["--config", conf, "--module-dir", mdbtest.MODULE_DIR,
                               "--print-config", "--jwt-secret", "sekrit-jwt-value",
                               "--root-user", "root", "--root-password", "sekrit-password"])
    assert rc == 0, err
    assert "sekrit" not in out and "sekrit" not in err
    assert "auth-jwt.jwt-secret = (secret, redacted)  # flag:--jwt-secret" in out, out
    assert "auth-jwt.root-user = root" in out



def test_trusted_proxies_skip_the_connection_limit():
    """The proxies auth-jwt trusts for client addresses are not held to
    --max-connections-per-ip (every client arrives through them)."""
    import socket
    # From an address nothing else uses: the harness's own connections from
    # 127.0.0.1 can be counted while the first five arrive, refusing them all,
    # then closed before the sixth, which would then be served.
    for proxies, kept in (("127.0.0.3", True), ("", False)):
        with Server(modules=MODULES, args=["--max-connections-per-ip", "3",
                                           "--trusted-proxies", proxies]) as s:
            socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10,
                                              source_address=("127.0.0.3", 0))
                     for _ in range(6)]
            # A request on the last one: answered only if it was kept.
            socks[-1].sendall(b"GET /system/health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answered = socks[-1].recv(12).startswith(b"HTTP/1.1 200")
            except OSError:
                answered = False
            assert answered == kept, (proxies, answered)
            for c in socks:
                c.close()

if __name__ == "__main__":
    mdbtest.main()
