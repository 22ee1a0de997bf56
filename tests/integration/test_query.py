"""query-engine over HTTP: every route, the upstream error texts, scoped tokens.

Runs with the default modules (storage-memory, auth-jwt, query-engine). When
auth-jwt is not built, the non-scope tests fall back to the test-auth fixture
(token "admin-token") and the scoped-token tests are skipped.
"""
import os
import re
import shutil
import tempfile
import time

import mdbtest
from mdbtest import expect_error

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HAVE_JWT = mdbtest.module_available("auth-jwt")


class Srv:
    """A server plus an admin token; .post() sends with that token."""

    def __init__(self, args=(), storage="storage-memory", workdir=None):
        if HAVE_JWT:
            self.s = mdbtest.Server(modules=[storage, "auth-jwt", "query-engine"],
                                    args=list(args), workdir=workdir)
            self.token = self.s.login()
        else:
            self.mdir = tempfile.mkdtemp(prefix="mdbqe-mods-")
            for name in (storage, "query-engine"):
                shutil.copy(os.path.join(mdbtest.MODULE_DIR, name + ".so"), self.mdir)
            shutil.copy(os.path.join(mdbtest.FIXTURE_DIR, "test-auth.so"), self.mdir)
            self.s = mdbtest.Server(modules=[storage, "test-auth", "query-engine"],
                                    module_dir=self.mdir, auth=False, args=list(args),
                                    workdir=workdir)
            self.token = "admin-token"

    def post(self, path, body, token=None):
        return self.s.request("POST", path, body, token=token or self.token)

    def get(self, path, token=None):
        return self.s.request("GET", path, token=token or self.token)

    def ok(self, path, body, token=None):
        r = self.post(path, body, token)
        assert r.status == 200, r
        return r.json

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.s.__exit__(*exc)


LAPTOPS = {
    "lp1": {"brand": "Lenovo", "model": "ThinkPad X1 Carbon", "price": 1499, "in_stock": True,
            "memory_id": "mem2", "display_id": "dsp2", "tags": ["business", "ultrabook"],
            "specs": {"cpu": {"brand": "Intel", "cores": 12, "ghz": 3.5}, "weight_kg": 1.12}},
    "lp2": {"brand": "Apple", "model": "MacBook Pro 16", "price": 3499, "in_stock": True,
            "memory_id": "mem5", "display_id": "dsp4", "tags": ["creative", "macos"],
            "specs": {"cpu": {"brand": "Apple", "cores": 12, "ghz": 4.05}, "weight_kg": 2.15}},
    "lp3": {"brand": "Asus", "model": "ROG Zephyrus G14", "price": 1699, "in_stock": True,
            "memory_id": "mem3", "display_id": "dsp5", "tags": ["gaming", "amd"],
            "specs": {"cpu": {"brand": "AMD", "cores": 8, "ghz": 4.9}, "weight_kg": 1.65}},
    "lp4": {"brand": "Dell", "model": "XPS 15", "price": 1899, "in_stock": False,
            "memory_id": "mem3", "display_id": "dsp4", "tags": ["creative", "windows"],
            "specs": {"cpu": {"brand": "Intel", "cores": 14, "ghz": 3.8}, "weight_kg": 1.86}},
    "lp5": {"brand": "Razer", "model": "Blade 15", "price": 2499, "in_stock": True,
            "memory_id": "mem4", "display_id": "dsp3", "tags": ["gaming", "windows"],
            "specs": {"cpu": {"brand": "Intel", "cores": 14, "ghz": 4.1}, "weight_kg": 2.01}},
    "lp6": {"brand": "Framework", "model": "Laptop 13", "price": 849, "in_stock": True,
            "memory_id": "mem1", "display_id": "dsp1", "tags": ["modular", "linux"],
            "specs": {"cpu": {"brand": "Intel", "cores": 10, "ghz": 3.3}, "weight_kg": 1.3}},
}
MEMORY = {"mem1": {"capacity_gb": 8, "type": "LPDDR5", "upgradeable": False},
          "mem2": {"capacity_gb": 16, "type": "LPDDR5", "upgradeable": False},
          "mem3": {"capacity_gb": 32, "type": "DDR5", "upgradeable": True},
          "mem4": {"capacity_gb": 64, "type": "DDR5", "upgradeable": True},
          "mem5": {"capacity_gb": 36, "type": "Unified", "upgradeable": False}}
DISPLAY = {"dsp1": {"panel": "IPS", "refresh_hz": 60}, "dsp2": {"panel": "OLED", "refresh_hz": 90},
           "dsp3": {"panel": "IPS", "refresh_hz": 144},
           "dsp4": {"panel": "Mini-LED", "refresh_hz": 120},
           "dsp5": {"panel": "IPS", "refresh_hz": 165}}


def seed(srv):
    for coll, data in (("memory", MEMORY), ("display", DISPLAY), ("laptops", LAPTOPS)):
        assert srv.ok("/set", {"collection": coll, "data": data})["count"] == len(data)


def keys_of(docs):
    return sorted(d["_key"] for d in docs)


# ---- /set --------------------------------------------------------------------------
def test_set_and_single_get():
    with Srv() as srv:
        body = srv.ok("/set", {"collection": "laptops", "data": {"lp1": LAPTOPS["lp1"]}})
        assert body == {"statusCode": 200, "status": "ok", "count": 1}, body
        doc = srv.ok("/get", {"collection": "laptops", "keys": "lp1"})
        assert doc["_key"] == "lp1" and doc["_v"] == 1 and doc["brand"] == "Lenovo", doc
        assert "_seq" not in doc and "_createdAt" not in doc
        body = srv.ok("/set", {"collection": "items", "data": [{"n": "a"}, {"n": "b"}, {"n": "c"}]})
        assert body["count"] == 3 and len(body["ids"]) == 3
        assert all(UUID7.match(i) for i in body["ids"]), body
        assert body["ids"] == sorted(body["ids"])  # time ordered, element order
        docs = srv.ok("/get", {"collection": "items", "order": "asc"})
        assert [d["n"] for d in docs] == ["a", "b", "c"]
        assert [d["_key"] for d in docs] == body["ids"]
        # overwrite bumps _v and keeps _seq / _createdAt
        first = srv.ok("/get", {"collection": "laptops", "keys": "lp1", "fields": ["_seq", "_createdAt"]})
        srv.ok("/set", {"collection": "laptops", "data": {"lp1": {"brand": "X"}}})
        again = srv.ok("/get", {"collection": "laptops", "keys": "lp1",
                                "fields": ["brand", "price", "_seq", "_createdAt"]})
        assert again["_v"] == 2 and again["brand"] == "X" and "price" not in again
        assert again["_seq"] == first["_seq"] and again["_createdAt"] == first["_createdAt"]
        assert srv.ok("/set", {"collection": "empty", "data": {}})["count"] == 0
        # non-object documents are stored verbatim
        srv.ok("/set", {"collection": "raw", "data": {"n": 42}})
        assert srv.ok("/get", {"collection": "raw", "keys": "n"}) == 42


