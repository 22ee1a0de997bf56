/*
 * storage-wal: `moltendb recover`, point-in-time recovery. Rebuilds the state
 * from a snapshot (optional) and a log up to a time or a batch count, and
 * writes it as a snapshot file the server loads. Exit codes: docs/recover.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal_file.h"

enum { RC_OK = 0, RC_FAIL = 1, RC_USAGE = 2, RC_KEY = 3 };

int wal_recover_main(int argc, char **argv);

static int usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "recover: %s\n", msg);
    fprintf(stderr, "usage: moltendb recover --log FILE --out FILE [--snapshot FILE] "
                    "[--to-time UNIX_MS] [--to-seq N] [--encryption-key K]\n"
                    "                        [--out-encryption-key K2 | --out-plaintext]\n");
    return RC_USAGE;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static void noop_point(void *ud)
{
    (void)ud;
}

/* Replay one file; the header goes to *h. */
static int replay(wal_replay *rp, const char *path, bool want_snapshot, wal_header *h,
                  uint64_t skip_gen, uint64_t skip_off)
{
    int rc = wal_replay_file(rp, path, want_snapshot, -1, h, skip_gen, skip_off);
    if (rc == 1) {
        snprintf(rp->why, sizeof rp->why, "%.600s has no header (empty or damaged)", path);
        rc = -EINVAL;
    }
    return rc;
}

