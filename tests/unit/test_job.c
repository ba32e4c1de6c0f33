/* tests/unit/test_job.c - job loading and validation errors with exact places. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eddy/agent.h"
#include "eddy/buf.h"

/* Load TEXT with FLAGS and expect exactly the diagnostics in WANT (text
 * after the file name; a message may go on after it), in order. */
static void expect_diags_flags(const char *text, int flags, const char *const *want, size_t n)
{
    eddy_diag d;
    eddy_job *job;
    const char *path = write_file("job.yaml", text);
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, flags, &job, &d), 0);
    assert_null(job);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, n);
    for (size_t i = 0; i < n; i++) {
        char full[1024];
        snprintf(full, sizeof(full), "%s%s", path, want[i]);
        assert_non_null(strstr(d.msgs[i], full));
    }
    eddy_diag_free(&d);
}

static void expect_diags(const char *text, const char *const *want, size_t n)
{
    expect_diags_flags(text, 0, want, n);
}

static const char kGood[] = "job: j\n"
                            "key: user.id\n"
                            "models:\n"
                            "  default: { base_url: 'http://127.0.0.1:9/v1', model: m }\n"
                            "agents:\n"
                            "  a:\n"
                            "    prompt: { user: \"{{event.text}}\" }\n";

static void test_good_job(void **state)
{
    eddy_diag d;
    eddy_job *job;
    (void)state;
    eddy_diag_init(&d);
    assert_int_equal(eddy_job_load(write_file("good.yaml", kGood), 1, &job, &d), 0);
    assert_int_equal(d.n, 0);
    assert_string_equal(job->name, "j");
    assert_string_equal(job->key, "user.id");
    assert_int_equal(job->nagents, 1);
    assert_ptr_equal(job->agents[0].model, &job->models[0]);
    assert_int_equal(job->agents[0].budget_turns, 8);
    assert_int_equal(job->models[0].max_attempts, 5);
    assert_int_equal(job->models[0].timeout_ms, 60000);
    assert_string_equal(job->agents[0].on[0], "input");
    eddy_job_free(job);
    eddy_diag_free(&d);
}

/* trace: retention and sampling, their defaults, their ranges and keys. */
static void test_trace_settings(void **state)
{
    static const char *const want[] = {
        ":9:45: unknown key 'max_rows' (expected one of: max_age, max_size)",
        ":9:25: 'max_age' must be between 1m and 3650d",
        ":9:39: 'max_size' must be a size such as 16MB",
        ":10:11: 'sample' must be between 0 and 1",
        ":11:16: 'max_payload' must be between 256 bytes and 64MiB",
        ":12:13: a redact pattern must be a non-empty string",
        ":12:16: redact pattern '(' is not a regular expression",
    };
    eddy_diag d;
    eddy_job *job;
    char text[2048];
    (void)state;
    eddy_diag_init(&d);
    assert_int_equal(eddy_job_load(write_file("good.yaml", kGood), 1, &job, &d), 0);
    assert_int_equal(job->trace.max_age_ms, 7ll * 86400 * 1000);
    assert_int_equal(job->trace.max_bytes, 1ll << 30);
    assert_true(job->trace.sample == 1.0);
    eddy_job_free(job);
    snprintf(text, sizeof(text),
             "%strace: { retention: { max_age: 2h, max_size: 64MB }, sample: 0.25 }\n", kGood);
    assert_int_equal(eddy_job_load(write_file("t.yaml", text), 1, &job, &d), 0);
    assert_int_equal(d.n, 0);
    assert_int_equal(job->trace.max_age_ms, 2 * 3600 * 1000);
    assert_int_equal(job->trace.max_bytes, 64000000);
    assert_true(job->trace.sample == 0.25);
    eddy_job_free(job);
    eddy_diag_free(&d);
    snprintf(text, sizeof(text),
             "%strace:\n"
             "  retention: { max_age: 1s, max_size: lots, max_rows: 5 }\n"
             "  sample: 1.5\n"
             "  max_payload: 10\n"
             "  redact: [ 7, '(' ]\n",
             kGood);
    expect_diags(text, want, sizeof(want) / sizeof(want[0]));
}

/* dashboard: listen as HOST:PORT, a token of the safe characters; named, never echoed. */
static void test_dashboard_settings(void **state)
{
    static const char *const want[] = {
        ":8:22: 'listen' must be HOST:PORT",
        ":8:42: 'token' must have 16 to 256 characters",
    };
    char text[2048];
    (void)state;
    snprintf(text, sizeof(text), "%sdashboard: { listen: 'localhost', token: 'short secret' }\n",
             kGood);
    expect_diags(text, want, sizeof(want) / sizeof(want[0]));
}

static void test_unknown_keys_and_types(void **state)
{
    static const char *const want[] = {
        ":2:1: unknown key 'kye' (did you mean 'key'?)",
        ":1:1: missing required key 'key'",
        ":5:5: unknown key 'timout' (did you mean 'timeout'?)",
        ":4:3: missing required key 'base_url'",
        ":6:28: 'concurrency' must be an integer, not a string",
        ":10:25: 'turns' must be between 1 and 1000",
        ":11:36: action 'chat' is not available in this version (expected 'react')",
    };
    (void)state;
    expect_diags("job: j\n"
                 "kye: id\n"
                 "models:\n"
                 "  default:\n"
                 "    timout: 5s\n"
                 "    limits: { concurrency: lots }\n"
                 "    model: m\n"
                 "agents:\n"
                 "  a: { prompt: { user: hi },\n"
                 "       budget: { turns: 0 },\n"
                 "       actions: [ { on: input, do: chat } ] }\n",
                 want, sizeof(want) / sizeof(want[0]));
}

static void test_yaml_syntax_error(void **state)
{
    static const char *const want[] = {":3:1: invalid YAML"};
    (void)state;
    expect_diags("job: j\nkey: [a, b\n", want, 1);
}

