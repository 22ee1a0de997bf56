/* storage-wal: file headers, replay, snapshot files. See wal_file.h. */
#include "wal_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

/* ---- small I/O helpers ------------------------------------------------------ */
int wal_write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int wal_fsync_dir_of(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int dfd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int rc = fsync(dfd) ? -errno : 0;
    close(dfd);
    return rc;
}

uint64_t wal_random_gen(void)
{
    uint64_t g = 0;
    while (g == 0)
        randombytes_buf(&g, sizeof g);
    return g;
}

/* ---- header -------------------------------------------------------------------- */
void wal_header_render(const wal_header *h, mdb_buf *out)
{
    mdb_buf_printf(out,
                   "{\"cmd\":\"HEADER\",\"collection\":\"_\",\"key\":\"_\",\"value\":{"
                   "\"format\":\"moltendb-wal\",\"version\":1,\"kind\":\"%s\",\"gen\":\"%016" PRIx64
                   "\",\"encryption\":\"%s\"",
                   h->snapshot ? "snapshot" : "log", h->gen,
                   h->encrypted ? "xchacha20poly1305" : "none");
    if (h->encrypted) {
        mdb_buf_printf(out,
                       ",\"kdf\":\"argon2id13\",\"opslimit\":%llu,\"memlimit\":%zu,\"salt\":\"",
                       h->opslimit, h->memlimit);
        wal_b64_encode(h->salt, sizeof h->salt, out);
        mdb_buf_printf(out, "\",\"check\":\"%s\"", h->check);
    }
    if (h->snapshot)
        mdb_buf_printf(out, ",\"logGen\":\"%016" PRIx64 "\",\"logOffset\":%" PRIu64, h->log_gen,
                       h->log_off);
    mdb_buf_printf(out, "},\"_t\":%lld}\n", (long long)mdb_now_ms());
}

