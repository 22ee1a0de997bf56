"""The man pages: moltendb.conf(5) documents every key that the server and
each built module accept (checked against `moltendb --help` of the real
binary, module by module), none without a description, and all three pages
format without a warning from man/groff."""
import os
import re
import shutil
import subprocess
import tempfile

import mdbtest

BUILD = os.path.dirname(os.path.abspath(mdbtest.BIN))
SOURCE = os.environ.get("MDB_SOURCE_DIR", ".")
CONF_PAGE = os.path.join(BUILD, "man", "moltendb.conf.5")
PAGES = [CONF_PAGE, os.path.join(SOURCE, "packaging", "man", "moltendb.8"),
         os.path.join(SOURCE, "packaging", "man", "moltendb-modules.7")]


def page_sections():
    """{section: text} of the KEYS part of moltendb.conf(5), roff escapes removed."""
    with open(CONF_PAGE) as f:
        text = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith(".SS "):
            m = re.match(r"\.SS \[(.+)\]$", line)
            cur = m.group(1) if m else "core"
            out[cur] = ""
        elif line.startswith(".SH "):
            cur = None
        elif cur:
            out[cur] += line + "\n"
    return out


def help_sections(modules):
    """{section: [(flag-or-name, env)]} from `moltendb --help` with these modules."""
    d = tempfile.mkdtemp(prefix="mdbman-")
    try:
        conf = os.path.join(d, "moltendb.conf")
        with open(conf, "w") as f:
            f.write("".join("module = %s\n" % m for m in modules))
        rc, out, err = mdbtest.run_binary(["--config", conf, "--module-dir", mdbtest.MODULE_DIR,
                                           "--help"])
    finally:
        shutil.rmtree(d)
    if rc != 0:
        return None, err
    sections, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            cur = m.group(1)
            sections[cur] = []
        elif cur and line.startswith("  "):
            words = line.split()
            env = re.search(r"\[(MOLTENDB_[A-Z0-9_]+)\]\s*$", line)
            sections[cur].append((words[0], env.group(1) if env else None))
    return sections, err


def built_modules():
    return sorted(f[:-3] for f in os.listdir(mdbtest.MODULE_DIR) if f.endswith(".so"))


def test_every_module_has_a_section():
    page = page_sections()
    assert "core" in page, page.keys()
    for m in built_modules():
        assert m in page, "moltendb.conf(5) has no section for module %s" % m


def test_every_key_is_documented():
    page = page_sections()
    assert "UNDOCUMENTED" not in "".join(page.values()), "a key has no help text"
    checked = 0
    for m in built_modules():
        # Each module with an auth provider and a storage provider; a module
        # that is itself a storage provider goes without storage-memory.
        mods = [m] + [x for x in ("auth-jwt", "storage-memory") if x != m]
        sections, err = help_sections(mods)
        if sections is None and "provides 'storage'" in err:
            sections, err = help_sections([m] + [x for x in ("auth-jwt",) if x != m])
        assert sections is not None, "--help with %s failed: %s" % (mods, err)
        for sec, keys in sections.items():
            text = page.get(sec)
            assert text is not None, "section [%s] missing from moltendb.conf(5)" % sec
            for name, env in keys:
                if name.startswith("--"):
                    assert ("the option " + name + " ") in text or \
                        ("the option " + name + ".") in text, \
                        "[%s] option %s is not documented" % (sec, name)
                else:
                    assert (".B " + name + "\n") in text, "[%s] key %s is not documented" % (sec, name)
                if env:
                    assert env in text, "[%s] variable %s is not documented" % (sec, env)
                checked += 1
    assert checked >= 20, checked


def test_pages_format_without_warnings():
    if not shutil.which("man"):
        mdbtest.skip("man is not installed")
    for p in PAGES:
        r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", p],
                           capture_output=True, env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
        assert r.returncode == 0, (p, r.stderr)
        assert r.stderr.strip() == b"", "%s: %s" % (p, r.stderr.decode())
        assert len(r.stdout) > 1000, p


if __name__ == "__main__":
    mdbtest.main()
