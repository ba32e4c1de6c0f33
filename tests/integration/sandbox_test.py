#!/usr/bin/env python3
"""The Lua sandbox escape suite: the real `eddy` binary, hostile Lua tools, the mock model.

Every attack is one Lua tool (written into a temp job folder) that the mock model calls for
one key. Many attacks run concurrently in one job, one key each, next to benign keys whose
runs must keep being served meanwhile. An attack passes when

  * its tool call is stopped with a clear tool error that matches the attack's regex (the
    budget that was exceeded, or the refusal), that error reached the model as the tool
    result (the mock echoes it: "RESULT error: tool 'NAME' failed: ...") and is on the
    `execute_tool NAME` span of the run's trace (`eddy trace show ID --json`), or the run
    went to the dead letters with a reason matching the regex; nothing is dropped;
  * isolation attacks: a later call (same key, next run) and another key see the shared
    libraries and globals untouched, and a ctx kept after its call cannot read or write the
    other key's memory (its stored memory in the SQLite store is unchanged);
  * eddy did not crash: exit 0 at the end of input (3 after SIGTERM with abandoned runs),
    never a signal, never killed by this suite for hanging or for its memory.

Per job the suite also checks: benign keys answered within BENIGN_BOUND_S of eddy's start
although attacks compute or sleep far longer; eddy's VmRSS/VmHWM stayed under RSS_BOUND_MB;
the value of EDDY_SECRET_TEST (set in eddy's environment) appears in no output, dead letter,
trace, state file, log or mock request. A separate job gets SIGTERM while hostile tools run
and must exit within its shutdown_grace plus a second; another checks budgets on the
top-level code of tool files (`eddy check`).

    python3 tests/integration/sandbox_test.py --build build [--only NAME] [-v]

--only runs the attacks whose name (or job) contains NAME. Standard library only; the mock
LLM and helpers come from tests/integration/run.py.
"""
import argparse
import itertools
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402  (Mock, read_jsonl, write)

ARGS = None
SECRET_VAR, SECRET = "EDDY_SECRET_TEST", "s3cr3t"
BENIGN_BOUND_S = 5.0        # benign keys' outputs arrive this soon after eddy starts
# (the long compute attacks below run for 8 s, so a worker that does not time-slice
# cannot pass; CPU and memory attacks get a wall budget far above what they need, so
# that on a loaded machine it is still their own budget that stops them)
RSS_BOUND_MB = 400          # eddy's VmRSS / VmHWM while a job runs
RSS_KILL_MB = 1200          # the suite kills eddy beyond this (protects the shared machine)
SHUTDOWN_GRACE_S = 1.0
SHUTDOWN_BOUND_S = SHUTDOWN_GRACE_S + 1.5   # SIGTERM to exit: grace + 1 s (+0.5 s slack)
A_SECRET = "A-secret-7731"  # what ctx-stash victims keep in memory; must not leak

# -- expected errors ----------------------------------------------------------

INSTR = r"instruction budget of 5000000 exceeded"
MEMORY = r"memory budget of 32 MiB exceeded"
ANY_BUDGET = r"(instruction budget of \d+|memory budget of 32 MiB) exceeded"
CTX_AFTER = r"ctx\b[^\n]{0,60}\b(after|returned|ended|finished|expired|stale|no longer|invalid)"
# eddy.file.read returned nil + message (the tool raises "refused: MSG") or raised itself
REFUSED = r"refused: \S|eddy\.file\.read\b"
TOO_BIG = r"too (large|big)|exceed|larger than|limit|\bcap\b|budget"


def wall_re(secs):
    return r"wall-clock budget of %gs exceeded" % secs


def missing(name):
    """A library function or global that must not exist (or must refuse to run)."""
    return (r"attempt to (call|index) a nil value \((global|field|method) '%s'\)"
            r"|%s[^\n]{0,40}(not available|not allowed|refused|disabled|sandbox)" % (name, name))


# -- limits -------------------------------------------------------------------

CPU = {"instructions": 5000000, "memory": "32MiB", "wall": "60s"}
MEM = {"instructions": 100000000000, "memory": "32MiB", "wall": "60s"}


def WALL(secs):
    return {"instructions": 100000000000, "memory": "32MiB", "wall": "%gs" % secs}


# -- the attack table ---------------------------------------------------------


@dataclass
class Step:
    """One event of an attack: key suffix, the `mode` the mock passes the tool, and what
    its output must show."""
    suffix: str
    mode: str
    delay_ms: int = 0          # the mock waits this long before asking for the tool
    expect: str = None         # regex of the tool error this step must end with
    want: str = None           # text the output must contain instead (probes)
    forbid: tuple = ()         # texts that must not appear in the output
    fields: dict = None        # extra event fields


@dataclass
class Attack:
    name: str
    job: str                   # budgets | sandbox | files | shutdown | load
    lua: str                   # body of run(args, ctx); args.mode is the step's mode
    expect: str = None         # regex of the tool error (None: see steps)
    limits: dict = None        # None: the bare `- tools/NAME.lua` form (default limits)
    prelude: str = ""          # file-level code before `return eddy.tool{...}`
    delay_ms: int = 0
    steps: list = None         # default: one step, mode "attack", expecting EXPECT
    setup: object = None       # setup(job_dir, tmp) before eddy starts
    memory_of_a: dict = None   # the stored memory key "atk-NAME" must end with
    must_exist: str = None     # a path (in the job folder) the attack targets

    def __post_init__(self):
        if self.steps is None:
            self.steps = [Step("", "attack", self.delay_ms, self.expect,
                               forbid=("READ len=",))]

    @property
    def key(self):
        return "atk-" + self.name


_wave = itertools.count()


def cpu(name, lua, expect=INSTR, **kw):
    return Attack(name, "budgets", lua, expect, CPU, **kw)


