"""The store's write rules end to end, through the real server: maxSize
evictions in a batch that also overwrites the evicted document (issue 9:
the logged DELETE's key pointed into a freed document), kept through a
restart of storage-wal.
"""
import mdbtest

WAL = ["storage-wal", "auth-jwt", "query-engine"]


def keys_and_values(srv, coll):
    r = srv.post("/get", {"collection": coll})
    assert r.status == 200, r
    return sorted((d["_key"], d.get("v")) for d in r.json)


def evict_overwritten(srv):
    r = srv.post("/set", {"collection": "ev", "maxSize": 1, "data": {"a": {}}})
    assert r.status == 200, r
    r = srv.post("/set", {"collection": "ev", "data": {"a": {"v": 2}, "b": {"v": 3}}})
    assert r.status == 200, r
    # 'a' keeps its older _seq through the overwrite: it is the one evicted
    assert keys_and_values(srv, "ev") == [("b", 3)]
    assert srv.request("GET", "/system/health").status == 200


def test_evict_a_document_the_batch_overwrote():
    with mdbtest.Server() as srv:
        evict_overwritten(srv)


def test_evict_overwritten_survives_restart():
    if not mdbtest.module_available("storage-wal"):
        mdbtest.skip("module storage-wal is not built")
    srv = mdbtest.Server(modules=WAL, args=["--disable-encryption"])
    try:
        evict_overwritten(srv)
    finally:
        srv.stop()
    # replaying the logged INSERT and DELETE gives the same collection
    with mdbtest.Server(modules=WAL, args=["--disable-encryption"], workdir=srv.dir) as again:
        assert keys_and_values(again, "ev") == [("b", 3)]


mdbtest.main()
