/*
 * ws-push fan-out benchmark (bench/ws-push/README.md): N WebSocket
 * subscribers on one epoll thread, W writer threads doing POST /set of one
 * document each on a keep-alive connection as fast as they can.
 *
 *   wsbench HOST PORT WRITER_TOKEN TOKENS_FILE SECONDS WRITERS
 *
 * TOKENS_FILE: one subscriber per line, "<kind> <n> <token>": kind 0 sees
 * every event (admin or collection read), 1 sees keys "g<n>-*" (prefix
 * scope), 2 sees the one key of write number n (key scope). Writes are
 * numbered i = 0, 1, ... and use key "g<i%10>-<i>" in collection "bench".
 *
 * Checks every subscriber got exactly the events it may see, in id order,
 * and prints one JSON line: writes/s, fan-out latency (write acknowledged ->
 * event received) p50/p99/max in microseconds, lost and out-of-order counts,
 * and the CPU time of its own writer threads and subscriber reader. Prints
 * "LIVE" first, when every subscriber is authenticated and writing starts.
 *
 * WSBENCH_RT=1 in the environment: SCHED_FIFO for the writer (2) and the
 * reader (1), so that on a shared machine the load generator is not the
 * one waiting for a CPU. WSBENCH_RATE=N paces the writers at N writes/s in
 * all (default: as fast as they can).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITES (8u << 20)
#define HIST_US 1000000 /* 1 us buckets up to 1 s */

static const char *host;
static int port;
static const char *wtoken;
static _Atomic int64_t *t_ack; /* per write: monotonic us when acknowledged, 0 before */
static _Atomic uint64_t next_write;
static _Atomic int writers_stop;
/* Both set before the writer threads are created, read-only after. */
static double rate;    /* WSBENCH_RATE: writes per second in all, 0 = flat out */
static int64_t t_live; /* when the writers started (us) */
static uint64_t *hist;
static uint64_t hist_over;

static _Atomic int64_t writer_cpu_us; /* CPU time of the writer threads */

static int64_t thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            perror("send");
            exit(2);
        }
        p = (const char *)p + w;
        n -= (size_t)w;
    }
}

/* With WSBENCH_RT set: real-time priority (SCHED_FIFO) so that the load
 * generator measures the server, not the other processes of a shared
 * machine; the writer (2) preempts the subscribers' reader (1) at once. */
static void set_rt(int prio)
{
    if (!getenv("WSBENCH_RT"))
        return;
    struct sched_param sp = {.sched_priority = prio};
    int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (rc) {
        fprintf(stderr, "SCHED_FIFO: %s\n", strerror(rc));
        exit(2);
    }
}