static void test_missing_env_and_model(void **state)
{
    static const char *const want[] = {
        ":6:12: environment variable EDDY_UNSET_FOR_TEST is not set",
        ":9:12: agent 'a' uses model 'other', which is not defined under 'models'",
    };
    (void)state;
    unsetenv("EDDY_UNSET_FOR_TEST");
    expect_diags("job: j\nkey: k\nmodels:\n"
                 "  m:\n"
                 "    base_url: http://x\n"
                 "    model: ${EDDY_UNSET_FOR_TEST}\n"
                 "agents:\n"
                 "  a:\n"
                 "    model: other\n"
                 "    prompt: { user: hi }\n",
                 want, 2);
}

/* Two models and an agent with no `model:` said "agent 'a' uses model
 * 'default', which is not defined under 'models'": a name never written. */
static void test_agent_without_model(void **state)
{
    static const char *const want[] = {
        ":7:3: agent 'a' must name its model with 'model:': the job has 2 models ('m1', 'm2')",
        ":9:12: agent 'b' uses model 'm3', which is not defined under 'models' (they are 'm1', "
        "'m2')",
    };
    (void)state;
    expect_diags("job: j\nkey: k\nmodels:\n"
                 "  m1: { base_url: 'http://x', model: m }\n"
                 "  m2: { base_url: 'http://x', model: m }\n"
                 "agents:\n"
                 "  a: { prompt: { user: hi } }\n"
                 "  b:\n"
                 "    model: m3\n"
                 "    prompt: { user: hi }\n",
                 want, 2);
}

static void test_duplicate_key(void **state)
{
    eddy_yaml_doc doc;
    eddy_diag d;
    (void)state;
    eddy_diag_init(&d);
    assert_int_equal(eddy_yaml_load_string("a: 1\nb: 2\na: 3\n", "dup.yaml", &doc, &d),
                     EDDY_EPARSE);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.msgs[0], "dup.yaml:3:1: duplicate key 'a'");
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
}

static void test_scalar_types(void **state)
{
    eddy_yaml_doc doc;
    eddy_diag d;
    char where[256];
    (void)state;
    eddy_diag_init(&d);
    assert_int_equal(eddy_yaml_load_string("i: 42\nf: 1.5\nb: true\nn: ~\ns: '42'\nl: [1, x]\n",
                                           "t.yaml", &doc, &d),
                     0);
    assert_true(json_is_integer(json_object_get(doc.root, "i")));
    assert_true(json_is_real(json_object_get(doc.root, "f")));
    assert_true(json_is_true(json_object_get(doc.root, "b")));
    assert_true(json_is_null(json_object_get(doc.root, "n")));
    assert_true(json_is_string(json_object_get(doc.root, "s")));
    assert_string_equal(eddy_yaml_where(&doc, "/l/1", 0, where, sizeof(where)), "t.yaml:6:8");
    assert_string_equal(eddy_yaml_where(&doc, "/s", 1, where, sizeof(where)), "t.yaml:5:1");
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
}

/* Write N bytes of DATA to NAME in the temp folder (write_file stops at a NUL). */
static const char *write_bytes(const char *name, const char *data, size_t n)
{
    static char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return path;
}

/* Load FILE and expect one diagnostic: "FILE" + WANT, a prefix of it. */
static void expect_one(const char *file, int flags, const char *want)
{
    eddy_diag d;
    eddy_job *job;
    char full[1024];
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(file, flags, &job, &d), 0);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, 1);
    snprintf(full, sizeof(full), "%s%s", file, want);
    assert_non_null(strstr(d.msgs[0], full));
    eddy_diag_free(&d);
}

#define MODEL_AND_AGENT                                                                            \
    "models:\n"                                                                                    \
    "  m: { base_url: 'http://127.0.0.1:9/v1', model: m }\n"                                       \
    "agents:\n"                                                                                    \
    "  a:\n"                                                                                       \
    "    prompt: { user: hi }\n"

/* Negative, huge and overflowing values were taken as "no limit" (or
 * overflowed: UBSan at the `* 1000` of a bare number of seconds). */
static void test_ranges(void **state)
{
    static const char *const want[] = {
        ":3:17: 'shutdown_grace' must be between 0ms and 1d",
        ":4:16: 'max_in_flight' must be between 1 and 10000000",
        ":9:14: 'timeout' must be between 1ms and 1d",
        ":10:24: 'attempts' must be between 1 and 100",
        ":10:39: 'backoff' delays must be between 1ms and 1h",
        ":11:28: 'concurrency' must be between 1 and 100000",
        ":12:18: 'temperature' must be between 0 and 2",
        ":16:14: 'timeout' must be between 1ms and 1d",
        ":20:14: 'timeout' must be between 1ms and 1d",
        ":25:24: 'history' must be between 0 and 100000",
        ":26:34: 'turns' must be between 1 and 1000",
        ":26:45: 'tokens' must be between 1 and 1099511627776",
        ":26:21: 'wall' must be between 1ms and 30d",
        ":26:60: 'tool_calls' must be between 0 and 100000",
    };
    (void)state;
    expect_diags("job: j\n"
                 "key: k\n"
                 "shutdown_grace: -5\n"
                 "max_in_flight: 0\n"
                 "models:\n"
                 "  m:\n"
                 "    base_url: http://x\n"
                 "    model: m\n"
                 "    timeout: -1\n"
                 "    retry: { attempts: 1000, backoff: 0ms..2h }\n"
                 "    limits: { concurrency: 99999999999999999999 }\n"
                 "    temperature: 3\n"
                 "  n:\n"
                 "    base_url: http://x\n"
                 "    model: m\n"
                 "    timeout: 9223372036854775807\n"
                 "  o:\n"
                 "    base_url: http://x\n"
                 "    model: m\n"
                 "    timeout: 1e300d\n"
                 "agents:\n"
                 "  a:\n"
                 "    model: m\n"
                 "    prompt: { user: hi }\n"
                 "    memory: { history: -1 }\n"
                 "    budget: { wall: -30s, turns: 0, tokens: 0, tool_calls: -1 }\n",
                 want, sizeof(want) / sizeof(want[0]));
}

static eddy_job *load_ok(const char *name, const char *text, int flags)
{
    eddy_diag d;
    eddy_job *job;
    eddy_diag_init(&d);
    if (eddy_job_load(write_file(name, text), flags, &job, &d))
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, 0);
    assert_non_null(job);
    eddy_diag_free(&d);
    return job;
}

