/*
 * agents/run.c - the run executor and the `react` action.
 *
 * A run renders the prompts, then loops: chat; if the model asked for tools,
 * run them all concurrently and chat again; until an answer without tool
 * calls or a budget is spent (turns, tokens, tool calls, wall time, cost).
 * At the end the key's memory document and this run's messages (neutral
 * history, llm.h) are committed, and only then is the output reported. A
 * failed run reports a dead-letter record instead and commits nothing.
 *
 * An answer cut off by max_tokens (finish reason `length`) is never used:
 * its tool calls are not run nor echoed back, and the run fails naming the
 * limit. A model that writes a tool call as text (its own tags, bare JSON
 * naming a tool) instead of calling it fails the run too: the server does
 * not parse that model's tool calls. With an output schema the answer must
 * be JSON matching it; one invalid answer gets a repair turn carrying the
 * validation error, a second fails the run with that error.
 *
 * Lifetime: a run counts its outstanding operations (LLM request, tool
 * calls, memory commit, wall timer). It reports once (`reported`) and is
 * freed when nothing is outstanding, never inside one of its own callbacks'
 * callers: the free happens at the end of the callback that drops the last
 * reference.
 */
#include "eddy/agent.h"
#include "eddy/buf.h"
#include "eddy/jschema.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "run_int.h"

#include <string.h>

struct eddy_agent_rt {
    const eddy_agent_def *def;
    eddy_agent_env *env;
    eddy_tool **tools;
    size_t ntools;
    eddy_llm_tool_def *tool_defs; /* in the job's order; strings borrowed from tools */
    int metrics_agent;            /* its series in env->metrics */
    int live;                     /* runs started and not yet freed */
};

typedef struct tool_slot {
    eddy_run *run;
    eddy_span *span;
    char *call_id, *name;
    char *result; /* the text for the model, when done */
    int failed;
    int step;        /* its step number in the run */
    int state_ops;   /* ctx.state operations so far */
    int reconciling; /* its reconcile is running */
    eddy_tool *tool;
    json_t *args; /* kept while a side effect's PENDING entry commits */
    uint64_t started_ns;
} tool_slot;

struct eddy_run {
    eddy_agent_rt *rt;
    eddy_run_stats *stats;
    json_t *event;
    char *key, *event_id;
    eddy_llm_conv conv; /* the whole conversation sent to the model */
    size_t new_from;    /* this run's part of it (to persist) starts here */
    eddy_llm_request rq;
    json_t *output_schema; /* borrowed from the agent's action, or NULL */
    json_t *output_value;  /* the parsed structured answer */
    int repairs;
    double cost;
    const eddy_llm_model *answered_by;
    eddy_tool_memory *mem;
    eddy_span *span, *llm_span;
    eddy_span *commit_span;  /* eddy.memory.write, while the end commits */
    uint64_t llm_started_ns; /* when llm_span began */
    uint64_t started_ns;     /* when the run began */
    eddy_llm_req *llm_req;
    tool_slot *slots;
    size_t nslots, slots_pending;
    uv_timer_t wall;
    int turns, tool_calls, refs, reported;
    long in_tokens, out_tokens, cached_tokens;
    eddy_run_ref ref;          /* agent and key point into the run's strings */
    const eddy_replay *replay; /* an earlier try's journal, or NULL */
    int step;                  /* steps asked for so far */
    int tool_seq;              /* tool calls finished so far */
    int loaded;                /* holds the store's cache entry of the key */
    int committing;            /* the end is being committed */
    /* what is reported once the end is committed (deliver() builds the
     * eddy_run_result: its 1 KB message is not kept for the run's life) */
    int res_status;
    long res_cause;
    char *res_msg; /* the failure's message; NULL when ok (or out of memory) */
    json_t *res_output;
    json_t *models_used, *tools_used; /* names, each once (the trace's row) */
    uv_timer_t later;                 /* reports that must not run inside the caller */
    eddy_run_cb cb;
    void *ud;
    int counted; /* in rt->live */
};

static void run_turn(eddy_run *r);

/* -- agent runtime ---------------------------------------------------------- */

static int load_lua_tool(eddy_tools *h, const eddy_tool_ref *ref, eddy_tool **out, eddy_err *err)
{
    eddy_tool_opts o;
    eddy_tool_ref_opts(ref, &o);
    return eddy_tools_load_opts(h, ref->path, &o, out, err);
}

int eddy_agent_rt_new(const eddy_agent_def *def, eddy_agent_env *env, eddy_agent_rt **out,
                      eddy_err *err)
{
    eddy_agent_rt *rt = eddy_calloc(1, sizeof(*rt));
    const eddy_tool_ref **from = NULL; /* the entry each tool came from, for messages */
    size_t cap = 0;
    int rc = 0;
    *out = NULL;
    for (size_t i = 0; i < def->ntools; i++)
        cap +=
            def->tools[i].mcp_server ? eddy__mcp_tools_count(env->mcp_catalog, &def->tools[i]) : 1;
    if (!rt || !(rt->tool_defs = eddy_calloc(cap + 1, sizeof(eddy_llm_tool_def))) ||
        !(rt->tools = eddy_calloc(cap + 1, sizeof(eddy_tool *))) ||
        !(from = eddy_calloc(cap + 1, sizeof(*from)))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    rt->def = def;
    rt->env = env;
    rt->metrics_agent = eddy_metrics_agent_id(env->metrics, def->name);
    for (size_t i = 0; i < def->ntools; i++) {
        const eddy_tool_ref *ref = &def->tools[i];
        size_t k = rt->ntools;
        if (ref->mcp_server) { /* the server's tools now; names that clash are left out */
            if ((rc = eddy__mcp_tools_add(def, env, ref, rt->tools, &rt->ntools, cap, err)))
                goto fail;
            for (; k < rt->ntools; k++) {
                from[k] = ref;
                rt->tool_defs[k].name = eddy_tool_name(rt->tools[k]);
                rt->tool_defs[k].description = eddy_tool_description(rt->tools[k]);
                rt->tool_defs[k].parameters = eddy_tool_schema(rt->tools[k]);
            }
            continue;
        }
        if ((rc = ref->kind
                      ? eddy_tools_load_native(env->tools, ref->kind, ref->cfg, &rt->tools[k], err)
                      : load_lua_tool(env->tools, ref, &rt->tools[k], err))) {
            if (ref->kind)
                eddy_err_prefix(err, "agent '%s': %s: %s: ", def->name, ref->where, ref->kind);
            else
                eddy_err_prefix(err, "agent '%s': ", def->name);
            goto fail;
        }
        for (size_t j = 0; j < k; j++)
            if (!strcmp(eddy_tool_name(rt->tools[j]), eddy_tool_name(rt->tools[k]))) {
                if (from[j]->mcp_server) { /* a server's list must not stop a worker: the
                                            * job's own tool keeps the name */
                    const char *mt, *ms = eddy__mcp_tool_server(rt->tools[j], &mt);
                    EDDY_WARN("mcp",
                              "agent '%s': %s: tool '%s' of MCP server '%s' is left out: the "
                              "agent has a tool named '%s' already (%s)",
                              def->name, from[j]->where ? from[j]->where : "?", mt ? mt : "?",
                              ms ? ms : "?", eddy_tool_name(rt->tools[k]),
                              ref->where ? ref->where : "?");
                    memmove(&rt->tools[j], &rt->tools[j + 1], (k - j) * sizeof(*rt->tools));
                    memmove(&rt->tool_defs[j], &rt->tool_defs[j + 1],
                            (k - j - 1) * sizeof(*rt->tool_defs));
                    memmove(&from[j], &from[j + 1], (k - j - 1) * sizeof(*from));
                    k--;
                    rt->ntools--;
                    j--; /* (wraps at 0, back to 0 by the loop) */
                    continue;
                }
                rc = eddy_err_set(
                    err, EDDY_EEXIST, "agent '%s': %s: tool name '%s' is also the name of %s (%s)",
                    def->name, ref->where ? ref->where : "?", eddy_tool_name(rt->tools[k]),
                    eddy_tool_path(rt->tools[j]), from[j]->where ? from[j]->where : "?");
                goto fail;
            }
        if (!strcmp(eddy_tool_name(rt->tools[k]), EDDY_LLM_OUTPUT_TOOL)) {
            rc = eddy_err_set(err, EDDY_EEXIST,
                              "agent '%s': %s: the tool name '%s' is reserved for structured "
                              "output",
                              def->name, ref->where ? ref->where : "?", EDDY_LLM_OUTPUT_TOOL);
            goto fail;
        }
        from[k] = ref;
        rt->tool_defs[k].name = eddy_tool_name(rt->tools[k]);
        rt->tool_defs[k].description = eddy_tool_description(rt->tools[k]);
        rt->tool_defs[k].parameters = eddy_tool_schema(rt->tools[k]);
        rt->ntools++;
    }
    eddy_free(from);
    *out = rt;
    return 0;
fail:
    eddy_free(from);
    eddy_agent_rt_free(rt);
    return rc;
}

void eddy_agent_rt_free(eddy_agent_rt *rt)
{
    if (!rt)
        return;
    for (size_t i = 0; rt->tool_defs && i < rt->ntools; i++)
        json_decref(rt->tool_defs[i].wire);
    eddy_free(rt->tool_defs);
    eddy_free(rt->tools);
    eddy_free(rt);
}

const eddy_agent_def *eddy_agent_rt_def(const eddy_agent_rt *rt)
{
    return rt->def;
}

int eddy_agent_rt_live(const eddy_agent_rt *rt)
{
    return rt->live;
}

int eddy_agent_handles(const eddy_agent_rt *rt, const char *type)
{
    for (size_t i = 0; i < rt->def->non; i++)
        if (!strcmp(rt->def->on[i], type))
            return 1;
    return 0;
}

/* -- run lifecycle ---------------------------------------------------------- */

static void run_free(eddy_run *r)
{
    if (r->counted)
        r->rt->live--;
    json_decref(r->event);
    json_decref(r->res_output);
    json_decref(r->models_used);
    json_decref(r->tools_used);
    eddy_free(r->res_msg);
    json_decref(r->output_value);
    eddy_llm_conv_clear(&r->conv);
    eddy_tool_memory_free(r->mem);
    for (size_t i = 0; i < r->nslots; i++) {
        eddy_free(r->slots[i].call_id);
        eddy_free(r->slots[i].name);
        eddy_free(r->slots[i].result);
        json_decref(r->slots[i].args);
        eddy_span_end(r->slots[i].span, NULL);
    }
    eddy_free(r->slots);
    eddy_free(r->key);
    eddy_free(r->event_id);
    eddy_free(r);
}

static void unref(eddy_run *r)
{
    if (--r->refs == 0)
        run_free(r);
}

static void wall_closed(uv_handle_t *h)
{
    unref(h->data);
}

/* NAME into the array *SET unless it is there. */
static void add_name(json_t **set, const char *name)
{
    size_t i;
    json_t *v;
    if (!*set && !(*set = json_array()))
        return;
    json_array_foreach(*set, i, v) if (!strcmp(json_string_value(v), name)) return;
    json_array_append_new(*set, json_string(name));
}

#define TRACE_TEXT_MAX 16384 /* of the event and of the output, for the search */

/* V as text (a string as itself), at most TRACE_TEXT_MAX bytes, never cut
 * inside a character. */
static json_t *trace_text(json_t *v)
{
    char *t = !v                  ? NULL
              : json_is_string(v) ? eddy_strdup(json_string_value(v))
                                  : eddy_json_dumps(v);
    json_t *s;
    if (!t)
        return json_string("");
    size_t n = strlen(t), k = eddy_utf8_cut(t, n, TRACE_TEXT_MAX);
    s = json_stringn(t, k);
    eddy_free(t);
    return s ? s : json_string("");
}

static json_t *summary(eddy_run *r)
{
    json_t *s = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i}", "agent", r->rt->def->name,
                          "key", r->key, "event_id", r->event_id, "input_tokens",
                          (json_int_t)r->in_tokens, "output_tokens", (json_int_t)r->out_tokens,
                          "llm_calls", r->turns, "tool_calls", r->tool_calls, "turns", r->turns);
    if (!s)
        return NULL;
    if (r->rt->def->model->has_price)
        json_object_set_new(s, "cost", json_real(r->cost));
    if (eddy_trace_keeps_content(r->rt->env->traces)) {
        json_t *out = json_object_get(r->res_output, "output");
        json_object_set_new(s, "input", trace_text(r->event));
        json_object_set_new(s, "output", trace_text(out ? out : r->res_output));
    }
    if (r->models_used)
        json_object_set(s, "models", r->models_used);
    if (r->tools_used)
        json_object_set(s, "tools", r->tools_used);
    return s;
}

