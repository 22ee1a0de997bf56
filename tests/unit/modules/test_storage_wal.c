/* Unit tests of storage-wal: line codec, encryption, replay (torn tail,
 * corrupt middle, wrong key), snapshots and storage faults, against the
 * real core store. */
#include "mdb_cunit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core.h"
#include "wal.h"
#include "wal_codec.h"
#include "wal_file.h"

/* ---- helpers ------------------------------------------------------------------ */
static char tmpdir[256];

static void fresh_dir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test-wal-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
}

static char *path_in(const char *name)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", tmpdir, name);
    return p[i];
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    b[got] = 0;
    if (len)
        *len = got;
    return b;
}

static void spit(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fwrite(data, 1, len, f);
    fclose(f);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Cheap Argon2 limits: the tests check behaviour, not cost. */
static wal_opts opts(const char *password, bool encrypt, bool sync_mode)
{
    wal_opts o = {.db_path = path_in("db.log"),
                  .password = password,
                  .encrypt = encrypt,
                  .sync_mode = sync_mode,
                  .flush_ms = 5,
                  .opslimit = crypto_pwhash_OPSLIMIT_MIN,
                  .memlimit = crypto_pwhash_MEMLIMIT_MIN};
    return o;
}

typedef struct db {
    mdb_store *s;
    wal *w;
    int rc;
    const char *why;
} db;

/* Open a store with the wal attached (commits go through append). */
static db db_open(wal_opts o)
{
    db d = {0};
    d.s = mdb_store_new();
    d.w = wal_new(NULL, &o);
    CU_ASSERT_FATAL(d.s && d.w);
    d.rc = wal_service.open(d.w, d.s, &d.why);
    if (d.rc == 0)
        core_store_attach(d.s, &wal_service, d.w, false);
    return d;
}

static void db_close(db *d)
{
    if (d->w) {
        wal_service.close(d->w);
        wal_free(d->w);
    }
    mdb_store_free(d->s);
    memset(d, 0, sizeof *d);
}

static int put(db *d, const char *coll, const char *key, const char *json)
{
    mdb_write *w = mdb_write_begin(d->s, coll, strlen(coll));
    json_object *o = json_tokener_parse(json);
    int rc = mdb_write_put(w, key, strlen(key), o);
    json_object_put(o);
    const char *why = NULL;
    if (rc == 0)
        return mdb_write_commit(w, NULL, NULL, &why);
    mdb_write_abort(w);
    return rc;
}

/* The document's field as JSON text ("" when absent). */
static const char *field(db *d, const char *coll, const char *key, const char *name)
{
    static char out[256];
    out[0] = 0;
    mdb_read *r;
    if (mdb_read_begin(d->s, coll, strlen(coll), &r) != 0)
        return out;
    const mdb_doc *doc = mdb_read_get(r, key, strlen(key));
    if (doc) {
        mdb_buf b;
        mdb_buf_init(&b);
        if (strcmp(name, "_v") == 0)
            mdb_buf_printf(&b, "%lld", (long long)mdb_doc_version(doc));
        else if (strcmp(name, "_seq") == 0)
            mdb_buf_printf(&b, "%lld", (long long)mdb_doc_seq(doc));
        else
            mdb_val_to_json(mdb_val_member(mdb_doc_body(doc), name, strlen(name)), &b);
        mdb_buf_putc(&b, 0);
        snprintf(out, sizeof out, "%s", b.data);
        mdb_buf_free(&b);
    }
    mdb_read_end(r);
    return out;
}

static size_t count(db *d, const char *coll)
{
    mdb_read *r;
    if (mdb_read_begin(d->s, coll, strlen(coll), &r) != 0)
        return 0;
    size_t n = mdb_read_count(r);
    mdb_read_end(r);
    return n;
}

/* ---- codec ---------------------------------------------------------------------- */
static void t_render_parse_roundtrip(void)
{
    mdb_buf b, scratch;
    mdb_buf_init(&b);
    mdb_buf_init(&scratch);
    wal_render(&b, "INSERT", "users", 5, "u1", 2, "{\"a\":1,\"_t\":2}", 14, 1717000000123);
    wal_line l;
    const char *why = NULL;
    CU_ASSERT_EQUAL(wal_parse_line(b.data, b.len, &l, &scratch, &why), 0);
    CU_ASSERT_STRING_EQUAL(l.cmd, "INSERT");
    CU_ASSERT(l.coll_len == 5 && memcmp(l.coll, "users", 5) == 0);
    CU_ASSERT(l.key_len == 2 && memcmp(l.key, "u1", 2) == 0);
    /* A "_t" inside the value does not confuse the parser. */
    CU_ASSERT(l.value_len == 14 && memcmp(l.value, "{\"a\":1,\"_t\":2}", 14) == 0);
    CU_ASSERT_EQUAL(l.ts, 1717000000123);

    /* Escaped strings take the slow path and come back unescaped. */
    mdb_buf_reset(&b);
    wal_render(&b, "DELETE", "c\"1", 3, "k\\\n", 3, "null", 4, 5);
    CU_ASSERT_EQUAL(wal_parse_line(b.data, b.len, &l, &scratch, &why), 0);
    CU_ASSERT(l.coll_len == 3 && memcmp(l.coll, "c\"1", 3) == 0);
    CU_ASSERT(l.key_len == 3 && memcmp(l.key, "k\\\n", 3) == 0);
    CU_ASSERT(l.value_len == 4 && memcmp(l.value, "null", 4) == 0);
    CU_ASSERT_EQUAL(l.ts, 5);

    /* The API reference's format (no _t, other order) is accepted too. */
    const char *doc = "{\"value\":null,\"cmd\":\"DROP\",\"collection\":\"laptops\",\"key\":\"_\"}";
    CU_ASSERT_EQUAL(wal_parse_line(doc, strlen(doc), &l, &scratch, &why), 0);
    CU_ASSERT_STRING_EQUAL(l.cmd, "DROP");
    CU_ASSERT_EQUAL(l.ts, 0);

    const char *bad[] = {"",
                         "{",
                         "[1,2]",
                         "{\"cmd\":1,\"collection\":\"c\"}",
                         "{\"cmd\":\"INSERT\"}",
                         "{\"cmd\":\"INSERT\",\"collection\":\"c\"} x",
                         "{\"cmd\":\"INSERT\",\"collection\":\"c\",\"key\":\"k\",\"value\":{"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CU_ASSERT_EQUAL(wal_parse_line(bad[i], strlen(bad[i]), &l, &scratch, &why), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(why);
    }
    mdb_buf_free(&b);
    mdb_buf_free(&scratch);
}

static void t_encrypt_roundtrip_and_tamper(void)
{
    unsigned char salt[WAL_SALT_BYTES] = {1, 2, 3}, key[WAL_KEY_BYTES], other[WAL_KEY_BYTES];
    CU_ASSERT_EQUAL(
        wal_derive_key("pw-one", salt, crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN, key),
        0);
    CU_ASSERT_EQUAL(wal_derive_key("pw-two", salt, crypto_pwhash_OPSLIMIT_MIN,
                                   crypto_pwhash_MEMLIMIT_MIN, other),
                    0);
    CU_ASSERT(memcmp(key, other, sizeof key) != 0);
    const char *pt = "{\"cmd\":\"INSERT\",\"collection\":\"c\",\"key\":\"k\",\"value\":"
                     "{\"secret\":\"hunter2\"},\"_t\":1}";
    mdb_buf enc, scratch, out;
    mdb_buf_init(&enc);
    mdb_buf_init(&scratch);
    mdb_buf_init(&out);
    wal_seal_line(key, pt, strlen(pt), 42, &enc);
    CU_ASSERT_PTR_NULL(memmem(enc.data, enc.len, "hunter2", 7));
    wal_line l;
    const char *why;
    CU_ASSERT_EQUAL_FATAL(wal_parse_line(enc.data, enc.len, &l, &scratch, &why), 0);
    CU_ASSERT_STRING_EQUAL(l.cmd, "ENC");
    CU_ASSERT_EQUAL(l.ts, 42);
    CU_ASSERT_EQUAL(wal_open_value(key, l.value + 1, l.value_len - 2, &out), 0);
    CU_ASSERT(out.len == strlen(pt) && memcmp(out.data, pt, out.len) == 0);

    /* The same plaintext twice gives different lines (random nonce). */
    mdb_buf enc2;
    mdb_buf_init(&enc2);
    wal_seal_line(key, pt, strlen(pt), 42, &enc2);
    CU_ASSERT(enc.len != enc2.len || memcmp(enc.data, enc2.data, enc.len) != 0);

    /* Wrong key and every flipped ciphertext character fail authentication. */
    mdb_buf_reset(&out);
    CU_ASSERT_EQUAL(wal_open_value(other, l.value + 1, l.value_len - 2, &out), -EBADMSG);
    char *copy = malloc(l.value_len);
    int fails = 0, tries = 0;
    for (size_t i = 1; i + 3 < l.value_len; i += 7, tries++) {
        memcpy(copy, l.value, l.value_len);
        copy[i] = copy[i] == 'A' ? 'B' : 'A';
        mdb_buf_reset(&out);
        if (wal_open_value(key, copy + 1, l.value_len - 2, &out) != 0)
            fails++;
    }
    CU_ASSERT(tries > 5);
    CU_ASSERT_EQUAL(fails, tries);
    free(copy);

    /* Key check value. */
    mdb_buf chk;
    mdb_buf_init(&chk);
    wal_key_check_make(key, &chk);
    CU_ASSERT(wal_key_check_ok(key, chk.data, chk.len));
    CU_ASSERT(!wal_key_check_ok(other, chk.data, chk.len));
    mdb_buf_free(&chk);
    mdb_buf_free(&enc);
    mdb_buf_free(&enc2);
    mdb_buf_free(&scratch);
    mdb_buf_free(&out);
}

static void t_base64(void)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *exp[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    mdb_buf b, d;
    mdb_buf_init(&b);
    mdb_buf_init(&d);
    for (int i = 0; i < 7; i++) {
        mdb_buf_reset(&b);
        mdb_buf_reset(&d);
        wal_b64_encode((const unsigned char *)in[i], strlen(in[i]), &b);
        CU_ASSERT(b.len == strlen(exp[i]) && memcmp(b.data, exp[i], b.len) == 0);
        CU_ASSERT_EQUAL(wal_b64_decode(exp[i], strlen(exp[i]), &d), 0);
        CU_ASSERT(d.len == strlen(in[i]) && memcmp(d.data, in[i], d.len) == 0);
    }
    /* Random data agrees with libsodium's codec both ways. */
    for (int n = 0; n < 100; n++) {
        unsigned char bin[100];
        randombytes_buf(bin, (size_t)n);
        char ref[200];
        sodium_bin2base64(ref, sizeof ref, bin, (size_t)n, sodium_base64_VARIANT_ORIGINAL);
        mdb_buf_reset(&b);
        mdb_buf_reset(&d);
        wal_b64_encode(bin, (size_t)n, &b);
        CU_ASSERT(b.len == strlen(ref) && memcmp(b.data, ref, b.len) == 0);
        CU_ASSERT_EQUAL(wal_b64_decode(ref, strlen(ref), &d), 0);
        CU_ASSERT(d.len == (size_t)n && memcmp(d.data, bin, d.len) == 0);
    }
    const char *bad[] = {"Zg=", "Z===", "Zm9v!A==", "Zm 9", "=Zg="};
    for (int i = 0; i < 5; i++) {
        mdb_buf_reset(&d);
        CU_ASSERT_EQUAL(wal_b64_decode(bad[i], strlen(bad[i]), &d), -EINVAL);
    }
    mdb_buf_free(&b);
    mdb_buf_free(&d);
}

/* Mutated lines (flips, cuts, splices) never crash the parser or the
 * decryption and never decrypt (the sanitizer build checks the bounds). */
static void t_mutated_lines(void)
{
    unsigned char key[WAL_KEY_BYTES];
    randombytes_buf(key, sizeof key);
    mdb_buf seeds[3], scratch, out, m;
    for (int i = 0; i < 3; i++)
        mdb_buf_init(&seeds[i]);
    mdb_buf_init(&scratch);
    mdb_buf_init(&out);
    mdb_buf_init(&m);
    const char *doc = "{\"a\":[1,2.5,{\"b\":\"x\\\"y\"}],\"_v\":1}";
    wal_render(&seeds[0], "INSERT", "coll", 4, "key", 3, doc, strlen(doc), 1717000000000);
    wal_render(&seeds[1], "TX_BEGIN", "c\"q", 3, "12", 2, "3", 1, 5);
    wal_seal_line(key, seeds[0].data, seeds[0].len, 9, &seeds[2]);
    srand(12345);
    int parsed = 0, opened = 0;
    for (int iter = 0; iter < 30000; iter++) {
        const mdb_buf *src = &seeds[iter % 3];
        mdb_buf_reset(&m);
        mdb_buf_append(&m, src->data, src->len);
        int kind = rand() % 3, pos = rand() % (int)m.len;
        if (kind == 0) {
            m.data[pos] = (char)(rand() & 0xff);
        } else if (kind == 1) {
            m.len = (size_t)pos;
        } else { /* splice a random tail of another seed */
            const mdb_buf *o = &seeds[rand() % 3];
            size_t from = (size_t)rand() % o->len;
            m.len = (size_t)pos;
            mdb_buf_append(&m, o->data + from, o->len - from);
        }
        wal_line l;
        const char *why = NULL;
        if (wal_parse_line(m.data, m.len, &l, &scratch, &why) == 0) {
            parsed++;
            CU_ASSERT(l.value_len <= m.len + scratch.len);
            if (strcmp(l.cmd, "ENC") == 0 && l.value_len >= 2) {
                mdb_buf_reset(&out);
                if (wal_open_value(key, l.value + 1, l.value_len - 2, &out) == 0) {
                    /* Authenticated: whatever opens is exactly the original. */
                    CU_ASSERT(out.len == seeds[0].len &&
                              memcmp(out.data, seeds[0].data, out.len) == 0);
                    opened++;
                }
            }
        } else {
            CU_ASSERT_PTR_NOT_NULL(why);
        }
    }
    CU_ASSERT(parsed > 0);
    CU_ASSERT(opened > 0); /* mutations outside the value leave it intact */
    for (int i = 0; i < 3; i++)
        mdb_buf_free(&seeds[i]);
    mdb_buf_free(&scratch);
    mdb_buf_free(&out);
    mdb_buf_free(&m);
}

static void t_header_roundtrip(void)
{
    wal_header h = {.snapshot = true,
                    .gen = 0x0123456789abcdefULL,
                    .encrypted = true,
                    .opslimit = 2,
                    .memlimit = 65536,
                    .log_gen = 77,
                    .log_off = 12345};
    for (unsigned i = 0; i < WAL_SALT_BYTES; i++)
        h.salt[i] = (unsigned char)(i * 7);
    strcpy(h.check, "YWJj");
    mdb_buf b;
    mdb_buf_init(&b);
    wal_header_render(&h, &b);
    CU_ASSERT(b.len > 0 && b.data[b.len - 1] == '\n');
    wal_header g;
    const char *why = NULL;
    CU_ASSERT_EQUAL_FATAL(wal_header_parse(b.data, b.len - 1, &g, &why), 0);
    CU_ASSERT(g.snapshot && g.encrypted && g.gen == h.gen && g.log_gen == 77 &&
              g.log_off == 12345 && g.opslimit == 2 && g.memlimit == 65536);
    CU_ASSERT(memcmp(g.salt, h.salt, sizeof h.salt) == 0);
    CU_ASSERT_STRING_EQUAL(g.check, "YWJj");
    const char *notheader = "{\"cmd\":\"INSERT\",\"collection\":\"c\",\"key\":\"k\",\"value\":1}";
    CU_ASSERT_NOT_EQUAL(wal_header_parse(notheader, strlen(notheader), &g, &why), 0);
    mdb_buf_free(&b);
}

/* ---- the service against the real store ------------------------------------------ */
static void t_restart_keeps_data(void)
{
    fresh_dir();
    db d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(put(&d, "users", "u1", "{\"name\":\"alice-plaintext-marker\"}"), 0);
    CU_ASSERT_EQUAL(put(&d, "users", "u2", "{\"name\":\"bob\"}"), 0);
    CU_ASSERT_EQUAL(put(&d, "users", "u1", "{\"name\":\"alice2\"}"), 0);
    CU_ASSERT_EQUAL(put(&d, "other", "x", "{\"n\":1.5}"), 0);
    mdb_storage_stats st;
    wal_service.stats(d.w, &st);
    CU_ASSERT_STRING_EQUAL(st.mode, "async");
    CU_ASSERT_EQUAL(st.records, 5); /* the overwrite's batch logs the _seq counter (META) */
    CU_ASSERT_FALSE(st.read_only);
    db_close(&d);
    CU_ASSERT_EQUAL(file_size(path_in("db.log")) > 0, 1);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path_in("db.log"), &sb), 0);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    size_t len = 0;
    char *raw = slurp(path_in("db.log"), &len);
    CU_ASSERT_PTR_NULL(memmem(raw, len, "alice", 5));
    CU_ASSERT_PTR_NULL(memmem(raw, len, "users", 5));
    free(raw);

    d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_STRING_EQUAL(field(&d, "users", "u1", "name"), "\"alice2\"");
    CU_ASSERT_STRING_EQUAL(field(&d, "users", "u1", "_v"), "2");
    CU_ASSERT_STRING_EQUAL(field(&d, "users", "u1", "_seq"), "0");
    CU_ASSERT_STRING_EQUAL(field(&d, "users", "u2", "_seq"), "1");
    CU_ASSERT_STRING_EQUAL(field(&d, "other", "x", "n"), "1.5");
    /* New writes continue the sequence after replay, past the value the
     * overwrite of u1 used up (as they would have without the restart). */
    CU_ASSERT_EQUAL(put(&d, "users", "u3", "{\"name\":\"carol\"}"), 0);
    CU_ASSERT_STRING_EQUAL(field(&d, "users", "u3", "_seq"), "3");
    db_close(&d);
}

