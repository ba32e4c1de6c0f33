/*
 * core/jschema.c - JSON Schema validation, the subset eddy/jschema.h lists.
 *
 * Two walks. check_schema decides whether eddy can enforce a schema and,
 * when validating, compiles its patterns into the call's list of regexes;
 * walk validates a value, following the schema down. Validation always
 * checks first, so walk relies on every keyword having its right form, and
 * its recursion is bounded by the depth cap check_schema enforces (the value
 * is only descended where the schema descends). The one walk over a value
 * alone, hashing items for uniqueItems, has its own cap.
 *
 * The place of an error is a stack of borrowed segments (key bytes or an
 * array index), rendered as a JSON pointer only when a message is made.
 * Every piece of text put into a message is bounded (quoted values, keys,
 * the pointer itself), so a message always fits an eddy_err.
 *
 * Messages are made in jschema_text.c, what values mean (exact numbers,
 * decimal multipleOf, equality, hashes, types) is in jschema_value.c.
 *
 * Invariants: nothing is kept between calls (but one UTF-8 locale object,
 * made on first use); the compiled patterns of a
 * call are freed before it returns, on every path; the schema and the value
 * are only read (no references taken). A schema built in C that shares a
 * subtree is walked once per path to it, as a tree.
 */
#include "eddy/jschema.h"
#include "jschema_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <assert.h>
#include <locale.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_DEPTH = EDDY_JSCHEMA_MAX_DEPTH,
    /* per schema level "/properties/<name>"; then a keyword and an index */
    MAX_SEGS = 2 * MAX_DEPTH + 8,
    LIST_MAX = 300, /* bytes of the enum values listed in a message */
};

/* A pattern compiled for one validation, found again by its schema node. */
typedef struct rx {
    struct rx *next;
    const json_t *pattern;
    regex_t re;
} rx;

typedef struct ctx {
    eddy__jschema_seg path[MAX_SEGS];
    int n;
    eddy_err *err; /* may be NULL */
    int keep;      /* validating: keep compiled patterns in rxs */
    rx *rxs;
    int seeded; /* SEED, for uniqueItems' hashes, is drawn once a call */
    uint64_t seed;
} ctx;

static void push_key(ctx *c, const char *key, size_t len)
{
    assert(c->n < MAX_SEGS); /* the depth caps bound it */
    c->path[c->n++] = (eddy__jschema_seg){key, len, 0};
}

static void push_index(ctx *c, size_t i)
{
    assert(c->n < MAX_SEGS);
    c->path[c->n++] = (eddy__jschema_seg){NULL, 0, i};
}

static void pop(ctx *c)
{
    assert(c->n > 0);
    c->n--;
}

