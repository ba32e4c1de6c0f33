/*
 * agents/job.c - load and validate a job file.
 *
 * Validation walks the YAML document with a small set of typed getters that
 * report into an eddy_diag and keep going, so one `eddy check` lists every
 * problem. Each error names file:line:col of the offending key or value and
 * says what was expected; unknown keys get a "did you mean" from the keys
 * allowed at that place. Relative paths resolve against the job's folder.
 *
 * Every number is range-checked ("'timeout' must be between 1ms and 1d"),
 * every required string must be non-empty, and a scalar that was wholly one
 * ${...} takes the type its setting wants (yaml.c keeps its text). With
 * EDDY_JOB_TOOLS, the tools of all agents load into one host, as the worker
 * loads them, so a job that `eddy check` accepts loads in `eddy run` too.
 */
#include "eddy/agent.h"
#include "eddy/jschema.h"
#include "job_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/mcp.h"
#include "eddy/tools.h"

#include <ctype.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <regex.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

char *eddy_job_path(const eddy_job *job, const char *rel)
{
    if (!rel)
        return NULL;
    if (rel[0] == '/' || !strcmp(rel, "-") || !job->dir[0])
        return eddy_strdup(rel);
    return eddy_aprintf("%s/%s", job->dir, rel);
}

/* A `fluss:` block of source or sink: keys checked here, meaning in fluss/. */
static json_t *get_fluss(vctx *c, json_t *m, const char *path, int is_source)
{
    static const char *const src_keys[] = {"bootstrap", "table",         "start", "follow",
                                           "sasl_user", "sasl_password", NULL};
    static const char *const sink_keys[] = {"bootstrap", "table", "sasl_user", "sasl_password",
                                            NULL};
    static const char *const strings[] = {"bootstrap", "table",         "start",
                                          "sasl_user", "sasl_password", NULL};
    char p[512], tp[600];
    json_t *f = eddy__job_map(c, m, path, "fluss", 1);
    if (!f)
        return NULL;
    eddy__job_join(p, sizeof(p), path, "fluss");
    eddy__job_keys(c, f, p, is_source ? src_keys : sink_keys);
    eddy__job_env_strings(c, f, p, strings);
    char *table = eddy__job_str(c, f, p, "table", S_REQ, NULL);
    eddy__job_join(tp, sizeof(tp), p, "table");
    if (table && (!strchr(table, '.') || table[0] == '.' || strchr(table, '.')[1] == 0))
        eddy__job_err(c, tp, 0, "'table' must be DATABASE.TABLE, got '%s'", table);
    eddy_free(table);
    const json_t *start = json_object_get(f, "start");
    eddy__job_join(tp, sizeof(tp), p, "start");
    if (start && !json_is_string(start) && !json_is_integer(start))
        eddy__job_err(c, tp, 0, "'start' must be earliest, latest, or an ISO-8601 time");
    eddy__job_bool(c, f, p, "follow", 1);
    /* the job's `fluss:` block fills in what this block leaves out */
    json_t *merged = json_deep_copy(f);
    if (merged)
        json_object_update_missing(merged, json_object_get(c->job->modules, "fluss"));
    return json_pack("{s:o*}", "fluss", merged);
}

/* The job's top-level `fluss:` block: the cluster every Fluss source, sink,
 * lookup tool and eddy.fluss call of the job uses unless it names another. */
static void load_modules(vctx *c, json_t *root)
{
    static const char *const keys[] = {"bootstrap", "sasl_user", "sasl_password", NULL};
    json_t *f = eddy__job_map(c, root, "", "fluss", 0);
    const char *k;
    json_t *v;
    c->job->modules = json_object();
    if (!f || !c->job->modules)
        return;
    eddy__job_keys(c, f, "/fluss", keys);
    eddy__job_env_strings(c, f, "/fluss", keys);
    json_object_foreach(f, k, v)
    {
        char p[512];
        eddy__job_join(p, sizeof(p), "/fluss", k);
        if (!json_is_string(v))
            eddy__job_err(c, p, 0, "'%s' must be a string, not %s", k, eddy__job_type(v));
        else if (!json_string_length(v))
            eddy__job_err(c, p, 0, "'%s' must not be empty", k);
    }
    json_object_set(c->job->modules, "fluss", f);
}

/* source/sink/dead_letter: { jsonl: PATH }, { stdout: true } (sink) or
 * { fluss: {...} } (source, sink: returned in *CFG). *WHERE gets the place
 * of the path. */
static char *get_io(vctx *c, json_t *root, const char *key, int allow_stdout, json_t **cfg,
                    char **where_out)
{
    static const char *const with_stdout[] = {"jsonl", "stdout", "fluss", NULL};
    static const char *const with_fluss[] = {"jsonl", "fluss", NULL};
    static const char *const only_jsonl[] = {"jsonl", NULL};
    char p[512], jp[600], where[512], *rel, *abs;
    json_t *m = eddy__job_map(c, root, "", key, 0);
    if (!m)
        return NULL;
    eddy__job_join(p, sizeof(p), "", key);
    eddy__job_keys(c, m, p, !cfg ? only_jsonl : allow_stdout ? with_stdout : with_fluss);
    if (!!json_object_get(m, "jsonl") + !!json_object_get(m, "stdout") +
            !!json_object_get(m, "fluss") >
        1) {
        eddy__job_err(c, p, 1, "give one of %s, not several",
                      !cfg           ? "jsonl"
                      : allow_stdout ? "jsonl, stdout or fluss"
                                     : "jsonl or fluss");
        return NULL;
    }
    if (cfg && json_object_get(m, "fluss")) {
        *cfg = get_fluss(c, m, p, !allow_stdout);
        return NULL;
    }
    if (allow_stdout && json_object_get(m, "stdout")) {
        if (!eddy__job_bool(c, m, p, "stdout", 0)) {
            eddy__job_join(jp, sizeof(jp), p, "stdout");
            eddy__job_err(c, jp, 0, "'stdout' can only be true (or give 'jsonl: FILE')");
        }
        return NULL; /* a NULL sink is stdout */
    }
    rel = eddy__job_str(c, m, p, "jsonl", S_REQ, NULL);
    eddy__job_join(jp, sizeof(jp), p, "jsonl");
    abs = eddy_job_path(c->job, rel);
    if (abs)
        *where_out = eddy_strdup(WHERE(c, jp, 0));
    eddy_free(rel);
    return abs;
}

static void parse_backoff(vctx *c, json_t *retry, const char *path, eddy_llm_model *m)
{
    char p[512], lo[64];
    const char *s, *dots;
    json_t *x = json_object_get(retry, "backoff");
    double a, b;
    size_t n;
    if (!x)
        return;
    eddy__job_join(p, sizeof(p), path, "backoff");
    s = json_is_string(x) ? json_string_value(x) : "";
    dots = strstr(s, "..");
    n = dots ? (size_t)(dots - s) : 0;
    if (!dots || n >= sizeof(lo) || (memcpy(lo, s, n), lo[n] = '\0', eddy_parse_duration(lo, &a)) ||
        eddy_parse_duration(dots + 2, &b) || a > b) {
        eddy__job_err(c, p, 0, "'backoff' must look like 500ms..8s (first delay..largest delay)");
        return;
    }
    if (!(a >= 1 && b <= 3600000)) {
        eddy__job_err(c, p, 0, "'backoff' delays must be between 1ms and 1h");
        return;
    }
    m->backoff_base_ms = llround(a);
    m->backoff_cap_ms = llround(b);
}

/* A number member in [MIN, MAX]; DEF when absent. */
static double get_number(vctx *c, json_t *v, const char *path, const char *key, double def,
                         double min, double max)
{
    char p[512];
    json_t *x = json_object_get(v, key);
    if (!x || json_is_null(x))
        return def;
    eddy__job_join(p, sizeof(p), path, key);
    if (!json_is_number(x)) {
        eddy__job_err(c, p, 0, "'%s' must be a number, not %s", key, eddy__job_type(x));
        return def;
    }
    if (!(json_number_value(x) >= min && json_number_value(x) <= max)) {
        eddy__job_err(c, p, 0, "'%s' must be between %g and %g", key, min, max);
        return def;
    }
    return json_number_value(x);
}

/* The key in FILE (relative to the job's folder): its first line, trimmed.
 * Messages name the file, never its content. */
/* Whether S has a byte that cannot go into an HTTP header (a control
 * character: CR and LF would start another header). */
