/*
 * trace/otlp_encode.c - spans as an OTLP/JSON ExportTraceServiceRequest.
 *
 * Written straight into an eddy_buf with the JSON string escaper; the only
 * jansson tree is the parsed attributes of the span being written. Ids are
 * the store's lowercase hex, times decimal strings, kinds OTLP's numbers, and
 * attribute values typed AnyValues (intValue as a string, as proto3 JSON
 * writes int64). Pure; any thread.
 */
#include "otlp_int.h"
#include "eddy/json.h"
#include "eddy/version.h"

#include <stdio.h>
#include <string.h>

#define ATTR_MAX_DEPTH 32 /* deeper values are sent as their JSON text */

static void put_lit(eddy_buf *b, const char *s)
{
    eddy_buf_append(b, s, strlen(s));
}

static void put_str(eddy_buf *b, const char *s, size_t n)
{
    if (eddy_json_put_string(b, s, n) == EDDY_EINVAL)
        eddy_json_put_string(b, "\xef\xbf\xbd", 3); /* invalid UTF-8: U+FFFD */
}

static void put_any(eddy_buf *b, const json_t *v, int depth);

/* [{"key":K,"value":ANY},...] of object O (null members left out). */
static void put_kvs(eddy_buf *b, const json_t *o, int depth)
{
    const char *k;
    json_t *v;
    int n = 0;
    eddy_buf_putc(b, '[');
    json_object_foreach((json_t *)o, k, v)
    {
        if (json_is_null(v))
            continue;
        if (n++)
            eddy_buf_putc(b, ',');
        put_lit(b, "{\"key\":");
        put_str(b, k, strlen(k));
        put_lit(b, ",\"value\":");
        put_any(b, v, depth + 1);
        eddy_buf_putc(b, '}');
    }
    eddy_buf_putc(b, ']');
}

/* V as an OTLP AnyValue. Recursion is bounded by ATTR_MAX_DEPTH: deeper
 * values go as their JSON text. */
static void put_any(eddy_buf *b, const json_t *v, int depth)
{
    char num[EDDY_JSON_NUMBER_MAX];
    size_t i;
    json_t *x;
    if (depth > ATTR_MAX_DEPTH && (json_is_array(v) || json_is_object(v))) {
        char *t = eddy_json_dumps(v);
        put_lit(b, "{\"stringValue\":");
        put_str(b, t ? t : "", t ? strlen(t) : 0);
        eddy_buf_putc(b, '}');
        eddy_free(t);
        return;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_lit(b, "{\"stringValue\":");
        put_str(b, json_string_value(v), json_string_length(v));
        eddy_buf_putc(b, '}');
        break;
    case JSON_INTEGER:
        put_lit(b, "{\"intValue\":\"");
        eddy_buf_append(b, num, eddy_json_integer_text(json_integer_value(v), num));
        put_lit(b, "\"}");
        break;
    case JSON_REAL:
        put_lit(b, "{\"doubleValue\":");
        eddy_buf_append(b, num, eddy_json_number_text(json_real_value(v), num));
        eddy_buf_putc(b, '}');
        break;
    case JSON_TRUE:
        put_lit(b, "{\"boolValue\":true}");
        break;
    case JSON_FALSE:
        put_lit(b, "{\"boolValue\":false}");
        break;
    case JSON_ARRAY:
        put_lit(b, "{\"arrayValue\":{\"values\":[");
        json_array_foreach(v, i, x)
        {
            if (i)
                eddy_buf_putc(b, ',');
            put_any(b, x, depth + 1);
        }
        put_lit(b, "]}}");
        break;
    case JSON_OBJECT:
        put_lit(b, "{\"kvlistValue\":{\"values\":");
        put_kvs(b, v, depth);
        put_lit(b, "}}");
        break;
    default:
        put_lit(b, "{}"); /* null inside an array: an empty AnyValue */
        break;
    }
}

static void put_ns(eddy_buf *b, const char *key, uint64_t ns)
{
    char num[EDDY_JSON_NUMBER_MAX];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)ns);
    put_lit(b, key);
    eddy_buf_putc(b, '"');
    eddy_buf_append(b, num, (size_t)n);
    eddy_buf_putc(b, '"');
}

static void put_span(eddy_buf *b, const eddy__otlp_span *sp)
{
    json_error_t je;
    json_t *attrs = json_loadb(sp->attrs, sp->attrs_len, JSON_ALLOW_NUL, &je);
    int kind = sp->kind >= 1 && sp->kind <= 5 ? sp->kind : 1;
    put_lit(b, "{\"traceId\":\"");
    put_lit(b, sp->trace_id);
    put_lit(b, "\",\"spanId\":\"");
    put_lit(b, sp->span_id);
    eddy_buf_putc(b, '"');
    if (sp->parent_id && sp->parent_id[0]) {
        put_lit(b, ",\"parentSpanId\":\"");
        put_lit(b, sp->parent_id);
        eddy_buf_putc(b, '"');
    }
    put_lit(b, ",\"name\":");
    put_str(b, sp->name, strlen(sp->name));
    eddy_buf_printf(b, ",\"kind\":%d", kind);
    put_ns(b, ",\"startTimeUnixNano\":", sp->start_ns);
    put_ns(b, ",\"endTimeUnixNano\":", sp->end_ns);
    put_lit(b, ",\"attributes\":");
    if (json_is_object(attrs)) {
        put_kvs(b, attrs, 0);
    } else { /* cannot happen with the store's text, but nothing is lost if it does */
        put_lit(b, "[{\"key\":\"eddy.attributes\",\"value\":{\"stringValue\":");
        put_str(b, sp->attrs, sp->attrs_len);
        put_lit(b, "}}]");
    }
    json_decref(attrs);
    if (sp->error) {
        put_lit(b, ",\"status\":{\"code\":2,\"message\":");
        put_str(b, sp->error, strlen(sp->error));
        put_lit(b, "}}");
    } else {
        put_lit(b, ",\"status\":{\"code\":1}}");
    }
}

int eddy__otlp_encode(eddy_buf *b, const char *service_name, const eddy__otlp_span *const *spans,
                      size_t n)
{
    put_lit(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
               "\"value\":{\"stringValue\":");
    put_str(b, service_name, strlen(service_name));
    put_lit(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"eddy\",\"version\":\"" EDDY_VERSION
               "\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            eddy_buf_putc(b, ',');
        put_span(b, spans[i]);
    }
    put_lit(b, "]}]}]}");
    return b->oom ? EDDY_ENOMEM : 0;
}
