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

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int eddy__tools_add(eddy_tools *h, eddy_tool *t, const char *where, eddy_err *err)
{
    eddy_tool **grown = eddy_realloc(h->tools, (h->ntools + 1) * sizeof(*grown));
    (void)where;
    if (!grown)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    h->tools = grown;
    h->tools[h->ntools++] = t;
    return 0;
}

void eddy__tools_set_env(lua_State *L, eddy_tool *t, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->chunk_ref);
    lua_pushvalue(L, idx);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    lua_pop(L, 1);
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

/* Rewrite Lua's "SHOWN:LINE: msg near 'tok'" (SHOWN: the chunk's name) into
 * "PATH:LINE:COL: msg ...". */
static void syntax_error(const char *path, const char *shown, const char *src, const char *luamsg,
                         eddy_err *err)
{
    const char *p = strstr(luamsg, shown), *near;
    char tok[128] = "";
    long line;
    char *end;
    if (!p || p[strlen(shown)] != ':') {
        eddy_err_set(err, EDDY_ELUA, "%s:1:1: %s", path, luamsg);
        return;
    }
    p += strlen(shown) + 1;
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

/* Add one problem to PROBLEMS ("path:line:col: msg" lines). */
static void problem(eddy_buf *problems, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(eddy_buf *problems, const char *fmt, ...)
{
    char msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eddy_buf_printf(problems, "%s%s", problems->len ? "\n" : "", msg);
}

typedef struct loading {
    eddy_tools *h;
    eddy_tool *t;
    const char *path, *src, *chunk;
    size_t n;
    struct tool_call *lc;
    eddy_buf problems;
    int code;   /* of the first problem */
    int syntax; /* the chunk did not compile */
} loading;

/* Every problem of the spec on top of the stack, all reported. */
static int check_spec(lua_State *L)
{
    loading *ld = lua_touserdata(L, 1);
    eddy_tool *t = ld->t;
    const char *path = ld->path;
    int spec = 2, line, pl, pc, params;
    char bad[128];
    eddy_err e;
    lua_pushliteral(L, "__eddy_tool");
    if (lua_rawget(L, spec) != LUA_TBOOLEAN) {
        problem(&ld->problems,
                "%s:1:1: a tool file must return eddy.tool{ name, description, params, run }",
                path);
        return 0;
    }
    lua_pop(L, 1);
    lua_getfield(L, spec, "__eddy_line");
    line = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (line < 1)
        line = 1;
    if (lua_getfield(L, spec, "name") != LUA_TSTRING || !*lua_tostring(L, -1)) {
        problem(&ld->problems, "%s:%d:1: eddy.tool needs a 'name' (a string)", path, line);
    } else if (!(t->name = eddy_strdup(lua_tostring(L, -1)))) {
        return luaL_error(L, "out of memory");
    } else {
        for (const char *c = t->name; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') {
                param_pos(ld->src, line, "name", &pl, &pc);
                problem(&ld->problems,
                        "%s:%d:%d: tool name '%s' may hold only letters, digits, _ and -", path, pl,
                        pc, t->name);
                break;
            }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "description") != LUA_TSTRING)
        problem(&ld->problems,
                "%s:%d:1: tool '%s' needs a 'description' (a string the model reads to decide "
                "when to call it)",
                path, line, t->name ? t->name : "?");
    else if (!(t->description = eddy_strdup(lua_tostring(L, -1))))
        return luaL_error(L, "out of memory");
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "run") != LUA_TFUNCTION) {
        problem(&ld->problems, "%s:%d:1: tool '%s' needs 'run' (a function(args, ctx))", path, line,
                t->name ? t->name : "?");
        lua_pop(L, 1);
    } else {
        t->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    int se = lua_getfield(L, spec, "side_effects");
    if (se == LUA_TBOOLEAN)
        t->side_effects = lua_toboolean(L, -1);
    else if (se != LUA_TNIL)
        problem(&ld->problems, "%s:%d:1: tool '%s': side_effects must be true or false", path, line,
                t->name ? t->name : "?");
    lua_pop(L, 1);
    int rt = lua_getfield(L, spec, "reconcile");
    if (rt == LUA_TFUNCTION && !t->side_effects) {
        problem(&ld->problems,
                "%s:%d:1: tool '%s': reconcile is asked only about calls of a tool with "
                "side_effects = true",
                path, line, t->name ? t->name : "?");
        lua_pop(L, 1);
    } else if (rt == LUA_TFUNCTION) {
        t->reconcile_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        if (rt != LUA_TNIL)
            problem(&ld->problems, "%s:%d:1: tool '%s': reconcile must be a function(args, ctx)",
                    path, line, t->name ? t->name : "?");
        lua_pop(L, 1);
    }
    lua_getfield(L, spec, "params");
    params = lua_gettop(L);
    if (lua_istable(L, -1)) { /* each parameter alone, so that all are reported */
        lua_pushnil(L);
        while (lua_next(L, params)) {
            json_t *one;
            lua_createtable(L, 0, 1);
            lua_pushvalue(L, -3);
            lua_pushvalue(L, -3);
            lua_settable(L, -3);
            one = eddy__tools_params_schema(L, -1, bad, sizeof(bad), &e);
            lua_pop(L, 2);
            if (!one) {
                param_pos(ld->src, line, bad[0] ? bad : "params", &pl, &pc);
                problem(&ld->problems, "%s:%d:%d: %s", path, pl, pc, e.msg);
            }
            json_decref(one);
        }
    }
    if (!ld->problems.len) {
        t->schema = eddy__tools_params_schema(L, params, bad, sizeof(bad), &e);
        if (!t->schema) {
            param_pos(ld->src, line, bad[0] ? bad : "params", &pl, &pc);
            problem(&ld->problems, "%s:%d:%d: %s", path, pl, pc, e.msg);
        }
    }
    lua_pop(L, 1);
    if (ld->problems.len)
        return 0;
    return 0;
}

