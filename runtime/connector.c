/*
 * runtime/connector.c - sources and sinks behind one interface, and the
 * registry of connector kinds named in job files.
 *
 * A source or sink is an ops table plus its implementation; the runtime
 * only ever calls through these. The registry is filled by the program
 * before any job runs (cli registers Fluss) and only read afterwards.
 */
#include "eddy/connector.h"

#include <string.h>

#include "eddy/buf.h"

struct eddy_source {
    const eddy_source_ops *ops;
    void *impl;
};

struct eddy_sink {
    const eddy_sink_ops *ops;
    void *impl;
};

eddy_source *eddy_source_new(const eddy_source_ops *ops, void *impl)
{
    eddy_source *s = eddy_calloc(1, sizeof(*s));
    if (s) {
        s->ops = ops;
        s->impl = impl;
    }
    return s;
}

const char *eddy_source_name(const eddy_source *s)
{
    return s->ops->name(s->impl);
}

int eddy_source_next(eddy_source *s, eddy_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    return s->ops->next(s->impl, rec);
}

const char *eddy_source_id(const eddy_source *s)
{
    return s->ops->id(s->impl);
}

const char *eddy_source_part_name(const eddy_source *s, int part, char *buf, size_t n)
{
    return s->ops->part_name(s->impl, part, buf, n);
}

int eddy_source_resumable(const eddy_source *s)
{
    return !s->ops->resumable || s->ops->resumable(s->impl);
}

void eddy_source_stop(eddy_source *s)
{
    s->ops->stop(s->impl);
}

int64_t eddy_source_lag(const eddy_source *s, int *bytes)
{
    *bytes = 0;
    return s && s->ops->lag ? s->ops->lag(s->impl, bytes) : -1;
}

int eddy_source_failed(const eddy_source *s)
{
    return s && s->ops->failed ? s->ops->failed(s->impl) : 0;
}

void eddy_source_close(eddy_source *s)
{
    if (s && s->ops->close)
        s->ops->close(s->impl);
}

void eddy_source_free(eddy_source *s)
{
    if (!s)
        return;
    s->ops->free(s->impl);
    eddy_free(s);
}

eddy_sink *eddy_sink_new(const eddy_sink_ops *ops, void *impl)
{
    eddy_sink *s = eddy_calloc(1, sizeof(*s));
    if (s) {
        s->ops = ops;
        s->impl = impl;
    }
    return s;
}

int eddy_sink_write(eddy_sink *s, json_t *v, uint64_t tag, eddy_err *err)
{
    return s->ops->write(s->impl, v, tag, err);
}

long eddy_sink_count(const eddy_sink *s)
{
    return s ? s->ops->count(s->impl) : 0;
}

const char *eddy_sink_name(const eddy_sink *s)
{
    return s->ops->name(s->impl);
}

int eddy_sink_flush(eddy_sink *s, void (*cb)(void *ud), void *ud)
{
    if (!s || !s->ops->flush)
        return EDDY_ENOENT;
    return s->ops->flush(s->impl, cb, ud);
}

void eddy_sink_on_done(eddy_sink *s, eddy_sink_done_cb cb, void *ud)
{
    s->ops->on_done(s->impl, cb, ud);
}

int64_t eddy_sink_length(const eddy_sink *s)
{
    return s->ops->length ? s->ops->length(s->impl) : -1;
}

int eddy_sink_ready(eddy_sink *s, eddy_sink_ready_cb cb, void *ud)
{
    return s->ops->ready ? s->ops->ready(s->impl, cb, ud) : EDDY_ENOENT;
}

char *eddy_sink_state(eddy_sink *s)
{
    return s->ops->state ? s->ops->state(s->impl) : NULL;
}

int eddy_sink_holds(eddy_sink *s, const char *output_id)
{
    return s->ops->holds ? s->ops->holds(s->impl, output_id) : 0;
}

void eddy_sink_free(eddy_sink *s)
{
    if (!s)
        return;
    s->ops->free(s->impl);
    eddy_free(s);
}

#define MAX_KINDS 8

static struct {
    char kind[32];
    eddy_source_factory src;
    eddy_sink_factory sink;
} kinds[MAX_KINDS];
static int nkinds;

int eddy_connector_register(const char *kind, eddy_source_factory src, eddy_sink_factory sink)
{
    if (nkinds == MAX_KINDS || strlen(kind) >= sizeof(kinds[0].kind))
        return EDDY_ERANGE;
    memcpy(kinds[nkinds].kind, kind, strlen(kind) + 1);
    kinds[nkinds].src = src;
    kinds[nkinds].sink = sink;
    nkinds++;
    return 0;
}

eddy_source_factory eddy_connector_source(const char *kind)
{
    for (int i = 0; i < nkinds; i++)
        if (!strcmp(kinds[i].kind, kind))
            return kinds[i].src;
    return NULL;
}

eddy_sink_factory eddy_connector_sink(const char *kind)
{
    for (int i = 0; i < nkinds; i++)
        if (!strcmp(kinds[i].kind, kind))
            return kinds[i].sink;
    return NULL;
}
