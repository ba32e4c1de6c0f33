/*
 * runtime/runtime_int.h - what the controller and the workers share.
 *
 * The controller hands a worker tasks (one per agent run) through the
 * worker's inbox; the worker hands each back, finished, through the
 * controller's outbox. Both are mutex-protected lists with a uv_async_t:
 * posting never blocks and wakes the other loop. A task belongs to exactly
 * one side at a time: to the worker from its post until its return.
 */
#ifndef EDDY_RUNTIME_INT_H
#define EDDY_RUNTIME_INT_H

#include <pthread.h>
#include <uv.h>

#include "eddy/agent.h"
#include "eddy/mcp.h"
#include "eddy/memory.h"
#include "eddy/runtime.h"

typedef struct eddy__ctl eddy__ctl;
typedef struct eddy__worker eddy__worker;

/* One agent run of one record. */
typedef struct eddy__task {
    void *rec;     /* the controller's record (opaque to the worker) */
    int agent;     /* index into the job's agents */
    json_t *event; /* the task's own; NULL once its run started (the run has a copy) */
    char *key, *event_id, *mbkey;
    int64_t part, pos, input_hash;
    const eddy_replay *replay;
    /* the worker's, while it runs */
    eddy_run *run;
    struct eddy__task *prev, *next;
    /* the outcome, on the way back */
    int status;     /* 0, EDDY_ECANCELED (abandoned: not started or stopped), or the failure */
    json_t *output; /* the output (status 0) or the dead-letter record; NULL when abandoned */
    char *reason;
} eddy__task;

typedef struct eddy__queue {
    pthread_mutex_t mu;
    eddy__task *head, *tail;
    uv_async_t async;
} eddy__queue;

int eddy__queue_init(eddy__queue *q, uv_loop_t *loop, uv_async_cb cb, void *data);
/* Append T (any thread) and wake the queue's loop. */
void eddy__queue_push(eddy__queue *q, eddy__task *t);
/* Take the whole list (the queue's loop). */
eddy__task *eddy__queue_take(eddy__queue *q);
void eddy__queue_close(eddy__queue *q);

void eddy__task_free(eddy__task *t);

/* -- workers (runtime/worker.c) ------------------------------------------------ */

typedef struct eddy__worker_stats {
    long runs, tasks;
    eddy_run_stats run;
} eddy__worker_stats;

/* Start worker INDEX as a thread with its own loop: its LLM client, Lua
 * host (tools loaded for every agent), store session and mailboxes; with
 * MCP (may be NULL; it outlives the worker) a port to its servers.
 * Finished tasks go to DONE (the controller's queue). Errors (a tool that
 * does not load) come back before the thread starts. */
int eddy__worker_start(int index, eddy_job *job, eddy_store *store, eddy_trace_store *traces,
                       eddy_metrics *metrics, eddy_mcp *mcp, const char *state_path,
                       const char *trace_path, eddy__queue *done, eddy__worker **out,
                       eddy_err *err);
/* What a worker says of a reload it was asked for: STATUS 0 when version
 * JOB is current from now on, else why not (MSG; the old one stays).
 * Called on the WORKER's thread: hand it over to the controller's loop. */
typedef void (*eddy__reload_cb)(int worker, int status, const char *msg, void *ud);
/* Set the reload callback. Before the first eddy__worker_reload. */
void eddy__worker_on_reload(eddy__worker *w, eddy__reload_cb cb, void *ud);
/* Make JOB (borrowed: it must live as long as the worker) the version of
 * the tools and prompts that the runs started from now on use, once its
 * generation is built on the worker's loop (runs already started go on
 * with theirs), with the tools of MCP (NULL: none; it too must outlive the
 * worker). JOB's agents must be those of the worker's job, in order.
 * A later call before the worker took this one replaces it. Any thread. */
void eddy__worker_reload(eddy__worker *w, const eddy_job *job, eddy_mcp *mcp);
/* Hand T to the worker. Any thread (the controller). */
void eddy__worker_post(eddy__worker *w, eddy__task *t);
/* Abandon every run and every queued task (each comes back with
 * EDDY_ECANCELED). Any thread. */
void eddy__worker_cancel(eddy__worker *w);
/* No more tasks will come: when the last has gone back, close everything
 * and end the thread. Any thread. */
void eddy__worker_finish(eddy__worker *w);
/* Wait for the thread to end; STATS (may be NULL) gets its figures (the
 * per-model and per-key maps move to it). Then free W. */
void eddy__worker_join(eddy__worker *w, eddy__worker_stats *stats);
/* Tasks queued or running on W now (approximate, any thread). */
long eddy__worker_load(const eddy__worker *w);

/* -- live reload (runtime/reload.c) ---------------------------------------------- */

typedef struct eddy__reloader eddy__reloader;
/* Reload JOB's tools, prompts and MCP servers into the NW workers W
 * (borrowed; they outlive the reloader) on SIGHUP and, when WATCH, when one
 * of its files changes. MCP: the manager JOB started with (borrowed, may be
 * NULL). Controller loop only. On failure *OUT is set all the same (closed):
 * free it, after the loop ran, as when it succeeded. */
int eddy__reloader_new(uv_loop_t *loop, eddy_job *job, eddy_mcp *mcp, eddy__worker **w, int nw,
                       int watch, eddy__reloader **out, eddy_err *err);
/* Load the job file again now (WHY says what asked, for the log). */
void eddy__reloader_trigger(eddy__reloader *r, const char *why);
/* Stop listening (closes its handles); NULL-safe. */
void eddy__reloader_close(eddy__reloader *r);
/* Free the versions taken. After close and after the workers were joined. */
void eddy__reloader_free(eddy__reloader *r);

#endif
