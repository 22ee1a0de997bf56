"""Request text is read strictly and stored faithfully (issue 9 items 6-8):
malformed numbers are 400, integers beyond 64 bits are kept as the nearest
double (never clamped), strings are RFC 3629 UTF-8, object keys hold no NUL,
string values keep theirs, every error body is valid UTF-8 JSON even when
it echoes request bytes, and an oversized array batch is refused by
--max-keys-per-request without building it first.
"""
import json

import mdbtest
from mdbtest import expect_error


def post_raw(srv, path, raw):
    return srv.request("POST", path, raw=raw, token=srv.login(),
                       headers={"Content-Type": "application/json"})


def set_raw(srv, doc_text, coll="c"):
    """POST /set with one document given as raw JSON text (bytes)."""
    return post_raw(srv, "/set", b'{"collection":"' + coll.encode() + b'","data":{"k":' +
                    doc_text + b'}}')


def get_one(srv, key, coll="c"):
    r = srv.post("/get", {"collection": coll, "keys": key})
    assert r.status == 200, r
    r.body.decode("utf-8")  # strict: the answer is valid UTF-8
    return r.json


def test_malformed_numbers_are_refused():
    with mdbtest.Server() as srv:
        for bad in (b"00", b"01", b"-01", b"1.", b".5", b"-", b"1e", b"1e+", b"+1", b"1.e5",
                    b"0x10", b"1.5.2", b"--1", b"-.5", b"NaN", b"Infinity", b"1e400"):
            r = set_raw(srv, b'{"v":' + bad + b'}')
            body = expect_error(r, 400)
            assert body["error"].startswith("Invalid JSON body: "), (bad, body)
            if bad[:1] in b"0123456789-.+" and bad not in (b"1e400", b"-"):
                assert "number" in body["error"], (bad, body)
        # nothing was stored
        expect_error(srv.post("/get", {"collection": "c", "keys": "k"}), 404)
        # well-formed numbers in every form
        r = set_raw(srv, b'{"a":0,"b":-0.5,"c":1E5,"d":1e-5,"e":-12.5e+2}')
        assert r.status == 200, r
        doc = get_one(srv, "k")
        assert (doc["a"], doc["b"], doc["c"], doc["d"], doc["e"]) == (0, -0.5, 1e5, 1e-5, -1250), doc


def test_out_of_range_integers_become_the_nearest_double():
    with mdbtest.Server() as srv:
        r = set_raw(srv, b'{"big":123456789012345678901234567890,"neg":-9223372036854775809,'
                         b'"u65":18446744073709551616,"in":[-123456789012345678901234567890],'
                         b'"max":9223372036854775807,"min":-9223372036854775808}')
        assert r.status == 200, r
        doc = get_one(srv, "k")
        for name, want in (("big", 123456789012345678901234567890),
                           ("neg", -9223372036854775809), ("u65", 18446744073709551616)):
            assert isinstance(doc[name], float) and doc[name] == float(want), (name, doc)
        assert doc["in"] == [float(-123456789012345678901234567890)], doc
        # 64-bit integers stay exact integers
        assert doc["max"] == 9223372036854775807 and doc["min"] == -9223372036854775808, doc
        # a where clause compares the stored double
        r = srv.post("/get", {"collection": "c", "where": {"big": {"$gt": 1e29}}})
        assert r.status == 200 and len(r.json) == 1, r


def test_invalid_utf8_is_refused_in_values_and_names():
    bad_strings = [
        b"\xc0\xaf",          # overlong '/'
        b"\xe0\x80\xaf",      # overlong, 3 bytes
        b"\xf0\x80\x80\xaf",  # overlong, 4 bytes
        b"\xed\xa0\x80",      # encoded surrogate U+D800
        b"\xf4\x90\x80\x80",  # U+110000
        b"\xff",              # never valid
        b"\x80",              # stray continuation byte
        b"\xe4\xb8",          # cut sequence
    ]
    with mdbtest.Server() as srv:
        for s in bad_strings:
            for doc in (b'{"v":"a' + s + b'"}', b'{"a' + s + b'":1}', b'{"n":{"x' + s + b'":[1]}}'):
                body = expect_error(set_raw(srv, doc), 400)
                assert "UTF-8" in body["error"], (doc, body)
            body = expect_error(post_raw(srv, "/get", b'{"collection":"c' + s + b'"}'), 400)
            assert "UTF-8" in body["error"], (s, body)
        for esc in (b"\\ud800", b"\\udfff", b"\\ud800\\u0041", b"\\ud83dx"):
            body = expect_error(set_raw(srv, b'{"v":"' + esc + b'"}'), 400)
            assert "surrogate" in body["error"], (esc, body)
            body = expect_error(set_raw(srv, b'{"' + esc + b'":1}'), 400)
            assert "surrogate" in body["error"], (esc, body)
        expect_error(srv.post("/get", {"collection": "c", "keys": "k"}), 404)
        # valid text, raw and escaped, round-trips exactly
        r = set_raw(srv, '{"v":"h\u00e9 \u4e2d \U0001f600","\u00e9":"\\ud83d\\ude00\\uffff"}'
                    .encode("utf-8"))
        assert r.status == 200, r
        doc = get_one(srv, "k")
        assert doc["v"] == "h\u00e9 \u4e2d \U0001f600" and doc["\u00e9"] == "\U0001f600\uffff", doc
        # the whole collection answer is valid UTF-8
        r = srv.request("GET", "/collections/c", token=srv.login())
        assert r.status == 200, r
        r.body.decode("utf-8")


