/*
 * tools/call.c - tool calls as coroutines, and ctx.memory documents.
 *
 * A call owns two timers: `timer` (eddy.sleep, the next slice after the
 * hook yielded, a native answer, and delivering a result that was ready
 * before eddy_tool_call returned: callbacks never run inside the starting
 * call) and `deadline` (the wall-clock budget while the call is not
 * running). Each resume sets h->current (what budgets are charged to) and
 * points the tool file's _ENV at the call's own globals table.
 *
 * Invariants: a call's callback runs exactly once, from a libuv callback;
 * after it, the call's ctx and ctx.memory proxies are dead and its
 * coroutine is unreferenced. The struct is freed when both timers are
 * closed, and not before a native wait it started has been answered (the
 * answer of an abandoned call is dropped).
 */
#include "tools_int.h"

#include "eddy/buf.h"

#include <assert.h>
#include <string.h>

static void call_closed(uv_handle_t *hd)
{
    struct tool_call *c = hd->data;
    if (--c->nhandles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->host->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    json_decref(c->res_result);
    eddy_free(c->res_msg);
    eddy_free(c->wait_msg);
    eddy_free(c);
}

static void close_call(struct tool_call *c)
{
    uv_close((uv_handle_t *)&c->timer, call_closed);
    uv_close((uv_handle_t *)&c->deadline, call_closed);
    uv_close((uv_handle_t *)&c->slice, call_closed);
}

/* What ctx.state's functions hold: their call, until it ends. */
struct eddy__state_handle {
    struct tool_call *c;
    eddy_tool_state_fn fn;
    void *ud;
};

static int l_state(lua_State *L)
{
    struct eddy__state_handle *h = lua_touserdata(L, lua_upvalueindex(1));
    const char *op = lua_tostring(L, lua_upvalueindex(2));
    const char *key = luaL_checkstring(L, 1);
    json_t *a = NULL, *b = NULL, *res;
    eddy_err e;
    int nargs = !strcmp(op, "compare_and_set") ? 2 : (!strcmp(op, "set") || !strcmp(op, "incr"));
    if (!h->c)
        return luaL_error(L, "ctx.state.%s: the call whose ctx this was has ended", op);
    eddy__tools_charge(L, 200);
    for (int i = 0; i < nargs; i++) {
        json_t **slot = i ? &b : &a;
        if (lua_isnoneornil(L, 2 + i))
            continue;
        if (!(*slot = eddy_lua_to_json(L, 2 + i, &e))) {
            json_decref(a);
            return luaL_error(L, "ctx.state.%s: %s", op, e.msg);
        }
    }
    res = h->fn(h->ud, op, key, a, b, &e);
    json_decref(a);
    json_decref(b);
    if (!res)
        return luaL_error(L, "%s", e.msg);
    if (json_is_null(res)) { /* no key holds null: it is "absent", nil in Lua */
        json_decref(res);
        lua_pushnil(L);
        return 1;
    }
    int rc = eddy_lua_push_json(L, res);
    json_decref(res);
    if (rc)
        return luaL_error(L, "ctx.state.%s: the value is nested too deep", op);
    return 1;
}

/* ctx.state for call C: a table of the five operations, each holding the
 * call's handle, onto the stack. */
static void push_state(lua_State *L, struct tool_call *c, const eddy_tool_ctx *ctx)
{
    static const char *const ops[] = {"get", "set", "incr", "compare_and_set", "delete", NULL};
    struct eddy__state_handle *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->c = c;
    h->fn = ctx->state;
    h->ud = ctx->state_ud;
    lua_pushvalue(L, -1);
    c->state_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->state_h = h;
    lua_createtable(L, 0, 5);
    for (int i = 0; ops[i]; i++) {
        lua_pushvalue(L, -2);
        lua_pushstring(L, ops[i]);
        lua_pushcclosure(L, l_state, 2);
        lua_setfield(L, -2, ops[i]);
    }
    lua_remove(L, -2);
}

/* Drop the call's Lua objects: ctx and ctx.memory die here. */
static int release_lua(lua_State *L)
{
    struct tool_call *c = lua_touserdata(L, 1);
    if (c->state_h) { /* a stashed ctx.state function fails from now on */
        c->state_h->c = NULL;
        c->state_h = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, c->state_ref);
        c->state_ref = LUA_NOREF;
    }
    if (c->ctx_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->ctx_ref);
        eddy__tools_kill_proxy(L, -1);
    }
    if (c->mem_ref != LUA_NOREF) { /* every memory proxy the call made */
        int cache;
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->mem_ref);
        cache = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, cache)) {
            eddy__tools_kill_proxy(L, -1);
            lua_pop(L, 1);
        }
    }
    return 0;
}

