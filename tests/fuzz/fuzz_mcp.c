/*
 * tests/fuzz/fuzz_mcp.c - what an MCP server sends eddy, and the job's mcp:
 * section (mcp/wire.c, mcp/config.c). The first byte picks the parser:
 *
 *  0  stdio framing: the rest fed in pieces (sizes from the second byte) gives
 *     the same lines as fed at once, none holding a newline or longer than the
 *     cap, and an oversized line is reported, never split;
 *  1  server-sent events: the same events whatever the split, none larger
 *     than the cap;
 *  2  a tools/call result (JSON): 0 with a value, or EDDY_ETOOL / EDDY_EPARSE
 *     with a message and no value;
 *  3  an mcp: section (JSON): 0, or EDDY_ESCHEMA with at least one problem.
 *
 * Any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../mcp/mcp_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP 64

static void add_line(void *ud, const char *line, size_t len)
{
    eddy_buf *b = ud;
    if (!line) {
        if (len <= CAP)
            abort();
        eddy_buf_puts(b, "<big>");
        return;
    }
    if (len > CAP || memchr(line, '\n', len))
        abort();
    eddy_buf_append(b, line, len);
    eddy_buf_putc(b, '\0');
}

static void add_event(void *ud, const char *event, const char *d, size_t len, const char *id)
{
    eddy_buf *b = ud;
    eddy_buf_printf(b, "<%s|%s|", event, id);
    if (!d)
        eddy_buf_puts(b, "big");
    else {
        if (len > CAP)
            abort();
        eddy_buf_append(b, d, len);
    }
    eddy_buf_putc(b, '>');
}

static int same(eddy_buf *a, eddy_buf *b)
{
    return a->oom || b->oom || (a->len == b->len && (!a->len || !memcmp(a->data, b->data, a->len)));
}

static void framing(const char *p, size_t n, size_t step, int sse)
{
    eddy_buf whole, pieces;
    eddy__mcp_lines l1, l2;
    eddy__mcp_sse s1, s2;
    eddy_buf_init(&whole);
    eddy_buf_init(&pieces);
    if (!sse) {
        eddy__mcp_lines_init(&l1, CAP);
        eddy__mcp_lines_init(&l2, CAP);
        eddy__mcp_lines_feed(&l1, p, n, add_line, &whole);
        for (size_t i = 0; i < n; i += step)
            eddy__mcp_lines_feed(&l2, p + i, i + step > n ? n - i : step, add_line, &pieces);
        eddy__mcp_lines_free(&l1);
        eddy__mcp_lines_free(&l2);
    } else {
        eddy__mcp_sse_init(&s1, CAP);
        eddy__mcp_sse_init(&s2, CAP);
        eddy__mcp_sse_feed(&s1, p, n, add_event, &whole);
        for (size_t i = 0; i < n; i += step)
            eddy__mcp_sse_feed(&s2, p + i, i + step > n ? n - i : step, add_event, &pieces);
        eddy__mcp_sse_free(&s1);
        eddy__mcp_sse_free(&s2);
    }
    if (!same(&whole, &pieces))
        abort();
    eddy_buf_free(&whole);
    eddy_buf_free(&pieces);
}

static void problem(void *ud, const char *path, int key, const char *msg)
{
    (void)path;
    (void)key;
    if (!msg || !*msg)
        abort();
    (*(int *)ud)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data + 2;
    size_t n = size > 2 ? size - 2 : 0;
    json_t *v, *out = NULL;
    eddy_err e = {0};
    int rc, problems = 0;
    eddy_mcp_config *cfg = NULL;
    if (size < 2)
        return 0;
    switch (data[0] % 4) {
    case 0:
    case 1:
        framing(p, n, (size_t)(data[1] % 17) + 1, data[0] % 4);
        break;
    case 2:
        v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (!v)
            break;
        rc = eddy__mcp_result_json(v, "s/t", &out, &e);
        if ((rc == 0) != (out != NULL) ||
            (rc && rc != EDDY_ETOOL && rc != EDDY_EPARSE && rc != EDDY_ENOMEM) ||
            (rc && strncmp(e.msg, "mcp tool 's/t': ", 16)))
            abort();
        json_decref(out);
        json_decref(v);
        break;
    default:
        v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (!v)
            break;
        rc = eddy_mcp_config_new(v, problem, &problems, &cfg, &e);
        if ((rc == 0) != (cfg != NULL) || (rc == EDDY_ESCHEMA && !problems) ||
            (rc == 0 && problems) || (rc && rc != EDDY_ESCHEMA && rc != EDDY_ENOMEM))
            abort();
        eddy_mcp_config_free(cfg);
        json_decref(v);
    }
    return 0;
}
