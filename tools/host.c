/*
 * tools/host.c - the Lua host: its state, and the eddy module's own
 * functions (eddy.tool, sleep, log, now_ms, json, array, object).
 *
 * One lua_State per host (per worker loop); its allocator is the budget
 * accountant (budget.c) and its extra space, copied into every thread,
 * points back to the host. The state is built inside lua_pcall, so running
 * out of memory there is an error, not an abort. C functions here hold C
 * resources across Lua calls that may raise only in holders (budget.c),
 * which the garbage collector frees when an error skips the release.
 */
#include "tools_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* -- host functions ------------------------------------------------------ */

static const char *current_tool(lua_State *L)
{
    struct tool_call *c = eddy__tools_host(L)->current;
    return c ? eddy__tool_call_name(c) : "tool";
}

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

const char *eddy__tools_log_clean(lua_State *L, const char *msg, size_t n, char *buf, size_t size)
{
    const struct tool_call *c = eddy__tools_host(L)->current;
    char cut[8193];
    if (!c || !c->tool->nsecrets)
        return msg;
    /* redacted before the line is cut at 4096: a secret across the cut
     * would leave its start behind */
    snprintf(cut, sizeof(cut), "%.*s", (int)(n > 8192 ? 8192 : n), msg);
    return eddy_tool_redact(c->tool, cut, buf, size);
}

static int l_log(lua_State *L)
{
    size_t n;
    const char *msg = luaL_tolstring(L, 1, &n);
    char clean[4200];
    eddy__tools_charge(L, (int64_t)n / 16 + 1);
    /* what the environment gave its config stays out of logs */
    msg = eddy__tools_log_clean(L, msg, n, clean, sizeof(clean));
    if (n > 4096)
        EDDY_INFO("lua", "%s: %.4096s... (%zu bytes)", current_tool(L), msg, n);
    else
        EDDY_INFO("lua", "%s: %s", current_tool(L), msg);
    return 0;
}

static int l_now_ms(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)eddy_now_ms());
    return 1;
}

static void free_json(void *p)
{
    json_decref(p);
}

static int l_json_encode(lua_State *L)
{
    eddy_err e;
    eddy_holder *hd = eddy__tools_holder(L); /* owns the text until pushed */
    int64_t left = eddy__tools_mem_left(L);
    json_t *v;
    int over;
    luaL_checkany(L, 1);
    /* jansson's tree and the text count against the call's memory budget */
    eddy_alloc_budget_begin(left);
    v = eddy__lua_to_json_max(L, 1, left < EDDY_LUA_CONVERT_MAX ? left : EDDY_LUA_CONVERT_MAX, &e);
    hd->p = v ? eddy_json_dumps(v) : NULL;
    hd->free = eddy_free;
    json_decref(v);
    over = eddy_alloc_budget_end();
    /* too big for what the call may still hold: that is its memory budget */
    if (over || (!v && e.code == EDDY_ERANGE && left < EDDY_LUA_CONVERT_MAX &&
                 strstr(e.msg, "too large"))) {
        eddy__tools_holder_release(hd);
        eddy__tools_reserve(L, left + 1); /* raises: memory budget */
    }
    if (!v)
        return luaL_error(L, "eddy.json.encode: %s", e.msg);
    if (!hd->p)
        return luaL_error(L, "eddy.json.encode: out of memory");
    eddy__tools_charge(L, (int64_t)strlen(hd->p) / 16 + 1);
    lua_pushstring(L, hd->p);
    eddy__tools_holder_release(hd);
    return 1;
}

