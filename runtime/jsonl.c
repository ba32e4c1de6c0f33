/*
 * runtime/jsonl.c - the JSONL source (file or stdin) and JSONL sinks.
 *
 * The source's reader thread reads lines with getline and appends them to a
 * bounded FIFO; when full it waits on a condition variable (backpressure).
 * The consumer takes records on its loop after the uv_async_t notification.
 * Sinks write one compact JSON document per line and flush, so a consumer
 * tailing the file sees every finished output at once.
 */
#include "eddy/connector.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct node {
    eddy_record rec;
    struct node *next;
} node;

struct eddy_source {
    FILE *f;
    char *name;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t not_full;
    node *head, *tail;
    size_t n, cap;
    int stop, eof, finished;
    uv_async_t *notify;
};

static void *reader(void *arg)
{
    eddy_source *s = arg;
    char *line = NULL;
    size_t lcap = 0;
    long lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, s->f)) >= 0) {
        node *nd = eddy_calloc(1, sizeof(*nd));
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (nd && !(nd->rec.text = eddy_strndup(line, (size_t)got))) {
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

int eddy_source_open_jsonl(const char *path, size_t capacity, uv_async_t *notify, eddy_source **out,
                           eddy_err *err)
{
    eddy_source *s = eddy_calloc(1, sizeof(*s));
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
    *out = s;
    return 0;
}

const char *eddy_source_name(const eddy_source *s)
{
    return s->name;
}

int eddy_source_next(eddy_source *s, eddy_record *rec)
{
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

void eddy_source_stop(eddy_source *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->not_full);
    pthread_mutex_unlock(&s->mu);
}

void eddy_source_free(eddy_source *s)
{
    int finished;
    if (!s)
        return;
    eddy_source_stop(s);
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

struct eddy_sink {
    FILE *f;
    char *path;
    long count;
    int is_stdout;
};

int eddy_sink_open_jsonl(const char *path, int lazy, eddy_sink **out, eddy_err *err)
{
    eddy_sink *s = eddy_calloc(1, sizeof(*s));
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->is_stdout = !path || !strcmp(path, "-");
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
    *out = s;
    return 0;
}

int eddy_sink_write(eddy_sink *s, json_t *v, eddy_err *err)
{
    char *text;
    if (!s->f && !(s->f = fopen(s->path, "a")))
        return eddy_err_setc(err, EDDY_EIO, errno, "%s: cannot open for writing: %s", s->path,
                             strerror(errno));
    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (fputs(text, s->f) < 0 || fputc('\n', s->f) < 0 || fflush(s->f)) {
        eddy_free(text);
        return eddy_err_setc(err, EDDY_EIO, errno, "%s: write failed: %s", s->path,
                             strerror(errno));
    }
    eddy_free(text);
    s->count++;
    return 0;
}

long eddy_sink_count(const eddy_sink *s)
{
    return s ? s->count : 0;
}

const char *eddy_sink_name(const eddy_sink *s)
{
    return s->path;
}

void eddy_sink_free(eddy_sink *s)
{
    if (!s)
        return;
    if (s->f && !s->is_stdout)
        fclose(s->f);
    eddy_free(s->path);
    eddy_free(s);
}
