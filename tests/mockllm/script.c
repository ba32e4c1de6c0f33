/*
 * tests/mockllm/script.c - the mock's script: loading it (every key checked,
 * so a misspelt condition cannot make a rule match everything), choosing the
 * rule that answers a request, templating, and the neutral answer a rule gives.
 *
 * The rules only ever see the neutral view of a request (mockllm_int.h), so
 * every condition works the same for OpenAI, Anthropic and Ollama requests.
 * The table is built once at start; afterwards only the hit counts change,
 * under g_mu.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mock_opts g_opts;

static mock_rule *g_rules;
static size_t g_nrules;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_long g_ids;

void mock_lock(void)
{
    pthread_mutex_lock(&g_mu);
}

void mock_unlock(void)
{
    pthread_mutex_unlock(&g_mu);
}

/* -- the conversation ---------------------------------------------------------- */

static json_t *last_with_role(json_t *msgs, const char *role)
{
    for (size_t i = json_array_size(msgs); i > 0; i--) {
        json_t *m = json_array_get(msgs, i - 1);
        if (!strcmp(eddy_json_str(m, "role", ""), role))
            return m;
    }
    return NULL;
}

static const char *content_of(json_t *m)
{
    return eddy_json_str(m, "content", "");
}

static int count_role(json_t *msgs, const char *role)
{
    size_t i;
    json_t *m;
    int n = 0;
    json_array_foreach(msgs, i, m) n += !strcmp(eddy_json_str(m, "role", ""), role);
    return n;
}

static int tool_offered(const mock_req *req, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(req->tools, i, t)
    {
        if (json_is_string(t) && !strcmp(json_string_value(t), name))
            return 1;
    }
    return 0;
}

const mock_wire *mock_wire_of(mock_fmt f)
{
    return f == MOCK_ANTHROPIC ? &mock_anthropic : f == MOCK_OLLAMA ? &mock_ollama : &mock_openai;
}

static int rule_matches(mock_rule *r, const mock_req *req, mock_match *mt)
{
    json_t *w = json_object_get(r->def, "when"), *msgs = req->msgs;
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *user = content_of(last_with_role(msgs, "user"));
    const char *v;
    if (r->times >= 0 && r->hits >= r->times)
        return 0;
    if ((v = eddy_json_str(w, "format", NULL)) && strcmp(v, mock_wire_of(req->fmt)->name))
        return 0;
    if (json_is_boolean(json_object_get(w, "stream")) &&
        json_is_true(json_object_get(w, "stream")) != !!req->stream)
        return 0;
    if ((v = eddy_json_str(w, "last_role", NULL)) && strcmp(v, eddy_json_str(last, "role", "")))
        return 0;
    if ((v = eddy_json_str(w, "last_user_contains", NULL)) && !strstr(user, v))
        return 0;
    if ((v = eddy_json_str(w, "system_contains", NULL)) &&
        !strstr(content_of(last_with_role(msgs, "system")), v))
        return 0;
    if ((v = eddy_json_str(w, "tool_offered", NULL)) && !tool_offered(req, v))
        return 0;
    if ((v = eddy_json_str(w, "last_tool_contains", NULL)) &&
        !strstr(content_of(last_with_role(msgs, "tool")), v))
        return 0;
    if (json_is_integer(json_object_get(w, "min_user_messages")) &&
        count_role(msgs, "user") < json_integer_value(json_object_get(w, "min_user_messages")))
        return 0;
    mt->ncaps = 0;
    mt->subject = user;
    if (r->has_re) {
        if (regexec(&r->re, user, 10, mt->caps, 0))
            return 0;
        mt->ncaps = 10;
    }
    return 1;
}

mock_rule *mock_script_pick(const mock_req *req, mock_match *mt, long *index)
{
    mock_rule *r = NULL;
    memset(mt, 0, sizeof(*mt));
    *index = -1;
    mock_lock();
    for (size_t i = 0; i < g_nrules; i++) {
        if (rule_matches(&g_rules[i], req, mt)) {
            r = &g_rules[i];
            r->hits++;
            *index = (long)i;
            break;
        }
    }
    mock_unlock();
    return r;
}

/* -- templates ----------------------------------------------------------------- */

