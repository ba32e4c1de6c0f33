/*
 * fluss/rowjson.c - row values to JSON objects and back.
 *
 * The mapping is lossless for every supported type: 64-bit integers stay
 * JSON integers, DECIMAL travels as a string of its exact digits, BYTES as
 * base64, dates and timestamps as ISO-8601 text (epoch milliseconds are
 * accepted on input). Errors name the column and say what was expected.
 * Dates and times in text are years 0000 to 9999 (the range of Fluss's DATE
 * and TIMESTAMP types); any epoch millisecond prints without overflow.
 */
#include "eddy/fluss.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/json.h"
#include "fluss_int.h"

/* -- base64 ----------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *b64_json(const uint8_t *p, size_t n)
{
    size_t out_len = 4 * ((n + 2) / 3);
    char *s = eddy_malloc(out_len + 1), *o = s;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? B64[v & 63] : '=';
    }
    json_t *j = json_stringn(s, out_len);
    eddy_free(s);
    return j;
}

static int b64_val(int c)
{
    const char *q = c ? strchr(B64, c) : NULL;
    return q ? (int)(q - B64) : -1;
}

/* Decode base64 TEXT into the arena; -1 when it is not base64. */
static int b64_decode(const char *text, size_t n, eddy_fluss_arena *a, const char **out,
                      size_t *out_n)
{
    uint8_t *o = eddy_fluss_arena_alloc(a, n / 4 * 3 + 3);
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (!o)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '=')
            break;
        int v = b64_val((unsigned char)text[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out = (const char *)o;
    *out_n = k;
    return 0;
}

/* -- dates ------------------------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static json_t *ts_json(const eddy_fluss_column *c, const eddy_fluss_value *v)
{
    char s[64];
    /* floor division by whole days, without forming days * 86400000 (which
     * overflows near INT64_MIN) */
    int64_t days = v->v.ts.ms / 86400000, msday = v->v.ts.ms % 86400000, y;
    unsigned m, d;
    if (msday < 0) {
        days--;
        msday += 86400000;
    }
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(s, sizeof(s), "%04lld-%02u-%02uT%02d:%02d:%02d", (long long)y, m, d,
                     (int)(msday / 3600000), (int)(msday / 60000 % 60), (int)(msday / 1000 % 60));
    if (c->precision > 0) {
        char frac[16];
        snprintf(frac, sizeof(frac), "%03d%06d", (int)(msday % 1000), (int)v->v.ts.nanos);
        frac[c->precision] = 0;
        n += snprintf(s + n, sizeof(s) - (size_t)n, ".%s", frac);
    }
    if (c->type == EDDY_FLUSS_TIMESTAMP_LTZ)
        snprintf(s + n, sizeof(s) - (size_t)n, "Z");
    return json_string(s);
}

/* Read 1 to MAX decimal digits at *S into *OUT and advance; -1 when none. */
static int digits(const char **s, int max, int *out)
{
    int n = 0, v = 0;
    while (n < max && isdigit((unsigned char)**s)) {
        v = v * 10 + (*(*s)++ - '0');
        n++;
    }
    *out = v;
    return n ? 0 : -1;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return dm[m - 1] + (m == 2 && leap);
}

/* Parse "YYYY-MM-DD[THH:MM[:SS[.fff...]]][Z|+hh:mm|-hh:mm]" (year 0000 to
 * 9999, fields of at most their usual digits); returns -1 when bad. */
