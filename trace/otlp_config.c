/*
 * trace/otlp_config.c - where the OTLP exporter sends, and with what: the
 * job's trace.otlp settings over the standard OTEL_* variables.
 *
 * Pure (reads the environment, allocates, nothing else); the caller's thread.
 * Header values may be secrets: no message here quotes one, and they are
 * wiped before their memory is freed.
 */
#include "otlp_int.h"
#include "eddy/log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_QUEUE 10000
#define DEFAULT_MAX_BATCH 512
#define DEFAULT_DELAY_MS 1000
#define FLUSH_MS 5000

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The N bytes at S, trimmed and percent-decoded, as a new string; NULL when
 * out of memory. */
static char *decode_trimmed(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    char *out = eddy_malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 &&
            (l = hexval(s[i + 2])) >= 0) {
            *o++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* A header name: an HTTP token, no CR/LF (so nothing can be smuggled in). */
static int valid_name(const char *k)
{
    if (!*k)
        return 0;
    for (; *k; k++)
        if (!(isalnum((unsigned char)*k) || strchr("!#$%&'*+-.^_`|~", *k)))
            return 0;
    return 1;
}

static int valid_value(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n' || *v == '\0')
            return 0;
    return 1;
}

/* Set header NAME to VALUE in C->headers, replacing one of the same name
 * (names compare without case). WHERE names the setting for errors, which
 * never quote the value. */
static int put_header(eddy__otlp_config *c, const char *name, const char *value, const char *where,
                      eddy_err *err)
{
    size_t n = 0, nl = strlen(name);
    if (!valid_name(name))
        return eddy_err_set(err, EDDY_EINVAL, "%s: '%s' is not a valid header name", where, name);
    if (!valid_value(value))
        return eddy_err_set(err, EDDY_EINVAL, "%s: the value of header '%s' has a line break",
                            where, name);
    char *line = eddy_aprintf("%s: %s", name, value);
    if (!line)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (; c->headers && c->headers[n]; n++)
        if (!strncasecmp(c->headers[n], name, nl) && c->headers[n][nl] == ':') {
            eddy_free(c->headers[n]);
            c->headers[n] = line;
            return 0;
        }
    char **h = eddy_realloc(c->headers, (n + 2) * sizeof(*h));
    if (!h) {
        eddy_free(line);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    h[n] = line;
    h[n + 1] = NULL;
    c->headers = h;
    return 0;
}

/* OTEL_EXPORTER_OTLP_HEADERS' form: "k=v,k2=v2", values percent-encoded. */
static int env_headers(eddy__otlp_config *c, const char *var, eddy_err *err)
{
    const char *s = env(var);
    int rc = 0;
    while (s && *s && !rc) {
        const char *end = strchr(s, ','), *eq;
        size_t len = end ? (size_t)(end - s) : strlen(s);
        eq = memchr(s, '=', len);
        if (!eq) {
            /* an entry without '=': skipped, as the SDKs do; its text is not shown */
            int blank = 1;
            for (size_t i = 0; i < len; i++)
                blank &= isspace((unsigned char)s[i]) != 0;
            if (!blank)
                EDDY_WARN("trace", "%s: an entry has no '=', ignored", var);
        } else {
            char *k = decode_trimmed(s, (size_t)(eq - s));
            char *v = decode_trimmed(eq + 1, len - (size_t)(eq - s) - 1);
            rc = k && v ? put_header(c, k, v, var, err)
                        : eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            eddy_free(k);
            eddy_free(v);
        }
        s = end ? end + 1 : NULL;
    }
    return rc;
}

/* A positive integer from environment variable NAME, or DEF (a bad one is
 * reported and ignored). */
static int64_t env_int(const char *name, int64_t def, int64_t max)
{
    const char *s = env(name);
    int64_t v;
    if (!s)
        return def;
    if (eddy_parse_i64(s, &v) || v < 1 || v > max) {
        EDDY_WARN("trace", "%s=%s: not an integer from 1 to %lld, ignored", name, s,
                  (long long)max);
        return def;
    }
    return v;
}

static int valid_url(const char *u)
{
    return !strncmp(u, "http://", 7) || !strncmp(u, "https://", 8);
}

int eddy__otlp_config_load(const eddy_trace_opts *opts, eddy__otlp_config *c, eddy_err *err)
{
    const char *traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const char *base = env("OTEL_EXPORTER_OTLP_ENDPOINT"), *svc = env("OTEL_SERVICE_NAME");
    const char *exporter = env("OTEL_TRACES_EXPORTER");
    int rc = 0, env_ok = !exporter || strcmp(exporter, "none");
    memset(c, 0, sizeof(*c));
    c->timeout_ms =
        opts && opts->otlp_timeout_ms > 0
            ? opts->otlp_timeout_ms
            : env_int("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                      env_int("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_TIMEOUT_MS, 86400000),
                      86400000);
    c->max_queue = (size_t)env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE, 10000000);
    c->max_batch = (size_t)env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_BATCH, 100000);
    c->delay_ms = env_int("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_DELAY_MS, 3600000);
    c->flush_ms = FLUSH_MS;
    if (opts && opts->otlp_endpoint) {
        c->url = eddy_strdup(opts->otlp_endpoint);
    } else if (env_ok && traces) {
        c->url = eddy_strdup(traces);
    } else if (env_ok && base) {
        size_t n = strlen(base);
        c->url = eddy_aprintf("%.*s/v1/traces", (int)(n && base[n - 1] == '/' ? n - 1 : n), base);
    } else {
        return 0; /* nothing to export */
    }
    if (!c->url || !(c->service_name = eddy_strdup(svc ? svc : "eddy")))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!valid_url(c->url))
        return eddy_err_set(err, EDDY_EINVAL,
                            "%s: the OTLP endpoint must be an http:// or "
                            "https:// URL, not '%s'",
                            opts && opts->otlp_endpoint ? "trace.otlp.endpoint"
                            : traces                    ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                                                        : "OTEL_EXPORTER_OTLP_ENDPOINT",
                            c->url);
    if (env_ok && ((rc = env_headers(c, "OTEL_EXPORTER_OTLP_HEADERS", err)) ||
                   (rc = env_headers(c, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", err))))
        return rc;
    const char *k;
    json_t *v;
    json_object_foreach(opts ? opts->otlp_headers : NULL, k, v)
    {
        if (!json_is_string(v))
            continue; /* the job loader reported it */
        if ((rc = put_header(c, k, json_string_value(v), "trace.otlp.headers", err)))
            return rc;
    }
    return 0;
}

void eddy__otlp_config_free(eddy__otlp_config *c)
{
    for (size_t i = 0; c->headers && c->headers[i]; i++) {
        /* the values may be secrets: not left behind in freed memory */
        memset(c->headers[i], 0, strlen(c->headers[i]));
        eddy_free(c->headers[i]);
    }
    eddy_free(c->headers);
    eddy_free(c->url);
    eddy_free(c->service_name);
    memset(c, 0, sizeof(*c));
}
