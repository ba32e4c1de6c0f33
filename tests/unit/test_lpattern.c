/*
 * tests/unit/test_lpattern.c - our Lua 5.4 patterns (tools/lpattern.c)
 * against the standard string library.
 *
 * Differential: two Lua states run the same driver chunk, one with the
 * standard string.find/match/gmatch/gsub, one with ours in their place (so
 * even "bad argument #1 to 'string.find'" reads the same). Every case is run
 * in both and the serialized outcomes (all return values, or the error
 * message; every step of a gmatch iteration) must be identical: a table of
 * hand-written cases covering each feature and each error, then random
 * patterns from a grammar over a small alphabet, random garbage patterns and
 * random subjects. Then: catastrophic patterns and linear work inside a real
 * tool call end with the instruction budget error; timing against the
 * standard functions is printed, not asserted.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eddy/buf.h"
#include "eddy/tools.h"

#include "../../tools/tools_int.h"

/* -- the two states ------------------------------------------------------------ */

/* Identical in both states. Must not use find/match/gmatch/gsub itself. */
static const char *const driver =
    "local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub\n"
    "local concat, pack, unpack, select = table.concat, table.pack, table.unpack, select\n"
    "local function put(v)\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return 's' .. #v .. ':' .. v end\n"
    "  if t == 'number' then return math.type(v) .. ':' .. tostring(v) end\n"
    "  if t == 'nil' or t == 'boolean' then return tostring(v) end\n"
    "  return t\n"
    "end\n"
    "local function ser(r)\n"
    "  local o = {}\n"
    "  for i = 1, r.n do o[i] = put(r[i]) end\n"
    "  return concat(o, ',')\n"
    "end\n"
    "R = {\n"
    "  T1 = { hello = 'HI', world = false, a = 1, b = 2.5, c = true, d = {},\n"
    "         ['1'] = 'one', [1] = 'pos1', [3] = 'pos3', x = '%1' },\n"
    "  T2 = setmetatable({}, { __index = function(_, k) return '<' .. tostring(k) .. '>' end }),\n"
    "  F1 = function(...)\n"
    "    local o = { select('#', ...) }\n"
    "    for i = 1, select('#', ...) do o[#o + 1] = tostring((select(i, ...))) end\n"
    "    return concat(o, '|')\n"
    "  end,\n"
    "  F2 = function() return nil end,\n"
    "  F3 = function() return false end,\n"
    "  F4 = function(x) return x end,\n"
    "  F5 = function() return {} end,\n"
    "  F6 = function(x) error('boom ' .. tostring(x)) end,\n"
    "  F7 = function(...) return select('#', ...) end,\n"
    "  F8 = function(x) if x == 'b' then return 'B' end end,\n"
    "}\n"
    "local function call(kind, ...)\n"
    "  if kind == 'gmatch' then\n"
    "    local r = pack(pcall(gmatch, ...))\n"
    "    if not r[1] or type(r[2]) ~= 'function' then return 'G' .. ser(r) end\n"
    "    local it, o = r[2], {}\n"
    "    for i = 1, 64 do\n"
    "      local s = pack(pcall(it))\n"
    "      o[#o + 1] = ser(s)\n"
    "      if s[1] and s.n == 1 then\n"
    "        s = pack(pcall(it)); o[#o + 1] = ser(s); break\n"
    "      end\n"
    "    end\n"
    "    return concat(o, ';')\n"
    "  end\n"
    "  local f = kind == 'find' and find or kind == 'match' and match or gsub\n"
    "  return ser(pack(pcall(f, ...)))\n"
    "end\n"
    /* run(kind, nargs, ...): A3 may name a replacement in R (when rsel). */
    "function run(kind, na, s, p, a3, a4, rsel)\n"
    "  if rsel then a3 = R[rsel] end\n"
    "  local args = { s, p, a3, a4 }\n"
    "  return call(kind, unpack(args, 1, na))\n"
    "end\n"
    "CASES = {}\n"
    "function C(kind, ...)\n"
    "  CASES[#CASES + 1] = { kind = kind, n = select('#', ...), ... }\n"
    "end\n"
    "function run_case(i)\n"
    "  local c = CASES[i]\n"
    "  return call(c.kind, unpack(c, 1, c.n))\n"
    "end\n"
    "function describe(i)\n"
    "  local c, o = CASES[i], {}\n"
    "  for j = 1, c.n do\n"
    "    local v = c[j]\n"
    "    o[j] = (type(v) == 'string' or type(v) == 'number') and string.format('%q', v) or "
    "tostring(v)\n"
    "  end\n"
    "  return c.kind .. '(' .. concat(o, ', ') .. ')'\n"
    "end\n"
    /* Ordinary work for the timing comparison. */
    "local text = string.rep('The quick brown fox, 42 jumps: over the lazy dog (again). ', 20)\n"
    "local csv = string.rep('alpha,beta,,gamma,12.5,delta ', 10)\n"
    "local conf = 'name = eddy\\nport = 8080\\nhost = localhost\\nmode = fast\\n'\n"
    "BENCH = {\n"
    "  { 'trim', function() return match('   some words here   ', '^%s*(.-)%s*$') end },\n"
    "  { 'date', function() return match('2024-05-17T10:22:33Z', '^(%d+)-(%d+)-(%d+)T') end },\n"
    "  { 'find %d+', function() return find(text, '%d+') end },\n"
    "  { 'find plain', function() return find(text, 'lazy cat', 1, true) end },\n"
    "  { 'find word', function() return find(text, 'again%)%. The') end },\n"
    "  { 'gmatch words', function() local n = 0 for w in gmatch(text, '%a+') do n = n + 1 end "
    "return n end },\n"
    "  { 'gmatch csv', function() local n = 0 for w in gmatch(csv, '([^,]*)') do n = n + 1 end "
    "return n end },\n"
    "  { 'gmatch k=v', function() local n = 0 for k, v in gmatch(conf, '(%w+)%s*=%s*(%w+)') do "
    "n = n + 1 end return n end },\n"
    "  { 'gsub spaces', function() return gsub(text, '%s+', ' ') end },\n"
    "  { 'gsub escape', function() return gsub(text, '[%p]', '\\\\%0') end },\n"
    "  { 'gsub table', function() return gsub(text, '%a+', R.T1) end },\n"
    "  { 'gsub func', function() return gsub(conf, '(%w+)', string.upper) end },\n"
    "  { 'frontier', function() return gsub(text, '%f[%w]%w+', 'W') end },\n"
    "  { 'balanced', function() return find(text, '%b()') end },\n"
    "  { 'short find', function() return find('hello.lua', '%.lua$') end },\n"
    "}\n"
    "function bench(i, n)\n"
    "  local f = BENCH[i][2]\n"
    "  for _ = 1, n do f() end\n"
    "  return BENCH[i][1]\n"
    "end\n";

