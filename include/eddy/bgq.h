/*
 * include/eddy/bgq.h - a background thread that runs posted jobs in order.
 *
 * The persistence and trace writers each own one: jobs are posted from any
 * thread and run one after another on the queue's thread, which may batch
 * them (a job sees how many more are waiting). Posting never blocks.
 */
#ifndef EDDY_BGQ_H
#define EDDY_BGQ_H

#include "eddy/error.h"

typedef struct eddy_bgq eddy_bgq;

/* Run for each job on the queue thread. MORE is nonzero when further jobs
 * are already waiting (so a writer may keep a transaction open). */
typedef void (*eddy_bgq_fn)(void *job, int more, void *ctx);

/* Start a queue whose thread calls FN(job, more, CTX) for each posted job,
 * and IDLE(CTX) (may be NULL) whenever it has drained the queue. */
int eddy_bgq_new(eddy_bgq_fn fn, void (*idle)(void *ctx), void *ctx, eddy_bgq **out, eddy_err *err);
/* Queue JOB. Any thread. Returns 0 or EDDY_ENOMEM/EDDY_ECLOSING. */
int eddy_bgq_post(eddy_bgq *q, void *job);
/* Run every queued job, stop the thread, free the queue. NULL-safe. */
void eddy_bgq_free(eddy_bgq *q);

#endif
