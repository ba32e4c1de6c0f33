/*
 * mcp/config.c - the `mcp:` mapping of a job: checked, then copied into
 * plain C strings the manager thread owns.
 *
 * Validation reports every problem (with its JSON pointer below `mcp:`, so
 * the job loader can give file:line:col) and goes on, as the rest of the job
 * loader does; a configuration is only handed out when there were none.
 */
#include "mcp_int.h"

#include "eddy/json.h"

#include <stdio.h>
#include <string.h>

typedef struct pctx {
    eddy_mcp_problem_fn fn;
    void *ud;
    eddy_err *err;
    int problems;
} pctx;

__attribute__((format(printf, 4, 5))) static void problem(pctx *c, const char *path, int key,
                                                          const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!c->problems)
        eddy_err_set(c->err, EDDY_ESCHEMA, "%s", msg);
    c->problems++;
    if (c->fn)
        c->fn(c->ud, path, key, msg);
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        eddy_free(v[i]);
    eddy_free(v);
}

static void scfg_free(eddy__mcp_scfg *s)
{
    eddy_free(s->name);
    free_strv(s->argv);
    free_strv(s->env);
    eddy_free(s->cwd);
    eddy_free(s->url);
    free_strv(s->headers);
}

void eddy_mcp_config_free(eddy_mcp_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++)
        scfg_free(&cfg->servers[i]);
    eddy_free(cfg->servers);
    eddy_free(cfg);
}

size_t eddy_mcp_config_count(const eddy_mcp_config *cfg)
{
    return cfg ? cfg->n : 0;
}

const char *eddy_mcp_config_name(const eddy_mcp_config *cfg, size_t i)
{
    return cfg && i < cfg->n ? cfg->servers[i].name : NULL;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* A duration member: "5s", "250ms", or a number of seconds; DEF when absent. */
static int64_t duration(pctx *c, const char *name, const json_t *v, const char *field, int64_t def)
{
    char path[160];
    const json_t *x = json_object_get(v, field);
    int64_t ms = -1;
    double d;
    snprintf(path, sizeof(path), "/%s/%s", name, field);
    if (!x || json_is_null(x))
        return def;
    if (json_is_number(x)) {
        d = json_number_value(x) * 1000.0;
        ms = d >= 1 && d <= 86400e3 ? (int64_t)d : -1;
    } else if (json_is_string(x)) {
        if (eddy_parse_duration_ms(json_string_value(x), &ms) || ms < 1 || ms > 86400000)
            ms = -1;
    }
    if (ms < 0) {
        problem(c, path, 0,
                "mcp server '%s': '%s' must be a duration between 1ms and 24h (such as 30s)", name,
                field);
        return def;
    }
    return ms;
}

/* A mapping of strings into "K=V" or "K: V" strings (SEP); NULL-ended. */
static char **string_map(pctx *c, const char *name, const json_t *v, const char *field,
                         const char *sep, int *oom)
{
    char path[320];
    const json_t *x = json_object_get(v, field), *val;
    const char *k;
    char **out;
    size_t i = 0;
    if (!x || json_is_null(x))
        return NULL;
    snprintf(path, sizeof(path), "/%s/%s", name, field);
    if (!json_is_object(x)) {
        problem(c, path, 0, "mcp server '%s': '%s' must be a mapping of names to strings", name,
                field);
        return NULL;
    }
    out = eddy_calloc(json_object_size(x) + 1, sizeof(*out));
    if (!out) {
        *oom = 1;
        return NULL;
    }
    json_object_foreach((json_t *)x, k, val)
    {
        snprintf(path, sizeof(path), "/%s/%s/%s", name, field, k);
        if (!json_is_string(val)) {
            problem(c, path, 0, "mcp server '%s': %s '%s' must be a string, not %s", name, field, k,
                    eddy_json_type_name(val));
            continue;
        }
        if (!*k || strpbrk(k, !strcmp(sep, "=") ? "=" : ":\r\n") ||
            strpbrk(json_string_value(val), "\r\n")) {
            problem(c, path, 1, "mcp server '%s': %s name '%s' is not allowed", name, field, k);
            continue;
        }
        out[i] = eddy_aprintf("%s%s%s", k, sep, json_string_value(val));
        if (!out[i]) {
            *oom = 1;
            break;
        }
        i++;
    }
    return out;
}

static void parse_command(pctx *c, eddy__mcp_scfg *s, const json_t *v, int *oom)
{
    char path[160];
    const json_t *cmd = json_object_get(v, "command"), *it;
    size_t i;
    snprintf(path, sizeof(path), "/%s/command", s->name);
    if (!json_is_array(cmd) || !json_array_size(cmd)) {
        problem(c, path, 0,
                "mcp server '%s': 'command' must be a non-empty list of strings (the program "
                "and its arguments)",
                s->name);
        return;
    }
    s->argv = eddy_calloc(json_array_size(cmd) + 1, sizeof(char *));
    if (!s->argv) {
        *oom = 1;
        return;
    }
    json_array_foreach(cmd, i, it)
    {
        if (!json_is_string(it) || (i == 0 && !*json_string_value(it))) {
            snprintf(path, sizeof(path), "/%s/command/%zu", s->name, i);
            problem(c, path, 0, "mcp server '%s': command[%zu] must be a non-empty string", s->name,
                    i);
            if (!(s->argv[i] = eddy_strdup(""))) { /* no hole: free_strv stops at NULL */
                *oom = 1;
                return;
            }
            continue;
        }
        if (!(s->argv[i] = eddy_strdup(json_string_value(it)))) {
            *oom = 1;
            return;
        }
    }
    s->env = string_map(c, s->name, v, "env", "=", oom);
    if (json_object_get(v, "cwd") && !json_is_null(json_object_get(v, "cwd"))) {
        const char *cwd = json_string_value(json_object_get(v, "cwd"));
        snprintf(path, sizeof(path), "/%s/cwd", s->name);
        if (!cwd || !*cwd)
            problem(c, path, 0, "mcp server '%s': 'cwd' must be a folder name", s->name);
        else if (!(s->cwd = eddy_strdup(cwd)))
            *oom = 1;
    }
}

static void parse_url(pctx *c, eddy__mcp_scfg *s, const json_t *v, int *oom)
{
    char path[160];
    const char *url = json_string_value(json_object_get(v, "url"));
    snprintf(path, sizeof(path), "/%s/url", s->name);
    if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) ||
        strpbrk(url, " \r\n\t")) {
        problem(c, path, 0,
                "mcp server '%s': 'url' must be an http:// or https:// address (such as "
                "http://127.0.0.1:3001/mcp)",
                s->name);
        return;
    }
    if (!(s->url = eddy_strdup(url)))
        *oom = 1;
    s->headers = string_map(c, s->name, v, "headers", ": ", oom);
}