/* Set the error CODE with "<pointer>: <message>"; returns CODE. */
static int fail(ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(ctx *c, int code, const char *fmt, ...)
{
    char ptr[JSCHEMA_PTR_BUF], body[EDDY_ERR_MSG_MAX - JSCHEMA_PTR_BUF - 8];
    va_list ap;
    if (!c->err)
        return code;
    eddy__jschema_pointer(c->path, c->n, ptr);
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    return eddy_err_set(c->err, code, "%s: %s", ptr, body);
}

/* -- patterns in UTF-8 ---------------------------------------------------------- */

/* Patterns are compiled and run with the calling thread switched to
 * C.UTF-8's LC_CTYPE (uselocale, which no other thread sees), so '.' and
 * [...] take whole characters whatever locale the process runs in: in the
 * "C" locale "[\u00e9]" would be a set of two bytes. The locale object is
 * made once and never changed or freed. */
static pthread_once_t g_utf8_once = PTHREAD_ONCE_INIT;
static locale_t g_utf8;

static void utf8_init(void)
{
    g_utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Switch this thread to UTF-8; returns what utf8_end needs to switch back
 * (0 when the C library has no C.UTF-8: patterns then match bytes). */
static locale_t utf8_begin(void)
{
    pthread_once(&g_utf8_once, utf8_init);
    return g_utf8 ? uselocale(g_utf8) : (locale_t)0;
}

static void utf8_end(locale_t old)
{
    if (old)
        uselocale(old);
}

/* -- checking a schema --------------------------------------------------------- */

static int check_schema(ctx *c, json_t *s, int depth);

static int ck_any(ctx *c, json_t *v, int depth)
{
    (void)c, (void)v, (void)depth;
    return 0;
}

static int ck_string(ctx *c, json_t *v, int depth)
{
    (void)depth;
    return json_is_string(v) ? 0 : fail(c, EDDY_ESCHEMA, "must be a string");
}

static int ck_array(ctx *c, json_t *v, int depth)
{
    (void)depth;
    return json_is_array(v) ? 0 : fail(c, EDDY_ESCHEMA, "must be an array");
}

static int ck_bool(ctx *c, json_t *v, int depth)
{
    (void)depth;
    return json_is_boolean(v) ? 0 : fail(c, EDDY_ESCHEMA, "must be true or false");
}

static int ck_number(ctx *c, json_t *v, int depth)
{
    (void)depth;
    return json_is_number(v) ? 0 : fail(c, EDDY_ESCHEMA, "must be a number");
}

static int ck_exclusive(ctx *c, json_t *v, int depth)
{
    (void)depth;
    if (json_is_boolean(v))
        return fail(
            c, EDDY_ESCHEMA,
            "must be a number (the bound itself; the draft 4 boolean form is not supported)");
    return ck_number(c, v, depth);
}

static int ck_multiple(ctx *c, json_t *v, int depth)
{
    (void)depth;
    if (json_is_integer(v) ? json_integer_value(v) > 0 : json_is_real(v) && json_real_value(v) > 0)
        return 0;
    return fail(c, EDDY_ESCHEMA, "must be a number greater than 0");
}

static int ck_count(ctx *c, json_t *v, int depth)
{
    long long n;
    (void)depth;
    return eddy__jschema_count(v, &n) ? fail(c, EDDY_ESCHEMA, "must be a non-negative integer") : 0;
}

static int ck_value(ctx *c, json_t *v, int depth)
{
    (void)depth;
    if (eddy__jschema_too_deep(v, MAX_DEPTH))
        return fail(c, EDDY_ESCHEMA, "value nests deeper than %d levels", MAX_DEPTH);
    return 0;
}

static int ck_enum(ctx *c, json_t *v, int depth)
{
    size_t i;
    json_t *x;
    int rc = 0;
    if (!json_is_array(v) || !json_array_size(v))
        return fail(c, EDDY_ESCHEMA, "must be a non-empty array");
    json_array_foreach(v, i, x)
    {
        push_index(c, i);
        rc = ck_value(c, x, depth);
        pop(c);
        if (rc)
            break;
    }
    return rc;
}

static int ck_type(ctx *c, json_t *v, int depth)
{
    const char *expect = "(expected string, number, integer, boolean, object, array or null)";
    char q[JSCHEMA_QUOTE_BUF];
    unsigned seen = 0, bit;
    size_t i;
    json_t *t;
    int rc = 0;
    (void)depth;
    if (json_is_string(v))
        return eddy__jschema_type_bit(v)
                   ? 0
                   : fail(c, EDDY_ESCHEMA, "unknown type %s %s", eddy__jschema_quote(v, q), expect);
    if (!json_is_array(v) || !json_array_size(v))
        return fail(c, EDDY_ESCHEMA, "must be a type name or a non-empty array of type names");
    json_array_foreach(v, i, t)
    {
        push_index(c, i);
        bit = json_is_string(t) ? eddy__jschema_type_bit(t) : 0;
        if (!json_is_string(t))
            rc = fail(c, EDDY_ESCHEMA, "must be a type name (a string)");
        else if (!bit)
            rc = fail(c, EDDY_ESCHEMA, "unknown type %s %s", eddy__jschema_quote(t, q), expect);
        else if (seen & bit)
            rc = fail(c, EDDY_ESCHEMA, "%s is listed twice", eddy__jschema_quote(t, q));
        pop(c);
        if (rc)
            return rc;
        seen |= bit;
    }
    return 0;
}

static int ck_required(ctx *c, json_t *v, int depth)
{
    size_t i;
    json_t *x;
    int rc = 0;
    (void)depth;
    if (!json_is_array(v))
        return fail(c, EDDY_ESCHEMA, "must be an array of property names");
    json_array_foreach(v, i, x)
    {
        push_index(c, i);
        rc = json_is_string(x) ? 0 : fail(c, EDDY_ESCHEMA, "must be a string");
        pop(c);
        if (rc)
            break;
    }
    return rc;
}

static int ck_properties(ctx *c, json_t *v, int depth)
{
    const char *k;
    size_t klen;
    json_t *x;
    int rc = 0;
    if (!json_is_object(v))
        return fail(c, EDDY_ESCHEMA, "must be an object of schemas, one per property");
    json_object_keylen_foreach(v, k, klen, x)
    {
        push_key(c, k, klen);
        rc = check_schema(c, x, depth + 1);
        pop(c);
        if (rc)
            break;
    }
    return rc;
}

static int ck_additional(ctx *c, json_t *v, int depth)
{
    if (json_is_boolean(v))
        return 0;
    if (!json_is_object(v))
        return fail(c, EDDY_ESCHEMA, "must be true, false or a schema (an object)");
    return check_schema(c, v, depth + 1);
}

static int ck_items(ctx *c, json_t *v, int depth)
{
    if (json_is_array(v))
        return fail(c, EDDY_ESCHEMA,
                    "must be one schema for every item (the array form, a "
                    "schema per position, is not supported)");
    return check_schema(c, v, depth + 1);
}

/* Pattern text that ECMA-262 reads one way and POSIX ERE another, or that
 * glibc quietly takes as a literal ("\d" matches "d"): refused, so that no
 * pattern matches differently from what its author meant. Writes the reason
 * to WHY and returns 1; 0 leaves the rest to regcomp. */
static int foreign_syntax(const char *p, char *why, size_t cap)
{
    for (size_t i = 0; p[i]; i++) {
        if (p[i] == '\\') {
            char nx = p[i + 1];
            const char *hint = nx == 'd'                ? " (write [0-9])"
                               : nx == 'w'              ? " (write [[:alnum:]_])"
                               : nx == 's'              ? " (write [[:space:]])"
                               : nx >= '1' && nx <= '9' ? " (back-references are not supported)"
                                                        : "";
            if ((nx >= 'a' && nx <= 'z') || (nx >= 'A' && nx <= 'Z') || (nx >= '0' && nx <= '9')) {
                snprintf(why, cap,
                         "'\\%c' is not POSIX extended regular expression syntax "
                         "(patterns are POSIX ERE, not ECMA-262)%s",
                         nx, hint);
                return 1;
            }
            if (nx)
                i++;
        } else if (p[i] == '(' && p[i + 1] == '?') {
            snprintf(why, cap,
                     "'(?' is ECMA-262 syntax, not POSIX extended regular expression "
                     "syntax (patterns are POSIX ERE)");
            return 1;
        } else if (p[i] == '[') {
            size_t j = i + 1;
            if (p[j] == '^')
                j++;
            if (p[j] == ']')
                j++;
            for (; p[j] && p[j] != ']'; j++) {
                if (p[j] == '[' && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
                    char close[3] = {p[j + 1], ']', '\0'};
                    const char *e = strstr(p + j + 2, close);
                    if (!e)
                        return 0;
                    j = (size_t)(e - p) + 1;
                } else if (p[j] == '\\') {
                    snprintf(why, cap,
                             "a backslash inside [...] is a literal backslash in POSIX "
                             "extended regular expressions, not an escape as in "
                             "ECMA-262");
                    return 1;
                }
            }
            if (!p[j])
                return 0;
            i = j;
        }
    }
    return 0;
}

/* The size of P with its bounded repetitions written out ("(a{1,100}){1,100}"
 * is 10^4 atoms): glibc's regcomp expands them, and nested ones took more
 * than a gigabyte. Brackets and escapes count as one atom; the count stops
 * growing past LIMIT. */
static double expanded_size(const char *p, double limit)
{
    double stack[64];
    int depth = 0;
    double cur = 0, last = 0; /* the size of the current sequence and of its last item */
    for (size_t i = 0; p[i]; i++) {
        char ch = p[i];
        if (ch == '\\' && p[i + 1]) {
            i++;
            cur += (last = 1);
        } else if (ch == '[') {
            size_t j = i + 1;
            if (p[j] == '^')
                j++;
            if (p[j] == ']')
                j++;
            while (p[j] && p[j] != ']') {
                if (p[j] == '[' && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
                    const char *e = strchr(p + j + 2, ']');
                    j = e ? (size_t)(e - p) + 1 : strlen(p);
                } else {
                    j++;
                }
            }
            i = p[j] ? j : j - 1;
            cur += (last = 1);
        } else if (ch == '(') {
            if (depth == 64)
                return limit + 1;
            stack[depth++] = cur;
            cur = 0;
        } else if (ch == ')' && depth > 0) {
            last = cur;
            cur = stack[--depth] + last;
        } else if (ch == '{') {
            char *end;
            long a = strtol(p + i + 1, &end, 10), b = a;
            if (end == p + i + 1) {
                cur += (last = 1); /* a literal brace */
                continue;
            }
            if (*end == ',') {
                const char *q = end + 1;
                b = strtol(q, &end, 10);
                if (end == q)
                    b = a + 1; /* {a,}: a copies and a star */
            }
            if (*end != '}') {
                cur += (last = 1);
                continue;
            }
            i = (size_t)(end - p);
            double n = (double)(b > 1 ? b : 1);
            cur += last * (n - 1);
            last *= n;
        } else if (ch != '*' && ch != '+' && ch != '?' && ch != '|' && ch != '^' && ch != '$') {
            cur += (last = 1);
        }
        if (cur > limit)
            return cur;
    }
    while (depth > 0)
        cur += stack[--depth];
    return cur;
}

static int ck_pattern(ctx *c, json_t *v, int depth)
{
    char why[256];
    const char *p;
    rx *r = NULL;
    regex_t tmp, *re = &tmp;
    locale_t loc;
    int rc;
    (void)depth;
    if (!json_is_string(v))
        return fail(c, EDDY_ESCHEMA, "must be a string");
    p = json_string_value(v);
    if (strlen(p) != json_string_length(v))
        return fail(c, EDDY_ESCHEMA, "must not contain a NUL character");
    if (foreign_syntax(p, why, sizeof(why)))
        return fail(c, EDDY_ESCHEMA, "%s", why);
    if (expanded_size(p, 20000) > 20000)
        return fail(c, EDDY_ESCHEMA,
                    "too complex: with its repetitions written out it has more than 20000 "
                    "items (nested {n,m} multiply)");
    if (c->keep) { /* compiled into the call's list, where walk finds it */
        if (!(r = eddy_malloc(sizeof(*r))))
            return eddy_err_set(c->err, EDDY_ENOMEM, "out of memory");
        re = &r->re;
    }
    loc = utf8_begin();
    rc = regcomp(re, p, REG_EXTENDED | REG_NOSUB);
    utf8_end(loc);
    if (rc) {
        regerror(rc, re, why, sizeof(why));
        if (c->keep)
            eddy_free(r);
        if (rc == REG_ESPACE)
            return fail(c, EDDY_ENOMEM, "out of memory compiling the pattern");
        return fail(c, EDDY_ESCHEMA, "does not compile as a POSIX extended regular expression: %s",
                    why);
    }
    if (!c->keep) {
        regfree(re);
        return 0;
    }
    r->pattern = v;
    r->next = c->rxs;
    c->rxs = r;
    return 0;
}

typedef struct keyword {
    const char *name;
    int (*check)(ctx *c, json_t *v, int depth);
} keyword;

static const keyword kKeywords[] = {
    {"type", ck_type},
    {"enum", ck_enum},
    {"const", ck_value},
    {"required", ck_required},
    {"properties", ck_properties},
    {"additionalProperties", ck_additional},
    {"items", ck_items},
    {"minItems", ck_count},
    {"maxItems", ck_count},
    {"uniqueItems", ck_bool},
    {"minimum", ck_number},
    {"maximum", ck_number},
    {"exclusiveMinimum", ck_exclusive},
    {"exclusiveMaximum", ck_exclusive},
    {"multipleOf", ck_multiple},
    {"minLength", ck_count},
    {"maxLength", ck_count},
    {"pattern", ck_pattern},
    {"minProperties", ck_count},
    {"maxProperties", ck_count},
    /* annotations: checked for their form, never enforced */
    {"title", ck_string},
    {"description", ck_string},
    {"$comment", ck_string},
    {"$schema", ck_string},
    {"$id", ck_string},
    {"default", ck_any},
    {"examples", ck_array},
};

/* Keywords of the spec that eddy knows it does not enforce. */
// clang-format off
static const char *const kRefused[] = {
    "$ref", "$defs", "definitions", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef",
    "$recursiveAnchor", "$vocabulary", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "format", "patternProperties", "propertyNames", "dependencies", "dependentRequired",
    "dependentSchemas", "prefixItems", "additionalItems", "contains", "minContains",
    "maxContains", "unevaluatedItems", "unevaluatedProperties", "contentEncoding",
    "contentMediaType", "contentSchema", "readOnly", "writeOnly", "deprecated",
};
// clang-format on

static int refuse(ctx *c, const char *k, size_t klen)
{
    char q[JSCHEMA_QUOTE_BUF];
    const char *best = NULL;
    size_t bestd = (size_t)-1, n = strlen(k);
    for (size_t i = 0; i < sizeof(kRefused) / sizeof(kRefused[0]); i++) {
        if (klen == n && !strcmp(k, kRefused[i])) {
            const char *hint = "";
            if (!strcmp(k, "format"))
                hint = " (constrain the string with 'pattern')";
            else if (i < 3 || !strcmp(k, "$dynamicRef") || !strcmp(k, "$recursiveRef"))
                hint = " (write the referenced schema in place)"; /* $ref, $defs, definitions */
            return fail(c, EDDY_ESCHEMA, "eddy does not enforce '%s'%s", k, hint);
        }
    }
    for (size_t i = 0; i < sizeof(kKeywords) / sizeof(kKeywords[0]); i++) {
        size_t d = eddy_levenshtein(k, kKeywords[i].name);
        if (d < bestd)
            bestd = d, best = kKeywords[i].name;
    }
    eddy__jschema_quote_name(k, klen, q);
    if (best && bestd <= (n <= 4 ? 1u : n <= 8 ? 2u : 3u))
        return fail(c, EDDY_ESCHEMA,
                    "eddy does not enforce %s, a keyword it does not know (did you mean '%s'?)", q,
                    best);
    return fail(c, EDDY_ESCHEMA, "eddy does not enforce %s, a keyword it does not know", q);
}

static const keyword *find_keyword(const char *k, size_t klen)
{
    for (size_t i = 0; i < sizeof(kKeywords) / sizeof(kKeywords[0]); i++)
        if (strlen(kKeywords[i].name) == klen && !memcmp(kKeywords[i].name, k, klen))
            return &kKeywords[i];
    return NULL;
}

/* Check the schema S at level DEPTH (the outermost is 1). */
static int check_schema(ctx *c, json_t *s, int depth)
{
    const char *k;
    size_t klen;
    json_t *v;
    if (depth > MAX_DEPTH)
        return fail(c, EDDY_ESCHEMA, "schema nests deeper than %d levels", MAX_DEPTH);
    if (!json_is_object(s))
        return fail(c, EDDY_ESCHEMA, "a schema must be an object, not %s%s%s",
                    eddy__jschema_type_article(s), json_is_null(s) ? "" : " ",
                    eddy_json_type_name(s));
    json_object_keylen_foreach(s, k, klen, v)
    {
        const keyword *kw = find_keyword(k, klen);
        int rc;
        push_key(c, k, klen);
        rc = kw ? kw->check(c, v, depth) : refuse(c, k, klen);
        pop(c);
        if (rc)
            return rc;
    }
    return 0;
}

/* -- validating a value -------------------------------------------------------- */

static int walk(ctx *c, json_t *s, json_t *v, int depth);

static int v_type(ctx *c, json_t *type, json_t *v)
{
    char want[128], q[JSCHEMA_QUOTE_BUF];
    size_t o = 0, i, n;
    json_t *t;
    if (eddy__jschema_type_matches(eddy__jschema_type_mask(type), v))
        return 0;
    if (json_is_string(type)) {
        snprintf(want, sizeof(want), "%s", json_string_value(type));
    } else {
        n = json_array_size(type);
        json_array_foreach(type, i, t)
        {
            const char *sep = !i ? "" : i + 1 < n ? ", " : " or ";
            o += (size_t)snprintf(want + o, sizeof(want) - o, "%s%s", sep, json_string_value(t));
        }
    }
    if (json_is_real(v) && (eddy__jschema_type_mask(type) & JSCHEMA_T_INTEGER))
        return fail(c, EDDY_ESCHEMA, "expected %s, got number %s", want, eddy__jschema_quote(v, q));
    return fail(c, EDDY_ESCHEMA, "expected %s, got %s", want, eddy_json_type_name(v));
}

static int v_enum(ctx *c, json_t *e, json_t *v)
{
    char list[LIST_MAX + 48], q[JSCHEMA_QUOTE_BUF];
    size_t i, o = 0, n = json_array_size(e);
    json_t *x;
    json_array_foreach(e, i, x)
    {
        if (eddy__jschema_equal(x, v, 1))
            return 0;
    }
    json_array_foreach(e, i, x)
    {
        size_t len = strlen(eddy__jschema_quote(x, q));
        if (o + len + 2 > LIST_MAX) {
            snprintf(list + o, sizeof(list) - o, ", ... (%zu values)", n);
            break;
        }
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", q);
    }
    return fail(c, EDDY_ESCHEMA, "%s is not one of %s", eddy__jschema_quote(v, q), list);
}

static int v_number(ctx *c, json_t *s, json_t *v)
{
    static const struct {
        const char *name, *rel;
        int lo, hi; /* the comparisons of V with the bound that pass */
    } kBounds[] = {
        {"minimum", "less than", 0, 1},
        {"maximum", "more than", -1, 0},
        {"exclusiveMinimum", "not more than", 1, 1},
        {"exclusiveMaximum", "not less than", -1, -1},
    };
    char qv[JSCHEMA_QUOTE_BUF], qb[JSCHEMA_QUOTE_BUF];
    json_t *kw;
    for (size_t i = 0; i < sizeof(kBounds) / sizeof(kBounds[0]); i++) {
        int cmp;
        if (!(kw = json_object_get(s, kBounds[i].name)))
            continue;
        cmp = eddy__jschema_cmp(v, kw);
        if (cmp < kBounds[i].lo || cmp > kBounds[i].hi)
            return fail(c, EDDY_ESCHEMA, "%s is %s the %s %s", eddy__jschema_quote(v, qv),
                        kBounds[i].rel, kBounds[i].name, eddy__jschema_quote(kw, qb));
    }
    if ((kw = json_object_get(s, "multipleOf")) && !eddy__jschema_multiple(v, kw))
        return fail(c, EDDY_ESCHEMA, "%s is not a multiple of %s", eddy__jschema_quote(v, qv),
                    eddy__jschema_quote(kw, qb));
    return 0;
}

/* Is there a match of the compiled PATTERN anywhere in V? 1, 0, or an error
 * code (already set). */
static int v_match(ctx *c, const json_t *pattern, json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    rx *r = c->rxs;
    locale_t loc;
    int rc;
    while (r && r->pattern != pattern)
        r = r->next;
    assert(r); /* the check compiled every pattern of the schema */
    if (!r)
        return eddy_err_set(c->err, EDDY_EINVAL, "pattern not compiled");
#ifdef REG_STARTEND
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)len;
    if (m[0].rm_eo < 0 || (size_t)m[0].rm_eo != len)
        return fail(c, EDDY_ESCHEMA, "string too long to match a pattern against");
    loc = utf8_begin();
    rc = regexec(&r->re, s, 1, m, REG_STARTEND); /* the whole string, NULs too */
    utf8_end(loc);
#else
    if (strlen(s) != len)
        return fail(c, EDDY_ESCHEMA, "string contains a NUL character, which patterns cannot see");
    loc = utf8_begin();
    rc = regexec(&r->re, s, 0, NULL, 0);
    utf8_end(loc);
#endif
    if (rc == 0)
        return 1;
    if (rc == REG_NOMATCH)
        return 0;
    return fail(c, EDDY_ENOMEM, "out of memory matching the pattern");
}

static int v_string(ctx *c, json_t *s, json_t *v)
{
    char qv[JSCHEMA_QUOTE_BUF], qb[JSCHEMA_QUOTE_BUF];
    const char *p = json_string_value(v);
    size_t len = json_string_length(v), chars = 0;
    long long min = -1, max = -1;
    json_t *kw;
    int rc;
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)p[i] & 0xC0) != 0x80; /* code points: not continuation bytes */
    if ((kw = json_object_get(s, "minLength")) && !eddy__jschema_count(kw, &min) &&
        chars < (unsigned long long)min)
        return fail(c, EDDY_ESCHEMA, "%zu character%s, fewer than minLength %lld", chars,
                    chars == 1 ? "" : "s", min);
    if ((kw = json_object_get(s, "maxLength")) && !eddy__jschema_count(kw, &max) &&
        chars > (unsigned long long)max)
        return fail(c, EDDY_ESCHEMA, "%zu character%s, more than maxLength %lld", chars,
                    chars == 1 ? "" : "s", max);
    if ((kw = json_object_get(s, "pattern"))) {
        rc = v_match(c, kw, v);
        if (rc == 0)
            return fail(c, EDDY_ESCHEMA, "%s does not match the pattern %s",
                        eddy__jschema_quote(v, qv), eddy__jschema_quote(kw, qb));
        if (rc < 0)
            return rc;
    }
    return 0;
}

