"""Seeded random differential test of /get: the real server against qe_model.py.

Each round generates a collection (random documents, some overwritten with
/update) and a join target, stores them through /set, then sends random /get bodies covering
every operator and its aliases, $and/$or, arrays of clauses, operator
objects ({} included), dot paths, system fields, keys forms, projections,
excludedFields, sorts (also [] and on system fields), order, count and
offset, joins (to another collection and to itself, with and without their
own fields, missing targets, an alias shadowing a field; where, sort and
excludedFields on alias.field, where and sort on the bare alias and
on a projected sub-object), plus malformed queries, and compares each answer with the model:
status, error text, and the exact documents in order.

Environment: MDB_DIFF_SEED (first seed, default 1), MDB_DIFF_ROUNDS
(collections, default 3), MDB_DIFF_QUERIES (per collection, default 300).
A failure prints the seed, the body and both answers, so it replays.
"""
import json
import os
import random

import mdbtest
import qe_model

SEED = int(os.environ.get("MDB_DIFF_SEED", "1"))
ROUNDS = int(os.environ.get("MDB_DIFF_ROUNDS", "3"))
QUERIES = int(os.environ.get("MDB_DIFF_QUERIES", "300"))

# Words in several cases, with letters whose lowercase needs more than a
# table of ranges: final sigma, titlecase digraphs, U+0130 (two code points),
# capital sharp s, Kelvin sign (see qe_model.fold).
WORDS = ["alpha", "Alpha", "ALPHA", "beta", "Beta", "gamma", "delta", "Ünïcödé", "üNÏCÖDÉ",
         "ПРИВЕТ", "привет", "αβγ", "ΑΒΓ", "ab", "AB", "a", "", "x-1", "10", "Zeta zeta",
         "ΟΔΟΣ", "οδος", "οδοσ", "ΣΑΣ ΟΔΟΣ", "Ǆ", "ǅ", "ǆx", "Ѡ", "ѡ", "ẞ", "ß", "ss", "Ά", "ά",
         "İ", "i\u0307", "Kelvin"]
KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
OP_NAMES = list(qe_model.OPS)
FIELDS = ["n", "f", "s", "b", "z", "arr", "tags", "o.x", "o.y", "o.e", "o", "mixed", "nope",
          "o.nope", "_key", "_seq", "_v"]


def rnd_key(r):
    return "".join(r.choice(KEY_CHARS) for _ in range(r.randint(1, 6)))


def rnd_scalar(r):
    return r.choice([r.randint(-3, 12), r.choice([0.5, 2.0, -1.25, 7.0]), r.choice(WORDS),
                     r.random() < 0.5, None])


def rnd_doc(r):
    d = {}
    if r.random() < 0.85:
        d["n"] = r.randint(-3, 12)
    if r.random() < 0.6:
        d["f"] = r.choice([0.5, 2.0, -1.25, 3.75, 7.0, 1e3])
    if r.random() < 0.85:
        d["s"] = r.choice(WORDS)
    if r.random() < 0.6:
        d["b"] = r.random() < 0.5
    if r.random() < 0.4:
        d["z"] = None
    if r.random() < 0.6:
        d["arr"] = [rnd_scalar(r) for _ in range(r.randint(0, 3))]
    if r.random() < 0.6:
        d["tags"] = r.sample(WORDS, r.randint(0, 3))
    if r.random() < 0.7:
        o = {}
        if r.random() < 0.7:
            o["x"] = r.randint(0, 5)
        if r.random() < 0.7:
            o["y"] = r.choice(WORDS)
        if r.random() < 0.3:
            o["e"] = {}
        d["o"] = o
    if r.random() < 0.5:
        d["mixed"] = rnd_scalar(r) if r.random() < 0.8 else [1, "a"]
    return d


def rnd_operand(r, docs, field, op):
    """Mostly a value some document has at that field, so conditions match."""
    if r.random() < 0.8 and docs:
        v = qe_model.lookup(r.choice(docs), field)
        if isinstance(v, dict) and r.random() < 0.9:
            v = qe_model.MISSING  # an object operand is an operator object (mostly a 400)
        if v is not qe_model.MISSING:
            if isinstance(v, str) and r.random() < 0.5:
                v = v.upper() if r.random() < 0.5 else v.lower()
            if op == "contains" and isinstance(v, str) and v and r.random() < 0.5:
                i = r.randint(0, len(v) - 1)
                v = v[i:i + r.randint(1, 3)]
            return v
    return rnd_scalar(r)


NUMERIC = ["n", "f", "o.x", "_seq", "_v", "mixed"]
TEXTUAL = ["s", "tags", "arr", "o.y", "mixed", "_key"]
RARE = ["nope", "o.nope", "o", "o.e"]


def rnd_field(r, kind, extra=()):
    return pick_field(r, kind, extra)


def pick_field(r, kind, extra):
    if extra and r.random() < 0.35:
        return r.choice(extra)
    if r.random() < 0.1:
        return r.choice(RARE)
    if kind in ("gt", "gte", "lt", "lte") and r.random() < 0.85:
        return r.choice(NUMERIC)
    if kind == "contains" and r.random() < 0.85:
        return r.choice(TEXTUAL)
    return r.choice([f for f in FIELDS if f not in RARE])


