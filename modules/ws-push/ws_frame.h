/*
 * ws-push: RFC 6455 framing, pure functions (no I/O, no module state), so
 * the unit tests drive them directly (tests/unit/modules/test_ws_push.c).
 */
#ifndef WS_FRAME_H
#define WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    WSF_CONT = 0x0,
    WSF_TEXT = 0x1,
    WSF_BINARY = 0x2,
    WSF_CLOSE = 0x8,
    WSF_PING = 0x9,
    WSF_PONG = 0xA
};

/* Close codes used by the module (README.md, "Close codes"). */
enum {
    WSC_NORMAL = 1000,
    WSC_GOING_AWAY = 1001,
    WSC_PROTOCOL = 1002,
    WSC_UNSUPPORTED = 1003,
    WSC_BAD_DATA = 1007,
    WSC_POLICY = 1008,
    WSC_TOO_BIG = 1009,
    WSC_TRY_LATER = 1013
};

typedef struct wsf_frame {
    bool fin;
    unsigned opcode;
    uint8_t *payload; /* points into the caller's buffer, unmasked in place */
    size_t len;
} wsf_frame;

/*
 * Parse one client frame at the start of buf[0..n). Returns the number of
 * bytes the frame occupies (> 0) with *f filled and the payload unmasked in
 * place; 0 when more bytes are needed (*need_out: total bytes needed, when
 * the header is complete); or -(close code) for a protocol violation:
 * reserved bits or opcodes, unmasked frames, fragmented or long control
 * frames (-1002), payloads over max_payload (-1009).
 */
long wsf_parse(uint8_t *buf, size_t n, size_t max_payload, wsf_frame *f, size_t *need_out);

/* Header of an unmasked server frame with FIN set; returns its length (2..10). */
size_t wsf_header(uint8_t out[10], unsigned opcode, size_t len);

/* Incremental UTF-8 validation (messages may be fragmented anywhere).
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
typedef struct wsf_utf8 {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* allowed range of the next continuation byte */
} wsf_utf8;
void wsf_utf8_init(wsf_utf8 *u);
/* False as soon as the bytes cannot be valid UTF-8. */
bool wsf_utf8_feed(wsf_utf8 *u, const uint8_t *p, size_t n);
/* True when the text ended on a character boundary. */
bool wsf_utf8_done(const wsf_utf8 *u);

/* Is this a code a peer may send in a Close frame (RFC 6455 7.4)? */
bool wsf_close_code_valid(unsigned code);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: 28 chars + NUL. Returns
 * false when the key is not base64 of 16 bytes. */
bool wsf_accept_key(const char *key, char out[29]);

#endif