static int has_control(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Drop the whitespace (line ends included) around a key from the
 * environment or a file. */
static void trim_key(char *k)
{
    size_t n = strlen(k), b = 0;
    while (n && (k[n - 1] == '\n' || k[n - 1] == '\r' || k[n - 1] == ' ' || k[n - 1] == '\t'))
        k[--n] = '\0';
    while (k[b] == ' ' || k[b] == '\t')
        b++;
    memmove(k, k + b, n - b + 1);
}

/* The key in FILE (relative to the job's folder): its first line, trimmed.
 * Messages name the file, never its content. A file that is not a regular
 * file is refused without being opened for reading (a FIFO would block). */
static char *read_key_file(vctx *c, const char *path, const char *rel)
{
    char p[512], *abs = eddy_job_path(c->job, rel), *key = NULL, buf[4097];
    struct stat st;
    eddy__job_join(p, sizeof(p), path, "api_key_file");
    int fd = abs ? open(abs, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) : -1;
    if (fd < 0) {
        eddy__job_err(c, p, 0, "cannot read the key file '%s': %s", rel, strerror(errno));
        eddy_free(abs);
        return NULL;
    }
    eddy_free(abs);
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        eddy__job_err(c, p, 0, "the key file '%s' is %s, not a regular file", rel,
                      S_ISDIR(st.st_mode)    ? "a folder"
                      : S_ISFIFO(st.st_mode) ? "a FIFO"
                                             : "a special file");
        close(fd);
        return NULL;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        eddy__job_err(c, p, 0, "cannot read the key file '%s': %s", rel, strerror(errno));
        return NULL;
    }
    buf[n] = '\0';
    char *nl = memchr(buf, '\n', (size_t)n);
    size_t line = nl ? (size_t)(nl - buf) : (size_t)n;
    if (!nl && n == (ssize_t)sizeof(buf) - 1)
        eddy__job_err(c, p, 0, "the first line of the key file '%s' is longer than 4 KiB", rel);
    else if (memchr(buf, '\0', line))
        eddy__job_err(c, p, 0, "the key in the key file '%s' contains a NUL byte", rel);
    else {
        buf[line] = '\0';
        trim_key(buf);
        if (!*buf)
            eddy__job_err(c, p, 0, "the key file '%s' is empty (no key on its first line)", rel);
        else if (has_control(buf))
            eddy__job_err(c, p, 0,
                          "the key in the key file '%s' contains a control character: it "
                          "cannot be sent in a header",
                          rel);
        else
            key = eddy_strdup(buf);
    }
    memset(buf, 0, sizeof(buf));
    return key;
}

static void load_model(vctx *c, const char *name, json_t *v, const char *path, eddy_llm_model *m)
{
    static const char *const keys[] = {
        "provider",     "base_url",        "api_key", "api_key_file",
        "model",        "timeout",         "retry",   "limits",
        "max_tokens",   "temperature",     "stream",  "first_token_timeout",
        "idle_timeout", "connect_timeout", "price",   "fallback",
        "prompt_cache", "api_version",     NULL};
    static const char *const retry_keys[] = {"attempts", "backoff", "max_wait", "unavailable",
                                             NULL};
    static const char *const limit_keys[] = {"concurrency", "requests_per_minute",
                                             "tokens_per_minute", NULL};
    static const char *const price_keys[] = {"input", "output", "cached_input", NULL};
    char p[512];
    json_t *x;
    m->name = eddy_strdup(name);
    if (!*name)
        eddy__job_err(c, path, 1, "a model name must not be empty");
    if (!json_is_object(v)) {
        eddy__job_err(c, path, 0, "model '%s' must be a mapping, not %s", name, eddy__job_type(v));
        return;
    }
    eddy__job_keys(c, v, path, keys);
    m->provider = eddy__job_str(c, v, path, "provider", S_NONEMPTY, "openai");
    if (m->provider && !(m->prov = eddy_llm_provider_find(m->provider))) {
        eddy__job_join(p, sizeof(p), path, "provider");
        eddy__job_err(c, p, 0,
                      "provider '%s' is not supported (expected one of %s; 'openai' is any "
                      "OpenAI-compatible chat completions endpoint: vLLM, llama.cpp, LM Studio, "
                      "Ollama's /v1)",
                      m->provider, eddy_llm_provider_names());
    }
    m->base_url = eddy__job_str(c, v, path, "base_url", S_REQ, NULL);
    if (m->base_url && strncmp(m->base_url, "http://", 7) && strncmp(m->base_url, "https://", 8)) {
        eddy__job_join(p, sizeof(p), path, "base_url");
        eddy__job_err(c, p, 0, "'base_url' must start with http:// or https://");
    }
    if (json_object_get(v, "api_key") && json_object_get(v, "api_key_file")) {
        eddy__job_join(p, sizeof(p), path, "api_key_file");
        eddy__job_err(c, p, 1, "give 'api_key' or 'api_key_file', not both");
    }
    m->api_key = eddy__job_str(c, v, path, "api_key", 0, NULL);
    if (m->api_key) { /* ${KEY} from a file or a shell often ends with a newline */
        trim_key(m->api_key);
        if (has_control(m->api_key)) {
            eddy__job_join(p, sizeof(p), path, "api_key");
            eddy__job_err(c, p, 0,
                          "'api_key' contains a control character (a line break?): it cannot "
                          "be sent in a header");
            memset(m->api_key, 0, strlen(m->api_key));
            eddy_free(m->api_key);
            m->api_key = NULL;
        }
    }
    char *kf = eddy__job_str(c, v, path, "api_key_file", S_NONEMPTY, NULL);
    if (kf && !m->api_key)
        m->api_key = read_key_file(c, path, kf);
    eddy_free(kf);
    m->api_version = eddy__job_str(c, v, path, "api_version", S_NONEMPTY, NULL);
    m->model = eddy__job_str(c, v, path, "model", S_REQ, NULL);
    static const char *const header_keys[] = {"api_version", "model", "base_url", NULL};
    const char *header_vals[] = {m->api_version, m->model, m->base_url};
    for (int i = 0; header_keys[i]; i++)
        if (has_control(header_vals[i])) {
            eddy__job_join(p, sizeof(p), path, header_keys[i]);
            eddy__job_err(c, p, 0, "'%s' contains a control character (a line break?)",
                          header_keys[i]);
        }
    m->timeout_ms = eddy__job_duration(c, v, path, "timeout", 60000, 1, MS_DAY);
    m->connect_timeout_ms = eddy__job_duration(c, v, path, "connect_timeout", 0, 1, MS_DAY);
    m->stream = eddy__job_bool(c, v, path, "stream", 0);
    m->first_token_timeout_ms = eddy__job_duration(c, v, path, "first_token_timeout", 0, 1, MS_DAY);
    m->idle_timeout_ms = eddy__job_duration(c, v, path, "idle_timeout", 0, 1, MS_DAY);
    m->prompt_cache = eddy__job_bool(c, v, path, "prompt_cache",
                                     m->provider && !strcmp(m->provider, "anthropic"));
    m->max_attempts = 5;
    m->backoff_base_ms = 500;
    m->backoff_cap_ms = 8000;
    m->max_wait_ms = 60000;
    m->unavailable_ms = 30000;
    if ((x = eddy__job_map(c, v, path, "retry", 0))) {
        eddy__job_join(p, sizeof(p), path, "retry");
        eddy__job_keys(c, x, p, retry_keys);
        m->max_attempts = (int)eddy__job_int(c, x, p, "attempts", 5, 1, 100);
        parse_backoff(c, x, p, m);
        m->max_wait_ms = eddy__job_duration(c, x, p, "max_wait", 60000, 0, MS_DAY);
        m->unavailable_ms = eddy__job_duration(c, x, p, "unavailable", 30000, 0, MS_DAY);
    }
    m->concurrency = 64;
    if ((x = eddy__job_map(c, v, path, "limits", 0))) {
        eddy__job_join(p, sizeof(p), path, "limits");
        eddy__job_keys(c, x, p, limit_keys);
        m->concurrency = (int)eddy__job_int(c, x, p, "concurrency", 64, 1, 100000);
        m->requests_per_minute = get_number(c, x, p, "requests_per_minute", 0, 0.001, 1e9);
        m->tokens_per_minute = get_number(c, x, p, "tokens_per_minute", 0, 1, 1e12);
    }
    if ((x = eddy__job_map(c, v, path, "price", 0))) {
        eddy__job_join(p, sizeof(p), path, "price");
        eddy__job_keys(c, x, p, price_keys);
        m->price_input = get_number(c, x, p, "input", 0, 0, 1e6);
        m->price_output = get_number(c, x, p, "output", 0, 0, 1e6);
        m->price_cached_input = get_number(c, x, p, "cached_input", m->price_input, 0, 1e6);
        m->has_price = 1;
    }
    m->max_tokens = (long)eddy__job_int(c, v, path, "max_tokens", 0, 1, 10000000);
    if ((x = json_object_get(v, "temperature")) && !json_is_null(x)) {
        eddy__job_join(p, sizeof(p), path, "temperature");
        if (!json_is_number(x))
            eddy__job_err(c, p, 0, "'temperature' must be a number, not %s", eddy__job_type(x));
        else if (!(json_number_value(x) >= 0 && json_number_value(x) <= 2))
            eddy__job_err(c, p, 0, "'temperature' must be between 0 and 2");
        else {
            m->temperature = json_number_value(x);
            m->has_temperature = 1;
        }
    }
}