char *mock_expand(const char *t, const mock_req *req, const mock_match *mt)
{
    json_t *msgs = req->msgs;
    const char *tool = content_of(last_with_role(msgs, "tool"));
    json_t *tooljs = json_loads(tool, 0, NULL);
    eddy_buf b;
    eddy_buf_init(&b);
    while (*t) {
        if (t[0] == '$' && t[1] >= '1' && t[1] <= '9') {
            int k = t[1] - '0';
            if (k < mt->ncaps && mt->caps[k].rm_so >= 0)
                eddy_buf_append(&b, mt->subject + mt->caps[k].rm_so,
                                (size_t)(mt->caps[k].rm_eo - mt->caps[k].rm_so));
            t += 2;
        } else if (t[0] == '$' && t[1] == '{' && strchr(t, '}')) {
            const char *end = strchr(t, '}');
            char name[128];
            size_t n = (size_t)(end - t - 2);
            if (n >= sizeof(name))
                n = sizeof(name) - 1;
            memcpy(name, t + 2, n);
            name[n] = '\0';
            if (!strcmp(name, "user"))
                eddy_buf_puts(&b, mt->subject ? mt->subject : "");
            else if (!strcmp(name, "n_user"))
                eddy_buf_printf(&b, "%d", count_role(msgs, "user"));
            else if (!strcmp(name, "tool"))
                eddy_buf_puts(&b, tool);
            else if (!strncmp(name, "tool.", 5)) {
                json_t *v = eddy_json_path(tooljs, name + 5);
                char *s =
                    json_is_string(v) ? eddy_strdup(json_string_value(v)) : eddy_json_dumps(v);
                eddy_buf_puts(&b, s ? s : "");
                eddy_free(s);
            }
            t = end + 1;
        } else {
            eddy_buf_putc(&b, *t++);
        }
    }
    json_decref(tooljs);
    return eddy_buf_take(&b);
}

static json_t *expand_json(json_t *v, const mock_req *req, const mock_match *mt)
{
    if (json_is_string(v)) {
        char *s = mock_expand(json_string_value(v), req, mt);
        json_t *r = json_string(s ? s : "");
        eddy_free(s);
        return r;
    }
    if (json_is_object(v)) {
        json_t *o = json_object(), *x;
        const char *k;
        json_object_foreach(v, k, x) json_object_set_new(o, k, expand_json(x, req, mt));
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array(), *x;
        size_t i;
        json_array_foreach(v, i, x) json_array_append_new(a, expand_json(x, req, mt));
        return a;
    }
    return json_deep_copy(v);
}

/* -- the answer a rule gives ------------------------------------------------------ */

/* Tool call I of rule call C: arguments templated, an id unique per answer. The
 * usage estimate counts a quarter token per byte of arguments. */
static long build_call(mock_call *mc, json_t *c, size_t i, long id, const mock_req *req,
                       const mock_match *mt)
{
    json_t *args = expand_json(json_object_get(c, "arguments"), req, mt);
    json_t *raw = json_object_get(c, "raw_arguments");
    const char *cid = eddy_json_str(c, "id", NULL);
    mc->args = json_is_string(raw) ? mock_expand(json_string_value(raw), req, mt)
               : args              ? eddy_json_dumps(args)
                                   : eddy_strdup("{}");
    mc->name = eddy_strdup(eddy_json_str(c, "name", "?"));
    mc->input = mc->args ? json_loads(mc->args, JSON_DECODE_ANY, NULL) : NULL;
    if (mc->input && !json_is_object(mc->input)) {
        json_decref(mc->input);
        mc->input = NULL;
    }
    if (cid)
        snprintf(mc->id, sizeof(mc->id), "%s", cid);
    else if (req->fmt == MOCK_ANTHROPIC)
        snprintf(mc->id, sizeof(mc->id), "toolu_mock_%ld_%zu", id, i);
    else
        snprintf(mc->id, sizeof(mc->id), "call_%ld_%zu", id, i);
    json_decref(args);
    return mc->args ? (long)strlen(mc->args) / 4 + 1 : 1;
}

static long long usage_field(json_t *u, const char *k, long long def)
{
    return json_is_integer(json_object_get(u, k)) ? eddy_json_int(u, k, def) : def;
}

