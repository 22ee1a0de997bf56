/* storage-wal: file headers, the keyring, the line reader and opening a
 * file (wal_file.h; the format: README.md, "Format"). Replay is in
 * wal_replay.c, writing in wal_write.c. */
#include "wal_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- opening a file ----------------------------------------------------------- */
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
