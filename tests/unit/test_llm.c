/*
 * tests/unit/test_llm.c - the LLM layer's pure parts: golden request bodies
 * and headers per provider, plain and streamed answers parsed to the same
 * neutral response whatever the split, history upgrade, retry rules; and
 * the client's process-wide limits, two clients in two threads against a
 * small HTTP server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/llm.h"

static eddy_llm_model model_of(const char *provider)
{
    eddy_llm_model m;
    memset(&m, 0, sizeof(m));
    m.name = (char *)"default";
    m.provider = (char *)provider;
    m.prov = eddy_llm_provider_find(provider);
    m.base_url = (char *)"http://127.0.0.1:1/v1/";
    m.api_key = (char *)"sk-secret";
    m.model = (char *)"m1";
    m.timeout_ms = 1000;
    m.max_attempts = 5;
    m.max_tokens = 100;
    m.temperature = 0.5;
    m.has_temperature = 1;
    m.max_wait_ms = 60000;
    return m;
}

/* system, user, assistant (text + two calls), tool (two results, one an
 * error), assistant text, user */
static void conversation(eddy_llm_conv *c)
{
    eddy_llm_msg *m;
    memset(c, 0, sizeof(*c));
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(c, EDDY_ROLE_SYSTEM), "Be brief."), 0);
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(c, EDDY_ROLE_USER), "Where is A1?"), 0);
    m = eddy_llm_conv_add(c, EDDY_ROLE_ASSISTANT);
    assert_int_equal(eddy_llm_msg_text(m, "Checking."), 0);
    assert_int_equal(eddy_llm_msg_tool_call(m, "c1", "lookup", "{\"id\":\"A1\"}"), 0);
    assert_int_equal(eddy_llm_msg_tool_call(m, "c2", "eta", "{}"), 0);
    m = eddy_llm_conv_add(c, EDDY_ROLE_TOOL);
    assert_int_equal(eddy_llm_msg_tool_result(m, "c1", "lookup", "{\"status\":\"shipped\"}", 0), 0);
    assert_int_equal(eddy_llm_msg_tool_result(m, "c2", "eta", "error: no eta", 1), 0);
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(c, EDDY_ROLE_ASSISTANT), "Shipped."), 0);
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(c, EDDY_ROLE_USER), "Thanks"), 0);
}

static json_t *params(void)
{
    return json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties", "id", "type",
                     "string", "required", "id");
}

static void assert_json(json_t *got, const char *want_text)
{
    json_error_t je;
    json_t *want = json_loads(want_text, 0, &je);
    if (!want)
        fail_msg("bad expected JSON: %s at %d", je.text, je.column);
    if (!json_equal(got, want)) {
        char *g = eddy_json_dumps_flags(got, JSON_COMPACT | JSON_SORT_KEYS);
        char *w = eddy_json_dumps_flags(want, JSON_COMPACT | JSON_SORT_KEYS);
        print_error("got:  %s\nwant: %s\n", g, w);
        eddy_free(g);
        eddy_free(w);
        fail();
    }
    json_decref(want);
}

static void golden(const char *provider, int stream, const char *want_body,
                   const char *want_headers)
{
    eddy_llm_conv c;
    json_t *p = params();
    eddy_llm_tool_def tools[1] = {
        {.name = "lookup", .description = "Looks an order up", .parameters = p}};
    eddy_llm_model m = model_of(provider);
    eddy_llm_request rq = {
        .conv = &c, .tools = tools, .ntools = 1, .tool_choice = EDDY_TOOL_CHOICE_AUTO};
    conversation(&c);
    json_t *body = eddy_llm_build(&m, &rq, stream);
    assert_json(body, want_body);
    json_t *h = eddy_llm_headers_json(&m);
    assert_json(h, want_headers);
    json_decref(h);
    json_decref(body);
    /* built again from the cached wire forms: the same body */
    body = eddy_llm_build(&m, &rq, stream);
    assert_json(body, want_body);
    json_decref(body);
    json_decref(tools[0].wire);
    json_decref(p);
    eddy_llm_conv_clear(&c);
}

