/*
 * runtime/jsonl.c - the JSONL source (file or stdin) and JSONL sinks.
 *
 * The source's reader thread reads lines with getline and appends them to a
 * bounded FIFO; when full it waits on a condition variable (backpressure).
 * The consumer takes records on its loop after the uv_async_t notification.
 * Sinks write one compact JSON document per line and flush, so a consumer
 * tailing the file sees every finished output at once. A lazy sink (the
 * dead letters) creates its file, and the folders above it, at its first
 * record. When the reader of stdout goes away (EPIPE: `eddy run --output - |
 * head`), the stdout sink ends the job as a SIGTERM would, when someone
 * handles SIGTERM (the worker does): no new events are read, running ones
 * finish, and their outputs, with nowhere to go, are dropped without a
 * message each: one warning at the end counts them. A UTF-8 byte order mark
 * at the start of the input is not part of its first line.
 */
#include "eddy/connector.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "eddy/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct node {
    eddy_record rec;
    struct node *next;
} node;

typedef struct jsonl_src {
    FILE *f;
    char *name;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t not_full;
    node *head, *tail;
    size_t n, cap;
    int stop, eof, finished;
    uv_async_t *notify;
} jsonl_src;

static void *reader(void *arg)
{
    jsonl_src *s = arg;
    char *line = NULL;
    size_t lcap = 0;
    long lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, s->f)) >= 0) {
        node *nd = eddy_calloc(1, sizeof(*nd));
        const char *start = line;
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (lineno == 1 && got >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {
            start += 3; /* editors on Windows write one; it is not JSON */
            got -= 3;
        }
        if (nd && !(nd->rec.text = eddy_strndup(start, (size_t)got))) {
            eddy_free(nd);
            nd = NULL;
        }
        if (nd) {
            nd->rec.len = (size_t)got;
            nd->rec.line = lineno;
        }
        pthread_mutex_lock(&s->mu);
        while (s->n >= s->cap && !s->stop)
            pthread_cond_wait(&s->not_full, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            if (nd)
                eddy_free(nd->rec.text);
            eddy_free(nd);
            break;
        }
        if (nd) { /* out of memory loses nothing silently: the line number gap shows */
            if (s->tail)
                s->tail->next = nd;
            else
                s->head = nd;
            s->tail = nd;
            s->n++;
        }
        pthread_mutex_unlock(&s->mu);
        uv_async_send(s->notify);
    }
    free(line); /* getline allocates with malloc */
    pthread_mutex_lock(&s->mu);
    s->eof = 1;
    s->finished = 1;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(s->notify);
    return NULL;
}

static const char *src_name(void *impl);
static int src_next(void *impl, eddy_record *rec);
static void src_stop(void *impl);
static void src_free(void *impl);
static const eddy_source_ops kJsonlSource = {src_name, src_next, NULL, src_stop, NULL, src_free};

int eddy_source_open_jsonl(const char *path, size_t capacity, uv_async_t *notify, eddy_source **out,
                           eddy_err *err)
{
    jsonl_src *s = eddy_calloc(1, sizeof(*s));
    int is_stdin = !strcmp(path, "-");
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->f = is_stdin ? stdin : fopen(path, "r");
    if (!s->f) {
        int e = errno;
        eddy_free(s);
        return eddy_err_setc(err, e == ENOENT ? EDDY_ENOENT : EDDY_EIO, e,
                             "%s: cannot open the input: %s", path, strerror(e));
    }
    s->name = eddy_strdup(is_stdin ? "stdin" : path);
    s->cap = capacity ? capacity : 1024;
    s->notify = notify;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->not_full, NULL);
    if (pthread_create(&s->thread, NULL, reader, s)) {
        if (!is_stdin)
            fclose(s->f);
        eddy_free(s->name);
        eddy_free(s);
        return eddy_err_set(err, EDDY_EIO, "cannot start the reader thread");
    }
    if (!(*out = eddy_source_new(&kJsonlSource, s))) {
        src_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

static const char *src_name(void *impl)
{
    return ((jsonl_src *)impl)->name;
}

static int src_next(void *impl, eddy_record *rec)
{
    jsonl_src *s = impl;
    node *nd;
    int r;
    pthread_mutex_lock(&s->mu);
    nd = s->head;
    if (nd) {
        s->head = nd->next;
        if (!s->head)
            s->tail = NULL;
        s->n--;
        pthread_cond_signal(&s->not_full);
        *rec = nd->rec;
        r = 1;
    } else {
        r = s->eof || s->stop ? -1 : 0;
    }
    pthread_mutex_unlock(&s->mu);
    eddy_free(nd);
    return r;
}

static void src_stop(void *impl)
{
    jsonl_src *s = impl;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->not_full);
    pthread_mutex_unlock(&s->mu);
}

static void src_free(void *impl)
{
    jsonl_src *s = impl;
    int finished;
    src_stop(s);
    pthread_mutex_lock(&s->mu);
    finished = s->finished;
    pthread_mutex_unlock(&s->mu);
    if (!finished && s->f == stdin) {
        /* blocked in a read of a pipe or terminal: let it die with the
         * process rather than wait; its memory stays reachable by it */
        pthread_detach(s->thread);
        return;
    }
    pthread_join(s->thread, NULL);
    while (s->head) {
        node *nd = s->head;
        s->head = nd->next;
        eddy_free(nd->rec.text);
        eddy_free(nd);
    }
    if (s->f != stdin)
        fclose(s->f);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->not_full);
    eddy_free(s->name);
    eddy_free(s);
}

