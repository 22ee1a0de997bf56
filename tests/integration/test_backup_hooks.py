"""backup-hooks against the real binary: the program's argument,
environment, signal state, stdin and process group; timeout, failure,
output capture, refusals at startup, no delay of /snapshot or writes,
SIGTERM reaching the child, bounded shutdown (modules/backup-hooks/README.md)."""
import os
import signal
import stat
import tempfile
import time

import mdbtest
from mdbtest import wait_for

ADMIN = "admin-token"
MODDIR = "%s:%s" % (mdbtest.MODULE_DIR, mdbtest.FIXTURE_DIR)


def program(body, mode=0o755):
    """An executable script in its own folder (the kernel runs the #! line;
    moltendb itself runs no shell)."""
    d = tempfile.mkdtemp(prefix="mdbhook-")
    path = os.path.join(d, "hook.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path, d


def server(progs, args=(), start=True, env=None, extra_conf=""):
    conf = "[backup-hooks]\n" + "".join("run = %s\n" % p for p in progs) + extra_conf
    return mdbtest.Server(modules=["storage-wal", "test-auth", "query-engine", "backup-hooks"],
                          auth=False, module_dir=MODDIR, conf_extra=conf,
                          args=["--disable-encryption"] + list(args), start=start, env=env)


def snapshot(s):
    r = s.request("POST", "/snapshot", token=ADMIN)
    assert r.status == 200, r
    return r.json["snapshot"]


def wait_file(path, timeout=30.0):
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout,
             "%s to be written" % path)
    time.sleep(0.1)  # let the writer finish its lines
    return open(path).read()


def test_argument_environment_and_process_state():
    # The signal state is read by the program the script execs into (the
    # shell blocks signals for a moment around each fork, so reading the
    # shell's own mask from a child would be racy).
    prog, d = program("""out=%s/seen
{
  echo "argc=$#"
  echo "arg1=$1"
  env | sort | sed 's/^/env:/'
  echo "stdin=$(readlink /proc/$$/fd/0)"
  echo "pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$"
} > $out
exec grep -E '^(SigBlk|SigIgn):' /proc/self/status >> $out
""" % "%s")
    with open(prog) as f:
        text = f.read() % d
    with open(prog, "w") as f:
        f.write(text)
    with server([prog], env={"SECRET_MARKER": "must-not-leak"}) as s:
        snap = snapshot(s)
        s.wait_log("%s exited with status 0" % prog, timeout=30)
        seen = open(os.path.join(d, "seen")).read()
        lines = seen.splitlines()
        assert "argc=1" in lines and "arg1=%s" % snap["path"] in lines, seen
        envs = sorted(l[4:] for l in lines if l.startswith("env:"))
        names = [e.split("=", 1)[0] for e in envs]
        assert "MOLTENDB_SNAPSHOT_PATH=%s" % snap["path"] in envs, envs
        assert "MOLTENDB_SNAPSHOT_BYTES=%d" % snap["bytes"] in envs, envs
        assert "PATH=/usr/local/bin:/usr/bin:/bin" in envs, envs
        assert "SECRET_MARKER" not in names, envs
        # Only what sh itself adds (PWD) besides ours.
        assert set(names) <= {"PATH", "MOLTENDB_SNAPSHOT_PATH", "MOLTENDB_SNAPSHOT_BYTES",
                              "PWD"}, names
        assert "stdin=/dev/null" in lines, seen
        assert "SigBlk:\t0000000000000000" in lines, seen
        assert "SigIgn:\t0000000000000000" in lines, seen
        pg = [l for l in lines if l.startswith("pgid=")][0].split()
        assert pg[0][5:] == pg[1][4:], pg  # its own process group
        s.wait_log("%s exited with status 0" % prog, timeout=30)


def test_failing_program_is_logged_and_snapshot_succeeds():
    prog, _ = program("echo 'first line'\necho 'second line'\necho boom >&2\nexit 3\n")
    with server([prog]) as s:
        snapshot(s)
        log = s.wait_log("%s exited with status 3" % prog, timeout=30)
        assert "%s stdout: first line" % prog in log, log
        assert "%s stdout: second line" % prog in log, log
        assert "%s stderr: boom" % prog in log, log
        # Still serving, and the next snapshot runs it again.
        snapshot(s)
        s.wait_log("%s exited with status 3" % prog, count=2, timeout=30)


def test_output_is_bounded():
    prog, _ = program("head -c 3000 /dev/zero | tr '\\0' x; echo\n"
                      "i=0; while [ $i -lt 2000 ]; do echo \"line $i padding padding padding "
                      "padding padding\"; i=$((i+1)); done\n")
    with server([prog]) as s:
        snapshot(s)
        log = s.wait_log("%s exited with status 0" % prog, timeout=30)
        assert "x" * 1000 + " [line cut]" in log, log[:3000]
        assert "x" * 1001 not in log
        assert "more bytes of output were not logged" in log, log[-2000:]
        assert "line 1999 padding" not in log