static lua_State *new_state(int ours)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    *(void **)lua_getextraspace(L) = NULL; /* no tool call: charging does nothing */
    luaL_openlibs(L);
    if (ours) {
        lua_getglobal(L, "string");
        eddy__tools_open_patterns(L, -1);
        lua_pop(L, 1);
    }
    if (luaL_dostring(L, driver)) {
        fprintf(stderr, "driver: %s\n", lua_tostring(L, -1));
        fail();
    }
    return L;
}

typedef struct pair {
    lua_State *ref, *ours;
    int cases, gmatch_steps;
} pair;

static void pair_open(pair *d)
{
    memset(d, 0, sizeof(*d));
    d->ref = new_state(0);
    d->ours = new_state(1);
}

static void pair_close(pair *d)
{
    lua_close(d->ref);
    lua_close(d->ours);
}

/* Print a Lua string with its non-printable bytes escaped. */
static void print_escaped(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\%u", c);
    }
}

/* Both states have the outcome on top; compare and pop. */
static void compare_top(pair *d, const char *what)
{
    size_t n1, n2;
    const char *r1 = lua_tolstring(d->ref, -1, &n1);
    const char *r2 = lua_tolstring(d->ours, -1, &n2);
    assert_non_null(r1);
    assert_non_null(r2);
    if (n1 != n2 || memcmp(r1, r2, n1) != 0) {
        fprintf(stderr, "MISMATCH %s\n  std:  ", what);
        print_escaped(r1, n1);
        fprintf(stderr, "\n  ours: ");
        print_escaped(r2, n2);
        fprintf(stderr, "\n");
        fail();
    }
    d->cases++;
    lua_pop(d->ref, 1);
    lua_pop(d->ours, 1);
}

/* -- hand-written cases -------------------------------------------------------- */

