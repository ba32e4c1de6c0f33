/*
 * core/jschema_text.c - bounded text for the validator's messages.
 *
 * Values quoted in a message and the JSON pointer of the place are written
 * into fixed buffers in whole pieces (a character, an escape, a number):
 * when the next piece would not fit, "..." ends the text. So a message
 * never splits a UTF-8 sequence or an escape, always fits an eddy_err, and
 * quoting a huge value reads only what fits. Nothing here allocates.
 */
#include "jschema_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <stdio.h>
#include <string.h>

enum { SEG_BUF = JSCHEMA_SEG_MAX + 8 };

/* Text written in whole pieces (a character, an escape, a number) until the
 * next piece would pass MAX; then "..." ends it. So a cut never falls inside
 * a UTF-8 sequence or an escape. P has room for MAX + 4 bytes. */
typedef struct textbuf {
    char *p;
    size_t len, max;
    int cut;
} textbuf;

static void put(textbuf *o, const char *s, size_t n)
{
    if (o->cut)
        return;
    if (o->len + n > o->max) {
        o->cut = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static size_t end(textbuf *o)
{
    if (o->cut) {
        memcpy(o->p + o->len, "...", 3);
        o->len += 3;
    }
    o->p[o->len] = '\0';
    return o->len;
}

enum { ESC_JSON, ESC_POINTER, ESC_NAME };

/* Put the N bytes at S, escaped for MODE: inside a JSON string (\" \\),
 * as an RFC 6901 eddy__jschema_seg (~0 ~1) or as a name in quotes; control
 * characters as JSON writes them in every mode, and a byte that is not
 * UTF-8 (jansson lets C code make such strings) as U+FFFD. */
static void put_text(textbuf *o, const char *s, size_t n, int mode)
{
    for (size_t i = 0; i < n && !o->cut;) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        size_t len = eddy_utf8_seq_len(s + i, n - i);
        if (ch == '~' && mode == ESC_POINTER)
            put(o, "~0", 2);
        else if (ch == '/' && mode == ESC_POINTER)
            put(o, "~1", 2);
        else if ((ch == '"' || ch == '\\') && mode == ESC_JSON)
            esc[0] = '\\', esc[1] = (char)ch, put(o, esc, 2);
        else if (ch < 0x20 || ch == 0x7f) {
            const char *named = ch == '\n' ? "\\n" : ch == '\t' ? "\\t" : ch == '\r' ? "\\r" : NULL;
            if (named)
                put(o, named, 2);
            else
                put(o, esc, (size_t)snprintf(esc, sizeof(esc), "\\u%04x", ch));
        } else if (!len) {
            put(o, "\xEF\xBF\xBD", 3);
            len = 1;
        } else
            put(o, s + i, len);
        i += len ? len : 1;
    }
}

/* Put the compact JSON text of V; containers nested past 8 levels as
 * "[...]" or "{...}". Stops as soon as the text is cut, so a huge value costs little. */
static void put_value(textbuf *o, const json_t *v, int depth)
{
    char num[EDDY_JSON_NUMBER_MAX];
    size_t i;
    const char *k;
    size_t klen;
    json_t *x;
    if (depth > 8 && (json_is_array(v) || json_is_object(v))) {
        put(o, json_is_array(v) ? "[...]" : "{...}", 5);
        return;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        put(o, "\"", 1);
        put_text(o, json_string_value(v), json_string_length(v), ESC_JSON);
        put(o, "\"", 1);
        break;
    case JSON_INTEGER:
        put(o, num, eddy_json_integer_text(json_integer_value(v), num));
        break;
    case JSON_REAL:
        put(o, num, eddy_json_number_text(json_real_value(v), num));
        break;
    case JSON_TRUE:
        put(o, "true", 4);
        break;
    case JSON_FALSE:
        put(o, "false", 5);
        break;
    case JSON_NULL:
        put(o, "null", 4);
        break;
    case JSON_ARRAY:
        put(o, "[", 1);
        json_array_foreach(v, i, x)
        {
            if (o->cut)
                break;
            if (i)
                put(o, ",", 1);
            put_value(o, x, depth + 1);
        }
        put(o, "]", 1);
        break;
    case JSON_OBJECT:
        put(o, "{", 1);
        i = 0;
        json_object_keylen_foreach((json_t *)v, k, klen, x)
        {
            if (o->cut)
                break;
            if (i++)
                put(o, ",", 1);
            put(o, "\"", 1);
            put_text(o, k, klen, ESC_JSON);
            put(o, "\":", 2);
            put_value(o, x, depth + 1);
        }
        put(o, "}", 1);
        break;
    }
}

/* V as JSON text of at most about JSCHEMA_QUOTE_MAX bytes, for a message. */
const char *eddy__jschema_quote(const json_t *v, char buf[JSCHEMA_QUOTE_BUF])
{
    textbuf o = {buf, 0, JSCHEMA_QUOTE_MAX, 0};
    put_value(&o, v, 1);
    end(&o);
    return buf;
}

/* A key or property name in single quotes, bounded as quote is. */
const char *eddy__jschema_quote_name(const char *s, size_t n, char buf[JSCHEMA_QUOTE_BUF])
{
    textbuf o = {buf, 0, JSCHEMA_QUOTE_MAX, 0};
    put(&o, "'", 1);
    put_text(&o, s, n, ESC_NAME);
    if (!o.cut)
        put(&o, "'", 1);
    end(&o);
    return buf;
}

static size_t seg_text(const eddy__jschema_seg *s, char buf[SEG_BUF])
{
    textbuf o = {buf, 0, JSCHEMA_SEG_MAX, 0};
    put(&o, "/", 1);
    if (s->key) {
        put_text(&o, s->key, s->len, ESC_POINTER);
    } else {
        char num[24];
        put(&o, num, (size_t)snprintf(num, sizeof(num), "%zu", s->index));
    }
    return end(&o);
}

void eddy__jschema_pointer(const eddy__jschema_seg *path, int nseg, char buf[JSCHEMA_PTR_BUF])
{
    char seg[SEG_BUF];
    size_t total = 0, o = 0, sum;
    int head = nseg, tail = nseg, i;
    if (!nseg) {
        memcpy(buf, "/", 2);
        return;
    }
    for (i = 0; i < nseg; i++)
        total += seg_text(&path[i], seg);
    if (total > JSCHEMA_PTR_HEAD + JSCHEMA_PTR_TAIL) {
        for (head = 0, sum = 0; head < nseg; head++) {
            size_t n = seg_text(&path[head], seg);
            if (sum + n > JSCHEMA_PTR_HEAD)
                break;
            sum += n;
        }
        for (tail = nseg, sum = 0; tail > head; tail--) {
            size_t n = seg_text(&path[tail - 1], seg);
            if (sum + n > JSCHEMA_PTR_TAIL)
                break;
            sum += n;
        }
    }
    for (i = 0; i < nseg; i++) {
        size_t n;
        if (i == head && i < tail) {
            memcpy(buf + o, "/...", 4);
            o += 4;
            i = tail - 1;
            continue;
        }
        n = seg_text(&path[i], seg);
        memcpy(buf + o, seg, n);
        o += n;
    }
    buf[o] = '\0';
}

const char *eddy__jschema_type_article(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
    case JSON_INTEGER:
        return "an";
    case JSON_NULL:
        return "";
    default:
        return "a";
    }
}
