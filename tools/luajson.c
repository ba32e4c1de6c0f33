/*
 * tools/luajson.c - faithful conversion between JSON and Lua values.
 *
 * JSON arrays and objects become tables with the eddy.array / eddy.object
 * metatables, so an empty array survives a round trip and stays an array.
 * Back to JSON, a table is judged by its keys (1..n: an array, so that
 * appending to an empty object that came from JSON makes a list), and an
 * empty table by the kind it came with (see table_to_json). A ctx.memory
 * proxy converts as its document. Nothing here raises a Lua error. Integers
 * stay integers and floats stay floats; JSON null is eddy.null (a light
 * userdata NULL). NaN, infinities, functions, invalid UTF-8 and nesting
 * deeper than 64 are errors that name the path.
 */
#include "tools_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <math.h>
#include <string.h>

#define MAX_DEPTH 64

static int push_rec(lua_State *L, json_t *v, int depth)
{
    size_t i;
    const char *k;
    json_t *x;
    if (depth > MAX_DEPTH || !lua_checkstack(L, 4))
        return EDDY_ERANGE;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, k, x)
        {
            if (push_rec(L, x, depth + 1))
                return EDDY_ERANGE;
            lua_setfield(L, -2, k);
        }
        luaL_setmetatable(L, EDDY_LUA_JOBJECT_MT);
        return 0;
    case JSON_ARRAY:
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, x)
        {
            if (push_rec(L, x, depth + 1))
                return EDDY_ERANGE;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        luaL_setmetatable(L, EDDY_LUA_JARRAY_MT);
        return 0;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        return 0;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        return 0;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return 0;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return 0;
    default:
        lua_pushlightuserdata(L, NULL);
        return 0;
    }
}

int eddy_lua_push_json(lua_State *L, json_t *v)
{
    int top = lua_gettop(L);
    if (push_rec(L, v, 0)) {
        lua_settop(L, top);
        lua_pushnil(L);
        return EDDY_ERANGE;
    }
    return 0;
}

int eddy__tools_is_mt(lua_State *L, int idx, const char *name)
{
    int r;
    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, name);
    r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

/* The keys of the table at IDX: their count, and whether all are positive
 * integers (then MAX is the largest). */
static lua_Integer scan_keys(lua_State *L, int idx, int *all_int, lua_Integer *max)
{
    lua_Integer n = 0;
    *all_int = 1;
    *max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
            *all_int = 0;
        else if (lua_tointeger(L, -1) > *max)
            *max = lua_tointeger(L, -1);
        n++;
    }
    return n;
}

/* The real table behind a ctx.memory proxy at IDX (also of a call that has
 * ended: a document may hold one), pushed (1); 0 when IDX is no proxy; -1
 * for a dead ctx. Never raises. */
static int real_table(lua_State *L, int idx)
{
    if (eddy__tools_proxy_real(L, idx))
        return 1;
    return eddy__tools_is_mt(L, idx, EDDY_LUA_DEAD_MT) ? -1 : 0;
}

static json_t *to_json_rec(lua_State *L, int idx, int depth, eddy_buf *path, int64_t *left,
                           eddy_err *err);

static void path_trunc(eddy_buf *path, size_t mark)
{
    path->len = mark;
    if (path->data)
        path->data[mark] = '\0';
}

/* Which JSON a table becomes. eddy.array{} is always an array and
 * eddy.object{} always an object. Otherwise a non-empty table is an array
 * when its keys are exactly 1..n (so appending to an object that came from
 * JSON empty makes a list), or when it came from a JSON array and its keys
 * are positive integers with few holes (holes become null); any other is
 * an object whose integer keys are written as strings. An empty table keeps
 * the kind it came with: [] from a JSON array, {} otherwise. */
