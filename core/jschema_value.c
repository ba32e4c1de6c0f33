/*
 * core/jschema_value.c - what values mean to the validator.
 *
 * Numbers compare exactly, integers with reals too (no rounding through a
 * double past 2^53); multipleOf is decided in decimal on the shortest text
 * of each number; equality is JSON Schema's (1 equals 1.0, member order
 * does not count), and hashes agree with it, so uniqueItems can sort. Every
 * walk over a value is capped at EDDY_JSCHEMA_MAX_DEPTH levels. Pure
 * functions: nothing here allocates or keeps state.
 */
#include "jschema_int.h"

#include "eddy/json.h"

#include <math.h>
#include <string.h>

/* -- numbers ------------------------------------------------------------------- */

/* I compared with D, exactly: -1, 0 or 1. */
static int cmp_int_real(json_int_t i, double d)
{
    double t;
    json_int_t ti;
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    t = trunc(d);
    ti = (json_int_t)t;
    if (i != ti)
        return i < ti ? -1 : 1;
    return d > t ? -1 : d < t ? 1 : 0;
}

/* Numbers A and B compared by value, exactly (no rounding of big integers). */
int eddy__jschema_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_integer(a))
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    return -cmp_int_real(json_integer_value(b), json_real_value(a));
}

int eddy__jschema_integral(double d)
{
    return isfinite(d) && d == trunc(d);
}

/* A count (minLength and the like): a non-negative integer, also written as
 * a real with no fraction (2.0). Returns 0 or -1. */
int eddy__jschema_count(const json_t *v, long long *n)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *n = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && eddy__jschema_integral(json_real_value(v)) && json_real_value(v) >= 0 &&
        json_real_value(v) < 9223372036854775808.0) {
        *n = (long long)json_real_value(v);
        return 0;
    }
    return -1;
}

/* |V| as the decimal M * 10^E, M without trailing zeros (0 for zero); for a
 * real, its shortest decimal text. */
static void decimal_of(const json_t *v, uint64_t *m, int *e)
{
    uint64_t u = 0;
    int ex = 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        u = i < 0 ? 0 - (uint64_t)i : (uint64_t)i;
    } else if (json_real_value(v) != 0) {
        char digits[18];
        int decpt, n = eddy_json_number_digits(json_real_value(v), digits, &decpt);
        for (int k = 0; k < n; k++)
            u = u * 10 + (uint64_t)(digits[k] - '0');
        ex = decpt - n;
    }
    while (u && u % 10 == 0)
        u /= 10, ex++;
    *m = u;
    *e = u ? ex : 0;
}

/* (A + B) mod M for A, B < M, without overflow. */
static uint64_t addmod(uint64_t a, uint64_t b, uint64_t m)
{
    return a >= m - b ? a - (m - b) : a + b;
}

/* Is V a whole multiple of BY (> 0), both as decimals? V / BY is
 * (MV / MB) * 10^(EV - EB). With EV < EB it would need MB * 10^k to divide
 * MV, which has no factor 10; else MB must divide MV * 10^(EV - EB), which
 * is tested modulo MB, one factor 10 at a time. */
int eddy__jschema_multiple(const json_t *v, const json_t *by)
{
    uint64_t mv, mb, r;
    int ev, eb;
    decimal_of(v, &mv, &ev);
    decimal_of(by, &mb, &eb);
    if (!mv)
        return 1;
    if (!mb || ev < eb)
        return 0;
    r = mv % mb;
    for (int k = ev - eb; k > 0 && r; k--) {
        uint64_t t = 0;
        for (int j = 0; j < 10; j++)
            t = addmod(t, r, mb);
        r = t;
    }
    return r == 0;
}

/* -- equality and hashing (enum, const, uniqueItems) ------------------------- */

/* JSON Schema equality: numbers by value (1 == 1.0), objects regardless of
 * member order. Callers compare values whose depth is capped (enum and
 * const values by the check, uniqueItems items by their hash), so DEPTH
 * stays within the cap; past it values count as different. */
int eddy__jschema_equal(const json_t *a, const json_t *b, int depth)
{
    size_t i, klen;
    const char *k;
    json_t *x;
    if (depth > EDDY_JSCHEMA_MAX_DEPTH)
        return 0;
    if (json_is_number(a) && json_is_number(b))
        return eddy__jschema_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               !memcmp(json_string_value(a), json_string_value(b), json_string_length(a));
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        json_array_foreach(
            a, i, x) if (!eddy__jschema_equal(x, json_array_get(b, i), depth + 1)) return 0;
        return 1;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_keylen_foreach((json_t *)a, k, klen, x)
        {
            json_t *y = json_object_getn(b, k, klen);
            if (!y || !eddy__jschema_equal(x, y, depth + 1))
                return 0;
        }
        return 1;
    default:
        return 1; /* true, false, null */
    }
}