static int parse_iso(const char *s, int64_t *ms, int32_t *nanos, int *has_zone)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    int64_t frac_ns = 0;
    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' ||
        digits(&s, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    if (*s == 'T' || *s == ' ') {
        s++;
        if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi))
            return -1;
        if (*s == ':') {
            s++;
            if (digits(&s, 2, &sec))
                return -1;
        }
        if (*s == '.') {
            int nd = 0;
            s++;
            while (isdigit((unsigned char)*s)) {
                if (nd < 9)
                    frac_ns = frac_ns * 10 + (*s - '0');
                nd++;
                s++;
            }
            for (; nd < 9; nd++)
                frac_ns *= 10;
        }
    }
    if (h > 23 || mi > 59 || sec > 60)
        return -1;
    int64_t off_min = 0;
    *has_zone = 0;
    if (*s == 'Z' || *s == 'z') {
        *has_zone = 1;
        s++;
    } else if (*s == '+' || *s == '-') {
        int oh, om = 0;
        int sign = *s++ == '-' ? -1 : 1;
        if (digits(&s, 2, &oh) || oh > 23)
            return -1;
        if (*s == ':')
            s++;
        if (isdigit((unsigned char)*s) && (digits(&s, 2, &om) || om > 59))
            return -1;
        off_min = sign * (oh * 60 + om);
        *has_zone = 1;
    }
    if (*s)
        return -1;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ms = ((days * 24 + h) * 60 + mi - off_min) * 60000 + (int64_t)sec * 1000 + frac_ns / 1000000;
    *nanos = (int32_t)(frac_ns % 1000000);
    return 0;
}

/* -- decimals --------------------------------------------------------------- */

