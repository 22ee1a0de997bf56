/*
 * ws-push: the real-time change feed over WebSocket at GET /ws
 * (modules/ws-push/README.md is the protocol and key reference).
 *
 * Shape:
 *   commit hook (writer threads, under the store's commit lock)
 *       turns each record into one event (JSON text already framed) and
 *       appends it to the ring; wakes the I/O thread at most once per round.
 *       It never waits for a subscriber: its only lock is the ring's, which
 *       the I/O thread does not take to read events (only for RESUME).
 *   I/O thread (one, epoll)
 *       owns every upgraded socket: reads frames, answers AUTH/RESUME and
 *       control frames, and pulls events from the ring into each
 *       connection's output buffer from that connection's cursor. A
 *       connection whose cursor falls queue-size events behind the ring's
 *       head is dropped (1013), so the ring doubles as every connection's
 *       bounded queue and the RESUME history.
 *
 * Ownership: the module state (wsp) is created in init() and freed in
 * destroy(); connections are created by the upgrade callback, handed to the
 * I/O thread through `incoming`, and freed only by that thread (or by
 * stop() after it has exited). Events belong to the ring.
 */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <moltendb/module.h>

#include "ws_frame.h"

#define WSP_OUT_SOFT (16 * 1024) /* stop pulling events into a buffer beyond this */
#define WSP_CACHE 16             /* per-connection collection decisions (direct-mapped) */
#define WSP_TICK_MS 100
#define WSP_CLOSE_WAIT_MS 2000 /* after our Close: wait this long for the peer's */
#define WSP_PACE 4             /* pause between fan-out rounds: 4x the last round */
#define WSP_PACE_MAX_US 20000  /* but at most 20 ms (bounds the added latency) */
#define WSP_PACE_MIN_US 1000   /* and at least 1 ms: one wake-up per commit costs writers */

/* Upstream's AUTH texts, verbatim (README.md, "AUTH"). */
#define T_FIRST_NOT_TEXT                                                                           \
    "{\"error\":\"invalid_message\",\"detail\":\"First message must be a text frame containing "   \
    "{\\\"action\\\":\\\"AUTH\\\",\\\"token\\\":\\\"<jwt>\\\"}\"}"
#define T_NOT_JSON                                                                                 \
    "{\"error\":\"invalid_message\",\"detail\":\"Could not parse JSON. Expected "                  \
    "{\\\"action\\\":\\\"AUTH\\\",\\\"token\\\":\\\"<jwt>\\\"}\"}"
#define T_BAD_ACTION                                                                               \
    "{\"error\":\"invalid_action\",\"detail\":\"First message must have "                          \
    "\\\"action\\\":\\\"AUTH\\\". Use HTTP endpoints for CRUD operations.\"}"
#define T_NO_TOKEN                                                                                 \
    "{\"error\":\"missing_token\",\"detail\":\"AUTH message is missing the \\\"token\\\" field. "  \
    "Expected {\\\"action\\\":\\\"AUTH\\\",\\\"token\\\":\\\"<jwt>\\\"}\"}"
#define T_BAD_TOKEN                                                                                \
    "{\"error\":\"invalid_token\",\"detail\":\"JWT verification failed. The token may be "         \
    "expired, malformed, or signed with the wrong secret.\"}"
#define T_REVOKED_AUTH                                                                             \
    "{\"error\":\"token_revoked\",\"detail\":\"This token has been revoked. Mint a new token via " \
    "POST /auth/tokens.\"}"
#define T_AUTH_OK                                                                                  \
    "{\"status\":\"authenticated\",\"message\":\"Connected to MoltenDB real-time feed. Use HTTP "  \
    "endpoints for CRUD. Send "                                                                    \
    "{\\\"action\\\":\\\"SUBSCRIBE\\\",\\\"collection\\\":\\\"<name>\\\"} "                        \
    "to register interest.\"}"
#define T_REVOKED_LIVE                                                                             \
    "{\"error\":\"token_revoked\",\"detail\":\"Your token has been revoked. The connection is "    \
    "being closed.\"}"
/* Ours (upstream has no such checks). */
#define T_EXPIRED                                                                                  \
    "{\"error\":\"token_expired\",\"detail\":\"Your token has expired. The connection is being "   \
    "closed.\"}"
#define T_AUTH_TIMEOUT                                                                             \
    "{\"error\":\"auth_timeout\",\"detail\":\"No AUTH message in time. Expected "                  \
    "{\\\"action\\\":\\\"AUTH\\\",\\\"token\\\":\\\"<jwt>\\\"}\"}"
#define T_BAD_RESUME                                                                               \
    "{\"error\":\"invalid_message\",\"detail\":\"RESUME needs \\\"since\\\": a non-negative "      \
    "integer event id\"}"

/* ---- events and the ring -------------------------------------------------------- */
typedef struct wsp_event {
    uint64_t id;
    struct wsp_event *gc_next; /* on the garbage list once it left the ring */
    uint64_t chash;            /* hash of the collection name */
    size_t clen;
    char *coll; /* NUL-terminated, inside this allocation */
    char *key;  /* NULL for collection-wide events (drop, ttl_expiry, SCHEMA_SET) */
    size_t klen;
    size_t flen;
    bool same_coll;  /* same collection as event id - 1: its scope decision holds */
    uint8_t frame[]; /* server text frame: header + JSON */
} wsp_event;

/* ---- connections ------------------------------------------------------------------- */
enum { ST_AUTH = 0, ST_LIVE = 1, ST_CLOSING = 2 };
enum { DEC_UNKNOWN = 0, DEC_NONE, DEC_ALL, DEC_KEYS };

typedef struct wsp_pat {
    char *s;
    size_t len;
    bool prefix;
} wsp_pat;

typedef struct wsp_cache {
    uint64_t h;
    size_t clen;
    char *coll; /* NULL = empty slot */
    int dec;
    wsp_pat *pats;
    size_t npats;
} wsp_cache;

typedef struct wsp_conn {
    struct wsp_conn *next, *prev;
    struct wsp *m;
    mdb_upgrade *u;
    int fd;
    uint64_t serial;
    char peer[48];
    int state;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *msg; /* message being reassembled */
    size_t mlen, mcap;
    unsigned mop; /* opcode of that message; 0 = none */
    wsf_utf8 u8;
    uint8_t *obuf;
    size_t olen, ooff, ocap;
    bool want_out;    /* EPOLLOUT armed */
    bool peer_closed; /* the peer's Close came first: end once ours is written */
    mdb_principal *p;
    uint64_t cursor;    /* next event id to look at */
    uint64_t owed;      /* the head when it RESUMEd: a replay it asked for is not lag */
    uint64_t seen_id;   /* the last event visible() decided, */
    wsp_cache *seen_ce; /* with this decision (NULL: none) */
    int64_t t_open, t_rx, t_ping, t_close, t_revoke;
    wsp_cache cache[WSP_CACHE];
} wsp_conn;