def test_set_errors():
    with Srv(args=["--max-keys-per-request", "3"]) as srv:
        p = srv.post
        expect_error(p("/set", {"data": {"a": {}}}), 400, "Missing 'collection' name")
        expect_error(p("/set", {"collection": 5, "data": {"a": {}}}), 400, "Missing 'collection' name")
        expect_error(p("/set", {"collection": "c", "data": {}, "wrongProperty": 1}), 400,
                     "Unknown property: 'wrongProperty'. Check the API docs for supported properties")
        expect_error(p("/set", {"collection": "../etc/passwd", "data": {}}), 400,
                     "Invalid collection name: '../etc/passwd'. Must be alphanumeric with _, - only (1-64 chars)")
        expect_error(p("/set", {"collection": "admin", "data": {}}), 400,
                     "Invalid collection name: 'admin (reserved name)'. Must be alphanumeric with _, - only (1-64 chars)")
        expect_error(p("/set", {"collection": "c" * 65, "data": {}}), 400,
                     "Collection name too long (max 64 characters)")
        expect_error(p("/set", {"collection": "c", "data": {"bad key": {}}}), 400,
                     "Invalid key name: 'bad key'. Must be alphanumeric with _, -, . only (1-256 chars)")
        expect_error(p("/set", {"collection": "c", "data": {"k" * 257: {}}}), 400,
                     "Key name too long (max 256 characters)")
        expect_error(p("/set", {"collection": "c", "data": {"a": {}, "b": {}, "c": {}, "d": {}}}), 400,
                     "Too many keys in single request (max 3)")
        expect_error(p("/set", {"collection": "c"}), 400, "Missing 'data' (object or array)")
        expect_error(p("/set", {"collection": "c", "data": "x"}), 400, "Missing 'data' (object or array)")
        expect_error(p("/set", {"collection": "c", "data": {}, "ttl": -1}), 400,
                     "'ttl' must be a non-negative integer (seconds)")
        expect_error(p("/set", {"collection": "c", "data": {}, "ttl": 1.5}), 400,
                     "'ttl' must be a non-negative integer (seconds)")
        expect_error(p("/set", {"collection": "c", "data": {}, "maxSize": 0}), 400,
                     "'maxSize' must be a positive integer")
        # the _ rule rejects the whole batch
        expect_error(p("/set", {"collection": "c", "data": {"ok": {"a": 1}, "bad": {"_v": 1}}}), 400,
                     "Fields starting with '_' are reserved for internal use and cannot be set by the client.")
        expect_error(p("/get", {"collection": "c", "keys": "ok"}), 404, "No documents found")
        srv.ok("/set", {"collection": "c", "data": {"nested": {"a": {"_x": 1}}}})  # nested is fine
        deep = {}
        cur = deep
        for _ in range(40):
            cur["a"] = {}
            cur = cur["a"]
        expect_error(p("/set", {"collection": "c", "data": {"d": deep}}), 400)
        expect_error(p("/set", [1, 2]), 400, "Request body must be a JSON object")
        r = srv.s.request("POST", "/set", token=srv.token, raw=b"{not json")
        expect_error(r, 400)


# ---- /get ----------------------------------------------------------------------------
def test_get_where_operators():
    with Srv() as srv:
        seed(srv)
        q = lambda w: srv.post("/get", {"collection": "laptops", "where": w})
        def n(w):
            r = q(w)
            return 0 if r.status == 404 else len(r.json)
        assert n({"brand": "apple"}) == 1
        assert n({"price": {"$gt": 1000, "$lt": 2000}}) == 3
        assert n({"specs.cpu.cores": {"$gte": 12}}) == 4
        assert n({"specs.cpu.cores": {"$greaterThanOrEqual": 12}}) == 4
        assert n({"specs.cpu.cores": {"$lessThanOrEqual": 10}}) == 2
        assert n({"specs.cpu.brand": {"$ne": "Intel"}}) == 2
        assert n({"model": {"$contains": "pro"}}) == 1
        assert n({"tags": {"$contains": "gaming"}}) == 2
        assert n({"tags": {"$ct": "GAMING"}}) == 2
        assert n({"brand": {"$in": ["Apple", "dell", "Razer"]}}) == 3
        assert n({"brand": {"$oneOf": ["Apple"]}}) == 1
        assert n({"price": {"$in": [849, 1499.0]}}) == 2  # numbers as numbers
        assert n({"brand": {"$nin": ["Framework"]}}) == 5
        assert n({"brand": {"$notIn": ["Framework", "Apple"]}}) == 4
        assert n({"in_stock": True, "tags": {"$contains": "gaming"}, "price": {"$lt": 2000}}) == 1
        assert n({"$or": [{"brand": "Apple"}, {"price": {"$lt": 1000}}]}) == 2
        assert n({"$and": [{"brand": "Apple"}, {"price": {"$lt": 2000}}]}) == 0
        assert n({"brand": {"$in": []}}) == 0
        assert n({"brand": {"$nin": []}}) == 6
        assert n({"nothere": {"$ne": 1}}) == 6  # missing satisfies $ne
        assert n({"_seq": {"$lt": 2}}) == 2  # cursor on the system field
        expect_error(q({"brand": {"$regex": "a"}}), 400, "Invalid Query: Unknown operator: $regex")
        expect_error(q({"$or": {"a": 1}}), 400, "Invalid Query: $or expects an array")
        expect_error(q({"$and": 5}), 400, "Invalid Query: $and expects an array")
        expect_error(q({"brand": {"$in": "Apple"}}), 400, "Invalid Query: $in expects an array")
        expect_error(q({"a..b": 1}), 400,
                     "Invalid field name: 'a..b'. Must be alphanumeric with _, -, . only (1-128 chars)")
        srv.ok("/set", {"collection": "chaos", "data": {"c1": {"metric": 10}, "c2": {"metric": "Not An Integer"},
                                                         "c3": {"metric": [10, 20]}, "c4": {"metric": 50}, "c5": {}}})
        docs = srv.ok("/get", {"collection": "chaos", "where": {"metric": {"$gt": 5}}})
        assert keys_of(docs) == ["c1", "c4"]


