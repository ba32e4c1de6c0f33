/*
 * agents/run.c - the run executor and the `react` action.
 *
 * A run renders the prompts, then loops: chat; if the model asked for tools,
 * run them all concurrently and chat again; until an answer without tool
 * calls or a budget is spent (turns, tokens, tool calls, wall time). At the
 * end the key's memory document and this run's messages are committed, and
 * only then is the output reported. A failed run reports a dead-letter
 * record instead and commits nothing.
 *
 * Lifetime: a run counts its outstanding operations (LLM request, tool
 * calls, memory commit, wall timer). It reports once (`reported`) and is
 * freed when nothing is outstanding, never inside one of its own callbacks'
 * callers: the free happens at the end of the callback that drops the last
 * reference.
 */
#include "eddy/agent.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <string.h>

struct eddy_agent_rt {
    const eddy_agent_def *def;
    eddy_agent_env *env;
    eddy_tool **tools;
    size_t ntools;
    json_t *tool_defs; /* OpenAI tool definitions, in the job's order */
};

typedef struct tool_slot {
    eddy_run *run;
    eddy_span *span;
    char *call_id;
    json_t *message; /* the tool message for the model, when done */
} tool_slot;

struct eddy_run {
    eddy_agent_rt *rt;
    eddy_run_stats *stats;
    json_t *event;
    char *key, *event_id;
    json_t *messages;     /* the whole conversation sent to the model */
    json_t *new_messages; /* this run's part of it, to persist */
    eddy_tool_memory *mem;
    eddy_span *span, *llm_span;
    eddy_llm_req *llm_req;
    tool_slot *slots;
    size_t nslots, slots_pending;
    uv_timer_t wall;
    int turns, tool_calls, refs, reported;
    long in_tokens, out_tokens;
    eddy_run_cb cb;
    void *ud;
};

static void run_turn(eddy_run *r);

/* -- agent runtime ---------------------------------------------------------- */

int eddy_agent_rt_new(const eddy_agent_def *def, eddy_agent_env *env, eddy_agent_rt **out,
                      eddy_err *err)
{
    eddy_agent_rt *rt = eddy_calloc(1, sizeof(*rt));
    int rc = 0;
    *out = NULL;
    if (!rt || !(rt->tool_defs = json_array()) ||
        !(rt->tools = eddy_calloc(def->ntools + 1, sizeof(eddy_tool *)))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    rt->def = def;
    rt->env = env;
    for (size_t i = 0; i < def->ntools; i++) {
        const eddy_tool_ref *ref = &def->tools[i];
        if ((rc = ref->kind
                      ? eddy_tools_load_native(env->tools, ref->kind, ref->cfg, &rt->tools[i], err)
                      : eddy_tools_load(env->tools, ref->path, &ref->limits, &rt->tools[i], err))) {
            if (ref->kind)
                eddy_err_prefix(err, "agent '%s': %s: %s: ", def->name, ref->where, ref->kind);
            else
                eddy_err_prefix(err, "agent '%s': ", def->name);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(eddy_tool_name(rt->tools[j]), eddy_tool_name(rt->tools[i]))) {
                rc = eddy_err_set(
                    err, EDDY_EEXIST, "agent '%s': %s: tool name '%s' is also the name of %s (%s)",
                    def->name, ref->where ? ref->where : "?", eddy_tool_name(rt->tools[i]),
                    eddy_tool_path(rt->tools[j]), def->tools[j].where ? def->tools[j].where : "?");
                goto fail;
            }
        rt->ntools++;
        json_array_append(rt->tool_defs, eddy_tool_definition(rt->tools[i]));
    }
    *out = rt;
    return 0;
fail:
    eddy_agent_rt_free(rt);
    return rc;
}

void eddy_agent_rt_free(eddy_agent_rt *rt)
{
    if (!rt)
        return;
    json_decref(rt->tool_defs);
    eddy_free(rt->tools);
    eddy_free(rt);
}

const eddy_agent_def *eddy_agent_rt_def(const eddy_agent_rt *rt)
{
    return rt->def;
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
    json_decref(r->event);
    json_decref(r->messages);
    json_decref(r->new_messages);
    eddy_tool_memory_free(r->mem);
    for (size_t i = 0; i < r->nslots; i++) {
        eddy_free(r->slots[i].call_id);
        json_decref(r->slots[i].message);
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

static json_t *summary(eddy_run *r)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i}", "agent", r->rt->def->name, "key",
                     r->key, "event_id", r->event_id, "input_tokens", (int)r->in_tokens,
                     "output_tokens", (int)r->out_tokens, "llm_calls", r->turns, "tool_calls",
                     r->tool_calls, "turns", r->turns);
}