typedef struct wsp {
    mdb_ctx *ctx;
    const mdb_auth_service *auth;
    void *auth_self;
    /* settings */
    size_t max_msg;
    int64_t auth_timeout_ms, revoke_ms, ping_ms, ping_timeout_ms;
    uint64_t queue_max, ring_keep;
    size_t max_conns;
    int sndbuf;
    /* ring: slot = id % ring_len; ids [ring_first, next_id) are held.
     * Producers (commit hooks, serialised by the commit lock) hold ring_mx;
     * the I/O thread reads slots without it (acquire loads; an event's id
     * tells whether its slot was reused), so a writer never waits for a
     * fan-out pass. Events that leave the ring go to `garbage`, which only
     * the I/O thread frees, between passes, when it holds no event. */
    pthread_mutex_t ring_mx;
    _Atomic(wsp_event *) *ring;
    uint64_t ring_len, ring_first, id_base;
    _Atomic uint64_t next_id;
    _Atomic(wsp_event *) garbage;
    _Atomic int wake_pending; /* set by the first commit after a pass started */
    /* I/O thread */
    int ep, efd;
    pthread_t th;
    bool th_running;
    _Atomic int stopping; /* 1: shutdown (close all with 1001), 2: exit the thread */
    pthread_mutex_t in_mx;
    pthread_cond_t in_cv;
    wsp_conn *incoming; /* handed over by the upgrade callback */
    size_t nconns;      /* under in_mx: live + incoming */
    wsp_conn *conns;    /* I/O thread only */
    uint64_t serial;
    /* counters (for the log line at stop) */
    _Atomic uint64_t n_events, n_sent, n_dropped;
    /* metrics (metrics.h; NULL when registration failed: updates do nothing) */
    mdb_metric *mx_conns, *mx_subs, *mx_events, *mx_sent, *mx_closed;
} wsp;

/* Reasons a connection was closed by the server (label values of
 * moltendb_ws_closed_total). */
