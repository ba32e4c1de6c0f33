/*
 * runtime/reload.c - live reload of tools and prompts (SIGHUP, --watch).
 *
 * On SIGHUP, or with --watch when the job file, a prompt file or a tool
 * file changes (polled every 500 ms, acted on 250 ms after the last
 * change), the job file is loaded again with its tools, as `eddy check`
 * loads it. A version with a problem is refused: each problem is logged
 * with its file:line:col and the running version stays. A good version is
 * handed to every worker, which builds its tools and agents' runtimes over
 * it and makes it current for the runs started from then on; the runs in
 * progress finish with the version they started with.
 *
 * What a reload changes: the agents' prompts, tools (files, entries,
 * config, limits), budgets, tool_choice, output schemas, history, and the
 * MCP servers (a changed `mcp:` section starts a new manager for the new
 * version; the old one's servers serve the runs that began with it and
 * stop when the job ends). What it
 * does not: the agents themselves (names and order: events are routed to
 * them), models (the LLM clients hold their settings), sources, sinks,
 * stores, workers, checkpoints, the dashboard. A version that adds or
 * removes an agent or a model, or takes a value from the environment the
 * running one does not (the trace store redacts only those), is refused;
 * one that changes what a reload
 * does not change is taken with a warning naming what needs a restart.
 *
 * The workers take a version one after the other (each builds its
 * generation, then hands the version to the next): the version's JSON is
 * read by one thread at a time. A reload asked for while one goes on runs
 * when it is over.
 *
 * Every version stays until the job ends (a run may hold it; they are
 * small). Controller loop only, except on_worker (a worker's thread).
 */
#include "runtime_int.h"

#include <assert.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/log.h"

#define WATCH_POLL_MS 500
#define WATCH_SETTLE_MS 250

typedef struct watched {
    uv_fs_poll_t poll;
    struct eddy__reloader *r;
} watched;

struct eddy__reloader {
    uv_loop_t *loop;
    eddy_job *job; /* the version the job started with (the controller's) */
    eddy__worker **w;
    int nw;
    int watch;
    uv_signal_t sighup;
    uv_timer_t settle;
    uv_loop_t scratch; /* where a new version's tools are tried (never closed while
                        * workers run: libuv closes descriptors with a raw syscall,
                        * which ThreadSanitizer cannot pair with their reuse) */
    int scratch_ok;
    watched **files;
    size_t nfiles;
    eddy_job **versions; /* every version taken, freed at the end */
    size_t nversions;
    eddy_mcp *mcp;         /* the MCP manager of the newest version taken (or the first's) */
    const json_t *mcp_cfg; /* ... and the mcp: section it runs */
    eddy_mcp **mcps;       /* the managers reloads started, stopped at the end */
    size_t nmcps;
    uv_async_t done; /* the last worker took the version (or could not) */
    atomic_int failed;
    int busy;  /* a version is on its way through the workers */
    int again; /* ... and another reload was asked for meanwhile */
    int closed;
};

/* Block or unblock (HOW) SIGHUP in the calling thread; OLD (may be NULL)
 * gets the mask before. */
static void hup_mask(int how, sigset_t *old)
{
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(how, &hup, old);
}

/* Whether two optional strings are equal. */
static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* What NJ changes that a reload cannot: refused (returns -1, logged) or
 * only warned about. Points NJ's agents at the running version's models. */