/* Lua source adding cases with C(kind, args...); run in both states. */
static const char *const cases_src =
    "local rep, char = string.rep, string.char\n"
    "local all = {} for i = 0, 255 do all[#all + 1] = char(i) end all = table.concat(all)\n"
    "local maxi, mini = math.maxinteger, math.mininteger\n"
    /* find: plain and literal patterns, init */
    "C('find', 'hello world', 'o') C('find', 'hello world', 'o w') C('find', 'hello', '')\n"
    "C('find', '', '') C('find', '', 'a') C('find', '', '', 1) C('find', '', '', 2)\n"
    "C('find', 'hello', '', 10) C('find', 'hello', '', 6) C('find', 'hello', '', 5)\n"
    "C('find', 'hello', 'l', -2) C('find', 'hello', 'l', -100) C('find', 'hello', 'l', 0)\n"
    "C('find', 'hello', 'l', -5) C('find', 'hello', 'l', -6) C('find', 'hello', 'o', 5)\n"
    "C('find', 'hello', 'h', maxi) C('find', 'hello', 'h', mini) C('find', 'hello', '', maxi)\n"
    "C('find', 'hello', 'h', maxi, true) C('find', 'hello', 'h', mini, true)\n"
    "C('find', 'hello', 'llo!', 1, true) C('find', 'hello', 'hello!', 1, true)\n"
    "C('find', 'a.b', '.', 1, true) C('find', 'a.b', '.', 2, true) C('find', 'a.b', '.', 3, true)\n"
    "C('find', 'a+b', '+', 1, true) C('find', 'a+b', 'a+', 1, true) C('find', 'a+b', 'a+', 1, "
    "false)\n"
    "C('find', 'a+b', 'a+', 1, nil) C('find', 'a+b', 'a+', 1, 0) C('find', 'a+b', 'a+', nil, 1)\n"
    "C('find', 'a]b', ']') C('find', 'a)b', ')') C('find', 'a)b', 'a)') C('find', 'a)b', 'a%)')\n"
    "C('find', 'a\\0b', '\\0b') C('find', 'a\\0b', '%z') C('find', 'a\\0b', '[\\0]')\n"
    "C('find', 'a\\0b', '[%z]') C('find', 'a\\0b', '\\0', 1, true) C('find', 'a\\0b\\0c', "
    "'b\\0c')\n"
    "C('find', 'a\\0b', '%Z+') C('find', 'a\\0b', '.\\0.') C('find', 'x\\0', '\\0*$')\n"
    "C('find', 'abc', 'b', 1.0) C('find', 'abc', 'b', 1.5) C('find', 'abc', 'b', '2')\n"
    "C('find', 'abc', 'b', 'x') C('find', 'abc', 'b', '0x2') C('find', 123, 2) C('find', 12.5, "
    "'%.')\n"
    "C('find') C('find', 'abc') C('find', {}, 'a') C('find', 'abc', {}) C('find', 'abc', 'b', {})\n"
    "C('find', 'abc', 'b', 1, {}) C('find', nil, 'a') C('find', 'abc', nil) C('find', true, 'a')\n"
    "C('match', 'abc') C('match', 'abc', 'b', 'z') C('match', 'abc', 'b', 2, true)\n"
    "C('find', 'abc', '^b', 2) C('match', 'abc', '^b', 2) C('find', 'abc', '^', 4)\n"
    "C('find', 'abc', '$', 4) C('find', 'abc', '$', 5) C('match', 'abc', '()', 4)\n"
    /* anchors */
    "C('find', 'hello', '^h') C('find', 'hello', '^e') C('find', 'hello', 'o$') C('find', 'hello', "
    "'l$')\n"
    "C('find', 'he$llo', 'e$l') C('find', 'a^b', 'a^b') C('find', '^a', '^^a') C('find', 'a', "
    "'^')\n"
    "C('find', 'a$', '$$') C('find', '$', '^$') C('find', '', '^$') C('find', 'x', '^$')\n"
    "C('match', 'hello', '^(h)(.-)$') C('match', 'hello', '^(.-)l') C('match', '^x', '^^(x)')\n"
    /* quantifiers */
    "C('match', 'aaab', 'a-b') C('match', 'aaab', '^a-$') C('match', 'aaa', 'a-') C('match', "
    "'aaa', 'a*')\n"
    "C('match', 'aaa', 'a+') C('match', 'aaa', 'a?') C('match', 'aaa', 'a?a?a?a?') C('match', '', "
    "'a*')\n"
    "C('match', '', 'a+') C('match', '', 'a-') C('match', '', 'a?') C('match', 'ab', '.-b')\n"
    "C('match', '  trim  ', '^%s*(.-)%s*$') C('match', 'x=1,y=2', '(%w+)=(%w+)') C('match', 'ab', "
    "'a**')\n"
    "C('find', 'a**c', 'a**') C('find', 'abc', '*a') C('find', 'a*c', '*') C('find', 'a-c', '-')\n"
    "C('find', 'a?c', 'a?') C('find', 'aaa', 'a-*') C('find', 'a+', '+') C('find', 'a?', '?')\n"
    "C('find', 'aaa', '.-$') C('find', 'aaa', '.-') C('find', 'aab', 'a+b') C('find', 'aab', "
    "'a*b')\n"
    "C('find', 'b', 'a*b') C('find', 'b', 'a+b') C('find', 'ab', 'a?b') C('find', 'b', 'a?b')\n"
    "C('find', 'xyz', '[xyz]+') C('find', 'xyz', '[xyz]-z') C('find', 'xyz', '[xyz]?y') C('find', "
    "'xyz', '%l*')\n"
    "C('find', rep('a', 1000) .. 'b', 'a+b') C('find', rep('a', 300), '.-b') C('find', rep('ab', "
    "500), 'b(a)b', 700)\n"
    /* malformed patterns: raised only when the matcher gets there */
    "C('find', 'abc', '[') C('find', 'abc', '[^') C('find', 'abc', '[a') C('find', 'abc', '[a-')\n"
    "C('find', 'abc', '%') C('find', 'abc', 'a%') C('find', 'b', 'a%') C('find', 'b', 'a[')\n"
    "C('find', 'a', 'a[') C('find', 'abc', 'a*[') C('find', 'abc', 'x*[') C('find', 'abc', '[]')\n"
    "C('find', 'abc', '[^]') C('find', ']', '[]]') C('find', 'a', '[^]]') C('find', 'abc', "
    "'[a%]')\n"
    "C('find', 'abc', '[%') C('find', 'a%', '[%%]') C('find', 'a]', '[%]]') C('find', 'a', '[a')\n"
    "C('match', 'aaa', 'a-[') C('match', 'aaa', 'a?[') C('match', 'aaa', 'b?[') C('match', 'x', "
    "'(x)[')\n"
    /* sets */
    "for _, set in ipairs({'[a-f]', '[f-a]', '[a-]', '[-a]', '[]]', '[^]]', '[a%]]', '[%]]', "
    "'[%a-z]',\n"
    "    '[a-%z]', '[%%]', '[^%s%d]', '[a-c-e]', '[\\0-\\31]', '[\\128-\\255]', '[%w_]', "
    "'[^%w_]',\n"
    "    '[a-z%d]', '[]-a]', '[^-]', '[--]', '[a-a]', '[^a-z]', '[%^]', '[a^]', '[\\0]', "
    "'[^\\0]',\n"
    "    '[%a%d%p]', '[%A]', '[^%A]', '[.]', '[%.]', '[(%)]', '[*+?]', '[%b]', '[%f]', '[%1]',\n"
    "    '[a-%%]', '[%--/]', '[z-]', '[^^]', '[-]', '[^-a]', '[\\255]'}) do\n"
    "  C('gsub', all, set, '') C('gsub', all, set .. '+', '<%0>') C('find', all, set .. '-' .. "
    "set)\n"
    "end\n"
    /* classes */
    "local cls = 'acdglpsuwxzACDGLPSUWXZqQyYbBfF!.%()[]^$*+-?0 '\n"
    "for i = 1, #cls do\n"
    "  local cl = cls:sub(i, i)\n"
    "  C('gsub', all, '%' .. cl, '') C('gsub', all, '[%' .. cl .. ']', '')\n"
    "  C('gsub', all, '[^%' .. cl .. ']', '') C('find', all, '%' .. cl .. '+')\n"
    "end\n"
    "C('gsub', all, '.', '') C('gsub', all, '[^.]', '') C('find', all, '.+$')\n"
    /* captures */
    "C('match', 'hello world', '(h)(e)(l)(l)(o)') C('match', 'hello', '()ll()') C('find', 'hello', "
    "'()ll()')\n"
    "C('match', 'hello', '(h(e(l)))') C('match', 'hello', rep('(', 32) .. 'h' .. rep(')', 32))\n"
    "C('match', 'hello', rep('(', 33) .. 'h' .. rep(')', 33)) C('match', 'hello', rep('()', 32))\n"
    "C('match', 'hello', rep('()', 33)) C('find', 'hello', rep('()', 33)) C('find', 'x', 'y' .. "
    "rep('()', 33))\n"
    "C('match', 'hello', '(') C('find', 'hello', '(') C('match', 'hello', 'h)') C('match', "
    "'hello', ')')\n"
    "C('match', 'hello', '(h') C('match', 'hello', '(h)(e') C('match', 'hello', '((h)') C('find', "
    "'x', 'y)')\n"
    "C('find', 'hello', '(l)%1') C('find', 'hello', '(l)%2') C('find', 'hello', '(l%1)')\n"
    "C('find', 'hello', '%1') C('find', 'hello', '%0') C('find', 'xyxy', '(x)(y)%1%2') C('find', "
    "'xyyx', '(x)(y)%2%1')\n"
    "C('match', 'aaa', '()%1') C('match', 'aaa', '()a%1') C('match', 'abab', '(ab)%1') C('match', "
    "'abab', '(ab)%1%1')\n"
    "C('find', 'hello', '(l)(l)%3') C('match', 'hello', '(.)%1') C('match', 'say \"hi\" ok', "
    "'([\"\\'])(.-)%1')\n"
    "C('match', 'x', '(()x)') C('match', 'x', '((x)())') C('find', 'b', 'a%1') C('find', 'a', "
    "'a%1')\n"
    "C('match', 'hello', '(h)(e)(l)(l)(o)%5%4') C('match', 'abcabc', '(a)(b)(c)%1%2%3') C('match', "
    "'aa', '(a)%9')\n"
    /* %b */
    "C('find', 'if (a(b)c) then', '%b()') C('find', '((a)', '%b()') C('gsub', '(a)(b)((c))', "
    "'%b()', '[%0]')\n"
    "C('find', '\"x\"y\"', '%b\"\"') C('find', 'abc', '%b') C('find', 'abc', '%ba') C('find', "
    "'abc', '%bab')\n"
    "C('find', 'abc', 'x%b') C('find', 'xbc', 'x%b') C('find', 'a', '%b\\0a') C('find', 'aab', "
    "'%bab')\n"
    "C('find', 'abab', '%bab+') C('find', 'ab', '%bab*') C('find', '[[]]', '%b[]') C('find', "
    "'[[]', '%b[]')\n"
    "C('gsub', 'f(a(b)) g(c)', '%w%b()', '<%0>') C('find', 'aaa', '%baa') C('find', '', '%b()')\n"
    /* %f */
    "C('find', 'THE (quick) fox', '%f[%a]%a+') C('gsub', 'THE (quick) fox', '%f[%a]%a+', 'W')\n"
    "C('gsub', 'hello', '%f[%w]', '|') C('gsub', 'hello', '%f[%W]', '|') C('find', 'aaa', '%f[a]', "
    "2)\n"
    "C('find', 'a', '%f') C('find', 'a', '%fa') C('find', 'a', '%f[a') C('gsub', '\\0a\\0', "
    "'%f[%z]', '|')\n"
    "C('gsub', '\\0a\\0', '%f[^%z]', '|') C('gsub', 'a b', '%f[%s]', '|') C('find', 'b', 'a%f')\n"
    "C('gsub', 'hello world', '%f[%l]', '^') C('find', '', '%f[%z]') C('find', '', '%f[^%z]') "
    "C('find', 'x', '%f[]x]')\n"
    /* gsub: replacement strings, values, counts */
    "C('gsub', 'hello', '()', '%1') C('gsub', 'hello', '', '-') C('gsub', 'abc', '%w', '%0%0')\n"
    "C('gsub', 'abc', '%w', '%%') C('gsub', 'abc', '%w', '%') C('gsub', 'abc', '%w', '%a')\n"
    "C('gsub', 'abc', '(%w)', '%2') C('gsub', 'abc', '%w', '%1') C('gsub', 'abc', '%w', '%9')\n"
    "C('gsub', 'abc', '%w', 'x%') C('gsub', 'abc', '%w', '%%%') C('gsub', 'abc', 'z', '%')\n"
    "C('gsub', 'abc', '(a', '%1') C('gsub', 'abc', '(a', 'x') C('gsub', 'abc', '(a', '%0')\n"
    "C('gsub', 'abc', '(a)(b', '%1') C('gsub', 'abc', '(a)(b', '%2') C('gsub', 'abc', '(a)()', "
    "'%2%1')\n"
    "C('gsub', 'abc', 'b', 5) C('gsub', 'abc', 'b', 2.5) C('gsub', 'abc', 'b', 1e100) C('gsub', "
    "'abc', 'b', true)\n"
    "C('gsub', 'abc', 'b') C('gsub', 'abc', 'b', nil) C('gsub', 'abc', 'b', nil, 'x') C('gsub', "
    "'abc', 'b', 'x', 0)\n"
    "C('gsub', 'abc', 'b', 'x', -1) C('gsub', 'abc', '.', 'x', 2) C('gsub', 'abc', '.', 'x', 2.0)\n"
    "C('gsub', 'abc', '.', 'x', 2.5) C('gsub', 'abc', '.', 'x', '2') C('gsub', 'abc', '.', 'x', "
    "maxi)\n"
    "C('gsub', 'abc', '.', 'x', mini) C('gsub', 'abc', '^.', 'x') C('gsub', 'abc', '^', 'x') "
    "C('gsub', 'abc', '$', 'x')\n"
    "C('gsub', 'abc', '^$', 'x') C('gsub', '', '^$', 'x') C('gsub', '', '', 'x') C('gsub', 'abc', "
    "'x*', '-')\n"
    "C('gsub', 'abc', 'b*', '-') C('gsub', 'abc', '(b*)', '<%1>') C('gsub', 'abc', '.-', '-') "
    "C('gsub', 'abc', '.?', '-')\n"
    "C('gsub', 12345, 3, 'x') C('gsub', 12345, 3, 9) C('gsub', 1e15, '%d', 'x') C('gsub', 'abc', "
    "'', 'x', 2)\n"
    "C('gsub', 'hello world', '%w+', R.T1) C('gsub', 'hello world', '(%w+)', R.T2) C('gsub', "
    "'abc', '%w', R.T1)\n"
    "C('gsub', 'a b c', '%w', R.T1) C('gsub', 'x b', '%w', R.T1) C('gsub', 'd', '%w', R.T1)\n"
    "C('gsub', 'abc', '()', R.T1) C('gsub', 'abc', '()', R.T2) C('gsub', 'abc', '(', R.T1)\n"
    "C('gsub', 'abc', '(a)(b)', R.T2) C('gsub', 'hello world', '%w+', R.F1) C('gsub', 'hello "
    "world', '(o)(%w)', R.F1)\n"
    "C('gsub', 'abc', '()', R.F1) C('gsub', 'abc', '', R.F1) C('gsub', 'abc', '%w', R.F2) "
    "C('gsub', 'abc', '%w', R.F3)\n"
    "C('gsub', 'abc', '%w', R.F4) C('gsub', 'abc', '()', R.F4) C('gsub', 'abc', '%w', R.F5) "
    "C('gsub', 'abc', '%w', R.F6)\n"
    "C('gsub', 'abc', '%w', R.F7) C('gsub', 'abc', '(a)(b)(c)', R.F7) C('gsub', 'abc', '%w', R.F8) "
    "C('gsub', 'abc', '(', R.F1)\n"
    "C('gsub', 'abc', '%w', R.F8, 1) C('gsub', 'abc', '%w', R.F8, 2) C('gsub', 'abc', '(b)()', "
    "R.F1)\n"
    "C('gsub', 'abc', 'b', string.upper) C('gsub', 'abc', '%w', {}) C('gsub', 'abc', '%w', print, "
    "0)\n"
    "C('gsub', rep('hello ', 300), '%w+', '%0!') C('gsub', rep('x', 1000), '', '-') C('gsub', "
    "rep('ab', 400), 'ba', R.F8)\n"
    /* gmatch */
    "C('gmatch', 'hello world from lua', '%a+') C('gmatch', 'key=val, k2=v2', '(%w+)=(%w+)') "
    "C('gmatch', 'abc', '')\n"
    "C('gmatch', 'abc', 'a*') C('gmatch', 'aaa', 'a*') C('gmatch', 'abc', '()') C('gmatch', 'abc', "
    "'.', 2)\n"
    "C('gmatch', 'abc', '.', -1) C('gmatch', 'abc', '.', 10) C('gmatch', 'abc', '', 4) C('gmatch', "
    "'abc', '', 5)\n"
    "C('gmatch', 'abc', '', 0) C('gmatch', 'abc', '', -10) C('gmatch', 'abc', '.', 1.5) "
    "C('gmatch', 'abc', '.', 'x')\n"
    "C('gmatch', 'abc', '(') C('gmatch', 'abc', '%') C('gmatch', 'abc', 'x*') C('gmatch', "
    "'a,b,,c', '[^,]*')\n"
    "C('gmatch', 'a,b,,c', '([^,]*),?') C('gmatch', 'hello', '^h') C('gmatch', '^h^h', '^h') "
    "C('gmatch', 'abc', '$')\n"
    "C('gmatch', 'abc', '.$') C('gmatch', 12345, '%d') C('gmatch', 'abc') C('gmatch') C('gmatch', "
    "'ab', 'b%1')\n"
    "C('gmatch', 'abab', '(a)(b)') C('gmatch', 'abc', '[') C('gmatch', 'xbxb', 'b[') C('gmatch', "
    "'a', 'a', maxi)\n"
    "C('gmatch', 'ab', '()', mini) C('gmatch', '', '') C('gmatch', '', 'x*') C('gmatch', 'aaa', "
    "'a-')\n"
    /* depth: 'pattern too complex' exactly where the standard matcher says so */
    "for k = 196, 204 do\n"
    "  C('find', rep('a', 300), rep('a?', k)) C('find', rep('a', 300), rep('a*', k)) C('find', "
    "rep('a', 300), rep('a-', k))\n"
    "  C('find', 'b', rep('a?', k)) C('find', rep('a', k), rep('a?', k) .. '$')\n"
    "  C('find', rep('a', 10), rep('a-', k) .. 'a') C('gsub', rep('a', 300), rep('a?', k), 'x')\n"
    "  C('find', rep('ab', 150), rep('a?b?', k // 2))\n"
    "end\n"
    "for k = 60, 70 do\n"
    "  C('match', rep('a', 100), rep('(a)', 31) .. rep('a?', k)) C('match', rep('a', 100), "
    "rep('(a', 31) .. rep(')', 31) .. rep('a?', k))\n"
    "  C('match', rep('a', 100), rep('()a', 31) .. rep('a*', k * 2))\n"
    "end\n";

