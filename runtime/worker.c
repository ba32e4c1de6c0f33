/*
 * runtime/worker.c - run a job: one worker thread with one libuv loop.
 *
 * The source's reader thread fills a bounded queue; the worker takes records
 * while fewer than max_in_flight events are accepted and unfinished, turns
 * each into an event, routes it by key to the mailbox of each agent
 * instance (agent + key) whose actions handle its type, and dispatches.
 * A finished run writes its output (or dead-letter record), frees its
 * mailbox slot and pumps again. Bad records go to the dead-letter sink with
 * the source name, line and reason; the job goes on.
 *
 * Ending: at end of input with nothing in flight, or after SIGINT/SIGTERM
 * (stop reading; in-flight runs get shutdown_grace to finish, then are
 * abandoned; a second signal abandons at once), the worker closes its
 * clients and stores, waits for tool calls to end, and its loop returns.
 */
#include "eddy/runtime.h"
#include "eddy/buf.h"
#include "eddy/connector.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

typedef struct worker worker;

/* The runs started from one record: when the last finishes, the record is
 * acknowledged to its source (its position may then be committed). */
typedef struct ackref {
    uint64_t token;
    int n;
} ackref;

typedef struct work {
    worker *w;
    ackref *ack;
    eddy_agent_rt *rt;
    json_t *event;
    char *key, *event_id, *mbkey;
    eddy_run *run;
    struct work *prev, *next; /* running list */
} work;

struct worker {
    uv_loop_t loop;
    eddy_job *job;
    const eddy_run_opts *opts;
    eddy_llm_client *llm;
    eddy_tools *tools;
    eddy_memory *mem;
    eddy_trace_store *traces;
    eddy_agent_env env;
    eddy_agent_rt **agents;
    size_t nagents;
    eddy_mailboxes *mb;
    eddy_source *src;
    eddy_sink *out, *dead;
    uv_async_t src_async;
    uv_signal_t sigint, sigterm;
    uv_timer_t grace, drain;
    work *running;
    eddy_run_stats stats;
    long events, dead_letters, abandoned;
    uint64_t start_ms, drain_deadline;
    int stopping, signal_no, eof, closing;
};

static void pump(worker *w);

static void dead_letter(worker *w, json_t *rec)
{
    eddy_err e;
    w->dead_letters++;
    if (eddy_sink_write(w->dead, rec, &e))
        EDDY_ERROR("runtime", "cannot write a dead-letter record: %s", e.msg);
}

static void dead_record(worker *w, const eddy_record *rec, const char *event_id, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void dead_record(worker *w, const eddy_record *rec, const char *event_id, const char *fmt,
                        ...)
{
    char reason[EDDY_ERR_MSG_MAX];
    json_t *d;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (rec->event)
        d = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:O}", "type", "dead_letter", "reason", reason,
                      "source", eddy_source_name(w->src), "where", rec->where, "event_id", event_id,
                      "event", rec->event);
    else if ((d = json_pack("{s:s, s:s, s:s, s:i, s:s?}", "type", "dead_letter", "reason", reason,
                            "source", eddy_source_name(w->src), "line", (int)rec->line, "event_id",
                            event_id)) &&
             eddy_jsonl_raw_fields(d, rec->text, rec->len)) { /* also when it is not UTF-8 */
        json_decref(d);
        d = NULL;
    }
    if (!d)
        d = json_pack("{s:s, s:s, s:i}", "type", "dead_letter", "reason", reason, "line",
                      (int)rec->line);
    EDDY_WARN("runtime", "%s", reason);
    dead_letter(w, d);
    json_decref(d);
}

static void ack_release(worker *w, ackref *a, int done)
{
    if (!a)
        return;
    if (!done)
        a->token = UINT64_MAX; /* a run was abandoned: never acknowledge */
    if (--a->n > 0)
        return;
    if (a->token != UINT64_MAX && w->src)
        eddy_source_ack(w->src, a->token);
    eddy_free(a);
}

/* An output the sink could not take (now or later): to the dead letters,
 * with the reason. */
static void sink_failed(json_t *v, const char *reason, void *ud)
{
    worker *w = ud;
    json_t *d = json_pack("{s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason", reason, "sink",
                          eddy_sink_name(w->out), "output", v);
    dead_letter(w, d ? d : v);
    json_decref(d);
}

static void work_free(void *p)
{
    work *wk = p;
    if (wk->ack)
        ack_release(wk->w, wk->ack, 0);
    json_decref(wk->event);
    eddy_free(wk->key);
    eddy_free(wk->event_id);
    eddy_free(wk->mbkey);
    eddy_free(wk);
}

