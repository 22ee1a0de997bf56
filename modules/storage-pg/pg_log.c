/*
 * storage-pg: a log held by PostgreSQL and shared by every node.
 *
 * Tables (prefix p, created on first start, see README.md):
 *   p_meta(name, value)         "schema-version", "codec-header"
 *   p_order(id = 1, seq)        the global order: one row, bumped by each batch
 *   p_log(seq, node, at, records, data)        one row per batch
 *   p_checkpoint(id, seq, node, at, chunks, docs)
 *   p_checkpoint_chunk(checkpoint, n, data)    full state, ~1 MiB per chunk
 *
 * A commit (core/store.c, under the commit lock):
 *   order_begin: BEGIN; UPDATE p_order SET seq = seq + 1 RETURNING seq  -> N
 *                (the row lock makes every other node's commit wait here;
 *                with ordering = advisory-lock, a transaction-scoped
 *                advisory lock and N = the newest logged batch + 1),
 *                then apply the rows (applied, N) other nodes committed;
 *   the core resolves the batch against that state;
 *   append:      INSERT row N (+ pg_notify); COMMIT, one pipelined round trip
 *                -> acknowledged
 *   or order_abort: ROLLBACK (the counter rolls back too: no holes).
 * Rows therefore become visible in seq order, and a reader that sees row N
 * sees every row before it: a missing row is a real gap (pruned by a
 * checkpoint while the node was behind) and stops the node's writes.
 *
 * Threads: the commit path (one at a time, under the core's commit lock),
 * the tail thread (LISTEN + polling, its own connection; fetches outside
 * the commit lock, applies under it through mdb_store_locked), and
 * checkpoints (snap_mu, a pool connection). `applied` is written only
 * under the commit lock.
 */
#include "pg_log.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_codec.h"
#include "wal_codec.h"
#include "wal_file.h"

#define PGL_SCHEMA_VERSION 1
#define PGL_FETCH_ROWS 256
#define PGL_CHUNK_BYTES ((size_t)1 << 20)
#define PGL_BACKOFF_MIN_MS 100
#define PGL_BACKOFF_MAX_MS 2000

typedef struct pool_slot {
    PGconn *c;
    bool busy;
} pool_slot;

/* Rows fetched from p_log: records of all rows in one batch, and where
 * each row's records start. */
typedef struct rows {
    pg_batch b;
    int64_t *seq;
    size_t *first, *count;
    size_t n, cap;
} rows;

struct pgl {
    mdb_ctx *ctx;
    char *conninfo; /* sodium_malloc'd, wiped on free */
    char *password; /* sodium_malloc'd, wiped on free */
    char prefix[48];
    bool encrypt, advisory;
    int poll_ms, keep, connect_tmo, grace_s;
    char node[96];
    wal_keyring keys;
    const unsigned char *key; /* NULL = plaintext */
    mdb_store *store;

    /* SQL texts (the prefix is an identifier, checked at pgl_new). */
    char q_next[512], q_fetch[192], q_insert[320], q_listen[96], q_top[320];

    /* Pool, under pool_mu. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    pool_slot *pool;
    int npool;
    uint64_t retry_at;  /* no new connection attempt before (mono ms) */
    int backoff;        /* ms */
    bool unreachable;   /* the last attempt failed */
    char down_why[256]; /* why, for 503 answers */

    /* Commit state: under the core's commit lock. */
    pool_slot *cur;
    int64_t cur_seq;
    mdb_buf out, line, tmp;
    rows commit_rows;
    _Atomic int64_t applied; /* last batch applied to the store */

    /* A gap nothing can fill: writes stop (under pool_mu). */
    bool gap;
    char gap_why[256];

    /* Tail thread. */
    pthread_t tail;
    bool tail_running;
    _Atomic bool stopping;
    int wake_fd;
    rows tail_rows;

    pthread_mutex_t snap_mu;
    _Atomic uint64_t records, bytes;
    char why[1024]; /* open()'s failure text */
};

static _Thread_local char tl_why[512];

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The first line of a libpq message m (they end in '\n' and may go on
 * with DETAIL/HINT lines), bounded to dst. */
static void first_line(char *dst, size_t n, const char *m)
{
    snprintf(dst, n, "%s", m && *m ? m : "unknown error");
    char *nl = strchr(dst, '\n');
    if (nl)
        *nl = 0;
}

/* c's last error, first line, in tl_why. */
static const char *pq_err(PGconn *c)
{
    first_line(tl_why, sizeof tl_why, c ? PQerrorMessage(c) : "out of memory");
    return tl_why;
}

static char *secret_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sodium_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- rows ------------------------------------------------------------------------ */
static void rows_init(rows *r)
{
    memset(r, 0, sizeof *r);
    pg_batch_init(&r->b);
}

static void rows_free(rows *r)
{
    pg_batch_free(&r->b);
    free(r->seq);
    free(r->first);
    free(r->count);
    memset(r, 0, sizeof *r);
}

static void rows_reset(rows *r)
{
    pg_batch_reset(&r->b);
    r->n = 0;
}

static int rows_add(rows *r, int64_t seq, const unsigned char *key, const char *data, size_t len,
                    const char **why)
{
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        int64_t *ns = realloc(r->seq, nc * sizeof *ns);
        if (ns)
            r->seq = ns;
        size_t *nf = realloc(r->first, nc * sizeof *nf);
        if (nf)
            r->first = nf;
        size_t *nn = realloc(r->count, nc * sizeof *nn);
        if (nn)
            r->count = nn;
        if (!ns || !nf || !nn) {
            *why = "out of memory";
            return -ENOMEM;
        }
        r->cap = nc;
    }
    size_t before = r->b.n;
    int rc = pg_batch_decode(&r->b, key, data, len, why);
    if (rc)
        return rc;
    r->seq[r->n] = seq;
    r->first[r->n] = before;
    r->count[r->n] = r->b.n - before;
    r->n++;
    return 0;
}

