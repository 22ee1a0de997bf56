/* storage-pg: batches in the storage-wal codec. See pg_codec.h. */
#include "pg_codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wal_codec.h"
#include "wal_file.h"

void pg_batch_init(pg_batch *b)
{
    memset(b, 0, sizeof *b);
    mdb_buf_init(&b->strs);
    mdb_buf_init(&b->vals);
    mdb_buf_init(&b->pt);
    mdb_buf_init(&b->scratch);
}

void pg_batch_reset(pg_batch *b)
{
    b->n = 0;
    mdb_buf_reset(&b->strs);
    mdb_buf_reset(&b->vals);
}

static void wipe(mdb_buf *b)
{
    if (b->data)
        sodium_memzero(b->data, b->cap);
    mdb_buf_free(b);
}

void pg_batch_free(pg_batch *b)
{
    free(b->recs);
    free(b->offs);
    wipe(&b->strs);
    wipe(&b->vals);
    wipe(&b->pt);
    wipe(&b->scratch);
    memset(b, 0, sizeof *b);
}

static int grow(pg_batch *b)
{
    if (b->n < b->cap)
        return 0;
    size_t nc = b->cap ? b->cap * 2 : 32;
    pg_rec_off *no = realloc(b->offs, nc * sizeof *no);
    if (!no)
        return -ENOMEM;
    b->offs = no;
    mdb_record *nr = realloc(b->recs, nc * sizeof *nr);
    if (!nr)
        return -ENOMEM;
    b->recs = nr;
    b->cap = nc;
    return 0;
}

/* One line into the next record. */
static int decode_line(pg_batch *b, const unsigned char *key, const char *line, size_t len,
                       const char **why)
{
    wal_line l;
    int rc = wal_parse_line(line, len, &l, &b->scratch, why);
    if (rc)
        return rc;
    if (strcmp(l.cmd, "ENC") == 0) {
        if (!key) {
            *why = "encrypted record but encryption is disabled on this node";
            return -EINVAL;
        }
        if (l.value_len < 2 || l.value[0] != '"' || l.value[l.value_len - 1] != '"') {
            *why = "ENC line without a string value";
            return -EINVAL;
        }
        mdb_buf_reset(&b->pt);
        rc = wal_open_value(key, l.value + 1, l.value_len - 2, &b->pt);
        if (rc) {
            *why = rc == -EBADMSG ? "decryption failed (wrong key, tampered or damaged row)"
                                  : "invalid ENC value";
            return rc;
        }
        rc = wal_parse_line(b->pt.data, b->pt.len, &l, &b->scratch, why);
        if (rc)
            return rc;
        if (strcmp(l.cmd, "ENC") == 0) {
            *why = "nested ENC line";
            return -EINVAL;
        }
    } else if (key) {
        *why = "plaintext record in an encrypted database";
        return -EINVAL;
    }
    int op = mdb_rec_op_parse(l.cmd);
    if (op < 0 || l.coll_len == 0) {
        *why = op < 0 ? "unknown record command" : "empty collection name";
        return -EINVAL;
    }
    bool keyed = op == MDB_REC_INSERT || op == MDB_REC_DELETE;
    if (keyed && !l.key) {
        *why = "record without a key";
        return -EINVAL;
    }
    if (grow(b)) {
        *why = "out of memory";
        return -ENOMEM;
    }
    pg_rec_off *o = &b->offs[b->n];
    memset(o, 0, sizeof *o);
    memset(&b->recs[b->n], 0, sizeof b->recs[b->n]);
    b->recs[b->n].op = (mdb_rec_op)op;
    b->recs[b->n].ts_ms = l.ts;
    o->coll_off = b->strs.len;
    o->coll_len = l.coll_len;
    mdb_buf_append(&b->strs, l.coll, l.coll_len);
    mdb_buf_putc(&b->strs, 0);
    if (keyed) {
        o->has_key = true;
        o->key_off = b->strs.len;
        o->key_len = l.key_len;
        mdb_buf_append(&b->strs, l.key, l.key_len);
        mdb_buf_putc(&b->strs, 0);
    }
    if (op != MDB_REC_DELETE && op != MDB_REC_DROP) {
        o->has_val = true;
        o->val_off = b->vals.len;
        rc = mdb_encode_json_text(l.value, l.value_len, &b->vals, why);
        if (rc)
            return rc;
    }
    if (b->strs.oom || b->vals.oom) {
        *why = "out of memory";
        return -ENOMEM;
    }
    b->n++;
    return 0;
}

int pg_batch_decode(pg_batch *b, const unsigned char *key, const char *data, size_t len,
                    const char **why)
{
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            *why = "unterminated record line";
            return -EINVAL;
        }
        int rc = decode_line(b, key, p, (size_t)(nl - p), why);
        if (rc)
            return rc;
        p = nl + 1;
    }
    return 0;
}

void pg_batch_records(pg_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const pg_rec_off *o = &b->offs[i];
        mdb_record *r = &b->recs[i];
        r->collection = b->strs.data + o->coll_off;
        r->collection_len = o->coll_len;
        r->key = o->has_key ? b->strs.data + o->key_off : NULL;
        r->key_len = o->has_key ? o->key_len : 0;
        r->doc = NULL;
        r->value = o->has_val ? mdb_val_at(&b->vals, o->val_off) : MDB_VAL_MISSING;
    }
}

void pg_render_records(const unsigned char *key, const mdb_record *recs, size_t n, mdb_buf *out,
                       mdb_buf *line, mdb_buf *tmp)
{
    for (size_t i = 0; i < n; i++) {
        mdb_buf_reset(line);
        wal_render_record(&recs[i], line, tmp);
        wal_emit(key, line->data, line->len, recs[i].ts_ms, out);
        if (line->oom || tmp->oom)
            out->oom = 1;
    }
}