def test_get_projection_sort_pagination():
    with Srv() as srv:
        seed(srv)
        g = lambda **kw: srv.post("/get", dict(collection="laptops", **kw))
        docs = g(fields=["brand", "specs.cpu.ghz", "_createdAt"]).json
        assert len(docs) == 6
        d = docs[0]
        assert set(d) == {"_key", "_v", "brand", "specs", "_createdAt"}, d
        assert d["specs"] == {"cpu": {"ghz": d["specs"]["cpu"]["ghz"]}}
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", d["_createdAt"])
        d = g(excludedFields=["price", "memory_id", "specs"]).json[0]
        assert "price" not in d and "specs" not in d and d["brand"] and d["_v"] == 1
        expect_error(g(fields=["a"], excludedFields=["b"]), 400,
                     "'fields' and 'excludedFields' cannot be used together")
        expect_error(g(fields="brand"), 400)
        expect_error(g(fields=["bad field"]), 400,
                     "Invalid field name: 'bad field'. Must be alphanumeric with _, -, . only (1-128 chars)")
        prices = [x["price"] for x in g(fields=["price"], sort=[{"field": "price", "order": "asc"}]).json]
        assert prices == [849, 1499, 1699, 1899, 2499, 3499]
        prices = [x["price"] for x in g(sort=[{"field": "price", "order": "desc"}]).json]
        assert prices == [3499, 2499, 1899, 1699, 1499, 849]
        assert g(sort=[{"field": "specs.cpu.cores", "order": "desc"}]).json[0]["specs"]["cpu"]["cores"] == 14
        docs = g(sort=[{"field": "brand"}]).json  # string sort keeps every document
        assert [x["brand"] for x in docs] == sorted(x["brand"] for x in LAPTOPS.values())
        docs = g(sort=[{"field": "in_stock", "order": "asc"}, {"field": "price", "order": "desc"}]).json
        assert [x["_key"] for x in docs] == ["lp4", "lp2", "lp5", "lp3", "lp1", "lp6"]
        prices = [x["price"] for x in g(sort=[{"field": "price"}], offset=2, count=2).json]
        assert prices == [1699, 1899]
        assert len(g(count=2).json) == 2
        assert [x["_key"] for x in g(count=2).json] == ["lp6", "lp5"]  # newest first
        assert [x["_key"] for x in g(count=2, order="asc").json] == ["lp1", "lp2"]
        expect_error(g(count=1001), 400, "'count' cannot exceed 1000")
        expect_error(g(count="5"), 400)
        expect_error(g(offset=-2), 400)
        expect_error(g(offset=6), 404, "No documents found")
        expect_error(g(count=0), 404, "No documents found")
        expect_error(g(sort=[{"field": "price"}], order="asc"), 400,
                     "'order' and 'sort' cannot be used together")
        expect_error(g(order="newest"), 400, "'order' must be \"asc\" or \"desc\"")
        expect_error(g(sort=[{"order": "asc"}]), 400)
        expect_error(g(myInvalidProperty=1), 400,
                     "Unknown property: 'myInvalidProperty'. Check the API docs for supported properties")
        expect_error(g(keys="lp99"), 404, "No documents found")
        assert keys_of(g(keys=["lp1", "lp3", "lp5", "lp99"]).json) == ["lp1", "lp3", "lp5"]
        expect_error(g(keys=["lp98", "lp99"]), 404, "No documents found")
        expect_error(g(keys="bad key"), 400)
        expect_error(srv.post("/get", {"collection": "nope"}), 404, "No documents found")
        expect_error(srv.post("/get", {"keys": "lp1"}), 400, "Missing 'collection' name")


def test_joins_and_extends():
    with Srv() as srv:
        seed(srv)
        docs = srv.ok("/get", {"collection": "laptops", "fields": ["brand", "model"],
                               "joins": [{"ram": {"from": "memory", "on": "memory_id"}}]})
        assert all(d["ram"]["capacity_gb"] > 0 for d in docs)
        assert all(isinstance(d["ram"]["_createdAt"], int) for d in docs)  # raw ms
        docs = srv.ok("/get", {"collection": "laptops", "joins": [
            {"screen": {"from": "display", "on": "display_id", "fields": ["refresh_hz", "panel"]}}]})
        assert all("refresh_hz" in d["screen"] and "size_inch" not in d["screen"] for d in docs)
        docs = srv.ok("/get", {"collection": "laptops",
                               "joins": [{"screen": {"from": "display", "on": "display_id", "fields": ["panel"]}}],
                               "where": {"screen.panel": {"$in": ["OLED", "Mini-LED"]}}})
        assert len(docs) == 3
        docs = srv.ok("/get", {"collection": "laptops",
                               "joins": [{"screen": {"from": "display", "on": "display_id",
                                                     "fields": ["refresh_hz"]}}],
                               "sort": [{"field": "screen.refresh_hz", "order": "desc"}]})
        assert docs[0]["screen"]["refresh_hz"] == 165
        # a missing join target leaves the alias out (upstream embeds only what it found)
        srv.ok("/set", {"collection": "laptops", "data": {"lp0": {"brand": "Nobody", "memory_id": "mem99"}}})
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp0",
                            "joins": [{"ram": {"from": "memory", "on": "memory_id"}}]})
        assert "ram" not in d, d
        # joins after filtering: an old match is joined even with count 1
        docs = srv.ok("/get", {"collection": "laptops", "where": {"brand": "Lenovo"}, "count": 1,
                               "joins": [{"ram": {"from": "memory", "on": "memory_id"}}]})
        assert docs[0]["_key"] == "lp1" and docs[0]["ram"]["capacity_gb"] == 16
        # extends
        srv.ok("/set", {"collection": "laptops", "data": {"lp7": {
            "brand": "MSI", "extends": {"ram": "memory.mem4", "screen": "display.dsp3"}}}})
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp7"})
        assert d["ram"]["capacity_gb"] == 64 and d["screen"]["refresh_hz"] == 144 and "extends" not in d
        r = srv.post("/set", {"collection": "laptops", "data": {"lp8": {
            "brand": "Lenovo", "extends": {"ram": "memory.mem99"}}}})
        body = expect_error(r, 400)
        assert "memory.mem99" in body["error"], body
        expect_error(srv.post("/get", {"collection": "laptops", "keys": "lp8"}), 404)