/* The line's column of the name quoted in a runtime error ("global 'x'"),
 * else of its first non-blank character. */
static int error_col(const char *src, long line, const char *msg)
{
    const char *q = strchr(msg, '\''), *p = src, *e;
    char tok[64] = "";
    for (long l = 1; l < line && p; l++)
        if ((p = strchr(p, '\n')))
            p++;
    if (!p)
        return 1;
    if (q && (e = strchr(q + 1, '\'')) && (size_t)(e - q - 1) < sizeof(tok)) {
        memcpy(tok, q + 1, (size_t)(e - q - 1));
        tok[e - q - 1] = '\0';
        if (tok[0]) {
            int c = find_col(src, (int)line, tok);
            if (c > 1 || !strncmp(p, tok, strlen(tok)))
                return c;
        }
    }
    for (e = p; *e == ' ' || *e == '\t'; e++)
        ;
    return (int)(e - p) + 1;
}

/* "src:LINE: msg" (src possibly shortened by Lua) -> "path:LINE:COL: msg". */
static void runtime_error(loading *ld, const char *luamsg)
{
    const char *p = luamsg;
    while ((p = strchr(p, ':'))) {
        char *end;
        long line = strtol(p + 1, &end, 10);
        if (end > p + 1 && end[0] == ':' && end[1] == ' ') {
            problem(&ld->problems, "%s:%ld:%d: %s", ld->path, line,
                    error_col(ld->src, line, end + 2), end + 2);
            return;
        }
        p++;
    }
    problem(&ld->problems, "%s:1:1: %s", ld->path, luamsg);
}

/* Compile the file; make its globals F (reading through to the base), the
 * metatable of a call's globals (reading through to F) and the coroutine
 * that runs the chunk. Protected. */
static int load_prepare(lua_State *L)
{
    loading *ld = lua_touserdata(L, 1);
    eddy_tool *t = ld->t;
    if (luaL_loadbufferx(L, ld->src, ld->n, ld->chunk, "t") != LUA_OK) {
        ld->syntax = 1;
        return lua_error(L);
    }
    lua_newtable(L); /* F */
    lua_createtable(L, 0, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld->h->base_ref);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_createtable(L, 0, 2); /* a call's globals read through to F */
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    t->envmt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    ld->lc->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setupvalue(L, -2, 1);
    lua_pushvalue(L, -1);
    t->chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ld->lc->co = lua_newthread(L);
    eddy__tools_own_thread(L);
    ld->lc->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(ld->lc->co, eddy__tools_hook, LUA_MASKCOUNT, EDDY_LUA_HOOK_EVERY);
    lua_xmove(L, ld->lc->co, 1);
    return 0;
}