enum { WHY_SLOW, WHY_PING, WHY_REVOKED, WHY_EXPIRED, WHY_AUTH_TIMEOUT };
static const char *const wsp_why[] = {"slow",          "ping_timeout", "token_revoked",
                                      "token_expired", "auth_timeout", NULL};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static void wake(wsp *m)
{
    if (!atomic_exchange(&m->wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t w = write(m->efd, &one, sizeof one);
        (void)w;
    }
}

/* ---- commit hook: records -> events ----------------------------------------------- */
static wsp_event *event_new(const mdb_buf *json, const char *coll, size_t clen, const char *key,
                            size_t klen)
{
    uint8_t hdr[10];
    size_t hl = wsf_header(hdr, WSF_TEXT, json->len);
    wsp_event *e = malloc(sizeof *e + hl + json->len + clen + 1 + (key ? klen + 1 : 0));
    if (!e)
        return NULL;
    memcpy(e->frame, hdr, hl);
    memcpy(e->frame + hl, json->data, json->len);
    e->flen = hl + json->len;
    e->coll = (char *)e->frame + e->flen;
    memcpy(e->coll, coll, clen);
    e->coll[clen] = 0;
    e->chash = hash_str(coll, clen);
    e->clen = clen;
    e->key = NULL;
    e->klen = 0;
    e->same_coll = false;
    if (key) {
        e->key = e->coll + clen + 1;
        memcpy(e->key, key, klen);
        e->key[klen] = 0;
        e->klen = klen;
    }
    return e;
}

/* Store an event as the next id (caller holds ring_mx). */
static void ring_push(wsp *m, wsp_event *e)
{
    uint64_t id = atomic_load(&m->next_id);
    uint64_t slot = id % m->ring_len;
    if (id - m->ring_first >= m->ring_len) {
        /* The oldest event leaves the ring; the I/O thread may be reading
         * it right now, so it is freed there (gc_free). */
        wsp_event *old = atomic_load_explicit(&m->ring[slot], memory_order_relaxed);
        old->gc_next = atomic_load(&m->garbage);
        while (!atomic_compare_exchange_weak(&m->garbage, &old->gc_next, old))
            ;
        m->ring_first++;
    }
    /* Comparing names once here spares every subscriber the comparison. */
    if (id > m->ring_first) {
        const wsp_event *prev =
            atomic_load_explicit(&m->ring[(id - 1) % m->ring_len], memory_order_relaxed);
        e->same_coll = prev->clen == e->clen && memcmp(prev->coll, e->coll, e->clen) == 0;
    }
    e->id = id;
    atomic_store_explicit(&m->ring[slot], e, memory_order_release);
    atomic_store(&m->next_id, id + 1);
    atomic_fetch_add(&m->n_events, 1);
    mdb_counter_add(m->mx_events, 1);
}

/* {"collection":..,"event":..,"id":..,...}: members in alphabetical order
 * as upstream writes them; "id" is ours (README.md, "Resumable feeds"). */
static void ev_begin(mdb_buf *b, const char *coll, size_t clen, const char *event, uint64_t id)
{
    mdb_buf_reset(b);
    mdb_buf_puts(b, "{\"collection\":");
    mdb_buf_json_str(b, coll, clen);
    mdb_buf_printf(b, ",\"event\":\"%s\"", event);
    if (strcmp(event, "ttl_expiry") != 0)
        mdb_buf_printf(b, ",\"id\":%llu", (unsigned long long)id);
}

static void wsp_on_commit(const mdb_commit_event *ev, void *ud)
{
    wsp *m = ud;
    bool has_insert = false;
    for (size_t i = 0; i < ev->nrecords; i++)
        has_insert |= ev->records[i].op == MDB_REC_INSERT;
    mdb_buf b;
    mdb_buf_init(&b);
    pthread_mutex_lock(&m->ring_mx);
    for (size_t i = 0; i < ev->nrecords; i++) {
        const mdb_record *r = &ev->records[i];
        const char *c = r->collection;
        size_t cl = r->collection_len;
        uint64_t id = atomic_load(&m->next_id);
        const char *key = NULL;
        size_t klen = 0;
        switch (r->op) {
        case MDB_REC_INSERT:
        case MDB_REC_DELETE:
            key = r->key;
            klen = r->key_len;
            ev_begin(&b, c, cl, "change", id);
            mdb_buf_puts(&b, ",\"key\":");
            mdb_buf_json_str(&b, key, klen);
            if (r->op == MDB_REC_INSERT && r->doc)
                mdb_buf_printf(&b, ",\"new_v\":%lld}", (long long)mdb_doc_version(r->doc));
            else
                mdb_buf_puts(&b, ",\"new_v\":null}");
            break;
        case MDB_REC_DROP:
            ev_begin(&b, c, cl, "change", id);
            mdb_buf_puts(&b, ",\"key\":\"*\",\"new_v\":null}");
            break;
        case MDB_REC_SCHEMA:
            /* Right after a TTL drop the store re-logs the kept schema:
             * that is not a new schema. */
            if (i > 0 && ev->records[i - 1].op == MDB_REC_DROP)
                continue;
            ev_begin(&b, c, cl, "SCHEMA_SET", id);
            mdb_buf_puts(&b, ",\"schema\":");
            mdb_record_value_json(r, &b);
            mdb_buf_putc(&b, '}');
            break;
        case MDB_REC_META: {
            /* Only the expiry clock moved by an insert batch is announced. */
            int64_t exp = mdb_val_int(mdb_val_member(r->value, "expiresAt", 9));
            if (!has_insert || exp <= 0)
                continue;
            ev_begin(&b, c, cl, "ttl_expiry", id);
            mdb_buf_printf(&b, ",\"expires_at_ms\":%lld,\"id\":%llu}", (long long)exp,
                           (unsigned long long)id);
            break;
        }
        default:
            continue;
        }
        wsp_event *e = b.oom ? NULL : event_new(&b, c, cl, key, klen);
        if (!e) {
            mdb_log(m->ctx, MDB_LOG_ERROR, "out of memory: an event of '%.*s' was not queued",
                    (int)cl, c);
            mdb_buf_free(&b);
            mdb_buf_init(&b);
            continue;
        }
        ring_push(m, e);
    }
    pthread_mutex_unlock(&m->ring_mx);
    mdb_buf_free(&b);
    wake(m);
}

/* ---- visibility ------------------------------------------------------------------- */
typedef struct pat_acc {
    wsp_pat *v;
    size_t n;
    bool oom;
} pat_acc;

static void collect_pat(const char *pattern, size_t len, bool prefix, void *ud)
{
    pat_acc *a = ud;
    wsp_pat *nv = realloc(a->v, (a->n + 1) * sizeof *nv);
    char *s = malloc(len + 1);
    if (!nv || !s) {
        if (nv)
            a->v = nv;
        free(s);
        a->oom = true;
        return;
    }
    a->v = nv;
    memcpy(s, pattern, len);
    s[len] = 0;
    a->v[a->n++] = (wsp_pat){s, len, prefix};
}

static void cache_clear(wsp_cache *e)
{
    for (size_t i = 0; i < e->npats; i++)
        free(e->pats[i].s);
    free(e->pats);
    free(e->coll);
    memset(e, 0, sizeof *e);
}

/* May this connection see this event? Scope decisions are cached per
 * collection: scopes do not change during a connection. */
static bool visible(wsp *m, wsp_conn *c, const wsp_event *e)
{
    if (c->p->admin)
        return true;
    /* Events come in runs of one collection: the previous event's entry. */
    bool run = e->same_coll && c->seen_ce && c->seen_id + 1 == e->id;
    wsp_cache *ce = run ? c->seen_ce : &c->cache[e->chash % WSP_CACHE];
    c->seen_id = e->id;
    c->seen_ce = ce;
    if (!run && (!ce->coll || ce->h != e->chash || ce->clen != e->clen ||
                 memcmp(ce->coll, e->coll, e->clen) != 0)) {
        cache_clear(ce);
        ce->coll = strdup(e->coll);
        if (!ce->coll) {
            c->seen_ce = NULL;
            return false;
        }
        ce->h = e->chash;
        ce->clen = e->clen;
        if (m->auth->allowed(m->auth_self, c->p, MDB_ACT_READ, e->coll, "*")) {
            ce->dec = DEC_ALL;
        } else {
            pat_acc a = {0};
            m->auth->each_key_scope(m->auth_self, c->p, MDB_ACT_READ, e->coll, collect_pat, &a);
            ce->pats = a.v;
            ce->npats = a.n;
            ce->dec = a.n ? DEC_KEYS : DEC_NONE;
            if (a.oom) {
                cache_clear(ce); /* decide again next time */
                c->seen_ce = NULL;
                return false;
            }
        }
    }
    if (ce->dec != DEC_KEYS)
        return ce->dec == DEC_ALL;
    if (!e->key)
        return true; /* drops and metadata: anyone who may read some key */
    for (size_t i = 0; i < ce->npats; i++) {
        const wsp_pat *p = &ce->pats[i];
        if (p->prefix ? (e->klen >= p->len && memcmp(e->key, p->s, p->len) == 0)
                      : (e->klen == p->len && memcmp(e->key, p->s, p->len) == 0))
            return true;
    }
    return false;
}

/* ---- output ------------------------------------------------------------------------ */
static bool out_reserve(wsp_conn *c, size_t n)
{
    if (c->ooff && c->ooff == c->olen)
        c->ooff = c->olen = 0;
    if (c->olen + n <= c->ocap)
        return true;
    if (c->ooff) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
        if (c->olen + n <= c->ocap)
            return true;
    }
    size_t cap = c->ocap ? c->ocap : 1024;
    while (cap < c->olen + n)
        cap *= 2;
    uint8_t *nb = realloc(c->obuf, cap);
    if (!nb)
        return false;
    c->obuf = nb;
    c->ocap = cap;
    return true;
}

static bool out_frame(wsp_conn *c, unsigned op, const void *payload, size_t len)
{
    uint8_t hdr[10];
    size_t hl = wsf_header(hdr, op, len);
    if (!out_reserve(c, hl + len))
        return false;
    memcpy(c->obuf + c->olen, hdr, hl);
    if (len)
        memcpy(c->obuf + c->olen + hl, payload, len);
    c->olen += hl + len;
    return true;
}

static bool out_text(wsp_conn *c, const char *s)
{
    return out_frame(c, WSF_TEXT, s, strlen(s));
}

static void arm_out(wsp_conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->m->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Write what the buffer holds. -1 when the connection is broken. */
static int flush_out(wsp_conn *c)
{
    while (c->ooff < c->olen) {
        ssize_t w = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->ooff += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            arm_out(c, true);
            return 0;
        }
        return -1;
    }
    c->ooff = c->olen = 0;
    arm_out(c, false);
    return 0;
}

static void conn_free(wsp_conn *c)
{
    wsp *m = c->m;
    if (c->p) {
        mdb_gauge_add(m->mx_subs, -1);
        m->auth->principal_free(m->auth_self, c->p);
    }
    for (size_t i = 0; i < WSP_CACHE; i++)
        cache_clear(&c->cache[i]);
    free(c->rbuf);
    free(c->msg);
    free(c->obuf);
    free(c);
}

