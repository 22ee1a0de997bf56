/*
 * moltendb SDK: growable buffers and the binary value encoding.
 *
 * Documents are kept in RAM in a compact binary form ("mdoc") instead of a
 * json-c tree: about the size of the JSON text, skippable in O(1) per value
 * (so a WHERE scan reads a field without decoding the document), and
 * immutable, so any number of threads may read one at once without locks.
 *
 * Encoding (all integers little-endian; "varint" = unsigned LEB128):
 *   0x00 null | 0x01 false | 0x02 true
 *   0x03 int   : 8 bytes, int64
 *   0x04 double: 8 bytes, IEEE-754
 *   0x05 string: varint len, len bytes (UTF-8), one NUL byte
 *   0x06 array : u32 count, u32 payload bytes, elements
 *   0x07 object: u32 count, u32 payload bytes, then per member:
 *                varint klen, klen bytes, one NUL byte, value
 * A value is valid only if produced by the encoder below; readers trust it.
 */
#ifndef MOLTENDB_DOC_H
#define MOLTENDB_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_object;

/* ---- growable byte buffer ------------------------------------------------
 * The buffer owns `data` (malloc). On allocation failure `oom` is set and
 * further appends are ignored, so callers may check once at the end.
 * Not thread-safe: one buffer, one thread. */
typedef struct mdb_buf {
    char *data;
    size_t len, cap;
    int oom;
} mdb_buf;

void mdb_buf_init(mdb_buf *b);
void mdb_buf_free(mdb_buf *b);                 /* frees data; the buffer may be reused after init */
void mdb_buf_reset(mdb_buf *b);                /* len = 0, keeps capacity */
int mdb_buf_reserve(mdb_buf *b, size_t extra); /* 0 or -ENOMEM */
void mdb_buf_append(mdb_buf *b, const void *p, size_t n);
void mdb_buf_putc(mdb_buf *b, char c);
void mdb_buf_puts(mdb_buf *b, const char *s);
void mdb_buf_printf(mdb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` as a quoted, escaped JSON string. */
void mdb_buf_json_str(mdb_buf *b, const char *s, size_t n);
/* NUL-terminates and hands `data` to the caller (free() it); buffer is reset to empty. */
char *mdb_buf_take(mdb_buf *b, size_t *len_out);

/* ---- read-only views of encoded values ---------------------------------- */
typedef enum mdb_vtype {
    MDB_V_MISSING = 0, /* path not found / no value */
    MDB_V_NULL,
    MDB_V_BOOL,
    MDB_V_INT,
    MDB_V_DOUBLE,
    MDB_V_STRING,
    MDB_V_ARRAY,
    MDB_V_OBJECT
} mdb_vtype;

/* A borrowed pointer into an encoding; valid as long as the bytes are
 * (for a store document: while the caller holds the read view or a ref). */
typedef struct mdb_val {
    const unsigned char *p; /* NULL = missing */
} mdb_val;

#define MDB_VAL_MISSING ((mdb_val){NULL})

mdb_vtype mdb_val_type(mdb_val v);
bool mdb_val_is_number(mdb_val v);
bool mdb_val_bool(mdb_val v);     /* false unless a true boolean */
int64_t mdb_val_int(mdb_val v);   /* int, or a double truncated; 0 otherwise */
double mdb_val_double(mdb_val v); /* int or double as double; 0 otherwise */
/* NUL-terminated string bytes, or NULL when not a string. */
const char *mdb_val_str(mdb_val v, size_t *len_out);
uint32_t mdb_val_count(mdb_val v); /* members / elements; 0 for scalars */
size_t mdb_val_size(mdb_val v);    /* encoded bytes of this value */

/* Object member by exact key; MISSING when absent or v is not an object. */
mdb_val mdb_val_member(mdb_val obj, const char *key, size_t klen);
/* Dot-separated path through nested objects only ("specs.cpu.ghz");
 * arrays and scalars on the way give MISSING. */
mdb_val mdb_val_path(mdb_val root, const char *path, size_t plen);

typedef struct mdb_val_iter {
    const unsigned char *cur;
    uint32_t left;
    bool object;
} mdb_val_iter;
/* Iterate an array or object (anything else iterates nothing). */
void mdb_val_iter_init(mdb_val container, mdb_val_iter *it);
/* Returns false at the end. For arrays *key is set to NULL. */
bool mdb_val_iter_next(mdb_val_iter *it, const char **key, size_t *klen, mdb_val *out);

/* Exact JSON equality: same type and value; int and double compare by
 * numeric value; objects compare members regardless of order. */
bool mdb_val_equal(mdb_val a, mdb_val b);

/* Append compact JSON text. Doubles use the shortest form that reads back
 * exactly and always carry a '.' or exponent, so types survive a round trip. */
void mdb_val_to_json(mdb_val v, mdb_buf *out);
/* A new json-c tree (caller owns: json_object_put). NULL on OOM or MISSING. */
struct json_object *mdb_val_to_jsonc(mdb_val v);

/* ---- encoding ------------------------------------------------------------
 * Encoders append to `out` and return 0, -ENOMEM, or -EINVAL (value nesting
 * deeper than MDB_MAX_DEPTH). The json-c tree is only read. */
#define MDB_MAX_DEPTH 64
int mdb_encode_jsonc(const struct json_object *j, mdb_buf *out);
/* Parse JSON text and encode it. *why_out gets a static reason on -EINVAL. */
int mdb_encode_json_text(const char *json, size_t len, mdb_buf *out, const char **why_out);

/* Incremental object/array writer, for building values without json-c
 * (projections, merged patches). Usage:
 *   size_t m = mdb_enc_begin_object(out);
 *   mdb_enc_key(out, "a", 1); mdb_enc_int(out, 5);
 *   mdb_enc_key(out, "b", 1); mdb_enc_copy(out, some_val);
 *   mdb_enc_end(out, m, 2);   // member count
 */
size_t mdb_enc_begin_object(mdb_buf *out);
size_t mdb_enc_begin_array(mdb_buf *out);
void mdb_enc_end(mdb_buf *out, size_t mark, uint32_t count);
void mdb_enc_key(mdb_buf *out, const char *k, size_t klen);
void mdb_enc_null(mdb_buf *out);
void mdb_enc_bool(mdb_buf *out, bool v);
void mdb_enc_int(mdb_buf *out, int64_t v);
void mdb_enc_double(mdb_buf *out, double v);
void mdb_enc_str(mdb_buf *out, const char *s, size_t n);
void mdb_enc_copy(mdb_buf *out, mdb_val v); /* raw copy of an encoded value */

/* A view of an encoding held in a buffer, starting at byte offset `off`. */
static inline mdb_val mdb_val_at(const mdb_buf *b, size_t off)
{
    mdb_val v = {(const unsigned char *)b->data + off};
    return v;
}

/* ISO-8601 UTC "YYYY-MM-DDTHH:MM:SSZ" of unix milliseconds; out >= 21 bytes. */
void mdb_iso8601(int64_t unix_ms, char out[21]);
/* Current wall-clock time in unix milliseconds. */
int64_t mdb_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