def mem(name, lua, expect=MEMORY, **kw):
    # memory attacks come in waves of five so that even at their budgets (32 MiB each)
    # a correct eddy stays far under RSS_BOUND_MB
    return Attack(name, "budgets", lua, expect, MEM, delay_ms=(next(_wave) // 5) * 700, **kw)


def result(name, lua, expect):
    return Attack(name, "budgets", lua, expect, MEM)


def wall(name, secs, lua):
    return Attack(name, "budgets", lua, wall_re(secs), WALL(secs))


def refuse(name, lua, expect):
    return Attack(name, "sandbox", lua, expect)


def isolate(name, tamper, probe, want):
    """TAMPER runs in the attacker's call (it may raise); PROBE (an expression) is then
    evaluated by a later call of the same key and by another key: both must see WANT."""
    lua = ('if args.mode == "attack" then\n  %s\n  return "tampered"\nend\n'
           'return "PROBE:" .. tostring(%s)' % (tamper, probe))
    steps = [Step("", "attack"),
             Step("", "probe", want="PROBE:" + want),
             Step("-other", "probe", 1000, want="PROBE:" + want)]
    return Attack(name, "sandbox", lua, steps=steps,
                  setup=lambda d, tmp: itrun.write(os.path.join(d, "data.txt"), "real-data"))


STASH_FORBID = (A_SECRET, "gold", "4111-A-card")


def stash(name, save, use, expect=CTX_AFTER, prelude="local saved = {}"):
    """Key A's call fills its memory, keeps (part of) ctx where a later call can reach it
    (SAVE), and returns; A's run then naps 1.5 s, so its memory document is still live when
    key B's call runs USE 0.7 s in. B must get EXPECT (None: any outcome that leaks
    nothing), and A's stored memory must stay what A wrote."""
    lua = ('if args.mode == "save" then\n'
           '  ctx.memory.secret = "%s"\n  ctx.memory.profile = { tier = "gold" }\n  %s\n'
           '  return "saved-then-nap"\nend\n%s' % (A_SECRET, save, use))
    steps = [Step("", "save", want="napped", fields={"card": "4111-A-card"}),
             Step("-other", "use", 700, expect=expect, forbid=STASH_FORBID)]
    return Attack(name, "sandbox", lua, prelude=prelude, steps=steps,
                  memory_of_a={"secret": A_SECRET, "profile": {"tier": "gold"}})


READ_LUA = """local s, e = eddy.file.read(%s)
if s ~= nil then
  return "READ len=" .. #s .. " head=" .. s:sub(1, 4096):gsub("[^%%w%%p ]", "?")
end
error("refused: " .. tostring(e), 0)"""


def read(name, path, expect=REFUSED, setup=None, delay_ms=0, must_exist=None):
    return Attack(name, "files", READ_LUA % json.dumps(path), expect, setup=setup,
                  delay_ms=delay_ms, must_exist=must_exist)


def term(name, lua):
    return Attack(name, "shutdown", lua, steps=[Step("", "attack")])


def at_load(name, prelude, expect, limits):
    return Attack(name, "load", 'return "loaded"', expect, limits, prelude=prelude)


def symlink(target, link):
    def setup(d, tmp):
        p = os.path.join(d, link)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)
    return setup


SPIN = "while true do end"

ATTACKS = [
    # -- instruction budget: the VM, coroutines, pcall, handlers, metamethods --------------
    cpu("cpu_busy_loop", SPIN),
    cpu("cpu_pcall_swallow", "while true do pcall(function() %s end) end" % SPIN),
    cpu("cpu_xpcall_handler_spins",
        "while true do xpcall(function() %s end, function() %s end) end" % (SPIN, SPIN)),
    cpu("cpu_coroutine_wrap", "coroutine.wrap(function() %s end)()" % SPIN),
    cpu("cpu_coroutine_nested", """local function nest(n)
  if n == 0 then %s end
  return coroutine.wrap(function() return nest(n - 1) end)()
end
return nest(4)""" % SPIN),
    cpu("cpu_coroutine_resume_swallow",
        "while true do coroutine.resume(coroutine.create(function() %s end)) end" % SPIN),
    cpu("cpu_coroutine_pingpong", """local co = coroutine.wrap(function() while true do coroutine.yield() end end)
while true do co() end"""),
    cpu("cpu_index_metamethod",
        "return setmetatable({}, { __index = function() %s end }).anything" % SPIN),
    cpu("cpu_sort_comparator", """local t = {}
for i = 1, 100 do t[i] = i end
table.sort(t, function(a, b) %s end)""" % SPIN),
    cpu("cpu_sort_lt_metamethod", """local mt = { __lt = function() %s end }
local t = {}
for i = 1, 10 do t[i] = setmetatable({}, mt) end
table.sort(t)""" % SPIN),
    cpu("cpu_concat_metamethod",
        'return setmetatable({}, { __concat = function() %s end }) .. "x"' % SPIN),
    cpu("cpu_eq_metamethod", """local mt = { __eq = function() %s end }
return setmetatable({}, mt) == setmetatable({}, mt)""" % SPIN),
    cpu("cpu_close_metamethod", """local guard <close> = setmetatable({}, { __close = function() %s end })
%s""" % (SPIN, SPIN)),
    cpu("cpu_tostring_metamethod",
        "return tostring(setmetatable({}, { __tostring = function() %s end }))" % SPIN),
    cpu("cpu_error_object_tostring",
        "error(setmetatable({}, { __tostring = function() %s end }))" % SPIN,
        expect=INSTR + "|error object is not a string"),
    cpu("cpu_recursion_pcall_loop", """local function f() return pcall(f) end
while true do f() end"""),
    cpu("cpu_load_reader_endless", 'return load(function() return "--" end)',
        expect=INSTR + "|string expected"),
    # -- instruction budget: work inside the C functions of the standard library ----------
    # an empty repetition is answered at once (no loop of 2^53 empty copies)
    Attack("cpu_rep_empty_huge", "budgets", 'return #string.rep("", 1 << 53)', limits=CPU,
           steps=[Step("", "attack", want="RESULT 0")]),
    cpu("cpu_find_backtrack", 'return string.rep("a", 100000):find(".-.-.-.-.-.-b")'),
    cpu("cpu_match_backtrack", 'return string.rep("a", 20000):match("(.*)(.*)(.*)(.*)(.*)b")'),
    cpu("cpu_gmatch_backtrack",
        'for m in string.rep("a", 100000):gmatch(".-.-.-.-b") do end\nreturn "done"'),
    cpu("cpu_gsub_backtrack", 'return (string.rep("a", 100000):gsub(".-.-.-.-b", ""))'),
    cpu("cpu_balance_match", 'return string.rep("(", 100000):find("%b()")'),
    cpu("cpu_find_plain_loop", """local s = string.rep("x", 8 << 20)
for _ = 1, 100000 do s:find("y", 1, true) end
return "done\""""),
    cpu("cpu_utf8_len_loop", """local s = string.rep("x", 8 << 20)
for _ = 1, 100000 do utf8.len(s) end
return "done\""""),
    cpu("cpu_table_move_huge", 'table.move({}, 1, 1 << 40, 2)\nreturn "moved"'),
    cpu("cpu_table_insert_shift", """local t = {}
for i = 1, 100000 do t[i] = i end
for i = 1, 1000000 do table.insert(t, 1, i); table.remove(t, 1) end
return "done\""""),
    cpu("cpu_table_sort_loop", """local t = {}
for i = 1, 200000 do t[i] = (i * 7919) % 200003 end
for _ = 1, 1000 do table.sort(t) end
return "done\""""),
    cpu("cpu_table_unpack_huge", 'return select("#", table.unpack({}, 1, 1 << 40))',
        expect="too many results to unpack|" + ANY_BUDGET),
    # -- memory budget -------------------------------------------------------------------
    mem("mem_rep_huge", 'return #string.rep("x", 1 << 30)'),
    mem("mem_rep_sep", 'return #string.rep("ab", 100000000, ",")'),
    mem("mem_concat_doubling", 'local s = "x"\nwhile true do s = s .. s end'),
    mem("mem_table_growth", "local t, i = {}, 0\nwhile true do i = i + 1; t[i] = i end"),
    mem("mem_closure_bomb",
        "local t = {}\nwhile true do local x = {}; t[#t + 1] = function() return x end end"),
    mem("mem_coroutine_bomb",
        "local t = {}\nwhile true do t[#t + 1] = coroutine.create(function() end) end"),
    mem("mem_inside_coroutine",
        "coroutine.wrap(function() local t = {}; while true do t[#t + 1] = {} end end)()"),
    mem("mem_pcall_swallow", 'while true do pcall(string.rep, "x", 1 << 30) end'),
    mem("mem_pcall_growth_swallow", """local keep = {}
while true do
  pcall(function() keep[#keep + 1] = string.rep("y", 1 << 20) .. #keep end)
end"""),
    mem("mem_gsub_growth", 'return #(string.rep("a", 1000000):gsub(".", string.rep("b", 100)))'),
    mem("mem_table_concat_sep", """local t = {}
for i = 1, 100000 do t[i] = "a" end
return #table.concat(t, string.rep("x", 1000))"""),
    mem("mem_format_q", 'return #string.format("%q", string.rep(\'"\', 12 << 20))'),
    mem("mem_os_date_format", 'return #os.date(string.rep("%c", 2000000))'),
    # a 12 MiB chunk compiles within 32 MiB (its parse is charged); one bigger than the
    # budget is stopped
    Attack("mem_load_chunk_fits", "budgets",
           'local f, e = load("return [[" .. string.rep("x", 4 << 20) .. "]]")\n'
           'return tostring(f ~= nil) .. tostring(e)', limits=MEM,
           steps=[Step("", "attack", want="RESULT truenil")]),
    mem("mem_load_huge_chunk", 'local f, e = load("return [[" .. string.rep("x", 40 << 20) .. "]]")\n'
        'return tostring(f) .. tostring(e)', expect=ANY_BUDGET),
    mem("mem_deep_recursion", "local function f(n) return f(n + 1) + 1 end\nreturn f(1)",
        expect="stack overflow|" + MEMORY),
    mem("mem_json_decode_huge", 'local v = eddy.json.decode("[" .. string.rep("1,", 2000000) .. "1]")\n'
        "return #v"),
    mem("mem_huge_result_string", 'return string.rep("x", 24 << 20)',
        expect=MEMORY + "|too (large|big)"),
    mem("mem_huge_result_table", "local t = {}\nfor i = 1, 1000000 do t[i] = i end\nreturn t",
        expect=MEMORY + "|too (large|big)"),
    # -- results that have no JSON form ----------------------------------------------------
    result("res_deeply_nested", """local t = {}
local c = t
for _ = 1, 100000 do c[1] = {}; c = c[1] end
return t""", r"nested (deeper|too deep)|too deep"),
    result("res_cycle", "local t = {}\nt.self = t\nreturn t", r"nested|cycle"),
    result("res_json_encode_cycle", "local t = {}\nt[1] = t\nreturn eddy.json.encode(t)",
           r"nested|cycle"),
    result("res_json_decode_deep", 'return assert(eddy.json.decode(string.rep("[", 100000)))',
           r"invalid JSON"),
    # -- wall-clock budget; the long ones are what benign keys are served next to ----------
    wall("wall_sleep_huge", 2, "eddy.sleep(1 << 53)"),
    wall("wall_sleep_maxinteger", 2, "eddy.sleep(math.maxinteger)"),
    wall("wall_pcall_sleep_loop", 2, "while true do pcall(eddy.sleep, 100) end"),
    wall("wall_sleep_in_close", 2, """local guard <close> = setmetatable({}, { __close = function() eddy.sleep(1 << 40) end })
eddy.sleep(1 << 40)"""),
    wall("wall_sleep_then_spin", 2, "eddy.sleep(1500)\n" + SPIN),
    wall("wall_compute_8s", 8, SPIN),
    wall("wall_compute_coroutine_8s", 8, "coroutine.wrap(function() %s end)()" % SPIN),
    wall("wall_compute_pcall_8s", 8, "while true do pcall(function() %s end) end" % SPIN),
    wall("wall_compute_c_loop_8s", 8,
         'local s = string.rep("x", 8 << 20)\nwhile true do utf8.len(s) end'),

    # -- refused: what the sandbox does not offer -----------------------------------------
    refuse("refuse_string_dump", "return string.dump(function() return 1 end)", missing("dump")),
    refuse("refuse_string_dump_method", 'return ("").dump(function() return 1 end)',
           missing("dump")),
    refuse("refuse_os_getenv", 'return os.getenv("%s")' % SECRET_VAR, missing("getenv")),
    refuse("refuse_os_execute", 'return os.execute("id")', missing("execute")),
    refuse("refuse_os_exit", "os.exit(1)", missing("exit")),
    refuse("refuse_os_remove", 'return os.remove("job.yaml")', missing("remove")),
    refuse("refuse_io", 'return io.open("/etc/passwd"):read("a")', missing("io")),
    refuse("refuse_debug", "return debug.getregistry()", missing("debug")),
    refuse("refuse_require", 'return require("io")', missing("require")),
    refuse("refuse_package", 'return package.loadlib("libc.so.6", "system")', missing("package")),
    refuse("refuse_collectgarbage", 'return collectgarbage("count")', missing("collectgarbage")),
    refuse("refuse_dofile", 'return dofile("/etc/passwd")', missing("dofile")),
    refuse("refuse_loadfile", 'return loadfile("/etc/passwd")', missing("loadfile")),
    refuse("refuse_load_binary", 'return assert(load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n\\4\\8\\8"))',
           r"binary chunk"),
    refuse("refuse_load_binary_mode_b",
           'return assert(load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n\\4\\8\\8", "x", "b"))',
           r"binary chunk"),
    refuse("refuse_gc_finalizer",
           'setmetatable({}, { __gc = function() end })\nreturn "finalizer accepted"', r"__gc"),
    refuse("refuse_gc_finalizer_late", """local mt = { __gc = false }
setmetatable({}, mt)
mt.__gc = function() end
return "finalizer accepted\"""", r"__gc"),

    # -- isolation: shared libraries and globals --------------------------------------------
    isolate("iso_memory_wraps_string",
            'ctx.memory.s = string; ctx.memory.s.upper = function() return "pwned" end; ctx.memory.s = nil',
            'string.upper("x")', "X"),
    cpu("cpu_insert_len_metamethod", """local t = setmetatable({}, {__len = function() return 1 << 50 end, __index = type, __newindex = rawequal})
table.insert(t, 1, "x")"""),
    isolate("iso_string_upper", 'string.upper = function() return "pwned" end',
            'string.upper("abc")', "ABC"),
    isolate("iso_string_new_field", 'string.evil = "pwned"', "string.evil", "nil"),
    isolate("iso_rawset_string", 'rawset(string, "upper", function() return "pwned" end)',
            'string.upper("abc")', "ABC"),
    isolate("iso_string_metatable_index",
            'getmetatable("").__index = { upper = function() return "pwned" end }',
            '("abc"):upper()', "ABC"),
    isolate("iso_string_metatable_field",
            'getmetatable("").__index.upper = function() return "pwned" end',
            '("abc"):upper()', "ABC"),
    isolate("iso_string_metatable_call", 'getmetatable("").__call = function() return "pwned" end',
            '(select(2, pcall(function() return ("x")() end)):match("attempt to call a string value"))',
            "attempt to call a string value"),
    isolate("iso_table_insert", "table.insert = function() end",
            "(function() local t = {}; table.insert(t, 7); return #t end)()", "1"),
    isolate("iso_math_pi", "math.pi = 3", "math.pi", "3.1415926535898"),
    isolate("iso_eddy_json", 'eddy.json = { encode = function() return "pwned" end }',
            "eddy.json.encode({ 1, 2 })", "[1,2]"),
    isolate("iso_eddy_json_encode", 'eddy.json.encode = function() return "pwned" end',
            "eddy.json.encode({ 1, 2 })", "[1,2]"),
    isolate("iso_eddy_file_read", 'eddy.file.read = function() return "pwned" end',
            'eddy.file.read("data.txt")', "real-data"),
    isolate("iso_object_metatable",
            'getmetatable(eddy.object{}).__index = function() return "pwned" end',
            'eddy.json.decode("{}").missing', "nil"),
    isolate("iso_array_metatable", "getmetatable(eddy.array{}).__newindex = function() end",
            '(function() local a = eddy.json.decode("[]"); a[1] = 5; return rawget(a, 1) end)()',
            "5"),
    isolate("iso_global_plain", 'x_glob = "pwned"', "x_glob", "nil"),
    isolate("iso_global_G", '_G.g_glob = "pwned"', "g_glob", "nil"),
    isolate("iso_global_ENV", '_ENV.e_glob = "pwned"', "e_glob", "nil"),
    isolate("iso_global_load", "load(\"l_glob = 'pwned'\")()", "l_glob", "nil"),
    isolate("iso_global_tostring", 'tostring = function() return "pwned" end', "12", "12"),
    isolate("iso_G_string", '_G.string = { upper = function() return "pwned" end }',
            'string.upper("abc")', "ABC"),
    isolate("iso_G_metatable", 'setmetatable(_G, { __index = function() return "pwned" end })',
            "undefined_global_xyz", "nil"),
    # -- isolation: ctx kept after its call returned ----------------------------------------
    stash("ctx_stash_converted", "saved.m = ctx.memory",
          'return "USE " .. eddy.json.encode({ saved.m })', expect=None),
    stash("ctx_stash_read", "saved.ctx = ctx", "return saved.ctx.memory.secret"),
    stash("ctx_stash_memory_read", "saved.mem = ctx.memory", "return saved.mem.secret"),
    stash("ctx_stash_memory_write", "saved.mem = ctx.memory",
          'saved.mem.secret = "pwned-by-" .. ctx.key\nreturn "wrote"'),
    stash("ctx_stash_ctx_write", "saved.ctx = ctx",
          'saved.ctx.memory.secret = "pwned"\nreturn "wrote"'),
    stash("ctx_stash_event", "saved.ctx = ctx", "return saved.ctx.event.card"),
    stash("ctx_stash_closure", "saved.f = function() return ctx.memory.secret end",
          "return saved.f()"),
    stash("ctx_stash_coroutine",
          "saved.co = coroutine.wrap(function() while true do coroutine.yield(ctx.memory.secret) end end)",
          "return saved.co()"),
    stash("ctx_stash_global", "stash_ctx = ctx", "return stash_ctx.memory.secret",
          expect=CTX_AFTER + r"|attempt to index a nil value \(global 'stash_ctx'\)"),
    # a raw look cannot be refused by a proxy: it must merely find nothing
    stash("ctx_stash_memory_raw", "saved.mem = ctx.memory",
          'return tostring(rawget(saved.mem, "secret")) .. "/" .. tostring(next(saved.mem))',
          expect=None),
    stash("ctx_stash_memory_subtable", "saved.profile = ctx.memory.profile",
          'saved.profile.tier = "pwned"\nreturn "wrote"', expect=None),

    # -- eddy.file.read must not leave the job folder or read eddy's own files --------------
    read("file_absolute_passwd", "/etc/passwd"),
    read("file_absolute_environ", "/proc/self/environ"),
    read("file_dotdot", "../outside/secret.txt"),
    read("file_dotdot_nested", "tools/../../outside/secret.txt"),
    read("file_dotdot_slashes", "tools//..//..//outside/secret.txt"),
    read("file_symlink_passwd", "passwd", setup=symlink("/etc/passwd", "passwd")),
    read("file_symlink_environ", "environ", setup=symlink("/proc/self/environ", "environ")),
    read("file_symlink_relative", "sneaky.txt", setup=symlink("../outside/secret.txt", "sneaky.txt")),
    read("file_symlink_chain", "chain1",
         setup=lambda d, t: (symlink("chain2", "chain1")(d, t),
                             symlink("../outside/secret.txt", "chain2")(d, t))),
    read("file_symlinked_folder", "outdir/secret.txt", setup=symlink("../outside", "outdir")),
    read("file_symlink_proc_root", "rootfs/etc/passwd", setup=symlink("/proc/self/root", "rootfs")),
    read("file_symlink_in_subfolder", "data/up/outside/secret.txt", setup=symlink("../..", "data/up")),
    read("file_dev_zero", "zero", setup=symlink("/dev/zero", "zero"), delay_ms=2500),
    read("file_fifo", "pipe", setup=lambda d, t: os.mkfifo(os.path.join(d, "pipe")), delay_ms=2000),
    read("file_too_big", "big.bin", expect=TOO_BIG, delay_ms=1500,
         setup=lambda d, t: os.truncate(_touch(os.path.join(d, "big.bin")), 256 << 20)),
    read("file_directory", "."),
    read("file_state_db", "store/state.sqlite", delay_ms=800, must_exist="store/state.sqlite"),
    read("file_state_wal", "store/state.sqlite-wal", delay_ms=800,
         must_exist="store/state.sqlite-wal"),
    read("file_state_shm", "store/state.sqlite-shm", delay_ms=800,
         must_exist="store/state.sqlite-shm"),
    read("file_state_via_dotdot", "tools/../store/state.sqlite", delay_ms=800),
    read("file_state_via_symlink", "alias.db", delay_ms=800,
         setup=symlink("store/state.sqlite", "alias.db"), must_exist="store/state.sqlite"),
    read("file_traces_db", ".eddy/escape-files/traces.db", delay_ms=800,
         must_exist=".eddy/escape-files/traces.db"),
    read("file_traces_wal", ".eddy/escape-files/traces.db-wal", delay_ms=800,
         must_exist=".eddy/escape-files/traces.db-wal"),

    # -- SIGTERM while hostile tools run (default limits) -------------------------------------
    term("term_sleep_forever", "eddy.sleep(1 << 40)"),
    term("term_pcall_sleep_loop", "while true do pcall(eddy.sleep, 50) end"),
    term("term_spin_coroutine", "coroutine.wrap(function() %s end)()" % SPIN),
    term("term_pcall_spin", "while true do pcall(function() %s end) end" % SPIN),
    term("term_close_spin", """local guard <close> = setmetatable({}, { __close = function() %s end })
eddy.sleep(1 << 40)""" % SPIN),
    term("term_close_sleep", """local guard <close> = setmetatable({}, { __close = function() eddy.sleep(1 << 40) end })
eddy.sleep(1 << 40)"""),

    term("term_insert_len_metamethod", """local t = setmetatable({}, {__len = function() return 1 << 50 end, __index = type, __newindex = rawequal})
table.insert(t, 1, "x")"""),
    # -- budgets on a tool file's top-level code (eddy check) ---------------------------------
    at_load("load_spin", SPIN, INSTR, {"instructions": 5000000, "memory": "32MiB", "wall": "2s"}),
    at_load("load_memory", "local t = {}\nwhile true do t[#t + 1] = {} end", MEMORY, MEM),
]

# Not attacks: the suite's own controls, which must succeed (a sandbox that refuses
# everything would pass the attacks above).
CONTROLS = [
    Attack("control_within_budgets", "budgets", """local t = {}
for i = 1, 100000 do t[i] = i end
local s = string.rep("x", 1 << 20)
eddy.sleep(300)
return "control-ok " .. #t .. " " .. #s""", limits=CPU,
           steps=[Step("", "attack", want="control-ok 100000 1048576")]),
    Attack("control_libraries", "sandbox",
           'return "control-ok " .. ("abc"):upper() .. " " .. string.format("%d", 7) '
           '.. " " .. eddy.json.encode({ 1 }) .. " " .. tostring(math.pi)',
           steps=[Step("", "attack", want="control-ok ABC 7 [1] 3.1415926535898")]),
    Attack("control_file_read", "files", READ_LUA % json.dumps("data/info.txt"),
           setup=lambda d, t: itrun.write(os.path.join(d, "data", "info.txt"), "job-data-ok"),
           steps=[Step("", "attack", want="READ len=11 head=job-data-ok")]),
]


def _touch(path):
    open(path, "w").close()
    return path


# -- helper tools -----------------------------------------------------------------

BENIGN_TOOL = """return eddy.tool {
  name = "benign", description = "sleeps a little and answers",
  params = { tag = { type = "string", required = true } },
  run = function(args, ctx)
    eddy.sleep(100)
    return "benign-" .. args.tag
  end,
}
"""
NAP_TOOL = """return eddy.tool {
  name = "nap", description = "sleeps",
  params = { ms = { type = "integer", required = true } },
  run = function(args, ctx)
    eddy.sleep(args.ms)
    return "napped"
  end,
}
"""
BENIGN_GROUPS = [("early", 200), ("mid", 800), ("late", 1500)]  # mock latency of turn 1


def tool_source(a):
    body = "\n".join("    " + l for l in a.lua.splitlines())
    return ("-- sandbox escape attack %s (tests/integration/sandbox_test.py)\n%s\n"
            "return eddy.tool {\n  name = %s,\n  description = \"attack %s\",\n"
            "  params = { mode = \"string\" },\n  run = function(args, ctx)\n%s\n  end,\n}\n"
            % (a.name, a.prelude, json.dumps(a.name), a.name, body))


def tool_entry(a):
    path = "tools/%s.lua" % a.name
    if a.limits is None:
        return "      - %s\n" % path
    lim = ", ".join("%s: %s" % kv for kv in a.limits.items())
    return "      - { lua: %s, limits: { %s } }\n" % (path, lim)


def job_yaml(name, base_url, attacks, top=""):
    tools = "      - tools/benign.lua\n      - tools/nap.lua\n" + "".join(map(tool_entry, attacks))
    return """job: escape-%s
key: k
%smodels:
  default:
    base_url: %s
    api_key: sk-test-not-a-secret
    model: mock-model
    timeout: 30s
    retry: { attempts: 2, backoff: 50ms..100ms }
    limits: { concurrency: 512 }
agents:
  a:
    prompt: { system: "You help {{key}}.", user: "{{event.text}}" }
    tools:
%s    budget: { turns: 6, tool_calls: 8, wall: 100s }
""" % (name, top, base_url, tools)


def marker(a, mode):
    return "[[%s:%s]]" % (a.name, mode)


def mock_script(attacks):
    rules = [
        {"when": {"last_role": "tool", "last_tool_contains": "benign-r1"},
         "tool_calls": [{"name": "benign", "arguments": {"tag": "r2"}}]},
        {"when": {"last_role": "tool", "last_tool_contains": "benign-r2"}, "reply": "BENIGN DONE"},
        {"when": {"last_role": "tool", "last_tool_contains": "saved-then-nap"},
         "tool_calls": [{"name": "nap", "arguments": {"ms": 1500}}]},
    ]
    for a in attacks:
        for s in a.steps:
            rules.append({"when": {"last_role": "user", "last_user_contains": marker(a, s.mode)},
                          "latency_ms": s.delay_ms,
                          "tool_calls": [{"name": a.name, "arguments": {"mode": s.mode}}]})
    for g, latency in BENIGN_GROUPS:
        rules.append({"when": {"last_role": "user", "last_user_contains": "[[benign:%s]]" % g},
                      "latency_ms": latency,
                      "tool_calls": [{"name": "benign", "arguments": {"tag": "r1"}}]})
    rules.append({"when": {"last_role": "user", "last_user_contains": "[[followup]]"},
                  "reply": "FOLLOWUP OK"})
    rules.append({"when": {"last_role": "tool"}, "reply": "RESULT ${tool}"})
    return {"rules": rules}


def events_for(attacks, followups=False, benign=True):
    evs = []
    for a in attacks:
        for s in a.steps:
            ev = {"id": "%s%s:%s" % (a.key, s.suffix, s.mode), "k": a.key + s.suffix,
                  "text": "please " + marker(a, s.mode)}
            ev.update(s.fields or {})
            evs.append(ev)
        if followups:  # the key is still served after its call was stopped
            evs.append({"id": a.key + ":followup", "k": a.key, "text": "[[followup]]"})
    if benign:
        for g, _ in BENIGN_GROUPS:
            for i in range(2):
                evs.append({"id": "benign-%s-%d" % (g, i), "k": "benign-%s-%d" % (g, i),
                            "text": "[[benign:%s]]" % g})
    return evs


# -- running eddy under watch ------------------------------------------------------


class Watch(threading.Thread):
    """Polls /proc/PID/status (VmRSS, VmHWM) and which of PATHS exist while eddy runs;
    kills eddy beyond RSS_KILL_MB."""

    def __init__(self, proc, paths=()):
        super().__init__(daemon=True)
        self.proc, self.paths = proc, list(paths)
        self.rss_mb = self.hwm_mb = 0.0
        self.killed_for_rss = False
        self.seen = set()

    def run(self):
        while self.proc.poll() is None:
            try:
                with open("/proc/%d/status" % self.proc.pid) as f:
                    st = f.read()
            except OSError:
                break
            for k in ("VmRSS", "VmHWM"):
                m = re.search(r"^%s:\s+(\d+) kB" % k, st, re.M)
                if m:
                    v = int(m.group(1)) / 1024.0
                    if k == "VmRSS":
                        self.rss_mb = max(self.rss_mb, v)
                    else:
                        self.hwm_mb = max(self.hwm_mb, v)
            if max(self.rss_mb, self.hwm_mb) > RSS_KILL_MB:
                self.killed_for_rss = True
                self.proc.kill()
            for p in self.paths:
                if os.path.lexists(p):
                    self.seen.add(p)
            time.sleep(0.02)


ASAN = False  # the binary is built with AddressSanitizer (make asan): see main()


def limit_address_space():
    # a last line of defence for the shared machine (the watch kills far earlier);
    # AddressSanitizer reserves terabytes of address space for its shadow, so not there
    if not ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


class Result:
    """What one eddy run left: exit status, outputs with arrival times, dead letters."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def record(self, event_id):
        """(kind, text, trace_id, seconds) of the event's output or dead letter, or None."""
        if event_id in self.outputs:
            t, o = self.outputs[event_id]
            return "output", o.get("output", ""), o.get("trace_id"), t
        if event_id in self.dead:
            d = self.dead[event_id]
            return "dead letter", d.get("reason", ""), d.get("trace_id"), None
        return None


def start_eddy(d, job, dead, stdin_events=None, watch_paths=()):
    env = dict(os.environ)
    env[SECRET_VAR] = SECRET
    if ASAN:  # a small quarantine, so RSS measures eddy rather than the sanitizer
        env.setdefault("ASAN_OPTIONS", "quarantine_size_mb=16:malloc_context_size=5")
    # one worker, so one Lua host: the stash attacks hand what one call kept to a later
    # call of another key, which on another worker (another lua_State) it could not reach
    cmd = [os.path.join(ARGS.build, "eddy"), "run", job, "--dead-letter", dead, "--workers", "1"]
    cmd += ["--input", os.path.join(d, "events.jsonl") if stdin_events is None else "-"]
    stderr = open(os.path.join(d, "eddy-stderr.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env,
                            stdin=subprocess.PIPE if stdin_events is not None else subprocess.DEVNULL,
                            preexec_fn=limit_address_space)
    stderr.close()
    lines = []

    def reader():
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line))

    rd = threading.Thread(target=reader, daemon=True)
    rd.start()
    w = Watch(proc, [os.path.join(d, p) for p in watch_paths])
    w.start()
    if stdin_events is not None:
        proc.stdin.write("".join(json.dumps(e) + "\n" for e in stdin_events).encode())
        proc.stdin.flush()
    return proc, t0, lines, rd, w