static bool hex64(json_object *o, uint64_t *out)
{
    if (!o || !json_object_is_type(o, json_type_string) || json_object_get_string_len(o) != 16)
        return false;
    const char *s = json_object_get_string(o);
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

static json_object *member(json_object *o, const char *k)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

int wal_header_parse(const char *line, size_t len, wal_header *h, const char **why)
{
    memset(h, 0, sizeof *h);
    wal_line l;
    mdb_buf scratch;
    mdb_buf_init(&scratch);
    int rc = wal_parse_line(line, len, &l, &scratch, why);
    json_object *v = NULL;
    if (rc == 0 && strcmp(l.cmd, "HEADER") != 0) {
        *why = "line 1 is not a HEADER line (not a moltendb-wal file)";
        rc = -EINVAL;
    }
    if (rc == 0) {
        json_tokener *tok = json_tokener_new();
        if (tok) {
            v = json_tokener_parse_ex(tok, l.value, (int)l.value_len);
            if (json_tokener_get_error(tok) != json_tokener_success ||
                json_tokener_get_parse_end(tok) != l.value_len) {
                json_object_put(v);
                v = NULL;
            }
            json_tokener_free(tok);
        }
        rc = -EINVAL;
        *why = "malformed HEADER line";
    }
    if (!v || !json_object_is_type(v, json_type_object))
        goto out;
    json_object *fmt = member(v, "format"), *ver = member(v, "version"), *kind = member(v, "kind");
    if (!fmt || strcmp(json_object_get_string(fmt), "moltendb-wal") != 0 || !ver ||
        json_object_get_int(ver) != 1) {
        *why = "unsupported file format or version";
        goto out;
    }
    const char *ks = kind ? json_object_get_string(kind) : "";
    if (strcmp(ks, "log") && strcmp(ks, "snapshot"))
        goto out;
    h->snapshot = strcmp(ks, "snapshot") == 0;
    if (!hex64(member(v, "gen"), &h->gen))
        goto out;
    json_object *enc = member(v, "encryption");
    const char *es = enc ? json_object_get_string(enc) : "";
    if (strcmp(es, "xchacha20poly1305") == 0) {
        h->encrypted = true;
        json_object *kdf = member(v, "kdf"), *ops = member(v, "opslimit"),
                    *mem = member(v, "memlimit"), *salt = member(v, "salt"),
                    *check = member(v, "check");
        if (!kdf || strcmp(json_object_get_string(kdf), "argon2id13") || !ops || !mem || !salt ||
            !check || !json_object_is_type(check, json_type_string) ||
            (size_t)json_object_get_string_len(check) >= sizeof h->check)
            goto out;
        int64_t o = json_object_get_int64(ops), m = json_object_get_int64(mem);
        if (o < (int64_t)crypto_pwhash_OPSLIMIT_MIN || o > 64 ||
            m < (int64_t)crypto_pwhash_MEMLIMIT_MIN || m > ((int64_t)4 << 30)) {
            *why = "unsupported key derivation limits";
            goto out;
        }
        h->opslimit = (unsigned long long)o;
        h->memlimit = (size_t)m;
        mdb_buf sb;
        mdb_buf_init(&sb);
        int drc = wal_b64_decode(json_object_get_string(salt),
                                 (size_t)json_object_get_string_len(salt), &sb);
        bool ok = drc == 0 && sb.len == WAL_SALT_BYTES;
        if (ok)
            memcpy(h->salt, sb.data, WAL_SALT_BYTES);
        mdb_buf_free(&sb);
        if (!ok)
            goto out;
        strcpy(h->check, json_object_get_string(check));
    } else if (strcmp(es, "none") != 0) {
        goto out;
    }
    if (h->snapshot) {
        json_object *lo = member(v, "logOffset");
        if (!hex64(member(v, "logGen"), &h->log_gen) || !lo ||
            !json_object_is_type(lo, json_type_int) || json_object_get_int64(lo) < 0)
            goto out;
        h->log_off = (uint64_t)json_object_get_int64(lo);
    }
    rc = 0;
out:
    json_object_put(v);
    mdb_buf_free(&scratch);
    return rc;
}

/* ---- keys ------------------------------------------------------------------------ */
int wal_keyring_get(wal_keyring *kr, const wal_header *h, const unsigned char **key_out)
{
    int i;
    for (i = 0; i < kr->n; i++)
        if (memcmp(kr->e[i].salt, h->salt, WAL_SALT_BYTES) == 0 && kr->e[i].ops == h->opslimit &&
            kr->e[i].mem == h->memlimit)
            break;
    if (i == kr->n) {
        if (kr->n == (int)(sizeof kr->e / sizeof kr->e[0]))
            i = 0; /* reuse the oldest slot */
        else
            kr->n++;
        memcpy(kr->e[i].salt, h->salt, WAL_SALT_BYTES);
        kr->e[i].ops = h->opslimit;
        kr->e[i].mem = h->memlimit;
        if (wal_derive_key(kr->password, h->salt, h->opslimit, h->memlimit, kr->e[i].key)) {
            memset(kr->e[i].salt, 0, WAL_SALT_BYTES);
            kr->e[i].ops = 0;
            return -ENOMEM;
        }
    }
    if (!wal_key_check_ok(kr->e[i].key, h->check, strlen(h->check)))
        return -EACCES;
    *key_out = kr->e[i].key;
    return 0;
}

const unsigned char *wal_keyring_put(wal_keyring *kr, const wal_header *h,
                                     const unsigned char key[WAL_KEY_BYTES])
{
    int i = kr->n < (int)(sizeof kr->e / sizeof kr->e[0]) ? kr->n++ : 0;
    memcpy(kr->e[i].salt, h->salt, WAL_SALT_BYTES);
    kr->e[i].ops = h->opslimit;
    kr->e[i].mem = h->memlimit;
    memcpy(kr->e[i].key, key, WAL_KEY_BYTES);
    return kr->e[i].key;
}

void wal_keyring_wipe(wal_keyring *kr)
{
    sodium_memzero(kr->e, sizeof kr->e);
    kr->n = 0;
}

/* ---- reader ------------------------------------------------------------------------ */
void wal_reader_init(wal_reader *r, int fd)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
}