def test_nul_is_refused_in_names_and_kept_in_values():
    with mdbtest.Server() as srv:
        # a document key, a field name (at any depth), a collection name
        for raw in (b'{"collection":"c","data":{"d9\\u0000x":{"v":1}}}',
                    b'{"collection":"c","data":{"k":{"f\\u0000g":1,"f":2}}}',
                    b'{"collection":"c","data":{"k":{"n":[{"\\u0000":1}]}}}',
                    b'{"collection":"c","data":[{"_key\\u0000":"z"}]}'):
            body = expect_error(post_raw(srv, "/set", raw), 400)
            assert "NUL" in body["error"], (raw, body)
        body = expect_error(post_raw(srv, "/set", b'{"collection":"c\\u0000x","data":{"k":{}}}'), 400)
        assert body["error"].startswith("Invalid collection name"), body
        body = expect_error(post_raw(srv, "/get", b'{"collection":"c","keys":"d9\\u0000x"}'), 400)
        assert body["error"].startswith("Invalid key name"), body
        expect_error(srv.post("/get", {"collection": "c", "keys": "d9"}), 404)
        # a NUL inside a string value is kept, with everything after it
        r = set_raw(srv, b'{"v":"x\\u0000y","w":["\\u0000"]}')
        assert r.status == 200, r
        doc = get_one(srv, "k")
        assert doc["v"] == "x\x00y" and doc["w"] == ["\x00"], doc


def test_error_texts_echo_request_bytes_as_valid_json():
    with mdbtest.Server() as srv:
        tok = srv.login()
        for path in ("/nowhere%ff%fe%c0%af", "/collections/c%ff/docs/k%ed%a0%80",
                     "/collections/c%00x/docs/k"):
            r = srv.request("GET", path, token=tok)
            assert r.status in (400, 404), (path, r)
            body = json.loads(r.body.decode("utf-8"))  # strict UTF-8, then JSON
            assert body["statusCode"] == r.status and isinstance(body["error"], str), (path, body)
        assert srv.request("GET", "/system/health").status == 200


def peak_rss_kb(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_oversized_batches_are_refused_before_they_are_built():
    too_many = "Too many keys in single request (max 1000)"
    with mdbtest.Server() as srv:
        before = peak_rss_kb(srv)
        # ~10 MB: 3.3 million empty documents (the body limit is 10 MB)
        n = (10 * 1024 * 1024 - 100) // 3
        raw = b'{"collection":"c","data":[' + b",".join([b"{}"] * n) + b"]}"
        expect_error(post_raw(srv, "/set", raw), 400, too_many)
        # the same as an object batch, and a keys array on /get and /delete
        # (1 MB each: 75,000 and 200,000 elements)
        n = (1024 * 1024 - 100) // 14
        raw = (b'{"collection":"c","data":{' +
               b",".join(b'"k%07d":{}' % i for i in range(n)) + b"}}")
        expect_error(post_raw(srv, "/set", raw), 400, too_many)
        n = (1024 * 1024 - 100) // 5
        keys = b'["k",' + b",".join([b'"k"'] * (n - 1)) + b"]"
        for route in ("/get", "/delete"):
            raw = b'{"collection":"c","keys":' + keys + b"}"
            expect_error(post_raw(srv, route, raw), 400, too_many)
        # Refused without building them: millions of json-c objects would
        # take gigabytes; cut after 1001 elements, the peak grows by little
        # more than the bodies themselves.
        grown_mb = (peak_rss_kb(srv) - before) // 1024
        assert grown_mb < 300, "peak RSS grew by %d MB" % grown_mb
        # the check order is kept: an invalid collection is still named first
        raw = b'{"collection":"bad name","data":[' + b",".join([b"{}"] * 5000) + b"]}"
        expect_error(post_raw(srv, "/set", raw), 400,
                     "Invalid collection name: 'bad name'. Must be alphanumeric with _, - only "
                     "(1-64 chars)")
        # at the limit: accepted, every document stored
        docs = ",".join('{"i":%d}' % i for i in range(1000))
        r = post_raw(srv, "/set", ('{"collection":"c","data":[' + docs + "]}").encode())
        assert r.status == 200, r
        r = srv.post("/get", {"collection": "c", "count": 1000})
        assert r.status == 200 and len(r.json) == 1000, r
        # one more: refused, nothing stored
        docs = ",".join('{"i":%d}' % i for i in range(1001))
        expect_error(post_raw(srv, "/set", ('{"collection":"e","data":[' + docs + "]}").encode()),
                     400, too_many)
        expect_error(srv.post("/get", {"collection": "e"}), 404)
        assert srv.request("GET", "/system/health").status == 200


if __name__ == "__main__":
    mdbtest.main()