# ---- /update ---------------------------------------------------------------------------
def test_update():
    with Srv() as srv:
        seed(srv)
        before = srv.ok("/get", {"collection": "laptops", "keys": "lp4", "fields": ["_createdAt", "_seq"]})
        body = srv.ok("/update", {"collection": "laptops", "data": {"lp4": {"in_stock": True, "price": 1749},
                                                                   "zz": {"a": 1}}})
        assert body == {"statusCode": 200, "status": "ok", "updated": 1}, body
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp4",
                            "fields": ["brand", "price", "in_stock", "_createdAt", "_seq"]})
        assert d["price"] == 1749 and d["in_stock"] is True and d["brand"] == "Dell" and d["_v"] == 2
        assert d["_createdAt"] == before["_createdAt"] and d["_seq"] == before["_seq"]
        expect_error(srv.post("/get", {"collection": "laptops", "keys": "zz"}), 404)
        # shallow: nested objects are replaced
        srv.ok("/update", {"collection": "laptops", "data": {"lp1": {"specs": {"weight_kg": 1}}}})
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp1"})
        assert d["specs"] == {"weight_kg": 1}
        # version guard
        expect_error(srv.post("/update", {"collection": "laptops", "data": {"lp1": {"price": 1, "_v": 1}}}),
                     409, "Conflict: Document version is outdated")
        srv.ok("/update", {"collection": "laptops", "data": {"lp1": {"price": 1, "_v": 2}}})
        assert srv.ok("/get", {"collection": "laptops", "keys": "lp1"})["_v"] == 3
        # all or nothing
        expect_error(srv.post("/update", {"collection": "laptops", "data": {
            "lp2": {"price": 5}, "lp3": {"price": 5, "_v": 99}}}), 409)
        assert srv.ok("/get", {"collection": "laptops", "keys": "lp2"})["price"] == 3499
        expect_error(srv.post("/update", {"collection": "laptops", "data": {
            "lp2": {"price": 5}, "lp3": {"_createdAt": 5}}}), 400, "Fields starting with '_' are reserved.")
        assert srv.ok("/get", {"collection": "laptops", "keys": "lp2"})["price"] == 3499
        expect_error(srv.post("/update", {"collection": "laptops"}), 400, "Missing 'data' map")
        expect_error(srv.post("/update", {"collection": "laptops", "data": [1]}), 400, "Missing 'data' map")
        expect_error(srv.post("/update", {"collection": "laptops", "data": {}, "key": "x"}), 400,
                     "Unknown property: 'key'. Check the API docs for supported properties")


# ---- /delete ---------------------------------------------------------------------------
def ordered(srv):
    srv.ok("/delete", {"collection": "ordered", "drop": True})
    for k in ("o1", "o2", "o3", "o4"):
        srv.ok("/set", {"collection": "ordered", "data": {k: {"tag": "x"}}})


def remaining(srv):
    r = srv.post("/get", {"collection": "ordered", "keys": ["o1", "o2", "o3", "o4"]})
    return [] if r.status == 404 else keys_of(r.json)


def test_delete():
    with Srv() as srv:
        seed(srv)
        assert srv.ok("/delete", {"collection": "laptops", "keys": "lp6"})["deleted"] == 1
        assert srv.ok("/delete", {"collection": "laptops", "keys": "lp6"})["deleted"] == 0  # real count
        assert srv.ok("/delete", {"collection": "laptops", "keys": ["lp4", "lp5", "nope"]})["deleted"] == 2
        assert len(srv.ok("/get", {"collection": "laptops"})) == 3
        assert srv.ok("/delete", {"collection": "laptops", "where": {"in_stock": False}})["deleted"] == 0
        expect_error(srv.post("/delete", {"collection": "laptops", "where": {"brand": {"$regex": 1}}}), 400,
                     "Invalid Query: Unknown operator: $regex")
        body = srv.ok("/delete", {"collection": "laptops", "drop": True})
        assert body == {"statusCode": 200, "status": "ok", "dropped": True}
        expect_error(srv.post("/get", {"collection": "laptops"}), 404, "No documents found")
        assert srv.ok("/delete", {"collection": "never", "drop": True})["dropped"] is True
        ordered(srv)
        assert srv.ok("/delete", {"collection": "ordered", "where": {"tag": "x"}, "count": 2})["deleted"] == 2
        assert remaining(srv) == ["o3", "o4"]
        ordered(srv)
        srv.ok("/delete", {"collection": "ordered", "where": {"tag": "X"}, "count": 2, "order": "desc"})
        assert remaining(srv) == ["o1", "o2"]
        ordered(srv)
        assert srv.ok("/delete", {"collection": "ordered", "count": 2})["deleted"] == 2
        assert remaining(srv) == ["o3", "o4"]
        ordered(srv)
        srv.ok("/delete", {"collection": "ordered", "count": 2, "order": "desc"})
        assert remaining(srv) == ["o1", "o2"]
        ordered(srv)
        assert srv.ok("/delete", {"collection": "ordered", "count": 100})["deleted"] == 4
        ordered(srv)
        expect_error(srv.post("/delete", {"collection": "ordered"}), 400,
                     "Missing 'keys' (string or array), 'where', or 'drop': true")
        assert remaining(srv) == ["o1", "o2", "o3", "o4"]
        expect_error(srv.post("/delete", {"collection": "ordered", "where": {"tag": "x"}, "count": 1001}),
                     400, "'count' cannot exceed 1000")
        expect_error(srv.post("/delete", {"collection": "ordered", "count": 5000}), 400,
                     "'count' cannot exceed 1000")
        expect_error(srv.post("/delete", {"collection": "ordered", "nope": 1}), 400,
                     "Unknown property: 'nope'. Check the API docs for supported properties")
        srv.ok("/set", {"collection": "many", "data": [{"i": i} for i in range(150)]})
        assert srv.ok("/delete", {"collection": "many", "where": {"i": {"$gte": 0}}})["deleted"] == 100