static int compatible(eddy__reloader *r, eddy_job *nj)
{
    const eddy_job *oj = r->job;
    if (nj->nagents != oj->nagents) {
        EDDY_ERROR("reload",
                   "%s: the new version has %zu agent(s), the running one %zu: agents are not "
                   "reloaded; restart eddy to add or remove one. Keeping the running version",
                   nj->file, nj->nagents, oj->nagents);
        return -1;
    }
    for (size_t i = 0; i < nj->nagents; i++) {
        eddy_agent_def *a = &nj->agents[i];
        const eddy_llm_model *m = NULL;
        if (strcmp(a->name, oj->agents[i].name)) {
            EDDY_ERROR("reload",
                       "%s: agent %zu is '%s' in the new version, '%s' in the running one: "
                       "agents are not reloaded; restart eddy to rename one. Keeping the "
                       "running version",
                       nj->file, i + 1, a->name, oj->agents[i].name);
            return -1;
        }
        for (size_t k = 0; k < oj->nmodels && !m; k++)
            if (!strcmp(oj->models[k].name, a->model->name))
                m = &oj->models[k];
        if (!m) {
            EDDY_ERROR("reload",
                       "%s: agent '%s' uses model '%s', which the running version does not "
                       "have: models are not reloaded; restart eddy to add one. Keeping the "
                       "running version",
                       nj->file, a->name, a->model->name);
            return -1;
        }
        if (!same_str(m->base_url, a->model->base_url) || !same_str(m->model, a->model->model))
            EDDY_WARN("reload",
                      "%s: model '%s' changed; models are not reloaded: restart eddy to use "
                      "the new settings",
                      nj->file, m->name);
        a->model = (eddy_llm_model *)m; /* the running version's, which the clients know */
    }
    for (size_t i = 0; i < nj->nsecrets; i++) { /* the trace store redacts the first's only */
        size_t k = 0;
        while (k < oj->nsecrets && strcmp(oj->secrets[k], nj->secrets[i]))
            k++;
        if (k == oj->nsecrets) {
            EDDY_ERROR("reload",
                       "%s: the new version takes a value from the environment that the "
                       "running one does not (a tool's config, an MCP server's settings): the "
                       "trace store redacts only those it started with; restart eddy to use "
                       "it. Keeping the running version",
                       nj->file);
            return -1;
        }
    }
    if (!same_str(nj->key, oj->key) || !same_str(nj->source, oj->source) ||
        !same_str(nj->sink, oj->sink) || nj->workers != oj->workers ||
        !same_str(nj->state_path, oj->state_path) || !same_str(nj->trace_path, oj->trace_path))
        EDDY_WARN("reload",
                  "%s: the key, source, sink, stores or workers changed; a reload takes tools "
                  "and prompts only: restart eddy to apply the rest",
                  nj->file);
    return 0;
}

/* Worker WORKER built its generation (or not): the next worker's turn. */
static void on_worker(int worker, int status, const char *msg, void *ud)
{
    eddy__reloader *r = ud;
    if (status) {
        EDDY_ERROR("reload", "worker %d keeps the running version: %s", worker, msg);
        atomic_fetch_add(&r->failed, 1);
    }
    if (worker + 1 < r->nw) /* nversions is not written while a version is on its way */
        eddy__worker_reload(r->w[worker + 1], r->versions[r->nversions - 1], r->mcp);
    else
        uv_async_send(&r->done);
}

static void on_done(uv_async_t *a)
{
    eddy__reloader *r = a->data;
    if (!r->busy)
        return;
    r->busy = 0;
    if (!atomic_load(&r->failed))
        EDDY_INFO("reload",
                  "version %zu of %s is current on every worker; runs in progress finish with "
                  "the version they started with",
                  r->nversions + 1, r->job->file);
    if (r->again) {
        r->again = 0;
        eddy__reloader_trigger(r, "a reload asked for during the last one");
    }
}

static void watch_files(eddy__reloader *r, const eddy_job *job);

/* Whether two mcp: sections are the same (absent and empty are). */
static int same_mcp(const json_t *a, const json_t *b)
{
    if (!json_object_size(a) || !json_object_size(b))
        return !json_object_size(a) && !json_object_size(b);
    return json_equal((json_t *)a, (json_t *)b);
}

/* NJ's mcp: section differs from the running one: a manager for it (none
 * when it has no servers). Its servers come up in the background: their
 * tools appear as they do. Returns 0, or -1 (logged) to refuse NJ. */
