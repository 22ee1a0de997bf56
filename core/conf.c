/*
 * Configuration: compiled defaults < moltendb.conf < MOLTENDB_* environment
 * < command-line flags. Every key is declared by a schema (the core's below
 * or a module's), so unknown keys, bad values and sections of modules that
 * are not loaded are refused with the place they came from (docs/operations.md,
 * "Configuration").
 *
 * Ownership: core_conf owns every string in it (items, raw file lines,
 * module names); schemas are static and borrowed.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core.h"

const mdb_conf_key core_conf_schema[] = {
    {"host", MDB_CONF_STRING, "0.0.0.0", "MOLTENDB_HOST", "--host", 0, 0, 0, NULL,
     "IP address to bind to (127.0.0.1 for local only)"},
    {"port", MDB_CONF_INT, "1538", "MOLTENDB_PORT", "--port", 0, 1, 65535, NULL, "TCP port"},
    {"db-path", MDB_CONF_STRING, "my_database.log", "MOLTENDB_DB_PATH", "--db-path", MDB_CONF_PATH,
     0, 0, NULL, "database log file; other files are kept beside it"},
    {"cert", MDB_CONF_STRING, "cert.pem", "MOLTENDB_TLS_CERT", "--cert", MDB_CONF_PATH, 0, 0, NULL,
     "TLS certificate (PEM)"},
    {"key", MDB_CONF_STRING, "key.pem", "MOLTENDB_TLS_KEY", "--key", MDB_CONF_PATH, 0, 0, NULL,
     "TLS private key (PEM)"},
    {"cors-origin", MDB_CONF_STRING, "*", "MOLTENDB_CORS_ORIGIN", "--cors-origin", 0, 0, 0, NULL,
     "allowed CORS origins: * or a comma-separated list"},
    {"debug", MDB_CONF_BOOL, "false", "MOLTENDB_DEBUG", "--debug", 0, 0, 0, NULL,
     "verbose debug logging"},
    {"dev-mode", MDB_CONF_BOOL, "false", "MOLTENDB_DEV_MODE", "--dev-mode", 0, 0, 0, NULL,
     "plain HTTP instead of HTTPS (never in production)"},
    {"in-memory", MDB_CONF_BOOL, "false", "MOLTENDB_IN_MEMORY", "--in-memory", 0, 0, 0, NULL,
     "keep everything in RAM: loads storage-memory instead of the configured storage"},
    {"max-body-size", MDB_CONF_INT, "10485760", "MOLTENDB_MAX_BODY_SIZE", "--max-body-size", 0, 1,
     1073741824, NULL, "largest request body in bytes (413 beyond)"},
    {"max-keys-per-request", MDB_CONF_INT, "1000", "MOLTENDB_MAX_KEYS_PER_REQUEST",
     "--max-keys-per-request", 0, 1, 1000000, NULL, "most keys one request may name"},
    {"threads", MDB_CONF_INT, "0", "MOLTENDB_THREADS", "--threads", 0, 0, 256, NULL,
     "HTTP worker threads (0 = one per CPU)"},
    {"query-threads", MDB_CONF_INT, "0", "MOLTENDB_QUERY_THREADS", "--query-threads", 0, 0, 256,
     NULL, "threads for long-running queries, at a lower CPU priority (0 = as many as threads)"},
    {"module-dir", MDB_CONF_STRING, NULL, "MOLTENDB_MODULE_DIR", "--module-dir", MDB_CONF_PATH, 0,
     0, NULL, "extra module folders (colon-separated), searched before the built-in path"},
    {"shutdown-timeout", MDB_CONF_INT, "30", "MOLTENDB_SHUTDOWN_TIMEOUT", "--shutdown-timeout", 0,
     0, 3600, NULL, "seconds to wait for in-flight requests on SIGTERM"},
    {"max-connections-per-ip", MDB_CONF_INT, "256", "MOLTENDB_MAX_CONNECTIONS_PER_IP",
     "--max-connections-per-ip", 0, 0, 10000, NULL,
     "open connections one client address may hold (0 = no limit; trusted proxies exempt)"},
    {"new-connection-timeout", MDB_CONF_INT, "10", "MOLTENDB_NEW_CONNECTION_TIMEOUT",
     "--new-connection-timeout", 0, 1, 3600, NULL,
     "seconds a connection may stay idle before its first request"},
    {"idle-timeout", MDB_CONF_INT, "120", "MOLTENDB_IDLE_TIMEOUT", "--idle-timeout", 0, 1, 86400,
     NULL, "seconds a keep-alive connection may stay idle between requests"},
    MDB_CONF_END,
};

void core_conf_init(core_conf *c)
{
    memset(c, 0, sizeof *c);
}

void core_conf_free(core_conf *c)
{
    for (size_t i = 0; i < c->nitems; i++) {
        free(c->items[i].section);
        free(c->items[i].value);
        core_conf_list_clear(&c->items[i]);
    }
    free(c->items);
    for (size_t i = 0; i < c->nlines; i++) {
        free(c->lines[i].section);
        free(c->lines[i].key);
        free(c->lines[i].value);
        free(c->lines[i].file);
    }
    free(c->lines);
    for (size_t i = 0; i < c->nmodules; i++)
        free(c->modules[i]);
    free(c->modules);
    free(c->file);
    memset(c, 0, sizeof *c);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

core_conf_item *core_conf_find(core_conf *c, const char *section, const char *key)
{
    for (size_t i = 0; i < c->nitems; i++)
        if (strcmp(c->items[i].section, section) == 0 && strcmp(c->items[i].key->name, key) == 0)
            return &c->items[i];
    return NULL;
}

const char *core_conf_get(core_conf *c, const char *section, const char *key)
{
    core_conf_item *it = core_conf_find(c, section, key);
    return it ? it->value : NULL;
}

void core_conf_list_clear(core_conf_item *it)
{
    for (size_t i = 0; i < it->nlist; i++) {
        free(it->list[i]);
        free(it->list_src[i]);
    }
    free(it->list);
    free(it->list_src);
    it->list = it->list_src = NULL;
    it->nlist = 0;
}

/* MDB_CONF_LIST: each line or flag adds a value; a value from a stronger
 * kind of source (env over file, flag over env) replaces the list. */