static void set_gap(pgl *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int64_t get_i64(const PGresult *res, int row, int col)
{
    uint64_t v = 0;
    if (PQgetlength(res, row, col) == 8)
        memcpy(&v, PQgetvalue(res, row, col), 8);
    return (int64_t)be64toh(v);
}

/* Fetch and decode the rows after..before (exclusive; before <= 0: no
 * bound), at most PGL_FETCH_ROWS. 0 with r filled (records pointed), or
 * -EROFS (connection) / -EIO with *why. */
static int fetch_rows(pgl *p, PGconn *c, int64_t after, int64_t before, rows *r, const char **why)
{
    rows_reset(r);
    char a[24], b[24], l[24];
    snprintf(a, sizeof a, "%" PRId64, after);
    snprintf(b, sizeof b, "%" PRId64, before > 0 ? before : INT64_MAX);
    snprintf(l, sizeof l, "%d", PGL_FETCH_ROWS);
    const char *vals[3] = {a, b, l};
    PGresult *res = PQexecParams(c, p->q_fetch, 3, NULL, vals, NULL, NULL, 1);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *why = pq_err(c);
        rc = PQstatus(c) == CONNECTION_OK ? -EIO : -EROFS;
    }
    for (int i = 0; !rc && i < PQntuples(res); i++) {
        const char *rwhy = NULL;
        int64_t seq = get_i64(res, i, 0);
        rc = rows_add(r, seq, p->key, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), &rwhy);
        if (rc) {
            /* A batch this node cannot read is a gap it cannot fill. */
            set_gap(p, "batch %" PRId64 " of the shared log %slog cannot be read: %s", seq,
                    p->prefix, rwhy);
            *why = p->gap_why;
            rc = -EIO;
        }
    }
    PQclear(res);
    if (!rc)
        pg_batch_records(&r->b);
    return rc;
}

static void set_gap(pgl *p, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&p->pool_mu);
    bool first = !p->gap;
    if (first) {
        va_start(ap, fmt);
        vsnprintf(p->gap_why, sizeof p->gap_why, fmt, ap);
        va_end(ap);
        p->gap = true;
    }
    pthread_mutex_unlock(&p->pool_mu);
    if (first)
        mdb_log(p->ctx, MDB_LOG_ERROR, "%s; this node refuses writes (503) until restarted",
                p->gap_why);
}

/* Apply fetched rows in order, skipping those already applied. Under the
 * commit lock (or at open, before anything runs). live: fire the commit
 * hooks (mdb_store_apply_remote) rather than replay quietly. 0, or -EIO
 * with the node stopped on a gap or a batch that does not apply. */
static int apply_rows(pgl *p, rows *r, bool live, const char **why)
{
    for (size_t i = 0; i < r->n; i++) {
        int64_t have = atomic_load(&p->applied);
        if (r->seq[i] <= have)
            continue;
        if (r->seq[i] != have + 1) {
            set_gap(p,
                    "batch %" PRId64
                    " of the shared log %slog is missing (the next one found is %" PRId64
                    "): it was pruned by a checkpoint while this node was behind",
                    have + 1, p->prefix, r->seq[i]);
            *why = p->gap_why;
            return -EIO;
        }
        const char *awhy = NULL;
        const mdb_record *recs = r->b.recs + r->first[i];
        int rc = live ? mdb_store_apply_remote(p->store, recs, r->count[i], &awhy)
                      : mdb_store_apply(p->store, recs, r->count[i], &awhy);
        if (rc) {
            set_gap(p, "batch %" PRId64 " of the shared log does not apply: %s", r->seq[i],
                    awhy ? awhy : "unknown error");
            *why = p->gap_why;
            return -EIO;
        }
        atomic_store(&p->applied, r->seq[i]);
    }
    return 0;
}

