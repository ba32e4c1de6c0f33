/*
 * tests/unit/test_otlp.c - the OTLP/JSON encoding of spans and the exporter's
 * settings (job over environment). No network: the exporter's thread, its
 * retries and its queue are tested against real receivers by
 * tests/integration/otlp_test.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../trace/otlp_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"

static const char *const kEnv[] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",  "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",  "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",           "OTEL_TRACES_EXPORTER",
    "OTEL_BSP_MAX_QUEUE_SIZE",     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",     NULL};

static int clear_env(void **state)
{
    (void)state;
    for (int i = 0; kEnv[i]; i++)
        unsetenv(kEnv[i]);
    return 0;
}

/* The attribute KEY's AnyValue in the OTLP attribute list A; NULL if absent. */
static json_t *attr(json_t *a, const char *key)
{
    size_t i;
    json_t *kv;
    json_array_foreach(a, i, kv) if (!strcmp(json_string_value(json_object_get(kv, "key")),
                                             key)) return json_object_get(kv, "value");
    return NULL;
}

static void test_encode(void **state)
{
    (void)state;
    const char *attrs = "{\"gen_ai.operation.name\":\"chat\",\"gen_ai.usage.input_tokens\":12,"
                        "\"gen_ai.request.temperature\":0.5,\"ok\":true,\"no\":false,"
                        "\"gen_ai.response.finish_reasons\":[\"stop\",1],\"gone\":null,"
                        "\"obj\":{\"a\":\"b\",\"n\":[null]},\"esc\":\"q\\\"\\n\\u00e9\"}";
    eddy__otlp_span root = {"0123456789abcdef0123456789abcdef",
                            "00000000000000aa",
                            "",
                            "invoke_agent triage",
                            NULL,
                            1,
                            1700000000000000001ull,
                            18446744073709551615ull,
                            "{}",
                            2};
    eddy__otlp_span child = {"0123456789abcdef0123456789abcdef",
                             "00000000000000bb",
                             "00000000000000aa",
                             "chat gpt-x",
                             "HTTP 500 \"boom\"",
                             3,
                             5,
                             6,
                             attrs,
                             strlen(attrs)};
    const eddy__otlp_span *v[] = {&root, &child};
    eddy_buf b;
    eddy_buf_init(&b);
    assert_int_equal(eddy__otlp_encode(&b, "svc \"x\"", v, 2), 0);
    json_error_t je;
    json_t *doc = json_loads(b.data, 0, &je);
    assert_non_null(doc);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *svc =
        attr(json_object_get(json_object_get(rs, "resource"), "attributes"), "service.name");
    assert_string_equal(json_string_value(json_object_get(svc, "stringValue")), "svc \"x\"");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")),
                        "eddy");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *r = json_array_get(spans, 0), *c = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(r, "traceId")), root.trace_id);
    assert_string_equal(json_string_value(json_object_get(r, "spanId")), "00000000000000aa");
    assert_null(json_object_get(r, "parentSpanId")); /* a root has none, not "" */
    assert_int_equal(json_integer_value(json_object_get(r, "kind")), 1);
    assert_string_equal(json_string_value(json_object_get(r, "startTimeUnixNano")),
                        "1700000000000000001");
    assert_string_equal(json_string_value(json_object_get(r, "endTimeUnixNano")),
                        "18446744073709551615");
    assert_int_equal(json_array_size(json_object_get(r, "attributes")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "status"), "code")), 1);

    assert_string_equal(json_string_value(json_object_get(c, "parentSpanId")), "00000000000000aa");
    assert_string_equal(json_string_value(json_object_get(c, "name")), "chat gpt-x");
    assert_int_equal(json_integer_value(json_object_get(c, "kind")), 3);
    json_t *st = json_object_get(c, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "HTTP 500 \"boom\"");
    json_t *a = json_object_get(c, "attributes");
    assert_int_equal(json_array_size(a), 8); /* "gone" (null) is left out */
    assert_null(attr(a, "gone"));
    assert_string_equal(
        json_string_value(json_object_get(attr(a, "gen_ai.operation.name"), "stringValue")),
        "chat");
    /* intValue is a decimal string (int64 in proto3 JSON) */
    assert_string_equal(
        json_string_value(json_object_get(attr(a, "gen_ai.usage.input_tokens"), "intValue")), "12");
    assert_true(json_real_value(
                    json_object_get(attr(a, "gen_ai.request.temperature"), "doubleValue")) == 0.5);
    assert_true(json_is_true(json_object_get(attr(a, "ok"), "boolValue")));
    assert_true(json_is_false(json_object_get(attr(a, "no"), "boolValue")));
    json_t *arr = json_object_get(
        json_object_get(attr(a, "gen_ai.response.finish_reasons"), "arrayValue"), "values");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "stringValue")),
                        "stop");
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "intValue")),
                        "1");
    json_t *kv = json_object_get(json_object_get(attr(a, "obj"), "kvlistValue"), "values");
    assert_string_equal(json_string_value(json_object_get(attr(kv, "a"), "stringValue")), "b");
    json_t *inner = json_object_get(json_object_get(attr(kv, "n"), "arrayValue"), "values");
    assert_int_equal(json_object_size(json_array_get(inner, 0)), 0); /* null: empty AnyValue */
    assert_string_equal(json_string_value(json_object_get(attr(a, "esc"), "stringValue")),
                        "q\"\n\xc3\xa9");
    json_decref(doc);
    eddy_buf_free(&b);
}