static int list_add(core_conf_item *it, const char *v, const char *source)
{
    size_t kl = strcspn(source, ":");
    if (it->nlist && (strncmp(it->list_src[0], source, kl) != 0 || it->list_src[0][kl] != ':'))
        core_conf_list_clear(it);
    char **nv = realloc(it->list, (it->nlist + 1) * sizeof *nv);
    if (nv)
        it->list = nv;
    char **ns = nv ? realloc(it->list_src, (it->nlist + 1) * sizeof *ns) : NULL;
    if (ns)
        it->list_src = ns;
    if (!nv || !ns)
        return -ENOMEM;
    it->list[it->nlist] = strdup(v);
    it->list_src[it->nlist] = strdup(source);
    if (!it->list[it->nlist] || !it->list_src[it->nlist]) {
        free(it->list[it->nlist]);
        free(it->list_src[it->nlist]);
        return -ENOMEM;
    }
    it->nlist++;
    return 0;
}

int core_conf_declare(core_conf *c, const char *section, const mdb_conf_key *schema, char *err,
                      size_t errlen)
{
    for (const mdb_conf_key *k = schema; k && k->name; k++) {
        if (core_conf_find(c, section, k->name)) {
            set_err(err, errlen, "[%s] declares key '%s' twice", section, k->name);
            return -EINVAL;
        }
        for (size_t i = 0; k->flag && i < c->nitems; i++) {
            const mdb_conf_key *o = c->items[i].key;
            if (o->flag && strcmp(o->flag, k->flag) == 0) {
                set_err(err, errlen, "flag %s of [%s] %s is already used by [%s] %s", k->flag,
                        section, k->name, c->items[i].section, o->name);
                return -EINVAL;
            }
        }
        if (mdb_array_grow(&c->items, &c->capitems, c->nitems, sizeof *c->items, 32))
            return -ENOMEM;
        core_conf_item *it = &c->items[c->nitems];
        memset(it, 0, sizeof *it);
        it->section = strdup(section);
        it->key = k;
        it->value = k->default_value ? strdup(k->default_value) : NULL;
        if (!it->section || (k->default_value && !it->value))
            return -ENOMEM;
        if ((k->flags & MDB_CONF_LIST) && k->default_value &&
            list_add(it, k->default_value, "default:") != 0)
            return -ENOMEM;
        snprintf(it->source, sizeof it->source, "default");
        c->nitems++;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

/* One line into buf (NUL-terminated, without its newline). 1 with a
 * line, 0 at the end, -E2BIG when it does not fit. Unlike fgets() the
 * length is known, so a NUL byte inside the line can be told apart. */
static int read_line(FILE *f, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    int ch;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (n + 2 >= cap) /* room for this byte and the NUL, as fgets() had */
            return -E2BIG;
        buf[n++] = (char)ch;
    }
    buf[n] = 0;
    *len = n;
    return ch == EOF && n == 0 ? 0 : 1;
}

/* One file's lines; every file starts in the core's section. */
static int read_one(core_conf *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        set_err(err, errlen, "cannot read config file %s: %s", path, strerror(e));
        return -e;
    }
    char section[128] = "core";
    char line[8192];
    size_t len;
    int lineno = 0, rc = 0, got;
    while ((got = read_line(f, line, sizeof line, &len)) != 0) {
        lineno++;
        if (got < 0) {
            set_err(err, errlen, "%s:%d: line too long (max %zu bytes)", path, lineno,
                    sizeof line - 2);
            rc = -EINVAL;
            break;
        }
        if (memchr(line, 0, len)) {
            set_err(err, errlen, "%s:%d: NUL byte in the line (not a text file?)", path, lineno);
            rc = -EINVAL;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] || e == s + 1 || (size_t)(e - s - 1) >= sizeof section) {
                set_err(err, errlen, "%s:%d: malformed section header '%s' (expected [name])", path,
                        lineno, s);
                rc = -EINVAL;
                break;
            }
            *e = 0;
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(err, errlen, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            rc = -EINVAL;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 &&
            ((val[0] == '"' && val[vl - 1] == '"') || (val[0] == '\'' && val[vl - 1] == '\''))) {
            val[vl - 1] = 0;
            val++;
        }
        if (!*key) {
            set_err(err, errlen, "%s:%d: missing key before '='", path, lineno);
            rc = -EINVAL;
            break;
        }
        if (strcmp(section, "core") == 0 && strcmp(key, "module") == 0) {
            char **nm = realloc(c->modules, (c->nmodules + 1) * sizeof *nm);
            if (!nm || !(nm[c->nmodules] = strdup(val))) {
                c->modules = nm ? nm : c->modules;
                rc = -ENOMEM;
                break;
            }
            c->modules = nm;
            c->nmodules++;
            continue;
        }
        if (mdb_array_grow(&c->lines, &c->caplines, c->nlines, sizeof *c->lines, 32)) {
            rc = -ENOMEM;
            break;
        }
        core_conf_line *l = &c->lines[c->nlines++];
        l->section = strdup(section);
        l->key = strdup(key);
        l->value = strdup(val);
        l->file = strdup(path);
        l->line = lineno;
        if (!l->section || !l->key || !l->value || !l->file) {
            rc = -ENOMEM;
            break;
        }
    }
    fclose(f);
    if (rc == -ENOMEM)
        set_err(err, errlen, "out of memory reading %s", path);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Drop-ins: every "*.conf" in the conf.d folder beside the main file, in
 * byte order of their names (docs/operations.md). No folder, no drop-ins. */