static void t_wrong_key_refuses(void)
{
    fresh_dir();
    db d = db_open(opts("right", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(put(&d, "c", "k", "{\"a\":1}"), 0);
    db_close(&d);
    off_t before = file_size(path_in("db.log"));
    d = db_open(opts("wrong", true, false));
    CU_ASSERT_EQUAL(d.rc, -EACCES);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d.why);
    CU_ASSERT_PTR_NOT_NULL(strstr(d.why, "encryption key does not match this database"));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.why, "db.log"));
    CU_ASSERT_EQUAL(count(&d, "c"), 0);
    db_close(&d);
    CU_ASSERT_EQUAL(file_size(path_in("db.log")), before);
    /* Plaintext settings on an encrypted log are refused too. */
    d = db_open(opts("right", false, false));
    CU_ASSERT_NOT_EQUAL(d.rc, 0);
    db_close(&d);
}

/* Append raw bytes to the log. */
static void append_raw(const char *data, size_t len)
{
    int fd = open(path_in("db.log"), O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void t_one_process_per_database(void)
{
    fresh_dir();
    db a = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(a.rc, 0);
    db b = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL(b.rc, -EBUSY);
    CU_ASSERT_PTR_NOT_NULL(b.why && strstr(b.why, "in use by another moltendb process"));
    db_close(&b);
    db_close(&a);
    b = db_open(opts(NULL, false, false)); /* released on close */
    CU_ASSERT_EQUAL(b.rc, 0);
    db_close(&b);
}

static void t_torn_tail_dropped(void)
{
    fresh_dir();
    db d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(put(&d, "c", "a", "{\"v\":1}"), 0);
    CU_ASSERT_EQUAL(put(&d, "c", "b", "{\"v\":2}"), 0);
    db_close(&d);
    off_t good = file_size(path_in("db.log"));
    const char torn[] = "{\"cmd\":\"INSERT\",\"collection\":\"c\",\"key\":\"z\",\"value\":{\"v\"";
    append_raw(torn, sizeof torn - 1);
    d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 2);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "z", "v"), "");
    /* The tail was cut, so new writes do not follow garbage. */
    CU_ASSERT_EQUAL(file_size(path_in("db.log")), good);
    CU_ASSERT_EQUAL(put(&d, "c", "d", "{\"v\":4}"), 0);
    db_close(&d);
    d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 3);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "d", "v"), "4");
    db_close(&d);

    /* An unfinished batch at the end (TX_BEGIN without TX_COMMIT) is dropped whole. */
    const char tx[] =
        "{\"cmd\":\"TX_BEGIN\",\"collection\":\"c\",\"key\":\"9\",\"value\":2,\"_t\":1}\n"
        "{\"cmd\":\"DELETE\",\"collection\":\"c\",\"key\":\"a\",\"value\":null,\"_t\":1}\n";
    append_raw(tx, sizeof tx - 1);
    d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 3);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "a", "v"), "1");
    db_close(&d);
}

