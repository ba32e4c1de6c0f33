/*
 * agents/job_get.c - typed getters over a YAML document with positions.
 *
 * Each reads one member, checks its type and range, and on a problem
 * reports it with the place and returns the default: validation never stops
 * at the first error. Durations and sizes are parsed here, in doubles, and
 * range-checked before they are converted, so no value overflows.
 */
#include "job_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void eddy__job_err(vctx *c, const char *path, int key, const char *fmt, ...)
{
    char where[512], msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eddy_diag_add(c->diag, "%s: %s", WHERE(c, path, key), msg);
    c->errors++;
}

const char *eddy__job_type(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "a mapping";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

void eddy__job_join(char *out, size_t n, const char *path, const char *key)
{
    /* KEY is one segment of a JSON pointer: '~' and '/' are escaped as the
     * YAML loader's positions are (RFC 6901) */
    size_t k = (size_t)snprintf(out, n, "%s/", path);
    for (; *key && k + 3 < n; key++) {
        if (*key == '~' || *key == '/') {
            out[k++] = '~';
            out[k++] = *key == '~' ? '0' : '1';
        } else {
            out[k++] = *key;
        }
    }
    if (k < n)
        out[k] = '\0';
}

void eddy__job_keys(vctx *c, json_t *v, const char *path, const char *const *allowed)
{
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        const char *best = NULL;
        size_t bestd = (size_t)-1, i;
        char p[512];
        for (i = 0; allowed[i]; i++) {
            size_t d;
            if (!strcmp(k, allowed[i]))
                break;
            d = eddy_levenshtein(k, allowed[i]);
            if (d < bestd) {
                bestd = d;
                best = allowed[i];
            }
        }
        if (allowed[i])
            continue;
        eddy__job_join(p, sizeof(p), path, k);
        if (best && bestd <= (strlen(k) <= 4 ? 1u : strlen(k) <= 8 ? 2u : 3u))
            eddy__job_err(c, p, 1, "unknown key '%s' (did you mean '%s'?)", k, best);
        else {
            eddy_buf b;
            char *list;
            eddy_buf_init(&b);
            for (i = 0; allowed[i]; i++)
                eddy_buf_printf(&b, "%s%s", i ? ", " : "", allowed[i]);
            list = eddy_buf_take(&b);
            eddy__job_err(c, p, 1, "unknown key '%s' (expected one of: %s)", k, list ? list : "");
            eddy_free(list);
        }
    }
}

json_t *eddy__job_member(vctx *c, json_t *v, const char *path, const char *key, int required)
{
    json_t *x = json_object_get(v, key);
    if (!x && required) /* point at the mapping's own key: "default:" */
        eddy__job_err(c, path, 1, "missing required key '%s'", key);
    return x;
}

const char *eddy__job_env_text(vctx *c, const char *path)
{
    json_t *t = json_array_get(json_object_get(c->doc->pos, path), 4);
    return json_is_string(t) ? json_string_value(t) : NULL;
}

json_t *eddy__job_env_values(vctx *c, const char *path)
{
    json_t *t = json_array_get(json_object_get(c->doc->pos, path), 5);
    return json_is_array(t) ? t : NULL;
}

void eddy__job_env_strings(vctx *c, json_t *v, const char *path, const char *const *keys)
{
    for (size_t i = 0; keys[i]; i++) {
        char p[512];
        const char *text;
        eddy__job_join(p, sizeof(p), path, keys[i]);
        if (json_object_get(v, keys[i]) && (text = eddy__job_env_text(c, p)))
            json_object_set_new(v, keys[i], json_string(text));
    }
}

/* String member KEY (numbers as written); DEF when absent or null. */
char *eddy__job_str(vctx *c, json_t *v, const char *path, const char *key, int flags,
                    const char *def)
{
    char p[512], *s = NULL;
    const char *text;
    json_t *x = eddy__job_member(c, v, path, key, flags & S_REQ);
    eddy__job_join(p, sizeof(p), path, key);
    if (x && (text = eddy__job_env_text(c, p)))
        s = eddy_strdup(text);
    else if (!x || json_is_null(x))
        return def ? eddy_strdup(def) : NULL;
    else if (json_is_string(x))
        s = eddy_strdup(json_string_value(x));
    else if (json_is_integer(x) || json_is_real(x))
        return eddy_json_key_string(x);
    else {
        eddy__job_err(c, p, 0, "'%s' must be a string, not %s", key, eddy__job_type(x));
        return NULL;
    }
    if (s && !*s && (flags & (S_REQ | S_NONEMPTY))) {
        eddy__job_err(c, p, 0, "'%s' must not be empty", key);
        eddy_free(s);
        return NULL;
    }
    return s;
}

long long eddy__job_int(vctx *c, json_t *v, const char *path, const char *key, long long def,
                        long long min, long long max)
{
    char p[512];
    json_t *x = eddy__job_member(c, v, path, key, 0);
    eddy__job_join(p, sizeof(p), path, key);
    if (!x || json_is_null(x))
        return def;
    if (json_is_real(x) && (json_real_value(x) < (double)min || json_real_value(x) > (double)max)) {
        /* also what an integer too large for 64 bits becomes */
        eddy__job_err(c, p, 0, "'%s' must be between %lld and %lld", key, min, max);
        return def;
    }
    if (!json_is_integer(x)) {
        eddy__job_err(c, p, 0, "'%s' must be an integer, not %s", key, eddy__job_type(x));
        return def;
    }
    if (json_integer_value(x) < min || json_integer_value(x) > max) {
        eddy__job_err(c, p, 0, "'%s' must be between %lld and %lld", key, min, max);
        return def;
    }
    return json_integer_value(x);
}

