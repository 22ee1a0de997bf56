/* storage-wal: replay of a log or snapshot file into a store (wal_file.h):
 * parallel line decoding and the batch state machine. The rules (torn
 * tails, corrupt lines, --skip-corrupt, snapshot then log): README.md,
 * "Replay". */
#include "wal_file.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    uint64_t start_line;
} batch;

static void batch_reset(batch *b)
{
    b->n = 0;
    b->open = false;
    b->expect = 0;
    b->txid[0] = 0;
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

/* ---- decoding (worker threads) ---------------------------------------------------
 * Replay is a pipeline: worker threads (one per usable CPU) take turns
 * reading chunks of lines, then decrypt, parse and encode them in parallel;
 * the replaying thread takes the chunks in file order, runs the batch state
 * machine and applies. Decoding is most of the cost, so replay scales with
 * the CPUs until applying becomes the limit. */
typedef enum dl_kind {
    DL_REC = 1,   /* a record: op, collection, key, value */
    DL_TX_BEGIN,  /* key = batch id, count */
    DL_TX_COMMIT, /* key = batch id */
    DL_END,       /* snapshot end, count */
    DL_IGNORE,    /* legacy command */
    DL_TEAR,      /* unterminated or NUL-filled line */
    DL_BAD,       /* err + why */
    DL_SKIP       /* lines before skip_to (end_off tells how far) */
} dl_kind;

typedef struct dline {
    dl_kind kind;
    int err;
    const char *why;
    pend rec; /* DL_REC; key in rec.key_off for TX lines */
    uint64_t count;
    uint64_t lineno, end_off;
    size_t raw_off, len; /* the line in chunk->raw */
    bool nl;             /* it ended with a newline */
} dline;

typedef struct chunk {
    struct chunk *next;
    uint64_t seq; /* order of the chunk in the file */
    dline *l;
    size_t n, cap;
    mdb_buf raw;        /* the lines as read, decoded by a worker */
    mdb_buf strs, vals; /* decoded strings and encoded values */
    int rd_err;         /* read error: the last chunk */
    bool eof;
} chunk;

#define CHUNK_LINES 2048
#define CHUNK_BYTES ((size_t)2 << 20)
#define MAX_WORKERS 4

/* Workers take turns reading a chunk of raw lines (under rd_mu), decode it
 * on their own, and queue it by sequence number; the replaying thread
 * takes chunks strictly in order. At most `ahead` chunks are in flight. */
typedef struct decoder {
    /* inputs */
    wal_reader *rd;
    const unsigned char *key;
    bool snap;
    uint64_t skip_to;
    /* reading, under rd_mu */
    pthread_mutex_t rd_mu;
    uint64_t next_seq;
    bool rd_end;
    /* queue, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    chunk *ready;     /* decoded, sorted by seq */
    chunk *free_list; /* recycled */
    uint64_t want;    /* next seq the replaying thread takes */
    uint64_t ahead;
    int running;
    bool stop;
    int err; /* a worker ran out of memory for a chunk */
} decoder;

typedef struct worker {
    decoder *d;
    pthread_t thr;
    mdb_buf pt, scratch;
} worker;

static chunk *chunk_get(decoder *d)
{
    pthread_mutex_lock(&d->mu);
    chunk *c = d->free_list;
    if (c)
        d->free_list = c->next;
    pthread_mutex_unlock(&d->mu);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        mdb_buf_init(&c->raw);
        mdb_buf_init(&c->strs);
        mdb_buf_init(&c->vals);
    }
    c->next = NULL;
    c->n = 0;
    c->rd_err = 0;
    c->eof = false;
    mdb_buf_reset(&c->raw);
    mdb_buf_reset(&c->strs);
    mdb_buf_reset(&c->vals);
    return c;
}

static void chunk_free(chunk *c)
{
    while (c) {
        chunk *n = c->next;
        free(c->l);
        mdb_buf_free(&c->raw);
        mdb_buf_free(&c->strs);
        mdb_buf_free(&c->vals);
        free(c);
        c = n;
    }
}

static dline *chunk_line(chunk *c)
{
    if (mdb_array_grow(&c->l, &c->cap, c->n, sizeof *c->l, 256))
        return NULL;
    dline *l = &c->l[c->n++];
    memset(l, 0, sizeof *l);
    return l;
}

static void keep_str(mdb_buf *b, const char *s, size_t n, size_t *off, size_t *len)
{
    *off = b->len;
    *len = n;
    mdb_buf_append(b, s, n);
    mdb_buf_putc(b, 0);
}