/* ---- connections ------------------------------------------------------------------- */
static void notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* A new connection with its statements prepared, or NULL with *why. */
static PGconn *connect_pg(pgl *p, const char **why)
{
    char tmo[16];
    snprintf(tmo, sizeof tmo, "%d", p->connect_tmo);
    /* Later entries win: our defaults first, the operator's conninfo last. */
    const char *kw[] = {"connect_timeout",     "application_name", "keepalives", "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "dbname",     NULL};
    const char *vals[] = {tmo, "moltendb", "1", "10", "5", "3", p->conninfo, NULL};
    PGconn *c = PQconnectdbParams(kw, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        *why = pq_err(c);
        PQfinish(c);
        return NULL;
    }
    /* NOTICEs (CREATE TABLE IF NOT EXISTS ...) would go to stderr. */
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    return c;
}

static bool exec_ok(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == want;
    PQclear(r);
    return ok;
}

/* A pool connection that is up, or NULL with *why (-EROFS territory). */
static pool_slot *pool_get(pgl *p, const char **why)
{
    pthread_mutex_lock(&p->pool_mu);
    pool_slot *s = NULL;
    for (;;) {
        for (int i = 0; i < p->npool && !s; i++)
            if (!p->pool[i].busy && p->pool[i].c)
                s = &p->pool[i];
        for (int i = 0; i < p->npool && !s; i++)
            if (!p->pool[i].busy)
                s = &p->pool[i];
        if (s)
            break;
        pthread_cond_wait(&p->pool_cv, &p->pool_mu);
    }
    s->busy = true;
    if (s->c && PQstatus(s->c) == CONNECTION_OK) {
        pthread_mutex_unlock(&p->pool_mu);
        return s;
    }
    if (p->unreachable && mono_ms() < p->retry_at) {
        snprintf(tl_why, sizeof tl_why, "PostgreSQL is unreachable (%s); retrying", p->down_why);
        *why = tl_why;
        s->busy = false;
        pthread_cond_signal(&p->pool_cv);
        pthread_mutex_unlock(&p->pool_mu);
        return NULL;
    }
    pthread_mutex_unlock(&p->pool_mu);
    if (s->c)
        PQfinish(s->c);
    const char *cwhy = NULL;
    s->c = connect_pg(p, &cwhy);
    pthread_mutex_lock(&p->pool_mu);
    if (!s->c) {
        bool was = p->unreachable;
        p->unreachable = true;
        snprintf(p->down_why, sizeof p->down_why, "%s", cwhy);
        p->backoff = p->backoff ? p->backoff * 2 : PGL_BACKOFF_MIN_MS;
        if (p->backoff > PGL_BACKOFF_MAX_MS)
            p->backoff = PGL_BACKOFF_MAX_MS;
        p->retry_at = mono_ms() + (uint64_t)p->backoff;
        s->busy = false;
        pthread_cond_signal(&p->pool_cv);
        snprintf(tl_why, sizeof tl_why, "PostgreSQL is unreachable (%s)", p->down_why);
        pthread_mutex_unlock(&p->pool_mu);
        if (!was)
            mdb_log(p->ctx, MDB_LOG_ERROR, "%s: writes answer 503 until it is back", tl_why);
        *why = tl_why;
        return NULL;
    }
    bool was = p->unreachable;
    p->unreachable = false;
    p->backoff = 0;
    pthread_mutex_unlock(&p->pool_mu);
    if (was)
        mdb_log(p->ctx, MDB_LOG_INFO, "PostgreSQL is reachable again: writes resume");
    return s;
}

static void pool_put(pgl *p, pool_slot *s)
{
    pthread_mutex_lock(&p->pool_mu);
    if (s->c && PQstatus(s->c) != CONNECTION_OK) {
        /* Keep the reason for the 503s until a reconnect succeeds. */
        if (!p->unreachable) {
            p->unreachable = true;
            snprintf(p->down_why, sizeof p->down_why, "%.255s", pq_err(s->c));
            p->backoff = 0;
            p->retry_at = 0; /* the next write tries at once */
        }
    }
    s->busy = false;
    pthread_cond_signal(&p->pool_cv);
    pthread_mutex_unlock(&p->pool_mu);
}

/* A statement failed on c: -EROFS when the connection is gone (503), -EIO
 * otherwise; *why gets the reason. */
static int stmt_fail_msg(PGconn *c, const char *what, const char *m, const char **why)
{
    int rc = PQstatus(c) == CONNECTION_OK ? -EIO : -EROFS;
    char msg[256];
    first_line(msg, sizeof msg, m); /* m may be tl_why, written below */
    snprintf(tl_why, sizeof tl_why, "%s%s: %s",
             rc == -EROFS ? "PostgreSQL connection lost during " : "PostgreSQL refused ", what,
             msg);
    *why = tl_why;
    return rc;
}

static int stmt_fail(PGconn *c, const char *what, const char **why)
{
    return stmt_fail_msg(c, what, pq_err(c), why);
}

/* ---- construction ------------------------------------------------------------------- */
static bool prefix_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 40 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

pgl *pgl_new(mdb_ctx *ctx, const pgl_opts *o, const char **why)
{
    const char *prefix = o->prefix ? o->prefix : "moltendb_";
    if (!prefix_ok(prefix)) {
        *why = "table-prefix must be 1-40 characters of a-z, 0-9 and _, not starting with a digit";
        return NULL;
    }
    if (!o->conninfo || !*o->conninfo) {
        *why = "conninfo is not set ([storage-pg] conninfo or MOLTENDB_PG_CONNINFO)";
        return NULL;
    }
    *why = "out of memory";
    if (sodium_init() < 0)
        return NULL;
    pgl *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ctx = ctx;
    p->wake_fd = -1;
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix);
    p->encrypt = o->encrypt;
    p->poll_ms = o->poll_ms > 0 ? o->poll_ms : 250;
    p->keep = o->keep > 0 ? o->keep : 2;
    p->grace_s = o->grace_s >= 0 ? o->grace_s : 60;
    p->connect_tmo = o->connect_tmo > 0 ? o->connect_tmo : 5;
    p->npool = o->pool_size > 0 ? o->pool_size : 2;
    pthread_mutex_init(&p->pool_mu, NULL);
    pthread_cond_init(&p->pool_cv, NULL);
    pthread_mutex_init(&p->snap_mu, NULL);
    mdb_buf_init(&p->out);
    mdb_buf_init(&p->line);
    mdb_buf_init(&p->tmp);
    rows_init(&p->commit_rows);
    rows_init(&p->tail_rows);
    char host[64] = "node";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(p->node, sizeof p->node, "%s:%ld", host, (long)getpid());
    p->advisory = o->advisory;
    /* The newest batch: the counter row, or under advisory locks the
     * newest row or checkpoint (the log may be pruned up to it). */
    snprintf(p->q_top, sizeof p->q_top,
             "SELECT coalesce(greatest((SELECT seq FROM %sorder WHERE id = 1), (SELECT max(seq) "
             "FROM %slog), (SELECT max(seq) FROM %scheckpoint)), 0)",
             p->prefix, p->prefix, p->prefix);
    if (p->advisory)
        /* Each statement of a READ COMMITTED transaction takes its own
         * snapshot: the one after the lock sees the previous holder's row. */
        snprintf(p->q_next, sizeof p->q_next,
                 "BEGIN; SELECT pg_advisory_xact_lock(hashtext('moltendb-order:%s')); %s + 1",
                 p->prefix, p->q_top);
    else
        snprintf(p->q_next, sizeof p->q_next,
                 "BEGIN; UPDATE %sorder SET seq = seq + 1 WHERE id = 1 RETURNING seq", p->prefix);
    snprintf(p->q_fetch, sizeof p->q_fetch,
             "SELECT seq, data FROM %slog WHERE seq > $1::int8 AND seq < $2::int8 ORDER BY seq "
             "LIMIT $3::int4",
             p->prefix);
    snprintf(p->q_insert, sizeof p->q_insert,
             "WITH r AS (INSERT INTO %slog (seq, node, records, data) VALUES ($1::int8, $2, "
             "$3::int4, $4::bytea) RETURNING seq) SELECT pg_notify('%slog', seq::text) FROM r",
             p->prefix, p->prefix);
    snprintf(p->q_listen, sizeof p->q_listen, "LISTEN %slog", p->prefix);
    const char *pw = o->password && *o->password ? o->password : WAL_DEFAULT_PASSWORD;
    p->password = secret_dup(pw);
    p->conninfo = secret_dup(o->conninfo);
    p->keys.password = p->password;
    p->pool = calloc((size_t)p->npool, sizeof *p->pool);
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!p->password || !p->conninfo || !p->pool || p->wake_fd < 0) {
        pgl_free(p);
        return NULL;
    }
    return p;
}

