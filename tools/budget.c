/*
 * tools/budget.c - the budgets of a Lua tool call: instructions, memory and
 * wall-clock time, enforced whatever the tool does.
 *
 * The host knows the call whose code runs (h->current); everything that
 * executes meanwhile is charged to it: its coroutine, coroutines it made,
 * metamethods, and the C library functions (they charge their work through
 * eddy__tools_charge). Instructions are counted by a count hook that every
 * thread of the state inherits; bytes by the state's allocator, which
 * refuses growth past the call's memory budget (Lua then collects garbage
 * and retries once; a second refusal stops the call). Time is checked in
 * the hook, in charges and on big allocations; a call that has run for a
 * slice yields from the hook so the loop serves other keys.
 *
 * A stopped call (c->killed) cannot go on: the hook raises its error at
 * every step, and the sandbox's pcall, xpcall, coroutine.resume/wrap/close
 * and load raise it again instead of returning it (eddy__tools_recheck).
 * Finalizers never run tool code (setmetatable refuses __gc).
 */
#include "tools_int.h"

#include "eddy/buf.h"

#include <stdio.h>
#include <string.h>

eddy_tools *eddy__tools_host(lua_State *L)
{
    return *(eddy_tools **)lua_getextraspace(L);
}

static void fmt_bytes(char *buf, size_t n, int64_t v)
{
    if (v % (1LL << 20) == 0)
        snprintf(buf, n, "%lld MiB", (long long)(v >> 20));
    else if (v % 1000000 == 0)
        snprintf(buf, n, "%lld MB", (long long)(v / 1000000));
    else if (v % 1024 == 0)
        snprintf(buf, n, "%lld KiB", (long long)(v >> 10));
    else if (v % 1000 == 0)
        snprintf(buf, n, "%lld KB", (long long)(v / 1000));
    else
        snprintf(buf, n, "%lld bytes", (long long)v);
}

static void fmt_ms(char *buf, size_t n, int64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(buf, n, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, n, "%lldms", (long long)ms);
}

void eddy__tools_kill(struct tool_call *c, int why)
{
    char v[64];
    if (c->killed)
        return;
    c->killed = why;
    switch (why) {
    case KILL_INSTRUCTIONS:
        snprintf(c->kill_msg, sizeof(c->kill_msg), "instruction budget of %lld exceeded",
                 (long long)c->limits.instructions);
        break;
    case KILL_MEMORY:
        fmt_bytes(v, sizeof(v), c->limits.memory);
        snprintf(c->kill_msg, sizeof(c->kill_msg), "memory budget of %s exceeded", v);
        break;
    case KILL_WALL:
        fmt_ms(v, sizeof(v), c->limits.wall_ms);
        snprintf(c->kill_msg, sizeof(c->kill_msg), "wall-clock budget of %s exceeded", v);
        break;
    case KILL_NOYIELD:
        snprintf(c->kill_msg, sizeof(c->kill_msg),
                 "ran for more than %u ms where it cannot give other keys a turn (in a "
                 "metamethod, an error handler or a function a library calls back)",
                 (unsigned)(EDDY_LUA_NOYIELD_NS / 1000000));
        break;
    default:
        snprintf(c->kill_msg, sizeof(c->kill_msg), "cancelled: eddy is shutting down");
        break;
    }
}

/* Raise C's budget error in L. The message is pushed without allocating
 * when the heap refuses (the error is then Lua's memory error, which every
 * catcher turns back into this one). */
static int raise_killed(lua_State *L, struct tool_call *c)
{
    lua_pushstring(L, c->kill_msg);
    return lua_error(L);
}

void eddy__tools_raise_if_killed(lua_State *L)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    if (c && c->killed)
        raise_killed(L, c);
}

void eddy__tools_recheck(lua_State *L, int status)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    if (!c)
        return;
    if (status == LUA_ERRMEM && c->refused_size)
        eddy__tools_kill(c, KILL_MEMORY);
    if (c->killed)
        raise_killed(L, c);
}

/* Budgets of C that do not depend on the instruction that runs now: time
 * and instructions. Returns the reason to stop, or KILL_NONE. */
static int over_budget(struct tool_call *c, uint64_t now)
{
    if (c->instructions > c->limits.instructions)
        return KILL_INSTRUCTIONS;
    if (now > c->deadline_ns)
        return KILL_WALL;
    return KILL_NONE;
}

/* Ask for the hook at the next instruction of the running thread (allowed
 * from anywhere: lua_sethook is async-signal safe). */
static void hook_soon(struct tool_call *c)
{
    if (c->running && lua_gethookcount(c->running) != 1)
        lua_sethook(c->running, eddy__tools_hook, LUA_MASKCOUNT, 1);
}