void eddy_output_id(const char *agent, int64_t part, int64_t pos, char buf[33])
{
    char k[600];
    int n = snprintf(k, sizeof(k), "%s\x1f%lld\x1f%lld", agent, (long long)part, (long long)pos);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(k) ? (size_t)n : sizeof(k) - 1;
    snprintf(buf, 33, "%016llx%016llx", (unsigned long long)eddy_store_hash(k, len, 0),
             (unsigned long long)eddy_store_hash(k, len, 0x5bd1e995));
}

/* The event the run hands on (its output, or its dead letter) as a span
 * under the run's: what left, when, and under which id. */
static void emit_span(eddy_run *r, json_t *out)
{
    const char *type = json_string_value(json_object_get(out, "type"));
    eddy_span *sp;
    if (!type || !r->span ||
        !(sp = eddy_span_start(r->rt->env->traces, r->span, "eddy.emit", EDDY_SPAN_PRODUCER)))
        return;
    eddy_span_set_str(sp, "eddy.emit.type", type);
    if (json_is_string(json_object_get(out, "output_id")))
        eddy_span_set_str(sp, "eddy.output_id",
                          json_string_value(json_object_get(out, "output_id")));
    if (json_is_string(json_object_get(out, "reason")))
        eddy_span_set_str(sp, "eddy.dead_letter.reason",
                          json_string_value(json_object_get(out, "reason")));
    eddy_span_end(sp, NULL);
}

/* The end, once committed (or when nothing is committed): end the root
 * span, close the timers, tell the caller. */
static void deliver(eddy_run *r)
{
    eddy_run_result res = {0};
    json_t *sum = summary(r);
    res.status = r->res_status;
    if (res.status) {
        eddy_err_set(&res.err, res.status, "%s",
                     r->res_msg ? r->res_msg : eddy_strerror(res.status));
        res.err.cause = r->res_cause;
        eddy_span_error(r->span, eddy_err_name(res.status), res.err.msg);
    }
    res.output = r->res_output;
    r->res_output = NULL;
    emit_span(r, res.output);
    eddy_span_set_int(r->span, "gen_ai.usage.input_tokens", r->in_tokens);
    eddy_span_set_int(r->span, "gen_ai.usage.output_tokens", r->out_tokens);
    if (r->rt->def->model->has_price)
        eddy_span_set(r->span, "eddy.cost", json_real(r->cost));
    if (r->stats) {
        if (res.status)
            r->stats->runs_failed++;
        else
            r->stats->runs_ok++;
        eddy_run_stats_add_key(r->stats, r->key, r->cost, r->in_tokens + r->out_tokens,
                               res.status == 0);
    }
    eddy_span_end(r->span, sum);
    r->span = NULL;
    json_decref(sum);
    eddy_metrics_run(r->rt->env->metrics, r->rt->metrics_agent, res.status == 0,
                     (double)(eddy_wall_ns() - r->started_ns) / 1e9);
    eddy_metrics_worker_run(r->rt->env->metrics, r->rt->env->worker);
    uv_timer_stop(&r->wall);
    uv_close((uv_handle_t *)&r->wall, wall_closed);
    uv_close((uv_handle_t *)&r->later, wall_closed);
    r->cb(&res, r->ud);
    json_decref(res.output);
}

/* Keep what deliver() will report: STATUS (with CAUSE) and, for a failure, MSG. */
static void keep_result(eddy_run *r, int status, long cause, const char *msg)
{
    r->res_status = status;
    r->res_cause = cause;
    eddy_free(r->res_msg);
    r->res_msg = status && msg ? eddy_strdup(msg) : NULL;
}

static void on_end_committed(int status, const char *errmsg, void *ud)
{
    eddy_run *r = ud;
    if (status)
        eddy_span_error(r->commit_span, eddy_err_name(status), errmsg ? errmsg : "store error");
    eddy_span_end(r->commit_span, NULL); /* the memory, history and run end are durable */
    r->commit_span = NULL;
    if (status) { /* not stored: the run fails, and goes to the dead letters */
        json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "type", "dead_letter", "reason",
                              errmsg ? errmsg : "store error", "event_id", r->event_id, "key",
                              r->key, "agent", r->rt->def->name, "event", json_deep_copy(r->event));
        eddy_err e;
        eddy_err_set(&e, status, "cannot store the end of the run of key '%s': %s", r->key,
                     errmsg ? errmsg : "store error");
        keep_result(r, status, 0, e.msg);
        json_decref(r->res_output);
        r->res_output = d;
    }
    deliver(r);
    unref(r);
}

static void on_later(uv_timer_t *t)
{
    deliver(t->data);
}

/* The run is over: STATUS 0 with OUTPUT (stolen), or the failure MSG. Only
 * the first call counts. A finished run (ok or failed) is committed with
 * its outcome before anyone hears of it; an abandoned one commits nothing. */