static void test_golden_openai(void **state)
{
    (void)state;
    golden("openai", 0,
           "{\"model\":\"m1\",\"max_tokens\":100,\"temperature\":0.5,\"tool_choice\":\"auto\","
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"description\":"
           "\"Looks an order up\",\"parameters\":{\"type\":\"object\",\"properties\":{\"id\":{"
           "\"type\":\"string\"}},\"required\":[\"id\"]}}}],\"messages\":["
           "{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"Where is A1?\"},"
           "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
           "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":"
           "\"{\\\"id\\\":\\\"A1\\\"}\"}},"
           "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"eta\",\"arguments\":"
           "\"{}\"}}]},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"{\\\"status\\\":"
           "\\\"shipped\\\"}\"},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"error: no eta\"},"
           "{\"role\":\"assistant\",\"content\":\"Shipped.\"},"
           "{\"role\":\"user\",\"content\":\"Thanks\"}]}",
           "[\"Authorization: Bearer sk-secret\"]");
}

static void test_golden_openai_stream_and_null_content(void **state)
{
    eddy_llm_conv c = {0};
    eddy_llm_model m = model_of("openai");
    eddy_llm_request rq = {.conv = &c};
    (void)state;
    eddy_llm_msg *a = eddy_llm_conv_add(&c, EDDY_ROLE_ASSISTANT);
    assert_int_equal(eddy_llm_msg_tool_call(a, "c1", "t", NULL), 0);
    json_t *body = eddy_llm_build(&m, &rq, 1);
    /* an assistant with calls and no text has "content": "" (llama-cpp-python rejects null) */
    assert_json(body, "{\"model\":\"m1\",\"max_tokens\":100,\"temperature\":0.5,\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":"
                      "\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                      "\"function\",\"function\":{\"name\":\"t\",\"arguments\":\"{}\"}}]}]}");
    json_decref(body);
    eddy_llm_conv_clear(&c);
}

static void test_golden_anthropic(void **state)
{
    (void)state;
    golden("anthropic", 1,
           "{\"model\":\"m1\",\"max_tokens\":100,\"temperature\":0.5,\"stream\":true,"
           "\"system\":[{\"type\":\"text\",\"text\":\"Be brief.\"}],"
           "\"tool_choice\":{\"type\":\"auto\"},"
           "\"tools\":[{\"name\":\"lookup\",\"description\":\"Looks an order up\",\"input_schema\":"
           "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}},\"required\":["
           "\"id\"]}}],\"messages\":["
           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Where is A1?\"}]},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Checking.\"},"
           "{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"lookup\",\"input\":{\"id\":\"A1\"}},"
           "{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"eta\",\"input\":{}}]},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"c1\","
           "\"content\":\"{\\\"status\\\":\\\"shipped\\\"}\"},{\"type\":\"tool_result\","
           "\"tool_use_id\":\"c2\",\"content\":\"error: no eta\",\"is_error\":true}]},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Shipped.\"}]},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Thanks\"}]}]}",
           "[\"anthropic-version: 2023-06-01\", \"x-api-key: sk-secret\"]");
}

static void test_golden_anthropic_cache_and_output(void **state)
{
    eddy_llm_conv c = {0};
    eddy_llm_model m = model_of("anthropic");
    json_t *schema = json_pack("{s:s}", "type", "string");
    eddy_llm_request rq = {.conv = &c, .output_schema = schema};
    (void)state;
    m.prompt_cache = 1;
    m.max_tokens = 0;
    m.has_temperature = 0;
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(&c, EDDY_ROLE_SYSTEM), "S"), 0);
    assert_int_equal(eddy_llm_msg_text(eddy_llm_conv_add(&c, EDDY_ROLE_USER), "Q"), 0);
    json_t *body = eddy_llm_build(&m, &rq, 0);
    /* max_tokens is required: 4096 by default; the output tool is forced and
     * wraps a non-object schema; cache_control on the last tool and system */
    assert_json(body,
                "{\"model\":\"m1\",\"max_tokens\":4096,\"system\":[{\"type\":\"text\",\"text\":"
                "\"S\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":"
                "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Q\"}]}],\"tools\":[{\"name\":"
                "\"eddy_structured_output\",\"description\":\"Give the final answer: call this "
                "tool with the answer as its input, in the required structure.\","
                "\"input_schema\":{\"type\":\"object\",\"properties\":{\"value\":{\"type\":"
                "\"string\"}},\"required\":[\"value\"]},\"cache_control\":{\"type\":"
                "\"ephemeral\"}}],\"tool_choice\":{\"type\":\"tool\",\"name\":"
                "\"eddy_structured_output\"}}");
    json_decref(body);
    /* the forced tool's input comes back as the answer's text */
    const char *ans = "{\"id\":\"m\",\"type\":\"message\",\"model\":\"m1\",\"content\":[{\"type\":"
                      "\"tool_use\",\"id\":\"t1\",\"name\":\"eddy_structured_output\",\"input\":{"
                      "\"value\":\"hi\"}}],\"stop_reason\":\"tool_use\",\"usage\":{"
                      "\"input_tokens\":5,\"output_tokens\":2,\"cache_read_input_tokens\":10}}";
    eddy_llm_response r;
    eddy_err e;
    assert_int_equal(eddy_llm_parse(&m, &rq, ans, strlen(ans), &r, &e), 0);
    assert_int_equal(r.finish, EDDY_FINISH_STOP);
    char *t = eddy_llm_msg_join_text(&r.message);
    assert_string_equal(t, "\"hi\"");
    eddy_free(t);
    assert_int_equal(r.usage.input_tokens, 15); /* cache reads included */
    assert_int_equal(r.usage.cached_input_tokens, 10);
    eddy_llm_response_clear(&r);
    json_decref(schema);
    eddy_llm_conv_clear(&c);
}

static void test_golden_ollama(void **state)
{
    (void)state;
    golden("ollama", 0,
           "{\"model\":\"m1\",\"stream\":false,\"options\":{\"num_predict\":100,\"temperature\":"
           "0.5},\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup\","
           "\"description\":\"Looks an order up\",\"parameters\":{\"type\":\"object\","
           "\"properties\":{\"id\":{\"type\":\"string\"}},\"required\":[\"id\"]}}}],"
           "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"Where is A1?\"},"
           "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
           "{\"function\":{\"name\":\"lookup\",\"arguments\":{\"id\":\"A1\"}}},"
           "{\"function\":{\"name\":\"eta\",\"arguments\":{}}}]},"
           "{\"role\":\"tool\",\"content\":\"{\\\"status\\\":\\\"shipped\\\"}\",\"tool_name\":"
           "\"lookup\"},"
           "{\"role\":\"tool\",\"content\":\"error: no eta\",\"tool_name\":\"eta\"},"
           "{\"role\":\"assistant\",\"content\":\"Shipped.\"},"
           "{\"role\":\"user\",\"content\":\"Thanks\"}]}",
           "[\"Authorization: Bearer sk-secret\"]");
}

/* -- answers: plain and streamed, every split ------------------------------------ */

