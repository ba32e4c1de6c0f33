/*
 * trace/otlp_int.h - the OTLP/HTTP JSON exporter the trace store feeds.
 *
 * Only trace/store.c includes this. The store's writer thread hands each span
 * it keeps (the same ones it writes to SQLite) to eddy__otlp_add, which copies
 * it into a bounded queue and returns at once; the exporter's own thread
 * batches, encodes and POSTs them with blocking curl calls, retrying what the
 * OTLP specification says to retry. Nothing here ever blocks the caller on the
 * network: when the queue is full the span is dropped and counted.
 */
#ifndef EDDY_OTLP_INT_H
#define EDDY_OTLP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "eddy/buf.h"
#include "eddy/error.h"
#include "eddy/trace.h"

typedef struct eddy__otlp eddy__otlp;

/* One ended span as the store holds it; every pointer borrowed for the call. */
typedef struct eddy__otlp_span {
    const char *trace_id, *span_id; /* 32 and 16 lowercase hex digits */
    const char *parent_id;          /* 16 hex digits, or "" for a root span */
    const char *name;
    const char *error; /* NULL: the span succeeded */
    int kind;          /* EDDY_SPAN_*: OTLP's SPAN_KIND_* numbers */
    uint64_t start_ns, end_ns;
    const char *attrs; /* the attributes as one JSON object text (attrs_text) */
    size_t attrs_len;
} eddy__otlp_span;

/* The exporter's settings: OPTS' otlp_* fields, each over the environment's
 * (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, OTEL_SERVICE_NAME,
 * OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
 * OTEL_BSP_SCHEDULE_DELAY). */
typedef struct eddy__otlp_config {
    char *url;          /* NULL: nothing to export */
    char **headers;     /* "Name: value" lines, NULL-terminated; may hold secrets */
    char *service_name; /* resource service.name */
    int64_t timeout_ms; /* per POST */
    size_t max_queue;   /* spans waiting at most; beyond, dropped */
    size_t max_batch;   /* spans per POST at most */
    int64_t delay_ms;   /* how long the first span of a batch waits for company */
    int64_t flush_ms;   /* how long close waits for the queue to drain */
} eddy__otlp_config;

/* Fill C from OPTS (may be NULL) and the environment. C->url stays NULL when
 * neither names an endpoint (or OTEL_TRACES_EXPORTER is "none"). Returns 0,
 * EDDY_ENOMEM, or EDDY_EINVAL for a malformed setting (ERR names it, never a
 * header's value). Free with eddy__otlp_config_free, also after a failure. */
int eddy__otlp_config_load(const eddy_trace_opts *opts, eddy__otlp_config *c, eddy_err *err);
void eddy__otlp_config_free(eddy__otlp_config *c);

/* Start the exporter thread; takes C's contents (C is zeroed, even on
 * failure). Returns 0, or EDDY_ENOMEM / EDDY_EIO with ERR set. */
int eddy__otlp_new_take(eddy__otlp_config *c, eddy__otlp **out, eddy_err *err);
/* Queue a copy of SP for export (the store's writer thread; any thread is
 * safe). Never blocks on the network; a full queue or no memory drops the span
 * and counts it. */
void eddy__otlp_add(eddy__otlp *x, const eddy__otlp_span *sp);
/* Export what is queued, waiting at most flush_ms, drop and count the rest,
 * log the totals, stop the thread and free X. NULL-safe. */
void eddy__otlp_free(eddy__otlp *x);
/* Counters (relaxed reads); any thread while X lives. */
void eddy__otlp_stats(const eddy__otlp *x, eddy_otlp_stats *out);

/* Append the OTLP/JSON ExportTraceServiceRequest of the N spans at SPANS to
 * B. Exposed for the unit tests. Returns 0 or EDDY_ENOMEM. */
int eddy__otlp_encode(eddy_buf *b, const char *service_name, const eddy__otlp_span *const *spans,
                      size_t n);

#endif