static void report(eddy_run *r, int status, const char *msg, json_t *output)
{
    eddy_err e;
    char why[EDDY_ERR_MSG_MAX];
    json_t *doc = NULL, *msgs = NULL;
    if (r->reported) {
        json_decref(output);
        return;
    }
    r->reported = 1;
    if (!status) {
        doc = eddy_tool_memory_json(r->mem, &e);
        msgs = json_array();
        for (size_t i = r->new_from; msgs && i < r->conv.n; i++)
            if (json_array_append_new(msgs, eddy_llm_msg_to_json(&r->conv.msgs[i]))) {
                json_decref(msgs);
                msgs = NULL;
            }
        if (!doc) {
            status = EDDY_ETOOL;
            snprintf(why, sizeof(why), "ctx.memory of key '%s' cannot be stored: %.400s", r->key,
                     e.msg);
            msg = why;
        } else if (!msgs) {
            status = EDDY_ENOMEM;
            msg = "out of memory";
        }
        if (status) {
            json_decref(output);
            output = NULL;
        }
    }
    keep_result(r, status, 0, msg);
    if (status) {
        json_decref(output);
        /* the outcome goes to another thread: nothing in it is shared with the run */
        output =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "type", "dead_letter", "reason", msg,
                      "event_id", r->event_id, "key", r->key, "agent", r->rt->def->name, "trace_id",
                      eddy_span_trace_id(r->span), "event", json_deep_copy(r->event));
    }
    r->res_output = output;
    if (status == EDDY_ECANCELED || !output) {
        if (r->loaded)
            eddy_store_release(r->rt->env->store, r->ref.agent, r->ref.key);
        r->loaded = 0;
        uv_timer_start(&r->later, on_later, 0, 0); /* never inside the caller */
    } else {
        eddy_run_end end = {r->ref, status == 0, doc, msgs, r->rt->def->history, output};
        r->refs++;
        r->committing = 1;
        r->commit_span =
            eddy_span_start(r->rt->env->traces, r->span, "eddy.memory.write", EDDY_SPAN_INTERNAL);
        eddy_span_set(r->commit_span, "eddy.memory.changed", json_boolean(doc != NULL));
        eddy_span_set_int(r->commit_span, "eddy.history.messages",
                          msgs ? (long long)json_array_size(msgs) : 0);
        if (eddy_store_run_done(r->rt->env->store, &end, on_end_committed, r, &e)) {
            eddy_span_error(r->commit_span, eddy_err_name(e.code), e.msg);
            eddy_span_end(r->commit_span, NULL);
            r->commit_span = NULL;
            r->refs--;
            if (r->loaded)
                eddy_store_release(r->rt->env->store, r->ref.agent, r->ref.key);
            keep_result(r, e.code, e.cause, e.msg);
            json_decref(r->res_output);
            r->res_output = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "type", "dead_letter",
                                      "reason", e.msg, "event_id", r->event_id, "key", r->key,
                                      "agent", r->rt->def->name, "event", json_deep_copy(r->event));
            uv_timer_start(&r->later, on_later, 0, 0);
        }
        r->loaded = 0;
    }
    json_decref(doc);
    json_decref(msgs);
}

static void fail(eddy_run *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(eddy_run *r, int code, const char *fmt, ...)
{
    char msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->llm_req)
        eddy_llm_cancel(r->llm_req);
    report(r, code, msg, NULL);
}

static void on_wall(uv_timer_t *t)
{
    eddy_run *r = t->data;
    fail(r, EDDY_EBUDGET, "budget exceeded: wall time of %lld ms",
         (long long)r->rt->def->budget_wall_ms);
}

void eddy_run_cancel(eddy_run *r)
{
    if (!r || r->reported)
        return;
    fail(r, EDDY_ECANCELED, "run abandoned at shutdown");
}

/* -- the end: the output ------------------------------------------------------ */

static void finish_ok(eddy_run *r)
{
    json_t *out, *content;
    char oid[33];
    if (r->output_value) {
        content = json_deep_copy(r->output_value); /* the output leaves the thread */
    } else {
        char *text = eddy_llm_msg_join_text(&r->conv.msgs[r->conv.n - 1]);
        content = text ? json_string(text) : json_null();
        eddy_free(text);
    }
    eddy_output_id(r->ref.agent, r->ref.part, r->ref.pos, oid);
    out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:{s:I, s:I, s:I, s:I}, s:i, s:i, s:s}", "type",
                    "output", "output_id", oid, "event_id", r->event_id, "key", r->key, "agent",
                    r->rt->def->name, "output", content ? content : json_null(), "usage",
                    "input_tokens", (json_int_t)r->in_tokens, "output_tokens",
                    (json_int_t)r->out_tokens, "total_tokens",
                    (json_int_t)(r->in_tokens + r->out_tokens), "cached_input_tokens",
                    (json_int_t)r->cached_tokens, "turns", r->turns, "tool_calls", r->tool_calls,
                    "trace_id", eddy_span_trace_id(r->span));
    if (out && r->answered_by)
        json_object_set_new(out, "model", json_string(r->answered_by->name));
    if (out && r->rt->def->model->has_price)
        json_object_set_new(out, "cost", json_real(r->cost));
    if (!out) {
        fail(r, EDDY_ENOMEM, "out of memory");
        return;
    }
    report(r, 0, NULL, out);
}

/* -- tools ------------------------------------------------------------------ */

/* -- the journal ------------------------------------------------------------ */

/* Step STEP of an earlier try of this run, when it finished as a step of
 * KIND; NULL otherwise. A step of another kind means the run went another
 * way this time (the job changed): the rest of the journal is not used. */
static const eddy_replay_step *journaled(eddy_run *r, int step, const char *kind)
{
    const eddy_replay *rp = r->replay;
    if (!rp)
        return NULL;
    for (size_t i = 0; i < rp->nsteps; i++) {
        const eddy_replay_step *st = &rp->steps[i];
        if (st->step != step)
            continue;
        if (strcmp(st->kind, kind)) {
            EDDY_WARN("agents",
                      "run of event %s (key %s): step %d was a %s call before the restart and is "
                      "a %s call now; the journal is not used from here",
                      r->event_id, r->key, step, st->kind, kind);
            r->replay = NULL;
            return NULL;
        }
        return st->state == EDDY_STEP_DONE ? st : NULL;
    }
    return NULL;
}

/* Step STEP of an earlier try in any state (a side effect's PENDING too). */
static const eddy_replay_step *journal_entry(eddy_run *r, int step)
{
    for (size_t i = 0; r->replay && i < r->replay->nsteps; i++)
        if (r->replay->steps[i].step == step)
            return &r->replay->steps[i];
    return NULL;
}

static void journal(eddy_run *r, int step, const char *kind, json_t *data)
{
    eddy_err e;
    if (!data || eddy_store_put_step(r->rt->env->store, &r->ref, step, EDDY_STEP_DONE, kind, data,
                                     NULL, NULL, &e))
        EDDY_WARN("agents", "run of event %s (key %s): step %d not journaled: %s", r->event_id,
                  r->key, step, data ? e.msg : "out of memory");
    json_decref(data);
}

/* The same for a step whose data is JSON text already (TEXT taken; NULL: out
 * of memory, or a string that was not UTF-8). TEXT is not looked at after
 * the call that took it (it may be freed). */
static void journal_text(eddy_run *r, int step, const char *kind, char *text)
{
    eddy_err e;
    if (!text)
        EDDY_WARN("agents",
                  "run of event %s (key %s): step %d not journaled: out of memory or not UTF-8",
                  r->event_id, r->key, step);
    else if (eddy_store_put_step_take(r->rt->env->store, &r->ref, step, EDDY_STEP_DONE, kind, text,
                                      NULL, NULL, &e))
        EDDY_WARN("agents", "run of event %s (key %s): step %d not journaled: %s", r->event_id,
                  r->key, step, e.msg);
}

/* -- tools ------------------------------------------------------------------ */

/* S has its result: when it was the last of its turn, answer the model. */
static void slot_finish(tool_slot *s)
{
    eddy_run *r = s->run;
    eddy_span_end(s->span, NULL);
    s->span = NULL;
    if (--r->slots_pending > 0 || r->reported)
        return;
    eddy_llm_msg *m = eddy_llm_conv_add(&r->conv, EDDY_ROLE_TOOL);
    for (size_t i = 0; m && i < r->nslots; i++) /* in the order the model asked */
        if (eddy_llm_msg_tool_result(m, r->slots[i].call_id, r->slots[i].name,
                                     r->slots[i].result ? r->slots[i].result
                                                        : "error: out of memory",
                                     r->slots[i].failed)) {
            m = NULL;
        }
    if (!m) {
        fail(r, EDDY_ENOMEM, "out of memory");
        return;
    }
    run_turn(r);
}

