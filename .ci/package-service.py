#!/usr/bin/env python3
"""The installed moltendb package, as a user gets it (run by
.ci/package-test as root after `apt-get install`).

Checks the files and their owners and modes, then runs the service: with
systemctl where systemd is PID 1; otherwise the unit's own ExecStartPre and
ExecStart lines, as the unit's user, with its EnvironmentFile, working
folder, umask and a NOTIFY_SOCKET standing in for systemd. Over HTTPS,
verified against the generated certificate: health, login with the
generated password, /set, /get, a restart that keeps the data, SIGHUP after
replacing the certificate (new connections get the new one, an open one
stays), and a reload that fails (kept, logged)."""
import argparse
import glob
import grp
import http.client
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time

UNIT = "/lib/systemd/system/moltendb.service"
ETC = "/etc/moltendb"
ENV_FILE = ETC + "/moltendb.env"
CERT, KEY = ETC + "/tls/cert.pem", ETC + "/tls/key.pem"
DATA = "/var/lib/moltendb"
SYSTEMD = os.path.isdir("/run/systemd/system")


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)
    print("ok   " + what, flush=True)


def mode_owner(path):
    st = os.stat(path)
    return "%o %s:%s" % (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
                         grp.getgrgid(st.st_gid).gr_name)


def read_env():
    env = {}
    with open(ENV_FILE) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def unit_settings():
    """Key -> list of values of the [Service] section."""
    out, section = {}, None
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out.setdefault(k, []).append(v)
    return out


def check_files(install_log):
    check(os.access("/usr/sbin/moltendb", os.X_OK), "/usr/sbin/moltendb is installed")
    mods = glob.glob("/usr/lib/*/moltendb/modules/storage-wal.so")
    check(len(mods) == 1, "modules in /usr/lib/<multiarch>/moltendb/modules: %s" % mods)
    user = pwd.getpwnam("moltendb")
    check(user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin") and user.pw_dir == DATA,
          "system user moltendb (home %s, shell %s)" % (user.pw_dir, user.pw_shell))
    check(mode_owner(ETC + "/moltendb.conf") == "640 root:moltendb", "moltendb.conf 0640 root:moltendb")
    check(mode_owner(ETC) == "750 root:moltendb", "/etc/moltendb 0750 root:moltendb")
    check(os.path.isdir(ETC + "/conf.d"), "/etc/moltendb/conf.d exists")
    for p in (ENV_FILE, CERT, KEY):
        check(mode_owner(p) == "640 root:moltendb", "%s 0640 root:moltendb" % p)
    check(mode_owner(DATA) == "700 moltendb:moltendb", "/var/lib/moltendb 0700 moltendb")
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "moltendb"],
                               capture_output=True, text=True).stdout
    check("/etc/moltendb/moltendb.conf" in conffiles, "moltendb.conf is a conffile")
    env = read_env()
    for k in ("MOLTENDB_JWT_SECRET", "MOLTENDB_ROOT_PASSWORD", "MOLTENDB_ENCRYPTION_KEY"):
        check(len(env.get(k, "")) >= 24, "generated %s" % k)
    with open(install_log) as f:
        log = f.read()
    check("password: %s" % env["MOLTENDB_ROOT_PASSWORD"] in log,
          "the postinst printed the generated password")
    check(log.count("password:") == 1, "the password was printed once")
    for page in ("man8/moltendb.8.gz", "man5/moltendb.conf.5.gz", "man7/moltendb-modules.7.gz"):
        check(os.path.exists("/usr/share/man/" + page), "man page %s" % page)
    check(os.path.exists("/usr/share/doc/moltendb-dev/examples/skeleton/skeleton.c"),
          "moltendb-dev has the example module")
    check(os.path.exists("/usr/share/moltendb/grafana/moltendb.json"), "the Grafana dashboard")
    pc = subprocess.run(["pkg-config", "--variable=moduledir", "moltendb"], capture_output=True,
                        text=True).stdout.strip()
    check(pc == os.path.dirname(mods[0]), "moltendb.pc moduledir = %s" % pc)
    with open(CERT) as f:
        san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], stdin=f,
                             capture_output=True, text=True).stdout
    check("DNS:localhost" in san and "IP Address:127.0.0.1" in san, "certificate for localhost")