/* MS in the largest unit that writes it exactly ("1d", "90s", "250ms"). */
static const char *fmt_ms(int64_t ms, char *buf, size_t n)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, n, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, n, "%lldms", (long long)ms);
    return buf;
}

/* Duration member KEY in milliseconds, within [MIN_MS, MAX_MS]. */
int64_t eddy__job_duration(vctx *c, json_t *v, const char *path, const char *key, int64_t def,
                           int64_t min_ms, int64_t max_ms)
{
    char p[512], lo[32], hi[32];
    double ms;
    json_t *x = eddy__job_member(c, v, path, key, 0);
    eddy__job_join(p, sizeof(p), path, key);
    if (!x || json_is_null(x))
        return def;
    if (json_is_number(x))
        ms = json_number_value(x) * 1000.0; /* a bare number of seconds */
    else if (!json_is_string(x) || eddy_parse_duration(json_string_value(x), &ms)) {
        eddy__job_err(c, p, 0, "'%s' must be a duration such as 500ms, 30s, 5m, 2h, 30d", key);
        return def;
    }
    if (!(ms >= (double)min_ms && ms <= (double)max_ms)) {
        eddy__job_err(c, p, 0, "'%s' must be between %s and %s", key,
                      fmt_ms(min_ms, lo, sizeof(lo)), fmt_ms(max_ms, hi, sizeof(hi)));
        return def;
    }
    return (int64_t)llround(ms);
}

/* A size: bytes, or a number with B, KB, MB, GB (powers of 1000) or KiB,
 * MiB, GiB (powers of 1024), any case. Returns 0 or -1. */
static int parse_size(const char *s, double *bytes)
{
    static const struct {
        const char *unit;
        double n;
    } units[] = {{"", 1},     {"b", 1},        {"kb", 1e3},      {"mb", 1e6},
                 {"gb", 1e9}, {"kib", 1024.0}, {"mib", 1048576}, {"gib", 1073741824}};
    char *end;
    double v;
    if (!(isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '-' || s[0] == '+'))
        return -1;
    v = strtod(s, &end);
    if (end == s || !isfinite(v))
        return -1;
    if (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!strcasecmp(end, units[i].unit)) {
            *bytes = v * units[i].n;
            return 0;
        }
    }
    return -1;
}

static const char *fmt_size(int64_t n, char *buf, size_t len)
{
    if (n >= (1 << 30) && n % (1 << 30) == 0)
        snprintf(buf, len, "%lldGiB", (long long)(n >> 30));
    else if (n >= (1 << 20) && n % (1 << 20) == 0)
        snprintf(buf, len, "%lldMiB", (long long)(n >> 20));
    else if (n >= 1024 && n % 1024 == 0)
        snprintf(buf, len, "%lldKiB", (long long)(n >> 10));
    else
        snprintf(buf, len, "%lld byte%s", (long long)n, n == 1 ? "" : "s");
    return buf;
}

/* Size member KEY in bytes, within [MIN, MAX]. */
int64_t eddy__job_size(vctx *c, json_t *v, const char *path, const char *key, int64_t def,
                       int64_t min, int64_t max)
{
    char p[512], lo[32], hi[32];
    double n;
    json_t *x = eddy__job_member(c, v, path, key, 0);
    eddy__job_join(p, sizeof(p), path, key);
    if (!x || json_is_null(x))
        return def;
    if (json_is_number(x))
        n = json_number_value(x);
    else if (!json_is_string(x) || parse_size(json_string_value(x), &n)) {
        eddy__job_err(c, p, 0,
                      "'%s' must be a size such as 16MB, 64MiB, 512KB or a number of bytes", key);
        return def;
    }
    if (!(n >= (double)min && n <= (double)max)) {
        eddy__job_err(c, p, 0, "'%s' must be between %s and %s", key, fmt_size(min, lo, sizeof(lo)),
                      fmt_size(max, hi, sizeof(hi)));
        return def;
    }
    return (int64_t)llround(n);
}

json_t *eddy__job_map(vctx *c, json_t *v, const char *path, const char *key, int required)
{
    char p[512];
    json_t *x = eddy__job_member(c, v, path, key, required);
    eddy__job_join(p, sizeof(p), path, key);
    if (x && !json_is_object(x)) {
        eddy__job_err(c, p, 0, "'%s' must be a mapping, not %s", key, eddy__job_type(x));
        return NULL;
    }
    return x;
}

/* A boolean member, or DEF. */
int eddy__job_bool(vctx *c, json_t *v, const char *path, const char *key, int def)
{
    char p[512];
    json_t *x = json_object_get(v, key);
    eddy__job_join(p, sizeof(p), path, key);
    if (!x || json_is_null(x))
        return def;
    if (!json_is_boolean(x)) {
        eddy__job_err(c, p, 0, "'%s' must be true or false, not %s", key, eddy__job_type(x));
        return def;
    }
    return json_is_true(x);
}