/* S ended (RAN: the tool ran, so its result and the memory after it are
 * journaled). */
static void slot_done(tool_slot *s, int failed, json_t *result, const char *errmsg, int ran)
{
    eddy_run *r = s->run;
    eddy_metrics *m = r->rt->env->metrics;
    if (m)
        eddy_metrics_tool(m, eddy_metrics_tool_id(m, s->name), !failed, 0,
                          (double)(eddy_wall_ns() - s->started_ns) / 1e9);
    if (failed) {
        s->result = eddy_aprintf("error: %s", errmsg);
        s->failed = 1;
        eddy_span_error(s->span, "tool_error", errmsg);
        if (r->stats)
            r->stats->tool_errors++;
    } else {
        s->result = json_is_string(result) ? eddy_strdup(json_string_value(result))
                                           : eddy_json_dumps(result);
        /* a copy: the span is written by the trace thread, and JSON values are
         * never shared between threads */
        if (eddy_trace_keeps_content(r->rt->env->traces)) {
            char *t = json_is_string(result) ? NULL : eddy_json_dumps(result);
            eddy_span_set_str(s->span, "gen_ai.tool.call.result",
                              t ? t : json_string_value(result));
            eddy_free(t);
        }
    }
    r->tool_seq++;
    if (ran && !r->reported && s->result) {
        eddy_err e;
        json_t *mem = eddy_tool_memory_json(r->mem, &e);
        journal(r, s->step, "tool",
                json_pack("{s:s, s:s, s:b, s:i, s:o*}", "tool", s->name ? s->name : "?", "result",
                          s->result, "failed", s->failed, "seq", r->tool_seq, "memory", mem));
    }
    slot_finish(s);
}

static void on_tool(eddy_tool_result *res, void *ud)
{
    tool_slot *s = ud;
    eddy_run *r = s->run;
    slot_done(s, res->status != 0, res->result, res->err.msg, 1);
    unref(r);
}

/* ctx.state of a tool call: the op's place in the run is (the call's step,
 * its op number), journaled as the negative step -(step * 1000 + op). */
static json_t *slot_state(void *ud, const char *op, const char *key, json_t *a, json_t *b,
                          eddy_err *err)
{
    tool_slot *s = ud;
    eddy_run *r = s->run;
    if (r->reported) { /* a call that outlived its run changes nothing */
        eddy_err_set(err, EDDY_ECANCELED, "ctx.state.%s: the run of this call has ended", op);
        return NULL;
    }
    if (s->reconciling) /* reconcile asks; its answers are not a step of the run */
        return eddy_store_state_op(r->rt->env->store, r->rt->def->name, op, key, a, b, NULL, 0,
                                   err);
    if (s->state_ops >= 999) {
        eddy_err_set(err, EDDY_EBUDGET, "ctx.state: more than 999 operations in one tool call");
        return NULL;
    }
    int step = -(s->step * 1000 + ++s->state_ops);
    const eddy_replay_step *j = journaled(r, step, "state");
    if (j && eddy_json_int(j->data, "opkey", 0) != eddy_store_state_opkey(op, key)) {
        EDDY_WARN("agents",
                  "event %s (key %s): tool '%s' asked ctx.state for another operation than "
                  "before the restart: the journal is not used from here",
                  r->event_id, r->key, s->name);
        r->replay = NULL;
        j = NULL;
    }
    char name[64];
    snprintf(name, sizeof(name), "eddy.state %s", op);
    eddy_span *sp = eddy_span_start(r->rt->env->traces, s->span, name, EDDY_SPAN_INTERNAL);
    eddy_span_set_str(sp, "eddy.state.key", key);
    json_t *res;
    if (j) { /* done before the crash: the same answer, and not done twice */
        json_t *v = json_object_get(j->data, "result");
        eddy_span_set(sp, "eddy.replayed", json_true());
        res = v ? json_deep_copy(v) : json_null();
    } else {
        res = eddy_store_state_op(r->rt->env->store, r->rt->def->name, op, key, a, b, &r->ref, step,
                                  err);
        if (!res)
            eddy_span_error(sp, eddy_err_name(err->code), err->msg);
    }
    eddy_span_end(sp, NULL);
    return res;
}

static void slot_ctx(tool_slot *s, eddy_tool_ctx *ctx)
{
    eddy_run *r = s->run;
    *ctx = (eddy_tool_ctx){r->key, r->event, r->mem, slot_state, s, s->span};
}

/* Run S's tool with its arguments. */
static void slot_run(tool_slot *s)
{
    eddy_run *r = s->run;
    eddy_tool_ctx ctx;
    eddy_err e;
    if (r->reported) {
        slot_done(s, 1, NULL, "run already ended", 0);
        return;
    }
    slot_ctx(s, &ctx);
    r->refs++;
    if (eddy_tool_call(r->rt->env->tools, s->tool, s->args, &ctx, on_tool, s, &e)) {
        r->refs--;
        slot_done(s, 1, NULL, e.msg, 0);
    }
}

static void on_pending_stored(int status, const char *errmsg, void *ud)
{
    tool_slot *s = ud;
    eddy_run *r = s->run;
    if (status)
        slot_done(s, 1, NULL, errmsg ? errmsg : "cannot journal the call", 0);
    else
        slot_run(s);
    unref(r);
}

/* A side effect: its PENDING entry is committed before the tool starts. */
static void slot_pending(tool_slot *s)
{
    eddy_run *r = s->run;
    eddy_err e;
    json_t *d = json_pack("{s:s, s:O}", "tool", s->name ? s->name : "?", "args", s->args);
    r->refs++;
    if (!d || eddy_store_put_step(r->rt->env->store, &r->ref, s->step, EDDY_STEP_PENDING, "tool", d,
                                  on_pending_stored, s, &e)) {
        r->refs--;
        slot_done(s, 1, NULL, d ? e.msg : "out of memory", 0);
    }
    json_decref(d);
}

static void on_reconciled(eddy_tool_result *res, void *ud)
{
    tool_slot *s = ud;
    eddy_run *r = s->run;
    s->reconciling = 0;
    if (r->stats)
        r->stats->tools_reconciled++;
    if (res->status) {
        /* not knowing whether it happened, it is not done again */
        char why[EDDY_ERR_MSG_MAX];
        snprintf(why, sizeof(why), "reconcile after a crash failed: %.900s", res->err.msg);
        eddy_span_set(s->span, "eddy.reconciled", json_string("error"));
        slot_done(s, 1, NULL, why, 1);
    } else if (res->result && !json_is_null(res->result)) {
        eddy_span_set(s->span, "eddy.reconciled", json_string("happened"));
        slot_done(s, 0, res->result, NULL, 1);
    } else {
        eddy_span_set(s->span, "eddy.reconciled", json_string("did not happen"));
        s->reconciling = 0; /* the call's ops again: those done before the crash answer as then */
        slot_run(s);        /* its PENDING entry is still there */
    }
    unref(r);
}

/* S was started before a crash and never finished: ask the tool's
 * reconcile whether it happened, or (without one) run it again. */
static void slot_after_crash(tool_slot *s)
{
    eddy_run *r = s->run;
    eddy_tool_ctx ctx;
    eddy_err e;
    if (!eddy_tool_has_reconcile(s->tool)) {
        EDDY_WARN("agents",
                  "event %s (key %s): tool '%s' (side_effects) had started before the restart "
                  "and has no reconcile: running it again",
                  r->event_id, r->key, s->name);
        eddy_span_set(s->span, "eddy.rerun_after_crash", json_true());
        if (r->stats)
            r->stats->tools_rerun++;
        slot_run(s);
        return;
    }
    slot_ctx(s, &ctx);
    s->reconciling = 1; /* reconcile's ctx.state ops are not the call's */
    r->refs++;
    if (eddy_tool_reconcile(r->rt->env->tools, s->tool, s->args, &ctx, on_reconciled, s, &e)) {
        r->refs--;
        slot_done(s, 1, NULL, e.msg, 0);
    }
}

static eddy_tool *find_tool(eddy_agent_rt *rt, const char *name)
{
    for (size_t i = 0; i < rt->ntools; i++)
        if (!strcmp(eddy_tool_name(rt->tools[i]), name))
            return rt->tools[i];
    return NULL;
}

/* Run the tool calls of the assistant message MSG (the last of the
 * conversation), all at once. */
