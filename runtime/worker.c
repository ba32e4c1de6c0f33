/*
 * runtime/worker.c - a worker: one thread, one libuv loop.
 *
 * A worker owns everything its key groups need: mailboxes (one per agent
 * instance), the agents' runtimes and their Lua host, an LLM client and a
 * session of the store (with its memory cache). Tasks arrive in its inbox;
 * each goes to its instance's mailbox and starts when the instance is idle;
 * a finished task goes back to the controller with its output or its
 * dead-letter record. Cancel abandons every run (and every queued task);
 * finish closes the worker once its last task has gone back: the LLM
 * client, the store session, the tool calls still running (given 500 ms,
 * then ended), the tool modules, and the loop returns.
 *
 * Tools and prompts come in generations: a Lua host with every agent's
 * tools loaded, and the agents' runtimes over it, for one version of the
 * job. A reload (eddy__worker_reload) builds the next generation on the
 * loop and makes it current; a run keeps the generation it started with
 * (runs counts them), and a generation that is no longer current is freed
 * once its last run and its last tool call are over.
 */
#include "runtime_int.h"

#include <assert.h>
#include <stdatomic.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/log.h"

/* -- queues ------------------------------------------------------------------ */

int eddy__queue_init(eddy__queue *q, uv_loop_t *loop, uv_async_cb cb, void *data)
{
    q->head = q->tail = NULL;
    pthread_mutex_init(&q->mu, NULL);
    if (uv_async_init(loop, &q->async, cb)) {
        pthread_mutex_destroy(&q->mu);
        return EDDY_EUV;
    }
    q->async.data = data;
    return 0;
}

void eddy__queue_push(eddy__queue *q, eddy__task *t)
{
    t->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
    /* woken under the mutex: once it is released the loop may take T, finish
     * and close the handle */
    uv_async_send(&q->async);
    pthread_mutex_unlock(&q->mu);
}

eddy__task *eddy__queue_take(eddy__queue *q)
{
    pthread_mutex_lock(&q->mu);
    eddy__task *t = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return t;
}

void eddy__queue_close(eddy__queue *q)
{
    uv_close((uv_handle_t *)&q->async, NULL);
}

void eddy__task_free(eddy__task *t)
{
    if (!t)
        return;
    json_decref(t->event);
    json_decref(t->output);
    eddy_free(t->key);
    eddy_free(t->event_id);
    eddy_free(t->mbkey);
    eddy_free(t->reason);
    eddy_free(t);
}

/* -- the worker ------------------------------------------------------------- */

typedef struct gen {
    const eddy_job *job;       /* the version its definitions come from (the controller keeps it) */
    eddy_mcp *mcp;             /* the MCP servers of its version, or NULL */
    eddy_mcp_port *port;       /* ... this loop's port to them (the worker's) */
    eddy_mcp_catalog *catalog; /* the MCP tools it was built with, or NULL */
    eddy_tools *tools;
    eddy_agent_env env;
    eddy_agent_rt **agents;
    size_t nagents;
    struct gen *next; /* the worker's older generations */
} gen;

struct eddy__worker {
    int index;
    eddy_job *job;
    pthread_t thread;
    int started;
    uv_loop_t loop;
    eddy__queue inbox;
    eddy__queue *done;
    int cancel_req, finish_req; /* under inbox.mu */
    eddy_llm_client *llm;
    eddy_store_session *ss;
    eddy_trace_store *traces;
    eddy_metrics *metrics;
    const char *state_path, *trace_path; /* the controller's, for eddy_tools_deny_file */
    /* a port on this loop to each MCP manager a generation used (a reload
     * that changes the mcp: section brings a new manager) */
    struct mport {
        eddy_mcp *mcp;
        eddy_mcp_port *port;
    } * ports;
    size_t nports;
    gen *cur;                   /* the generation new runs start with */
    gen *old;                   /* older ones, still used by runs or tool calls */
    const eddy_job *reload_req; /* under inbox.mu: the next version, or NULL */
    eddy_mcp *reload_mcp;       /* ... and its MCP servers */
    eddy__reload_cb reload_cb;
    void *reload_ud;
    eddy_mailboxes *mb;
    eddy__task *running;
    eddy__worker_stats stats;
    int canceling, finishing, closing, drain_canceled;
    uint64_t follow_failed; /* the MCP catalog version a rebuild failed for, or 0 */
    uv_timer_t drain;
    uv_timer_t collect; /* eddy_alloc_collect every second (unreferenced) */
    uint64_t drain_deadline;
    atomic_long load;
};

