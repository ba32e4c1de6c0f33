/*
 * core/error.c - the error table and eddy_err helpers.
 *
 * Codes, names and descriptions all come from EDDY_ERRNO_MAP, so they cannot
 * drift apart. Nothing here allocates.
 */
#include "eddy/error.h"

#include <stdio.h>
#include <string.h>

const char *eddy_strerror(int code)
{
    switch (code) {
    case EDDY_OK:
        return "success";
#define X(name, val, desc)                                                                         \
    case EDDY_##name:                                                                              \
        return desc;
        EDDY_ERRNO_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *eddy_err_name(int code)
{
    switch (code) {
    case EDDY_OK:
        return "EDDY_OK";
#define X(name, val, desc)                                                                         \
    case EDDY_##name:                                                                              \
        return "EDDY_" #name;
        EDDY_ERRNO_MAP(X)
#undef X
    default:
        return "EDDY_EUNKNOWN";
    }
}

static int err_vset(eddy_err *err, int code, long cause, const char *fmt, va_list ap)
{
    if (!err)
        return code;
    err->code = code;
    err->cause = cause;
    if (fmt)
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    else
        snprintf(err->msg, sizeof(err->msg), "%s", eddy_strerror(code));
    return code;
}

int eddy_err_set(eddy_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int eddy_err_setc(eddy_err *err, int code, long cause, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, cause, fmt, ap);
    va_end(ap);
    return code;
}

void eddy_err_prefix(eddy_err *err, const char *fmt, ...)
{
    char pre[256];
    size_t np, nold;
    va_list ap;
    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    np = strlen(pre);
    nold = strnlen(err->msg, sizeof(err->msg) - 1);
    if (np + nold >= sizeof(err->msg))
        nold = sizeof(err->msg) - 1 - np;
    memmove(err->msg + np, err->msg, nold);
    memcpy(err->msg, pre, np);
    err->msg[np + nold] = '\0';
}

void eddy_err_clear(eddy_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->cause = 0;
    err->msg[0] = '\0';
}