# ---- /schema, TTL, maxSize, /stats ----------------------------------------------------------
def test_schema_validation():
    with Srv() as srv:
        s = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}
        body = srv.ok("/schema", {"collection": "people", "schema": s})
        assert body == {"statusCode": 200, "status": "ok", "collection": "people"}
        srv.ok("/set", {"collection": "people", "data": {"p1": {"name": "Ann", "age": 30}}})
        # additionalProperties:false does not see the system fields
        expect_error(srv.post("/set", {"collection": "people", "data": {"p2": {"name": "Bob", "age": "thirty"}}}),
                     400, "Document does not conform to schema")
        expect_error(srv.post("/set", {"collection": "people", "data": {"p3": {"age": 3}}}), 400,
                     "Document does not conform to schema")
        expect_error(srv.post("/set", {"collection": "people", "data": {"p4": {"name": "A"}, "p5": {"nick": "x"}}}),
                     400, "Document does not conform to schema")
        expect_error(srv.post("/get", {"collection": "people", "keys": "p4"}), 404)  # whole batch refused
        expect_error(srv.post("/update", {"collection": "people", "data": {"p1": {"age": -5}}}), 400,
                     "Schema Validation Error: Document does not conform to schema")
        srv.ok("/update", {"collection": "people", "data": {"p1": {"age": 31}}})
        expect_error(srv.post("/schema", {"collection": "people", "schema": None}), 400,
                     'Invalid Schema: Invalid schema: null is not of type "object", "boolean"')
        body = expect_error(srv.post("/schema", {"collection": "people", "schema": {"type": 12}}), 400)
        assert body["error"].startswith("Invalid Schema: Invalid schema: "), body
        expect_error(srv.post("/schema", {"collection": "people"}), 400,
                     "At least one of 'schema', 'ttl', or 'maxSize' must be provided")
        expect_error(srv.post("/schema", {"schema": {}}), 400, "Missing 'collection' name")
        expect_error(srv.post("/schema", {"collection": "people", "schema": {}, "x": 1}), 400,
                     "Unknown property: 'x'. Check the API docs for supported properties")
        expect_error(srv.post("/schema", {"collection": "people", "ttl": "1"}), 400,
                     "'ttl' must be a non-negative integer (seconds)")
        expect_error(srv.post("/schema", {"collection": "people", "maxSize": -3}), 400,
                     "'maxSize' must be a positive integer")


def test_ttl_maxsize_stats():
    with Srv() as srv:
        srv.ok("/schema", {"collection": "recent_events", "maxSize": 3})
        srv.ok("/set", {"collection": "recent_events", "data": {"evt_001": {"a": 1}, "evt_002": {"a": 2},
                                                                "evt_003": {"a": 3}}})
        srv.ok("/set", {"collection": "recent_events", "data": {"evt_004": {"a": 4}, "evt_005": {"a": 5}}})
        assert len(srv.ok("/get", {"collection": "recent_events"})) == 3
        expect_error(srv.post("/get", {"collection": "recent_events", "keys": "evt_001"}), 404)
        st = srv.ok("/stats", {"collection": "recent_events"})
        assert st["collection"] == "recent_events" and st["count"] == 3 and st["maxSize"] == 3, st
        # TTL: set once, same value again is fine, another value is 409
        srv.ok("/set", {"collection": "cache", "data": {"k": {"v": 1}}, "ttl": 1})
        srv.ok("/schema", {"collection": "cache", "ttl": 1})
        body = expect_error(srv.post("/schema", {"collection": "cache", "ttl": 300}), 409)
        assert "cache" in body["error"] and "1" in body["error"], body
        d = srv.ok("/get", {"collection": "cache", "keys": "k", "fields": ["v", "_expiresAt"]})
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", d["_expiresAt"]), d
        assert "_expiresAt" not in srv.ok("/get", {"collection": "cache", "keys": "k"})
        st = srv.ok("/stats", {"collection": "cache"})
        assert st["count"] == 1 and "expiresAt" in st and "expired" not in st, st
        time.sleep(1.3)
        expect_error(srv.post("/get", {"collection": "cache", "keys": "k"}), 404, "No documents found")
        expect_error(srv.get("/collections/cache/docs/k"), 404, "No documents found")
        st = srv.ok("/stats", {"collection": "cache"})
        if "expired" in st:  # unless a sweeper already dropped it
            assert st["count"] == 0 and st["expired"] is True and "expiresAt" in st, st
        # a new insert into an expired collection starts again at _v 1
        srv.ok("/set", {"collection": "cache", "data": {"k": {"v": 2}}})
        assert srv.ok("/get", {"collection": "cache", "keys": "k"})["_v"] == 1
        all_ = srv.s.request("GET", "/stats", token=srv.token)
        assert all_.status == 200
        st = all_.json
        assert st["collections"]["recent_events"]["count"] == 3
        assert st["total"] == sum(c["count"] for c in st["collections"].values())
        assert srv.ok("/stats", {})["total"] == st["total"]
        expect_error(srv.post("/stats", {"collection": "nope"}), 404, "Collection not found")
        expect_error(srv.post("/stats", {"bogus": 1}), 400,
                     "Unknown property: 'bogus'. Check the API docs for supported properties")


# ---- REST routes and /analytics ---------------------------------------------------------------
def test_collection_routes():
    with Srv() as srv:
        seed(srv)
        r = srv.get("/collections/laptops?limit=2&offset=1")
        assert r.status == 200 and [d["_key"] for d in r.json] == ["lp5", "lp4"], r
        assert len(srv.get("/collections/laptops").json) == 6
        expect_error(srv.get("/collections/laptops?limit=1001"), 400, "'count' cannot exceed 1000")
        expect_error(srv.get("/collections/laptops?limit=abc"), 400)
        expect_error(srv.get("/collections/nope"), 404, "No documents found")
        expect_error(srv.get("/collections/admin"), 400)
        d = srv.get("/collections/laptops/docs/lp2").json
        assert d["_key"] == "lp2" and d["_v"] == 1 and d["brand"] == "Apple"
        expect_error(srv.get("/collections/laptops/docs/lp99"), 404, "No documents found")
        expect_error(srv.get("/collections/laptops/docs/b%20k"), 400)