static json_t *table_to_json(lua_State *L, int idx, int depth, eddy_buf *path, int64_t *left,
                             eddy_err *err)
{
    int forced_array = eddy__tools_is_mt(L, idx, EDDY_LUA_ARRAY_MT), all_int;
    int from_array = eddy__tools_is_mt(L, idx, EDDY_LUA_JARRAY_MT);
    int forced_object = eddy__tools_is_mt(L, idx, EDDY_LUA_OBJECT_MT);
    lua_Integer max, n = scan_keys(L, idx, &all_int, &max);
    int few_holes = all_int && (max == n || max <= 2 * n + 8);
    size_t mark = path->len;
    json_t *out;
    if (forced_array && n > 0 && !few_holes) {
        eddy_err_set(err, EDDY_ESCHEMA, "%s: an eddy.array holds keys other than 1..n",
                     path->len ? path->data : "value");
        return NULL;
    }
    if (!forced_object &&
        (n == 0 ? forced_array || from_array
                : all_int && (max == n || ((forced_array || from_array) && few_holes)))) {
        out = json_array();
        for (lua_Integer i = 1; out && i <= max; i++) {
            json_t *x;
            lua_rawgeti(L, idx, i);
            char num[EDDY_JSON_NUMBER_MAX]; /* no printf: once per element */
            eddy_buf_putc(path, '[');
            eddy_buf_append(path, num, eddy_json_integer_text((json_int_t)i, num));
            eddy_buf_putc(path, ']');
            x = to_json_rec(L, lua_gettop(L), depth + 1, path, left, err);
            lua_pop(L, 1);
            path_trunc(path, mark);
            if (!x || json_array_append_new(out, x)) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    out = json_object();
    lua_pushnil(L);
    while (out && lua_next(L, idx)) {
        char kbuf[64];
        const char *k;
        size_t klen;
        json_t *x;
        if (lua_type(L, -2) == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &klen);
            *left -= (int64_t)klen + 3;
        } else if (lua_isinteger(L, -2)) {
            klen = (size_t)snprintf(kbuf, sizeof(kbuf), "%lld", (long long)lua_tointeger(L, -2));
            k = kbuf;
        } else {
            eddy_err_set(err, EDDY_ESCHEMA, "%s: a %s cannot be a JSON object key",
                         path->len ? path->data : "value", luaL_typename(L, -2));
            lua_pop(L, 2);
            json_decref(out);
            return NULL;
        }
        eddy_buf_putc(path, '.');
        eddy_buf_append(path, k, strnlen(k, klen));
        x = to_json_rec(L, lua_gettop(L), depth + 1, path, left, err);
        path_trunc(path, mark);
        lua_pop(L, 1);
        if (!x || json_object_setn_new(out, k, klen, x)) {
            if (x == NULL) {
                lua_pop(L, 1);
                json_decref(out);
                return NULL;
            }
            eddy_err_set(err, EDDY_ESCHEMA, "%s: key is not valid UTF-8", path->data);
            lua_pop(L, 1);
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *to_json_rec(lua_State *L, int idx, int depth, eddy_buf *path, int64_t *left,
                           eddy_err *err)
{
    const char *where = path->len ? path->data : "value";
    json_t *v = NULL;
    if ((*left -= 8) < 0) {
        eddy_err_set(err, EDDY_ERANGE, "%s: too large to convert to JSON", where);
        return NULL;
    }
    if (depth > MAX_DEPTH) {
        eddy_err_set(err, EDDY_ERANGE, "%s: nested deeper than %d levels (a cycle?)", where,
                     MAX_DEPTH);
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            eddy_err_set(err, EDDY_ESCHEMA, "%s: %g has no JSON form", where, lua_tonumber(L, idx));
            return NULL;
        }
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if ((*left -= (int64_t)n) < 0) {
            eddy_err_set(err, EDDY_ERANGE, "%s: too large to convert to JSON", where);
            return NULL;
        }
        v = json_stringn(s, n);
        if (!v)
            eddy_err_set(err, EDDY_ESCHEMA, "%s: string is not valid UTF-8", where);
        return v;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return json_null();
        break;
    case LUA_TTABLE: {
        int real;
        if (!lua_checkstack(L, 8)) {
            eddy_err_set(err, EDDY_ENOMEM, "%s: Lua stack exhausted", where);
            return NULL;
        }
        if ((real = real_table(L, idx)) < 0) {
            eddy_err_set(err, EDDY_ESCHEMA, "%s: ctx.memory of a tool call that has returned",
                         where);
            return NULL;
        }
        if (real) {
            v = table_to_json(L, lua_gettop(L), depth, path, left, err);
            lua_pop(L, 1);
            return v;
        }
        return table_to_json(L, idx, depth, path, left, err);
    }
    default:
        break;
    }
    eddy_err_set(err, EDDY_ESCHEMA, "%s: a %s cannot be converted to JSON", where,
                 luaL_typename(L, idx));
    return NULL;
}

json_t *eddy__lua_to_json_max(lua_State *L, int idx, int64_t max_bytes, eddy_err *err)
{
    eddy_buf path;
    json_t *v;
    int64_t left = max_bytes;
    eddy_buf_init(&path);
    v = to_json_rec(L, lua_absindex(L, idx), 0, &path, &left, err);
    eddy_buf_free(&path);
    return v;
}

json_t *eddy_lua_to_json(lua_State *L, int idx, eddy_err *err)
{
    return eddy__lua_to_json_max(L, idx, EDDY_LUA_CONVERT_MAX, err);
}