static int collect(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

/* Keep C's coroutine for the next call when C returned normally (nothing
 * left on its stack, no frame pending): no new thread, no new stack. */
static void pool_coroutine(struct tool_call *c)
{
    eddy_tools *h = c->host;
    if (c->co_ref == LUA_NOREF || !c->co || c->killed || c->res_status || !c->finished ||
        h->npool >= EDDY_LUA_POOL || lua_status(c->co) != LUA_OK)
        return;
    lua_settop(c->co, 0);
    if (lua_getstack(c->co, 0, &(lua_Debug){0})) /* a frame still there: not reusable */
        return;
    h->pool[h->npool++] = c->co_ref;
    c->co_ref = LUA_NOREF;
}

static void unref_all(struct tool_call *c)
{
    lua_State *L = c->host->L;
    int *refs[] = {&c->co_ref, &c->env_ref, &c->ctx_ref, &c->mem_ref};
    eddy__tools_protect(c->host, release_lua, c, 0, NULL);
    pool_coroutine(c);
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
        *refs[i] = LUA_NOREF;
    }
    c->co = NULL;
    if (c->killed == KILL_MEMORY) /* give its heap back now, not at the next cycle */
        eddy__tools_protect(c->host, collect, NULL, 0, NULL);
}

/* -- the queue of sliced calls ------------------------------------------------ */

static void on_slice(uv_idle_t *i);

static void wake_queue(eddy_tools *h)
{
    h->slice_waker = h->slice_head;
    if (h->slice_waker)
        uv_idle_start(&h->slice_waker->slice, on_slice);
}

static void slice_push(struct tool_call *c)
{
    eddy_tools *h = c->host;
    assert(!c->sliced);
    c->sliced = 1;
    c->slice_next = NULL;
    c->slice_prev = h->slice_tail;
    if (h->slice_tail)
        h->slice_tail->slice_next = c;
    else
        h->slice_head = c;
    h->slice_tail = c;
    if (!h->slice_waker)
        wake_queue(h);
}

static void slice_remove(struct tool_call *c)
{
    eddy_tools *h = c->host;
    if (!c->sliced)
        return;
    c->sliced = 0;
    if (c->slice_prev)
        c->slice_prev->slice_next = c->slice_next;
    else
        h->slice_head = c->slice_next;
    if (c->slice_next)
        c->slice_next->slice_prev = c->slice_prev;
    else
        h->slice_tail = c->slice_prev;
    if (h->slice_waker == c) {
        uv_idle_stop(&c->slice);
        wake_queue(h);
    }
}