/* `fallback: [other, ...]` of every model, once all are loaded. */
static void link_fallbacks(vctx *c, json_t *models)
{
    for (size_t i = 0; i < c->job->nmodels; i++) {
        eddy_llm_model *m = &c->job->models[i];
        json_t *f = json_object_get(json_object_get(models, m->name), "fallback");
        char p[512];
        if (!f || json_is_null(f))
            continue;
        char mp[512];
        eddy__job_join(mp, sizeof(mp), "/models", m->name);
        eddy__job_join(p, sizeof(p), mp, "fallback");
        if (json_is_string(f)) {
            json_t *one = json_pack("[O]", f);
            json_object_set_new(json_object_get(models, m->name), "fallback", one);
            f = one;
        }
        if (!json_is_array(f)) {
            eddy__job_err(c, p, 0, "'fallback' must be a list of model names, not %s",
                          eddy__job_type(f));
            continue;
        }
        m->fallback = eddy_calloc(json_array_size(f) + 1, sizeof(*m->fallback));
        for (size_t k = 0; m->fallback && k < json_array_size(f); k++) {
            const char *n = json_string_value(json_array_get(f, k));
            char ip[600];
            eddy_llm_model *t = NULL;
            snprintf(ip, sizeof(ip), "%s/%zu", p, k);
            for (size_t j = 0; n && j < c->job->nmodels; j++)
                if (c->job->models[j].name && !strcmp(c->job->models[j].name, n))
                    t = &c->job->models[j];
            if (!n)
                eddy__job_err(c, ip, 0, "a fallback must be a model name");
            else if (!t)
                eddy__job_err(c, ip, 0, "fallback '%s' is not a model defined under 'models'", n);
            else if (t == m)
                eddy__job_err(c, ip, 0, "model '%s' cannot fall back to itself", n);
            else {
                int dup = 0;
                for (size_t j = 0; j < m->nfallback; j++)
                    dup |= m->fallback[j] == t;
                if (dup)
                    eddy__job_err(c, ip, 0, "fallback '%s' is listed twice", n);
                else
                    m->fallback[m->nfallback++] = t;
            }
        }
    }
}

static const char *const template_roots[] = {"event", "memory", "key", "agent", NULL};

/* Compile a prompt given inline (KEY) or as a file (KEY_file); for a file,
 * *FILE and *FILE_WHERE get its resolved path and the place it was given. */
static eddy_template *load_prompt(vctx *c, json_t *pr, const char *path, const char *key,
                                  const char *def, char **file_out, char **file_where)
{
    char p[512], fkey[64], where[512];
    eddy_template *t = NULL;
    eddy_err e;
    json_t *inl = json_object_get(pr, key), *file;
    snprintf(fkey, sizeof(fkey), "%s_file", key);
    file = json_object_get(pr, fkey);
    if (inl && file) {
        eddy__job_join(p, sizeof(p), path, fkey);
        eddy__job_err(c, p, 1, "give either '%s' or '%s', not both", key, fkey);
        return NULL;
    }
    if (file) {
        char *rel = eddy__job_str(c, pr, path, fkey, S_REQ, NULL),
             *abs = eddy_job_path(c->job, rel);
        char *text = NULL;
        size_t len = 0;
        struct stat st;
        eddy__job_join(p, sizeof(p), path, fkey);
        if (abs) {
            *file_out = eddy_strdup(abs);
            *file_where = eddy_strdup(WHERE(c, p, 0));
        }
        if (abs && stat(abs, &st) == 0 && !S_ISREG(st.st_mode)) /* a FIFO would hang us */
            eddy__job_err(c, p, 0, "prompt file '%s' cannot be read: it is not a regular file",
                          rel);
        else if (abs && eddy_read_file(abs, &text, &len, &e))
            eddy__job_err(c, p, 0, "prompt file '%s' cannot be read: %s", rel, e.msg);
        else if (text && strlen(text) < len) /* the prompt would end there */
            eddy__job_err(c, p, 0,
                          "prompt file '%s' has a NUL byte (at byte %zu): a prompt is text", rel,
                          strlen(text));
        else if (text && eddy_template_new(text, rel, 1, 1, &t, &e))
            eddy_diag_add(c->diag, "%s (%s given at %s)", e.msg, fkey, WHERE(c, p, 0)), c->errors++;
        eddy_free(text);
        eddy_free(rel);
        eddy_free(abs);
    } else if (inl || def) {
        const char *src = def;
        int line = 1, col = 1;
        eddy__job_join(p, sizeof(p), path, key);
        if (inl && !json_is_string(inl) && !eddy__job_env_text(c, p)) {
            eddy__job_err(c, p, 0, "'%s' must be a string, not %s", key, eddy__job_type(inl));
            return NULL;
        }
        if (inl) {
            json_t *pos = json_object_get(c->doc->pos, p);
            src = eddy__job_env_text(c, p) ? eddy__job_env_text(c, p) : json_string_value(inl);
            if (!*src && !strcmp(key, "user")) {
                eddy__job_err(c, p, 0, "'%s' must not be empty", key);
                return NULL;
            }
            line = (int)json_integer_value(json_array_get(pos, 0));
            col = (int)json_integer_value(json_array_get(pos, 1));
        }
        snprintf(where, sizeof(where), "%s", c->doc->file);
        if (eddy_template_new(src, where, line, col, &t, &e))
            eddy_diag_add(c->diag, "%s", e.msg), c->errors++;
    }
    for (size_t i = 0; t && i < eddy_template_nvars(t); i++) {
        int line, col;
        const char *var = eddy_template_var(t, i, NULL, &line, &col);
        size_t r, n = strcspn(var, ".");
        for (r = 0; template_roots[r]; r++)
            if (strlen(template_roots[r]) == n && !strncmp(var, template_roots[r], n))
                break;
        if (!template_roots[r]) {
            eddy_diag_add(c->diag,
                          "%s:%d:%d: unknown template variable '%s' (it must start "
                          "with event., memory., key or agent)",
                          eddy_template_origin(t), line, col, var);
            c->errors++;
        }
    }
    return t;
}

/* The loaded tools of every agent, as a run holds them: one host. */
typedef struct toolset {
    uv_loop_t *loop;
    eddy_tools *host;
    eddy_tool ***loaded; /* [agent][tool], NULL where a load failed */
} toolset;

/* The name of the tool file R, loaded alone into a scratch host (to name
 * the other side of a name clash). New string, or NULL. */
static char *tool_name_alone(vctx *c, toolset *ts, const eddy_tool_ref *r)
{
    eddy_tools *h = NULL;
    eddy_tool *t;
    eddy_err e;
    char *name = NULL;
    if (!r->path || eddy_tools_new(ts->loop, c->job->dir, &h, &e))
        return NULL;
    eddy_tools_configure(h, c->job->modules);
    eddy_tool_opts o;
    eddy_tool_ref_opts(r, &o);
    if (eddy_tools_load_opts(h, r->path, &o, &t, &e) == 0)
        name = eddy_strdup(eddy_tool_name(t));
    eddy_tools_close(h);
    uv_run(ts->loop, UV_RUN_DEFAULT);
    eddy_tools_free(h);
    return name;
}

static const char *ref_what(const eddy_tool_ref *r)
{
    return r->path ? r->path : r->kind;
}

/* Tool J of agent I was refused because another tool of the job has its
 * name: say where both are listed. */
static void report_clash(vctx *c, toolset *ts, size_t ai, size_t j, const eddy_err *e)
{
    const eddy_tool_ref *r = &c->job->agents[ai].tools[j];
    char *name = tool_name_alone(c, ts, r);
    for (size_t i = 0; name && i <= ai; i++) {
        const eddy_agent_def *a = &c->job->agents[i];
        for (size_t k = 0; k < (i == ai ? j : a->ntools); k++) {
            const eddy_tool_ref *o = &a->tools[k];
            if (!ts->loaded[i][k] || strcmp(eddy_tool_name(ts->loaded[i][k]), name))
                continue;
            if (i == ai && eddy_tool_ref_same(o, r))
                eddy_diag_add(c->diag, "%s: agent '%s' lists tool '%s' (%s) twice: also at %s",
                              r->where, a->name, name, ref_what(r), o->where);
            else if (i == ai)
                eddy_diag_add(c->diag,
                              "%s: agent '%s' lists two tools named '%s': %s here and %s at %s",
                              r->where, a->name, name, ref_what(r), ref_what(o), o->where);
            else if (eddy_tool_ref_same(o, r))
                eddy_diag_add(c->diag,
                              "%s: tool '%s' (%s) is also listed at %s (agent '%s'), and the "
                              "job's one tool host does not load a file twice",
                              r->where, name, ref_what(r), o->where, a->name);
            else
                eddy_diag_add(c->diag,
                              "%s: tool '%s' (%s) has the name of the tool listed at %s (%s, "
                              "agent '%s'): the agents of a job share one tool host, where "
                              "names are unique%s",
                              r->where, name, ref_what(r), o->where, ref_what(o), a->name,
                              o->path && !strcmp(o->path, r->path)
                                  ? " (the same file with other limits or config is another tool)"
                                  : "");
            c->errors++;
            eddy_free(name);
            return;
        }
    }
    eddy_free(name);
    eddy_diag_add(c->diag, "%s (tool listed at %s)", e->msg, r->where);
    c->errors++;
}

/* Tool J of agent I has loaded as T: the model would see a name twice if
 * an earlier entry of the same agent gave a tool of that name. */
static void check_unique(vctx *c, toolset *ts, size_t ai, size_t j)
{
    const eddy_agent_def *a = &c->job->agents[ai];
    const eddy_tool *t = ts->loaded[ai][j];
    for (size_t k = 0; k < j; k++) {
        const eddy_tool *o = ts->loaded[ai][k];
        if (!o || strcmp(eddy_tool_name(o), eddy_tool_name(t)))
            continue;
        if (o == t)
            eddy_diag_add(c->diag, "%s: agent '%s' lists tool '%s' (%s) twice: also at %s",
                          a->tools[j].where, a->name, eddy_tool_name(t), ref_what(&a->tools[j]),
                          a->tools[k].where);
        else
            eddy_diag_add(c->diag,
                          "%s: agent '%s' lists two tools named '%s': %s here and %s at %s",
                          a->tools[j].where, a->name, eddy_tool_name(t), ref_what(&a->tools[j]),
                          ref_what(&a->tools[k]), a->tools[k].where);
        c->errors++;
        return;
    }
}

