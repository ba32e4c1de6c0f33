/*
 * tests/unit/test_sandbox.c - the Lua sandbox: budgets that cannot be
 * escaped, isolation between calls and keys, time slicing, file reads, the
 * allocation-failure loop, and the Lua <-> JSON round trip property.
 *
 * (The same attacks through the real binary and the mock model are in
 * tests/integration/sandbox_test.py.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <sys/stat.h>
#include <time.h>

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/memory.h"
#include "eddy/tools.h"

typedef struct outcome {
    int done, status;
    char *text; /* error message or compact JSON */
    int order;
} outcome;

static int g_order;

static void on_done(eddy_tool_result *r, void *ud)
{
    outcome *o = ud;
    o->done++;
    o->status = r->status;
    o->order = ++g_order;
    o->text = r->status ? eddy_strdup(r->err.msg)
                        : json_dumps(r->result, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

/* A tool file whose run is BODY (a Lua function body with args, ctx). */
static const char *tool_file(const char *name, const char *body)
{
    char text[8192], file[128];
    snprintf(text, sizeof(text),
             "return eddy.tool { name = '%s', description = 'd',\n"
             "  params = { x = { type = 'string' } },\n"
             "  run = function(args, ctx)\n%s\n  end }\n",
             name, body);
    snprintf(file, sizeof(file), "%s.lua", name);
    return write_file(file, text);
}

typedef struct attack {
    const char *name;
    const char *body;
    const char *expect; /* substring of the error, or of the JSON result */
} attack;

static const eddy_tool_limits kSmall = {5000000, 16LL << 20, 2000};

static const attack kAttacks[] = {
    /* instructions, whatever catches errors */
    {"spin", "while true do end", "instruction budget of 5000000 exceeded"},
    {"pcall_swallow", "while true do pcall(function() while true do end end) end",
     "instruction budget"},
    {"xpcall_swallow",
     "while true do xpcall(function() while true do end end, function(e) return e end) end",
     "instruction budget"},
    {"error_handler_loops",
     "xpcall(function() error('x') end, function() while true do end end) return 1",
     "instruction budget"},
    {"coroutine_spin",
     "local co = coroutine.create(function() while true do end end)\n"
     "while true do coroutine.resume(co) end",
     "instruction budget"},
    {"wrap_spin", "local f = coroutine.wrap(function() while true do end end) f()",
     "instruction budget"},
    {"nested_coroutines",
     "local function deep(n) if n == 0 then while true do end end\n"
     "  local co = coroutine.create(deep) return coroutine.resume(co, n - 1) end\n"
     "while true do pcall(deep, 20) end",
     "instruction budget"},
    {"sort_comparator_spin",
     "local t = {3,2,1} table.sort(t, function(a, b) while true do end end)", "instruction budget"},
    {"gsub_callback_spin", "string.gsub('aaa', 'a', function() while true do end end)",
     "instruction budget"},
    {"metamethod_spin",
     "local t = setmetatable({}, {__index = function() while true do end end}) return t.x",
     "instruction budget"},
    {"tostring_spin",
     "local t = setmetatable({}, {__tostring = function() while true do end end}) "
     "return tostring(t)",
     "instruction budget"},
    {"close_spin",
     "do local x <close> = setmetatable({}, {__close = function() while true do end end}) end",
     "instruction budget"},
    {"coroutine_close_swallow",
     "local co = coroutine.create(function() while true do end end)\n"
     "while true do pcall(coroutine.resume, co) pcall(coroutine.close, co) end",
     "instruction budget"},
    /* C functions that would run for minutes */
    {"rep_empty", "return #string.rep('', 1e15)", "0"},
    {"rep_sep_empty", "return #string.rep('', 1e15, '')", "0"},
    {"rep_huge", "return #string.rep('x', 1e12)", "budget"},
    {"table_move_huge", "table.move({}, 1, 1e15, 2) return 1", "instruction budget"},
    {"table_unpack_huge", "return table.unpack({}, 1, 1e8)", "budget"},
    {"table_concat_range", "return table.concat({}, '', 1, 1e15)", "budget"},
    {"pattern_backtracking",
     "return string.find(string.rep('a', 5000), string.rep('a*', 40) .. 'b')",
     "instruction budget"},
    {"gsub_growth", "local s = string.rep('x', 4096) while true do s = s:gsub('x', 'xx') end",
     "budget of"},
    {"gmatch_backtracking",
     "for m in string.gmatch(string.rep('a', 3000), string.rep('a?', 30) .. string.rep('a', 30) "
     ".. 'b') do end",
     "instruction budget"},
    /* memory */
    {"rep_doubling", "local s = 'x' while true do s = s .. s end", "memory budget of 16 MiB"},
    {"table_growth", "local t = {} local i = 0 while true do i = i + 1 t[i] = {i} end",
     "memory budget of 16 MiB"},
    {"coroutine_bomb",
     "local t = {} while true do t[#t + 1] = coroutine.create(function() end) end",
     "memory budget of 16 MiB"},
    {"pcall_memory",
     "local t = {} while true do pcall(function() t[#t + 1] = string.rep('y', 65536) end) end",
     "budget of"},
    {"deep_recursion", "local function f() return 1 + f() end return f()", "budget"},
    /* wall clock */
    {"sleep_forever", "eddy.sleep(1e15) return 1", "wall-clock budget of 2s exceeded"},
    {"sleep_loop", "while true do eddy.sleep(100) end", "wall-clock budget of 2s exceeded"},
    /* the sandbox */
    {"no_string_dump", "return string.dump == nil", "true"},
    {"no_getenv",
     "return os.getenv == nil and io == nil and debug == nil and package == nil "
     "and require == nil and collectgarbage == nil and dofile == nil",
     "true"},
    {"no_binary_load", "local f, e = load(string.char(27) .. 'LuaT') return e", "binary chunk"},
    {"no_gc", "setmetatable({}, {__gc = function() while true do end end})",
     "finalizers (__gc) are not allowed"},
    {"no_gc_placeholder", "setmetatable({}, {__gc = false})", "finalizers (__gc) are not allowed"},
    {"string_readonly", "string.upper = function() return 'pwned' end", "read-only"},
    {"string_rawset", "rawset(string, 'upper', print)", "read-only"},
    {"string_mt_hidden", "return getmetatable('') == false", "true"},
    {"table_readonly", "table.insert = nil", "read-only"},
    {"eddy_readonly", "eddy.json = {}", "read-only"},
    {"eddy_json_readonly", "eddy.json.encode = print", "read-only"},
    {"array_mt_protected", "return getmetatable(eddy.array{})", "\"eddy.array\""},
    {"setmetatable_array", "setmetatable(eddy.array{}, {})", "protected metatable"},
    {"file_abs", "return eddy.file.read('/etc/passwd')", "outside the job's folder"},
    {"file_dotdot", "return eddy.file.read('../../../etc/passwd')", "outside the job's folder"},
    {"file_symlink", "return eddy.file.read('passwd_link')", "outside the job's folder"},
    {"file_symlink_dir", "return eddy.file.read('etc_link/passwd')", "outside the job's folder"},
    {"file_environ", "return eddy.file.read('environ_link')", "outside the job's folder"},
    {"file_fifo", "local t, e = eddy.file.read('fifo') return e", "not a regular file"},
    {"file_state", "local t, e = eddy.file.read('.eddy/job/state.db') return e",
     "eddy's own state"},
    {"file_sqlite", "local t, e = eddy.file.read('other.db') return e", "SQLite databases"},
    {"file_denied", "local t, e = eddy.file.read('denied.db') return e", "eddy's own state"},
    {"file_ok", "return eddy.file.read('data.txt')", "hello"},
    {"yield_outside", "coroutine.yield(1)", "outside a coroutine the tool made"},
    /* found in review */
    {"library_into_memory", "ctx.memory.s = string", "a library cannot be stored"},
    {"library_inside_memory_table",
     "ctx.memory.t = { s = string } ctx.memory.t.s.upper = function() return 'pwned' end",
     "read-only"},
    {"len_metamethod_insert",
     "local t = setmetatable({}, {__len = function() return 1 << 50 end, __index = type,\n"
     "  __newindex = rawequal}) table.insert(t, 1, 'x')",
     "instruction budget"},
    {"len_metamethod_sort",
     "local t = setmetatable({}, {__len = function() return (1 << 31) - 2 end, __index = type,\n"
     "  __newindex = rawequal}) table.sort(t)",
     "instruction budget"},
    {"len_metamethod_concat",
     "local t = setmetatable({}, {__len = function() return 1 << 40 end, __index = rawlen})\n"
     "return table.concat(t)",
     "instruction budget"},
    {"sleep_in_comparator",
     "local ok, e = pcall(table.sort, {1, 2}, function(a, b) eddy.sleep(10) return a < b end)\n"
     "local n = 0 for i = 1, 1e5 do n = n + i end return e",
     "cannot be used here"},
    {"dag_result", "local t = {} for i = 1, 30 do t = {t, t} end return t", "too large"},
    {"dag_encode", "local t = {} for i = 1, 30 do t = {t, t} end return eddy.json.encode(t)",
     "memory budget"},
    {"date_format", "return #os.date(string.rep('%%', 1.5e7))", "budget"},
    {"format_q", "return #string.format('%q', string.rep('x', 20e6))", "budget"},
    {"g_to_file_globals", "_G = nil local F = _G F.shared = 1", "attempt to index a nil value"},
    {"fd_leak", "for i = 1, 3000 do eddy.file.read('.') end return eddy.file.read('data.txt')",
     "hello"},
    {"error_number", "error(123.5)", "123.5"},
    {"close_then_loop",
     "local co = coroutine.create(function()\n"
     "  local x <close> = setmetatable({}, {__close = function()\n"
     "    local s = string.rep('x', 4e6) for i = 1, 5000 do end end})\n"
     "  coroutine.yield() end)\n"
     "coroutine.resume(co) coroutine.close(co)\n"
     "local n = 0 for i = 1, 1e6 do n = n + 1 end return n",
     "1000000"},
    {"nul_keys", "return {['a\\0b'] = 1, ['a\\0c'] = 2}", "\"a\\u0000c\":2"},
    {"object_forced", "return eddy.object{'x', 'y'}", "{\"1\":\"x\",\"2\":\"y\"}"},
    {"no_randomseed", "return math.randomseed == nil", "true"},
    /* second review */
    {"close_chain",
     "local mt = {__close = function(o) coroutine.close(o[1]) end}\n"
     "local function body(nxt) local x <close> = setmetatable({nxt}, mt) coroutine.yield() end\n"
     "local prev = coroutine.create(function() coroutine.yield() end)\n"
     "coroutine.resume(prev)\n"
     "for i = 1, 12000 do local co = coroutine.create(body) coroutine.resume(co, prev) "
     "prev = co end\n"
     "return select(2, coroutine.close(prev))",
     "null"}, /* no crash: the nested closes stop at depth 100 (their errors are dropped
               * by the __close handlers), and the outer close returns */
    {"sort_long_strings",
     "local a = string.rep('x', 1000000) local b = string.rep('x', 1000000)\n"
     "local t = {} for i = 1, 3000 do t[i] = (i % 2 == 0) and a or b end table.sort(t)",
     "instruction budget"},
    {"codes_skip",
     "local s = string.rep('\\x80', 4000000) local f = utf8.codes('')\n"
     "while true do f(s, 0) end",
     "instruction budget"},
    {"resume_own_thread", "local co = coroutine.running() return select(2, coroutine.resume(co))",
     "cannot resume"},
    {"close_own_thread",
     "local co = coroutine.running()\n"
     "local f = coroutine.wrap(function() return select(2, pcall(coroutine.close, co)) end)\n"
     "return f()",
     "coroutine"},
    {"rawset_library_memory", "rawset(ctx.memory, 'e', eddy)", "a library cannot be stored"},
    {"encode_copies",
     "local s = string.rep('x', 4000000) local t = {} for i = 1, 15 do t[i] = s end\n"
     "return eddy.json.encode(t)",
     "memory budget"},
    {"decode_objects", "return #eddy.json.decode('[' .. string.rep('{}', 200000, ',') .. ']')",
     "memory budget"},
};

static void prepare_files(void)
{
    char p[600], q[600];
    static const char sqlite_hdr[] = "SQLite format 3";
    FILE *f;
    write_file("data.txt", "hello");
    snprintf(p, sizeof(p), "%s/passwd_link", g_dir);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    snprintf(p, sizeof(p), "%s/etc_link", g_dir);
    assert_int_equal(symlink("/etc", p), 0);
    snprintf(p, sizeof(p), "%s/environ_link", g_dir);
    assert_int_equal(symlink("/proc/self/environ", p), 0);
    snprintf(p, sizeof(p), "%s/fifo", g_dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    snprintf(p, sizeof(p), "%s/.eddy", g_dir);
    mkdir(p, 0700);
    snprintf(q, sizeof(q), "%s/job", p);
    mkdir(q, 0700);
    write_file(".eddy/job/state.db", "x");
    snprintf(p, sizeof(p), "%s/other.db", g_dir);
    f = fopen(p, "w");
    assert_non_null(f);
    fwrite(sqlite_hdr, 1, sizeof(sqlite_hdr), f);
    fputs("rest of the database", f);
    fclose(f);
    write_file("denied.db", "not even sqlite");
}

static void test_attacks(void **state)
{
    size_t n = sizeof(kAttacks) / sizeof(kAttacks[0]);
    outcome *o = calloc(n, sizeof(*o));
    eddy_tool **t = calloc(n, sizeof(*t));
    uv_loop_t loop;
    eddy_tools *h;
    eddy_err e;
    json_t *args = json_object();
    char denied[600];
    (void)state;
    prepare_files();
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    snprintf(denied, sizeof(denied), "%s/denied.db", g_dir);
    assert_int_equal(eddy_tools_deny_file(h, denied, &e), 0);
    /* one at a time: the wall budget is per call. ATTACK=name runs only that
     * attack (the others pass unseen); ATTACK_TIMES=1 prints each duration */
    for (size_t i = 0; i < n; i++) {
        if (getenv("ATTACK") && strcmp(getenv("ATTACK"), kAttacks[i].name)) {
            o[i].done = 1;
            o[i].text = strdup(kAttacks[i].expect);
            continue;
        }
        if (eddy_tools_load(h, tool_file(kAttacks[i].name, kAttacks[i].body), &kSmall, &t[i], &e))
            fail_msg("%s: %s", kAttacks[i].name, e.msg);
        {
            uint64_t t0 = uv_hrtime();
            assert_int_equal(eddy_tool_call(h, t[i], args, NULL, on_done, &o[i], &e), 0);
            uv_run(&loop, UV_RUN_DEFAULT);
            if (getenv("ATTACK_TIMES"))
                print_message("%-24s %6.1f ms\n", kAttacks[i].name, (uv_hrtime() - t0) / 1e6);
        }
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(o[i].done, 1);
        if (!o[i].text || !strstr(o[i].text, kAttacks[i].expect))
            fail_msg("attack %s: expected '%s', got '%s'", kAttacks[i].name, kAttacks[i].expect,
                     o[i].text ? o[i].text : "(null)");
        free(o[i].text);
    }
    eddy_tools_close(h);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
    free(o);
    free(t);
}

/* Globals of one call are not seen by the next; a ctx kept past its call
 * is dead; library changes never reach another call. */
static void test_isolation(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    outcome o[4];
    json_t *args = json_object(), *doc_a = json_loads("{\"secret\":\"A\"}", 0, NULL);
    eddy_tool_memory *ma, *mb;
    eddy_tool_ctx ca, cb;
    (void)state;
    memset(o, 0, sizeof(o));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    assert_int_equal(
        eddy_tools_load(h,
                        tool_file("iso", "    local seen = { g = leaked, _G = _G.leaked2,\n"
                                         "                   l = loaded_global }\n"
                                         "    leaked = ctx.key; _G.leaked2 = ctx.key\n"
                                         "    load('loaded_global = 1')()\n"
                                         "    if STASH then\n"
                                         "      seen.stash = select(2, pcall(function()\n"
                                         "        return STASH.secret end))\n"
                                         "    end\n"
                                         "    if keep then\n"
                                         "      seen.kept = select(2, pcall(function() "
                                         "return keep.memory.secret end))\n"
                                         "      seen.ctx = select(2, pcall(function() "
                                         "return keep.key end))\n"
                                         "    end\n"
                                         "    keep = ctx; STASH = ctx.memory\n"
                                         "    rawset(_ENV, 'x', 1)\n"
                                         "    return seen\n"),
                        NULL, &t, &e),
        0);
    /* a file-level upvalue is the author's choice; a global is not shared */
    assert_int_equal(eddy_tool_memory_new(h, doc_a, &ma, &e), 0);
    assert_int_equal(eddy_tool_memory_new(h, NULL, &mb, &e), 0);
    ca = (eddy_tool_ctx){"A", NULL, ma, NULL, NULL, NULL};
    cb = (eddy_tool_ctx){"B", NULL, mb, NULL, NULL, NULL};
    assert_int_equal(eddy_tool_call(h, t, args, &ca, on_done, &o[0], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tool_call(h, t, args, &cb, on_done, &o[1], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_string_equal(o[0].text, "{}");
    assert_string_equal(o[1].text, "{}"); /* nothing of A's call is visible */
    free(o[0].text);
    free(o[1].text);

    /* a ctx kept in an upvalue is dead after its call */
    assert_int_equal(
        eddy_tools_load(h,
                        write_file("up.lua", "local keep\n"
                                             "return eddy.tool { name = 'up', description = 'd',\n"
                                             "  run = function(args, ctx)\n"
                                             "    local r = {}\n"
                                             "    if keep then\n"
                                             "      r.mem = select(2, pcall(function() return "
                                             "keep.memory.secret end))\n"
                                             "      r.ctx = select(2, pcall(function() return "
                                             "keep.key end))\n"
                                             "      r.write = select(2, pcall(function() "
                                             "keep.memory.secret = 'B' end))\n"
                                             "    end\n"
                                             "    keep = ctx\n"
                                             "    return r end }\n"),
                        NULL, &t, &e),
        0);
    assert_int_equal(eddy_tool_call(h, t, args, &ca, on_done, &o[2], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tool_call(h, t, args, &cb, on_done, &o[3], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_string_equal(o[2].text, "{}");
    assert_non_null(strstr(o[3].text, "\"mem\":\""));
    assert_non_null(strstr(o[3].text, "up.lua:6: ctx used after its tool call returned"));
    assert_non_null(strstr(o[3].text, "up.lua:7: ctx used after its tool call returned"));
    assert_non_null(strstr(o[3].text, "up.lua:8: ctx used after its tool call returned"));
    free(o[2].text);
    free(o[3].text);
    /* a stashed ctx.memory converted by another key's call leaks nothing */
    assert_int_equal(
        eddy_tools_load(
            h,
            write_file("leak.lua",
                       "local stash\n"
                       "return eddy.tool { name = 'leak', description = 'd',\n"
                       "  run = function(args, ctx)\n"
                       "    if not stash then stash = ctx.memory return 'kept' end\n"
                       "    local ok1, r1 = pcall(eddy.json.encode, stash)\n"
                       "    local ok2, r2 = pcall(function() ctx.memory.c = {stash} end)\n"
                       "    return { r1 = tostring(r1), r2 = tostring(r2) } end }\n"),
            NULL, &t, &e),
        0);
    memset(o, 0, sizeof(o));
    assert_int_equal(eddy_tool_call(h, t, args, &ca, on_done, &o[0], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tool_call(h, t, args, &cb, on_done, &o[1], &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_null(strstr(o[1].text, "\"A\""));
    assert_non_null(strstr(o[1].text, "after its tool call returned"));
    free(o[0].text);
    free(o[1].text);
    {
        json_t *after = eddy_tool_memory_json(ma, &e);
        assert_string_equal(json_string_value(json_object_get(after, "secret")), "A");
        json_decref(after);
    }
    eddy_tool_memory_free(ma);
    eddy_tool_memory_free(mb);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
    json_decref(doc_a);
}

/* A call that computes for long yields to the loop: a short call started
 * after it finishes first, and a timer keeps firing meanwhile. */
static int g_ticks;
static void on_tick(uv_timer_t *t)
{
    (void)t;
    g_ticks++;
}

static void test_time_slicing(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    eddy_tools *h;
    eddy_tool *spin, *quick;
    eddy_err e;
    outcome o[3];
    json_t *args = json_object();
    const eddy_tool_limits lim = {400000000, 0, 0};
    (void)state;
    memset(o, 0, sizeof(o));
    g_order = 0;
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    assert_int_equal(
        eddy_tools_load(h,
                        tool_file("slice_spin", "local n = 0 for i = 1, 3e7 do n = n + i end\n"
                                                "local co = coroutine.wrap(function()\n"
                                                "  for i = 1, 3e7 do n = n - i end end) co()\n"
                                                "return n"),
                        &lim, &spin, &e),
        0);
    assert_int_equal(
        eddy_tools_load(h, tool_file("slice_quick", "return 'quick'"), NULL, &quick, &e), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 1, 1);
    assert_int_equal(eddy_tool_call(h, spin, args, NULL, on_done, &o[0], &e), 0);
    assert_int_equal(eddy_tool_call(h, quick, args, NULL, on_done, &o[1], &e), 0);
    while (o[0].done == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(o[0].status, 0);
    assert_string_equal(o[0].text, "0");
    assert_true(o[1].order < o[0].order);
    assert_true(g_ticks > 5); /* the loop ran while the call computed */
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    free(o[0].text);
    free(o[1].text);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
}

/* A call that computes where it cannot yield (here a sort comparator) is
 * stopped after a quarter of a second, whatever its instruction budget. */
static void test_no_yield_cap(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    outcome o;
    json_t *args = json_object();
    const eddy_tool_limits lim = {10000000000LL, 0, 0};
    uint64_t t0;
    (void)state;
    memset(&o, 0, sizeof(o));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    assert_int_equal(eddy_tools_load(h,
                                     tool_file("noyield", "table.sort({3, 2, 1}, function(a, b)\n"
                                                          "  while true do end end)"),
                                     &lim, &t, &e),
                     0);
    t0 = uv_hrtime();
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, &o, &e), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.status, EDDY_EBUDGET);
    assert_non_null(strstr(o.text, "ran for more than 250 ms where it cannot give other keys"));
    assert_true(uv_hrtime() - t0 < 5000000000ull); /* not its 10^10 instructions */
    free(o.text);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
}

/* Cancel: every call in flight ends now with EDDY_ECANCELED, once. */
static void test_cancel_all(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    outcome o[2];
    json_t *args = json_object();
    (void)state;
    memset(o, 0, sizeof(o));
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    assert_int_equal(eddy_tools_load(h, tool_file("sleeper", "eddy.sleep(1e9)"), NULL, &t, &e), 0);
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, &o[0], &e), 0);
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, &o[1], &e), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    eddy_tools_cancel_all(h);
    assert_int_equal(o[0].done + o[1].done, 0); /* never inside the call */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o[i].done, 1);
        assert_int_equal(o[i].status, EDDY_ECANCELED);
        free(o[i].text);
    }
    assert_int_equal(eddy_tools_active(h), 0);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(args);
}

/* Load errors: every problem of a file, with line and column; top-level
 * code under the same budgets as a call. */
static void test_load_errors(void **state)
{
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    const eddy_tool_limits lim = {1000000, 0, 0};
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, &e), 0);
    assert_int_equal(eddy_tools_load(h, write_file("loops.lua", "local x = 0\nwhile true do end\n"),
                                     &lim, &t, &e),
                     EDDY_EBUDGET);
    assert_non_null(strstr(e.msg, "loops.lua:2:1: instruction budget of 1000000 exceeded"));
    assert_int_equal(eddy_tools_load(h,
                                     write_file("rt.lua", "local x = 1\n  local y = nope.field\n"),
                                     NULL, &t, &e),
                     EDDY_ELUA);
    assert_non_null(strstr(e.msg, "rt.lua:2:13: attempt to index a nil value (global 'nope')"));
    assert_null(strchr(e.msg, '\n')); /* no traceback */
    assert_int_equal(eddy_tools_load(h,
                                     write_file("many.lua", "return eddy.tool {\n"
                                                            "  name = 'bad name',\n"
                                                            "  params = {\n"
                                                            "    a = { type = 'strng' },\n"
                                                            "    b = { type = 'nmber' },\n"
                                                            "  },\n"
                                                            "}\n"),
                                     NULL, &t, &e),
                     EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "many.lua:2:3: tool name 'bad name'"));
    assert_non_null(strstr(e.msg, "needs a 'description'"));
    assert_non_null(strstr(e.msg, "needs 'run'"));
    assert_non_null(strstr(e.msg, "many.lua:4:5: parameter 'a': unknown type 'strng'"));
    assert_non_null(strstr(e.msg, "many.lua:5:5: parameter 'b': unknown type 'nmber'"));
    {
        char nul[] = "local x = 1\nlocal y\0 = 2\n";
        char path[600];
        FILE *f;
        snprintf(path, sizeof(path), "%s/nul.lua", g_dir);
        f = fopen(path, "w");
        fwrite(nul, 1, sizeof(nul) - 1, f);
        fclose(f);
        assert_int_not_equal(eddy_tools_load(h, path, NULL, &t, &e), 0);
        assert_non_null(strstr(e.msg, "nul.lua:2:8: the file holds a NUL byte"));
    }
    assert_int_not_equal(
        eddy_tools_load(h,
                        write_file("mt.lua", "return setmetatable({}, {__index = function()\n"
                                             "  error('boom') end})\n"),
                        NULL, &t, &e),
        0);
    assert_non_null(strstr(e.msg, "must return eddy.tool"));
    assert_int_equal(eddy_tools_load(h, write_file("sl.lua", "eddy.sleep(10)\n"), NULL, &t, &e),
                     EDDY_ELUA);
    assert_non_null(strstr(e.msg, "not at load"));
    eddy_tools_free(h);
}

/* Fail allocation n for n = 0, 1, 2, ... over creating the host, loading a
 * tool and calling it: an error each time (or success once n is large),
 * never an abort; leaks are caught by make asan / make valgrind. */
static void test_allocation_failures(void **state)
{
    char path[600];
    const char *alloc_body = ("    local t = { n = args.x, list = {} }\n"
                              "    for i = 1, 50 do t.list[i] = tostring(i) end\n"
                              "    ctx.memory.seen = (ctx.memory.seen or 0) + 1\n"
                              "    return t\n");
    json_t *args = json_pack("{s:s}", "x", "y"), *doc = json_loads("{\"seen\":1}", 0, NULL);
    int ok = 0;
    char numpath[600];
    snprintf(path, sizeof(path), "%s", tool_file("alloc", alloc_body));
    snprintf(numpath, sizeof(numpath), "%s", tool_file("num_error", "error(123456789.5)"));
    (void)state;
    for (long n = 0; n < 20000 && !ok; n += (n < 2000 ? 1 : 7)) {
        uv_loop_t loop;
        eddy_tools *h = NULL;
        eddy_tool *t;
        eddy_tool_memory *m = NULL;
        eddy_err e;
        outcome o;
        int rc;
        memset(&o, 0, sizeof(o));
        uv_loop_init(&loop);
        eddy_alloc_fail_after(n);
        rc = eddy_tools_new(&loop, g_dir, &h, &e);
        if (!rc)
            rc = eddy_tools_load(h, path, NULL, &t, &e);
        if (!rc) { /* an error object that is a number, converted outside Lua */
            eddy_tool *num;
            outcome on;
            memset(&on, 0, sizeof(on));
            rc = eddy_tools_load(h, numpath, NULL, &num, &e);
            if (!rc && eddy_tool_call(h, num, args, NULL, on_done, &on, &e) == 0) {
                uv_run(&loop, UV_RUN_DEFAULT);
                assert_int_equal(on.done, 1);
                free(on.text);
            }
        }
        if (!rc)
            rc = eddy_tool_memory_new(h, doc, &m, &e);
        if (!rc) {
            eddy_tool_ctx ctx = {"k", NULL, m, NULL, NULL, NULL};
            rc = eddy_tool_call(h, t, args, &ctx, on_done, &o, &e);
            if (!rc) {
                uv_run(&loop, UV_RUN_DEFAULT);
                assert_int_equal(o.done, 1);
                if (o.status == 0)
                    ok = 1;
                free(o.text);
            }
        }
        eddy_alloc_fail_after(-1);
        if (rc)
            assert_true(rc == EDDY_ENOMEM || rc == EDDY_ELUA || rc == EDDY_EUV);
        eddy_tool_memory_free(m);
        if (h) {
            eddy_tools_close(h);
            eddy_tools_free(h);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
    }
    assert_true(ok);
    json_decref(args);
    json_decref(doc);
}

/* -- round trip property ------------------------------------------------------ */

static unsigned g_seed = 12345;
static unsigned rnd(void)
{
    g_seed = g_seed * 1103515245u + 12345u;
    return (g_seed >> 8) & 0xffffff;
}

static json_t *random_json(int depth)
{
    static const char *const strs[] = {
        "", "a", "héllo", "日本語", "emoji 😀", "quote\"back\\", "ctl\x01\x1f", "1", "-0"};
    static const json_int_t ints[] = {0, 1, -1, 9007199254740993LL, INT64_MAX, INT64_MIN, 42};
    static const double reals[] = {0.1, 71.1, -0.0, 1e300, 5e-324, 1.5, -2.25e-10, 123456789.125};
    unsigned k = rnd() % (depth > 3 ? 6 : 8);
    switch (k) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd() & 1);
    case 2:
        return json_integer(ints[rnd() % 7]);
    case 3:
        return json_real(reals[rnd() % 8]);
    case 4:
    case 5:
        return json_string(strs[rnd() % 9]);
    case 6: {
        json_t *a = json_array();
        for (unsigned i = 0, n = rnd() % 4; i < n; i++)
            json_array_append_new(a, random_json(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (unsigned i = 0, n = rnd() % 4; i < n; i++) {
            char key[16];
            snprintf(key, sizeof(key), i == 2 ? "%u" : "k%u", rnd() % 10);
            json_object_set_new(o, key, random_json(depth + 1));
        }
        return o;
    }
    }
}

static void on_commit(int status, const char *errmsg, void *ud)
{
    (void)errmsg;
    *(int *)ud = status == 0 ? 1 : -1;
}

static void on_loaded(int status, const char *errmsg, json_t *doc, json_t *history, void *ud)
{
    (void)errmsg;
    (void)history;
    assert_int_equal(status, 0);
    *(json_t **)ud = json_deep_copy(doc);
}

static void on_closed(void *ud)
{
    *(int *)ud = 1;
}

/* Store DOC as KEY's memory in the SQLite store ST and load it back, each
 * through a session of its own (a new session's cache is empty: the load
 * reads what SQLite has). */
static json_t *through_store(uv_loop_t *loop, eddy_store *st, const char *key, json_t *doc)
{
    static int64_t pos;
    int done = 0;
    json_t *back = NULL, *msgs = json_array(), *oc = json_object();
    eddy_store_session *ss;
    eddy_err e;
    eddy_run_end end = {{"agent", key, 1, ++pos, 0}, 1, doc, msgs, 1, oc};
    assert_int_equal(eddy_store_session_new(st, loop, &ss, &e), 0);
    assert_int_equal(eddy_store_run_done(ss, &end, on_commit, &done, &e), 0);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(done, 1);
    done = 0;
    eddy_store_session_close(ss, on_closed, &done);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(eddy_store_session_new(st, loop, &ss, &e), 0);
    assert_int_equal(eddy_store_load(ss, "agent", key, 1, on_loaded, &back, &e), 0);
    while (!back)
        uv_run(loop, UV_RUN_ONCE);
    done = 0;
    eddy_store_session_close(ss, on_closed, &done);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
    json_decref(msgs);
    json_decref(oc);
    return back;
}

/* Random values through a tool (as its argument and back as its result)
 * and through ctx.memory and the SQLite memory store (stored at the end of
 * one run, loaded for the next, as runs do), unchanged; then appended to,
 * as a list, over several runs. */
static void test_roundtrip_property(void **state)
{
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *echo, *append;
    eddy_store *store;
    eddy_err e;
    char db[600];
    (void)state;
    uv_loop_init(&loop);
    snprintf(db, sizeof(db), "%s/roundtrip.db", g_dir);
    assert_int_equal(eddy_store_open(db, NULL, &store, &e), 0);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, &e), 0);
    assert_int_equal(
        eddy_tools_load(
            h,
            write_file("echo.lua",
                       "return eddy.tool { name = 'echo', description = 'd',\n"
                       "  params = { v = { type = 'object' } },\n"
                       "  run = function(args, ctx) ctx.memory.v = args.v\n"
                       "    ctx.memory.copy = eddy.json.decode(eddy.json.encode(args.v))\n"
                       "    return args.v end }\n"),
            NULL, &echo, &e),
        0);
    assert_int_equal(
        eddy_tools_load(h,
                        write_file("append.lua",
                                   "return eddy.tool { name = 'append', description = 'd',\n"
                                   "  run = function(args, ctx)\n"
                                   "    ctx.memory.list = ctx.memory.list or {}\n"
                                   "    ctx.memory.empty_a = ctx.memory.empty_a or eddy.array{}\n"
                                   "    ctx.memory.empty_o = ctx.memory.empty_o or {}\n"
                                   "    table.insert(ctx.memory.list, #ctx.memory.list + 1)\n"
                                   "    return #ctx.memory.list end }\n"),
                        NULL, &append, &e),
        0);
    for (int round = 0; round < 400; round++) {
        json_t *v = json_object(), *args, *doc = NULL, *mem;
        eddy_tool_memory *m;
        eddy_tool_ctx ctx = {"k", NULL, NULL, NULL, NULL, NULL};
        outcome o;
        json_object_set_new(v, "x", random_json(0));
        args = json_pack("{s:O}", "v", v);
        memset(&o, 0, sizeof(o));
        assert_int_equal(eddy_tool_memory_new(h, NULL, &m, &e), 0);
        ctx.memory = m;
        assert_int_equal(eddy_tool_call(h, echo, args, &ctx, on_done, &o, &e), 0);
        while (!o.done)
            uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(o.status, 0);
        {
            json_t *back = json_loads(o.text, JSON_DECODE_ANY, NULL);
            if (!json_equal(back, v)) {
                char *a = eddy_json_dumps(v);
                fail_msg("result changed: %s -> %s", a, o.text);
            }
            json_decref(back);
        }
        free(o.text);
        doc = eddy_tool_memory_json(m, &e);
        eddy_tool_memory_free(m);
        mem = through_store(&loop, store, "k", doc);
        assert_true(json_equal(json_object_get(mem, "v"), v));
        assert_true(json_equal(json_object_get(mem, "copy"), v));
        json_decref(doc);
        json_decref(mem);
        json_decref(args);
        json_decref(v);
    }
    { /* empty containers and appends over save/load cycles */
        json_t *doc = json_object();
        for (int run = 1; run <= 5; run++) {
            eddy_tool_memory *m;
            eddy_tool_ctx ctx = {"k", NULL, NULL, NULL, NULL, NULL};
            json_t *args = json_object(), *out;
            outcome o;
            memset(&o, 0, sizeof(o));
            assert_int_equal(eddy_tool_memory_new(h, doc, &m, &e), 0);
            ctx.memory = m;
            assert_int_equal(eddy_tool_call(h, append, args, &ctx, on_done, &o, &e), 0);
            while (!o.done)
                uv_run(&loop, UV_RUN_ONCE);
            assert_int_equal(o.status, 0);
            free(o.text);
            out = eddy_tool_memory_json(m, &e);
            eddy_tool_memory_free(m);
            json_decref(doc);
            doc = through_store(&loop, store, "list", out);
            json_decref(out);
            assert_int_equal(json_array_size(json_object_get(doc, "list")), run);
            assert_true(json_is_array(json_object_get(doc, "empty_a")));
            assert_int_equal(json_array_size(json_object_get(doc, "empty_a")), 0);
            assert_true(json_is_object(json_object_get(doc, "empty_o")));
            json_decref(args);
        }
        json_decref(doc);
    }
    eddy_tools_free(h);
    eddy_store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attacks),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_time_slicing),
        cmocka_unit_test(test_no_yield_cap),
        cmocka_unit_test(test_cancel_all),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_roundtrip_property),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
