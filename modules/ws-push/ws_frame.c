/*
 * ws-push: RFC 6455 framing (see ws_frame.h).
 */
#include "ws_frame.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>

long wsf_parse(uint8_t *buf, size_t n, size_t max_payload, wsf_frame *f, size_t *need_out)
{
    *need_out = 0;
    if (n < 2)
        return 0;
    uint8_t b0 = buf[0], b1 = buf[1];
    if (b0 & 0x70)
        return -WSC_PROTOCOL; /* RSV1-3: no extension was negotiated */
    unsigned op = b0 & 0x0f;
    bool fin = (b0 & 0x80) != 0;
    bool control = op >= 0x8;
    if (op != WSF_CONT && op != WSF_TEXT && op != WSF_BINARY && op != WSF_CLOSE && op != WSF_PING &&
        op != WSF_PONG)
        return -WSC_PROTOCOL;
    if (!(b1 & 0x80))
        return -WSC_PROTOCOL; /* client frames must be masked (RFC 6455 5.1) */
    uint64_t len = b1 & 0x7f;
    size_t hl = 2;
    if (control && (!fin || len > 125))
        return -WSC_PROTOCOL;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)buf[2] << 8) | buf[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | buf[2 + i];
        if (len >> 63)
            return -WSC_PROTOCOL;
        hl = 10;
    }
    if (len > max_payload)
        return -WSC_TOO_BIG;
    size_t total = hl + 4 + (size_t)len;
    *need_out = total;
    if (n < total)
        return 0;
    const uint8_t *mask = buf + hl;
    uint8_t *p = buf + hl + 4;
    for (size_t i = 0; i < len; i++)
        p[i] ^= mask[i & 3];
    f->fin = fin;
    f->opcode = op;
    f->payload = p;
    f->len = (size_t)len;
    return (long)total;
}

size_t wsf_header(uint8_t out[10], unsigned opcode, size_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

void wsf_utf8_init(wsf_utf8 *u)
{
    u->need = 0;
    u->lo = 0x80;
    u->hi = 0xbf;
}

bool wsf_utf8_feed(wsf_utf8 *u, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (u->need) {
            if (c < u->lo || c > u->hi)
                return false;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xbf;
            continue;
        }
        if (c < 0x80)
            continue;
        /* Lead bytes; the first continuation's range excludes overlong
         * forms (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
        if (c >= 0xc2 && c <= 0xdf) {
            u->need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            u->need = 2;
            if (c == 0xe0)
                u->lo = 0xa0;
            else if (c == 0xed)
                u->hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            u->need = 3;
            if (c == 0xf0)
                u->lo = 0x90;
            else if (c == 0xf4)
                u->hi = 0x8f;
        } else {
            return false;
        }
    }
    return true;
}

bool wsf_utf8_done(const wsf_utf8 *u)
{
    return u->need == 0;
}

bool wsf_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
    case 1012:
    case 1013:
    case 1014:
        return true;
    default:
        return false;
    }
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool wsf_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (int i = 0; i < 22; i++)
        if (!strchr(b64, key[i]) || !key[i])
            return false;
    /* 16 bytes end on 4 spare bits, which must be zero. */
    if ((strchr(b64, key[21]) - b64) & 0x0f)
        return false;
    char in[24 + sizeof guid];
    memcpy(in, key, 24);
    memcpy(in + 24, guid, sizeof guid - 1);
    uint8_t d[20];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, in, 24 + sizeof guid - 1, d) < 0)
        return false;
    size_t o = 0;
    for (int i = 0; i < 21; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)(i + 1 < 20 ? d[i + 1] : 0) << 8 |
                     (uint32_t)(i + 2 < 20 ? d[i + 2] : 0);
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < 20 ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < 20 ? b64[v & 63] : '=';
    }
    out[28] = 0;
    return true;
}
