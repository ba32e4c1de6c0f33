/*
 * tools/native.c - functions and tool kinds written in C by other modules.
 *
 * A module (eddy_tools_module) is registered once from main; every host then
 * has eddy.<module>.<fn> in Lua and accepts the module's tool kind in a
 * job's tool list. A module's state on a host (for Fluss: its clients on the
 * host's loop) is opened at first use and released by eddy_tools_close.
 *
 * A native Lua function runs inside a tool call's coroutine: it converts its
 * arguments to JSON, starts the C work with a wait (the call itself) and
 * yields with a continuation. The answer is pushed on resume as (ok, value or
 * message); the continuation returns the value or raises the message inside
 * the coroutine, so pcall works as for any Lua error.
 *
 * Invariant: the registry is written only before hosts exist; it is read
 * from any loop afterwards without locks.
 */
#include "tools_int.h"

#include "eddy/buf.h"

#include <string.h>

#define MAX_MODULES 16

static const eddy_tools_module *g_modules[MAX_MODULES];
static size_t g_nmodules;

int eddy_tools_register_module(const eddy_tools_module *m)
{
    for (size_t i = 0; i < g_nmodules; i++) {
        if (g_modules[i] == m)
            return 0;
        if (!strcmp(g_modules[i]->name, m->name) ||
            (m->tool_kind && g_modules[i]->tool_kind &&
             !strcmp(g_modules[i]->tool_kind, m->tool_kind)))
            return EDDY_EEXIST;
    }
    if (g_nmodules == MAX_MODULES)
        return EDDY_ENOMEM;
    g_modules[g_nmodules++] = m;
    return 0;
}

const eddy_tools_module *eddy__tools_module(size_t i)
{
    return i < g_nmodules ? g_modules[i] : NULL;
}

size_t eddy__tools_nmodules(void)
{
    return g_nmodules;
}

static int kind_index(const char *kind)
{
    for (size_t i = 0; i < g_nmodules; i++)
        if (g_modules[i]->tool_kind && !strcmp(g_modules[i]->tool_kind, kind))
            return (int)i;
    return -1;
}

int eddy_tools_has_kind(const char *kind)
{
    return kind && kind_index(kind) >= 0;
}

void eddy_tools_configure(eddy_tools *h, json_t *settings)
{
    /* a copy of its own: hosts of other threads are configured from the same
     * job, and a shared value's reference count would be theirs too */
    json_t *mine = settings ? json_deep_copy(settings) : NULL;
    json_decref(h->settings);
    h->settings = mine;
}

static const json_t *module_cfg(const eddy_tools *h, size_t i)
{
    return h->settings ? json_object_get(h->settings, g_modules[i]->name) : NULL;
}

int eddy__tools_module_state(eddy_tools *h, size_t i, void **state, eddy_err *err)
{
    if (h->nmod_state < g_nmodules) {
        void **grown = eddy_realloc(h->mod_state, g_nmodules * sizeof(void *));
        if (!grown)
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        memset(grown + h->nmod_state, 0, (g_nmodules - h->nmod_state) * sizeof(void *));
        h->mod_state = grown;
        h->nmod_state = g_nmodules;
    }
    if (!h->mod_state[i] && g_modules[i]->open) {
        int rc = g_modules[i]->open(h->loop, module_cfg(h, i), &h->mod_state[i], err);
        if (rc)
            return rc;
    }
    *state = h->mod_state[i];
    return 0;
}

void eddy_tools_close(eddy_tools *h)
{
    for (size_t i = 0; h && i < h->nmod_state; i++) {
        if (h->mod_state[i] && g_modules[i]->close)
            g_modules[i]->close(h->mod_state[i]);
        h->mod_state[i] = NULL;
    }
}

/* -- Lua side ------------------------------------------------------------------ */

/* Push "file:line: " of the nearest Lua function on the stack (the tool's
 * line that called us, also through pcall), or "". */
static void where_lua(lua_State *L)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

/* After the answer: (ok, value) or (false, message) are on top. CTX: module
 * index * 256 + function index, to name the function in the error. */
static int native_k(lua_State *L, int status, lua_KContext ctx)
{
    const eddy_tools_module *m = g_modules[ctx / 256];
    (void)status;
    if (lua_toboolean(L, -2))
        return 1;
    where_lua(L);
    lua_pushfstring(L, "eddy.%s.%s: %s", m->name, m->fns[ctx % 256].name, lua_tostring(L, -2));
    lua_concat(L, 2);
    return lua_error(L);
}

