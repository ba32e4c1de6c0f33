/*
 * tools/load.c - load a Lua tool file into the host.
 *
 * Compiles the file as text only, runs its chunk in a fresh environment
 * (whose __index is the sandbox base), and expects eddy.tool{...} back. All
 * errors name file:line:col: Lua gives the line of a syntax error and we
 * find the column from its "near 'token'"; for a bad parameter we locate the
 * parameter's name in the source after the eddy.tool call.
 */
#include "tools_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int eddy__tools_add(eddy_tools *h, eddy_tool *t, const char *where, eddy_err *err)
{
    eddy_tool **grown;
    for (size_t i = 0; i < h->ntools; i++)
        if (!strcmp(h->tools[i]->name, t->name))
            return eddy_err_set(err, EDDY_EEXIST, "%stool name '%s' is already used by %s", where,
                                t->name, h->tools[i]->path);
    grown = eddy_realloc(h->tools, (h->ntools + 1) * sizeof(*grown));
    if (!grown)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    h->tools = grown;
    h->tools[h->ntools++] = t;
    return 0;
}

/* 1-based column of TOKEN on line LINE of SRC, or 1. */
static int find_col(const char *src, int line, const char *token)
{
    const char *p = src, *eol, *hit;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p || !token || !*token)
        return 1;
    eol = strchr(p, '\n');
    hit = strstr(p, token);
    if (!hit || (eol && hit > eol))
        return 1;
    return (int)(hit - p) + 1;
}

/* Rewrite Lua's "path:LINE: msg near 'tok'" into "path:LINE:COL: msg ...". */
static void syntax_error(const char *path, const char *src, const char *luamsg, eddy_err *err)
{
    const char *p = strstr(luamsg, path), *near;
    char tok[128] = "";
    long line;
    char *end;
    if (!p || p[strlen(path)] != ':') {
        eddy_err_set(err, EDDY_ELUA, "%s:1:1: %s", path, luamsg);
        return;
    }
    p += strlen(path) + 1;
    line = strtol(p, &end, 10);
    if (end == p || *end != ':') {
        eddy_err_set(err, EDDY_ELUA, "%s:1:1: %s", path, luamsg);
        return;
    }
    if ((near = strstr(end, "near '"))) {
        const char *q = strchr(near + 6, '\'');
        size_t n = q ? (size_t)(q - near - 6) : 0;
        if (n < sizeof(tok)) {
            memcpy(tok, near + 6, n);
            tok[n] = '\0';
        }
    }
    eddy_err_set(err, EDDY_ELUA, "%s:%ld:%d:%s", path, line,
                 strcmp(tok, "<eof>") ? find_col(src, (int)line, tok) : 1, end + 1);
}

/* Position of parameter NAME: the first "NAME =" at or after line FROM. */
static void param_pos(const char *src, int from, const char *name, int *line, int *col)
{
    const char *p = src;
    int l = 1;
    size_t n = strlen(name);
    *line = from > 0 ? from : 1;
    *col = 1;
    while (*p) {
        if (l >= from && !strncmp(p, name, n) && (p == src || !isalnum((unsigned char)p[-1]))) {
            const char *q = p + n;
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q == '=' && q[1] != '=') {
                const char *bol = p;
                while (bol > src && bol[-1] != '\n')
                    bol--;
                *line = l;
                *col = (int)(p - bol) + 1;
                return;
            }
        }
        if (*p++ == '\n')
            l++;
    }
}