static int read_dropins(core_conf *c, const char *path, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int w = slash ? snprintf(dir, sizeof dir, "%.*s/conf.d", (int)(slash - path), path)
                  : snprintf(dir, sizeof dir, "conf.d");
    if (w < 0 || (size_t)w >= sizeof dir) {
        set_err(err, errlen, "config path too long: %s", path);
        return -ENAMETOOLONG;
    }
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        int e = errno;
        set_err(err, errlen, "cannot read drop-in folder %s: %s", dir, strerror(e));
        return -e;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = -ENOMEM;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc)
        set_err(err, errlen, "out of memory listing %s", dir);
    if (names)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && !rc; i++) {
        char file[4096 + 256];
        snprintf(file, sizeof file, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(file, &st) == 0 && !S_ISREG(st.st_mode))
            continue;
        rc = read_one(c, file, err, errlen);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int core_conf_read_file(core_conf *c, const char *path, char *err, size_t errlen)
{
    free(c->file);
    c->file = strdup(path);
    if (!c->file) {
        set_err(err, errlen, "out of memory reading %s", path);
        return -ENOMEM;
    }
    int rc = read_one(c, path, err, errlen);
    return rc ? rc : read_dropins(c, path, err, errlen);
}

bool core_conf_bool_value(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", "y", "t"};
    static const char *const no[] = {"false", "no", "off", "0", "n", "f", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    return false;
}

/* Check one value against its key; on success the canonical text is stored. */
int core_conf_check_value(const mdb_conf_key *k, const char *v, char *why, size_t whylen)
{
    switch (k->type) {
    case MDB_CONF_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno) {
            snprintf(why, whylen, "'%s' is not an integer", v);
            return -EINVAL;
        }
        if ((k->min || k->max) && (n < k->min || n > k->max)) {
            snprintf(why, whylen, "%lld is out of range %lld..%lld", n, (long long)k->min,
                     (long long)k->max);
            return -EINVAL;
        }
        return 0;
    }
    case MDB_CONF_BOOL: {
        bool b;
        if (!core_conf_bool_value(v, &b)) {
            snprintf(why, whylen, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
            return -EINVAL;
        }
        return 0;
    }
    case MDB_CONF_ENUM: {
        const char *p = k->choices ? k->choices : "";
        size_t vl = strlen(v);
        while (*p) {
            const char *e = strchr(p, '|');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (n == vl && strncasecmp(p, v, n) == 0)
                return 0;
            p += n + (e ? 1 : 0);
        }
        snprintf(why, whylen, "'%s' is not one of %s", v, k->choices ? k->choices : "");
        return -EINVAL;
    }
    default:
        return 0;
    }
}

static int set_item(core_conf_item *it, const char *v, const char *source, char *err, size_t errlen,
                    const char *where)
{
    char why[256];
    if (core_conf_check_value(it->key, v, why, sizeof why)) {
        set_err(err, errlen, "%s: %s.%s: %s", where, it->section, it->key->name, why);
        return -EINVAL;
    }
    char *nv = strdup(v);
    if (!nv)
        return -ENOMEM;
    if (it->key->type == MDB_CONF_BOOL) {
        bool b = false;
        core_conf_bool_value(v, &b);
        free(nv);
        nv = strdup(b ? "true" : "false");
        if (!nv)
            return -ENOMEM;
    }
    if ((it->key->flags & MDB_CONF_LIST) && list_add(it, nv, source) != 0) {
        free(nv);
        return -ENOMEM;
    }
    free(it->value);
    it->value = nv;
    snprintf(it->source, sizeof it->source, "%s", source);
    return 0;
}

static bool section_declared(core_conf *c, const char *section)
{
    for (size_t i = 0; i < c->nitems; i++)
        if (strcmp(c->items[i].section, section) == 0)
            return true;
    return false;
}

static void known_keys(core_conf *c, const char *section, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < c->nitems && o + 2 < outlen; i++) {
        if (strcmp(c->items[i].section, section) != 0)
            continue;
        int n = snprintf(out + o, outlen - o, "%s%s", o ? ", " : "", c->items[i].key->name);
        if (n < 0 || (size_t)n >= outlen - o)
            break;
        o += (size_t)n;
    }
}

