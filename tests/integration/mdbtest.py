"""Black-box test harness: starts the real moltendb binary and talks HTTP to it.

Only the Python standard library is used. Environment (set by ctest):
  MDB_BIN         path of the server binary
  MDB_MODULE_DIR  folder of the built modules
  MDB_FIXTURE_DIR folder of the test-only fixture modules

A test file defines functions named test_* and ends with `mdbtest.main()`,
which runs them in order and prints "N passed, M failed".
"""
import http.client
import json
import os
import signal as _signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("MDB_BIN", "build/moltendb")
MODULE_DIR = os.environ.get("MDB_MODULE_DIR", "build/modules")
FIXTURE_DIR = os.environ.get("MDB_FIXTURE_DIR", "build/fixtures")

ROOT_USER = "root"
ROOT_PASSWORD = "test-root-password"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"

DEFAULT_MODULES = ["storage-memory", "auth-jwt", "query-engine"]
# What a sanitizer build writes to the server log when it finds something.
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's
    choice). Shared by the benchmarks in bench/."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def module_available(name, folder=None):
    return os.path.exists(os.path.join(folder or MODULE_DIR, name + ".so"))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Server:
    """One server process in its own temporary folder.

    modules: list of module names for moltendb.conf (None = DEFAULT_MODULES).
    conf_extra: extra text appended to moltendb.conf.
    args: extra command-line flags. auth: pass the root credentials flags.
    """

    def __init__(self, modules=None, conf_extra="", args=(), env=None, auth=True,
                 dev_mode=True, workdir=None, module_dir=None, start=True, wait=True):
        self.dir = workdir or tempfile.mkdtemp(prefix="mdbtest-")
        self.port = free_port()
        self.modules = DEFAULT_MODULES if modules is None else modules
        self.conf = os.path.join(self.dir, "moltendb.conf")
        with open(self.conf, "w") as f:
            f.write("# written by mdbtest\n")
            for m in self.modules:
                f.write("module = %s\n" % m)
            f.write(conf_extra)
        self.args = [BIN, "--config", self.conf, "--module-dir", module_dir or MODULE_DIR,
                     "--host", "127.0.0.1", "--port", str(self.port),
                     "--db-path", os.path.join(self.dir, "db.log")]
        if dev_mode:
            self.args.append("--dev-mode")
        if auth:
            self.args += ["--jwt-secret", JWT_SECRET, "--root-user", ROOT_USER,
                          "--root-password", ROOT_PASSWORD,
                          "--rate-limit-requests", "1000000"]
        self.args += list(args)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("MOLTENDB_"):
                del self.env[k]
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if env:
            self.env.update(env)
        self.scheme = "http" if dev_mode else "https"
        self.proc = None
        self.log_path = os.path.join(self.dir, "server.log")
        self._token = None
        if start:
            self.start(wait=wait)

    def start(self, wait=True):
        self.logf = open(self.log_path, "ab")
        self.log_start = self.logf.tell()
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     cwd=self.dir, env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30.0, retries=3):
        """Until this process (not another test's server that took the port
        free_port() chose) logs its listening line and answers health. A
        port taken in between gets a new one, up to `retries` times."""
        deadline = time.time() + timeout
        mine = ":%d (modules:" % self.port
        while time.time() < deadline:
            if self.proc.poll() is not None:
                log = self.log()
                if "Address already in use" in self.log_since_start() and retries > 0:
                    self.logf.close()
                    old, self.port = self.port, free_port()
                    i = self.args.index("--port")
                    assert self.args[i + 1] == str(old)
                    self.args[i + 1] = str(self.port)
                    self.start(wait=False)
                    return self.wait_ready(max(1.0, deadline - time.time()), retries - 1)
                raise AssertionError("server exited with %s:\n%s" % (self.proc.returncode, log))
            if mine in self.log_since_start():
                try:
                    r = self.request("GET", "/system/health", timeout=1.0)
                    if r.status == 200:
                        return
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.05)
        raise AssertionError("server not ready after %ss:\n%s" % (timeout, self.log()))

    def log_since_start(self):
        """What this run of the process logged (the file may hold earlier runs)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, text, timeout=10.0, count=1):
        """Wait (bounded) until the server log contains text (count times);
        return the log. A line logged after the listener is up may land
        after /system/health first answers."""
        deadline = time.time() + timeout
        while True:
            log = self.log()
            if log.count(text) >= count:
                return log
            if time.time() > deadline:
                raise AssertionError("%r not logged within %ss:\n%s" % (text, timeout, log))
            time.sleep(0.02)

    def connection(self, timeout=10.0):
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, token=None, headers=None, timeout=10.0, raw=None):
        conn = self.connection(timeout)
        h = {}
        if body is not None and raw is None:
            raw = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = "Bearer " + token
        if headers:
            h.update(headers)
        try:
            conn.request(method, path, body=raw, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.getheaders(), data)
        finally:
            conn.close()

    def login(self):
        if self._token is None:
            r = self.request("POST", "/login", {"username": ROOT_USER, "password": ROOT_PASSWORD})
            assert r.status == 200, r
            self._token = r.json["token"]
        return self._token

    def post(self, path, body, token=None, **kw):
        return self.request("POST", path, body, token=token if token is not None else self.login(), **kw)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not exit within %ss:\n%s" % (timeout, self.log()))

    def stop(self, sig=_signal.SIGTERM, expect=0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        rc = self.wait_exit()
        self.logf.close()
        if expect is not None:
            assert rc == expect, "exit code %s, expected %s:\n%s" % (rc, expect, self.log())
            if any(m in self.log() for m in SANITIZER_REPORTS):
                raise AssertionError("sanitizer report:\n" + self.log())
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.logf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        else:
            self.kill()


def run_binary(args, env=None, timeout=30.0, cwd=None):
    """Run the binary to completion (for --check-config, --help ...)."""
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("MOLTENDB_"):
            del e[k]
    if env:
        e.update(env)
    p = subprocess.run([BIN] + list(args), capture_output=True, timeout=timeout, env=e, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def expect_error(r, status, text=None):
    """Assert a JSON error envelope with this status (and exact text)."""
    assert r.status == status, "expected %d, got %r" % (status, r)
    body = r.json
    assert body.get("statusCode") == status, body
    assert isinstance(body.get("error"), str), body
    if text is not None:
        assert body["error"] == text, "error %r != %r" % (body["error"], text)
    return body


def wait_for(fn, timeout=10.0, what="condition", interval=0.02):
    """Poll fn until it returns a true value, and return that value; raise
    AssertionError naming `what` once `timeout` seconds have passed. fn
    runs at least once, however late the caller got here."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def skip(reason):
    raise SkipTest(reason)


class SkipTest(Exception):
    pass


def main():
    mod = sys.modules["__main__"]
    names = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
    names.sort(key=lambda n: getattr(mod, n).__code__.co_firstlineno)
    only = sys.argv[1:]
    passed = failed = skipped = 0
    for n in names:
        if only and n not in only:
            continue
        t0 = time.time()
        try:
            getattr(mod, n)()
            passed += 1
            print("ok   %s (%.2fs)" % (n, time.time() - t0), flush=True)
        except SkipTest as e:
            skipped += 1
            print("skip %s: %s" % (n, e), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % n, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)