int wal_recover_main(int argc, char **argv)
{
    const char *log = NULL, *out = NULL, *snap = NULL, *key = NULL, *out_key = NULL;
    bool out_plain = false;
    uint64_t to_time = 0, to_seq = 0;
    unsigned char newkey[WAL_KEY_BYTES]; /* --out-encryption-key's key, wiped at the end */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char *eq = strchr(a, '=');
        char name[32];
        if (strncmp(a, "--", 2) != 0)
            return usage("unexpected argument");
        if (strcmp(a, "--out-plaintext") == 0) {
            out_plain = true;
            continue;
        }
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            v = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
            if (i + 1 >= argc)
                return usage("missing value");
            v = argv[++i];
        }
        if (strcmp(name, "--config") == 0 || strcmp(name, "--module-dir") == 0)
            continue; /* read by the core before it dispatched here */
        if (strcmp(name, "--log") == 0)
            log = v;
        else if (strcmp(name, "--out") == 0)
            out = v;
        else if (strcmp(name, "--snapshot") == 0)
            snap = v;
        else if (strcmp(name, "--encryption-key") == 0)
            key = v;
        else if (strcmp(name, "--out-encryption-key") == 0)
            out_key = v;
        else if (strcmp(name, "--to-time") == 0) {
            if (!parse_u64(v, &to_time) || to_time == 0)
                return usage("--to-time needs a positive number of unix milliseconds");
        } else if (strcmp(name, "--to-seq") == 0) {
            if (!parse_u64(v, &to_seq) || to_seq == 0)
                return usage("--to-seq needs a positive number of batches");
        } else {
            return usage("unknown option");
        }
    }
    if (!log || !out)
        return usage("--log and --out are required");
    if (out_plain && out_key)
        return usage("--out-plaintext and --out-encryption-key exclude each other");
    if (out_key && !*out_key)
        return usage("--out-encryption-key needs a password");
    if (sodium_init() < 0) {
        fprintf(stderr, "recover: libsodium failed to initialise\n");
        return RC_FAIL;
    }
    if (!key || !*key)
        key = getenv("MOLTENDB_ENCRYPTION_KEY");
    if (!key || !*key)
        key = getenv("ENCRYPTION_KEY"); /* upstream's name for recover */
    if (!key || !*key)
        key = WAL_DEFAULT_PASSWORD;
    struct stat st;
    if (stat(out, &st) == 0) {
        fprintf(stderr, "recover: %s already exists; choose another --out or remove it\n", out);
        return RC_FAIL;
    }

    mdb_store *store = mdb_store_new();
    if (!store) {
        fprintf(stderr, "recover: out of memory\n");
        return RC_FAIL;
    }
    wal_keyring keys = {.password = key};
    int rc = 0, code = RC_OK;
    wal_header sh = {0}, lh = {0};
    bool have_snap = false;
    wal_replay sp = {.store = store, .keys = &keys, .to_stderr = true};
    wal_replay lp = {.store = store,
                     .keys = &keys,
                     .to_stderr = true,
                     .to_time = (int64_t)to_time,
                     .to_seq = to_seq};
    char auto_snap[PATH_MAX];
    if (!snap &&
        snprintf(auto_snap, sizeof auto_snap, "%s.snapshot.bin", log) < (int)sizeof auto_snap &&
        stat(auto_snap, &st) == 0) {
        /* After a compaction the log only holds what followed the snapshot. */
        snap = auto_snap;
        fprintf(stderr, "recover: starting from the snapshot %s\n", snap);
    }
    if (snap) {
        rc = replay(&sp, snap, true, &sh, 0, 0);
        if (rc) {
            fprintf(stderr, "recover: %s\n", sp.why);
            code = rc == -EACCES ? RC_KEY : RC_FAIL;
            goto done;
        }
        have_snap = true;
    }
    rc = replay(&lp, log, false, &lh, have_snap ? sh.log_gen : 0, sh.log_off);
    if (rc) {
        fprintf(stderr, "recover: %s\n", lp.why);
        code = rc == -EACCES ? RC_KEY : RC_FAIL;
        goto done;
    }

    /* The output is encrypted like its sources, with the same salt. */
    const wal_header *src = lh.encrypted ? &lh : have_snap && sh.encrypted ? &sh : NULL;
    const unsigned char *k = NULL;
    wal_header oh = {0};
    oh.snapshot = true;
    oh.gen = wal_random_gen();
    oh.log_gen = 0; /* matches no log: the server replays its whole log on top */
    if (out_key) {
        /* A new password: a new salt, a new key check. */
        oh.encrypted = true;
        randombytes_buf(oh.salt, sizeof oh.salt);
        oh.opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        oh.memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        mdb_buf chk;
        mdb_buf_init(&chk);
        if (wal_derive_key(out_key, oh.salt, oh.opslimit, oh.memlimit, newkey) == 0)
            wal_key_check_make(newkey, &chk);
        else
            chk.oom = 1;
        if (chk.oom || chk.len >= sizeof oh.check) {
            mdb_buf_free(&chk);
            fprintf(stderr, "recover: out of memory\n");
            code = RC_FAIL;
            goto done;
        }
        memcpy(oh.check, chk.data, chk.len);
        mdb_buf_free(&chk);
        k = newkey;
    } else if (src && !out_plain) {
        if (wal_keyring_get(&keys, src, &k) != 0) {
            fprintf(stderr, "recover: encryption key does not match (%s)\n", log);
            code = RC_KEY;
            goto done;
        }
        oh.encrypted = true;
        memcpy(oh.salt, src->salt, sizeof oh.salt);
        oh.opslimit = src->opslimit;
        oh.memlimit = src->memlimit;
        memcpy(oh.check, src->check, sizeof oh.check);
    }
    mdb_frozen *f = NULL;
    if (mdb_store_freeze(store, noop_point, NULL, &f) != 0) {
        fprintf(stderr, "recover: out of memory\n");
        code = RC_FAIL;
        goto done;
    }
    char tmp[PATH_MAX], why[2 * PATH_MAX + 128];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    uint64_t bytes = 0;
    uint64_t docs = mdb_frozen_doc_count(f);
    rc = wal_snapshot_write(tmp, f, &oh, k, &bytes, why, sizeof why);
    mdb_frozen_free(f);
    if (!rc && rename(tmp, out) != 0) {
        rc = -errno;
        snprintf(why, sizeof why, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
        unlink(tmp);
    }
    if (!rc)
        wal_fsync_dir_of(out);
    if (rc) {
        fprintf(stderr, "recover: %s\n", why);
        code = RC_FAIL;
        goto done;
    }
    printf("Recovered %" PRIu64 " records (%" PRIu64 " from the snapshot, %" PRIu64 " from %" PRIu64
           " log batches%s): %" PRIu64 " documents written to %s\n",
           sp.records + lp.records, sp.records, lp.records, lp.batches,
           lp.limited ? ", stopped at the limit" : "", docs, out);
done:
    sodium_memzero(newkey, sizeof newkey);
    wal_keyring_wipe(&keys);
    mdb_store_free(store);
    return code;
}
