/*
 * core/util.c - time, hashing, randomness, parsing of durations and
 * integers, whole-file reads, edit distance, and the JSON helpers every
 * module shares (the JSON writer is core/json.c). Pure functions; nothing
 * here keeps state but the PRNG.
 */
#include "eddy/buf.h"
#include "eddy/error.h"
#include "eddy/json.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

uint64_t eddy_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void eddy_deadline_in(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

uint64_t eddy_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t eddy_hash64(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static _Thread_local uint64_t prng_state;

static uint64_t prng_next(void)
{
    /* xorshift64*, seeded from the OS once per thread */
    if (!prng_state) {
        if (getrandom(&prng_state, sizeof(prng_state), 0) != sizeof(prng_state))
            prng_state = eddy_wall_ns() ^ (uint64_t)(uintptr_t)&prng_state;
        prng_state |= 1;
    }
    prng_state ^= prng_state >> 12;
    prng_state ^= prng_state << 25;
    prng_state ^= prng_state >> 27;
    return prng_state * 2685821657736338717ull;
}

void eddy_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    if (getrandom(out, n, 0) == (ssize_t)n)
        return;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(prng_next() >> 56);
}

double eddy_random_unit(void)
{
    return (double)(prng_next() >> 11) / 9007199254740992.0;
}

int eddy_parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (!s || !*s)
        return EDDY_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end)
        return EDDY_EINVAL;
    *out = v;
    return 0;
}

int eddy_parse_duration(const char *s, double *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 1000}};
    char *end;
    double v;
    if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '-' || s[0] == '+'))
        return -1;
    v = strtod(s, &end);
    if (end == s || !isfinite(v))
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!strcmp(end, units[i].unit)) {
            *ms = v * units[i].ms; /* may be infinite: out of any range */
            return 0;
        }
    }
    return -1;
}

int eddy_parse_duration_ms(const char *s, int64_t *out_ms)
{
    double ms;
    /* the range check comes before the conversion (a cast of 1e300 is UB) */
    if (eddy_parse_duration(s, &ms) || !(ms >= 0 && ms < 9.2e18))
        return EDDY_EINVAL;
    *out_ms = (int64_t)(ms + 0.5);
    return 0;
}

int eddy_read_file(const char *path, char **out, size_t *len, eddy_err *err)
{
    FILE *f = fopen(path, "rb");
    eddy_buf b;
    char chunk[8192];
    size_t n;
    int rc = 0;

    if (!f)
        return eddy_err_setc(err, errno == ENOENT ? EDDY_ENOENT : EDDY_EIO, errno,
                             "%s: cannot open: %s", path, strerror(errno));
    eddy_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (eddy_buf_append(&b, chunk, n)) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "%s: out of memory", path);
            goto out;
        }
    }
    if (ferror(f)) {
        rc = eddy_err_setc(err, EDDY_EIO, errno, "%s: read error: %s", path, strerror(errno));
        goto out;
    }
    if (len)
        *len = b.len;
    *out = eddy_buf_take(&b);
    if (!*out)
        rc = eddy_err_set(err, EDDY_ENOMEM, "%s: out of memory", path);
out:
    fclose(f);
    if (rc)
        eddy_buf_free(&b);
    return rc;
}

int eddy_mkdirs_for(const char *path, eddy_err *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return eddy_err_set(err, EDDY_EIO, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return eddy_err_setc(err, EDDY_EIO, errno, "%s: cannot create folder %s: %s", path, buf,
                                 strerror(errno));
        *p = '/';
    }
    return 0;
}

size_t eddy_levenshtein(const char *a, const char *b)
{
    /* optimal string alignment: an adjacent swap ("modle") counts as one edit */
    size_t la = strlen(a), lb = strlen(b), d[64][64];
    if (la >= 63 || lb >= 63)
        return (size_t)-1;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            size_t best = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

json_t *eddy_json_path(json_t *root, const char *path)
{
    const char *p = path, *dot;
    json_t *cur = root;
    char seg[256];
    while (cur && p && *p) {
        size_t n;
        dot = strchr(p, '.');
        n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(seg))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            int64_t idx;
            if (eddy_parse_i64(seg, &idx) || idx < 0)
                return NULL;
            cur = json_array_get(cur, (size_t)idx);
        } else {
            return NULL;
        }
        p = dot ? dot + 1 : NULL;
    }
    return cur;
}

char *eddy_json_key_string(json_t *v)
{
    char num[EDDY_JSON_NUMBER_MAX];
    if (!v)
        return NULL;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return eddy_strndup(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return eddy_strndup(num, eddy_json_integer_text(json_integer_value(v), num));
    case JSON_REAL:
        return eddy_strndup(num, eddy_json_number_text(json_real_value(v), num));
    case JSON_TRUE:
        return eddy_strdup("true");
    case JSON_FALSE:
        return eddy_strdup("false");
    default:
        return NULL;
    }
}

const char *eddy_json_str(json_t *o, const char *name, const char *def)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) ? json_string_value(v) : def;
}

int eddy_json_same(const json_t *a, const json_t *b)
{
    return (!a && !b) || (a && b && json_equal((json_t *)a, (json_t *)b));
}

long long eddy_json_int(json_t *o, const char *name, long long def)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

size_t eddy_utf8_seq_len(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned c, cp, min;
    size_t k;
    if (n == 0)
        return 0;
    c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 3, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t j = 1; j <= k; j++) {
        if (j >= n || (s[j] & 0xC0) != 0x80)
            return 0; /* the sequence that starts here is broken */
        cp = (cp << 6) | (s[j] & 0x3F);
    }
    return cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : k + 1;
}

size_t eddy_utf8_cut(const char *s, size_t n, size_t max)
{
    size_t k = max;
    if (n <= max)
        return n;
    /* back over continuation bytes (at most 3) to the start of a sequence */
    while (k > 0 && max - k < 3 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return ((unsigned char)s[k] & 0xC0) == 0x80 ? max : k;
}

size_t eddy_utf8_invalid(const char *s, size_t n)
{
    size_t i = 0, k;
    while (i < n) {
        if (!(k = eddy_utf8_seq_len(s + i, n - i)))
            return i;
        i += k;
    }
    return n;
}

size_t eddy_secret_find(const char *const *secrets, size_t n, const char *t, size_t len,
                        size_t from, size_t *at)
{
    size_t best = len + 1, end = 0;
    for (size_t i = 0; i < n && from < len; i++) {
        size_t k = strlen(secrets[i]);
        const char *p = k ? memmem(t + from, len - from, secrets[i], k) : NULL;
        if (p && ((size_t)(p - t) < best || ((size_t)(p - t) == best && best + k > end))) {
            best = (size_t)(p - t);
            end = best + k;
        }
    }
    *at = best;
    return best <= len ? end : 0;
}