/* ---- open: schema, codec header, checkpoint and log ---------------------------------- */
static int open_fail(pgl *p, const char **why_out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int open_fail(pgl *p, const char **why_out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    *why_out = p->why;
    return -EIO;
}

/* One text value of a one-row query, or NULL (caller frees). */
static char *query_text(PGconn *c, const char *sql, int n, const char *const *vals, bool *failed)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    char *out = NULL;
    *failed = PQresultStatus(r) != PGRES_TUPLES_OK;
    if (!*failed && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return out;
}

/* A codec header for a new database: a random salt and a key-check value
 * made with the derived key (the same header storage-wal writes). */
static int new_header(pgl *p, wal_header *h, mdb_buf *text)
{
    memset(h, 0, sizeof *h);
    h->gen = wal_random_gen();
    h->encrypted = p->encrypt;
    if (p->encrypt) {
        randombytes_buf(h->salt, WAL_SALT_BYTES);
        h->opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        h->memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        unsigned char key[WAL_KEY_BYTES];
        if (wal_derive_key(p->password, h->salt, h->opslimit, h->memlimit, key) != 0)
            return -ENOMEM;
        mdb_buf c;
        mdb_buf_init(&c);
        wal_key_check_make(key, &c);
        bool ok = !c.oom && c.len < sizeof h->check;
        if (ok) {
            memcpy(h->check, c.data, c.len);
            p->key = wal_keyring_put(&p->keys, h, key);
        }
        mdb_buf_free(&c);
        sodium_memzero(key, sizeof key);
        if (!ok)
            return -ENOMEM;
    }
    wal_header_render(h, text);
    if (text->len && text->data[text->len - 1] == '\n')
        text->len--;
    return text->oom ? -ENOMEM : 0;
}

/* Create the tables (once, whoever comes first), check the schema version
 * and get the codec header (making it on first start). */
static int ensure_schema(pgl *p, PGconn *c, const char **why_out)
{
    const char *P = p->prefix;
    char sql[2048];
    snprintf(sql, sizeof sql,
             "BEGIN;"
             "SELECT pg_advisory_xact_lock(hashtext('moltendb:%s'));"
             "CREATE TABLE IF NOT EXISTS %smeta (name text PRIMARY KEY, value text NOT NULL);"
             "CREATE TABLE IF NOT EXISTS %sorder (id int PRIMARY KEY CHECK (id = 1), "
             "seq bigint NOT NULL);"
             "INSERT INTO %sorder VALUES (1, 0) ON CONFLICT DO NOTHING;"
             "CREATE TABLE IF NOT EXISTS %slog (seq bigint PRIMARY KEY, node text NOT NULL, "
             "at timestamptz NOT NULL DEFAULT now(), records int NOT NULL, data bytea NOT NULL);"
             "CREATE TABLE IF NOT EXISTS %scheckpoint (id bigserial PRIMARY KEY, seq bigint NOT "
             "NULL, node text NOT NULL, at timestamptz NOT NULL DEFAULT now(), chunks int NOT "
             "NULL DEFAULT 0, docs bigint NOT NULL DEFAULT 0);"
             "CREATE TABLE IF NOT EXISTS %scheckpoint_chunk (checkpoint bigint NOT NULL "
             "REFERENCES %scheckpoint(id) ON DELETE CASCADE, n int NOT NULL, data bytea NOT "
             "NULL, PRIMARY KEY (checkpoint, n));"
             "INSERT INTO %smeta VALUES ('schema-version', '%d') ON CONFLICT DO NOTHING;",
             P, P, P, P, P, P, P, P, P, PGL_SCHEMA_VERSION);
    if (!exec_ok(c, sql, PGRES_COMMAND_OK)) {
        int rc =
            open_fail(p, why_out, "cannot create the tables %s* in PostgreSQL: %s", P, pq_err(c));
        exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
        return rc;
    }
    bool failed;
    char q[160];
    snprintf(q, sizeof q, "SELECT value FROM %smeta WHERE name = $1", P);
    const char *ver_name[] = {"schema-version"};
    char *ver = query_text(c, q, 1, ver_name, &failed);
    long v = ver ? strtol(ver, NULL, 10) : 0;
    free(ver);
    if (failed || v > PGL_SCHEMA_VERSION || v < 1) {
        exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
        if (failed)
            return open_fail(p, why_out, "cannot read %smeta: %s", P, pq_err(c));
        return open_fail(p, why_out,
                         "the tables %s* have schema version %ld, but this storage-pg knows "
                         "version %d: upgrade moltendb on this node",
                         P, v, PGL_SCHEMA_VERSION);
    }
    /* Nodes that order batches differently would not exclude each other. */
    const char *ord = p->advisory ? "advisory-lock" : "counter-row";
    char ins_ord[160];
    snprintf(ins_ord, sizeof ins_ord,
             "INSERT INTO %smeta VALUES ('ordering', $1) ON CONFLICT DO NOTHING", P);
    const char *ord_val[] = {ord}, *ord_name[] = {"ordering"};
    PGresult *ores = PQexecParams(c, ins_ord, 1, NULL, ord_val, NULL, NULL, 0);
    failed = PQresultStatus(ores) != PGRES_COMMAND_OK;
    PQclear(ores);
    char *have = failed ? NULL : query_text(c, q, 1, ord_name, &failed);
    if (failed || !have || strcmp(have, ord) != 0) {
        exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
        int orc = failed ? open_fail(p, why_out, "cannot read %smeta: %s", P, pq_err(c))
                         : open_fail(p, why_out,
                                     "the shared database %s* orders batches with %s, but this "
                                     "node has ordering = %s (it must be the same on every node)",
                                     P, have ? have : "(nothing)", ord);
        free(have);
        return orc;
    }
    free(have);
    const char *hdr_name[] = {"codec-header"};
    char *hdr = query_text(c, q, 1, hdr_name, &failed);
    int rc = 0;
    wal_header h;
    if (!failed && !hdr) {
        mdb_buf t;
        mdb_buf_init(&t);
        rc = new_header(p, &h, &t);
        if (!rc) {
            char ins[160];
            snprintf(ins, sizeof ins, "INSERT INTO %smeta VALUES ('codec-header', $1)", P);
            mdb_buf_putc(&t, 0); /* may move t.data: before taking the pointer */
            const char *vals[] = {t.data};
            PGresult *r = PQexecParams(c, ins, 1, NULL, vals, NULL, NULL, 0);
            failed = PQresultStatus(r) != PGRES_COMMAND_OK;
            PQclear(r);
        }
        mdb_buf_free(&t);
        if (rc) {
            exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
            return open_fail(p, why_out, "key derivation failed (out of memory)");
        }
    } else if (!failed) {
        const char *hwhy = "invalid";
        if (wal_header_parse(hdr, strlen(hdr), &h, &hwhy) != 0) {
            free(hdr);
            exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
            return open_fail(p, why_out, "%smeta codec-header: %s", P, hwhy);
        }
    }
    free(hdr);
    if (failed || !exec_ok(c, "COMMIT", PGRES_COMMAND_OK)) {
        int frc = open_fail(p, why_out, "cannot set up %smeta: %s", P, pq_err(c));
        exec_ok(c, "ROLLBACK", PGRES_COMMAND_OK);
        return frc;
    }
    if (h.encrypted != p->encrypt)
        return open_fail(p, why_out,
                         "the shared database %s* was created with encryption %s, but this node "
                         "has it %s (disable-encryption must be the same on every node)",
                         P, h.encrypted ? "on" : "off", p->encrypt ? "on" : "off");
    if (h.encrypted && !p->key && wal_keyring_get(&p->keys, &h, &p->key) != 0)
        return open_fail(p, why_out,
                         "encryption key does not match the shared database %s* (every node "
                         "needs the same encryption-key)",
                         P);
    return 0;
}

/* Apply one checkpoint chunk quietly (open). */
static int apply_chunk(pgl *p, pg_batch *b, const char *data, size_t len, const char **why)
{
    pg_batch_reset(b);
    int rc = pg_batch_decode(b, p->key, data, len, why);
    if (rc)
        return rc;
    pg_batch_records(b);
    return b->n ? mdb_store_apply(p->store, b->recs, b->n, why) : 0;
}

/* Newest checkpoint, then the log after it, in one consistent snapshot of
 * the database (REPEATABLE READ): a checkpoint and pruning by another node
 * meanwhile cannot make a gap. */
static int load(pgl *p, PGconn *c, const char **why_out, uint64_t *from_cp, uint64_t *from_log)
{
    const char *P = p->prefix;
    if (!exec_ok(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK))
        return open_fail(p, why_out, "cannot read the shared log: %s", pq_err(c));
    char q[256];
    snprintf(q, sizeof q, "SELECT id, seq, chunks FROM %scheckpoint ORDER BY id DESC LIMIT 1", P);
    PGresult *r = PQexecParams(c, q, 0, NULL, NULL, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = open_fail(p, why_out, "cannot read %scheckpoint: %s", P, pq_err(c));
    int64_t cp_id = 0, cp_seq = 0;
    long chunks = 0;
    if (!rc && PQntuples(r) == 1) {
        cp_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        cp_seq = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        chunks = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    pg_batch b;
    pg_batch_init(&b);
    snprintf(q, sizeof q, "SELECT data FROM %scheckpoint_chunk WHERE checkpoint = $1 AND n = $2",
             P);
    for (long i = 0; !rc && i < chunks; i++) {
        char idt[24], nt[24];
        snprintf(idt, sizeof idt, "%" PRId64, cp_id);
        snprintf(nt, sizeof nt, "%ld", i);
        const char *vals[] = {idt, nt};
        r = PQexecParams(c, q, 2, NULL, vals, NULL, NULL, 1);
        const char *cwhy = NULL;
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
            rc = open_fail(p, why_out, "checkpoint %" PRId64 " chunk %ld is missing: %s", cp_id, i,
                           pq_err(c));
        else if (apply_chunk(p, &b, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), &cwhy))
            rc = open_fail(p, why_out, "checkpoint %" PRId64 " chunk %ld: %s", cp_id, i,
                           cwhy ? cwhy : "invalid");
        else
            *from_cp += b.n;
        PQclear(r);
    }
    pg_batch_free(&b);
    atomic_store(&p->applied, cp_seq);
    /* The log after the checkpoint, page by page. */
    while (!rc) {
        const char *fwhy = NULL;
        int64_t at = atomic_load(&p->applied);
        rows *rs = &p->commit_rows;
        rc = fetch_rows(p, c, at, 0, rs, &fwhy);
        if (!rc && rs->n && rs->seq[0] != at + 1)
            rc = open_fail(p, why_out,
                           "batch %" PRId64 " of %slog is missing (the next is %" PRId64
                           "): the log does not follow checkpoint %" PRId64,
                           at + 1, P, rs->seq[0], cp_id);
        else if (!rc && apply_rows(p, rs, false, &fwhy))
            rc = open_fail(p, why_out, "%s", fwhy);
        else if (rc)
            rc = open_fail(p, why_out, "cannot read %slog: %s", P, fwhy);
        if (!rc)
            *from_log += rs->b.n;
        if (rc || rs->n < PGL_FETCH_ROWS)
            break;
    }
    rows_reset(&p->commit_rows);
    if (!rc) {
        /* Every committed batch must be there: the counter says how many
         * (under advisory locks only the newest row tells, so rows missing
         * at the end go unnoticed: one reason the counter row is the
         * default). */
        bool failed;
        char *s = query_text(c, p->q_top, 0, NULL, &failed);
        int64_t top = s ? strtoll(s, NULL, 10) : 0;
        free(s);
        if (failed)
            rc = open_fail(p, why_out, "cannot read %sorder: %s", P, pq_err(c));
        else if (top != atomic_load(&p->applied))
            rc = open_fail(p, why_out,
                           "the shared log ends at batch %" PRId64 " but %sorder says %" PRId64
                           " batches were committed: rows are missing",
                           atomic_load(&p->applied), P, top);
    }
    exec_ok(c, rc ? "ROLLBACK" : "COMMIT", PGRES_COMMAND_OK);
    return rc;
}

static int pgl_open(void *self, mdb_store *store, const char **why_out)
{
    pgl *p = self;
    uint64_t t0 = mono_ms();
    p->store = store;
    const char *cwhy = NULL;
    pool_slot *s = pool_get(p, &cwhy);
    if (!s)
        return open_fail(p, why_out, "%s", cwhy);
    uint64_t ncp = 0, nlog = 0;
    int rc = ensure_schema(p, s->c, why_out);
    if (!rc)
        rc = load(p, s->c, why_out, &ncp, &nlog);
    pool_put(p, s);
    if (rc)
        return rc;
    mdb_log(p->ctx, MDB_LOG_INFO,
            "shared log %slog: replayed %" PRIu64 " records from the checkpoint and %" PRIu64
            " from the log up to batch %" PRId64 " in %" PRIu64 " ms, %s",
            p->prefix, ncp, nlog, atomic_load(&p->applied), mono_ms() - t0,
            p->encrypt ? "encrypted (XChaCha20-Poly1305)" : "NOT encrypted");
    return 0;
}

/* ---- the commit path --------------------------------------------------------------------- */
static int refuse_if_stopped(pgl *p, const char **why)
{
    pthread_mutex_lock(&p->pool_mu);
    bool gap = p->gap;
    if (gap)
        snprintf(tl_why, sizeof tl_why, "%s", p->gap_why);
    pthread_mutex_unlock(&p->pool_mu);
    if (gap)
        *why = tl_why;
    return gap ? -EROFS : 0;
}

static void rollback_cur(pgl *p)
{
    if (p->cur) {
        if (PQstatus(p->cur->c) == CONNECTION_OK)
            exec_ok(p->cur->c, "ROLLBACK", PGRES_COMMAND_OK);
        pool_put(p, p->cur);
        p->cur = NULL;
    }
}

static int pgl_order_begin(void *self, mdb_store *store, const char **why)
{
    pgl *p = self;
    (void)store;
    int rc = refuse_if_stopped(p, why);
    if (rc)
        return rc;
    pool_slot *s = pool_get(p, why);
    if (!s)
        return -EROFS;
    p->cur = s;
    PGresult *r = PQexec(s->c, p->q_next);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = stmt_fail(s->c, "ordering", why);
        PQclear(r);
        rollback_cur(p);
        return rc;
    }
    p->cur_seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    /* Bring the store up to this place: other nodes' batches before ours. */
    while (!rc && atomic_load(&p->applied) < p->cur_seq - 1) {
        int64_t at = atomic_load(&p->applied);
        rc = fetch_rows(p, s->c, at, p->cur_seq, &p->commit_rows, why);
        if (!rc && p->commit_rows.n == 0) {
            set_gap(p, "batches %" PRId64 " to %" PRId64 " of the shared log %slog are missing",
                    at + 1, p->cur_seq - 1, p->prefix);
            *why = p->gap_why;
            rc = -EIO;
        }
        if (!rc)
            rc = apply_rows(p, &p->commit_rows, true, why);
    }
    rows_reset(&p->commit_rows);
    if (rc) {
        rollback_cur(p);
        return rc == -EROFS ? rc : -EROFS;
    }
    return 0;
}

static void pgl_order_abort(void *self)
{
    rollback_cur(self);
}

/* INSERT row N and COMMIT it in one round trip (libpq pipeline mode;
 * the transaction was opened by order_begin). Results come back in order:
 * the INSERT's, the COMMIT's (PGRES_PIPELINE_ABORTED when the INSERT
 * failed), then the sync. 0, or stmt_fail()'s code; on failure the
 * transaction may still be open and the caller rolls it back. */
static int insert_and_commit(pgl *p, PGconn *c, const char *const *vals, const int *lens,
                             const int *fmts, const char **why)
{
    if (!PQenterPipelineMode(c))
        return stmt_fail(c, "the log insert", why);
    bool sent = PQsendQueryParams(c, p->q_insert, 4, NULL, vals, lens, fmts, 0) &&
                PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(c);
    bool inserted = false, committed = false, synced = false;
    char err[256] = ""; /* the first error result's text (the connection's is reset by then) */
    /* Two NULLs separate the three results; a broken connection gives
     * NULLs (or an error result) and nothing more. */
    for (int nulls = 0; sent && !synced && nulls <= 2;) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (PQstatus(c) != CONNECTION_OK)
                break;
            nulls++;
            continue;
        }
        switch (PQresultStatus(r)) {
        case PGRES_TUPLES_OK: /* only the INSERT returns rows (pg_notify's) */
            inserted = true;
            break;
        case PGRES_COMMAND_OK:
            /* COMMIT of a failed transaction answers ROLLBACK with success. */
            committed = inserted && strcmp(PQcmdStatus(r), "COMMIT") == 0;
            break;
        case PGRES_PIPELINE_SYNC:
            synced = true;
            break;
        default:
            if (!err[0])
                snprintf(err, sizeof err, "%s", PQresultErrorMessage(r));
            break;
        }
        PQclear(r);
    }
    const char *m = err[0] ? err : pq_err(c);
    int rc = 0;
    if (!inserted)
        rc = stmt_fail_msg(c, "the log insert", m, why);
    else if (!committed)
        rc = stmt_fail_msg(c, "commit (the write may or may not be stored)", m, why);
    if (!synced || !PQexitPipelineMode(c)) {
        /* Results still owed: the connection cannot take another
         * statement. Drop it (pool_get() connects again); a COMMIT that
         * was answered stands. */
        PQfinish(c);
        p->cur->c = NULL;
    }
    return rc;
}

