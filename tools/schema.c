/*
 * tools/schema.c - tool parameter schemas.
 *
 * A Lua tool declares params = { name = { type = "string", required = true,
 * description = "...", enum = {...}, items = {...}, properties = {...} } }
 * (or the shorthand name = "string"). This file turns that into the JSON
 * schema sent to the model (properties sorted by name, so the tool list is
 * a stable prompt prefix) and checks a model's arguments against it.
 */
#include "tools_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kTypes[] = {"string", "integer", "number", "boolean",
                                     "array",  "object",  NULL};
static const char *const kFields[] = {"type",  "required",   "description", "enum",
                                      "items", "properties", "default",     NULL};

static void decref(void *p)
{
    json_decref(p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *param_schema(lua_State *L, int idx, const char *name, int depth, int *required,
                            eddy_err *err);

/* Schema of the object whose properties table is at IDX. */
static json_t *object_schema(lua_State *L, int idx, int depth, char *bad, size_t nbad,
                             eddy_err *err)
{
    json_t *props = NULL, *req = NULL, *out = NULL;
    eddy_holder *hp = NULL, *hr = NULL;
    const char **names;
    size_t n = 0, cap = 0;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        cap++;
    }
    /* the names are the table's own key strings, in memory Lua owns */
    names = lua_newuserdatauv(L, (cap ? cap : 1) * sizeof(char *), 0);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            eddy_err_set(err, EDDY_ESCHEMA, "parameter names must be strings, not %s",
                         luaL_typename(L, -1));
            lua_pop(L, 1);
            goto out;
        }
        if (n < cap)
            names[n++] = lua_tostring(L, -1);
    }
    /* held by the garbage collector too: a nested parameter may raise */
    hp = eddy__tools_holder(L);
    hr = eddy__tools_holder(L);
    hp->free = hr->free = decref;
    if (!(hp->p = props = json_object()) || !(hr->p = req = json_array())) {
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if (n)
        qsort(names, n, sizeof(char *), cmp_str);
    for (size_t i = 0; i < n; i++) {
        int required = 0;
        json_t *s;
        lua_getfield(L, idx, names[i]);
        s = param_schema(L, -1, names[i], depth, &required, err);
        lua_pop(L, 1);
        if (!s) {
            snprintf(bad, nbad, "%s", names[i]);
            goto out;
        }
        json_object_set_new(props, names[i], s);
        if (required)
            json_array_append_new(req, json_string(names[i]));
    }
    out = json_pack("{s:s, s:O, s:O, s:b}", "type", "object", "properties", props, "required", req,
                    "additionalProperties", 0);
out:
    if (hp) {
        eddy__tools_holder_release(hp);
        eddy__tools_holder_release(hr);
        lua_pop(L, 2);
    } else {
        json_decref(props);
        json_decref(req);
    }
    lua_pop(L, 1); /* names */
    return out;
}

static json_t *param_schema(lua_State *L, int idx, const char *name, int depth, int *required,
                            eddy_err *err)
{
    json_t *s;
    eddy_holder *hs;
    int hidx;
    const char *type;
    char bad[128] = "";
    size_t i;
    idx = lua_absindex(L, idx);
    if (depth > 16) {
        eddy_err_set(err, EDDY_ESCHEMA, "parameter '%s' is nested too deep", name);
        return NULL;
    }
    if (lua_type(L, idx) == LUA_TSTRING) { /* shorthand: name = "string" */
        type = lua_tostring(L, idx);
        for (i = 0; kTypes[i] && strcmp(kTypes[i], type); i++)
            ;
        if (!kTypes[i]) {
            eddy_err_set(err, EDDY_ESCHEMA,
                         "parameter '%s': unknown type '%s' (expected one "
                         "of string, integer, number, boolean, array, "
                         "object)",
                         name, type);
            return NULL;
        }
        return json_pack("{s:s}", "type", type);
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        eddy_err_set(err, EDDY_ESCHEMA,
                     "parameter '%s' must be a table such as { type = "
                     "\"string\" }, not %s",
                     name, luaL_typename(L, idx));
        return NULL;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        for (i = 0; kFields[i] &&
                    (lua_type(L, -1) != LUA_TSTRING || strcmp(kFields[i], lua_tostring(L, -1)));
             i++)
            ;
        if (!kFields[i]) {
            eddy_err_set(err, EDDY_ESCHEMA,
                         "parameter '%s': unknown field '%s' (expected "
                         "type, required, description, enum, items, "
                         "properties, default)",
                         name, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
            lua_pop(L, 1);
            return NULL;
        }
    }
    lua_getfield(L, idx, "type");
    type = lua_tostring(L, -1);
    for (i = 0; type && kTypes[i] && strcmp(kTypes[i], type); i++)
        ;
    if (!type || !kTypes[i]) {
        eddy_err_set(err, EDDY_ESCHEMA,
                     "parameter '%s': %s%s%s (expected one of string, "
                     "integer, number, boolean, array, object)",
                     name, type ? "unknown type '" : "missing 'type'", type ? type : "",
                     type ? "'" : "");
        lua_pop(L, 1);
        return NULL;
    }
    lua_pop(L, 1);
    hs = eddy__tools_holder(L); /* s, while nested parameters may raise */
    hs->free = decref;
    hidx = lua_gettop(L);
    hs->p = s = json_pack("{s:s}", "type", type);
    lua_getfield(L, idx, "required");
    *required = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "description") == LUA_TSTRING)
        json_object_set_new(s, "description", json_string(lua_tostring(L, -1)));
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "enum") != LUA_TNIL) {
        json_t *e = lua_istable(L, -1) ? eddy_lua_to_json(L, -1, err) : NULL;
        if (!json_is_array(e)) {
            json_decref(e);
            eddy_err_set(err, EDDY_ESCHEMA, "parameter '%s': 'enum' must be a list of values",
                         name);
            lua_pop(L, 1);
            eddy__tools_holder_release(hs);
            lua_remove(L, hidx);
            return NULL;
        }
        json_object_set_new(s, "enum", e);
    }
    lua_pop(L, 1);
    if (!strcmp(type, "array") && lua_getfield(L, idx, "items") != LUA_TNIL) {
        int r;
        json_t *it = param_schema(L, -1, name, depth + 1, &r, err);
        lua_pop(L, 1);
        if (!it) {
            eddy__tools_holder_release(hs);
            lua_remove(L, hidx);
            return NULL;
        }
        json_object_set_new(s, "items", it);
    } else if (!strcmp(type, "array")) {
        lua_pop(L, 1);
    }
    if (!strcmp(type, "object") && lua_getfield(L, idx, "properties") == LUA_TTABLE) {
        json_t *o = object_schema(L, -1, depth + 1, bad, sizeof(bad), err);
        lua_pop(L, 1);
        if (!o) {
            eddy__tools_holder_release(hs);
            lua_remove(L, hidx);
            return NULL;
        }
        json_object_update(s, o);
        json_decref(o);
    } else if (!strcmp(type, "object")) {
        lua_pop(L, 1);
    }
    hs->p = NULL;
    lua_remove(L, hidx);
    return s;
}