static void maybe_close(eddy__worker *w);

static void give_back(eddy__worker *w, eddy__task *t)
{
    atomic_fetch_sub(&w->load, 1);
    w->stats.tasks++;
    eddy__queue_push(w->done, t);
}

static void unlink_running(eddy__worker *w, eddy__task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        w->running = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

typedef struct slot {
    eddy__worker *w;
    eddy__task *t;
} slot;

static void gen_free(gen *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->nagents; i++)
        eddy_agent_rt_free(g->agents[i]);
    eddy_free(g->agents);
    if (g->tools) {
        eddy_tools_close(g->tools);
        if (eddy_tools_pending(g->tools) == 0)
            eddy_tools_free(g->tools);
    }
    eddy_mcp_catalog_release(g->catalog);
    eddy_free(g);
}

/* Whether a run or a tool call still uses G. */
static int gen_busy(const gen *g)
{
    for (size_t i = 0; i < g->nagents; i++)
        if (eddy_agent_rt_live(g->agents[i]))
            return 1;
    return eddy_tools_pending(g->tools) > 0; /* also calls abandoned but not yet answered */
}

/* Free the older generations nothing uses any more (at a reload, and each
 * second: a run is freed a little after its callback). */
static void collect_gens(eddy__worker *w)
{
    for (gen **p = &w->old; *p;) {
        gen *g = *p;
        if (!gen_busy(g)) {
            *p = g->next;
            gen_free(g);
        } else {
            p = &g->next;
        }
    }
}

