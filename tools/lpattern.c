/*
 * tools/lpattern.c - Lua 5.4 patterns for the sandbox: string.find, match,
 * gmatch and gsub, with their work charged to the running tool call.
 *
 * The standard library matches patterns in C, where the VM's count hook never
 * fires, so one call with catastrophic backtracking could hold the worker for
 * minutes. This is an independent implementation of the semantics of the Lua
 * 5.4 manual (6.4.1) that returns the same values and raises the same errors
 * as the standard functions for every input, and burns fuel as it goes: each
 * entry into the matcher (so each backtrack), each attempted one-character
 * match and each character scanned by %b, a back-reference, a set or a search
 * costs about one unit, and every FUEL_CHUNK units go to eddy__tools_charge,
 * which raises the budget error once the call's budget is spent. What is left
 * when a function returns is charged too, so many small calls add up.
 *
 * The standard matcher raises pattern errors lazily, when it reaches the bad
 * part of a pattern ("a[" is fine against "b"), so this one must visit the
 * pattern in the same order: a backtracking matcher over the pattern text
 * whose recursion consumes one unit of depth where the standard one does
 * (captures and quantified items), bounded by MATCH_DEPTH ("pattern too
 * complex"). Pure shortcuts (skipping subject positions whose first character
 * cannot start a match) are only taken where they cannot change what is
 * raised.
 *
 * Invariants: nothing here holds malloc'd memory (the match state lives on
 * the C stack, gsub builds its result in a luaL_Buffer, which Lua frees when
 * an error unwinds), so any spend() may raise. Subject and pattern are Lua
 * strings, so the byte at their end is a readable '\0'; the code still checks
 * bounds explicitly rather than rely on it.
 */
#include "tools_int.h"

#include <ctype.h>
#include <string.h>

#define MAX_CAPTURES 32   /* as LUA_MAXCAPTURES in the standard library */
#define MATCH_DEPTH 200   /* nested matcher frames, as its MAXCCALLS */
#define FUEL_CHUNK 1024   /* units spent between two charges */
#define CAP_OPEN (-1)     /* capture length while its ')' is not reached */
#define CAP_POSITION (-2) /* "()": the capture is a position */
#define SPECIALS "^$*+?.([%-"

typedef struct capture {
    const char *at;
    ptrdiff_t len; /* or CAP_OPEN / CAP_POSITION */
} capture;

typedef struct matcher {
    lua_State *L;
    const char *src, *src_end; /* the whole subject */
    const char *pat_end;
    /* "pattern too complex" when DEPTH, counted down per matcher frame, hits 0
     * or FLOOR (MATCH_DEPTH frames in this attempt; see gmatch_state) */
    int64_t depth, floor;
    int level;                   /* captures started */
    const char *lead, *lead_end; /* the item every match starts with, or NULL */
    int lead_char;               /* the character every match starts with, or -1 */
    int64_t fuel;                /* units left before the next charge */
    capture cap[MAX_CAPTURES];
} matcher;

static const char *run(matcher *m, const char *s, const char *p);

/* -- fuel -------------------------------------------------------------------- */

static void refuel(matcher *m)
{
    int64_t used = FUEL_CHUNK - m->fuel;
    m->fuel = FUEL_CHUNK;
    eddy__tools_charge(m->L, used);
}

static inline void spend(matcher *m, int64_t units)
{
    m->fuel -= units;
    if (m->fuel <= 0)
        refuel(m);
}

/* Charge what was spent since the last charge. */
static void settle(matcher *m)
{
    if (m->fuel < FUEL_CHUNK)
        refuel(m);
}

static void matcher_init(matcher *m, lua_State *L, const char *s, size_t ls, const char *p,
                         size_t lp)
{
    m->L = L;
    m->src = s;
    m->src_end = s + ls;
    m->pat_end = p + lp;
    m->lead = NULL;
    m->lead_char = -1;
    m->fuel = FUEL_CHUNK;
}

/* Before each attempt at a subject position. */
static inline void matcher_reset(matcher *m)
{
    m->level = 0;
    m->depth = MATCH_DEPTH;
    m->floor = 0;
}