static eddy_tool *find_loaded(eddy_tools *h, const char *path, const eddy_tool_limits *lim,
                              const eddy_tool_opts *o)
{
    for (size_t i = 0; i < h->ntools; i++) {
        eddy_tool *t = h->tools[i];
        if (!TOOL_IS_NATIVE(t) && !strcmp(t->path, path) &&
            t->limits.instructions == lim->instructions && t->limits.memory == lim->memory &&
            t->limits.wall_ms == lim->wall_ms && eddy_json_same(t->config, o ? o->config : NULL) &&
            eddy_json_same(t->http, o ? o->http : NULL))
            return t;
    }
    return NULL;
}

/* Keep copies of what OPTS gives T (its config, http settings, secrets). */
static int keep_opts(eddy_tool *t, const eddy_tool_opts *o, eddy_err *err)
{
    if (!o)
        return 0;
    if (o->config && !json_is_object(o->config))
        return eddy_err_set(err, EDDY_EINVAL, "a tool's config must be a mapping");
    if ((o->config && !(t->config = json_deep_copy(o->config))) ||
        (o->http && !(t->http = json_deep_copy(o->http))) ||
        (o->nsecrets && !(t->secrets = eddy_calloc(o->nsecrets, sizeof(char *)))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->nsecrets; i++) {
        if (!o->secrets[i] || !*o->secrets[i])
            continue;
        if (!(t->secrets[t->nsecrets] = eddy_strdup(o->secrets[i])))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        t->nsecrets++;
    }
    return 0;
}

json_t *eddy_tool_config(const eddy_tool *t)
{
    return t->config;
}

json_t *eddy_tool_http(const eddy_tool *t)
{
    return t->http;
}

const char *eddy_tool_redact(const eddy_tool *t, const char *msg, char *buf, size_t n)
{
    eddy_buf b;
    assert(n > 0);
    if (!t || !t->nsecrets) {
        snprintf(buf, n, "%s", msg);
        return buf;
    }
    eddy_buf_init(&b);
    size_t len = strlen(msg), from = 0, at, end;
    while ((end = eddy_secret_find((const char *const *)t->secrets, t->nsecrets, msg, len, from,
                                   &at))) {
        eddy_buf_append(&b, msg + from, at - from);
        eddy_buf_puts(&b, "[REDACTED]");
        from = end;
    }
    eddy_buf_append(&b, msg + from, len - from);
    snprintf(buf, n, "%s", b.data ? b.data : "");
    eddy_buf_free(&b);
    return buf;
}

/* Where the stopped top-level code was: "path:LINE:1: ". */
static void stopped_at(loading *ld, lua_State *co)
{
    lua_Debug ar;
    int line = 1;
    for (int level = 0; lua_getstack(co, level, &ar); level++)
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@') {
            line = ar.currentline;
            break;
        }
    problem(&ld->problems, "%s:%d:1: %s (in the file's top-level code)", ld->path, line,
            ld->lc->kill_msg);
}