static void start_tools(eddy_run *r, const eddy_llm_msg *msg)
{
    size_t n = eddy_llm_msg_count(msg, EDDY_PART_TOOL_CALL), i, k = 0;
    if (r->tool_calls + (long)n > r->rt->def->budget_tool_calls) {
        fail(r, EDDY_EBUDGET, "budget exceeded: the model asked for %ld tool calls, budget is %d",
             r->tool_calls + (long)n, r->rt->def->budget_tool_calls);
        return;
    }
    for (i = 0; i < r->nslots; i++) {
        eddy_free(r->slots[i].call_id);
        eddy_free(r->slots[i].name);
        eddy_free(r->slots[i].result);
        json_decref(r->slots[i].args);
    }
    eddy_free(r->slots);
    r->slots = eddy_calloc(n, sizeof(tool_slot));
    r->nslots = r->slots ? n : 0;
    r->slots_pending = r->nslots;
    if (!r->slots) {
        fail(r, EDDY_ENOMEM, "out of memory");
        return;
    }
    /* copy what the calls need: the conversation may grow (and move) while
     * they run */
    char **names = eddy_calloc(n, sizeof(char *)), **argv = eddy_calloc(n, sizeof(char *));
    for (i = 0; names && argv && i < msg->nparts; i++) {
        const eddy_llm_part *p = &msg->parts[i];
        if (p->kind != EDDY_PART_TOOL_CALL)
            continue;
        r->slots[k].call_id = eddy_strdup(p->id ? p->id : "call");
        r->slots[k].name = eddy_strdup(p->name ? p->name : "?");
        names[k] = r->slots[k].name;
        argv[k++] = eddy_strdup(p->args ? p->args : "{}");
    }
    /* the calls an earlier try finished are not run again: their results,
     * and the memory as the last of them to finish left it, are the journal's */
    const eddy_replay_step **done = eddy_calloc(n + 1, sizeof(*done));
    json_t *mem_after = NULL;
    int last_seq = 0;
    for (i = 0; i < n; i++) {
        r->slots[i].step = ++r->step;
        if (done && (done[i] = journaled(r, r->slots[i].step, "tool"))) {
            const char *was = eddy_json_str(done[i]->data, "tool", NULL);
            if (was && r->slots[i].name && strcmp(was, r->slots[i].name)) {
                EDDY_WARN("agents",
                          "event %s (key %s): step %d called '%s' before the restart and calls "
                          "'%s' now: the journal is not used from here",
                          r->event_id, r->key, r->slots[i].step, was, r->slots[i].name);
                r->replay = NULL;
                done[i] = NULL;
                continue;
            }
            int seq = (int)eddy_json_int(done[i]->data, "seq", 0);
            if (seq > last_seq) {
                last_seq = seq;
                mem_after = json_object_get(done[i]->data, "memory");
            }
        }
    }
    if (last_seq > r->tool_seq)
        r->tool_seq = last_seq;
    if (json_is_object(mem_after)) {
        eddy_tool_memory *m2 = NULL;
        eddy_err e;
        if (eddy_tool_memory_new(r->rt->env->tools, mem_after, &m2, &e) == 0) {
            eddy_tool_memory_free(r->mem);
            r->mem = m2;
        }
    }
    r->refs++; /* hold the run while the calls are being started */
    for (i = 0; i < n; i++) {
        tool_slot *s = &r->slots[i];
        const char *name = names && names[i] ? names[i] : "?";
        const char *raw = argv && argv[i] ? argv[i] : "{}";
        eddy_tool *t = find_tool(r->rt, name);
        char sname[160];
        json_error_t je;
        s->run = r;
        snprintf(sname, sizeof(sname), "execute_tool %s", name);
        s->span = eddy_span_start(r->rt->env->traces, r->span, sname, EDDY_SPAN_INTERNAL);
        s->started_ns = eddy_wall_ns();
        eddy_span_set_str(s->span, "gen_ai.operation.name", "execute_tool");
        eddy_span_set_str(s->span, "gen_ai.tool.name", name);
        eddy_span_set_str(s->span, "gen_ai.tool.call.id", s->call_id);
        eddy_span_set_str(s->span, "gen_ai.tool.type", "function");
        eddy_span_set_str(s->span, "openinference.span.kind", "TOOL");
        {
            const char *mcp_tool, *mcp_server = t ? eddy__mcp_tool_server(t, &mcp_tool) : NULL;
            if (mcp_server) {
                eddy_span_set_str(s->span, "eddy.mcp.server", mcp_server);
                eddy_span_set_str(s->span, "eddy.mcp.tool", mcp_tool);
            }
        }
        if (eddy_trace_keeps_content(r->rt->env->traces))
            eddy_span_set_str(s->span, "gen_ai.tool.call.arguments", raw);
        add_name(&r->tools_used, name);
        r->tool_calls++;
        if (r->stats && !(done && done[i]))
            r->stats->tool_calls++;
        json_t *args = done && done[i] ? NULL : eddy_json_loads(raw, JSON_DECODE_ANY, &je);
        if (done && done[i] && !r->reported) {
            const char *res = eddy_json_str(done[i]->data, "result", NULL);
            s->failed = json_is_true(json_object_get(done[i]->data, "failed"));
            s->result = eddy_strdup(res ? res : "");
            eddy_span_set(s->span, "eddy.replayed", json_true());
            if (s->failed)
                eddy_span_error(s->span, "tool_error", s->result);
            eddy_metrics_tool(r->rt->env->metrics, eddy_metrics_tool_id(r->rt->env->metrics, name),
                              !s->failed, 1, 0);
            if (r->stats)
                r->stats->tools_replayed++;
            slot_finish(s);
        } else if (r->reported || !s->call_id || !s->name) {
            slot_done(s, 1, NULL, r->reported ? "run already ended" : "out of memory", 0);
        } else if (!t) {
            char why[256];
            snprintf(why, sizeof(why), "unknown tool '%.200s'", name);
            slot_done(s, 1, NULL, why, 0);
        } else if (!args) {
            char why[300];
            snprintf(why, sizeof(why), "arguments are not valid JSON (%s at column %d)", je.text,
                     je.column);
            slot_done(s, 1, NULL, why, 0);
        } else {
            const eddy_replay_step *pend = journal_entry(r, s->step);
            s->tool = t;
            s->args = args;
            args = NULL;
            if (!eddy_tool_side_effects(t))
                slot_run(s);
            else if (pend && pend->state == EDDY_STEP_PENDING &&
                     !strcmp(eddy_json_str(pend->data, "tool", ""), s->name ? s->name : ""))
                slot_after_crash(s);
            else
                slot_pending(s);
        }
        json_decref(args);
    }
    for (i = 0; argv && i < n; i++)
        eddy_free(argv[i]);
    eddy_free(argv);
    eddy_free(names);
    eddy_free(done);
    unref(r);
}

/* -- LLM turns -------------------------------------------------------------- */

/* Whether TEXT looks like a tool call the model wrote as text: its own
 * tags, or bare JSON naming one of the agent's tools. */
static int text_tool_call(eddy_run *r, const char *text, char *what, size_t cap)
{
    static const char *const tags[] = {
        "<tool_call>", "<|tool_call|>", "<function=", "[TOOL_CALLS]", "<|python_tag|>", NULL};
    for (int i = 0; tags[i]; i++)
        if (strstr(text, tags[i])) {
            snprintf(what, cap, "it wrote %s", tags[i]);
            return 1;
        }
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == '`')
        p++;
    if (!strncmp(p, "json", 4))
        p += 4;
    json_t *v = json_loads(p, JSON_DISABLE_EOF_CHECK, NULL);
    const char *name = eddy_json_str(v, "name", NULL);
    if (!name)
        name = eddy_json_str(json_object_get(v, "function"), "name", NULL);
    int hit = name && !r->output_schema &&
              (json_object_get(v, "arguments") || json_object_get(v, "parameters") ||
               json_object_get(v, "function")) &&
              find_tool(r->rt, name);
    if (hit)
        snprintf(what, cap, "it wrote a JSON call of '%.100s'", name);
    json_decref(v);
    return hit;
}

/* A structured answer: parse and validate; 0 when good (r->output_value
 * set), else a repair turn was started or the run failed. */
static int check_output(eddy_run *r, const char *text)
{
    eddy_err e;
    json_error_t je;
    char why[EDDY_ERR_MSG_MAX];
    json_t *v = eddy_json_loads(text, JSON_DECODE_ANY, &je);
    if (!v)
        snprintf(why, sizeof(why), "the answer is not JSON (%s at column %d)", je.text, je.column);
    else if (eddy_jschema_validate(r->output_schema, v, &e))
        snprintf(why, sizeof(why), "%s", e.msg);
    else {
        json_decref(r->output_value);
        r->output_value = v;
        return 0;
    }
    json_decref(v);
    if (r->repairs++ > 0) {
        fail(r, EDDY_ESCHEMA, "structured output invalid after a repair turn: %s", why);
        return -1;
    }
    char *ask = eddy_aprintf("Your answer does not match the required JSON schema: %s. Answer "
                             "again with only the corrected JSON.",
                             why);
    eddy_llm_msg *m = ask ? eddy_llm_conv_add(&r->conv, EDDY_ROLE_USER) : NULL;
    if (!m || eddy_llm_msg_text(m, ask)) {
        eddy_free(ask);
        fail(r, EDDY_ENOMEM, "out of memory");
        return -1;
    }
    eddy_free(ask);
    EDDY_DEBUG("agents", "run of key '%s': %s; asking for a repair", r->key, why);
    run_turn(r);
    return -1;
}

