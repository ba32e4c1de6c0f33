/*
 * core/buf.c - the growable buffer used for all string building.
 *
 * Invariant: data is NULL (cap 0) or holds len bytes followed by a NUL.
 * A failed append sets the sticky oom flag and returns EDDY_ENOMEM, so a
 * sequence of appends can be checked once at the end.
 */
#include "eddy/buf.h"
#include "eddy/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void eddy_buf_init(eddy_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void eddy_buf_free(eddy_buf *b)
{
    eddy_free(b->data);
    eddy_buf_init(b);
}

void eddy_buf_reset(eddy_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data)
        b->data[0] = '\0';
}

int eddy_buf_reserve(eddy_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1, cap;
    char *p;
    if (b->oom)
        return EDDY_ENOMEM;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = eddy_realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return EDDY_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int eddy_buf_append(eddy_buf *b, const void *data, size_t n)
{
    if (eddy_buf_reserve(b, n))
        return EDDY_ENOMEM;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int eddy_buf_puts(eddy_buf *b, const char *s)
{
    return eddy_buf_append(b, s, strlen(s));
}

int eddy_buf_putc(eddy_buf *b, char c)
{
    return eddy_buf_append(b, &c, 1);
}

int eddy_buf_printf(eddy_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || eddy_buf_reserve(b, (size_t)n)) {
        va_end(ap2);
        return EDDY_ENOMEM;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
    return 0;
}

char *eddy_buf_take(eddy_buf *b)
{
    char *s;
    if (b->oom) {
        eddy_buf_free(b);
        return NULL;
    }
    if (!b->data && eddy_buf_reserve(b, 0))
        return NULL;
    s = b->data;
    s[b->len] = '\0';
    eddy_buf_init(b);
    return s;
}
