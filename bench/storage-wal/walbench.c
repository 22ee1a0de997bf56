/*
 * walbench: load generator for the storage-wal benchmark (not a test).
 *
 *   walbench http HOST PORT TOKEN CLIENTS SECONDS   POST /set, one ~200-byte
 *       document per request, CLIENTS keep-alive connections (one thread
 *       each); prints requests/s and latency percentiles.
 *   walbench fsync DIR SECONDS   200-byte appends, fdatasync after each:
 *       the raw durable-write rate of the disk holding DIR.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *host, *token;
static int port;
static double deadline;
static atomic_long total_ok, total_err;

#define MAXLAT 2000000
static float *lat;
static atomic_long nlat;

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void *client(void *arg)
{
    long id = (long)arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char body[512], req[1024], resp[8192];
    char payload[161];
    memset(payload, 'x', 160);
    payload[160] = 0;
    for (long i = 0; now_s() < deadline; i++) {
        int bl =
            snprintf(body, sizeof body,
                     "{\"collection\":\"bench\",\"data\":{\"c%ld_%ld\":{\"n\":%ld,\"p\":\"%s\"}}}",
                     id, i, i, payload);
        int rl = snprintf(req, sizeof req,
                          "POST /set HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          host, token, bl, body);
        double t0 = now_s();
        if (write(fd, req, (size_t)rl) != rl)
            break;
        size_t got = 0;
        long need = -1;
        for (;;) {
            ssize_t n = read(fd, resp + got, sizeof resp - 1 - got);
            if (n <= 0)
                goto done;
            got += (size_t)n;
            resp[got] = 0;
            char *he = strstr(resp, "\r\n\r\n");
            if (he && need < 0) {
                char *cl = strcasestr(resp, "content-length:");
                need = (long)(he + 4 - resp) + (cl ? atol(cl + 15) : 0);
            }
            if (need >= 0 && (long)got >= need)
                break;
        }
        if (strncmp(resp, "HTTP/1.1 200", 12) == 0)
            atomic_fetch_add(&total_ok, 1);
        else
            atomic_fetch_add(&total_err, 1);
        long k = atomic_fetch_add(&nlat, 1);
        if (k < MAXLAT)
            lat[k] = (float)((now_s() - t0) * 1000.0);
    }
done:
    close(fd);
    return NULL;
}

static int run_http(int argc, char **argv)
{
    if (argc < 7)
        return 2;
    host = argv[2];
    port = atoi(argv[3]);
    token = argv[4];
    int clients = atoi(argv[5]);
    double secs = atof(argv[6]);
    lat = malloc(sizeof *lat * MAXLAT);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    double t0 = now_s();
    deadline = t0 + secs;
    for (long i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, client, (void *)i);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    double el = now_s() - t0;
    long n = atomic_load(&nlat) < MAXLAT ? atomic_load(&nlat) : MAXLAT;
    qsort(lat, (size_t)n, sizeof *lat, cmpf);
    printf("clients=%d ok=%ld errors=%ld req/s=%.0f p50_ms=%.3f p99_ms=%.3f\n", clients,
           atomic_load(&total_ok), atomic_load(&total_err), (double)atomic_load(&total_ok) / el,
           n ? lat[n / 2] : 0.0, n ? lat[n * 99 / 100] : 0.0);
    return 0;
}

static int run_fsync(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/walbench-fsync.dat", argv[2]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char rec[200];
    memset(rec, 'r', sizeof rec);
    rec[199] = '\n';
    double t0 = now_s(), end = t0 + atof(argv[3]);
    long n = 0;
    while (now_s() < end) {
        if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec || fdatasync(fd) != 0) {
            perror("write/fdatasync");
            return 1;
        }
        n++;
    }
    double el = now_s() - t0;
    close(fd);
    unlink(path);
    printf("fdatasync/s=%.0f\n", (double)n / el);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc > 1 && strcmp(argv[1], "http") == 0)
        rc = run_http(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "fsync") == 0)
        rc = run_fsync(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: walbench http HOST PORT TOKEN CLIENTS SECONDS | "
                        "walbench fsync DIR SECONDS\n");
    return rc;
}