/* eddy.<module>.<fn>(...): upvalues host, module index, function index. */
static int l_native(lua_State *L)
{
    eddy_tools *h = lua_touserdata(L, lua_upvalueindex(1));
    size_t mi = (size_t)lua_tointeger(L, lua_upvalueindex(2));
    lua_Integer fi = lua_tointeger(L, lua_upvalueindex(3));
    const eddy_native_reg *reg = &g_modules[mi]->fns[fi];
    const char *mod = g_modules[mi]->name;
    int n = lua_gettop(L), rc;
    char msg[EDDY_ERR_MSG_MAX];
    eddy_err e;
    void *state;
    json_t *args = json_array();
    eddy_tool_wait *w;

    if (!args)
        return luaL_error(L, "eddy.%s.%s: out of memory", mod, reg->name);
    for (int i = 1; i <= n; i++) {
        json_t *v =
            lua_isnil(L, i) ? json_null() : eddy__lua_to_json_max(L, i, EDDY_LUA_RESULT_MAX, &e);
        if (!v || json_array_append_new(args, v)) {
            json_decref(args);
            return luaL_error(L, "eddy.%s.%s: argument %d: %s", mod, reg->name, i,
                              v ? "out of memory" : e.msg);
        }
    }
    if (!(w = eddy__tools_call_begin_wait(L))) {
        json_decref(args);
        return luaL_error(L,
                          "eddy.%s.%s can only be used while a tool runs (not at load, not in a "
                          "coroutine the tool made, not in a metamethod, an error handler or a "
                          "function a library calls back)",
                          mod, reg->name);
    }
    rc = eddy__tools_module_state(h, mi, &state, &e);
    if (!rc)
        rc = reg->fn(state, NULL, args, w, &e);
    json_decref(args);
    if (rc) {
        eddy__tools_call_cancel_wait(w);
        snprintf(msg, sizeof(msg), "eddy.%s.%s: %s", mod, reg->name, e.msg);
        where_lua(L);
        lua_pushstring(L, msg);
        lua_concat(L, 2);
        return lua_error(L);
    }
    return lua_yieldk(L, 0, (lua_KContext)(mi * 256 + (size_t)fi), native_k);
}

void eddy__tools_open_modules(eddy_tools *h, int idx)
{
    lua_State *L = h->L;
    for (size_t i = 0; i < g_nmodules; i++) {
        const eddy_native_reg *r = g_modules[i]->fns;
        if (!r || !r->name)
            continue;
        lua_newtable(L);
        for (int j = 0; r[j].name; j++) {
            lua_pushlightuserdata(L, h);
            lua_pushinteger(L, (lua_Integer)i);
            lua_pushinteger(L, j);
            lua_pushcclosure(L, l_native, 3);
            lua_setfield(L, -2, r[j].name);
        }
        eddy__tools_freeze(L, -1);
        lua_setfield(L, idx, g_modules[i]->name);
        lua_pop(L, 1);
    }
}

/* -- native tools ------------------------------------------------------------------ */

int eddy_tools_load_native(eddy_tools *h, const char *kind, const json_t *cfg, eddy_tool **out,
                           eddy_err *err)
{
    int mi = kind_index(kind), rc;
    eddy_tool *t;
    *out = NULL;
    if (mi < 0)
        return eddy_err_set(err, EDDY_EINVAL, "unknown tool kind '%s'", kind);
    if (!(t = eddy_calloc(1, sizeof(*t))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    t->host = h;
    t->run_ref = t->chunk_ref = t->envmt_ref = t->reconcile_ref = LUA_NOREF;
    t->module = mi;
    t->limits.instructions = EDDY_TOOL_DEFAULT_INSTRUCTIONS;
    t->limits.memory = EDDY_TOOL_DEFAULT_MEMORY;
    t->limits.wall_ms = EDDY_TOOL_DEFAULT_WALL_MS; /* a net under the module's own timeouts */
    /* the tool's own copy: a kind may keep parts of it, and the job's value is
     * shared with the hosts of other workers */
    if (!(t->native_cfg = cfg ? json_deep_copy((json_t *)cfg) : json_object())) {
        eddy__tool_free(t);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    rc = g_modules[mi]->tool_new(module_cfg(h, (size_t)mi), t->native_cfg, &t->native, err);
    if (!rc && (!t->native.name || !t->native.params || !t->native.call))
        rc = eddy_err_set(err, EDDY_EINVAL, "%s: the tool kind gave no name, schema or body", kind);
    if (!rc &&
        (!(t->name = eddy_strdup(t->native.name)) ||
         !(t->description = eddy_strdup(t->native.description ? t->native.description : "")) ||
         !(t->path = eddy_aprintf("the %s tool", kind))))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!rc) {
        t->schema = json_incref(t->native.params);
    }
    if (!rc)
        rc = eddy__tools_add(h, t, "", err);
    if (rc) {
        eddy__tool_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