def rnd_cond(r, docs, depth, extra=()):
    roll = r.random()
    if depth < 2 and roll < 0.12:
        return {"$or": [rnd_cond(r, docs, depth + 1, extra) for _ in range(r.randint(0, 3))]}
    if depth < 2 and roll < 0.2:
        return {"$and": [rnd_cond(r, docs, depth + 1, extra) for _ in range(r.randint(0, 3))]}
    if depth < 2 and roll < 0.25:
        return [rnd_cond(r, docs, depth + 1, extra) for _ in range(r.randint(0, 2))]
    if roll < 0.4:
        field = rnd_field(r, "eq", extra)
        return {field: rnd_operand(r, docs, field, "eq")}
    if roll < 0.45:
        return {rnd_field(r, "eq", extra): {}}
    ops = {}
    name = r.choice(OP_NAMES)
    field = rnd_field(r, qe_model.OPS[name], extra)
    for i in range(1 if r.random() < 0.8 else 2):
        if i:
            name = r.choice(OP_NAMES)
        kind = qe_model.OPS[name]
        if kind in ("in", "nin"):
            ops[name] = [rnd_operand(r, docs, field, "eq") for _ in range(r.randint(0, 4))]
        else:
            ops[name] = rnd_operand(r, docs, field, kind)
    return {field: ops}


def rnd_where(r, docs, extra=()):
    w = rnd_cond(r, docs, 0, extra)
    if isinstance(w, dict) and r.random() < 0.15:
        more = rnd_cond(r, docs, 1, extra)
        if isinstance(more, dict):
            w.update(more)
    return w


def rnd_bad_where(r):
    return r.choice([
        {"n": {"$regex": "x"}},
        {"o": {"x": 1}},
        {"$nor": []},
        {"$or": {"n": 1}},
        {"n": {"$in": 5}},
        {"n": {"$gt": 1, "ne": 2}},
    ])


def rnd_paths(r, with_sys, extra=()):
    pool = ["n", "s", "o", "o.x", "o.y", "o.e", "o.e.q", "arr", "tags", "nope", "o.nope", "b", "z",
            "mixed", "f"] + list(extra)
    if with_sys:
        pool += ["_seq", "_v", "_key"]
    return r.sample(pool, r.randint(1, 4))


def rnd_sort(r, extra=()):
    if r.random() < 0.15:
        return []
    specs = []
    for _ in range(r.randint(1, 3)):
        f = r.choice(extra) if extra and r.random() < 0.4 else r.choice(FIELDS)
        roll = r.random()
        if roll < 0.4:
            specs.append(f)
        else:
            specs.append({"field": f, "order": r.choice(["asc", "desc", "DESC"])})
    return specs


# Joins (README "Joins"): aliases "j" and "self", and "o", which shadows a
# field the documents have; targets by "ref" / "o.ref" (mostly existing
# keys of the target collection) or "ref2" (keys of the queried collection).
JOIN_FIELDS = ["n", "s", "o", "o.x", "o.y", "tags", "nope", "_seq", "_v", "_key", "_createdAt"]
JOIN_SUB = ["n", "s", "o", "o.x", "o.y", "o.e", "tags", "arr", "nope", "_v", "_seq", "_key"]


def rnd_joins(r, name, tname):
    joins = []
    for alias in r.sample(["j", "self", "o"], r.randint(1, 2)):
        if alias == "self":
            spec = {"from": name, "on": "ref2"}
        else:
            spec = {"from": r.choice([tname] * 6 + ["nocoll"]),
                    "on": r.choice(["ref", "ref", "ref", "o.ref", "s", "nope"])}
        if r.random() < 0.6:
            spec["fields"] = r.sample(JOIN_FIELDS, r.randint(0, 3))
        el = {alias: spec}
        if r.random() < 0.1:
            el = {"note": 1, alias: spec}  # the first object with "from" is the join
        joins.append(el)
    return joins


def alias_paths(joins):
    """Paths that where, sort and excludedFields may use on the joins: the
    bare alias (the joined document as the reply shows it, or the document's
    own field when the target is missing) and alias.field, also a parent of
    a projected path (the projected sub-object). Not the clocks."""
    out = []
    for alias, _src, _on, _fields in qe_model.parse_joins(joins):
        out.append(alias)
        out.extend(alias + "." + sub for sub in JOIN_SUB)
    return out


