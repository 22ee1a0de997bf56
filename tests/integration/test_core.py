"""Black-box tests of the core: the real binary with fixture modules only
(storage-memory, the test-only test-auth provider and the skeleton example),
so they do not depend on auth-jwt or query-engine."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import mdbtest
from mdbtest import Server, expect_error, run_binary

MODDIR = "%s:%s" % (mdbtest.MODULE_DIR, mdbtest.FIXTURE_DIR)
CORE_MODULES = ["storage-memory", "test-auth", "skeleton"]
ADMIN = "admin-token"


def core_server(**kw):
    kw.setdefault("modules", CORE_MODULES)
    kw.setdefault("auth", False)
    kw.setdefault("module_dir", MODDIR)
    return Server(**kw)


def test_health_dev_mode():
    with core_server() as s:
        r = s.request("GET", "/system/health")
        assert r.status == 200, r
        assert r.json == {"status": "ok", "message": "MoltenDB is running"}
        assert r.header("Content-Type") == "application/json"
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("X-Frame-Options") == "DENY"
        assert "WARN" in s.log() and "--dev-mode" in s.log()


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_health_over_https():
    d = tempfile.mkdtemp(prefix="mdbtls-")
    cert, key = make_cert(d)
    with core_server(dev_mode=False, args=["--cert", cert, "--key", key]) as s:
        r = s.request("GET", "/system/health")
        assert r.status == 200 and r.json["status"] == "ok", r
        # Plain HTTP on the TLS port gets no HTTP answer.
        conn = socket.create_connection(("127.0.0.1", s.port), timeout=3)
        conn.sendall(b"GET /system/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = conn.recv(100)
        except OSError:
            data = b""
        conn.close()
        assert not data.startswith(b"HTTP/1.1 200"), data


def test_https_missing_cert_is_clear_error():
    d = tempfile.mkdtemp(prefix="mdbtls-")
    s = core_server(dev_mode=False, args=["--cert", os.path.join(d, "nope.pem"),
                                          "--key", os.path.join(d, "nokey.pem")], start=False)
    s.start(wait=False)
    rc = s.wait_exit(20)
    assert rc == 1, rc
    assert "Certificate file not found: %s" % os.path.join(d, "nope.pem") in s.log(), s.log()


def test_404_and_405_bodies():
    with core_server() as s:
        r = s.request("GET", "/no/such/route")
        expect_error(r, 404, "Not found: GET /no/such/route")
        r = s.request("DELETE", "/system/health")
        body = expect_error(r, 405)
        assert "DELETE" in body["error"], body
        assert r.header("Allow") == "GET", r.headers
        # Unknown routes are 404 even without a token (no auth probing).
        r = s.request("POST", "/test/nothing")
        expect_error(r, 404)


def test_auth_gate_and_public_routes():
    with core_server() as s:
        expect_error(s.request("GET", "/test/whoami"), 401, "Missing or invalid Authorization header")
        expect_error(s.request("GET", "/test/whoami", token="wrong"), 401, "Invalid or expired token")
        r = s.request("GET", "/test/whoami", token=ADMIN)
        assert r.status == 200 and r.json == {"sub": "admin"}, r
        # The skeleton's routes are public; its config key comes from the file.
        r = s.request("GET", "/skeleton/hello")
        assert r.json == {"greeting": "hello", "commits": 0}, r
        r = s.request("GET", "/skeleton/echo/abc%20def")
        assert r.json == {"word": "abc def"}, r
        # Its ACCEPT gate can stop a request before routing.
        r = s.request("GET", "/system/health", headers={"X-Skeleton": "teapot"})
        expect_error(r, 418, "I'm a teapot")


def test_json_bodies_are_strict_and_bounded():
    with core_server() as s:
        def post(raw):
            return s.request("POST", "/skeleton/json", raw=raw)
        r = post(b'{"a":"it\'s","b":[1,2]}')
        assert r.status == 200 and r.json == {"type": "object", "size": 2}, r
        # Parsed as JSON whatever the Content-Type says.
        r = s.request("POST", "/skeleton/json", raw=b"[1,2,3]", headers={"Content-Type": "text/plain"})
        assert r.json == {"type": "array", "size": 3}, r
        for bad in (b"{'a':1}", b'{"a":1,}', b'{"a":1} // c', b'{"a":NaN}', b'{"a":Infinity}',
                    b'{"a":1} x', b'{"a":', b"", b"\xff\xfe"):
            body = expect_error(post(bad), 400)
            assert "JSON" in body["error"] or "empty" in body["error"], (bad, body)
        ok = b"[" * 32 + b"1" + b"]" * 32          # the value 1 sits at level 32
        assert post(ok).status == 200
        deep = b"[" * 33 + b"1" + b"]" * 33        # level 33: refused
        expect_error(post(deep), 400, "JSON nesting too deep (max 32 levels)")
        deeper = b"[" * 5000 + b"]" * 5000
        expect_error(post(deeper), 400, "JSON nesting too deep (max 32 levels)")
        assert s.request("GET", "/system/health").status == 200


def test_module_config_precedence():
    conf = "\n[skeleton]\ngreeting = from-file\n"
    with core_server(conf_extra=conf) as s:
        assert s.request("GET", "/skeleton/hello").json["greeting"] == "from-file"
    with core_server(conf_extra=conf, env={"MOLTENDB_SKELETON_GREETING": "from-env"}) as s:
        assert s.request("GET", "/skeleton/hello").json["greeting"] == "from-env"
    with core_server(conf_extra=conf, env={"MOLTENDB_SKELETON_GREETING": "from-env"},
                     args=["--skeleton-greeting", "from-flag"]) as s:
        assert s.request("GET", "/skeleton/hello").json["greeting"] == "from-flag"


def test_body_limit_413():
    with core_server(args=["--max-body-size", "1000"]) as s:
        r = s.request("POST", "/test/echo", raw=b"x" * 999, token=ADMIN)
        assert r.status == 200 and r.body == b"x" * 999, r
        # Declared too large: refused from the headers, before the body.
        r = s.request("POST", "/test/echo", raw=b"x" * 1001, token=ADMIN)
        expect_error(r, 413, "Payload too large (max 1000 bytes)")
        # Chunked and growing past the limit.
        conn = s.connection()
        conn.putrequest("POST", "/test/echo")
        conn.putheader("Authorization", "Bearer " + ADMIN)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(5):
                conn.send(b"200\r\n" + b"y" * 512 + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 413, (resp.status, data)
        assert b"Payload too large" in data
        # The server keeps serving.
        assert s.request("GET", "/system/health").status == 200


def read_all(sock, timeout=10.0):
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_ambiguous_framing_is_refused_and_closed():
    """RFC 9112 section 6.3: two different Content-Lengths, or Content-Length
    with Transfer-Encoding, get a 400 envelope and the connection closes, so
    a request smuggled behind the body is never executed."""
    with core_server() as s:
        auth = "Authorization: Bearer %s\r\n" % ADMIN
        cases = [
            ("POST /test/echo HTTP/1.1\r\nHost: x\r\n" + auth +
             "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
             "Bad request: conflicting Content-Length headers"),
            ("POST /test/echo HTTP/1.1\r\nHost: x\r\n" + auth +
             "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
             "GET /system/health HTTP/1.1\r\nHost: x\r\n\r\n",
             "Bad request: both Content-Length and Transfer-Encoding"),
        ]
        for raw, text in cases:
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(raw.encode())
            data = read_all(c)
            c.close()
            assert data.startswith(b"HTTP/1.1 400"), data
            assert data.count(b"HTTP/1.1 ") == 1, data  # the smuggled GET never ran
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Connection: close" in head, head
            assert json.loads(body) == {"statusCode": 400, "error": text}, body
        # The same value twice is one length, not a conflict.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(("POST /test/echo HTTP/1.1\r\nHost: x\r\n" + auth + "Connection: close\r\n"
                   "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello").encode())
        data = read_all(c)
        c.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"), data
        assert s.request("GET", "/system/health").status == 200


def idle_connections(port, n, source="127.0.0.1"):
    out = []
    for _ in range(n):
        c = socket.socket()
        c.bind((source, 0))
        c.settimeout(10)
        c.connect(("127.0.0.1", port))
        out.append(c)
    return out


def closed_by_server(socks, wait):
    """How many of socks the server closes within wait seconds."""
    import selectors
    sel = selectors.DefaultSelector()
    for c in socks:
        sel.register(c, selectors.EVENT_READ)
    closed = 0
    deadline = time.time() + wait
    while closed < len(socks) and time.time() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.time())):
            try:
                eof = key.fileobj.recv(1) == b""
            except OSError:
                eof = True
            if eof:
                closed += 1
                sel.unregister(key.fileobj)
    sel.close()
    return closed


def test_one_address_cannot_take_every_connection():
    """--max-connections-per-ip: connections past the limit from one address
    are closed at once, other addresses are served, and connections that
    never send a request are dropped after --new-connection-timeout."""
    with core_server(args=["--max-connections-per-ip", "8", "--new-connection-timeout", "4"]) as s:
        # From an address nothing else uses (the harness's own connections
        # from 127.0.0.1 may not have been uncounted yet).
        held = idle_connections(s.port, 8, "127.0.0.3")
        extra = idle_connections(s.port, 4, "127.0.0.3")
        assert closed_by_server(extra, 10) == 4, "connections past the limit stayed open"
        assert closed_by_server(held, 0.2) == 0, "connections within the limit were closed"
        # Another client address is served while 127.0.0.1 is at its limit.
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(10)
        other.connect(("127.0.0.1", s.port))
        other.sendall(b"GET /system/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(other).startswith(b"HTTP/1.1 200")
        other.close()
        # The idle ones are dropped by the short timeout, which frees the address.
        assert closed_by_server(held, 20) == 8, "idle connections were kept"
        for c in held + extra:
            c.close()
        again = idle_connections(s.port, 1, "127.0.0.3")[0]
        again.sendall(b"GET /system/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(again).startswith(b"HTTP/1.1 200")
        again.close()
        # After a request, a keep-alive connection gets the long idle timeout.
        conn = s.connection()
        conn.request("GET", "/system/health")
        assert conn.getresponse().read()
        time.sleep(6)
        conn.request("GET", "/system/health")
        assert conn.getresponse().status == 200
        conn.close()
        assert "refused: it has 8 open (max-connections-per-ip)" in s.log(), s.log()


def test_cors_preflight_and_origin():
    with core_server(args=["--cors-origin", "https://app.example, https://b.example"]) as s:
        r = s.request("OPTIONS", "/test/whoami", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert r.status == 204, r
        assert r.header("Access-Control-Allow-Origin") == "https://app.example"
        assert "GET" in r.header("Access-Control-Allow-Methods")
        r = s.request("GET", "/system/health", headers={"Origin": "https://evil.example"})
        assert r.header("Access-Control-Allow-Origin") is None
        r = s.request("GET", "/system/health", headers={"Origin": "https://b.example"})
        assert r.header("Access-Control-Allow-Origin") == "https://b.example"


def write_conf(text):
    fd, path = tempfile.mkstemp(suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_check_config():
    good = write_conf("module = storage-memory\nmodule = test-auth\nmodule = skeleton\n"
                      "port = 9999\n[skeleton]\ngreeting = hi\n")
    rc, out, err = run_binary(["--config", good, "--module-dir", MODDIR, "--check-config"])
    assert rc == 0, (rc, out, err)
    assert "configuration OK" in out
    bad = write_conf("module = storage-memory\nmodule = test-auth\n\n[skeleton]\ngreeting = hi\n")
    rc, out, err = run_binary(["--config", bad, "--module-dir", MODDIR, "--check-config"])
    assert rc == 1, (rc, out, err)
    assert "%s:5: section [skeleton] belongs to module 'skeleton', which is not loaded" % bad in err, err
    bad2 = write_conf("module = storage-memory\nmodule = test-auth\nport = http\n")
    rc, out, err = run_binary(["--config", bad2, "--module-dir", MODDIR, "--check-config"])
    assert rc == 1 and "%s:3: core.port: 'http' is not an integer" % bad2 in err, err
    bad3 = write_conf("module = storage-memory\nmodule = test-auth\nmodule = abi-major\n")
    rc, out, err = run_binary(["--config", bad3, "--module-dir", MODDIR, "--check-config"])
    assert rc == 1 and "built for ABI 2.0" in err and "abi-major.so" in err, err
    rc, out, err = run_binary(["--config", good, "--module-dir", MODDIR, "--check-config",
                               "--no-such-option"])
    assert rc == 1 and "unknown option '--no-such-option'" in err, err


def test_print_config_and_help():
    conf = write_conf("module = storage-memory\nmodule = test-auth\nmodule = skeleton\n")
    rc, out, err = run_binary(["--config", conf, "--module-dir", MODDIR, "--print-config",
                               "--port", "2345"], env={"MOLTENDB_HOST": "127.0.0.2"})
    assert rc == 0, err
    assert "core.port = 2345  # flag:--port" in out, out
    assert "core.host = 127.0.0.2  # env:MOLTENDB_HOST" in out, out
    assert "skeleton.greeting = hello  # default" in out, out
    rc, out, err = run_binary(["--config", conf, "--module-dir", MODDIR, "--help"])
    assert rc == 0 and "--skeleton-greeting" in out and "--max-body-size" in out, out
    rc, out, err = run_binary(["--version"])
    assert rc == 0 and out.startswith("moltendb "), out


def test_in_memory_swaps_storage():
    conf = "module = storage-wal\nmodule = test-auth\n"
    s = core_server(modules=[], conf_extra=conf, args=["--in-memory"])
    try:
        # The "listening" line names the modules; it may follow the first
        # health answer by a moment.
        assert "modules: storage-memory test-auth" in s.wait_log("listening on")
        r = s.request("POST", "/snapshot", token=ADMIN)
        assert r.status == 200, r
        # The core's route says plainly that nothing was written.
        assert r.json["snapshot"] is None, r.json
        assert r.json["message"].startswith("Nothing to snapshot"), r.json
        expect_error(s.request("POST", "/snapshot", token="reader-token"), 403,
                     "Forbidden: snapshot requires admin scope")
    finally:
        s.stop()


def test_sigterm_finishes_request_in_flight():
    s = core_server()
    try:
        conn = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        body = b'{"hello":"world"}'
        head = ("POST /test/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Length: %d\r\n\r\n" % (ADMIN, len(body))).encode()
        conn.sendall(head + body[:5])
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert s.proc.poll() is None, "server exited with a request in flight"
        # New connections are no longer accepted.
        try:
            c2 = socket.create_connection(("127.0.0.1", s.port), timeout=2)
            c2.sendall(b"GET /system/health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = c2.recv(100)
            c2.close()
        except OSError:
            got = b""
        assert not got.startswith(b"HTTP/1.1 200"), got
        conn.sendall(body[5:])
        data = b""
        while b"world" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.close()
        assert data.startswith(b"HTTP/1.1 200"), data
        assert data.endswith(body), data
        rc = s.wait_exit(20)
        assert rc == 0, (rc, s.log())
        assert "stopped cleanly" in s.log(), s.log()
    finally:
        s.kill()


def test_missing_module_refuses_to_start():
    s = core_server(modules=["storage-memory", "test-auth", "does-not-exist"], start=False)
    s.start(wait=False)
    assert s.wait_exit(20) == 1
    assert "does-not-exist.so not found in the module path" in s.log(), s.log()


def test_no_auth_provider_refuses_to_start():
    s = core_server(modules=["storage-memory", "skeleton"], start=False)
    s.start(wait=False)
    assert s.wait_exit(20) == 1
    assert "no module provides the 'auth' service" in s.log(), s.log()


def test_out_of_tree_module_builds_against_the_sdk():
    """A user's module: compiled with only include/ (the installed SDK) and
    json-c, dropped in its own folder, named in the config, loaded."""
    src = os.path.join(os.environ.get("MDB_SOURCE_DIR", "."), "tests", "fixtures", "modules",
                       "skeleton.c")
    d = tempfile.mkdtemp(prefix="mdbsdk-")
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "json-c"], capture_output=True,
                            text=True, check=True).stdout.split()
    inc = os.path.join(os.environ.get("MDB_SOURCE_DIR", "."), "include")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    "-fvisibility=hidden", "-I", inc, src, "-o", os.path.join(d, "skeleton.so")]
                   + cflags, check=True)
    exported = subprocess.run(["nm", "-D", "--defined-only", os.path.join(d, "skeleton.so")],
                              capture_output=True, text=True, check=True).stdout
    assert "mdb_module_descriptor" in exported and "skeleton_init" not in exported, exported
    # The folder of the new build comes first, so it is the one loaded.
    with core_server(module_dir="%s:%s" % (d, MODDIR),
                     conf_extra="[skeleton]\ngreeting = built outside\n") as s:
        assert s.request("GET", "/skeleton/hello").json["greeting"] == "built outside"


if __name__ == "__main__":
    mdbtest.main()