/* Report OUTPUT (stolen) or the failure, end the root span, close the wall
 * timer. Only the first report counts. */
static void report(eddy_run *r, int status, const char *msg, json_t *output)
{
    eddy_run_result res;
    json_t *sum;
    if (r->reported) {
        json_decref(output);
        return;
    }
    r->reported = 1;
    memset(&res, 0, sizeof(res));
    res.status = status;
    if (status) {
        eddy_err_set(&res.err, status, "%s", msg);
        json_decref(output);
        output = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason",
                           msg, "event_id", r->event_id, "key", r->key, "agent", r->rt->def->name,
                           "trace_id", eddy_span_trace_id(r->span), "event", r->event);
        eddy_span_error(r->span, eddy_err_name(status), msg);
        if (r->stats)
            r->stats->runs_failed++;
    } else if (r->stats) {
        r->stats->runs_ok++;
    }
    res.output = output;
    sum = summary(r);
    eddy_span_set_int(r->span, "gen_ai.usage.input_tokens", r->in_tokens);
    eddy_span_set_int(r->span, "gen_ai.usage.output_tokens", r->out_tokens);
    eddy_span_end(r->span, sum);
    r->span = NULL;
    json_decref(sum);
    uv_timer_stop(&r->wall);
    uv_close((uv_handle_t *)&r->wall, wall_closed);
    r->cb(&res, r->ud);
    json_decref(output);
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

/* -- the end: commit memory, then report ------------------------------------ */

static void on_committed(int status, const char *errmsg, void *ud)
{
    eddy_run *r = ud;
    json_t *out = NULL;
    json_t *last = json_array_get(r->new_messages, json_array_size(r->new_messages) - 1);
    if (status) {
        fail(r, status, "cannot store the memory of key '%s': %s", r->key, errmsg);
    } else {
        json_t *content = json_object_get(last, "content");
        out = json_pack("{s:s, s:s, s:s, s:s, s:O, s:{s:i, s:i, s:i}, s:i, s:i, s:s}", "type",
                        "output", "event_id", r->event_id, "key", r->key, "agent", r->rt->def->name,
                        "output", content ? content : json_null(), "usage", "input_tokens",
                        (int)r->in_tokens, "output_tokens", (int)r->out_tokens, "total_tokens",
                        (int)(r->in_tokens + r->out_tokens), "turns", r->turns, "tool_calls",
                        r->tool_calls, "trace_id", eddy_span_trace_id(r->span));
        report(r, 0, NULL, out);
    }
    unref(r);
}

static void finish_ok(eddy_run *r)
{
    eddy_err e;
    json_t *doc = eddy_tool_memory_json(r->mem, &e);
    if (!doc) {
        fail(r, EDDY_ETOOL, "ctx.memory of key '%s' cannot be stored: %s", r->key, e.msg);
        return;
    }
    r->refs++;
    if (eddy_memory_commit(r->rt->env->memory, r->rt->def->name, r->key, doc, r->new_messages,
                           r->rt->def->history, on_committed, r, &e)) {
        r->refs--;
        fail(r, e.code, "%s", e.msg);
    }
    json_decref(doc);
}

/* -- tools ------------------------------------------------------------------ */

static void append_msg(eddy_run *r, json_t *msg)
{
    json_array_append(r->messages, msg);
    json_array_append_new(r->new_messages, msg);
}

static void slot_done(tool_slot *s, int failed, json_t *result, const char *errmsg)
{
    eddy_run *r = s->run;
    char *content;
    if (failed) {
        content = eddy_aprintf("error: %s", errmsg);
        eddy_span_error(s->span, "tool_error", errmsg);
        if (r->stats)
            r->stats->tool_errors++;
    } else {
        content = json_is_string(result) ? eddy_strdup(json_string_value(result))
                                         : eddy_json_dumps(result);
        eddy_span_set(s->span, "gen_ai.tool.call.result", json_incref(result));
    }
    s->message = json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", s->call_id, "content",
                           content ? content : "error: out of memory");
    eddy_free(content);
    eddy_span_end(s->span, NULL);
    s->span = NULL;
    if (--r->slots_pending > 0 || r->reported)
        return;
    for (size_t i = 0; i < r->nslots; i++) { /* in the order the model asked */
        append_msg(r, r->slots[i].message);
        r->slots[i].message = NULL;
    }
    run_turn(r);
}

static void on_tool(eddy_tool_result *res, void *ud)
{
    tool_slot *s = ud;
    eddy_run *r = s->run;
    slot_done(s, res->status != 0, res->result, res->err.msg);
    unref(r);
}