def rnd_body(r, name, docs, keys, tname=None, colls=None):
    body = {"collection": name}
    extra = ()
    if tname and r.random() < 0.35:
        body["joins"] = rnd_joins(r, name, tname)
        extra = alias_paths(body["joins"])
        docs = [qe_model.View(d, qe_model.parse_joins(body["joins"]), colls) for d in docs]
    if r.random() < 0.2:
        pick = [r.choice(keys) if r.random() < 0.8 else rnd_key(r) for _ in range(r.randint(0, 6))]
        body["keys"] = pick[0] if pick and r.random() < 0.3 else pick
    roll = r.random()
    if roll < 0.05:
        body["where"] = rnd_bad_where(r)
    elif roll < 0.85:
        body["where"] = rnd_where(r, docs, extra)
    if r.random() < 0.45:
        body["sort"] = rnd_sort(r, extra)
    elif r.random() < 0.3:
        body["order"] = r.choice(["asc", "desc"])
    if r.random() < 0.4:
        body["count"] = r.choice([0, 1, 3, 10, 50, 1000])
    if r.random() < 0.3:
        body["offset"] = r.choice([0, 0, 1, 5, 40, 500])
    roll = r.random()
    if roll < 0.25:
        body["fields"] = rnd_paths(r, True)
    elif roll < 0.45:
        body["excludedFields"] = rnd_paths(r, False, extra)
    return body


def canon(x):
    return json.dumps(x, sort_keys=True, ensure_ascii=False)


def load(srv, token, name, raw):
    """One /set of raw; the model's collection (keys numbered in byte order,
    README "_seq", from where the server's counter starts)."""
    res = srv.request("POST", "/set", {"collection": name, "data": raw}, token=token)
    assert res.status == 200, res
    order = sorted(raw, key=lambda s: s.encode())
    base = srv.request("POST", "/get", {"collection": name, "keys": order[0], "fields": ["_seq"]},
                       token=token).json["_seq"]
    return {k: qe_model.Doc(k, raw[k], base + i) for i, k in enumerate(order)}


def unclock(got, body):
    """The joined documents' clocks as the model shows them (qe_model.CLOCK)."""
    aliases = [a for a, _f, _o, _p in qe_model.parse_joins(body.get("joins"))]
    for d in got if isinstance(got, list) else [got]:
        for a in aliases:
            j = d.get(a) if isinstance(d, dict) else None
            for k in ("_createdAt", "_modifiedAt"):
                if isinstance(j, dict) and isinstance(j.get(k), int) and j[k] > 10**12:
                    j[k] = qe_model.CLOCK
    return got


def run_round(srv, seed, token):
    r = random.Random(seed)
    name, tname = "d%d" % seed, "t%d" % seed
    traw = {rnd_key(r): rnd_doc(r) for _ in range(r.randint(5, 40))}
    tcoll = load(srv, token, tname, traw)
    tkeys = sorted(traw)
    raw = {}
    for _ in range(r.randint(20, 160)):
        raw[rnd_key(r)] = rnd_doc(r)
    mkeys = sorted(raw)
    for d in raw.values():  # foreign keys for the joins
        roll = r.random()
        if roll < 0.6:
            d["ref"] = r.choice(tkeys)
        elif roll < 0.75:
            d["ref"] = rnd_key(r)
        elif roll < 0.8:
            d["ref"] = r.randint(0, 9)
        if isinstance(d.get("o"), dict) and r.random() < 0.4:
            d["o"]["ref"] = r.choice(tkeys)
        if r.random() < 0.6:
            d["ref2"] = r.choice(mkeys)
    coll = load(srv, token, name, raw)
    # a few shallow patches bump _v
    patches = {}
    for k in r.sample(sorted(coll), min(len(coll), r.randint(0, 10))):
        p = {"n": r.randint(-3, 12)} if r.random() < 0.5 else {"s": r.choice(WORDS), "o": {"x": 9}}
        patches[k] = p
    if patches:
        res = srv.request("POST", "/update", {"collection": name, "data": patches}, token=token)
        assert res.status == 200, res
        for k, p in patches.items():
            coll[k].body = dict(coll[k].body, **p)
            coll[k].v += 1
    colls = {name: coll, tname: tcoll}
    docs = list(coll.values())
    keys = sorted(coll)
    checked = errors = joined = 0
    for q in range(QUERIES):
        body = rnd_body(r, name, docs, keys, tname, colls)
        want_status, want = qe_model.get(coll, body, colls)
        res = srv.request("POST", "/get", body, token=token)
        got = res.json
        if res.status == 200:
            got = unclock(got, body)
        ok = res.status == want_status and (
            canon(got) == canon(want) if want_status == 200 else got.get("error") == want)
        if not ok:
            raise AssertionError("seed %d query %d differs\nbody:   %s\nserver: %d %s\nmodel:  %d %s"
                                 % (seed, q, canon(body), res.status, canon(got)[:3000],
                                    want_status, canon(want)[:3000]))
        checked += 1
        errors += want_status != 200
        joined += "joins" in body and want_status == 200
    return checked, errors, joined


def test_get_matches_the_model():
    with mdbtest.Server() as srv:
        token = srv.login()
        total = errs = joins = 0
        for seed in range(SEED, SEED + ROUNDS):
            n, e, j = run_round(srv, seed, token)
            total += n
            errs += e
            joins += j
        print("compared %d /get answers (%d errors, %d joined answers) over %d seeded collections"
              % (total, errs, joins, ROUNDS))
        assert errs < total and joins > 0


mdbtest.main()
