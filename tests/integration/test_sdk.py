"""The SDK as a module author meets it: pkg-config in the build folder and
in a staged install (`cmake --install --prefix P`), the installed binary's
module search path, --module-dir adding to it (docs/module-sdk.md)."""
import os
import shutil
import subprocess
import tempfile

import mdbtest
from mdbtest import run_binary

BUILD_DIR = os.path.dirname(os.path.abspath(mdbtest.BIN))
SOURCE_DIR = os.path.abspath(os.environ.get("MDB_SOURCE_DIR", "."))
FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures", "modules")
SECRETS = ["--jwt-secret", mdbtest.JWT_SECRET, "--root-user", "root", "--root-password", "pw"]

_stage = None


def staged_install():
    """One `cmake --install` of this build into a temporary prefix."""
    global _stage
    if _stage is None:
        _stage = tempfile.mkdtemp(prefix="mdbstage-")
        subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", _stage], check=True,
                       capture_output=True)
    return _stage


def pkg_config(pc_path, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=pc_path)
    env.pop("PKG_CONFIG_LIBDIR", None)
    return subprocess.run(["pkg-config"] + list(args) + ["moltendb"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def staged_pc_dir(prefix):
    for root, _dirs, files in os.walk(prefix):
        if "moltendb.pc" in files:
            return root
    raise AssertionError("no moltendb.pc under %s" % prefix)


def test_pkg_config_in_the_build_folder():
    cflags = pkg_config(BUILD_DIR, "--cflags")
    assert "-I%s" % os.path.join(SOURCE_DIR, "include") in cflags.split(), cflags
    assert "/usr/local/include" not in cflags, cflags
    assert pkg_config(BUILD_DIR, "--variable=moduledir") == mdbtest.MODULE_DIR or \
        os.path.samefile(pkg_config(BUILD_DIR, "--variable=moduledir"), mdbtest.MODULE_DIR)


def test_pkg_config_of_a_staged_install_is_relative_to_its_prefix():
    p = staged_install()
    pc = staged_pc_dir(p)
    text = open(os.path.join(pc, "moltendb.pc")).read()
    assert "prefix=%s\n" % p in text, text
    for line in text.splitlines():
        if line.startswith(("includedir=", "libdir=", "moduledir=")):
            assert line.split("=", 1)[1].startswith("${prefix}/"), line
    cflags = pkg_config(pc, "--cflags").split()
    assert "-I%s/include" % p in cflags, cflags
    assert os.path.exists(os.path.join(p, "include", "moltendb", "module.h"))
    moddir = pkg_config(pc, "--variable=moduledir")
    assert moddir.startswith(p + "/"), moddir
    assert os.path.exists(os.path.join(moddir, "storage-memory.so")), moddir


def test_installed_binary_searches_its_own_moduledir_then_module_dir():
    p = staged_install()
    moddir = pkg_config(staged_pc_dir(p), "--variable=moduledir")
    binary = os.path.join(p, "sbin", "moltendb")
    extra = tempfile.mkdtemp(prefix="mdbextra-")
    d = tempfile.mkdtemp(prefix="mdbcfg-")
    conf = os.path.join(d, "moltendb.conf")
    # skeleton lives only in the extra folder, the others only in the install.
    shutil.copy(os.path.join(mdbtest.FIXTURE_DIR, "skeleton.so"), extra)
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = auth-jwt\nmodule = skeleton\n")
    old = mdbtest.BIN
    try:
        mdbtest.BIN = binary
        rc, out, err = run_binary(["--config", conf, "--print-config", "--module-dir", extra]
                                  + SECRETS)
    finally:
        mdbtest.BIN = old
    assert rc == 0, (out, err)
    assert "module search path (--module-dir first, then built-in): %s:%s" % (
        extra, moddir) in out, out
    assert "skeleton.greeting = hello" in out, out


def test_module_dir_adds_to_the_built_in_path():
    """--module-dir names only the fixture folder: the built modules are
    still found (the build folder's path comes after it)."""
    d = tempfile.mkdtemp(prefix="mdbcfg-")
    conf = os.path.join(d, "moltendb.conf")
    with open(conf, "w") as f:
        f.write("module = storage-memory\nmodule = test-auth\nmodule = skeleton\n")
    rc, out, err = run_binary(["--config", conf, "--module-dir", mdbtest.FIXTURE_DIR,
                               "--print-config"])
    assert rc == 0, (out, err)
    assert "then built-in): %s:%s\n" % (mdbtest.FIXTURE_DIR, mdbtest.MODULE_DIR) in out, out


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def test_example_hook_module_out_of_tree_against_a_staged_install():
    """docs/examples/snapshot-copy as an author builds it: copied out of the
    staged install, compiled with `make` (pkg-config only), installed into
    the staged moduledir, loaded by the staged binary with no --module-dir
    of its own, a snapshot taken, the copy identical byte for byte."""
    p = staged_install()
    pc = staged_pc_dir(p)
    examples = os.path.join(p, "share", "doc", "moltendb", "examples")
    assert os.path.exists(os.path.join(examples, "skeleton", "skeleton.c"))
    src = tempfile.mkdtemp(prefix="mdbexample-")
    shutil.copytree(os.path.join(examples, "snapshot-copy"), os.path.join(src, "snapshot-copy"))
    work = os.path.join(src, "snapshot-copy")
    env = dict(os.environ, PKG_CONFIG_PATH=pc)
    env.pop("PKG_CONFIG_LIBDIR", None)
    env.pop("CFLAGS", None)
    build = subprocess.run(["make", "-C", work, "install"], env=env, capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "-I%s/include" % p in build.stdout, build.stdout  # the staged headers, not /usr
    moddir = pkg_config(pc, "--variable=moduledir")
    assert os.path.exists(os.path.join(moddir, "snapshot-copy.so"))
    dest = tempfile.mkdtemp(prefix="mdbcopies-")
    empty = tempfile.mkdtemp(prefix="mdbnomods-")
    old = mdbtest.BIN
    mdbtest.BIN = os.path.join(p, "sbin", "moltendb")
    try:
        s = mdbtest.Server(modules=["storage-wal", "auth-jwt", "snapshot-copy"], module_dir=empty,
                           args=["--disable-encryption"],
                           conf_extra="[snapshot-copy]\ndir = %s\n" % dest)
    finally:
        mdbtest.BIN = old
    with s:
        tok = s.login()
        r = s.request("POST", "/snapshot", token=tok)
        assert r.status == 200, r
        snap = r.json["snapshot"]["path"]
        log = s.wait_log("copied %s/" % dest, timeout=30)
        original = open(snap, "rb").read()
        copies = os.listdir(dest)
        assert len(copies) == 1 and copies[0].startswith("db.log.snapshot.bin."), copies
        copy = open(os.path.join(dest, copies[0]), "rb").read()
        assert copy == original and len(copy) == r.json["snapshot"]["bytes"]
        assert "fnv1a64=%016x" % fnv1a64(copy) in log, log
        assert "[snapshot-copy]" in log


CPP_MODULE = r"""
// A module in C++20: module.h must compile (no `requires` member) and the
// descriptor must keep its C name.
#include <moltendb/module.h>

static const char *const needs_list[] = {MDB_STORAGE_SERVICE, nullptr};

static void on_snapshot(mdb_ctx *ctx, const mdb_snapshot_info *info, void *)
{
    mdb_log(ctx, MDB_LOG_INFO, "cpp hook saw %s (%llu bytes)", info->path,
            static_cast<unsigned long long>(info->bytes));
}

static int cpp_init(mdb_ctx *ctx) { return mdb_hook_after_snapshot(ctx, 10, on_snapshot, nullptr); }

MDB_MODULE_DEFINE(.name = "cpp-hook", .version = "1", .description = "a C++ module",
                  .needs = needs_list, .init = cpp_init);
"""


def test_cplusplus_module_compiles_and_loads():
    if not shutil.which("g++"):
        mdbtest.skip("no g++")
    d = tempfile.mkdtemp(prefix="mdbcpp-")
    src = os.path.join(d, "cpp-hook.cpp")
    with open(src, "w") as f:
        f.write(CPP_MODULE)
    cflags = pkg_config(BUILD_DIR, "--cflags").split()
    subprocess.run(["g++", "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    "-fvisibility=hidden", "-fvisibility-inlines-hidden"] + cflags +
                   [src, "-o", os.path.join(d, "cpp-hook.so")], check=True)
    exported = subprocess.run(["nm", "-D", "--defined-only", os.path.join(d, "cpp-hook.so")],
                              capture_output=True, text=True, check=True).stdout.split()
    assert "mdb_module_descriptor" in exported, exported
    with mdbtest.Server(modules=["storage-wal", "test-auth", "cpp-hook"], auth=False,
                        module_dir="%s:%s" % (d, mdbtest.FIXTURE_DIR),
                        args=["--disable-encryption"]) as s:
        r = s.request("POST", "/snapshot", token="admin-token")
        assert r.status == 200, r
        # The hook ran before the reply, so its line is already there.
        assert "cpp hook saw %s (%d bytes)" % (r.json["snapshot"]["path"],
                                              r.json["snapshot"]["bytes"]) in s.log(), s.log()


if __name__ == "__main__":
    mdbtest.main()
