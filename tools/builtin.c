/*
 * tools/builtin.c - tool kinds eddy brings itself: http_request (an API the
 * job describes, called with the parameters the model fills in) and
 * current_time.
 *
 * http_request is the tool kind of the http module (http.c): its calls run
 * on that module's curl multi with the same checks as eddy.http, under a
 * policy built at load from the tool's settings: the URL template's own
 * host and port are allowed (a template naming localhost or 127.0.0.1 counts
 * as listing it), plus `allow:` for redirects. The template's host is never
 * a parameter; parameter values are percent-encoded into the path and the
 * query, so a value cannot change where the request goes.
 */
#include "http_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TOOL_DEFAULT_MAX_RESPONSE (256LL << 10) /* what a model is shown */

typedef struct req_tool {
    char *name;
    const char *method; /* static */
    char *url;          /* the template */
    json_t *query;      /* [names] */
    json_t *headers;    /* {name: value} or NULL */
    json_t *body;       /* NULL, [names] or an object template */
    json_t *allow;      /* [{host, port}] */
    int max_redirects;
    int64_t max_response, timeout_ms;
    char where[200];
} req_tool;

static void req_tool_free(void *p)
{
    req_tool *d = p;
    if (!d)
        return;
    eddy_free(d->name);
    eddy_free(d->url);
    json_decref(d->query);
    json_decref(d->headers);
    json_decref(d->body);
    json_decref(d->allow);
    eddy_free(d);
}

/* -- settings ---------------------------------------------------------------------- */

/* A byte size: a number, or "512KiB", "1MiB", "2MB", "1000B". */
static int parse_size(json_t *v, int64_t *out)
{
    const char *s = json_string_value(v);
    char *end;
    double x, mul = 1;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out > 0 ? 0 : -1;
    }
    if (!s)
        return -1;
    x = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (!strcasecmp(end, "kib"))
        mul = 1024;
    else if (!strcasecmp(end, "mib"))
        mul = 1024 * 1024;
    else if (!strcasecmp(end, "kb"))
        mul = 1000;
    else if (!strcasecmp(end, "mb"))
        mul = 1000 * 1000;
    else if (*end && strcasecmp(end, "b"))
        return -1;
    if (end == s || x <= 0 || x * mul > (double)(1LL << 30))
        return -1;
    *out = (int64_t)(x * mul);
    return 0;
}

static int parse_ms(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out > 0 ? 0 : -1;
    }
    if (!json_is_string(v) || eddy_parse_duration_ms(json_string_value(v), out) || *out <= 0)
        return -1;
    return 0;
}

/* params: {name: type | {type, description, required, enum}} -> a JSON schema. */
static json_t *params_schema(json_t *params, eddy_err *err)
{
    static const char *const kTypes[] = {"string", "integer", "number", "boolean",
                                         "array",  "object",  NULL};
    json_t *props = json_object(), *req = json_array(), *v, *out;
    const char *k;
    if (!props || !req) {
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    if (params && !json_is_object(params)) {
        eddy_err_set(err, EDDY_EINVAL,
                     "'params' must be a map of name: {type, description, "
                     "required}");
        goto fail;
    }
    json_object_foreach(params, k, v)
    {
        const char *type = json_is_string(v) ? json_string_value(v)
                                             : json_string_value(json_object_get(v, "type"));
        json_t *p, *x;
        const char *f;
        int i;
        for (i = 0; type && kTypes[i] && strcmp(kTypes[i], type); i++)
            ;
        if (!type || !kTypes[i]) {
            eddy_err_set(err, EDDY_EINVAL,
                         "parameter '%s': %s (string, integer, number, boolean, array or object)",
                         k, type ? "unknown type" : "needs a type");
            goto fail;
        }
        json_object_foreach(json_is_object(v) ? v : NULL, f,
                            x) if (strcmp(f, "type") && strcmp(f, "description") &&
                                   strcmp(f, "required") && strcmp(f, "enum"))
        {
            eddy_err_set(err, EDDY_EINVAL,
                         "parameter '%s': unknown key '%s' (known: type, description, required, "
                         "enum)",
                         k, f);
            goto fail;
        }
        p = json_pack("{s:s}", "type", type);
        if ((x = json_object_get(v, "description")) && json_is_string(x))
            json_object_set(p, "description", x);
        if ((x = json_object_get(v, "enum")) && json_is_array(x))
            json_object_set(p, "enum", x);
        if (!p || json_object_set_new(props, k, p) ||
            (json_is_true(json_object_get(v, "required")) &&
             json_array_append_new(req, json_string(k)))) {
            eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto fail;
        }
    }
    out = json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props, "required", req,
                    "additionalProperties", 0);
    if (!out)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return out;
fail:
    json_decref(props);
    json_decref(req);
    return NULL;
}