static int pgl_append(void *self, const mdb_record *recs, size_t n, uint64_t *ticket,
                      const char **why)
{
    pgl *p = self;
    *ticket = 0; /* acknowledged once COMMIT returned: nothing to wait for */
    if (!p->cur) {
        *why = "storage-pg: append without order_begin (core and module disagree)";
        return -EIO;
    }
    PGconn *c = p->cur->c;
    mdb_buf_reset(&p->out);
    pg_render_records(p->key, recs, n, &p->out, &p->line, &p->tmp);
    if (p->out.oom) {
        rollback_cur(p);
        *why = "out of memory";
        return -ENOMEM;
    }
    char seq[24], cnt[24];
    snprintf(seq, sizeof seq, "%" PRId64, p->cur_seq);
    snprintf(cnt, sizeof cnt, "%zu", n);
    const char *vals[4] = {seq, p->node, cnt, p->out.data};
    int lens[4] = {0, 0, 0, (int)p->out.len};
    int fmts[4] = {0, 0, 0, 1};
    int rc = insert_and_commit(p, c, vals, lens, fmts, why);
    if (rc) {
        rollback_cur(p);
        return rc;
    }
    pool_put(p, p->cur);
    p->cur = NULL;
    /* The core applies these records right after, under the same lock. */
    atomic_store(&p->applied, p->cur_seq);
    atomic_fetch_add(&p->records, n);
    atomic_fetch_add(&p->bytes, p->out.len);
    if (p->out.cap > ((size_t)8 << 20)) {
        mdb_buf_free(&p->out);
        mdb_buf_free(&p->line);
        mdb_buf_free(&p->tmp);
    }
    return 0;
}

