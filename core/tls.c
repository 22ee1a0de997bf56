/*
 * The TLS certificate and key the HTTP server presents, replaceable while
 * it runs (SIGHUP, core/reload.c). libmicrohttpd asks for them at every
 * handshake through GnuTLS's certificate callback
 * (MHD_OPTION_HTTPS_CERT_CALLBACK); a reload parses and checks the new pair
 * completely before it becomes the current one, so a failed reload leaves
 * the old pair in use. Connections that are already open keep the session
 * they negotiated.
 *
 * Ownership: the credentials are owned here. GnuTLS uses the returned
 * pointers for the whole life of a session without copying them, so a
 * replaced pair stays allocated (a few KiB per reload) until
 * core_tls_free() at shutdown, after the daemon has stopped.
 */
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define TLS_MAX_CHAIN 16
#define TLS_MAX_FILE (1u << 20)

typedef struct tls_cred {
    struct tls_cred *older; /* the pair this one replaced */
    gnutls_pcert_st pcert[TLS_MAX_CHAIN];
    unsigned npcert;
    gnutls_privkey_t key;
} tls_cred;

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static tls_cred *tls_current;

/* The whole file (at most 1 MiB), NUL-terminated; *len_out without the NUL. */
static char *read_pem(const char *path, const char *what, const char *flag, size_t *len_out,
                      char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            snprintf(err, errlen, "%s file not found: %s (use %s, or --dev-mode for plain HTTP)",
                     what, path, flag);
        else
            snprintf(err, errlen, "%s file %s is not readable: %s", what, path, strerror(errno));
        return NULL;
    }
    mdb_buf b;
    mdb_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < TLS_MAX_FILE)
        mdb_buf_append(&b, chunk, n);
    fclose(f);
    if (!b.len || b.oom) {
        if (b.oom)
            snprintf(err, errlen, "out of memory reading %s", path);
        else
            snprintf(err, errlen, "%s file %s is empty", what, path);
        mdb_buf_free(&b);
        return NULL;
    }
    return mdb_buf_take(&b, len_out);
}

static void cred_free(tls_cred *c)
{
    for (unsigned i = 0; i < c->npcert; i++)
        gnutls_pcert_deinit(&c->pcert[i]);
    if (c->key)
        gnutls_privkey_deinit(c->key);
    free(c);
}

/* True when the key is the private half of the certificate's public key. */
static bool key_matches(tls_cred *c)
{
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    gnutls_pubkey_t pub;
    if (gnutls_pubkey_init(&pub) < 0)
        return false;
    bool ok = gnutls_pubkey_import_privkey(pub, c->key, 0, 0) == 0 &&
              gnutls_pubkey_get_key_id(pub, 0, a, &alen) == 0 &&
              gnutls_pubkey_get_key_id(c->pcert[0].pubkey, 0, b, &blen) == 0 && alen == blen &&
              memcmp(a, b, alen) == 0;
    gnutls_pubkey_deinit(pub);
    return ok;
}

static tls_cred *cred_load(const char *cert_path, const char *key_path, char *err, size_t errlen)
{
    size_t clen = 0, klen = 0;
    char *cert = read_pem(cert_path, "Certificate", "--cert", &clen, err, errlen);
    if (!cert)
        return NULL;
    char *key = read_pem(key_path, "Key", "--key", &klen, err, errlen);
    tls_cred *c = key ? calloc(1, sizeof *c) : NULL;
    if (key && !c)
        snprintf(err, errlen, "out of memory loading the TLS key");
    if (c) {
        gnutls_datum_t cd = {(unsigned char *)cert, (unsigned)clen};
        gnutls_datum_t kd = {(unsigned char *)key, (unsigned)klen};
        c->npcert = TLS_MAX_CHAIN;
        int rc =
            gnutls_pcert_list_import_x509_raw(c->pcert, &c->npcert, &cd, GNUTLS_X509_FMT_PEM, 0);
        if (rc < 0 || !c->npcert) {
            c->npcert = 0;
            snprintf(err, errlen, "Certificate file %s holds no usable PEM certificate: %s",
                     cert_path, gnutls_strerror(rc));
        } else if ((rc = gnutls_privkey_init(&c->key)) < 0 ||
                   (rc = gnutls_privkey_import_x509_raw(c->key, &kd, GNUTLS_X509_FMT_PEM, NULL,
                                                        0)) < 0) {
            snprintf(err, errlen, "Key file %s holds no usable PEM private key: %s", key_path,
                     gnutls_strerror(rc));
        } else if (!key_matches(c)) {
            snprintf(err, errlen, "Key file %s does not belong to the certificate in %s", key_path,
                     cert_path);
        } else {
            explicit_bzero(key, klen);
            free(key);
            free(cert);
            return c;
        }
        cred_free(c);
    }
    if (key)
        explicit_bzero(key, klen);
    free(key);
    free(cert);
    return NULL;
}

int core_tls_load(const char *cert_path, const char *key_path, char *err, size_t errlen)
{
    tls_cred *c = cred_load(cert_path, key_path, err, errlen);
    if (!c)
        return -EINVAL;
    pthread_mutex_lock(&tls_lock);
    c->older = tls_current;
    tls_current = c;
    pthread_mutex_unlock(&tls_lock);
    return 0;
}

int core_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                      const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                      gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    pthread_mutex_lock(&tls_lock);
    tls_cred *c = tls_current;
    if (c) {
        *pcert = c->pcert;
        *pcert_length = c->npcert;
        *pkey = c->key;
    }
    pthread_mutex_unlock(&tls_lock);
    return c ? 0 : -1;
}

void core_tls_free(void)
{
    pthread_mutex_lock(&tls_lock);
    tls_cred *c = tls_current;
    tls_current = NULL;
    pthread_mutex_unlock(&tls_lock);
    while (c) {
        tls_cred *o = c->older;
        cred_free(c);
        c = o;
    }
}
