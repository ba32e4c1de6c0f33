/*
 * include/eddy/connector.h - sources and sinks.
 *
 * A source reads events on its own thread and hands them to a worker loop
 * through a bounded queue: when the queue is full the reader waits
 * (backpressure), it never drops. A sink writes one JSON object per line.
 * This version has the JSONL file/stdin source and JSONL file/stdout sinks.
 */
#ifndef EDDY_CONNECTOR_H
#define EDDY_CONNECTOR_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "eddy/error.h"

/* One raw record from a source: its text and where it came from. */
typedef struct eddy_record {
    char *text;
    size_t len;
    long line; /* 1-based line number in the source */
} eddy_record;

typedef struct eddy_source eddy_source;

/* Open PATH ("-" = stdin) and start its reader thread. NOTIFY is sent on the
 * consumer's loop whenever records (or the end) arrive. CAPACITY bounds the
 * queue. */
int eddy_source_open_jsonl(const char *path, size_t capacity, uv_async_t *notify, eddy_source **out,
                           eddy_err *err);
/* Name for messages and event ids ("events.jsonl", "stdin"). */
const char *eddy_source_name(const eddy_source *s);
/* Take the next record into *REC (caller frees rec->text). Returns 1 when a
 * record was taken, 0 when none is queued now, -1 at the end of input. */
int eddy_source_next(eddy_source *s, eddy_record *rec);
/* Stop reading; records already queued stay readable. */
void eddy_source_stop(eddy_source *s);
/* Free (joins the reader, or detaches it when it is blocked on a pipe). */
void eddy_source_free(eddy_source *s);

typedef struct eddy_sink eddy_sink;

/* A JSONL sink on PATH, or stdout when PATH is NULL or "-". LAZY: create the
 * file only at the first write (dead-letter files). */
int eddy_sink_open_jsonl(const char *path, int lazy, eddy_sink **out, eddy_err *err);
/* Append V (borrowed) as one line and flush. */
int eddy_sink_write(eddy_sink *s, json_t *v, eddy_err *err);
long eddy_sink_count(const eddy_sink *s);
const char *eddy_sink_name(const eddy_sink *s);
void eddy_sink_free(eddy_sink *s);

#endif