/* Mark NAME used; an error when it is not a parameter or not a scalar where
 * a scalar is needed (SCALAR). */
static int use_param(json_t *schema, json_t *used, const char *name, int scalar, const char *what,
                     eddy_err *err)
{
    json_t *p = json_object_get(json_object_get(schema, "properties"), name);
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!p)
        return eddy_err_set(err, EDDY_EINVAL, "%s names '%s', which is not in params", what, name);
    if (scalar && (!strcmp(type, "array") || !strcmp(type, "object")))
        return eddy_err_set(err, EDDY_EINVAL, "%s uses '%s', which must then be a scalar (not %s)",
                            what, name, type);
    if (json_object_set_new(used, name, json_true()))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return 0;
}

/* The body template's "{name}" strings, marked used. */
static int use_body(json_t *schema, json_t *used, json_t *v, eddy_err *err)
{
    const char *k, *s = json_string_value(v);
    json_t *x;
    size_t i;
    if (s && s[0] == '{' && s[strlen(s) - 1] == '}' && strlen(s) > 2) {
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)strlen(s) - 2, s + 1);
        return use_param(schema, used, name, 0, "body", err);
    }
    json_object_foreach(json_is_object(v) ? v : NULL, k,
                        x) if (use_body(schema, used, x, err)) return err->code;
    json_array_foreach(json_is_array(v) ? v : NULL, i,
                       x) if (use_body(schema, used, x, err)) return err->code;
    return 0;
}

/* Check the URL template T against SCHEMA (its {names} are scalar
 * parameters, the host is not one) and allow its own host and port. */
static int check_url(req_tool *d, json_t *schema, json_t *used, eddy_err *err)
{
    const char *t = d->url, *hs = strstr(t, "://"), *p;
    eddy_buf b;
    CURLU *u = NULL;
    char *host = NULL, *port = NULL, *scheme = NULL, entry[300];
    CURLUcode uc = CURLUE_OK;
    json_t *e;
    int rc = 0;
    if (!hs || strcspn(hs + 3, "/?#") > strcspn(hs + 3, "{"))
        return eddy_err_set(err, EDDY_EINVAL,
                            "'url' must be http(s)://host/... with a fixed host (parameters only "
                            "in the path and query)");
    eddy_buf_init(&b);
    for (p = t; *p;) { /* every {name} a parameter; the text with x for each, to parse */
        const char *o = strchr(p, '{'), *c = o ? strchr(o, '}') : NULL;
        char name[128];
        if (!o) {
            eddy_buf_puts(&b, p);
            break;
        }
        if (!c || c - o - 1 <= 0 || (size_t)(c - o - 1) >= sizeof(name)) {
            rc = eddy_err_set(err, EDDY_EINVAL, "'url' has a '{' without a '{name}'");
            goto out;
        }
        snprintf(name, sizeof(name), "%.*s", (int)(c - o - 1), o + 1);
        if ((rc = use_param(schema, used, name, 1, "the url", err)))
            goto out;
        eddy_buf_append(&b, p, (size_t)(o - p));
        eddy_buf_putc(&b, 'x');
        p = c + 1;
    }
    if (b.oom || !(u = curl_url())) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((uc = curl_url_set(u, CURLUPART_URL, b.data, 0)) ||
        (uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0)) ||
        (uc = curl_url_get(u, CURLUPART_HOST, &host, 0)) ||
        (uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)) ||
        (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
        rc = uc == CURLUE_OUT_OF_MEMORY
                 ? eddy_err_set(err, EDDY_ENOMEM, "out of memory")
                 : eddy_err_set(err, EDDY_EINVAL, "'url' is not an http:// or https:// URL: %s", t);
        goto out;
    }
    snprintf(entry, sizeof(entry), "%s:%s", host, port);
    if (!(e = eddy_http_allow_entry(entry, err))) {
        rc = err->code;
        goto out;
    }
    if (json_array_append_new(d->allow, e))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    curl_free(host);
    curl_free(port);
    curl_free(scheme);
    curl_url_cleanup(u);
    eddy_buf_free(&b);
    return rc;
}