static int start_mcp(eddy__reloader *r, const eddy_job *nj)
{
    eddy_mcp_config *cfg = NULL;
    eddy_mcp *m = NULL, **grown;
    eddy_err e;
    if (json_object_size(nj->mcp)) {
        if (!(grown = eddy_realloc(r->mcps, (r->nmcps + 1) * sizeof(*grown)))) {
            EDDY_ERROR("reload", "out of memory; keeping the running version");
            return -1;
        }
        r->mcps = grown;
        sigset_t old;
        int bad;
        hup_mask(SIG_BLOCK, &old); /* its thread is born with SIGHUP blocked */
        bad = eddy_mcp_config_new(nj->mcp, NULL, NULL, &cfg, &e) || eddy_mcp_new(cfg, &m, &e) ||
              eddy_mcp_start(m, &e);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (bad) {
            EDDY_ERROR("reload",
                       "%s: cannot start the MCP servers of the new version (%s); "
                       "keeping the running version",
                       nj->file, e.msg);
            eddy_mcp_free(m);
            eddy_mcp_config_free(cfg);
            return -1;
        }
        eddy_mcp_config_free(cfg);
        r->mcps[r->nmcps++] = m;
        EDDY_INFO("reload",
                  "%s: the mcp: section changed: its servers start for the new "
                  "version (the old ones stay for runs in progress until the job ends)",
                  nj->file);
    }
    r->mcp = m;
    r->mcp_cfg = nj->mcp;
    return 0;
}

void eddy__reloader_trigger(eddy__reloader *r, const char *why)
{
    eddy_diag d;
    eddy_job *nj = NULL;
    eddy_job **grown;
    if (!r || r->closed)
        return;
    if (r->busy) {
        r->again = 1;
        return;
    }
    EDDY_INFO("reload", "%s: loading %s again", why, r->job->file);
    eddy_diag_init(&d);
    eddy_job_io io = {0};
    io.loop = r->scratch_ok ? &r->scratch : NULL;
    if (eddy_job_load_io(r->job->file, EDDY_JOB_TOOLS, &io, &nj, &d)) {
        EDDY_ERROR("reload",
                   "%s: %zu problem(s) in the new version; keeping the running one:", r->job->file,
                   d.n);
        for (size_t i = 0; i < d.n; i++)
            EDDY_ERROR("reload", "%s", d.msgs[i]);
        eddy_diag_free(&d);
        return;
    }
    eddy_diag_free(&d);
    if (compatible(r, nj)) {
        eddy_job_free(nj);
        return;
    }
    if (!(grown = eddy_realloc(r->versions, (r->nversions + 1) * sizeof(*grown)))) {
        EDDY_ERROR("reload", "out of memory; keeping the running version");
        eddy_job_free(nj);
        return;
    }
    r->versions = grown;
    if (!same_mcp(r->mcp_cfg, nj->mcp) && start_mcp(r, nj)) {
        eddy_job_free(nj);
        return;
    }
    r->versions[r->nversions++] = nj;
    atomic_store(&r->failed, 0);
    r->busy = 1;
    if (r->nw > 0)
        eddy__worker_reload(r->w[0], nj, r->mcp);
    else
        uv_async_send(&r->done);
    if (r->watch)
        watch_files(r, nj); /* the new version may list other files */
}

static void on_sighup(uv_signal_t *s, int signum)
{
    (void)signum;
    eddy__reloader_trigger(s->data, "SIGHUP");
}

static void on_settle(uv_timer_t *t)
{
    eddy__reloader_trigger(t->data, "a file of the job changed");
}

static void on_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr)
{
    watched *f = h->data;
    (void)prev;
    (void)curr;
    (void)status; /* a file that went away counts as a change too */
    if (!f->r->closed)
        uv_timer_start(&f->r->settle, on_settle, WATCH_SETTLE_MS, 0);
}

static void free_watched(uv_handle_t *h)
{
    eddy_free(h->data);
}

static void unwatch(eddy__reloader *r)
{
    for (size_t i = 0; i < r->nfiles; i++) {
        uv_fs_poll_stop(&r->files[i]->poll);
        uv_close((uv_handle_t *)&r->files[i]->poll, free_watched);
    }
    eddy_free(r->files);
    r->files = NULL;
    r->nfiles = 0;
}

