/*
 * tools/sandbox.c - the environment Lua tools run in.
 *
 * An allowlist: the safe base functions, string, table, math, utf8,
 * coroutine, os.time/clock/date/difftime and the eddy module; no io, debug,
 * package, require, dofile, collectgarbage, string.dump or os.getenv; load
 * takes text only. What one call could use to reach another is closed:
 *
 *  - libraries are read-only proxies (a proxy is an empty table whose
 *    metatable reads through to a private copy and refuses writes; rawset,
 *    next, rawget and rawlen see through proxies, and rawset refuses them);
 *    the string metatable is hidden (getmetatable("") is false) and its
 *    __index is the private copy;
 *  - each call gets its own globals table (see call.c), so globals written
 *    by one call are never seen by another call or key;
 *  - ctx and ctx.memory are dead after their call returns (DEAD_MT);
 *  - setmetatable refuses __gc, since finalizers run outside any budget.
 *
 * Budgets: the C library functions that can do unbounded work charge it to
 * the running call before they run (eddy__tools_charge); pcall, xpcall and
 * the coroutine functions re-raise a stopped call's error; coroutine.resume
 * and wrap pass a slice yield of the hook up to the call's own coroutine so
 * a tool computing in a coroutine it made is time-sliced too.
 */
#include "tools_int.h"

#include "eddy/log.h"

#include <limits.h>
#include <string.h>

/* -- proxies --------------------------------------------------------------- */

static void push_proxies(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, EDDY_LUA_PROXIES);
}

/* The key (its address) under which a ctx.memory proxy holds the real
 * table it stands for, raw: no Lua code can make a light userdata to read
 * it, and next/pairs see through proxies. (Library proxies, made once, are
 * in the registry's proxies map instead; a map that every call's proxy went
 * into and out of cost a rehash of the whole map at most inserts.) */
static const char kRealKey = 0;

int eddy__tools_proxy_real(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (eddy__tools_is_mt(L, idx, EDDY_LUA_MEMORY_MT)) {
        if (lua_rawgetp(L, idx, &kRealKey) == LUA_TTABLE)
            return 1;
        lua_pop(L, 1);
        return 0;
    }
    push_proxies(L);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 2);
    return 0;
}

static int dead_error(lua_State *L)
{
    const char *what = "ctx";
    if (lua_type(L, 1) == LUA_TTABLE && lua_rawgetp(L, 1, &dead_error) == LUA_TSTRING)
        what = lua_tostring(L, -1);
    return luaL_error(L, "%s used after its tool call returned", what);
}

int eddy__tools_unproxy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    if (eddy__tools_is_mt(L, idx, EDDY_LUA_DEAD_MT)) {
        const char *what = "ctx";
        if (lua_rawgetp(L, idx, &dead_error) == LUA_TSTRING)
            what = lua_tostring(L, -1);
        luaL_error(L, "%s used after its tool call returned", what);
    }
    return eddy__tools_proxy_real(L, idx);
}

static int is_frozen(lua_State *L, int idx)
{
    int r = 0;
    if (lua_getmetatable(L, idx)) {
        r = lua_rawgetp(L, -1, &is_frozen) == LUA_TBOOLEAN;
        lua_pop(L, 2);
    }
    return r;
}

