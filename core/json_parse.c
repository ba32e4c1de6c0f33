/*
 * core/json_parse.c - a fast path in front of jansson's parser.
 *
 * jansson reads text a byte at a time through a stream with a function call
 * per byte and builds every string in a growing buffer: about 200
 * instructions a byte, 80,000 for a 400-byte chat completion, the largest
 * single cost of a worker's run after the HTTP exchange. This parser reads
 * the text in place (a string without escapes is copied once, straight into
 * its value) and builds the same jansson values with the *_nocheck
 * constructors, having checked the UTF-8 itself.
 *
 * It never decides alone that a text is wrong: whatever it does not accept
 * (an error, an option it does not know, an allocation that failed) goes to
 * json_loadb, whose value or error is the answer, so error messages, line
 * and column stay jansson's. What it accepts, jansson accepts with an equal
 * value (tests/unit/test_json.c compares the two on many texts, and the
 * fuzz target json_parse does on its corpus): RFC 8259 grammar, UTF-8
 * without overlong forms, surrogates or code points past U+10FFFF, \u
 * escapes with surrogate pairs, no NUL in keys (nor in strings without
 * JSON_ALLOW_NUL), integers within json_int_t, reals that do not overflow,
 * the last of duplicate keys (or a failure with JSON_REJECT_DUPLICATES),
 * nesting up to JSON_PARSER_MAX_DEPTH.
 */
#include "eddy/json.h"
#include "eddy/buf.h"
#include "json_parse_int.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FAST_FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

typedef struct parser {
    const unsigned char *p, *end;
    size_t flags;
    int depth;
    eddy_buf tmp; /* an escaped string's decoded text */
} parser;

static json_t *value(parser *s);

static void ws(parser *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

static void put_utf8(eddy_buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    eddy_buf_append(b, u, n);
}

/* The string at s->p (its opening quote): *OUT and *N its text, in the
 * input when it has no escape, else in s->tmp; *NUL when it holds U+0000.
 * 0, or -1 (not taken). */
static int string(parser *s, const char **out, size_t *n, int *nul)
{
    const unsigned char *p = s->p + 1, *start = p, *end = s->end;
    *nul = 0;
    for (;;) { /* the plain part */
        if (p >= end)
            return -1;
        unsigned c = *p;
        if (c == '"') {
            *out = (const char *)start;
            *n = (size_t)(p - start);
            s->p = p + 1;
            return 0;
        }
        if (c == '\\')
            break;
        if (c < 0x20)
            return -1;
        if (c < 0x80) {
            p++;
        } else {
            size_t l = eddy_utf8_seq_len((const char *)p, (size_t)(end - p));
            if (!l)
                return -1;
            p += l;
        }
    }
    eddy_buf_reset(&s->tmp);
    eddy_buf_append(&s->tmp, start, (size_t)(p - start));
    while (p < end && *p != '"') {
        unsigned c = *p;
        if (c == '\\') {
            unsigned cp;
            if (++p >= end)
                return -1;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
                eddy_buf_putc(&s->tmp, (char)*p);
                break;
            case 'b':
                eddy_buf_putc(&s->tmp, '\b');
                break;
            case 'f':
                eddy_buf_putc(&s->tmp, '\f');
                break;
            case 'n':
                eddy_buf_putc(&s->tmp, '\n');
                break;
            case 'r':
                eddy_buf_putc(&s->tmp, '\r');
                break;
            case 't':
                eddy_buf_putc(&s->tmp, '\t');
                break;
            case 'u':
                if (hex4(p + 1, end, &cp))
                    return -1;
                p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return -1; /* a low surrogate first */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (end - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, end, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (!cp)
                    *nul = 1;
                put_utf8(&s->tmp, cp);
                break;
            default:
                return -1;
            }
            p++;
        } else if (c < 0x20) {
            return -1;
        } else if (c < 0x80) {
            const unsigned char *q = p;
            while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
                q++;
            eddy_buf_append(&s->tmp, p, (size_t)(q - p));
            p = q;
        } else {
            size_t l = eddy_utf8_seq_len((const char *)p, (size_t)(end - p));
            if (!l)
                return -1;
            eddy_buf_append(&s->tmp, p, l);
            p += l;
        }
    }
    if (p >= end || s->tmp.oom)
        return -1;
    s->p = p + 1;
    *out = s->tmp.data ? s->tmp.data : "";
    *n = s->tmp.len;
    return 0;
}

static json_t *number(parser *s)
{
    const unsigned char *p = s->p, *end = s->end, *start = p;
    int real = 0;
    char small[64], *text = small;
    json_t *v = NULL;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (p < end && *p == '.') {
        real = 1;
        if (++p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - start);
    if (n >= sizeof(small) && !(text = eddy_malloc(n + 1)))
        return NULL;
    memcpy(text, start, n);
    text[n] = '\0';
    errno = 0;
    if (real) {
        char *e;
        double d = strtod(text, &e);
        /* strtod reads the locale's decimal point: where it is not '.' (a
         * program that called setlocale), it stops at the '.' and jansson,
         * which swaps the point first, has the value. */
        if (e == text + n && !isinf(d))
            v = json_real(d);
    } else {
        long long i = strtoll(text, NULL, 10);
        if (errno != ERANGE)
            v = json_integer((json_int_t)i);
    }
    if (text != small)
        eddy_free(text);
    if (v)
        s->p = p;
    return v;
}

static json_t *object(parser *s)
{
    json_t *o = json_object();
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return o;
    }
    while (o) {
        const char *k;
        size_t kn;
        int nul;
        char *copy = NULL;
        if (s->p >= s->end || *s->p != '"' || string(s, &k, &kn, &nul) || nul)
            goto fail;
        if (k == s->tmp.data && !(k = copy = eddy_strndup(k, kn))) /* the value reuses tmp */
            goto fail;
        ws(s);
        json_t *v = NULL;
        if (s->p < s->end && *s->p == ':') {
            s->p++;
            ws(s);
            v = value(s);
        }
        if (v && (s->flags & JSON_REJECT_DUPLICATES) && json_object_getn(o, k, kn)) {
            json_decref(v);
            v = NULL;
        }
        if (!v || json_object_setn_new_nocheck(o, k, kn, v)) { /* it takes V, also failing */
            eddy_free(copy);
            goto fail;
        }
        eddy_free(copy);
        ws(s);
        if (s->p >= s->end)
            goto fail;
        if (*s->p == '}') {
            s->p++;
            return o;
        }
        if (*s->p != ',')
            goto fail;
        s->p++;
        ws(s);
    }
fail:
    json_decref(o);
    return NULL;
}

static json_t *array(parser *s)
{
    json_t *a = json_array();
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return a;
    }
    while (a) {
        json_t *v = value(s);
        if (!v || json_array_append_new(a, v))
            break;
        ws(s);
        if (s->p >= s->end)
            break;
        if (*s->p == ']') {
            s->p++;
            return a;
        }
        if (*s->p != ',')
            break;
        s->p++;
        ws(s);
    }
    json_decref(a);
    return NULL;
}