static int pgl_flush(void *self)
{
    (void)self;
    return 0; /* every acknowledged batch is committed in PostgreSQL */
}

static void pgl_stats(void *self, mdb_storage_stats *out)
{
    pgl *p = self;
    out->mode = "postgresql";
    out->bytes = atomic_load(&p->bytes);
    out->records = atomic_load(&p->records);
    pthread_mutex_lock(&p->pool_mu);
    out->read_only = p->gap || p->unreachable;
    pthread_mutex_unlock(&p->pool_mu);
}

/* ---- tailing ---------------------------------------------------------------------------- */
typedef struct tail_apply {
    pgl *p;
    const char *why;
} tail_apply;

static int tail_apply_fn(void *ud)
{
    tail_apply *t = ud;
    return apply_rows(t->p, &t->p->tail_rows, true, &t->why);
}

/* Fetch everything after `applied` and apply it. 0, or -EROFS when the
 * connection broke, -EIO when the node stopped on a gap. */
static int tail_catch_up(pgl *p, PGconn *c)
{
    for (;;) {
        const char *why = NULL;
        int rc = fetch_rows(p, c, atomic_load(&p->applied), 0, &p->tail_rows, &why);
        if (rc) {
            if (rc != -EROFS)
                mdb_log(p->ctx, MDB_LOG_ERROR, "tailing the shared log: %s", why);
            return rc;
        }
        size_t got = p->tail_rows.n;
        if (got == 0)
            return 0;
        tail_apply t = {p, NULL};
        rc = mdb_store_locked(p->store, tail_apply_fn, &t);
        rows_reset(&p->tail_rows);
        if (rc)
            return -EIO;
        if (got < PGL_FETCH_ROWS)
            return 0;
    }
}

