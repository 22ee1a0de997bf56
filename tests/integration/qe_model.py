"""A reference model of the query engine's /get, written from its README.

Independent of the C code: plain Python over plain dicts, one function per
rule of modules/query-engine/README.md ("Behaviour notes", "Differences
from upstream"). test_query_diff.py runs the same requests against the real
server and this model and compares the answers.

A collection is {key: Doc}; a Doc holds the body (a dict) and its system
fields. get(coll, body) returns (status, payload): the reply document or
list for 200, the error text otherwise.
"""

import copy
import functools

MISSING = object()
SYSTEM = ("_v", "_seq", "_key")  # the system fields the model knows (no clocks)


class Doc:
    def __init__(self, key, body, seq, v=1):
        self.key, self.body, self.seq, self.v = key, body, seq, v


class QueryError(Exception):
    def __init__(self, status, text):
        Exception.__init__(self, text)
        self.status, self.text = status, text


# ---- values ----------------------------------------------------------------------------------
def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fold(s):
    """Lowercase for the README's case-insensitive comparisons: Rust's
    str::to_lowercase. Python's str.lower() is the same mapping (full
    Unicode lowercase, one letter to several, the final-sigma rule, no
    language tailoring)."""
    return s.lower()


def lookup(doc, path):
    """The value at a dot path of a document, or MISSING (README "WHERE")."""
    if path in SYSTEM:
        return {"_v": doc.v, "_seq": doc.seq, "_key": doc.key}[path]
    cur = doc.body
    for seg in path.split("."):
        if not isinstance(cur, dict) or seg not in cur:
            return MISSING
        cur = cur[seg]
    return cur


def structural_eq(a, b):
    """Arrays and objects compare member by member: numbers by value, strings
    exactly (case matters inside arrays and objects)."""
    if is_num(a) and is_num(b):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(structural_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and structural_eq(v, b[k]) for k, v in a.items())
    return a == b


def eq(field, lit):
    if field is MISSING:
        return False
    if is_num(field):
        return is_num(lit) and field == lit
    if isinstance(field, str):
        return isinstance(lit, str) and fold(field) == fold(lit)
    if isinstance(field, bool):
        return isinstance(lit, bool) and field == lit
    if field is None:
        return lit is None
    return type(field) is type(lit) and structural_eq(field, lit)


OPS = {"$eq": "eq", "$equals": "eq", "$ne": "ne", "$notEquals": "ne", "$gt": "gt",
       "$greaterThan": "gt", "$gte": "gte", "$greaterThanOrEqual": "gte", "$lt": "lt",
       "$lessThan": "lt", "$lte": "lte", "$lessThanOrEqual": "lte", "$in": "in", "$oneOf": "in",
       "$nin": "nin", "$notIn": "nin", "$contains": "contains", "$ct": "contains"}


def cond(op, name, field, lit):
    if op == "eq":
        return eq(field, lit)
    if op == "ne":
        return not eq(field, lit)
    if op in ("gt", "gte", "lt", "lte"):
        if not (is_num(field) and is_num(lit)):
            return False
        return {"gt": field > lit, "gte": field >= lit, "lt": field < lit, "lte": field <= lit}[op]
    if op in ("in", "nin"):
        inside = any(eq(field, x) for x in lit)
        return inside if op == "in" else not inside
    if op == "contains":
        if isinstance(field, str):
            return isinstance(lit, str) and fold(lit) in fold(field)
        if isinstance(field, list):
            return any(eq(x, lit) for x in field)
        return False
    raise AssertionError(op)


# ---- where: checked first (errors are 400), then evaluated -----------------------------------
def check_where(w):
    if w is None:
        return
    if not isinstance(w, (dict, list)):
        raise QueryError(400, "'where' must be an object or an array of objects")
    check_clause(w)


def check_clause(c):
    if isinstance(c, list):
        for x in c:
            check_clause(x)
        return
    if not isinstance(c, dict):
        return
    for k, v in c.items():
        if k in ("$or", "$and"):
            if not isinstance(v, list):
                raise QueryError(400, "Invalid Query: %s expects an array" % k)
            for x in v:
                check_clause(x)
        elif k.startswith("$"):
            raise QueryError(400, "Invalid Query: Unknown operator: %s" % k)
        elif isinstance(v, dict):
            for op, lit in v.items():
                if op not in OPS:
                    raise QueryError(400, "Invalid Query: Unknown operator: %s" % op)
                if OPS[op] in ("in", "nin") and not isinstance(lit, list):
                    raise QueryError(400, "Invalid Query: %s expects an array" % op)


def match(doc, c):
    if isinstance(c, list):
        return all(match(doc, x) for x in c)
    if not isinstance(c, dict):
        return True
    for k, v in c.items():
        if k == "$or":
            if not any(match(doc, x) for x in v):
                return False
        elif k == "$and":
            if not all(match(doc, x) for x in v):
                return False
        elif isinstance(v, dict):
            field = lookup(doc, k)
            if not all(cond(OPS[op], op, field, lit) for op, lit in v.items()):
                return False
        elif not eq(lookup(doc, k), v):
            return False
    return True


# ---- sort (policy: numbers < strings < booleans < null < arrays < objects, missing last) -----
def rank(x):
    if x is MISSING:
        return 9
    if is_num(x):
        return 0
    if isinstance(x, str):
        return 1
    if isinstance(x, bool):
        return 2
    if x is None:
        return 3
    return 4 if isinstance(x, list) else 5


def cmp_values(a, b):
    ra, rb = rank(a), rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 0:
        return (a > b) - (a < b)
    if ra == 1:
        ea, eb = a.encode(), b.encode()
        return (ea > eb) - (ea < eb)
    if ra == 2:
        return int(a) - int(b)
    return 0