static char *canon(const eddy_llm_response *r)
{
    json_t *m = eddy_llm_msg_to_json(&r->message);
    json_t *o = json_pack("{s:o, s:s, s:s?, s:i, s:i, s:i}", "message", m, "finish",
                          eddy_llm_finish_name(r->finish), "model", r->model, "in",
                          (int)r->usage.input_tokens, "out", (int)r->usage.output_tokens, "cached",
                          (int)r->usage.cached_input_tokens);
    char *s = eddy_json_dumps_flags(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* STREAM fed in two pieces at every byte boundary, and byte by byte, gives WANT. */
static void every_split(const char *provider, const char *stream, const char *want)
{
    eddy_llm_model m = model_of(provider);
    eddy_llm_request rq = {0};
    size_t n = strlen(stream);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        eddy_llm_stream *st = eddy_llm_stream_new(m.prov, &rq);
        eddy_llm_response r;
        eddy_err e;
        if (cut <= n) {
            assert_int_equal(eddy_llm_stream_feed(st, stream, cut, &e), 0);
            assert_int_equal(eddy_llm_stream_feed(st, stream + cut, n - cut, &e), 0);
        } else { /* one byte at a time */
            for (size_t i = 0; i < n; i++)
                assert_int_equal(eddy_llm_stream_feed(st, stream + i, 1, &e), 0);
        }
        if (eddy_llm_stream_finish(st, &r, &e))
            fail_msg("cut %zu: %s", cut, e.msg);
        char *got = canon(&r);
        if (strcmp(got, want))
            fail_msg("cut %zu:\n got  %s\n want %s", cut, got, want);
        eddy_free(got);
        eddy_llm_response_clear(&r);
        eddy_llm_stream_free(st);
    }
}

static void plain(const char *provider, const char *body, const char *want)
{
    eddy_llm_model m = model_of(provider);
    eddy_llm_request rq = {0};
    eddy_llm_response r;
    eddy_err e;
    if (eddy_llm_parse(&m, &rq, body, strlen(body), &r, &e))
        fail_msg("%s", e.msg);
    char *got = canon(&r);
    if (strcmp(got, want))
        fail_msg("\n got  %s\n want %s", got, want);
    eddy_free(got);
    eddy_llm_response_clear(&r);
}

#define WANT_CALLS                                                                                 \
    "{\"cached\":3,\"finish\":\"tool_calls\",\"in\":12,\"message\":{\"parts\":[{\"text\":"         \
    "\"Let me check.\",\"type\":\"text\"},{\"arguments\":\"{\\\"id\\\":\\\"A1\\\"}\",\"id\":"      \
    "\"c1\",\"name\":\"lookup\",\"type\":\"tool_call\"},{\"arguments\":\"{\\\"x\\\":1}\",\"id\":"  \
    "\"c2\",\"name\":\"eta\",\"type\":\"tool_call\"}],\"role\":\"assistant\"},\"model\":"          \
    "\"m1\",\"out\":7}"

static void test_answers_openai(void **state)
{
    (void)state;
    plain("openai",
          "{\"id\":\"x\",\"model\":\"m1\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
          "\"assistant\",\"content\":\"Let me check.\",\"tool_calls\":[{\"id\":\"c1\",\"type\":"
          "\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"id\\\":\\\"A1\\\"}"
          "\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"eta\",\"arguments\":"
          "\"{\\\"x\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":"
          "12,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}",
          WANT_CALLS);
    const char *sse =
        ": keep-alive\r\n\r\n"
        "data: {\"id\":\"x\",\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
        "\"assistant\",\"content\":\"Let me \"}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"check.\"}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\","
        "\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"{\\\"id\\\":\"}}]}}]}\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"\\\"A1\\\"}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"c2\","
        "\"function\":{\"name\":\"eta\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n\n";
    every_split("openai", sse, WANT_CALLS);
    /* a server that gives every call index 0: ids tell them apart */
    const char *zero =
        "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"Let me check.\"}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":"
        "{\"name\":\"lookup\",\"arguments\":\"{\\\"id\\\":\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"\\\"A1\\\"}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c2\",\"function\":"
        "{\"name\":\"eta\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":{"
        "\"prompt_tokens\":12,\"completion_tokens\":7,\"prompt_tokens_details\":{"
        "\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n";
    every_split("openai", zero, WANT_CALLS);
}

static void test_answers_anthropic(void **state)
{
    (void)state;
    plain("anthropic",
          "{\"id\":\"x\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m1\",\"content\":"
          "[{\"type\":\"text\",\"text\":\"Let me check.\"},{\"type\":\"tool_use\",\"id\":\"c1\","
          "\"name\":\"lookup\",\"input\":{\"id\":\"A1\"}},{\"type\":\"tool_use\",\"id\":\"c2\","
          "\"name\":\"eta\",\"input\":{\"x\":1}}],\"stop_reason\":\"tool_use\",\"usage\":{"
          "\"input_tokens\":9,\"cache_read_input_tokens\":3,\"output_tokens\":7}}",
          WANT_CALLS);
    const char *sse =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"x\","
        "\"model\":\"m1\",\"usage\":{\"input_tokens\":9,\"cache_read_input_tokens\":3,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: ping\ndata: {\"type\": \"ping\"}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,"
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"lookup\",\"input\":{}}"
        "}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,"
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"id\\\":\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,"
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"A1\\\"}\"}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,"
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"eta\",\"input\":{}}}"
        "\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,"
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":1}\"}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    every_split("anthropic", sse, WANT_CALLS);
}

static void test_answers_ollama(void **state)
{
    (void)state;
    const char *want =
        "{\"cached\":0,\"finish\":\"tool_calls\",\"in\":12,\"message\":{\"parts\":[{\"text\":"
        "\"Let me check.\",\"type\":\"text\"},{\"arguments\":\"{\\\"id\\\":\\\"A1\\\"}\",\"id\":"
        "\"call_0\",\"name\":\"lookup\",\"type\":\"tool_call\"},{\"arguments\":\"{\\\"x\\\":1}\","
        "\"id\":\"call_1\",\"name\":\"eta\",\"type\":\"tool_call\"}],\"role\":\"assistant\"},"
        "\"model\":\"m1\",\"out\":7}";
    plain("ollama",
          "{\"model\":\"m1\",\"message\":{\"role\":\"assistant\",\"content\":\"Let me check.\","
          "\"tool_calls\":[{\"function\":{\"name\":\"lookup\",\"arguments\":{\"id\":\"A1\"}}},{"
          "\"function\":{\"name\":\"eta\",\"arguments\":{\"x\":1}}}]},\"done\":true,"
          "\"done_reason\":\"stop\",\"prompt_eval_count\":12,\"eval_count\":7}",
          want);
    const char *nd =
        "{\"model\":\"m1\",\"message\":{\"role\":\"assistant\",\"content\":\"Let me \"},\"done\":"
        "false}\n"
        "{\"model\":\"m1\",\"message\":{\"role\":\"assistant\",\"content\":\"check.\"},\"done\":"
        "false}\r\n"
        "{\"model\":\"m1\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{"
        "\"function\":{\"name\":\"lookup\",\"arguments\":{\"id\":\"A1\"}}},{\"function\":{"
        "\"name\":\"eta\",\"arguments\":{\"x\":1}}}]},\"done\":false}\n"
        "{\"model\":\"m1\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,"
        "\"done_reason\":\"stop\",\"prompt_eval_count\":12,\"eval_count\":7}\n";
    every_split("ollama", nd, want);
}

static void test_stream_errors(void **state)
{
    eddy_llm_model m = model_of("openai");
    eddy_llm_request rq = {0};
    eddy_llm_response r;
    eddy_err e;
    (void)state;
    /* cut off before [DONE] */
    eddy_llm_stream *st = eddy_llm_stream_new(m.prov, &rq);
    const char *part = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    assert_int_equal(eddy_llm_stream_feed(st, part, strlen(part), &e), 0);
    assert_int_equal(eddy_llm_stream_finish(st, &r, &e), EDDY_EPARSE);
    assert_non_null(strstr(e.msg, "cut off"));
    eddy_llm_stream_free(st);
    /* an in-stream error event */
    eddy_llm_model a = model_of("anthropic");
    st = eddy_llm_stream_new(a.prov, &rq);
    const char *err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                      "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    assert_int_equal(eddy_llm_stream_feed(st, err, strlen(err), &e), EDDY_ELLM);
    assert_non_null(strstr(e.msg, "overloaded_error: Overloaded"));
    eddy_llm_stream_free(st);
    /* garbage */
    st = eddy_llm_stream_new(m.prov, &rq);
    assert_int_equal(eddy_llm_stream_feed(st, "data: {nope\n\n", 13, &e), EDDY_EPARSE);
    eddy_llm_stream_free(st);
}

static void test_stream_framing_edges(void **state)
{
    (void)state;
    /* a byte order mark, lone-CR line ends, a comment, a multi-line data field */
    const char *sse = "\xEF\xBB\xBF: hi\r"
                      "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\r"
                      "data: {\"choices\":[{\"delta\":\r"
                      "data: {\"content\":\"b\"}}]}\r\r"
                      "data: [DONE]\r\r";
    every_split("openai", sse,
                "{\"cached\":0,\"finish\":\"stop\",\"in\":0,\"message\":{\"parts\":[{\"text\":"
                "\"ab\",\"type\":\"text\"}],\"role\":\"assistant\"},\"model\":\"m1\",\"out\":0}");
    /* text pieces with escapes, UTF-8, a second choice and spaced tokens (the fast and the
     * full read of a chunk agree) */
    const char *txt = "data: {\"id\":\"x\",\"model\":\"m1\",\"choices\":[{\"delta\":{\"role\":"
                      "\"assistant\",\"content\":\"\"}}]}\n\n"
                      "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                      "\"a\\\"b\\n\\u00e9\"},\"finish_reason\":null}]}\n\n"
                      "data: {\"choices\":[{\"delta\":{\"content\":\"h\xC3\xA9\"}}]}\n\n"
                      "data: {\"choices\":[{\"delta\":{\"content\":\"1\"}},{\"delta\":{"
                      "\"content\":\"NO\"}}]}\n\n"
                      "data: {\"choices\": [{\"delta\": {\"content\": \"2\"}}]}\n\n"
                      "data: {\"choices\":[{\"delta\":{\"content\":\"3\"},\"finish_reason\":"
                      "\"stop\"}]}\n\n"
                      "data: [DONE]\n\n";
    every_split("openai", txt,
                "{\"cached\":0,\"finish\":\"stop\",\"in\":0,\"message\":{\"parts\":[{\"text\":"
                "\"a\\\"b\\n\xC3\xA9h\xC3\xA9"
                "123\",\"type\":\"text\"}],\"role\":\"assistant\"},"
                "\"model\":\"m1\",\"out\":0}");
    /* Ollama sending the same call (by id) twice: replaced, not appended */
    const char *nd =
        "{\"model\":\"m1\",\"message\":{\"content\":\"\",\"tool_calls\":[{\"id\":"
        "\"k\",\"function\":{\"name\":\"t\",\"arguments\":{\"a\":1}}}]},\"done\":false}\n"
        "{\"model\":\"m1\",\"message\":{\"content\":\"\",\"tool_calls\":[{\"id\":"
        "\"k\",\"function\":{\"name\":\"t\",\"arguments\":{\"a\":2}}}]},\"done\":false}\n"
        "{\"model\":\"m1\",\"message\":{\"content\":\"\"},\"done\":true}\n";
    every_split("ollama", nd,
                "{\"cached\":0,\"finish\":\"tool_calls\",\"in\":0,\"message\":{\"parts\":[{"
                "\"arguments\":\"{\\\"a\\\":2}\",\"id\":\"k\",\"name\":\"t\",\"type\":"
                "\"tool_call\"}],\"role\":\"assistant\"},\"model\":\"m1\",\"out\":0}");
}

static void test_parse_errors_and_finish(void **state)
{
    eddy_llm_model m = model_of("openai");
    eddy_llm_request rq = {0};
    eddy_llm_response r;
    eddy_err e;
    (void)state;
    const char *err = "{\"error\":{\"message\":\"Invalid model\",\"type\":\"invalid_request\"}}";
    assert_int_equal(eddy_llm_parse(&m, &rq, err, strlen(err), &r, &e), EDDY_ELLM);
    assert_non_null(strstr(e.msg, "Invalid model"));
    assert_int_equal(eddy_llm_parse(&m, &rq, "{\"choices\":", 11, &r, &e), EDDY_EPARSE);
    assert_int_equal(eddy_llm_parse(&m, &rq, "{\"choices\":[]}", 14, &r, &e), EDDY_EPARSE);
    const char *cut = "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":\"a\","
                      "\"function\":{\"name\":\"t\",\"arguments\":\"{\\\"order\"}}]},"
                      "\"finish_reason\":\"length\"}]}";
    assert_int_equal(eddy_llm_parse(&m, &rq, cut, strlen(cut), &r, &e), 0);
    assert_int_equal(r.finish, EDDY_FINISH_LENGTH);
    assert_int_equal(r.usage.input_tokens, 0); /* the client estimates it, not the parser */
    eddy_llm_response_clear(&r);
    assert_int_equal(eddy_llm_finish_from("end_turn"), EDDY_FINISH_STOP);
    assert_int_equal(eddy_llm_finish_from("max_tokens"), EDDY_FINISH_LENGTH);
    assert_int_equal(eddy_llm_finish_from("tool_use"), EDDY_FINISH_TOOL_CALLS);
    assert_int_equal(eddy_llm_finish_from("content_filter"), EDDY_FINISH_CONTENT_FILTER);
    /* error bodies: the server's message, bounded */
    eddy_llm_error_info info;
    const char *pyd = "{\"detail\":[{\"loc\":[\"body\"],\"msg\":\"Input should be a valid "
                      "string\"}]}";
    m.prov->error_info(pyd, strlen(pyd), &info);
    assert_string_equal(info.message, "Input should be a valid string");
    m.prov->error_info("{\"error\":\"model is loading\"}", 28, &info);
    assert_string_equal(info.message, "model is loading");
    const char *ov = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                     "\"Overloaded\"}}";
    m.prov->error_info(ov, strlen(ov), &info);
    assert_true(info.overloaded);
    assert_string_equal(info.code, "overloaded_error");
    m.prov->error_info("<html>Bad\ngateway</html>", 24, &info);
    assert_string_equal(info.message, "<html>Bad gateway</html>");
}

static void test_history_upgrade(void **state)
{
    eddy_err e;
    (void)state;
    const char *v1 =
        "[{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"k\",\"type\":"
        "\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"k\",\"content\":\"error: nope\"},"
        "{\"role\":\"assistant\",\"content\":\"Done\"}]";
    json_t *in = json_loads(v1, 0, NULL);
    json_t *out = eddy_llm_history_upgrade(in, &e);
    assert_non_null(out);
    assert_json(out, "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"Hi\"}]},"
                     "{\"role\":\"assistant\",\"parts\":[{\"type\":\"tool_call\",\"id\":\"k\","
                     "\"name\":\"lookup\",\"arguments\":\"{\\\"a\\\":1}\"}]},"
                     "{\"role\":\"tool\",\"parts\":[{\"type\":\"tool_result\",\"id\":\"k\","
                     "\"name\":\"lookup\",\"content\":\"error: nope\",\"is_error\":true}]},"
                     "{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"text\":\"Done\"}]}]");
    /* and back into a conversation */
    eddy_llm_conv c = {0};
    assert_int_equal(eddy_llm_conv_from_json(&c, out, &e), 0);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.msgs[2].parts[0].is_error, 1);
    eddy_llm_conv_clear(&c);
    json_decref(out);
    json_decref(in);
    in = json_loads("[{\"role\":\"wizard\",\"content\":\"x\"}]", 0, NULL);
    assert_null(eddy_llm_history_upgrade(in, &e));
    assert_non_null(strstr(e.msg, "wizard"));
    json_decref(in);
    in = json_loads("[{\"role\":\"user\"}]", 0, NULL);
    assert_int_equal(eddy_llm_conv_from_json(&c, in, &e), EDDY_ECORRUPT);
    json_decref(in);
}

static void test_retry_decisions(void **state)
{
    eddy_llm_model m = model_of("openai");
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
    /* server hints, followed exactly: retry-after-ms first, then retry-after */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, "1234", "9", NULL, 0.5), 1234);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "3", NULL, 0.5), 3000);
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "0.25", NULL, 0.5), 250);
    assert_int_equal(
        eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "Wed, 21 Oct 2015 07:28:00 GMT", NULL, 0),
        0); /* a date in the past: at once */
    /* longer than retry.max_wait: never earlier, the call ends (-2) */
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "3600", NULL, 0), -2);
    m.max_wait_ms = 7200000;
    assert_int_equal(eddy_llm_retry_delay(&m, 1, 429, 0, NULL, "3600", NULL, 0), 3600000);
    /* rate-limit resets */
    assert_int_equal(eddy_llm_parse_reset("6m0s"), 360000);
    assert_int_equal(eddy_llm_parse_reset("1.5s"), 1500);
    assert_int_equal(eddy_llm_parse_reset("20ms"), 20);
    assert_int_equal(eddy_llm_parse_reset("1h2m"), 3720000);
    assert_int_equal(eddy_llm_parse_reset("2"), 2000);
    assert_int_equal(eddy_llm_parse_reset("2000-01-01T00:00:00Z"), 0);
    assert_int_equal(eddy_llm_parse_reset("soon"), -1);
}