json_t *eddy__tools_params_schema(lua_State *L, int idx, char *bad_param, size_t n, eddy_err *err)
{
    bad_param[0] = '\0';
    if (lua_isnoneornil(L, idx))
        return json_pack("{s:s, s:{}, s:[], s:b}", "type", "object", "properties", "required",
                         "additionalProperties", 0);
    if (!lua_istable(L, idx)) {
        eddy_err_set(err, EDDY_ESCHEMA, "'params' must be a table of parameters, not %s",
                     luaL_typename(L, idx));
        return NULL;
    }
    return object_schema(L, idx, 0, bad_param, n, err);
}

static int type_ok(const char *type, json_t *v)
{
    if (!strcmp(type, "string"))
        return json_is_string(v);
    if (!strcmp(type, "integer"))
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v));
    if (!strcmp(type, "number"))
        return json_is_number(v);
    if (!strcmp(type, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(type, "array"))
        return json_is_array(v);
    if (!strcmp(type, "object"))
        return json_is_object(v);
    return 1;
}

/* Where a value is, written out only for a message ("arguments.items[2]"):
 * a property's key, an array's index, or the root's name. */
typedef struct vpath {
    const struct vpath *up;
    const char *key; /* NULL: IDX is an array index */
    size_t idx;
} vpath;

static void render(const vpath *p, eddy_buf *b)
{
    if (p->up)
        render(p->up, b);
    if (!p->key)
        eddy_buf_printf(b, "[%zu]", p->idx);
    else
        eddy_buf_printf(b, "%s%s", p->up ? "." : "", p->key);
}

/* Set ERR to "PATH: MSG..." (EDDY_ESCHEMA). */
static int verr(eddy_err *err, const vpath *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int verr(eddy_err *err, const vpath *p, const char *fmt, ...)
{
    eddy_buf b;
    char msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eddy_buf_init(&b);
    render(p, &b);
    eddy_err_set(err, EDDY_ESCHEMA, "%s: %s", b.data ? b.data : "arguments", msg);
    eddy_buf_free(&b);
    return EDDY_ESCHEMA;
}

static int validate(json_t *schema, json_t *v, const vpath *path, eddy_err *err)
{
    const char *type = json_string_value(json_object_get(schema, "type"));
    json_t *e = json_object_get(schema, "enum");
    if (type && !type_ok(type, v))
        return verr(err, path, "expected %s, got %s", type, eddy_json_type_name(v));
    if (e) {
        size_t i;
        json_t *x;
        json_array_foreach(e, i, x) if (json_equal(x, v)) break;
        if (i == json_array_size(e))
            return verr(err, path, "value is not one of the allowed values");
    }
    if (json_is_object(v) && json_is_object(json_object_get(schema, "properties"))) {
        json_t *props = json_object_get(schema, "properties"), *x;
        const char *k;
        size_t i;
        json_array_foreach(json_object_get(schema, "required"), i, x)
        {
            if (!json_object_get(v, json_string_value(x)))
                return verr(err, path, "missing required argument '%s'", json_string_value(x));
        }
        json_object_foreach(v, k, x)
        {
            json_t *ps = json_object_get(props, k), *more;
            vpath sub = {path, k, 0};
            /* an argument the schema does not name is refused, unless the
             * schema says others are welcome (an MCP server's may) */
            if (!ps && (more = json_object_get(schema, "additionalProperties")) &&
                (json_is_true(more) || json_is_object(more))) {
                if (json_is_object(more) && validate(more, x, &sub, err))
                    return EDDY_ESCHEMA;
                continue;
            }
            if (!ps)
                return verr(err, path, "unknown argument '%s'", k);
            if (validate(ps, x, &sub, err))
                return EDDY_ESCHEMA;
        }
    }
    if (json_is_array(v) && json_object_get(schema, "items")) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            vpath sub = {path, NULL, i};
            if (validate(json_object_get(schema, "items"), x, &sub, err))
                return EDDY_ESCHEMA;
        }
    }
    return 0;
}

int eddy_tool_validate_args(json_t *schema, json_t *args, eddy_err *err)
{
    vpath root = {NULL, "arguments", 0};
    return validate(schema, args, &root, err);
}