class Notify:
    def __init__(self, d):
        self.path = os.path.join(d, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(d, 0o755)
        os.chmod(self.path, 0o777)  # the service runs as moltendb
        self.seen = []

    def wait_for(self, line, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.seen.append(msg)
            if line in msg.split("\n"):
                return msg
        raise SystemExit("FAILED: no %s from the service within %ss (got %r)" %
                         (line, timeout, self.seen))


class Service:
    """The installed service, started the way its unit says."""

    def __init__(self, work, port):
        self.work = work
        self.port = port
        self.unit = unit_settings()
        self.proc = None
        self.log_path = os.path.join(work, "service.log")
        self.notify = None if SYSTEMD else Notify(tempfile.mkdtemp(prefix="mdbnotify-"))

    def log(self):
        if SYSTEMD:
            return subprocess.run(["journalctl", "-u", "moltendb", "--no-pager", "-o", "cat"],
                                  capture_output=True, text=True).stdout
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _env(self):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "NOTIFY_SOCKET": self.notify.path}
        env.update(read_env())
        return env

    def _as_user(self):
        return dict(user=self.unit["User"][0], group=self.unit["Group"][0], extra_groups=[],
                    umask=int(self.unit["UMask"][0], 8), cwd=self.unit["WorkingDirectory"][0],
                    env=self._env())

    def start(self):
        if SYSTEMD:
            subprocess.run(["systemctl", "restart", "moltendb"], check=True)
            return
        for line in self.unit.get("ExecStartPre", []):
            r = subprocess.run(shlex.split(line), capture_output=True, text=True,
                               **self._as_user())
            check(r.returncode == 0, "ExecStartPre %s: %s" % (line, (r.stdout + r.stderr).strip()))
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(shlex.split(self.unit["ExecStart"][0]), stdout=logf,
                                     stderr=subprocess.STDOUT, **self._as_user())
        logf.close()
        msg = self.notify.wait_for("READY=1")
        check("STATUS=serving on https://127.0.0.1:%d" % self.port in msg,
              "READY=1 from the service (%s)" % msg.replace("\n", " "))

    def reload(self):
        if SYSTEMD:
            subprocess.run(["systemctl", "reload", "moltendb"], check=True)
            return
        self.proc.send_signal(signal.SIGHUP)  # what ExecReload does
        self.notify.wait_for("READY=1")

    def stop(self):
        if SYSTEMD:
            subprocess.run(["systemctl", "stop", "moltendb"], check=True)
            return
        self.proc.send_signal(signal.SIGTERM)
        self.notify.wait_for("STOPPING=1")
        rc = self.proc.wait(timeout=60)
        check(rc == 0, "the service stopped cleanly (exit %d)" % rc)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def tls(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)  # verifies the chain and "localhost"
    return http.client.HTTPSConnection("localhost", port, timeout=15, context=ctx)


def call(conn, method, path, body=None, token=None):
    h = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        h["Authorization"] = "Bearer " + token
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def peer_der(conn):
    return conn.sock.getpeercert(binary_form=True)


def cert_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def wait_log(svc, text, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in svc.log():
            return
        time.sleep(0.1)
    raise SystemExit("FAILED: the log has no %r:\n%s" % (text, svc.log()[-3000:]))


def new_pair(d, name):
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                    "-out", cert], check=True, capture_output=True)
    return cert, key