static void load_one(vctx *c, toolset *ts, size_t ai, size_t j)
{
    eddy_tool_ref *r = &c->job->agents[ai].tools[j];
    eddy_tool *t = NULL;
    eddy_err e;
    struct stat st;
    int rc;
    if (r->path && stat(r->path, &st) == 0 && !S_ISREG(st.st_mode)) { /* a FIFO would hang us */
        eddy_diag_add(c->diag, "%s: tool file '%s' is not a regular file", r->where, r->path);
        c->errors++;
        return;
    }
    eddy_tool_opts o;
    if (r->mcp_server) /* its tools are the server's, listed as the job runs */
        return;
    /* the text checked here is the text every worker runs (read once) */
    if (r->path && !r->source && eddy_read_file(r->path, &r->source, &r->source_len, &e)) {
        eddy_diag_add(c->diag, "%s (tool listed at %s)", e.msg, r->where);
        c->errors++;
        return;
    }
    eddy_tool_ref_opts(r, &o);
    rc = r->path ? eddy_tools_load_opts(ts->host, r->path, &o, &t, &e)
                 : eddy_tools_load_native(ts->host, r->kind, r->cfg, &t, &e);
    if (rc == 0) {
        ts->loaded[ai][j] = t;
        check_unique(c, ts, ai, j);
    } else if (rc == EDDY_EEXIST && r->path) {
        report_clash(c, ts, ai, j, &e);
    } else {
        if (r->path)
            eddy_diag_add(c->diag, "%s (tool listed at %s)", e.msg, r->where);
        else
            eddy_diag_add(c->diag, "%s: %s: %s", r->where, r->kind, e.msg);
        c->errors++;
    }
}

/* Load the tools of every agent, in order, into one throwaway host, with
 * the limits of their entries: what the worker does at start (one host per
 * worker loop), so a tool list that loads here loads there. Each problem is
 * reported with the place the tool is listed. */
static void check_tools(vctx *c, uv_loop_t *given)
{
    uv_loop_t own, *lp = given ? given : &own;
    toolset ts = {lp, NULL, NULL};
    eddy_err e;
    if (!given && uv_loop_init(&own))
        return;
    ts.loaded = eddy_calloc(c->job->nagents + 1, sizeof(*ts.loaded));
    for (size_t i = 0; ts.loaded && i < c->job->nagents; i++)
        ts.loaded[i] = eddy_calloc(c->job->agents[i].ntools + 1, sizeof(eddy_tool *));
    if (!ts.loaded) {
        eddy_diag_add(c->diag, "%s: out of memory", c->job->file);
        c->errors++;
    } else if (eddy_tools_new(lp, c->job->dir, &ts.host, &e) == 0) {
        eddy_tools_configure(ts.host, c->job->modules);
        for (size_t i = 0; i < c->job->nagents; i++)
            for (size_t j = 0; ts.loaded[i] && j < c->job->agents[i].ntools; j++)
                load_one(c, &ts, i, j);
        for (size_t i = 0; i < c->job->nagents; i++) { /* tool_choice names one of them */
            eddy_agent_def *a = &c->job->agents[i];
            int found = 0;
            char p[600];
            if (a->tool_choice != EDDY_TOOL_CHOICE_TOOL || !a->tool_choice_name)
                continue;
            for (size_t j = 0; ts.loaded[i] && j < a->ntools; j++)
                found |= (ts.loaded[i][j] &&
                          !strcmp(eddy_tool_name(ts.loaded[i][j]), a->tool_choice_name)) ||
                         a->tools[j].mcp_server; /* an MCP server's tools are known later */
            char ap[512];
            eddy__job_join(ap, sizeof(ap), "/agents", a->name);
            eddy__job_join(p, sizeof(p), ap, "tool_choice");
            if (!found)
                eddy__job_err(c, p, 0,
                              "tool_choice '%s' is none of auto, required, none or a tool of "
                              "agent '%s'",
                              a->tool_choice_name, a->name);
        }
        eddy_tools_close(ts.host);
        uv_run(lp, UV_RUN_DEFAULT);
        eddy_tools_free(ts.host);
    } else {
        eddy_diag_add(c->diag, "%s", e.msg);
        c->errors++;
    }
    for (size_t i = 0; ts.loaded && i < c->job->nagents; i++)
        eddy_free(ts.loaded[i]);
    eddy_free(ts.loaded);
    if (!given)
        uv_loop_close(&own);
}

void eddy__tool_ref_clear(eddy_tool_ref *r)
{
    eddy_free(r->path);
    eddy_free(r->kind);
    json_decref(r->cfg);
    eddy_free(r->where);
    json_decref(r->config);
    json_decref(r->http);
    eddy_free(r->mcp_server);
    eddy_free(r->mcp_tool);
    eddy_free(r->source);
    for (size_t i = 0; i < r->nsecrets; i++)
        eddy_free(r->secrets[i]);
    eddy_free(r->secrets);
    memset(r, 0, sizeof(*r));
}

void eddy_tool_ref_opts(const eddy_tool_ref *r, eddy_tool_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->limits = r->limits;
    o->config = r->config;
    o->http = r->http;
    o->secrets = (const char *const *)r->secrets;
    o->nsecrets = r->nsecrets;
    o->source = r->source;
    o->source_len = r->source_len;
}

int eddy_tool_ref_same(const eddy_tool_ref *a, const eddy_tool_ref *b)
{
    return a->path && b->path && !strcmp(a->path, b->path) &&
           !memcmp(&a->limits, &b->limits, sizeof(a->limits)) &&
           eddy_json_same(a->config, b->config) && eddy_json_same(a->http, b->http);
}

/* `limits:` of a Lua tool entry: budgets of each call (0 = the default). */
static void load_limits(vctx *c, json_t *entry, const char *path, eddy_tool_limits *l)
{
    static const char *const keys[] = {"instructions", "memory", "wall", NULL};
    char p[600];
    json_t *x = eddy__job_map(c, entry, path, "limits", 0);
    if (!x)
        return;
    eddy__job_join(p, sizeof(p), path, "limits");
    eddy__job_keys(c, x, p, keys);
    l->instructions = eddy__job_int(c, x, p, "instructions", 0, 1, EDDY_TOOL_MAX_INSTRUCTIONS);
    l->memory = eddy__job_size(c, x, p, "memory", 0, 1, EDDY_TOOL_MAX_MEMORY);
    l->wall_ms = eddy__job_duration(c, x, p, "wall", 0, 1, EDDY_TOOL_MAX_WALL_MS);
}

/* Add S to the strings of *LIST (unless it is there or too short). */
static void add_secret(char ***list, size_t *n, const char *s)
{
    char **grown;
    if (strlen(s) < EDDY_JOB_SECRET_MIN)
        return;
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*list)[i], s))
            return;
    if (!(grown = eddy_realloc(*list, (*n + 1) * sizeof(char *))))
        return;
    *list = grown;
    if ((grown[*n] = eddy_strdup(s)))
        (*n)++;
}

/* The values the environment gave the scalars of V (at PATH, and below):
 * into R's secrets when R, and the job's. */
static void collect_secrets(vctx *c, json_t *v, const char *path, eddy_tool_ref *r)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            /* the whole path, however long: a cut one finds no position */
            size_t n = strlen(path) + 2 * strlen(k) + 5;
            char *p = eddy_malloc(n);
            if (!p)
                return;
            eddy__job_join(p, n, path, k);
            collect_secrets(c, x, p, r);
            eddy_free(p);
        }
    } else if (json_is_array(v)) {
        size_t n = strlen(path) + 24;
        char *p = eddy_malloc(n);
        if (!p)
            return;
        for (size_t i = 0; i < json_array_size(v); i++) {
            snprintf(p, n, "%s/%zu", path, i);
            collect_secrets(c, json_array_get(v, i), p, r);
        }
        eddy_free(p);
    } else {
        json_t *used = eddy__job_env_values(c, path);
        for (size_t i = 0; i < json_array_size(used); i++) {
            const char *s = json_string_value(json_array_get(used, i));
            if (!s)
                continue;
            if (r)
                add_secret(&r->secrets, &r->nsecrets, s);
            add_secret(&c->job->secrets, &c->job->nsecrets, s);
        }
    }
}

/* One `allow:` entry of a tool's http settings, parsed as eddy.http does:
 * {host, port} (port 0: any), or NULL (reported at P). */
static json_t *allow_entry(vctx *c, json_t *v, const char *p)
{
    const char *s = json_string_value(v);
    eddy_err e;
    json_t *out;
    if (!s || !*s) {
        eddy__job_err(c, p, 0,
                      "an http.allow entry must be a host or host:port (such as "
                      "'orders.internal:443'), not %s",
                      s ? "an empty string" : eddy__job_type(v));
        return NULL;
    }
    if (!(out = eddy_http_allow_entry(s, &e)))
        eddy__job_err(c, p, 0, "http.%s", e.msg);
    return out;
}

/* `http:` of a Lua tool entry: what eddy.http may reach. Normalized to
 * {allow: [{host, port}], max_redirects, max_response, timeout_ms}. */
