/*
 * core/bgq.c - background job queue on its own thread, in bounded batches.
 *
 * A mutex-protected singly linked FIFO and a condition variable. The thread
 * takes one job at a time and hands it to the handler; it flushes the batch
 * when a bound is reached, or when the queue is empty and the batch has
 * lingered long enough (a timed wait for more jobs meanwhile). Freeing
 * drains first: no posted job is ever dropped.
 */
#include "eddy/bgq.h"
#include "eddy/buf.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

typedef struct node {
    void *job;
    struct node *next;
} node;

struct eddy_bgq {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    node *head, *tail;
    size_t n;
    int stop;
    eddy_bgq_fn fn;
    void (*flush)(void *ctx);
    void *ctx;
    eddy_bgq_limits lim;
};

static void deadline_in(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *run(void *arg)
{
    eddy_bgq *q = arg;
    int batch = 0;      /* jobs in the open batch */
    uint64_t first = 0; /* when its first job was taken */
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (!q->head) {
            uint64_t now = eddy_now_ms();
            if (batch && (q->stop || (uint64_t)q->lim.linger_ms <= now - first)) {
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
                deadline_in(&ts, (uint64_t)q->lim.linger_ms - (now - first));
                pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            } else {
                pthread_cond_wait(&q->cv, &q->mu);
            }
            continue;
        }
        node *nd = q->head;
        q->head = nd->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
        pthread_mutex_unlock(&q->mu);
        if (!batch)
            first = eddy_now_ms();
        q->fn(nd->job, q->ctx);
        eddy_free(nd);
        batch++;
        if ((q->lim.max_jobs > 0 && batch >= q->lim.max_jobs) ||
            (q->lim.max_age_ms > 0 && eddy_now_ms() - first >= (uint64_t)q->lim.max_age_ms)) {
            if (q->flush)
                q->flush(q->ctx);
            batch = 0;
        }
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
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
    node *nd = eddy_malloc(sizeof(*nd));
    if (!nd)
        return EDDY_ENOMEM;
    nd->job = job;
    nd->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->stop) {
        pthread_mutex_unlock(&q->mu);
        eddy_free(nd);
        return EDDY_ECLOSING;
    }
    if (q->tail)
        q->tail->next = nd;
    else
        q->head = nd;
    q->tail = nd;
    q->n++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
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
    eddy_free(q);
}