/* Flip one character of line `n` (1-based) of the log. */
static void damage_line(int n)
{
    size_t len = 0;
    char *raw = slurp(path_in("db.log"), &len);
    char *p = raw;
    for (int i = 1; i < n; i++)
        p = strchr(p, '\n') + 1;
    char *mid = p + (strchr(p, '\n') - p) / 2;
    *mid = *mid == 'Q' ? 'R' : 'Q';
    spit(path_in("db.log"), raw, len);
    free(raw);
}

static void t_corrupt_middle_line(void)
{
    for (int enc = 0; enc < 2; enc++) {
        fresh_dir();
        db d = db_open(opts("pw", enc, false));
        CU_ASSERT_EQUAL_FATAL(d.rc, 0);
        CU_ASSERT_EQUAL(put(&d, "c", "a", "{\"v\":1}"), 0);
        CU_ASSERT_EQUAL(put(&d, "c", "b", "{\"v\":2}"), 0);
        CU_ASSERT_EQUAL(put(&d, "c", "c", "{\"v\":3}"), 0);
        db_close(&d);
        damage_line(3); /* header, a, [b], c */
        off_t before = file_size(path_in("db.log"));
        d = db_open(opts("pw", enc, false));
        CU_ASSERT_EQUAL(d.rc, -EINVAL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(d.why);
        CU_ASSERT_PTR_NOT_NULL(strstr(d.why, "db.log"));
        CU_ASSERT_PTR_NOT_NULL(strstr(d.why, "line 3"));
        db_close(&d);
        CU_ASSERT_EQUAL(file_size(path_in("db.log")), before);

        wal_opts o = opts("pw", enc, false);
        o.skip_corrupt = true;
        d = db_open(o);
        CU_ASSERT_EQUAL_FATAL(d.rc, 0);
        CU_ASSERT_STRING_EQUAL(field(&d, "c", "a", "v"), "1");
        CU_ASSERT_STRING_EQUAL(field(&d, "c", "b", "v"), "");
        CU_ASSERT_STRING_EQUAL(field(&d, "c", "c", "v"), "3");
        db_close(&d);
    }
}

static void t_snapshot_and_backup(void)
{
    fresh_dir();
    db d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    char key[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CU_ASSERT_EQUAL(put(&d, "c", key, "{\"v\":\"snapshot-secret\"}"), 0);
    }
    mdb_write *mw = mdb_write_begin(d.s, "c", 1);
    mdb_write_set_max_size(mw, 1000);
    mdb_write_set_schema(mw, "{\"type\":\"object\"}", 17);
    CU_ASSERT_EQUAL(mdb_write_commit(mw, NULL, NULL, NULL), 0);
    char path[512];
    const char *why = NULL;
    CU_ASSERT_EQUAL_FATAL(wal_service.snapshot(d.w, d.s, path, sizeof path, &why), 0);
    CU_ASSERT_STRING_EQUAL(path, path_in("db.log.snapshot.bin"));
    off_t log_after = file_size(path_in("db.log"));
    CU_ASSERT(log_after > 0 && log_after < 600); /* only the header is left */
    CU_ASSERT_EQUAL(put(&d, "c", "after", "{\"v\":9}"), 0);
    mdb_write *dw = mdb_write_begin(d.s, "c", 1);
    mdb_write_delete(dw, "k0", 2);
    CU_ASSERT_EQUAL(mdb_write_commit(dw, NULL, NULL, NULL), 0);
    /* Second snapshot: the first one goes to backup/. */
    CU_ASSERT_EQUAL(wal_service.snapshot(d.w, d.s, path, sizeof path, &why), 0);
    CU_ASSERT_EQUAL(put(&d, "c", "late", "{\"v\":10}"), 0);
    db_close(&d);
    size_t len = 0;
    char *raw = slurp(path_in("db.log.snapshot.bin"), &len);
    CU_ASSERT_PTR_NULL(memmem(raw, len, "snapshot-secret", 15));
    free(raw);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s/backup/db.log.snapshot.bin.*.bak >/dev/null 2>&1", tmpdir);
    CU_ASSERT_EQUAL(system(cmd), 0);

    d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 51);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k0", "v"), "");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k1", "v"), "\"snapshot-secret\"");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "after", "v"), "9");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "late", "v"), "10");
    mdb_read *r;
    CU_ASSERT_EQUAL_FATAL(mdb_read_begin(d.s, "c", 1, &r), 0);
    CU_ASSERT_EQUAL(mdb_read_meta(r)->max_size, 1000);
    CU_ASSERT_PTR_NOT_NULL(mdb_read_meta(r)->schema);
    mdb_read_end(r);
    db_close(&d);
}