static json_t *load_http(vctx *c, json_t *entry, const char *path)
{
    static const char *const keys[] = {"allow", "max_redirects", "max_response", "timeout", NULL};
    char p[600], ip[640];
    json_t *x = eddy__job_map(c, entry, path, "http", 0), *allow, *out, *list;
    if (!x)
        return NULL;
    eddy__job_join(p, sizeof(p), path, "http");
    eddy__job_keys(c, x, p, keys);
    allow = json_object_get(x, "allow");
    if (allow && !json_is_array(allow)) {
        eddy__job_join(ip, sizeof(ip), p, "allow");
        eddy__job_err(c, ip, 0, "'allow' must be a list of hosts (host or host:port), not %s",
                      eddy__job_type(allow));
        allow = NULL;
    }
    if (!(list = json_array()))
        return NULL;
    for (size_t i = 0; i < json_array_size(allow); i++) {
        json_t *e;
        snprintf(ip, sizeof(ip), "%s/allow/%zu", p, i);
        if ((e = allow_entry(c, json_array_get(allow, i), ip)))
            json_array_append_new(list, e);
    }
    out = json_pack("{s:o, s:I, s:I, s:I}", "allow", list, "max_redirects",
                    (json_int_t)eddy__job_int(c, x, p, "max_redirects", 5, 0, 20), "max_response",
                    (json_int_t)eddy__job_size(c, x, p, "max_response", 10LL << 20, 1, 1LL << 30),
                    "timeout_ms",
                    (json_int_t)eddy__job_duration(c, x, p, "timeout", 30000, 1, MS_DAY));
    return out;
}

/* One entry of a tool list: `tools/x.lua`, `{lua: tools/x.lua, limits:
 * {...}, config: {...}, http: {...}, timeout: 5s}` or a native tool `{KIND:
 * {settings}}`. Returns 0 when R is filled. */
static int load_tool_entry(vctx *c, json_t *t, const char *tp, eddy_tool_ref *r)
{
    static const char *const long_keys[] = {"lua", "limits", "config", "http", "timeout", NULL};
    char where[512];
    const char *kind = NULL;
    json_t *cfg = NULL;
    char *rel;
    if (json_is_object(t) && json_object_size(t) == 1 && !json_object_get(t, "lua"))
        json_object_foreach(t, kind, cfg) break;
    if (kind && !strcmp(kind, "mcp")) {
        char kp[600];
        const char *v = json_string_value(cfg), *slash;
        eddy__job_join(kp, sizeof(kp), tp, "mcp");
        if (!v || !*v) {
            eddy__job_err(c, kp, 0,
                          "'mcp' names a server of the job's mcp: section ('mcp: files') or one "
                          "of its tools ('mcp: files/read_file'), not %s",
                          v ? "an empty string" : eddy__job_type(cfg));
            return -1;
        }
        slash = strchr(v, '/');
        r->mcp_server = slash ? eddy_strndup(v, (size_t)(slash - v)) : eddy_strdup(v);
        r->mcp_tool = slash && slash[1] ? eddy_strdup(slash + 1) : NULL;
        if (slash && !slash[1]) {
            eddy__job_err(c, kp, 0, "'%s': a tool name must follow the '/'", v);
            return -1;
        }
        if (!json_object_get(c->job->mcp, r->mcp_server)) {
            eddy__job_err(c, kp, 0, "no MCP server '%s' in the job's mcp: section%s", r->mcp_server,
                          json_object_size(c->job->mcp) ? "" : " (the job has none)");
            return -1;
        }
    } else if (kind && json_is_object(cfg)) {
        if (!eddy_tools_has_kind(kind)) {
            static const char *const kinds[] = {"fluss_lookup", "http_request", "current_time"};
            char have[128] = "";
            for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
                if (eddy_tools_has_kind(kinds[i]))
                    snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%s",
                             have[0] ? ", " : "", kinds[i]);
            eddy__job_err(c, tp, 0, "unknown tool kind '%s' (this eddy has %s)", kind,
                          have[0] ? have : "no native tools");
            return -1;
        }
        r->kind = eddy_strdup(kind);
        r->cfg = json_incref(cfg);
        char kp[600];
        eddy__job_join(kp, sizeof(kp), tp, kind);
        collect_secrets(c, cfg, kp, NULL);
    } else if (json_is_object(t)) {
        json_t *cfgv;
        char p[600];
        eddy__job_keys(c, t, tp, long_keys);
        if (!(rel = eddy__job_str(c, t, tp, "lua", S_REQ, NULL)))
            return -1;
        r->path = eddy_job_path(c->job, rel);
        eddy_free(rel);
        load_limits(c, t, tp, &r->limits);
        if (json_object_get(t, "timeout")) {
            eddy__job_join(p, sizeof(p), tp, "timeout");
            if (r->limits.wall_ms)
                eddy__job_err(c, p, 0,
                              "give the tool's wall-clock budget once: 'timeout' or "
                              "'limits.wall', not both");
            r->limits.wall_ms =
                eddy__job_duration(c, t, tp, "timeout", 0, 1, EDDY_TOOL_MAX_WALL_MS);
        }
        if ((cfgv = eddy__job_map(c, t, tp, "config", 0))) {
            eddy__job_join(p, sizeof(p), tp, "config");
            r->config = json_incref(cfgv);
            collect_secrets(c, cfgv, p, r);
        }
        r->http = load_http(c, t, tp);
    } else if (json_is_string(t) || eddy__job_env_text(c, tp)) {
        const char *s =
            eddy__job_env_text(c, tp) ? eddy__job_env_text(c, tp) : json_string_value(t);
        if (!*s) {
            eddy__job_err(c, tp, 0, "a tool path must not be empty");
            return -1;
        }
        r->path = eddy_job_path(c->job, s);
    } else {
        eddy__job_err(c, tp, 0,
                      "a tool must be the path of a Lua file, '{lua: FILE, config: {...}, limits: "
                      "{...}}' or a native "
                      "tool such as 'fluss_lookup: {table: db.customers}', not %s",
                      eddy__job_type(t));
        return -1;
    }
    r->where = eddy_strdup(WHERE(c, tp, 0));
    return 0;
}

/* tools: a list of Lua files and native tools. */
static void load_tools(vctx *c, eddy_agent_def *a, json_t *x, const char *p)
{
    if (!json_is_array(x)) {
        eddy__job_err(c, p, 0, "'tools' must be a list of Lua files and native tools, not %s",
                      eddy__job_type(x));
        return;
    }
    a->tools = eddy_calloc(json_array_size(x) + 1, sizeof(*a->tools));
    for (size_t i = 0; a->tools && i < json_array_size(x); i++) {
        char tp[512];
        eddy_tool_ref *r = &a->tools[a->ntools];
        snprintf(tp, sizeof(tp), "%s/%zu", p, i);
        if (load_tool_entry(c, json_array_get(x, i), tp, r) == 0) {
            a->ntools++;
        } else { /* partly filled: clear it for the next entry */
            eddy__tool_ref_clear(r);
        }
    }
}

/* `output_schema:` of a react action: a mapping, or a JSON / YAML file
 * relative to the job's folder. NULL when absent or wrong (reported). */
static json_t *load_output_schema(vctx *c, json_t *act, const char *path)
{
    char p[600], msg[512];
    json_t *x = json_object_get(act, "output_schema"), *schema = NULL;
    if (!x || json_is_null(x))
        return NULL;
    eddy__job_join(p, sizeof(p), path, "output_schema");
    if (json_is_object(x)) {
        schema = json_incref(x);
    } else if (json_is_string(x)) {
        const char *rel = json_string_value(x);
        char *abs = eddy_job_path(c->job, rel);
        size_t n = strlen(rel);
        if (n > 5 && (!strcmp(rel + n - 5, ".yaml") || !strcmp(rel + n - 4, ".yml"))) {
            eddy_yaml_doc d;
            eddy_diag dd = {0};
            memset(&d, 0, sizeof(d));
            if (abs && eddy_yaml_load(abs, &d, &dd) == 0) {
                schema = json_incref(d.root);
                eddy_yaml_doc_free(&d);
            } else {
                eddy_yaml_doc_free(&d);
                eddy__job_err(c, p, 0, "cannot read the schema file '%s': %s", rel,
                              dd.n ? dd.msgs[0] : "unreadable");
            }
            eddy_diag_free(&dd);
        } else {
            json_error_t je;
            schema = abs ? json_load_file(abs, 0, &je) : NULL;
            if (!schema)
                eddy__job_err(c, p, 0, "cannot read the schema file '%s': %s (line %d, column %d)",
                              rel, je.text, je.line, je.column);
        }
        eddy_free(abs);
    } else {
        eddy__job_err(c, p, 0,
                      "'output_schema' must be a JSON schema (a mapping) or a file, not %s",
                      eddy__job_type(x));
        return NULL;
    }
    if (schema && eddy_jschema_check(schema, msg, sizeof(msg))) {
        eddy__job_err(c, p, 0, "output_schema: %s", msg);
        json_decref(schema);
        schema = NULL;
    }
    return schema;
}

