/*
 * core/bgq.c - background job queue on its own thread.
 *
 * A mutex-protected singly linked FIFO and a condition variable. The thread
 * takes one job at a time, tells the handler whether more are waiting, and
 * calls the idle hook when the queue is empty. Freeing drains first: no
 * posted job is ever dropped.
 */
#include "eddy/bgq.h"
#include "eddy/buf.h"

#include <pthread.h>

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
    void (*idle)(void *ctx);
    void *ctx;
};

static void *run(void *arg)
{
    eddy_bgq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        node *nd;
        int more;
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (!q->head && q->stop)
            break;
        nd = q->head;
        q->head = nd->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
        more = q->head != NULL;
        pthread_mutex_unlock(&q->mu);
        q->fn(nd->job, more, q->ctx);
        eddy_free(nd);
        if (!more && q->idle)
            q->idle(q->ctx);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int eddy_bgq_new(eddy_bgq_fn fn, void (*idle)(void *ctx), void *ctx, eddy_bgq **out, eddy_err *err)
{
    eddy_bgq *q = eddy_calloc(1, sizeof(*q));
    *out = NULL;
    if (!q)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    q->fn = fn;
    q->idle = idle;
    q->ctx = ctx;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
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
