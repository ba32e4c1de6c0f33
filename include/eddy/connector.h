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

/* One record from a source: its text (line sources) or its event (sources
 * of structured rows, which set EVENT and leave TEXT NULL), where it came
 * from, and the token to acknowledge it with. The consumer owns TEXT,
 * EVENT and WHERE. */
typedef struct eddy_record {
    char *text;
    size_t len;
    long line;      /* 1-based line number (line sources), else 0 */
    json_t *event;  /* structured sources: the event object (new reference) */
    char *where;    /* structured sources: "db.table bucket 2 offset 17" */
    uint64_t token; /* handed back to eddy_source_ack when the record is done */
} eddy_record;

typedef struct eddy_source eddy_source;

/* What a source implements. NEXT as eddy_source_next; ACK (may be NULL)
 * learns that every run of a record has finished, so its position may be
 * committed; CLOSE (may be NULL) releases loop resources on the loop before
 * it stops; FREE after the loop has ended. */
typedef struct eddy_source_ops {
    const char *(*name)(void *impl);
    int (*next)(void *impl, eddy_record *rec);
    void (*ack)(void *impl, uint64_t token);
    void (*stop)(void *impl);
    void (*close)(void *impl);
    void (*free)(void *impl);
} eddy_source_ops;

/* Wrap IMPL (owned from now on: freed with OPS->free) as a source; NULL on OOM. */
eddy_source *eddy_source_new(const eddy_source_ops *ops, void *impl);
/* Every run started from the record with TOKEN has finished. Loop thread. */
void eddy_source_ack(eddy_source *s, uint64_t token);
/* Release the source's loop resources (on the loop, before it stops). */
void eddy_source_close(eddy_source *s);

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

/* Called on the loop when a value a sink accepted could not be delivered
 * after all (asynchronous sinks): V borrowed, REASON names the problem. */
typedef void (*eddy_sink_fail_cb)(json_t *v, const char *reason, void *ud);

/* What a sink implements. WRITE takes V (borrowed) or fails with ERR saying
 * why the value does not fit; FLUSH (may be NULL) calls CB once everything
 * accepted is delivered or failed, then releases loop resources; FAILED
 * (may be NULL) installs the asynchronous failure callback. */
typedef struct eddy_sink_ops {
    const char *(*name)(void *impl);
    int (*write)(void *impl, json_t *v, eddy_err *err);
    long (*count)(void *impl);
    int (*flush)(void *impl, void (*cb)(void *ud), void *ud);
    void (*failed)(void *impl, eddy_sink_fail_cb cb, void *ud);
    void (*free)(void *impl);
} eddy_sink_ops;

eddy_sink *eddy_sink_new(const eddy_sink_ops *ops, void *impl);
/* Deliver what is pending, then CB (on the loop). Returns 0 when CB will be
 * called, EDDY_ENOENT when the sink has nothing asynchronous (no call). */
int eddy_sink_flush(eddy_sink *s, void (*cb)(void *ud), void *ud);
void eddy_sink_on_failure(eddy_sink *s, eddy_sink_fail_cb cb, void *ud);

/* -- connectors named in job files ------------------------------------------- */

/* What a connector factory gets: the worker's loop, the job's store (for
 * positions), the notification to send when records arrive, the job folder. */
struct eddy_memory;
typedef struct eddy_connector_env {
    uv_loop_t *loop;
    struct eddy_memory *mem;
    uv_async_t *notify;
    const char *job_dir;
    size_t capacity;
} eddy_connector_env;

typedef int (*eddy_source_factory)(const json_t *cfg, const eddy_connector_env *env,
                                   eddy_source **out, eddy_err *err);
typedef int (*eddy_sink_factory)(const json_t *cfg, const eddy_connector_env *env, eddy_sink **out,
                                 eddy_err *err);
/* Register the connector KIND ("fluss"): `source: {KIND: CFG}` and
 * `sink: {KIND: CFG}` in a job open through these. Call before running. */
int eddy_connector_register(const char *kind, eddy_source_factory src, eddy_sink_factory sink);
eddy_source_factory eddy_connector_source(const char *kind);
eddy_sink_factory eddy_connector_sink(const char *kind);

/* A JSONL sink on PATH, or stdout when PATH is NULL or "-". LAZY: create the
 * file only at the first write (dead-letter files). */
int eddy_sink_open_jsonl(const char *path, int lazy, eddy_sink **out, eddy_err *err);
/* Append V (borrowed) as one line and flush. */
int eddy_sink_write(eddy_sink *s, json_t *v, eddy_err *err);
long eddy_sink_count(const eddy_sink *s);
const char *eddy_sink_name(const eddy_sink *s);
void eddy_sink_free(eddy_sink *s);

#endif
