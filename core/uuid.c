/*
 * UUID generation: v7 document keys and v4 random ids (moltendb/uuid.h).
 */
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include "core.h"

/* ---- UUIDv7 ------------------------------------------------------------------------- */
static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t uuid_last_ms;
static uint32_t uuid_counter;

static void uuid_text(const unsigned char b[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = 0;
}

void mdb_uuid4(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        memset(b, 0, sizeof b); /* not reached once the kernel pool is seeded */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_text(b, out);
}

void mdb_uuid7(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* getrandom on Linux does not fail for 16 bytes once seeded. */
        memset(b, 0, sizeof b);
    }
    pthread_mutex_lock(&uuid_lock);
    int64_t ms = mdb_now_ms();
    if (ms <= uuid_last_ms) {
        /* Same millisecond (or clock went back): count up in rand_a so keys
         * stay strictly increasing; borrow the next millisecond on overflow. */
        ms = uuid_last_ms;
        if (++uuid_counter > 0xfff) {
            ms++;
            uuid_counter = 0;
        }
    } else {
        uuid_counter = (uint32_t)(b[6] & 0x07) << 8 | b[7]; /* random start, room to count */
    }
    uuid_last_ms = ms;
    uint32_t ctr = uuid_counter;
    pthread_mutex_unlock(&uuid_lock);
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | ((ctr >> 8) & 0x0f));
    b[7] = (unsigned char)(ctr & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    uuid_text(b, out);
}
