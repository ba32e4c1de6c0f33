/*
 * core/bgq.c - background job queue on its own thread, in bounded batches.
 *
 * A mutex-protected array of posted jobs and a condition variable. The
 * thread takes all queued jobs at once and hands them to the handler in
 * order; it flushes the batch when a bound is reached, or when the queue is
 * empty and the batch has lingered long enough (a timed wait for more jobs
 * meanwhile). A post signals only a thread that sleeps with nothing to do.
 * Freeing drains first: no posted job is ever dropped.
 */
#include "eddy/bgq.h"
#include "eddy/buf.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

/* Jobs posted and not yet taken: a growable array, swapped out whole by the
 * thread (no allocation per post once it has grown). */
typedef struct jobs {
    void **v;
    size_t n, cap;
} jobs;

enum { RUNNING, IDLE, LINGERING, WOKEN };

struct eddy_bgq {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    jobs queued; /* under mu */
    int state;   /* under mu: what the thread is doing (a post wakes it only when IDLE);
                  * WOKEN: a post is signalling it */
    size_t open; /* under mu: while LINGERING, the jobs of the open batch */
    int stop;
    eddy_bgq_fn fn;
    void (*flush)(void *ctx);
    void *ctx;
    eddy_bgq_limits lim;
};

/* The thread. It takes every queued job at once and runs them outside the
 * lock. While it runs or lingers, posts do not wake it (no futex call per
 * job): a lingering batch takes what came meanwhile when its linger (or its
 * max_age, if sooner) ends, and is flushed then. A post wakes it early only
 * when the open batch and the queue together reach max_jobs. */
static void *run(void *arg)
{
    eddy_bgq *q = arg;
    jobs mine = {0};
    int batch = 0;                              /* jobs in the open batch */
    uint64_t first = 0;                         /* when its first job was taken */
    uint64_t wait = (uint64_t)q->lim.linger_ms; /* how long a batch may wait for company */
    if (q->lim.max_age_ms > 0 && (uint64_t)q->lim.max_age_ms < wait)
        wait = (uint64_t)q->lim.max_age_ms;
    if (q->lim.name)
        pthread_setname_np(pthread_self(), q->lim.name);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (!q->queued.n) {
            uint64_t now = eddy_now_ms();
            if (batch && (q->stop || wait <= now - first)) {
                q->state = RUNNING;
                pthread_mutex_unlock(&q->mu);
                if (q->flush)
                    q->flush(q->ctx);
                batch = 0;
                pthread_mutex_lock(&q->mu);
                continue;
            }
            if (q->stop && !batch)
                break;
            if (batch) { /* linger: wait for company, at most until the deadline */
                struct timespec ts;
                q->state = LINGERING;
                q->open = (size_t)batch;
                eddy_deadline_in(&ts, wait - (now - first));
                pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            } else {
                q->state = IDLE;
                pthread_cond_wait(&q->cv, &q->mu);
            }
            continue;
        }
        jobs tmp = q->queued; /* take them all; the array comes back empty */
        q->queued = mine;
        mine = tmp;
        q->state = RUNNING;
        pthread_mutex_unlock(&q->mu);
        for (size_t i = 0; i < mine.n; i++) {
            if (!batch)
                first = eddy_now_ms();
            q->fn(mine.v[i], q->ctx);
            batch++;
            if ((q->lim.max_jobs > 0 && batch >= q->lim.max_jobs) ||
                (q->lim.max_age_ms > 0 && eddy_now_ms() - first >= (uint64_t)q->lim.max_age_ms)) {
                if (q->flush)
                    q->flush(q->ctx);
                batch = 0;
            }
        }
        mine.n = 0;
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    eddy_free(mine.v);
    return NULL;
}

int eddy_bgq_new(eddy_bgq_fn fn, void (*flush)(void *ctx), void *ctx, const eddy_bgq_limits *lim,
                 eddy_bgq **out, eddy_err *err)
{
    eddy_bgq *q = eddy_calloc(1, sizeof(*q));
    pthread_condattr_t ca;
    *out = NULL;
    if (!q)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    q->fn = fn;
    q->flush = flush;
    q->ctx = ctx;
    q->state = RUNNING;
    if (lim)
        q->lim = *lim;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&q->thread, NULL, run, q)) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
        eddy_free(q);
        return eddy_err_set(err, EDDY_EIO, "cannot start a background thread");
    }
    *out = q;
    return 0;
}

int eddy_bgq_post(eddy_bgq *q, void *job)
{
    pthread_mutex_lock(&q->mu);
    if (q->stop) {
        pthread_mutex_unlock(&q->mu);
        return EDDY_ECLOSING;
    }
    if (q->queued.n == q->queued.cap) {
        size_t cap = q->queued.cap ? q->queued.cap * 2 : 64;
        void **v = eddy_realloc(q->queued.v, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&q->mu);
            return EDDY_ENOMEM;
        }
        q->queued.v = v;
        q->queued.cap = cap;
    }
    q->queued.v[q->queued.n++] = job;
    int wake = q->state == IDLE || (q->state == LINGERING && q->lim.max_jobs > 0 &&
                                    q->open + q->queued.n >= (size_t)q->lim.max_jobs);
    if (wake)
        q->state = WOKEN; /* one signal: later posts find it on its way */
    pthread_mutex_unlock(&q->mu);
    /* after the unlock: a thread woken under the lock would at once sleep
     * again on it (a futex wait and wake more per post) */
    if (wake)
        pthread_cond_signal(&q->cv);
    return 0;
}

void eddy_bgq_free(eddy_bgq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    eddy_free(q->queued.v);
    eddy_free(q);
}