static void load_agent(vctx *c, const char *name, json_t *v, const char *path, eddy_agent_def *a)
{
    static const char *const keys[] = {"model",  "prompt",  "tools",       "memory",
                                       "budget", "actions", "tool_choice", NULL};
    static const char *const prompt_keys[] = {"system", "system_file", "user", "user_file", NULL};
    static const char *const mem_keys[] = {"history", NULL};
    static const char *const budget_keys[] = {"turns",      "tokens", "wall",
                                              "tool_calls", "cost",   NULL};
    static const char *const action_keys[] = {"on", "do", "output_schema", NULL};
    char p[512], *model;
    json_t *x;
    a->name = eddy_strdup(name);
    if (!*name)
        eddy__job_err(c, path, 1, "an agent name must not be empty");
    if (!json_is_object(v)) {
        eddy__job_err(c, path, 0, "agent '%s' must be a mapping, not %s", name, eddy__job_type(v));
        return;
    }
    eddy__job_keys(c, v, path, keys);
    model = eddy__job_str(c, v, path, "model", S_NONEMPTY,
                          c->job->nmodels == 1 ? c->job->models[0].name : "default");
    for (size_t i = 0; model && i < c->job->nmodels; i++)
        if (c->job->models[i].name && !strcmp(model, c->job->models[i].name))
            a->model = &c->job->models[i];
    if (model && !a->model && c->job->nmodels) {
        eddy_buf names;
        eddy_buf_init(&names);
        for (size_t i = 0; i < c->job->nmodels; i++)
            eddy_buf_printf(&names, "%s'%s'", i ? ", " : "", c->job->models[i].name);
        eddy__job_join(p, sizeof(p), path, "model");
        if (json_object_get(v, "model"))
            eddy__job_err(c, p, 0,
                          "agent '%s' uses model '%s', which is not defined under 'models' "
                          "(they are %s)",
                          name, model, names.data ? names.data : "");
        else /* "default" is only what an agent with no model: looks for */
            eddy__job_err(c, path, 1,
                          "agent '%s' must name its model with 'model:': the job has %zu "
                          "models (%s)",
                          name, c->job->nmodels, names.data ? names.data : "");
        eddy_buf_free(&names);
    }
    eddy_free(model);

    if ((x = eddy__job_map(c, v, path, "prompt", 1))) {
        eddy__job_join(p, sizeof(p), path, "prompt");
        eddy__job_keys(c, x, p, prompt_keys);
        a->system = load_prompt(c, x, p, "system", NULL, &a->prompt_file[0], &a->prompt_where[0]);
        if (!json_object_get(x, "user") && !json_object_get(x, "user_file"))
            eddy__job_err(c, p, 0,
                          "missing required key 'user' (or 'user_file'): the prompt for each "
                          "event, such as \"{{event.text}}\"");
        else
            a->user = load_prompt(c, x, p, "user", NULL, &a->prompt_file[1], &a->prompt_where[1]);
    }

    if ((x = eddy__job_member(c, v, path, "tools", 0))) {
        eddy__job_join(p, sizeof(p), path, "tools");
        load_tools(c, a, x, p);
    }

    a->history = 20;
    if ((x = eddy__job_map(c, v, path, "memory", 0))) {
        eddy__job_join(p, sizeof(p), path, "memory");
        eddy__job_keys(c, x, p, mem_keys);
        a->history = (int)eddy__job_int(c, x, p, "history", 20, 0, 100000);
    }
    a->budget_turns = 8;
    a->budget_wall_ms = 120000;
    a->budget_tool_calls = 32;
    if ((x = eddy__job_map(c, v, path, "budget", 0))) {
        eddy__job_join(p, sizeof(p), path, "budget");
        eddy__job_keys(c, x, p, budget_keys);
        a->budget_turns = (int)eddy__job_int(c, x, p, "turns", 8, 1, 1000);
        a->budget_tokens = eddy__job_int(c, x, p, "tokens", 0, 1, (long long)1 << 40);
        a->budget_wall_ms = eddy__job_duration(c, x, p, "wall", 120000, 1, 30 * MS_DAY);
        a->budget_tool_calls = (int)eddy__job_int(c, x, p, "tool_calls", 32, 0, 100000);
        a->budget_cost = get_number(c, x, p, "cost", 0, 1e-12, 1e9);
        if (json_object_get(x, "cost") && a->model && !a->model->has_price) {
            char cp[600];
            eddy__job_join(cp, sizeof(cp), p, "cost");
            eddy__job_err(c, cp, 0,
                          "a 'cost' budget needs a 'price' on model '%s' (input and output "
                          "per million tokens)",
                          a->model->name);
        }
    }
    char *tc = eddy__job_str(c, v, path, "tool_choice", S_NONEMPTY, NULL);
    if (tc) {
        if (!strcmp(tc, "auto"))
            a->tool_choice = EDDY_TOOL_CHOICE_AUTO;
        else if (!strcmp(tc, "required"))
            a->tool_choice = EDDY_TOOL_CHOICE_REQUIRED;
        else if (!strcmp(tc, "none"))
            a->tool_choice = EDDY_TOOL_CHOICE_NONE;
        else {
            a->tool_choice = EDDY_TOOL_CHOICE_TOOL;
            a->tool_choice_name = eddy_strdup(tc);
        }
        if (!a->ntools && (a->tool_choice == EDDY_TOOL_CHOICE_REQUIRED ||
                           a->tool_choice == EDDY_TOOL_CHOICE_TOOL)) {
            char tp[600];
            eddy__job_join(tp, sizeof(tp), path, "tool_choice");
            eddy__job_err(c, tp, 0, "tool_choice '%s' needs tools, and agent '%s' has none", tc,
                          name);
        }
        eddy_free(tc);
    }

    x = eddy__job_member(c, v, path, "actions", 0);
    a->on = eddy_calloc(x && json_is_array(x) ? json_array_size(x) + 1 : 2, sizeof(char *));
    a->output_schema =
        eddy_calloc(x && json_is_array(x) ? json_array_size(x) + 1 : 2, sizeof(json_t *));
    if (!a->on || !a->output_schema)
        return;
    if (!x) {
        a->on[a->non++] = eddy_strdup("input");
        return;
    }
    eddy__job_join(p, sizeof(p), path, "actions");
    if (!json_is_array(x)) {
        eddy__job_err(c, p, 0, "'actions' must be a list such as [{on: input, do: react}]");
        return;
    }
    for (size_t i = 0; i < json_array_size(x); i++) {
        json_t *act = json_array_get(x, i);
        char ap[512], *on, *d;
        snprintf(ap, sizeof(ap), "%s/%zu", p, i);
        if (!json_is_object(act)) {
            eddy__job_err(c, ap, 0, "an action must be a mapping such as {on: input, do: react}");
            continue;
        }
        eddy__job_keys(c, act, ap, action_keys);
        on = eddy__job_str(c, act, ap, "on", S_REQ, NULL);
        d = eddy__job_str(c, act, ap, "do", S_REQ, NULL);
        if (d && strcmp(d, "react")) {
            char dp[600];
            eddy__job_join(dp, sizeof(dp), ap, "do");
            eddy__job_err(c, dp, 0,
                          "action '%s' is not available in this version (expected 'react')", d);
        }
        if (on) {
            a->output_schema[a->non] = load_output_schema(c, act, ap);
            a->on[a->non++] = on;
        }
        eddy_free(d);
    }
}

static void load_section(vctx *c, json_t *root, const char *key)
{
    const char *name;
    json_t *v, *m = eddy__job_map(c, root, "", key, 1);
    size_t i = 0, n;
    if (!m)
        return;
    n = json_object_size(m);
    if (n == 0) {
        char p[128];
        snprintf(p, sizeof(p), "/%s", key);
        eddy__job_err(c, p, 0, "'%s' must define at least one entry", key);
        return;
    }
    if (!strcmp(key, "models"))
        c->job->models = eddy_calloc(n, sizeof(eddy_llm_model));
    else
        c->job->agents = eddy_calloc(n, sizeof(eddy_agent_def));
    if (!c->job->models && !c->job->agents)
        return;
    json_object_foreach(m, name, v)
    {
        char p[512];
        char kp[128];
        snprintf(kp, sizeof(kp), "/%s", key);
        eddy__job_join(p, sizeof(p), kp, name);
        if (!strcmp(key, "models"))
            load_model(c, name, v, p, &c->job->models[i]), c->job->nmodels = ++i;
        else
            load_agent(c, name, v, p, &c->job->agents[i]), c->job->nagents = ++i;
    }
}

char *eddy_job_dir_name(const char *name)
{
    eddy_buf b;
    size_t n = strlen(name), keep = n > 64 ? 64 : n;
    int changed = n > 64 || !n || !strcmp(name, ".") || !strcmp(name, "..");
    eddy_buf_init(&b);
    for (size_t i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)name[i];
        int ok = isalnum(ch) || ch == '.' || ch == '_' || ch == '-';
        changed |= !ok;
        eddy_buf_putc(&b, ok ? (char)ch : '_');
    }
    if (changed) /* "a b" and "a_b" must not share a folder */
        eddy_buf_printf(&b, "-%08x", (unsigned)(eddy_hash64(name, n) & 0xffffffffu));
    return eddy_buf_take(&b);
}

/* .eddy/<job>/FILE beside the job file: each job of a folder has its own. */
static char *default_path(eddy_job *job, const char *file)
{
    char *dir = eddy_job_dir_name(job->name ? job->name : "job"), *p;
    p = dir ? eddy_aprintf("%s%s.eddy/%s/%s", job->dir, job->dir[0] ? "/" : "", dir, file) : NULL;
    eddy_free(dir);
    return p;
}