/* Sleep up to ms, or until woken for stopping. */
static void tail_wait(pgl *p, PGconn *c, int ms)
{
    struct pollfd fds[2] = {{.fd = p->wake_fd, .events = POLLIN},
                            {.fd = c ? PQsocket(c) : -1, .events = POLLIN}};
    int n = poll(fds, c && fds[1].fd >= 0 ? 2 : 1, ms);
    if (n > 0 && c && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        PQconsumeInput(c);
        PGnotify *nt;
        while ((nt = PQnotifies(c)) != NULL)
            PQfreemem(nt);
    }
}

static void *tail_main(void *arg)
{
    pgl *p = arg;
    PGconn *c = NULL;
    int backoff = PGL_BACKOFF_MIN_MS;
    bool lost = false, stopped = false;
    while (!atomic_load(&p->stopping)) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            if (c) {
                PQfinish(c);
                c = NULL;
                if (!lost)
                    mdb_log(p->ctx, MDB_LOG_WARN,
                            "lost the PostgreSQL connection that tails the log: reconnecting");
                lost = true;
            }
            const char *why = NULL;
            c = connect_pg(p, &why);
            if (c && !exec_ok(c, p->q_listen, PGRES_COMMAND_OK)) {
                PQfinish(c);
                c = NULL;
            }
            if (!c) {
                tail_wait(p, NULL, backoff);
                backoff = backoff * 2 > PGL_BACKOFF_MAX_MS ? PGL_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = PGL_BACKOFF_MIN_MS;
            if (lost)
                mdb_log(p->ctx, MDB_LOG_INFO, "tailing the shared log again: catching up");
            lost = false;
        }
        /* LISTEN is in place before this fetch, so no batch slips between. */
        if (!stopped) {
            int rc = tail_catch_up(p, c);
            if (rc == -EIO)
                stopped = true; /* a gap: logged; nothing more to apply */
            if (rc == -EROFS)
                continue;
        }
        tail_wait(p, c, p->poll_ms);
    }
    PQfinish(c);
    return NULL;
}

int pgl_start_tail(pgl *p)
{
    atomic_store(&p->stopping, false);
    int rc = pthread_create(&p->tail, NULL, tail_main, p);
    if (rc)
        return -rc;
    p->tail_running = true;
    return 0;
}

void pgl_stop_tail(pgl *p)
{
    if (!p->tail_running)
        return;
    atomic_store(&p->stopping, true);
    uint64_t one = 1;
    if (write(p->wake_fd, &one, sizeof one) < 0) {
        /* The eventfd cannot be full here; the poll timeout ends the wait anyway. */
    }
    pthread_join(p->tail, NULL);
    p->tail_running = false;
}

/* ---- checkpoints --------------------------------------------------------------------------- */
typedef struct cp_ctx {
    pgl *p;
    PGconn *c;
    const char *id;
    mdb_buf out, line, tmp;
    long chunks;
    uint64_t docs;
    int err;
    const char *why;
} cp_ctx;

