"""The server as a system service: systemd readiness notification
(READY=1 once it accepts connections, RELOADING=1, STOPPING=1, STATUS=),
SIGHUP reloading the TLS certificate and key without dropping open
connections (a bad pair keeps the old one and says why), the log level, and
conf.d drop-ins read in name order."""
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import mdbtest


def make_pair(cert, key, cn):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=" + cn], check=True, capture_output=True)


def der(cert):
    with open(cert) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class Notify:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "mdbtest-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="mdbnotify-")
            self.env = os.path.join(self.dir, "notify.sock")
            self.sock.bind(self.env)
        self.messages = []

    def wait_for(self, line, timeout=30.0):
        """Every message up to and including the first with this line."""
        deadline = time.time() + timeout
        got = []
        while time.time() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            got.append(msg)
            self.messages.append(msg)
            if line in msg.split("\n"):
                return got
        raise AssertionError("no %r within %ss; got %r" % (line, timeout, got))


def tls_conn(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw)


def get_health(sock):
    sock.sendall(b"GET /system/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"MoltenDB is running" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed; got %r" % data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data


def run_notify(abstract):
    n = Notify(abstract)
    s = mdbtest.Server(env={"NOTIFY_SOCKET": n.env}, wait=False)
    try:
        got = n.wait_for("READY=1")
        # Ready means accepting: the very first connection succeeds.
        r = s.request("GET", "/system/health")
        assert r.status == 200, r
        assert any(m.startswith("STATUS=") for m in got[:-1]), got
        assert "STATUS=serving on http://127.0.0.1:%d" % s.port in got[-1], got
        s.signal(signal.SIGHUP)
        got = n.wait_for("READY=1")
        assert "RELOADING=1" in got[0].split("\n"), got
        s.signal(signal.SIGTERM)
        got = n.wait_for("STOPPING=1")
        assert s.wait_exit() == 0, s.log()
    finally:
        s.kill()
    return s


def test_notify_ready_reloading_stopping():
    run_notify(abstract=False)


def test_notify_abstract_socket():
    run_notify(abstract=True)


def test_no_notify_socket_is_fine():
    with mdbtest.Server() as s:
        s.signal(signal.SIGHUP)
        s.wait_log("reload: log level info", timeout=20)
        assert s.request("GET", "/system/health").status == 200


def test_sighup_reloads_certificate_keeping_connections():
    d = tempfile.mkdtemp(prefix="mdbreload-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    make_pair(cert, key, "first")
    first = der(cert)
    with open(key) as f:
        first_key = f.read()
    s = mdbtest.Server(dev_mode=False, args=["--cert", cert, "--key", key])
    try:
        old = tls_conn(s.port, cert)
        get_health(old)
        assert old.getpeercert(True) == first
        make_pair(cert + ".new", key + ".new", "second")
        os.replace(cert + ".new", cert)
        os.replace(key + ".new", key)
        second = der(cert)
        s.signal(signal.SIGHUP)
        s.wait_log("reload: TLS certificate %s and key %s in use" % (cert, key), timeout=20)
        new = tls_conn(s.port, cert)
        assert new.getpeercert(True) == second
        get_health(new)
        new.close()
        # The connection opened before the reload is still served.
        get_health(old)
        get_health(old)

        # A key that is not PEM: the reload is refused and says why.
        with open(key, "w") as f:
            f.write("not a key\n")
        s.signal(signal.SIGHUP)
        s.wait_log("Key file %s holds no usable PEM private key" % key, timeout=20)
        # A key of another certificate.
        with open(key, "w") as f:
            f.write(first_key)
        s.signal(signal.SIGHUP)
        s.wait_log("Key file %s does not belong to the certificate in %s" % (key, cert), timeout=20)
        os.unlink(cert)
        s.signal(signal.SIGHUP)
        s.wait_log("Certificate file not found: %s" % cert, timeout=20)
        assert s.log().count("TLS certificate not replaced, still serving the previous one") == 3
        c = tls_conn(s.port, _write_tmp(d, second))
        assert c.getpeercert(True) == second
        get_health(c)
        c.close()
        get_health(old)
        old.close()
        s.stop()
    finally:
        s.kill()


def _write_tmp(d, der_bytes):
    p = os.path.join(d, "expected.pem")
    with open(p, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der_bytes))
    return p


def test_sighup_applies_log_level_from_dropin():
    s = mdbtest.Server(start=False)
    try:
        s.start()
        s.signal(signal.SIGHUP)
        s.wait_log("reload: log level info", timeout=20)
        os.mkdir(os.path.join(s.dir, "conf.d"))
        with open(os.path.join(s.dir, "conf.d", "50-debug.conf"), "w") as f:
            f.write("debug = true\n")
        s.signal(signal.SIGHUP)
        s.wait_log("reload: log level debug", timeout=20)
        # A broken drop-in: nothing changes, the reason is logged.
        with open(os.path.join(s.dir, "conf.d", "60-bad.conf"), "w") as f:
            f.write("debug = sometimes\n")
        s.signal(signal.SIGHUP)
        s.wait_log("reload: configuration not read again", timeout=20)
        assert "60-bad.conf:1" in s.log(), s.log()
        assert s.request("GET", "/system/health").status == 200
        s.stop()
    finally:
        s.kill()


def test_dropins_apply_at_startup_in_name_order():
    s = mdbtest.Server(start=False)
    try:
        os.mkdir(os.path.join(s.dir, "conf.d"))
        for name, text in (("20-small.conf", "max-body-size = 64\n"),
                           ("10-big.conf", "max-body-size = 100000\n"),
                           ("README", "max-body-size = 1\n")):
            with open(os.path.join(s.dir, "conf.d", name), "w") as f:
                f.write(text)
        rc, out, err = mdbtest.run_binary(s.args[1:] + ["--print-config"])
        assert rc == 0, err
        assert "core.max-body-size = 64  # file:%s:1" % os.path.join(s.dir, "conf.d",
                                                                     "20-small.conf") in out, out
        s.start()
        r = s.post("/set", {"collection": "c", "data": {"k": {"text": "x" * 100}}})
        mdbtest.expect_error(r, 413)
        s.stop()
    finally:
        s.kill()


if __name__ == "__main__":
    mdbtest.main()