/* ---- writers ------------------------------------------------------------------------ */
static void *writer_main(void *arg)
{
    (void)arg;
    set_rt(2);
    int fd = dial();
    char req[4096], body[256], resp[8192];
    while (!atomic_load(&writers_stop)) {
        uint64_t i = atomic_fetch_add(&next_write, 1);
        if (i >= MAX_WRITES)
            break;
        if (rate > 0) {
            /* paced: write i is due i / rate seconds after the start */
            int64_t wait = t_live + (int64_t)((double)i * 1e6 / rate) - now_us();
            if (wait > 0) {
                struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
                nanosleep(&ts, NULL);
            }
        }
        int bl = snprintf(body, sizeof body,
                          "{\"collection\":\"bench\",\"data\":{\"g%u-%llu\":{\"i\":%llu}}}",
                          (unsigned)(i % 10), (unsigned long long)i, (unsigned long long)i);
        int rl = snprintf(req, sizeof req,
                          "POST /set HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          wtoken, bl, body);
        send_all(fd, req, (size_t)rl);
        size_t got = 0;
        for (;;) {
            /* no delayed ACK: the reply may come in two segments */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
            ssize_t n = recv(fd, resp + got, sizeof resp - 1 - got, 0);
            if (n <= 0) {
                fprintf(stderr, "writer: connection lost\n");
                exit(2);
            }
            got += (size_t)n;
            resp[got] = 0;
            char *e = strstr(resp, "\r\n\r\n");
            if (!e)
                continue;
            char *cl = strcasestr(resp, "Content-Length:");
            size_t blen = cl ? strtoul(cl + 15, NULL, 10) : 0;
            if (got >= (size_t)(e + 4 - resp) + blen)
                break;
        }
        if (strncmp(resp, "HTTP/1.1 200", 12) != 0) {
            fprintf(stderr, "writer: %.200s\n", resp);
            exit(2);
        }
        atomic_store(&t_ack[i], now_us());
    }
    close(fd);
    atomic_fetch_add(&writer_cpu_us, thread_cpu_us());
    return NULL;
}

/* ---- subscribers ------------------------------------------------------------------ */
typedef struct sub {
    int fd;
    int kind;
    uint64_t n;
    char *token;
    int state; /* 0 handshake, 1 auth sent, 2 live */
    char *buf;
    size_t len, cap;
    uint64_t got, last_id, disorder;
} sub;

static void sub_auth(sub *s)
{
    char msg[2048];
    int ml = snprintf(msg, sizeof msg, "{\"action\":\"AUTH\",\"token\":\"%s\"}", s->token);
    unsigned char f[2100];
    size_t o = 0;
    f[o++] = 0x81;
    if (ml < 126) {
        f[o++] = (unsigned char)(0x80 | ml);
    } else {
        f[o++] = 0x80 | 126;
        f[o++] = (unsigned char)(ml >> 8);
        f[o++] = (unsigned char)ml;
    }
    unsigned char mk[4] = {1, 2, 3, 4};
    memcpy(f + o, mk, 4);
    o += 4;
    for (int i = 0; i < ml; i++)
        f[o + (size_t)i] = (unsigned char)msg[i] ^ mk[i & 3];
    send_all(s->fd, f, o + (size_t)ml);
    s->state = 1;
}

static uint64_t parse_u64(const char *p, const char *end, const char **after)
{
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *after = p;
    return v;
}

/* The server's change event, members in its order:
 * {"collection":"bench","event":"change","id":N,"key":"gD-I","new_v":...}.
 * Parsed by position (the client must stay cheap: it reads every delivery
 * of 1,000 subscribers); anything else is an error. */
static const char ev_prefix[] = "{\"collection\":\"bench\",\"event\":\"change\",\"id\":";

static void on_event(sub *s, const char *p, size_t n, int64_t t)
{
    const size_t pl = sizeof ev_prefix - 1;
    const char *end = p + n, *q;
    if (n < pl + 12 || memcmp(p, ev_prefix, pl) != 0)
        goto bad;
    uint64_t idv = parse_u64(p + pl, end, &q);
    if (end - q < 12 || memcmp(q, ",\"key\":\"g", 9) != 0 || q[10] != '-')
        goto bad;
    uint64_t i = parse_u64(q + 11, end, &q);
    if (s->last_id && idv <= s->last_id)
        s->disorder++;
    s->last_id = idv;
    s->got++;
    int64_t a = i < MAX_WRITES ? atomic_load_explicit(&t_ack[i], memory_order_relaxed) : 0;
    int64_t lat = a ? t - a : 0; /* event before the ack: 0 */
    if (lat < 0)
        lat = 0;
    if (lat < HIST_US)
        hist[lat]++;
    else
        hist_over++;
    return;
bad:
    fprintf(stderr, "unexpected message: %.*s\n", (int)n, p);
    exit(2);
}

static int sub_input(sub *s, int64_t t)
{
    size_t off = 0;
    if (s->state == 0) {
        char *e = memmem(s->buf, s->len, "\r\n\r\n", 4);
        if (!e)
            return 0;
        if (strncmp(s->buf, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "handshake: %.200s\n", s->buf);
            exit(2);
        }
        off = (size_t)(e + 4 - s->buf);
        sub_auth(s);
    }
    int live_now = 0;
    for (;;) {
        unsigned char *b = (unsigned char *)s->buf + off;
        size_t n = s->len - off;
        if (n < 2)
            break;
        size_t hl = 2, pl = b[1] & 0x7f;
        if (pl == 126) {
            if (n < 4)
                break;
            pl = (size_t)b[2] << 8 | b[3];
            hl = 4;
        } else if (pl == 127) {
            if (n < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | b[2 + i];
            hl = 10;
        }
        if (n < hl + pl)
            break;
        const char *p = (const char *)b + hl;
        unsigned op = b[0] & 0x0f;
        if (op == 1 && s->state == 1) {
            if (!memmem(p, pl, "authenticated", 13)) {
                fprintf(stderr, "auth failed: %.*s\n", (int)pl, p);
                exit(2);
            }
            s->state = 2;
            live_now = 1;
        } else if (op == 1) {
            on_event(s, p, pl, t);
        } else if (op == 8) {
            fprintf(stderr, "subscriber closed by the server (%zu bytes)\n", pl);
            exit(2);
        } else if (op == 9) {
            unsigned char pong[6] = {0x8a, 0x80, 0, 0, 0, 0};
            send_all(s->fd, pong, sizeof pong);
        }
        off += hl + pl;
    }
    memmove(s->buf, s->buf + off, s->len - off);
    s->len -= off;
    return live_now;
}

/* What subscriber s may see of the acknowledged writes. */
static uint64_t acked_all, acked_digit[10];

static void count_acked(uint64_t total)
{
    acked_all = 0;
    memset(acked_digit, 0, sizeof acked_digit);
    for (uint64_t w = 0; w < total; w++)
        if (atomic_load(&t_ack[w])) {
            acked_all++;
            acked_digit[w % 10]++;
        }
}

static uint64_t wanted(const sub *s, uint64_t total)
{
    if (s->kind == 0)
        return acked_all;
    if (s->kind == 1)
        return acked_digit[s->n % 10];
    return s->n < total && atomic_load(&t_ack[s->n]) != 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: wsbench HOST PORT WRITER_TOKEN TOKENS_FILE SECONDS WRITERS\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    wtoken = argv[3];
    double secs = atof(argv[5]);
    int nw = atoi(argv[6]);
    t_ack = calloc(MAX_WRITES, sizeof *t_ack);
    hist = calloc(HIST_US, sizeof *hist);
    FILE *f = fopen(argv[4], "r");
    if (!f || !t_ack || !hist) {
        perror("setup");
        return 2;
    }
    size_t ns = 0, cap = 0;
    sub *subs = NULL;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        int kind;
        unsigned long long n;
        char tok[3000];
        if (sscanf(line, "%d %llu %2999s", &kind, &n, tok) != 3)
            continue;
        if (ns == cap) {
            cap = cap ? cap * 2 : 64;
            subs = realloc(subs, cap * sizeof *subs);
        }
        subs[ns++] = (sub){.fd = -1, .kind = kind, .n = n, .token = strdup(tok)};
    }
    fclose(f);

    set_rt(1);
    int ep = epoll_create1(0);
    size_t live = 0;
    for (size_t i = 0; i < ns; i++) {
        sub *s = &subs[i];
        s->fd = dial();
        s->cap = 1 << 16;
        s->buf = malloc(s->cap);
        char req[512];
        int rl = snprintf(req, sizeof req,
                          "GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: "
                          "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n");
        send_all(s->fd, req, (size_t)rl);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
    struct epoll_event evs[256];
    int64_t reader_cpu0 = 0;
    int64_t t_start = 0, t_end = 0, deadline = now_us() + 60 * 1000000LL;
    pthread_t *wt = calloc((size_t)nw, sizeof *wt);
    int phase = ns ? 0 : 1; /* 0 connecting, 1 writing, 2 draining */
    for (;;) {
        int64_t t = now_us();
        if (phase == 1 && !t_start) {
            t_start = t;
            t_live = t;
            rate = getenv("WSBENCH_RATE") ? atof(getenv("WSBENCH_RATE")) : 0;
            reader_cpu0 = thread_cpu_us();
            /* run.py samples the server's CPU time from here on */
            printf("LIVE\n");
            fflush(stdout);
            for (int i = 0; i < nw; i++)
                pthread_create(&wt[i], NULL, writer_main, NULL);
        }
        if (phase == 1 && t - t_start >= (int64_t)(secs * 1e6)) {
            atomic_store(&writers_stop, 1);
            for (int i = 0; i < nw; i++)
                pthread_join(wt[i], NULL);
            t_end = now_us();
            phase = 2;
            uint64_t total = atomic_load(&next_write);
            count_acked(total > MAX_WRITES ? MAX_WRITES : total);
            deadline = t_end + 10 * 1000000LL;
        }
        if (phase == 2) {
            uint64_t total = atomic_load(&next_write);
            if (total > MAX_WRITES)
                total = MAX_WRITES;
            bool done = true;
            for (size_t i = 0; i < ns && done; i++)
                done = subs[i].got >= wanted(&subs[i], total);
            if (done || t > deadline)
                break;
        }
        if (phase == 0 && t > deadline) {
            fprintf(stderr, "only %zu of %zu subscribers authenticated\n", live, ns);
            return 2;
        }
        int n = epoll_wait(ep, evs, 256, 20);
        for (int i = 0; i < n; i++) {
            sub *s = evs[i].data.ptr;
            if (s->len == s->cap) {
                s->cap *= 2;
                s->buf = realloc(s->buf, s->cap);
            }
            ssize_t r = recv(s->fd, s->buf + s->len, s->cap - s->len, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                fprintf(stderr, "subscriber connection lost\n");
                return 2;
            }
            s->len += (size_t)r;
            if (sub_input(s, now_us()) && ++live == ns && phase == 0)
                phase = 1;
        }
    }
    /* verify */
    uint64_t total = atomic_load(&next_write);
    if (total > MAX_WRITES)
        total = MAX_WRITES;
    uint64_t acked = acked_all;
    uint64_t lost = 0, extra = 0, disorder = 0, deliveries = 0;
    for (size_t i = 0; i < ns; i++) {
        sub *s = &subs[i];
        uint64_t want = wanted(s, total);
        if (s->got < want)
            lost += want - s->got;
        else
            extra += s->got - want;
        disorder += s->disorder;
        deliveries += s->got;
    }
    uint64_t cnt = 0, p50 = 0, p99 = 0, mx = 0, acc = 0;
    for (size_t i = 0; i < HIST_US; i++)
        cnt += hist[i];
    cnt += hist_over;
    for (size_t i = 0; i < HIST_US; i++) {
        if (!hist[i])
            continue;
        acc += hist[i];
        if (!p50 && acc * 2 >= cnt)
            p50 = i;
        if (!p99 && acc * 100 >= cnt * 99)
            p99 = i;
        mx = i;
    }
    if (hist_over) {
        mx = HIST_US; /* 1 s or more */
        if (!p99)
            p99 = HIST_US;
        if (!p50)
            p50 = HIST_US;
    }
    double dur = (double)(t_end - t_start) / 1e6;
    double reader_cpu = (double)(thread_cpu_us() - reader_cpu0) / 1e6;
    printf("{\"subscribers\":%zu,\"writers\":%d,\"seconds\":%.2f,\"writes\":%llu,"
           "\"writes_per_s\":%.0f,\"deliveries\":%llu,\"lat_p50_us\":%llu,\"lat_p99_us\":%llu,"
           "\"lat_max_us\":%llu,\"lost\":%llu,\"extra\":%llu,\"out_of_order\":%llu,"
           "\"writer_cpu_s\":%.3f,\"reader_cpu_s\":%.3f}\n",
           ns, nw, dur, (unsigned long long)acked, acked / dur, (unsigned long long)deliveries,
           (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)mx,
           (unsigned long long)lost, (unsigned long long)extra, (unsigned long long)disorder,
           (double)atomic_load(&writer_cpu_us) / 1e6, ns ? reader_cpu : 0.0);
    return lost || disorder ? 1 : 0;
}
