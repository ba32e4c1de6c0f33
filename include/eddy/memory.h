/*
 * include/eddy/memory.h - the job's store: memory, history, the journal of
 * steps, finished runs, source positions and sink commits, in one SQLite
 * file (WAL).
 *
 * One persistence thread owns the writing connection. Writes are jobs
 * posted from any loop through a session; the thread runs them in the
 * order they were posted (across all sessions) and commits them in groups
 * bounded in size and age (a commit every few ms under load, not only when
 * the queue runs dry). A job's callback runs on its session's loop after
 * the transaction holding it committed, so when a job is acknowledged,
 * every job posted before it (by any session) is durable too.
 *
 * Reads of key memory go through the session: a per-session cache (an LRU
 * with a byte budget) in front of a reader thread with its own read-only
 * connection, answered on the session's loop; a loop never waits on SQLite.
 *
 * What a run leaves, and what a restart finds:
 *  - a step (one LLM call or tool call of a run, numbered 1, 2, ... in the
 *    order the run asks for them) is journaled with its result; a step of
 *    a tool with side effects is journaled PENDING before the tool starts;
 *  - a finished run stores, in one job: the key's new memory document, its
 *    messages as one history entry, and a run row with its outcome (the
 *    output or dead-letter record, kept for delivery after a crash); its
 *    step rows go;
 *  - a shared-state change (eddy_store_state_op) is stored, with the
 *    journal entry of the op, in the order the changes were made;
 *  - a checkpoint stores per source part the position below which every
 *    record has been handled and delivered, marks the runs delivered since
 *    the last checkpoint, records each sink's committed length, and deletes
 *    the run rows and step rows below the positions.
 * At open, the run rows and step rows still present (runs that were in
 * flight or not yet covered by a checkpoint) are loaded into a replay table
 * that every thread may read, and the positions into a JSON object.
 *
 * A run is named by its record: (AGENT, PART, POS) where PART is a 63-bit
 * hash of the source and part names and POS the record's position in that
 * part; INPUT_HASH (a hash of the record's bytes) is kept with its rows so
 * that a replaced input is not served another record's results.
 */
#ifndef EDDY_MEMORY_H
#define EDDY_MEMORY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

typedef struct eddy_store eddy_store;
typedef struct eddy_store_session eddy_store_session;

typedef struct eddy_store_opts {
    int max_keygroups;   /* recorded at the first open; another value is refused
                            unless the store holds no memory; 0 = 128 */
    int64_t commit_ms;   /* a group commit is at most this old; 0 = 5 */
    int commit_max;      /* and holds at most this many jobs; 0 = 1024 */
    int64_t cache_bytes; /* per-session memory cache budget; 0 = 64 MiB */
    int forget_runs;     /* delete every run row and journal entry at open (the input is
                            read again from its start: earlier tries are not this one's) */
} eddy_store_opts;

/* The schema version eddy_store_open writes (older ones are migrated at
 * open; `eddy state` reads only this one). */
#define EDDY_STORE_SCHEMA_VERSION 4
#define EDDY_STORE_DEFAULT_KEYGROUPS 128
#define EDDY_STORE_MAX_KEYGROUPS 32768

/* Open or create the store at PATH (parent folders are created), migrate an
 * older schema, check max_keygroups, and load the replay table, the
 * positions and the shared state. Blocks (the caller is not a worker loop
 * yet). One process at a time: the caller holds the store's lock (`eddy
 * run` flocks PATH.lock). */
int eddy_store_open(const char *path, const eddy_store_opts *opts, eddy_store **out, eddy_err *err);
/* Run and commit every queued job, stop the persistence thread, close.
 * Every session must be closed first. NULL-safe. */
void eddy_store_close(eddy_store *s);
const char *eddy_store_path(const eddy_store *s);
int eddy_store_keygroups(const eddy_store *s);

/* Take the exclusive lock of the store at PATH ("PATH.lock", created with
 * its folders, then holding our pid): one process per store. Returns the
 * lock's descriptor (the lock lasts until it is closed or the process
 * ends), or -1 with ERR: EDDY_EEXIST when another process holds it (*HOLDER
 * its pid when it wrote one, else 0), EDDY_EIO when the file cannot be
 * opened. On a file system without locks it warns and returns the
 * descriptor. Blocks for up to 0.5 s reading the holder's pid. */