/* Whether run() may enter one more frame. */
static inline int depth_left(const matcher *m)
{
    return m->depth != 0 && m->depth != m->floor;
}

/* -- one character against one item ------------------------------------------- */

/* Whether C is in class %CL (%a, %D, ...); any other CL stands for itself. */
static int class_has(int c, int cl)
{
    int in;
    switch (tolower(cl)) {
    case 'a':
        in = isalpha(c);
        break;
    case 'c':
        in = iscntrl(c);
        break;
    case 'd':
        in = isdigit(c);
        break;
    case 'g':
        in = isgraph(c);
        break;
    case 'l':
        in = islower(c);
        break;
    case 'p':
        in = ispunct(c);
        break;
    case 's':
        in = isspace(c);
        break;
    case 'u':
        in = isupper(c);
        break;
    case 'w':
        in = isalnum(c);
        break;
    case 'x':
        in = isxdigit(c);
        break;
    case 'z': /* the '\0' class, gone from the manual but kept by 5.4 */
        in = c == 0;
        break;
    default:
        return cl == c;
    }
    return isupper(cl) ? !in : in != 0;
}

/* Whether C is in the set that starts at P ('[') and ends at EC (its ']'). */
static int set_has(int c, const char *p, const char *ec)
{
    int in = 1;
    if (*++p == '^') {
        in = 0;
        p++;
    }
    for (; p < ec; p++) {
        if (*p == '%') {
            p++;
            if (class_has(c, (unsigned char)*p))
                return in;
        } else if (p[1] == '-' && p + 2 < ec) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return in;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return in;
        }
    }
    return !in;
}

/* The end of the single-character item at P (before END): one past a plain
 * character, a %x or a [set]; NULL when it is malformed, with *WHY saying how. */
static const char *item_scan(const char *p, const char *end, const char **why)
{
    switch (*p++) {
    case '%':
        if (p >= end) {
            *why = "malformed pattern (ends with '%')";
            return NULL;
        }
        return p + 1;
    case '[':
        if (p < end && *p == '^')
            p++;
        do { /* the first character never closes the set: "[]]" */
            if (p >= end) {
                *why = "malformed pattern (missing ']')";
                return NULL;
            }
            if (*p++ == '%' && p < end)
                p++;
        } while (p >= end || *p != ']');
        return p + 1;
    default:
        return p;
    }
}

/* item_scan that raises, as the standard matcher does when it reaches a
 * malformed item. */
static const char *item_end(matcher *m, const char *p)
{
    const char *why = NULL, *ep = item_scan(p, m->pat_end, &why);
    if (!ep)
        luaL_error(m->L, "%s", why);
    return ep;
}