static int load_lists(req_tool *d, const json_t *cfg, json_t *schema, json_t *used, eddy_err *err)
{
    json_t *v, *x;
    size_t i;
    const char *k;
    if ((v = json_object_get(cfg, "query")) && !json_is_array(v))
        return eddy_err_set(err, EDDY_EINVAL, "'query' must be a list of parameter names");
    if (!(d->query = v ? json_incref(v) : json_array()))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    json_array_foreach(d->query, i, x)
    {
        if (!json_is_string(x))
            return eddy_err_set(err, EDDY_EINVAL, "'query' must be a list of parameter names");
        if (use_param(schema, used, json_string_value(x), 1, "query", err))
            return err->code;
    }
    if ((v = json_object_get(cfg, "headers"))) {
        if (!json_is_object(v))
            return eddy_err_set(err, EDDY_EINVAL, "'headers' must be a map of name: value");
        json_object_foreach(v, k, x)
        {
            if (!json_is_string(x))
                return eddy_err_set(err, EDDY_EINVAL, "header '%s' must be a string", k);
            if (eddy__http_check_header(k, json_string_value(x), json_string_length(x), err))
                return err->code;
        }
        d->headers = json_incref(v);
    }
    if ((v = json_object_get(cfg, "body"))) {
        if (!strcmp(d->method, "GET") || !strcmp(d->method, "HEAD"))
            return eddy_err_set(err, EDDY_EINVAL, "a %s request has no body", d->method);
        if (json_is_array(v)) {
            json_array_foreach(v, i,
                               x) if (!json_is_string(x) ||
                                      use_param(schema, used, json_string_value(x), 0, "body", err))
            {
                return json_is_string(x) ? err->code
                                         : eddy_err_set(err, EDDY_EINVAL,
                                                        "'body' must be a list of parameter "
                                                        "names or a JSON template object");
            }
        } else if (!json_is_object(v)) {
            return eddy_err_set(err, EDDY_EINVAL,
                                "'body' must be a list of parameter names or a JSON template "
                                "object");
        } else if (use_body(schema, used, v, err)) {
            return err->code;
        }
        d->body = json_incref(v);
    }
    if ((v = json_object_get(cfg, "allow"))) {
        if (!json_is_array(v))
            return eddy_err_set(err, EDDY_EINVAL, "'allow' must be a list of host or host:port");
        json_array_foreach(v, i, x)
        {
            json_t *e = json_is_string(x) ? eddy_http_allow_entry(json_string_value(x), err) : NULL;
            if (!e)
                return json_is_string(x) ? err->code
                                         : eddy_err_set(err, EDDY_EINVAL,
                                                        "'allow' must be a list of host or "
                                                        "host:port");
            if (json_array_append_new(d->allow, e))
                return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
    }
    return 0;
}

static int req_call(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err);

int eddy__http_tool_new(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t, eddy_err *err)
{
    static const char *const kKeys[] = {
        "name", "description", "method",  "url",          "params",        "query", "headers",
        "body", "allow",       "timeout", "max_response", "max_redirects", NULL};
    const char *k;
    json_t *v, *schema = NULL, *used = json_object();
    req_tool *d = eddy_calloc(1, sizeof(*d));
    int rc = 0;
    (void)modcfg;
    if (!d || !used || !(d->allow = json_array())) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    json_object_foreach((json_t *)cfg, k, v)
    {
        int i;
        for (i = 0; kKeys[i] && strcmp(kKeys[i], k); i++)
            ;
        if (!kKeys[i]) {
            rc = eddy_err_set(err, EDDY_EINVAL,
                              "unknown key '%s' (known: name, description, method, url, params, "
                              "query, headers, body, allow, timeout, max_response, max_redirects)",
                              k);
            goto out;
        }
    }
    if (!json_is_string(json_object_get(cfg, "url"))) {
        rc = eddy_err_set(err, EDDY_EINVAL,
                          "'url' is required (\"https://api.example.com/x/{id}\")");
        goto out;
    }
    v = json_object_get(cfg, "method");
    if (!(d->method = eddy__http_method(v ? json_string_value(v) : "GET"))) {
        rc = eddy_err_set(err, EDDY_EINVAL,
                          "'method' must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS");
        goto out;
    }
    d->name = eddy_strdup(json_string_value(json_object_get(cfg, "name"))
                              ? json_string_value(json_object_get(cfg, "name"))
                              : "http_request");
    d->url = eddy_strdup(json_string_value(json_object_get(cfg, "url")));
    if (!d->name || !d->url) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(d->where, sizeof(d->where), "the hosts tool '%s' may call (its url's host and allow:)",
             d->name);
    d->max_redirects = EDDY_HTTP_DEFAULT_REDIRECTS;
    d->max_response = TOOL_DEFAULT_MAX_RESPONSE;
    d->timeout_ms = EDDY_HTTP_DEFAULT_TIMEOUT_MS;
    if ((v = json_object_get(cfg, "max_redirects")) &&
        (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 20)) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'max_redirects' must be 0 to 20");
        goto out;
    }
    if (v)
        d->max_redirects = (int)json_integer_value(v);
    if ((v = json_object_get(cfg, "max_response")) && parse_size(v, &d->max_response)) {
        rc = eddy_err_set(err, EDDY_EINVAL,
                          "'max_response' must be a size such as 256KiB (up to "
                          "1GiB)");
        goto out;
    }
    if ((v = json_object_get(cfg, "timeout")) && parse_ms(v, &d->timeout_ms)) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'timeout' must be a duration such as 5s");
        goto out;
    }
    if (!(schema = params_schema(json_object_get(cfg, "params"), err))) {
        rc = err->code;
        goto out;
    }
    if ((rc = check_url(d, schema, used, err)) || (rc = load_lists(d, cfg, schema, used, err)))
        goto out;
    json_object_foreach(json_object_get(schema, "properties"), k, v) if (!json_object_get(used, k))
    {
        rc = eddy_err_set(err, EDDY_EINVAL,
                          "parameter '%s' is used nowhere: name it in the url as {%s}, in query "
                          "or in body",
                          k, k);
        goto out;
    }
    v = json_object_get(cfg, "description");
    t->description = json_is_string(v) ? eddy_strdup(json_string_value(v))
                                       : eddy_aprintf("Calls %s %s; answers {\"status\": ..., "
                                                      "\"json\": ...} or {\"status\": ..., "
                                                      "\"body\": \"...\"}.",
                                                      d->method, d->url);
    t->name = eddy_strdup(d->name);
    if (!t->description || !t->name) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    t->params = schema;
    schema = NULL;
    t->call = req_call;
    t->data = d;
    t->free_data = req_tool_free;
    d = NULL;