static void test_hand_written_cases(void **state)
{
    pair d;
    int n;
    (void)state;
    pair_open(&d);
    assert_int_equal(luaL_dostring(d.ref, cases_src), 0);
    assert_int_equal(luaL_dostring(d.ours, cases_src), 0);
    lua_getglobal(d.ref, "CASES");
    n = (int)lua_rawlen(d.ref, -1);
    lua_pop(d.ref, 1);
    for (int i = 1; i <= n; i++) {
        char what[400];
        lua_getglobal(d.ref, "describe");
        lua_pushinteger(d.ref, i);
        assert_int_equal(lua_pcall(d.ref, 1, 1, 0), 0);
        snprintf(what, sizeof(what), "case %d: %.380s", i, lua_tostring(d.ref, -1));
        lua_pop(d.ref, 1);
        lua_getglobal(d.ref, "run_case");
        lua_getglobal(d.ours, "run_case");
        lua_pushinteger(d.ref, i);
        lua_pushinteger(d.ours, i);
        assert_int_equal(lua_pcall(d.ref, 1, 1, 0), 0);
        assert_int_equal(lua_pcall(d.ours, 1, 1, 0), 0);
        compare_top(&d, what);
    }
    printf("  hand-written differential cases: %d\n", d.cases);
    pair_close(&d);
}