void mock_answer_build(mock_answer *a, json_t *def, const mock_req *req, const mock_match *mt)
{
    json_t *calls = json_object_get(def, "tool_calls"), *u = json_object_get(def, "usage");
    const char *reply = eddy_json_str(def, "reply", NULL);
    long completion = 1;
    memset(a, 0, sizeof(*a));
    a->text = reply ? mock_expand(reply, req, mt) : NULL;
    a->id = atomic_fetch_add(&g_ids, 1);
    if (json_array_size(calls) > 0 && req->tools_ignored) {
        /* the model never saw the tools, so it answers in words */
        if (!a->text)
            a->text = eddy_strdup("mock: the tools were ignored (require_tool_choice: the "
                                  "request has no tool_choice)");
    } else if (json_array_size(calls) > 0) {
        size_t i;
        json_t *c;
        a->calls = calloc(json_array_size(calls), sizeof(*a->calls));
        json_array_foreach(calls, i, c) completion +=
            build_call(&a->calls[a->ncalls++], c, i, a->id, req, mt);
    }
    if (a->text)
        completion += (long)strlen(a->text) / 4;
    a->in = usage_field(u, "input", req->prompt_chars / 4 + 1);
    a->out = usage_field(u, "output", completion);
    a->cached = usage_field(u, "cached", 0);
    a->reasoning = usage_field(u, "reasoning", 0);
    a->cache_creation = usage_field(u, "cache_creation", 0);
    a->usage_details = json_object_get(u, "cached") || json_object_get(u, "reasoning");
    a->omit_usage = json_is_true(json_object_get(def, "omit_usage"));
    a->finish = eddy_json_str(def, "finish_reason", a->ncalls ? "tool_calls" : "stop");
    a->model = eddy_json_str(def, "model", req->model);
    a->index_zero = json_is_boolean(json_object_get(def, "stream_index_zero"))
                        ? json_is_true(json_object_get(def, "stream_index_zero"))
                        : g_opts.stream_index_zero;
    a->piece = (size_t)usage_field(def, "chunk_chars", 8);
    if (a->piece < 1)
        a->piece = 1;
}

void mock_answer_free(mock_answer *a)
{
    for (size_t i = 0; i < a->ncalls; i++) {
        eddy_free(a->calls[i].name);
        eddy_free(a->calls[i].args);
        json_decref(a->calls[i].input);
    }
    free(a->calls);
    eddy_free(a->text);
    memset(a, 0, sizeof(*a));
}

/* -- loading ---------------------------------------------------------------------- */

/* A misspelt key would make a rule match everything or answer nothing:
 * refuse the script instead, naming the rule and the key. Keep these lists
 * and the header comment of mockllm.c in step. */
static const char *const kScriptKeys[] = {"rules",
                                          "latency_ms",
                                          "require_api_key",
                                          "strict_content",
                                          "require_tool_choice",
                                          "stream_index_zero",
                                          NULL};
static const char *const kRuleKeys[] = {"when",
                                        "times",
                                        "tool_calls",
                                        "reply",
                                        "fault",
                                        "latency_ms",
                                        "usage",
                                        "omit_usage",
                                        "finish_reason",
                                        "model",
                                        "headers",
                                        "ratelimit",
                                        "chunk_delay_ms",
                                        "first_chunk_delay_ms",
                                        "chunk_chars",
                                        "strict_content",
                                        "stream_index_zero",
                                        NULL};
static const char *const kWhenKeys[] = {"last_role",
                                        "last_user_contains",
                                        "last_user_regex",
                                        "system_contains",
                                        "tool_offered",
                                        "last_tool_contains",
                                        "min_user_messages",
                                        "format",
                                        "stream",
                                        NULL};
static const char *const kFaultKeys[] = {"status",
                                         "retry_after",
                                         "retry_after_ms",
                                         "delay_ms",
                                         "truncate",
                                         "malformed",
                                         "error_code",
                                         "message",
                                         "type",
                                         "stream_error",
                                         "disconnect_after_chunks",
                                         "after_chunks",
                                         NULL};
static const char *const kCallKeys[] = {"name", "arguments", "raw_arguments", "id", NULL};
static const char *const kUsageKeys[] = {"input",     "output",         "cached",
                                         "reasoning", "cache_creation", NULL};
