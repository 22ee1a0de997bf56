#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_wal (tests/fuzz/corpus/wal/): log and
snapshot files in storage-wal's format (modules/storage-wal/README.md,
"Format"), plaintext and encrypted, valid and damaged. Deterministic: fixed
generations, salt and nonces. Encrypted seeds use the default password and
libsodium's minimum Argon2id limits (the fuzz target replays only those).
Run by hand after a format change: python3 tests/fuzz/gen-wal-corpus.py"""
import base64
import ctypes
import ctypes.util
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "wal")
PASSWORD = b"moltendb-default-encryption-key"  # WAL_DEFAULT_PASSWORD
OPS, MEM = 1, 8192
SALT = bytes(range(16))
T = 1717000000000

sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
sodium.sodium_init()


def derive():
    key = ctypes.create_string_buffer(32)
    rc = sodium.crypto_pwhash(key, ctypes.c_ulonglong(32), PASSWORD,
                              ctypes.c_ulonglong(len(PASSWORD)), SALT, ctypes.c_ulonglong(OPS),
                              ctypes.c_size_t(MEM), ctypes.c_int(2))  # ALG_ARGON2ID13
    assert rc == 0
    return key.raw


KEY = derive()
_nonce = [0]


def seal(pt):
    _nonce[0] += 1
    nonce = _nonce[0].to_bytes(24, "little")
    ct = ctypes.create_string_buffer(len(pt) + 16)
    clen = ctypes.c_ulonglong(0)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(ct, ctypes.byref(clen), pt,
                                                      ctypes.c_ulonglong(len(pt)), None,
                                                      ctypes.c_ulonglong(0), None, nonce, KEY)
    return base64.b64encode(nonce + ct.raw[:clen.value]).decode()


def line(cmd, coll, key, value, t=T):
    # The member order and spacing storage-wal writes (its fast path).
    return '{"cmd":"%s","collection":%s,"key":%s,"value":%s,"_t":%d}' % (
        cmd, json.dumps(coll), json.dumps(key), json.dumps(value, separators=(",", ":")), t)


def header(kind="log", enc=False, **extra):
    v = {"format": "moltendb-wal", "version": 1, "kind": kind, "gen": "00000000000000a1",
         "encryption": "xchacha20poly1305" if enc else "none"}
    if enc:
        v.update(kdf="argon2id13", opslimit=OPS, memlimit=MEM,
                 salt=base64.b64encode(SALT).decode(),
                 check=seal(b"moltendb-key-check-v1"))
    if kind == "snapshot":
        v.update(logGen="00000000000000a1", logOffset=0)
    v.update(extra)
    return line("HEADER", "_", "_", v)


def enc(text):
    return line("ENC", "_", "_", seal(text.encode()))


LOG = [
    line("INSERT", "users", "u1", {"name": "ann", "age": 31, "_v": 1}),
    line("TX_BEGIN", "_", "tx1", 2),
    line("INSERT", "users", "u2", {"name": "bob", "tags": ["a", "b"], "n": None}),
    line("INSERT", "users", "u3", {"nested": {"deep": [1, 2.5, {"x": True}]}}),
    line("TX_COMMIT", "_", "tx1", None),
    line("DELETE", "users", "u1", None),
    line("SCHEMA", "users", None, {"type": "object", "required": ["name"]}),
    line("META", "users", None, {"ttl": 60, "expiresAt": T + 60000, "maxSize": 10}),
    line("DROP", "old", None, None),
    line("TTL_EXPIRY", "users", "u9", None),
]
SNAP = [
    line("META", "users", None, {"ttl": 0, "expiresAt": 0, "maxSize": 0, "nextSeq": 7}),
    line("SCHEMA", "users", None, {"type": "object"}),
    line("INSERT", "users", "u2", {"name": "bob", "_v": 2, "_seq": 1}),
    line("END", "_", "_", 3),
]


def write(name, lines, tail="\n"):
    with open(os.path.join(OUT, name), "w") as f:
        f.write("\n".join(lines) + tail)


os.makedirs(OUT, exist_ok=True)
write("log-plain.wal", [header()] + LOG)
write("log-encrypted.wal", [header(enc=True)] + [enc(x) for x in LOG])
write("snapshot-plain.wal", [header("snapshot")] + SNAP)
write("snapshot-encrypted.wal", [header("snapshot", enc=True)] + [enc(x) for x in SNAP])
write("log-torn-tail.wal", [header()] + LOG[:3] + [LOG[3][:25]], tail="")
write("log-nul-tail.wal", [header()] + LOG[:1] + ["\0" * 40])
write("log-open-tx.wal", [header()] + LOG[1:3])
write("log-tx-count-mismatch.wal", [header(), line("TX_BEGIN", "_", "t", 3), LOG[2],
                                    line("TX_COMMIT", "_", "t", None)])
write("log-corrupt-middle.wal", [header(), LOG[0], '{"cmd":"INSERT","collection":', LOG[5]])
write("log-escapes.wal", [header(), line("INSERT", "c\u00e9\"\\", "k\n\u2028", {"s": "\u0001"}),
                          '{"_t":5,"value":{"a":1},"key":"k","collection":"c","cmd":"INSERT"}'])
write("log-bad-lines.wal", [header(), line("INSERT", "", "k", {}), line("INSERT", "c", None, {}),
                            line("NOPE", "c", "k", {}), line("INSERT", "c", "k", "not-an-object"),
                            line("ENC", "_", "_", "AAAA"), '{"cmd":"INSERT","_t":"x"}', "[]"])
write("log-enc-in-plain.wal", [header(), enc(LOG[0])])
write("log-plain-in-encrypted.wal", [header(enc=True), LOG[0]])
write("header-only.wal", [header()])
write("header-torn.wal", [header()[:40]], tail="")
write("header-bad-version.wal", [header(version=2)])
write("header-bad-gen.wal", [header(gen="xyz")])
write("header-wrong-check.wal", [header(enc=True, check=seal(b"something else"))])
write("header-huge-kdf.wal", [header(enc=True, opslimit=64, memlimit=4 << 30)])
write("not-a-header.wal", LOG[:2])
write("empty.wal", [], tail="")