/* End the connection now (I/O thread). The core shuts the socket down. */
static void conn_kill(wsp_conn *c)
{
    wsp *m = c->m;
    epoll_ctl(m->ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mdb_upgrade_close(c->u);
    mdb_gauge_add(m->mx_conns, -1);
    pthread_mutex_lock(&m->in_mx);
    m->nconns--;
    pthread_cond_broadcast(&m->in_cv);
    pthread_mutex_unlock(&m->in_mx);
    conn_free(c);
}

/* Send an optional text frame, then a Close frame (code 0: without a
 * status code, as upstream does after AUTH failures), and wait a bounded
 * time for the peer's Close before the socket goes. False when the
 * connection is already gone (freed). */
static bool conn_close(wsp_conn *c, const char *text, unsigned code, const char *reason)
{
    if (c->state == ST_CLOSING)
        return true;
    if (text)
        out_text(c, text);
    uint8_t p[125];
    size_t n = 0;
    if (code) {
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        n = 2;
        if (reason) {
            size_t rl = strlen(reason);
            if (rl > sizeof p - 2)
                rl = sizeof p - 2;
            memcpy(p + 2, reason, rl);
            n += rl;
        }
    }
    out_frame(c, WSF_CLOSE, p, n);
    c->state = ST_CLOSING;
    c->t_close = mono_ms();
    if (flush_out(c)) {
        conn_kill(c);
        return false;
    }
    return true;
}

/* Pull this connection's events from the ring into its buffer and write.
 * Returns false when the connection was ended. */
static bool conn_pump(wsp_conn *c)
{
    wsp *m = c->m;
    if (c->state == ST_LIVE) {
        uint64_t head = atomic_load(&m->next_id);
        bool lapped = false;
        if (c->cursor < head && c->olen - c->ooff < WSP_OUT_SOFT) {
            uint64_t sent = 0;
            bool oom = false;
            while (c->cursor < head && c->olen - c->ooff < WSP_OUT_SOFT) {
                const wsp_event *e =
                    atomic_load_explicit(&m->ring[c->cursor % m->ring_len], memory_order_acquire);
                if (e->id != c->cursor) {
                    /* The slot was reused: more than ring_len (> queue-size)
                     * events behind. */
                    lapped = true;
                    head = atomic_load(&m->next_id);
                    break;
                }
                if (visible(m, c, e)) {
                    if (!out_reserve(c, e->flen)) {
                        oom = true;
                        break;
                    }
                    memcpy(c->obuf + c->olen, e->frame, e->flen);
                    c->olen += e->flen;
                    sent++;
                }
                c->cursor++;
            }
            atomic_fetch_add(&m->n_sent, sent);
            mdb_counter_add(m->mx_sent, sent);
            if (oom) {
                mdb_log(m->ctx, MDB_LOG_ERROR, "out of memory: closing connection #%llu from %s",
                        (unsigned long long)c->serial, c->peer);
                conn_close(c, NULL, 1011, "out of memory");
                return false;
            }
        }
        /* Lag counts from the RESUME's head while the replay runs. */
        uint64_t from = c->cursor > c->owed ? c->cursor : c->owed;
        if (lapped || head - from > m->queue_max) {
            atomic_fetch_add(&m->n_dropped, 1);
            mdb_counter_add_at(m->mx_closed, WHY_SLOW, 0, 1);
            mdb_log(m->ctx, MDB_LOG_WARN,
                    "dropping slow subscriber #%llu from %s (subject '%s'): %llu events behind "
                    "(queue-size %llu)",
                    (unsigned long long)c->serial, c->peer, c->p->subject,
                    (unsigned long long)(head - c->cursor), (unsigned long long)m->queue_max);
            /* The Close goes after what is buffered (at most ~16 KiB more),
             * never into the middle of a partly written frame. */
            conn_close(c, NULL, WSC_TRY_LATER, "subscriber too slow");
            return false;
        }
    }
    if (flush_out(c) || (c->peer_closed && c->olen == c->ooff)) {
        conn_kill(c);
        return false;
    }
    return true;
}

/* ---- input ------------------------------------------------------------------------- */
/* One whole message as strict JSON (RFC 8259: no single quotes, nothing
 * after the value but whitespace; a NUL is not the end), or NULL. The
 * caller puts the result. */
static json_object *parse_message(const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *j = NULL;
    if (!tok || len > INT_MAX) {
        if (tok)
            json_tokener_free(tok);
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    j = json_tokener_parse_ex(tok, text, (int)len);
    size_t used = json_tokener_get_parse_end(tok);
    while (used < len && text[used] && strchr(" \t\r\n", text[used]))
        used++;
    if (json_tokener_get_error(tok) != json_tokener_success || used != len) {
        json_object_put(j);
        j = NULL;
    }
    json_tokener_free(tok);
    return j;
}

/* The first message. False when the connection was closed (maybe freed). */
static bool do_auth(wsp_conn *c, const char *text, size_t len)
{
    wsp *m = c->m;
    json_object *j = parse_message(text, len);
    if (!j) {
        conn_close(c, T_NOT_JSON, 0, NULL);
        return false;
    }
    json_object *a = NULL, *t = NULL;
    const char *err = NULL;
    if (!json_object_object_get_ex(j, "action", &a) || !json_object_is_type(a, json_type_string) ||
        strcmp(json_object_get_string(a), "AUTH") != 0)
        err = T_BAD_ACTION;
    else if (!json_object_object_get_ex(j, "token", &t) ||
             !json_object_is_type(t, json_type_string))
        err = T_NO_TOKEN;
    if (!err) {
        const char *why = NULL;
        mdb_principal *p = NULL;
        if (m->auth->authenticate(m->auth_self, json_object_get_string(t),
                                  (size_t)json_object_get_string_len(t), &p, &why) == 0) {
            c->p = p;
        } else {
            err = (why && strstr(why, "revoked")) ? T_REVOKED_AUTH : T_BAD_TOKEN;
        }
    }
    json_object_put(j);
    if (err) {
        conn_close(c, err, 0, NULL);
        return false;
    }
    c->state = ST_LIVE;
    mdb_gauge_add(m->mx_subs, 1);
    c->cursor = atomic_load(&m->next_id); /* live from here on */
    c->t_revoke = mono_ms() + m->revoke_ms;
    out_text(c, T_AUTH_OK);
    mdb_log(m->ctx, MDB_LOG_DEBUG, "subscriber #%llu from %s authenticated as '%s'",
            (unsigned long long)c->serial, c->peer, c->p->subject);
    return true;
}

/* After AUTH: RESUME is ours; everything else is read and ignored, as
 * upstream does (SUBSCRIBE included), also a RESUME that is not strict
 * JSON, like AUTH. */
static void do_message(wsp_conn *c, const char *text, size_t len)
{
    wsp *m = c->m;
    if (!memmem(text, len, "RESUME", 6))
        return;
    json_object *j = parse_message(text, len);
    json_object *a = NULL, *s = NULL;
    if (!j || !json_object_object_get_ex(j, "action", &a) ||
        !json_object_is_type(a, json_type_string) ||
        strcmp(json_object_get_string(a), "RESUME") != 0) {
        json_object_put(j);
        return;
    }
    int64_t since = -1;
    if (json_object_object_get_ex(j, "since", &s) && json_object_is_type(s, json_type_int))
        since = json_object_get_int64(s);
    json_object_put(j);
    if (since < 0) {
        out_text(c, T_BAD_RESUME);
        return;
    }
    pthread_mutex_lock(&m->ring_mx);
    uint64_t head = atomic_load(&m->next_id);
    uint64_t oldest = head - m->ring_first > m->ring_keep ? head - m->ring_keep : m->ring_first;
    uint64_t from = (uint64_t)since + 1;
    bool gap = from < oldest || from > head;
    if (!gap) {
        c->cursor = from; /* replay in order; ids already seen may repeat */
        c->owed = head;
    }
    pthread_mutex_unlock(&m->ring_mx);
    if (gap) {
        char t[320];
        snprintf(t, sizeof t,
                 "{\"error\":\"resume_gap\",\"detail\":\"Events after %lld are no longer held "
                 "(oldest held: %llu). Refetch over HTTP.\",\"oldest_id\":%llu,\"since\":%lld}",
                 (long long)since, (unsigned long long)oldest, (unsigned long long)oldest,
                 (long long)since);
        out_text(c, t);
    }
}

static bool msg_append(wsp_conn *c, const uint8_t *p, size_t n)
{
    if (c->mlen + n + 1 > c->mcap) {
        size_t cap = c->mcap ? c->mcap : 256;
        while (cap < c->mlen + n + 1)
            cap *= 2;
        uint8_t *nb = realloc(c->msg, cap);
        if (!nb)
            return false;
        c->msg = nb;
        c->mcap = cap;
    }
    memcpy(c->msg + c->mlen, p, n);
    c->mlen += n;
    c->msg[c->mlen] = 0;
    return true;
}

/* One frame. Returns false when the connection stops reading. */
static bool on_frame(wsp_conn *c, const wsf_frame *f)
{
    wsp *m = c->m;
    c->t_rx = mono_ms();
    if (c->state == ST_CLOSING) {
        if (f->opcode == WSF_CLOSE) {
            conn_kill(c); /* the close handshake is complete */
            return false;
        }
        return true; /* data after our Close is discarded */
    }
    switch (f->opcode) {
    case WSF_PING:
    case WSF_PONG:
    case WSF_CLOSE:
        if (c->state == ST_AUTH) {
            conn_close(c, T_FIRST_NOT_TEXT, 0, NULL);
            return false;
        }
        if (f->opcode == WSF_PING) {
            out_frame(c, WSF_PONG, f->payload, f->len);
        } else if (f->opcode == WSF_PONG) {
            c->t_ping = 0;
        } else {
            unsigned code = 0;
            if (f->len == 1) {
                conn_close(c, NULL, WSC_PROTOCOL, "bad close frame");
                return false;
            }
            if (f->len >= 2) {
                code = (unsigned)f->payload[0] << 8 | f->payload[1];
                wsf_utf8 u;
                wsf_utf8_init(&u);
                if (!wsf_close_code_valid(code)) {
                    conn_close(c, NULL, WSC_PROTOCOL, "invalid close code");
                    return false;
                }
                if (!wsf_utf8_feed(&u, f->payload + 2, f->len - 2) || !wsf_utf8_done(&u)) {
                    conn_close(c, NULL, WSC_BAD_DATA, "close reason is not UTF-8");
                    return false;
                }
            }
            c->peer_closed = true;
            if (conn_close(c, NULL, code, NULL) && c->olen == c->ooff)
                conn_kill(c); /* echoed the peer's code: the handshake is complete */
            return false;
        }
        return true;
    case WSF_TEXT:
    case WSF_BINARY:
        if (c->mop) {
            conn_close(c, NULL, WSC_PROTOCOL, "expected a continuation frame");
            return false;
        }
        if (f->opcode == WSF_BINARY) {
            if (c->state == ST_AUTH)
                conn_close(c, T_FIRST_NOT_TEXT, 0, NULL);
            else
                conn_close(c, NULL, WSC_UNSUPPORTED, "binary messages are not supported");
            return false;
        }
        c->mop = f->opcode;
        c->mlen = 0;
        wsf_utf8_init(&c->u8);
        break;
    case WSF_CONT:
        if (!c->mop) {
            conn_close(c, NULL, WSC_PROTOCOL, "continuation without a message");
            return false;
        }
        break;
    }
    if (c->mlen + f->len > m->max_msg) {
        conn_close(c, NULL, WSC_TOO_BIG, "message too big");
        return false;
    }
    if (!wsf_utf8_feed(&c->u8, f->payload, f->len) || (f->fin && !wsf_utf8_done(&c->u8))) {
        conn_close(c, NULL, WSC_BAD_DATA, "text is not valid UTF-8");
        return false;
    }
    if (!msg_append(c, f->payload, f->len)) {
        conn_close(c, NULL, 1011, "out of memory");
        return false;
    }
    if (!f->fin)
        return true;
    c->mop = 0;
    if (c->state == ST_AUTH)
        return do_auth(c, (const char *)c->msg, c->mlen);
    do_message(c, (const char *)c->msg, c->mlen);
    return true;
}

/* Parse what rbuf holds. Returns false when the connection is gone or
 * stops reading. */
static bool parse_input(wsp_conn *c)
{
    wsp *m = c->m;
    size_t off = 0;
    bool go = true;
    while (go && off < c->rlen) {
        wsf_frame f;
        size_t need = 0;
        /* Control frames are small; data frames up to the message limit. */
        long used = wsf_parse(c->rbuf + off, c->rlen - off, m->max_msg, &f, &need);
        if (used < 0) {
            if (c->state == ST_CLOSING) {
                conn_kill(c);
                return false;
            }
            conn_close(c, NULL, (unsigned)-used,
                       used == -WSC_TOO_BIG ? "frame too big" : "protocol error");
            return false;
        }
        if (used == 0) {
            if (need > c->rcap && need <= m->max_msg + 14) {
                uint8_t *nb = realloc(c->rbuf, need);
                if (!nb) {
                    conn_close(c, NULL, 1011, "out of memory");
                    return false;
                }
                c->rbuf = nb;
                c->rcap = need;
            }
            break;
        }
        off += (size_t)used;
        go = on_frame(c, &f);
        if (!go)
            return false; /* c may be freed */
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    return true;
}

static void conn_read(wsp_conn *c)
{
    for (;;) {
        if (c->rlen == c->rcap) {
            /* A full buffer is a frame larger than the buffer was grown for:
             * only possible when parse_input asked for more room. */
            size_t cap = c->rcap ? c->rcap * 2 : 4096;
            uint8_t *nb = realloc(c->rbuf, cap);
            if (!nb) {
                conn_close(c, NULL, 1011, "out of memory");
                return;
            }
            c->rbuf = nb;
            c->rcap = cap;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            if (!parse_input(c))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* End of stream or error. */
        if (c->state == ST_AUTH && n == 0 && !conn_close(c, T_FIRST_NOT_TEXT, 0, NULL))
            return;
        conn_kill(c);
        return;
    }
}

/* ---- the I/O thread ---------------------------------------------------------------- */
static void adopt_incoming(wsp *m)
{
    pthread_mutex_lock(&m->in_mx);
    wsp_conn *list = m->incoming;
    m->incoming = NULL;
    pthread_mutex_unlock(&m->in_mx);
    while (list) {
        wsp_conn *c = list;
        list = c->next;
        c->prev = NULL;
        c->next = m->conns;
        if (m->conns)
            m->conns->prev = c;
        m->conns = c;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (epoll_ctl(m->ep, EPOLL_CTL_ADD, c->fd, &ev)) {
            mdb_log(m->ctx, MDB_LOG_ERROR, "epoll_ctl: %s; closing connection from %s",
                    strerror(errno), c->peer);
            c->want_out = false;
            conn_kill(c);
            continue;
        }
        if (atomic_load(&m->stopping)) {
            conn_close(c, NULL, WSC_GOING_AWAY, "server shutting down");
            continue;
        }
        if (c->rlen && parse_input(c) == false)
            continue;
    }
}

/* Timers: AUTH deadline, close handshake deadline, pings, revocation and
 * token expiry. */
static void tick(wsp *m, int64_t now)
{
    int64_t wall_s = mdb_now_ms() / 1000;
    wsp_conn *next;
    for (wsp_conn *c = m->conns; c; c = next) {
        next = c->next;
        if (c->state == ST_CLOSING) {
            if (now - c->t_close >= WSP_CLOSE_WAIT_MS)
                conn_kill(c);
            continue;
        }
        if (c->state == ST_AUTH) {
            if (now - c->t_open >= m->auth_timeout_ms) {
                mdb_counter_add_at(m->mx_closed, WHY_AUTH_TIMEOUT, 0, 1);
                conn_close(c, T_AUTH_TIMEOUT, WSC_POLICY, "no AUTH in time");
            }
            continue;
        }
        if (c->p->expires_at > 0 && wall_s >= c->p->expires_at) {
            mdb_counter_add_at(m->mx_closed, WHY_EXPIRED, 0, 1);
            conn_close(c, T_EXPIRED, WSC_POLICY, "token expired");
            continue;
        }
        if (now >= c->t_revoke) {
            c->t_revoke = now + m->revoke_ms;
            if (m->auth->is_revoked(m->auth_self, c->p->jti)) {
                mdb_log(m->ctx, MDB_LOG_INFO, "subscriber #%llu ('%s'): token revoked; closing",
                        (unsigned long long)c->serial, c->p->subject);
                mdb_counter_add_at(m->mx_closed, WHY_REVOKED, 0, 1);
                conn_close(c, T_REVOKED_LIVE, WSC_POLICY, "token revoked");
                continue;
            }
        }
        if (c->t_ping && now - c->t_ping >= m->ping_timeout_ms) {
            mdb_log(m->ctx, MDB_LOG_INFO, "subscriber #%llu from %s stopped answering pings",
                    (unsigned long long)c->serial, c->peer);
            mdb_counter_add_at(m->mx_closed, WHY_PING, 0, 1);
            conn_close(c, NULL, WSC_GOING_AWAY, "ping timeout");
            continue;
        }
        if (!c->t_ping && now - c->t_rx >= m->ping_ms) {
            c->t_ping = now;
            out_frame(c, WSF_PING, NULL, 0);
            if (flush_out(c))
                conn_kill(c);
        }
    }
}

/* Free the events that left the ring (I/O thread, holding no event). */
static void gc_free(wsp *m)
{
    wsp_event *g = atomic_exchange(&m->garbage, NULL);
    while (g) {
        wsp_event *next = g->gc_next;
        free(g);
        g = next;
    }
}

static void *io_main(void *arg)
{
    wsp *m = arg;
    struct epoll_event evs[128];
    int64_t last_tick = mono_ms();
    int64_t next_fan = 0; /* the next fan-out round may start then (us) */
    uint64_t fanned = 0;  /* head at the last round */
    bool behind = false;  /* a connection has due events and room in its socket */
    bool shut_done = false;
    for (;;) {
        gc_free(m);
        int stopping = atomic_load(&m->stopping);
        if (stopping == 2)
            break;
        if (stopping == 1 && !shut_done) {
            shut_done = true;
            wsp_conn *next;
            for (wsp_conn *c = m->conns; c; c = next) {
                next = c->next;
                if (c->state != ST_CLOSING)
                    conn_close(c, NULL, WSC_GOING_AWAY, "server shutting down");
            }
        }
        int wait_ms = WSP_TICK_MS;
        if (behind) {
            wait_ms = 0; /* keep draining: a pump sends at most ~16 KiB */
        } else if (atomic_load(&m->next_id) != fanned) {
            int64_t left = next_fan - mono_us();
            wait_ms = left <= 0 ? 0 : (int)(left / 1000) + 1;
        }
        int n = epoll_wait(m->ep, evs, 128, wait_ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == m) {
                uint64_t v;
                ssize_t r = read(m->efd, &v, sizeof v);
                (void)r;
                adopt_incoming(m);
                continue;
            }
            /* Each fd appears once per batch and a connection is only
             * freed while its own events are handled. */
            wsp_conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) {
                if (!conn_pump(c))
                    continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                conn_read(c);
        }
        /* Fan out: every connection behind the head, and replies queued
         * by the input side. Rounds are paced: after a round that took T,
         * the next starts WSP_PACE * T later (at most WSP_PACE_MAX_US), so
         * events batch up (one send per subscriber carries many) and the
         * thread leaves most of a CPU to the writers however many
         * subscribers there are. */
        int64_t t0 = mono_us();
        bool fan = atomic_load(&m->next_id) != fanned && t0 >= next_fan;
        /* Commits from here on wake the thread again (once): a commit
         * during the pause between passes makes no system call. */
        if (fan)
            atomic_store(&m->wake_pending, 0);
        uint64_t head = atomic_load(&m->next_id);
        uint64_t due = fan ? head : fanned;
        behind = false;
        wsp_conn *next;
        for (wsp_conn *c = m->conns; c; c = next) {
            next = c->next;
            /* between rounds: only connections behind the last round's head
             * (RESUME, a buffer that just drained) and queued replies */
            if (((fan && c->state == ST_LIVE && c->cursor < head) ||
                 (!c->want_out &&
                  ((c->state == ST_LIVE && c->cursor < fanned) || c->olen > c->ooff))) &&
                !conn_pump(c))
                continue; /* ended (freed) */
            /* More is due and the socket took everything: go on at once
             * rather than at the next wake-up (up to WSP_TICK_MS away). */
            if (c->state == ST_LIVE && !c->want_out && c->cursor < due)
                behind = true;
        }
        if (fan) {
            fanned = head;
            int64_t t1 = mono_us(), pause = (t1 - t0) * WSP_PACE;
            pause = pause < WSP_PACE_MIN_US ? WSP_PACE_MIN_US : pause;
            next_fan = t1 + (pause < WSP_PACE_MAX_US ? pause : WSP_PACE_MAX_US);
        }
        int64_t now = mono_ms();
        if (now - last_tick >= WSP_TICK_MS) {
            last_tick = now;
            tick(m, now);
        }
    }
    while (m->conns)
        conn_kill(m->conns);
    return NULL;
}

/* ---- upgrade ------------------------------------------------------------------------- */
typedef struct wsp_handoff {
    wsp *m;
    char peer[48];
} wsp_handoff;

static void on_upgraded(mdb_upgrade *u, int fd, const char *extra, size_t extra_len, void *ud)
{
    wsp_handoff *h = ud;
    wsp *m = h->m;
    wsp_conn *c = calloc(1, sizeof *c);
    if (c && extra_len) {
        c->rbuf = malloc(extra_len > 4096 ? extra_len : 4096);
        if (c->rbuf) {
            memcpy(c->rbuf, extra, extra_len);
            c->rlen = extra_len;
            c->rcap = extra_len > 4096 ? extra_len : 4096;
        }
    }
    if (!c || (extra_len && !c->rbuf)) {
        if (c)
            free(c->rbuf);
        free(c);
        mdb_log(m->ctx, MDB_LOG_ERROR, "out of memory: WebSocket from %s closed", h->peer);
        mdb_upgrade_close(u);
        return;
    }
    c->m = m;
    c->u = u;
    c->fd = fd;
    if (m->sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &m->sndbuf, sizeof m->sndbuf);
    /* Writes are already batched per fan-out pass: Nagle would only hold
     * the tail of a pass back for the peer's (maybe delayed) ACK. Fails
     * harmlessly on the socketpair libmicrohttpd hands over under TLS. */
    int nodelay = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
    snprintf(c->peer, sizeof c->peer, "%s", h->peer);
    c->t_open = c->t_rx = mono_ms();
    mdb_gauge_add(m->mx_conns, 1);
    pthread_mutex_lock(&m->in_mx);
    c->serial = ++m->serial;
    c->next = m->incoming;
    m->incoming = c;
    m->nconns++;
    pthread_mutex_unlock(&m->in_mx);
    uint64_t one = 1;
    ssize_t w = write(m->efd, &one, sizeof one);
    (void)w;
}

static bool header_has_token(const char *v, const char *tok)
{
    /* Comma-separated, case-insensitive ("keep-alive, Upgrade"). */
    size_t tl = strlen(tok);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, tok, tl) == 0)
            return true;
        v = e;
    }
    return false;
}

