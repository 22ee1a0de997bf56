/*
 * storage-wal: the on-disk line format and its encryption (no file I/O;
 * README.md, "Format").
 *
 * Every file (log and snapshot) is a sequence of lines, each one JSON object:
 *   {"cmd":"INSERT","collection":"c","key":"k","value":{...},"_t":1717000000000}
 * The first line of a file is a plaintext HEADER (format, generation, salt,
 * key-check value). With encryption on, every other line is wrapped as
 *   {"cmd":"ENC","collection":"_","key":"_","value":"<base64(nonce|ct)>","_t":ms}
 * with XChaCha20-Poly1305 (random nonce per line, no associated data).
 *
 * Functions with a hidden visibility prefix wal_ are shared between the
 * module's files and the unit tests; nothing here is exported.
 */
#ifndef WAL_CODEC_H
#define WAL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include <moltendb/doc.h>

#define WAL_KEY_BYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define WAL_SALT_BYTES crypto_pwhash_SALTBYTES
#define WAL_NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define WAL_TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
/* Bound of one line read back from disk (a document is bounded by the
 * body size limit; base64 and JSON escaping grow it by less than 2x). */
#define WAL_MAX_LINE ((size_t)256 << 20)

#define WAL_DEFAULT_PASSWORD "moltendb-default-encryption-key"

/* One parsed line. Pointers refer to the line text or to the scratch buffer
 * given to wal_parse_line(); valid until either changes. Strings are not
 * NUL-terminated. `value` is the raw JSON text of the value member. */
typedef struct wal_line {
    char cmd[16];
    const char *coll;
    size_t coll_len;
    const char *key; /* NULL when the key is JSON null or absent */
    size_t key_len;
    const char *value; /* "null" when absent */
    size_t value_len;
    int64_t ts; /* 0 when absent */
} wal_line;

/* 0, or -EINVAL with *why (static text) for anything that is not a line of
 * this format. `scratch` is used only for lines with escaped strings. */
int wal_parse_line(const char *line, size_t len, wal_line *out, mdb_buf *scratch, const char **why);

/* Append one plaintext line (no newline). value_json must be valid JSON. */
void wal_render(mdb_buf *out, const char *cmd, const char *coll, size_t clen, const char *key,
                size_t klen, const char *value_json, size_t vlen, int64_t ts);

/* Argon2id (crypto_pwhash ALG_ARGON2ID13) of the password into a 32-byte key.
 * 0 or -ENOMEM (the only failure libsodium reports for sane limits). */
int wal_derive_key(const char *password, const unsigned char salt[WAL_SALT_BYTES],
                   unsigned long long opslimit, size_t memlimit, unsigned char key[WAL_KEY_BYTES]);

/* Append the ENC line wrapping plaintext `pt` (no newline). */
void wal_seal_line(const unsigned char key[WAL_KEY_BYTES], const char *pt, size_t ptlen, int64_t ts,
                   mdb_buf *out);
/* Decrypt the base64 value of an ENC line, appending the plaintext to `out`.
 * 0, -EINVAL (not base64 / too short), -EBADMSG (authentication failed). */
int wal_open_value(const unsigned char key[WAL_KEY_BYTES], const char *b64, size_t len,
                   mdb_buf *out);

/* Key-check value: base64 of an encryption of a fixed text. */
void wal_key_check_make(const unsigned char key[WAL_KEY_BYTES], mdb_buf *out);
bool wal_key_check_ok(const unsigned char key[WAL_KEY_BYTES], const char *b64, size_t len);

/* Standard base64 with padding. */
void wal_b64_encode(const unsigned char *bin, size_t n, mdb_buf *out);
/* 0, or -EINVAL. Appends to out. */
int wal_b64_decode(const char *b64, size_t len, mdb_buf *out);

#endif
