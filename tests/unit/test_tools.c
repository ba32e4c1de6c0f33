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

static int load_tool(eddy_tools *h, const char *path, eddy_tool **out, eddy_err *err)
{
    return eddy_tools_load(h, path, NULL, out, err);
}

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
        load_tool(h,
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
    /* the host keeps tools of one name from two files (agents check their own
     * lists); the same file with the same limits is the same tool */
    {
        eddy_tool *t2 = NULL, *t3 = NULL;
        const char *dup = write_file("dup.lua", "return eddy.tool { name = 'get', "
                                                "description = 'd', run = function() end }\n");
        assert_int_equal(load_tool(h, dup, &t2, &e), 0);
        assert_ptr_not_equal(t2, t);
        assert_int_equal(load_tool(h, dup, &t3, &e), 0);
        assert_ptr_equal(t2, t3);
    }
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
    assert_int_not_equal(load_tool(h, p, &t, &e), 0);
    assert_non_null(strstr(e.msg, "syn.lua:3:"));
    p = write_file("sch.lua", "return eddy.tool {\n  name = 's', description = 'd',\n"
                              "  params = {\n      id = { type = 'strng' },\n  },\n"
                              "  run = function() end }\n");
    assert_int_equal(load_tool(h, p, &t, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "sch.lua:4:7: parameter 'id': unknown type 'strng'"));
    p = write_file("noio.lua", "io.open('/etc/passwd')\n");
    assert_int_equal(load_tool(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "attempt to index a nil value (global 'io')"));
    p = write_file("noreq.lua", "return require('os')\n");
    assert_int_equal(load_tool(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "global 'require'"));
    p = write_file("bytecode.lua", "return load(string.dump(function() end))\n");
    assert_int_equal(load_tool(h, p, &t, &e), EDDY_ELUA); /* no string.dump */
    assert_non_null(strstr(e.msg, "bytecode.lua:1:"));
    assert_non_null(strstr(e.msg, "'dump'"));
    p = write_file("escape.lua", "return eddy.file.read('../../etc/passwd')\n");
    assert_int_equal(load_tool(h, p, &t, &e), EDDY_ELUA);
    assert_non_null(strstr(e.msg, "outside the job's folder"));
    eddy_tools_free(h);
}