static int llm_from_json(eddy_run *r, json_t *data, eddy_llm_result *res, eddy_err *err)
{
    eddy_llm_conv tmp;
    json_t *one = json_pack("[O]", json_object_get(data, "message"));
    const char *by = eddy_json_str(data, "by", NULL);
    const eddy_llm_model *m = r->rt->def->model;
    int rc;
    memset(&tmp, 0, sizeof(tmp));
    if (!one)
        return eddy_err_set(err, EDDY_ECORRUPT, "no message");
    rc = eddy_llm_conv_from_json(&tmp, one, err);
    json_decref(one);
    if (rc || tmp.n != 1 || tmp.msgs[0].role != EDDY_ROLE_ASSISTANT) {
        eddy_llm_conv_clear(&tmp);
        return rc ? rc : eddy_err_set(err, EDDY_ECORRUPT, "not one assistant message");
    }
    res->resp.message = tmp.msgs[0];
    memset(&tmp.msgs[0], 0, sizeof(tmp.msgs[0]));
    eddy_llm_conv_clear(&tmp);
    res->resp.finish = eddy_llm_finish_from(eddy_json_str(data, "finish", "stop"));
    const char *raw = eddy_json_str(data, "finish_raw", NULL),
               *id = eddy_json_str(data, "id", NULL), *model = eddy_json_str(data, "model", NULL);
    res->resp.finish_raw = raw ? eddy_strdup(raw) : NULL;
    res->resp.id = id ? eddy_strdup(id) : NULL;
    res->resp.model = model ? eddy_strdup(model) : NULL;
    json_t *u = json_object_get(data, "usage");
    res->resp.usage.input_tokens = (long)eddy_json_int(u, "input", 0);
    res->resp.usage.output_tokens = (long)eddy_json_int(u, "output", 0);
    res->resp.usage.cached_input_tokens = (long)eddy_json_int(u, "cached", 0);
    res->resp.usage.cache_write_tokens = (long)eddy_json_int(u, "cache_write", 0);
    res->resp.usage.reasoning_tokens = (long)eddy_json_int(u, "reasoning", 0);
    res->resp.usage.estimated = json_is_true(json_object_get(u, "estimated"));
    for (size_t i = 0; by && strcmp(m->name, by) && i < r->rt->def->model->nfallback; i++)
        if (!strcmp(r->rt->def->model->fallback[i]->name, by))
            m = r->rt->def->model->fallback[i];
    res->model = m;
    return 0;
}

/* -- content in the traces (OpenTelemetry GenAI message form) ---------------- */

static const char *const kSemconvRole[] = {"system", "user", "assistant", "tool"};

static void put_part(eddy_buf *b, eddy_trace_store *ts, const eddy_llm_part *p)
{
    const char *t = p->text ? p->text : "";
    switch (p->kind) {
    case EDDY_PART_TEXT:
        eddy_buf_puts(b, "{\"type\":\"text\",\"content\":");
        eddy_trace_text(ts, b, t, strlen(t));
        break;
    case EDDY_PART_TOOL_CALL:
        eddy_buf_puts(b, "{\"type\":\"tool_call\",\"id\":");
        eddy_trace_text(ts, b, p->id ? p->id : "", p->id ? strlen(p->id) : 0);
        eddy_buf_puts(b, ",\"name\":");
        eddy_trace_text(ts, b, p->name ? p->name : "", p->name ? strlen(p->name) : 0);
        eddy_buf_puts(b, ",\"arguments\":");
        eddy_trace_text(ts, b, p->args ? p->args : "{}", p->args ? strlen(p->args) : 2);
        break;
    default:
        eddy_buf_puts(b, "{\"type\":\"tool_call_response\",\"id\":");
        eddy_trace_text(ts, b, p->id ? p->id : "", p->id ? strlen(p->id) : 0);
        eddy_buf_puts(b, ",\"response\":");
        eddy_trace_text(ts, b, t, strlen(t));
        break;
    }
    eddy_buf_putc(b, '}');
}

/* KEY := the messages MSGS[0..N) as a JSON array (FINISH: the answer's
 * finish reason, or NULL). Strings go through the store's redaction and
 * payload bound. */
static void set_messages(eddy_span *sp, eddy_trace_store *ts, const char *key,
                         const eddy_llm_msg *msgs, size_t n, const char *finish)
{
    eddy_buf b;
    eddy_buf_init(&b);
    eddy_buf_putc(&b, '[');
    for (size_t i = 0; i < n; i++) {
        const eddy_llm_msg *m = &msgs[i];
        eddy_buf_puts(&b, i ? ",{\"role\":\"" : "{\"role\":\""); /* no printf: per message */
        eddy_buf_puts(&b, kSemconvRole[m->role]);
        eddy_buf_puts(&b, "\",\"parts\":[");
        for (size_t k = 0; k < m->nparts; k++) {
            if (k)
                eddy_buf_putc(&b, ',');
            put_part(&b, ts, &m->parts[k]);
        }
        eddy_buf_putc(&b, ']');
        if (finish) {
            eddy_buf_puts(&b, ",\"finish_reason\":\"");
            eddy_buf_puts(&b, finish);
            eddy_buf_putc(&b, '"');
        }
        eddy_buf_putc(&b, '}');
    }
    eddy_buf_putc(&b, ']');
    if (!b.oom)
        eddy_span_set_raw(sp, key, b.data, b.len);
    eddy_buf_free(&b);
}

/* The prompt of this call: the system instructions, and this run's part of
 * the conversation (the history before it is counted, not repeated: it is
 * in the traces of the runs that made it). */
static void set_prompt(eddy_run *r, eddy_span *sp)
{
    eddy_trace_store *ts = r->rt->env->traces;
    size_t first = 0;
    if (r->conv.n && r->conv.msgs[0].role == EDDY_ROLE_SYSTEM) {
        eddy_buf b;
        char *sys = eddy_llm_msg_join_text(&r->conv.msgs[0]);
        eddy_buf_init(&b);
        eddy_buf_puts(&b, "[{\"type\":\"text\",\"content\":");
        eddy_trace_text(ts, &b, sys ? sys : "", sys ? strlen(sys) : 0);
        eddy_buf_puts(&b, "}]");
        if (!b.oom)
            eddy_span_set_raw(sp, "gen_ai.system_instructions", b.data, b.len);
        eddy_buf_free(&b);
        eddy_free(sys);
        first = 1;
    }
    size_t from = r->new_from > first ? r->new_from : first;
    if (from > first)
        eddy_span_set_int(sp, "eddy.history.messages", (long long)(from - first));
    if (from < r->conv.n)
        set_messages(sp, ts, "gen_ai.input.messages", r->conv.msgs + from, r->conv.n - from, NULL);
}

/* Count the call RES of model M in the process's metrics. */
static void llm_metrics(eddy_run *r, const eddy_llm_result *res, const eddy_llm_model *m,
                        int replayed)
{
    eddy_metrics *mx = r->rt->env->metrics;
    if (!mx)
        return;
    const eddy_llm_usage *u = &res->resp.usage;
    double wait = (double)res->queued_ms / 1e3;
    double total = (double)(eddy_wall_ns() - r->llm_started_ns) / 1e9;
    eddy_metrics_llm_call c = {
        !res->status,
        replayed,
        res->attempts > 1 ? res->attempts - 1 : 0,
        res->status ? 0 : u->input_tokens,
        res->status ? 0 : u->output_tokens,
        res->status ? 0 : u->cached_input_tokens,
        res->status ? 0 : eddy_llm_cost(m, u),
        total > wait ? total - wait : 0,
        wait,
    };
    eddy_metrics_llm(mx, eddy_metrics_model_id(mx, m->name), &c);
}

/* The answer of the model to step STEP, from the server or (REPLAYED) from
 * the journal. */
