/* storage-wal: line format and encryption. See wal_codec.h. */
#include "wal_codec.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

static const char key_check_text[] = "moltendb-key-check-v1";

/* ---- rendering ------------------------------------------------------------ */
void wal_render(mdb_buf *out, const char *cmd, const char *coll, size_t clen, const char *key,
                size_t klen, const char *value_json, size_t vlen, int64_t ts)
{
    mdb_buf_puts(out, "{\"cmd\":\"");
    mdb_buf_puts(out, cmd);
    mdb_buf_puts(out, "\",\"collection\":");
    mdb_buf_json_str(out, coll, clen);
    mdb_buf_puts(out, ",\"key\":");
    if (key)
        mdb_buf_json_str(out, key, klen);
    else
        mdb_buf_puts(out, "null");
    mdb_buf_puts(out, ",\"value\":");
    mdb_buf_append(out, value_json, vlen);
    mdb_buf_printf(out, ",\"_t\":%lld}", (long long)ts);
}

/* ---- parsing ----------------------------------------------------------------
 * Fast path for lines this module wrote (fixed member order, no escapes in
 * the strings); anything else goes through json-c. */
static bool eat(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* A JSON string without escapes starting after its opening quote. */
static bool plain_str(const char **p, const char *end, const char **s, size_t *n)
{
    const char *q = *p;
    while (q < end && *q != '"') {
        if (*q == '\\' || (unsigned char)*q < 0x20)
            return false;
        q++;
    }
    if (q == end)
        return false;
    *s = *p;
    *n = (size_t)(q - *p);
    *p = q + 1;
    return true;
}

static bool parse_fast(const char *line, size_t len, wal_line *out)
{
    const char *p = line, *end = line + len;
    const char *s;
    size_t n;
    if (!eat(&p, end, "{\"cmd\":\"") || !plain_str(&p, end, &s, &n) || n == 0 ||
        n >= sizeof out->cmd)
        return false;
    memcpy(out->cmd, s, n);
    out->cmd[n] = 0;
    if (!eat(&p, end, ",\"collection\":\"") || !plain_str(&p, end, &out->coll, &out->coll_len))
        return false;
    if (eat(&p, end, ",\"key\":\"")) {
        if (!plain_str(&p, end, &out->key, &out->key_len))
            return false;
    } else if (eat(&p, end, ",\"key\":null")) {
        out->key = NULL;
        out->key_len = 0;
    } else {
        return false;
    }
    if (!eat(&p, end, ",\"value\":"))
        return false;
    /* The line ends with ,"_t":<digits>} : find it from the end. */
    const char *q = end;
    if (q == p || q[-1] != '}')
        return false;
    q--;
    const char *digits_end = q;
    while (q > p && q[-1] >= '0' && q[-1] <= '9')
        q--;
    if (q == digits_end || digits_end - q > 18)
        return false;
    int64_t ts = 0;
    for (const char *d = q; d < digits_end; d++)
        ts = ts * 10 + (*d - '0');
    static const char tmark[] = ",\"_t\":";
    size_t tl = sizeof tmark - 1;
    if ((size_t)(q - p) < tl + 1 || memcmp(q - tl, tmark, tl) != 0)
        return false;
    out->value = p;
    out->value_len = (size_t)(q - tl - p);
    out->ts = ts;
    return true;
}

/* Remember a string in scratch as an offset; pointers are fixed at the end
 * because scratch may move while it grows. */
static size_t keep(mdb_buf *scratch, const char *s, size_t n)
{
    size_t off = scratch->len;
    mdb_buf_append(scratch, s, n);
    return off;
}

static int parse_slow(const char *line, size_t len, wal_line *out, mdb_buf *scratch,
                      const char **why)
{
    json_tokener *tok = json_tokener_new_ex(MDB_MAX_DEPTH + 8);
    if (!tok) {
        *why = "out of memory";
        return -ENOMEM;
    }
    json_object *o = json_tokener_parse_ex(tok, line, (int)len);
    bool complete = o && json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    int rc = -EINVAL;
    json_object *cmd, *coll, *key = NULL, *val = NULL, *ts = NULL;
    if (!complete || !json_object_is_type(o, json_type_object)) {
        *why = "not a JSON object";
        goto out;
    }
    if (!json_object_object_get_ex(o, "cmd", &cmd) || !json_object_is_type(cmd, json_type_string) ||
        json_object_get_string_len(cmd) == 0 ||
        (size_t)json_object_get_string_len(cmd) >= sizeof out->cmd) {
        *why = "missing or invalid \"cmd\"";
        goto out;
    }
    if (!json_object_object_get_ex(o, "collection", &coll) ||
        !json_object_is_type(coll, json_type_string)) {
        *why = "missing or invalid \"collection\"";
        goto out;
    }
    json_object_object_get_ex(o, "key", &key);
    if (key && !json_object_is_type(key, json_type_string) &&
        !json_object_is_type(key, json_type_null)) {
        *why = "invalid \"key\"";
        goto out;
    }
    json_object_object_get_ex(o, "value", &val);
    json_object_object_get_ex(o, "_t", &ts);
    if (ts && !json_object_is_type(ts, json_type_int)) {
        *why = "invalid \"_t\"";
        goto out;
    }
    mdb_buf_reset(scratch);
    strcpy(out->cmd, json_object_get_string(cmd));
    size_t coff =
        keep(scratch, json_object_get_string(coll), (size_t)json_object_get_string_len(coll));
    out->coll_len = (size_t)json_object_get_string_len(coll);
    size_t koff = 0;
    bool has_key = key && json_object_is_type(key, json_type_string);
    if (has_key) {
        out->key_len = (size_t)json_object_get_string_len(key);
        koff = keep(scratch, json_object_get_string(key), out->key_len);
    }
    size_t vlen;
    const char *vs =
        val ? json_object_to_json_string_length(val, JSON_C_TO_STRING_PLAIN, &vlen) : "null";
    if (!val)
        vlen = 4;
    size_t voff = keep(scratch, vs, vlen);
    if (scratch->oom) {
        *why = "out of memory";
        rc = -ENOMEM;
        goto out;
    }
    out->coll = scratch->data + coff;
    out->key = has_key ? scratch->data + koff : NULL;
    if (!has_key)
        out->key_len = 0;
    out->value = scratch->data + voff;
    out->value_len = vlen;
    out->ts = ts ? json_object_get_int64(ts) : 0;
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

int wal_parse_line(const char *line, size_t len, wal_line *out, mdb_buf *scratch, const char **why)
{
    memset(out, 0, sizeof *out);
    if (parse_fast(line, len, out))
        return 0;
    memset(out, 0, sizeof *out);
    return parse_slow(line, len, out, scratch, why);
}

/* ---- crypto ------------------------------------------------------------------ */
int wal_derive_key(const char *password, const unsigned char salt[WAL_SALT_BYTES],
                   unsigned long long opslimit, size_t memlimit, unsigned char key[WAL_KEY_BYTES])
{
    if (crypto_pwhash(key, WAL_KEY_BYTES, password, strlen(password), salt, opslimit, memlimit,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM;
    return 0;
}

/* Base64 of ciphertext (not secret), so plain table lookups are fine; libsodium's
 * constant-time codec was the largest cost of replay. */
static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void wal_b64_encode(const unsigned char *bin, size_t n, mdb_buf *out)
{
    if (mdb_buf_reserve(out, (n + 2) / 3 * 4 + 1) != 0)
        return;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)bin[i] << 16 | (uint32_t)bin[i + 1] << 8 | bin[i + 2];
        *o++ = b64chars[v >> 18];
        *o++ = b64chars[(v >> 12) & 63];
        *o++ = b64chars[(v >> 6) & 63];
        *o++ = b64chars[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)bin[i] << 16 | (i + 1 < n ? (uint32_t)bin[i + 1] << 8 : 0);
        *o++ = b64chars[v >> 18];
        *o++ = b64chars[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
}

static signed char b64val[256];
static pthread_once_t b64once = PTHREAD_ONCE_INIT;

static void b64init(void)
{
    memset(b64val, -1, sizeof b64val);
    for (int i = 0; i < 64; i++)
        b64val[(unsigned char)b64chars[i]] = (signed char)i;
}

int wal_b64_decode(const char *b64, size_t len, mdb_buf *out)
{
    pthread_once(&b64once, b64init);
    if (len % 4)
        return -EINVAL;
    size_t pad = 0;
    if (len && b64[len - 1] == '=')
        pad = len >= 2 && b64[len - 2] == '=' ? 2 : 1;
    if (mdb_buf_reserve(out, len / 4 * 3) != 0)
        return -ENOMEM;
    unsigned char *o = (unsigned char *)out->data + out->len;
    const unsigned char *p = (const unsigned char *)b64;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int a = b64val[p[i]], b = b64val[p[i + 1]];
        int c = last && pad == 2 ? 0 : b64val[p[i + 2]];
        int d = last && pad >= 1 ? 0 : b64val[p[i + 3]];
        if ((a | b | c | d) < 0)
            return -EINVAL;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *o++ = (unsigned char)(v >> 16);
        if (!(last && pad == 2))
            *o++ = (unsigned char)(v >> 8);
        if (!(last && pad >= 1))
            *o++ = (unsigned char)v;
    }
    out->len = (size_t)((char *)o - out->data);
    return 0;
}

/* Encrypt into a fresh nonce|ciphertext|tag blob appended to `bin`. */
static void seal(const unsigned char key[WAL_KEY_BYTES], const char *pt, size_t ptlen, mdb_buf *bin)
{
    if (mdb_buf_reserve(bin, WAL_NONCE_BYTES + ptlen + WAL_TAG_BYTES) != 0)
        return;
    unsigned char *nonce = (unsigned char *)bin->data + bin->len;
    randombytes_buf(nonce, WAL_NONCE_BYTES);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + WAL_NONCE_BYTES, &clen,
                                               (const unsigned char *)pt, ptlen, NULL, 0, NULL,
                                               nonce, key);
    bin->len += WAL_NONCE_BYTES + (size_t)clen;
}

void wal_seal_line(const unsigned char key[WAL_KEY_BYTES], const char *pt, size_t ptlen, int64_t ts,
                   mdb_buf *out)
{
    /* The ciphertext is built in a local buffer, then base64'd into out. */
    mdb_buf bin;
    mdb_buf_init(&bin);
    seal(key, pt, ptlen, &bin);
    if (bin.oom) {
        out->oom = 1;
        mdb_buf_free(&bin);
        return;
    }
    mdb_buf_puts(out, "{\"cmd\":\"ENC\",\"collection\":\"_\",\"key\":\"_\",\"value\":\"");
    wal_b64_encode((const unsigned char *)bin.data, bin.len, out);
    mdb_buf_printf(out, "\",\"_t\":%lld}", (long long)ts);
    sodium_memzero(bin.data, bin.len);
    mdb_buf_free(&bin);
}

int wal_open_value(const unsigned char key[WAL_KEY_BYTES], const char *b64, size_t len,
                   mdb_buf *out)
{
    mdb_buf bin;
    mdb_buf_init(&bin);
    int rc = wal_b64_decode(b64, len, &bin);
    if (rc == 0 && bin.len < WAL_NONCE_BYTES + WAL_TAG_BYTES)
        rc = -EINVAL;
    if (rc == 0) {
        size_t clen = bin.len - WAL_NONCE_BYTES;
        if (mdb_buf_reserve(out, clen) != 0) {
            rc = -ENOMEM;
        } else {
            unsigned long long ptlen = 0;
            const unsigned char *nonce = (const unsigned char *)bin.data;
            if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)out->data + out->len,
                                                           &ptlen, NULL, nonce + WAL_NONCE_BYTES,
                                                           clen, NULL, 0, nonce, key) != 0)
                rc = -EBADMSG;
            else
                out->len += (size_t)ptlen;
        }
    }
    mdb_buf_free(&bin);
    return rc;
}

void wal_key_check_make(const unsigned char key[WAL_KEY_BYTES], mdb_buf *out)
{
    mdb_buf bin;
    mdb_buf_init(&bin);
    seal(key, key_check_text, sizeof key_check_text - 1, &bin);
    if (bin.oom)
        out->oom = 1;
    else
        wal_b64_encode((const unsigned char *)bin.data, bin.len, out);
    mdb_buf_free(&bin);
}

bool wal_key_check_ok(const unsigned char key[WAL_KEY_BYTES], const char *b64, size_t len)
{
    mdb_buf pt;
    mdb_buf_init(&pt);
    bool ok = wal_open_value(key, b64, len, &pt) == 0 && pt.len == sizeof key_check_text - 1 &&
              sodium_memcmp(pt.data, key_check_text, pt.len) == 0;
    mdb_buf_free(&pt);
    return ok;
}