static void test_duration_forms(void **state)
{
    eddy_job *job;
    (void)state;
    job = load_ok("dur.yaml",
                  "job: j\nkey: k\nshutdown_grace: 0\n"
                  "models:\n"
                  "  m: { base_url: 'http://x', model: m, timeout: 1.5,\n"
                  "       retry: { backoff: 250ms..1h } }\n"
                  "agents:\n"
                  "  a: { prompt: { user: hi }, budget: { wall: 30d } }\n",
                  0);
    assert_int_equal(job->shutdown_grace_ms, 0);
    assert_int_equal(job->models[0].timeout_ms, 1500);
    assert_int_equal(job->models[0].backoff_base_ms, 250);
    assert_int_equal(job->models[0].backoff_cap_ms, 3600000);
    assert_int_equal(job->agents[0].budget_wall_ms, 30LL * 86400000);
    eddy_job_free(job);
}

/* `job: ""`, `key: ""` and other empty required strings were accepted. */
static void test_empty_strings(void **state)
{
    static const char *const want[] = {
        ":1:6: 'job' must not be empty",       ":2:6: 'key' must not be empty",
        ":3:16: 'jsonl' must not be empty",    ":4:21: 'path' must not be empty",
        ":6:18: 'base_url' must not be empty", ":6:29: 'model' must not be empty",
        ":9:21: 'user' must not be empty",     ":11:14: a tool path must not be empty",
        ":10:22: 'on' must not be empty",
    };
    (void)state;
    expect_diags("job: \"\"\n"
                 "key: \"\"\n"
                 "sink: { jsonl: \"\" }\n"
                 "checkpoint: { path: \"\" }\n"
                 "models:\n"
                 "  m: { base_url: \"\", model: \"\" }\n"
                 "agents:\n"
                 "  a:\n"
                 "    prompt: { user: \"\" }\n"
                 "    actions: [ { on: \"\", do: react } ]\n"
                 "    tools: [ \"\" ]\n",
                 want, sizeof(want) / sizeof(want[0]));
}

static void test_bad_key_path(void **state)
{
    static const char *const want[] = {":2:6: 'key' must be a dotted path such as customer.id"};
    (void)state;
    expect_diags("job: j\nkey: user..id\n" MODEL_AND_AGENT, want, 1);
}

/* A NUL byte silently cut the file short. */
static void test_nul_byte(void **state)
{
    static const char text[] = "job: j\nkey: k\0x\n" MODEL_AND_AGENT;
    (void)state;
    expect_one(write_bytes("nul.yaml", text, sizeof(text) - 1), 0,
               ":2:7: NUL byte in the job file");
}

/* Invalid UTF-8 was reported at 1:1. */
static void test_invalid_utf8_place(void **state)
{
    static const char text[] = "job: j\n# caf\xc3\xa9\nkey: \"h\xc3\xa9\xff\"\n" MODEL_AND_AGENT;
    (void)state;
    expect_one(write_bytes("utf8.yaml", text, sizeof(text) - 1), 0,
               ":3:9: invalid UTF-8 (byte 0xFF)");
    expect_one(write_bytes("utf8b.yaml", "job: j\xc3(\n", 9), 0, ":1:7: invalid UTF-8 (byte 0xC3)");
    expect_one(write_bytes("ctl.yaml", "job: j\x01\n", 8), 0,
               ":1:7: invalid YAML: control characters are not allowed");
}

/* `user: {{event.text}}` unquoted said only "mapping keys must be plain
 * strings": YAML reads it as a mapping in a mapping. */
static void test_unquoted_template_hint(void **state)
{
    (void)state;
    expect_one(write_file("uq.yaml", "job: j\nkey: k\n"
                                     "models:\n"
                                     "  m: { base_url: 'http://x', model: m }\n"
                                     "agents:\n"
                                     "  a:\n"
                                     "    prompt:\n"
                                     "      user: {{ event.text }}   # the question\n"),
               0,
               ":8:14: mapping keys must be plain strings (a value that starts with '{' is a "
               "YAML flow mapping: quote a template, as in user: \"{{ event.text }}\")");
    /* other keys that are not strings get no such hint */
    for (int k = 0; k < 2; k++) {
        eddy_diag d;
        eddy_job *job;
        const char *msg;
        eddy_diag_init(&d);
        assert_int_not_equal(
            eddy_job_load(write_file("uq2.yaml", k ? "job: j\nx: { [a]: b }\n"
                                                   : "job: j\nx: { { a: b }: c }\n"),
                          0, &job, &d),
            0);
        assert_int_equal(d.n, 1);
        msg = strstr(d.msgs[0], "uq2.yaml:2:6: ");
        assert_non_null(msg);
        assert_string_equal(msg, "uq2.yaml:2:6: mapping keys must be plain strings");
        eddy_diag_free(&d);
    }
}

/* A tab in indentation gave libyaml's words, not the cause. */
static void test_tab_indentation(void **state)
{
    (void)state;
    expect_one(write_file("tab.yaml", "job: j\nkey: k\nmodels:\n  m:\n  \tmodel: x\n"), 0,
               ":5:3: invalid YAML: tab character used for indentation");
    expect_one(write_file("tab2.yaml", "job: j\nkey: k\nmodels:\n\tm: {}\n"), 0,
               ":4:1: invalid YAML: tab character used for indentation");
    /* a tab after the indentation is only a separator */
    eddy_job_free(load_ok("tab3.yaml", "job:\tj\nkey: k\n" MODEL_AND_AGENT, 0));
}

/* A number from the environment could not be written: quoted it was a
 * string, unquoted inside { } a YAML syntax error. */