static void llm_answered(eddy_run *r, eddy_llm_result *res, int step, int replayed)
{
    eddy_span *sp = r->llm_span;
    eddy_llm_response *resp = &res->resp;
    const eddy_llm_model *m = res->model ? res->model : r->rt->def->model;
    r->llm_req = NULL;
    r->llm_span = NULL;
    add_name(&r->models_used, m->name);
    if (replayed)
        eddy_span_set(sp, "eddy.replayed", json_true());
    else if (!res->status && !r->reported)
        journal_text(r, step, "llm", eddy_llm_result_text(res));
    eddy_span_set_int(sp, "eddy.llm.attempts", res->attempts);
    if (res->http_status)
        eddy_span_set_int(sp, "http.response.status_code", res->http_status);
    if (res->model)
        eddy_span_set_str(sp, "eddy.llm.model", res->model->name);
    if (res->fallbacks) {
        eddy_span_set_int(sp, "eddy.llm.fallbacks", res->fallbacks);
        eddy_span_set_str(sp, "eddy.llm.fallback_reason", res->fallback_reason);
        eddy_span_set_str(sp, "gen_ai.provider.name", m->provider);
    }
    if (res->queued_ms) {
        /* the call itself begins after the wait for a slot (before its first
         * attempt); the wait is kept apart, retries' waits included */
        eddy_span_set_int(sp, "eddy.llm.wait_ms", (long)res->queued_ms);
        if (res->first_wait_ms)
            eddy_span_set_start(sp, r->llm_started_ns + res->first_wait_ms * 1000000u);
    }
    if (res->first_token_ms)
        eddy_span_set_int(sp, "eddy.llm.time_to_first_token_ms", (long)res->first_token_ms);
    if (r->stats && res->attempts > 1)
        r->stats->llm_retries += res->attempts - 1;
    llm_metrics(r, res, m, replayed);
    if (res->status) {
        eddy_span_error(sp, eddy_err_name(res->status), res->err.msg);
        eddy_span_end(sp, NULL);
        if (!r->reported)
            fail(r, res->status, "LLM call %d failed after %d attempt%s: %s", r->turns,
                 res->attempts, res->attempts == 1 ? "" : "s", res->err.msg);
        return;
    }
    const eddy_llm_usage *u = &resp->usage;
    double cost = eddy_llm_cost(m, u);
    r->answered_by = m;
    r->in_tokens += u->input_tokens;
    r->out_tokens += u->output_tokens;
    r->cached_tokens += u->cached_input_tokens;
    r->cost += cost;
    if (r->stats && !replayed) {
        r->stats->input_tokens += u->input_tokens;
        r->stats->output_tokens += u->output_tokens;
        eddy_run_stats_add_model(r->stats, m->name, u, cost);
    }
    eddy_span_set_str(sp, "gen_ai.response.model", resp->model);
    eddy_span_set_str(sp, "gen_ai.response.id", resp->id);
    eddy_span_set(sp, "gen_ai.response.finish_reasons",
                  json_pack("[s]", eddy_llm_finish_name(resp->finish)));
    eddy_span_set_int(sp, "gen_ai.usage.input_tokens", u->input_tokens);
    eddy_span_set_int(sp, "gen_ai.usage.output_tokens", u->output_tokens);
    eddy_span_set_int(sp, "llm.token_count.prompt", u->input_tokens);
    eddy_span_set_int(sp, "llm.token_count.completion", u->output_tokens);
    if (u->cached_input_tokens)
        eddy_span_set_int(sp, "gen_ai.usage.cache_read.input_tokens", u->cached_input_tokens);
    if (u->cache_write_tokens)
        eddy_span_set_int(sp, "gen_ai.usage.cache_creation.input_tokens", u->cache_write_tokens);
    if (u->reasoning_tokens)
        eddy_span_set_int(sp, "gen_ai.usage.reasoning_tokens", u->reasoning_tokens);
    if (u->estimated)
        eddy_span_set(sp, "eddy.usage.estimated", json_true());
    if (m->has_price)
        eddy_span_set(sp, "eddy.cost", json_real(cost));
    char *text = eddy_llm_msg_join_text(&resp->message);
    if (eddy_trace_keeps_content(r->rt->env->traces)) {
        eddy_span_set_str(sp, "eddy.llm.content", text);
        set_messages(sp, r->rt->env->traces, "gen_ai.output.messages", &resp->message, 1,
                     eddy_llm_finish_name(resp->finish));
    }
    size_t ncalls = eddy_llm_msg_count(&resp->message, EDDY_PART_TOOL_CALL);
    if (ncalls) {
        json_t *names = json_array();
        for (size_t i = 0; i < resp->message.nparts; i++)
            if (resp->message.parts[i].kind == EDDY_PART_TOOL_CALL)
                json_array_append_new(names, json_string(resp->message.parts[i].name));
        eddy_span_set(sp, "eddy.llm.tool_calls", names);
    }
    eddy_span_end(sp, NULL);
    char what[160];
    if (r->reported) {
        /* nothing more to do */
    } else if (resp->finish == EDDY_FINISH_LENGTH) {
        long mt = m->max_tokens;
        fail(r, EDDY_ELLM,
             "the model's answer was cut off by max_tokens (%ld%s)%s; it is not used: raise "
             "max_tokens of model '%s'",
             mt > 0 ? mt : 0, mt > 0 ? "" : ", the server's default",
             ncalls ? ", in the middle of a tool call" : "", m->name);
    } else if (resp->finish == EDDY_FINISH_CONTENT_FILTER) {
        fail(r, EDDY_ELLM, "the model's answer was stopped by its content filter");
    } else if (!ncalls && text && text_tool_call(r, text, what, sizeof(what))) {
        fail(r, EDDY_ELLM,
             "the model tried to call a tool but wrote the call as text (%s): the server did not "
             "turn it into a tool call; run it with tool-call parsing (llama-server --jinja and a "
             "chat template for this model; see the README, 'Local models')",
             what);
    } else {
        eddy_llm_msg *am = eddy_llm_conv_add(&r->conv, EDDY_ROLE_ASSISTANT);
        if (!am) {
            fail(r, EDDY_ENOMEM, "out of memory");
        } else {
            *am = resp->message; /* stolen */
            memset(&resp->message, 0, sizeof(resp->message));
            if (ncalls > 0)
                start_tools(r, am);
            else if (!r->output_schema || check_output(r, text ? text : "") == 0)
                finish_ok(r);
        }
    }
    eddy_free(text);
}

static void on_llm(eddy_llm_result *res, void *ud)
{
    eddy_run *r = ud;
    llm_answered(r, res, r->step, 0);
    unref(r);
}

/* Serve step STEP from its journal entry DATA: the answer as it came.
 * Returns 0 when it did (the run has moved on, maybe to its next turn), -1
 * when the entry is unreadable (the caller asks the model). */
static int llm_replay(eddy_run *r, int step, json_t *data)
{
    eddy_llm_result res;
    eddy_err e;
    memset(&res, 0, sizeof(res));
    if (llm_from_json(r, data, &res, &e)) {
        EDDY_WARN("agents",
                  "run of event %s (key %s): journaled step %d unreadable (%s): asking "
                  "the model again",
                  r->event_id, r->key, step, e.msg);
        eddy_llm_response_clear(&res.resp);
        r->replay = NULL;
        return -1;
    }
    if (r->stats)
        r->stats->llm_replayed++;
    r->refs++;
    llm_answered(r, &res, step, 1);
    eddy_llm_response_clear(&res.resp);
    unref(r);
    return 0;
}

static void run_turn(eddy_run *r)
{
    const eddy_agent_def *d = r->rt->def;
    eddy_err e;
    char name[256];
    if (r->reported)
        return;
    if (r->turns >= d->budget_turns) {
        fail(r, EDDY_EBUDGET, "budget exceeded: %d turns (LLM calls) without a final answer",
             d->budget_turns);
        return;
    }
    if (d->budget_tokens > 0 && r->in_tokens + r->out_tokens >= d->budget_tokens) {
        fail(r, EDDY_EBUDGET, "budget exceeded: %ld tokens used, budget is %lld",
             r->in_tokens + r->out_tokens, (long long)d->budget_tokens);
        return;
    }
    if (d->budget_cost > 0 && r->cost >= d->budget_cost) {
        fail(r, EDDY_EBUDGET, "budget exceeded: cost %.6g, budget is %.6g", r->cost,
             d->budget_cost);
        return;
    }
    r->turns++;
    int step = ++r->step;
    const eddy_replay_step *jst = journaled(r, step, "llm");
    snprintf(name, sizeof(name), "chat %s", d->model->model);
    r->llm_span = eddy_span_start(r->rt->env->traces, r->span, name, EDDY_SPAN_CLIENT);
    eddy_span_set_str(r->llm_span, "gen_ai.operation.name", "chat");
    eddy_span_set_str(r->llm_span, "gen_ai.provider.name", d->model->provider);
    eddy_span_set_str(r->llm_span, "gen_ai.request.model", d->model->model);
    eddy_span_set_str(r->llm_span, "gen_ai.conversation.id", r->key);
    eddy_span_set_str(r->llm_span, "openinference.span.kind", "LLM");
    eddy_span_set_int(r->llm_span, "eddy.turn", r->turns);
    if (d->model->max_tokens)
        eddy_span_set_int(r->llm_span, "gen_ai.request.max_tokens", d->model->max_tokens);
    if (d->model->stream)
        eddy_span_set(r->llm_span, "eddy.llm.stream", json_true());
    r->llm_started_ns = eddy_wall_ns();
    if (eddy_trace_keeps_content(r->rt->env->traces))
        set_prompt(r, r->llm_span);
    r->rq.conv = &r->conv;
    r->rq.tools = r->rt->tool_defs;
    r->rq.ntools = r->rt->ntools;
    r->rq.tool_choice = d->tool_choice;
    r->rq.tool_choice_name = d->tool_choice_name;
    r->rq.output_schema = r->output_schema;
    r->rq.output_name = "answer";
    /* answered from the journal: the run went on inside (its next turn may
     * have started already), so nothing more here */
    if (jst && llm_replay(r, step, jst->data) == 0)
        return;
    if (r->stats)
        r->stats->llm_calls++;
    r->refs++;
    if (eddy_llm_chat(r->rt->env->llm, d->model, &r->rq, on_llm, r, &r->llm_req, &e)) {
        r->refs--;
        eddy_span_error(r->llm_span, eddy_err_name(e.code), e.msg);
        eddy_span_end(r->llm_span, NULL);
        r->llm_span = NULL;
        fail(r, e.code, "LLM call failed: %s", e.msg);
    }
}

