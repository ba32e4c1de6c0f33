/*
 * trace/metrics.c - the process's counters, gauges and histograms, rendered
 * in the Prometheus text format (version 0.0.4) for GET /metrics.
 *
 * Every series exists from the start: one per agent, model and tool the job
 * names (and one "(other)" for names it does not), one per worker. Updates
 * are relaxed atomic adds on those fixed slots, from any thread, with no
 * lock and no allocation; a scrape reads them as they are (each value is
 * exact, the set is not one instant: Prometheus's usual contract).
 */
#include "eddy/trace.h"
#include "eddy/buf.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* Upper bounds in seconds (the +Inf bucket is the count). */
static const double kLatency[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                  1,     2.5,  5,     10,   30,  60,   120};
#define NB (sizeof(kLatency) / sizeof(kLatency[0]))

typedef struct hist {
    atomic_long bucket[NB]; /* observations <= kLatency[i] (not cumulative here) */
    atomic_long count;
    atomic_llong sum_us;
} hist;

typedef struct agent_m {
    atomic_long ok, failed;
    hist latency;
} agent_m;

typedef struct model_m {
    atomic_long ok, failed, retries, replayed, waits;
    atomic_llong in_tok, out_tok, cached_tok, cost_nano;
    hist latency, wait;
} model_m;

typedef struct tool_m {
    atomic_long ok, failed, replayed;
    hist latency;
} tool_m;

typedef struct names {
    char **v;
    size_t n; /* the last slot, n, is "(other)" */
} names;

/* Tools are known by name only once their files ran on a worker: they are
 * added as they are first seen (under MU), up to MAX_TOOLS; a slot's name
 * never changes once published, so lookups read without the lock. */
#define MAX_TOOLS 256

struct eddy_metrics {
    names agents, models;
    char *tool_names[MAX_TOOLS];
    atomic_size_t ntools;
    pthread_mutex_t mu;
    agent_m *agent;
    model_m *model;
    tool_m tool[MAX_TOOLS + 1];
    int nworkers;
    atomic_long *worker_queue, *worker_runs;
    atomic_long counter[EDDY_M_NCOUNTERS];
    atomic_long gauge[EDDY_M_NGAUGES];
    hist checkpoint;
    uint64_t started_ns;
};

static int names_init(names *n, const char *const *v, size_t count)
{
    n->v = eddy_calloc(count + 1, sizeof(char *));
    if (!n->v)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (!(n->v[n->n++] = eddy_strdup(v[i] ? v[i] : "")))
            return -1;
    return 0;
}

static void names_free(names *n)
{
    for (size_t i = 0; n->v && i < n->n; i++)
        eddy_free(n->v[i]);
    eddy_free(n->v);
}

static int names_find(const names *n, const char *name)
{
    for (size_t i = 0; name && i < n->n; i++)
        if (!strcmp(n->v[i], name))
            return (int)i;
    return (int)n->n; /* "(other)" */
}

eddy_metrics *eddy_metrics_new(const eddy_metrics_names *nm, int nworkers)
{
    eddy_metrics *m = eddy_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nworkers = nworkers > 0 ? nworkers : 0;
    m->started_ns = eddy_wall_ns();
    atomic_init(&m->gauge[EDDY_M_SOURCE_LAG_RECORDS], -1);
    atomic_init(&m->gauge[EDDY_M_SOURCE_LAG_BYTES], -1);
    pthread_mutex_init(&m->mu, NULL);
    if (names_init(&m->agents, nm->agents, nm->nagents) ||
        names_init(&m->models, nm->models, nm->nmodels) ||
        !(m->agent = eddy_calloc(m->agents.n + 1, sizeof(*m->agent))) ||
        !(m->model = eddy_calloc(m->models.n + 1, sizeof(*m->model))) ||
        !(m->worker_queue = eddy_calloc((size_t)m->nworkers + 1, sizeof(atomic_long))) ||
        !(m->worker_runs = eddy_calloc((size_t)m->nworkers + 1, sizeof(atomic_long)))) {
        eddy_metrics_free(m);
        return NULL;
    }
    return m;
}

