/*
 * llm/stream.c - streamed answers: framing (SSE, NDJSON) that survives any
 * split of the bytes, and the accumulator providers' event functions fill.
 *
 * Framing: bytes are cut into lines (LF, CRLF); SSE collects `event:` and
 * `data:` fields until a blank line dispatches the event (several data lines
 * join with "\n", comments are skipped); NDJSON dispatches every non-empty
 * line. A line longer than 16 MiB ends the stream with an error.
 *
 * The accumulator builds the response's assistant message as it goes: text
 * pieces join the last part when it is text, tool calls are parts found by
 * index and id (see llm.h), their argument fragments appended in place
 * (amortized: the capacity of each growing string is kept beside it).
 */
#include "eddy/buf.h"
#include "llm_int.h"

#include <string.h>

#define MAX_LINE (16u << 20)
#define MAX_STREAM (64ull << 20) /* as a plain answer's body */
#define MAX_CALLS 1000           /* tool calls in one answer */

typedef struct call_slot {
    long index;
    size_t part;               /* in resp.message.parts */
    size_t args_len, args_cap; /* of parts[part].args (a NUL inside ends it as a string) */
} call_slot;

struct eddy_llm_stream {
    const eddy_llm_provider *p;
    const eddy_llm_request *rq;
    eddy_buf line;
    char event[64];
    eddy_buf data;
    int has_data, ended, started, failed, bom_checked;
    unsigned long long fed; /* bytes so far */
    eddy_llm_response resp;
    size_t text_len, text_cap; /* of the last part's text when it is text */
    call_slot *calls;
    size_t ncalls;
};

eddy_llm_stream *eddy_llm_stream_new(const eddy_llm_provider *p, const eddy_llm_request *rq)
{
    eddy_llm_stream *st = eddy_calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->p = p;
    st->rq = rq;
    eddy_buf_init(&st->line);
    eddy_buf_init(&st->data);
    st->resp.message.role = EDDY_ROLE_ASSISTANT;
    return st;
}

void eddy_llm_stream_free(eddy_llm_stream *st)
{
    if (!st)
        return;
    eddy_buf_free(&st->line);
    eddy_buf_free(&st->data);
    eddy_llm_response_clear(&st->resp);
    eddy_free(st->calls);
    eddy_free(st);
}

eddy_llm_response *eddy_llm_stream_resp(eddy_llm_stream *st)
{
    return &st->resp;
}

const eddy_llm_request *eddy_llm_stream_request(const eddy_llm_stream *st)
{
    return st->rq;
}

void eddy_llm_stream_end(eddy_llm_stream *st)
{
    st->ended = 1;
}

int eddy_llm_stream_ended(const eddy_llm_stream *st)
{
    return st->ended;
}

int eddy_llm_stream_started(const eddy_llm_stream *st)
{
    return st->started;
}

/* Append N bytes of S to the string *DST of *LEN bytes and capacity *CAP. */
static int grow_append(char **dst, size_t *len_io, size_t *cap, const char *s, size_t n)
{
    size_t len = *len_io;
    if (len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 32;
        while (c < len + n + 1)
            c *= 2;
        char *p = eddy_realloc(*dst, c);
        if (!p)
            return EDDY_ENOMEM;
        if (!*dst)
            p[0] = '\0';
        *dst = p;
        *cap = c;
    }
    memcpy(*dst + len, s, n);
    (*dst)[len + n] = '\0';
    *len_io = len + n;
    return 0;
}

int eddy_llm_stream_text(eddy_llm_stream *st, const char *text, size_t n)
{
    eddy_llm_msg *m = &st->resp.message;
    if (!n)
        return 0;
    if (m->nparts && m->parts[m->nparts - 1].kind == EDDY_PART_TEXT)
        return grow_append(&m->parts[m->nparts - 1].text, &st->text_len, &st->text_cap, text, n);
    if (eddy_llm_msg_text_n(m, text, n))
        return EDDY_ENOMEM;
    st->text_len = n;
    st->text_cap = n + 1;
    return 0;
}

static call_slot *find_call(eddy_llm_stream *st, long index, const char *id)
{
    eddy_llm_part *parts = st->resp.message.parts;
    if (id) /* an id names its call whatever the index says */
        for (size_t i = st->ncalls; i-- > 0;) {
            const char *cid = parts[st->calls[i].part].id;
            if (cid && !strcmp(cid, id))
                return &st->calls[i];
        }
    if (index >= 0)
        for (size_t i = st->ncalls; i-- > 0;)
            if (st->calls[i].index == index) {
                const char *cid = parts[st->calls[i].part].id;
                /* the same index with another id: a new call (index-0 servers) */
                if (id && cid && strcmp(cid, id))
                    return NULL;
                return &st->calls[i];
            }
    if (!id && index < 0 && st->ncalls) /* neither: the call being written */
        return &st->calls[st->ncalls - 1];
    return NULL;
}