static void test_cost(void **state)
{
    eddy_llm_model m = model_of("openai");
    eddy_llm_usage u = {
        .input_tokens = 1000000, .output_tokens = 500000, .cached_input_tokens = 200000};
    (void)state;
    assert_true(eddy_llm_cost(&m, &u) == 0);
    m.has_price = 1;
    m.price_input = 2;
    m.price_output = 8;
    m.price_cached_input = 0.5;
    /* 0.8 M fresh * 2 + 0.2 M cached * 0.5 + 0.5 M out * 8 */
    assert_true(eddy_llm_cost(&m, &u) > 5.6999 && eddy_llm_cost(&m, &u) < 5.7001);
}

/* -- process-wide limits: two clients on two loops in two threads -------------
 *
 * A small OpenAI-style server (libmicrohttpd, a thread per connection) that
 * answers after DELAY_MS and records when each request arrived and how many
 * were in flight at once; each client runs on its own loop in its own
 * thread. Threads only record; cmocka asserts on the main thread after the
 * joins. */

#define MAX_HITS 64

typedef struct hit {
    char who;
    int idx;
    uint64_t at_ms;
} hit;

static struct srv {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    int delay_ms;
    int first_429;         /* answer the first request 429, retry-after-ms: 700 */
    uint64_t first_429_ms; /* when it was answered */
    int in_flight, max_in_flight, nhits;
    hit hits[MAX_HITS];
} g_srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct srv_req {
    char body[8192];
    size_t n;
    uint64_t at_ms;
    int counted; /* in g_srv.in_flight */
} srv_req;