static int check_spec(lua_State *L, const char *path, const char *src, eddy_tool *t, eddy_err *err)
{
    int spec = lua_gettop(L), line, pl, pc;
    char bad[128];
    lua_getfield(L, spec, "__eddy_line");
    line = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (line < 1)
        line = 1;
    if (lua_getfield(L, spec, "name") != LUA_TSTRING || !*lua_tostring(L, -1))
        return eddy_err_set(err, EDDY_ESCHEMA, "%s:%d:1: eddy.tool needs a 'name' (a string)", path,
                            line);
    t->name = eddy_strdup(lua_tostring(L, -1));
    for (const char *c = t->name; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-')
            return eddy_err_set(err, EDDY_ESCHEMA,
                                "%s:%d:1: tool name '%s' may hold only letters, digits, _ and -",
                                path, line, t->name);
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "description") != LUA_TSTRING)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "%s:%d:1: tool '%s' needs a 'description' (a string the model "
                            "reads to decide when to call it)",
                            path, line, t->name);
    t->description = eddy_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "run") != LUA_TFUNCTION)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "%s:%d:1: tool '%s' needs 'run' (a function(args, ctx))", path, line,
                            t->name);
    t->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, spec, "params");
    t->schema = eddy__tools_params_schema(L, -1, bad, sizeof(bad), err);
    lua_pop(L, 1);
    if (!t->schema) {
        param_pos(src, line, bad[0] ? bad : "params", &pl, &pc);
        eddy_err_prefix(err, "%s:%d:%d: ", path, pl, pc);
        return EDDY_ESCHEMA;
    }
    t->def = json_pack("{s:s, s:{s:s, s:s, s:O}}", "type", "function", "function", "name", t->name,
                       "description", t->description, "parameters", t->schema);
    return t->def ? 0 : eddy_err_set(err, EDDY_ENOMEM, "out of memory");
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

int eddy_tools_load(eddy_tools *h, const char *path, const eddy_tool_limits *limits,
                    eddy_tool **out, eddy_err *err)
{
    lua_State *L = h->L;
    int top = lua_gettop(L), rc = 0;
    char *src = NULL, *chunk = NULL;
    size_t n;
    eddy_tool *t = NULL;

    *out = NULL;
    if ((rc = eddy_read_file(path, &src, &n, err)))
        return rc;
    t = eddy_calloc(1, sizeof(*t));
    chunk = eddy_aprintf("@%s", path);
    if (!t || !chunk || !(t->path = eddy_strdup(path))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    t->host = h;
    t->limits.instructions = limits && limits->instructions ? limits->instructions
                                                             : EDDY_TOOL_DEFAULT_INSTRUCTIONS;
    t->limits.memory = limits && limits->memory ? limits->memory : EDDY_TOOL_DEFAULT_MEMORY;
    t->limits.wall_ms = limits && limits->wall_ms ? limits->wall_ms : EDDY_TOOL_DEFAULT_WALL_MS;
    t->run_ref = LUA_NOREF;
    t->module = -1;
    lua_pushcfunction(L, traceback);
    if (luaL_loadbufferx(L, src, n, chunk, "t") != LUA_OK) {
        syntax_error(path, src, lua_tostring(L, -1), err);
        rc = EDDY_ELUA;
        goto out;
    }
    /* a fresh environment per file, reading through to the base */
    lua_newtable(L);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->base_ref);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_setupvalue(L, -2, 1);
    if (lua_pcall(L, 0, 1, top + 1) != LUA_OK) {
        rc = eddy_err_set(err, EDDY_ELUA, "%s", lua_tostring(L, -1));
        goto out;
    }
    if (!lua_istable(L, -1) || (lua_getfield(L, -1, "__eddy_tool"), !lua_toboolean(L, -1))) {
        rc = eddy_err_set(err, EDDY_ESCHEMA,
                          "%s:1:1: a tool file must return eddy.tool{ name, description, "
                          "params, run }",
                          path);
        goto out;
    }
    lua_pop(L, 1);
    if ((rc = check_spec(L, path, src, t, err)))
        goto out;
    {
        char where[1100];
        snprintf(where, sizeof(where), "%s:1:1: ", path);
        if ((rc = eddy__tools_add(h, t, where, err)))
            goto out;
    }
    *out = t;
out:
    if (rc) {
        if (t && t->run_ref != LUA_NOREF)
            luaL_unref(L, LUA_REGISTRYINDEX, t->run_ref);
        eddy__tool_free(t);
    }
    lua_settop(L, top);
    eddy_free(src);
    eddy_free(chunk);
    return rc;
}