void eddy__tools_hook(lua_State *L, lua_Debug *ar)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    uint64_t now;
    int why, every = EDDY_LUA_HOOK_EVERY;
    (void)ar;
    if (!c)
        return;
    c->instructions += lua_gethookcount(L);
    now = uv_hrtime();
    if ((why = over_budget(c, now)))
        eddy__tools_kill(c, why);
    if (c->killed)
        raise_killed(L, c);
    if (!c->is_load && now - c->slice_ns > EDDY_LUA_SLICE_NS) {
        if (lua_isyieldable(L)) {
            c->noyield_ns = 0;
            c->slice_yield = 1;
            if (lua_gethookcount(L) != every)
                lua_sethook(L, eddy__tools_hook, LUA_MASKCOUNT, every);
            lua_yield(L, 0); /* in a hook this returns; the yield comes after */
            return;
        }
        /* where it cannot yield (a metamethod, a library's callback, an error
         * handler): look again soon, yield at the first point where it can,
         * and stop a call that stays there too long for the other keys */
        if (!c->noyield_ns)
            c->noyield_ns = now;
        else if (now - c->noyield_ns > EDDY_LUA_NOYIELD_NS) {
            eddy__tools_kill(c, KILL_NOYIELD);
            raise_killed(L, c);
        }
        every = 100;
    }
    /* lua_sethook walks every frame of L: only when the count changes */
    if (lua_gethookcount(L) != every)
        lua_sethook(L, eddy__tools_hook, LUA_MASKCOUNT, every);
}

void eddy__tools_charge(lua_State *L, int64_t units)
{
    eddy_tools *h = eddy__tools_host(L);
    struct tool_call *c = h ? h->current : NULL; /* a state of eddy's own, or none */
    int why;
    if (!c || units <= 0)
        return;
    c->instructions += units;
    if ((why = over_budget(c, uv_hrtime())))
        eddy__tools_kill(c, why);
    if (c->killed)
        raise_killed(L, c);
    if (units >= 100000)
        hook_soon(c); /* a slice may be over */
}

int64_t eddy__tools_mem_left(lua_State *L)
{
    eddy_tools *h = eddy__tools_host(L);
    struct tool_call *c = h ? h->current : NULL;
    return c ? c->limits.memory - c->mem : EDDY_LUA_CONVERT_MAX;
}

void eddy__tools_reserve(lua_State *L, int64_t bytes)
{
    eddy_tools *h = eddy__tools_host(L);
    struct tool_call *c = h ? h->current : NULL;
    if (!c)
        return;
    if (c->mem + bytes > c->limits.memory)
        eddy__tools_kill(c, KILL_MEMORY);
    if (c->killed)
        raise_killed(L, c);
}

void *eddy__tools_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    eddy_tools *h = ud;
    struct tool_call *c = h->current;
    void *p;
    if (!ptr)
        osize = 0; /* then osize is the kind of object */
    if (nsize == 0) {
        eddy_free(ptr);
        h->heap -= (int64_t)osize;
        /* a free during the call may be another call's garbage: it can give
         * back what the call allocated, never more */
        if (c && (c->mem -= (int64_t)osize) < 0)
            c->mem = 0;
        return NULL;
    }
    if (nsize > osize && c) {
        int64_t grow = (int64_t)(nsize - osize);
        if (c->killed)
            return NULL;
        if (c->mem + grow > c->limits.memory || h->heap + grow > EDDY_LUA_HOST_HEAP) {
            /* Lua collects and asks again once: refuse twice, then stop */
            if (c->refused_size == nsize)
                eddy__tools_kill(c, KILL_MEMORY);
            c->refused_size = nsize;
            return NULL;
        }
        c->instructions += grow / 64;
        if (grow >= (256 << 10)) {
            int why = over_budget(c, uv_hrtime());
            if (why) {
                eddy__tools_kill(c, why);
                return NULL;
            }
            hook_soon(c);
        }
    }
    p = eddy_realloc(ptr, nsize);
    if (!p)
        return NULL;
    h->heap += (int64_t)nsize - (int64_t)osize;
    if (c) {
        if ((c->mem += (int64_t)nsize - (int64_t)osize) < 0)
            c->mem = 0;
        if (nsize > osize)
            c->refused_size = 0;
    }
    return p;
}

/* -- holders ------------------------------------------------------------- */

static int holder_gc(lua_State *L)
{
    eddy__tools_holder_release(lua_touserdata(L, 1));
    return 0;
}

eddy_holder *eddy__tools_holder(lua_State *L)
{
    eddy_holder *hd = lua_newuserdatauv(L, sizeof(*hd), 0);
    hd->free = NULL;
    hd->p = NULL;
    if (luaL_newmetatable(L, EDDY_LUA_HOLDER_MT)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return hd;
}

void eddy__tools_holder_release(eddy_holder *hd)
{
    if (hd && hd->p && hd->free)
        hd->free(hd->p);
    if (hd)
        hd->p = NULL;
}

/* -- protected entry from C ------------------------------------------------ */

int eddy__tools_protect(eddy_tools *h, lua_CFunction fn, void *ud, int nres, eddy_err *err)
{
    lua_State *L = h->L;
    int top = lua_gettop(L), st;
    if (!lua_checkstack(L, 3))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory (Lua stack)");
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, ud);
    st = lua_pcall(L, 1, nres, 0);
    if (st == LUA_OK)
        return 0;
    if (st == LUA_ERRMEM)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    else
        eddy_err_set(err, EDDY_ELUA, "%s",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "Lua error");
    lua_settop(L, top);
    return st == LUA_ERRMEM ? EDDY_ENOMEM : EDDY_ELUA;
}