def test_hanging_program_is_killed_at_the_timeout():
    # Ignores SIGTERM, so the group gets SIGKILL after kill-grace.
    prog, _ = program("trap '' TERM\nsleep 60\n")
    with server([prog], extra_conf="timeout = 1\nkill-grace = 1\n") as s:
        t0 = time.time()
        snapshot(s)
        log = s.wait_log("was killed by signal 9", timeout=40)
        assert "%s: timed out after" % prog in log, log
        assert "sending SIGTERM to its group" in log and "SIGKILL" in log, log
        assert time.time() - t0 < 30


def test_sigterm_reaches_the_hook_child():
    prog, d = program("echo $$ > %s/pid.tmp; mv %s/pid.tmp %s/pid\nexec sleep 60\n")
    with open(prog) as f:
        text = f.read() % (d, d, d)
    with open(prog, "w") as f:
        f.write(text)
    with server([prog]) as s:
        snapshot(s)
        pid = int(wait_file(os.path.join(d, "pid")).strip())
        os.kill(pid, signal.SIGTERM)
        log = s.wait_log("%s was killed by signal 15" % prog, timeout=20)
        assert "timed out" not in log


def test_hooks_do_not_delay_snapshot_or_writes():
    prog, _ = program("sleep 4\n")
    with server([prog]) as s:
        t0 = time.time()
        snapshot(s)
        first = time.time() - t0
        s.wait_log("running %s" % prog, timeout=30)
        # While the program sleeps: writes and more snapshots go at full speed.
        worst = 0.0
        for i in range(20):
            t = time.time()
            r = s.request("POST", "/set", {"collection": "w", "data": {"k%d" % i: {"n": i}}},
                          token=ADMIN)
            assert r.status == 200, r
            worst = max(worst, time.time() - t)
        t = time.time()
        snapshot(s)  # queued behind the running one (queue = 1)
        snapshot(s)  # skipped, with a log line
        two = time.time() - t
        assert first < 2.0 and two < 3.0 and worst < 1.5, (first, two, worst)
        assert "running %s" % prog in s.log()
        s.wait_log("%s: run for snapshot" % prog, timeout=30)
        assert "skipped: a run is in progress and 1 wait(s) already (queue = 1)" in s.log()
        # The queued one runs after the first.
        s.wait_log("%s exited with status 0" % prog, count=2, timeout=40)
        print("snapshot with hook: %.3fs; two more: %.3fs; slowest write: %.3fs"
              % (first, two, worst))


def test_shutdown_waits_a_bounded_time_then_kills():
    prog, _ = program("trap '' TERM\nsleep 60\n")
    with server([prog], extra_conf="shutdown-wait = 1\nkill-grace = 1\n") as s:
        snapshot(s)
        s.wait_log("running %s" % prog, timeout=30)
        t = time.time()
        s.stop()
        assert time.time() - t < 20
        log = s.log()
        assert "the server is shutting down" in log and "was killed by signal 9" in log, log
        assert "stopped cleanly" in log


def test_bad_programs_are_refused_at_startup():
    good, _ = program("exit 0\n")
    ww, _ = program("exit 0\n", mode=0o757)
    gw, _ = program("exit 0\n", mode=0o775)
    noexec, _ = program("exit 0\n", mode=0o644)
    cases = [(ww, "is writable by group or others"), (gw, "is writable by group or others"),
             (noexec, "is not executable"), ("/nonexistent/hook", "does not exist"),
             ("relative/hook.sh", "is not an absolute path")]
    for path, why in cases:
        s = server([good, path], start=False)
        s.start(wait=False)
        assert s.wait_exit(30) == 1, s.log()
        # moltendb.conf: a comment, 4 modules, "[backup-hooks]", good (7), this one (8).
        assert "%s:8: backup-hooks.run: '%s' %s" % (s.conf, path, why) in s.log(), s.log()
    s = server([good, good], start=False)
    s.start(wait=False)
    assert s.wait_exit(30) == 1
    assert "%s:8: backup-hooks.run: '%s' is listed twice" % (s.conf, good) in s.log(), s.log()


def test_print_config_lists_every_program():
    a, _ = program("exit 0\n")
    b, _ = program("exit 0\n")
    s = server([a, b], start=False)
    rc, out, err = mdbtest.run_binary(s.args[1:] + ["--print-config"])
    assert rc == 0, (out, err)
    assert "backup-hooks.run = %s  # file:%s:7" % (a, s.conf) in out, out
    assert "backup-hooks.run = %s  # file:%s:8" % (b, s.conf) in out, out
    assert "backup-hooks.timeout = 300  # default" in out, out


if __name__ == "__main__":
    mdbtest.main()
