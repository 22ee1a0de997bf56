/*
 * Unit tests of ws-push's framing (modules/ws-push/ws_frame.c): frame
 * parsing with masking, lengths and every protocol violation, server frame
 * headers, incremental UTF-8 validation, close codes and the handshake key.
 */
#include "ws_frame.h"

#include <string.h>

#include "mdb_cunit.h"

/* A masked client frame into out; returns its length. */
static size_t client_frame(uint8_t *out, unsigned b0, const void *payload, size_t len)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t o = 0;
    out[o++] = (uint8_t)b0;
    if (len < 126) {
        out[o++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[o++] = 0x80 | 126;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)len;
    } else {
        out[o++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[o++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(out + o, mask, 4);
    o += 4;
    for (size_t i = 0; i < len; i++)
        out[o + i] = ((const uint8_t *)payload)[i] ^ mask[i & 3];
    return o + len;
}

static void test_parse_masked_text(void)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, 0x81, "Hello", 5);
    wsf_frame f;
    size_t need;
    /* every prefix asks for more */
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(wsf_parse(buf, i, 1024, &f, &need), 0);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), (long)n);
    CU_ASSERT_TRUE(f.fin);
    CU_ASSERT_EQUAL(f.opcode, WSF_TEXT);
    CU_ASSERT_EQUAL(f.len, 5);
    CU_ASSERT_EQUAL(memcmp(f.payload, "Hello", 5), 0);
}

static void test_parse_lengths(void)
{
    static uint8_t payload[70000], buf[70100];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    size_t sizes[] = {0, 125, 126, 65535, 65536, 70000};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = client_frame(buf, 0x82, payload, sizes[k]);
        wsf_frame f;
        size_t need;
        CU_ASSERT_EQUAL(wsf_parse(buf, n, 100000, &f, &need), (long)n);
        CU_ASSERT_EQUAL(f.len, sizes[k]);
        CU_ASSERT_EQUAL(memcmp(f.payload, payload, sizes[k]), 0);
        if (sizes[k] > 10) {
            CU_ASSERT_EQUAL(wsf_parse(buf, n - 1, 100000, &f, &need), 0);
            CU_ASSERT_EQUAL(need, n);
        }
    }
}

static void test_parse_violations(void)
{
    uint8_t buf[256];
    wsf_frame f;
    size_t need;
    /* unmasked */
    uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
    CU_ASSERT_EQUAL(wsf_parse(unmasked, sizeof unmasked, 1024, &f, &need), -WSC_PROTOCOL);
    /* reserved bits */
    size_t n = client_frame(buf, 0xc1, "x", 1);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), -WSC_PROTOCOL);
    /* reserved opcodes */
    n = client_frame(buf, 0x83, "x", 1);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), -WSC_PROTOCOL);
    n = client_frame(buf, 0x8b, "x", 1);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), -WSC_PROTOCOL);
    /* fragmented control frame */
    n = client_frame(buf, 0x09, "x", 1);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), -WSC_PROTOCOL);
    /* control frame over 125 bytes */
    uint8_t big[126] = {0};
    n = client_frame(buf, 0x89, big, sizeof big);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), -WSC_PROTOCOL);
    /* oversize data frame: refused from the header alone */
    uint8_t hdr[] = {0x81, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 1};
    CU_ASSERT_EQUAL(wsf_parse(hdr, sizeof hdr, 65536, &f, &need), -WSC_TOO_BIG);
    /* 64-bit length with the top bit set */
    uint8_t huge[] = {0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    CU_ASSERT_EQUAL(wsf_parse(huge, sizeof huge, 65536, &f, &need), -WSC_PROTOCOL);
    /* continuation and fragments are legal frames (reassembly is the caller's) */
    n = client_frame(buf, 0x01, "ab", 2);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), (long)n);
    CU_ASSERT_FALSE(f.fin);
    n = client_frame(buf, 0x80, "cd", 2);
    CU_ASSERT_EQUAL(wsf_parse(buf, n, 1024, &f, &need), (long)n);
    CU_ASSERT_EQUAL(f.opcode, WSF_CONT);
}

static void test_header(void)
{
    uint8_t h[10];
    CU_ASSERT_EQUAL(wsf_header(h, WSF_TEXT, 5), 2);
    CU_ASSERT_EQUAL(h[0], 0x81);
    CU_ASSERT_EQUAL(h[1], 5);
    CU_ASSERT_EQUAL(wsf_header(h, WSF_TEXT, 126), 4);
    CU_ASSERT_EQUAL(h[1], 126);
    CU_ASSERT_EQUAL(h[2], 0);
    CU_ASSERT_EQUAL(h[3], 126);
    CU_ASSERT_EQUAL(wsf_header(h, WSF_CLOSE, 65536), 10);
    CU_ASSERT_EQUAL(h[0], 0x88);
    CU_ASSERT_EQUAL(h[1], 127);
    CU_ASSERT_EQUAL(h[7], 1);
    CU_ASSERT_EQUAL(h[8], 0);
}