static void srv_leave(srv_req *q)
{
    pthread_mutex_lock(&g_srv.mu);
    if (q->counted)
        g_srv.in_flight--;
    q->counted = 0;
    pthread_mutex_unlock(&g_srv.mu);
}

static enum MHD_Result srv_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *data,
                                   size_t *size, void **con_cls)
{
    srv_req *q = *con_cls;
    struct MHD_Response *resp;
    const char *text;
    char who = '?';
    int idx = -1, status = 200;
    enum MHD_Result rc;
    (void)cls, (void)url, (void)method, (void)version;
    if (!q) { /* the headers arrived */
        q = calloc(1, sizeof(*q));
        if (!q)
            return MHD_NO;
        q->at_ms = eddy_now_ms();
        pthread_mutex_lock(&g_srv.mu);
        q->counted = 1;
        if (++g_srv.in_flight > g_srv.max_in_flight)
            g_srv.max_in_flight = g_srv.in_flight;
        pthread_mutex_unlock(&g_srv.mu);
        *con_cls = q;
        return MHD_YES;
    }
    if (*size) {
        size_t take = *size < sizeof(q->body) - 1 - q->n ? *size : sizeof(q->body) - 1 - q->n;
        memcpy(q->body + q->n, data, take);
        q->n += take;
        *size = 0;
        return MHD_YES;
    }
    const char *p = strstr(q->body, "req ");
    if (p)
        sscanf(p, "req %c %d", &who, &idx);
    pthread_mutex_lock(&g_srv.mu);
    if (g_srv.first_429 && !g_srv.first_429_ms)
        status = 429;
    if (g_srv.nhits < MAX_HITS)
        g_srv.hits[g_srv.nhits++] = (hit){who, idx, q->at_ms};
    int delay = g_srv.delay_ms;
    pthread_mutex_unlock(&g_srv.mu);
    if (status == 200 && delay)
        usleep((useconds_t)delay * 1000);
    text = status == 429 ? "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit\"}}"
                         : "{\"id\":\"r1\",\"model\":\"m1\",\"choices\":[{\"index\":0,"
                           "\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"
                           "\"finish_reason\":\"stop\"}],"
                           "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}";
    resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (status == 429)
        MHD_add_response_header(resp, "retry-after-ms", "700");
    srv_leave(q); /* before the client can see the answer and send the next */
    if (status == 429) {
        pthread_mutex_lock(&g_srv.mu);
        g_srv.first_429_ms = eddy_now_ms();
        pthread_mutex_unlock(&g_srv.mu);
    }
    rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void srv_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode code)
{
    (void)cls, (void)conn, (void)code;
    if (*con_cls) {
        srv_leave(*con_cls);
        free(*con_cls);
        *con_cls = NULL;
    }
}