def test_analytics():
    with Srv() as srv:
        seed(srv)
        def a(t, field=None, where=None):
            m = {"type": t}
            if field:
                m["field"] = field
            b = {"collection": "laptops", "metric": m}
            if where is not None:
                b["where"] = where
            return srv.ok("/analytics", b)
        r = a("COUNT")
        assert r["result"] == 6 and r["metadata"]["rows_scanned"] == 6, r
        assert "execution_time_ms" in r["metadata"]
        assert a("SUM", "price")["result"] == 11944
        assert abs(a("AVG", "price")["result"] - 11944 / 6) < 1e-9
        assert a("MIN", "price")["result"] == 849
        assert a("MAX", "price")["result"] == 3499
        assert a("COUNT", where={"in_stock": True})["result"] == 5
        assert a("max", "price", {"brand": "Dell"})["result"] == 1899
        expect_error(srv.post("/analytics", {"collection": "laptops", "metric": {"type": "MEDIAN", "field": "p"}}), 400)
        expect_error(srv.post("/analytics", {"collection": "laptops", "metric": {"type": "SUM"}}), 400)
        expect_error(srv.post("/analytics", {"collection": "laptops"}), 400)
        expect_error(srv.post("/analytics", {"collection": "laptops", "metric": {"type": "COUNT"}, "x": 1}), 400,
                     "Unknown property: 'x'. Check the API docs for supported properties")


# ---- persistence (storage-wal) -------------------------------------------------------------------
def test_persistence_roundtrip():
    if not mdbtest.module_available("storage-wal"):
        mdbtest.skip("storage-wal is not built")
    work = tempfile.mkdtemp(prefix="mdbqe-wal-")
    args = ["--disable-encryption"]
    with Srv(args=args, storage="storage-wal", workdir=work) as srv:
        srv.ok("/schema", {"collection": "people", "schema": {"required": ["name"]}})
        srv.ok("/set", {"collection": "people", "data": {"p1": {"name": "Ann"}, "p2": {"name": "Bob"}}})
        srv.ok("/update", {"collection": "people", "data": {"p1": {"age": 3}}})
        srv.ok("/delete", {"collection": "people", "keys": "p2"})
        srv.ok("/set", {"collection": "cache", "data": {"k": {"v": 1}}, "ttl": 300, "maxSize": 5})
    with Srv(args=args, storage="storage-wal", workdir=work) as srv:
        d = srv.ok("/get", {"collection": "people", "keys": "p1"})
        assert d["name"] == "Ann" and d["age"] == 3 and d["_v"] == 2, d
        expect_error(srv.post("/get", {"collection": "people", "keys": "p2"}), 404)
        # the schema came back with the log: still enforced
        expect_error(srv.post("/set", {"collection": "people", "data": {"p3": {"age": 1}}}), 400,
                     "Document does not conform to schema")
        expect_error(srv.post("/schema", {"collection": "cache", "ttl": 10}), 409)
        st = srv.ok("/stats", {"collection": "cache"})
        assert st["count"] == 1 and st["maxSize"] == 5 and "expiresAt" in st, st