out:
    json_decref(used);
    json_decref(schema);
    req_tool_free(d);
    return rc;
}

/* The body template T with "{name}" strings replaced by ARGS' values (absent
 * optional ones dropped); a new value. */
static json_t *fill_body(json_t *t, json_t *args)
{
    const char *s = json_string_value(t), *k;
    json_t *out, *x;
    size_t i;
    if (s && s[0] == '{' && strlen(s) > 2 && s[strlen(s) - 1] == '}') {
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)strlen(s) - 2, s + 1);
        x = json_object_get(args, name);
        return x ? json_deep_copy(x) : NULL;
    }
    if (json_is_object(t)) {
        out = json_object();
        json_object_foreach(t, k, x)
        {
            json_t *v = fill_body(x, args);
            if (v)
                json_object_set_new(out, k, v);
        }
        return out;
    }
    if (json_is_array(t)) {
        out = json_array();
        json_array_foreach(t, i, x)
        {
            json_t *v = fill_body(x, args);
            json_array_append_new(out, v ? v : json_null());
        }
        return out;
    }
    return json_deep_copy(t);
}

static int req_call(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    req_tool *d = data;
    eddy_http_policy p = {d->name,          d->where,        d->allow,
                          d->max_redirects, d->max_response, d->timeout_ms};
    eddy_http_spec sp;
    eddy_buf url;
    char *path = eddy__http_expand(d->url, args, err), *body = NULL;
    json_t *x, *b = NULL;
    size_t i;
    int rc;
    if (!path)
        return err->code;
    eddy_buf_init(&url);
    eddy_buf_puts(&url, path);
    json_array_foreach(d->query, i, x)
    {
        const char *name = json_string_value(x);
        json_t *v = json_object_get(args, name);
        char *text;
        if (!v || json_is_null(v))
            continue;
        text = json_is_string(v) ? NULL : eddy_json_key_string(v);
        eddy_buf_putc(&url, strchr(url.data, '?') ? '&' : '?');
        eddy__http_pct_encode(&url, name, strlen(name));
        eddy_buf_putc(&url, '=');
        if (json_is_string(v))
            eddy__http_pct_encode(&url, json_string_value(v), json_string_length(v));
        else if (text)
            eddy__http_pct_encode(&url, text, strlen(text));
        eddy_free(text);
    }
    if (json_is_array(d->body)) {
        b = json_object();
        json_array_foreach(d->body, i, x)
        {
            json_t *v = json_object_get(args, json_string_value(x));
            if (v)
                json_object_set(b, json_string_value(x), v);
        }
    } else if (d->body) {
        b = fill_body(d->body, args);
    }
    if (b && !(body = eddy_json_dumps_flags(b, JSON_COMPACT | JSON_ENCODE_ANY)))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    else if (url.oom)
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    else {
        memset(&sp, 0, sizeof(sp));
        sp.method = d->method;
        sp.url = url.data;
        sp.headers = d->headers;
        sp.body = body;
        sp.body_len = body ? strlen(body) : 0;
        sp.json_body = body != NULL;
        sp.tool_result = 1;
        rc = eddy__http_start(state, &p, &sp, w, err);
    }
    json_decref(b);
    eddy_free(body);
    eddy_free(path);
    eddy_buf_free(&url);
    return rc;
}

