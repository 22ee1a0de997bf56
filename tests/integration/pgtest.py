"""A throwaway PostgreSQL for tests and benchmarks (Debian's postgresql package).

PostgreSQL refuses to run as root, so when the harness runs as root (CI on
a fresh Debian 12) initdb, pg_ctl and the server run as an unprivileged
user through `runuser`: the `postgres` account the package creates, else
`nobody`. The cluster lives in a temporary folder owned by that user, listens
on 127.0.0.1 on a free port, and trusts local connections (it is only ever
reachable from this machine, for the duration of a test).

    pg = pgtest.Postgres()        # initdb + start
    pg.conninfo                   # "host=127.0.0.1 port=... dbname=postgres user=mdb"
    pg.sql("SELECT 1")            # psql -At, returns stdout
    pg.stop(); pg.start()         # mid-test restarts
    pg.destroy()                  # stop and remove the folder
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import mdbtest


def _bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


def _run_as():
    """(user name, uid, gid) to run PostgreSQL as, None when not root, or
    raises SkipTest when root has no unprivileged account to use."""
    if os.geteuid() != 0:
        return None
    if not shutil.which("runuser"):
        mdbtest.skip("running as root without runuser: cannot start PostgreSQL unprivileged")
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0:
            return (name, pw.pw_uid, pw.pw_gid)
    mdbtest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL")


def available():
    return _bindir() is not None and shutil.which("psql") is not None


class Postgres:
    def __init__(self, fsync=True, start=True):
        self.bin = _bindir()
        if self.bin is None:
            mdbtest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.user = _run_as()
        self.dir = tempfile.mkdtemp(prefix="mdbpg-")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        if self.user:
            os.chown(self.dir, self.user[1], self.user[2])
        self.port = mdbtest.free_port()
        self.conninfo = "host=127.0.0.1 port=%d dbname=postgres user=mdb" % self.port
        self._as([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "mdb", "-A", "trust",
                  "-E", "UTF8", "--no-sync"], timeout=120)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# mdbtest\nlisten_addresses = '127.0.0.1'\nport = %d\n"
                    "unix_socket_directories = '%s'\nmax_connections = 200\n"
                    "fsync = %s\nlog_min_messages = warning\n"
                    % (self.port, self.dir, "on" if fsync else "off"))
        self.running = False
        if start:
            self.start(retries=3)

    def _as(self, argv, timeout=60, check=True):
        if self.user:
            argv = ["runuser", "-u", self.user[0], "--"] + argv
        p = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=self.dir)
        if p.returncode != 0 and check:
            raise AssertionError("%s failed (%d):\n%s%s" % (
                " ".join(argv), p.returncode, p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace")))
        return p

    def start(self, retries=0):
        """Start and wait until it answers. initdb takes seconds on a loaded
        machine, long enough for another test to take the port free_port()
        chose: the first start then moves to a new port, up to `retries`
        times (a restart keeps its port: servers were given it)."""
        argv = [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                "-t", "60", "start"]
        while True:
            before = len(self.log())
            p = self._as(argv, timeout=90, check=retries == 0)
            if p.returncode == 0:
                break
            if "Address already in use" not in self.log()[before:]:
                raise AssertionError("pg_ctl start failed (%d):\n%s%s" % (
                    p.returncode, p.stdout.decode(errors="replace"), self.log()[before:]))
            retries -= 1
            self.port = mdbtest.free_port()
            self.conninfo = "host=127.0.0.1 port=%d dbname=postgres user=mdb" % self.port
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("port = %d  # the first one was taken\n" % self.port)
        self.running = True
        deadline = time.time() + 30
        while True:
            try:
                self.sql("SELECT 1")
                return
            except AssertionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode="fast"):
        if self.running:
            self._as([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                      "-t", "60", "stop"], timeout=90)
            self.running = False

    def sql(self, query, timeout=30):
        p = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "mdb", "-d", "postgres", "-c", query],
                           capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("psql %r failed: %s" % (query, p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def destroy(self):
        try:
            self.stop(mode="immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