static int frozen_newindex(lua_State *L)
{
    return luaL_error(L, "the shared libraries are read-only (cannot set '%s')",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static int l_next(lua_State *L);

/* __pairs of proxies: iterate with the sandbox's next, which sees through. */
static int proxy_pairs(lua_State *L)
{
    lua_pushcfunction(L, l_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void eddy__tools_freeze(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L); /* the proxy */
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, proxy_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushboolean(L, 1);
    lua_rawsetp(L, -2, &is_frozen);
    lua_setmetatable(L, -2);
    push_proxies(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, idx);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The real table behind the ctx.memory proxy at IDX, pushed (1), or 0.
 * Raises for a dead one. Never unwraps library proxies (a library copy
 * must never become part of a memory document, where it could be written). */
static int unwrap_memory(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || (!eddy__tools_is_mt(L, idx, EDDY_LUA_MEMORY_MT) &&
                                           !eddy__tools_is_mt(L, idx, EDDY_LUA_DEAD_MT)))
        return 0;
    return eddy__tools_unproxy(L, idx);
}

void eddy__tools_memory_proxy(lua_State *L, int idx, int cache)
{
    idx = lua_absindex(L, idx);
    cache = lua_absindex(L, cache);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, cache) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    luaL_setmetatable(L, EDDY_LUA_MEMORY_MT);
    lua_pushvalue(L, idx);
    lua_rawsetp(L, -2, &kRealKey);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
}

static const char *const kDocMarks[] = {EDDY_LUA_ARRAY_MT, EDDY_LUA_OBJECT_MT, EDDY_LUA_JARRAY_MT,
                                        EDDY_LUA_JOBJECT_MT, NULL};

/* Proxies inside the plain table at IDX (stored into a memory document)
 * become the tables they stand for, so a document never holds a proxy; at
 * most DEPTH levels, each table once (SEEN). */
static void unwrap_inside(lua_State *L, int idx, int depth, int seen)
{
    idx = lua_absindex(L, idx);
    if (depth > 64 || lua_type(L, idx) != LUA_TTABLE)
        return;
    lua_pushvalue(L, idx);
    if (lua_rawget(L, seen) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        eddy__tools_charge(L, 1);
        if (unwrap_memory(L, -1)) {
            lua_pushvalue(L, -3);
            lua_insert(L, -2);
            lua_rawset(L, idx); /* an existing key: allowed while iterating */
        } else if (lua_type(L, -1) == LUA_TTABLE && !is_frozen(L, -1)) {
            unwrap_inside(L, -1, depth + 1, seen);
        }
        lua_pop(L, 1);
    }
}

/* Replace the table on top (a value read from a memory document) with its
 * proxy for the running call, so that it dies with the call too. */
static void wrap_top(lua_State *L)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    if (lua_type(L, -1) != LUA_TTABLE || !c || c->mem_ref == LUA_NOREF)
        return;
    if (lua_getmetatable(L, -1)) { /* only document tables: plain or marked */
        int plain = 0;
        for (const char *const *m = kDocMarks; *m && !plain; m++) {
            luaL_getmetatable(L, *m);
            plain = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (!plain)
            return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->mem_ref);
    eddy__tools_memory_proxy(L, -2, -1);
    lua_replace(L, -3);
    lua_pop(L, 1);
}

static int memory_index(lua_State *L)
{
    if (!eddy__tools_unproxy(L, 1))
        return luaL_error(L, "ctx.memory used after its tool call returned");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    wrap_top(L);
    return 1;
}

static int memory_newindex(lua_State *L)
{
    if (!eddy__tools_unproxy(L, 1))
        return luaL_error(L, "ctx.memory used after its tool call returned");
    if (is_frozen(L, 3))
        return luaL_error(L, "a library cannot be stored in ctx.memory");
    if (lua_type(L, 3) == LUA_TTABLE && !eddy__tools_is_mt(L, 3, EDDY_LUA_MEMORY_MT)) {
        lua_newtable(L);
        unwrap_inside(L, 3, 0, lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 2);
    if (!unwrap_memory(L, 3))
        lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int memory_len(lua_State *L)
{
    if (!eddy__tools_unproxy(L, 1))
        return luaL_error(L, "ctx.memory used after its tool call returned");
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

void eddy__tools_kill_proxy(lua_State *L, int idx)
{
    int is_memory;
    idx = lua_absindex(L, idx);
    is_memory = eddy__tools_is_mt(L, idx, EDDY_LUA_MEMORY_MT);
    /* first what cannot fail (no allocation): its real table forgotten, dead */
    if (is_memory) {
        lua_pushnil(L);
        lua_rawsetp(L, idx, &kRealKey); /* an existing key: no allocation */
    }
    luaL_getmetatable(L, EDDY_LUA_DEAD_MT);
    lua_setmetatable(L, idx);
    if (!is_memory) { /* ctx: empty it */
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, idx);
        }
    }
    lua_pushstring(L, is_memory ? "ctx.memory" : "ctx");
    lua_rawsetp(L, idx, &dead_error);
}

/* -- base functions that see through proxies --------------------------------- */

static int l_next(lua_State *L)
{
    int memory;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    memory = eddy__tools_is_mt(L, 1, EDDY_LUA_MEMORY_MT);
    if (eddy__tools_unproxy(L, 1))
        lua_replace(L, 1);
    if (lua_next(L, 1)) {
        if (memory)
            wrap_top(L);
        return 2;
    }
    lua_pushnil(L);
    return 1;
}

static int l_rawget(lua_State *L)
{
    int memory;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    memory = eddy__tools_is_mt(L, 1, EDDY_LUA_MEMORY_MT);
    if (eddy__tools_unproxy(L, 1))
        lua_replace(L, 1);
    lua_rawget(L, 1);
    if (memory)
        wrap_top(L);
    return 1;
}

static int l_rawlen(lua_State *L)
{
    int t = lua_type(L, 1);
    luaL_argexpected(L, t == LUA_TTABLE || t == LUA_TSTRING, 1, "table or string");
    lua_settop(L, 1);
    if (t == LUA_TTABLE && eddy__tools_unproxy(L, 1))
        lua_replace(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int l_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    lua_settop(L, 3);
    if (is_frozen(L, 1))
        return frozen_newindex(L);
    if (unwrap_memory(L, 1)) { /* a memory proxy: write the document */
        if (is_frozen(L, 3))
            return luaL_error(L, "a library cannot be stored in ctx.memory");
        lua_replace(L, 1);
        if (unwrap_memory(L, 3))
            lua_replace(L, 3);
    }
    lua_rawset(L, 1);
    lua_settop(L, 1);
    return 1;
}

static int l_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) /* what Lua looks at to finalize */
            return luaL_error(L, "finalizers (__gc) are not allowed in tools");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* pcall/xpcall: as Lua's, but a stopped call's error goes through. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        eddy__tools_recheck(L, status);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int l_pcall(lua_State *L)
{
    int status;
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

static int l_xpcall(lua_State *L)
{
    int status, n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* -- coroutines ------------------------------------------------------------- */

/* Resume CO with NARG values already moved onto it. Returns the number of
 * results moved back onto L, or -1 with the error value on L. A slice yield
 * of the hook inside CO is passed up: L yields too (continuation resume_k)
 * and CO is resumed when L is; when L cannot yield, CO goes on at once. */
static int resume_k(lua_State *L, int status, lua_KContext ctx);

static int resume_again(lua_State *L, lua_State *co, int narg, int wrap)
{
    eddy_tools *h = eddy__tools_host(L);
    struct tool_call *c = h->current;
    int st, nres;
    lua_State *prev = c ? c->running : NULL;
    for (;;) {
        if (c)
            c->running = co;
        st = lua_resume(co, L, narg, &nres);
        if (c)
            c->running = prev;
        if (st == LUA_YIELD && nres == 0 && c && c->slice_yield) {
            if (lua_isyieldable(L))
                return lua_yieldk(L, 0, wrap, resume_k);
            c->slice_yield = 0; /* cannot pass it up: go on here */
            c->slice_ns = uv_hrtime();
            c->noyield_ns = 0;
            narg = 0;
            continue;
        }
        break;
    }
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    eddy__tools_recheck(L, st);
    lua_xmove(co, L, 1);
    return -1;
}

/* resume: (true, results...) or (false, error); wrap: results or raise. */
static int finish_resume(lua_State *L, int r, int wrap)
{
    if (wrap) {
        if (r < 0) {
            if (lua_type(L, -1) == LUA_TSTRING) {
                luaL_where(L, 1);
                lua_insert(L, -2);
                lua_concat(L, 2);
            }
            return lua_error(L);
        }
        return r;
    }
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx)
{
    eddy_tools *h = eddy__tools_host(L);
    lua_State *co = lua_tothread(L, ctx ? lua_upvalueindex(1) : 1);
    (void)status;
    if (h->current) {
        h->current->slice_yield = 0;
        eddy__tools_raise_if_killed(L);
    }
    return finish_resume(L, resume_again(L, co, 0, (int)ctx), (int)ctx);
}

/* Move NARG values from L's top onto CO, ready to resume it; 0, or -1 with
 * a message on L. */
void eddy__tools_own_thread(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, EDDY_LUA_OWN_THREADS);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Whether CO is a call's own coroutine or the main thread. */
static int own_thread(lua_State *L, lua_State *co)
{
    int r;
    lua_getfield(L, LUA_REGISTRYINDEX, EDDY_LUA_OWN_THREADS);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    r = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return r;
}

static int start_resume(lua_State *L, lua_State *co, int narg)
{
    int st = lua_status(co);
    if (own_thread(L, co)) {
        lua_pushliteral(L, "cannot resume the coroutine of a tool call");
        return -1;
    }
    if (co == L) {
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return -1;
    }
    if (st == LUA_OK && lua_getstack(co, 0, &(lua_Debug){0})) {
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return -1;
    }
    if ((st == LUA_OK && lua_gettop(co) == 0) || (st != LUA_OK && st != LUA_YIELD)) {
        lua_pushliteral(L, "cannot resume dead coroutine");
        return -1;
    }
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    return 0;
}

static int l_co_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    int narg = lua_gettop(L) - 1, r;
    luaL_argexpected(L, co, 1, "coroutine");
    r = start_resume(L, co, narg);
    if (r == 0)
        r = resume_again(L, co, narg, 0);
    return finish_resume(L, r, 0);
}

static int l_co_wrap_call(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int narg = lua_gettop(L), r = start_resume(L, co, narg);
    if (r == 0)
        r = resume_again(L, co, narg, 1);
    return finish_resume(L, r, 1);
}

static int l_co_wrap(lua_State *L)
{
    lua_State *co;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, l_co_wrap_call, 1);
    return 1;
}

static int l_co_close(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    eddy_tools *h = eddy__tools_host(L);
    int st;
    luaL_argexpected(L, co, 1, "coroutine");
    st = lua_status(co);
    if (co == L || (st == LUA_OK && lua_getstack(co, 0, &(lua_Debug){0})))
        return luaL_error(L, "cannot close a %s coroutine", co == L ? "running" : "normal");
    if (own_thread(L, co))
        return luaL_error(L, "cannot close the coroutine of a tool call");
    /* lua_resetthread (5.4.4) does not count the C stack it nests on: */
    if (h->close_depth >= 100)
        return luaL_error(L, "C stack overflow (coroutine.close nested too deep)");
    h->close_depth++;
    st = lua_resetthread(co);
    h->close_depth--;
    eddy__tools_raise_if_killed(L);
    if (st == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

/* -- C library functions that charge their work ------------------------------ */

/* Length of the string argument I (0 when absent or not a string). */
static int64_t slen(lua_State *L, int i)
{
    size_t n = 0;
    if (lua_type(L, i) == LUA_TSTRING)
        lua_tolstring(L, i, &n);
    return (int64_t)n;
}

static int64_t ilen(lua_State *L, int i)
{
    int64_t n;
    if (lua_type(L, i) != LUA_TTABLE)
        return 0;
    if (!lua_getmetatable(L, i))
        return (int64_t)lua_rawlen(L, i);
    lua_pop(L, 1);
    /* the library loops to what __len says, also when __index/__newindex are
     * C functions that no hook sees: charge that (this may run __len) */
    n = (int64_t)luaL_len(L, i);
    return n < 0 ? 0 : n > INT64_MAX / 64 ? INT64_MAX / 64 : n;
}

/* Elements from I to J (arguments, with defaults) of a range. */
static int64_t span(lua_State *L, int i, int j, lua_Integer di, lua_Integer dj)
{
    int ok;
    lua_Integer a = lua_tointegerx(L, i, &ok), b;
    if (!ok)
        a = di;
    b = lua_tointegerx(L, j, &ok);
    if (!ok)
        b = dj;
    if (b < a)
        return 0;
    if (a < 0 && b > LUA_MAXINTEGER + a)
        return INT64_MAX / 2;
    return (int64_t)(b - a) + 1;
}

static int64_t all_strings(lua_State *L)
{
    int64_t n = lua_gettop(L);
    for (int i = 1; i <= lua_gettop(L); i++)
        n += slen(L, i) / 16;
    return n;
}
/* string.format: per format byte, and per byte of every string argument
 * (%q escapes byte by byte) */
static int64_t c_format(lua_State *L)
{
    int64_t n = slen(L, 1) * 4 + 1;
    for (int i = 2; i <= lua_gettop(L); i++)
        n += slen(L, i);
    return n;
}
/* pack, packsize, unpack: per format byte, and the data */
static int64_t c_pack(lua_State *L)
{
    return slen(L, 1) * 2 + all_strings(L);
}
static int64_t c_date(lua_State *L)
{
    return slen(L, 1) * 4 + 1;
}

static int64_t c_len16(lua_State *L)
{
    return slen(L, 1) / 16 + 1;
}
static int64_t c_args(lua_State *L)
{
    return lua_gettop(L) + 1;
}
static int64_t c_sub(lua_State *L)
{
    int64_t n = slen(L, 1);
    lua_Integer i = luaL_optinteger(L, 2, 1), j = luaL_optinteger(L, 3, -1);
    if (i < 0)
        i = i < -n ? 1 : n + i + 1;
    if (j < 0)
        j = n + j + 1;
    if (j > n)
        j = n;
    return (j >= i ? (int64_t)(j - i) / 16 : 0) + 1;
}
static int64_t c_byte(lua_State *L)
{
    int64_t n = slen(L, 1);
    lua_Integer i = luaL_optinteger(L, 2, 1);
    return span(L, 2, 3, i, i) > n ? n + 1 : span(L, 2, 3, i, i) + 1;
}
static int64_t c_table_len(lua_State *L)
{
    return ilen(L, 1) + 1;
}
static int64_t c_concat(lua_State *L)
{
    return span(L, 3, 4, 1, (lua_Integer)ilen(L, 1)) + 1;
}
static int64_t c_move(lua_State *L)
{
    return span(L, 2, 3, 1, 0) + 1;
}
static int64_t c_unpack(lua_State *L)
{
    return span(L, 2, 3, 1, (lua_Integer)ilen(L, 1)) + 1;
}
static int64_t c_sort(lua_State *L)
{
    int64_t n = ilen(L, 1), lg = 1, bytes = 0;
    while ((1LL << lg) < n)
        lg++;
    /* without a comparator strings compare in C, byte by byte: charge what
     * the comparisons can read (a comparator's own work is hooked) */
    if (lua_isnoneornil(L, 2) && lua_type(L, 1) == LUA_TTABLE) {
        if (lua_getmetatable(L, 1)) {
            lua_pop(L, 1); /* elements come through metamethods, which are hooked */
        } else {
            for (int64_t i = 1; i <= n; i++) {
                size_t len = 0;
                if (lua_rawgeti(L, 1, (lua_Integer)i) == LUA_TSTRING)
                    lua_tolstring(L, -1, &len);
                lua_pop(L, 1);
                bytes += (int64_t)len;
            }
        }
    }
    return n * lg + bytes / 16 * lg + 1;
}
static int64_t c_utf8_span(lua_State *L)
{
    return slen(L, 1) / 4 + 1;
}

/* utf8.codes' iterator skips continuation bytes in C at each step: charge
 * the bytes it will skip (upvalue 1: the library's iterator). */
static int l_codes_step(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    size_t i = n > 0 ? (size_t)n : 0, skip = 0;
    while (i + skip < len && ((unsigned char)s[i + skip] & 0xC0) == 0x80)
        skip++;
    eddy__tools_charge(L, (int64_t)skip / 4 + 1);
    return f(L);
}

/* utf8.codes(s [, lax]) with the charging iterator. */
static int l_codes(lua_State *L)
{
    int n;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    n = lua_gettop(L);
    if (n >= 1 && lua_iscfunction(L, 1)) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, l_codes_step, 1);
        lua_replace(L, 1);
    }
    return n;
}

/* string.rep without the loops that do nothing for minutes: an empty
 * result is returned at once, a big one is charged before it is built. */
static int l_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    (void)s;
    (void)sep;
    if (n <= 0 || l + lsep == 0 || (n == 1 && l == 0)) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep > (size_t)INT64_MAX / 2 / (uint64_t)n)
        return luaL_error(L, "resulting string too large");
    eddy__tools_charge(L, (int64_t)((l + lsep) * (uint64_t)n) / 16 + 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

typedef struct charged {
    const char *name;
    int64_t (*cost)(lua_State *L);
} charged;

/* Upvalue 1: the library's function; upvalue 2: the cost (light userdata
 * of a charged entry). The library function is called in place. */
static int l_charged(lua_State *L)
{
    const charged *ch = lua_touserdata(L, lua_upvalueindex(2));
    lua_CFunction f = lua_tocfunction(L, lua_upvalueindex(1));
    eddy__tools_charge(L, ch->cost(L));
    return f(L);
}

static const charged kString[] = {{"byte", c_byte},     {"char", c_args},   {"format", c_format},
                                  {"len", c_args},      {"lower", c_len16}, {"upper", c_len16},
                                  {"reverse", c_len16}, {"sub", c_sub},     {"pack", c_pack},
                                  {"packsize", c_pack}, {"unpack", c_pack}, {NULL, NULL}};
static const charged kTable[] = {
    {"concat", c_concat}, {"insert", c_table_len}, {"remove", c_table_len}, {"move", c_move},
    {"unpack", c_unpack}, {"sort", c_sort},        {"pack", c_args},        {NULL, NULL}};
static const charged kUtf8[] = {{"char", c_args},           {"len", c_utf8_span},
                                {"codepoint", c_utf8_span}, {"offset", c_utf8_span},
                                {"codes", c_args},          {NULL, NULL}};
static const charged kOs[] = {
    {"time", c_args}, {"clock", c_args}, {"date", c_date}, {"difftime", c_args}, {NULL, NULL}};
static const charged kNone[] = {{NULL, NULL}};
static const charged kBase[] = {
    {"tonumber", c_len16}, {"tostring", c_args}, {"select", c_args}, {NULL, NULL}};

/* Copy library LIB (a global of the full state at G) into a new table,
 * every function in LIST charging its cost; other fields are copied as they
 * are when COPY_REST. */
static void charged_copy(lua_State *L, int g, const char *lib, const charged *list, int copy_rest)
{
    lua_newtable(L);
    lua_getfield(L, g, lib);
    if (copy_rest) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -5);
        }
    }
    for (const charged *ch = list; ch->name; ch++) {
        lua_getfield(L, -1, ch->name);
        lua_pushlightuserdata(L, (void *)ch);
        lua_pushcclosure(L, l_charged, 2);
        lua_setfield(L, -3, ch->name);
    }
    lua_pop(L, 1);
}

