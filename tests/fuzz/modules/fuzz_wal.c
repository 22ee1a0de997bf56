/*
 * Fuzz target for storage-wal's reading side: the input is a whole log or
 * snapshot file. Each line goes through the line decoder (wal_parse_line),
 * and a decoded line that is rendered again must decode to the same fields;
 * then the file is opened (header parsing) and replayed into a fresh
 * in-memory store, once stopping at the first bad line and once skipping
 * bad lines as --skip-corrupt does. Refusals must say why. The file lives
 * in an anonymous memory file; nothing is kept between inputs.
 *
 * Encrypted files use the default password. Headers that ask for a costly
 * key derivation (more than tiny Argon2id limits) are parsed but not
 * replayed, so one input cannot take seconds.
 *
 * Corpus: corpus/wal/ (tests/fuzz/README.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "fuzz.h"
#include "wal_file.h"

/* Argon2id limits the corpus's encrypted seeds use (libsodium's minimum). */
#define FUZZ_MAX_OPS 1
#define FUZZ_MAX_MEM 8192

static bool plain_cmd(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || *s == '_'))
            return false;
    return true;
}

/* Decode one line; what decodes and is re-rendered decodes the same. */
static void check_line(const char *line, size_t len, mdb_buf *scratch)
{
    wal_line l;
    const char *why = NULL;
    if (wal_parse_line(line, len, &l, scratch, &why) != 0) {
        FUZZ_CHECK(why != NULL);
        return;
    }
    FUZZ_CHECK(l.cmd[0] && strlen(l.cmd) < sizeof l.cmd);
    FUZZ_CHECK(l.coll && l.value && l.value_len > 0);
    mdb_buf enc;
    mdb_buf_init(&enc);
    const char *vwhy;
    /* wal_render() wants a JSON value and a command of plain capitals. */
    if (plain_cmd(l.cmd) && mdb_encode_json_text(l.value, l.value_len, &enc, &vwhy) == 0) {
        mdb_buf again, scratch2;
        mdb_buf_init(&again);
        mdb_buf_init(&scratch2);
        wal_render(&again, l.cmd, l.coll, l.coll_len, l.key, l.key_len, l.value, l.value_len, l.ts);
        wal_line m;
        FUZZ_CHECK(!again.oom && wal_parse_line(again.data, again.len, &m, &scratch2, &vwhy) == 0);
        FUZZ_CHECK(strcmp(m.cmd, l.cmd) == 0 && m.ts == l.ts);
        FUZZ_CHECK(m.coll_len == l.coll_len && memcmp(m.coll, l.coll, l.coll_len) == 0);
        FUZZ_CHECK((m.key == NULL) == (l.key == NULL));
        FUZZ_CHECK(!l.key || (m.key_len == l.key_len && memcmp(m.key, l.key, l.key_len) == 0));
        mdb_buf enc2;
        mdb_buf_init(&enc2);
        FUZZ_CHECK(mdb_encode_json_text(m.value, m.value_len, &enc2, &vwhy) == 0);
        FUZZ_CHECK(mdb_val_equal(mdb_val_at(&enc, 0), mdb_val_at(&enc2, 0)));
        mdb_buf_free(&enc2);
        mdb_buf_free(&again);
        mdb_buf_free(&scratch2);
    }
    mdb_buf_free(&enc);
}

static void replay(const char *path, bool skip_corrupt)
{
    mdb_store *s = mdb_store_new();
    if (!s)
        return;
    wal_keyring kr = {.password = WAL_DEFAULT_PASSWORD};
    wal_replay rp = {.store = s, .keys = &kr, .skip_corrupt = skip_corrupt};
    wal_header h;
    wal_reader rd;
    int fd = -1;
    int rc = wal_file_open(&rp, path, &h, &fd, &rd);
    if (rc < 0) {
        FUZZ_CHECK(rp.why[0] != 0);
    } else {
        if (rc == 0 &&
            (!h.encrypted || (h.opslimit <= FUZZ_MAX_OPS && h.memlimit <= FUZZ_MAX_MEM))) {
            rc = wal_replay_rest(&rp, path, &h, &rd, 0);
            FUZZ_CHECK(rc <= 0);
            if (rc < 0)
                FUZZ_CHECK(rp.why[0] != 0);
            else
                FUZZ_CHECK(rp.good_end <= rp.file_size);
        }
        wal_reader_free(&rd);
        close(fd);
    }
    wal_keyring_wipe(&kr);
    mdb_store_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    core_log_set_level(MDB_LOG_ERROR);
    mdb_buf scratch;
    mdb_buf_init(&scratch);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        check_line(p, (size_t)(e - p), &scratch);
        p = e + 1;
    }
    mdb_buf_free(&scratch);

    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0)
        return 0;
    replay(path, false);
    replay(path, true);
    close(fd);
    return 0;
}