/* trace.redact: a list of POSIX extended regular expressions, each checked here. */
static void get_redact(vctx *c, json_t *x, const char *p)
{
    json_t *r = json_object_get(x, "redact");
    char pp[80], ip[100];
    if (!r || json_is_null(r))
        return;
    eddy__job_join(pp, sizeof(pp), p, "redact");
    if (!json_is_array(r)) {
        eddy__job_err(c, pp, 0, "'redact' must be a list of regular expressions, not %s",
                      eddy__job_type(r));
        return;
    }
    c->job->trace_redact = eddy_calloc(json_array_size(r) + 1, sizeof(char *));
    for (size_t i = 0; c->job->trace_redact && i < json_array_size(r); i++) {
        const char *re = json_string_value(json_array_get(r, i));
        regex_t t;
        int rc;
        snprintf(ip, sizeof(ip), "%s/%zu", pp, i);
        if (!re || !*re) {
            eddy__job_err(c, ip, 0, "a redact pattern must be a non-empty string");
            continue;
        }
        if ((rc = regcomp(&t, re, REG_EXTENDED | REG_NOSUB))) {
            char why[200];
            regerror(rc, &t, why, sizeof(why));
            eddy__job_err(c, ip, 0, "redact pattern '%s' is not a regular expression: %s", re, why);
            continue;
        }
        regfree(&t);
        c->job->trace_redact[c->job->ntrace_redact++] = eddy_strdup(re);
    }
    c->job->trace.redact = (const char *const *)c->job->trace_redact;
    c->job->trace.nredact = c->job->ntrace_redact;
}

/* trace: { otlp: { endpoint: URL, headers: { NAME: VALUE, ... }, timeout } }.
 * Header values may be secrets: messages name the header, never its value. */
static void get_otlp(vctx *c, json_t *x, const char *p, eddy_trace_opts *o)
{
    static const char *const otlp_keys[] = {"endpoint", "headers", "timeout", NULL};
    char pp[80], hp[96];
    const char *name;
    json_t *k = eddy__job_map(c, x, p, "otlp", 0), *h, *v;
    if (!k)
        return;
    eddy__job_join(pp, sizeof(pp), p, "otlp");
    eddy__job_keys(c, k, pp, otlp_keys);
    o->otlp_endpoint = eddy__job_str(c, k, pp, "endpoint", S_NONEMPTY, NULL);
    if (o->otlp_endpoint && strncmp(o->otlp_endpoint, "http://", 7) &&
        strncmp(o->otlp_endpoint, "https://", 8)) {
        eddy__job_join(hp, sizeof(hp), pp, "endpoint");
        eddy__job_err(c, hp, 0,
                      "'endpoint' must be an http:// or https:// URL of the OTLP "
                      "traces endpoint (e.g. http://127.0.0.1:4318/v1/traces)");
    }
    o->otlp_timeout_ms = eddy__job_duration(c, k, pp, "timeout", 0, 1, MS_DAY);
    if (!(h = eddy__job_map(c, k, pp, "headers", 0)))
        return;
    eddy__job_join(hp, sizeof(hp), pp, "headers");
    if (!(o->otlp_headers = json_object()))
        return;
    json_object_foreach(h, name, v)
    {
        char *val =
            json_is_object(v) || json_is_array(v) ? NULL : eddy__job_str(c, h, hp, name, 0, NULL);
        int ok = *name != '\0';
        for (const char *q = name; *q; q++)
            ok &= (*q > ' ' && *q < 127 && !strchr("\"(),/:;<=>?@[\\]{}", *q));
        if (!ok) {
            eddy__job_err(c, hp, 0, "'%s' is not a valid HTTP header name", name);
        } else if (!val) {
            char vp[160];
            eddy__job_join(vp, sizeof(vp), hp, name);
            eddy__job_err(c, vp, 0, "header '%s' must be a string", name);
        } else if (strpbrk(val, "\r\n")) {
            char vp[160];
            eddy__job_join(vp, sizeof(vp), hp, name);
            eddy__job_err(c, vp, 0, "the value of header '%s' has a line break", name);
        } else {
            json_object_set_new(o->otlp_headers, name, json_string(val));
        }
        eddy_free(val);
    }
}

/* trace: { retention: { max_age, max_size }, sample, content, max_payload, redact, otlp } */
static void get_trace_opts(vctx *c, json_t *x, const char *p)
{
    static const char *const keep_keys[] = {"max_age", "max_size", NULL};
    eddy_trace_opts *o = &c->job->trace;
    char pp[80];
    json_t *k;
    o->max_age_ms = EDDY_TRACE_DEFAULT_MAX_AGE_MS;
    o->max_bytes = EDDY_TRACE_DEFAULT_MAX_BYTES;
    o->sample = 1;
    if (!x)
        return;
    if ((k = eddy__job_map(c, x, p, "retention", 0))) {
        eddy__job_join(pp, sizeof(pp), p, "retention");
        eddy__job_keys(c, k, pp, keep_keys);
        o->max_age_ms =
            eddy__job_duration(c, k, pp, "max_age", o->max_age_ms, 60000, 3650 * MS_DAY);
        o->max_bytes = eddy__job_size(c, k, pp, "max_size", o->max_bytes, 1 << 20, 1ll << 50);
    }
    o->sample = get_number(c, x, p, "sample", 1, 0, 1);
    o->no_content = !eddy__job_bool(c, x, p, "content", 1);
    o->max_payload =
        eddy__job_size(c, x, p, "max_payload", EDDY_TRACE_DEFAULT_MAX_PAYLOAD, 256, 64 << 20);
    get_redact(c, x, p);
    get_otlp(c, x, p, o);
}

/* checkpoint: / trace: { path: FILE, ... }, else the default FILE. */
static char *get_store(vctx *c, json_t *root, const char *key, const char *file, char **where_out,
                       unsigned bit)
{
    static const char *const trace_keys[] = {"path",        "retention", "sample", "content",
                                             "max_payload", "redact",    "otlp",   NULL};
    static const char *const ckpt_keys[] = {"path", "interval", NULL};
    int ckpt = !strcmp(key, "checkpoint");
    char p[64], pp[80], where[512], *rel = NULL, *abs;
    json_t *x = eddy__job_map(c, root, "", key, 0);
    snprintf(p, sizeof(p), "/%s", key);
    if (ckpt)
        c->job->checkpoint_ms = 1000;
    if (x) {
        eddy__job_keys(c, x, p, ckpt ? ckpt_keys : trace_keys);
        rel = eddy__job_str(c, x, p, "path", S_NONEMPTY, NULL);
        if (ckpt)
            c->job->checkpoint_ms = eddy__job_duration(c, x, p, "interval", 1000, 10, MS_DAY);
    }
    if (!ckpt)
        get_trace_opts(c, x, p);
    if (rel) {
        abs = eddy_job_path(c->job, rel);
        eddy__job_join(pp, sizeof(pp), p, "path");
        *where_out = eddy_strdup(WHERE(c, pp, 0));
        eddy_free(rel);
        return abs;
    }
    c->job->defaults |= bit;
    *where_out = eddy_strdup(WHERE(c, "/job", 1));
    return default_path(c->job, file);
}

/* key: a dotted path ("customer.id") with no empty part. */
static void check_key_path(vctx *c, const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (key && n && (key[0] == '.' || key[n - 1] == '.' || strstr(key, "..")))
        eddy__job_err(c, "/key", 0, "'key' must be a dotted path such as customer.id, not '%s'",
                      key);
}

/* EDDY_JOB_PATHS: the name and the stores' paths, and the ${...} that could
 * not be interpolated where they are read (the rest of the file may use
 * variables this shell does not set). */
/* dashboard: { listen: HOST:PORT, token: T } (off when absent). */
static void get_dashboard(vctx *c, json_t *root)
{
    static const char *const keys[] = {"listen", "token", NULL};
    json_t *x = eddy__job_map(c, root, "", "dashboard", 0);
    if (!x)
        return;
    eddy__job_keys(c, x, "/dashboard", keys);
    c->job->dashboard_listen =
        eddy__job_str(c, x, "/dashboard", "listen", S_NONEMPTY, "127.0.0.1:8765");
    c->job->dashboard_token = eddy__job_str(c, x, "/dashboard", "token", S_NONEMPTY, NULL);
    const char *l = c->job->dashboard_listen, *colon = l ? strrchr(l, ':') : NULL;
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (l && (!colon || !colon[1] || *end || port < 0 || port > 65535))
        eddy__job_err(c, "/dashboard/listen", 0,
                      "'listen' must be HOST:PORT (such as 127.0.0.1:8765; port 0: any free one)");
    const char *t = c->job->dashboard_token;
    if (t && (strlen(t) < 16 || strlen(t) > 256 ||
              strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") !=
                  strlen(t)))
        eddy__job_err(c, "/dashboard/token", 0,
                      "'token' must have 16 to 256 characters, each a letter, a digit or one of "
                      "-._~+/=");
}

/* mcp: { NAME: { command: [...], env, cwd } | { url, headers }, timeout, ... }:
 * checked by the MCP module, each problem placed at its file:line:col. */
static void mcp_problem(void *ud, const char *path, int key, const char *msg)
{
    char full[600];
    snprintf(full, sizeof(full), "/mcp%s", path);
    eddy__job_err(ud, full, key, "%s", msg);
}