typedef struct hitem {
    uint64_t h;
    size_t i;
} hitem;

static int cmp_hitem(const void *pa, const void *pb)
{
    const hitem *a = pa, *b = pb;
    if (a->h != b->h)
        return a->h < b->h ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* uniqueItems over array V: the items sorted by hash (then position), and
 * only items of equal hash compared, so a huge array costs n log n. The
 * duplicate reported is the first item that repeats an earlier one. */
static int v_unique(ctx *c, json_t *v)
{
    size_t n = json_array_size(v), dup = SIZE_MAX, first = 0;
    char q[JSCHEMA_QUOTE_BUF];
    hitem *hs;
    int rc = 0;
    if (n < 2)
        return 0;
    if (n > SIZE_MAX / sizeof(*hs) || !(hs = eddy_malloc(n * sizeof(*hs))))
        return eddy_err_set(c->err, EDDY_ENOMEM, "out of memory");
    if (!c->seeded) {
        eddy_random_bytes(&c->seed, sizeof(c->seed));
        c->seeded = 1;
    }
    for (size_t i = 0; i < n; i++) {
        hs[i].i = i;
        if (eddy__jschema_hash(json_array_get(v, i), c->seed, 1, &hs[i].h)) {
            push_index(c, i);
            rc =
                fail(c, EDDY_ESCHEMA,
                     "nests deeper than %d levels, too deep to compare for uniqueItems", MAX_DEPTH);
            pop(c);
            goto out;
        }
    }
    qsort(hs, n, sizeof(*hs), cmp_hitem);
    for (size_t r = 0, e; r < n; r = e) {
        for (e = r + 1; e < n && hs[e].h == hs[r].h; e++)
            ;
        /* a run of equal hash, in position order: its first repeat is the
         * earliest duplicate the run holds, the first equal item its original */
        for (size_t k = r + 1; k < e && hs[k].i < dup; k++) {
            for (size_t m = r; m < k; m++) {
                if (eddy__jschema_equal(json_array_get(v, hs[m].i), json_array_get(v, hs[k].i),
                                        1)) {
                    dup = hs[k].i;
                    first = hs[m].i;
                    break;
                }
            }
            if (dup == hs[k].i)
                break;
        }
    }
    if (dup != SIZE_MAX) {
        push_index(c, dup);
        rc = fail(c, EDDY_ESCHEMA, "%s repeats item %zu (uniqueItems is true)",
                  eddy__jschema_quote(json_array_get(v, dup), q), first);
        pop(c);
    }
out:
    eddy_free(hs);
    return rc;
}

static int v_array(ctx *c, json_t *s, json_t *v, int depth)
{
    size_t n = json_array_size(v), i;
    long long min, max;
    json_t *kw, *x;
    int rc;
    if ((kw = json_object_get(s, "minItems")) && !eddy__jschema_count(kw, &min) &&
        n < (unsigned long long)min)
        return fail(c, EDDY_ESCHEMA, "%zu item%s, fewer than minItems %lld", n, n == 1 ? "" : "s",
                    min);
    if ((kw = json_object_get(s, "maxItems")) && !eddy__jschema_count(kw, &max) &&
        n > (unsigned long long)max)
        return fail(c, EDDY_ESCHEMA, "%zu item%s, more than maxItems %lld", n, n == 1 ? "" : "s",
                    max);
    if ((kw = json_object_get(s, "items"))) {
        json_array_foreach(v, i, x)
        {
            push_index(c, i);
            rc = walk(c, kw, x, depth + 1);
            pop(c);
            if (rc)
                return rc;
        }
    }
    if ((kw = json_object_get(s, "uniqueItems")) && json_is_true(kw))
        return v_unique(c, v);
    return 0;
}

static int v_object(ctx *c, json_t *s, json_t *v, int depth)
{
    json_t *props = json_object_get(s, "properties"), *kw, *x, *sub;
    size_t n = json_object_size(v), i, klen;
    const char *k;
    char q[JSCHEMA_QUOTE_BUF];
    long long min, max;
    int rc;
    if ((kw = json_object_get(s, "required"))) {
        json_array_foreach(kw, i, x)
        {
            if (!json_object_getn(v, json_string_value(x), json_string_length(x)))
                return fail(
                    c, EDDY_ESCHEMA, "missing required property %s",
                    eddy__jschema_quote_name(json_string_value(x), json_string_length(x), q));
        }
    }
    if (props) {
        json_object_keylen_foreach(props, k, klen, sub)
        {
            if (!(x = json_object_getn(v, k, klen)))
                continue;
            push_key(c, k, klen);
            rc = walk(c, sub, x, depth + 1);
            pop(c);
            if (rc)
                return rc;
        }
    }
    if ((kw = json_object_get(s, "additionalProperties")) && !json_is_true(kw)) {
        json_object_keylen_foreach(v, k, klen, x)
        {
            if (props && json_object_getn(props, k, klen))
                continue;
            push_key(c, k, klen);
            if (json_is_false(kw))
                rc = fail(c, EDDY_ESCHEMA, "property not allowed (additionalProperties is false)");
            else
                rc = walk(c, kw, x, depth + 1);
            pop(c);
            if (rc)
                return rc;
        }
    }
    if ((kw = json_object_get(s, "minProperties")) && !eddy__jschema_count(kw, &min) &&
        n < (unsigned long long)min)
        return fail(c, EDDY_ESCHEMA, "%zu propert%s, fewer than minProperties %lld", n,
                    n == 1 ? "y" : "ies", min);
    if ((kw = json_object_get(s, "maxProperties")) && !eddy__jschema_count(kw, &max) &&
        n > (unsigned long long)max)
        return fail(c, EDDY_ESCHEMA, "%zu propert%s, more than maxProperties %lld", n,
                    n == 1 ? "y" : "ies", max);
    return 0;
}

/* Validate V against the checked schema S at level DEPTH: type, const and
 * enum first, then the keywords of V's type. */
static int walk(ctx *c, json_t *s, json_t *v, int depth)
{
    char qv[JSCHEMA_QUOTE_BUF], qc[JSCHEMA_QUOTE_BUF];
    json_t *kw;
    int rc;
    if (depth > MAX_DEPTH) /* the check bounded the schema, and walk follows it */
        return fail(c, EDDY_ESCHEMA, "nests deeper than %d levels", MAX_DEPTH);
    if ((kw = json_object_get(s, "type")) && (rc = v_type(c, kw, v)))
        return rc;
    if ((kw = json_object_get(s, "const")) && !eddy__jschema_equal(kw, v, 1))
        return fail(c, EDDY_ESCHEMA, "%s is not the constant %s", eddy__jschema_quote(v, qv),
                    eddy__jschema_quote(kw, qc));
    if ((kw = json_object_get(s, "enum")) && (rc = v_enum(c, kw, v)))
        return rc;
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL:
        return v_number(c, s, v);
    case JSON_STRING:
        return v_string(c, s, v);
    case JSON_ARRAY:
        return v_array(c, s, v, depth);
    case JSON_OBJECT:
        return v_object(c, s, v, depth);
    default:
        return 0;
    }
}