static json_t *literal(parser *s, const char *word, size_t n, json_t *v)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n))
        return NULL;
    s->p += n;
    return v;
}

/* The value at s->p (no whitespace before it), or NULL. */
static json_t *value(parser *s)
{
    json_t *v = NULL;
    const char *t;
    size_t n;
    int nul;
    if (s->p >= s->end || ++s->depth > JSON_PARSER_MAX_DEPTH)
        return NULL;
    switch (*s->p) {
    case '{':
        v = object(s);
        break;
    case '[':
        v = array(s);
        break;
    case '"':
        if (!string(s, &t, &n, &nul) && (!nul || (s->flags & JSON_ALLOW_NUL)))
            v = json_stringn_nocheck(t, n);
        break;
    case 't':
        v = literal(s, "true", 4, json_true());
        break;
    case 'f':
        v = literal(s, "false", 5, json_false());
        break;
    case 'n':
        v = literal(s, "null", 4, json_null());
        break;
    default:
        v = number(s);
    }
    s->depth--;
    return v;
}

json_t *eddy__json_parse_fast(const char *buf, size_t len, size_t flags)
{
    parser s = {(const unsigned char *)buf, (const unsigned char *)buf + len, flags, 0, {0}};
    json_t *v = NULL;
    if (!buf || (flags & ~(size_t)FAST_FLAGS))
        return NULL;
    eddy_buf_init(&s.tmp);
    ws(&s);
    if (s.p < s.end && ((flags & JSON_DECODE_ANY) || *s.p == '{' || *s.p == '['))
        v = value(&s);
    ws(&s);
    if (v && s.p != s.end) {
        json_decref(v);
        v = NULL;
    }
    eddy_buf_free(&s.tmp);
    return v;
}

json_t *eddy_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
    json_t *v = eddy__json_parse_fast(buf, len, flags);
    if (!v)
        return json_loadb(buf, len, flags, error); /* jansson's word, and its message */
    if (error) {                                   /* what json_loadb leaves after a text it read */
        memset(error, 0, sizeof(*error));
        error->line = -1;
        error->column = -1;
        error->position = (int)len;
        memcpy(error->source, "<buffer>", sizeof("<buffer>"));
    }
    return v;
}

json_t *eddy_json_loads(const char *text, size_t flags, json_error_t *error)
{
    return eddy_json_loadb(text, text ? strlen(text) : 0, flags, error);
}