/* -- random cases ---------------------------------------------------------------- */

static uint64_t g_rng;

static uint32_t rnd(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

static char pick(const char *from)
{
    return from[rnd((uint32_t)strlen(from))];
}

typedef struct str {
    char b[256];
    size_t n;
} str;

static void put(str *s, const char *t)
{
    size_t k = strlen(t);
    if (s->n + k < sizeof(s->b)) {
        memcpy(s->b + s->n, t, k);
        s->n += k;
    }
}

static void putc_(str *s, char c)
{
    if (s->n + 1 < sizeof(s->b))
        s->b[s->n++] = c;
}

static const char *const k_classes = "acdglpsuwxzACDGLPSUWXZ";

static void gen_set(str *s)
{
    putc_(s, '[');
    if (rnd(3) == 0)
        putc_(s, '^');
    if (rnd(8) == 0)
        putc_(s, ']');
    for (int i = 0, n = 1 + (int)rnd(3); i < n; i++) {
        switch (rnd(6)) {
        case 0:
            putc_(s, pick("abc"));
            putc_(s, '-');
            putc_(s, pick("abc("));
            break;
        case 1:
            putc_(s, '%');
            putc_(s, pick(k_classes));
            break;
        case 2:
            putc_(s, '%');
            putc_(s, pick("]%-^["));
            break;
        default:
            putc_(s, pick("abc-^()."));
            break;
        }
    }
    putc_(s, ']');
}

/* One single-character item: a character, '.', a %class or a set. */
static void gen_single(str *s)
{
    switch (rnd(10)) {
    case 0:
        putc_(s, '.');
        break;
    case 1:
    case 2:
        putc_(s, '%');
        putc_(s, pick(k_classes));
        break;
    case 3:
        putc_(s, '%');
        putc_(s, pick(".%()[]-^$*+?"));
        break;
    case 4:
        gen_set(s);
        break;
    default:
        putc_(s, pick("aabbc ]^"));
        break;
    }
}

static void gen_seq(str *s, int depth, int *ncap);

static void gen_elem(str *s, int depth, int *ncap)
{
    switch (rnd(14)) {
    case 0:
        if (depth < 2) {
            putc_(s, '(');
            (*ncap)++;
            gen_seq(s, depth + 1, ncap);
            putc_(s, ')');
            break;
        }
        /* fall through */
    case 1:
        putc_(s, '(');
        putc_(s, ')');
        (*ncap)++;
        break;
    case 2:
        put(s, rnd(2) ? "%bab" : rnd(2) ? "%b()" : "%baa");
        break;
    case 3:
        put(s, "%f");
        gen_set(s);
        break;
    case 4:
        putc_(s, '%');
        putc_(s, (char)('0' + rnd((uint32_t)*ncap + 2)));
        break;
    default:
        gen_single(s);
        if (rnd(2))
            putc_(s, pick("*+-?"));
        break;
    }
}

static void gen_seq(str *s, int depth, int *ncap)
{
    for (int i = 0, n = (int)rnd(depth ? 3 : 6) + (depth ? 0 : 1); i < n; i++)
        gen_elem(s, depth, ncap);
}

static void gen_pattern(str *s)
{
    int ncap = 0;
    s->n = 0;
    if (rnd(6) == 0) { /* garbage: mostly specials, to reach the error paths */
        for (int i = 0, n = 1 + (int)rnd(8); i < n; i++)
            putc_(s, pick("ab()[]%^$*+-?.1bf"));
        return;
    }
    if (rnd(4) == 0)
        putc_(s, '^');
    gen_seq(s, 0, &ncap);
    if (rnd(4) == 0)
        putc_(s, '$');
}

static void gen_subject(str *s)
{
    static const char alpha[] = "aaabbbc  ()1.A]-^%\n";
    s->n = 0;
    for (int i = 0, n = (int)rnd(15); i < n; i++) {
        if (rnd(40) == 0)
            putc_(s, rnd(2) ? '\0' : (char)0xe9);
        else
            putc_(s, alpha[rnd(sizeof(alpha) - 1)]);
    }
}

/* An optional argument: none, nil, or one of a few kinds of value. */
typedef enum { A_NONE, A_NIL, A_INT, A_FLOAT, A_STR, A_BOOL } arg_kind;
typedef struct arg {
    arg_kind kind;
    lua_Integer i;
    double f;
    const char *s;
} arg;

static void push_arg(lua_State *L, const arg *a)
{
    switch (a->kind) {
    case A_NONE:
    case A_NIL:
        lua_pushnil(L);
        break;
    case A_INT:
        lua_pushinteger(L, a->i);
        break;
    case A_FLOAT:
        lua_pushnumber(L, a->f);
        break;
    case A_STR:
        lua_pushstring(L, a->s);
        break;
    case A_BOOL:
        lua_pushboolean(L, (int)a->i);
        break;
    }
}

static arg gen_init(size_t len)
{
    arg a = {A_INT, 0, 0, NULL};
    switch (rnd(16)) {
    case 0:
        a.kind = A_NONE;
        break;
    case 1:
        a.kind = A_NIL;
        break;
    case 2:
        a.kind = A_FLOAT;
        a.f = rnd(2) ? 2.0 : 1.5;
        break;
    case 3:
        a.kind = A_STR;
        a.s = rnd(2) ? "2" : "x";
        break;
    case 4:
        a.i = (lua_Integer)len + 1 + rnd(3);
        break;
    case 5:
        a.i = -(lua_Integer)len - rnd(3);
        break;
    default:
        a.i = (lua_Integer)rnd((uint32_t)len * 2 + 5) - (lua_Integer)len - 2;
        break;
    }
    if (rnd(3) == 0 && a.kind != A_NONE) /* most cases leave init out */
        return a;
    if (rnd(2))
        a.kind = A_NONE;
    return a;
}

static const char *const k_repls[] = {"x", "%0",   "%1",   "%2", "<%1|%2>", "%%", "%",   "%x",
                                      "",  "[%0]", "%1%1", "a%", "%3",      "%9", "%%%1"};
static const char *const k_rsel[] = {"T1", "T2", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"};

/* One random case run in both states. */
static void random_case(pair *d, int kind)
{
    static const char *const kinds[] = {"find", "match", "gmatch", "gsub"};
    str s, p;
    arg a3 = {A_NONE, 0, 0, NULL}, a4 = {A_NONE, 0, 0, NULL};
    const char *rsel = NULL;
    int na;
    lua_State *Ls[2] = {d->ref, d->ours};
    gen_subject(&s);
    gen_pattern(&p);
    if (kind == 3) {
        a3.kind = A_STR;
        if (rnd(3) == 0)
            rsel = k_rsel[rnd(sizeof(k_rsel) / sizeof(*k_rsel))];
        else
            a3.s = k_repls[rnd(sizeof(k_repls) / sizeof(*k_repls))];
        if (rnd(4) == 0) {
            a4.kind = rnd(8) ? A_INT : A_FLOAT;
            a4.i = (lua_Integer)rnd(5) - 1;
            a4.f = 1.5;
        }
    } else {
        a3 = gen_init(s.n);
        if (kind == 0 && rnd(5) == 0) {
            a4.kind = A_BOOL;
            a4.i = 1;
            if (a3.kind == A_NONE)
                a3.kind = A_NIL;
        }
    }
    na = a4.kind != A_NONE ? 4 : a3.kind != A_NONE ? 3 : 2;
    for (int i = 0; i < 2; i++) {
        lua_State *L = Ls[i];
        lua_getglobal(L, "run");
        lua_pushstring(L, kinds[kind]);
        lua_pushinteger(L, na);
        lua_pushlstring(L, s.b, s.n);
        lua_pushlstring(L, p.b, p.n);
        push_arg(L, &a3);
        push_arg(L, &a4);
        if (rsel)
            lua_pushstring(L, rsel);
        else
            lua_pushnil(L);
        if (lua_pcall(L, 7, 1, 0)) {
            fprintf(stderr, "driver failed: %s\n", lua_tostring(L, -1));
            fail();
        }
    }
    {
        size_t n1, n2;
        const char *r1 = lua_tolstring(d->ref, -1, &n1), *r2 = lua_tolstring(d->ours, -1, &n2);
        if (n1 != n2 || memcmp(r1, r2, n1) != 0) {
            fprintf(stderr, "random case %d (%s, %d args, rsel %s): subject '", d->cases,
                    kinds[kind], na, rsel ? rsel : "-");
            print_escaped(s.b, s.n);
            fprintf(stderr, "' pattern '");
            print_escaped(p.b, p.n);
            fprintf(stderr, "' a3 kind %d i %lld f %g s %s, a4 kind %d i %lld\n", a3.kind,
                    (long long)a3.i, a3.f, a3.s ? a3.s : "-", a4.kind, (long long)a4.i);
        }
    }
    compare_top(d, "random");
}

static void test_random_cases(void **state)
{
    pair d;
    const char *env = getenv("LPATTERN_CASES");
    long n = env ? strtol(env, NULL, 10) : 100000;
    clock_t t0 = clock();
    (void)state;
    g_rng = 0x9e3779b97f4a7c15ULL;
    pair_open(&d);
    for (long i = 0; i < n; i++)
        random_case(&d, (int)(i % 4));
    printf("  random differential cases: %d (%.1f s)\n", d.cases,
           (double)(clock() - t0) / CLOCKS_PER_SEC);
    pair_close(&d);
}

/* -- inside a real tool call ------------------------------------------------------ */

typedef struct done {
    int n, status;
    char *out;
} done;

static void on_done(eddy_tool_result *r, void *ud)
{
    done *d = ud;
    d->n++;
    d->status = r->status;
    d->out = r->status ? eddy_strdup(r->err.msg)
                       : json_dumps(r->result, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
}

/* A tool whose run evaluates CASES[args.which] (Lua source of a function
 * body), with our pattern functions in the sandbox's string table. */
static const char *const budget_tool =
    "local CASES = {\n"
    "  q30 = [[return string.find(string.rep('a', 30) .. 'b', string.rep('a?', 30) .. "
    "string.rep('a', 30))]],\n"
    "  star40 = [[return ('a'):rep(5000):find(('a*'):rep(40) .. 'b')]],\n"
    "  match = [[return string.match(('a'):rep(60), ('(a*)'):rep(12) .. '$b')]],\n"
    "  gmatch = [[for x in (('a'):rep(3000)):gmatch(('a-'):rep(20) .. 'b') do end]],\n"
    "  gsub = [[return (('a'):rep(100)):gsub(('a?'):rep(100) .. ('a'):rep(100), 'x')]],\n"
    "  balance = [[return (('('):rep(60000)):find('%b()')]],\n"
    "  plain = [[local s = ('a'):rep(8 << 20)\n"
    "    for i = 1, 400 do s:find('b', 1, true) end]],\n"
    "  skip = [[local s = ('a'):rep(8 << 20)\n"
    "    for i = 1, 400 do s:find('b%d') end]],\n"
    "  calls = [[local n = 0\n"
    "    for i = 1, 1e6 do if ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'):find('a-a-a-a-b') then "
    "n = n + 1 end end return n]],\n"
    "  ok = [[local t = {}\n"
    "    for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do t[#t + 1] = k .. v end\n"
    "    return { t = table.concat(t, ' '), f = { ('hello'):find('l+') },\n"
    "             g = (('hello world'):gsub('%w+', function(w) return w:upper() end)),\n"
    "             m = ('  x  '):match('^%s*(.-)%s*$') }]],\n"
    "}\n"
    "return eddy.tool { name = 'pat', description = 'runs a pattern case',\n"
    "  params = { which = { type = 'string', required = true } },\n"
    "  run = function(args) return load(CASES[args.which])() end }\n";

static void call_tool(eddy_tools *h, eddy_tool *t, uv_loop_t *loop, const char *which, done *d)
{
    json_t *args = json_pack("{s:s}", "which", which);
    eddy_err e;
    memset(d, 0, sizeof(*d));
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, d, &e), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(d->n, 1);
    json_decref(args);
}

static void test_budget_in_tool_call(void **state)
{
    static const char *const runaway[] = {"q30",     "star40", "match", "gmatch", "gsub",
                                          "balance", "plain",  "skip",  "calls"};
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    done d;
    lua_State *L;
    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    L = eddy_tools_lua(h); /* the sandbox shares this string table */
    lua_getglobal(L, "string");
    eddy__tools_open_patterns(L, -1);
    lua_pop(L, 1);
    assert_int_equal(eddy_tools_load(h, write_file("pat.lua", budget_tool), NULL, &t, &e), 0);

    call_tool(h, t, &loop, "ok", &d);
    assert_int_equal(d.status, 0);
    assert_string_equal(d.out, "{\"f\":[3,4],\"g\":\"HELLO WORLD\",\"m\":\"x\",\"t\":\"a1 b2\"}");
    eddy_free(d.out);
    for (size_t i = 0; i < sizeof(runaway) / sizeof(*runaway); i++) {
        uint64_t t0 = eddy_now_ms();
        call_tool(h, t, &loop, runaway[i], &d);
        printf("  budget: %-8s stopped after %4llu ms: %s\n", runaway[i],
               (unsigned long long)(eddy_now_ms() - t0), d.out);
        assert_int_equal(d.status, EDDY_EBUDGET);
        assert_non_null(strstr(d.out, "instruction budget"));
        eddy_free(d.out);
    }
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* -- timing ------------------------------------------------------------------ */

static double bench_one(lua_State *L, int i, int n, const char **name)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    lua_getglobal(L, "bench");
    lua_pushinteger(L, i);
    lua_pushinteger(L, n);
    assert_int_equal(lua_pcall(L, 2, 1, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *name = lua_tostring(L, -1);
    lua_pop(L, 1);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
}

static void test_timing(void **state)
{
    pair d;
    int nb;
    double tot_ref = 0, tot_ours = 0;
    (void)state;
    pair_open(&d);
    lua_getglobal(d.ref, "BENCH");
    nb = (int)lua_rawlen(d.ref, -1);
    lua_pop(d.ref, 1);
    printf("  timing (best of 3, ours / standard):\n");
    for (int i = 1; i <= nb; i++) {
        const char *name = "";
        double best_ref = 1e9, best_ours = 1e9;
        int n = 2000;
        for (int r = 0; r < 3; r++) {
            double t1 = bench_one(d.ref, i, n, &name), t2 = bench_one(d.ours, i, n, &name);
            best_ref = t1 < best_ref ? t1 : best_ref;
            best_ours = t2 < best_ours ? t2 : best_ours;
        }
        tot_ref += best_ref;
        tot_ours += best_ours;
        printf("    %-14s std %7.2f us  ours %7.2f us  x%.2f\n", name, best_ref * 1e6 / n,
               best_ours * 1e6 / n, best_ours / best_ref);
    }
    printf("    %-14s std %7.1f ms  ours %7.1f ms  x%.2f\n", "total", tot_ref * 1e3, tot_ours * 1e3,
           tot_ours / tot_ref);
    pair_close(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_written_cases),
        cmocka_unit_test(test_random_cases),
        cmocka_unit_test(test_budget_in_tool_call),
        cmocka_unit_test(test_timing),
    };
    if (getenv("LPATTERN_ONLY")) /* e.g. LPATTERN_ONLY='test_budget*' */
        cmocka_set_test_filter(getenv("LPATTERN_ONLY"));
    if (getenv("LPATTERN_SKIP"))
        cmocka_set_skip_filter(getenv("LPATTERN_SKIP"));
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