def finish_eddy(d, proc, t0, lines, rd, w, deadline, dead, killed_for_hang=False):
    try:
        proc.wait(timeout=max(0.1, deadline - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        killed_for_hang = True
        proc.kill()
        proc.wait()
    took = time.monotonic() - t0
    rd.join(5)
    w.join(5)
    outputs, bad_lines = {}, []
    for t, line in lines:
        try:
            o = json.loads(line)
            outputs[o["event_id"]] = (t, o)
        except (ValueError, KeyError, TypeError):
            bad_lines.append(line[:200])
    return Result(dir=d, rc=proc.returncode, took=took, killed_for_hang=killed_for_hang,
                  watch=w, outputs=outputs, bad_lines=bad_lines,
                  dead={r.get("event_id"): r for r in itrun.read_jsonl(dead)},
                  stderr=open(os.path.join(d, "eddy-stderr.log"), errors="replace").read())


def prepare(tmp, name, attacks, top="", followups=False, benign=True):
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "tools"))
    os.makedirs(os.path.join(tmp, "outside"), exist_ok=True)
    itrun.write(os.path.join(tmp, "outside", "secret.txt"), "OUTSIDE-SENTINEL-42\n")
    itrun.write(os.path.join(d, "tools", "benign.lua"), BENIGN_TOOL)
    itrun.write(os.path.join(d, "tools", "nap.lua"), NAP_TOOL)
    for a in attacks:
        itrun.write(os.path.join(d, "tools", a.name + ".lua"), tool_source(a))
        if a.setup:
            a.setup(d, tmp)
    evs = events_for(attacks, followups, benign)
    itrun.write(os.path.join(d, "events.jsonl"), "".join(json.dumps(e) + "\n" for e in evs))
    mock = itrun.Mock(d, mock_script(attacks))
    return d, mock, evs


