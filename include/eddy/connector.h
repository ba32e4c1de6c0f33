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
 * from, and its position. A source has one or more parts (a file: one; a
 * Fluss table: one per bucket); records of one part come in position order.
 * POS is the record's position in PART, NEXT the position after it (where
 * a restart resumes once the record is handled), LINE its 1-based line
 * number (line sources, else 0), FP a fingerprint of the input just before
 * NEXT (line sources; 0 when none). The consumer owns TEXT, EVENT, WHERE. */
typedef struct eddy_record {
    char *text;
    size_t len;
    long line;
    json_t *event; /* structured sources: the event object (new reference) */
    char *where;   /* structured sources: "db.table bucket 2 offset 17" */
    int part;
    int64_t pos, next, fp;
    int64_t fp_before; /* line sources: the fingerprint of the input just before POS */
} eddy_record;

typedef struct eddy_source eddy_source;

/* What a source implements. NEXT as eddy_source_next; ID names the source
 * in the store ("jsonl:/abs/events.jsonl", "fluss:db.table"); PART_NAME the
 * part ("file", "bucket 3"); RESUMABLE (may be NULL = yes) whether its
 * positions mean anything to a later process (not for a pipe); CLOSE (may
 * be NULL) releases loop resources on the loop before it stops; FREE after
 * the loop has ended; FAILED (may be NULL = never) as eddy_source_failed. */
typedef struct eddy_source_ops {
    const char *(*name)(void *impl);
    const char *(*id)(void *impl);
    const char *(*part_name)(void *impl, int part, char *buf, size_t n);
    int (*resumable)(void *impl);
    int (*next)(void *impl, eddy_record *rec);
    void (*stop)(void *impl);
    void (*close)(void *impl);
    void (*free)(void *impl);
    int (*failed)(void *impl);
    /* (may be NULL = unknown) as eddy_source_lag */
    int64_t (*lag)(void *impl, int *bytes);
} eddy_source_ops;

/* Wrap IMPL (owned from now on: freed with OPS->free) as a source; NULL on OOM. */
eddy_source *eddy_source_new(const eddy_source_ops *ops, void *impl);
/* Release the source's loop resources (on the loop, before it stops). */
void eddy_source_close(eddy_source *s);

/* Open PATH ("-" = stdin). A file is read by a reader thread; a pipe or a
 * terminal on stdin is read on LOOP (a thread blocked in read(2) could not
 * be joined). NOTIFY is sent on the consumer's loop whenever records (or the
 * end) arrive; CAPACITY bounds the queue. RESUME (may be NULL): the stored
 * position of the file ({"pos", "line", "fp"}); reading resumes there when
 * the bytes before it are still those it was taken after, else from the top
 * with a warning. */
int eddy_source_open_jsonl(const char *path, size_t capacity, uv_loop_t *loop, uv_async_t *notify,
                           const json_t *resume, eddy_source **out, eddy_err *err);
/* Name for messages and event ids ("events.jsonl", "stdin"). */
const char *eddy_source_name(const eddy_source *s);
const char *eddy_source_id(const eddy_source *s);
/* The name of PART into BUF ("file", "bucket 3"); BUF returned. */
const char *eddy_source_part_name(const eddy_source *s, int part, char *buf, size_t n);
int eddy_source_resumable(const eddy_source *s);
/* Take the next record into *REC (caller frees rec->text). Returns 1 when a
 * record was taken, 0 when none is queued now, -1 at the end of input. */
int eddy_source_next(eddy_source *s, eddy_record *rec);
/* Stop reading; records already queued stay readable. */
void eddy_source_stop(eddy_source *s);
/* 0, or the error (an EDDY_E* code, already logged) that ended the input
 * before its end: what was read stays good, the rest was not read. */
int eddy_source_failed(const eddy_source *s);
/* How far the engine is behind the source: records not yet taken (a table:
 * its buckets' high watermarks minus what was taken), or with *BYTES set to
 * 1, bytes of a file not yet taken; -1 when it cannot tell (a pipe). The
 * consumer's thread. */
int64_t eddy_source_lag(const eddy_source *s, int *bytes);
/* Free (joins the reader). After the loop ended. */
void eddy_source_free(eddy_source *s);

typedef struct eddy_sink eddy_sink;

/* Called on the loop, exactly once for every value a sink accepted (never
 * inside the write): STATUS 0 when it is delivered (written and flushed; a
 * server acknowledged it), else why it is not (REASON). END: for a file,
 * its length after the value (what a checkpoint records), else 0. */
typedef void (*eddy_sink_done_cb)(uint64_t tag, int status, const char *reason, int64_t end,
                                  void *ud);