static void parse_server(pctx *c, const char *name, const json_t *v, eddy__mcp_scfg *s, int *oom)
{
    static const char *const keys[] = {"command",         "env", "cwd", "url", "headers", "timeout",
                                       "startup_timeout", NULL};
    static const char *const stdio_only[] = {"env", "cwd", NULL};
    char path[160];
    const char *k;
    const json_t *x;
    int has_cmd, has_url;

    if (!(s->name = eddy_strdup(name))) {
        *oom = 1;
        return;
    }
    snprintf(path, sizeof(path), "/%s", name);
    if (!name_ok(name))
        problem(c, path, 1, "mcp server name '%s' must be 1 to 64 letters, digits or any of _ . -",
                name);
    if (!json_is_object(v)) {
        problem(c, path, 0,
                "mcp server '%s' must be a mapping with 'command' (stdio) or 'url' (HTTP)", name);
        return;
    }
    json_object_foreach((json_t *)v, k, x)
    {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], k))
            i++;
        if (!keys[i]) {
            snprintf(path, sizeof(path), "/%s/%s", name, k);
            problem(c, path, 1,
                    "mcp server '%s': unknown key '%s' (allowed: command, env, cwd, url, "
                    "headers, timeout, startup_timeout)",
                    name, k);
        }
    }
    has_cmd = json_object_get(v, "command") != NULL;
    has_url = json_object_get(v, "url") != NULL;
    snprintf(path, sizeof(path), "/%s", name);
    if (has_cmd == has_url) {
        problem(c, path, 0,
                has_cmd ? "mcp server '%s' has both 'command' and 'url': give one"
                        : "mcp server '%s' needs 'command' (a stdio server) or 'url' (HTTP)",
                name);
        return;
    }
    s->kind = has_cmd ? MCP_STDIO : MCP_HTTP;
    if (has_cmd)
        parse_command(c, s, v, oom);
    else {
        for (size_t i = 0; stdio_only[i]; i++)
            if (json_object_get(v, stdio_only[i])) {
                snprintf(path, sizeof(path), "/%s/%s", name, stdio_only[i]);
                problem(c, path, 1, "mcp server '%s': '%s' is for stdio servers (with 'command')",
                        name, stdio_only[i]);
            }
        parse_url(c, s, v, oom);
    }
    if (has_cmd && json_object_get(v, "headers")) {
        snprintf(path, sizeof(path), "/%s/headers", name);
        problem(c, path, 1, "mcp server '%s': 'headers' is for HTTP servers (with 'url')", name);
    }
    s->timeout_ms = duration(c, name, v, "timeout", EDDY_MCP_DEFAULT_TIMEOUT_MS);
    s->startup_timeout_ms =
        duration(c, name, v, "startup_timeout", EDDY_MCP_DEFAULT_STARTUP_TIMEOUT_MS);
}