# ---- concurrency -------------------------------------------------------------------------------
def test_concurrency():
    import threading
    with Srv() as srv:
        srv.ok("/set", {"collection": "pre", "data": {"p%d" % i: {"i": i} for i in range(50)}})
        errors = []

        def writer(t):
            for i in range(10):
                r = srv.post("/set", {"collection": "stress", "data": {"t%d_%d" % (t, i): {"t": t, "i": i}}})
                if r.status != 200:
                    errors.append(r)
                r = srv.post("/set", {"collection": "race", "data": {"global_hot_ticker": {"counter": i}}})
                if r.status != 200:
                    errors.append(r)

        def reader():
            for _ in range(20):
                r = srv.post("/get", {"collection": "pre", "where": {"i": {"$gte": 0}},
                                      "sort": [{"field": "i"}], "count": 50})
                if r.status != 200 or len(r.json) != 50:
                    errors.append(r)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        threads += [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(srv.ok("/get", {"collection": "stress"})) == 80
        d = srv.ok("/get", {"collection": "race", "keys": "global_hot_ticker"})
        assert "counter" in d and d["_v"] == 80, d


# ---- scoped tokens ------------------------------------------------------------------------------
def delegate(srv, *scopes):
    r = srv.post("/auth/delegate", {"client_id": "client-" + str(len(scopes)), "scopes": list(scopes)})
    assert r.status == 200, r
    return r.json["token"]


def test_scoped_tokens():
    if not HAVE_JWT:
        mdbtest.skip("auth-jwt is not built")
    with Srv() as srv:
        seed(srv)
        ro = delegate(srv, "read:laptops:*")
        expect_error(srv.post("/set", {"collection": "laptops", "data": {"x": {}}}, ro), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        expect_error(srv.post("/update", {"collection": "laptops", "data": {"lp1": {"a": 1}}}, ro), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        expect_error(srv.post("/delete", {"collection": "laptops", "keys": "lp1"}, ro), 403,
                     "Forbidden: token requires 'delete:laptops:*' scope")
        expect_error(srv.post("/schema", {"collection": "laptops", "ttl": 5}, ro), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        assert len(srv.ok("/get", {"collection": "laptops"}, ro)) == 6
        assert srv.get("/collections/laptops?limit=5&offset=0", ro).status == 200
        expect_error(srv.post("/get", {"collection": "memory"}, ro), 403,
                     "Forbidden: token has no read access to collection 'memory'")
        expect_error(srv.get("/collections/memory", ro), 403, "Forbidden: token requires 'read:memory:*' scope")
        st = srv.get("/stats", ro).json
        assert list(st["collections"]) == ["laptops"] and st["total"] == 6, st
        expect_error(srv.post("/stats", {"collection": "memory"}, ro), 403)
        expect_error(srv.post("/analytics", {"collection": "memory", "metric": {"type": "COUNT"}}, ro), 403)
        # a join into an unreadable collection is refused
        expect_error(srv.post("/get", {"collection": "laptops", "joins": [
            {"ram": {"from": "memory", "on": "memory_id"}}]}, ro), 403,
            "Forbidden: token requires 'read:memory:*' scope")
        # extends needs read on the target
        rw = delegate(srv, "read:laptops:*", "write:laptops:*")
        expect_error(srv.post("/set", {"collection": "laptops", "data": {"lp9": {
            "extends": {"ram": "memory.mem4"}}}}, rw), 403)
        srv.ok("/set", {"collection": "laptops", "data": {"lp9": {"a": 1}}}, rw)
        expect_error(srv.post("/set", {"collection": "memory", "data": {"m": {}}}, rw), 403,
                     "Forbidden: token requires 'write:memory:*' scope")
        # key-scoped tokens see only their keys
        ks = delegate(srv, "read:laptops:lp1", "read:laptops:lp2")
        assert keys_of(srv.ok("/get", {"collection": "laptops"}, ks)) == ["lp1", "lp2"]
        assert srv.ok("/get", {"collection": "laptops", "keys": "lp1"}, ks)["brand"] == "Lenovo"
        expect_error(srv.post("/get", {"collection": "laptops", "keys": ["lp1", "lp3"]}, ks), 403,
                     "Forbidden: token lacks 'read:laptops:lp3' scope")
        assert srv.get("/collections/laptops/docs/lp2", ks).status == 200
        expect_error(srv.get("/collections/laptops/docs/lp3", ks), 403,
                     "Forbidden: token lacks 'read:laptops:lp3' scope")
        expect_error(srv.get("/collections/laptops", ks), 403, "Forbidden: token requires 'read:laptops:*' scope")
        # prefix scopes work on /get by returning the matching keys only
        srv.ok("/set", {"collection": "stock", "data": {"store_A_1": {"n": 1}, "store_A_2": {"n": 2},
                                                        "store_B_1": {"n": 3}}})
        ps = delegate(srv, "read:stock:store_A_*")
        assert keys_of(srv.ok("/get", {"collection": "stock"}, ps)) == ["store_A_1", "store_A_2"]
        assert len(srv.ok("/get", {"collection": "stock", "where": {"n": {"$gte": 2}}}, ps)) == 1
        expect_error(srv.post("/get", {"collection": "stock", "keys": "store_B_1"}, ps), 403,
                     "Forbidden: token lacks 'read:stock:store_B_1' scope")
        assert srv.get("/collections/stock/docs/store_A_2", ps).status == 200
        # no token at all
        r = srv.s.request("POST", "/get", {"collection": "laptops"})
        expect_error(r, 401)


def test_check_order_authorization_first():
    """One order on every route: collection name, collection scope, then the body."""
    if not HAVE_JWT:
        mdbtest.skip("auth-jwt is not built")
    with Srv() as srv:
        seed(srv)
        ro = delegate(srv, "read:laptops:*")
        # upstream's own request collections: no delete scope wins over a bad property
        expect_error(srv.post("/delete", {"collection": "laptops", "key": "x"}, ro), 403,
                     "Forbidden: token requires 'delete:laptops:*' scope")
        expect_error(srv.post("/set", {"collection": "laptops", "datta": {}}, ro), 403,
                     "Forbidden: token requires 'write:laptops:*' scope")
        expect_error(srv.post("/set", {"collection": "laptops", "data": {"bad key": {}}}, ro), 403)
        expect_error(srv.post("/update", {"collection": "laptops", "data": {"lp1": {}}, "x": 1}, ro), 403)
        expect_error(srv.post("/schema", {"collection": "laptops", "nope": 1}, ro), 403)
        expect_error(srv.post("/get", {"collection": "memory", "where": {"a": {"b": 1}}}, ro), 403,
                     "Forbidden: token has no read access to collection 'memory'")
        # the collection itself must be valid before it can be decided
        expect_error(srv.post("/delete", {"key": "x"}, ro), 400, "Missing 'collection' name")
        expect_error(srv.post("/delete", {"collection": "no way", "key": "x"}, ro), 400)
        # allowed on the collection: then the body's 400s
        expect_error(srv.post("/get", {"collection": "laptops", "key": "x"}, ro), 400,
                     "Unknown property: 'key'. Check the API docs for supported properties")
        expect_error(srv.post("/get", {"collection": "laptops", "where": {"a": {"b": 1}}}, ro), 400,
                     "Invalid Query: Unknown operator: b")
        # key-level scopes pass the collection check; their keys are checked after validation
        ks = delegate(srv, "read:laptops:lp1")
        expect_error(srv.post("/get", {"collection": "laptops", "keys": "lp2", "nope": 1}, ks), 400)
        expect_error(srv.post("/get", {"collection": "laptops", "keys": "lp2"}, ks), 403,
                     "Forbidden: token lacks 'read:laptops:lp2' scope")
        expect_error(srv.get("/collections/memory?limit=bad", ro), 403)


def test_upstream_measured_rules():
    """The corrections measured against the upstream engine (README, Differences)."""
    with Srv() as srv:
        seed(srv)
        # where: every object is an operator object, on /get and /delete
        assert len(srv.ok("/get", {"collection": "laptops", "where": {"qty": {}}})) == 6
        expect_error(srv.post("/get", {"collection": "laptops", "where": {"specs": {"cpu": 1}}}), 400,
                     "Invalid Query: Unknown operator: cpu")
        expect_error(srv.post("/delete", {"collection": "laptops", "where": {"a": {"b": 2}}}), 400,
                     "Invalid Query: Unknown operator: b")
        assert len(srv.ok("/get", {"collection": "laptops"})) == 6
        # _seq follows the byte order of one /set object's keys
        srv.ok("/set", {"collection": "seq", "data": {"kd": {}, "ka": {}, "kb": {}, "B": {}}})
        docs = srv.ok("/get", {"collection": "seq", "fields": ["_seq"]})
        assert [d["_key"] for d in docs] == ["kd", "kb", "ka", "B"], docs
        seqs = {d["_key"]: d["_seq"] for d in docs}
        assert seqs["B"] < seqs["ka"] < seqs["kb"] < seqs["kd"], seqs
        # an overwrite keeps its _seq but uses up a value
        srv.ok("/set", {"collection": "seq", "data": {"ka": {"v": 2}}})
        srv.ok("/set", {"collection": "seq", "data": {"new": {}}})
        got = srv.ok("/get", {"collection": "seq", "keys": ["ka", "new"], "fields": ["_seq"]})
        assert {d["_key"]: d["_seq"] for d in got} == {"ka": seqs["ka"], "new": seqs["kd"] + 2}, got
        # a drop resets the counter
        first = seqs["B"]
        srv.ok("/delete", {"collection": "seq", "drop": True})
        srv.ok("/set", {"collection": "seq", "data": {"z": {}}})
        assert srv.ok("/get", {"collection": "seq", "keys": "z", "fields": ["_seq"]})["_seq"] == first
        # "sort": [] is by _key ascending
        assert [d["_key"] for d in srv.ok("/get", {"collection": "laptops", "sort": []})] == sorted(LAPTOPS)
        # joins: where/sort see the projected joined document; a missing target leaves it out
        j = [{"ram": {"from": "memory", "on": "memory_id", "fields": ["capacity_gb"]}}]
        expect_error(srv.post("/get", {"collection": "laptops", "joins": j,
                                       "where": {"ram.type": {"$eq": "LPDDR5"}}}), 404)
        docs = srv.ok("/get", {"collection": "laptops", "joins": j, "sort": ["ram.capacity_gb"]})
        assert all("ram" not in d or set(d["ram"]) == {"capacity_gb"} for d in docs), docs
        # without a target, alias.field reads the document's own field, as the reply shows it
        srv.ok("/set", {"collection": "sh", "data": {"s1": {"memory_id": "nope", "ram": {"type": "own"}},
                                                     "s2": {"memory_id": "mem1", "ram": {"type": "x"}}}})
        docs = srv.ok("/get", {"collection": "sh", "joins": j, "where": {"ram.type": "OWN"}})
        assert docs == [{"_key": "s1", "_v": 1, "memory_id": "nope", "ram": {"type": "own"}}], docs
        expect_error(srv.post("/get", {"collection": "sh", "joins": j, "where": {"ram.type": "x"}}), 404)
        expect_error(srv.post("/get", {"collection": "sh", "where": {"ram._key": "mem1"},
                                       "joins": [{"ram": {"from": "memory", "on": "memory_id"}}]}), 404)
        # excludedFields into joins, and objects left empty go
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp1", "joins": j,
                            "excludedFields": ["ram.capacity_gb", "specs.cpu", "specs.weight_kg"]})
        assert "ram" not in d and "specs" not in d and d["brand"] == "Lenovo", d
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp1",
                            "joins": [{"ram": {"from": "memory", "on": "memory_id"}}],
                            "excludedFields": ["ram.type"]})
        assert "type" not in d["ram"] and d["ram"]["capacity_gb"] == 16, d