static void get_mcp(vctx *c, json_t *root)
{
    json_t *x = json_object_get(root, "mcp");
    eddy_mcp_config *cfg = NULL;
    eddy_err err = {0};
    if (!x || json_is_null(x))
        return;
    if (eddy_mcp_config_new(x, mcp_problem, c, &cfg, &err) == EDDY_ENOMEM)
        eddy__job_err(c, "/mcp", 1, "out of memory");
    eddy_mcp_config_free(cfg);
    c->job->mcp = json_deep_copy(x);
    collect_secrets(c, x, "/mcp", NULL); /* headers and env from the environment */
}

static void load_paths(vctx *c, const eddy_yaml_doc *doc)
{
    static const char *const read[] = {"/job", "/checkpoint", "/trace", "/dashboard", NULL};
    eddy_job *job = c->job;
    const char *path;
    json_t *msg;
    job->name = eddy__job_str(c, doc->root, "", "job", S_REQ, NULL);
    job->state_path = get_store(c, doc->root, "checkpoint", "state.db", &job->state_where,
                                EDDY_JOB_DEFAULT_STATE);
    job->trace_path =
        get_store(c, doc->root, "trace", "traces.db", &job->trace_where, EDDY_JOB_DEFAULT_TRACE);
    get_dashboard(c, doc->root);
    json_object_foreach(doc->deferred, path, msg)
    {
        for (size_t i = 0; read[i]; i++) {
            size_t n = strlen(read[i]);
            if (!strncmp(path, read[i], n) && (path[n] == '\0' || path[n] == '/')) {
                eddy_diag_add(c->diag, "%s", json_string_value(msg));
                c->errors++;
                break;
            }
        }
    }
}

int eddy_job_load(const char *file, int flags, eddy_job **out, eddy_diag *diag)
{
    return eddy_job_load_io(file, flags, NULL, out, diag);
}

int eddy_job_load_io(const char *file, int flags, const eddy_job_io *io, eddy_job **out,
                     eddy_diag *diag)
{
    static const char *const keys[] = {
        "job",     "key",           "source",         "sink",          "dead_letter", "checkpoint",
        "trace",   "fluss",         "shutdown_grace", "max_in_flight", "models",      "agents",
        "workers", "max_keygroups", "delivery",       "memory",        "dashboard",   "mcp",
        NULL};
    eddy_yaml_doc doc;
    vctx c = {0};
    eddy_job *job;
    char *fcopy, where[512];
    int rc;

    *out = NULL;
    rc = eddy_yaml_load_flags(file, flags & EDDY_JOB_PATHS ? EDDY_YAML_LAX_ENV : 0, &doc, diag);
    if (rc) {
        eddy_yaml_doc_free(&doc);
        return rc;
    }
    job = eddy_calloc(1, sizeof(*job));
    fcopy = eddy_strdup(file);
    if (!job || !fcopy) {
        eddy_free(fcopy);
        eddy_free(job);
        eddy_yaml_doc_free(&doc);
        eddy_diag_add(diag, "%s: out of memory", file);
        return EDDY_ENOMEM;
    }
    job->file = eddy_strdup(file);
    job->dir = eddy_strdup(strcmp(dirname(fcopy), ".") ? fcopy : "");
    eddy_free(fcopy);
    c.doc = &doc;
    c.diag = diag;
    c.job = job;
    if (!json_is_object(doc.root)) {
        eddy__job_err(&c, "", 0,
                      "a job file must be a mapping with keys job, key, models, agents, ...");
        goto out;
    }
    if (flags & EDDY_JOB_PATHS) {
        load_paths(&c, &doc);
        goto out;
    }
    eddy__job_keys(&c, doc.root, "", keys);
    job->name = eddy__job_str(&c, doc.root, "", "job", S_REQ, NULL);
    job->key = eddy__job_str(&c, doc.root, "", "key", S_REQ, NULL);
    check_key_path(&c, job->key);
    load_modules(&c, doc.root);
    job->source = get_io(&c, doc.root, "source", 0, &job->source_cfg, &job->source_where);
    job->sink = get_io(&c, doc.root, "sink", 1, &job->sink_cfg, &job->sink_where);
    job->dead_letter = get_io(&c, doc.root, "dead_letter", 0, NULL, &job->dead_letter_where);
    if (!job->dead_letter) {
        job->defaults |= EDDY_JOB_DEFAULT_DEAD_LETTER;
        job->dead_letter = default_path(job, "dead-letter.jsonl");
        job->dead_letter_where = eddy_strdup(WHERE(&c, "/job", 1));
    }
    job->state_path = get_store(&c, doc.root, "checkpoint", "state.db", &job->state_where,
                                EDDY_JOB_DEFAULT_STATE);
    job->trace_path =
        get_store(&c, doc.root, "trace", "traces.db", &job->trace_where, EDDY_JOB_DEFAULT_TRACE);
    get_dashboard(&c, doc.root);
    job->shutdown_grace_ms =
        eddy__job_duration(&c, doc.root, "", "shutdown_grace", 10000, 0, MS_DAY);
    job->max_in_flight = (int)eddy__job_int(&c, doc.root, "", "max_in_flight", 10000, 1, 10000000);
    job->workers = (int)eddy__job_int(&c, doc.root, "", "workers", 0, 1, EDDY_JOB_MAX_WORKERS);
    job->max_keygroups =
        (int)eddy__job_int(&c, doc.root, "", "max_keygroups", EDDY_STORE_DEFAULT_KEYGROUPS, 1,
                           EDDY_STORE_MAX_KEYGROUPS);
    {
        char *d = eddy__job_str(&c, doc.root, "", "delivery", 0, "at_least_once");
        if (d && !strcmp(d, "exactly_once"))
            job->delivery = EDDY_DELIVERY_EXACTLY_ONCE;
        else if (d && strcmp(d, "at_least_once"))
            eddy__job_err(&c, "/delivery", 0,
                          "delivery must be at_least_once or exactly_once, not '%s'", d);
        eddy_free(d);
    }
    {
        static const char *const mem_keys[] = {"cache", NULL};
        json_t *m = eddy__job_map(&c, doc.root, "", "memory", 0);
        job->memory_cache = 64ll << 20;
        if (m) {
            eddy__job_keys(&c, m, "/memory", mem_keys);
            job->memory_cache =
                eddy__job_size(&c, m, "/memory", "cache", 64ll << 20, 1 << 16, 1ll << 40);
        }
    }
    get_mcp(&c, doc.root);
    load_section(&c, doc.root, "models");
    link_fallbacks(&c, json_object_get(doc.root, "models"));
    load_section(&c, doc.root, "agents");
    if (flags & EDDY_JOB_TOOLS)
        check_tools(&c, io ? io->loop : NULL);
    if ((flags & EDDY_JOB_FILES) && eddy_job_check_io(job, io, diag))
        c.errors++;
out:
    eddy_yaml_doc_free(&doc);
    if (c.errors || diag->n) {
        eddy_job_free(job);
        return EDDY_ESCHEMA;
    }
    *out = job;
    return 0;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        eddy_free(v[i]);
    eddy_free(v);
}

void eddy_job_free(eddy_job *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->nmodels; i++) {
        eddy_llm_model *m = &job->models[i];
        eddy_free(m->name);
        eddy_free(m->provider);
        eddy_free(m->base_url);
        if (m->api_key)
            memset(m->api_key, 0, strlen(m->api_key));
        eddy_free(m->api_key);
        eddy_free(m->model);
        eddy_free(m->api_version);
        eddy_free(m->fallback);
    }
    eddy_free(job->models);
    for (size_t i = 0; i < job->nagents; i++) {
        eddy_agent_def *a = &job->agents[i];
        eddy_free(a->name);
        eddy_template_free(a->system);
        eddy_template_free(a->user);
        for (int k = 0; k < 2; k++) {
            eddy_free(a->prompt_file[k]);
            eddy_free(a->prompt_where[k]);
        }
        for (size_t j = 0; j < a->ntools; j++) {
            eddy__tool_ref_clear(&a->tools[j]);
        }
        eddy_free(a->tools);
        for (size_t j = 0; a->output_schema && j < a->non; j++)
            json_decref(a->output_schema[j]);
        eddy_free(a->output_schema);
        eddy_free(a->tool_choice_name);
        free_strv(a->on, a->non);
    }
    eddy_free(job->agents);
    eddy_free(job->file);
    eddy_free(job->dir);
    eddy_free(job->name);
    eddy_free(job->key);
    eddy_free(job->source);
    eddy_free(job->sink);
    json_decref(job->source_cfg);
    json_decref(job->sink_cfg);
    json_decref(job->modules);
    eddy_free(job->dead_letter);
    eddy_free(job->state_path);
    eddy_free(job->trace_path);
    eddy_free(job->dashboard_listen);
    eddy_free(job->dashboard_token);
    for (size_t i = 0; i < job->nsecrets; i++)
        eddy_free(job->secrets[i]);
    eddy_free(job->secrets);
    for (size_t i = 0; i < job->ntrace_redact; i++)
        eddy_free(job->trace_redact[i]);
    eddy_free(job->trace_redact);
    eddy_free(job->source_where);
    eddy_free(job->sink_where);
    eddy_free(job->dead_letter_where);
    eddy_free(job->state_where);
    eddy_free(job->trace_where);
    eddy_free(job->trace.otlp_endpoint);
    json_decref(job->trace.otlp_headers);
    json_decref(job->mcp);
    eddy_free(job);
}