int eddy_mcp_config_new(const json_t *mcp, eddy_mcp_problem_fn fn, void *ud, eddy_mcp_config **out,
                        eddy_err *err)
{
    pctx c = {fn, ud, err, 0};
    eddy_mcp_config *cfg;
    const char *name;
    json_t *v;
    int oom = 0;

    *out = NULL;
    if (mcp && !json_is_null(mcp) && !json_is_object(mcp)) {
        problem(&c, "", 0, "'mcp' must be a mapping of server names to servers");
        return EDDY_ESCHEMA;
    }
    cfg = eddy_calloc(1, sizeof(*cfg));
    if (!cfg)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (json_object_size(mcp) > EDDY_MCP_MAX_SERVERS)
        problem(&c, "", 0, "'mcp' names %zu servers; at most %d", json_object_size(mcp),
                EDDY_MCP_MAX_SERVERS);
    else if (json_object_size(mcp)) {
        cfg->servers = eddy_calloc(json_object_size(mcp), sizeof(*cfg->servers));
        if (!cfg->servers)
            oom = 1;
        json_object_foreach((json_t *)mcp, name, v)
        {
            if (oom)
                break;
            parse_server(&c, name, v, &cfg->servers[cfg->n++], &oom);
        }
    }
    if (oom) {
        eddy_mcp_config_free(cfg);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (c.problems) {
        eddy_mcp_config_free(cfg);
        return EDDY_ESCHEMA;
    }
    *out = cfg;
    return 0;
}

static char **strv_copy(char **v, int *oom)
{
    size_t n = 0;
    char **out;
    if (!v)
        return NULL;
    while (v[n])
        n++;
    out = eddy_calloc(n + 1, sizeof(*out));
    if (!out) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = eddy_strdup(v[i]))) {
            *oom = 1; /* no hole: free_strv stops at the first NULL */
            break;
        }
    return out;
}

int eddy__mcp_config_copy(const eddy_mcp_config *in, eddy_mcp_config **out)
{
    eddy_mcp_config *cfg = eddy_calloc(1, sizeof(*cfg));
    int oom = 0;
    *out = NULL;
    if (!cfg)
        return EDDY_ENOMEM;
    if (in && in->n && !(cfg->servers = eddy_calloc(in->n, sizeof(*cfg->servers))))
        oom = 1;
    for (size_t i = 0; !oom && in && i < in->n; i++) {
        const eddy__mcp_scfg *a = &in->servers[i];
        eddy__mcp_scfg *b = &cfg->servers[cfg->n++];
        *b = *a;
        b->name = eddy_strdup(a->name);
        b->cwd = a->cwd ? eddy_strdup(a->cwd) : NULL;
        b->url = a->url ? eddy_strdup(a->url) : NULL;
        b->argv = strv_copy(a->argv, &oom);
        b->env = strv_copy(a->env, &oom);
        b->headers = strv_copy(a->headers, &oom);
        if (!b->name || (a->cwd && !b->cwd) || (a->url && !b->url))
            oom = 1;
    }
    if (oom) {
        eddy_mcp_config_free(cfg);
        return EDDY_ENOMEM;
    }
    *out = cfg;
    return 0;
}