/* Decode one line into dl (kind DL_BAD with why on any problem). */
static void decode_line(const decoder *d, worker *ws, chunk *c, dline *dl, const char *line,
                        size_t len, bool nl)
{
    const char *why = NULL;
    wal_line l;
    int prc;
    if (!nl || (len > 0 && all_nul(line, len))) {
        dl->kind = DL_TEAR;
        return;
    }
    prc = wal_parse_line(line, len, &l, &ws->scratch, &why);
    if (prc == 0 && strcmp(l.cmd, "ENC") == 0) {
        if (!d->key) {
            why = "encrypted line in an unencrypted file";
            prc = -EINVAL;
        } else if (l.value_len < 2 || l.value[0] != '"' || l.value[l.value_len - 1] != '"') {
            why = "ENC line without a string value";
            prc = -EINVAL;
        } else {
            mdb_buf_reset(&ws->pt);
            prc = wal_open_value(d->key, l.value + 1, l.value_len - 2, &ws->pt);
            if (prc == -EBADMSG)
                why = "decryption failed (tampered or damaged line)";
            else if (prc == -ENOMEM)
                why = "out of memory";
            else if (prc)
                why = "invalid ENC value";
            if (prc == 0)
                prc = wal_parse_line(ws->pt.data, ws->pt.len, &l, &ws->scratch, &why);
            if (prc == 0 && strcmp(l.cmd, "ENC") == 0) {
                why = "nested ENC line";
                prc = -EINVAL;
            }
        }
    } else if (prc == 0 && d->key) {
        why = "plaintext line in an encrypted file";
        prc = -EINVAL;
    }
    int op = prc == 0 ? mdb_rec_op_parse(l.cmd) : -EINVAL;
    if (prc == 0 && op > 0) {
        pend *p = &dl->rec;
        p->op = (mdb_rec_op)op;
        p->ts = l.ts;
        bool keyed = op == MDB_REC_INSERT || op == MDB_REC_DELETE;
        if (l.coll_len == 0) {
            why = "empty collection name";
            prc = -EINVAL;
        } else if (keyed && !l.key) {
            why = "record without a key";
            prc = -EINVAL;
        } else {
            keep_str(&c->strs, l.coll, l.coll_len, &p->coll_off, &p->coll_len);
            if (keyed) {
                p->has_key = true;
                keep_str(&c->strs, l.key, l.key_len, &p->key_off, &p->key_len);
            }
            if (op == MDB_REC_INSERT || op == MDB_REC_SCHEMA || op == MDB_REC_META) {
                p->has_val = true;
                p->val_off = c->vals.len;
                prc = mdb_encode_json_text(l.value, l.value_len, &c->vals, &why);
            }
            dl->kind = DL_REC;
        }
    } else if (prc == 0 && !d->snap &&
               (strcmp(l.cmd, "TX_BEGIN") == 0 || strcmp(l.cmd, "TX_COMMIT") == 0)) {
        bool begin = l.cmd[3] == 'B';
        dl->kind = begin ? DL_TX_BEGIN : DL_TX_COMMIT;
        dl->rec.ts = l.ts;
        if (!l.key || l.key_len >= sizeof(((batch *)0)->txid)) {
            why = "transaction line without a valid id";
            prc = -EINVAL;
        } else if (begin && !parse_count(l.value, l.value_len, &dl->count)) {
            why = "TX_BEGIN without a record count";
            prc = -EINVAL;
        } else {
            keep_str(&c->strs, l.key, l.key_len, &dl->rec.key_off, &dl->rec.key_len);
        }
    } else if (prc == 0 && d->snap && strcmp(l.cmd, "END") == 0) {
        dl->kind = DL_END;
        if (!parse_count(l.value, l.value_len, &dl->count)) {
            why = "END line without a record count";
            prc = -EINVAL;
        }
    } else if (prc == 0 && (strcmp(l.cmd, "TTL_EXPIRY") == 0 || strcmp(l.cmd, "INDEX") == 0)) {
        dl->kind = DL_IGNORE; /* legacy upstream commands: nothing to apply */
    } else if (prc == 0) {
        why = "unknown command";
        prc = -EINVAL;
    }
    if (prc == 0 && (c->strs.oom || c->vals.oom)) {
        why = "out of memory";
        prc = -ENOMEM;
    }
    if (prc) {
        dl->kind = DL_BAD;
        dl->err = prc == -ENOMEM ? -ENOMEM : -EINVAL;
        dl->why = why ? why : "invalid line";
    }
}