static void wsp_route(mdb_req *r, void *ud)
{
    wsp *m = ud;
    const char *up = mdb_req_header(r, "Upgrade");
    const char *conn = mdb_req_header(r, "Connection");
    if (!up || strcasecmp(up, "websocket") != 0 || !header_has_token(conn, "upgrade")) {
        mdb_reply_header(r, "Upgrade", "websocket");
        mdb_reply_error(r, 426,
                        "Upgrade Required: /ws is a WebSocket endpoint (send Connection: Upgrade "
                        "and Upgrade: websocket)");
        return;
    }
    const char *ver = mdb_req_header(r, "Sec-WebSocket-Version");
    if (!ver || strcmp(ver, "13") != 0) {
        mdb_reply_header(r, "Sec-WebSocket-Version", "13");
        mdb_reply_error(r, 400, "Bad WebSocket handshake: Sec-WebSocket-Version must be 13");
        return;
    }
    char accept[29];
    if (!wsf_accept_key(mdb_req_header(r, "Sec-WebSocket-Key"), accept)) {
        mdb_reply_error(r, 400,
                        "Bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes in base64");
        return;
    }
    if (atomic_load(&m->stopping) || !m->th_running) {
        mdb_reply_error(r, 503, "Service Unavailable: the server is shutting down");
        return;
    }
    pthread_mutex_lock(&m->in_mx);
    bool full = m->nconns >= m->max_conns;
    pthread_mutex_unlock(&m->in_mx);
    if (full) {
        mdb_reply_header(r, "Retry-After", "5");
        mdb_reply_error(r, 503, "Service Unavailable: too many WebSocket connections (max %zu)",
                        m->max_conns);
        return;
    }
    /* Handed to on_upgraded; lives as long as the request, which outlives
     * the upgrade callback. */
    wsp_handoff *h = mdb_req_alloc(r, sizeof *h);
    if (!h) {
        mdb_reply_error(r, 500, "out of memory");
        return;
    }
    h->m = m;
    snprintf(h->peer, sizeof h->peer, "%s", mdb_req_peer(r));
    mdb_reply_header(r, "Upgrade", "websocket");
    mdb_reply_header(r, "Sec-WebSocket-Accept", accept);
    mdb_reply_upgrade(r, on_upgraded, h);
}

