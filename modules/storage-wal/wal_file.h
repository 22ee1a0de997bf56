/*
 * storage-wal: files (log and snapshot), their headers, replay into a store
 * and snapshot writing. Shared by the service (wal.c), the recover command
 * and the unit tests.
 * Implemented by wal_file.c (headers, keyring, line reader, opening),
 * wal_replay.c (replay) and wal_write.c (record lines, snapshot files).
 *
 * File layout: line 1 is a plaintext HEADER line:
 *   {"cmd":"HEADER","collection":"_","key":"_","value":{"format":"moltendb-wal",
 *    "version":1,"kind":"log"|"snapshot","gen":"<16 hex>","encryption":
 *    "xchacha20poly1305"|"none","kdf":"argon2id13","opslimit":n,"memlimit":n,
 *    "salt":"<b64>","check":"<b64>","logGen":"<hex>","logOffset":n},"_t":ms}
 * then record lines (ENC-wrapped when encrypted). In a log, a batch of more
 * than one record is framed by TX_BEGIN (value = record count) and TX_COMMIT
 * lines carrying the same key; a single record is its own batch. A snapshot
 * ends with an END line (value = record count) and holds, per collection,
 * META, SCHEMA and INSERT records. A snapshot covers the log generation
 * logGen up to byte logOffset: replay skips that part of the log when the
 * log still has that generation.
 */
#ifndef WAL_FILE_H
#define WAL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <moltendb/module.h>

#include "wal_codec.h"

typedef struct wal_header {
    bool snapshot; /* kind */
    uint64_t gen;
    bool encrypted;
    unsigned char salt[WAL_SALT_BYTES];
    unsigned long long opslimit;
    size_t memlimit;
    char check[128];           /* base64 key-check value, NUL-terminated */
    uint64_t log_gen, log_off; /* snapshot only; log_gen 0 = none */
} wal_header;

/* Appends the header line with its newline. */
void wal_header_render(const wal_header *h, mdb_buf *out);
int wal_header_parse(const char *line, size_t len, wal_header *h, const char **why);

/* Derived keys by salt, so a log and a snapshot with the same salt cost one
 * Argon2id run. The password is borrowed. Keys are wiped by wal_keyring_wipe. */
typedef struct wal_keyring {
    const char *password;
    int n;
    struct {
        unsigned char salt[WAL_SALT_BYTES];
        unsigned long long ops;
        size_t mem;
        unsigned char key[WAL_KEY_BYTES];
    } e[4];
} wal_keyring;
/* The key for an encrypted header: 0, -EACCES (the password does not match
 * the header's key-check value), -ENOMEM. */
int wal_keyring_get(wal_keyring *kr, const wal_header *h, const unsigned char **key_out);
/* Remember a key derived elsewhere (a new database) for h's salt. */
const unsigned char *wal_keyring_put(wal_keyring *kr, const wal_header *h,
                                     const unsigned char key[WAL_KEY_BYTES]);
void wal_keyring_wipe(wal_keyring *kr);

/* Buffered line reader over a file descriptor (borrowed). */
typedef struct wal_reader {
    int fd;
    char *buf;
    size_t cap, pos, len;
    uint64_t base;   /* file offset of buf[0] */
    uint64_t lineno; /* of the line last returned, from 1 */
    bool eof;
} wal_reader;
void wal_reader_init(wal_reader *r, int fd);
/* 1 with a line (without its newline), 0 at end of file, -errno. *nl tells
 * whether the line was terminated; *off is its file offset. */
int wal_reader_next(wal_reader *r, const char **line, size_t *len, bool *nl, uint64_t *off);
void wal_reader_free(wal_reader *r);

/* Replay of one file into a store. Fill the inputs, zero the rest. */
typedef struct wal_replay {
    mdb_store *store;
    wal_keyring *keys;
    const mdb_ctx *ctx; /* for log lines; NULL with to_stderr */
    bool to_stderr;     /* recover: messages on stderr */
    bool skip_corrupt;
    int64_t to_time; /* > 0: stop before the first batch made after it (log only) */
    uint64_t to_seq; /* > 0: apply at most this many log batches */
    /* outputs */
    uint64_t records, batches;
    uint64_t good_end;  /* offset after the last complete batch (log) */
    uint64_t file_size; /* bytes read */
    bool torn;          /* a torn tail was dropped (good_end < file_size) */
    bool limited;       /* to_time / to_seq stopped the replay */
    char why[768];
} wal_replay;

/* Open `path` and parse its header. 0; 1 when the file exists but has no
 * complete header line (an interrupted creation: treat as new); -ENOENT;
 * other -errno with rp->why. *fd_out is open (O_RDONLY) when 0 or 1. */
int wal_file_open(wal_replay *rp, const char *path, wal_header *h, int *fd_out, wal_reader *rd);
/* Replay the rest of a file whose header `h` was read by wal_file_open.
 * Log lines before byte `skip_to` are skipped (0 = none). 0 or -errno with
 * rp->why naming the file and line. */
int wal_replay_rest(wal_replay *rp, const char *path, const wal_header *h, wal_reader *rd,
                    uint64_t skip_to);

/* Open `path`, check its header and replay it: wal_file_open plus
 * wal_replay_rest. want_encrypted: -1 either, else the header must match
 * (-EPROTO with a message naming the flag). The part before skip_off is
 * skipped when the header's generation is skip_gen (0 = never). 0; -ENOENT
 * (no file); 1 (no complete header: an interrupted creation, nothing
 * replayed); other -errno with rp->why. *h gets the header. */
int wal_replay_file(wal_replay *rp, const char *path, bool want_snapshot, int want_encrypted,
                    wal_header *h, uint64_t skip_gen, uint64_t skip_off);

/* Render one record as a plaintext line (no newline) into `line`. */
void wal_render_record(const mdb_record *rec, mdb_buf *line, mdb_buf *tmp);
/* Append the line to out as stored: plain or ENC-wrapped, plus '\n'. */
void wal_emit(const unsigned char *key, const char *pt, size_t len, int64_t ts, mdb_buf *out);

/* Write a frozen view as a snapshot file at `path` (created 0600,
 * truncated), fsync'd and closed. key NULL = plaintext. 0 or -errno with a
 * reason in why. *bytes_out = file size. */
int wal_snapshot_write(const char *path, mdb_frozen *f, const wal_header *h,
                       const unsigned char *key, uint64_t *bytes_out, char *why, size_t whycap);

/* Write all of buf at fd's position, retrying on EINTR/short writes. */
int wal_write_all(int fd, const char *buf, size_t len);
/* fsync the directory holding `path`. */
int wal_fsync_dir_of(const char *path);
uint64_t wal_random_gen(void);

#endif