# -- checks ---------------------------------------------------------------------------


def trace_error(res, job, trace_id, tool):
    """The error of the execute_tool TOOL span(s) of TRACE_ID, via `eddy trace show --json`."""
    p = itrun.eddy("trace", "show", trace_id, job, "--json", timeout=30)
    if p.returncode != 0:
        return None, "eddy trace show %s exited %d: %s" % (trace_id, p.returncode, p.stderr[-300:])
    spans = json.loads(p.stdout).get("spans", [])
    errs = [s.get("error") or "" for s in spans if s.get("name") == "execute_tool " + tool]
    return "\n".join(errs), None


def clip(s, n=260):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def check_attack(a, res, job, job_problem):
    """Problems of attack A in RES (empty: it was stopped as it should be)."""
    problems = [job_problem] if job_problem else []
    for s in a.steps:
        eid = "%s%s:%s" % (a.key, s.suffix, s.mode)
        rec = res.record(eid)
        if rec is None:
            problems.append("%s: no output and no dead letter" % eid)
            continue
        kind, text, trace_id, _ = rec
        for f in s.forbid + (SECRET,):
            if f in text:
                problems.append("%s: %s leaks %r: %s" % (eid, kind, f, clip(text)))
        if s.want is not None and s.want not in text:
            problems.append("%s: %s lacks %r: %s" % (eid, kind, s.want, clip(text)))
        if s.expect is None:
            continue
        if kind == "output" and not text.startswith("RESULT error: tool '%s' failed: " % a.name):
            problems.append("%s: not stopped with a tool error: %s" % (eid, clip(text)))
        elif not re.search(s.expect, text):
            problems.append("%s: %s does not match /%s/: %s" % (eid, kind, s.expect, clip(text)))
        elif kind == "output" and trace_id:
            err, why = trace_error(res, job, trace_id, a.name)
            if why:
                problems.append("%s: %s" % (eid, why))
            elif not re.search(s.expect, err):
                problems.append("%s: trace span error does not match: %s" % (eid, clip(err)))
    if a.memory_of_a is not None:
        db = os.path.join(res.dir, ".eddy", "escape-" + a.job, "state.db")  # the per-job default
        row = sqlite3.connect(db).execute("SELECT doc FROM key_memory WHERE agent='a' AND key=?",
                                          (a.key,)).fetchone() if os.path.exists(db) else None
        doc = json.loads(row[0]) if row else None
        if doc != a.memory_of_a:
            problems.append("stored memory of %s is %s, expected %s" % (a.key, doc, a.memory_of_a))
    if a.must_exist and os.path.join(res.dir, a.must_exist) not in res.watch.seen:
        problems.append("test setup: %s never existed while eddy ran" % a.must_exist)
    return problems