static void deliver(struct tool_call *c)
{
    assert(c->finished && !c->delivered);
    c->delivered = 1;
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->deadline);
    slice_remove(c);
    unref_all(c);
    eddy_tool_result res = {0};
    res.status = c->res_status;
    if (res.status)
        eddy_err_set(&res.err, res.status, "%s",
                     c->res_msg ? c->res_msg : eddy_strerror(res.status));
    res.result = c->res_result;
    c->res_result = NULL;
    res.duration_ms = eddy_now_ms() - c->start_ms;
    if (res.status && c->tool->nsecrets) {
        char clean[EDDY_ERR_MSG_MAX];
        eddy_tool_redact(c->tool, res.err.msg, clean, sizeof(clean));
        snprintf(res.err.msg, sizeof(res.err.msg), "%s", clean);
    }
    c->cb(&res, c->ud);
    json_decref(res.result);
    json_decref(c->wait_result);
    c->wait_result = NULL;
    c->host->calls--;
    if (!c->native_wait) { /* else when the answer comes */
        close_call(c);
    } else if (c->wait_cancel) { /* abandoned: the work may stop now */
        void (*cancel)(void *) = c->wait_cancel;
        c->wait_cancel = NULL;
        cancel(c->wait_cancel_ud);
    }
}

static void fail(struct tool_call *c, int code, const char *msg)
{
    if (c->finished)
        return;
    c->finished = 1;
    json_decref(c->res_result);
    c->res_result = NULL;
    c->res_status = code;
    eddy_err e;
    char *full = NULL;
    /* redacted before the message is cut to its bound: a secret across the
     * cut would leave its start behind */
    if (c->tool->nsecrets && (full = eddy_aprintf("tool '%s' failed: %s", c->tool->name, msg)))
        eddy_tool_redact(c->tool, full, e.msg, sizeof(e.msg));
    else
        eddy_err_set(&e, code, "tool '%s' failed: %s", c->tool->name, msg);
    eddy_free(full);
    eddy_free(c->res_msg);
    c->res_msg = eddy_strdup(e.msg);
}

static void fail_killed(struct tool_call *c)
{
    fail(c, c->killed == KILL_CANCEL ? EDDY_ECANCELED : EDDY_EBUDGET, c->kill_msg);
}

static void on_timer(uv_timer_t *t);

/* Look at what lua_resume returned and record the outcome. */
static void after_resume(struct tool_call *c, int status, int nres)
{
    lua_State *co = c->co;
    if (status == LUA_ERRMEM && c->refused_size)
        eddy__tools_kill(c, KILL_MEMORY);
    if (c->killed) {
        fail_killed(c);
        return;
    }
    if (status == LUA_YIELD) {
        lua_pop(co, nres);
        if (c->slice_yield) { /* the loop's turn: I/O and timers, then go on */
            c->slice_yield = 0;
            slice_push(c);
            return;
        }
        if (c->waiting)
            return;
        fail(c, EDDY_ETOOL, "coroutine.yield was called outside a coroutine the tool made");
        return;
    }
    if (status != LUA_OK) {
        char num[64];
        const char *m = NULL;
        if (lua_type(co, -1) == LUA_TSTRING) {
            m = lua_tostring(co, -1);
        } else if (lua_type(co, -1) == LUA_TNUMBER) { /* lua_tostring would allocate */
            if (lua_isinteger(co, -1))
                snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(co, -1));
            else
                snprintf(num, sizeof(num), "%.17g", lua_tonumber(co, -1));
            m = num;
        }
        fail(c, EDDY_ETOOL,
             m                      ? m
             : status == LUA_ERRMEM ? "out of memory"
                                    : "error object is not a string");
        return;
    }
    c->finished = 1;
    if (nres == 0) {
        c->res_result = json_null();
    } else {
        eddy_err e;
        c->res_result = eddy__lua_to_json_max(co, -nres, 2 * EDDY_LUA_RESULT_MAX, &e);
        if (c->res_result) {
            size_t n = json_dumpb(c->res_result, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
            if (n > (size_t)EDDY_LUA_RESULT_MAX) {
                char msg[128];
                snprintf(msg, sizeof(msg),
                         "its result is too large (%zu bytes of JSON; a tool may return up to "
                         "1 MiB)",
                         n);
                c->finished = 0;
                fail(c, EDDY_ETOOL, msg);
                lua_settop(co, 0);
                return;
            }
        } else {
            char msg[EDDY_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "its result has no JSON form: %s", e.msg);
            c->finished = 0;
            fail(c, EDDY_ETOOL, msg);
        }
    }
    lua_settop(co, 0);
}