int eddy_store_lock(const char *path, long *holder, eddy_err *err);

/* The part hash a run is named by: eddy_store_hash of "SOURCE\x1fPART"
 * (its first 599 bytes). */
int64_t eddy_store_part_hash(const char *source, const char *part);

/* A 63-bit hash of LEN bytes at P (FNV-1a 64, top bit cleared): run parts
 * and input hashes. */
int64_t eddy_store_hash(const void *p, size_t len, int64_t seed);

/* -- what a restart finds (read-only after open; any thread) ------------ */

enum { EDDY_STEP_DONE = 0, EDDY_STEP_PENDING = 1 };

typedef struct eddy_replay_step {
    int step;
    int state;        /* EDDY_STEP_DONE | EDDY_STEP_PENDING */
    const char *kind; /* "llm" | "tool" */
    json_t *data;     /* what the step layer journaled (borrowed) */
} eddy_replay_step;

typedef struct eddy_replay {
    int done;                /* the run finished: OUTCOME is its result */
    int ok;                  /* it succeeded: OUTCOME is the output, else the dead letter */
    int delivered;           /* a checkpoint saw OUTCOME delivered */
    json_t *outcome;         /* borrowed */
    int64_t input_hash;      /* of the record the rows belong to */
    eddy_replay_step *steps; /* ascending by step */
    size_t nsteps;
} eddy_replay;

/* What the store holds for the run of AGENT at (PART, POS), or NULL. */
const eddy_replay *eddy_store_replay(const eddy_store *s, const char *agent, int64_t part,
                                     int64_t pos);
/* How many runs the replay table holds (finished, and in flight at the end). */
size_t eddy_store_replay_count(const eddy_store *s, size_t *finished);

/* The stored positions: {SOURCE: {PART: {"pos", "line", "fp"}}}; borrowed,
 * never NULL. */
json_t *eddy_store_positions(const eddy_store *s);
/* Entry I (0 <= I < eddy_store_replay_count) of the replay table, in no
 * particular order, with its AGENT (borrowed, as long as the store), PART
 * and POS; NULL past the end. */
const eddy_replay *eddy_store_replay_at(const eddy_store *s, size_t i, const char **agent,
                                        int64_t *part, int64_t *pos);
/* The stored sink commits: {SINK: {"length", "count", "state"?}} ("state":
 * the JSON a sink asked to keep, when it did); borrowed, never NULL. */
json_t *eddy_store_sinks(const eddy_store *s);

/* -- sessions ------------------------------------------------------------ */

/* A session posts jobs and receives their acknowledgements on LOOP; one
 * per loop. Loop thread only, like everything taking a session. */
int eddy_store_session_new(eddy_store *s, uv_loop_t *loop, eddy_store_session **out, eddy_err *err);
/* Close once every callback of the session has run: jobs still queued are
 * committed, their callbacks run first; CB (may be NULL) after the handles
 * are released. */
void eddy_store_session_close(eddy_store_session *ss, void (*cb)(void *ud), void *ud);
/* Jobs and loads posted and not yet answered. */
size_t eddy_store_session_pending(const eddy_store_session *ss);

/* Called once per job on the session's loop: STATUS 0 when it committed,
 * else an error (the job rolled back; the other jobs of its group did not). */
typedef void (*eddy_store_cb)(int status, const char *errmsg, void *ud);

/* Memory of (AGENT, KEY): DOC (borrowed, {} when none) and HISTORY
 * (borrowed: the messages of the last HISTORY_RUNS runs, in order), valid
 * during the callback only; copy what you keep. */
typedef void (*eddy_store_load_cb)(int status, const char *errmsg, json_t *doc, json_t *history,
                                   void *ud);
/* Read the memory of (AGENT, KEY) through the cache. CB runs once on the
 * loop, never inside this call. */
int eddy_store_load(eddy_store_session *ss, const char *agent, const char *key, int history_runs,
                    eddy_store_load_cb cb, void *ud, eddy_err *err);

typedef struct eddy_run_ref {
    const char *agent, *key;
    int64_t part, pos, input_hash;
} eddy_run_ref;

/* A run that loaded (AGENT, KEY) ends without eddy_store_run_done (it was
 * abandoned): the cache entry it held may go. */
void eddy_store_release(eddy_store_session *ss, const char *agent, const char *key);