def secret_leaks(*roots):
    """Files under ROOTS (not following links; regular files up to 64 MiB) holding SECRET."""
    hits = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for fn in files:
                p = os.path.join(dirpath, fn)
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > (64 << 20):
                    continue
                with open(p, "rb") as f:
                    if SECRET.encode() in f.read():
                        hits.append(os.path.relpath(p, root))
    return hits


def job_checks(name, res, evs, want_rc=0, benign=True):
    """[(check, problem or None)] for the whole job."""
    out = []
    if res.killed_for_hang:
        crash = "eddy still running after %.0f s: killed (hung)" % res.took
    elif res.watch.killed_for_rss:
        crash = "eddy killed by the suite at %.0f MB RSS" % max(res.watch.rss_mb, res.watch.hwm_mb)
    elif res.rc < 0:
        crash = "eddy died of signal %d" % -res.rc
    elif res.rc != want_rc:
        crash = "eddy exited %d, expected %d: %s" % (res.rc, want_rc, clip(res.stderr[-600:], 600))
    else:
        crash = None
    out.append(("exit status", crash))
    if want_rc == 0:
        missing_ = [e["id"] for e in evs if res.record(e["id"]) is None]
        dup = [e for e in res.dead if e in res.outputs]
        out.append(("nothing dropped", "%d event(s) without output or dead letter: %s" % (
            len(missing_), ", ".join(missing_[:8])) if missing_ else
            ("in both outputs and dead letters: %s" % dup if dup else None)))
    if benign:
        late = []
        worst = 0.0
        for e in evs:
            if not e["id"].startswith("benign-"):
                continue
            rec = res.record(e["id"])
            if rec is None or rec[0] != "output" or rec[1] != "BENIGN DONE":
                late.append("%s: %s" % (e["id"], clip(rec[1]) if rec else "no output"))
            else:
                worst = max(worst, rec[3])
                if rec[3] > BENIGN_BOUND_S:
                    late.append("%s after %.2f s" % (e["id"], rec[3]))
        out.append(("benign keys served within %.0f s (slowest %.2f s)" % (BENIGN_BOUND_S, worst),
                    "; ".join(late) or None))
    peak = max(res.watch.rss_mb, res.watch.hwm_mb)
    out.append(("RSS under %d MB (peak %.0f MB)" % (RSS_BOUND_MB, peak),
                "peak VmRSS %.0f MB, VmHWM %.0f MB" % (res.watch.rss_mb, res.watch.hwm_mb)
                if peak >= RSS_BOUND_MB else None))
    leaks = secret_leaks(res.dir)
    if SECRET in res.stderr:
        leaks.append("eddy's stderr")
    if any(SECRET in rec[1] for rec in filter(None, (res.record(e["id"]) for e in evs))):
        leaks.append("outputs")
    out.append(("%s never appears" % SECRET_VAR,
                "its value is in: " + ", ".join(sorted(set(leaks))) if leaks else None))
    if res.bad_lines:
        out.append(("stdout holds only outputs", "not JSON: %s" % res.bad_lines[:3]))
    return out, crash