static void resume(struct tool_call *c, int nargs)
{
    eddy_tools *h = c->host;
    struct tool_call *prev = h->current;
    int nres = 0, status;
    c->waiting = 0;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, c->env_ref);
    eddy__tools_set_env(h->L, c->tool, -1);
    lua_pop(h->L, 1);
    h->current = c;
    c->running = c->co;
    c->slice_ns = uv_hrtime();
    c->noyield_ns = 0;
    status = lua_resume(c->co, h->L, nargs, &nres);
    c->running = NULL;
    h->current = prev;
    after_resume(c, status, nres);
}

/* Keep MSG (cut as an eddy_err's message is) as the failure (false, MSG) the
 * coroutine is resumed with; NULL when out of memory. */
static void set_wait_msg(struct tool_call *c, const char *msg)
{
    eddy_free(c->wait_msg);
    c->wait_msg = eddy_strndup(msg, strnlen(msg, EDDY_ERR_MSG_MAX - 1));
}

/* Push the native answer onto the main thread (may raise: protected). */
static int push_answer(lua_State *L)
{
    struct tool_call *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (c->wait_status) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, c->wait_msg ? c->wait_msg : "out of memory");
        return 2;
    }
    if (!c->wait_result || json_is_null(c->wait_result))
        lua_pushnil(L);
    else if (eddy_lua_push_json(L, c->wait_result))
        return luaL_error(L, "the answer is nested too deep");
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

/* Resume a coroutine that waited for a native function with (ok, value) or
 * (false, message); native_k in native.c takes them from there. */
static void resume_answer(struct tool_call *c)
{
    eddy_err e;
    c->wait_ready = 0;
    if (eddy__tools_protect(c->host, push_answer, c, 2, &e)) {
        c->wait_status = EDDY_ENOMEM;
        set_wait_msg(c, e.msg);
        if (eddy__tools_protect(c->host, push_answer, c, 2, &e)) {
            fail(c, EDDY_ENOMEM, "out of memory");
            return;
        }
    }
    json_decref(c->wait_result);
    c->wait_result = NULL;
    if (!lua_checkstack(c->co, 2)) {
        lua_pop(c->host->L, 2);
        fail(c, EDDY_ENOMEM, "out of memory");
        return;
    }
    lua_xmove(c->host->L, c->co, 2);
    resume(c, 2);
}

static void on_timer(uv_timer_t *t)
{
    struct tool_call *c = t->data;
    if (c->delivered)
        return;
    slice_remove(c); /* a resume from here replaces a pending slice */
    if (!c->finished) {
        if (c->wait_ready)
            resume_answer(c);
        else
            resume(c, 0);
    }
    if (c->finished)
        deliver(c);
}

/* Once per loop iteration: give the queued calls their slices, in order,
 * for at most EDDY_LUA_ROUND_NS, then let the loop serve everything else. */
static void on_slice(uv_idle_t *i)
{
    struct tool_call *w = i->data;
    eddy_tools *h = w->host;
    uint64_t start = uv_hrtime();
    uv_idle_stop(i);
    h->slice_waker = NULL;
    while (h->slice_head && uv_hrtime() - start < EDDY_LUA_ROUND_NS) {
        struct tool_call *c = h->slice_head;
        slice_remove(c);
        if (!c->finished)
            resume(c, 0);
        if (c->finished && !c->delivered)
            deliver(c);
    }
    if (!h->slice_waker)
        wake_queue(h);
}

static void on_deadline(uv_timer_t *t)
{
    struct tool_call *c = t->data;
    if (c->delivered || c->finished)
        return;
    eddy__tools_kill(c, KILL_WALL);
    fail_killed(c);
    deliver(c);
}

