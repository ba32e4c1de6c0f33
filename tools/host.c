/*
 * tools/host.c - the Lua host: sandboxed environment, tool loading, and
 * tool calls as coroutines on the worker's loop.
 *
 * One lua_State per host (per worker loop), allocating through eddy_realloc.
 * Each tool file runs in its own environment table whose __index is the
 * allowlisted base (protected metatable). A call is a coroutine: its
 * eddy_tool_call is kept in the thread's extra space so host functions that
 * wait (eddy.sleep) can find it, start their libuv work and yield; the
 * completion resumes the coroutine. A count hook bounds the instructions of
 * one call so a runaway loop ends that call, not the worker.
 *
 * Invariants: a call's callback runs exactly once, from a libuv callback,
 * never inside eddy_tool_call; its memory is freed only from the timer's
 * close callback.
 */
#include "tools_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void *lua_alloc_cb(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        eddy_free(ptr);
        return NULL;
    }
    return eddy_realloc(ptr, nsize);
}

static struct tool_call *current_call(lua_State *L)
{
    return *(struct tool_call **)lua_getextraspace(L);
}

static const char *current_tool(lua_State *L)
{
    struct tool_call *c = current_call(L);
    return c ? eddy__tool_call_name(c) : "tool";
}

/* -- host functions ------------------------------------------------------ */

static int l_tool(lua_State *L)
{
    lua_Debug ar;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar)) {
        lua_pushinteger(L, ar.currentline);
        lua_setfield(L, 1, "__eddy_line");
    }
    lua_pushboolean(L, 1);
    lua_setfield(L, 1, "__eddy_tool");
    return 1;
}

static int l_sleep(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    return eddy__tools_call_wait(L, ms < 0 ? 0 : (uint64_t)ms);
}

static int l_log(lua_State *L)
{
    const char *msg = luaL_tolstring(L, 1, NULL);
    EDDY_INFO("lua", "%s: %s", current_tool(L), msg);
    return 0;
}

static int l_now_ms(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)eddy_now_ms());
    return 1;
}

static int l_json_encode(lua_State *L)
{
    eddy_err e;
    json_t *v = eddy_lua_to_json(L, 1, &e);
    char *s;
    if (!v)
        return luaL_error(L, "eddy.json.encode: %s", e.msg);
    s = eddy_json_dumps(v);
    json_decref(v);
    if (!s)
        return luaL_error(L, "eddy.json.encode: out of memory");
    lua_pushstring(L, s);
    eddy_free(s);
    return 1;
}

static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    json_error_t je;
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, &je);
    if (!v) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at %d:%d: %s", je.line, je.column, je.text);
        return 2;
    }
    eddy_lua_push_json(L, v);
    json_decref(v);
    return 1;
}

/* eddy.file.read(rel): a file under the job's folder (no absolute paths,
 * no ".." segments). Returns the text, or nil and a message. */
static int l_file_read(lua_State *L)
{
    eddy_tools *h = lua_touserdata(L, lua_upvalueindex(1));
    const char *rel = luaL_checkstring(L, 1);
    char *path, *text = NULL;
    size_t n = 0;
    eddy_err e;
    if (rel[0] == '/' || !strcmp(rel, "..") || !strncmp(rel, "../", 3) || strstr(rel, "/../") ||
        (strlen(rel) >= 3 && !strcmp(rel + strlen(rel) - 3, "/..")))
        return luaL_error(L, "eddy.file.read: '%s' is outside the job's folder", rel);
    path = h->base_dir[0] ? eddy_aprintf("%s/%s", h->base_dir, rel) : eddy_strdup(rel);
    if (!path)
        return luaL_error(L, "eddy.file.read: out of memory");
    if (eddy_read_file(path, &text, &n, &e)) {
        eddy_free(path);
        lua_pushnil(L);
        lua_pushstring(L, e.msg);
        return 2;
    }
    eddy_free(path);
    lua_pushlstring(L, text, n);
    eddy_free(text);
    return 1;
}

static int mark_table(lua_State *L, const char *mt)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_setmetatable(L, mt);
    return 1;
}

static int l_array(lua_State *L)
{
    return mark_table(L, EDDY_LUA_ARRAY_MT);
}

static int l_object(lua_State *L)
{
    return mark_table(L, EDDY_LUA_OBJECT_MT);
}

/* load(chunk [, name [, mode [, env]]]) restricted to text chunks. */
static int l_load(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");
    int env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, s, n, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (env) {
        lua_pushvalue(L, 4);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    } else {
        /* default: the caller's environment is not reachable; use the base */
        lua_rawgeti(L, LUA_REGISTRYINDEX,
                    ((eddy_tools *)lua_touserdata(L, lua_upvalueindex(1)))->base_ref);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return 1;
}

static void copy_fields(lua_State *L, int from, int to, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, from, *names);
        lua_setfield(L, to, *names);
    }
}

