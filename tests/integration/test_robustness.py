"""Bad input everywhere: a seeded HTTP fuzzer over every route of the full
server (storage-wal, auth-jwt, query-engine, ttl-sweeper, metrics, ws-push):
random, truncated and mistyped bodies, random path parameters and query
strings, random methods and tokens. Each reply must be a JSON envelope (or a
success), never a crash or a 5xx other than 503, and the server must keep
its data and keep working. Under the ASan+UBSan build any sanitizer report
in the server log fails the test.

Bounded for CI: MDB_FUZZ_REQUESTS requests (default 1500) or
MDB_FUZZ_SECONDS of wall time (default 120), whichever comes first. Longer by
hand, with another seed (tests/fuzz/README.md):
  MDB_FUZZ_SEED=7 MDB_FUZZ_REQUESTS=100000 MDB_FUZZ_SECONDS=3600 \\
    ctest -R integration.test_robustness --timeout 4000
A failure names the seed and the request index, so it can be replayed."""
import json
import os
import random
import time

import mdbtest
from mdbtest import Server

MODULES = ["storage-wal", "auth-jwt", "query-engine", "ttl-sweeper", "metrics", "ws-push"]
SEED = int(os.environ.get("MDB_FUZZ_SEED", "20261124"))
REQUESTS = int(os.environ.get("MDB_FUZZ_REQUESTS", "1500"))
SECONDS = float(os.environ.get("MDB_FUZZ_SECONDS", "120"))

# Every route the server registers with these modules (method, path
# template); {c} {k} {jti} are filled with random path segments.
ROUTES = [("POST", "/set"), ("POST", "/get"), ("POST", "/update"), ("POST", "/delete"),
          ("POST", "/schema"), ("POST", "/stats"), ("GET", "/stats"), ("POST", "/analytics"),
          ("GET", "/collections/{c}"), ("GET", "/collections/{c}/docs/{k}"),
          ("POST", "/login"), ("POST", "/auth/delegate"), ("POST", "/auth/refresh"),
          ("DELETE", "/auth/tokens/{jti}"), ("POST", "/snapshot"), ("GET", "/system/health"),
          ("GET", "/system/ttl"), ("GET", "/system/metrics"), ("GET", "/metrics"),
          ("GET", "/ws")]
# Routes whose success is not a JSON body.
NOT_JSON = {"/metrics"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
PROPS = ["collection", "data", "keys", "where", "fields", "excludedFields", "sort", "order",
         "count", "offset", "joins", "drop", "ttl", "maxSize", "schema", "metric", "client_id",
         "scopes", "ttl_secs", "username", "password", "extends", "_v", "$or", "$gt", "field",
         "type", "from", "on", "field", "$in", "$contains", "pattern", "required", "properties"]
# Path segments (percent-encoded as sent), undecodable bytes included
# (%FF, an overlong '/', a lone surrogate, a code point above U+10FFFF, a
# truncated sequence): every answer must still be valid JSON.
SEGMENTS = ["c1", "k1", "c2", "", "x" * 300, "a.b", "..", "%00", "%2F", "admin", "__proto__",
            "%C3%A9", "k%20", "*", "-", "_", "%22%5C", "%FF", "k%C0%AF", "%ED%A0%80",
            "%F4%90%80%80", "c%E2%82"]


def rand_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2 ** 31, -(2 ** 63), 2 ** 63 - 1, 2 ** 64, 1e308, -1e308,
                           1e20, 0.5, 1001, 10 ** 30])
    if kind == 3:
        return rng.choice(["", "c1", "k1", "x" * 300, "a.b", "$eq", "_v", "..", "read:c1:*",
                           "\u00e9\u4e2d", "*:*:*", "c1.k1", "asc", "desc", "COUNT", "SUM",
                           "AVG", "MIN", "MAX", "integer", "object", "^a(b|c)*$", "\u0000"])
    if kind == 4:
        return rng.choice(PROPS)
    if kind == 5:
        return rng.randrange(-5, 5)
    if kind == 6:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PROPS + ["k1", "k2", "x.y"]): rand_value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def rand_body(rng):
    pick = rng.randrange(12)
    if pick == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if pick == 1:
        text = json.dumps({"collection": "c1", "data": {"k1": {"a": 1}}})
        return text[:rng.randrange(len(text))].encode()
    if pick == 2:
        return json.dumps(rand_value(rng)).encode()
    if pick == 3:
        return b""
    body = {"collection": rng.choice(["c1", "c2", rand_value(rng)])}
    for _ in range(rng.randrange(1, 5)):
        body[rng.choice(PROPS)] = rand_value(rng)
    return json.dumps(body).encode()