eddy_tool_wait *eddy__tools_call_begin_wait(lua_State *L)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    if (!c || c->co != L || c->is_load || !lua_isyieldable(L))
        return NULL;
    c->waiting = 1;
    c->native_wait = 1;
    c->wait_ready = 0;
    return (eddy_tool_wait *)c;
}

void eddy__tools_call_cancel_wait(eddy_tool_wait *w)
{
    struct tool_call *c = (struct tool_call *)w;
    c->waiting = 0;
    c->native_wait = 0;
}

const eddy_tool *eddy_tool_wait_tool(const eddy_tool_wait *w)
{
    return ((const struct tool_call *)w)->tool;
}

struct eddy_span *eddy_tool_wait_span(const eddy_tool_wait *w)
{
    return ((const struct tool_call *)w)->span;
}

void eddy_tool_wait_on_cancel(eddy_tool_wait *w, void (*cancel)(void *ud), void *ud)
{
    struct tool_call *c = (struct tool_call *)w;
    assert(c->native_wait);
    c->wait_cancel = cancel;
    c->wait_cancel_ud = ud;
}

void eddy_tool_wait_done(eddy_tool_wait *w, int status, json_t *result, const char *msg)
{
    struct tool_call *c = (struct tool_call *)w;
    assert(c->native_wait);
    c->native_wait = 0;
    c->wait_cancel = NULL;
    if (c->delivered) { /* abandoned (budget or shutdown) while it waited */
        json_decref(result);
        close_call(c);
        return;
    }
    if (TOOL_IS_NATIVE(c->tool)) { /* a native tool: this is the call's outcome */
        if (status) {
            json_decref(result);
            fail(c, status < 0 ? status : EDDY_ETOOL, msg ? msg : "failed");
        } else if (!c->finished) {
            c->finished = 1;
            c->res_result = result ? result : json_null();
        } else {
            json_decref(result);
        }
    } else {
        c->wait_ready = 1;
        c->wait_status = status;
        c->wait_result = status ? (json_decref(result), NULL) : result;
        set_wait_msg(c, status && msg ? msg : "failed");
    }
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

const char *eddy__tool_call_name(const struct tool_call *c)
{
    return c->tool->name;
}

int eddy__tools_call_wait(lua_State *L, uint64_t ms)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    uint64_t now = uv_hrtime(), left;
    if (!c || c->is_load)
        return luaL_error(L, "eddy.sleep can only be used while a tool runs, not at load");
    if (c->co != L)
        return luaL_error(L, "eddy.sleep cannot be used in a coroutine the tool made");
    if (!lua_isyieldable(L))
        return luaL_error(L, "eddy.sleep cannot be used here (in a metamethod, an error "
                             "handler or a function a library calls back)");
    left = c->deadline_ns > now ? (c->deadline_ns - now) / 1000000 + 1 : 0;
    c->waiting = 1;
    uv_timer_start(&c->timer, on_timer, ms < left ? ms : left, 0);
    return lua_yield(L, 0);
}

void eddy_tools_cancel_all(eddy_tools *h)
{
    for (struct tool_call *c = h->live; c; c = c->next) {
        if (c->delivered)
            continue;
        eddy__tools_kill(c, KILL_CANCEL);
        fail_killed(c);
        uv_timer_start(&c->timer, on_timer, 0, 0);
    }
}

/* A native tool's body gets the checked arguments and answers through the
 * call (eddy_tool_wait_done). */
static void start_native(struct tool_call *c, json_t *args)
{
    void *state;
    eddy_err e;
    int rc = 0;
    state = NULL;
    if (c->tool->module != TOOL_BARE)
        rc = eddy__tools_module_state(c->host, (size_t)c->tool->module, &state, &e);
    c->native_wait = 1;
    if (!rc)
        rc = c->tool->native.call(state, c->tool->native.data, args, (eddy_tool_wait *)c, &e);
    if (rc) {
        c->native_wait = 0;
        fail(c, rc, e.msg);
    }
}