typedef struct done {
    int n;
    int status[8];
    char *out[8];
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
        load_tool(h,
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
    memset(&ctx, 0, sizeof(ctx));
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

/* ctx.config: each call gets its own copy of the entry's config; the same
 * file with another config is another tool; the tool's secrets never reach
 * its error messages. */
static void test_tool_config_and_secrets(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t1, *t2, *t3;
    eddy_err e;
    done_t d;
    json_t *cfg1 = json_loads("{\"token\":\"tok-SECRET-1\",\"n\":1}", 0, NULL);
    json_t *cfg2 = json_loads("{\"token\":\"tok-SECRET-2\",\"n\":2}", 0, NULL);
    json_t *ok = json_loads("{\"fail\":false}", 0, NULL),
           *bad = json_loads("{\"fail\":true}", 0, NULL);
    const char *secrets[] = {"tok-SECRET-1"};
    eddy_tool_opts o1, o2;
    eddy_tool_ctx ctx;
    const char *path;
    (void)state;
    memset(&d, 0, sizeof(d));
    memset(&ctx, 0, sizeof(ctx));
    memset(&o1, 0, sizeof(o1));
    o1.config = cfg1;
    o1.secrets = secrets;
    o1.nsecrets = 1;
    o2 = o1;
    o2.config = cfg2;
    o2.nsecrets = 0;
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    path = write_file("cfg.lua",
                      "return eddy.tool { name = 'cfg', description = 'reads its config',\n"
                      "  params = { fail = 'boolean' },\n"
                      "  run = function(args, ctx)\n"
                      "    if args.fail then error('cannot reach ' .. ctx.config.token) end\n"
                      "    local seen = ctx.config.mark\n"
                      "    ctx.config.mark = 'changed'\n"
                      "    return { n = ctx.config.n, mark = seen or 'none' }\n"
                      "  end }\n");
    assert_int_equal(eddy_tools_load_opts(h, path, &o1, &t1, &e), 0);
    assert_int_equal(eddy_tools_load_opts(h, path, &o1, &t3, &e), 0);
    assert_ptr_equal(t1, t3); /* the same entry: the tool already loaded */
    /* another config: another tool (of the same name, for another agent) */
    assert_int_equal(eddy_tools_load_opts(h, path, &o2, &t2, &e), 0);
    assert_ptr_not_equal(t1, t2);
    assert_int_equal(eddy_tool_call(h, t1, ok, &ctx, on_done, &d, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tool_call(h, t1, ok, &ctx, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, t1, bad, &ctx, on_done, &d, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tool_call(h, t2, ok, &ctx, on_done, &d, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.n, 4);
    assert_string_equal(d.out[3], "{\"mark\":\"none\",\"n\":2}");
    assert_string_equal(d.out[0], "{\"mark\":\"none\",\"n\":1}");
    assert_string_equal(d.out[1], "{\"mark\":\"none\",\"n\":1}"); /* the change did not stay */
    assert_int_equal(d.status[2], EDDY_ETOOL);
    assert_non_null(strstr(d.out[2], "cannot reach [REDACTED]"));
    assert_null(strstr(d.out[2], "SECRET"));
    assert_string_equal(json_string_value(json_object_get(eddy_tool_config(t1), "token")),
                        "tok-SECRET-1");
    assert_null(eddy_tool_http(t1));
    {
        /* a secret that starts another is no way to keep the longer one's end */
        const char *two[] = {"abc123", "abc123-admin-xyz"};
        eddy_tool_opts o3 = o1;
        eddy_tool *t4;
        char buf[128];
        o3.config = ok;
        o3.secrets = two;
        o3.nsecrets = 2;
        assert_int_equal(eddy_tools_load_opts(h, path, &o3, &t4, &e), 0);
        assert_string_equal(eddy_tool_redact(t4, "k=abc123-admin-xyz, abc123.", buf, sizeof(buf)),
                            "k=[REDACTED], [REDACTED].");
    }
    for (int i = 0; i < 4; i++)
        eddy_free(d.out[i]);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(cfg1);
    json_decref(cfg2);
    json_decref(ok);
    json_decref(bad);
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
        load_tool(h,
                  write_file("spin.lua",
                             "return eddy.tool { name = 'spin', description = 'loops',\n"
                             "  run = function() while true do end end }\n"),
                  &t, &e),
        0);
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, &d, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.status[0], EDDY_EBUDGET);
    assert_non_null(strstr(d.out[0], "instruction budget of 200000000 exceeded"));
    eddy_free(d.out[0]);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
}

/* -- native modules ----------------------------------------------------------- */

/* A test module "kv": get answers from a timer, now inside the call, refuse
 * fails at once; the tool kind kv_tool answers through a timer too. */
typedef struct kv_state {
    uv_loop_t *loop;
    int opens, closes, calls;
} kv_state;

static kv_state g_kv;

typedef struct kv_later {
    uv_timer_t timer;
    eddy_tool_wait *w;
    char name[64];
    int tool, n; /* n: the how-many-th call this is */
} kv_later;

static void kv_later_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

static void kv_answer(kv_later *k)
{
    if (!strcmp(k->name, "bad"))
        eddy_tool_wait_done(k->w, EDDY_EIO, NULL, "kv: 'bad' is broken");
    else if (!strcmp(k->name, "missing"))
        eddy_tool_wait_done(k->w, 0, k->tool ? json_pack("{s:b}", "found", 0) : NULL, NULL);
    else
        eddy_tool_wait_done(k->w, 0, json_pack("{s:s, s:i}", "name", k->name, "n", k->n), NULL);
}

static void kv_fire(uv_timer_t *t)
{
    kv_answer(t->data);
    uv_close((uv_handle_t *)t, kv_later_closed);
}

static int kv_start(const char *name, int tool, int now, eddy_tool_wait *w, eddy_err *err)
{
    kv_later *k;
    g_kv.calls++;
    if (!name)
        return eddy_err_set(err, EDDY_EINVAL, "name must be a string");
    k = eddy_calloc(1, sizeof(*k));
    assert_non_null(k);
    k->w = w;
    k->tool = tool;
    k->n = g_kv.calls;
    snprintf(k->name, sizeof(k->name), "%s", name);
    if (now) {
        kv_answer(k);
        eddy_free(k);
        return 0;
    }
    uv_timer_init(g_kv.loop, &k->timer);
    k->timer.data = k;
    uv_timer_start(&k->timer, kv_fire, 5, 0);
    return 0;
}

static int kv_get(void *st, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    assert_ptr_equal(st, &g_kv);
    assert_null(data);
    return kv_start(json_string_value(json_array_get(args, 0)), 0, 0, w, err);
}

static int kv_now(void *st, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)st;
    (void)data;
    return kv_start(json_string_value(json_array_get(args, 0)), 0, 1, w, err);
}

static int kv_refuse(void *st, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)st;
    (void)data;
    (void)args;
    (void)w;
    return eddy_err_set(err, EDDY_EINVAL, "refused on purpose");
}

static int kv_tool_call(void *st, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)st;
    assert_string_equal(data, "tool-data");
    return kv_start(json_string_value(json_object_get(args, "name")), 1, 0, w, err);
}