static void t_snapshot_failure_keeps_log(void)
{
    fresh_dir();
    db d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(put(&d, "c", "a", "{\"v\":1}"), 0);
    CU_ASSERT_EQUAL(wal_service.flush(d.w), 0);
    off_t before = file_size(path_in("db.log"));
    /* A directory where the temp file goes makes the write fail. */
    CU_ASSERT_EQUAL_FATAL(mkdir(path_in("db.log.snapshot.bin.tmp"), 0700), 0);
    char path[512];
    const char *why = NULL;
    CU_ASSERT_NOT_EQUAL(wal_service.snapshot(d.w, d.s, path, sizeof path, &why), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "snapshot.bin.tmp"));
    CU_ASSERT_EQUAL(file_size(path_in("db.log")), before);
    CU_ASSERT_EQUAL(file_size(path_in("db.log.snapshot.bin")), -1);
    CU_ASSERT_EQUAL(put(&d, "c", "b", "{\"v\":2}"), 0);
    db_close(&d);
    rmdir(path_in("db.log.snapshot.bin.tmp"));
    d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 2);
    db_close(&d);
}

/* Crash between the snapshot rename and the log reset: the snapshot and the
 * whole old log together still give the state at the end of the log. */
static void t_snapshot_with_unreset_log(void)
{
    fresh_dir();
    db d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(put(&d, "c", "a", "{\"v\":1}"), 0);
    CU_ASSERT_EQUAL(put(&d, "c", "b", "{\"v\":2}"), 0);
    CU_ASSERT_EQUAL(wal_service.flush(d.w), 0);
    size_t oldlen = 0;
    char *oldlog = slurp(path_in("db.log"), &oldlen);
    char path[512];
    const char *why;
    CU_ASSERT_EQUAL(wal_service.snapshot(d.w, d.s, path, sizeof path, &why), 0);
    db_close(&d);
    /* Put the pre-snapshot log back, plus a later batch on it. */
    spit(path_in("db.log"), oldlog, oldlen);
    free(oldlog);
    const char more[] =
        "{\"cmd\":\"DELETE\",\"collection\":\"c\",\"key\":\"a\",\"value\":null,\"_t\":1}\n";
    append_raw(more, sizeof more - 1);
    d = db_open(opts(NULL, false, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 1);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "b", "v"), "2");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "b", "_v"), "1");
    db_close(&d);
}