typedef struct setup {
    struct tool_call *c;
    json_t *args;
    const eddy_tool_ctx *ctx;
    int fn_ref; /* run, or reconcile */
} setup;

/* The registry key of ctx.config for tools without config. */
static const char kNoConfig = 0;

/* Make the call's coroutine, globals, ctx and ctx.memory proxy, and push
 * run, args and ctx onto the coroutine (protected: it allocates). */
static int call_setup(lua_State *L)
{
    setup *s = lua_touserdata(L, 1);
    struct tool_call *c = s->c;
    const eddy_tool_ctx *ctx = s->ctx;
    eddy_tools *h = c->host;
    if (h->npool > 0) { /* a coroutine a call returned from: already eddy's, hooked */
        c->co_ref = h->pool[--h->npool];
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->co_ref);
        c->co = lua_tothread(L, -1);
        lua_pop(L, 1);
        assert(c->co && lua_status(c->co) == LUA_OK && lua_gettop(c->co) == 0);
    } else {
        c->co = lua_newthread(L);
        eddy__tools_own_thread(L);
        c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_sethook(c->co, eddy__tools_hook, LUA_MASKCOUNT, EDDY_LUA_HOOK_EVERY);
    }

    lua_createtable(L, 0, 2); /* the call's globals */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tool->envmt_ref);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    c->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_newtable(L); /* the call's memory proxies */
    lua_pushvalue(L, -1);
    c->mem_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ctx && ctx->memory)
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->memory->ref);
    else
        lua_newtable(L);
    eddy__tools_memory_proxy(L, -1, -2);
    lua_replace(L, -3);
    lua_pop(L, 1);

    lua_createtable(L, 0, 4);
    lua_insert(L, -2);
    lua_setfield(L, -2, "memory");
    lua_pushstring(L, ctx && ctx->key ? ctx->key : "");
    lua_setfield(L, -2, "key");
    if (ctx && ctx->event) {
        if (eddy_lua_push_json(L, ctx->event))
            return luaL_error(L, "the event is nested too deep");
        lua_setfield(L, -2, "event");
    }
    lua_pushstring(L, c->tool->name);
    lua_setfield(L, -2, "tool");
    if (c->tool->config) { /* a fresh copy each call: no call sees another's changes */
        if (eddy_lua_push_json(L, c->tool->config))
            return luaL_error(L, "the tool's config is nested too deep");
    } else { /* none: the host's one empty read-only table, made once */
        if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kNoConfig) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
            eddy__tools_freeze(L, -1);
            lua_remove(L, -2);
            lua_pushvalue(L, -1);
            lua_rawsetp(L, LUA_REGISTRYINDEX, &kNoConfig);
        }
    }
    lua_setfield(L, -2, "config");
    if (ctx && ctx->state) {
        push_state(L, c, ctx);
        lua_setfield(L, -2, "state");
    }
    lua_pushvalue(L, -1);
    c->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
    if (eddy_lua_push_json(L, s->args))
        return luaL_error(L, "the arguments are nested too deep");
    lua_rotate(L, -3, -1); /* run, args, ctx */
    lua_xmove(L, c->co, 3);
    return 0;
}

static int start_call(eddy_tools *h, eddy_tool *t, int fn_ref, json_t *args,
                      const eddy_tool_ctx *ctx, eddy_tool_cb cb, void *ud, eddy_err *err);

int eddy_tool_call(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                   eddy_tool_cb cb, void *ud, eddy_err *err)
{
    return start_call(h, t, t->run_ref, args, ctx, cb, ud, err);
}

int eddy_tool_side_effects(const eddy_tool *t)
{
    return t->side_effects;
}

int eddy_tool_has_reconcile(const eddy_tool *t)
{
    return t->reconcile_ref != LUA_NOREF && !TOOL_IS_NATIVE(t);
}