def test_unicode_case_folding():
    """README "WHERE": strings lowered as Rust's str::to_lowercase (full mapping, final sigma)."""
    with Srv() as srv:
        data = {"g1": {"w": "ΟΔΟΣ"}, "g2": {"w": "οδοσ"}, "g3": {"w": "Ǆ"}, "g4": {"w": "Ѡ"},
                "g5": {"w": "ẞ"}, "g6": {"w": "Ά"}, "g7": {"w": "İ"}, "g8": {"w": "ss"},
                "g9": {"w": "ΣΑΣ ΟΔΟΣ", "tags": ["ΣΑΣ", "Ǆx"]}}
        srv.ok("/set", {"collection": "u", "data": data})

        def keys(where):
            r = srv.post("/get", {"collection": "u", "where": where, "sort": []})
            return [] if r.status == 404 else [d["_key"] for d in r.json]
        assert keys({"w": "οδος"}) == ["g1"]  # final sigma: "οδοσ" is another word
        assert keys({"w": {"$eq": "οδοσ"}}) == ["g2"]
        assert keys({"w": {"$in": ["ǆ", "ѡ", "ß", "ά"]}}) == ["g3", "g4", "g5", "g6"]
        assert keys({"w": {"$in": ["x%d" % i for i in range(20)] + ["ǅ", "i\u0307"]}}) == ["g3", "g7"]
        assert keys({"w": "i"}) == []  # U+0130 lowers to two code points
        assert keys({"w": "ß"}) == ["g5"]  # lowercase, not case folding: "ss" stays apart
        assert len(keys({"w": {"$ne": "ΟΔΟΣ"}})) == len(data) - 1
        assert keys({"w": {"$nin": ["οδος", "οδοσ", "ǆ", "ѡ", "ß", "ά", "i\u0307", "SS"]}}) == ["g9"]
        assert keys({"w": {"$contains": "σας οδος"}}) == ["g9"]
        assert keys({"w": {"$contains": "ος"}}) == ["g1", "g9"]
        assert keys({"tags": {"$contains": "σας"}}) == ["g9"]
        assert keys({"tags": {"$contains": "ǆX"}}) == ["g9"]
        # the same rule deletes
        assert srv.ok("/delete", {"collection": "u", "where": {"w": "ǅ"}})["deleted"] == 1


def test_query_limits():
    """README "Limits": bombs are 400s with clear texts; arrays count as keys."""
    with Srv(args=["--max-keys-per-request", "50"]) as srv:
        seed(srv)
        expect_error(srv.post("/set", {"collection": "amp", "data": [{}] * 51}), 400,
                     "Too many keys in single request (max 50)")
        assert srv.ok("/set", {"collection": "amp", "data": [{}] * 50})["count"] == 50
        expect_error(srv.post("/get", {"collection": "laptops", "where": {
            "$or": [{"price": {"$gt": i}} for i in range(300)]}}), 400,
            "Invalid Query: too many conditions in 'where' (max 256)")
        expect_error(srv.post("/get", {"collection": "laptops", "where": {
            "brand": {"$nin": ["x%d" % i for i in range(10001)]}}}), 400,
            "Invalid Query: $nin takes at most 10000 values")
        expect_error(srv.post("/get", {"collection": "laptops", "fields": ["f%d" % i for i in range(2000)]}),
                     400, "'fields' has too many entries (max 1024)")
        expect_error(srv.post("/get", {"collection": "laptops", "sort": ["f%d" % i for i in range(2000)]}),
                     400, "'sort' has too many fields (max 32)")
        # the accepted extremes answer like their small forms
        docs = srv.ok("/get", {"collection": "laptops", "where": {
            "$or": [{"brand": "x%d" % i} for i in range(200)] + [{"brand": "LENOVO"}]}})
        assert [d["_key"] for d in docs] == ["lp1"], docs
        docs = srv.ok("/get", {"collection": "laptops", "where": {
            "brand": {"$in": ["x%d" % i for i in range(9999)] + ["apple"]}}})
        assert [d["_key"] for d in docs] == ["lp2"], docs
        d = srv.ok("/get", {"collection": "laptops", "keys": "lp1",
                            "fields": ["f%d" % i for i in range(1000)] + ["brand", "specs.cpu.cores"]})
        assert d == {"_key": "lp1", "_v": 1, "brand": "Lenovo", "specs": {"cpu": {"cores": 12}}}, d


mdbtest.main()