void wal_reader_free(wal_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

int wal_reader_next(wal_reader *r, const char **line, size_t *len, bool *nl, uint64_t *off)
{
    size_t scan = r->pos;
    for (;;) {
        char *e = r->len > scan ? memchr(r->buf + scan, '\n', r->len - scan) : NULL;
        if (e || (r->eof && r->len > r->pos)) {
            size_t end = e ? (size_t)(e - r->buf) : r->len;
            *line = r->buf + r->pos;
            *len = end - r->pos;
            *nl = e != NULL;
            *off = r->base + r->pos;
            r->pos = e ? end + 1 : end;
            r->lineno++;
            return 1;
        }
        if (r->eof)
            return 0;
        scan = r->len;
        /* Need more: drop consumed bytes, grow if one line fills the buffer. */
        if (r->pos) {
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->base += r->pos;
            r->len -= r->pos;
            scan -= r->pos;
            r->pos = 0;
        }
        if (r->cap - r->len < 65536) {
            if (r->cap >= WAL_MAX_LINE + 65536)
                return -E2BIG;
            size_t nc = r->cap ? r->cap * 2 : (size_t)1 << 20;
            char *nb = realloc(r->buf, nc);
            if (!nb)
                return -ENOMEM;
            r->buf = nb;
            r->cap = nc;
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            r->eof = true;
        r->len += (size_t)n;
    }
}

/* ---- replay ------------------------------------------------------------------------ */
static void rp_log(const wal_replay *rp, mdb_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rp_log(const wal_replay *rp, mdb_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (rp->to_stderr) {
        fputs(lvl == MDB_LOG_ERROR ? "error: " : lvl == MDB_LOG_WARN ? "warning: " : "", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    } else {
        mdb_logv(rp->ctx, lvl, fmt, ap);
    }
    va_end(ap);
}

/* Records of one batch, copied out of the (reused) line buffers. Pointers
 * are made only at apply time because the buffers grow. */
typedef struct pend {
    mdb_rec_op op;
    size_t coll_off, coll_len, key_off, key_len, val_off;
    bool has_key, has_val;
    int64_t ts;
} pend;

typedef struct batch {
    pend *p;
    size_t n, cap;
    mdb_record *recs;
    size_t rcap;
    mdb_buf strs, vals;
    bool open;     /* inside TX_BEGIN ... TX_COMMIT */
    size_t expect; /* TX_BEGIN's record count */
    char txid[40];
    int64_t ts; /* of the batch's first line */
    uint64_t start_line;
} batch;

static void batch_reset(batch *b)
{
    b->n = 0;
    b->open = false;
    b->expect = 0;
    b->txid[0] = 0;
    b->ts = 0;
    mdb_buf_reset(&b->strs);
    mdb_buf_reset(&b->vals);
}

static void batch_free(batch *b)
{
    free(b->p);
    free(b->recs);
    mdb_buf_free(&b->strs);
    mdb_buf_free(&b->vals);
}

/* Add a parsed record line. 0, -EINVAL (why set), -ENOMEM. */
static int batch_add(batch *b, mdb_rec_op op, const wal_line *l, const char **why)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        pend *np = realloc(b->p, nc * sizeof *np);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->cap = nc;
    }
    if (l->coll_len == 0) {
        *why = "empty collection name";
        return -EINVAL;
    }
    if ((op == MDB_REC_INSERT || op == MDB_REC_DELETE) && !l->key) {
        *why = "record without a key";
        return -EINVAL;
    }
    pend *p = &b->p[b->n];
    memset(p, 0, sizeof *p);
    p->op = op;
    p->ts = l->ts;
    p->coll_off = b->strs.len;
    p->coll_len = l->coll_len;
    mdb_buf_append(&b->strs, l->coll, l->coll_len);
    mdb_buf_putc(&b->strs, 0);
    if ((op == MDB_REC_INSERT || op == MDB_REC_DELETE) && l->key) {
        p->has_key = true;
        p->key_off = b->strs.len;
        p->key_len = l->key_len;
        mdb_buf_append(&b->strs, l->key, l->key_len);
        mdb_buf_putc(&b->strs, 0);
    }
    if (op == MDB_REC_INSERT || op == MDB_REC_SCHEMA || op == MDB_REC_META) {
        p->has_val = true;
        p->val_off = b->vals.len;
        int rc = mdb_encode_json_text(l->value, l->value_len, &b->vals, why);
        if (rc)
            return rc == -ENOMEM ? -ENOMEM : -EINVAL;
    }
    if (b->strs.oom || b->vals.oom)
        return -ENOMEM;
    b->n++;
    return 0;
}

static int batch_apply(wal_replay *rp, batch *b, const char **why)
{
    if (b->n == 0)
        return 0;
    if (b->rcap < b->n) {
        mdb_record *nr = realloc(b->recs, b->n * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        b->recs = nr;
        b->rcap = b->n;
    }
    for (size_t i = 0; i < b->n; i++) {
        const pend *p = &b->p[i];
        mdb_record *r = &b->recs[i];
        memset(r, 0, sizeof *r);
        r->op = p->op;
        r->collection = b->strs.data + p->coll_off;
        r->collection_len = p->coll_len;
        if (p->has_key) {
            r->key = b->strs.data + p->key_off;
            r->key_len = p->key_len;
        }
        r->value = p->has_val ? mdb_val_at(&b->vals, p->val_off) : MDB_VAL_MISSING;
        r->ts_ms = p->ts;
    }
    int rc = mdb_store_apply(rp->store, b->recs, b->n, why);
    if (rc == 0)
        rp->records += b->n;
    return rc;
}

int wal_file_open(wal_replay *rp, const char *path, wal_header *h, int *fd_out, wal_reader *rd)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(rp->why, sizeof rp->why, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    wal_reader_init(rd, fd);
    const char *line;
    size_t len;
    bool nl;
    uint64_t off;
    int rc = wal_reader_next(rd, &line, &len, &nl, &off);
    if (rc < 0) {
        snprintf(rp->why, sizeof rp->why, "cannot read %s: %s", path, strerror(-rc));
        goto fail;
    }
    if (rc == 0 || !nl) {
        /* Empty, or the header line itself was torn by a crash at creation. */
        *fd_out = fd;
        return 1;
    }
    const char *why = "malformed header";
    if (wal_header_parse(line, len, h, &why) != 0) {
        snprintf(rp->why, sizeof rp->why, "%s: line 1: %s", path, why);
        rc = -EINVAL;
        goto fail;
    }
    *fd_out = fd;
    return 0;
fail:
    wal_reader_free(rd);
    close(fd);
    return rc;
}

/* A non-negative decimal JSON number spanning exactly [s, s+n). */
static bool parse_count(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* A line of NUL bytes is what a crash can leave where a block was
 * allocated but not written: count it as torn, not corrupt. */
static bool all_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i])
            return false;
    return true;
}

int wal_replay_rest(wal_replay *rp, const char *path, const wal_header *h, wal_reader *rd,
                    uint64_t skip_to)
{
    const unsigned char *key = NULL;
    if (h->encrypted) {
        int krc = wal_keyring_get(rp->keys, h, &key);
        if (krc == -EACCES) {
            snprintf(rp->why, sizeof rp->why, "encryption key does not match this database (%s)",
                     path);
            return -EACCES;
        }
        if (krc) {
            snprintf(rp->why, sizeof rp->why, "%s: key derivation failed (out of memory)", path);
            return krc;
        }
    }
    batch b;
    memset(&b, 0, sizeof b);
    mdb_buf pt, scratch;
    mdb_buf_init(&pt);
    mdb_buf_init(&scratch);
    const bool snap = h->snapshot;
    bool ended = false;     /* snapshot END seen */
    uint64_t tear_line = 0; /* first line of a torn tail */
    uint64_t snap_count = 0;
    int rc = 0;
    rp->good_end = rd->base + rd->pos; /* after the header */
    const char *line;
    size_t len;
    bool nl;
    uint64_t off;
    for (;;) {
        int n = wal_reader_next(rd, &line, &len, &nl, &off);
        if (n < 0) {
            snprintf(rp->why, sizeof rp->why, "cannot read %s: %s", path,
                     n == -E2BIG ? "line too long" : strerror(-n));
            rc = n;
            goto out;
        }
        if (n == 0)
            break;
        rp->file_size = off + len + (nl ? 1 : 0);
        if (off < skip_to) {
            rp->good_end = rp->file_size;
            continue;
        }
        const char *why = NULL;
        wal_line l;
        uint64_t cnt64 = 0, err_line = rd->lineno;
        int prc;
        bool tear = !nl || (len > 0 && all_nul(line, len));
        if (ended) {
            why = "data after the END line";
            prc = -EINVAL;
        } else if (tear && !snap) {
            /* A torn tail (possibly several NUL-filled lines) is dropped;
             * it must be the last thing in the file, checked below. */
            if (!tear_line)
                tear_line = rd->lineno;
            continue;
        } else if (tear) {
            why = "torn line (incomplete snapshot)";
            prc = -EINVAL;
        } else if (tear_line) {
            why = "damaged line followed by more records";
            prc = -EINVAL;
            err_line = tear_line;
            tear_line = 0;
        } else {
            prc = wal_parse_line(line, len, &l, &scratch, &why);
        }
        if (prc == 0 && strcmp(l.cmd, "ENC") == 0) {
            if (!key) {
                why = "encrypted line in an unencrypted file";
                prc = -EINVAL;
            } else if (l.value_len < 2 || l.value[0] != '"' || l.value[l.value_len - 1] != '"') {
                why = "ENC line without a string value";
                prc = -EINVAL;
            } else {
                mdb_buf_reset(&pt);
                prc = wal_open_value(key, l.value + 1, l.value_len - 2, &pt);
                if (prc == -EBADMSG)
                    why = "decryption failed (tampered or damaged line)";
                else if (prc)
                    why = "invalid ENC value";
                if (prc == 0)
                    prc = wal_parse_line(pt.data, pt.len, &l, &scratch, &why);
                if (prc == 0 && strcmp(l.cmd, "ENC") == 0) {
                    why = "nested ENC line";
                    prc = -EINVAL;
                }
            }
        } else if (prc == 0 && key) {
            why = "plaintext line in an encrypted file";
            prc = -EINVAL;
        }
        if (prc == 0) {
            int op = mdb_rec_op_parse(l.cmd);
            bool tx_begin = strcmp(l.cmd, "TX_BEGIN") == 0;
            bool tx_commit = strcmp(l.cmd, "TX_COMMIT") == 0;
            /* Point-in-time limits apply at batch starts. */
            if (!snap && !b.open && (op > 0 || tx_begin)) {
                if ((rp->to_time > 0 && l.ts > rp->to_time) ||
                    (rp->to_seq > 0 && rp->batches >= rp->to_seq)) {
                    rp->limited = true;
                    break;
                }
            }
            if (op > 0) {
                if (!snap && !b.open) {
                    batch_reset(&b);
                    b.start_line = rd->lineno;
                }
                prc = batch_add(&b, (mdb_rec_op)op, &l, &why);
                if (prc == 0 &&
                    (snap ? b.n >= 1024 || b.strs.len + b.vals.len > (4u << 20) : !b.open)) {
                    prc = batch_apply(rp, &b, &why);
                    if (prc == 0) {
                        snap_count += b.n;
                        if (!snap) {
                            rp->batches++;
                            rp->good_end = rp->file_size;
                        }
                        batch_reset(&b);
                    } else {
                        why = why ? why : "apply failed";
                        goto apply_failed;
                    }
                }
            } else if (snap && strcmp(l.cmd, "END") == 0) {
                prc = batch_apply(rp, &b, &why);
                if (prc)
                    goto apply_failed;
                snap_count += b.n;
                batch_reset(&b);
                uint64_t cnt = 0;
                if (!parse_count(l.value, l.value_len, &cnt) || cnt != snap_count) {
                    why = "END line record count does not match";
                    prc = -EINVAL;
                } else {
                    ended = true;
                }
            } else if (!snap && tx_begin) {
                if (b.open) {
                    why = "TX_BEGIN inside an open batch";
                    prc = -EINVAL;
                } else if (!parse_count(l.value, l.value_len, &cnt64)) {
                    why = "TX_BEGIN without a record count";
                    prc = -EINVAL;
                } else {
                    batch_reset(&b);
                    b.open = true;
                    b.start_line = rd->lineno;
                    b.ts = l.ts;
                    b.expect = (size_t)cnt64;
                    snprintf(b.txid, sizeof b.txid, "%.*s", (int)(l.key ? l.key_len : 0),
                             l.key ? l.key : "");
                }
            } else if (!snap && tx_commit) {
                if (!b.open || !l.key || strlen(b.txid) != l.key_len ||
                    memcmp(b.txid, l.key, l.key_len) != 0 || b.n != b.expect) {
                    why = "TX_COMMIT does not match its TX_BEGIN";
                    prc = -EINVAL;
                } else {
                    prc = batch_apply(rp, &b, &why);
                    if (prc)
                        goto apply_failed;
                    rp->batches++;
                    rp->good_end = rp->file_size;
                    batch_reset(&b);
                }
            } else if (strcmp(l.cmd, "TTL_EXPIRY") == 0 || strcmp(l.cmd, "INDEX") == 0) {
                /* Legacy upstream commands: nothing to apply. */
            } else {
                why = "unknown command";
                prc = -EINVAL;
            }
        }
        if (prc == -ENOMEM) {
            snprintf(rp->why, sizeof rp->why, "%s: line %" PRIu64 ": out of memory", path,
                     rd->lineno);
            rc = -ENOMEM;
            goto out;
        }
        if (prc) {
            if (snap || !rp->skip_corrupt) {
                snprintf(rp->why, sizeof rp->why, "%s: corrupt record at line %" PRIu64 ": %s%s",
                         path, err_line, why ? why : "invalid line",
                         snap ? "" : " (start with --skip-corrupt to skip it)");
                rc = -EINVAL;
                goto out;
            }
            rp_log(rp, MDB_LOG_WARN, "%s: skipping corrupt record at line %" PRIu64 ": %s%s", path,
                   err_line, why ? why : "invalid line",
                   b.open ? " (and the rest of its batch)" : "");
            /* The batch it belonged to cannot be trusted whole: drop it. */
            batch_reset(&b);
            rp->good_end = rp->file_size;
        }
        continue;
    apply_failed:
        snprintf(rp->why, sizeof rp->why,
                 "%s: cannot apply the batch ending at line %" PRIu64 ": %s", path, rd->lineno,
                 why ? why : "apply failed");
        rc = -EINVAL;
        goto out;
    }
    if (snap && !ended) {
        snprintf(rp->why, sizeof rp->why, "%s: snapshot is incomplete (no END line)", path);
        rc = -EINVAL;
        goto out;
    }
    if (tear_line && !rp->limited) {
        rp_log(rp, MDB_LOG_WARN,
               "%s: dropping a torn last line %" PRIu64 " (%" PRIu64
               " bytes, a write cut off by a crash)",
               path, tear_line, rp->file_size - rp->good_end);
        rp->torn = true;
    }
    if (!snap && b.open && !rp->limited) {
        rp_log(rp, MDB_LOG_WARN,
               "%s: dropping an incomplete batch from line %" PRIu64 " (a write cut off by a "
               "crash)",
               path, b.start_line);
        rp->torn = true;
    }
    if (rp->good_end < rp->file_size)
        rp->torn = true;
out:
    batch_free(&b);
    mdb_buf_free(&pt);
    sodium_memzero(scratch.data, scratch.cap);
    mdb_buf_free(&scratch);
    return rc;
}

/* ---- writing records ------------------------------------------------------------------ */
void wal_render_record(const mdb_record *rec, mdb_buf *line, mdb_buf *tmp)
{
    mdb_buf_reset(tmp);
    mdb_record_value_json(rec, tmp);
    const char *key = rec->op == MDB_REC_INSERT || rec->op == MDB_REC_DELETE ? rec->key : NULL;
    wal_render(line, mdb_rec_op_name(rec->op), rec->collection, rec->collection_len, key,
               rec->key_len, tmp->data, tmp->len, rec->ts_ms);
}

void wal_emit(const unsigned char *key, const char *pt, size_t len, int64_t ts, mdb_buf *out)
{
    if (key)
        wal_seal_line(key, pt, len, ts, out);
    else
        mdb_buf_append(out, pt, len);
    mdb_buf_putc(out, '\n');
}

typedef struct snap_ctx {
    int fd;
    const unsigned char *key;
    mdb_buf out, line, tmp;
    uint64_t records;
    int err;
} snap_ctx;

static int snap_flush(snap_ctx *c)
{
    if (c->out.oom)
        return c->err = -ENOMEM;
    int rc = wal_write_all(c->fd, c->out.data, c->out.len);
    mdb_buf_reset(&c->out);
    return c->err = rc;
}

static int snap_rec(const mdb_record *rec, void *ud)
{
    snap_ctx *c = ud;
    mdb_buf_reset(&c->line);
    wal_render_record(rec, &c->line, &c->tmp);
    if (c->line.oom || c->tmp.oom)
        return c->err = -ENOMEM;
    wal_emit(c->key, c->line.data, c->line.len, rec->ts_ms, &c->out);
    c->records++;
    if (c->out.len >= (1u << 20))
        return snap_flush(c);
    return 0;
}

int wal_snapshot_write(const char *path, mdb_frozen *f, const wal_header *h,
                       const unsigned char *key, uint64_t *bytes_out, char *why, size_t whycap)
{
    snap_ctx c;
    memset(&c, 0, sizeof c);
    c.key = key;
    c.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c.fd < 0) {
        snprintf(why, whycap, "cannot create %s: %s", path, strerror(errno));
        return -errno;
    }
    fchmod(c.fd, 0600);
    mdb_buf_init(&c.out);
    mdb_buf_init(&c.line);
    mdb_buf_init(&c.tmp);
    wal_header_render(h, &c.out);
    int rc = mdb_frozen_each(f, snap_rec, &c);
    if (!rc && !c.err) {
        char num[32];
        int nlen = snprintf(num, sizeof num, "%" PRIu64, c.records);
        mdb_buf_reset(&c.line);
        wal_render(&c.line, "END", "_", 1, "_", 1, num, (size_t)nlen, mdb_now_ms());
        wal_emit(key, c.line.data, c.line.len, mdb_now_ms(), &c.out);
        rc = snap_flush(&c);
    }
    if (!rc)
        rc = c.err;
    const char *step = "write";
    if (!rc && fsync(c.fd) != 0) {
        rc = -errno;
        step = "fsync";
    }
    struct stat st;
    if (!rc && fstat(c.fd, &st) == 0)
        *bytes_out = (uint64_t)st.st_size;
    if (close(c.fd) != 0 && !rc) {
        rc = -errno;
        step = "close";
    }
    if (rc) {
        snprintf(why, whycap, "cannot %s %s: %s", step, path, strerror(-rc));
        unlink(path);
    }
    sodium_memzero(c.line.data, c.line.cap);
    sodium_memzero(c.tmp.data, c.tmp.cap);
    mdb_buf_free(&c.out);
    mdb_buf_free(&c.line);
    mdb_buf_free(&c.tmp);
    return rc;
}