# -- jobs -------------------------------------------------------------------------------

DEADLINES = {"budgets": 30, "sandbox": 15, "files": 15}  # a hung eddy is killed then


def run_eof_job(tmp, name, attacks):
    """All ATTACKS of job NAME (plus benign keys) from a file to its end."""
    followups = name == "budgets"
    top = "checkpoint: { path: store/state.sqlite }\n" if name == "files" else ""
    d, mock, evs = prepare(tmp, name, attacks, followups=followups)
    dead = os.path.join(d, "dead-letter.jsonl")
    with mock:
        job = os.path.join(d, "job.yaml")
        itrun.write(job, job_yaml(name, mock.base_url, attacks, top))
        watch = [a.must_exist for a in attacks if a.must_exist]
        res = finish_eddy(d, *start_eddy(d, job, dead, watch_paths=watch),
                          deadline=DEADLINES[name], dead=dead)
    checks, crash = job_checks(name, res, evs)
    if followups and not crash:
        for a in attacks:
            rec = res.record(a.key + ":followup")
            if not rec or rec[1] != "FOLLOWUP OK":
                checks.append(("key %s served after its attack" % a.key,
                               clip(rec[1]) if rec else "no output"))
    verdicts = [(a, check_attack(a, res, job, crash and "job: " + crash)) for a in attacks]
    times = {e["id"]: res.record(e["id"])[3] for e in evs
             if res.record(e["id"]) and res.record(e["id"])[3] is not None}
    slow = sorted(((t, i) for i, t in times.items() if not i.startswith("benign-")),
                  reverse=True)[:3]
    info = "eddy ran %.1f s; benign outputs at %s s; slowest others: %s" % (
        res.took, "/".join("%.2f" % t for i, t in sorted(times.items()) if i.startswith("benign-")),
        ", ".join("%s %.1f s" % (i, t) for t, i in slow))
    return verdicts, checks, info