/* -- current_time ---------------------------------------------------------------------- */

static int time_call(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    struct timespec ts;
    struct tm tm;
    char text[64];
    json_t *r;
    (void)state;
    (void)data;
    (void)args;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    r = json_pack("{s:s, s:I}", "utc", text, "unix_ms",
                  (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    eddy_tool_wait_done(w, 0, r, NULL);
    return 0;
}

static int time_tool_new(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t,
                         eddy_err *err)
{
    const char *k, *name = json_string_value(json_object_get(cfg, "name"));
    const char *desc = json_string_value(json_object_get(cfg, "description"));
    json_t *v;
    (void)modcfg;
    json_object_foreach((json_t *)cfg, k, v)
    {
        if (strcmp(k, "name") && strcmp(k, "description"))
            return eddy_err_set(err, EDDY_EINVAL, "unknown key '%s' (known: name, description)", k);
        if (!json_is_string(v))
            return eddy_err_set(err, EDDY_EINVAL, "'%s' must be a string", k);
    }
    t->name = eddy_strdup(name ? name : "current_time");
    t->description = eddy_strdup(desc ? desc
                                      : "The current date and time: {\"utc\": ISO-8601 with "
                                        "milliseconds, \"unix_ms\": milliseconds since 1970}.");
    t->params = json_pack("{s:s, s:{}, s:[], s:b}", "type", "object", "properties", "required",
                          "additionalProperties", 0);
    t->call = time_call;
    if (!t->name || !t->description || !t->params)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return 0;
}

static const eddy_tools_module time_module = {"time", NULL,           NULL,
                                              NULL,   "current_time", time_tool_new};

int eddy_tools_register_builtins(void)
{
    int rc = eddy_tools_register_module(eddy__http_module());
    int rc2 = eddy_tools_register_module(&time_module);
    return rc ? rc : rc2;
}