/* Whether C matches the item P..EP. */
static inline int item_has(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.':
        return 1;
    case '%':
        return class_has(c, (unsigned char)p[1]);
    case '[':
        return set_has(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

/* What matching one character against item P..EP costs beyond a unit: a set
 * is scanned, one unit per 16 bytes. */
static inline int64_t item_cost(const char *p, const char *ep)
{
    return *p == '[' ? (ep - p) >> 4 : 0;
}

/* The plain character that the pattern at Q must match first, or -1: Q starts
 * with a character that is not special there and not optional (no '*', '?'
 * or '-' after it), so an attempt at a subject position without it fails at
 * its first step, having raised nothing and changed nothing. */
static int must_start_with(const char *q, const char *pe)
{
    if (q >= pe)
        return -1;
    switch (*q) {
    case '(':
    case ')':
    case '%':
    case '[':
    case '.':
        return -1;
    case '$':
        if (q + 1 == pe)
            return -1;
        break;
    }
    if (q + 1 < pe && (q[1] == '*' || q[1] == '?' || q[1] == '-'))
        return -1;
    return (unsigned char)*q;
}

/* Whether the subject character at S matches the item P..EP; costs a unit,
 * more for a long set. */
static inline int single(matcher *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->src_end)
        return 0;
    if (*p == '[')
        spend(m, item_cost(p, ep));
    return item_has((unsigned char)*s, p, ep);
}

/* -- the matcher ----------------------------------------------------------------- */

/* How many characters from S on match the item P..EP (the expansion of a
 * greedy quantifier). */
static ptrdiff_t expand(matcher *m, const char *s, const char *p, const char *ep)
{
    const char *t = s, *end = m->src_end;
    switch (*p) {
    case '.':
        t = end;
        break;
    case '%': {
        int cl = (unsigned char)p[1];
        while (t < end && class_has((unsigned char)*t, cl))
            t++;
        break;
    }
    case '[':
        while (t < end && set_has((unsigned char)*t, p, ep - 1))
            t++;
        spend(m, item_cost(p, ep) * (t - s));
        break;
    default:
        while (t < end && *t == *p)
            t++;
        break;
    }
    spend(m, t - s);
    return t - s;
}

/* ITEM* or ITEM+ from S: the longest run first, then shorter ones. When what
 * follows must start with a plain character, attempts where it is missing are
 * skipped: they would fail at once (run() raises nothing while depth is left). */
static const char *greedy(matcher *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = expand(m, s, p, ep);
    int next = depth_left(m) ? must_start_with(ep + 1, m->pat_end) : -1;
    const char *r;
    for (;; i--) {
        if (next < 0 || (s + i < m->src_end && (unsigned char)s[i] == next)) {
            if ((r = run(m, s + i, ep + 1)))
                return r;
        } else {
            spend(m, 1);
        }
        if (i == 0)
            return NULL;
    }
}

/* ITEM- from S: the shortest run first; skips as greedy() does. */
static const char *lazy(matcher *m, const char *s, const char *p, const char *ep)
{
    int next = depth_left(m) ? must_start_with(ep + 1, m->pat_end) : -1;
    const char *r;
    for (;;) {
        if (next < 0 || (s < m->src_end && (unsigned char)*s == next)) {
            if ((r = run(m, s, ep + 1)))
                return r;
        }
        spend(m, 1);
        if (!single(m, s, p, ep))
            return NULL;
        s++;
    }
}

/* %bxy at S; P points at x. */
static const char *balance(matcher *m, const char *s, const char *p)
{
    const char *t = s, *end = m->src_end;
    int open, close, depth = 1;
    if (p + 1 >= m->pat_end)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= end || *s != *p)
        return NULL;
    open = *p;
    close = p[1];
    while (++t < end) {
        if (*t == close) {
            if (--depth == 0)
                break;
        } else if (*t == open) {
            depth++;
        }
    }
    spend(m, t - s);
    return t < end ? t + 1 : NULL;
}

/* %f[set] at S; *PP points after "%f", and past the set on success. */
static int frontier(matcher *m, const char *s, const char **pp)
{
    const char *p = *pp, *ep;
    int prev, cur;
    if (p >= m->pat_end || *p != '[')
        luaL_error(m->L, "missing '[' after '%%f' in pattern");
    ep = item_end(m, p);
    prev = s == m->src ? 0 : (unsigned char)s[-1];
    cur = s < m->src_end ? (unsigned char)*s : 0;
    spend(m, (ep - p) >> 3);
    if (set_has(prev, p, ep - 1) || !set_has(cur, p, ep - 1))
        return 0;
    *pp = ep;
    return 1;
}

/* %1..%9 at S. */
static const char *backref(matcher *m, const char *s, int digit)
{
    int l = digit - '1';
    ptrdiff_t len;
    if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", l + 1);
    len = m->cap[l].len;
    if (len < 0 || m->src_end - s < len) /* a position never matches */
        return NULL;
    spend(m, len >> 3);
    return memcmp(m->cap[l].at, s, (size_t)len) == 0 ? s + len : NULL;
}