static void test_env_typed_by_setting(void **state)
{
    eddy_job *job;
    (void)state;
    unsetenv("EDDY_T_GRACE");
    unsetenv("EDDY_T_CONC");
    unsetenv("EDDY_T_KEY");
    setenv("EDDY_T_MODEL", "007", 1);
    setenv("EDDY_T_ATT", "3", 1);
    setenv("EDDY_T_FLOW", "12", 1);
    job = load_ok("env.yaml",
                  "job: j\n"
                  "key: k\n"
                  "shutdown_grace: \"${EDDY_T_GRACE:-250ms}\"\n"
                  "max_in_flight: '${EDDY_T_MAX:-77}'\n"
                  "models:\n"
                  "  m:\n"
                  "    base_url: ${EDDY_T_URL:-http://x}\n"
                  "    model: \"${EDDY_T_MODEL}\"\n"
                  "    api_key: ${EDDY_T_KEY:-}\n"
                  "    limits: { concurrency: ${EDDY_T_CONC:-64} }\n"
                  "    retry: { attempts: \"${EDDY_T_ATT}\", backoff: ${EDDY_T_B:-1s..2s} }\n"
                  "    temperature: ${EDDY_T_TEMP:-0.5}\n"
                  "agents:\n"
                  "  a: { prompt: { user: hi }, budget: { turns: ${EDDY_T_FLOW} } }\n",
                  0);
    assert_int_equal(job->shutdown_grace_ms, 250);
    assert_int_equal(job->max_in_flight, 77);
    assert_string_equal(job->models[0].model, "007"); /* a string setting keeps the text */
    assert_string_equal(job->models[0].api_key, "");
    assert_int_equal(job->models[0].concurrency, 64);
    assert_int_equal(job->models[0].max_attempts, 3);
    assert_int_equal(job->models[0].backoff_cap_ms, 2000);
    assert_true(job->models[0].has_temperature && job->models[0].temperature == 0.5);
    assert_int_equal(job->agents[0].budget_turns, 12);
    eddy_job_free(job);
}

/* Places after a ${...} in flow context stay right, and a value that is
 * not what the setting wants says so there. */
static void test_env_places(void **state)
{
    static const char *const want[] = {
        ":6:49: unknown key 'x' (expected one of: concurrency, requests_per_minute, "
        "tokens_per_minute)",
        ":6:28: 'concurrency' must be an integer, not a string",
    };
    eddy_yaml_doc doc;
    eddy_diag d;
    (void)state;
    unsetenv("EDDY_T_BAD");
    unsetenv("EDDY_T_U");
    expect_diags("job: j\nkey: k\n"
                 "models:\n"
                 "  m:\n"
                 "    base_url: http://x\n"
                 "    limits: { concurrency: ${EDDY_T_BAD:-lots}, x: 1 }\n"
                 "    model: m\n"
                 "agents:\n"
                 "  a: { prompt: { user: hi } }\n",
                 want, 2);
    eddy_diag_init(&d);
    assert_int_equal(eddy_yaml_load_string("x: { a: ${EDDY_T_U:-\xc3\xa9\xc3\xa9}, b: ] }\n",
                                           "t.yaml", &doc, &d),
                     EDDY_EPARSE);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(d.msgs[0], "t.yaml:1:29: invalid YAML"));
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
    /* the text comes back whole, keys too */
    eddy_diag_init(&d);
    assert_int_equal(
        eddy_yaml_load_string("{ k: \"${EDDY_T_U:-a b} and $${X}\", ${EDDY_T_U}: 1 }\n", "t.yaml",
                              &doc, &d),
        0);
    assert_string_equal(json_string_value(json_object_get(doc.root, "k")), "a b and ${X}");
    assert_non_null(json_object_get(doc.root, "${EDDY_T_U}"));
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
    /* an escape inside a quoted default is libyaml's to read */
    eddy_diag_init(&d);
    assert_int_equal(eddy_yaml_load_string("q: \"${EDDY_T_U:-a\\tb}\"\n", "t.yaml", &doc, &d), 0);
    assert_string_equal(json_string_value(json_object_get(doc.root, "q")), "a\tb");
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
}

static const char kTool[] = "return eddy.tool {\n"
                            "  name = \"x\", description = \"d\",\n"
                            "  params = { q = \"string\" },\n"
                            "  run = function(args) return args end,\n"
                            "}\n";

static void write_tools(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/tools", g_dir);
    mkdir(dir, 0755);
    write_file("tools/x.lua", kTool);
    write_file("tools/x2.lua", kTool); /* another file, the same tool name */
}

/* The long form of a tool entry, with the budgets of its calls. */
static void test_tool_long_form(void **state)
{
    eddy_job *job;
    (void)state;
    write_tools();
    job = load_ok("long.yaml",
                  "job: j\nkey: k\n"
                  "models:\n"
                  "  m: { base_url: 'http://x', model: m }\n"
                  "agents:\n"
                  "  a:\n"
                  "    prompt: { user: hi }\n"
                  "    tools:\n"
                  "      - { lua: tools/x.lua, limits: { instructions: 5000000, memory: 16MB, "
                  "wall: 2s } }\n"
                  "  b:\n"
                  "    prompt: { user: hi }\n"
                  "    tools:\n"
                  "      - lua: tools/x.lua\n"
                  "        limits: { memory: 64MiB }\n"
                  "      - tools/x2.lua\n"
                  "  c:\n"
                  "    prompt: { user: hi }\n"
                  "    tools: [ { lua: tools/x.lua, limits: { memory: 512KB } },\n"
                  "             { lua: tools/x2.lua, limits: { memory: 1000, wall: 1 } } ]\n",
                  0);
    assert_int_equal(job->agents[0].tools[0].limits.instructions, 5000000);
    assert_int_equal(job->agents[0].tools[0].limits.memory, 16000000);
    assert_int_equal(job->agents[0].tools[0].limits.wall_ms, 2000);
    assert_non_null(strstr(job->agents[0].tools[0].path, "tools/x.lua"));
    assert_int_equal(job->agents[1].ntools, 2);
    assert_int_equal(job->agents[1].tools[0].limits.memory, 64 << 20);
    assert_int_equal(job->agents[1].tools[0].limits.instructions, 0);
    assert_int_equal(job->agents[1].tools[1].limits.memory, 0);
    assert_int_equal(job->agents[2].tools[0].limits.memory, 512000);
    assert_int_equal(job->agents[2].tools[1].limits.memory, 1000);
    assert_int_equal(job->agents[2].tools[1].limits.wall_ms, 1000);
    eddy_job_free(job);
}