static int durable_status = 99;
static void on_durable(void *arg, int status)
{
    (void)arg;
    __atomic_store_n(&durable_status, status, __ATOMIC_SEQ_CST);
}

static void wait_status(void)
{
    for (int i = 0; i < 2000 && __atomic_load_n(&durable_status, __ATOMIC_SEQ_CST) == 99; i++)
        usleep(1000);
}

static void t_sync_ticket_and_fault(void)
{
    fresh_dir();
    db d = db_open(opts(NULL, false, true));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    /* A hand-made record appended directly: sync mode gives a ticket. */
    mdb_buf v;
    mdb_buf_init(&v);
    const char *why = NULL;
    const char *docjson = "{\"x\":1,\"_v\":1,\"_seq\":0,\"_createdAt\":1,\"_modifiedAt\":1}";
    CU_ASSERT_EQUAL(mdb_encode_json_text(docjson, strlen(docjson), &v, &why), 0);
    mdb_record rec = {.op = MDB_REC_INSERT,
                      .collection = "c",
                      .collection_len = 1,
                      .key = "k",
                      .key_len = 1,
                      .value = mdb_val_at(&v, 0),
                      .ts_ms = 1};
    uint64_t ticket = 0;
    CU_ASSERT_EQUAL(wal_service.append(d.w, &rec, 1, &ticket, &why), 0);
    CU_ASSERT(ticket > 0);
    durable_status = 99;
    CU_ASSERT_EQUAL(wal_service.when_durable(d.w, ticket, on_durable, NULL), 0);
    wait_status();
    CU_ASSERT_EQUAL(durable_status, 0);
    mdb_storage_stats st;
    wal_service.stats(d.w, &st);
    CU_ASSERT_STRING_EQUAL(st.mode, "sync");

    /* A write the file system refuses (file size limit): read-only, -EIO
     * for the waiting ticket, -EROFS for the next append. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)file_size(path_in("db.log")) + 10;
    setrlimit(RLIMIT_FSIZE, &lim);
    CU_ASSERT_EQUAL(wal_service.append(d.w, &rec, 1, &ticket, &why), 0);
    durable_status = 99;
    CU_ASSERT_EQUAL(wal_service.when_durable(d.w, ticket, on_durable, NULL), 0);
    wait_status();
    setrlimit(RLIMIT_FSIZE, &old);
    CU_ASSERT_EQUAL(durable_status, -EIO);
    wal_service.stats(d.w, &st);
    CU_ASSERT_TRUE(st.read_only);
    why = NULL;
    CU_ASSERT_EQUAL(wal_service.append(d.w, &rec, 1, &ticket, &why), -EROFS);
    CU_ASSERT_PTR_NOT_NULL(why);
    CU_ASSERT_NOT_EQUAL(wal_service.flush(d.w), 0);
    db_close(&d);
    mdb_buf_free(&v);
    /* What was acknowledged is there; the partial write is a torn tail. */
    d = db_open(opts(NULL, false, true));
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k", "x"), "1");
    db_close(&d);
}

