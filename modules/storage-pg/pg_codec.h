/*
 * storage-pg: batches and checkpoint chunks in the storage-wal codec.
 *
 * A log row's `data` (and a checkpoint chunk's) is a sequence of lines as
 * storage-wal writes them (modules/storage-wal/wal_codec.h): one record per
 * line, ENC-wrapped with XChaCha20-Poly1305 when encryption is on, so
 * PostgreSQL only ever holds ciphertext. The row is the batch, so no
 * TX_BEGIN/TX_COMMIT framing is needed.
 */
#ifndef PG_CODEC_H
#define PG_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include <moltendb/module.h>

/* Decoded records of one or more rows. The records point into the batch's
 * own buffers (valid until the next reset or free); they carry values, as
 * at replay, never documents. */
typedef struct pg_rec_off {
    size_t coll_off, coll_len, key_off, key_len, val_off;
    bool has_key, has_val;
} pg_rec_off;

typedef struct pg_batch {
    mdb_record *recs; /* filled by pg_batch_records() */
    pg_rec_off *offs;
    size_t n, cap;
    mdb_buf strs, vals, pt, scratch;
} pg_batch;

void pg_batch_init(pg_batch *b);
void pg_batch_reset(pg_batch *b);
/* Wipes the plaintext scratch, then frees. */
void pg_batch_free(pg_batch *b);
/* Append the records of `data` (lines). key NULL = plaintext expected.
 * 0, -EINVAL / -EBADMSG / -ENOMEM with *why (static text). */
int pg_batch_decode(pg_batch *b, const unsigned char *key, const char *data, size_t len,
                    const char **why);
/* Point recs[] at the decoded strings and values (after the last decode). */
void pg_batch_records(pg_batch *b);

/* Append the stored form of n records (one line each) to out; line and tmp
 * are scratch. key NULL = plaintext. out->oom tells of a failure. */
void pg_render_records(const unsigned char *key, const mdb_record *recs, size_t n, mdb_buf *out,
                       mdb_buf *line, mdb_buf *tmp);

#endif