static int kv_open(uv_loop_t *loop, const json_t *cfg, void **st, eddy_err *err)
{
    (void)err;
    assert_string_equal(json_string_value(json_object_get(cfg, "where")), "here");
    g_kv.loop = loop;
    g_kv.opens++;
    *st = &g_kv;
    return 0;
}

static void kv_close(void *st)
{
    ((kv_state *)st)->closes++;
}

static int kv_tool_new(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t, eddy_err *err)
{
    const char *name = json_string_value(json_object_get(cfg, "name"));
    assert_string_equal(json_string_value(json_object_get(modcfg, "where")), "here");
    if (!name)
        return eddy_err_set(err, EDDY_EINVAL, "'name' is required");
    t->name = eddy_strdup(name);
    t->description = eddy_strdup("looks names up");
    t->params = json_loads("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},"
                           "\"required\":[\"name\"],\"additionalProperties\":false}",
                           0, NULL);
    t->call = kv_tool_call;
    t->data = eddy_strdup("tool-data");
    t->free_data = eddy_free;
    return 0;
}

static const eddy_native_reg kv_fns[] = {
    {"get", kv_get}, {"now", kv_now}, {"refuse", kv_refuse}, {NULL, NULL}};
static const eddy_tools_module kv_module = {"kv",   kv_open,   kv_close,
                                            kv_fns, "kv_tool", kv_tool_new};