/* This loop's port to MCP, opened on first use. */
static int port_for(eddy__worker *w, eddy_mcp *mcp, eddy_mcp_port **out, eddy_err *err)
{
    struct mport *grown;
    int rc;
    for (size_t i = 0; i < w->nports; i++)
        if (w->ports[i].mcp == mcp) {
            *out = w->ports[i].port;
            return 0;
        }
    if (!(grown = eddy_realloc(w->ports, (w->nports + 1) * sizeof(*grown))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    w->ports = grown;
    if ((rc = eddy_mcp_port_new(mcp, &w->loop, out, err)))
        return rc;
    w->ports[w->nports].mcp = mcp;
    w->ports[w->nports++].port = *out;
    return 0;
}

/* A generation for JOB's agents: a host with their tools, their runtimes;
 * MCP (may be NULL): the servers of JOB's version. */
static int gen_new(eddy__worker *w, const eddy_job *job, eddy_mcp *mcp, gen **out, eddy_err *err)
{
    gen *g = eddy_calloc(1, sizeof(*g));
    int rc;
    *out = NULL;
    if (!g)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    g->job = job;
    if ((rc = eddy_tools_new(&w->loop, job->dir, &g->tools, err)))
        goto fail;
    eddy_tools_configure(g->tools, job->modules);
    if ((rc = eddy_tools_deny_file(g->tools, w->state_path, err)) ||
        (rc = eddy_tools_deny_file(g->tools, w->trace_path, err)))
        goto fail;
    g->mcp = mcp;
    if (mcp && (rc = port_for(w, mcp, &g->port, err)))
        goto fail;
    g->catalog = mcp ? eddy_mcp_catalog_get(mcp) : NULL;
    g->env = (eddy_agent_env){&w->loop, w->llm,     g->tools,   w->ss,  w->traces,
                              w->index, w->metrics, g->catalog, g->port};
    if (!(g->agents = eddy_calloc(job->nagents + 1, sizeof(eddy_agent_rt *)))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < job->nagents; i++) {
        if ((rc = eddy_agent_rt_new(&job->agents[i], &g->env, &g->agents[i], err)))
            goto fail;
        g->nagents++;
    }
    *out = g;
    return 0;
fail:
    gen_free(g);
    return rc;
}

/* Make a generation of JOB current, if it builds; the runs in progress
 * keep theirs. */
static int swap_gen(eddy__worker *w, const eddy_job *job, eddy_mcp *mcp, eddy_err *err)
{
    gen *g;
    int rc = gen_new(w, job, mcp, &g, err);
    if (rc == 0) {
        w->cur->next = w->old;
        w->old = w->cur;
        w->cur = g;
        w->follow_failed = 0; /* (versions are per manager: G may have another) */
        collect_gens(w);
    }
    return rc;
}

/* The version JOB was asked for: tell the reloader how it went. */
static void reload(eddy__worker *w, const eddy_job *job, eddy_mcp *mcp)
{
    eddy_err e;
    int rc = swap_gen(w, job, mcp, &e);
    if (w->reload_cb)
        w->reload_cb(w->index, rc, rc ? e.msg : NULL, w->reload_ud);
}

/* An MCP server's tool list changed since the current generation was
 * built: the runs that start from now on see the new list. */
static void follow_mcp(eddy__worker *w)
{
    eddy_err e;
    uint64_t v = w->cur->mcp ? eddy_mcp_version(w->cur->mcp) : 0;
    /* once per version: a rebuild that failed (a tool file broken on disk,
     * say) is not tried again for every run */
    if (!w->cur->mcp || v == eddy_mcp_catalog_version(w->cur->catalog) || v == w->follow_failed)
        return;
    if (swap_gen(w, w->cur->job, w->cur->mcp, &e)) {
        w->follow_failed = v;
        EDDY_WARN("mcp",
                  "worker %d: the new MCP tool lists are not taken (%s); tried again when a "
                  "list changes again or at a reload",
                  w->index, e.msg);
    } else {
        EDDY_DEBUG("mcp", "worker %d: MCP tool lists changed (catalog version %llu)", w->index,
                   (unsigned long long)eddy_mcp_catalog_version(w->cur->catalog));
    }
}

static void run_done(eddy_run_result *res, void *ud)
{
    slot *s = ud;
    eddy__worker *w = s->w;
    eddy__task *t = s->t;
    eddy_free(s);
    t->status = res->status;
    /* taken, not shared: the controller's thread owns it from here on */
    if (res->status == EDDY_ECANCELED) {
        t->output = NULL; /* abandoned: nothing goes anywhere */
    } else {
        t->output = res->output;
        res->output = NULL;
    }
    if (res->status)
        t->reason = eddy_strdup(res->err.msg);
    t->run = NULL;
    unlink_running(w, t);
    eddy_mailbox_done(w->mb, t->mbkey);
    w->stats.runs++;
    give_back(w, t);
    eddy_mailboxes_dispatch(w->mb);
    maybe_close(w);
}

static void start_item(const char *mbkey, void *item, void *ud)
{
    eddy__worker *w = ud;
    eddy__task *t = item;
    eddy_err e;
    slot *s;
    (void)mbkey;
    if (w->canceling) {
        t->status = EDDY_ECANCELED;
        eddy_mailbox_done(w->mb, t->mbkey);
        give_back(w, t);
        return;
    }
    eddy_run_input in = {t->event, t->key, t->event_id, t->part, t->pos, t->input_hash, t->replay};
    follow_mcp(w);
    s = eddy_calloc(1, sizeof(*s));
    if (s) {
        s->w = w;
        s->t = t;
    }
    assert(t->agent >= 0 && (size_t)t->agent < w->cur->nagents);
    if (!s || eddy_agent_run_start(w->cur->agents[t->agent], &in, &w->stats.run, run_done, s,
                                   &t->run, &e)) {
        if (!s)
            eddy_err_set(&e, EDDY_ENOMEM, "out of memory");
        eddy_free(s);
        t->status = e.code ? e.code : EDDY_ENOMEM;
        t->reason = eddy_strdup(e.msg);
        t->output = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason",
                              e.msg, "event_id", t->event_id, "key", t->key, "agent",
                              w->job->agents[t->agent].name, "event", t->event);
        eddy_mailbox_done(w->mb, t->mbkey);
        give_back(w, t);
        return;
    }
    /* the run has its own copy, and nothing reads the task's from here on
     * (its dead letters come from the run): not two copies while it runs */
    json_decref(t->event);
    t->event = NULL;
    t->prev = NULL;
    t->next = w->running;
    if (w->running)
        w->running->prev = t;
    w->running = t;
}

static void cancel_all(eddy__worker *w)
{
    w->canceling = 1;
    for (eddy__task *t = w->running; t; t = t->next)
        eddy_run_cancel(t->run);    /* each reports later, from the loop */
    eddy_mailboxes_dispatch(w->mb); /* queued tasks go back unstarted */
}

static void on_inbox(uv_async_t *a)
{
    eddy__worker *w = a->data;
    eddy__task *list = eddy__queue_take(&w->inbox);
    const eddy_job *next;
    eddy_mcp *next_mcp;
    int cancel, finish;
    pthread_mutex_lock(&w->inbox.mu);
    cancel = w->cancel_req;
    finish = w->finish_req;
    next = w->reload_req;
    next_mcp = w->reload_mcp;
    w->reload_req = NULL;
    pthread_mutex_unlock(&w->inbox.mu);
    if (next && !w->finishing && !w->canceling) /* before the tasks: they start with it */
        reload(w, next, next_mcp);
    else if (next && w->reload_cb)
        w->reload_cb(w->index, EDDY_ECANCELED, "the worker is stopping", w->reload_ud);
    while (list) {
        eddy__task *t = list;
        eddy_err e;
        list = t->next;
        t->next = NULL;
        if (eddy_mailbox_push(w->mb, t->mbkey, t, &e)) {
            t->status = EDDY_ENOMEM;
            t->reason = eddy_strdup(e.msg);
            t->output = json_pack("{s:s, s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason",
                                  e.msg, "event_id", t->event_id, "key", t->key, "event", t->event);
            give_back(w, t);
        }
    }
    if (cancel && !w->canceling)
        cancel_all(w);
    eddy_mailboxes_dispatch(w->mb);
    if (finish)
        w->finishing = 1;
    maybe_close(w);
}

/* Every 10 ms while closing: tool calls still running (their runs are
 * over) get until the deadline, then are ended; once none is left the
 * tool modules (e.g. the Fluss clients of lookups) are closed, and the
 * loop has nothing more to wait for. */
/* Tool calls still running in every generation of W. */
static int tools_active(const eddy__worker *w)
{
    int n = w->cur ? eddy_tools_active(w->cur->tools) : 0;
    for (const gen *g = w->old; g; g = g->next)
        n += eddy_tools_active(g->tools);
    return n;
}

static void on_drain(uv_timer_t *t)
{
    eddy__worker *w = t->data;
    if (tools_active(w) > 0) {
        if (eddy_now_ms() < w->drain_deadline || w->drain_canceled)
            return;
        EDDY_WARN("runtime", "worker %d: ending %d tool call(s) still running at exit", w->index,
                  tools_active(w));
        /* their callbacks come next, from the loop */
        eddy_tools_cancel_all(w->cur->tools);
        for (gen *g = w->old; g; g = g->next)
            eddy_tools_cancel_all(g->tools);
        w->drain_canceled = 1;
        return;
    }
    uv_timer_stop(t);
    collect_gens(w); /* the older ones nothing uses */
    eddy_tools_close(w->cur->tools);
    for (gen *g = w->old; g; g = g->next)  /* left: abandoned native calls; closing their */
        eddy_tools_close(g->tools);        /* modules answers them while the loop still runs */
    for (size_t i = 0; i < w->nports; i++) /* calls still out get EDDY_ECANCELED first */
        eddy_mcp_port_close(w->ports[i].port, NULL, NULL);
    w->nports = 0;
    /* only now: a tool call that outlived its run could still reach the store */
    eddy_store_session_close(w->ss, NULL, NULL);
    w->ss = NULL;
    uv_close((uv_handle_t *)&w->drain, NULL);
    uv_close((uv_handle_t *)&w->collect, NULL);
    eddy__queue_close(&w->inbox);
}

/* Give freed memory back to the system: a tool stopped at its memory budget
 * must not leave the process that much bigger for good. */
static void on_collect(uv_timer_t *t)
{
    eddy__worker *w = t->data;
    collect_gens(w);
    eddy_alloc_collect();
}

/* Everything has gone back and no more will come: close. */
static void maybe_close(eddy__worker *w)
{
    if (!w->finishing || w->closing || w->running || eddy_mailboxes_pending(w->mb))
        return;
    w->closing = 1;
    eddy_llm_client_close(w->llm);
    w->llm = NULL;
    w->drain_deadline = eddy_now_ms() + 500; /* then tool calls are ended */
    uv_timer_start(&w->drain, on_drain, 0, 10);
}

static void *worker_main(void *arg)
{
    eddy__worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "eddy-worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_free(eddy__worker *w)
{
    if (w->mb)
        eddy_mailboxes_free(w->mb, (void (*)(void *))eddy__task_free);
    while (w->old) {
        gen *g = w->old;
        w->old = g->next;
        gen_free(g);
    }
    gen_free(w->cur);
    eddy_free(w->ports);
    if (uv_loop_close(&w->loop))
        EDDY_WARN("runtime", "worker %d: event loop closed with handles still open", w->index);
    pthread_mutex_destroy(&w->inbox.mu);
    eddy_run_stats_clear(&w->stats.run);
    eddy_free(w);
}

int eddy__worker_start(int index, eddy_job *job, eddy_store *store, eddy_trace_store *traces,
                       eddy_metrics *metrics, eddy_mcp *mcp, const char *state_path,
                       const char *trace_path, eddy__queue *done, eddy__worker **out, eddy_err *err)
{
    eddy__worker *w = eddy_calloc(1, sizeof(*w));
    int rc;
    *out = NULL;
    if (!w)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    w->index = index;
    w->job = job;
    w->done = done;
    w->traces = traces;
    w->metrics = metrics;
    w->state_path = state_path;
    w->trace_path = trace_path;
    atomic_init(&w->load, 0);
    if (uv_loop_init(&w->loop)) {
        eddy_free(w);
        return eddy_err_set(err, EDDY_EUV, "cannot create an event loop");
    }
    if (eddy__queue_init(&w->inbox, &w->loop, on_inbox, w)) {
        uv_loop_close(&w->loop);
        eddy_free(w);
        return eddy_err_set(err, EDDY_EUV, "cannot create an async handle");
    }
    uv_timer_init(&w->loop, &w->drain);
    w->drain.data = w;
    uv_timer_init(&w->loop, &w->collect);
    w->collect.data = w;
    uv_timer_start(&w->collect, on_collect, 1000, 1000);
    uv_unref((uv_handle_t *)&w->collect);
    if ((rc = eddy_store_session_new(store, &w->loop, &w->ss, err)) ||
        (rc = eddy_llm_client_new(&w->loop, &w->llm, err)) ||
        (rc = eddy_mailboxes_new(start_item, w, &w->mb, err)) ||
        (rc = gen_new(w, job, mcp, &w->cur, err)))
        goto fail;
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
        rc = eddy_err_set(err, EDDY_EIO, "cannot start worker thread %d", index);
        goto fail;
    }
    w->started = 1;
    *out = w;
    return 0;
fail:
    eddy_llm_client_close(w->llm);
    eddy_store_session_close(w->ss, NULL, NULL);
    if (w->cur)
        eddy_tools_close(w->cur->tools);
    for (size_t i = 0; i < w->nports; i++)
        eddy_mcp_port_close(w->ports[i].port, NULL, NULL);
    w->nports = 0;
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    worker_free(w);
    return rc;
}

void eddy__worker_post(eddy__worker *w, eddy__task *t)
{
    atomic_fetch_add(&w->load, 1);
    eddy__queue_push(&w->inbox, t);
}

void eddy__worker_on_reload(eddy__worker *w, eddy__reload_cb cb, void *ud)
{
    w->reload_cb = cb;
    w->reload_ud = ud;
}

void eddy__worker_reload(eddy__worker *w, const eddy_job *job, eddy_mcp *mcp)
{
    pthread_mutex_lock(&w->inbox.mu);
    w->reload_req = job;
    w->reload_mcp = mcp;
    uv_async_send(&w->inbox.async);
    pthread_mutex_unlock(&w->inbox.mu);
}

void eddy__worker_cancel(eddy__worker *w)
{
    pthread_mutex_lock(&w->inbox.mu);
    w->cancel_req = 1;
    uv_async_send(&w->inbox.async);
    pthread_mutex_unlock(&w->inbox.mu);
}

void eddy__worker_finish(eddy__worker *w)
{
    pthread_mutex_lock(&w->inbox.mu);
    if (!w->finish_req) /* once: after it the inbox may be closed */
        uv_async_send(&w->inbox.async);
    w->finish_req = 1;
    pthread_mutex_unlock(&w->inbox.mu);
}

long eddy__worker_load(const eddy__worker *w)
{
    return atomic_load(&((eddy__worker *)w)->load);
}

void eddy__worker_join(eddy__worker *w, eddy__worker_stats *stats)
{
    if (!w)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    if (stats) {
        *stats = w->stats;
        memset(&w->stats.run, 0, sizeof(w->stats.run)); /* the maps moved */
    }
    worker_free(w);
}
