/*
 * ceiling: the smallest libmicrohttpd server that answers every request
 * (after reading its body) with one fixed 200-byte JSON body. Measured with
 * the same load settings as moltendb, it is the ceiling our HTTP layer
 * could reach on this machine.
 *
 *   ceiling [-p PORT] [-t THREADS]
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char body[] =
    "{\"_key\":\"k12345\",\"name\":\"item-12345\",\"group\":45,\"price\":1234,\"in_stock\":true,"
    "\"tags\":[\"alpha\",\"beta\"],\"description\":\"a benchmark document of about two "
    "hundred bytes\",\"rating\":4.5,\"_v\":1}";

static struct MHD_Response *resp;

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    if (!*con_cls) {
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* read and dropped, like a handler that parsed it */
        return MHD_YES;
    }
    return MHD_queue_response(c, 200, resp);
}

int main(int argc, char **argv)
{
    int port = 18081, threads = 1, opt;
    while ((opt = getopt(argc, argv, "p:t:")) != -1) {
        if (opt == 'p')
            port = atoi(optarg);
        else if (opt == 't')
            threads = atoi(optarg);
        else {
            fprintf(stderr, "usage: ceiling [-p PORT] [-t THREADS]\n");
            return 2;
        }
    }
    resp = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, on_access,
        NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(threads > 1 ? threads : 1),
        MHD_OPTION_CONNECTION_LIMIT, 10000u, MHD_OPTION_END);
    if (!d) {
        perror("MHD_start_daemon");
        return 1;
    }
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    sigprocmask(SIG_BLOCK, &s, NULL);
    int sig;
    sigwait(&s, &sig);
    MHD_stop_daemon(d);
    MHD_destroy_response(resp);
    return 0;
}