/* Run the chunk as a pseudo-call under T's budgets, then check its spec. */
static int run_chunk(loading *ld, eddy_err *err)
{
    eddy_tools *h = ld->h;
    struct tool_call *lc = ld->lc;
    lua_State *L = h->L;
    int st, nres = 0, top = lua_gettop(L), rc = 0;
    h->current = lc;
    lc->running = lc->co;
    st = lua_resume(lc->co, L, 0, &nres);
    lc->running = NULL;
    if (st == LUA_ERRMEM && lc->refused_size)
        eddy__tools_kill(lc, KILL_MEMORY);
    ld->code = st == LUA_OK ? EDDY_ESCHEMA : EDDY_ELUA;
    if (lc->killed) {
        ld->code = EDDY_EBUDGET;
        stopped_at(ld, lc->co);
    } else if (st == LUA_YIELD) {
        problem(&ld->problems, "%s:1:1: the top-level code of a tool file cannot yield", ld->path);
    } else if (st != LUA_OK) {
        runtime_error(ld, lua_type(lc->co, -1) == LUA_TSTRING ? lua_tostring(lc->co, -1)
                                                              : "error object is not a string");
    } else if (nres < 1 || !lua_istable(lc->co, -nres)) {
        problem(&ld->problems,
                "%s:1:1: a tool file must return eddy.tool{ name, description, params, run }",
                ld->path);
    } else {
        lua_settop(lc->co, 1); /* the spec */
        if (!lua_checkstack(L, 4)) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        } else {
            lua_pushcfunction(L, check_spec);
            lua_pushlightuserdata(L, ld);
            lua_xmove(lc->co, L, 1);
            lua_sethook(L, eddy__tools_hook, LUA_MASKCOUNT, EDDY_LUA_HOOK_EVERY);
            lc->running = L;
            st = lua_pcall(L, 2, 0, 0);
            lc->running = NULL;
            lua_sethook(L, NULL, 0, 0);
            if (st == LUA_ERRMEM && lc->refused_size)
                eddy__tools_kill(lc, KILL_MEMORY);
            if (lc->killed)
                problem(&ld->problems, "%s:1:1: %s (reading the tool's spec)", ld->path,
                        lc->kill_msg);
            else if (st != LUA_OK)
                runtime_error(ld, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                 : "out of memory");
        }
    }
    h->current = NULL;
    lua_settop(L, top);
    /* the file's globals are read-only to calls: no way back to them by _G */
    if (lc->env_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lc->env_ref);
        lua_pushnil(L);
        lua_setfield(L, -2, "_G"); /* an existing field: no allocation */
        lua_pop(L, 1);
    }
    return rc;
}

int eddy_tools_load(eddy_tools *h, const char *path, const eddy_tool_limits *limits,
                    eddy_tool **out, eddy_err *err)
{
    eddy_tool_opts o;
    memset(&o, 0, sizeof(o));
    if (limits)
        o.limits = *limits;
    return eddy_tools_load_opts(h, path, &o, out, err);
}