static void srv_start(int delay_ms, int first_429)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pthread_mutex_lock(&g_srv.mu);
    g_srv.delay_ms = delay_ms;
    g_srv.first_429 = first_429;
    g_srv.first_429_ms = 0;
    g_srv.in_flight = g_srv.max_in_flight = g_srv.nhits = 0;
    pthread_mutex_unlock(&g_srv.mu);
    g_srv.d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, srv_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, srv_completed, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_END);
    assert_non_null(g_srv.d);
    g_srv.port = MHD_get_daemon_info(g_srv.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    assert_true(g_srv.port > 0);
}

static void srv_stop(void)
{
    MHD_stop_daemon(g_srv.d);
    g_srv.d = NULL;
}

/* When the server first saw WHO's request IDX (0: never). */
static uint64_t srv_arrival(char who, int idx)
{
    uint64_t at = 0;
    pthread_mutex_lock(&g_srv.mu);
    for (int i = 0; i < g_srv.nhits; i++)
        if (g_srv.hits[i].who == who && g_srv.hits[i].idx == idx && !at)
            at = g_srv.hits[i].at_ms;
    pthread_mutex_unlock(&g_srv.mu);
    return at;
}

#define SIDE_MAX 8

typedef struct side side;
typedef struct side_call {
    side *s;
    int idx, calls, status, attempts;
    uint64_t admitted_ms, queued_ms; /* admitted: when its first attempt started */
} side_call;

/* One client on its own loop and thread, sending N requests "req WHO i" to M. */
struct side {
    char who;
    int n;
    const eddy_llm_model *m;
    pthread_barrier_t *go;      /* both sides start together */
    void (*before)(side *s);    /* on the thread, before the requests */
    int (*close_when)(side *s); /* polled every 5 ms: close the client early */
    pthread_t th;
    uv_loop_t loop;
    uv_timer_t poll;
    eddy_llm_client *c;
    eddy_llm_conv conv[SIDE_MAX];
    eddy_llm_request rq[SIDE_MAX];
    side_call call[SIDE_MAX];
    int ndone, chat_rc, loop_close_rc;
    uint64_t start_ms, end_ms;
};

static void side_cb(eddy_llm_result *res, void *ud)
{
    side_call *k = ud;
    side *s = k->s;
    uint64_t now = eddy_now_ms();
    k->calls++;
    k->status = res->status;
    k->attempts = res->attempts;
    k->queued_ms = res->queued_ms;
    k->admitted_ms = now - res->latency_ms + res->queued_ms;
    if (++s->ndone == s->n) {
        s->end_ms = now;
        eddy_llm_client_close(s->c); /* from inside a callback, on purpose */
    }
}

static void side_poll(uv_timer_t *t)
{
    side *s = t->data;
    if (!s->close_when(s))
        return;
    eddy_llm_client_close(s->c);
    uv_close((uv_handle_t *)t, NULL);
}

static void *side_run(void *arg)
{
    side *s = arg;
    char text[32];
    uv_loop_init(&s->loop);
    s->chat_rc = eddy_llm_client_new(&s->loop, &s->c, NULL);
    if (s->go)
        pthread_barrier_wait(s->go);
    if (s->chat_rc)
        return NULL;
    if (s->before)
        s->before(s);
    s->start_ms = eddy_now_ms();
    for (int i = 0; i < s->n && !s->chat_rc; i++) {
        snprintf(text, sizeof(text), "req %c %d", s->who, i);
        eddy_llm_msg_text(eddy_llm_conv_add(&s->conv[i], EDDY_ROLE_USER), text);
        s->rq[i].conv = &s->conv[i];
        s->call[i] = (side_call){.s = s, .idx = i};
        s->chat_rc = eddy_llm_chat(s->c, s->m, &s->rq[i], side_cb, &s->call[i], NULL, NULL);
    }
    if (s->close_when) {
        uv_timer_init(&s->loop, &s->poll);
        s->poll.data = s;
        uv_timer_start(&s->poll, side_poll, 5, 5);
    }
    uv_run(&s->loop, UV_RUN_DEFAULT); /* returns once the client closed itself */
    s->loop_close_rc = uv_loop_close(&s->loop);
    for (int i = 0; i < s->n; i++)
        eddy_llm_conv_clear(&s->conv[i]);
    return NULL;
}