/* Read up to a chunk of raw lines (caller holds rd_mu) into c->raw. True at
 * the end of the file or on an error (c->rd_err). */
static bool read_raw(decoder *d, chunk *c)
{
    while (c->n < CHUNK_LINES && c->raw.len < CHUNK_BYTES) {
        const char *line;
        size_t len;
        bool nl;
        uint64_t off;
        int n = wal_reader_next(d->rd, &line, &len, &nl, &off);
        if (n <= 0) {
            c->rd_err = n;
            return true;
        }
        uint64_t end_off = off + len + (nl ? 1 : 0);
        bool skip = off < d->skip_to;
        dline *dl =
            skip && c->n && c->l[c->n - 1].kind == DL_SKIP ? &c->l[c->n - 1] : chunk_line(c);
        if (!dl) {
            c->rd_err = -ENOMEM;
            return true;
        }
        dl->lineno = d->rd->lineno;
        dl->end_off = end_off;
        if (skip) {
            dl->kind = DL_SKIP;
            continue;
        }
        dl->raw_off = c->raw.len;
        dl->len = len;
        dl->nl = nl;
        mdb_buf_append(&c->raw, line, len);
        if (c->raw.oom) {
            c->rd_err = -ENOMEM;
            return true;
        }
    }
    return false;
}