def sort_docs(docs, specs):
    def cmp(x, y):
        for field, desc in specs:
            c = cmp_values(lookup(x, field), lookup(y, field))
            if c:
                return -c if desc else c
        kx, ky = x.key.encode(), y.key.encode()
        return (kx > ky) - (kx < ky)
    return sorted(docs, key=functools.cmp_to_key(cmp))


def parse_sort(spec):
    out = []
    for s in spec:
        if isinstance(s, str):
            out.append((s, False))
        else:
            out.append((s["field"], s.get("order", "asc").lower() == "desc"))
    return out


# ---- projection ---------------------------------------------------------------------------
def project(doc, fields):
    out = project_paths(doc.body, [f for f in fields if f not in (
        "_seq", "_v", "_key", "_createdAt", "_modifiedAt", "_expiresAt")])
    if "_seq" in fields:
        out["_seq"] = doc.seq
    return out


def project_paths(src, fields):
    """The listed dot paths of src that exist, as nested objects."""
    out = {}
    for f in fields:
        parts = f.split(".")
        cur = src
        for p in parts:
            if not isinstance(cur, dict) or p not in cur:
                cur = MISSING
                break
            cur = cur[p]
        if cur is MISSING:
            continue
        cur = copy.deepcopy(cur)
        dst = out
        for p in parts[:-1]:
            nxt = dst.get(p)
            if not isinstance(nxt, dict):
                nxt = dst[p] = {}
            dst = nxt
        dst[parts[-1]] = cur
    return out


def exclude(body, paths):
    """Remove each path; an object left empty along a path goes too."""
    out = copy.deepcopy(body)

    def remove(obj, parts):
        if len(parts) == 1:
            obj.pop(parts[0], None)
            return
        child = obj.get(parts[0])
        if isinstance(child, dict):
            remove(child, parts[1:])
            if not child:
                del obj[parts[0]]
    for p in paths:
        remove(out, p.split("."))
    return out


# ---- joins (README "Joins") ---------------------------------------------------------------
# The joined document's clocks are not known to the model: it shows them as
# CLOCK, and the test puts CLOCK in place of the server's numbers.
CLOCK = "<unix ms>"
JOIN_SYSTEM = ("_v", "_seq", "_createdAt", "_modifiedAt")


def parse_joins(joins):
    """[(alias, from, on, fields or None)]: the first property of each element
    whose value is an object with "from"."""
    out = []
    for el in joins or []:
        for alias, spec in el.items():
            if isinstance(spec, dict) and "from" in spec:
                out.append((alias, spec["from"], spec["on"], spec.get("fields")))
                break
    return out


def joined_doc(t, fields):
    """The target document as embedded: raw system fields, no _key, then the
    join's own projection (system fields only when listed)."""
    sysv = {"_v": t.v, "_seq": t.seq, "_createdAt": CLOCK, "_modifiedAt": CLOCK}
    if fields is None:
        return dict(copy.deepcopy(t.body), **sysv)
    out = project_paths(t.body, [f for f in fields if f not in JOIN_SYSTEM and f != "_key"])
    for f in fields:
        if f in JOIN_SYSTEM:
            out[f] = sysv[f]
    return out


class View(Doc):
    """A document with its joins applied: each alias whose target exists
    replaces the field of that name; where, sort and the reply all see this."""

    def __init__(self, doc, joins, colls):
        body = copy.deepcopy(doc.body)
        self.found = {}
        for alias, src, on, fields in joins:
            ref = lookup(doc, on)
            target = colls.get(src, {}).get(ref) if isinstance(ref, str) else None
            if target is not None:
                self.found[alias] = body[alias] = joined_doc(target, fields)
        Doc.__init__(self, doc.key, body, doc.seq, doc.v)


def render(doc, body):
    if "fields" in body:
        out = project(doc, body["fields"])
        for alias, j in getattr(doc, "found", {}).items():
            out[alias] = copy.deepcopy(j)  # aliases are attached whole
    elif "excludedFields" in body:
        out = exclude(doc.body, body["excludedFields"])
    else:
        out = dict(doc.body)
    out["_key"] = doc.key
    out["_v"] = doc.v
    return out


# ---- /get ----------------------------------------------------------------------------------
def get(coll, body, colls=None):
    """The model's answer to a /get body: (200, result) or (status, error text).
    colls maps collection names to collections, for joins."""
    try:
        return 200, _get(coll, body, colls or {})
    except QueryError as e:
        return e.status, e.text


def _get(coll, body, colls):
    count = body.get("count", 100)
    offset = body.get("offset", 0)
    if count > 1000:
        raise QueryError(400, "'count' cannot exceed 1000")
    check_where(body.get("where"))
    keys = body.get("keys")
    if isinstance(keys, str):
        docs = [coll[keys]] if keys in coll else []
    elif isinstance(keys, list):
        seen, docs = set(), []
        for k in keys:
            if isinstance(k, str) and k not in seen and k in coll:
                seen.add(k)
                docs.append(coll[k])
    else:
        docs = list(coll.values())
    joins = parse_joins(body.get("joins"))
    if joins:
        docs = [View(d, joins, colls) for d in docs]
    docs = [d for d in docs if match(d, body.get("where"))]
    if "sort" in body:
        docs = sort_docs(docs, parse_sort(body["sort"]))
    else:
        docs.sort(key=lambda d: d.seq, reverse=body.get("order") != "asc")
    if isinstance(keys, str):
        if not docs:
            raise QueryError(404, "No documents found")
        return render(docs[0], body)
    page = docs[offset:offset + count]
    if not page:
        raise QueryError(404, "No documents found")
    return [render(d, body) for d in page]
