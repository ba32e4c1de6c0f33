/*
 * mcp/wire.c - the pure parts of the MCP client: newline-delimited JSON
 * (stdio), server-sent events (streamable HTTP) and turning a tools/call
 * result into what the model reads.
 *
 * Nothing here touches a loop, a thread or the network; every input may be
 * hostile, so sizes are capped and nothing is trusted to be well-formed.
 * Unit tested in tests/unit/test_mcp.c.
 */
#include "mcp_int.h"

#include "eddy/json.h"

#include <string.h>

/* -- lines ------------------------------------------------------------------ */

void eddy__mcp_lines_init(eddy__mcp_lines *l, size_t max)
{
    memset(l, 0, sizeof(*l));
    eddy_buf_init(&l->buf);
    l->max = max;
}

void eddy__mcp_lines_free(eddy__mcp_lines *l)
{
    eddy_buf_free(&l->buf);
}

static void emit_line(eddy__mcp_lines *l, eddy__mcp_line_fn fn, void *ud)
{
    size_t n = l->buf.len;
    if (n && l->buf.data[n - 1] == '\r')
        n--;
    fn(ud, n ? l->buf.data : "", n);
    eddy_buf_reset(&l->buf);
}

int eddy__mcp_lines_feed(eddy__mcp_lines *l, const char *data, size_t n, eddy__mcp_line_fn fn,
                         void *ud)
{
    while (n) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;
        if (l->skipping) {
            l->skipped += take;
        } else if (l->buf.len + take > l->max) {
            /* report once, then drop the rest of this line */
            fn(ud, NULL, l->buf.len + take);
            eddy_buf_reset(&l->buf);
            l->skipping = 1;
            l->skipped = 0;
        } else if (take && eddy_buf_append(&l->buf, data, take)) {
            return EDDY_ENOMEM;
        }
        if (!nl)
            break;
        if (l->skipping)
            l->skipping = 0;
        else
            emit_line(l, fn, ud);
        data += take + 1;
        n -= take + 1;
    }
    return 0;
}

/* -- server-sent events ----------------------------------------------------- */

void eddy__mcp_sse_init(eddy__mcp_sse *s, size_t max)
{
    memset(s, 0, sizeof(*s));
    eddy_buf_init(&s->line);
    eddy_buf_init(&s->data);
    s->max = max;
}

void eddy__mcp_sse_free(eddy__mcp_sse *s)
{
    eddy_buf_free(&s->line);
    eddy_buf_free(&s->data);
}

static void sse_dispatch(eddy__mcp_sse *s, eddy__mcp_sse_fn fn, void *ud)
{
    if (s->too_big)
        fn(ud, s->event[0] ? s->event : "message", NULL, 0, s->id);
    else if (s->has_data)
        fn(ud, s->event[0] ? s->event : "message", s->data.len ? s->data.data : "", s->data.len,
           s->id);
    eddy_buf_reset(&s->data);
    s->has_data = s->too_big = 0;
    s->event[0] = '\0';
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* One complete line (without its terminator). */
static int sse_line(eddy__mcp_sse *s, const char *p, size_t n, eddy__mcp_sse_fn fn, void *ud)
{
    const char *colon, *v;
    size_t fl, vl;
    if (n == 0) {
        sse_dispatch(s, fn, ud);
        return 0;
    }
    if (p[0] == ':')
        return 0; /* comment */
    colon = memchr(p, ':', n);
    fl = colon ? (size_t)(colon - p) : n;
    v = colon ? colon + 1 : p + n;
    vl = colon ? n - fl - 1 : 0;
    if (vl && v[0] == ' ')
        v++, vl--;
    if (fl == 4 && !memcmp(p, "data", 4)) {
        if (s->too_big)
            return 0;
        if (s->data.len + vl + 1 > s->max) {
            s->too_big = 1;
            eddy_buf_reset(&s->data);
            return 0;
        }
        if (s->has_data && eddy_buf_putc(&s->data, '\n'))
            return EDDY_ENOMEM;
        if (vl && eddy_buf_append(&s->data, v, vl))
            return EDDY_ENOMEM;
        s->has_data = 1;
    } else if (fl == 5 && !memcmp(p, "event", 5)) {
        copy_field(s->event, sizeof(s->event), v, vl);
    } else if (fl == 2 && !memcmp(p, "id", 2)) {
        if (!memchr(v, '\0', vl))
            copy_field(s->id, sizeof(s->id), v, vl);
    }
    /* retry and unknown fields: ignored */
    return 0;
}

int eddy__mcp_sse_feed(eddy__mcp_sse *s, const char *data, size_t n, eddy__mcp_sse_fn fn, void *ud)
{
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        int rc;
        if (s->cr && c == '\n') { /* the \n of a \r\n */
            s->cr = 0;
            continue;
        }
        s->cr = 0;
        if (c == '\r' || c == '\n') {
            s->cr = c == '\r';
            rc = sse_line(s, s->line.len ? s->line.data : "", s->line.len, fn, ud);
            eddy_buf_reset(&s->line);
            if (rc)
                return rc;
            continue;
        }
        /* a line longer than the event cap cannot fit: keep only its start
         * (enough to see that it is a data line and mark the event too big) */
        if (s->line.len > s->max) {
            s->too_big = 1;
            continue;
        }
        if (eddy_buf_putc(&s->line, c))
            return EDDY_ENOMEM;
    }
    return 0;
}

/* -- results ---------------------------------------------------------------- */

/* The text items of CONTENT joined with "\n" into B; whether all were text. */
static int join_text(const json_t *content, eddy_buf *b)
{
    size_t i;
    json_t *it;
    int all = 1;
    json_array_foreach(content, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *text = json_string_value(json_object_get(it, "text"));
        if (!type || strcmp(type, "text") || !text) {
            all = 0;
            continue;
        }
        if (b->len)
            eddy_buf_putc(b, '\n');
        eddy_buf_puts(b, text);
    }
    return all;
}

int eddy__mcp_result_json(const json_t *result, const char *label, json_t **out, eddy_err *err)
{
    const json_t *content = json_object_get(result, "content");
    const json_t *sc = json_object_get(result, "structuredContent");
    eddy_buf b;
    int all, rc = 0;

    *out = NULL;
    if (!json_is_object(result))
        return eddy_err_set(err, EDDY_EPARSE, "mcp tool '%s': the answer is not an object", label);
    if (content && !json_is_array(content))
        return eddy_err_set(err, EDDY_EPARSE, "mcp tool '%s': 'content' is not a list", label);
    eddy_buf_init(&b);
    all = content ? join_text(content, &b) : 1;
    if (b.oom) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if (json_is_true(json_object_get(result, "isError"))) {
        rc = eddy_err_set(err, EDDY_ETOOL, "mcp tool '%s': %s", label,
                          b.len ? b.data : "the tool failed (no text given)");
        goto out;
    }
    if (sc && !json_is_null(sc))
        *out = json_deep_copy(sc);
    else if (!all)
        *out = json_deep_copy(content);
    else
        *out = json_stringn(b.len ? b.data : "", b.len);
    if (!*out)
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    eddy_buf_free(&b);
    return rc;
}

char *eddy__mcp_line(const json_t *msg, size_t *len)
{
    eddy_buf b;
    eddy_buf_init(&b);
    if (eddy_json_dump_buf(&b, msg, JSON_COMPACT) || eddy_buf_putc(&b, '\n')) {
        eddy_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return eddy_buf_take(&b);
}