static uint64_t mix(uint64_t x) /* splitmix64's finalizer */
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_bytes(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed; /* FNV-1a, seeded per call */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return mix(h);
}

/* A hash under which equal values (eddy__jschema_equal) hash alike. Returns 0, or
 * -1 when V nests deeper than the cap. */
int eddy__jschema_hash(const json_t *v, uint64_t seed, int depth, uint64_t *hash)
{
    uint64_t h, hx;
    size_t i, klen;
    const char *k;
    json_t *x;
    double d;
    if (depth > EDDY_JSCHEMA_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_STRING:
        h = hash_bytes(json_string_value(v), json_string_length(v), seed);
        break;
    case JSON_INTEGER:
        h = mix(seed ^ 1 ^ mix((uint64_t)json_integer_value(v)));
        break;
    case JSON_REAL: /* an integral real hashes as the integer it equals */
        d = json_real_value(v);
        if (eddy__jschema_integral(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            h = mix(seed ^ 1 ^ mix((uint64_t)(json_int_t)d));
        } else {
            memcpy(&hx, &d, sizeof(hx));
            h = mix(seed ^ 2 ^ mix(hx));
        }
        break;
    case JSON_ARRAY:
        h = mix(seed ^ 3 ^ json_array_size(v));
        json_array_foreach(v, i, x)
        {
            if (eddy__jschema_hash(x, seed, depth + 1, &hx))
                return -1;
            h = mix(h ^ hx);
        }
        break;
    case JSON_OBJECT: /* a sum: member order does not count */
        h = 0;
        json_object_keylen_foreach((json_t *)v, k, klen, x)
        {
            if (eddy__jschema_hash(x, seed, depth + 1, &hx))
                return -1;
            h += mix(hash_bytes(k, klen, seed) ^ hx);
        }
        h = mix(seed ^ 4 ^ h);
        break;
    default:
        h = mix(seed ^ (5 + (uint64_t)json_typeof(v)));
        break;
    }
    *hash = h;
    return 0;
}

/* Does V nest deeper than LIMIT levels (V itself being the first)? */
int eddy__jschema_too_deep(const json_t *v, int limit)
{
    size_t i;
    json_t *x;
    if (limit < 1)
        return 1;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x)
        {
            if (eddy__jschema_too_deep(x, limit - 1))
                return 1;
        }
    } else if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it))
            if (eddy__jschema_too_deep(json_object_iter_value(it), limit - 1))
                return 1;
    }
    return 0;
}

/* -- types --------------------------------------------------------------------- */

static const char *const kTypes[] = {"string", "number", "integer", "boolean",
                                     "object", "array",  "null"};

/* The bit of the type named by the string T, or 0. */
unsigned eddy__jschema_type_bit(const json_t *t)
{
    for (unsigned i = 0; i < sizeof(kTypes) / sizeof(kTypes[0]); i++)
        if (json_string_length(t) == strlen(kTypes[i]) && !strcmp(json_string_value(t), kTypes[i]))
            return 1u << i;
    return 0;
}

/* The types of a checked "type" value, as a mask. */
unsigned eddy__jschema_type_mask(const json_t *type)
{
    unsigned mask = 0;
    size_t i;
    json_t *t;
    if (json_is_string(type))
        return eddy__jschema_type_bit(type);
    json_array_foreach(type, i, t) mask |= eddy__jschema_type_bit(t);
    return mask;
}

int eddy__jschema_type_matches(unsigned mask, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return mask & JSCHEMA_T_STRING;
    case JSON_INTEGER:
        return mask & (JSCHEMA_T_NUMBER | JSCHEMA_T_INTEGER);
    case JSON_REAL:
        return (mask & JSCHEMA_T_NUMBER) ||
               ((mask & JSCHEMA_T_INTEGER) && eddy__jschema_integral(json_real_value(v)));
    case JSON_TRUE:
    case JSON_FALSE:
        return mask & JSCHEMA_T_BOOLEAN;
    case JSON_OBJECT:
        return mask & JSCHEMA_T_OBJECT;
    case JSON_ARRAY:
        return mask & JSCHEMA_T_ARRAY;
    default:
        return mask & JSCHEMA_T_NULL;
    }
}