/* config:, http: and timeout: of a tool entry; what the environment gave
 * config is a secret of the tool and of the job. */
static void test_tool_config_http(void **state)
{
    eddy_job *job;
    const eddy_tool_ref *r;
    json_t *allow;
    (void)state;
    write_tools();
    setenv("EDDY_T_TOKEN", "tok-0123456789", 1);
    setenv("EDDY_T_PORT", "8443", 1);
    job = load_ok("cfg.yaml",
                  "job: j\nkey: k\n"
                  "models:\n"
                  "  m: { base_url: 'http://x', model: m }\n"
                  "agents:\n"
                  "  a:\n"
                  "    prompt: { user: hi }\n"
                  "    tools:\n"
                  "      - lua: tools/x.lua\n"
                  "        config: { base_url: 'https://orders.internal:${EDDY_T_PORT}', token: "
                  "\"Bearer ${EDDY_T_TOKEN}\", n: [1, { deep: '${EDDY_T_TOKEN}' }] }\n"
                  "        http: { allow: [orders.internal:443, '*.Example.com', '[::1]:8080', "
                  "127.0.0.1], max_redirects: 2 }\n"
                  "        timeout: 5s\n",
                  0);
    assert_non_null(job);
    r = &job->agents[0].tools[0];
    assert_int_equal(r->limits.wall_ms, 5000);
    assert_string_equal(json_string_value(json_object_get(r->config, "token")),
                        "Bearer tok-0123456789");
    assert_int_equal(r->nsecrets, 1); /* "8443" is too short to be taken for a secret */
    assert_string_equal(r->secrets[0], "tok-0123456789");
    assert_int_equal(job->nsecrets, 1);
    allow = json_object_get(r->http, "allow");
    assert_int_equal(json_array_size(allow), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(allow, 0), "host")),
                        "orders.internal");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(allow, 0), "port")), 443);
    assert_string_equal(json_string_value(json_object_get(json_array_get(allow, 1), "host")),
                        "*.example.com");
    assert_string_equal(json_string_value(json_object_get(json_array_get(allow, 2), "host")),
                        "::1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(allow, 3), "port")), 0);
    assert_int_equal(json_integer_value(json_object_get(r->http, "max_redirects")), 2);
    assert_int_equal(json_integer_value(json_object_get(r->http, "max_response")), 10 << 20);
    eddy_job_free(job);
    { /* a value deep under long keys is found too (its path is longer than a line) */
        char text[2048], key[301];
        memset(key, 'k', 300);
        key[300] = '\0';
        snprintf(text, sizeof(text),
                 "job: j\nkey: k\n"
                 "models:\n"
                 "  m: { base_url: 'http://x', model: m }\n"
                 "agents:\n"
                 "  a:\n"
                 "    prompt: { user: hi }\n"
                 "    tools:\n"
                 "      - lua: tools/x.lua\n"
                 "        config: { %s: { %s: { token: '${EDDY_T_TOKEN}' } } }\n",
                 key, key);
        job = load_ok("cfg2.yaml", text, 0);
        assert_non_null(job);
        r = &job->agents[0].tools[0];
        assert_int_equal(r->nsecrets, 1);
        assert_int_equal(job->nsecrets, 1);
        eddy_job_free(job);
    }
    unsetenv("EDDY_T_TOKEN");
    unsetenv("EDDY_T_PORT");
}

static void test_tool_config_http_errors(void **state)
{
    static const char *const want[] = {
        ":9:50: 'config' must be a mapping, not a list",
        ":12:18: give the tool's wall-clock budget once: 'timeout' or 'limits.wall'",
        ":11:25: an http.allow entry must be a host or host:port",
        ":11:28: http.allow entry 'a:b:c': write an IPv6 address as [::1]:8080",
        ":11:37: http.allow entry 'h:99999': the port must be 1 to 65535",
        ":11:48: http.allow entry 'x/y': '/' cannot be in a host name",
        ":11:55: http.allow entry 'a*b': '*' cannot be in a host name",
    };
    (void)state;
    write_tools();
    expect_diags("job: j\nkey: k\n"
                 "models:\n"
                 "  m: { base_url: 'http://x', model: m }\n"
                 "agents:\n"
                 "  a:\n"
                 "    prompt: { user: hi }\n"
                 "    tools:\n"
                 "      - { lua: tools/x.lua, timeout: 1s, config: [1] }\n"
                 "      - lua: tools/x2.lua\n"
                 "        http: { allow: [1, 'a:b:c', 'h:99999', 'x/y', 'a*b'] }\n"
                 "        timeout: 2s\n"
                 "        limits: { wall: 1s }\n",
                 want, sizeof(want) / sizeof(want[0]));
}

static void test_tool_long_form_errors(void **state)
{
    static const char *const want[] = {
        ":9:11: unknown key 'lau' (did you mean 'lua'?)",
        ":9:9: missing required key 'lua'",
        ":10:29: unknown key 'limit' (did you mean 'limits'?)",
        ":11:80: unknown key 'stack' (expected one of: instructions, memory, wall)",
        ":11:74: 'instructions' must be an integer, not a string",
        ":11:47: 'memory' must be between 1 byte and 4GiB",
        ":11:56: 'wall' must be between 1ms and 1d",
        ":12:47: 'memory' must be between 1 byte and 4GiB",
        ":13:9: a tool must be the path of a Lua file, '{lua: FILE, config: {...}, limits: {...}}' "
        "or a native",
    };
    (void)state;
    expect_diags("job: j\nkey: k\n"
                 "models:\n"
                 "  m: { base_url: 'http://x', model: m }\n"
                 "agents:\n"
                 "  a:\n"
                 "    prompt: { user: hi }\n"
                 "    tools:\n"
                 "      - { lau: tools/x.lua }\n"
                 "      - { lua: tools/x.lua, limit: {} }\n"
                 "      - { lua: tools/x.lua, limits: { memory: 0, wall: 0s, instructions: lots, "
                 "stack: 1 } }\n"
                 "      - { lua: tools/x.lua, limits: { memory: 5GB } }\n"
                 "      - 42\n",
                 want, sizeof(want) / sizeof(want[0]));
}

