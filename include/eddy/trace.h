/*
 * include/eddy/trace.h - spans and the trace store.
 *
 * A run is one trace; its spans (the run, each LLM call, each tool call)
 * carry OpenTelemetry-style ids (16-byte trace id, 8-byte span id, lowercase
 * hex) and attributes following the GenAI conventions. Ended spans are
 * queued to a writer thread that commits them to SQLite in batches; the
 * worker loop never waits on the disk.
 */
#ifndef EDDY_TRACE_H
#define EDDY_TRACE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "eddy/error.h"

struct eddy_buf;

typedef struct eddy_trace_store eddy_trace_store;
typedef struct eddy_span eddy_span;

enum { EDDY_SPAN_INTERNAL = 1, EDDY_SPAN_SERVER = 2, EDDY_SPAN_CLIENT = 3, EDDY_SPAN_PRODUCER = 4 };

/* How the store keeps traces (the job's `trace:` settings). */
typedef struct eddy_trace_opts {
    int64_t max_age_ms;  /* retention.max_age: older traces are deleted; 0 = kept */
    int64_t max_bytes;   /* retention.max_size: the oldest go beyond it; 0 = no bound */
    double sample;       /* share of successful runs kept (errors always are), 0..1 */
    int no_content;      /* trace.content: false: no prompts, messages, tool arguments and
                          * results, event or output text in the traces */
    int64_t max_payload; /* trace.max_payload: bytes of one text kept; 0: 16 KiB */
    /* text replaced by [REDACTED] in every text attribute: SECRETS as they are
     * (the models' API keys), REDACT as POSIX extended regular expressions
     * (trace.redact); borrowed, the store keeps copies */
    const char *const *secrets;
    size_t nsecrets;
    const char *const *redact;
    size_t nredact;
    /* OTLP/HTTP JSON export (`trace: otlp:`), each over its OTEL_EXPORTER_OTLP_*
     * variable. Owned by whoever fills the struct (eddy_job_free frees the
     * job's); eddy_trace_store_open copies what it needs. NULL / 0: the
     * environment's, else no export / 10 s. */
    char *otlp_endpoint;     /* full URL of the traces endpoint (".../v1/traces") */
    json_t *otlp_headers;    /* object: header name -> string value (may be secrets) */
    int64_t otlp_timeout_ms; /* per POST */
} eddy_trace_opts;

#define EDDY_TRACE_DEFAULT_MAX_PAYLOAD 16384

/* Counters of a store's OTLP export, in spans unless named otherwise. */
typedef struct eddy_otlp_stats {
    uint64_t exported;       /* accepted by the receiver (2xx) */
    uint64_t dropped;        /* lost: queue full, batch given up, or still queued at close */
    uint64_t failed_batches; /* POSTs given up (a 4xx, retries spent, or the close deadline) */
    uint64_t retries;        /* POSTs sent again after a retryable failure */
    uint64_t queued;         /* waiting for export now */
} eddy_otlp_stats;

#define EDDY_TRACE_DEFAULT_MAX_AGE_MS (7ll * 24 * 3600 * 1000)
#define EDDY_TRACE_DEFAULT_MAX_BYTES (1024ll << 20)
#define EDDY_TRACE_SCHEMA_VERSION 2

/* Open (create, or migrate from version 1) the store at PATH. OPTS may be
 * NULL: the defaults (7 days, 1 GiB, every run). Caller thread only. */
int eddy_trace_store_open(const char *path, const eddy_trace_opts *opts, eddy_trace_store **out,
                          eddy_err *err);
/* Bring the store at PATH (which must exist) to the current version, with
 * nothing else: no retention, no writer (`eddy trace` reading an older one). */
int eddy_trace_store_upgrade(const char *path, eddy_err *err);
/* Flush queued spans, stop the writer, close. With OTLP export, also waits
 * (at most 5 s) for queued spans to be exported; the rest are dropped and
 * counted, and the export's totals are logged (info; warn if any were lost). */
void eddy_trace_store_close(eddy_trace_store *s);
/* The OTLP export's counters into OUT (all zero when the store exports
 * nothing). Any thread, while the store is open; relaxed reads, for metrics. */
void eddy_trace_otlp_stats(const eddy_trace_store *s, eddy_otlp_stats *out);

/* Start a span. PARENT NULL starts a new trace (a root span). NAME is
 * copied. Any thread may call; a span is used by one thread at a time. */
eddy_span *eddy_span_start(eddy_trace_store *s, eddy_span *parent, const char *name, int kind);
/* Set attribute KEY to V (stolen, even on failure; the trace thread writes
 * it, so V must not be shared with anything else: pass a new value or a copy). */
void eddy_span_set(eddy_span *sp, const char *key, json_t *v);
void eddy_span_set_str(eddy_span *sp, const char *key, const char *v);
void eddy_span_set_int(eddy_span *sp, const char *key, long long v);
/* Set KEY to the JSON text TEXT (LEN bytes), written as it is: the caller
 * vouches that it is one valid JSON value (built with eddy_trace_text for
 * its strings). */