/* load(chunk [, name [, mode [, env]]]): text only; the default
 * environment is the running call's globals. */
static int l_load(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "bt");
    eddy_tools *h = eddy__tools_host(L);
    int st;
    if (!strchr(mode, 't')) {
        lua_pushnil(L);
        lua_pushliteral(L, "attempt to load a binary chunk (tools load text only)");
        return 2;
    }
    eddy__tools_charge(L, (int64_t)n / 4 + 1);
    st = luaL_loadbufferx(L, s, n, name, "t");
    if (st != LUA_OK) {
        eddy__tools_recheck(L, st);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnone(L, 4))
        lua_pushvalue(L, 4);
    else if (h->current && h->current->env_ref != LUA_NOREF)
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->current->env_ref);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->base_ref);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

static int l_print(lua_State *L)
{
    eddy_tools *h = eddy__tools_host(L);
    luaL_Buffer b;
    int n = lua_gettop(L); /* before luaL_buffinit, which may push a placeholder */
    char clean[4200];
    size_t len;
    const char *msg;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        luaL_tolstring(L, i, NULL);
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    eddy__tools_charge(L, (int64_t)lua_rawlen(L, -1) / 16 + 1);
    msg = lua_tolstring(L, -1, &len);
    msg = eddy__tools_log_clean(L, msg, len, clean, sizeof(clean)); /* no secret in the log */
    EDDY_INFO("lua", "%s: %.4096s", h->current ? eddy__tool_call_name(h->current) : "tool", msg);
    return 0;
}