def run_shutdown_job(tmp, attacks):
    """Hostile tools running, SIGTERM: exit 3 within the grace plus a second."""
    d, mock, evs = prepare(tmp, "shutdown", attacks, benign=False)
    dead = os.path.join(d, "dead-letter.jsonl")
    with mock:
        job = os.path.join(d, "job.yaml")
        itrun.write(job, job_yaml("shutdown", mock.base_url, attacks,
                                  "shutdown_grace: %gs\n" % SHUTDOWN_GRACE_S))
        proc, t0, lines, rd, w = start_eddy(d, job, dead, stdin_events=evs)
        started = time.monotonic()
        while time.monotonic() - started < 10 and proc.poll() is None:
            if mock.stats()["requests"] >= len(evs):
                break
            time.sleep(0.02)
        time.sleep(0.5)  # the tools have their calls now
        sent = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        res = finish_eddy(d, proc, t0, lines, rd, w, deadline=(sent - t0) + 10, dead=dead)
        took = time.monotonic() - sent
        proc.stdin.close()
    checks, crash = job_checks("shutdown", res, evs, want_rc=3, benign=False)
    slow = "exited %.2f s after SIGTERM (grace %gs)" % (took, SHUTDOWN_GRACE_S) \
        if took > SHUTDOWN_BOUND_S else None
    checks.append(("exit within %.1f s of SIGTERM (took %.2f s)" % (SHUTDOWN_BOUND_S, took), slow))
    crash = crash or slow
    verdicts = []
    for a in attacks:
        problems = [("job: " + crash)] if crash else []
        eid = a.key + ":attack"
        if res.record(eid) is None and \
                "event %s (key %s) abandoned at shutdown" % (eid, a.key) not in res.stderr:
            problems.append("%s: neither output, dead letter nor 'abandoned' on stderr" % eid)
        verdicts.append((a, problems))
    return verdicts, checks, "eddy ran %.1f s" % res.took