int eddy__tools_open_env(eddy_tools *h, eddy_err *err)
{
    static const char *const base_fns[] = {
        "assert",   "error",    "ipairs", "next",         "pairs",        "pcall",
        "xpcall",   "rawequal", "rawget", "rawlen",       "rawset",       "select",
        "tonumber", "tostring", "type",   "setmetatable", "getmetatable", "_VERSION",
        "string",   "table",    "math",   "utf8",         "coroutine",    NULL};
    static const char *const os_fns[] = {"time", "clock", "date", "difftime", NULL};
    static const luaL_Reg eddy_fns[] = {
        {"tool", l_tool},   {"sleep", l_sleep},   {"log", l_log}, {"now_ms", l_now_ms},
        {"array", l_array}, {"object", l_object}, {NULL, NULL}};
    lua_State *L = h->L;
    int g, base;
    (void)err;
    luaL_openlibs(L);
    luaL_newmetatable(L, EDDY_LUA_ARRAY_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, EDDY_LUA_OBJECT_MT);
    lua_pop(L, 1);

    lua_pushglobaltable(L);
    g = lua_gettop(L);
    lua_newtable(L);
    base = lua_gettop(L);
    copy_fields(L, g, base, base_fns);
    lua_pushvalue(L, base);
    lua_setfield(L, base, "_G");
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_load, 1);
    lua_setfield(L, base, "load");
    lua_pushcfunction(L, l_log);
    lua_setfield(L, base, "print");

    lua_newtable(L); /* os: time functions only */
    lua_getfield(L, g, "os");
    copy_fields(L, lua_gettop(L), lua_gettop(L) - 1, os_fns);
    lua_pop(L, 1);
    lua_setfield(L, base, "os");

    luaL_newlib(L, eddy_fns); /* eddy module */
    eddy__tools_open_modules(h, lua_gettop(L));
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_newtable(L);
    lua_pushcfunction(L, l_json_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_json_decode);
    lua_setfield(L, -2, "decode");
    lua_setfield(L, -2, "json");
    lua_newtable(L);
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, l_file_read, 1);
    lua_setfield(L, -2, "read");
    lua_setfield(L, -2, "file");
    lua_setfield(L, base, "eddy");

    lua_pushvalue(L, base);
    h->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, g - 1);
    return 0;
}

int eddy_tools_new(uv_loop_t *loop, const char *base_dir, eddy_tools **out, eddy_err *err)
{
    eddy_tools *h = eddy_calloc(1, sizeof(*h));
    *out = NULL;
    if (!h || !(h->base_dir = eddy_strdup(base_dir ? base_dir : "")) ||
        !(h->L = lua_newstate(lua_alloc_cb, NULL))) {
        if (h)
            eddy_free(h->base_dir);
        eddy_free(h);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory creating the Lua host");
    }
    h->loop = loop;
    *(struct tool_call **)lua_getextraspace(h->L) = NULL;
    if (eddy__tools_open_env(h, err)) {
        eddy_tools_free(h);
        return err ? err->code : EDDY_ELUA;
    }
    *out = h;
    return 0;
}

void eddy__tool_free(eddy_tool *t)
{
    if (!t)
        return;
    eddy_free(t->name);
    eddy_free(t->path);
    eddy_free(t->description);
    json_decref(t->schema);
    json_decref(t->def);
    eddy_free(t->native.name);
    eddy_free(t->native.description);
    json_decref(t->native.params);
    if (t->native.free_data)
        t->native.free_data(t->native.data);
    eddy_free(t);
}

void eddy_tools_free(eddy_tools *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->ntools; i++)
        eddy__tool_free(h->tools[i]);
    eddy_free(h->tools);
    eddy_tools_close(h); /* normally done already, from the loop */
    eddy_free(h->mod_state);
    json_decref(h->settings);
    if (h->L)
        lua_close(h->L);
    eddy_free(h->base_dir);
    eddy_free(h);
}

int eddy_tools_active(const eddy_tools *h)
{
    return h->calls;
}

lua_State *eddy_tools_lua(eddy_tools *h)
{
    return h->L;
}

const char *eddy_tool_name(const eddy_tool *t)
{
    return t->name;
}
const char *eddy_tool_path(const eddy_tool *t)
{
    return t->path;
}
json_t *eddy_tool_definition(const eddy_tool *t)
{
    return t->def;
}
json_t *eddy_tool_schema(const eddy_tool *t)
{
    return t->schema;
}