const char *const kRatelimitKeys[] = {"remaining_requests",
                                      "remaining_tokens",
                                      "reset_requests",
                                      "reset_tokens",
                                      "limit_requests",
                                      "limit_tokens",
                                      NULL};

static int unknown_key(const char *path, long i, json_t *obj, const char *const *keys,
                       const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        const char *const *p = keys;
        while (*p && strcmp(*p, k))
            p++;
        if (*p)
            continue;
        if (i < 0)
            fprintf(stderr, "mockllm: %s: unknown key '%s%s'\n", path, prefix, k);
        else
            fprintf(stderr, "mockllm: %s: rule %ld: unknown key '%s%s'\n", path, i, prefix, k);
        return -1;
    }
    return 0;
}

static int check_rule(const char *path, long i, json_t *def)
{
    json_t *calls = json_object_get(def, "tool_calls"), *c, *v;
    const char *k;
    size_t j;
    if (!json_is_object(def)) {
        fprintf(stderr, "mockllm: %s: rule %ld: expected an object\n", path, i);
        return -1;
    }
    if (unknown_key(path, i, def, kRuleKeys, "") ||
        unknown_key(path, i, json_object_get(def, "when"), kWhenKeys, "when.") ||
        unknown_key(path, i, json_object_get(def, "fault"), kFaultKeys, "fault.") ||
        unknown_key(path, i, json_object_get(def, "usage"), kUsageKeys, "usage.") ||
        unknown_key(path, i, json_object_get(def, "ratelimit"), kRatelimitKeys, "ratelimit."))
        return -1;
    json_array_foreach(calls, j, c)
    {
        char prefix[48];
        snprintf(prefix, sizeof(prefix), "tool_calls[%zu].", j);
        if (unknown_key(path, i, c, kCallKeys, prefix))
            return -1;
    }
    json_object_foreach(json_object_get(def, "headers"), k, v)
    {
        if (!json_is_string(v) && !json_is_number(v)) {
            fprintf(stderr, "mockllm: %s: rule %ld: headers.%s must be a string or a number\n",
                    path, i, k);
            return -1;
        }
    }
    return 0;
}

static int load_options(const char *path, json_t *root)
{
    json_t *key = json_object_get(root, "require_api_key");
    if (unknown_key(path, -1, root, kScriptKeys, ""))
        return -1;
    if (json_is_integer(json_object_get(root, "latency_ms")) && !g_opts.latency_ms)
        g_opts.latency_ms = (long)eddy_json_int(root, "latency_ms", 0);
    g_opts.require_api_key = json_is_true(key) || json_is_string(key);
    g_opts.api_key = json_is_string(key) ? eddy_strdup(json_string_value(key)) : NULL;
    g_opts.strict_content = json_is_true(json_object_get(root, "strict_content"));
    g_opts.require_tool_choice = json_is_true(json_object_get(root, "require_tool_choice"));
    g_opts.stream_index_zero = json_is_true(json_object_get(root, "stream_index_zero"));
    return 0;
}

int mock_script_load(const char *path)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *rules;
    int rc = -1;
    if (!root) {
        fprintf(stderr, "mockllm: %s:%d:%d: %s\n", path, je.line, je.column, je.text);
        return -1;
    }
    rules = json_object_get(root, "rules");
    if (!json_is_array(rules)) {
        fprintf(stderr, "mockllm: %s: expected {\"rules\": [...]}\n", path);
        goto out;
    }
    if (load_options(path, root))
        goto out;
    g_nrules = json_array_size(rules);
    g_rules = calloc(g_nrules + 1, sizeof(mock_rule));
    for (size_t i = 0; i < g_nrules; i++) {
        mock_rule *r = &g_rules[i];
        const char *re;
        r->def = json_incref(json_array_get(rules, i));
        if (check_rule(path, (long)i, r->def))
            goto out;
        r->times = json_is_integer(json_object_get(r->def, "times"))
                       ? (long)eddy_json_int(r->def, "times", 0)
                       : -1;
        re = eddy_json_str(json_object_get(r->def, "when"), "last_user_regex", NULL);
        if (re) {
            if (regcomp(&r->re, re, REG_EXTENDED)) {
                fprintf(stderr, "mockllm: %s: rule %zu: bad regex '%s'\n", path, i, re);
                goto out;
            }
            r->has_re = 1;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}