/* Render the prompts and build the conversation from the key's memory DOC
 * and HISTORY (borrowed). */
static int prepare(eddy_run *r, json_t *doc, json_t *history, eddy_err *err)
{
    const eddy_agent_def *d = r->rt->def;
    json_t *ctx = NULL;
    char *sys = NULL, *usr = NULL;
    eddy_llm_msg *m;
    int rc;
    ctx = json_pack("{s:O, s:O, s:s, s:s}", "event", r->event, "memory", doc, "key", r->key,
                    "agent", d->name);
    if (!ctx) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((d->system && (rc = eddy_template_render(d->system, ctx, &sys, err))) ||
        (rc = eddy_template_render(d->user, ctx, &usr, err)))
        goto out;
    if ((rc = eddy_tool_memory_new(r->rt->env->tools, doc, &r->mem, err)))
        goto out;
    if (sys &&
        (!(m = eddy_llm_conv_add(&r->conv, EDDY_ROLE_SYSTEM)) || eddy_llm_msg_text(m, sys))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = eddy_llm_conv_from_json(&r->conv, history, err))) {
        eddy_err_prefix(err, "history of key '%s': ", r->key);
        goto out;
    }
    r->new_from = r->conv.n;
    if (!(m = eddy_llm_conv_add(&r->conv, EDDY_ROLE_USER)) || eddy_llm_msg_text(m, usr))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    eddy_free(sys);
    eddy_free(usr);
    json_decref(ctx);
    return rc;
}

static void on_loaded(int status, const char *errmsg, json_t *doc, json_t *history, void *ud)
{
    eddy_run *r = ud;
    eddy_err e;
    if (!status)
        r->loaded = 1;
    if (r->reported) { /* canceled while loading: the entry is not held */
        if (r->loaded)
            eddy_store_release(r->rt->env->store, r->ref.agent, r->ref.key);
        r->loaded = 0;
    } else if (status) {
        fail(r, status, "cannot read the memory of key '%s': %s", r->key, errmsg);
    } else if (prepare(r, doc, history, &e)) {
        fail(r, e.code, "%s", e.msg);
    } else {
        uv_timer_start(&r->wall, on_wall, (uint64_t)r->rt->def->budget_wall_ms, 0);
        run_turn(r);
    }
    unref(r);
}

static void on_start(uv_timer_t *t)
{
    eddy_run *r = t->data;
    eddy_err e;
    if (r->reported)
        return;
    r->refs++;
    if (eddy_store_load(r->rt->env->store, r->rt->def->name, r->key, r->rt->def->history, on_loaded,
                        r, &e)) {
        r->refs--;
        fail(r, e.code, "%s", e.msg);
    }
}

int eddy_agent_run_start(eddy_agent_rt *rt, const eddy_run_input *in, eddy_run_stats *stats,
                         eddy_run_cb cb, void *ud, eddy_run **out, eddy_err *err)
{
    eddy_run *r = eddy_calloc(1, sizeof(*r));
    char name[256];
    if (out)
        *out = NULL;
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->rt = rt;
    r->stats = stats;
    r->cb = cb;
    r->ud = ud;
    r->event = json_deep_copy(in->event);
    r->output_schema = eddy_agent_output_schema(rt->def, in->event);
    r->key = eddy_strdup(in->key);
    r->event_id = eddy_strdup(in->event_id);
    r->replay = in->replay && !in->replay->done && in->replay->input_hash == in->input_hash
                    ? in->replay
                    : NULL;
    r->ref = (eddy_run_ref){rt->def->name, r->key, in->part, in->pos, in->input_hash};
    snprintf(name, sizeof(name), "invoke_agent %s", rt->def->name);
    r->span = eddy_span_start(rt->env->traces, NULL, name, EDDY_SPAN_INTERNAL);
    r->started_ns = eddy_wall_ns();
    if (!r->event || !r->key || !r->event_id || !r->span ||
        uv_timer_init(rt->env->loop, &r->wall) || uv_timer_init(rt->env->loop, &r->later)) {
        eddy_span_end(r->span, NULL);
        r->span = NULL;
        run_free(r);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    eddy_span_set_str(r->span, "gen_ai.operation.name", "invoke_agent");
    eddy_span_set_str(r->span, "gen_ai.agent.name", rt->def->name);
    eddy_span_set_str(r->span, "openinference.span.kind", "AGENT");
    eddy_span_set_str(r->span, "eddy.key", in->key);
    eddy_span_set_str(r->span, "eddy.event_id", in->event_id);
    eddy_span_set_int(r->span, "eddy.worker", rt->env->worker);
    if (r->replay)
        eddy_span_set_int(r->span, "eddy.journal.steps", (long long)r->replay->nsteps);
    r->wall.data = r->later.data = r;
    r->refs = 2; /* dropped by the timers' closes */
    r->counted = 1;
    rt->live++;
    /* start on the next loop iteration: the callback never runs inside this call */
    uv_timer_start(&r->wall, on_start, 0, 0);
    if (out)
        *out = r;
    return 0;
}

/* -- statistics ------------------------------------------------------------------ */

static json_t *stats_entry(json_t **map, const char *name)
{
    if (!*map && !(*map = json_object()))
        return NULL;
    json_t *e = json_object_get(*map, name);
    if (!e && json_object_set_new(*map, name, e = json_object()))
        return NULL;
    return e;
}

static void stats_inc(json_t *e, const char *field, long by)
{
    json_object_set_new(e, field, json_integer(eddy_json_int(e, field, 0) + by));
}

static void stats_add_cost(json_t *e, double cost)
{
    json_t *c = json_object_get(e, "cost");
    json_object_set_new(e, "cost", json_real((c ? json_number_value(c) : 0) + cost));
}

void eddy_run_stats_add_model(eddy_run_stats *s, const char *model, const eddy_llm_usage *u,
                              double cost)
{
    json_t *e = stats_entry(&s->per_model, model ? model : "?");
    s->cost += cost;
    if (!e)
        return;
    stats_inc(e, "calls", 1);
    stats_inc(e, "input_tokens", u->input_tokens);
    stats_inc(e, "output_tokens", u->output_tokens);
    stats_inc(e, "cached_input_tokens", u->cached_input_tokens);
    stats_add_cost(e, cost);
}

void eddy_run_stats_add_key(eddy_run_stats *s, const char *key, double cost, long tokens, int ok)
{
    if (s->per_key && !json_object_get(s->per_key, key) &&
        json_object_size(s->per_key) >= EDDY_STATS_MAX_KEYS)
        key = "(other keys)";
    json_t *e = stats_entry(&s->per_key, key);
    if (!e)
        return;
    stats_inc(e, "runs", 1);
    if (!ok)
        stats_inc(e, "failed", 1);
    stats_inc(e, "tokens", tokens);
    stats_add_cost(e, cost);
}

void eddy_run_stats_clear(eddy_run_stats *s)
{
    json_decref(s->per_model);
    json_decref(s->per_key);
    s->per_model = s->per_key = NULL;
}

json_t *eddy_agent_output_schema(const eddy_agent_def *def, json_t *event)
{
    json_t *tv = json_object_get(event, "type");
    const char *type = json_is_string(tv) ? json_string_value(tv) : "input";
    for (size_t i = 0; def->output_schema && i < def->non; i++)
        if (!strcmp(def->on[i], type))
            return def->output_schema[i];
    return NULL;
}