static void stop(worker *w, const char *why);

static void on_run(eddy_run_result *res, void *ud)
{
    work *wk = ud;
    worker *w = wk->w;
    eddy_err e;
    int rc;
    if (res->status == EDDY_ECANCELED) {
        w->abandoned++;
        EDDY_WARN("runtime", "event %s (key %s) abandoned at shutdown", wk->event_id, wk->key);
    } else if (res->status) {
        EDDY_WARN("runtime", "event %s (key %s, agent %s): %s", wk->event_id, wk->key,
                  eddy_agent_rt_def(wk->rt)->name, res->err.msg);
        dead_letter(w, res->output);
    } else if ((rc = eddy_sink_write(w->out, res->output, &e)) == EDDY_ECLOSING) {
        stop(w, e.msg); /* the output has nowhere to go: no new events */
    } else if (rc) {
        EDDY_ERROR("runtime", "event %s: %s", wk->event_id, e.msg);
        sink_failed(res->output, e.msg, w);
    }
    ack_release(w, wk->ack, res->status != EDDY_ECANCELED);
    wk->ack = NULL;
    if (wk->prev)
        wk->prev->next = wk->next;
    else
        w->running = wk->next;
    if (wk->next)
        wk->next->prev = wk->prev;
    eddy_mailbox_done(w->mb, wk->mbkey);
    work_free(wk);
    pump(w);
}

static void start_item(const char *mbkey, void *item, void *ud)
{
    work *wk = item;
    worker *w = ud;
    eddy_err e;
    (void)mbkey;
    if (eddy_agent_run_start(wk->rt, wk->event, wk->key, wk->event_id, &w->stats, on_run, wk,
                             &wk->run, &e)) {
        json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason", e.msg,
                              "event_id", wk->event_id, "key", wk->key, "event", wk->event);
        dead_letter(w, d);
        json_decref(d);
        eddy_mailbox_done(w->mb, wk->mbkey);
        ack_release(w, wk->ack, 1); /* handled: it is in the dead letters */
        wk->ack = NULL;
        work_free(wk);
        return;
    }
    wk->next = w->running;
    wk->prev = NULL;
    if (w->running)
        w->running->prev = wk;
    w->running = wk;
}

static char *event_id_of(json_t *ev, const char *pos)
{
    json_t *id = json_object_get(ev, "id");
    char *s;
    if (!id)
        id = json_object_get(ev, "event_id");
    if ((s = eddy_json_key_string(id)))
        return s;
    return eddy_strdup(pos);
}

/* Turn one record into work for each agent that handles its type. The
 * record is acknowledged to its source once all of that work is done (at
 * once when it went to the dead letters). */
static void accept_record(worker *w, eddy_record *rec)
{
    json_error_t je;
    json_t *ev, *kv, *tv;
    char *key = NULL, *id = NULL, pos[512];
    const char *type;
    int routed = 0;
    ackref *ack = NULL;
    if (rec->where)
        snprintf(pos, sizeof(pos), "%s", rec->where);
    else
        snprintf(pos, sizeof(pos), "%s:%ld", eddy_source_name(w->src), rec->line);
    if (rec->event) {
        ev = json_incref(rec->event);
    } else {
        const char *p = rec->text;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            goto ack_now; /* blank line: not an event */
        ev = json_loadb(rec->text, rec->len, 0, &je);
        if (!ev) {
            dead_record(w, rec, NULL, "%s:%d: not valid JSON: %s", pos, je.column, je.text);
            goto ack_now;
        }
    }
    id = event_id_of(ev, pos);
    if (!json_is_object(ev)) {
        dead_record(w, rec, id, "%s: an event must be a JSON object", pos);
        goto out;
    }
    kv = eddy_json_path(ev, w->job->key);
    if (!(key = eddy_json_key_string(kv)) || !*key) {
        dead_record(w, rec, id, "%s: event %s has no key '%s'%s", pos, id, w->job->key,
                    kv && !json_is_null(kv) ? " that is a string or number" : "");
        goto out;
    }
    tv = json_object_get(ev, "type");
    type = json_is_string(tv) ? json_string_value(tv) : "input";
    w->events++;
    ack = eddy_calloc(1, sizeof(*ack));
    if (ack) {
        ack->token = rec->token;
        ack->n = 1; /* held until every agent's work is queued */
    }
    for (size_t i = 0; i < w->nagents; i++) {
        work *wk;
        eddy_err e;
        if (!eddy_agent_handles(w->agents[i], type))
            continue;
        wk = eddy_calloc(1, sizeof(*wk));
        if (wk) {
            wk->w = w;
            wk->rt = w->agents[i];
            wk->event = json_incref(ev);
            wk->key = eddy_strdup(key);
            wk->event_id = eddy_strdup(id);
            wk->mbkey = eddy_aprintf("%s\x1f%s", eddy_agent_rt_def(wk->rt)->name, key);
        }
        if (!wk || !wk->key || !wk->event_id || !wk->mbkey ||
            eddy_mailbox_push(w->mb, wk->mbkey, wk, &e)) {
            if (wk)
                work_free(wk);
            dead_record(w, rec, id, "event %s: out of memory queueing it", id);
            continue;
        }
        if (ack) {
            wk->ack = ack;
            ack->n++;
        }
        routed++;
    }
    if (!routed)
        dead_record(w, rec, id, "%s: no agent handles events of type '%s'", pos, type);
    if (ack)
        ack_release(w, ack, 1);
    ack = NULL;
    goto done;
out:
    eddy_source_ack(w->src, rec->token);
done:
    eddy_free(id);
    eddy_free(key);
    json_decref(ev);
    return;
ack_now:
    eddy_source_ack(w->src, rec->token);
}

