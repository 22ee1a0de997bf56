/*
 * moltendb SDK: UUID text ids (owned by the core, core/uuid.c).
 *
 * Both write 36 characters + NUL into the caller's buffer, lowercase hex in
 * the 8-4-4-4-12 form. Thread-safe.
 */
#ifndef MOLTENDB_UUID_H
#define MOLTENDB_UUID_H

#ifdef __cplusplus
extern "C" {
#endif

/* A new UUIDv7 key (RFC 9562): strictly increasing within this process, so
 * generated document keys sort by creation. */
void mdb_uuid7(char out[37]);
/* A new random UUIDv4 (token ids and the like). */
void mdb_uuid4(char out[37]);

#ifdef __cplusplus
}
#endif

#endif