static void protect_mt(lua_State *L, const char *name, const char *shown)
{
    luaL_newmetatable(L, name);
    lua_pushstring(L, shown);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* Metatable NAME of proxies, with FNS and a hidden (false) __metatable. */
static void proxy_mt(lua_State *L, const char *name, const luaL_Reg *fns)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, fns, 0);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

static const luaL_Reg kDeadMt[] = {{"__index", dead_error},
                                   {"__newindex", dead_error},
                                   {"__len", dead_error},
                                   {"__pairs", dead_error},
                                   {NULL, NULL}};
static const luaL_Reg kMemoryMt[] = {{"__index", memory_index},
                                     {"__newindex", memory_newindex},
                                     {"__len", memory_len},
                                     {"__pairs", proxy_pairs},
                                     {NULL, NULL}};

static void copy_fields(lua_State *L, int from, int to, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, from, *names);
        lua_setfield(L, to, *names);
    }
}

/* Freeze the table on top in place of itself. */
static void freeze_top(lua_State *L)
{
    eddy__tools_freeze(L, -1);
    lua_remove(L, -2);
}

int eddy__tools_open_sandbox(lua_State *L)
{
    static const char *const base_fns[] = {
        "assert", "error", "ipairs", "pairs", "rawequal", "type", "getmetatable", "_VERSION", NULL};
    static const luaL_Reg own[] = {
        {"next", l_next},     {"rawget", l_rawget}, {"rawset", l_rawset},
        {"rawlen", l_rawlen}, {"pcall", l_pcall},   {"xpcall", l_xpcall},
        {"load", l_load},     {"print", l_print},   {"setmetatable", l_setmetatable},
        {NULL, NULL}};
    static const luaL_Reg co_own[] = {
        {"resume", l_co_resume}, {"wrap", l_co_wrap}, {"close", l_co_close}, {NULL, NULL}};
    static const char *const co_fns[] = {"create",  "yield",       "status",
                                         "running", "isyieldable", NULL};
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_OSLIBNAME, luaopen_os},     {NULL, NULL}};
    int g, base, str;

    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    protect_mt(L, EDDY_LUA_ARRAY_MT, EDDY_LUA_ARRAY_MT);
    protect_mt(L, EDDY_LUA_OBJECT_MT, EDDY_LUA_OBJECT_MT);
    protect_mt(L, EDDY_LUA_JARRAY_MT, EDDY_LUA_ARRAY_MT);
    protect_mt(L, EDDY_LUA_JOBJECT_MT, EDDY_LUA_OBJECT_MT);
    proxy_mt(L, EDDY_LUA_DEAD_MT, kDeadMt);
    proxy_mt(L, EDDY_LUA_MEMORY_MT, kMemoryMt);
    lua_newtable(L); /* proxy -> real, weak keys */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, EDDY_LUA_PROXIES);
    lua_newtable(L); /* eddy's own threads, weak keys */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, EDDY_LUA_OWN_THREADS);
    lua_pushthread(L); /* the main thread: never a tool's to close */
    eddy__tools_own_thread(L);
    lua_pop(L, 1);

    lua_pushglobaltable(L);
    g = lua_gettop(L);
    lua_newtable(L);
    base = lua_gettop(L);
    copy_fields(L, g, base, base_fns);
    luaL_setfuncs(L, own, 0);
    for (const charged *ch = kBase; ch->name; ch++) {
        lua_getfield(L, g, ch->name);
        lua_pushlightuserdata(L, (void *)ch);
        lua_pushcclosure(L, l_charged, 2);
        lua_setfield(L, base, ch->name);
    }

    /* string: a private copy, also the strings' __index; dump is left out */
    charged_copy(L, g, "string", kString, 1);
    str = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, str, "dump");
    lua_getfield(L, g, "string");
    lua_getfield(L, -1, "rep");
    lua_pushcclosure(L, l_rep, 1);
    lua_setfield(L, str, "rep");
    lua_pop(L, 1);
    eddy__tools_open_patterns(L, str); /* find, match, gmatch, gsub that charge */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, str);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    freeze_top(L);
    lua_setfield(L, base, "string");

    charged_copy(L, g, "table", kTable, 1);
    freeze_top(L);
    lua_setfield(L, base, "table");
    charged_copy(L, g, "utf8", kUtf8, 1);
    lua_getfield(L, -1, "codes");
    lua_pushcclosure(L, l_codes, 1);
    lua_setfield(L, -2, "codes");
    freeze_top(L);
    lua_setfield(L, base, "utf8");
    charged_copy(L, g, "math", kNone, 1); /* math is O(1) */
    lua_pushnil(L); /* the generator is shared: no call may seed it for others */
    lua_setfield(L, -2, "randomseed");
    freeze_top(L);
    lua_setfield(L, base, "math");
    charged_copy(L, g, "os", kOs, 0);
    freeze_top(L);
    lua_setfield(L, base, "os");

    lua_newtable(L);
    lua_getfield(L, g, "coroutine");
    copy_fields(L, lua_gettop(L), lua_gettop(L) - 1, co_fns);
    lua_pop(L, 1);
    luaL_setfuncs(L, co_own, 0);
    freeze_top(L);
    lua_setfield(L, base, "coroutine");

    lua_newtable(L);
    eddy__tools_open_eddy(L, lua_gettop(L));
    freeze_top(L);
    lua_setfield(L, base, "eddy");

    lua_pushvalue(L, base);
    eddy__tools_host(L)->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, g - 1);
    return 0;
}