static void t_multi_record_batch(void)
{
    fresh_dir();
    db d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    mdb_write *w = mdb_write_begin(d.s, "c", 1);
    json_object *o = json_tokener_parse("{\"v\":1}");
    mdb_write_put(w, "a", 1, o);
    mdb_write_put(w, "b", 1, o);
    mdb_write_put(w, "c", 1, o);
    json_object_put(o);
    CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
    mdb_write *dr = mdb_write_begin(d.s, "c", 1);
    mdb_write_drop(dr);
    CU_ASSERT_EQUAL(mdb_write_commit(dr, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(put(&d, "c", "z", "{\"v\":2}"), 0);
    db_close(&d);
    d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 1);
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "z", "v"), "2");
    db_close(&d);
}

/* Enough records for many replay chunks: order, limits and a late corrupt line. */
static void t_large_replay_in_order(void)
{
    fresh_dir();
    db d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    char key[32], doc[64];
    for (int i = 0; i < 6000; i++) {
        snprintf(key, sizeof key, "k%d", i % 4000); /* 2000 overwrites */
        snprintf(doc, sizeof doc, "{\"i\":%d}", i);
        CU_ASSERT_EQUAL(put(&d, "c", key, doc), 0);
    }
    db_close(&d);
    d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_EQUAL(count(&d, "c"), 4000);
    /* Later records win: replay applied them in file order. */
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k0", "i"), "4000");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k1999", "i"), "5999");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k2000", "i"), "2000");
    CU_ASSERT_STRING_EQUAL(field(&d, "c", "k0", "_v"), "2");
    db_close(&d);

    /* A batch limit in the middle of a chunk (what recover --to-seq does). */
    mdb_store *s = mdb_store_new();
    wal_keyring kr = {.password = "pw"};
    wal_replay rp = {.store = s, .keys = &kr, .to_seq = 3001};
    wal_header h;
    wal_reader rd;
    int fd = -1;
    CU_ASSERT_EQUAL_FATAL(wal_file_open(&rp, path_in("db.log"), &h, &fd, &rd), 0);
    CU_ASSERT_EQUAL(wal_replay_rest(&rp, path_in("db.log"), &h, &rd, 0), 0);
    wal_reader_free(&rd);
    close(fd);
    CU_ASSERT_EQUAL(rp.batches, 3001);
    CU_ASSERT(rp.limited);
    CU_ASSERT_FALSE(rp.torn);
    CU_ASSERT_EQUAL(mdb_store_doc_count(s), 3001);
    wal_keyring_wipe(&kr);
    mdb_store_free(s);

    /* Damage a line far into the file: the error names it. */
    damage_line(5001);
    d = db_open(opts("pw", true, false));
    CU_ASSERT_EQUAL(d.rc, -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(d.why && strstr(d.why, "line 5001"));
    db_close(&d);
}