static json_t *dec_json(const eddy_fluss_column *c, __int128 v)
{
    char digits[48], out[52];
    int n = 0, neg = v < 0;
    unsigned __int128 u = neg ? -(unsigned __int128)v : (unsigned __int128)v;
    do {
        digits[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    while (n <= c->scale)
        digits[n++] = '0';
    int o = 0;
    if (neg)
        out[o++] = '-';
    for (int i = n - 1; i >= 0; i--) {
        out[o++] = digits[i];
        if (i == c->scale && c->scale > 0)
            out[o++] = '.';
    }
    out[o] = 0;
    return json_string(out);
}

/*
 * A real as plain decimal text with SCALE fraction digits, for a DECIMAL
 * column: the number as written (its shortest text: 2.675, where the double
 * is 2.67499999999999982236431605997495353221893310546875), rounded half up
 * at the scale as Fluss rounds (2.68), never with an exponent. Text that
 * does not fit NUM is cut short, which parse_dec then rejects.
 */
static void real_decimal_text(double x, int scale, char *num, size_t size)
{
    char d[18], buf[420];
    int decpt, n = eddy_json_number_digits(x, d, &decpt), o = 0, cut = decpt + scale;
    /* digits at cut and after fall away, rounding the rest half up */
    if (cut < 0) {
        n = 0; /* 0.0004 at scale 2 */
    } else if (cut < n) {
        int up = d[cut] >= '5', i = cut - 1;
        n = cut;
        for (; up && i >= 0 && d[i] == '9'; i--)
            n = i; /* 0.199 at scale 2: the 9s go */
        if (up && i >= 0) {
            d[i]++;
        } else if (up) { /* 9.996 -> 10.00, 0.006 at scale 2 -> 0.01 */
            d[0] = '1';
            n = 1;
            decpt++;
        }
    }
    if (x < 0)
        buf[o++] = '-';
    if (decpt <= 0)
        buf[o++] = '0';
    for (int i = 0; i < decpt; i++)
        buf[o++] = i < n ? d[i] : '0';
    if (scale > 0)
        buf[o++] = '.';
    for (int i = decpt; i < decpt + scale; i++)
        buf[o++] = i >= 0 && i < n ? d[i] : '0';
    buf[o] = '\0';
    snprintf(num, size, "%s", buf);
}

/* Exact digits of TEXT at the column's scale; -1 when not a number that fits. */
static int parse_dec(const eddy_fluss_column *c, const char *text, __int128 *out)
{
    const char *p = text;
    int neg = 0, digits = 0, frac = 0, seen_dot = 0;
    unsigned __int128 u = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    for (; *p; p++) {
        if (*p == '.' && !seen_dot) {
            seen_dot = 1;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            return -1;
        if (seen_dot && frac == c->scale) {
            if (*p != '0')
                return -1; /* more fraction digits than the scale holds */
            continue;
        }
        u = u * 10 + (unsigned)(*p - '0');
        if (u || seen_dot)
            digits++;
        frac += seen_dot;
        if (digits > 38)
            return -1;
    }
    for (; frac < c->scale; frac++)
        u *= 10, digits++;
    int int_digits = 0;
    for (unsigned __int128 t = u; t; t /= 10)
        int_digits++;
    if (int_digits > c->precision)
        return -1;
    *out = neg ? -(__int128)u : (__int128)u;
    return 0;
}

/* -- rows ------------------------------------------------------------------- */

static json_t *value_json(const eddy_fluss_column *c, const eddy_fluss_value *v)
{
    if (v->is_null)
        return json_null();
    switch (c->type) {
    case EDDY_FLUSS_BOOLEAN:
        return json_boolean(v->v.i);
    case EDDY_FLUSS_TINYINT:
    case EDDY_FLUSS_SMALLINT:
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_BIGINT:
        return json_integer(v->v.i);
    case EDDY_FLUSS_FLOAT: /* 71.1f as 71.1, not 71.09999847412109 */
        return json_real(eddy_json_float_value(v->v.f));
    case EDDY_FLUSS_DOUBLE:
        return json_real(v->v.d);
    case EDDY_FLUSS_STRING:
        return json_stringn_nocheck(v->v.s.p, v->v.s.n);
    case EDDY_FLUSS_BYTES:
        return b64_json((const uint8_t *)v->v.s.p, v->v.s.n);
    case EDDY_FLUSS_DATE: {
        char s[32];
        int64_t y;
        unsigned m, d;
        civil_from_days(v->v.i, &y, &m, &d);
        snprintf(s, sizeof(s), "%04lld-%02u-%02u", (long long)y, m, d);
        return json_string(s);
    }
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        return ts_json(c, v);
    case EDDY_FLUSS_DECIMAL:
        return dec_json(c, v->v.dec);
    }
    return json_null();
}

json_t *eddy_fluss_row_to_json(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                               const int *cols, int ncols)
{
    json_t *o = json_object();
    int n = cols ? ncols : s->ncols;
    for (int k = 0; o && k < n; k++) {
        int i = cols ? cols[k] : k;
        json_t *v = value_json(&s->cols[i], &vals[i]);
        if (!v || json_object_set_new_nocheck(o, s->cols[i].name, v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static int bad(eddy_err *err, const eddy_fluss_column *c, const char *want, const json_t *v)
{
    char type[40];
    static const char *jt[] = {"an object", "an array", "a string", "an integer",
                               "a real",    "true",     "false",    "null"};
    eddy_fluss_type_name(c, type, sizeof(type));
    return eddy_err_set(err, EDDY_ESCHEMA, "column '%s' (%s) needs %s, got %s", c->name, type, want,
                        jt[json_typeof(v)]);
}

static int int_value(const eddy_fluss_column *c, const json_t *j, eddy_fluss_value *v,
                     eddy_err *err)
{
    static const int64_t lo[] = {INT8_MIN, INT16_MIN, INT32_MIN, INT64_MIN};
    static const int64_t hi[] = {INT8_MAX, INT16_MAX, INT32_MAX, INT64_MAX};
    int k = c->type == EDDY_FLUSS_TINYINT    ? 0
            : c->type == EDDY_FLUSS_SMALLINT ? 1
            : c->type == EDDY_FLUSS_INT      ? 2
                                             : 3;
    if (!json_is_integer(j))
        return bad(err, c, "an integer", j);
    v->v.i = json_integer_value(j);
    if (v->v.i < lo[k] || v->v.i > hi[k])
        return eddy_err_set(err, EDDY_ESCHEMA, "column '%s': %lld is out of range", c->name,
                            (long long)v->v.i);
    return 0;
}

static int string_value(const eddy_fluss_column *c, const json_t *j, eddy_fluss_value *v,
                        eddy_fluss_arena *a, eddy_err *err)
{
    if (json_is_string(j)) {
        v->v.s.p = json_string_value(j);
        v->v.s.n = json_string_length(j);
        return 0;
    }
    if (!json_is_object(j) && !json_is_array(j))
        return bad(err, c, "a string (objects and arrays are stored as JSON text)", j);
    char *text = eddy_json_dumps(j);
    char *copy = text ? eddy_fluss_arena_alloc(a, strlen(text) + 1) : NULL;
    if (!copy) {
        eddy_free(text);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    memcpy(copy, text, strlen(text) + 1);
    v->v.s.p = copy;
    v->v.s.n = strlen(copy);
    eddy_free(text);
    return 0;
}

static int temporal_value(const eddy_fluss_column *c, const json_t *j, eddy_fluss_value *v,
                          eddy_err *err)
{
    int zone = 0;
    if (c->type == EDDY_FLUSS_DATE) {
        int64_t ms;
        int32_t ns;
        if (!json_is_string(j) || parse_iso(json_string_value(j), &ms, &ns, &zone) ||
            ms % 86400000 != 0)
            return bad(err, c, "a date 'YYYY-MM-DD'", j);
        v->v.i = ms / 86400000;
        return 0;
    }
    if (json_is_integer(j)) {
        v->v.ts.ms = json_integer_value(j);
        v->v.ts.nanos = 0;
        return 0;
    }
    if (!json_is_string(j) || parse_iso(json_string_value(j), &v->v.ts.ms, &v->v.ts.nanos, &zone))
        return bad(err, c, "ISO-8601 text or epoch milliseconds", j);
    if (zone && c->type == EDDY_FLUSS_TIMESTAMP)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "column '%s' is a TIMESTAMP without time zone; '%s' names a zone",
                            c->name, json_string_value(j));
    return 0;
}

static int value_from_json(const eddy_fluss_column *c, const json_t *j, eddy_fluss_value *v,
                           eddy_fluss_arena *a, eddy_err *err)
{
    switch (c->type) {
    case EDDY_FLUSS_BOOLEAN:
        if (!json_is_boolean(j))
            return bad(err, c, "true or false", j);
        v->v.i = json_is_true(j);
        return 0;
    case EDDY_FLUSS_TINYINT:
    case EDDY_FLUSS_SMALLINT:
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_BIGINT:
        return int_value(c, j, v, err);
    case EDDY_FLUSS_FLOAT:
    case EDDY_FLUSS_DOUBLE:
        if (!json_is_number(j))
            return bad(err, c, "a number", j);
        v->v.d = json_number_value(j);
        if (c->type == EDDY_FLUSS_FLOAT)
            v->v.f = (float)json_number_value(j);
        return 0;
    case EDDY_FLUSS_STRING:
        return string_value(c, j, v, a, err);
    case EDDY_FLUSS_BYTES:
        if (!json_is_string(j) ||
            b64_decode(json_string_value(j), json_string_length(j), a, &v->v.s.p, &v->v.s.n))
            return bad(err, c, "base64 text", j);
        return 0;
    case EDDY_FLUSS_DATE:
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        return temporal_value(c, j, v, err);
    case EDDY_FLUSS_DECIMAL: {
        char num[64];
        if (json_is_integer(j))
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(j));
        else if (json_is_real(j))
            real_decimal_text(json_real_value(j), c->scale, num, sizeof(num));
        else if (json_is_string(j))
            snprintf(num, sizeof(num), "%s", json_string_value(j));
        else
            return bad(err, c, "a decimal number or string", j);
        if (parse_dec(c, num, &v->v.dec))
            return eddy_err_set(err, EDDY_ESCHEMA, "column '%s': '%s' does not fit DECIMAL(%d,%d)",
                                c->name, num, c->precision, c->scale);
        return 0;
    }
    }
    return EDDY_EINVAL;
}

int eddy_fluss_row_from_json(const eddy_fluss_schema *s, const json_t *obj, int strict,
                             eddy_fluss_value *vals, eddy_fluss_arena *arena, eddy_err *err)
{
    const char *k;
    const json_t *j;
    if (!json_is_object(obj))
        return eddy_err_set(err, EDDY_ESCHEMA, "a row must be a JSON object");
    if (strict) {
        json_object_foreach((json_t *)obj, k, j)
        {
            if (eddy_fluss_column_index(s, k) < 0)
                return eddy_err_set(err, EDDY_ESCHEMA, "field '%s' is not a column of the table",
                                    k);
        }
    }
    for (int i = 0; i < s->ncols; i++) {
        const eddy_fluss_column *c = &s->cols[i];
        memset(&vals[i], 0, sizeof(vals[i]));
        j = json_object_get(obj, c->name);
        if (!j || json_is_null(j)) {
            if (!c->nullable)
                return eddy_err_set(err, EDDY_ESCHEMA, "column '%s' is NOT NULL but the row has %s",
                                    c->name, j ? "null" : "no such field");
            vals[i].is_null = 1;
            continue;
        }
        int rc = value_from_json(c, j, &vals[i], arena, err);
        if (rc)
            return rc;
    }
    return 0;
}

int eddy_fluss_parse_time(const char *text, int64_t *ms)
{
    int32_t nanos;
    int zone;
    return parse_iso(text, ms, &nanos, &zone) ? EDDY_EINVAL : 0;
}

/* "id" or "(region, id)": the key columns of S for messages. */
static void key_names(const eddy_fluss_schema *s, const int *kc, int nk, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < nk && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s%s",
                              i        ? ", "
                              : nk > 1 ? "("
                                       : "",
                              s->cols[kc[i]].name, i == nk - 1 && nk > 1 ? ")" : "");
}

int eddy_fluss_key_from_json(const eddy_fluss_table *t, const json_t *key, int prefix,
                             eddy_fluss_value *vals, eddy_fluss_arena *arena, eddy_err *err)
{
    const eddy_fluss_schema *s = &t->schema;
    const int *kc = prefix ? s->bk : s->pk;
    int nk = prefix ? s->nbk : s->npk, rc;
    const char *what = prefix ? "bucket-key" : "primary-key", *k;
    char names[512];
    json_t *obj = (json_t *)key, *tmp = NULL, *v;
    eddy_fluss_schema ks = *s;
    if (s->npk == 0)
        return eddy_err_set(err, EDDY_EINVAL, "%s.%s has no primary key: nothing to look up",
                            t->database, t->name);
    key_names(s, kc, nk, names, sizeof(names));
    if (!json_is_object(key)) {
        if (nk != 1 || !key || json_is_array(key) || json_is_null(key))
            return eddy_err_set(err, EDDY_ESCHEMA,
                                "the %s key of %s.%s is %s: give an object with %s",
                                prefix ? "bucket" : "primary", t->database, t->name, names,
                                nk > 1 ? "these columns" : "it");
        if (!(obj = tmp = json_object()) ||
            json_object_set(tmp, s->cols[kc[0]].name, (json_t *)key))
            return json_decref(tmp), eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    json_object_foreach(obj, k, v)
    {
        int i = eddy_fluss_column_index(s, k), in = 0;
        for (int j = 0; j < nk; j++)
            in |= kc[j] == i;
        if (!in) {
            json_decref(tmp);
            return eddy_err_set(err, EDDY_ESCHEMA,
                                "'%s' is not a %s column of %s.%s (the key is %s)", k, what,
                                t->database, t->name, names);
        }
    }
    for (int j = 0; j < nk; j++) {
        v = json_object_get(obj, s->cols[kc[j]].name);
        if (!v || json_is_null(v)) {
            json_decref(tmp);
            return eddy_err_set(err, EDDY_ESCHEMA, "key column '%s' of %s.%s is missing",
                                s->cols[kc[j]].name, t->database, t->name);
        }
    }
    /* only the key columns are given: every other column may be absent */
    ks.cols = eddy_fluss_arena_alloc(arena, sizeof(*ks.cols) * (size_t)s->ncols);
    if (!ks.cols) {
        json_decref(tmp);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    memcpy(ks.cols, s->cols, sizeof(*ks.cols) * (size_t)s->ncols);
    for (int i = 0; i < ks.ncols; i++)
        ks.cols[i].nullable = 1;
    rc = eddy_fluss_row_from_json(&ks, obj, 1, vals, arena, err);
    json_decref(tmp);
    return rc;
}

int eddy_fluss_table_path(const char *full, char *db, char *table, eddy_err *err)
{
    const char *dot = full ? strchr(full, '.') : NULL;
    if (!dot || dot == full || !dot[1] || (size_t)(dot - full) >= EDDY_FLUSS_NAME_MAX ||
        strlen(dot + 1) >= EDDY_FLUSS_NAME_MAX)
        return eddy_err_set(err, EDDY_EINVAL, "a table is named DATABASE.TABLE, got '%s'",
                            full ? full : "");
    memcpy(db, full, (size_t)(dot - full));
    db[dot - full] = 0;
    snprintf(table, EDDY_FLUSS_NAME_MAX, "%s", dot + 1);
    return 0;
}