void eddy_span_set_raw(eddy_span *sp, const char *key, const char *text, size_t len);
/* Move the span's start to START_NS (a wall-clock time: eddy_wall_ns). */
void eddy_span_set_start(eddy_span *sp, uint64_t start_ns);

/* Whether S keeps content (prompts, messages, tool arguments and results);
 * 0 for a NULL store. Any thread. */
int eddy_trace_keeps_content(const eddy_trace_store *s);
/* Append TEXT (LEN bytes) to B as a JSON string, as the store keeps text:
 * secrets and trace.redact matches replaced by [REDACTED], cut at
 * max_payload bytes (at a character boundary, with a note of what was cut).
 * S may be NULL (no redaction, the default cut). Returns 0 or -1 (out of
 * memory, invalid UTF-8: B unchanged). Any thread (the patterns are only read). */
int eddy_trace_text(const eddy_trace_store *s, struct eddy_buf *b, const char *text, size_t len);
/* Mark the span failed with MSG. */
void eddy_span_error(eddy_span *sp, const char *type, const char *msg);
/* The store SP writes to (for a child span of it: eddy_span_start(
 * eddy_span_store(sp), sp, ...)); NULL-safe. */
eddy_trace_store *eddy_span_store(const eddy_span *sp);
/* Hex ids (borrowed, valid while the span lives). */
const char *eddy_span_trace_id(const eddy_span *sp);
const char *eddy_span_id(const eddy_span *sp);
/* End the span and queue it for writing; SP is freed. NULL-safe. For a
 * root span, the trace summary row is written too from SUMMARY (borrowed
 * object, may be NULL: agent, key, event_id, input_tokens, output_tokens,
 * cost, llm_calls, tool_calls, turns; "input" and "output", texts the
 * full-text search reads; "models" and "tools", arrays of names). */
void eddy_span_end(eddy_span *sp, json_t *summary);
/* Free SP without writing it (a run given up; any thread; NULL-safe). Unlike
 * eddy_span_end it does not touch the store, which may be closed already. */
void eddy_span_discard(eddy_span *sp);

/* -- metrics (Prometheus text format) ------------------------------------------
 *
 * One registry per process run. Its series: one per agent and model named
 * at creation (a name not among them counts as "(other)"), per tool as they
 * are first seen, and per worker. Updates are lock-free atomic adds: any
 * thread, no allocation, NULL-safe (no registry: nothing counted). */
typedef struct eddy_metrics eddy_metrics;

typedef struct eddy_metrics_names {
    const char *const *agents, *const *models; /* borrowed, copied */
    size_t nagents, nmodels;
} eddy_metrics_names;

typedef enum eddy_metrics_counter {
    EDDY_M_EVENTS_IN,
    EDDY_M_EVENTS_OUT,
    EDDY_M_DEAD_LETTERS,
    EDDY_M_CHECKPOINT_FAILURES,
    EDDY_M_SPANS_DROPPED,
    EDDY_M_NCOUNTERS
} eddy_metrics_counter;

/* The source's lag gauges start at -1: unknown, not rendered (a source
 * tells one of them: a table its records, a file its bytes). */
typedef enum eddy_metrics_gauge_id {
    EDDY_M_IN_FLIGHT,
    EDDY_M_SOURCE_LAG_RECORDS,
    EDDY_M_SOURCE_LAG_BYTES,
    EDDY_M_NGAUGES
} eddy_metrics_gauge_id;

typedef struct eddy_metrics_llm_call {
    int ok, replayed, retries;
    long input_tokens, output_tokens, cached_tokens;
    double cost, seconds, wait_seconds;
} eddy_metrics_llm_call;

/* NULL when out of memory. */
eddy_metrics *eddy_metrics_new(const eddy_metrics_names *names, int nworkers);
void eddy_metrics_free(eddy_metrics *m);
/* The slot of NAME (pass it to the updates). A tool's name is added when it
 * is first seen (256 at most; then "(other)"). */
int eddy_metrics_agent_id(const eddy_metrics *m, const char *name);
int eddy_metrics_model_id(const eddy_metrics *m, const char *name);
int eddy_metrics_tool_id(eddy_metrics *m, const char *name);
void eddy_metrics_count(eddy_metrics *m, eddy_metrics_counter c, long n);
void eddy_metrics_gauge(eddy_metrics *m, eddy_metrics_gauge_id g, long v);
void eddy_metrics_worker(eddy_metrics *m, int worker, long queued);
void eddy_metrics_worker_run(eddy_metrics *m, int worker);
void eddy_metrics_run(eddy_metrics *m, int agent, int ok, double seconds);
void eddy_metrics_llm(eddy_metrics *m, int model, const eddy_metrics_llm_call *call);
void eddy_metrics_tool(eddy_metrics *m, int tool, int ok, int replayed, double seconds);
void eddy_metrics_checkpoint(eddy_metrics *m, double seconds);
/* Append every series to B in the text format 0.0.4. Any thread. Returns 0
 * or EDDY_ENOMEM (B's content then incomplete). */
int eddy_metrics_render(const eddy_metrics *m, struct eddy_buf *b);