static void queue_ready(decoder *d, chunk *c)
{
    pthread_mutex_lock(&d->mu);
    chunk **pp = &d->ready;
    while (*pp && (*pp)->seq < c->seq)
        pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void *worker_main(void *arg)
{
    worker *ws = arg;
    decoder *d = ws->d;
    int err = 0;
    for (;;) {
        /* Do not run too far ahead of the replaying thread. */
        pthread_mutex_lock(&d->mu);
        while (!d->stop && d->next_seq >= d->want + d->ahead)
            pthread_cond_wait(&d->cv, &d->mu);
        bool stop = d->stop;
        pthread_mutex_unlock(&d->mu);
        if (stop)
            break;
        chunk *c = chunk_get(d);
        if (!c) {
            err = -ENOMEM;
            break;
        }
        pthread_mutex_lock(&d->rd_mu);
        if (d->rd_end) {
            pthread_mutex_unlock(&d->rd_mu);
            pthread_mutex_lock(&d->mu);
            c->next = d->free_list;
            d->free_list = c;
            pthread_mutex_unlock(&d->mu);
            break;
        }
        pthread_mutex_lock(&d->mu);
        c->seq = d->next_seq++;
        pthread_mutex_unlock(&d->mu);
        c->eof = d->rd_end = read_raw(d, c);
        pthread_mutex_unlock(&d->rd_mu);
        for (size_t i = 0; i < c->n; i++) {
            dline *dl = &c->l[i];
            if (dl->kind == DL_SKIP)
                continue;
            decode_line(d, ws, c, dl, c->raw.data + dl->raw_off, dl->len, dl->nl);
        }
        queue_ready(d, c);
    }
    pthread_mutex_lock(&d->mu);
    if (err)
        d->err = err;
    d->running--;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* The next chunk in order, or NULL when the workers ended without it. */
static chunk *pop_chunk(decoder *d)
{
    pthread_mutex_lock(&d->mu);
    while (!(d->ready && d->ready->seq == d->want) && d->running > 0)
        pthread_cond_wait(&d->cv, &d->mu);
    chunk *c = d->ready && d->ready->seq == d->want ? d->ready : NULL;
    if (c) {
        d->ready = c->next;
        c->next = NULL;
        d->want++;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return c;
}

static void recycle_chunk(decoder *d, chunk *c)
{
    pthread_mutex_lock(&d->mu);
    c->next = d->free_list;
    d->free_list = c;
    pthread_mutex_unlock(&d->mu);
}

/* Copy a decoded record into the batch. */
static int batch_take(batch *b, const chunk *c, const pend *src)
{
    if (mdb_array_grow(&b->p, &b->cap, b->n, sizeof *b->p, 64))
        return -ENOMEM;
    pend *p = &b->p[b->n];
    *p = *src;
    p->coll_off = b->strs.len;
    mdb_buf_append(&b->strs, c->strs.data + src->coll_off, src->coll_len + 1);
    if (src->has_key) {
        p->key_off = b->strs.len;
        mdb_buf_append(&b->strs, c->strs.data + src->key_off, src->key_len + 1);
    }
    if (src->has_val) {
        p->val_off = b->vals.len;
        mdb_val v = mdb_val_at(&c->vals, src->val_off);
        mdb_buf_append(&b->vals, v.p, mdb_val_size(v));
    }
    if (b->strs.oom || b->vals.oom)
        return -ENOMEM;
    b->n++;
    return 0;
}

/* ---- replaying a file: setup, pump, finish ------------------------------------------ */
/* One replay of the rest of a file: the decoder, its workers and the batch
 * state machine. */
typedef struct replay_run {
    wal_replay *rp;
    const char *path;
    bool snap;
    decoder d;
    worker ws[MAX_WORKERS];
    int nworkers;
    batch b;
    bool ended;          /* snapshot END seen */
    bool finished;       /* no more chunks wanted */
    uint64_t tear_line;  /* first line of a torn tail */
    uint64_t snap_count; /* records applied (END checks it) */
} replay_run;

/* The file key, the decoder and its workers. 0 or -errno with rp->why;
 * on failure nothing is left to clean up. */
static int replay_setup(replay_run *run, const wal_header *h, wal_reader *rd, uint64_t skip_to)
{
    wal_replay *rp = run->rp;
    const unsigned char *key = NULL;
    if (h->encrypted) {
        int krc = wal_keyring_get(rp->keys, h, &key);
        if (krc == -EACCES) {
            snprintf(rp->why, sizeof rp->why, "encryption key does not match this database (%s)",
                     run->path);
            return -EACCES;
        }
        if (krc) {
            snprintf(rp->why, sizeof rp->why, "%s: key derivation failed (out of memory)",
                     run->path);
            return krc;
        }
    }
    decoder *d = &run->d;
    d->rd = rd;
    d->key = key;
    d->snap = h->snapshot;
    d->skip_to = skip_to;
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->rd_mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    /* One worker per CPU this process may run on (a pinned server gets one). */
    cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                            : sysconf(_SC_NPROCESSORS_ONLN);
    int nworkers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
    d->ahead = (uint64_t)nworkers * 2;
    /* Where the header ends, read before the workers own the reader (they
     * move it under rd_mu as soon as they start). */
    uint64_t header_end = rd->base + rd->pos;
    int rc = 0;
    for (int i = 0; i < nworkers; i++) {
        worker *w = &run->ws[i];
        w->d = d;
        mdb_buf_init(&w->pt);
        mdb_buf_init(&w->scratch);
        pthread_mutex_lock(&d->mu);
        d->running++;
        pthread_mutex_unlock(&d->mu);
        rc = pthread_create(&w->thr, NULL, worker_main, w);
        if (rc) {
            pthread_mutex_lock(&d->mu);
            d->running--;
            pthread_mutex_unlock(&d->mu);
            nworkers = i;
            break;
        }
    }
    run->nworkers = nworkers;
    if (nworkers == 0) {
        snprintf(rp->why, sizeof rp->why, "cannot start the replay threads: %s", strerror(rc));
        pthread_mutex_destroy(&d->mu);
        pthread_mutex_destroy(&d->rd_mu);
        pthread_cond_destroy(&d->cv);
        return -rc;
    }
    rp->good_end = header_end;
    rp->file_size = rp->good_end;
    return 0;
}

/* Feed one decoded record or framing line to the batch state machine.
 * *apply_failed tells a refused apply from a bad line. */
static int replay_dispatch(replay_run *run, const chunk *c, const dline *dl, const char **why,
                           bool *apply_failed)
{
    wal_replay *rp = run->rp;
    batch *b = &run->b;
    const bool snap = run->snap;
    const char *txid =
        dl->kind == DL_TX_BEGIN || dl->kind == DL_TX_COMMIT ? c->strs.data + dl->rec.key_off : "";
    int prc = 0;
    if (dl->kind == DL_REC) {
        if (!snap && !b->open) {
            batch_reset(b);
            b->start_line = dl->lineno;
        }
        prc = batch_take(b, c, &dl->rec);
        if (prc == 0 &&
            (snap ? b->n >= 1024 || b->strs.len + b->vals.len > (4u << 20) : !b->open)) {
            prc = batch_apply(rp, b, why);
            if (prc) {
                *apply_failed = true;
                return prc;
            }
            run->snap_count += b->n;
            if (!snap) {
                rp->batches++;
                rp->good_end = dl->end_off;
            }
            batch_reset(b);
        }
    } else if (dl->kind == DL_END) {
        prc = batch_apply(rp, b, why);
        if (prc) {
            *apply_failed = true;
            return prc;
        }
        run->snap_count += b->n;
        batch_reset(b);
        if (dl->count != run->snap_count) {
            *why = "END line record count does not match";
            prc = -EINVAL;
        } else {
            run->ended = true;
        }
    } else if (dl->kind == DL_IGNORE) {
        if (!b->open)
            rp->good_end = dl->end_off;
    } else if (dl->kind == DL_TX_BEGIN) {
        if (b->open) {
            *why = "TX_BEGIN inside an open batch";
            prc = -EINVAL;
        } else {
            batch_reset(b);
            b->open = true;
            b->start_line = dl->lineno;
            b->expect = (size_t)dl->count;
            memcpy(b->txid, txid, dl->rec.key_len + 1);
        }
    } else if (dl->kind == DL_TX_COMMIT) {
        if (!b->open || strcmp(b->txid, txid) != 0 || b->n != b->expect) {
            *why = "TX_COMMIT does not match its TX_BEGIN";
            prc = -EINVAL;
        } else {
            prc = batch_apply(rp, b, why);
            if (prc) {
                *apply_failed = true;
                return prc;
            }
            rp->batches++;
            rp->good_end = dl->end_off;
            batch_reset(b);
        }
    }
    return prc;
}

/* One decoded line: tears, point-in-time limits, then the state machine; a
 * bad line stops the replay or, with skip_corrupt (log only), drops its
 * batch. 0 or -errno with rp->why; sets run->finished at a limit. */
static int replay_line(replay_run *run, const chunk *c, const dline *dl)
{
    wal_replay *rp = run->rp;
    const bool snap = run->snap;
    rp->file_size = dl->end_off;
    if (dl->kind == DL_SKIP) {
        rp->good_end = dl->end_off;
        return 0;
    }
    const char *why = dl->why;
    uint64_t err_line = dl->lineno;
    int prc = dl->kind == DL_BAD ? dl->err : 0;
    if (run->ended) {
        why = "data after the END line";
        prc = -EINVAL;
    } else if (dl->kind == DL_TEAR && !snap) {
        /* A torn tail (possibly several NUL-filled lines) is dropped; it
         * must be the last thing in the file, checked by replay_finish. */
        if (!run->tear_line)
            run->tear_line = dl->lineno;
        return 0;
    } else if (dl->kind == DL_TEAR) {
        why = "torn line (incomplete snapshot)";
        prc = -EINVAL;
    } else if (run->tear_line) {
        why = "damaged line followed by more records";
        prc = -EINVAL;
        err_line = run->tear_line;
        run->tear_line = 0;
    }
    if (prc == 0 && !snap && !run->b.open && (dl->kind == DL_REC || dl->kind == DL_TX_BEGIN)) {
        /* Point-in-time limits apply at batch starts. */
        if ((rp->to_time > 0 && dl->rec.ts > rp->to_time) ||
            (rp->to_seq > 0 && rp->batches >= rp->to_seq)) {
            rp->limited = true;
            run->finished = true;
            return 0;
        }
    }
    bool apply_failed = false;
    if (prc == 0)
        prc = replay_dispatch(run, c, dl, &why, &apply_failed);
    if (apply_failed) {
        snprintf(rp->why, sizeof rp->why,
                 "%s: cannot apply the batch ending at line %" PRIu64 ": %s", run->path, dl->lineno,
                 why ? why : "apply failed");
        return -EINVAL;
    }
    if (prc == -ENOMEM) {
        snprintf(rp->why, sizeof rp->why, "%s: line %" PRIu64 ": out of memory", run->path,
                 dl->lineno);
        return -ENOMEM;
    }
    if (prc) {
        if (snap || !rp->skip_corrupt) {
            snprintf(rp->why, sizeof rp->why, "%s: corrupt record at line %" PRIu64 ": %s%s",
                     run->path, err_line, why ? why : "invalid line",
                     snap ? "" : " (start with --skip-corrupt to skip it)");
            return -EINVAL;
        }
        rp_log(rp, MDB_LOG_WARN, "%s: skipping corrupt record at line %" PRIu64 ": %s%s", run->path,
               err_line, why ? why : "invalid line",
               run->b.open ? " (and the rest of its batch)" : "");
        /* The batch it belonged to cannot be trusted whole: drop it. */
        batch_reset(&run->b);
        rp->good_end = dl->end_off;
    }
    return 0;
}

/* Take decoded chunks in file order until the end, a limit or an error. */
static int replay_pump(replay_run *run)
{
    wal_replay *rp = run->rp;
    int rc = 0;
    while (!run->finished) {
        chunk *c = pop_chunk(&run->d);
        if (!c) {
            snprintf(rp->why, sizeof rp->why, "%s: out of memory", run->path);
            rc = -ENOMEM;
            break;
        }
        for (size_t i = 0; i < c->n && !run->finished && rc == 0; i++)
            rc = replay_line(run, c, &c->l[i]);
        bool last = c->eof;
        if (rc == 0 && c->rd_err) {
            snprintf(rp->why, sizeof rp->why, "cannot read %s: %s", run->path,
                     c->rd_err == -E2BIG ? "line too long" : strerror(-c->rd_err));
            rc = c->rd_err;
        }
        recycle_chunk(&run->d, c);
        if (last || rc)
            run->finished = true;
    }
    return rc;
}

/* Stop and collect the workers, check how the file ended (a snapshot needs
 * its END; a torn log tail is reported), free everything. */
static int replay_finish(replay_run *run, int rc)
{
    wal_replay *rp = run->rp;
    decoder *d = &run->d;
    /* Stop the workers (they may wait for room ahead) and collect them. */
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < run->nworkers; i++)
        pthread_join(run->ws[i].thr, NULL);
    chunk_free(d->ready);
    chunk_free(d->free_list);
    if (rc)
        goto out;
    if (run->snap && !run->ended) {
        snprintf(rp->why, sizeof rp->why, "%s: snapshot is incomplete (no END line)", run->path);
        rc = -EINVAL;
        goto out;
    }
    if (run->tear_line && !rp->limited) {
        rp_log(rp, MDB_LOG_WARN,
               "%s: dropping a torn last line %" PRIu64 " (%" PRIu64
               " bytes, a write cut off by a crash)",
               run->path, run->tear_line, rp->file_size - rp->good_end);
        rp->torn = true;
    }
    if (!run->snap && run->b.open && !rp->limited) {
        rp_log(rp, MDB_LOG_WARN,
               "%s: dropping an incomplete batch from line %" PRIu64 " (a write cut off by a "
               "crash)",
               run->path, run->b.start_line);
        rp->torn = true;
    }
    if (rp->good_end < rp->file_size && !rp->limited)
        rp->torn = true;
out:
    batch_free(&run->b);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->rd_mu);
    pthread_cond_destroy(&d->cv);
    for (int i = 0; i < run->nworkers; i++) {
        sodium_memzero(run->ws[i].pt.data, run->ws[i].pt.cap);
        mdb_buf_free(&run->ws[i].pt);
        sodium_memzero(run->ws[i].scratch.data, run->ws[i].scratch.cap);
        mdb_buf_free(&run->ws[i].scratch);
    }
    return rc;
}

int wal_replay_rest(wal_replay *rp, const char *path, const wal_header *h, wal_reader *rd,
                    uint64_t skip_to)
{
    replay_run run;
    memset(&run, 0, sizeof run);
    run.rp = rp;
    run.path = path;
    run.snap = h->snapshot;
    int rc = replay_setup(&run, h, rd, skip_to);
    if (rc == 0)
        rc = replay_finish(&run, replay_pump(&run));
    return rc;
}

int wal_replay_file(wal_replay *rp, const char *path, bool want_snapshot, int want_encrypted,
                    wal_header *h, uint64_t skip_gen, uint64_t skip_off)
{
    wal_reader rd;
    int fd = -1;
    int rc = wal_file_open(rp, path, h, &fd, &rd);
    if (rc < 0)
        return rc;
    if (rc == 0 && h->snapshot != want_snapshot) {
        snprintf(rp->why, sizeof rp->why, "%s is a %s, not a %s", path,
                 h->snapshot ? "snapshot" : "log", want_snapshot ? "snapshot" : "log");
        rc = -EINVAL;
    } else if (rc == 0 && want_encrypted >= 0 && h->encrypted != (want_encrypted != 0)) {
        snprintf(rp->why, sizeof rp->why,
                 "%s was written %s encryption but the server runs %s it: start it with the "
                 "setting the file was written with (--disable-encryption)",
                 path, h->encrypted ? "with" : "without", want_encrypted ? "with" : "without");
        rc = -EPROTO;
    } else if (rc == 0) {
        rc = wal_replay_rest(rp, path, h, &rd, skip_gen && skip_gen == h->gen ? skip_off : 0);
    }
    wal_reader_free(&rd);
    close(fd);
    return rc;
}