/* -- the API ------------------------------------------------------------------- */

static void free_rxs(ctx *c)
{
    while (c->rxs) {
        rx *r = c->rxs;
        c->rxs = r->next;
        regfree(&r->re);
        eddy_free(r);
    }
}

int eddy_jschema_check(json_t *schema, char *msg, size_t cap)
{
    ctx c = {.err = NULL};
    eddy_err e;
    int rc;
    eddy_err_clear(&e);
    c.err = &e;
    if (!schema)
        rc = eddy_err_set(&e, EDDY_EINVAL, "no schema");
    else
        rc = check_schema(&c, schema, 1);
    if (cap) {
        size_t n = rc ? strlen(e.msg) : 0;
        if (n >= cap) /* cut before a byte that continues a UTF-8 sequence */
            for (n = cap - 1; n && ((unsigned char)e.msg[n] & 0xC0) == 0x80; n--)
                ;
        memcpy(msg, e.msg, n);
        msg[n] = '\0';
    }
    return rc;
}

int eddy_jschema_validate(json_t *schema, json_t *value, eddy_err *err)
{
    ctx c = {.err = err, .keep = 1};
    int rc;
    if (!schema || !value)
        return eddy_err_set(err, EDDY_EINVAL, "eddy_jschema_validate: no %s",
                            schema ? "value" : "schema");
    rc = check_schema(&c, schema, 1);
    if (rc == EDDY_ESCHEMA) {
        rc = EDDY_EINVAL;
        if (err) {
            err->code = rc;
            eddy_err_prefix(err, "schema ");
        }
    } else if (!rc) {
        c.n = 0;
        rc = walk(&c, schema, value, 1);
    }
    free_rxs(&c);
    return rc;
}