static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    eddy_holder *hd;
    json_error_t je;
    int64_t left = eddy__tools_mem_left(L);
    int over;
    eddy__tools_charge(L, (int64_t)n / 8 + 1);
    hd = eddy__tools_holder(L); /* owns the JSON while Lua values are made */
    hd->free = free_json;
    eddy_alloc_budget_begin(left); /* jansson's tree counts against the budget */
    hd->p = eddy_json_loadb(s, n, JSON_DECODE_ANY, &je);
    over = eddy_alloc_budget_end();
    if (over) {
        eddy__tools_holder_release(hd);
        eddy__tools_reserve(L, left + 1); /* raises: memory budget */
    }
    if (!hd->p) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at %d:%d: %s", je.line, je.column, je.text);
        return 2;
    }
    if (eddy_lua_push_json(L, hd->p)) {
        eddy__tools_holder_release(hd);
        return luaL_error(L, "eddy.json.decode: nested deeper than 64 levels");
    }
    eddy__tools_holder_release(hd);
    return 1;
}

static int mark_table(lua_State *L, const char *mt)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1))
        return luaL_error(L, "eddy.array/eddy.object: the table already has a metatable");
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

void eddy__tools_open_eddy(lua_State *L, int idx)
{
    static const luaL_Reg fns[] = {{"tool", l_tool},     {"sleep", l_sleep}, {"log", l_log},
                                   {"now_ms", l_now_ms}, {"array", l_array}, {"object", l_object},
                                   {NULL, NULL}};
    static const luaL_Reg json_fns[] = {
        {"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
    static const luaL_Reg file_fns[] = {{"read", eddy__tools_file_read}, {NULL, NULL}};
    eddy_tools *h = eddy__tools_host(L);
    idx = lua_absindex(L, idx);
    luaL_setfuncs(L, fns, 0);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, idx, "null");
    luaL_newlib(L, json_fns);
    eddy__tools_freeze(L, -1);
    lua_setfield(L, idx, "json");
    lua_pop(L, 1);
    luaL_newlib(L, file_fns);
    eddy__tools_freeze(L, -1);
    lua_setfield(L, idx, "file");
    lua_pop(L, 1);
    eddy__tools_open_modules(h, idx); /* freezes each module's table */
}

static int open_host(lua_State *L)
{
    int ref;
    eddy__tools_open_sandbox(L);
    /* make the registry's free list exist, so that luaL_unref never
     * allocates (it runs outside protected calls) */
    lua_pushboolean(L, 1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return 0;
}

int eddy_tools_new(uv_loop_t *loop, const char *base_dir, eddy_tools **out, eddy_err *err)
{
    eddy_tools *h = eddy_calloc(1, sizeof(*h));
    int rc;
    *out = NULL;
    if (!h)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory creating the Lua host");
    h->base_fd = -1;
    h->base_ref = LUA_NOREF;
    h->loop = loop;
    if (!(h->base_dir = eddy_strdup(base_dir && *base_dir ? base_dir : ".")) ||
        !(h->L = lua_newstate(eddy__tools_alloc, h))) {
        eddy_tools_free(h);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory creating the Lua host");
    }
    *(eddy_tools **)lua_getextraspace(h->L) = h; /* every thread starts with a copy */
    if ((rc = eddy__tools_protect(h, open_host, NULL, 0, err))) {
        eddy_tools_free(h);
        return rc;
    }
    h->base_fd = eddy__tools_open_base(h->base_dir);
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
    json_decref(t->config);
    json_decref(t->http);
    json_decref(t->native_cfg);
    for (size_t i = 0; i < t->nsecrets; i++)
        eddy_free(t->secrets[i]);
    eddy_free(t->secrets);
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
    for (size_t i = 0; i < h->ndeny; i++)
        eddy_free(h->deny[i]);
    eddy_free(h->deny);
    if (h->base_fd >= 0)
        close(h->base_fd);
    eddy_free(h->base_dir);
    eddy_free(h);
}

int eddy_tools_active(const eddy_tools *h)
{
    return h->calls;
}

int eddy_tools_pending(const eddy_tools *h)
{
    int n = 0;
    for (const struct tool_call *c = h->live; c; c = c->next)
        n++;
    return n;
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
const char *eddy_tool_description(const eddy_tool *t)
{
    return t->description ? t->description : "";
}
json_t *eddy_tool_schema(const eddy_tool *t)
{
    return t->schema;
}