def rand_path(rng, template):
    path = (template.replace("{c}", rng.choice(SEGMENTS)).replace("{k}", rng.choice(SEGMENTS))
            .replace("{jti}", rng.choice(SEGMENTS)))
    if rng.randrange(4) == 0:
        q = rng.choice(["limit", "offset", "x", "limit=%s" % rng.choice(["-1", "0", "1001",
                        "99999999999999999999", "a", ""])])
        path += "?" + q + ("&offset=%d" % rng.randrange(-2, 5) if rng.randrange(2) else "")
    return path


def check_reply(i, method, path, body, r):
    where = (SEED, i, method, path, body[:300], r)
    assert r.status < 500 or r.status == 503, where
    if method == "HEAD" or r.status in (101, 204, 304):
        return
    if r.status >= 400:
        env = r.json
        assert env.get("statusCode") == r.status and isinstance(env.get("error"), str), where
    elif path.split("?")[0] not in NOT_JSON:
        json.loads(r.body)  # successes are JSON too


def test_seeded_requests_over_every_route_never_break_the_server():
    rng = random.Random(SEED)
    with Server(modules=MODULES, args=["--disable-encryption"]) as s:
        tok = s.login()
        r = s.post("/set", {"collection": "keep", "data": {"k1": {"a": 1}, "k2": {"a": 2}}})
        assert r.status == 200, r
        r = s.post("/set", {"collection": "c1", "data": {"k1": {"a": 1, "n": 1e20}}})
        assert r.status == 200, r
        tokens = [tok, tok, tok, None, "garbage", tok[:-3] + "abc"]
        deadline = time.monotonic() + SECONDS
        done = 0
        for i in range(REQUESTS):
            if time.monotonic() > deadline:
                break
            method, template = rng.choice(ROUTES)
            if rng.randrange(20) == 0:
                method = rng.choice(METHODS)
            path = rand_path(rng, template)
            body = rand_body(rng) if method != "GET" or rng.randrange(8) == 0 else b""
            token = rng.choice(tokens) if template != "/login" else None
            # Random tokens must never reach the collection kept below.
            if isinstance(body, bytes) and b"keep" in body:
                body = body.replace(b"keep", b"kepp")
            r = s.request(method, path, raw=body or None, token=token,
                          headers={"Content-Type": "application/json"})
            check_reply(i, method, path, body, r)
            done += 1
        print("seed %d: %d requests" % (SEED, done))
        assert done >= min(REQUESTS, 200), "only %d requests in %ss" % (done, SECONDS)
        assert s.request("GET", "/system/health").status == 200
        # Intact: the data written first (no request named that collection)
        # and new writes work.
        r = s.post("/get", {"collection": "keep", "keys": ["k1", "k2"]})
        assert r.status == 200 and len(r.json) == 2, r
        r = s.post("/set", {"collection": "after", "data": {"z": {"ok": True}}})
        assert r.status == 200, r
        r = s.post("/get", {"collection": "after", "keys": "z"})
        assert r.status == 200 and r.json["ok"] is True, r


def test_huge_numbers_through_every_numeric_path():
    """Doubles beyond the int64 range (1e20, -1e300, 2^64) through
    analytics, schema types, where, sort and projection: a cast of such a
    double to an integer is undefined behaviour (the ASan+UBSan build
    aborts), found by the schema fuzz target."""
    with Server(modules=MODULES, args=["--disable-encryption"]) as s:
        docs = {"a": {"n": 1e20}, "b": {"n": -1e300}, "c": {"n": 18446744073709551616.0},
                "d": {"n": 2.5}}
        assert s.post("/set", {"collection": "h", "data": docs}).status == 200
        want = {"SUM": 1e20 + 18446744073709551616.0 - 1e300 + 2.5, "MIN": -1e300,
                "MAX": 1e20, "COUNT": 4}
        for fn in ("SUM", "AVG", "MIN", "MAX", "COUNT"):
            r = s.post("/analytics", {"collection": "h", "metric": {"type": fn, "field": "n"}})
            assert r.status == 200, (fn, r)
            if fn in want:
                assert r.json["result"] == want[fn], (fn, r)
        r = s.post("/get", {"collection": "h", "where": {"n": {"$gt": 1e19}}, "sort": ["n"]})
        assert r.status == 200 and [d["_key"] for d in r.json] == ["c", "a"], r
        r = s.post("/schema", {"collection": "hs", "schema": {
            "type": "object", "properties": {"n": {"type": "integer"}}}})
        assert r.status == 200, r
        r = s.post("/set", {"collection": "hs", "data": {"x": {"n": 1e20}}})
        assert r.status == 200, r  # 1e20 has no fractional part: an integer
        r = s.post("/set", {"collection": "hs", "data": {"y": {"n": 2.5}}})
        assert r.status == 400, r
        assert s.request("GET", "/system/health").status == 200


if __name__ == "__main__":
    mdbtest.main()