static eddy_tool *find_tool(eddy_agent_rt *rt, const char *name)
{
    for (size_t i = 0; i < rt->ntools; i++)
        if (!strcmp(eddy_tool_name(rt->tools[i]), name))
            return rt->tools[i];
    return NULL;
}

static void start_tools(eddy_run *r, json_t *calls)
{
    size_t n = json_array_size(calls), i;
    json_t *tc;
    if (r->tool_calls + (long)n > r->rt->def->budget_tool_calls) {
        fail(r, EDDY_EBUDGET, "budget exceeded: the model asked for %ld tool calls, budget is %d",
             r->tool_calls + (long)n, r->rt->def->budget_tool_calls);
        return;
    }
    for (i = 0; i < r->nslots; i++)
        eddy_free(r->slots[i].call_id);
    eddy_free(r->slots);
    r->slots = eddy_calloc(n, sizeof(tool_slot));
    r->nslots = r->slots ? n : 0;
    r->slots_pending = r->nslots;
    if (!r->slots) {
        fail(r, EDDY_ENOMEM, "out of memory");
        return;
    }
    r->refs++; /* hold the run while the calls are being started */
    json_array_foreach(calls, i, tc)
    {
        tool_slot *s = &r->slots[i];
        const char *name = eddy_json_str(tc, "name", "?");
        eddy_tool *t = find_tool(r->rt, name);
        eddy_tool_ctx ctx = {r->key, r->event, r->mem};
        char sname[160];
        eddy_err e;
        s->run = r;
        s->call_id = eddy_strdup(eddy_json_str(tc, "id", "call"));
        snprintf(sname, sizeof(sname), "execute_tool %s", name);
        s->span = eddy_span_start(r->rt->env->traces, r->span, sname, EDDY_SPAN_INTERNAL);
        eddy_span_set_str(s->span, "gen_ai.operation.name", "execute_tool");
        eddy_span_set_str(s->span, "gen_ai.tool.name", name);
        eddy_span_set_str(s->span, "gen_ai.tool.call.id", s->call_id);
        eddy_span_set_str(s->span, "gen_ai.tool.type", "function");
        eddy_span_set_str(s->span, "openinference.span.kind", "TOOL");
        eddy_span_set_str(s->span, "gen_ai.tool.call.arguments",
                          eddy_json_str(tc, "arguments_raw", ""));
        r->tool_calls++;
        if (r->stats)
            r->stats->tool_calls++;
        if (r->reported) {
            slot_done(s, 1, NULL, "run already ended");
        } else if (!t) {
            char msg[256];
            snprintf(msg, sizeof(msg), "unknown tool '%s'", name);
            slot_done(s, 1, NULL, msg);
        } else if (json_object_get(tc, "error")) {
            slot_done(s, 1, NULL, eddy_json_str(tc, "error", "invalid arguments"));
        } else {
            r->refs++;
            if (eddy_tool_call(r->rt->env->tools, t, json_object_get(tc, "arguments"), &ctx,
                               on_tool, s, &e)) {
                r->refs--;
                slot_done(s, 1, NULL, e.msg);
            }
        }
    }
    unref(r);
}

/* -- LLM turns -------------------------------------------------------------- */

