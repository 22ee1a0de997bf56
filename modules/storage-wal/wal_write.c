/* storage-wal: rendering records as lines and writing snapshot files
 * (wal_file.h; README.md, "Format" and "Snapshots"). */
#include "wal_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