static void base64(eddy_buf *b, const unsigned char *s, size_t n)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {digits[v >> 18 & 63], digits[v >> 12 & 63],
                     i + 1 < n ? digits[v >> 6 & 63] : '=', i + 2 < n ? digits[v & 63] : '='};
        eddy_buf_append(b, q, 4);
    }
}

#define RAW_MAX 65536 /* bytes of a line kept in its dead letter */

int eddy_jsonl_raw_fields(json_t *d, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = len > RAW_MAX ? RAW_MAX : len, i = 0, k;
    int bad = 0, rc = 0;
    eddy_buf raw, b64;
    eddy_buf_init(&raw);
    eddy_buf_init(&b64);
    while (i < n) {
        if ((k = eddy_utf8_seq_len((const char *)s + i, len - i)) == 0) {
            eddy_buf_append(&raw, "\xEF\xBF\xBD", 3); /* U+FFFD for each byte that is not UTF-8 */
            bad = 1;
            i++;
        } else {
            eddy_buf_append(&raw, s + i, k); /* a character across the cut is kept whole */
            i += k;
        }
    }
    if (bad)
        base64(&b64, s, n);
    if (raw.oom || b64.oom ||
        json_object_set_new(d, "raw", json_stringn(raw.data ? raw.data : "", raw.len)) ||
        (bad && json_object_set_new(d, "raw_base64", json_stringn(b64.data, b64.len))) ||
        (len > i && json_object_set_new(d, "raw_truncated", json_true())))
        rc = EDDY_ENOMEM;
    eddy_buf_free(&raw);
    eddy_buf_free(&b64);
    return rc;
}

typedef struct jsonl_sink {
    FILE *f;
    char *path;
    long count;
    long dropped; /* outputs written after the reader of stdout went away */
    int is_stdout, lazy, closed;
} jsonl_sink;

static const char *sink_name(void *impl);
static int sink_write(void *impl, json_t *v, eddy_err *err);
static long sink_count(void *impl);
static void sink_free(void *impl);
static const eddy_sink_ops kJsonlSink = {sink_name, sink_write, sink_count, NULL, NULL, sink_free};

int eddy_sink_open_jsonl(const char *path, int lazy, eddy_sink **out, eddy_err *err)
{
    jsonl_sink *s = eddy_calloc(1, sizeof(*s));
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->is_stdout = !path || !strcmp(path, "-");
    s->lazy = lazy;
    s->path = eddy_strdup(s->is_stdout ? "stdout" : path);
    if (s->is_stdout)
        s->f = stdout;
    else if (!lazy && !(s->f = fopen(path, "a"))) {
        int e = errno;
        eddy_free(s->path);
        eddy_free(s);
        return eddy_err_setc(err, EDDY_EIO, e, "%s: cannot open for writing: %s", path,
                             strerror(e));
    }
    if (!(*out = eddy_sink_new(&kJsonlSink, s))) {
        sink_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

/* The reader of stdout has gone: every write from now on is dropped and
 * answered EDDY_ECLOSING, which tells the caller to stop the job. */
static int stdout_closed(jsonl_sink *s, eddy_err *err)
{
    if (!s->closed)
        clearerr(s->f);
    s->closed = 1;
    s->dropped++;
    return eddy_err_set(err, EDDY_ECLOSING, "stdout was closed by its reader");
}

static int sink_write(void *impl, json_t *v, eddy_err *err)
{
    jsonl_sink *s = impl;
    char *text;
    int e;
    if (s->closed)
        return stdout_closed(s, err);
    if (!s->f && s->lazy && (e = eddy_mkdirs_for(s->path, err)))
        return e; /* the default folder need not exist yet: the stores may be elsewhere */
    if (!s->f && !(s->f = fopen(s->path, "a")))
        return eddy_err_setc(err, EDDY_EIO, errno, "%s: cannot open for writing: %s", s->path,
                             strerror(errno));
    text = eddy_json_dumps(v);
    if (!text)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (fputs(text, s->f) < 0 || fputc('\n', s->f) < 0 || fflush(s->f)) {
        e = errno;
        eddy_free(text);
        if (e == EPIPE && s->is_stdout)
            return stdout_closed(s, err);
        return eddy_err_setc(err, EDDY_EIO, e, "%s: write failed: %s", s->path, strerror(e));
    }
    eddy_free(text);
    s->count++;
    return 0;
}

static long sink_count(void *impl)
{
    return ((jsonl_sink *)impl)->count;
}

static const char *sink_name(void *impl)
{
    return ((jsonl_sink *)impl)->path;
}

static void sink_free(void *impl)
{
    jsonl_sink *s = impl;
    if (s->dropped) /* a warning: --quiet must not hide that outputs were lost */
        EDDY_WARN("jsonl", "stdout was closed by its reader: %ld output(s) not written",
                  s->dropped);
    if (s->f && !s->is_stdout)
        fclose(s->f);
    eddy_free(s->path);
    eddy_free(s);
}
