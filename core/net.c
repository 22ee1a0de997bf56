/*
 * IP addresses and networks for the SDK (include/moltendb/http.h): the
 * per-address connection limit of the core and the trusted-proxy list of
 * auth modules share one parser. IPv4 is held as IPv4-mapped IPv6.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

bool mdb_ip_parse(const char *s, unsigned char out[16])
{
    unsigned char v4[4];
    if (inet_pton(AF_INET, s, v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, s, out) == 1;
}

bool mdb_net_parse(const char *s, mdb_net *out)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (!n || n >= sizeof ip)
        return false;
    memcpy(ip, s, n);
    ip[n] = 0;
    if (!mdb_ip_parse(ip, out->addr))
        return false;
    bool v4 = strchr(ip, ':') == NULL;
    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash) {
        const char *d = slash + 1;
        if (!*d || strlen(d) > 3)
            return false;
        bits = 0;
        for (; *d; d++) {
            if (*d < '0' || *d > '9')
                return false;
            bits = bits * 10 + (unsigned)(*d - '0');
        }
        if (bits > max)
            return false;
    }
    out->bits = v4 ? 96 + bits : bits;
    return true;
}

bool mdb_net_contains(const mdb_net *n, const unsigned char ip[16])
{
    unsigned full = n->bits / 8, rest = n->bits % 8;
    if (memcmp(n->addr, ip, full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (n->addr[full] & mask) == (ip[full] & mask);
}

int mdb_net_list_parse(const char *list, mdb_net **out, size_t *count)
{
    mdb_net *nets = NULL;
    size_t k = 0;
    int rc = 0;
    for (const char *p = list ? list : ""; *p && !rc;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t t = n;
        while (t && p[t - 1] == ' ')
            t--;
        if (t) {
            char ip[64];
            mdb_net net;
            mdb_net *grown = NULL;
            if (t >= sizeof ip)
                rc = -EINVAL;
            if (!rc) {
                memcpy(ip, p, t);
                ip[t] = 0;
                rc = mdb_net_parse(ip, &net) ? 0 : -EINVAL;
            }
            if (!rc && !(grown = realloc(nets, (k + 1) * sizeof *nets)))
                rc = -ENOMEM;
            if (!rc) {
                nets = grown;
                nets[k++] = net;
            }
        }
        p += n;
    }
    if (rc) {
        free(nets);
        nets = NULL;
        k = 0;
    }
    *out = nets;
    *count = k;
    return rc;
}