static bool utf8_ok(const char *s, size_t n)
{
    wsf_utf8 u;
    wsf_utf8_init(&u);
    return wsf_utf8_feed(&u, (const uint8_t *)s, n) && wsf_utf8_done(&u);
}

static void test_utf8(void)
{
    CU_ASSERT_TRUE(utf8_ok("plain", 5));
    CU_ASSERT_TRUE(utf8_ok("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11));
    CU_ASSERT_TRUE(utf8_ok("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    CU_ASSERT_TRUE(utf8_ok("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    CU_ASSERT_TRUE(utf8_ok("\xef\xbf\xbf", 3));      /* U+FFFF */
    CU_ASSERT_FALSE(utf8_ok("\xc0\xaf", 2));         /* overlong / */
    CU_ASSERT_FALSE(utf8_ok("\xe0\x80\xaf", 3));     /* overlong / */
    CU_ASSERT_FALSE(utf8_ok("\xf0\x80\x80\xaf", 4)); /* overlong / */
    CU_ASSERT_FALSE(utf8_ok("\xed\xa0\x80", 3));     /* surrogate */
    CU_ASSERT_FALSE(utf8_ok("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CU_ASSERT_FALSE(utf8_ok("\xff", 1));
    CU_ASSERT_FALSE(utf8_ok("\x80", 1));             /* lone continuation */
    CU_ASSERT_FALSE(utf8_ok("\xce", 1));             /* truncated */
    CU_ASSERT_FALSE(utf8_ok("\xce\xba\xe1\xbd", 4)); /* truncated */
    /* split anywhere: the same answer fed byte by byte */
    const char *s = "a\xf0\x9f\x98\x80\xce\xbaz";
    wsf_utf8 u;
    wsf_utf8_init(&u);
    for (size_t i = 0; i < strlen(s); i++) {
        CU_ASSERT_TRUE(wsf_utf8_feed(&u, (const uint8_t *)s + i, 1));
        CU_ASSERT_EQUAL(wsf_utf8_done(&u), i != 1 && i != 2 && i != 3 && i != 5);
    }
    wsf_utf8_init(&u);
    CU_ASSERT_TRUE(wsf_utf8_feed(&u, (const uint8_t *)"\xed", 1));
    CU_ASSERT_FALSE(wsf_utf8_feed(&u, (const uint8_t *)"\xa0", 1));
}

static void test_close_codes(void)
{
    CU_ASSERT_TRUE(wsf_close_code_valid(1000));
    CU_ASSERT_TRUE(wsf_close_code_valid(1001));
    CU_ASSERT_TRUE(wsf_close_code_valid(1011));
    CU_ASSERT_TRUE(wsf_close_code_valid(3000));
    CU_ASSERT_TRUE(wsf_close_code_valid(4999));
    CU_ASSERT_FALSE(wsf_close_code_valid(0));
    CU_ASSERT_FALSE(wsf_close_code_valid(999));
    CU_ASSERT_FALSE(wsf_close_code_valid(1004));
    CU_ASSERT_FALSE(wsf_close_code_valid(1005));
    CU_ASSERT_FALSE(wsf_close_code_valid(1006));
    CU_ASSERT_FALSE(wsf_close_code_valid(1015));
    CU_ASSERT_FALSE(wsf_close_code_valid(2999));
    CU_ASSERT_FALSE(wsf_close_code_valid(5000));
}

static void test_accept_key(void)
{
    char out[29];
    /* The example of RFC 6455 section 1.3. */
    CU_ASSERT_TRUE(wsf_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out));
    CU_ASSERT_STRING_EQUAL(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CU_ASSERT_FALSE(wsf_accept_key(NULL, out));
    CU_ASSERT_FALSE(wsf_accept_key("", out));
    CU_ASSERT_FALSE(wsf_accept_key("dGhlIHNhbXBsZSBub25jZQ=", out));  /* short */
    CU_ASSERT_FALSE(wsf_accept_key("dGhlIHNhbXBsZSBub25jZQ!=", out)); /* padding */
    CU_ASSERT_FALSE(wsf_accept_key("dGhlIHNhbXBsZSBub2*jZQ==", out)); /* alphabet */
    CU_ASSERT_FALSE(wsf_accept_key("dGhlIHNhbXBsZSBub25jZR==", out)); /* spare bits */
}

static const mdb_test_def frame_tests[] = {{"parse a masked text frame", test_parse_masked_text},
                                           {"7-, 16- and 64-bit lengths", test_parse_lengths},
                                           {"protocol violations", test_parse_violations},
                                           {"server frame headers", test_header},
                                           {NULL, NULL}};
static const mdb_test_def text_tests[] = {{"incremental UTF-8", test_utf8},
                                          {"close codes", test_close_codes},
                                          {"Sec-WebSocket-Accept", test_accept_key},
                                          {NULL, NULL}};
static const mdb_suite_def mdb_suites[] = {
    {"ws-push framing", frame_tests}, {"ws-push text and handshake", text_tests}, {NULL, NULL}};

MDB_CUNIT_MAIN(mdb_suites)
