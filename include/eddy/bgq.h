/*
 * include/eddy/bgq.h - a background thread that runs posted jobs in order,
 * in bounded batches.
 *
 * The persistence and trace writers each own one: jobs are posted from any
 * thread and handed one after another to FN on the queue's thread, which
 * adds them to its current batch (e.g. an open transaction); FLUSH closes
 * the batch (commits). A batch is flushed when it holds max_jobs jobs, when
 * its first job is max_age_ms old, or when the queue is empty and the first
 * job has waited linger_ms for company: group commits every few ms under
 * load, and soon after the last job when idle. Posting never blocks.
 */
#ifndef EDDY_BGQ_H
#define EDDY_BGQ_H

#include <stdint.h>

#include "eddy/error.h"

typedef struct eddy_bgq eddy_bgq;

/* Add JOB to the current batch (queue thread). */
typedef void (*eddy_bgq_fn)(void *job, void *ctx);

typedef struct eddy_bgq_limits {
    int max_jobs;       /* 0: no bound */
    int64_t max_age_ms; /* 0: no bound */
    int64_t linger_ms;  /* 0: flush as soon as the queue is empty */
    const char *name;   /* the thread's name (top -H, perf): a static string of at most
                           15 bytes; NULL: unnamed */
} eddy_bgq_limits;

/* Start a queue whose thread calls FN(job, CTX) for each posted job and
 * FLUSH(CTX) (may be NULL) to end each batch. LIM may be NULL (no bounds, no
 * linger: a batch is what was queued together). */
int eddy_bgq_new(eddy_bgq_fn fn, void (*flush)(void *ctx), void *ctx, const eddy_bgq_limits *lim,
                 eddy_bgq **out, eddy_err *err);
/* Queue JOB. Any thread. Returns 0 or EDDY_ENOMEM/EDDY_ECLOSING. */
int eddy_bgq_post(eddy_bgq *q, void *job);
/* Run every queued job, flush, stop the thread, free the queue. NULL-safe. */
void eddy_bgq_free(eddy_bgq *q);

#endif
