/* tests/unit/test_tools.c - JSON <-> Lua, parameter schemas, sandbox, calls. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/tools.h"

static void roundtrip(eddy_tools *h, const char *text)
{
    lua_State *L = eddy_tools_lua(h);
    json_t *in = json_loads(text, JSON_DECODE_ANY, NULL), *out;
    eddy_err e;
    char *s;
    assert_non_null(in);
    assert_int_equal(eddy_lua_push_json(L, in), 0);
    out = eddy_lua_to_json(L, -1, &e);
    lua_pop(L, 1);
    assert_non_null(out);
    s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    assert_string_equal(s, text); /* TEXT is written with sorted keys */
    eddy_free(s);
    json_decref(in);
    json_decref(out);
}

static void test_json_lua_roundtrip(void **state)
{
    eddy_tools *h;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    roundtrip(h, "{\"a\":[1,2.5,\"x\",true,null],\"b\":{\"c\":{}},\"d\":[],\"e\":1.0}");
    roundtrip(h, "[[],{},[[1]]]");
    roundtrip(h, "-9007199254740993");
    roundtrip(h, "\"h\xc3\xa9llo\"");
    eddy_tools_free(h);
}

static json_t *eval(eddy_tools *h, const char *chunk, eddy_err *e)
{
    lua_State *L = eddy_tools_lua(h);
    json_t *v;
    assert_int_equal(luaL_dostring(L, chunk), 0);
    v = eddy_lua_to_json(L, -1, e);
    lua_pop(L, 1);
    return v;
}

static void test_lua_tables_to_json(void **state)
{
    eddy_tools *h;
    eddy_err e;
    json_t *v;
    char *s;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    v = eval(h, "return {1, 2, 3}", &e);
    assert_true(json_is_array(v) && json_array_size(v) == 3);
    json_decref(v);
    v = eval(h, "return {}", &e); /* an unmarked empty table is an object */
    assert_true(json_is_object(v));
    json_decref(v);
    v = eval(h, "return {[1]='a', [3]='c'}", &e); /* sparse: object with string keys */
    s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"1\":\"a\",\"3\":\"c\"}");
    eddy_free(s);
    json_decref(v);
    v = eval(h, "return {n = 3, f = 3.0, i = 3}", &e);
    assert_true(json_is_integer(json_object_get(v, "n")));
    assert_true(json_is_real(json_object_get(v, "f")));
    json_decref(v);
    assert_null(eval(h, "return {f = function() end}", &e));
    assert_non_null(strstr(e.msg, ".f: a function cannot be converted to JSON"));
    assert_null(eval(h, "local t = {} ; t.self = t ; return t", &e));
    assert_non_null(strstr(e.msg, "nested deeper"));
    assert_null(eval(h, "return 0/0", &e));
    eddy_tools_free(h);
}

static void test_load_tool_and_schema(void **state)
{
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    char *s;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    assert_int_equal(
        eddy_tools_load(h,
                        write_file("ok.lua", "return eddy.tool {\n"
                                             "  name = 'get', description = 'd',\n"
                                             "  params = { z = 'integer', a = { type = "
                                             "'string', required = true, enum = {'x','y'} },\n"
                                             "    l = { type = 'array', items = 'number' } },\n"
                                             "  run = function(args) return args end }\n"),
                        &t, &e),
        0);
    s = json_dumps(eddy_tool_schema(t), JSON_COMPACT);
    assert_string_equal(s,
                        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"enum\":"
                        "[\"x\",\"y\"]},\"l\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}},"
                        "\"z\":{\"type\":\"integer\"}},\"required\":[\"a\"],"
                        "\"additionalProperties\":false}");
    eddy_free(s);
    {
        json_t *bad = json_loads("{\"a\":\"q\"}", 0, NULL),
               *bad2 = json_loads("{\"z\":1}", 0, NULL);
        json_t *bad3 = json_loads("{\"a\":\"x\",\"l\":[1,\"2\"]}", 0, NULL);
        json_t *good = json_loads("{\"a\":\"x\",\"z\":2.0,\"l\":[1,2.5]}", 0, NULL);
        assert_int_equal(eddy_tool_validate_args(eddy_tool_schema(t), bad, &e), EDDY_ESCHEMA);
        assert_non_null(strstr(e.msg, "arguments.a: value is not one of the allowed values"));
        assert_int_equal(eddy_tool_validate_args(eddy_tool_schema(t), bad2, &e), EDDY_ESCHEMA);
        assert_non_null(strstr(e.msg, "missing required argument 'a'"));
        assert_int_equal(eddy_tool_validate_args(eddy_tool_schema(t), bad3, &e), EDDY_ESCHEMA);
        assert_non_null(strstr(e.msg, "arguments.l[1]: expected number, got string"));
        assert_int_equal(eddy_tool_validate_args(eddy_tool_schema(t), good, &e), 0);
        json_decref(bad);
        json_decref(bad2);
        json_decref(bad3);
        json_decref(good);
    }
    /* a second tool of the same name is refused */
    assert_int_equal(eddy_tools_load(h,
                                     write_file("dup.lua", "return eddy.tool { name = 'get', "
                                                           "description = 'd', run = "
                                                           "function() end }\n"),
                                     &t, &e),
                     EDDY_EEXIST);
    eddy_tools_free(h);
}