/* A crash can cut the log at any byte: every prefix must open, holding
 * exactly the batches that are complete in it. */
static void t_every_cut_of_the_log(void)
{
    fresh_dir();
    wal_opts o = opts(NULL, false, false);
    db d = db_open(o);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    off_t ends[24];
    size_t counts[24];
    int nb = 0;
    char key[16];
    for (int i = 0; i < 24; i++) {
        if (i % 4 == 3) { /* a 3-record batch */
            mdb_write *w = mdb_write_begin(d.s, "c", 1);
            json_object *doc = json_tokener_parse("{\"m\":1}");
            for (int j = 0; j < 3; j++) {
                snprintf(key, sizeof key, "m%d_%d", i, j);
                mdb_write_put(w, key, strlen(key), doc);
            }
            json_object_put(doc);
            CU_ASSERT_EQUAL(mdb_write_commit(w, NULL, NULL, NULL), 0);
        } else {
            snprintf(key, sizeof key, "k%d", i);
            CU_ASSERT_EQUAL(put(&d, "c", key, "{\"v\":\"some text\"}"), 0);
        }
        CU_ASSERT_EQUAL(wal_service.flush(d.w), 0);
        ends[nb] = file_size(path_in("db.log"));
        counts[nb++] = count(&d, "c");
    }
    db_close(&d);
    size_t len = 0;
    char *full = slurp(path_in("db.log"), &len);
    CU_ASSERT_EQUAL_FATAL((off_t)len, ends[nb - 1]);
    int failures = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        spit(path_in("db.log"), full, cut);
        size_t want = 0;
        off_t keep = -1;
        for (int j = 0; j < nb; j++)
            if (ends[j] <= (off_t)cut) {
                want = counts[j];
                keep = ends[j];
            }
        d = db_open(o);
        bool ok = d.rc == 0 && count(&d, "c") == want;
        db_close(&d);
        /* The torn part was cut off (or a fresh header written). */
        if (ok && keep >= 0)
            ok = file_size(path_in("db.log")) == keep;
        if (!ok && failures++ < 5)
            fprintf(stderr, "cut at %zu: rc %d, want %zu documents\n", cut, d.rc, want);
    }
    CU_ASSERT_EQUAL(failures, 0);
    free(full);
}

