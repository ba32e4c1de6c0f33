/*
 * tests/mockllm/wire.c - small pieces every wire format of the mock uses:
 * the chunk list of a streamed answer, SSE and NDJSON framing, cutting text
 * into stream pieces at UTF-8 boundaries (jansson refuses invalid UTF-8, and
 * so do real servers), and the neutral messages the rules look at.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mock_chunks_add(mock_chunks *c, char *s)
{
    if (!s)
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = realloc(c->v, c->cap * sizeof(*c->v));
    }
    c->v[c->n++] = s;
}

void mock_chunks_free(mock_chunks *c)
{
    for (size_t i = 0; i < c->n; i++)
        eddy_free(c->v[i]);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

char *mock_dump(json_t *v)
{
    char *s = eddy_json_dumps_flags(v, JSON_COMPACT);
    json_decref(v);
    return s;
}

char *mock_sse(const char *event, json_t *data)
{
    char *s = mock_dump(data);
    char *out = event ? eddy_aprintf("event: %s\ndata: %s\n\n", event, s ? s : "{}")
                      : eddy_aprintf("data: %s\n\n", s ? s : "{}");
    eddy_free(s);
    return out;
}

char *mock_line(json_t *data)
{
    char *s = mock_dump(data);
    char *out = eddy_aprintf("%s\n", s ? s : "{}");
    eddy_free(s);
    return out;
}

size_t mock_piece_len(const char *s, size_t n, size_t want)
{
    size_t len = 0;
    if (want == 0)
        want = 1;
    while (len < n) {
        size_t k = eddy_utf8_seq_len(s + len, n - len);
        if (k == 0)
            k = 1; /* not UTF-8: the text came from a valid JSON string, so never here */
        if (len > 0 && len + k > want)
            break;
        len += k;
        if (len >= want)
            break;
    }
    return len;
}

void mock_msg_add(json_t *msgs, const char *role, const char *text)
{
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role, "content", text));
}

char *mock_content_text(json_t *content)
{
    eddy_buf b;
    size_t i;
    json_t *blk;
    if (json_is_string(content))
        return eddy_strdup(json_string_value(content));
    eddy_buf_init(&b);
    json_array_foreach(content, i, blk)
    {
        const char *t = json_is_string(blk) ? json_string_value(blk)
                        : !strcmp(eddy_json_str(blk, "type", "text"), "text")
                            ? eddy_json_str(blk, "text", NULL)
                            : NULL;
        if (!t)
            continue;
        if (b.len)
            eddy_buf_putc(&b, '\n');
        eddy_buf_puts(&b, t);
    }
    return eddy_buf_take(&b);
}

long mock_json_chars(json_t *v)
{
    char *s = v ? eddy_json_dumps_flags(v, JSON_COMPACT) : NULL;
    long n = s ? (long)strlen(s) : 0;
    eddy_free(s);
    return n;
}

int mock_error_set(mock_error *e, unsigned status, const char *type, const char *fmt, ...)
{
    va_list ap;
    memset(e, 0, sizeof(*e));
    e->status = status;
    e->type = type;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

const char *mock_finish_word(const char *finish, const char *stop, const char *tools,
                             const char *length)
{
    if (!strcmp(finish, "stop"))
        return stop;
    if (!strcmp(finish, "tool_calls"))
        return tools;
    if (!strcmp(finish, "length"))
        return length;
    return finish;
}
