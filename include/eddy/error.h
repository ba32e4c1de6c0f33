/*
 * include/eddy/error.h - error codes and the eddy_err detail record.
 *
 * Every fallible function returns 0 or a negative EDDY_E* code. Detail for a
 * human (and the foreign code from curl, SQLite, libuv, Lua) goes into an
 * optional eddy_err owned by the caller. There is no global last-error.
 */
#ifndef EDDY_ERROR_H
#define EDDY_ERROR_H

#include <stdarg.h>

/* X(name, value, description): the one table of error codes. */
#define EDDY_ERRNO_MAP(X)                                                                          \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(EIO, -3, "input/output error")                                                               \
    X(ENOENT, -4, "not found")                                                                     \
    X(EPARSE, -5, "parse error")                                                                   \
    X(ESCHEMA, -6, "does not match schema")                                                        \
    X(ETIMEDOUT, -7, "timed out")                                                                  \
    X(ECANCELED, -8, "canceled")                                                                   \
    X(ECLOSING, -9, "closing")                                                                     \
    X(EHTTP, -10, "HTTP error")                                                                    \
    X(ELUA, -11, "Lua error")                                                                      \
    X(ESQLITE, -12, "SQLite error")                                                                \
    X(EBUDGET, -13, "budget exceeded")                                                             \
    X(ETOOL, -14, "tool error")                                                                    \
    X(ELLM, -15, "LLM error")                                                                      \
    X(EEXIST, -16, "already exists")                                                               \
    X(ERANGE, -17, "out of range")                                                                 \
    X(EUV, -18, "event loop error")                                                                \
    X(ENET, -19, "network error")                                                                  \
    X(ETEMPLATE, -20, "template error")                                                            \
    X(EFLUSS, -21, "Fluss server error")                                                           \
    X(ECORRUPT, -22, "corrupt data")

enum {
    EDDY_OK = 0,
#define EDDY__ERR_ENUM(name, val, desc) EDDY_##name = (val),
    EDDY_ERRNO_MAP(EDDY__ERR_ENUM)
#undef EDDY__ERR_ENUM
};

#define EDDY_ERR_MSG_MAX 1024

/* Detail of a failure: CODE is an EDDY_E* value, CAUSE the foreign code
 * (curl, SQLite, libuv, Lua status, HTTP status) or 0, MSG a sentence for a
 * human that names the place (file:line:col, event id, tool name). */
typedef struct eddy_err {
    int code;
    long cause;
    char msg[EDDY_ERR_MSG_MAX];
} eddy_err;

/* Description of CODE ("out of memory"); never NULL. */
const char *eddy_strerror(int code);

/* Symbolic name of CODE ("EDDY_ENOMEM"); never NULL. */
const char *eddy_err_name(int code);

/* Fill ERR (may be NULL) with CODE and a formatted message; returns CODE. */
int eddy_err_set(eddy_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same as eddy_err_set with a foreign CAUSE code. */
int eddy_err_setc(eddy_err *err, int code, long cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix ERR's message with a formatted context ("job.yaml: " + msg). */
void eddy_err_prefix(eddy_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset ERR (may be NULL) to "no error". */
void eddy_err_clear(eddy_err *err);

#endif
