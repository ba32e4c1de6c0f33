/*
 * include/eddy/runtime.h - the job controller, key routing, workers,
 * mailboxes, running a job.
 *
 * A job runs as one controller loop (sources, sinks, signals, checkpoints,
 * the summary) and N worker threads, each with its own loop. A record's key
 * picks its key group (a stable hash modulo max_keygroups), the key group
 * its worker; events of one key run one at a time in arrival order (per
 * agent instance: agent + key), different keys concurrently.
 */
#ifndef EDDY_RUNTIME_H
#define EDDY_RUNTIME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "eddy/agent.h"
#include "eddy/error.h"

/* Key group of KEY: a stable hash modulo NGROUPS, the unit of ownership (a
 * key group belongs to exactly one worker). */
unsigned eddy_keygroup(const char *key, unsigned ngroups);

/* -- mailboxes -------------------------------------------------------------- */

typedef struct eddy_mailboxes eddy_mailboxes;

/* Called by dispatch for an item whose turn has come. The instance stays
 * busy until eddy_mailbox_done(KEY). */
typedef void (*eddy_mailbox_start_cb)(const char *key, void *item, void *ud);

int eddy_mailboxes_new(eddy_mailbox_start_cb start, void *ud, eddy_mailboxes **out, eddy_err *err);
/* Free; FREE_ITEM (may be NULL) is called for every item still queued. */
void eddy_mailboxes_free(eddy_mailboxes *mb, void (*free_item)(void *item));

/* Queue ITEM for KEY (copied), creating the mailbox on first use. Takes
 * ownership of ITEM only on success. Nothing starts inside this call. */
int eddy_mailbox_push(eddy_mailboxes *mb, const char *key, void *item, eddy_err *err);
/* The running item of KEY has finished; the next may start on dispatch. */
void eddy_mailbox_done(eddy_mailboxes *mb, const char *key);
/* Start the head item of every idle mailbox that has one. */
void eddy_mailboxes_dispatch(eddy_mailboxes *mb);
/* Items queued or running, and instances currently running. */
size_t eddy_mailboxes_pending(const eddy_mailboxes *mb);
size_t eddy_mailboxes_running(const eddy_mailboxes *mb);

/* -- running a job ---------------------------------------------------------- */

typedef struct eddy_run_opts {
    const char *input;        /* overrides the job's source ("-" = stdin) */
    const char *output;       /* overrides the job's sink ("-" = stdout) */
    const char *dead_letter;  /* overrides the job's dead-letter file */
    const char *state;        /* overrides checkpoint.path */
    const char *traces;       /* overrides trace.path */
    int quiet;                /* no summary on stderr */
    const char *summary_json; /* write the summary as JSON to this file */
    int workers;              /* overrides the job's workers (0: the job's) */
    int progress;             /* 1: a status line on stderr; 0: only on a terminal; -1: none */
    int from_start;           /* read sources from their start: no stored position, and the
                                 journal and finished runs of earlier tries are forgotten */
    const char *dashboard;    /* serve the dashboard and /metrics on HOST:PORT (overrides
                                 dashboard.listen; NULL: as the job says) */
    int watch;                /* reload tools and prompts when their files change (SIGHUP
                                 reloads them always) */
} eddy_run_opts;

/* Put the LEN bytes of TEXT, a line of a JSONL source, into the dead-letter
 * record D (an object): "raw" (its first 64 KiB; "raw_truncated": true
 * when it is longer) as they are when they are UTF-8, else with each byte
 * that is not as U+FFFD, and then "raw_base64" with the exact bytes too.
 * Returns 0 or EDDY_ENOMEM. Any thread. */
int eddy_jsonl_raw_fields(json_t *d, const char *text, size_t len);

/* Run JOB to the end of its input (or a signal). Returns the process exit
 * code: 0 when the input was processed (failed runs went to the dead-letter
 * file), 1 when the job could not start, 130/143 after a signal. */
int eddy_runtime_run(eddy_job *job, const eddy_run_opts *opts);

#endif