int core_conf_apply_file(core_conf *c, const char *only_section, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nlines; i++) {
        core_conf_line *l = &c->lines[i];
        if (only_section && strcmp(l->section, only_section) != 0)
            continue;
        char where[280];
        snprintf(where, sizeof where, "%.240s:%d", l->file, l->line);
        core_conf_item *it = core_conf_find(c, l->section, l->key);
        if (!it) {
            if (!section_declared(c, l->section) && strcmp(l->section, "core") != 0) {
                set_err(err, errlen,
                        "%s: section [%s] belongs to module '%s', which is not loaded "
                        "(hint: add 'module = %s' at the top, or remove the section)",
                        where, l->section, l->section, l->section);
            } else {
                char keys[1024];
                known_keys(c, l->section, keys, sizeof keys);
                set_err(err, errlen, "%s: unknown key '%s' in [%s] (hint: known keys: %s)", where,
                        l->key, l->section, keys);
            }
            return -EINVAL;
        }
        char src[320];
        snprintf(src, sizeof src, "file:%s", where);
        int rc = set_item(it, l->value, src, err, errlen, where);
        if (rc)
            return rc;
    }
    return 0;
}

int core_conf_apply_env(core_conf *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nitems; i++) {
        core_conf_item *it = &c->items[i];
        if (!it->key->env)
            continue;
        const char *v = getenv(it->key->env);
        if (!v)
            continue;
        char src[300];
        snprintf(src, sizeof src, "env:%s", it->key->env);
        int rc = set_item(it, v, src, err, errlen, it->key->env);
        if (rc)
            return rc;
    }
    return 0;
}