static void test_encode_bad_attrs_kept_as_text(void **state)
{
    (void)state;
    const char *bad = "{\"big\":123456789012345678901234567890}"; /* jansson: out of range */
    eddy__otlp_span sp = {"0123456789abcdef0123456789abcdef",
                          "00000000000000aa",
                          "",
                          "x",
                          NULL,
                          1,
                          1,
                          2,
                          bad,
                          strlen(bad)};
    const eddy__otlp_span *v[] = {&sp};
    eddy_buf b;
    eddy_buf_init(&b);
    assert_int_equal(eddy__otlp_encode(&b, "eddy", v, 1), 0);
    json_t *doc = json_loads(b.data, 0, NULL);
    assert_non_null(doc);
    json_t *s = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    json_t *t = attr(json_object_get(s, "attributes"), "eddy.attributes");
    assert_string_equal(json_string_value(json_object_get(t, "stringValue")), bad);
    json_decref(doc);
    eddy_buf_free(&b);
}

static void test_config_none(void **state)
{
    (void)state;
    eddy__otlp_config c;
    eddy_err err = {0};
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), 0);
    assert_null(c.url);
    eddy__otlp_config_free(&c);
}

static void test_config_env(void **state)
{
    (void)state;
    eddy__otlp_config c;
    eddy_err err = {0};
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", " Authorization = Bearer%20s%3Dcret , x-a=1,junk,", 1);
    setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-A=2", 1);
    setenv("OTEL_SERVICE_NAME", "support-bot", 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "7", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), 0);
    assert_string_equal(c.url, "http://127.0.0.1:4318/v1/traces");
    assert_string_equal(c.service_name, "support-bot");
    assert_int_equal(c.timeout_ms, 2500);
    assert_int_equal(c.max_queue, 7);
    assert_non_null(c.headers);
    assert_string_equal(c.headers[0], "Authorization: Bearer s=cret");
    assert_string_equal(c.headers[1], "X-A: 2"); /* the traces variable wins, in place */
    assert_null(c.headers[2]);
    eddy__otlp_config_free(&c);

    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4318/custom", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), 0);
    assert_string_equal(c.url, "https://collector:4318/custom"); /* used as it is */
    eddy__otlp_config_free(&c);

    setenv("OTEL_TRACES_EXPORTER", "none", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), 0);
    assert_null(c.url);
    eddy__otlp_config_free(&c);
    clear_env(NULL);
}