int eddy_tool_reconcile(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                        eddy_tool_cb cb, void *ud, eddy_err *err)
{
    if (!eddy_tool_has_reconcile(t))
        return eddy_err_set(err, EDDY_EINVAL, "tool '%s' has no reconcile", t->name);
    return start_call(h, t, t->reconcile_ref, args, ctx, cb, ud, err);
}

static int start_call(eddy_tools *h, eddy_tool *t, int fn_ref, json_t *args,
                      const eddy_tool_ctx *ctx, eddy_tool_cb cb, void *ud, eddy_err *err)
{
    struct tool_call *c = eddy_calloc(1, sizeof(*c));
    eddy_err verr;
    if (!c)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    c->host = h;
    c->tool = t;
    c->cb = cb;
    c->ud = ud;
    c->span = ctx ? ctx->span : NULL;
    c->co_ref = c->env_ref = c->ctx_ref = c->mem_ref = c->state_ref = LUA_NOREF;
    c->limits = t->limits;
    c->start_ms = eddy_now_ms();
    c->deadline_ns = uv_hrtime() + (uint64_t)c->limits.wall_ms * 1000000u;
    if (uv_timer_init(h->loop, &c->timer)) {
        eddy_free(c);
        return eddy_err_set(err, EDDY_EUV, "cannot start a timer");
    }
    uv_timer_init(h->loop, &c->deadline); /* cannot fail once the first did */
    uv_idle_init(h->loop, &c->slice);
    c->timer.data = c->deadline.data = c->slice.data = c;
    c->nhandles = 3;
    c->next = h->live;
    if (h->live)
        h->live->prev = c;
    h->live = c;
    h->calls++;
    uv_timer_start(&c->deadline, on_deadline, (uint64_t)c->limits.wall_ms, 0);
    if (!json_is_object(args)) {
        fail(c, EDDY_ESCHEMA, "arguments must be a JSON object");
    } else if (eddy_tool_validate_args(t->schema, args, &verr)) {
        fail(c, EDDY_ESCHEMA, verr.msg);
    } else if (TOOL_IS_NATIVE(t)) {
        start_native(c, args);
    } else {
        setup s = {c, args, ctx, fn_ref};
        if (eddy__tools_protect(h, call_setup, &s, 0, &verr))
            fail(c, verr.code, verr.msg);
        else
            resume(c, 2);
    }
    if (c->finished)
        uv_timer_start(&c->timer, on_timer, 0, 0);
    return 0;
}

/* -- ctx.memory documents ---------------------------------------------------- */

typedef struct mem_setup {
    eddy_tool_memory *m;
    json_t *doc;
} mem_setup;

static int memory_push(lua_State *L)
{
    mem_setup *s = lua_touserdata(L, 1);
    if (eddy_lua_push_json(L, s->doc))
        return luaL_error(L, "memory document is nested too deep");
    s->m->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int eddy_tool_memory_new(eddy_tools *h, json_t *doc, eddy_tool_memory **out, eddy_err *err)
{
    eddy_tool_memory *m = eddy_calloc(1, sizeof(*m));
    json_t *empty = NULL;
    mem_setup s;
    int rc;
    *out = NULL;
    if (!m)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!json_is_object(doc))
        doc = empty = json_object();
    s.m = m;
    s.doc = doc;
    m->host = h;
    m->ref = LUA_NOREF;
    rc = doc ? eddy__tools_protect(h, memory_push, &s, 0, err)
             : eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    json_decref(empty);
    if (rc) {
        eddy_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

json_t *eddy_tool_memory_json(eddy_tool_memory *m, eddy_err *err)
{
    json_t *v;
    lua_rawgeti(m->host->L, LUA_REGISTRYINDEX, m->ref);
    v = eddy__lua_to_json_max(m->host->L, -1, 16LL << 20, err);
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