static void test_load_errors_name_place(void **state)
{
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    const char *p;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    p = write_file("syn.lua", "local x = 1\nreturn eddy.tool {\n  name = 'x' 'y',\n}\n");
    assert_int_not_equal(eddy_tools_load(h, p, &t, &e), 0);
    assert_non_null(strstr(e.msg, "syn.lua:3:"));
    p = write_file("sch.lua", "return eddy.tool {\n  name = 's', description = 'd',\n"
                              "  params = {\n      id = { type = 'strng' },\n  },\n"
                              "  run = function() end }\n");
    assert_int_equal(eddy_tools_load(h, p, &t, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "sch.lua:4:7: parameter 'id': unknown type 'strng'"));
    p = write_file("noio.lua", "io.open('/etc/passwd')\n");
    assert_int_equal(eddy_tools_load(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "attempt to index a nil value (global 'io')"));
    p = write_file("noreq.lua", "return require('os')\n");
    assert_int_equal(eddy_tools_load(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "global 'require'"));
    p = write_file("bytecode.lua", "return load(string.dump(function() end))\n");
    assert_int_equal(eddy_tools_load(h, p, &t, &e), EDDY_ESCHEMA); /* load gave nil */
    p = write_file("escape.lua", "return eddy.file.read('../../etc/passwd')\n");
    assert_int_equal(eddy_tools_load(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "outside the job's folder"));
    eddy_tools_free(h);
}

typedef struct done {
    int n;
    int status[4];
    char *out[4];
} done_t;

static void on_done(eddy_tool_result *r, void *ud)
{
    done_t *d = ud;
    d->status[d->n] = r->status;
    d->out[d->n] =
        r->status ? eddy_strdup(r->err.msg) : json_dumps(r->result, JSON_COMPACT | JSON_SORT_KEYS);
    d->n++;
}

static void test_concurrent_calls_and_memory(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_tool_memory *mem;
    eddy_err e;
    done_t d;
    json_t *a1 = json_loads("{\"ms\":60,\"tag\":\"slow\"}", 0, NULL);
    json_t *a2 = json_loads("{\"ms\":5,\"tag\":\"fast\"}", 0, NULL);
    json_t *a3 = json_loads("{\"ms\":-1,\"tag\":\"boom\"}", 0, NULL);
    json_t *doc = json_loads("{\"count\":1}", 0, NULL), *after;
    json_t *ev = json_loads("{\"text\":\"hi\"}", 0, NULL);
    eddy_tool_ctx ctx;
    uint64_t t0;
    (void)state;
    memset(&d, 0, sizeof(d));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    assert_int_equal(
        eddy_tools_load(
            h,
            write_file(
                "wait.lua",
                "return eddy.tool { name = 'wait', description = 'sleeps',\n"
                "  params = { ms = { type = 'integer', required = true }, tag = 'string' },\n"
                "  run = function(args, ctx)\n"
                "    if args.ms < 0 then error('negative wait') end\n"
                "    eddy.sleep(args.ms)\n"
                "    ctx.memory.count = ctx.memory.count + 1\n"
                "    return { tag = args.tag, key = ctx.key, text = ctx.event.text }\n"
                "  end }\n"),
            &t, &e),
        0);
    assert_int_equal(eddy_tool_memory_new(h, doc, &mem, &e), 0);
    ctx.key = "K";
    ctx.event = ev;
    ctx.memory = mem;
    t0 = eddy_now_ms();
    assert_int_equal(eddy_tool_call(h, t, a1, &ctx, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, t, a2, &ctx, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, t, a3, &ctx, on_done, &d, &e), 0);
    assert_int_equal(d.n, 0); /* never inside the call */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.n, 3);
    /* the error finishes first, then the fast sleeper: they ran concurrently */
    assert_int_equal(d.status[0], EDDY_ETOOL);
    assert_non_null(strstr(d.out[0], "wait.lua:4: negative wait"));
    assert_string_equal(d.out[1], "{\"key\":\"K\",\"tag\":\"fast\",\"text\":\"hi\"}");
    assert_string_equal(d.out[2], "{\"key\":\"K\",\"tag\":\"slow\",\"text\":\"hi\"}");
    assert_true(eddy_now_ms() - t0 < 1000);
    after = eddy_tool_memory_json(mem, &e);
    assert_int_equal(json_integer_value(json_object_get(after, "count")), 3);
    assert_int_equal(eddy_tools_active(h), 0);
    for (int i = 0; i < 3; i++)
        eddy_free(d.out[i]);
    json_decref(after);
    eddy_tool_memory_free(mem);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(a1);
    json_decref(a2);
    json_decref(a3);
    json_decref(doc);
    json_decref(ev);
}

static void test_runaway_loop_is_stopped(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    done_t d;
    json_t *args = json_object();
    (void)state;
    memset(&d, 0, sizeof(d));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    assert_int_equal(
        eddy_tools_load(h,
                        write_file("spin.lua",
                                   "return eddy.tool { name = 'spin', description = 'loops',\n"
                                   "  run = function() while true do end end }\n"),
                        &t, &e),
        0);
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, &d, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.status[0], EDDY_ETOOL);
    assert_non_null(strstr(d.out[0], "instruction budget"));
    eddy_free(d.out[0]);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lua_roundtrip),
        cmocka_unit_test(test_lua_tables_to_json),
        cmocka_unit_test(test_load_tool_and_schema),
        cmocka_unit_test(test_load_errors_name_place),
        cmocka_unit_test(test_concurrent_calls_and_memory),
        cmocka_unit_test(test_runaway_loop_is_stopped),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("tools", tests, tmpdir_setup, tmpdir_teardown);
}