static void test_native_functions_and_tools(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t, *nt;
    eddy_err e;
    done_t d;
    json_t *settings = json_loads("{\"kv\":{\"where\":\"here\"}}", 0, NULL);
    json_t *a1 = json_loads("{\"name\":\"ada\"}", 0, NULL);
    json_t *a2 = json_loads("{\"name\":\"missing\"}", 0, NULL);
    json_t *a3 = json_loads("{\"name\":\"bad\"}", 0, NULL);
    json_t *bad_cfg = json_object(), *cfg = json_loads("{\"name\":\"kv_lookup\"}", 0, NULL);
    (void)state;
    memset(&d, 0, sizeof(d));
    memset(&g_kv, 0, sizeof(g_kv));
    assert_int_equal(eddy_tools_register_module(&kv_module), 0);
    assert_int_equal(eddy_tools_register_module(&kv_module), 0); /* the same again: no-op */
    assert_true(eddy_tools_has_kind("kv_tool"));
    assert_false(eddy_tools_has_kind("nope"));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    eddy_tools_configure(h, settings);
    assert_int_equal(
        load_tool(h,
                  write_file("use_kv.lua",
                             "return eddy.tool { name = 'use_kv', description = 'calls kv',\n"
                             "  params = { name = { type = 'string', required = true } },\n"
                             "  run = function(args)\n"
                             "    local a = eddy.kv.get(args.name)\n"
                             "    local b = eddy.kv.now(args.name)\n"
                             "    local ok1, e1 = pcall(eddy.kv.get, 'bad')\n"
                             "    local ok2, e2 = pcall(eddy.kv.refuse)\n"
                             "    local ok3, e3 = pcall(eddy.kv.get, 42)\n"
                             "    local ok4, e4 = pcall(coroutine.wrap(function() return "
                             "eddy.kv.get('x') end))\n"
                             "    return { a = a, b = b, e1 = e1, e2 = e2, e3 = e3, e4 = e4,\n"
                             "             ok = not (ok1 or ok2 or ok3 or ok4),\n"
                             "             missing = eddy.kv.get('missing') == nil }\n"
                             "  end }\n"),
                  &t, &e),
        0);
    assert_int_equal(g_kv.opens, 0); /* opened at first use */
    assert_int_equal(eddy_tools_load_native(h, "kv_tool", bad_cfg, &nt, &e), EDDY_EINVAL);
    assert_string_equal(e.msg, "'name' is required");
    assert_int_equal(eddy_tools_load_native(h, "nope", cfg, &nt, &e), EDDY_EINVAL);
    assert_string_equal(e.msg, "unknown tool kind 'nope'");
    assert_int_equal(eddy_tools_load_native(h, "kv_tool", cfg, &nt, &e), 0);
    assert_string_equal(eddy_tool_name(nt), "kv_lookup");
    assert_string_equal(eddy_tool_description(nt), "looks names up");

    assert_int_equal(eddy_tool_call(h, t, a1, NULL, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, nt, a1, NULL, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, nt, a2, NULL, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, nt, a3, NULL, on_done, &d, &e), 0);
    assert_int_equal(eddy_tool_call(h, nt, bad_cfg, NULL, on_done, &d, &e), 0);
    assert_int_equal(d.n, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.n, 5);
    assert_int_equal(g_kv.opens, 1);
    /* the schema check fails first, then the tool calls in timer order, the Lua tool last */
    assert_int_equal(d.status[0], EDDY_ESCHEMA);
    assert_non_null(strstr(d.out[0], "name"));
    assert_string_equal(d.out[1], "{\"n\":2,\"name\":\"ada\"}");
    assert_string_equal(d.out[2], "{\"found\":false}");
    assert_int_equal(d.status[3], EDDY_EIO);
    assert_string_equal(d.out[3], "tool 'kv_lookup' failed: kv: 'bad' is broken");
    json_t *r = json_loads(d.out[4], 0, NULL);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "a"), "name")), "ada");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "b"), "name")), "ada");
    assert_non_null(strstr(json_string_value(json_object_get(r, "e1")),
                           "use_kv.lua:6: eddy.kv.get: kv: 'bad' is broken"));
    assert_non_null(
        strstr(json_string_value(json_object_get(r, "e2")), "eddy.kv.refuse: refused on purpose"));
    assert_non_null(
        strstr(json_string_value(json_object_get(r, "e3")), "eddy.kv.get: name must be a string"));
    assert_non_null(strstr(json_string_value(json_object_get(r, "e4")),
                           "eddy.kv.get can only be used while a tool runs"));
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_true(json_is_true(json_object_get(r, "missing")));
    json_decref(r);
    eddy_tools_close(h);
    assert_int_equal(g_kv.closes, 1);
    for (int i = 0; i < 5; i++)
        eddy_free(d.out[i]);
    eddy_tools_free(h);
    assert_int_equal(g_kv.closes, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(settings);
    json_decref(a1);
    json_decref(a2);
    json_decref(a3);
    json_decref(bad_cfg);
    json_decref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lua_roundtrip),
        cmocka_unit_test(test_lua_tables_to_json),
        cmocka_unit_test(test_load_tool_and_schema),
        cmocka_unit_test(test_load_errors_name_place),
        cmocka_unit_test(test_concurrent_calls_and_memory),
        cmocka_unit_test(test_tool_config_and_secrets),
        cmocka_unit_test(test_runaway_loop_is_stopped),
        cmocka_unit_test(test_native_functions_and_tools),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("tools", tests, tmpdir_setup, tmpdir_teardown);
}