static void watch_one(eddy__reloader *r, const char *path)
{
    watched *f, **grown;
    if (!path)
        return;
    for (size_t i = 0; i < r->nfiles; i++) {
        char buf[4096];
        size_t n = sizeof(buf);
        if (uv_fs_poll_getpath(&r->files[i]->poll, buf, &n) == 0 && !strcmp(buf, path))
            return;
    }
    if (!(f = eddy_calloc(1, sizeof(*f))) ||
        !(grown = eddy_realloc(r->files, (r->nfiles + 1) * sizeof(*grown)))) {
        eddy_free(f);
        return;
    }
    r->files = grown;
    f->r = r;
    uv_fs_poll_init(r->loop, &f->poll);
    f->poll.data = f;
    if (uv_fs_poll_start(&f->poll, on_poll, path, WATCH_POLL_MS)) {
        uv_close((uv_handle_t *)&f->poll, free_watched);
        return;
    }
    uv_unref((uv_handle_t *)&f->poll); /* the job ends when its input does */
    r->files[r->nfiles++] = f;
}

/* Poll the job file and every prompt and tool file JOB names. */
static void watch_files(eddy__reloader *r, const eddy_job *job)
{
    unwatch(r);
    watch_one(r, job->file);
    for (size_t i = 0; i < job->nagents; i++) {
        const eddy_agent_def *a = &job->agents[i];
        watch_one(r, a->prompt_file[0]);
        watch_one(r, a->prompt_file[1]);
        for (size_t j = 0; j < a->ntools; j++)
            watch_one(r, a->tools[j].path);
    }
}

int eddy__reloader_new(uv_loop_t *loop, eddy_job *job, eddy_mcp *mcp, eddy__worker **w, int nw,
                       int watch, eddy__reloader **out, eddy_err *err)
{
    eddy__reloader *r = eddy_calloc(1, sizeof(*r));
    *out = NULL;
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->loop = loop;
    r->job = job;
    r->scratch_ok = uv_loop_init(&r->scratch) == 0;
    r->mcp = mcp;
    r->mcp_cfg = job->mcp;
    r->w = w;
    r->nw = nw;
    r->watch = watch;
    uv_signal_init(loop, &r->sighup);
    r->sighup.data = r;
    uv_timer_init(loop, &r->settle);
    r->settle.data = r;
    uv_unref((uv_handle_t *)&r->settle);
    uv_async_init(loop, &r->done, on_done); /* cannot fail on Linux (the loop's own fd) */
    r->done.data = r;
    uv_unref((uv_handle_t *)&r->done);
    *out = r; /* also on failure: its handles are the loop's until it closes them */
    if (uv_signal_start(&r->sighup, on_sighup, SIGHUP)) {
        eddy__reloader_close(r);
        return eddy_err_set(err, EDDY_EUV, "cannot catch SIGHUP");
    }
    uv_unref((uv_handle_t *)&r->sighup);
    /* every other thread was born with SIGHUP blocked (eddy run blocks it
     * first): it comes here, to the loop that handles it */
    hup_mask(SIG_UNBLOCK, NULL);
    for (int i = 0; i < nw; i++)
        eddy__worker_on_reload(w[i], on_worker, r);
    if (watch)
        watch_files(r, job);
    return 0;
}

void eddy__reloader_close(eddy__reloader *r)
{
    if (!r || r->closed)
        return;
    r->closed = 1;
    unwatch(r);
    /* libuv puts the default action (the end of the process) back when the
     * handle closes; SIGHUP stays blocked in this thread, the only one that
     * does not block it, until it is ignored again: a SIGHUP while the job
     * ends is not a crash */
    hup_mask(SIG_BLOCK, NULL);
    uv_close((uv_handle_t *)&r->sighup, NULL);
    uv_close((uv_handle_t *)&r->settle, NULL);
    uv_close((uv_handle_t *)&r->done, NULL);
    signal(SIGHUP, SIG_IGN);
}

void eddy__reloader_free(eddy__reloader *r)
{
    if (!r)
        return;
    assert(r->closed);
    for (size_t i = 0; i < r->nmcps; i++) { /* the workers have closed their ports */
        eddy_mcp_stop(r->mcps[i]);
        eddy_mcp_free(r->mcps[i]);
    }
    eddy_free(r->mcps);
    if (r->scratch_ok)
        uv_loop_close(&r->scratch);
    for (size_t i = 0; i < r->nversions; i++)
        eddy_job_free(r->versions[i]);
    eddy_free(r->versions);
    eddy_free(r);
}