/* '(' at S; P points after it. */
static const char *open_capture(matcher *m, const char *s, const char *p)
{
    ptrdiff_t what = CAP_OPEN;
    const char *r;
    if (p < m->pat_end && *p == ')') {
        what = CAP_POSITION;
        p++;
    }
    if (m->level >= MAX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[m->level].at = s;
    m->cap[m->level].len = what;
    m->level++;
    r = run(m, s, p);
    if (!r)
        m->level--;
    return r;
}

/* ')' at S closes the innermost open capture; P points after it. */
static const char *close_capture(matcher *m, const char *s, const char *p)
{
    int l = m->level - 1;
    const char *r;
    while (l >= 0 && m->cap[l].len != CAP_OPEN)
        l--;
    if (l < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].at;
    r = run(m, s, p);
    if (!r)
        m->cap[l].len = CAP_OPEN;
    return r;
}

/* Match the pattern from P on against the subject from S: the end of the
 * match, or NULL. Captures made on the way stay in M on success. */
static const char *run(matcher *m, const char *s, const char *p)
{
    const char *pe = m->pat_end, *ep, *r;
    int q;
    if (!depth_left(m)) {
        m->depth--; /* the standard count goes below 0 here */
        luaL_error(m->L, "pattern too complex");
    }
    m->depth--;
    for (;;) {
        spend(m, 1);
        if (p == pe)
            break;
        switch (*p) {
        case '(':
            s = open_capture(m, s, p + 1);
            goto out;
        case ')':
            s = close_capture(m, s, p + 1);
            goto out;
        case '$':
            if (p + 1 == pe) {
                s = s == m->src_end ? s : NULL;
                goto out;
            }
            break; /* elsewhere '$' is a plain character */
        case '%':
            if (p + 1 == pe)
                break; /* item_end raises */
            if (p[1] == 'b') {
                if (!(s = balance(m, s, p + 2)))
                    goto out;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                p += 2;
                if (!frontier(m, s, &p)) {
                    s = NULL;
                    goto out;
                }
                continue;
            }
            if (p[1] >= '0' && p[1] <= '9') {
                if (!(s = backref(m, s, p[1])))
                    goto out;
                p += 2;
                continue;
            }
            break;
        }
        ep = item_end(m, p);
        q = ep < pe ? *ep : '\0';
        if (!single(m, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1; /* zero repetitions */
                continue;
            }
            s = NULL;
            goto out;
        }
        switch (q) {
        case '?':
            if ((r = run(m, s + 1, ep + 1))) {
                s = r;
                goto out;
            }
            p = ep + 1;
            continue;
        case '+':
            s = greedy(m, s + 1, p, ep);
            goto out;
        case '*':
            s = greedy(m, s, p, ep);
            goto out;
        case '-':
            s = lazy(m, s, p, ep);
            goto out;
        default:
            s++;
            p = ep;
            continue;
        }
    }
out:
    m->depth++;
    return s;
}

/* -- captures to Lua ------------------------------------------------------------- */

/* Capture I of the match S..E: its text in *AT and its length, or
 * CAP_POSITION with the position pushed. With no captures, capture 0 is the
 * whole match. */
static ptrdiff_t get_capture(matcher *m, int i, const char *s, const char *e, const char **at)
{
    ptrdiff_t len;
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *at = s;
        return e - s;
    }
    len = m->cap[i].len;
    *at = m->cap[i].at;
    if (len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].at - m->src) + 1);
    return len;
}

static void push_capture(matcher *m, int i, const char *s, const char *e)
{
    const char *at;
    ptrdiff_t len = get_capture(m, i, s, e, &at);
    if (len != CAP_POSITION)
        lua_pushlstring(m->L, at, (size_t)len);
}

/* Push the captures, or the whole match S..E when there are none and S is
 * set; returns how many values were pushed. */