static core_conf_item *find_flag(core_conf *c, const char *flag, size_t n)
{
    for (size_t i = 0; i < c->nitems; i++) {
        const char *f = c->items[i].key->flag;
        if (f && strlen(f) == n && strncmp(f, flag, n) == 0)
            return &c->items[i];
    }
    return NULL;
}

/* Flags the core handles itself, outside any schema. */
static bool is_meta_flag(const char *a, bool *takes_value)
{
    static const char *const with_value[] = {"--config"};
    static const char *const switches[] = {
        "--check-config", "--print-config", "--help", "-h", "--version", "-V"};
    for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++) {
        size_t n = strlen(with_value[i]);
        if (strncmp(a, with_value[i], n) == 0 && (a[n] == 0 || a[n] == '=')) {
            *takes_value = a[n] == 0;
            return true;
        }
    }
    for (size_t i = 0; i < sizeof switches / sizeof *switches; i++)
        if (strcmp(a, switches[i]) == 0) {
            *takes_value = false;
            return true;
        }
    return false;
}

int core_conf_apply_argv(core_conf *c, int argc, char **argv, bool strict, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool takes;
        if (is_meta_flag(a, &takes)) {
            if (takes)
                i++;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (strict) {
                set_err(err, errlen, "unexpected argument '%s' (see --help)", a);
                return -EINVAL;
            }
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        core_conf_item *it = find_flag(c, a, n);
        if (!it) {
            if (strict) {
                set_err(err, errlen,
                        "unknown option '%.*s' (see --help; a module's options exist only when "
                        "the module is loaded)",
                        (int)n, a);
                return -EINVAL;
            }
            /* Not yet known (a module's flag): skip its value if it has one. */
            if (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                i++;
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (it->key->type == MDB_CONF_BOOL) {
            v = "true";
        } else {
            if (i + 1 >= argc) {
                set_err(err, errlen, "option %s needs a value", it->key->flag);
                return -EINVAL;
            }
            v = argv[++i];
        }
        char src[300];
        snprintf(src, sizeof src, "flag:%s", it->key->flag);
        int rc = set_item(it, v, src, err, errlen, it->key->flag);
        if (rc)
            return rc;
    }
    return 0;
}

int core_conf_validate(core_conf *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nitems; i++) {
        core_conf_item *it = &c->items[i];
        if ((it->key->flags & MDB_CONF_REQUIRED) && (!it->value || !*it->value)) {
            char how[512];
            int n = snprintf(how, sizeof how, "set ");
            if (it->key->flag)
                n += snprintf(how + n, sizeof how - (size_t)n, "%s or ", it->key->flag);
            if (it->key->env)
                n += snprintf(how + n, sizeof how - (size_t)n, "%s or ", it->key->env);
            snprintf(how + n, sizeof how - (size_t)n, "'%s' in [%s] of moltendb.conf",
                     it->key->name, it->section);
            set_err(err, errlen, "%s.%s is required: %s", it->section, it->key->name, how);
            return -EINVAL;
        }
    }
    return 0;
}

void core_conf_print(core_conf *c, FILE *out)
{
    fprintf(out, "# effective configuration (value  # source)\n");
    fprintf(out, "# config file: %s\n", c->file ? c->file : "(none)");
    for (size_t i = 0; i < c->nmodules; i++)
        fprintf(out, "module = %s\n", c->modules[i]);
    for (size_t i = 0; i < c->nitems; i++) {
        core_conf_item *it = &c->items[i];
        const char *v = it->value ? it->value : "";
        if ((it->key->flags & MDB_CONF_SECRET) && it->value && *it->value)
            v = "(secret, redacted)";
        if ((it->key->flags & MDB_CONF_LIST) && it->nlist) {
            for (size_t j = 0; j < it->nlist; j++)
                fprintf(out, "%s.%s = %s  # %s\n", it->section, it->key->name,
                        (it->key->flags & MDB_CONF_SECRET) ? "(secret, redacted)" : it->list[j],
                        it->list_src[j]);
            continue;
        }
        fprintf(out, "%s.%s = %s  # %s\n", it->section, it->key->name, it->value ? v : "(unset)",
                it->source);
    }
}

void core_conf_usage(core_conf *c, FILE *out)
{
    fprintf(out, "Usage: moltendb [options]\n"
                 "       moltendb <subcommand> [args]   (subcommands come from modules)\n\n"
                 "Options (each also settable in moltendb.conf and by its environment variable):\n"
                 "  --config FILE          config file (env MOLTENDB_CONFIG)\n"
                 "  --check-config         validate the configuration and exit 0 or 1\n"
                 "  --print-config         print every value with its source, secrets redacted\n"
                 "  --help, --version\n");
    const char *last = NULL;
    for (size_t i = 0; i < c->nitems; i++) {
        core_conf_item *it = &c->items[i];
        if (!last || strcmp(last, it->section) != 0) {
            fprintf(out, "\n[%s]\n", it->section);
            last = it->section;
        }
        char lhs[96];
        snprintf(lhs, sizeof lhs, "%s%s", it->key->flag ? it->key->flag : it->key->name,
                 it->key->type == MDB_CONF_BOOL ? "" : " VALUE");
        fprintf(out, "  %-30s %s", lhs, it->key->help ? it->key->help : "");
        if (it->key->default_value && !(it->key->flags & MDB_CONF_SECRET))
            fprintf(out, " (default %s)", it->key->default_value);
        if (it->key->flags & MDB_CONF_REQUIRED)
            fprintf(out, " (required)");
        if (it->key->env)
            fprintf(out, " [%s]", it->key->env);
        fputc('\n', out);
    }
}