def run_load_job(tmp, attacks):
    """Tool files whose top-level code exceeds its budgets: `eddy check` names them."""
    d = os.path.join(tmp, "load")
    os.makedirs(os.path.join(d, "tools"))
    for a in attacks:
        itrun.write(os.path.join(d, "tools", a.name + ".lua"), tool_source(a))
    itrun.write(os.path.join(d, "tools", "benign.lua"), BENIGN_TOOL)
    itrun.write(os.path.join(d, "tools", "nap.lua"), NAP_TOOL)
    job = os.path.join(d, "job.yaml")
    itrun.write(job, job_yaml("load", "http://127.0.0.1:9/v1", attacks))
    t0 = time.monotonic()
    try:
        p = itrun.eddy("check", job, timeout=15, env={SECRET_VAR: SECRET})
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, ""
    took = time.monotonic() - t0
    crash = ("eddy check still running after 15 s (hung)" if rc is None else
             "eddy check died of signal %d" % -rc if rc < 0 else
             "eddy check exited %d, expected 2" % rc if rc != 2 else None)
    verdicts = []
    for a in attacks:
        lines = [l for l in err.splitlines() if "tools/%s.lua" % a.name in l]
        problems = [crash] if crash else []
        if not any(re.search(a.expect, l) for l in lines):
            problems.append("no line naming tools/%s.lua matches /%s/: %s" % (
                a.name, a.expect, clip(" | ".join(lines) or err[-400:])))
        verdicts.append((a, problems))
    return verdicts, [("eddy check exit 2 (took %.1f s)" % took, crash)], ""


# -- main -------------------------------------------------------------------------------

JOBS = ["budgets", "sandbox", "files", "shutdown", "load"]


def selected(a):
    return not ARGS.only or ARGS.only in a.name or ARGS.only == a.job


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--only")
    ap.add_argument("-v", action="store_true", help="print every problem of a failed attack")
    ARGS = ap.parse_args()
    ARGS.build = os.path.abspath(ARGS.build)
    itrun.ARGS = ARGS
    global ASAN, RSS_BOUND_MB, RSS_KILL_MB
    with open(os.path.join(ARGS.build, "eddy"), "rb") as f:
        ASAN = b"__asan_init" in f.read()
    if ASAN:  # shadow memory and redzones: about twice the heap, plus the shadow's pages;
        # and everything runs several times slower
        RSS_BOUND_MB, RSS_KILL_MB = 1000, 2500
        for k in DEADLINES:
            DEADLINES[k] *= 3
    names = [a.name for a in ATTACKS + CONTROLS]
    assert len(names) == len(set(names)), "attack names must be unique"
    tmp = tempfile.mkdtemp(prefix="eddy-sandbox-")
    t_all = time.monotonic()
    failed_attacks, failed_checks, n_attacks = [], [], 0
    for job in JOBS:
        attacks = [a for a in ATTACKS if a.job == job and selected(a)]
        if not attacks:
            continue
        controls = [c for c in CONTROLS if c.job == job]
        t0 = time.monotonic()
        if job == "shutdown":
            verdicts, checks, info = run_shutdown_job(tmp, attacks)
        elif job == "load":
            verdicts, checks, info = run_load_job(tmp, attacks)
        else:
            verdicts, checks, info = run_eof_job(tmp, job, attacks + controls)
        print("== job %s: %d attack(s), %.1f s%s" % (job, len(attacks), time.monotonic() - t0,
                                                     "; " + info if info else ""), flush=True)
        for what, problem in checks:
            print("%s job %s: %s%s" % ("FAIL" if problem else "PASS", job, what,
                                       ": " + problem if problem else ""))
            if problem:
                failed_checks.append("%s: %s" % (job, what))
        for a, problems in verdicts:
            is_control = a in controls
            n_attacks += not is_control
            tag = "control" if is_control else "attack"
            if problems:
                (failed_checks if is_control else failed_attacks).append(a.name)
                shown = problems if ARGS.v else [p for p in problems if not p.startswith("job: ")][:2] \
                    or problems[:1]
                print("FAIL %s %-34s %s" % (tag, a.name, " || ".join(shown)))
            else:
                print("PASS %s %s" % (tag, a.name))
        sys.stdout.flush()
    print("\n%d of %d attack(s) stopped, %d job check(s) failed, %.1f s" % (
        n_attacks - len(failed_attacks), n_attacks, len(failed_checks), time.monotonic() - t_all))
    if failed_attacks:
        print("escaped or not stopped as specified: " + " ".join(failed_attacks))
    if failed_checks:
        print("failed checks: " + "; ".join(failed_checks))
    if failed_attacks or failed_checks:
        print("files kept in " + tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