/* Whether the tools of JOB load the way the worker loads them: all agents
 * into one host, through eddy_agent_rt_new. */
static int run_would_load(const eddy_job *job)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_agent_env env = {0};
    eddy_err e;
    int ok = 1;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(eddy_tools_new(&loop, job->dir, &h, &e), 0);
    eddy_tools_configure(h, job->modules);
    env.loop = &loop;
    env.tools = h;
    for (size_t i = 0; i < job->nagents && ok; i++) {
        eddy_agent_rt *rt;
        ok = eddy_agent_rt_new(&job->agents[i], &env, &rt, &e) == 0;
        if (ok)
            eddy_agent_rt_free(rt);
    }
    eddy_tools_close(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    return ok;
}

/* Two agents listing one tool file passed `check` (a host per agent) and
 * failed `run` (one host): check now loads as run does, so they agree. */
static void test_tools_check_agrees_with_run(void **state)
{
    static const char text[] = "job: j\nkey: k\n"
                               "models:\n"
                               "  m: { base_url: 'http://x', model: m }\n"
                               "agents:\n"
                               "  a: { prompt: { user: hi }, tools: [ tools/x.lua ] }\n"
                               "  b: { prompt: { user: hi }, tools: [ tools/x.lua ] }\n";
    eddy_job *job;
    eddy_diag d;
    int checked, ran;
    (void)state;
    write_tools();
    job = load_ok("two.yaml", text, 0);
    ran = run_would_load(job);
    eddy_job_free(job);
    eddy_diag_init(&d);
    checked = eddy_job_load(write_file("two.yaml", text), EDDY_JOB_TOOLS, &job, &d) == 0;
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(checked, ran);
    eddy_diag_free(&d);
    eddy_job_free(job);
}

/* Two different tools of one name in one agent's list: both places. */
static void test_tool_name_twice_in_agent(void **state)
{
    eddy_diag d;
    eddy_job *job;
    const char *path;
    char want[1024];
    (void)state;
    write_tools();
    path = write_file("dup.yaml", "job: j\nkey: k\n"
                                  "models:\n"
                                  "  m: { base_url: 'http://x', model: m }\n"
                                  "agents:\n"
                                  "  a:\n"
                                  "    prompt: { user: hi }\n"
                                  "    tools: [ tools/x.lua, tools/x2.lua ]\n");
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, EDDY_JOB_TOOLS, &job, &d), 0);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, 1);
    snprintf(want, sizeof(want),
             "%s:8:27: agent 'a' lists two tools named 'x': %s/tools/x2.lua here and "
             "%s/tools/x.lua at %s:8:14",
             path, g_dir, g_dir, path);
    assert_string_equal(d.msgs[0], want);
    eddy_diag_free(&d);
}

static void mkdir_in(const char *name)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", g_dir, name);
    assert_true(mkdir(p, 0755) == 0 || errno == EEXIST);
}

/* What `run` refuses at start passed `check`: a sink in a missing folder,
 * stores that are folders or not databases, a missing source. */
static void test_files_run_opens(void **state)
{
    static const char *const want[] = {
        ":6:21: state store '",      ":7:16: trace store '", ":4:16: sink '",
        ":5:23: dead-letter file '", ":3:18: source '",
    };
    static const char *const tail[] = {
        "': it is a folder",
        "': it is not an SQLite database",
        "/nofolder' does not exist",
        "/afile' is not a folder",
        "': cannot be read: No such file or directory",
    };
    eddy_diag d;
    eddy_job *job;
    const char *path;
    (void)state;
    mkdir_in("adir");
    write_file("afile", "x");
    write_file("notsqlite.db", "not a database, just text\n");
    path = write_file("io.yaml", "job: io\n"
                                 "key: k\n"
                                 "source: { jsonl: missing.jsonl }\n"
                                 "sink: { jsonl: nofolder/out.jsonl }\n"
                                 "dead_letter: { jsonl: afile/dl.jsonl }\n"
                                 "checkpoint: { path: adir }\n"
                                 "trace: { path: notsqlite.db }\n" MODEL_AND_AGENT);
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, EDDY_JOB_FILES, &job, &d), 0);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, 5);
    for (size_t i = 0; i < 5; i++) {
        char full[1024];
        snprintf(full, sizeof(full), "%s%s", path, want[i]);
        assert_ptr_equal(strstr(d.msgs[i], full), d.msgs[i]);
        assert_non_null(strstr(d.msgs[i], tail[i]));
    }
    eddy_diag_free(&d);
    /* without the file checks the job loads; a run's overrides replace them */
    job = load_ok("io.yaml",
                  NULL == path ? ""
                               : "job: io\nkey: k\n"
                                 "sink: { jsonl: nofolder/out.jsonl }\n"
                                 "source: { jsonl: missing.jsonl }\n" MODEL_AND_AGENT,
                  0);
    {
        eddy_job_io io = {"-", "-", NULL, NULL, NULL, NULL};
        eddy_diag_init(&d);
        assert_int_equal(eddy_job_check_io(job, &io, &d), 0);
        assert_int_equal(d.n, 0);
        io.output = "nofolder2/x.jsonl";
        assert_int_equal(eddy_job_check_io(job, &io, &d), EDDY_ESCHEMA);
        assert_int_equal(d.n, 1);
        assert_ptr_equal(strstr(d.msgs[0], "--output: sink 'nofolder2/x.jsonl'"), d.msgs[0]);
        eddy_diag_free(&d);
    }
    eddy_job_free(job);
}

/* Defaults need nothing to exist yet; a sink in the folder the stores
 * create (.eddy/) is fine, since run opens the stores first. */