/* Run the sides, each in its own thread, started together. */
static void run_sides(side *sides, int n)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        sides[i].go = &go;
        assert_int_equal(pthread_create(&sides[i].th, NULL, side_run, &sides[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(sides[i].th, NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < n; i++) {
        assert_int_equal(sides[i].chat_rc, 0);
        assert_int_equal(sides[i].loop_close_rc, 0);
        for (int j = 0; j < sides[i].n; j++)
            assert_int_equal(sides[i].call[j].calls, 1); /* every callback exactly once */
    }
}

static eddy_llm_model limited_model(char *url, size_t n)
{
    eddy_llm_model m = model_of("openai");
    snprintf(url, n, "http://127.0.0.1:%d/v1", g_srv.port);
    m.base_url = url;
    m.timeout_ms = 20000;
    m.max_tokens = 10;
    return m;
}

/* (1) concurrency 3 shared by two clients: never more than 3 at the server,
 * all complete, each client's requests admitted in its order, and the
 * clients take turns (neither waits for the other to drain). */
static void test_limits_shared_concurrency(void **state)
{
    char url[64];
    (void)state;
    srv_start(100, 0);
    eddy_llm_model m = limited_model(url, sizeof(url));
    m.concurrency = 3;
    side sides[2] = {{.who = 'A', .n = 6, .m = &m}, {.who = 'B', .n = 6, .m = &m}};
    uint64_t t0 = eddy_now_ms();
    run_sides(sides, 2);
    uint64_t elapsed = eddy_now_ms() - t0;
    print_message("shared concurrency: max in flight %d, %llu ms for 12 requests\n",
                  g_srv.max_in_flight, (unsigned long long)elapsed);
    assert_true(g_srv.max_in_flight <= 3);
    assert_true(g_srv.max_in_flight >= 2);
    assert_int_equal(g_srv.nhits, 12);
    assert_true(elapsed >= 390); /* 12 requests, 3 at a time, 100 ms each */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 6; j++) {
            assert_int_equal(sides[i].call[j].status, 0);
            if (j) /* FIFO (ms clocks: a little slack) */
                assert_true(sides[i].call[j].admitted_ms + 3 >= sides[i].call[j - 1].admitted_ms);
        }
    /* turns: each client had a request at the server before the other's last */
    assert_true(srv_arrival('A', 0) < srv_arrival('B', 5));
    assert_true(srv_arrival('B', 0) < srv_arrival('A', 5));
    srv_stop();
}

/* Elapsed ms for the sides' requests at 120 per minute. */
static uint64_t rpm_run(side *sides, int n)
{
    uint64_t t0 = eddy_now_ms();
    run_sides(sides, n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < sides[i].n; j++)
            assert_int_equal(sides[i].call[j].status, 0);
    return eddy_now_ms() - t0;
}

/* (2) requests_per_minute shared: two clients sending 3 each take as long
 * as one sending 6 (a burst of 2, then one per 500 ms: at least 2 s). Only
 * the lower bound is asserted; a slow machine only makes it longer. */
static void test_limits_shared_rpm(void **state)
{
    char url[64];
    (void)state;
    srv_start(0, 0);
    eddy_llm_model m = limited_model(url, sizeof(url));
    m.requests_per_minute = 120;
    side one[1] = {{.who = 'A', .n = 6, .m = &m}};
    uint64_t single = rpm_run(one, 1);
    side two[2] = {{.who = 'A', .n = 3, .m = &m}, {.who = 'B', .n = 3, .m = &m}};
    uint64_t shared = rpm_run(two, 2);
    print_message("120 rpm: one client x 6: %llu ms, two clients x 3: %llu ms\n",
                  (unsigned long long)single, (unsigned long long)shared);
    assert_true(single >= 1950);
    assert_true(shared >= 1950); /* per-client buckets would take 500 ms */
    srv_stop();
}

static void wait_for_429(side *s)
{
    (void)s;
    for (;;) {
        pthread_mutex_lock(&g_srv.mu);
        uint64_t at = g_srv.first_429_ms;
        pthread_mutex_unlock(&g_srv.mu);
        if (at)
            break;
        usleep(2000);
    }
    usleep(150 * 1000); /* A has read the 429 by now */
}

/* (3) a 429 with retry-after-ms: 700 to client A pauses client B too. */
static void test_limits_shared_429_pause(void **state)
{
    char url[64];
    (void)state;
    srv_start(0, 1);
    eddy_llm_model m = limited_model(url, sizeof(url));
    side sides[2] = {{.who = 'A', .n = 1, .m = &m},
                     {.who = 'B', .n = 1, .m = &m, .before = wait_for_429}};
    run_sides(sides, 2);
    uint64_t t429 = g_srv.first_429_ms, a1 = 0, b0 = srv_arrival('B', 0);
    for (int i = 0; i < g_srv.nhits; i++)
        if (g_srv.hits[i].who == 'A')
            a1 = g_srv.hits[i].at_ms; /* A's retry: the last of A's */
    print_message("429 at %llu: A retried after %llu ms, B (sent 150 ms after) arrived after "
                  "%llu ms, queued %llu ms\n",
                  (unsigned long long)t429, (unsigned long long)(a1 - t429),
                  (unsigned long long)(b0 - t429), (unsigned long long)sides[1].call[0].queued_ms);
    assert_int_equal(sides[0].call[0].status, 0);
    assert_int_equal(sides[0].call[0].attempts, 2);
    assert_int_equal(sides[1].call[0].status, 0);
    assert_int_equal(sides[1].call[0].attempts, 1);
    assert_true(a1 >= t429 + 690);
    assert_true(b0 >= t429 + 690); /* not ~150: B waited for A's pause */
    assert_true(sides[1].call[0].queued_ms >= 300);
    srv_stop();
}

static void start_after_a0(side *s)
{
    (void)s;
    while (!srv_arrival('A', 0))
        usleep(2000);
    usleep(20 * 1000); /* A's turn in the waiting list comes first */
}

static int close_soon_after_a0(side *s)
{
    uint64_t a0 = srv_arrival('A', 0);
    (void)s;
    return a0 && eddy_now_ms() >= a0 + 100;
}

/* (4) concurrency 1: A holds the slot with three more waiting (its turn in
 * the waiting list ahead of B's), B's three wait behind; A closes. A's four
 * are canceled, and B's still run: the slot and the turn A gave up reach B
 * across the loops (its wake-up keeps B's loop alive meanwhile). */
static void test_limits_close_while_waiting(void **state)
{
    char url[64];
    (void)state;
    srv_start(300, 0);
    eddy_llm_model m = limited_model(url, sizeof(url));
    m.concurrency = 1;
    side sides[2] = {{.who = 'A', .n = 4, .m = &m, .close_when = close_soon_after_a0},
                     {.who = 'B', .n = 3, .m = &m, .before = start_after_a0}};
    run_sides(sides, 2);
    for (int j = 0; j < 4; j++)
        assert_int_equal(sides[0].call[j].status, EDDY_ECANCELED);
    for (int j = 0; j < 3; j++) {
        assert_int_equal(sides[1].call[j].status, 0);
        assert_true(srv_arrival('B', j) != 0);
    }
    for (int j = 1; j < 4; j++)
        assert_int_equal(srv_arrival('A', j), 0); /* never sent */
    assert_true(srv_arrival('B', 0) >= srv_arrival('A', 0) + 100);
    srv_stop();
}

/* Clients take turns: A holds all 3 slots with three more waiting when B
 * sends; B's first request gets the second slot freed, not the one after
 * A's queue drained (A's own loop frees them, and would take them all). */
static void test_limits_clients_take_turns(void **state)
{
    char url[64];
    (void)state;
    srv_start(100, 0);
    eddy_llm_model m = limited_model(url, sizeof(url));
    m.concurrency = 3;
    side sides[2] = {{.who = 'A', .n = 6, .m = &m},
                     {.who = 'B', .n = 3, .m = &m, .before = start_after_a0}};
    run_sides(sides, 2);
    print_message("turns: A5 at +%llu ms, B0 at +%llu ms (from A0)\n",
                  (unsigned long long)(srv_arrival('A', 5) - srv_arrival('A', 0)),
                  (unsigned long long)(srv_arrival('B', 0) - srv_arrival('A', 0)));
    assert_true(g_srv.max_in_flight <= 3);
    for (int j = 0; j < 3; j++)
        assert_int_equal(sides[1].call[j].status, 0);
    assert_true(srv_arrival('B', 0) < srv_arrival('A', 5));
    srv_stop();
}

/* eddy_llm_msg_write writes exactly the text of eddy_llm_msg_to_json's value
 * (the journal of model answers is written with it and read as that value). */
static void test_msg_write_like_tree(void **state)
{
    eddy_llm_conv c;
    (void)state;
    memset(&c, 0, sizeof(c));
    eddy_llm_msg *m = eddy_llm_conv_add(&c, EDDY_ROLE_SYSTEM);
    eddy_llm_msg_text(
        m, "You are \"helpful\"\n\ttabs, \\ slashes /, \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80 \x01");
    m = eddy_llm_conv_add(&c, EDDY_ROLE_USER);
    eddy_llm_msg_text(m, "");
    m = eddy_llm_conv_add(&c, EDDY_ROLE_ASSISTANT);
    eddy_llm_msg_text(m, "calling two tools");
    eddy_llm_msg_tool_call(m, "c1", "lookup", "{\"id\":\"A1\"}");
    eddy_llm_msg_tool_call(m, NULL, NULL, NULL);
    m = eddy_llm_conv_add(&c, EDDY_ROLE_TOOL);
    eddy_llm_msg_tool_result(m, "c1", "lookup", "{\"status\":\"shipped\"}", 0);
    eddy_llm_msg_tool_result(m, NULL, "x", NULL, 1);
    m = eddy_llm_conv_add(&c, EDDY_ROLE_ASSISTANT); /* no parts */
    for (size_t i = 0; i < c.n; i++) {
        json_t *tree = eddy_llm_msg_to_json(&c.msgs[i]);
        char *want = eddy_json_dumps_flags(tree, JSON_COMPACT);
        eddy_buf b;
        eddy_buf_init(&b);
        eddy_buf_puts(&b, "x"); /* appended after what B holds */
        assert_int_equal(eddy_llm_msg_write(&b, &c.msgs[i]), 0);
        assert_non_null(want);
        assert_string_equal(b.data + 1, want);
        eddy_buf_free(&b);
        eddy_free(want);
        json_decref(tree);
    }
    /* not UTF-8: refused, the buffer as it was */
    m = eddy_llm_conv_add(&c, EDDY_ROLE_USER);
    eddy_llm_msg_text(m, "bad \xff byte");
    eddy_buf b;
    eddy_buf_init(&b);
    eddy_buf_puts(&b, "kept");
    assert_int_equal(eddy_llm_msg_write(&b, m), EDDY_EINVAL);
    assert_string_equal(b.data, "kept");
    eddy_buf_free(&b);
    eddy_llm_conv_clear(&c);
}

/* The journal text of an answer as the tree path wrote it: eddy_llm_msg_to_json
 * in a json_pack, dumped compactly. NULL where json_pack refused (a string
 * that is not UTF-8). */
static char *result_by_tree(const eddy_llm_result *res)
{
    const eddy_llm_response *resp = &res->resp;
    const eddy_llm_usage *u = &resp->usage;
    json_t *v = json_pack(
        "{s:o, s:s, s:s?, s:s?, s:s?, s:s?, s:{s:I, s:I, s:I, s:I, s:I, s:b}}", "message",
        eddy_llm_msg_to_json(&resp->message), "finish", eddy_llm_finish_name(resp->finish),
        "finish_raw", resp->finish_raw, "id", resp->id, "model", resp->model, "by",
        res->model ? res->model->name : NULL, "usage", "input", (json_int_t)u->input_tokens,
        "output", (json_int_t)u->output_tokens, "cached", (json_int_t)u->cached_input_tokens,
        "cache_write", (json_int_t)u->cache_write_tokens, "reasoning",
        (json_int_t)u->reasoning_tokens, "estimated", u->estimated);
    char *t = v ? eddy_json_dumps_flags(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return t;
}

static void test_result_text_like_tree(void **state)
{
    eddy_llm_model model;
    eddy_llm_result res;
    (void)state;
    memset(&model, 0, sizeof(model));
    memset(&res, 0, sizeof(res));
    eddy_llm_msg_text(&res.resp.message, "caf\xc3\xa9 \"quoted\"\n");
    eddy_llm_msg_tool_call(&res.resp.message, "c1", "lookup", "{\"id\":\"A1\"}");
    res.resp.finish = EDDY_FINISH_TOOL_CALLS;
    res.resp.usage = (eddy_llm_usage){12, 34, 5, 6, 7, 1};
    /* each optional string absent, plain, and needing escapes */
    const char *const opts[] = {NULL, "end_turn", "a\\b\t/\x01"};
    char name[] = "default";
    for (int i = 0; i < 3 * 3 * 3 * 3; i++) {
        res.resp.finish_raw = (char *)opts[i % 3];
        res.resp.id = (char *)opts[i / 3 % 3];
        res.resp.model = (char *)opts[i / 9 % 3];
        model.name = name;
        res.model = (i / 27 % 3) == 0 ? NULL : &model;
        char *want = result_by_tree(&res), *got = eddy_llm_result_text(&res);
        assert_non_null(want);
        assert_non_null(got);
        assert_string_equal(got, want);
        json_t *back = json_loads(got, 0, NULL); /* what llm_from_json reads */
        assert_non_null(back);
        json_decref(back);
        eddy_free(want);
        eddy_free(got);
    }
    /* a string json_pack refused: no text (it was not journaled), never a
     * broken one */
    char bad[] = "stop\xff";
    res.model = &model;
    for (int field = 0; field < 4; field++) {
        res.resp.finish_raw = field == 0 ? bad : NULL;
        res.resp.id = field == 1 ? bad : NULL;
        res.resp.model = field == 2 ? bad : NULL;
        model.name = field == 3 ? bad : name;
        assert_null(result_by_tree(&res));
        char *got = eddy_llm_result_text(&res);
        if (got)
            fail_msg("field %d not UTF-8, written as %s", field, got);
    }
    /* out of memory at each allocation: NULL, or the whole text */
    model.name = name;
    res.resp.finish_raw = res.resp.id = res.resp.model = NULL;
    char *want = result_by_tree(&res);
    assert_non_null(want);
    for (long n = 0;; n++) {
        eddy_alloc_fail_after(n);
        char *got = eddy_llm_result_text(&res);
        eddy_alloc_fail_after(-1);
        if (got) {
            assert_string_equal(got, want);
            eddy_free(got);
            break;
        }
        assert_true(n < 100);
    }
    eddy_free(want);
    eddy_llm_msg_clear(&res.resp.message);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_openai),
        cmocka_unit_test(test_golden_openai_stream_and_null_content),
        cmocka_unit_test(test_golden_anthropic),
        cmocka_unit_test(test_golden_anthropic_cache_and_output),
        cmocka_unit_test(test_golden_ollama),
        cmocka_unit_test(test_answers_openai),
        cmocka_unit_test(test_answers_anthropic),
        cmocka_unit_test(test_answers_ollama),
        cmocka_unit_test(test_stream_errors),
        cmocka_unit_test(test_stream_framing_edges),
        cmocka_unit_test(test_parse_errors_and_finish),
        cmocka_unit_test(test_msg_write_like_tree),
        cmocka_unit_test(test_result_text_like_tree),
        cmocka_unit_test(test_history_upgrade),
        cmocka_unit_test(test_retry_decisions),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_limits_shared_concurrency),
        cmocka_unit_test(test_limits_shared_rpm),
        cmocka_unit_test(test_limits_shared_429_pause),
        cmocka_unit_test(test_limits_clients_take_turns),
        cmocka_unit_test(test_limits_close_while_waiting),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