static const mdb_test_def codec_tests[] = {
    {"render/parse round trip", t_render_parse_roundtrip},
    {"encryption round trip, tampering", t_encrypt_roundtrip_and_tamper},
    {"header round trip", t_header_roundtrip},
    {"base64", t_base64},
    {"mutated lines", t_mutated_lines},
    {NULL, NULL}};
static const mdb_test_def service_tests[] = {
    {"restart keeps data, _v and _seq", t_restart_keeps_data},
    {"wrong key refuses to open", t_wrong_key_refuses},
    {"one process per database", t_one_process_per_database},
    {"torn tail dropped and cut", t_torn_tail_dropped},
    {"corrupt middle line", t_corrupt_middle_line},
    {"snapshot, backup, restart", t_snapshot_and_backup},
    {"failed snapshot keeps the log", t_snapshot_failure_keeps_log},
    {"snapshot plus un-reset log", t_snapshot_with_unreset_log},
    {"sync tickets and write fault", t_sync_ticket_and_fault},
    {"multi-record batches", t_multi_record_batch},
    {"large replay in order", t_large_replay_in_order},
    {"every cut of the log opens", t_every_cut_of_the_log},
    {NULL, NULL}};
static const mdb_suite_def suites[] = {
    {"codec", codec_tests}, {"service", service_tests}, {NULL, NULL}};

MDB_CUNIT_MAIN(suites)