static void test_files_defaults_fresh_folder(void **state)
{
    eddy_job *job;
    eddy_diag d;
    const char *path;
    char p[600];
    (void)state;
    mkdir_in("fresh");
    mkdir_in("blocked");
    job = load_ok("fresh/job.yaml",
                  "job: order-support\nkey: k\n"
                  "source: { jsonl: job.yaml }\n"
                  "sink: { jsonl: .eddy/answers.jsonl }\n" MODEL_AND_AGENT,
                  EDDY_JOB_FILES);
    snprintf(p, sizeof(p), "%s/fresh/.eddy/order-support/state.db", g_dir);
    assert_string_equal(job->state_path, p);
    snprintf(p, sizeof(p), "%s/fresh/.eddy/order-support/traces.db", g_dir);
    assert_string_equal(job->trace_path, p);
    snprintf(p, sizeof(p), "%s/fresh/.eddy/order-support/dead-letter.jsonl", g_dir);
    assert_string_equal(job->dead_letter, p);
    eddy_job_free(job);
    /* a file where the default folder would go: named at `job:` */
    write_file("blocked/.eddy", "x");
    path = write_file("blocked/job.yaml", "job: b\nkey: k\n" MODEL_AND_AGENT);
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, EDDY_JOB_FILES, &job, &d), 0);
    assert_int_equal(d.n, 3); /* state, traces, dead letters */
    snprintf(p, sizeof(p),
             "%s:1:1: state store '%s/blocked/.eddy/b/state.db' (the default): '%s/blocked/.eddy' "
             "is not a folder",
             path, g_dir, g_dir);
    assert_string_equal(d.msgs[0], p);
    eddy_diag_free(&d);
}

/* The sink or dead-letter file could be a file the job reads, and eddy
 * appended JSON lines to it (`--output job.yaml` corrupted the job). */
static void test_sink_is_a_file_the_job_reads(void **state)
{
    eddy_diag d;
    eddy_job *job;
    const char *path;
    char want[2048];
    (void)state;
    write_tools();
    mkdir_in("sio");
    write_file("sio/prompt.md", "You help {{key}}.\n");
    write_file("sio/events.jsonl", "");
    path = write_file("sio/job.yaml", "job: sio\nkey: k\n"
                                      "source: { jsonl: events.jsonl }\n"
                                      "sink: { jsonl: ./job.yaml }\n"
                                      "dead_letter: { jsonl: prompt.md }\n"
                                      "models:\n"
                                      "  m: { base_url: 'http://x', model: m }\n"
                                      "agents:\n"
                                      "  a:\n"
                                      "    prompt: { system_file: prompt.md, user: hi }\n"
                                      "    tools: [ ../tools/x.lua ]\n");
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, EDDY_JOB_FILES, &job, &d), 0);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "  diag: %s\n", d.msgs[i]);
    assert_int_equal(d.n, 2);
    snprintf(want, sizeof(want),
             "%s:4:16: sink '%s/sio/./job.yaml': it is also the job file, and eddy would append "
             "JSON lines to it",
             path, g_dir);
    assert_string_equal(d.msgs[0], want);
    snprintf(want, sizeof(want),
             "%s:5:23: dead-letter file '%s/sio/prompt.md': it is also the system_file of agent "
             "'a' (%s:10:28), and eddy",
             path, g_dir, path);
    assert_ptr_equal(strstr(d.msgs[1], want), d.msgs[1]);
    eddy_diag_free(&d);
    /* the job's own paths are fine; the command line's are checked the same way */
    job = load_ok("sio/job.yaml",
                  "job: sio\nkey: k\n"
                  "source: { jsonl: events.jsonl }\n"
                  "models:\n"
                  "  m: { base_url: 'http://x', model: m }\n"
                  "agents:\n"
                  "  a:\n"
                  "    prompt: { system_file: prompt.md, user: hi }\n"
                  "    tools: [ ../tools/x.lua ]\n",
                  EDDY_JOB_FILES);
    {
        char tool[600], events[600], dl[600], cwd[600];
        eddy_job_io io = {NULL, tool, events, NULL, NULL, NULL};
        snprintf(tool, sizeof(tool), "%s/sio/../tools/x.lua", g_dir);
        snprintf(events, sizeof(events), "%s/sio/events.jsonl", g_dir);
        eddy_diag_init(&d);
        assert_int_equal(eddy_job_check_io(job, &io, &d), EDDY_ESCHEMA);
        assert_int_equal(d.n, 2);
        assert_non_null(strstr(d.msgs[0], "--output: sink '"));
        assert_non_null(strstr(d.msgs[0], "': it is also the tool file of agent 'a' listed at "));
        assert_non_null(strstr(d.msgs[1], "--dead-letter: dead-letter file '"));
        assert_non_null(strstr(d.msgs[1], "': it is also the source ("));
        eddy_diag_free(&d);
        /* neither exists yet: the same path resolved is the same file */
        snprintf(dl, sizeof(dl), "%s/sio/../sio/new.jsonl", g_dir);
        io = (eddy_job_io){"new.jsonl", NULL, dl, NULL, NULL, NULL};
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(g_dir), 0);
        assert_int_equal(chdir("sio"), 0);
        eddy_diag_init(&d);
        assert_int_equal(eddy_job_check_io(job, &io, &d), EDDY_ESCHEMA);
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "  diag: %s\n", d.msgs[i]);
        assert_int_equal(d.n, 2); /* and the missing source */
        assert_non_null(strstr(d.msgs[0], "': it is also the source (--input)"));
        eddy_diag_free(&d);
        assert_int_equal(chdir(cwd), 0);
    }
    eddy_job_free(job);
}

/* A prompt file with invalid UTF-8 passed check and was left out of the
 * model request at run time; from the environment, an inline prompt with
 * invalid UTF-8 was reported at 4:1 as "a job file must be a mapping". */