/* -- the HTTP server (dashboard, metrics, the traces as JSON) ------------------ */
typedef struct eddy_http eddy_http;

typedef struct eddy_http_opts {
    const char *listen;             /* HOST:PORT ("127.0.0.1:8765"; port 0: any free one) */
    const char *token;              /* bearer token; required when HOST is not loopback */
    const char *trace_path;         /* the trace store it serves; NULL: none */
    eddy_metrics *metrics;          /* served at /metrics; NULL: none (borrowed: outlives it) */
    const char *state_path;         /* the job's store, read for /api/key (a key's memory and
                                     * history); NULL: none */
    const eddy_trace_store *traces; /* its OTLP export's counters join /metrics; NULL: none
                                     * (borrowed: open until eddy_http_stop) */
} eddy_http_opts;

/* Start serving on a thread of its own (read-only: GET and HEAD). Returns 0,
 * or EDDY_EINVAL (a bad address; not loopback without a token of at least
 * 16 characters), EDDY_EIO (cannot listen), EDDY_ENOMEM; with ERR. */
int eddy_http_start(const eddy_http_opts *o, eddy_http **out, eddy_err *err);
/* "http://IP:PORT/" as bound (the port chosen when 0 was asked). */
const char *eddy_http_url(const eddy_http *h);
/* Stop (waits for requests being answered) and free. NULL-safe. */
void eddy_http_stop(eddy_http *h);

/* -- reading (the CLI, the dashboard; any thread, own connection) ---------- */

/* Which runs eddy_trace_query returns. Every field set narrows the result
 * (they combine with AND); a zeroed filter is the newest
 * EDDY_TRACE_QUERY_LIMIT runs. Strings are borrowed for the call and only
 * ever bound as values, never read as SQL or as patterns. */
typedef struct eddy_trace_filter {
    const char *agent, *key, *event_id; /* equal to it; NULL: any */
    const char *status;                 /* "ok" or "error" (else EDDY_EINVAL); NULL: any */
    const char *model, *tool;           /* one of the models / tools the run used */
    /* Words that must all be in the run's input or output (its event and its
     * answer), any case, accents folded. The text is split at white space
     * and each part searched as a quoted phrase: nothing in it is an FTS5
     * operator, so no text is a syntax error (see eddy_trace_fts_query). */
    const char *search;
    int64_t since_ns, until_ns;               /* started in [since, until); 0: unbounded */
    int64_t min_duration_ns, max_duration_ns; /* end - start within; 0: unbounded */
    int64_t min_tokens;                       /* input + output tokens at least; 0: any */
    int limit;        /* rows at most, 1..EDDY_TRACE_QUERY_MAX; 0: EDDY_TRACE_QUERY_LIMIT */
    int oldest_first; /* order by start time ascending; else newest first */
    /* Cursor: rows after the one with this start_ns and id in the order (the
     * last row of the previous page); after_id 0: from the first row. */
    int64_t after_start_ns, after_id;
    /* Rows stored after the one with this id (ids grow as runs are stored),
     * then in id order (oldest_first does not apply); 0: any.
     * The live tail's cursor. */
    int64_t above_id;
} eddy_trace_filter;

#define EDDY_TRACE_QUERY_LIMIT 20
#define EDDY_TRACE_QUERY_MAX 1000000

/* The runs of the store at PATH that F selects (F NULL: the default), in
 * start-time order (ties by id), as *ROWS, a new array of objects: id,
 * trace_id, name, agent, key, event_id, status, error (null when none),
 * start_ns, end_ns, duration_ms, input_tokens, output_tokens, cost (null
 * when unpriced), llm_calls, tool_calls, turns, models and tools (arrays of
 * names). Not the input and output texts, nor the spans
 * (eddy_trace_get_json). Returns 0; EDDY_EINVAL for a bad filter value,
 * EDDY_ENOENT when PATH cannot be opened, EDDY_ESQLITE, EDDY_ENOMEM; with
 * ERR set and *ROWS NULL. Any thread: each call opens its own read-only
 * connection (a running job may be writing). */
int eddy_trace_query(const char *path, const eddy_trace_filter *f, json_t **rows, eddy_err *err);
/* The FTS5 query eddy_trace_query runs for TEXT: each white-space separated
 * part as a quoted phrase (a '"' doubled), joined by spaces (AND). A part
 * with no letter or digit is dropped (the tokenizer keeps nothing of it);
 * "" when none is left, which matches no run. New string, NULL when out of
 * memory. */
char *eddy_trace_fts_query(const char *text);

/* Print the runs F selects (the newest F->limit, oldest first; F NULL: the
 * default), one line each, to OUT; columns are cut and padded by
 * characters, never inside one. Returns as eddy_trace_query. */
int eddy_trace_print_list(const char *path, const eddy_trace_filter *f, FILE *out, eddy_err *err);
/* Print the span tree of trace ID (or a unique prefix of it) to OUT. */
int eddy_trace_print_show(const char *path, const char *id, FILE *out, eddy_err *err);
/* Whole trace as JSON {trace, spans}; new reference. */
int eddy_trace_get_json(const char *path, const char *id, json_t **out, eddy_err *err);

#endif