static void begin_close(worker *w);

static void pump(worker *w)
{
    eddy_record rec;
    if (w->closing)
        return;
    while (!w->stopping && !w->eof &&
           eddy_mailboxes_pending(w->mb) < (size_t)w->job->max_in_flight) {
        int r = eddy_source_next(w->src, &rec);
        if (r == 0)
            break;
        if (r < 0) {
            w->eof = 1;
            break;
        }
        accept_record(w, &rec);
        eddy_free(rec.text);
        eddy_free(rec.where);
        json_decref(rec.event);
    }
    eddy_mailboxes_dispatch(w->mb);
    if ((w->eof || w->stopping) && eddy_mailboxes_pending(w->mb) == 0)
        begin_close(w);
}

static void on_src(uv_async_t *a)
{
    pump(a->data);
}

static void abandon_all(worker *w)
{
    /* cancel reports synchronously through on_run, which unlinks the work */
    while (w->running)
        eddy_run_cancel(w->running->run);
}

static void on_grace(uv_timer_t *t)
{
    worker *w = t->data;
    EDDY_WARN("runtime", "shutdown grace period over: abandoning %zu running event(s)",
              eddy_mailboxes_running(w->mb));
    abandon_all(w);
}

/* Stop reading (WHY says what asked), give running events shutdown_grace. */
static void stop(worker *w, const char *why)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    EDDY_INFO("runtime", "%s: no new events; waiting up to %lld ms for %zu running", why,
              (long long)w->job->shutdown_grace_ms, eddy_mailboxes_running(w->mb));
    eddy_source_stop(w->src);
    /* queued events that have not started are not abandoned mid-run: they
     * were never begun; they are counted and reported */
    uv_timer_start(&w->grace, on_grace, (uint64_t)w->job->shutdown_grace_ms, 0);
    pump(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    worker *w = s->data;
    if (w->stopping) {
        EDDY_WARN("runtime", "second signal: abandoning running events now");
        abandon_all(w);
        return;
    }
    w->signal_no = signum;
    stop(w, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_drain(uv_timer_t *t)
{
    worker *w = t->data;
    if (eddy_tools_active(w->tools) > 0 && eddy_now_ms() < w->drain_deadline)
        return;
    if (eddy_tools_active(w->tools) > 0) {
        /* their runs are over; end the calls, whose callbacks come next */
        EDDY_WARN("runtime", "ending %d tool call(s) still running at exit",
                  eddy_tools_active(w->tools));
        eddy_tools_cancel_all(w->tools);
        return;
    }
    uv_timer_stop(t);
    eddy_tools_close(w->tools); /* e.g. the Fluss clients of lookups */
    uv_close((uv_handle_t *)&w->drain, NULL);
    eddy_memory_close(w->mem, NULL, NULL);
    w->mem = NULL;
}

static void finish_close(void *ud);

/* Everything has run: deliver what the sink still holds, then close. */
static void begin_close(worker *w)
{
    if (w->closing)
        return;
    w->closing = 1;
    if (eddy_sink_flush(w->out, finish_close, w) != 0)
        finish_close(w);
}

static void finish_close(void *ud)
{
    worker *w = ud;
    eddy_source_close(w->src);
    uv_close((uv_handle_t *)&w->src_async, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->grace, NULL);
    eddy_llm_client_close(w->llm);
    w->llm = NULL;
    w->drain_deadline = eddy_now_ms() + 500; /* then tool calls are ended */
    uv_timer_start(&w->drain, on_drain, 0, 10);
}

/* Open the source (SRC non-NULL) or sink named by CFG ({"kind": {...}}). */
static int open_connector(const json_t *cfg, const eddy_connector_env *env, eddy_source **src,
                          eddy_sink **sink, eddy_err *err)
{
    const char *kind = NULL;
    json_t *v;
    json_object_foreach((json_t *)cfg, kind, v)
    {
        break;
    }
    if (!kind)
        return eddy_err_set(err, EDDY_EINVAL, "empty connector configuration");
    eddy_source_factory sf = eddy_connector_source(kind);
    eddy_sink_factory kf = eddy_connector_sink(kind);
    if (src && sf)
        return sf(v, env, src, err);
    if (sink && kf)
        return kf(v, env, sink, err);
    return eddy_err_set(err, EDDY_EINVAL, "this eddy has no '%s' %s connector", kind,
                        src ? "source" : "sink");
}

static int setup(worker *w, eddy_err *err)
{
    const eddy_run_opts *o = w->opts;
    const char *input = o->input ? o->input : w->job->source;
    const json_t *src_cfg = o->input ? NULL : w->job->source_cfg;
    const json_t *sink_cfg = o->output ? NULL : w->job->sink_cfg;
    int rc;
    if (!input && !src_cfg)
        return eddy_err_set(err, EDDY_EINVAL,
                            "%s: no input: give 'source: {jsonl: FILE}' in the job or --input "
                            "FILE (- for stdin)",
                            w->job->file);
    if ((rc = eddy_memory_open(o->state ? o->state : w->job->state_path, &w->loop, &w->mem, err)) ||
        (rc = eddy_trace_store_open(o->traces ? o->traces : w->job->trace_path, &w->traces, err)) ||
        (rc = eddy_llm_client_new(&w->loop, &w->llm, err)) ||
        (rc = eddy_tools_new(&w->loop, w->job->dir, &w->tools, err)) ||
        (rc = eddy_mailboxes_new(start_item, w, &w->mb, err)))
        return rc;
    eddy_tools_configure(w->tools, w->job->modules);
    {
        const char *st = o->state ? o->state : w->job->state_path;
        const char *tr = o->traces ? o->traces : w->job->trace_path;
        if ((rc = eddy_tools_deny_file(w->tools, st, err)) ||
            (rc = eddy_tools_deny_file(w->tools, tr, err)))
            return rc;
    }
    w->env = (eddy_agent_env){&w->loop, w->llm, w->tools, w->mem, w->traces};
    w->agents = eddy_calloc(w->job->nagents, sizeof(eddy_agent_rt *));
    if (!w->agents)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < w->job->nagents; i++) {
        if ((rc = eddy_agent_rt_new(&w->job->agents[i], &w->env, &w->agents[i], err)))
            return rc;
        w->nagents++;
    }
    uv_async_init(&w->loop, &w->src_async, on_src);
    w->src_async.data = w;
    eddy_connector_env env = {&w->loop, w->mem, &w->src_async, w->job->dir, 1024};
    if ((rc = sink_cfg
                  ? open_connector(sink_cfg, &env, NULL, &w->out, err)
                  : eddy_sink_open_jsonl(o->output ? o->output : w->job->sink, 0, &w->out, err)) ||
        (rc = eddy_sink_open_jsonl(o->dead_letter ? o->dead_letter : w->job->dead_letter, 1,
                                   &w->dead, err)))
        return rc;
    eddy_sink_on_failure(w->out, sink_failed, w);
    if ((rc = src_cfg ? open_connector(src_cfg, &env, &w->src, NULL, err)
                      : eddy_source_open_jsonl(input, 1024, &w->src_async, &w->src, err)))
        return rc;
    uv_signal_init(&w->loop, &w->sigint);
    uv_signal_init(&w->loop, &w->sigterm);
    w->sigint.data = w->sigterm.data = w;
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_timer_init(&w->loop, &w->grace);
    uv_timer_init(&w->loop, &w->drain);
    w->grace.data = w->drain.data = w;
    return 0;
}

static void teardown(worker *w)
{
    if (w->mb)
        eddy_mailboxes_free(w->mb, work_free);
    for (size_t i = 0; i < w->nagents; i++)
        eddy_agent_rt_free(w->agents[i]);
    eddy_free(w->agents);
    if (w->tools && eddy_tools_active(w->tools) == 0)
        eddy_tools_free(w->tools);
    eddy_trace_store_close(w->traces);
    eddy_source_free(w->src);
    eddy_sink_free(w->out);
    eddy_sink_free(w->dead);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void print_summary(worker *w, uint64_t wall_ms)
{
    json_t *s = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "events",
        (json_int_t)w->events, "runs_ok", (json_int_t)w->stats.runs_ok, "runs_failed",
        (json_int_t)w->stats.runs_failed, "dead_letters", (json_int_t)w->dead_letters, "llm_calls",
        (json_int_t)w->stats.llm_calls, "llm_retries", (json_int_t)w->stats.llm_retries,
        "input_tokens", (json_int_t)w->stats.input_tokens, "output_tokens",
        (json_int_t)w->stats.output_tokens, "tool_calls", (json_int_t)w->stats.tool_calls,
        "tool_errors", (json_int_t)w->stats.tool_errors, "outputs",
        (json_int_t)eddy_sink_count(w->out), "abandoned", (json_int_t)w->abandoned, "wall_ms",
        (json_int_t)wall_ms);
    int priced = 0;
    for (size_t i = 0; i < w->job->nmodels; i++)
        priced |= w->job->models[i].has_price;
    if (s && priced)
        json_object_set_new(s, "cost", json_real(w->stats.cost));
    if (s && w->stats.per_model)
        json_object_set(s, "models", w->stats.per_model);
    if (s && w->stats.per_key)
        json_object_set(s, "keys", w->stats.per_key);
    if (!w->opts->quiet && priced)
        fprintf(stderr, "eddy: cost %.6g (at the models' prices)\n", w->stats.cost);
    if (!w->opts->quiet)
        fprintf(stderr,
                "eddy: %ld events, %ld runs ok, %ld failed, %ld dead letters, %ld LLM calls "
                "(%ld retries), %ld+%ld tokens, %ld tool calls (%ld errors), %.2f s\n",
                w->events, w->stats.runs_ok, w->stats.runs_failed, w->dead_letters,
                w->stats.llm_calls, w->stats.llm_retries, w->stats.input_tokens,
                w->stats.output_tokens, w->stats.tool_calls, w->stats.tool_errors,
                (double)wall_ms / 1000.0);
    if (w->opts->summary_json && s) {
        FILE *f = fopen(w->opts->summary_json, "w");
        if (f) {
            eddy_json_dumpf(s, f, JSON_INDENT(2));
            fputc('\n', f);
            fclose(f);
        }
    }
    json_decref(s);
    eddy_run_stats_clear(&w->stats);
}

int eddy_runtime_run(eddy_job *job, const eddy_run_opts *opts)
{
    worker w;
    pthread_t th;
    eddy_err e;
    int rc;
    struct rlimit rl;
    memset(&w, 0, sizeof(w));
    /* every LLM request in flight is a socket: allow as many as the system does */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    w.job = job;
    w.opts = opts;
    w.start_ms = eddy_now_ms();
    if (uv_loop_init(&w.loop)) {
        EDDY_ERROR("runtime", "cannot create the event loop");
        return 1;
    }
    if ((rc = setup(&w, &e))) {
        EDDY_ERROR("runtime", "%s", e.msg);
        eddy_llm_client_close(w.llm);
        if (w.mem)
            eddy_memory_close(w.mem, NULL, NULL);
        uv_walk(&w.loop, close_walk, NULL);
        uv_run(&w.loop, UV_RUN_DEFAULT);
        teardown(&w);
        uv_loop_close(&w.loop);
        return 1;
    }
    EDDY_INFO("runtime", "job '%s': reading %s, %zu agent(s), key '%s'", job->name,
              eddy_source_name(w.src), w.nagents, job->key);
    if (pthread_create(&th, NULL, worker_main, &w)) {
        EDDY_ERROR("runtime", "cannot start the worker thread");
        return 1;
    }
    pthread_join(th, NULL);
    print_summary(&w, eddy_now_ms() - w.start_ms);
    teardown(&w);
    if (uv_loop_close(&w.loop))
        EDDY_WARN("runtime", "event loop closed with handles still open");
    if (w.signal_no)
        return w.abandoned ? 3 : 0;
    return 0;
}