static void test_prompt_invalid_utf8(void **state)
{
    eddy_diag d;
    eddy_job *job;
    const char *path;
    char want[1024];
    (void)state;
    mkdir_in("pu");
    static const char bad[] = "You help {{key}}.\nCaf\xc3\xa9 cr\xe8me\n",
                      nul[] = "You help\0 {{key}}.\n";
    write_bytes("pu/p.md", bad, sizeof(bad) - 1);
    path = write_file("pu/job.yaml", "job: j\nkey: k\n"
                                     "models:\n"
                                     "  m: { base_url: 'http://x', model: m }\n"
                                     "agents:\n"
                                     "  a:\n"
                                     "    prompt: { system_file: p.md, user: hi }\n");
    eddy_diag_init(&d);
    assert_int_not_equal(eddy_job_load(path, 0, &job, &d), 0);
    assert_int_equal(d.n, 1);
    snprintf(want, sizeof(want),
             "p.md:2:8: invalid UTF-8 (byte 0xE8): a prompt is UTF-8 text (system_file given at "
             "%s:7:28)",
             path);
    assert_string_equal(d.msgs[0], want);
    eddy_diag_free(&d);
    write_bytes("pu/p.md", nul, sizeof(nul) - 1);
    expect_one(path, 0, ":7:28: prompt file 'p.md' has a NUL byte (at byte 8)");
    setenv("EDDY_T_BADU", "caf\xe9", 1);
    expect_one(write_file("pu/job.yaml", "job: j\nkey: k\n"
                                         "models:\n"
                                         "  m: { base_url: 'http://x', model: m }\n"
                                         "agents:\n"
                                         "  a:\n"
                                         "    prompt: { user: \"Hi ${EDDY_T_BADU}\" }\n"),
               0, ":7:21: invalid UTF-8 (byte 0xE9) in the value of an environment variable");
    unsetenv("EDDY_T_BADU");
}

/* Two jobs of one folder shared .eddy/state.db. */
static void test_default_paths_per_job(void **state)
{
    char *s;
    eddy_job *a, *b;
    (void)state;
    a = load_ok("ja.yaml", "job: alpha\nkey: k\n" MODEL_AND_AGENT, 0);
    b = load_ok("jb.yaml", "job: beta\nkey: k\n" MODEL_AND_AGENT, 0);
    assert_non_null(strstr(a->state_path, "/.eddy/alpha/state.db"));
    assert_non_null(strstr(b->state_path, "/.eddy/beta/state.db"));
    assert_non_null(strstr(b->trace_path, "/.eddy/beta/traces.db"));
    eddy_job_free(a);
    eddy_job_free(b);
    assert_string_equal(s = eddy_job_dir_name("order-support_2.x"), "order-support_2.x");
    eddy_free(s);
    s = eddy_job_dir_name("my job/../x");
    assert_int_equal(strncmp(s, "my_job_.._x-", 12), 0);
    assert_int_equal(strlen(s), 12 + 8);
    assert_null(strchr(s, '/'));
    eddy_free(s);
    {
        char *x = eddy_job_dir_name("a b"), *y = eddy_job_dir_name("a_b");
        assert_string_not_equal(x, y);
        eddy_free(x);
        eddy_free(y);
    }
    s = eddy_job_dir_name("..");
    assert_string_not_equal(s, "..");
    assert_int_equal(strncmp(s, "..-", 3), 0);
    eddy_free(s);
}

/* EDDY_JOB_PATHS (`eddy trace`, `eddy state` on a job): the stores' paths
 * come out of a job whose API key is in an unset variable and whose agents
 * are not even valid; a variable unset where a path is read is still named,
 * with its place; a full load of the same file refuses it. */
static void test_paths_only_without_environment(void **state)
{
    static const char kJob[] =
        "job: envless\n"
        "key: id\n"
        "models:\n"
        "  default: { base_url: 'http://127.0.0.1:9/v1', model: m,\n"
        "             api_key: '${EDDY_T_NOKEY}', timeout: ${EDDY_T_NOTO} }\n"
        "agents: { a: { modle: x } }\n"
        "trace: { path: t/traces.db }\n";
    static const char *const want[] = {":2:21: environment variable EDDY_T_NODIR is not set"};
    eddy_diag d;
    eddy_job *job;
    const char *path;
    (void)state;
    unsetenv("EDDY_T_NOKEY");
    unsetenv("EDDY_T_NOTO");
    unsetenv("EDDY_T_NODIR");
    path = write_file("envless.yaml", kJob);
    eddy_diag_init(&d);
    assert_int_equal(eddy_job_load(path, EDDY_JOB_PATHS, &job, &d), 0);
    assert_int_equal(d.n, 0);
    assert_non_null(strstr(job->trace_path, "/t/traces.db"));
    assert_non_null(strstr(job->state_path, ".eddy/envless/state.db"));
    eddy_job_free(job);
    assert_int_not_equal(eddy_job_load(path, 0, &job, &d), 0);
    assert_null(job);
    assert_true(d.n >= 2);
    eddy_diag_free(&d);
    expect_diags_flags("job: j\ncheckpoint: { path: '${EDDY_T_NODIR}/s.db' }\n", EDDY_JOB_PATHS,
                       want, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_job),
        cmocka_unit_test(test_trace_settings),
        cmocka_unit_test(test_dashboard_settings),
        cmocka_unit_test(test_unknown_keys_and_types),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_missing_env_and_model),
        cmocka_unit_test(test_agent_without_model),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_scalar_types),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_duration_forms),
        cmocka_unit_test(test_empty_strings),
        cmocka_unit_test(test_bad_key_path),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_invalid_utf8_place),
        cmocka_unit_test(test_tab_indentation),
        cmocka_unit_test(test_unquoted_template_hint),
        cmocka_unit_test(test_prompt_invalid_utf8),
        cmocka_unit_test(test_env_typed_by_setting),
        cmocka_unit_test(test_env_places),
        cmocka_unit_test(test_tool_long_form),
        cmocka_unit_test(test_tool_config_http),
        cmocka_unit_test(test_tool_config_http_errors),
        cmocka_unit_test(test_tool_long_form_errors),
        cmocka_unit_test(test_tools_check_agrees_with_run),
        cmocka_unit_test(test_tool_name_twice_in_agent),
        cmocka_unit_test(test_files_run_opens),
        cmocka_unit_test(test_files_defaults_fresh_folder),
        cmocka_unit_test(test_default_paths_per_job),
        cmocka_unit_test(test_sink_is_a_file_the_job_reads),
        cmocka_unit_test(test_paths_only_without_environment),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("job", tests, tmpdir_setup, tmpdir_teardown);
}
