/*
 * include/eddy/memory.h - durable per-key memory on SQLite.
 *
 * Per (agent, key): a JSON document that tools read and write, and the
 * conversation history (the messages of the last N runs). Writes go to one
 * persistence thread that owns the writing connection and commits batches;
 * its acknowledgement comes back on the caller's loop. Reads use a second,
 * read-only connection on the caller's thread (WAL lets both proceed).
 *
 * Schema (versioned in table meta) is ready to grow: checkpoint positions,
 * shared state and the journal come later in their own tables.
 */
#ifndef EDDY_MEMORY_H
#define EDDY_MEMORY_H

#include <jansson.h>
#include <uv.h>

#include "eddy/error.h"

typedef struct eddy_memory eddy_memory;

/* Open or create the store at PATH (parent folders are created). Acks of
 * commits are delivered on LOOP. */
int eddy_memory_open(const char *path, uv_loop_t *loop, eddy_memory **out, eddy_err *err);

/* Wait for all pending writes, stop the persistence thread, close handles.
 * CB (may be NULL) runs on the loop once everything is released. */
void eddy_memory_close(eddy_memory *m, void (*cb)(void *ud), void *ud);

/* Load the memory of (AGENT, KEY): *DOC gets the document (new; {} when
 * none), *HISTORY the messages of the last HISTORY_RUNS runs in order (new
 * array). Loop thread. */
int eddy_memory_load(eddy_memory *m, const char *agent, const char *key, int history_runs,
                     json_t **doc, json_t **history, eddy_err *err);

typedef void (*eddy_memory_cb)(int status, const char *errmsg, void *ud);

/* Persist the end of a run: replace the document with DOC, append MESSAGES
 * (this run's messages) as one history entry, keep only the last KEEP_RUNS
 * entries. DOC and MESSAGES are borrowed (serialized before returning). CB
 * runs exactly once on the loop after the commit (or its failure). */
int eddy_memory_commit(eddy_memory *m, const char *agent, const char *key, json_t *doc,
                       json_t *messages, int keep_runs, eddy_memory_cb cb, void *ud, eddy_err *err);

/* Stream positions, kept in the same store: call FN for every stored
 * (PART, POSITION) of SOURCE ("fluss:db.table"; PART "bucket 3"). Loop thread. */
int eddy_memory_positions(eddy_memory *m, const char *source,
                          void (*fn)(const char *part, int64_t pos, void *ud), void *ud,
                          eddy_err *err);
/* Persist POSITION of (SOURCE, PART) in the next group commit; CB (may be
 * NULL) as for eddy_memory_commit. */
int eddy_memory_save_position(eddy_memory *m, const char *source, const char *part, int64_t pos,
                              eddy_memory_cb cb, void *ud, eddy_err *err);

#endif