void eddy_metrics_free(eddy_metrics *m)
{
    if (!m)
        return;
    names_free(&m->agents);
    names_free(&m->models);
    for (size_t i = 0; i < atomic_load(&m->ntools); i++)
        eddy_free(m->tool_names[i]);
    pthread_mutex_destroy(&m->mu);
    eddy_free(m->agent);
    eddy_free(m->model);
    eddy_free(m->worker_queue);
    eddy_free(m->worker_runs);
    eddy_free(m);
}

int eddy_metrics_agent_id(const eddy_metrics *m, const char *name)
{
    return m ? names_find(&m->agents, name) : 0;
}

int eddy_metrics_model_id(const eddy_metrics *m, const char *name)
{
    return m ? names_find(&m->models, name) : 0;
}

static int find_tool(const eddy_metrics *m, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(m->tool_names[i], name))
            return (int)i;
    return -1;
}

int eddy_metrics_tool_id(eddy_metrics *m, const char *name)
{
    if (!m || !name)
        return MAX_TOOLS;
    size_t n = atomic_load_explicit(&m->ntools, memory_order_acquire);
    int id = find_tool(m, name, n);
    if (id >= 0)
        return id;
    pthread_mutex_lock(&m->mu);
    n = atomic_load_explicit(&m->ntools, memory_order_relaxed);
    if ((id = find_tool(m, name, n)) < 0 && n < MAX_TOOLS &&
        (m->tool_names[n] = eddy_strdup(name))) {
        id = (int)n;
        atomic_store_explicit(&m->ntools, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->mu);
    return id >= 0 ? id : MAX_TOOLS;
}

/* -- updates (any thread) ---------------------------------------------------- */

#define ADD(a, v) atomic_fetch_add_explicit(&(a), (v), memory_order_relaxed)

static void observe(hist *h, double seconds)
{
    if (!(seconds >= 0))
        seconds = 0;
    size_t i = 0;
    while (i < NB && seconds > kLatency[i])
        i++;
    if (i < NB)
        ADD(h->bucket[i], 1);
    ADD(h->count, 1);
    ADD(h->sum_us, (long long)llround(seconds * 1e6));
}

static int slot(int id, size_t n)
{
    return id >= 0 && (size_t)id <= n ? id : (int)n;
}

void eddy_metrics_count(eddy_metrics *m, eddy_metrics_counter c, long n)
{
    if (m && c >= 0 && c < EDDY_M_NCOUNTERS)
        ADD(m->counter[c], n);
}

void eddy_metrics_gauge(eddy_metrics *m, eddy_metrics_gauge_id g, long v)
{
    if (m && g >= 0 && g < EDDY_M_NGAUGES)
        atomic_store_explicit(&m->gauge[g], v, memory_order_relaxed);
}

void eddy_metrics_worker(eddy_metrics *m, int worker, long queued)
{
    if (m && worker >= 0 && worker < m->nworkers)
        atomic_store_explicit(&m->worker_queue[worker], queued, memory_order_relaxed);
}

void eddy_metrics_worker_run(eddy_metrics *m, int worker)
{
    if (m && worker >= 0 && worker < m->nworkers)
        ADD(m->worker_runs[worker], 1);
}

void eddy_metrics_run(eddy_metrics *m, int agent, int ok, double seconds)
{
    if (!m)
        return;
    agent_m *a = &m->agent[slot(agent, m->agents.n)];
    ADD(*(ok ? &a->ok : &a->failed), 1);
    observe(&a->latency, seconds);
}

void eddy_metrics_llm(eddy_metrics *m, int model, const eddy_metrics_llm_call *c)
{
    if (!m)
        return;
    model_m *x = &m->model[slot(model, m->models.n)];
    if (c->replayed) {
        ADD(x->replayed, 1);
        return;
    }
    ADD(*(c->ok ? &x->ok : &x->failed), 1);
    ADD(x->retries, c->retries);
    ADD(x->in_tok, c->input_tokens);
    ADD(x->out_tok, c->output_tokens);
    ADD(x->cached_tok, c->cached_tokens);
    ADD(x->cost_nano, (long long)llround(c->cost * 1e9));
    observe(&x->latency, c->seconds);
    if (c->wait_seconds > 0) {
        ADD(x->waits, 1);
        observe(&x->wait, c->wait_seconds);
    }
}

void eddy_metrics_tool(eddy_metrics *m, int tool, int ok, int replayed, double seconds)
{
    if (!m)
        return;
    tool_m *t = &m->tool[tool >= 0 && tool < MAX_TOOLS ? tool : MAX_TOOLS];
    if (replayed) {
        ADD(t->replayed, 1);
        return;
    }
    ADD(*(ok ? &t->ok : &t->failed), 1);
    observe(&t->latency, seconds);
}

void eddy_metrics_checkpoint(eddy_metrics *m, double seconds)
{
    if (m)
        observe(&m->checkpoint, seconds);
}

/* -- rendering (any thread) ----------------------------------------------------- */

#define LOAD(a) atomic_load_explicit(&(a), memory_order_relaxed)

static void head(eddy_buf *b, const char *name, const char *type, const char *help)
{
    eddy_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static void label(eddy_buf *b, const char *k, const char *v)
{
    eddy_buf_printf(b, "%s=\"", k);
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            eddy_buf_putc(b, '\\');
        if (*p == '\n')
            eddy_buf_puts(b, "\\n");
        else
            eddy_buf_putc(b, *p);
    }
    eddy_buf_putc(b, '"');
}

static const char *name_at(const names *n, size_t i)
{
    return i < n->n ? n->v[i] : "(other)";
}

/* NAME{K1="V1",K2="V2"} (labels when K1 / K2 are not NULL), then a space. */
static void series(eddy_buf *b, const char *name, const char *k1, const char *v1, const char *k2,
                   const char *v2)
{
    eddy_buf_puts(b, name);
    if (k1) {
        eddy_buf_putc(b, '{');
        label(b, k1, v1);
        if (k2) {
            eddy_buf_putc(b, ',');
            label(b, k2, v2);
        }
        eddy_buf_putc(b, '}');
    }
    eddy_buf_putc(b, ' ');
}

static void sample(eddy_buf *b, const char *name, const char *k1, const char *v1, const char *k2,
                   const char *v2, long long value)
{
    series(b, name, k1, v1, k2, v2);
    eddy_buf_printf(b, "%lld\n", value);
}

/* Tool series I of the NT published, NT being "(other)". */
static const char *tool_name(const eddy_metrics *m, size_t i, size_t nt)
{
    return i < nt ? m->tool_names[i] : "(other)";
}

static const tool_m *tool_at(const eddy_metrics *m, size_t i, size_t nt)
{
    return &m->tool[i < nt ? i : MAX_TOOLS];
}

/* NAME{KEY="V",status="ok"} OK and NAME{KEY="V",status="error"} FAILED. */
static void ok_error(eddy_buf *b, const char *name, const char *key, const char *v, long ok,
                     long failed)
{
    sample(b, name, key, v, "status", "ok", ok);
    sample(b, name, key, v, "status", "error", failed);
}

static void hist_out(eddy_buf *b, const char *name, const char *k, const char *v, const hist *h)
{
    char bucket[96], le[32];
    long cum = 0;
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    for (size_t i = 0; i <= NB; i++) {
        if (i < NB) {
            cum += LOAD(h->bucket[i]);
            snprintf(le, sizeof(le), "%g", kLatency[i]);
        } else {
            cum = LOAD(h->count);
            snprintf(le, sizeof(le), "+Inf");
        }
        sample(b, bucket, k ? k : "le", k ? v : le, k ? "le" : NULL, le, cum);
    }
    snprintf(bucket, sizeof(bucket), "%s_sum", name);
    series(b, bucket, k, v, NULL, NULL);
    eddy_buf_printf(b, "%.6f\n", (double)LOAD(h->sum_us) / 1e6);
    snprintf(bucket, sizeof(bucket), "%s_count", name);
    sample(b, bucket, k, v, NULL, NULL, LOAD(h->count));
}

static const struct {
    const char *name, *help;
} kCounters[EDDY_M_NCOUNTERS] = {
    [EDDY_M_EVENTS_IN] = {"eddy_events_in_total", "Records read from the source."},
    [EDDY_M_EVENTS_OUT] = {"eddy_events_out_total", "Outputs delivered to the sink."},
    [EDDY_M_DEAD_LETTERS] = {"eddy_dead_letters_total", "Records sent to the dead letters."},
    [EDDY_M_CHECKPOINT_FAILURES] = {"eddy_checkpoint_failures_total", "Checkpoints that failed."},
    [EDDY_M_SPANS_DROPPED] = {"eddy_trace_spans_dropped_total",
                              "Spans not kept (sampling's held spans over their bound)."},
};

static const struct {
    const char *name, *help;
} kGauges[EDDY_M_NGAUGES] = {
    [EDDY_M_IN_FLIGHT] = {"eddy_in_flight", "Records accepted and not finished."},
    [EDDY_M_SOURCE_LAG_RECORDS] = {"eddy_source_lag_records",
                                   "Records of the source not yet taken in (its newest offsets "
                                   "minus what was read)."},
    [EDDY_M_SOURCE_LAG_BYTES] = {"eddy_source_lag_bytes",
                                 "Bytes of the source file not yet taken in."},
};

int eddy_metrics_render(const eddy_metrics *m, eddy_buf *b)
{
    for (int c = 0; c < EDDY_M_NCOUNTERS; c++) {
        head(b, kCounters[c].name, "counter", kCounters[c].help);
        sample(b, kCounters[c].name, NULL, NULL, NULL, NULL, LOAD(m->counter[c]));
    }
    for (int g = 0; g < EDDY_M_NGAUGES; g++) {
        if (LOAD(m->gauge[g]) < 0) /* unknown */
            continue;
        head(b, kGauges[g].name, "gauge", kGauges[g].help);
        sample(b, kGauges[g].name, NULL, NULL, NULL, NULL, LOAD(m->gauge[g]));
    }
    head(b, "eddy_worker_queued", "gauge", "Records waiting or running on each worker.");
    for (int i = 0; i < m->nworkers; i++) {
        char w[16];
        snprintf(w, sizeof(w), "%d", i);
        sample(b, "eddy_worker_queued", "worker", w, NULL, NULL, LOAD(m->worker_queue[i]));
    }
    head(b, "eddy_worker_runs_total", "counter", "Runs finished on each worker.");
    for (int i = 0; i < m->nworkers; i++) {
        char w[16];
        snprintf(w, sizeof(w), "%d", i);
        sample(b, "eddy_worker_runs_total", "worker", w, NULL, NULL, LOAD(m->worker_runs[i]));
    }
    head(b, "eddy_runs_total", "counter", "Runs finished, by agent and status.");
    for (size_t i = 0; i <= m->agents.n; i++)
        ok_error(b, "eddy_runs_total", "agent", name_at(&m->agents, i), LOAD(m->agent[i].ok),
                 LOAD(m->agent[i].failed));
    head(b, "eddy_run_duration_seconds", "histogram", "Wall time of a run, by agent.");
    for (size_t i = 0; i <= m->agents.n; i++)
        hist_out(b, "eddy_run_duration_seconds", "agent", name_at(&m->agents, i),
                 &m->agent[i].latency);
    head(b, "eddy_llm_calls_total", "counter",
         "LLM calls answered (ok) or failed after their retries, by model.");
    for (size_t i = 0; i <= m->models.n; i++)
        ok_error(b, "eddy_llm_calls_total", "model", name_at(&m->models, i), LOAD(m->model[i].ok),
                 LOAD(m->model[i].failed));
    head(b, "eddy_llm_retries_total", "counter", "Attempts of LLM calls beyond their first.");
    for (size_t i = 0; i <= m->models.n; i++)
        sample(b, "eddy_llm_retries_total", "model", name_at(&m->models, i), NULL, NULL,
               LOAD(m->model[i].retries));
    head(b, "eddy_llm_replayed_total", "counter",
         "LLM calls answered from the journal (not sent again after a restart).");
    for (size_t i = 0; i <= m->models.n; i++)
        sample(b, "eddy_llm_replayed_total", "model", name_at(&m->models, i), NULL, NULL,
               LOAD(m->model[i].replayed));
    head(b, "eddy_llm_tokens_total", "counter", "Tokens of LLM calls, by model and type.");
    for (size_t i = 0; i <= m->models.n; i++) {
        const char *n = name_at(&m->models, i);
        sample(b, "eddy_llm_tokens_total", "model", n, "type", "input", LOAD(m->model[i].in_tok));
        sample(b, "eddy_llm_tokens_total", "model", n, "type", "output", LOAD(m->model[i].out_tok));
        sample(b, "eddy_llm_tokens_total", "model", n, "type", "cached_input",
               LOAD(m->model[i].cached_tok));
    }
    head(b, "eddy_llm_cost_total", "counter", "Cost of LLM calls (the models' prices), by model.");
    for (size_t i = 0; i <= m->models.n; i++) {
        series(b, "eddy_llm_cost_total", "model", name_at(&m->models, i), NULL, NULL);
        eddy_buf_printf(b, "%.9f\n", (double)LOAD(m->model[i].cost_nano) / 1e9);
    }
    head(b, "eddy_llm_duration_seconds", "histogram",
         "Time of an LLM call from its request to its answer (retries included, the wait for a "
         "slot not), by model.");
    for (size_t i = 0; i <= m->models.n; i++)
        hist_out(b, "eddy_llm_duration_seconds", "model", name_at(&m->models, i),
                 &m->model[i].latency);
    head(b, "eddy_llm_wait_seconds", "histogram",
         "Time LLM calls waited for a concurrency or rate-limit slot, by model (calls that "
         "waited).");
    for (size_t i = 0; i <= m->models.n; i++)
        hist_out(b, "eddy_llm_wait_seconds", "model", name_at(&m->models, i), &m->model[i].wait);
    head(b, "eddy_tool_calls_total", "counter", "Tool calls, by tool and status.");
    size_t nt = atomic_load_explicit(&m->ntools, memory_order_acquire);
    for (size_t i = 0; i <= nt; i++) {
        const tool_m *t = tool_at(m, i, nt);
        ok_error(b, "eddy_tool_calls_total", "tool", tool_name(m, i, nt), LOAD(t->ok),
                 LOAD(t->failed));
    }
    head(b, "eddy_tool_replayed_total", "counter", "Tool calls answered from the journal.");
    for (size_t i = 0; i <= nt; i++)
        sample(b, "eddy_tool_replayed_total", "tool", tool_name(m, i, nt), NULL, NULL,
               LOAD(tool_at(m, i, nt)->replayed));
    head(b, "eddy_tool_duration_seconds", "histogram", "Time of a tool call, by tool.");
    for (size_t i = 0; i <= nt; i++)
        hist_out(b, "eddy_tool_duration_seconds", "tool", tool_name(m, i, nt),
                 &tool_at(m, i, nt)->latency);
    head(b, "eddy_checkpoint_duration_seconds", "histogram",
         "Time from a checkpoint's start to its commit.");
    hist_out(b, "eddy_checkpoint_duration_seconds", NULL, NULL, &m->checkpoint);
    head(b, "eddy_start_time_seconds", "gauge", "When the process started (Unix time).");
    eddy_buf_printf(b, "eddy_start_time_seconds %.3f\n", (double)m->started_ns / 1e9);
    return b->oom ? EDDY_ENOMEM : 0;
}