def install_file(src, dst):
    """Replace dst with src's content, keeping root:moltendb 0640."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chown(tmp, 0, grp.getgrnam("moltendb").gr_gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, dst)


def pick_port():
    """The packaged port, unless something else on this machine holds it;
    then a free one through a conf.d drop-in (which exercises drop-ins)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 1538))
        return 1538, None
    except OSError:
        pass
    finally:
        s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dropin = ETC + "/conf.d/50-ci-port.conf"
    with open(dropin, "w") as f:
        f.write("# written by .ci/package-service.py: 1538 is in use on this machine\n"
                "port = %d\n" % port)
    print("note: 127.0.0.1:1538 is busy here; the service uses %d (conf.d drop-in)" % port)
    return port, dropin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--install-log", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    check_files(a.install_log)
    check(unit_settings()["Type"] == ["notify"], "unit Type=notify")
    port, dropin = pick_port()
    env = read_env()
    svc = Service(a.work, port)
    try:
        svc.start()
        c = tls(port, CERT)
        status, body = call(c, "GET", "/system/health")
        check(status == 200 and body["status"] == "ok", "health over HTTPS, certificate verified")
        status, body = call(c, "POST", "/login", {"username": env["MOLTENDB_ROOT_USER"],
                                                  "password": env["MOLTENDB_ROOT_PASSWORD"]})
        check(status == 200 and body.get("token"), "login with the generated password")
        token = body["token"]
        status, body = call(c, "POST", "/set", {"collection": "packaged", "data": {
            "k1": {"text": "survives a restart"}}}, token)
        check(status == 200, "/set (%s)" % body)
        status, body = call(c, "POST", "/get", {"collection": "packaged", "keys": "k1"}, token)
        check(status == 200 and "survives a restart" in json.dumps(body), "/get (%s)" % body)
        if os.path.exists(os.path.join(os.path.dirname(glob.glob(
                "/usr/lib/*/moltendb/modules/storage-wal.so")[0]), "metrics.so")):
            c.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
            r = c.getresponse()
            text = r.read().decode()
            check(r.status == 200 and "# TYPE" in text, "GET /metrics (metrics module)")
        c.close()
        files = os.listdir(DATA)
        check(any(f.endswith(".log") for f in files), "the log is in /var/lib/moltendb: %s" % files)
        for f in files:
            p = os.path.join(DATA, f)
            if os.path.isfile(p):
                check(mode_owner(p).endswith("moltendb:moltendb") and
                      stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, "%s private to moltendb" % f)

        svc.stop()
        svc.start()
        c = tls(port, CERT)
        status, body = call(c, "POST", "/get", {"collection": "packaged", "keys": "k1"}, token)
        check(status == 200 and "survives a restart" in json.dumps(body),
              "the data survives a restart (%s)" % body)

        # Reload with a new certificate: new handshakes get it, the open
        # connection c keeps working.
        old_der = peer_der(c)
        new_cert, new_key = new_pair(a.work, "renewed")
        install_file(new_cert, CERT)
        install_file(new_key, KEY)
        svc.reload()
        wait_log(svc, "reload: TLS certificate %s and key %s in use" % (CERT, KEY))
        c2 = tls(port, new_cert)
        status, _ = call(c2, "GET", "/system/health")
        check(status == 200 and peer_der(c2) == cert_der(new_cert) != old_der,
              "after SIGHUP new connections get the new certificate")
        c2.close()
        status, _ = call(c, "GET", "/system/health")
        check(status == 200 and peer_der(c) == old_der, "the connection opened before stays")

        # A reload that fails keeps the current pair and says why.
        with open(KEY, "w") as f:
            f.write("not a key\n")
        svc.reload()
        wait_log(svc, "TLS certificate not replaced, still serving the previous one")
        c3 = tls(port, new_cert)
        status, _ = call(c3, "GET", "/system/health")
        check(status == 200 and peer_der(c3) == cert_der(new_cert),
              "a failed reload keeps serving the previous certificate")
        c3.close()
        install_file(new_key, KEY)
        c.close()
        svc.stop()
        log = svc.log()
        for secret in ("MOLTENDB_JWT_SECRET", "MOLTENDB_ROOT_PASSWORD", "MOLTENDB_ENCRYPTION_KEY"):
            check(env[secret] not in log, "%s is not in the log" % secret)
    finally:
        svc.kill()
        if svc.notify:
            shutil.rmtree(os.path.dirname(svc.notify.path), ignore_errors=True)
        if dropin and os.path.exists(dropin):
            os.unlink(dropin)
    print("installed service: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