static void test_config_job_wins(void **state)
{
    (void)state;
    eddy__otlp_config c;
    eddy_err err = {0};
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/v1/traces", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=env-secret,x-env=1", 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
    eddy_trace_opts o = {.sample = 1,
                         .otlp_endpoint = "http://job:4318/v1/traces",
                         .otlp_headers = json_pack("{ss}", "Authorization", "job-secret"),
                         .otlp_timeout_ms = 700};
    assert_int_equal(eddy__otlp_config_load(&o, &c, &err), 0);
    assert_string_equal(c.url, "http://job:4318/v1/traces");
    assert_int_equal(c.timeout_ms, 700);
    assert_string_equal(c.headers[0], "Authorization: job-secret");
    assert_string_equal(c.headers[1], "x-env: 1");
    assert_null(c.headers[2]);
    eddy__otlp_config_free(&c);
    json_decref(o.otlp_headers);
    clear_env(NULL);
}

static void test_config_bad(void **state)
{
    (void)state;
    eddy__otlp_config c;
    eddy_err err = {0};
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://127.0.0.1:4317", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), EDDY_EINVAL);
    assert_non_null(strstr(err.msg, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    eddy__otlp_config_free(&c);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "bad name=topsecret", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), EDDY_EINVAL);
    assert_non_null(strstr(err.msg, "bad name"));
    assert_null(strstr(err.msg, "topsecret")); /* a value is never shown */
    eddy__otlp_config_free(&c);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "x=top%0d%0asecret", 1);
    assert_int_equal(eddy__otlp_config_load(NULL, &c, &err), EDDY_EINVAL);
    assert_null(strstr(err.msg, "secret"));
    eddy__otlp_config_free(&c);
    clear_env(NULL);
}

/* Out of memory at each allocation in turn: EDDY_ENOMEM (or success once
 * there are enough), never a crash; valgrind (make valgrind) finds leaks. */
static void test_out_of_memory(void **state)
{
    (void)state;
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2%203,c=x", 1);
    int ok = 0;
    for (long n = 0; n < 200 && !ok; n++) {
        eddy__otlp_config c;
        eddy_err err;
        eddy_alloc_fail_after(n);
        int rc = eddy__otlp_config_load(NULL, &c, &err);
        eddy_alloc_fail_after(-1);
        if (rc == 0) {
            ok = 1;
            assert_string_equal(c.headers[1], "b: 2 3");
        } else {
            assert_int_equal(rc, EDDY_ENOMEM);
        }
        eddy__otlp_config_free(&c);
    }
    assert_true(ok);
    clear_env(NULL);
    const char *attrs = "{\"a\":[1,{\"b\":\"c\"}],\"d\":0.25}";
    eddy__otlp_span sp = {"0123456789abcdef0123456789abcdef",
                          "00000000000000aa",
                          "",
                          "x",
                          "bad",
                          3,
                          1,
                          2,
                          attrs,
                          strlen(attrs)};
    const eddy__otlp_span *v[] = {&sp};
    ok = 0;
    for (long n = 0; n < 200 && !ok; n++) {
        eddy_buf b;
        eddy_buf_init(&b);
        eddy_alloc_fail_after(n);
        int rc = eddy__otlp_encode(&b, "eddy", v, 1);
        eddy_alloc_fail_after(-1);
        if (rc == 0) {
            json_t *doc = json_loads(b.data, 0, NULL);
            assert_non_null(doc);
            ok = strstr(b.data, "\"kvlistValue\"") != NULL; /* the attributes were parsed */
            json_decref(doc);
        } else {
            assert_int_equal(rc, EDDY_ENOMEM);
        }
        eddy_buf_free(&b);
    }
    assert_true(ok);
}

int main(void)
{
    eddy_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_encode, clear_env),
        cmocka_unit_test_setup(test_encode_bad_attrs_kept_as_text, clear_env),
        cmocka_unit_test_setup(test_config_none, clear_env),
        cmocka_unit_test_setup(test_config_env, clear_env),
        cmocka_unit_test_setup(test_config_job_wins, clear_env),
        cmocka_unit_test_setup(test_config_bad, clear_env),
        cmocka_unit_test_setup(test_out_of_memory, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