static void on_llm(eddy_llm_result *res, void *ud)
{
    eddy_run *r = ud;
    eddy_span *sp = r->llm_span;
    eddy_llm_response *resp = &res->resp;
    r->llm_req = NULL;
    r->llm_span = NULL;
    eddy_span_set_int(sp, "eddy.llm.attempts", res->attempts);
    if (res->http_status)
        eddy_span_set_int(sp, "http.response.status_code", res->http_status);
    if (r->stats && res->attempts > 1)
        r->stats->llm_retries += res->attempts - 1;
    if (res->status) {
        eddy_span_error(sp, eddy_err_name(res->status), res->err.msg);
        eddy_span_end(sp, NULL);
        if (!r->reported)
            fail(r, res->status, "LLM call %d failed after %d attempt%s: %s", r->turns,
                 res->attempts, res->attempts == 1 ? "" : "s", res->err.msg);
        unref(r);
        return;
    }
    r->in_tokens += resp->usage.input_tokens;
    r->out_tokens += resp->usage.output_tokens;
    if (r->stats) {
        r->stats->input_tokens += resp->usage.input_tokens;
        r->stats->output_tokens += resp->usage.output_tokens;
    }
    eddy_span_set_str(sp, "gen_ai.response.model", resp->model);
    eddy_span_set_str(sp, "gen_ai.response.id", resp->id);
    eddy_span_set(sp, "gen_ai.response.finish_reasons", json_pack("[s]", resp->finish_reason));
    eddy_span_set_int(sp, "gen_ai.usage.input_tokens", resp->usage.input_tokens);
    eddy_span_set_int(sp, "gen_ai.usage.output_tokens", resp->usage.output_tokens);
    eddy_span_set_int(sp, "llm.token_count.prompt", resp->usage.input_tokens);
    eddy_span_set_int(sp, "llm.token_count.completion", resp->usage.output_tokens);
    if (resp->usage.cached_tokens)
        eddy_span_set_int(sp, "gen_ai.usage.cache_read.input_tokens", resp->usage.cached_tokens);
    eddy_span_set_str(sp, "eddy.llm.content", resp->content);
    if (json_array_size(resp->tool_calls)) {
        json_t *names = json_array(), *tc;
        size_t i;
        json_array_foreach(resp->tool_calls, i, tc)
            json_array_append(names, json_object_get(tc, "name"));
        eddy_span_set(sp, "eddy.llm.tool_calls", names);
    }
    eddy_span_end(sp, NULL);
    if (!r->reported) {
        append_msg(r, json_incref(resp->message));
        if (json_array_size(resp->tool_calls) > 0)
            start_tools(r, resp->tool_calls);
        else
            finish_ok(r);
    }
    unref(r);
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
    r->turns++;
    if (r->stats)
        r->stats->llm_calls++;
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
    r->refs++;
    if (eddy_llm_chat(r->rt->env->llm, d->model, r->messages, r->rt->tool_defs, on_llm, r,
                      &r->llm_req, &e)) {
        r->refs--;
        eddy_span_error(r->llm_span, eddy_err_name(e.code), e.msg);
        eddy_span_end(r->llm_span, NULL);
        r->llm_span = NULL;
        fail(r, e.code, "LLM call failed: %s", e.msg);
    }
}

/* Render the prompts and build the conversation. */
static int prepare(eddy_run *r, eddy_err *err)
{
    const eddy_agent_def *d = r->rt->def;
    json_t *doc = NULL, *history = NULL, *ctx = NULL, *user;
    char *sys = NULL, *usr = NULL;
    int rc;
    if ((rc = eddy_memory_load(r->rt->env->memory, d->name, r->key, d->history, &doc, &history,
                               err)))
        return rc;
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
    r->messages = json_array();
    r->new_messages = json_array();
    if (sys)
        json_array_append_new(r->messages,
                              json_pack("{s:s, s:s}", "role", "system", "content", sys));
    json_array_extend(r->messages, history);
    user = json_pack("{s:s, s:s}", "role", "user", "content", usr);
    append_msg(r, user);
out:
    eddy_free(sys);
    eddy_free(usr);
    json_decref(ctx);
    json_decref(doc);
    json_decref(history);
    return rc;
}

static void on_start(uv_timer_t *t)
{
    eddy_run *r = t->data;
    eddy_err e;
    if (!r->reported) {
        if (prepare(r, &e))
            fail(r, e.code, "%s", e.msg);
        else {
            uv_timer_start(&r->wall, on_wall, (uint64_t)r->rt->def->budget_wall_ms, 0);
            run_turn(r);
        }
    }
}

int eddy_agent_run_start(eddy_agent_rt *rt, json_t *event, const char *key, const char *event_id,
                         eddy_run_stats *stats, eddy_run_cb cb, void *ud, eddy_run **out,
                         eddy_err *err)
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
    r->event = json_deep_copy(event);
    r->key = eddy_strdup(key);
    r->event_id = eddy_strdup(event_id);
    snprintf(name, sizeof(name), "invoke_agent %s", rt->def->name);
    r->span = eddy_span_start(rt->env->traces, NULL, name, EDDY_SPAN_INTERNAL);
    if (!r->event || !r->key || !r->event_id || !r->span ||
        uv_timer_init(rt->env->loop, &r->wall)) {
        eddy_span_end(r->span, NULL);
        r->span = NULL;
        run_free(r);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    eddy_span_set_str(r->span, "gen_ai.operation.name", "invoke_agent");
    eddy_span_set_str(r->span, "gen_ai.agent.name", rt->def->name);
    eddy_span_set_str(r->span, "openinference.span.kind", "AGENT");
    eddy_span_set_str(r->span, "eddy.key", key);
    eddy_span_set_str(r->span, "eddy.event_id", event_id);
    r->wall.data = r;
    r->refs = 1; /* dropped by the wall timer's close */
    /* start on the next loop iteration: the callback never runs inside this call */
    uv_timer_start(&r->wall, on_start, 0, 0);
    if (out)
        *out = r;
    return 0;
}