/* ---- shutdown ------------------------------------------------------------------------ */
static void wsp_on_shutdown(void *ud)
{
    wsp *m = ud;
    if (!m->th_running)
        return;
    atomic_store(&m->stopping, 1);
    uint64_t one = 1;
    ssize_t w = write(m->efd, &one, sizeof one);
    (void)w;
    /* Every socket gets its 1001; wait (bounded) for the close handshakes. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WSP_CLOSE_WAIT_MS / 1000 + 1;
    pthread_mutex_lock(&m->in_mx);
    while (m->nconns > 0)
        if (pthread_cond_timedwait(&m->in_cv, &m->in_mx, &dl) == ETIMEDOUT)
            break;
    size_t left = m->nconns;
    pthread_mutex_unlock(&m->in_mx);
    mdb_log(m->ctx, MDB_LOG_INFO, "WebSocket connections closed with 1001%s",
            left ? " (some did not answer; their sockets are closed at stop)" : "");
}

/* ---- module life cycle --------------------------------------------------------------- */
static const mdb_conf_key wsp_conf[] = {
    {.name = "max-message",
     .type = MDB_CONF_INT,
     .default_value = "65536",
     .min = 125,
     .max = 16 * 1024 * 1024,
     .help = "largest client frame or message in bytes; bigger ones close with 1009"},
    {.name = "auth-timeout",
     .type = MDB_CONF_INT,
     .default_value = "10",
     .min = 1,
     .max = 3600,
     .help = "seconds a new connection has to send its AUTH message"},
    {.name = "revoke-interval",
     .type = MDB_CONF_INT,
     .default_value = "30",
     .min = 1,
     .max = 86400,
     .help = "seconds between revocation checks of each open connection's token"},
    {.name = "queue-size",
     .type = MDB_CONF_INT,
     .default_value = "4096",
     .min = 16,
     .max = 1000000,
     .help = "events a subscriber may fall behind before it is dropped (close 1013)"},
    {.name = "ring-size",
     .type = MDB_CONF_INT,
     .default_value = "10000",
     .min = 1,
     .max = 10000000,
     .help = "recent events kept for RESUME"},
    {.name = "ping-interval",
     .type = MDB_CONF_INT,
     .default_value = "30",
     .min = 1,
     .max = 3600,
     .help = "seconds of silence from a client before the server pings it"},
    {.name = "ping-timeout",
     .type = MDB_CONF_INT,
     .default_value = "10",
     .min = 1,
     .max = 3600,
     .help = "seconds a pinged client has to answer before it is closed"},
    {.name = "socket-buffer",
     .type = MDB_CONF_INT,
     .default_value = "131072",
     .min = 0,
     .max = 64 * 1024 * 1024,
     .help = "kernel send buffer per connection in bytes (0: the kernel's autotuning); bounds "
             "what a stalled client can hold before it counts as slow"},
    {.name = "max-connections",
     .type = MDB_CONF_INT,
     .default_value = "10000",
     .min = 1,
     .max = 1000000,
     .help = "open WebSocket connections at most (503 beyond)"},
    MDB_CONF_END};

static int wsp_init(mdb_ctx *ctx)
{
    wsp *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    mdb_ctx_set_data(ctx, m); /* freed in wsp_destroy */
    m->ctx = ctx;
    m->ep = m->efd = -1;
    pthread_mutex_init(&m->ring_mx, NULL);
    pthread_mutex_init(&m->in_mx, NULL);
    pthread_cond_init(&m->in_cv, NULL);
    m->auth = mdb_service_get(ctx, MDB_AUTH_SERVICE, sizeof(mdb_auth_service), &m->auth_self);
    if (!m->auth) {
        mdb_log(ctx, MDB_LOG_ERROR, "no usable 'auth' service: /ws cannot authenticate");
        return -ENOENT;
    }
    m->max_msg = (size_t)mdb_conf_int(ctx, "max-message");
    m->auth_timeout_ms = mdb_conf_int(ctx, "auth-timeout") * 1000;
    m->revoke_ms = mdb_conf_int(ctx, "revoke-interval") * 1000;
    m->ping_ms = mdb_conf_int(ctx, "ping-interval") * 1000;
    m->ping_timeout_ms = mdb_conf_int(ctx, "ping-timeout") * 1000;
    m->queue_max = (uint64_t)mdb_conf_int(ctx, "queue-size");
    m->ring_keep = (uint64_t)mdb_conf_int(ctx, "ring-size");
    m->max_conns = (size_t)mdb_conf_int(ctx, "max-connections");
    m->sndbuf = (int)mdb_conf_int(ctx, "socket-buffer");
    /* The ring holds the RESUME window and every subscriber's backlog. */
    m->ring_len = (m->ring_keep > m->queue_max ? m->ring_keep : m->queue_max) + 1;
    m->ring = calloc(m->ring_len, sizeof *m->ring);
    if (!m->ring)
        return -ENOMEM;
    /* Ids start at the boot time in microseconds: ids from an earlier run
     * are always older than this run's ring, so RESUME across a restart
     * reports a gap instead of replaying the wrong events. */
    m->id_base = (uint64_t)mdb_now_ms() * 1000;
    m->ring_first = m->id_base;
    atomic_store(&m->next_id, m->id_base);
    /* Metrics are for operators; the feed works without them. */
    mdb_metric_label why = {"reason", wsp_why};
    if (mdb_metric_gauge(ctx, "ws_connections", "Open WebSocket connections on /ws", NULL, 0,
                         &m->mx_conns) ||
        mdb_metric_gauge(ctx, "ws_subscribers", "Authenticated WebSocket subscribers", NULL, 0,
                         &m->mx_subs) ||
        mdb_metric_counter(ctx, "ws_events_total", "Change events produced by commits", NULL, 0,
                           &m->mx_events) ||
        mdb_metric_counter(ctx, "ws_events_sent_total",
                           "Change events queued to subscribers (one per subscriber and event)",
                           NULL, 0, &m->mx_sent) ||
        mdb_metric_counter(ctx, "ws_closed_total",
                           "WebSocket connections the server closed, by reason", &why, 1,
                           &m->mx_closed))
        mdb_log(ctx, MDB_LOG_WARN, "some ws-push metrics could not be registered");
    int rc = mdb_route_add(ctx, MDB_METHOD_GET, "/ws", MDB_ROUTE_PUBLIC, wsp_route, m);
    if (!rc)
        rc = mdb_hook_commit(ctx, 50, wsp_on_commit, m);
    if (!rc)
        rc = mdb_hook_shutdown(ctx, 0, wsp_on_shutdown, m);
    return rc;
}

static int wsp_start(mdb_ctx *ctx)
{
    wsp *m = mdb_ctx_data(ctx);
    m->ep = epoll_create1(EPOLL_CLOEXEC);
    m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m->ep < 0 || m->efd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
    if (epoll_ctl(m->ep, EPOLL_CTL_ADD, m->efd, &ev))
        return -errno;
    int rc = pthread_create(&m->th, NULL, io_main, m);
    if (rc)
        return -rc;
    pthread_setname_np(m->th, "ws-push"); /* for top -H and perf */
    m->th_running = true;
    return 0;
}

static void wsp_stop(mdb_ctx *ctx)
{
    wsp *m = mdb_ctx_data(ctx);
    if (!m || !m->th_running)
        return;
    atomic_store(&m->stopping, 2);
    uint64_t one = 1;
    ssize_t w = write(m->efd, &one, sizeof one);
    (void)w;
    pthread_join(m->th, NULL);
    m->th_running = false;
    /* Connections handed over after the thread left. */
    while (m->incoming) {
        wsp_conn *c = m->incoming;
        m->incoming = c->next;
        mdb_upgrade_close(c->u);
        conn_free(c);
    }
    mdb_log(
        ctx, MDB_LOG_INFO, "stopped: %llu events, %llu deliveries, %llu slow subscribers dropped",
        (unsigned long long)atomic_load(&m->n_events), (unsigned long long)atomic_load(&m->n_sent),
        (unsigned long long)atomic_load(&m->n_dropped));
}

static void wsp_destroy(mdb_ctx *ctx)
{
    wsp *m = mdb_ctx_data(ctx);
    if (!m)
        return;
    if (m->ring) {
        for (uint64_t i = 0; i < m->ring_len; i++)
            free(atomic_load(&m->ring[i]));
        free(m->ring);
    }
    gc_free(m);
    if (m->ep >= 0)
        close(m->ep);
    if (m->efd >= 0)
        close(m->efd);
    pthread_mutex_destroy(&m->ring_mx);
    pthread_mutex_destroy(&m->in_mx);
    pthread_cond_destroy(&m->in_cv);
    free(m);
}

static const char *const wsp_requires[] = {MDB_AUTH_SERVICE, NULL};

MDB_MODULE_DEFINE(.name = "ws-push", .version = "1.0",
                  .description = "real-time change feed over WebSocket (GET /ws)",
                  .config = wsp_conf, .requires = wsp_requires, .init = wsp_init,
                  .start = wsp_start, .stop = wsp_stop, .destroy = wsp_destroy);