int eddy_llm_stream_tool(eddy_llm_stream *st, long index, const char *id, const char *name,
                         const char *args, size_t args_len)
{
    eddy_llm_msg *m = &st->resp.message;
    call_slot *c = find_call(st, index, id);
    if (!c) {
        if (st->ncalls >= MAX_CALLS)
            return EDDY_ERANGE;
        call_slot *grown = eddy_realloc(st->calls, (st->ncalls + 1) * sizeof(*grown));
        if (!grown)
            return EDDY_ENOMEM;
        st->calls = grown;
        /* a part with empty arguments, filled by the fragments */
        if (eddy_llm_msg_tool_call(m, id, name, "{}"))
            return EDDY_ENOMEM;
        eddy_llm_part *p = &m->parts[m->nparts - 1];
        p->args[0] = '\0';
        c = &st->calls[st->ncalls++];
        c->index = index;
        c->part = m->nparts - 1;
        c->args_len = 0;
        c->args_cap = 3;
    }
    eddy_llm_part *p = &m->parts[c->part];
    if (id && !p->id && !(p->id = eddy_strdup(id)))
        return EDDY_ENOMEM;
    if (name && *name && !p->name && !(p->name = eddy_strdup(name)))
        return EDDY_ENOMEM;
    if (args && args_len)
        return grow_append(&p->args, &c->args_len, &c->args_cap, args, args_len);
    return 0;
}

int eddy_llm_stream_tool_args_set(eddy_llm_stream *st, long index, const char *id,
                                  const char *args)
{
    call_slot *c = find_call(st, index, id);
    if (!c)
        return eddy_llm_stream_tool(st, index, id, NULL, args, strlen(args));
    eddy_llm_part *p = &st->resp.message.parts[c->part];
    char *a = eddy_strdup(args);
    if (!a)
        return EDDY_ENOMEM;
    eddy_free(p->args);
    p->args = a;
    c->args_len = strlen(a);
    c->args_cap = c->args_len + 1;
    return 0;
}

/* -- framing ----------------------------------------------------------------------- */

static int dispatch(eddy_llm_stream *st, const char *name, const char *data, size_t n,
                    eddy_err *err)
{
    st->started = 1;
    if (st->ended) /* anything after the end marker is ignored */
        return 0;
    int rc = st->p->event(st, name, data, n, err);
    if (rc == EDDY_ERANGE)
        eddy_err_set(err, EDDY_ERANGE, "the streamed answer has more than %d tool calls",
                     MAX_CALLS);
    if (rc)
        st->failed = 1;
    return rc;
}

static int sse_line(eddy_llm_stream *st, char *s, size_t n, eddy_err *err)
{
    if (n == 0) { /* blank line: dispatch */
        int rc = 0;
        if (st->has_data)
            rc = dispatch(st, st->event[0] ? st->event : NULL, st->data.data ? st->data.data : "",
                          st->data.len, err);
        st->event[0] = '\0';
        eddy_buf_reset(&st->data);
        st->has_data = 0;
        return rc;
    }
    if (s[0] == ':') /* comment */
        return 0;
    char *colon = memchr(s, ':', n);
    size_t fl = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && *v == ' ')
        v++, vl--;
    if (fl == 4 && !memcmp(s, "data", 4)) {
        if (st->has_data && eddy_buf_putc(&st->data, '\n'))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        if (eddy_buf_append(&st->data, v, vl))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        st->has_data = 1;
    } else if (fl == 5 && !memcmp(s, "event", 5)) {
        size_t k = vl < sizeof(st->event) - 1 ? vl : sizeof(st->event) - 1;
        memcpy(st->event, v, k);
        st->event[k] = '\0';
    }
    return 0; /* id:, retry: and unknown fields are ignored */
}

static int one_line(eddy_llm_stream *st, char *s, size_t n, eddy_err *err)
{
    if (n && s[n - 1] == '\r')
        s[--n] = '\0';
    if (st->p->framing == EDDY_FRAMING_SSE)
        return sse_line(st, s, n, err);
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    return n ? dispatch(st, NULL, s, n, err) : 0;
}

/* The end of the line starting at P: the first LF, or a CR not followed by
 * LF (a lone CR ends a line too, as SSE says); NULL when the chunk ends
 * first (a CR last in the chunk waits: an LF may follow). */