static int push_captures(matcher *m, const char *s, const char *e)
{
    int n = m->level == 0 && s ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* -- find and match ---------------------------------------------------------- */

/* The 0-based offset where a search with init POS starts (> LEN: none). */
static size_t start_offset(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos - 1;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 0;
    return len - (size_t)(-pos);
}

/* The offset of the first special character of P (LP when there is none). */
static size_t first_special(const char *p, size_t lp)
{
    size_t i = 0;
    for (;;) {
        i += strcspn(p + i, SPECIALS);
        if (i >= lp || p[i] != '\0')
            return i < lp ? i : lp;
        i++; /* an embedded '\0' */
    }
}

/* Note in M what every match of the unanchored pattern P must start with, so
 * that subject positions without it can be skipped: a plain character, the
 * opening character of %b, or a class or set that is not optional, possibly
 * after captures. An attempt at such a position fails at that first item
 * having raised nothing (the item is well formed, few captures are open, depth
 * is left) and changed nothing. */
static void plan_lead(matcher *m, const char *p)
{
    const char *pe = m->pat_end, *ep, *why;
    for (int i = 0; i < 8 && p < pe && *p == '('; i++)
        p += p + 1 < pe && p[1] == ')' ? 2 : 1;
    if (p >= pe || *p == '(')
        return;
    if ((m->lead_char = must_start_with(p, pe)) >= 0)
        return;
    if (*p == '%' && p + 1 < pe && p[1] == 'b') {
        if (p + 3 < pe)
            m->lead_char = (unsigned char)p[2];
        return;
    }
    if (*p == '%' && p + 1 < pe && (p[1] == 'f' || (p[1] >= '0' && p[1] <= '9')))
        return;
    if (*p != '%' && *p != '[')
        return;
    if (!(ep = item_scan(p, pe, &why)))
        return;
    if (ep < pe && (*ep == '*' || *ep == '?' || *ep == '-'))
        return;
    m->lead = p;
    m->lead_end = ep;
}

/* The first position from S where a match may start. */
static inline const char *skip_to_lead(matcher *m, const char *s)
{
    const char *t = s, *end = m->src_end;
    if (t >= end)
        return s;
    if (m->lead_char >= 0) {
        t = memchr(s, m->lead_char, (size_t)(end - s));
        t = t ? t : end;
        spend(m, (t - s) >> 3);
    } else if (m->lead) {
        const char *p = m->lead, *ep = m->lead_end;
        while (t < end && !item_has((unsigned char)*t, p, ep))
            t++;
        spend(m, (t - s) * (1 + item_cost(p, ep)));
    }
    return t;
}

static int find_aux(lua_State *L, int find)
{
    size_t ls, lp, init, scanned = 0;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *s1, *e;
    int anchor;
    matcher m;
    init = start_offset(luaL_optinteger(L, 3, 1), ls);
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    matcher_init(&m, L, s, ls, p, lp);
    if (find && (lua_toboolean(L, 4) || (scanned = first_special(p, lp)) == lp)) {
        spend(&m, (int64_t)((ls - init + lp) >> 3));
        settle(&m);
        e = lp == 0 ? s + init : lp > ls - init ? NULL : memmem(s + init, ls - init, p, lp);
        if (!e) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(e - s) + 1);
        lua_pushinteger(L, (lua_Integer)(e - s + lp));
        return 2;
    }
    spend(&m, (int64_t)(scanned >> 3));
    anchor = lp > 0 && *p == '^';
    if (anchor)
        p++;
    else
        plan_lead(&m, p);
    for (s1 = s + init;; s1++) {
        s1 = skip_to_lead(&m, s1);
        matcher_reset(&m);
        if ((e = run(&m, s1, p))) {
            settle(&m);
            if (!find)
                return push_captures(&m, s1, e);
            lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return push_captures(&m, NULL, NULL) + 2;
        }
        if (anchor || s1 >= m.src_end)
            break;
    }
    settle(&m);
    luaL_pushfail(L);
    return 1;
}

static int l_find(lua_State *L)
{
    return find_aux(L, 1);
}

static int l_match(lua_State *L)
{
    return find_aux(L, 0);
}

/* -- gmatch ------------------------------------------------------------------ */

/* The iterator's state, a userdata next to the subject and the pattern (its
 * upvalues, which keep M's pointers valid). M persists from call to call as
 * in the standard gmatch, whose depth count is not restored when an error
 * unwinds: an iterator that raised inside the matcher has less depth left for
 * its next calls, and once its count went below 0 ("pattern too complex" at
 * 0) the standard one no longer limits the depth at all, so it can overflow
 * the C stack. Here each attempt also stops at MATCH_DEPTH frames (FLOOR):
 * the one place where the results differ, the standard function being
 * unsafe there. */
typedef struct gmatch_state {
    matcher m;
    const char *pat;
    size_t pos;     /* where the next search starts; may be one past the end */
    ptrdiff_t last; /* end of the last match, or -1 */
} gmatch_state;

