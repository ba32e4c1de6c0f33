/*
 * tools/call.c - tool calls as coroutines, and ctx.memory documents.
 *
 * See host.c for the model. A call owns one uv_timer_t, used both for
 * eddy.sleep and to deliver a result that was ready before eddy_tool_call
 * returned (callbacks never run inside the starting call). The call is freed
 * from the timer's close callback.
 */
#include "tools_int.h"

#include "eddy/buf.h"

#include <string.h>

struct tool_call {
    eddy_tools *host;
    eddy_tool *tool;
    lua_State *co;
    int co_ref;
    uv_timer_t timer;
    eddy_tool_cb cb;
    void *ud;
    eddy_tool_result res;
    uint64_t start_ms;
    long instructions;
    int waiting; /* a host function started work and yielded */
    int finished;
    /* a native function's answer, pushed when the coroutine resumes */
    int wait_ready, wait_status;
    json_t *wait_result;
    char wait_msg[EDDY_ERR_MSG_MAX];
};

static void call_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

static void deliver(struct tool_call *c)
{
    c->res.duration_ms = eddy_now_ms() - c->start_ms;
    c->cb(&c->res, c->ud);
    json_decref(c->res.result);
    json_decref(c->wait_result);
    if (c->co_ref != LUA_NOREF)
        luaL_unref(c->host->L, LUA_REGISTRYINDEX, c->co_ref);
    c->host->calls--;
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

static void fail(struct tool_call *c, int code, const char *msg)
{
    c->finished = 1;
    c->res.status = code;
    eddy_err_set(&c->res.err, code, "tool '%s' failed: %s", c->tool->name, msg);
}

/* Look at what lua_resume returned and record the outcome. */
static void after_resume(struct tool_call *c, int status, int nres)
{
    lua_State *co = c->co;
    if (status == LUA_YIELD) {
        lua_pop(co, nres);
        if (c->waiting)
            return;
        fail(c, EDDY_ETOOL, "coroutine.yield was called outside a coroutine the tool made");
        return;
    }
    if (status != LUA_OK) {
        const char *m = lua_tostring(co, -1);
        fail(c, EDDY_ETOOL, m ? m : "error object is not a string");
        return;
    }
    c->finished = 1;
    if (nres == 0) {
        c->res.result = json_null();
    } else {
        eddy_err e;
        c->res.result = eddy_lua_to_json(co, -nres, &e);
        if (!c->res.result) {
            char msg[EDDY_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "its result has no JSON form: %s", e.msg);
            fail(c, EDDY_ETOOL, msg);
        }
    }
    lua_settop(co, 0);
}

static void resume(struct tool_call *c, int nargs)
{
    int nres = 0, status;
    c->waiting = 0;
    status = lua_resume(c->co, c->host->L, nargs, &nres);
    after_resume(c, status, nres);
}

/* Resume a coroutine that waited for a native function with (ok, value) or
 * (false, message); native_k in native.c takes them from there. */
static void resume_answer(struct tool_call *c)
{
    lua_State *co = c->co;
    json_t *v = c->wait_result;
    c->wait_ready = 0;
    c->wait_result = NULL;
    if (!c->wait_status && v && !json_is_null(v) && eddy_lua_push_json(co, v) != 0) {
        c->wait_status = EDDY_ERANGE;
        snprintf(c->wait_msg, sizeof(c->wait_msg), "the answer is nested too deep");
    }
    if (c->wait_status) {
        lua_pushboolean(co, 0);
        lua_pushstring(co, c->wait_msg);
    } else {
        if (!v || json_is_null(v))
            lua_pushnil(co);
        lua_pushboolean(co, 1);
        lua_insert(co, -2);
    }
    json_decref(v);
    resume(c, 2);
}

static void on_timer(uv_timer_t *t)
{
    struct tool_call *c = t->data;
    if (!c->finished) {
        if (c->wait_ready)
            resume_answer(c);
        else
            resume(c, 0);
    }
    if (c->finished)
        deliver(c);
}

eddy_tool_wait *eddy__tools_call_begin_wait(lua_State *L)
{
    struct tool_call *c = *(struct tool_call **)lua_getextraspace(L);
    if (!c || c->co != L)
        return NULL;
    c->waiting = 1;
    c->wait_ready = 0;
    return (eddy_tool_wait *)c;
}

void eddy__tools_call_cancel_wait(eddy_tool_wait *w)
{
    ((struct tool_call *)w)->waiting = 0;
}

void eddy_tool_wait_done(eddy_tool_wait *w, int status, json_t *result, const char *msg)
{
    struct tool_call *c = (struct tool_call *)w;
    if (c->tool->module >= 0) { /* a native tool: this is the call's outcome */
        if (status) {
            json_decref(result);
            fail(c, status < 0 ? status : EDDY_ETOOL, msg ? msg : "failed");
        } else {
            c->finished = 1;
            c->res.result = result ? result : json_null();
        }
    } else {
        c->wait_ready = 1;
        c->wait_status = status;
        c->wait_result = status ? (json_decref(result), NULL) : result;
        snprintf(c->wait_msg, sizeof(c->wait_msg), "%s", status && msg ? msg : "failed");
    }
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

const char *eddy__tool_call_name(const struct tool_call *c)
{
    return c->tool->name;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    struct tool_call *c = *(struct tool_call **)lua_getextraspace(L);
    (void)ar;
    if (!c)
        return;
    c->instructions += 1000;
    if (c->instructions > EDDY_LUA_MAX_INSTRUCTIONS)
        luaL_error(L, "instruction budget of %I exceeded", (lua_Integer)EDDY_LUA_MAX_INSTRUCTIONS);
}

void eddy__tools_charge(lua_State *L, int64_t units)
{
    struct tool_call *c = *(struct tool_call **)lua_getextraspace(L);
    if (!c)
        return;
    c->instructions += units;
    if (c->instructions > EDDY_LUA_MAX_INSTRUCTIONS)
        luaL_error(L, "instruction budget of %I exceeded", (lua_Integer)EDDY_LUA_MAX_INSTRUCTIONS);
}

int eddy__tools_call_wait(lua_State *L, uint64_t ms)
{
    struct tool_call *c = *(struct tool_call **)lua_getextraspace(L);
    if (!c || c->co != L)
        return luaL_error(L, "this function can only be used while a tool runs");
    c->waiting = 1;
    uv_timer_start(&c->timer, on_timer, ms, 0);
    return lua_yield(L, 0);
}

/* A native tool's body gets the checked arguments and answers through the
 * call (eddy_tool_wait_done). */
static void start_native(struct tool_call *c, json_t *args)
{
    void *state;
    eddy_err e;
    int rc = eddy__tools_module_state(c->host, (size_t)c->tool->module, &state, &e);
    if (!rc)
        rc = c->tool->native.call(state, c->tool->native.data, args, (eddy_tool_wait *)c, &e);
    if (rc)
        fail(c, rc, e.msg);
}

static int push_ctx(struct tool_call *c, const eddy_tool_ctx *ctx)
{
    lua_State *co = c->co;
    lua_createtable(co, 0, 4);
    lua_pushstring(co, ctx && ctx->key ? ctx->key : "");
    lua_setfield(co, -2, "key");
    if (ctx && ctx->event && eddy_lua_push_json(co, ctx->event) == 0)
        lua_setfield(co, -2, "event");
    else if (ctx && ctx->event)
        return EDDY_ERANGE;
    if (ctx && ctx->memory)
        lua_rawgeti(co, LUA_REGISTRYINDEX, ctx->memory->ref);
    else
        lua_newtable(co);
    lua_setfield(co, -2, "memory");
    lua_pushstring(co, c->tool->name);
    lua_setfield(co, -2, "tool");
    return 0;
}

int eddy_tool_call(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                   eddy_tool_cb cb, void *ud, eddy_err *err)
{
    lua_State *L = h->L;
    struct tool_call *c = eddy_calloc(1, sizeof(*c));
    eddy_err verr;
    if (!c)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    c->host = h;
    c->tool = t;
    c->cb = cb;
    c->ud = ud;
    c->co_ref = LUA_NOREF;
    c->start_ms = eddy_now_ms();
    if (uv_timer_init(h->loop, &c->timer)) {
        eddy_free(c);
        return eddy_err_set(err, EDDY_EUV, "cannot start a timer");
    }
    c->timer.data = c;
    h->calls++;
    if (!json_is_object(args)) {
        fail(c, EDDY_ESCHEMA, "arguments must be a JSON object");
    } else if (eddy_tool_validate_args(t->schema, args, &verr)) {
        fail(c, EDDY_ESCHEMA, verr.msg);
    } else if (t->module >= 0) {
        start_native(c, args);
    } else if (!lua_checkstack(L, 2) || !(c->co = lua_newthread(L))) {
        fail(c, EDDY_ENOMEM, "out of memory");
    } else {
        c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        *(struct tool_call **)lua_getextraspace(c->co) = c;
        lua_sethook(c->co, count_hook, LUA_MASKCOUNT, 1000);
        lua_rawgeti(c->co, LUA_REGISTRYINDEX, t->run_ref);
        if (eddy_lua_push_json(c->co, args) || push_ctx(c, ctx))
            fail(c, EDDY_ETOOL, "arguments or event are nested too deep");
        else
            resume(c, 2);
    }
    if (c->finished)
        uv_timer_start(&c->timer, on_timer, 0, 0);
    return 0;
}

int eddy_tool_memory_new(eddy_tools *h, json_t *doc, eddy_tool_memory **out, eddy_err *err)
{
    eddy_tool_memory *m = eddy_calloc(1, sizeof(*m));
    json_t *empty = NULL;
    *out = NULL;
    if (!m)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!json_is_object(doc))
        doc = empty = json_object();
    if (eddy_lua_push_json(h->L, doc)) {
        json_decref(empty);
        eddy_free(m);
        return eddy_err_set(err, EDDY_ERANGE, "memory document is nested too deep");
    }
    json_decref(empty);
    m->host = h;
    m->ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    *out = m;
    return 0;
}

json_t *eddy_tool_memory_json(eddy_tool_memory *m, eddy_err *err)
{
    json_t *v;
    lua_rawgeti(m->host->L, LUA_REGISTRYINDEX, m->ref);
    v = eddy_lua_to_json(m->host->L, -1, err);
    lua_pop(m->host->L, 1);
    if (v && !json_is_object(v)) {
        json_decref(v);
        eddy_err_set(err, EDDY_ESCHEMA, "ctx.memory must stay a table with string keys");
        return NULL;
    }
    return v;
}

void eddy_tool_memory_free(eddy_tool_memory *m)
{
    if (!m)
        return;
    luaL_unref(m->host->L, LUA_REGISTRYINDEX, m->ref);
    eddy_free(m);
}
