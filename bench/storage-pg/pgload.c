/*
 * pgload: load generator for the storage-pg benchmark (not a test).
 *
 *   pgload set  HOST PORT TOKEN CLIENTS SECONDS TAG
 *       POST /set of one ~200-byte document per request (keys TAG<client>_<i>),
 *       CLIENTS keep-alive connections, one thread each.
 *   pgload get  HOST PORT TOKEN CLIENTS SECONDS NKEYS
 *       POST /get of one random key among k0..k<NKEYS-1> per request.
 *   pgload lag  HOST_A PORT_A HOST_B PORT_B TOKEN SAMPLES
 *       write a new key on A; once A acknowledged it, ask B for it in a tight
 *       loop: the time until B answers 200 is the replication lag.
 * set and get print requests/s and latency percentiles; lag prints p50/p99.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One keep-alive POST; the HTTP status, or -1 when the connection failed. */
static int post(int fd, const char *host, const char *path, const char *token, const char *body)
{
    char req[2048], resp[16384];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, host, token, strlen(body), body);
    if (n <= 0 || n >= (int)sizeof req || write(fd, req, (size_t)n) != n)
        return -1;
    size_t got = 0;
    long want = -1;
    while (want < 0 || (long)got < want) {
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        resp[got] = 0;
        const char *end = strstr(resp, "\r\n\r\n");
        if (end && want < 0) {
            const char *cl = strcasestr(resp, "content-length:");
            want = (long)(end + 4 - resp) + (cl ? atol(cl + 15) : 0);
        }
        if (got >= sizeof resp - 1)
            return -1;
    }
    return atoi(resp + 9);
}

typedef struct job {
    const char *mode, *host, *token, *tag;
    int port;
    long nkeys;
    double until;
} job;

static atomic_long n_ok, n_err, n_lat;
static float *lat;
#define LAT_CAP 4000000L

static void note(double t0, int status)
{
    atomic_fetch_add(status == 200 ? &n_ok : &n_err, 1);
    long k = atomic_fetch_add(&n_lat, 1);
    if (k < LAT_CAP)
        lat[k] = (float)((mono() - t0) * 1e3);
}

static void *worker(void *arg)
{
    const job *j = arg;
    static atomic_long ids;
    long id = atomic_fetch_add(&ids, 1);
    int fd = dial(j->host, j->port);
    if (fd < 0)
        return NULL;
    char body[512], pad[161];
    memset(pad, 'x', 160);
    pad[160] = 0;
    unsigned seed = (unsigned)id * 2654435761u + 1;
    for (long i = 0; mono() < j->until; i++) {
        if (j->mode[0] == 's')
            snprintf(body, sizeof body,
                     "{\"collection\":\"bench\",\"data\":{\"%s%ld_%ld\":{\"n\":%ld,\"p\":\"%s\"}}}",
                     j->tag, id, i, i, pad);
        else
            snprintf(body, sizeof body, "{\"collection\":\"bench\",\"keys\":\"k%ld\"}",
                     (long)(rand_r(&seed) % j->nkeys));
        double t0 = mono();
        int st = post(fd, j->host, j->mode[0] == 's' ? "/set" : "/get", j->token, body);
        if (st < 0)
            break;
        note(t0, st);
    }
    close(fd);
    return NULL;
}

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, double secs)
{
    long n = atomic_load(&n_lat) < LAT_CAP ? atomic_load(&n_lat) : LAT_CAP;
    qsort(lat, (size_t)n, sizeof *lat, cmpf);
    printf("%s ok=%ld errors=%ld req/s=%.0f p50_ms=%.3f p99_ms=%.3f\n", what, atomic_load(&n_ok),
           atomic_load(&n_err), (double)atomic_load(&n_ok) / secs, n ? lat[n / 2] : 0.0,
           n ? lat[n * 99 / 100] : 0.0);
}

static int run_load(char **argv)
{
    int clients = atoi(argv[5]);
    double secs = atof(argv[6]);
    job j = {.mode = argv[1], .host = argv[2], .port = atoi(argv[3]), .token = argv[4]};
    if (argv[1][0] == 's')
        j.tag = argv[7];
    else
        j.nkeys = atol(argv[7]) > 0 ? atol(argv[7]) : 1;
    lat = malloc(sizeof *lat * LAT_CAP);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    if (!lat || !th)
        return 1;
    double t0 = mono();
    j.until = t0 + secs;
    for (int i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, worker, &j);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    char what[64];
    snprintf(what, sizeof what, "%s clients=%d", argv[1], clients);
    report(what, mono() - t0);
    return 0;
}

static int run_lag(char **argv)
{
    const char *ha = argv[2], *hb = argv[4], *token = argv[6];
    int samples = atoi(argv[7]);
    int fa = dial(ha, atoi(argv[3])), fb = dial(hb, atoi(argv[5]));
    lat = malloc(sizeof *lat * (size_t)(samples > 0 ? samples : 1));
    if (fa < 0 || fb < 0 || !lat)
        return 1;
    char body[256];
    int n = 0, polls = 0;
    for (int i = 0; i < samples; i++) {
        snprintf(body, sizeof body, "{\"collection\":\"lag\",\"data\":{\"l%d\":{\"n\":%d}}}", i, i);
        if (post(fa, ha, "/set", token, body) != 200)
            return 1;
        double t0 = mono();
        snprintf(body, sizeof body, "{\"collection\":\"lag\",\"keys\":\"l%d\"}", i);
        int st;
        while ((st = post(fb, hb, "/get", token, body)) == 404)
            polls++;
        if (st != 200)
            return 1;
        lat[n++] = (float)((mono() - t0) * 1e3);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmpf);
    printf("lag samples=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f polls=%d\n", n, lat[n / 2],
           lat[n * 99 / 100], lat[n - 1], polls);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 8 && (strcmp(argv[1], "set") == 0 || strcmp(argv[1], "get") == 0))
        return run_load(argv);
    if (argc >= 8 && strcmp(argv[1], "lag") == 0)
        return run_lag(argv);
    fprintf(stderr, "usage: pgload set HOST PORT TOKEN CLIENTS SECONDS TAG\n"
                    "       pgload get HOST PORT TOKEN CLIENTS SECONDS NKEYS\n"
                    "       pgload lag HOST_A PORT_A HOST_B PORT_B TOKEN SAMPLES\n");
    return 2;
}
