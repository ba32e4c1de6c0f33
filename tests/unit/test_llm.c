/* tests/unit/test_llm.c - request building, response parsing, retry decisions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "eddy/buf.h"
#include "eddy/llm.h"

static eddy_llm_model model(void)
{
    eddy_llm_model m;
    memset(&m, 0, sizeof(m));
    m.model = "gpt-test";
    m.max_attempts = 5;
    m.backoff_base_ms = 500;
    m.backoff_cap_ms = 8000;
    return m;
}

static void test_build(void **state)
{
    eddy_llm_model m = model();
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"t\"}}]", 0, NULL);
    json_t *body;
    (void)state;
    m.max_tokens = 100;
    m.temperature = 0.25;
    m.has_temperature = 1;
    body = eddy_llm_build_openai(&m, msgs, tools);
    assert_string_equal(json_string_value(json_object_get(body, "model")), "gpt-test");
    assert_true(json_equal(json_object_get(body, "messages"), msgs));
    assert_true(json_equal(json_object_get(body, "tools"), tools));
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 100);
    assert_true(json_real_value(json_object_get(body, "temperature")) == 0.25);
    json_decref(body);
    json_decref(tools);
    tools = json_array();
    body = eddy_llm_build_openai(&m, msgs, tools); /* no tools: no "tools" key */
    assert_null(json_object_get(body, "tools"));
    json_decref(body);
    json_decref(msgs);
    json_decref(tools);
}

static void test_parse_tool_calls_and_usage(void **state)
{
    static const char body[] =
        "{\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\","
        "\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"id\\\":7}\"}},{\"id\":\"call_b\","
        "\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{bad\"}}]},"
        "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":12,"
        "\"completion_tokens\":5,\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":"
        "4}}}";
    eddy_llm_response r;
    eddy_err e;
    json_t *tc;
    (void)state;
    assert_int_equal(eddy_llm_parse_openai(body, strlen(body), &r, &e), 0);
    assert_string_equal(r.finish_reason, "tool_calls");
    assert_string_equal(r.model, "gpt-x");
    assert_null(r.content);
    assert_int_equal(r.usage.input_tokens, 12);
    assert_int_equal(r.usage.output_tokens, 5);
    assert_int_equal(r.usage.total_tokens, 17);
    assert_int_equal(r.usage.cached_tokens, 4);
    assert_int_equal(json_array_size(r.tool_calls), 2);
    tc = json_array_get(r.tool_calls, 0);
    assert_string_equal(json_string_value(json_object_get(tc, "id")), "call_a");
    assert_string_equal(json_string_value(json_object_get(tc, "name")), "lookup");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(tc, "arguments"), "id")),
                     7);
    tc = json_array_get(r.tool_calls, 1); /* invalid arguments: kept, flagged, not fatal */
    assert_true(json_is_null(json_object_get(tc, "arguments")));
    assert_non_null(strstr(json_string_value(json_object_get(tc, "error")), "not valid JSON"));
    assert_string_equal(json_string_value(json_object_get(tc, "arguments_raw")), "{bad");
    /* the assistant message goes back into the conversation as sent */
    assert_int_equal(json_array_size(json_object_get(r.message, "tool_calls")), 2);
    assert_true(json_is_null(json_object_get(r.message, "content")));
    eddy_llm_response_clear(&r);
}

static void test_parse_text_and_errors(void **state)
{
    static const char ok[] = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                             "\"hello\"},\"finish_reason\":\"stop\"}]}";
    static const char err[] = "{\"error\":{\"message\":\"Invalid model\",\"code\":\"x\"}}";
    eddy_llm_response r;
    eddy_err e;
    (void)state;
    assert_int_equal(eddy_llm_parse_openai(ok, strlen(ok), &r, &e), 0);
    assert_string_equal(r.content, "hello");
    assert_int_equal(json_array_size(r.tool_calls), 0);
    assert_int_equal(r.usage.total_tokens, 0);
    eddy_llm_response_clear(&r);
    assert_int_equal(eddy_llm_parse_openai(err, strlen(err), &r, &e), EDDY_ELLM);
    assert_non_null(strstr(e.msg, "Invalid model"));
    assert_int_equal(eddy_llm_parse_openai("{\"choices\":", 11, &r, &e), EDDY_EPARSE);
    assert_int_equal(eddy_llm_parse_openai("{\"choices\":[]}", 14, &r, &e), EDDY_EPARSE);
}

static void test_retry_decisions(void **state)
{
    eddy_llm_model m = model();
    (void)state;
    /* retryable: connection errors, 408, 409, 429, 5xx (529 too) */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 0, 1, NULL, NULL, NULL, 0), 500);
    assert_int_equal(eddy_llm_retry_delay(&m, 2, 503, 0, NULL, NULL, NULL, 0), 1000);
    assert_int_equal(eddy_llm_retry_delay(&m, 3, 529, 0, NULL, NULL, NULL, 0), 2000);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 408, 0, NULL, NULL, NULL, 0), 500);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 409, 0, NULL, NULL, NULL, 0), 500);
    /* not retryable */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 400, 0, NULL, NULL, NULL, 0), -1);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 401, 0, NULL, NULL, NULL, 0), -1);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, NULL, "insufficient_quota", 0), -1);
    /* attempts exhausted */
    assert_int_equal(eddy_llm_retry_delay(&m, 5, 503, 0, NULL, NULL, NULL, 0), -1);
    /* cap and jitter: at most 25% below the capped delay */
    m.max_attempts = 20;
    assert_int_equal(eddy_llm_retry_delay(&m, 10, 500, 0, NULL, NULL, NULL, 0), 8000);
    assert_int_equal(eddy_llm_retry_delay(&m, 10, 500, 0, NULL, NULL, NULL, 0.999), 6002);
    /* server hints: retry-after-ms first, then retry-after seconds */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, "1234", "9", NULL, 0.5), 1234);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "3", NULL, 0.5), 3000);
    assert_int_equal(
        eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "Wed, 21 Oct 2015 07:28:00 GMT", NULL, 0),
        0); /* a date in the past: at once */
    /* absurd hints fall back to backoff */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "86400", NULL, 0), 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_parse_tool_calls_and_usage),
        cmocka_unit_test(test_parse_text_and_errors),
        cmocka_unit_test(test_retry_decisions),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("llm", tests, NULL, NULL);
}