/* Called on the loop, once, when a sink can take values (STATUS 0) or
 * never will / cannot be used by this job (STATUS an error, MSG saying why
 * and what to do). */
typedef void (*eddy_sink_ready_cb)(int status, const char *msg, void *ud);

/* What a sink implements. WRITE takes V (borrowed) with TAG, or fails with
 * ERR saying why the value does not fit (then DONE is not called for it);
 * FLUSH (may be NULL) calls CB once everything accepted is delivered or
 * failed, then releases loop resources; ON_DONE installs the callback;
 * LENGTH (may be NULL) is a file's length now. The rest may be NULL:
 * READY as eddy_sink_ready, STATE as eddy_sink_state, HOLDS as
 * eddy_sink_holds. */
typedef struct eddy_sink_ops {
    const char *(*name)(void *impl);
    int (*write)(void *impl, json_t *v, uint64_t tag, eddy_err *err);
    long (*count)(void *impl);
    int (*flush)(void *impl, void (*cb)(void *ud), void *ud);
    void (*on_done)(void *impl, eddy_sink_done_cb cb, void *ud);
    int64_t (*length)(void *impl);
    void (*free)(void *impl);
    int (*ready)(void *impl, eddy_sink_ready_cb cb, void *ud);
    char *(*state)(void *impl);
    int (*holds)(void *impl, const char *output_id);
} eddy_sink_ops;

eddy_sink *eddy_sink_new(const eddy_sink_ops *ops, void *impl);
/* Deliver what is pending, then CB (on the loop). Returns 0 when CB will be
 * called, EDDY_ENOENT when the sink has nothing asynchronous (no call). */
int eddy_sink_flush(eddy_sink *s, void (*cb)(void *ud), void *ud);
void eddy_sink_on_done(eddy_sink *s, eddy_sink_done_cb cb, void *ud);
/* A file sink's length, or -1. */
int64_t eddy_sink_length(const eddy_sink *s);
/* Ask for CB once the sink may take values: a sink that opens
 * asynchronously (a Fluss table: its metadata), or that must first learn
 * what an earlier process delivered (a Fluss log table with exactly_once
 * reads its own log from the last checkpoint's offsets), calls it when it
 * can, or with why it never will. Returns 0 when CB will be called (never
 * inside this call), EDDY_ENOENT when the sink is ready now or can only
 * fail value by value (no call). Before the first write; the loop's
 * thread. */
int eddy_sink_ready(eddy_sink *s, eddy_sink_ready_cb cb, void *ud);
/* What a checkpoint keeps for the sink besides a file's length, as JSON
 * text (new string: the caller frees it), or NULL when nothing. It covers
 * exactly the values whose delivery was reported so far. */
char *eddy_sink_state(eddy_sink *s);
/* Whether the sink already holds the output named OUTPUT_ID, delivered by
 * an earlier process after the last checkpoint (found by
 * eddy_sink_ready); such a value, when written, is reported delivered and
 * not written again. */
int eddy_sink_holds(eddy_sink *s, const char *output_id);

/* -- connectors named in job files ------------------------------------------- */

/* What a connector factory gets: the controller's loop, the notification
 * to send when records arrive, the job folder, the queue capacity, the
 * stored positions of every source ({SOURCE_ID: {PART: {"pos", ...}}},
 * borrowed, never NULL): a source resumes from its own; the stored sink
 * commits ({SINK: {"length", "count", "state"?}}, borrowed, never NULL;
 * empty after --from-start) and whether the job asks for exactly_once. */
typedef struct eddy_connector_env {
    uv_loop_t *loop;
    uv_async_t *notify;
    const char *job_dir;
    size_t capacity;
    const json_t *positions;
    const json_t *sinks;
    int exactly_once;
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

/* A JSONL sink on PATH, or stdout when PATH is NULL or "-", written by a
 * writer thread (the loop never waits on the file); deliveries are reported
 * on LOOP. LAZY: create the file (and its folders) only at the first write
 * (dead-letter files). TRUNCATE >= 0: cut the file back to that length first
 * (exactly-once delivery after a crash: what followed the last committed
 * checkpoint is written again); -1 leaves it. */
int eddy_sink_open_jsonl(const char *path, int lazy, int64_t truncate, uv_loop_t *loop,
                         eddy_sink **out, eddy_err *err);
/* Queue V (borrowed) as one line with TAG: see eddy_sink_done_cb. */
int eddy_sink_write(eddy_sink *s, json_t *v, uint64_t tag, eddy_err *err);
long eddy_sink_count(const eddy_sink *s);
const char *eddy_sink_name(const eddy_sink *s);
void eddy_sink_free(eddy_sink *s);

#endif
