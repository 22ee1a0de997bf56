"""Bad input everywhere: random, truncated and mistyped bodies against every
route of the full server (storage-wal, auth-jwt, query-engine, ttl-sweeper).
Each reply must be a JSON envelope (or a success), never a crash, and the
data written before must still be there afterwards. Seeded, so a failure
can be replayed."""
import json
import random

import mdbtest
from mdbtest import Server

MODULES = ["storage-wal", "auth-jwt", "query-engine", "ttl-sweeper"]
ROUTES = [("POST", "/set"), ("POST", "/get"), ("POST", "/update"), ("POST", "/delete"),
          ("POST", "/schema"), ("POST", "/stats"), ("GET", "/stats"), ("POST", "/analytics"),
          ("GET", "/collections/c1"), ("GET", "/collections/c1/docs/k1"),
          ("POST", "/auth/delegate"), ("POST", "/auth/refresh"), ("DELETE", "/auth/tokens/x"),
          ("POST", "/login")]
PROPS = ["collection", "data", "keys", "where", "fields", "excludedFields", "sort", "order",
         "count", "offset", "joins", "drop", "ttl", "maxSize", "schema", "metric", "client_id",
         "scopes", "ttl_secs", "username", "password", "extends", "_v", "$or", "$gt"]


def rand_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2 ** 31, -(2 ** 63), 2 ** 64, 1e308, 0.5, 1001])
    if kind == 3:
        return rng.choice(["", "c1", "k1", "x" * 300, "a.b", "$eq", "_v", "..", "read:c1:*",
                           "\u00e9\u4e2d", "*:*:*", "c1.k1", "asc", "desc"])
    if kind == 4:
        return rng.choice(PROPS)
    if kind == 5:
        return rng.randrange(-5, 5)
    if kind == 6:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PROPS + ["k1", "k2", "x.y"]): rand_value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def rand_body(rng):
    pick = rng.randrange(10)
    if pick == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if pick == 1:
        text = json.dumps({"collection": "c1", "data": {"k1": {"a": 1}}})
        return text[:rng.randrange(len(text))].encode()
    if pick == 2:
        return json.dumps(rand_value(rng)).encode()
    body = {"collection": rng.choice(["c1", "c2", rand_value(rng)])}
    for _ in range(rng.randrange(1, 5)):
        body[rng.choice(PROPS)] = rand_value(rng)
    return json.dumps(body).encode()


def test_random_bodies_never_break_the_server():
    rng = random.Random(20261124)
    with Server(modules=MODULES, args=["--disable-encryption"]) as s:
        tok = s.login()
        r = s.post("/set", {"collection": "c1", "data": {"k1": {"a": 1}, "k2": {"a": 2}}})
        assert r.status == 200, r
        for i in range(1500):
            method, path = rng.choice(ROUTES)
            body = rand_body(rng)
            r = s.request(method, path, raw=body, token=tok if path != "/login" else None,
                          headers={"Content-Type": "application/json"})
            assert r.status < 500 or r.status == 503, (i, method, path, body, r)
            if r.status >= 400:
                env = r.json
                assert env.get("statusCode") == r.status and isinstance(env.get("error"), str), \
                    (i, method, path, body, r)
            else:
                json.loads(r.body)  # successes are JSON too
        assert s.request("GET", "/system/health").status == 200
        # The server is intact: the first documents (unless a random request
        # legitimately removed them) and new writes work.
        r = s.post("/set", {"collection": "after", "data": {"z": {"ok": True}}})
        assert r.status == 200, r
        r = s.post("/get", {"collection": "after", "keys": "z"})
        assert r.status == 200 and r.json["ok"] is True, r


if __name__ == "__main__":
    mdbtest.main()
