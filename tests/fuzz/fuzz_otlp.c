/*
 * tests/fuzz/fuzz_otlp.c - the OTLP exporter's two parsers: the
 * OTEL_EXPORTER_OTLP_HEADERS value (trace/otlp_config.c) and a span's
 * attribute text turned into OTLP/JSON (trace/otlp_encode.c). The first
 * byte picks which.
 *
 * Headers: the load succeeds or says EDDY_EINVAL, and every header it keeps
 * is "name: value" with a token name and no CR or LF (nothing can be
 * smuggled into the request). Encoding: whatever the attribute text, name
 * and error message, the body is one JSON document jansson reads, with the
 * span's ids and one attribute per non-null member of the text when that is
 * a JSON object. Any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../trace/otlp_int.h"
#include "eddy/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void headers(const char *text)
{
    eddy__otlp_config c;
    eddy_err e;
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", text, 1);
    int rc = eddy__otlp_config_load(NULL, &c, &e);
    if (rc && rc != EDDY_EINVAL && rc != EDDY_ENOMEM)
        abort();
    for (size_t i = 0; !rc && c.headers && c.headers[i]; i++) {
        const char *h = c.headers[i], *colon = strchr(h, ':');
        if (!colon || colon == h || colon[1] != ' ' || strpbrk(h, "\r\n"))
            abort();
        for (const char *q = h; q < colon; q++)
            if (*q <= ' ' || *q >= 127)
                abort();
    }
    eddy__otlp_config_free(&c);
    unsetenv("OTEL_EXPORTER_OTLP_HEADERS");
}

static size_t non_null_members(json_t *o)
{
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach(o, k, v) n += !json_is_null(v);
    return n;
}

static void encode(const char *text, size_t n)
{
    eddy__otlp_span sp = {"0123456789abcdef0123456789abcdef",
                          "0123456789abcdef",
                          n & 1 ? "fedcba9876543210" : "",
                          text,
                          n & 2 ? text : NULL,
                          (int)(n % 7),
                          (uint64_t)n,
                          (uint64_t)n * 3,
                          text,
                          n};
    const eddy__otlp_span *v[] = {&sp, &sp};
    eddy_buf b;
    eddy_buf_init(&b);
    if (eddy__otlp_encode(&b, text, v, 2)) {
        eddy_buf_free(&b);
        return;
    }
    json_t *doc = json_loadb(b.data, b.len, 0, NULL);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    json_t *s = json_array_get(spans, 1);
    if (!doc || json_array_size(spans) != 2 ||
        strcmp(json_string_value(json_object_get(s, "spanId")), sp.span_id) ||
        !json_is_array(json_object_get(s, "attributes")))
        abort();
    json_t *in = json_loadb(text, n, JSON_ALLOW_NUL, NULL);
    if (json_is_object(in) &&
        json_array_size(json_object_get(s, "attributes")) != non_null_members(in))
        abort();
    json_decref(in);
    json_decref(doc);
    eddy_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1) {
        if (!memchr(data + 1, '\0', size - 1))
            headers(text);
    } else if (!memchr(data + 1, '\0', size - 1)) {
        encode(text, size - 1);
    }
    free(text);
    return 0;
}