/* Journal step STEP of REF: STATE and DATA (borrowed, serialized now). CB
 * may be NULL. */
int eddy_store_put_step(eddy_store_session *ss, const eddy_run_ref *ref, int step, int state,
                        const char *kind, json_t *data, eddy_store_cb cb, void *ud, eddy_err *err);
/* The same with DATA as JSON text (malloc'd: taken, also on failure; NULL
 * is reported as EDDY_ENOMEM), for callers that write it without a tree. */
int eddy_store_put_step_take(eddy_store_session *ss, const eddy_run_ref *ref, int step, int state,
                             const char *kind, char *text, eddy_store_cb cb, void *ud,
                             eddy_err *err);

/* The end of a run. OK: DOC replaces the key's memory document, MESSAGES
 * (may be NULL) are appended as one history entry and only the last
 * KEEP_RUNS entries kept; OUTCOME is the output (OK) or the dead-letter
 * record. All borrowed. The session's cache is updated at once (the next
 * load of the key sees it). */
typedef struct eddy_run_end {
    eddy_run_ref ref;
    int ok;
    json_t *doc, *messages;
    int keep_runs;
    json_t *outcome;
} eddy_run_end;

int eddy_store_run_done(eddy_store_session *ss, const eddy_run_end *end, eddy_store_cb cb, void *ud,
                        eddy_err *err);

/* A checkpoint: positions, the runs delivered since the last one, the
 * sinks' committed lengths. All borrowed, serialized now. */
typedef struct eddy_position {
    const char *source, *part;
    int64_t part_hash; /* eddy_store_hash of "SOURCE\x1fPART" */
    int64_t pos, line, fp;
} eddy_position;

typedef struct eddy_delivered {
    const char *agent;
    int64_t part, pos;
} eddy_delivered;

typedef struct eddy_sink_commit {
    const char *sink;
    int64_t length, count;
    const char *state; /* JSON text the sink asks to keep (NULL: none) */
} eddy_sink_commit;

typedef struct eddy_checkpoint {
    const eddy_position *positions;
    size_t npositions;
    const eddy_delivered *delivered;
    size_t ndelivered;
    const eddy_sink_commit *sinks;
    size_t nsinks;
} eddy_checkpoint;

int eddy_store_checkpoint(eddy_store_session *ss, const eddy_checkpoint *c, eddy_store_cb cb,
                          void *ud, eddy_err *err);

/* -- shared state ------------------------------------------------------------ */

/* Agent-wide keys every run of AGENT sees, on any worker: OP is "get",
 * "set" (A: the value), "incr" (A: the amount, default 1), "compare_and_set"
 * (A: the expected value, null = absent; B: the new value, null = delete)
 * or "delete". The result (new reference): get: the value or null; set:
 * null; incr: the new value; compare_and_set: true when it set; delete:
 * whether the key existed. Every op is atomic and they happen in one order
 * across all threads of the process (linearizable within it). A change is
 * stored with the next group commit, in that order, and when REF is given
 * (a run's tool call) the op's result is journaled as step STEP of REF in
 * the same job: after a crash, the re-run of that tool call gets the same
 * answer and the change is not made twice. Loop thread of SS; does not
 * wait for the commit (whatever saw the change commits after it). NULL with
 * ERR for a bad argument (a key of 0 or more than 1024 bytes, incr of
 * something that is not a number, a value over 1 MiB). A, B borrowed. */
json_t *eddy_store_state_op(eddy_store_session *ss, const char *agent, const char *op,
                            const char *key, json_t *a, json_t *b, const eddy_run_ref *ref,
                            int step, eddy_err *err);
/* What a journaled op's entry says it was (its "opkey"): a hash of OP and
 * KEY, so that a re-run asking for another op is not given this answer. */
int64_t eddy_store_state_opkey(const char *op, const char *key);
/* The value of AGENT's KEY now (a copy), or NULL. Any thread. */
json_t *eddy_store_state_get(eddy_store *s, const char *agent, const char *key);

/* -- tests ---------------------------------------------------------------- */

/* Fault injection: the persistence thread calls _exit(86) just before it
 * runs its Nth SQL write statement (counted from the open; 0 = off). Also
 * set by the environment variable EDDY_STORE_CRASH_AT. */
void eddy_store_crash_at(eddy_store *s, long n);

#endif