/* A '^' is a plain character here, as in the standard gmatch. */
static int gmatch_next(lua_State *L)
{
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    matcher *m = &g->m;
    const char *p = g->pat, *s1, *e;
    m->L = L;
    for (s1 = m->src + g->pos; s1 <= m->src_end; s1++) {
        s1 = skip_to_lead(m, s1);
        m->level = 0;
        m->floor = m->depth - MATCH_DEPTH;
        if ((e = run(m, s1, p)) && e - m->src != g->last) {
            g->pos = (size_t)(e - m->src);
            g->last = e - m->src;
            settle(m);
            return push_captures(m, s1, e);
        }
    }
    settle(m);
    return 0;
}

static int l_gmatch(lua_State *L)
{
    size_t ls, lp, init;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    gmatch_state *g;
    init = start_offset(luaL_optinteger(L, 3, 1), ls);
    lua_settop(L, 2);
    g = lua_newuserdatauv(L, sizeof(*g), 0);
    matcher_init(&g->m, L, s, ls, p, lp);
    matcher_reset(&g->m);
    plan_lead(&g->m, p);
    g->pat = p;
    g->pos = init > ls ? ls + 1 : init;
    g->last = -1;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* -- gsub -------------------------------------------------------------------- */

/* Append the replacement string (argument 3) for the match S..E. */
static void add_string_repl(matcher *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    const char *r = lua_tolstring(m->L, 3, &l), *end = r + l, *pc, *at;
    ptrdiff_t len;
    spend(m, (int64_t)(l >> 3));
    while ((pc = memchr(r, '%', (size_t)(end - r)))) {
        luaL_addlstring(b, r, (size_t)(pc - r));
        if (++pc == end)
            luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
        if (*pc == '%') {
            luaL_addchar(b, '%');
        } else if (*pc >= '0' && *pc <= '9') {
            at = s;
            len = *pc == '0' ? e - s : get_capture(m, *pc - '1', s, e, &at);
            if (len == CAP_POSITION) {
                luaL_addvalue(b);
            } else {
                spend(m, len >> 3);
                luaL_addlstring(b, at, (size_t)len);
            }
        } else {
            luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
        }
        r = pc + 1;
    }
    luaL_addlstring(b, r, (size_t)(end - r));
}

/* Append the replacement for the match S..E; returns whether it differs from
 * the match (false/nil from a table or function keeps the match). */
static int add_repl(matcher *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = m->L;
    if (type == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        lua_call(L, push_captures(m, s, e), 1);
    } else if (type == LUA_TTABLE) {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_string_repl(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    spend(m, (int64_t)(lua_rawlen(L, -1) >> 3));
    luaL_addvalue(b);
    return 1;
}

static int l_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *src = s, *last = NULL, *e, *next;
    int type = lua_type(L, 3), anchor, changed = 0;
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
    matcher m;
    luaL_Buffer b;
    luaL_argexpected(L,
                     type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
                         type == LUA_TTABLE,
                     3, "string/function/table");
    luaL_buffinit(L, &b);
    anchor = lp > 0 && *p == '^';
    matcher_init(&m, L, s, ls, p + anchor, lp - (size_t)anchor);
    p += anchor;
    if (!anchor)
        plan_lead(&m, p);
    while (n < max) {
        if ((next = skip_to_lead(&m, src)) != src) {
            luaL_addlstring(&b, src, (size_t)(next - src));
            src = next;
        }
        matcher_reset(&m);
        if ((e = run(&m, src, p)) && e != last) {
            n++;
            changed |= add_repl(&m, &b, src, e, type);
            src = last = e;
        } else if (src < m.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        spend(&m, (m.src_end - src) >> 3);
        luaL_addlstring(&b, src, (size_t)(m.src_end - src));
        luaL_pushresult(&b);
    }
    settle(&m);
    lua_pushinteger(L, n);
    return 2;
}

void eddy__tools_open_patterns(lua_State *L, int idx)
{
    static const luaL_Reg fns[] = {
        {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub}, {NULL, NULL}};
    idx = lua_absindex(L, idx);
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, idx, r->name);
    }
}