static int cp_flush(cp_ctx *x)
{
    if (x->out.len == 0)
        return 0;
    if (x->out.oom) {
        x->why = "out of memory";
        return x->err = -ENOMEM;
    }
    char sql[160], nt[24];
    snprintf(sql, sizeof sql, "INSERT INTO %scheckpoint_chunk VALUES ($1::int8, $2::int4, $3)",
             x->p->prefix);
    snprintf(nt, sizeof nt, "%ld", x->chunks);
    const char *vals[] = {x->id, nt, x->out.data};
    int lens[] = {0, 0, (int)x->out.len};
    int fmts[] = {0, 0, 1};
    PGresult *r = PQexecParams(x->c, sql, 3, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        x->err = stmt_fail(x->c, "a checkpoint chunk", &x->why);
    PQclear(r);
    x->chunks++;
    mdb_buf_reset(&x->out);
    return x->err;
}

static int cp_rec(const mdb_record *rec, void *ud)
{
    cp_ctx *x = ud;
    pg_render_records(x->p->key, rec, 1, &x->out, &x->line, &x->tmp);
    if (rec->op == MDB_REC_INSERT)
        x->docs++;
    return x->out.len >= PGL_CHUNK_BYTES ? cp_flush(x) : (x->out.oom ? -ENOMEM : 0);
}

typedef struct cp_point {
    pgl *p;
    int64_t seq;
} cp_point;

/* Under the commit lock: the frozen state is exactly batches 1..applied. */
static void cp_mark(void *ud)
{
    cp_point *pt = ud;
    pt->seq = atomic_load(&pt->p->applied);
}

int pgl_checkpoint(pgl *p, mdb_store *store, char *name_out, size_t cap, const char **why)
{
    int rc = refuse_if_stopped(p, why);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->snap_mu);
    uint64_t t0 = mono_ms();
    /* Freeze before taking a connection: a commit holds the commit lock
     * while it waits for one (with pool-size 1 the other order deadlocks). */
    cp_point pt = {p, 0};
    mdb_frozen *f = NULL;
    rc = mdb_store_freeze(store, cp_mark, &pt, &f);
    if (rc) {
        *why = "cannot freeze the store (out of memory)";
        pthread_mutex_unlock(&p->snap_mu);
        return rc;
    }
    pool_slot *s = pool_get(p, why);
    if (!s) {
        mdb_frozen_free(f);
        pthread_mutex_unlock(&p->snap_mu);
        return -EROFS;
    }
    cp_ctx x = {.p = p, .c = s->c};
    mdb_buf_init(&x.out);
    mdb_buf_init(&x.line);
    mdb_buf_init(&x.tmp);
    char sql[256], seqt[24], idt[24] = "";
    snprintf(seqt, sizeof seqt, "%" PRId64, pt.seq);
    snprintf(sql, sizeof sql,
             "INSERT INTO %scheckpoint (seq, node) VALUES ($1::int8, $2) RETURNING id", p->prefix);
    const char *vals[] = {seqt, p->node};
    if (!exec_ok(s->c, "BEGIN", PGRES_COMMAND_OK)) {
        rc = stmt_fail(s->c, "BEGIN", why);
    } else {
        PGresult *r = PQexecParams(s->c, sql, 2, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = stmt_fail(s->c, "the checkpoint insert", why);
        else
            snprintf(idt, sizeof idt, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    x.id = idt;
    if (!rc) {
        rc = mdb_frozen_each(f, cp_rec, &x);
        if (!rc)
            rc = cp_flush(&x);
        if (rc || x.err) {
            rc = rc ? rc : x.err;
            *why = x.why ? x.why : "out of memory";
        }
    }
    mdb_frozen_free(f);
    if (!rc) {
        char ck[24], dk[24];
        snprintf(ck, sizeof ck, "%ld", x.chunks);
        snprintf(dk, sizeof dk, "%" PRIu64, x.docs);
        snprintf(sql, sizeof sql,
                 "UPDATE %scheckpoint SET chunks = $2::int4, docs = $3::int8 WHERE id = $1::int8",
                 p->prefix);
        const char *uv[] = {idt, ck, dk};
        PGresult *r = PQexecParams(s->c, sql, 3, NULL, uv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = stmt_fail(s->c, "the checkpoint update", why);
        PQclear(r);
    }
    if (!rc) {
        PGresult *r = PQexec(s->c, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(r), "COMMIT") != 0)
            rc = stmt_fail(s->c, "the checkpoint commit", why);
        PQclear(r);
    } else if (PQstatus(s->c) == CONNECTION_OK) {
        exec_ok(s->c, "ROLLBACK", PGRES_COMMAND_OK);
    }
    if (!rc) {
        /* Keep the newest `keep` checkpoints and the log after the oldest
         * kept, but no row younger than the grace period: a running node
         * that has not tailed it yet would find a gap. */
        char prune[768];
        snprintf(prune, sizeof prune,
                 "BEGIN;"
                 "DELETE FROM %scheckpoint WHERE id NOT IN (SELECT id FROM %scheckpoint ORDER "
                 "BY id DESC LIMIT %d);"
                 "DELETE FROM %slog WHERE seq <= (SELECT min(seq) FROM %scheckpoint) AND at < "
                 "now() - make_interval(secs => %d);"
                 "COMMIT",
                 p->prefix, p->prefix, p->keep, p->prefix, p->prefix, p->grace_s);
        if (!exec_ok(s->c, prune, PGRES_COMMAND_OK)) {
            mdb_log(p->ctx, MDB_LOG_WARN, "checkpoint %s written but pruning failed: %s", idt,
                    pq_err(s->c));
            if (PQstatus(s->c) == CONNECTION_OK)
                exec_ok(s->c, "ROLLBACK", PGRES_COMMAND_OK);
        }
        snprintf(name_out, cap, "postgresql:%scheckpoint/%s", p->prefix, idt);
        mdb_log(p->ctx, MDB_LOG_INFO,
                "checkpoint %s at batch %" PRId64 ": %" PRIu64 " documents in %ld chunks, %" PRIu64
                " ms",
                idt, pt.seq, x.docs, x.chunks, mono_ms() - t0);
    } else {
        mdb_log(p->ctx, MDB_LOG_ERROR, "checkpoint failed: %s", *why);
    }
    if (x.line.data)
        sodium_memzero(x.line.data, x.line.cap);
    if (x.tmp.data)
        sodium_memzero(x.tmp.data, x.tmp.cap);
    mdb_buf_free(&x.out);
    mdb_buf_free(&x.line);
    mdb_buf_free(&x.tmp);
    pool_put(p, s);
    pthread_mutex_unlock(&p->snap_mu);
    return rc;
}

static int pgl_snapshot(void *self, mdb_store *store, char *path_out, size_t cap, const char **why)
{
    /* The core runs the snapshot hooks (storage.h). */
    return pgl_checkpoint(self, store, path_out, cap, why);
}

/* ---- close ------------------------------------------------------------------------------- */
static void pgl_close(void *self)
{
    pgl *p = self;
    pgl_stop_tail(p);
    pthread_mutex_lock(&p->pool_mu);
    for (int i = 0; p->pool && i < p->npool; i++) {
        PQfinish(p->pool[i].c);
        p->pool[i].c = NULL;
    }
    pthread_mutex_unlock(&p->pool_mu);
}

void pgl_free(pgl *p)
{
    if (!p)
        return;
    pgl_close(p);
    wal_keyring_wipe(&p->keys);
    if (p->password)
        sodium_free(p->password);
    if (p->conninfo)
        sodium_free(p->conninfo);
    free(p->pool);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    if (p->line.data)
        sodium_memzero(p->line.data, p->line.cap);
    if (p->tmp.data)
        sodium_memzero(p->tmp.data, p->tmp.cap);
    mdb_buf_free(&p->out);
    mdb_buf_free(&p->line);
    mdb_buf_free(&p->tmp);
    rows_free(&p->commit_rows);
    rows_free(&p->tail_rows);
    pthread_mutex_destroy(&p->pool_mu);
    pthread_cond_destroy(&p->pool_cv);
    pthread_mutex_destroy(&p->snap_mu);
    free(p);
}

const mdb_storage_service pgl_service = {
    .size = sizeof(mdb_storage_service),
    .open = pgl_open,
    .append = pgl_append,
    .when_durable = NULL,
    .flush = pgl_flush,
    .snapshot = pgl_snapshot,
    .stats = pgl_stats,
    .close = pgl_close,
    .order_begin = pgl_order_begin,
    .order_abort = pgl_order_abort,
};