static const char *line_end(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n')
            return p + i;
        if (p[i] == '\r' && i + 1 < n && p[i + 1] != '\n')
            return p + i;
    }
    return NULL;
}

int eddy_llm_stream_feed(eddy_llm_stream *st, const char *p, size_t n, eddy_err *err)
{
    if (st->failed)
        return eddy_err_set(err, EDDY_EPARSE, "stream already failed");
    if ((st->fed += n) > MAX_STREAM) {
        st->failed = 1;
        return eddy_err_set(err, EDDY_ERANGE, "the streamed answer is larger than %llu MiB",
                            MAX_STREAM >> 20);
    }
    if (!st->bom_checked) { /* a UTF-8 byte order mark before the first field */
        static const char bom[] = "\xEF\xBB\xBF";
        size_t have = st->line.len + n < 3 ? st->line.len + n : 3;
        char head[3];
        size_t k = st->line.len < have ? st->line.len : have;
        memcpy(head, st->line.data ? st->line.data : "", k);
        memcpy(head + k, p, have - k);
        if (memcmp(head, bom, have)) {
            st->bom_checked = 1;
        } else if (have == 3) {
            st->bom_checked = 1;
            size_t skip = 3 - k; /* the BOM's bytes in this chunk */
            eddy_buf_reset(&st->line);
            p += skip;
            n -= skip;
        } else { /* a BOM's start: wait for more */
            if (eddy_buf_append(&st->line, p, n)) {
                st->failed = 1;
                return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            }
            return 0;
        }
    }
    if (n && st->line.len && st->line.data[st->line.len - 1] == '\r' && p[0] != '\n') {
        /* the last chunk ended with a lone CR: that line is complete */
        int rc = one_line(st, st->line.data, st->line.len, err);
        eddy_buf_reset(&st->line);
        if (rc)
            return rc;
    }
    while (n) {
        const char *nl = line_end(p, n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if (st->line.len + k > MAX_LINE) {
            st->failed = 1;
            return eddy_err_set(err, EDDY_EPARSE, "stream line longer than %u bytes", MAX_LINE);
        }
        if (!nl) {
            if (eddy_buf_append(&st->line, p, k)) {
                st->failed = 1;
                return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            }
            return 0;
        }
        if (eddy_buf_append(&st->line, p, k)) {
            st->failed = 1;
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
        int rc = one_line(st, st->line.data ? st->line.data : (char *)"", st->line.len, err);
        eddy_buf_reset(&st->line);
        if (rc)
            return rc;
        p = nl + 1;
        n -= k + 1;
    }
    return 0;
}

int eddy_llm_stream_finish(eddy_llm_stream *st, eddy_llm_response *out, eddy_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!st->ended && st->line.len) { /* a last line without its newline */
        int rc = one_line(st, st->line.data, st->line.len, err);
        eddy_buf_reset(&st->line);
        if (rc)
            return rc;
    }
    if (!st->ended && st->p->framing == EDDY_FRAMING_SSE && st->has_data) {
        int rc = sse_line(st, (char *)"", 0, err);
        if (rc)
            return rc;
    }
    if (!st->ended)
        return eddy_err_set(err, EDDY_EPARSE,
                            "the stream ended before its end marker (%s)",
                            st->started ? "cut off mid-answer" : "no event arrived");
    eddy_llm_response *r = &st->resp;
    eddy_llm_msg *m = &r->message;
    for (size_t i = 0; i < m->nparts; i++) { /* calls that got no fragments */
        eddy_llm_part *p = &m->parts[i];
        if (p->kind == EDDY_PART_TOOL_CALL && (!p->args || !*p->args)) {
            char *a = eddy_strdup("{}");
            if (!a)
                return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            eddy_free(p->args);
            p->args = a;
        }
        if (p->kind == EDDY_PART_TOOL_CALL && !p->id) {
            p->id = eddy_aprintf("call_%zu", i);
            if (!p->id)
                return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
        if (p->kind == EDDY_PART_TOOL_CALL && !p->name)
            return eddy_err_set(err, EDDY_ELLM, "streamed tool call %zu has no name", i);
    }
    r->finish = eddy_llm_finish_from(r->finish_raw);
    if (r->finish == EDDY_FINISH_STOP && eddy_llm_msg_count(m, EDDY_PART_TOOL_CALL))
        r->finish = EDDY_FINISH_TOOL_CALLS;
    *out = *r;
    memset(r, 0, sizeof(*r));
    r->message.role = EDDY_ROLE_ASSISTANT;
    st->ncalls = 0;
    st->text_cap = 0;
    return 0;
}