int eddy_tools_load_opts(eddy_tools *h, const char *path, const eddy_tool_opts *opts,
                         eddy_tool **out, eddy_err *err)
{
    const eddy_tool_limits *limits = opts ? &opts->limits : NULL;
    lua_State *L = h->L;
    int top = lua_gettop(L), rc = 0;
    char *src = NULL, *chunk = NULL;
    struct tool_call lc;
    eddy_tool_limits lim;
    eddy_tool *t = NULL;
    loading ld;
    eddy_err e;

    *out = NULL;
    lim.instructions =
        limits && limits->instructions ? limits->instructions : EDDY_TOOL_DEFAULT_INSTRUCTIONS;
    lim.memory = limits && limits->memory ? limits->memory : EDDY_TOOL_DEFAULT_MEMORY;
    lim.wall_ms = limits && limits->wall_ms ? limits->wall_ms : EDDY_TOOL_DEFAULT_WALL_MS;
    if ((*out = find_loaded(h, path, &lim, opts)))
        return 0;
    if (opts && opts->source) {
        if (!(src = eddy_strndup(opts->source, opts->source_len)))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        ld.n = opts->source_len;
    } else if ((rc = eddy_read_file(path, &src, &ld.n, err))) {
        return rc;
    }
    memset(&lc, 0, sizeof(lc));
    lc.co_ref = lc.env_ref = lc.ctx_ref = lc.mem_ref = lc.state_ref = LUA_NOREF;
    eddy_buf_init(&ld.problems);
    t = eddy_calloc(1, sizeof(*t));
    if (t)
        t->run_ref = t->chunk_ref = t->envmt_ref = t->reconcile_ref = LUA_NOREF; /* first */
    /* errors show the file as the job names it (relative to the job's folder),
     * not where the job happens to live: they reach the model */
    size_t bl = strlen(h->base_dir);
    const char *shown = path;
    if (bl && !strncmp(path, h->base_dir, bl) && path[bl] == '/' && path[bl + 1])
        shown = path + bl + 1;
    chunk = eddy_aprintf("@%s", shown);
    if (!t || !chunk || !(t->path = eddy_strdup(path))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if (memchr(src, '\0', ld.n)) {
        const char *nul = memchr(src, '\0', ld.n), *bol = src;
        int line = 1;
        for (const char *q = src; q < nul; q++)
            if (*q == '\n')
                line++, bol = q + 1;
        rc = eddy_err_set(err, EDDY_ELUA, "%s:%d:%d: the file holds a NUL byte", path, line,
                          (int)(nul - bol) + 1);
        goto out;
    }
    t->host = h;
    t->limits = lim;
    if ((rc = keep_opts(t, opts, err)))
        goto out;
    t->run_ref = t->chunk_ref = t->envmt_ref = t->reconcile_ref = LUA_NOREF;
    t->module = TOOL_LUA;
    lc.host = h;
    lc.tool = t;
    lc.is_load = 1;
    lc.limits = lim;
    lc.deadline_ns = uv_hrtime() + (uint64_t)lim.wall_ms * 1000000u;
    ld.h = h;
    ld.t = t;
    ld.path = path;
    ld.src = src;
    ld.chunk = chunk;
    ld.lc = &lc;
    ld.syntax = 0;
    if ((rc = eddy__tools_protect(h, load_prepare, &ld, 0, &e))) {
        if (ld.syntax)
            syntax_error(path, chunk + 1, src, e.msg, err);
        else
            eddy_err_set(err, rc, "%s:1:1: %s", path, e.msg);
        rc = ld.syntax ? EDDY_ELUA : rc;
        goto out;
    }
    if ((rc = run_chunk(&ld, err)))
        goto out;
    if (ld.problems.len) {
        rc = eddy_err_set(err, ld.code, "%s", ld.problems.data);
        goto out;
    }
    if ((rc = eddy__tools_add(h, t, "", err)))
        goto out;
    *out = t;
out:
    luaL_unref(L, LUA_REGISTRYINDEX, lc.co_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lc.env_ref);
    if (rc && t) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->run_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->reconcile_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->chunk_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->envmt_ref);
        eddy__tool_free(t);
    }
    eddy_buf_free(&ld.problems);
    lua_settop(L, top);
    eddy_free(src);
    eddy_free(chunk);
    return rc;
}

int eddy_tools_add_native(eddy_tools *h, eddy_native_tool *def, const char *what, eddy_tool **out,
                          eddy_err *err)
{
    eddy_tool *t = eddy_calloc(1, sizeof(*t));
    int rc = 0;
    *out = NULL;
    if (!t) {
        eddy_free(def->name);
        eddy_free(def->description);
        json_decref(def->params);
        if (def->free_data)
            def->free_data(def->data);
        memset(def, 0, sizeof(*def));
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    t->host = h;
    t->run_ref = t->chunk_ref = t->envmt_ref = t->reconcile_ref = LUA_NOREF;
    t->module = TOOL_BARE;
    t->native = *def; /* taken */
    memset(def, 0, sizeof(*def));
    t->limits.instructions = EDDY_TOOL_DEFAULT_INSTRUCTIONS;
    t->limits.memory = EDDY_TOOL_DEFAULT_MEMORY;
    t->limits.wall_ms = EDDY_TOOL_MAX_WALL_MS; /* the native side keeps its own time */
    if (!t->native.name || !t->native.params || !t->native.call)
        rc = eddy_err_set(err, EDDY_EINVAL, "a native tool needs a name, a schema and a body");
    else if (!(t->name = eddy_strdup(t->native.name)) ||
             !(t->description = eddy_strdup(t->native.description ? t->native.description : "")) ||
             !(t->path = eddy_strdup(what ? what : "a native tool")))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!rc) {
        t->schema = json_incref(t->native.params);
        rc = eddy__tools_add(h, t, "", err);
    }
    if (rc) {
        eddy__tool_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void *eddy_tool_native_data(const eddy_tool *t, eddy_native_fn call)
{
    return TOOL_IS_NATIVE(t) && t->native.call == call ? t->native.data : NULL;
}
