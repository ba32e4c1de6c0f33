/*
 * tests/unit/test_json.c - the JSON writer (core/json.c).
 *
 * Numbers: the shortest text that reads back, checked against the
 * definition (the shortest of %.1g..%.17g that strtod reads back) over random
 * bit patterns and random decimal strings, and through jansson and back.
 * Everything else: byte for byte what json_dumps writes, over random values
 * and every flag we support; escapes, UTF-8, nesting limits, cycles, and
 * every allocation failing in turn.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/error.h"
#include "eddy/fluss.h"
#include "eddy/json.h"
#include "../../core/json_parse_int.h"

/* -- a seeded PRNG, so failures repeat ---------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static int same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* -- the definition, done the slow way ------------------------------------- */

/* The shortest of %.1e..%.17e that reads back as X: its significant digits
 * (no trailing zeros) and decimal point position, as the writer reports them. */
static int reference_digits(double x, char digits[40], int *decpt)
{
    char tmp[64], *p;
    x = fabs(x);
    if (x == 0) {
        strcpy(digits, "0");
        *decpt = 1;
        return 1;
    }
    for (int prec = 1; prec <= 17; prec++) {
        int k = 0;
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) != x)
            continue;
        for (p = tmp; *p != 'e'; p++)
            if (*p >= '0' && *p <= '9')
                digits[k++] = *p;
        while (k > 1 && digits[k - 1] == '0')
            k--;
        digits[k] = '\0';
        *decpt = (int)strtol(p + 1, NULL, 10) + 1;
        return k;
    }
    fail_msg("no precision reads %a back", x);
    return 0;
}

/* Everything the writer promises about the text of X. */
static void check_number(double x)
{
    char text[EDDY_JSON_NUMBER_MAX], d[18], rd[40], *end;
    int decpt, rdecpt, n, rn;
    size_t len = eddy_json_number_text(x, text);
    assert_int_equal(len, strlen(text));
    assert_true(len < EDDY_JSON_NUMBER_MAX);
    /* reads back exactly, sign of zero included, and as a real */
    if (!same_double(strtod(text, &end), x) || *end)
        fail_msg("%a printed as %s reads back as %a", x, text, strtod(text, NULL));
    assert_true(strchr(text, '.') || strchr(text, 'e'));
    /* the digits are those of the shortest %.Ne that reads back */
    n = eddy_json_number_digits(x, d, &decpt);
    rn = reference_digits(x, rd, &rdecpt);
    if (n != rn || strcmp(d, rd) || decpt != rdecpt)
        fail_msg("%a: digits %s@%d, shortest is %s@%d (text %s)", x, d, decpt, rd, rdecpt, text);
    /* plain within [1e-4, 1e16), an exponent outside, as Python's repr */
    assert_true((strchr(text, 'e') != NULL) == (x != 0 && (decpt <= -4 || decpt > 16)));
}

/* text -> jansson -> text gives the same text and the same double */
static void check_through_jansson(double x)
{
    json_t *v = json_real(x), *back;
    char *a = eddy_json_dumps(v), *b;
    json_error_t je;
    assert_non_null(a);
    back = json_loads(a, JSON_DECODE_ANY, &je);
    if (!back)
        fail_msg("jansson cannot read %s: %s", a, je.text);
    assert_true(json_is_real(back));
    assert_true(same_double(json_real_value(back), x));
    b = eddy_json_dumps(back);
    assert_string_equal(a, b);
    eddy_free(a);
    eddy_free(b);
    json_decref(v);
    json_decref(back);
}

static void test_number_known(void **state)
{
    /* expected texts are Python's repr() of the same doubles */
    static const struct {
        double x;
        const char *text;
    } cases[] = {
        {71.1, "71.1"},
        {-71.1, "-71.1"},
        {0.1, "0.1"},
        {0.3, "0.3"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 3, "0.3333333333333333"},
        {1e23, "1e+23"},
        {9.999999999999999e22, "1e+23"}, /* the same double as 1e23 */
        {9.999999999999997e22, "9.999999999999997e+22"},
        {5e-324, "5e-324"},
        {1.5e-323, "1.5e-323"},
        {1.0, "1.0"},
        {100.0, "100.0"},
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1e300, "1e+300"},
        {1e16, "1e+16"},
        {1e15, "1000000000000000.0"},
        {1234567890123456.0, "1234567890123456.0"},
        {12345678901234567.0, "1.2345678901234568e+16"},
        {9007199254740992.0, "9007199254740992.0"},
        {0.0001, "0.0001"},
        {0.000123, "0.000123"},
        {0.00001, "1e-05"},
        {1e-7, "1e-07"},
        {1.5e-7, "1.5e-07"},
        {123456789012345680.0, "1.2345678901234568e+17"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {-DBL_MAX, "-1.7976931348623157e+308"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {9223372036854775808.0, "9.223372036854776e+18"},
        {1e21, "1e+21"},
        {1.5, "1.5"},
        {2.5e-5, "2.5e-05"},
    };
    char text[EDDY_JSON_NUMBER_MAX];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        eddy_json_number_text(cases[i].x, text);
        assert_string_equal(text, cases[i].text);
        check_number(cases[i].x);
        check_through_jansson(cases[i].x);
    }
    eddy_json_number_text(NAN, text);
    assert_string_equal(text, "null");
    eddy_json_number_text(-INFINITY, text);
    assert_string_equal(text, "null");
}

/* The writer's fast path relies on the doubles 1e-1 .. 1e-5 lying above the
 * powers of ten they stand for: their exact expansion (glibc prints it) is
 * 1.000...0 followed by more nonzero digits. */
static void test_negative_powers_lie_above(void **state)
{
    static const double p[] = {1e-1, 1e-2, 1e-3, 1e-4, 1e-5};
    char text[128];
    (void)state;
    for (int m = 0; m < 5; m++) {
        char *e;
        snprintf(text, sizeof(text), "%.80e", p[m]);
        e = strchr(text, 'e');
        assert_non_null(e);
        assert_int_equal(strtol(e + 1, NULL, 10), -(m + 1));
        assert_true(text[0] == '1' && text[1] == '.');
        assert_true(strspn(text + 2, "0") < (size_t)(e - text - 2)); /* some digit is not 0 */
    }
}

/* Random bit patterns: all exponents alike, so subnormals, huge and tiny
 * numbers come up as often as ordinary ones; plus the edges of each class. */
static void test_number_random_bits(void **state)
{
    static const uint64_t edges[] = {
        0x0000000000000001ull, /* smallest subnormal */
        0x000FFFFFFFFFFFFFull, /* largest subnormal */
        0x0010000000000000ull, /* DBL_MIN */
        0x7FEFFFFFFFFFFFFFull, /* DBL_MAX */
        0x8000000000000000ull, /* -0.0 */
        0x3FF0000000000001ull, /* 1 + ulp */
        0x3FEFFFFFFFFFFFFFull, /* 1 - ulp/2 */
        0x4340000000000000ull, /* 2^53 */
        0x4340000000000001ull, /* 2^53 + 2 */
        0x433FFFFFFFFFFFFFull, /* 2^53 - 1 */
        0x44B52D02C7E14AF6ull, /* 1e23 */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        check_number(bits_double(edges[i]));
        check_through_jansson(bits_double(edges[i]));
        check_number(-bits_double(edges[i]));
    }
    for (int i = 0; i < 12000; i++) {
        double x = bits_double(rnd());
        if (!isfinite(x))
            continue;
        check_number(x);
        if (i % 8 == 0)
            check_through_jansson(x);
    }
    /* subnormals, and doubles near powers of ten and two */
    for (int i = 0; i < 1500; i++) {
        check_number(bits_double(rnd() >> 12));
        check_number(ldexp(1.0, (int)(rnd() % 2098) - 1074));
        check_number(nextafter(pow(10, (double)(rnd() % 600) - 300), (rnd() & 1) ? 0 : INFINITY));
    }
}

/* Random decimal strings as people and programs write them: a decimal of at
 * most 15 significant digits prints with exactly its own digits. */
static void test_number_random_decimals(void **state)
{
    static const char *written[] = {"71.1",    "0.1",    "1e23",  "5e-324", "1e300",     "-0.0",
                                    "2.675",   "1.005",  "0.285", "36.6",   "98.6",      "19.99",
                                    "3.14159", "1e-300", "4.35",  "0.07",   "1234.5678", "-40.0"};
    char in[64], text[EDDY_JSON_NUMBER_MAX];
    (void)state;
    for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++) {
        double x = strtod(written[i], NULL);
        check_number(x);
        check_through_jansson(x);
        eddy_json_number_text(x, text);
        assert_true(same_double(strtod(text, NULL), x));
    }
    for (int i = 0; i < 10000; i++) {
        int nd = 1 + (int)(rnd() % 17), e = (int)(rnd() % 616) - 308, k = 0, n, decpt;
        char digits[20], d[18];
        double x;
        digits[k++] = (char)('1' + rnd() % 9);
        while (k < nd)
            digits[k++] = (char)('0' + rnd() % 10);
        while (k > 1 && digits[k - 1] == '0')
            k--;
        digits[k] = '\0';
        snprintf(in, sizeof(in), "%s0.%se%d", (rnd() & 1) ? "-" : "", digits, e);
        x = strtod(in, NULL);
        if (!isfinite(x) || x == 0)
            continue;
        check_number(x);
        n = eddy_json_number_digits(x, d, &decpt);
        if (k <= 15 && fabs(x) >= DBL_MIN) {
            assert_true(n <= k);
            if (strcmp(d, digits) || decpt != e)
                fail_msg("%s printed with digits %s@%d", in, d, decpt);
        }
        if (i % 8 == 0)
            check_through_jansson(x);
    }
}

static void test_float_value(void **state)
{
    char text[EDDY_JSON_NUMBER_MAX];
    (void)state;
    eddy_json_number_text(eddy_json_float_value(71.1f), text);
    assert_string_equal(text, "71.1");
    eddy_json_number_text(eddy_json_float_value(0.1f), text);
    assert_string_equal(text, "0.1");
    eddy_json_number_text(eddy_json_float_value(-0.0f), text);
    assert_string_equal(text, "-0.0");
    eddy_json_number_text(eddy_json_float_value(FLT_MAX), text);
    assert_string_equal(text, "3.4028235e+38");
    eddy_json_number_text(eddy_json_float_value(1e-45f), text); /* smallest subnormal */
    assert_string_equal(text, "1e-45");
    for (int i = 0; i < 20000; i++) {
        uint32_t u = (uint32_t)rnd();
        float f;
        double d;
        char dg[18];
        int decpt;
        memcpy(&f, &u, sizeof(f));
        if (!isfinite(f))
            continue;
        d = eddy_json_float_value(f);
        if ((float)d != f || !signbit(d) != !signbit(f))
            fail_msg("float %a became %a", (double)f, d);
        assert_true(eddy_json_number_digits(d, dg, &decpt) <= 9);
    }
}

/* -- integers -------------------------------------------------------------- */

static void test_integers(void **state)
{
    static const json_int_t cases[] = {0,
                                       1,
                                       -1,
                                       9,
                                       10,
                                       -10,
                                       9007199254740993ll,
                                       -9007199254740993ll,
                                       INT64_MAX,
                                       INT64_MIN,
                                       INT64_MAX - 1,
                                       INT64_MIN + 1,
                                       1000000000000000000ll};
    char text[EDDY_JSON_NUMBER_MAX], want[32], *s;
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_integer(cases[i]), *back;
        snprintf(want, sizeof(want), "%" JSON_INTEGER_FORMAT, cases[i]);
        eddy_json_integer_text(cases[i], text);
        assert_string_equal(text, want);
        s = eddy_json_dumps(v);
        assert_string_equal(s, want);
        back = json_loads(s, JSON_DECODE_ANY, NULL);
        assert_true(json_is_integer(back) && json_integer_value(back) == cases[i]);
        eddy_free(s);
        json_decref(back);
        json_decref(v);
    }
}

/* -- the rest must equal json_dumps ---------------------------------------- */

static const size_t g_flag_sets[] = {
    0,
    JSON_COMPACT,
    JSON_COMPACT | JSON_SORT_KEYS,
    JSON_INDENT(2),
    JSON_INDENT(2) | JSON_SORT_KEYS,
    JSON_INDENT(4) | JSON_COMPACT,
    JSON_INDENT(31),
    JSON_ENSURE_ASCII,
    JSON_COMPACT | JSON_ENSURE_ASCII | JSON_SORT_KEYS,
    JSON_ESCAPE_SLASH | JSON_INDENT(1),
    JSON_PRESERVE_ORDER | JSON_COMPACT,
};

static void assert_like_jansson(const json_t *v, size_t flags)
{
    char *want = json_dumps(v, flags), *got = eddy_json_dumps_flags(v, flags);
    if (!want || !got || strcmp(want, got))
        fail_msg("flags 0x%zx:\n jansson %s\n eddy    %s", flags, want ? want : "(null)",
                 got ? got : "(null)");
    free(want); /* jansson's allocator is malloc in this binary */
    eddy_free(got);
}

/* A random valid UTF-8 string of up to 12 code points: ASCII, escapes,
 * two-, three- and four-byte sequences, NUL. */
static json_t *random_string(void)
{
    char s[64];
    size_t n = 0, cps = rnd() % 13;
    for (size_t i = 0; i < cps; i++) {
        switch (rnd() % 6) {
        case 0:
            s[n++] = (char)(rnd() % 0x20); /* control, NUL too */
            break;
        case 1: {
            static const char special[] = "\"\\/\x7f";
            s[n++] = special[rnd() % 4];
            break;
        }
        case 2:
            s[n++] = (char)0xC3, s[n++] = (char)0xA9; /* é */
            break;
        case 3:
            s[n++] = (char)0xE2, s[n++] = (char)0x82, s[n++] = (char)0xAC; /* € */
            break;
        case 4:
            s[n++] = (char)0xF0, s[n++] = (char)0x9F, s[n++] = (char)0x98,
            s[n++] = (char)0x80; /* 😀 */
            break;
        default:
            s[n++] = (char)('a' + rnd() % 26);
        }
    }
    return json_stringn(s, n);
}

/* A random value without reals (jansson prints those differently, on purpose). */
static json_t *random_value(int depth)
{
    switch (rnd() % (depth > 5 ? 6 : 8)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd() & 1);
    case 2:
        return json_integer((json_int_t)rnd() >> (rnd() % 64));
    case 3:
    case 4:
    case 5:
        return random_string();
    case 6: {
        json_t *a = json_array();
        for (size_t i = 0, n = rnd() % 5; i < n; i++)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (size_t i = 0, n = rnd() % 5; i < n; i++) {
            json_t *k = random_string();
            json_object_setn_new(o, json_string_value(k), json_string_length(k),
                                 random_value(depth + 1));
            json_decref(k);
        }
        return o;
    }
    }
}

static void test_like_jansson(void **state)
{
    (void)state;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(0);
        for (size_t f = 0; f < sizeof(g_flag_sets) / sizeof(g_flag_sets[0]); f++)
            assert_like_jansson(v, g_flag_sets[f] | JSON_ENCODE_ANY);
        if (json_is_array(v) || json_is_object(v))
            assert_like_jansson(v, JSON_COMPACT);
        else
            assert_null(eddy_json_dumps_flags(v, JSON_COMPACT)); /* scalar needs ENCODE_ANY */
        json_decref(v);
    }
}

/* The fast parser against jansson's: whatever it takes, jansson takes too,
 * with an equal value in the same key order; and it takes what eddy writes. */
static int g_fast_taken;

static void parse_like_jansson(const char *t, size_t n, size_t flags)
{
    json_t *fast = eddy__json_parse_fast(t, n, flags), *ref = json_loadb(t, n, flags, NULL);
    if (fast) {
        g_fast_taken++;
        if (!ref || !json_equal(fast, ref))
            fail_msg("fast parse took what jansson %s: %.*s", ref ? "reads otherwise" : "refuses",
                     (int)n, t);
        char *a = eddy_json_dumps_flags(fast, JSON_ENCODE_ANY | JSON_COMPACT);
        char *b = eddy_json_dumps_flags(ref, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!a || !b || strcmp(a, b))
            fail_msg("key order differs: %s / %s", a ? a : "?", b ? b : "?");
        eddy_free(a);
        eddy_free(b);
    }
    json_t *via = eddy_json_loadb(t, n, flags, NULL); /* with the fallback: jansson's answer */
    assert_true((via == NULL) == (ref == NULL));
    if (via)
        assert_true(json_equal(via, ref));
    json_decref(via);
    json_decref(fast);
    json_decref(ref);
}

static void test_parse_like_jansson(void **state)
{
    static const char *const texts[] = {
        "{}",
        "[]",
        " [1, -0, 0.5, -1.5e3, 1E+2, 2e-400, 9223372036854775807]",
        "[-9223372036854775808]",
        "[9223372036854775808]",
        "[-9223372036854775809]",
        "[1e400]",
        "[01]",
        "[1.]",
        "[.5]",
        "[-]",
        "[1e]",
        "[+1]",
        "[0x10]",
        "[NaN]",
        "[Infinity]",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\"}",
        "{\"a\":}",
        "{,}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\" 1}",
        "{1:2}",
        "[\"\\u0000\"]",
        "{\"\\u0000\":1}",
        "[\"\\ud83d\\ude00\"]",
        "[\"\\ud83d\"]",
        "[\"\\ude00\"]",
        "[\"\\ud83dx\"]",
        "[\"\\ud83d\\u0041\"]",
        "[\"\\u00e9\\u20AC\"]",
        "[\"\\x\"]",
        "[\"a\tb\"]",
        "[\"\xc3\xa9\"]",
        "[\"\xc3\"]",
        "[\"\xc0\xaf\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xf4\x90\x80\x80\"]",
        "[\"\xf0\x9f\x98\x80\"]",
        "[\"\xe0\x80\xaf\"]",
        "[\"\xff\"]",
        "[true, false, null]",
        "[tru]",
        "[nul]",
        "[True]",
        "\xef\xbb\xbf[]",
        "[] x",
        "[]  \n\t\r ",
        "",
        " ",
        "\"top\"",
        "1",
        "null",
        "[\"unterminated",
        "{\"k\":\"v\"",
        "[[[[[[[[[[]]]]]]]]]]",
        "[\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"]",
        "{\"\\u00e9\":{\"\\n\":[]}}",
    };
    static const size_t flags[] = {0, JSON_DECODE_ANY, JSON_ALLOW_NUL | JSON_DECODE_ANY,
                                   JSON_REJECT_DUPLICATES};
    (void)state;
    srand(7);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++)
            parse_like_jansson(texts[i], strlen(texts[i]), flags[f]);
    /* a NUL byte inside the text, and deep nesting at jansson's limit and past it */
    parse_like_jansson("[\"a\0b\"]", 7, 0);
    parse_like_jansson("[1]\0", 4, 0);
    for (int depth = JSON_PARSER_MAX_DEPTH - 1; depth <= JSON_PARSER_MAX_DEPTH + 1; depth++) {
        char *d = malloc((size_t)depth * 2);
        memset(d, '[', (size_t)depth);
        memset(d + depth, ']', (size_t)depth);
        parse_like_jansson(d, (size_t)depth * 2, 0);
        free(d);
    }
    /* what eddy writes: taken by the fast path, then mutated a byte at a time */
    static const char mut[] = "\"\\{}[],:0123456789.eE+-tfnu \x80\xc3\xed\xf4\x00";
    int taken_before = g_fast_taken, written = 0;
    for (int i = 0; i < 2000; i++) {
        json_t *v = random_value(0);
        size_t dump_flags = (i % 3 == 0) ? JSON_INDENT(2) : (i % 3 == 1) ? JSON_ENSURE_ASCII : 0;
        char *t = eddy_json_dumps_flags(v, dump_flags | JSON_ENCODE_ANY);
        json_decref(v);
        if (!t)
            continue;
        size_t n = strlen(t);
        int before = g_fast_taken;
        parse_like_jansson(t, n, JSON_DECODE_ANY | JSON_ALLOW_NUL);
        json_t *ref = json_loadb(t, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (ref && g_fast_taken != before + 1)
            fail_msg("the fast path refused what jansson reads: %s", t);
        written += ref != NULL;
        json_decref(ref);
        for (int m = 0; m < 8 && n; m++) {
            char *u = malloc(n + 1);
            memcpy(u, t, n + 1);
            size_t at = (size_t)rand() % n, un = n;
            switch (rand() % 3) {
            case 0:
                u[at] = mut[(size_t)rand() % (sizeof(mut) - 1)];
                break;
            case 1:
                memmove(u + at, u + at + 1, n - at);
                un--;
                break;
            default:
                un = at;
            }
            parse_like_jansson(u, un, JSON_DECODE_ANY);
            parse_like_jansson(u, un, JSON_REJECT_DUPLICATES);
            free(u);
        }
        free(t);
    }
    assert_true(written > 1500);
    assert_true(g_fast_taken - taken_before >= written);
}

/* Every byte that needs escaping (and a UTF-8 sequence), at every offset of
 * a string longer than the writer's 8-byte scan: the same text as jansson's. */
static void test_string_scan_offsets(void **state)
{
    static const char *const specials[] = {
        "\x01", "\x1f", "\"", "\\", "/", "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\n"};
    static const size_t flags[] = {JSON_COMPACT, JSON_COMPACT | JSON_ESCAPE_SLASH,
                                   JSON_COMPACT | JSON_ENSURE_ASCII};
    (void)state;
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++)
        for (size_t at = 0; at < 26; at++) {
            char text[64];
            size_t sl = strlen(specials[k]);
            memset(text, 'a', sizeof(text));
            memcpy(text + at, specials[k], sl);
            json_t *v = json_pack("[s#]", text, (int)(at + sl + (at % 9)));
            assert_non_null(v);
            for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
                char *a = eddy_json_dumps_flags(v, flags[f]), *b = json_dumps(v, flags[f]);
                assert_non_null(a);
                assert_non_null(b);
                assert_string_equal(a, b);
                eddy_free(a);
                free(b);
            }
            json_decref(v);
        }
}

/* -- texts from a JSON-ish grammar, for the fast parser ---------------------- */

typedef struct gtext {
    char d[4096];
    size_t n;
} gtext;

static unsigned pick(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static void gput(gtext *g, const char *s, size_t n)
{
    for (size_t i = 0; i < n && g->n < sizeof(g->d); i++)
        g->d[g->n++] = s[i];
}

static void gputs(gtext *g, const char *s)
{
    gput(g, s, strlen(s));
}

static void gputc(gtext *g, int c)
{
    char ch = (char)c;
    gput(g, &ch, 1);
}

/* Whitespace, mostly none, sometimes a byte jansson does not skip. */
static void gws(gtext *g)
{
    static const char w[] = " \t\n\r\v\f";
    for (int n = pick(6) ? 0 : (int)pick(3); n > 0; n--)
        gputc(g, w[pick(pick(8) ? 4 : 6)]);
}

static void gnumber(gtext *g)
{
    static const char *const edge[] = {
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "-0",
        "-0.0",
        "0e0",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "4.9e-324",
        "2.4703282292062328e-324",
        "2.2250738585072011e-308",
        "1e-400",
        "1e400",
        "-1e400",
        "00",
        "-",
        "1.",
        "1e",
        "1e+",
        "+1",
        ".1",
        "-01",
        "1E-0",
        "123456789012345678901234567890123456789012345678901234567890123456789e-50"};
    if (!pick(3)) {
        gputs(g, edge[pick(sizeof(edge) / sizeof(edge[0]))]);
        return;
    }
    if (!pick(4))
        gputc(g, '-');
    if (!pick(4))
        gputc(g, '0');
    else
        for (int n = 1 + (int)pick(pick(3) ? 4 : 25); n > 0; n--)
            gputc(g, (n == 1 ? '1' + (int)pick(9) : '0' + (int)pick(10)));
    if (!pick(3))
        for (int n = 1 + (int)pick(pick(3) ? 3 : 30), i = 0; i <= n; i++)
            gputc(g, i ? '0' + (int)pick(10) : '.');
    if (!pick(3)) {
        gputc(g, pick(2) ? 'e' : 'E');
        if (pick(3))
            gputc(g, pick(2) ? '+' : '-');
        for (int n = 1 + (int)pick(4); n > 0; n--)
            gputc(g, '0' + (int)pick(10));
    }
}

static void ghex(gtext *g, unsigned v)
{
    char h[8];
    snprintf(h, sizeof(h), pick(2) ? "%04x" : "%04X", v & 0xFFFF);
    gputs(g, h);
}

static void gstring(gtext *g)
{
    static const char *const utf8[] = {
        "\xc3\xa9",         "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf",     "\xee\x80\x80",
        "\xf4\x8f\xbf\xbf", "\xc2\x80",     "\xe0\xa0\x80",     "\xf0\x90\x80\x80", "\xc0\xaf",
        "\xe0\x80\xaf",     "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80", "\xc3",
        "\xe2\x82"};
    static const char esc[] = "\"\\/bfnrtu0xa";
    gputc(g, '"');
    for (int n = (int)pick(pick(4) ? 6 : 40); n > 0; n--) {
        switch (pick(10)) {
        case 0: {
            char c = esc[pick(sizeof(esc) - 1)];
            gputc(g, '\\');
            gputc(g, c);
            if (c != 'u')
                break;
            unsigned k = pick(5);
            ghex(g, k == 0   ? pick(0x80)
                    : k == 1 ? 0xD800 + pick(0x400)
                    : k == 2 ? 0xDC00 + pick(0x400)
                    : k == 3 ? 0
                             : (unsigned)rnd());
            if (k == 1 && pick(4)) {
                gputs(g, "\\u");
                ghex(g, pick(3) ? 0xDC00 + pick(0x400) : (unsigned)rnd());
            }
            break;
        }
        case 1:
            gputc(g, 0x80 + (int)pick(0x80));
            break;
        case 2:
            gputs(g, utf8[pick(sizeof(utf8) / sizeof(utf8[0]))]);
            break;
        case 3:
            gputc(g, (int)pick(0x20));
            break;
        case 4:
            gputc(g, 0x7F);
            break;
        default: {
            int c = 0x20 + (int)pick(0x5F);
            gputc(g, c == '"' || c == '\\' ? 'a' : c);
        }
        }
    }
    gputc(g, '"');
}

static void gvalue(gtext *g, int depth)
{
    static const char *const words[] = {"true", "false", "null", "tru", "nulll", "True"};
    gws(g);
    switch (depth > 6 ? pick(4) : pick(7)) {
    case 0:
        gnumber(g);
        break;
    case 1:
    case 2:
        gstring(g);
        break;
    case 3:
        gputs(g, words[pick(pick(8) ? 3 : 6)]);
        break;
    case 4:
    case 5:
        gputc(g, '[');
        for (int i = 0, n = (int)pick(5); i < n; i++) {
            if (i)
                gputc(g, ',');
            gvalue(g, depth + 1);
        }
        gws(g);
        gputc(g, ']');
        break;
    default:
        gputc(g, '{');
        for (int i = 0, n = (int)pick(5); i < n; i++) {
            if (i)
                gputc(g, ',');
            gws(g);
            if (pick(4)) { /* few distinct keys: duplicates */
                char k[4] = {'"', (char)('a' + pick(3)), '"', 0};
                gputs(g, k);
            } else {
                gstring(g);
            }
            gws(g);
            gputc(g, ':');
            gvalue(g, depth + 1);
        }
        gws(g);
        gputc(g, '}');
    }
    gws(g);
}

/* Texts from the grammar above, a third of them mutated (a byte replaced,
 * dropped, or the text cut): whatever the fast path takes, jansson takes
 * with the same value. 60,000 texts under five flag sets, about a second;
 * a standalone run of 1.5 million found no difference. */
static void test_parse_grammar_stress(void **state)
{
    static const char mut[] = "\"\\{}[],:0123456789.eE+-tfnu \x80\xc3\xed\xf4\t\n";
    static const size_t flags[] = {0, JSON_DECODE_ANY, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                   JSON_REJECT_DUPLICATES,
                                   JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL};
    static gtext g;
    int taken = 0;
    (void)state;
    g_rng = 0x5DEECE66Dull;
    for (int i = 0; i < 60000; i++) {
        g.n = 0;
        gvalue(&g, 0);
        for (int m = pick(3) ? 0 : 1 + (int)pick(3); m > 0 && g.n; m--) {
            size_t at = (size_t)(rnd() % g.n);
            switch (pick(4)) {
            case 0:
                g.d[at] = mut[pick(sizeof(mut))]; /* the terminating NUL too */
                break;
            case 1:
                memmove(g.d + at, g.d + at + 1, g.n - at - 1);
                g.n--;
                break;
            case 2:
                g.n = at;
                break;
            default:
                g.d[at] = (char)rnd();
            }
        }
        for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
            int before = g_fast_taken;
            parse_like_jansson(g.d, g.n, flags[f]);
            taken += g_fast_taken - before;
        }
    }
    assert_true(taken > 60000);
}

/* A real under a locale whose decimal point is not '.': jansson swaps the
 * point before strtod and reads 1.5; strtod alone stops at the '.'. Skipped
 * where no such locale is installed. */
static void test_parse_reals_any_locale(void **state)
{
    static const char *const locales[] = {"de_DE.UTF-8", "de_DE.utf8",  "fr_FR.UTF-8",
                                          "fr_FR.utf8",  "ru_RU.UTF-8", "nl_NL.UTF-8"};
    const char *t = "[1.5, -0.25, 2.5e3, 7]";
    const char *found = NULL;
    (void)state;
    for (size_t i = 0; i < sizeof(locales) / sizeof(locales[0]) && !found; i++)
        if (setlocale(LC_NUMERIC, locales[i]) && strcmp(localeconv()->decimal_point, "."))
            found = locales[i];
    if (!found) { /* none installed: compile one (glibc reads LOCPATH at each setlocale) */
        char dir[] = "/tmp/eddy-locale-XXXXXX", cmd[256];
        assert_non_null(mkdtemp(dir));
        snprintf(cmd, sizeof(cmd), "localedef -i de_DE -f UTF-8 %s/de_DE.UTF-8 2>/dev/null", dir);
        if (system(cmd) != 0)
            fail_msg("no locale with a decimal comma, and localedef could not make one "
                     "(install Debian's 'locales' package: apt-get install -y locales)");
        setenv("LOCPATH", dir, 1);
        if (setlocale(LC_NUMERIC, "de_DE.UTF-8") && strcmp(localeconv()->decimal_point, "."))
            found = "de_DE.UTF-8 (compiled)";
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (!found || system(cmd) != 0)
            fail_msg("a compiled de_DE.UTF-8 locale did not load from %s", dir);
    }
    json_t *v = eddy_json_loadb(t, strlen(t), 0, NULL), *ref = json_loadb(t, strlen(t), 0, NULL);
    setlocale(LC_NUMERIC, "C");
    assert_non_null(v);
    assert_non_null(ref);
    assert_true(json_real_value(json_array_get(ref, 0)) == 1.5);
    char *a = eddy_json_dumps_flags(v, JSON_COMPACT), *b = eddy_json_dumps_flags(ref, JSON_COMPACT);
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_decref(v);
    json_decref(ref);
}

/* What *ERROR says after a text is read: what json_loadb leaves there (no
 * line or column, the source "<buffer>", the bytes read). */
static void test_parse_error_on_success(void **state)
{
    static const char *const texts[] = {"[1, 2]  ", "{}", " {\"a\":[true]}\n"};
    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_error_t e, r;
        memset(&e, 0x55, sizeof(e));
        memset(&r, 0x55, sizeof(r));
        json_t *v = eddy_json_loadb(texts[i], strlen(texts[i]), 0, &e);
        json_t *ref = json_loadb(texts[i], strlen(texts[i]), 0, &r);
        assert_non_null(v);
        assert_non_null(ref);
        assert_int_equal(e.line, r.line);
        assert_int_equal(e.column, r.column);
        assert_int_equal(e.position, r.position);
        assert_string_equal(e.source, r.source);
        assert_string_equal(e.text, r.text);
        json_decref(v);
        json_decref(ref);
    }
}

/* Reals inside values: the structure as jansson writes it, the numbers
 * shortest, and parse -> dump -> parse gives an equal value. */
static void test_reals_in_values(void **state)
{
    json_t *v = json_pack("{s:f, s:[f, f, I], s:{s:f}}", "temp", 71.1, "list", 1.0, -0.0,
                          (json_int_t)9007199254740993ll, "o", "big", 1e300);
    char *s;
    json_t *back;
    (void)state;
    s = eddy_json_dumps(v);
    assert_string_equal(
        s, "{\"temp\":71.1,\"list\":[1.0,-0.0,9007199254740993],\"o\":{\"big\":1e+300}}");
    back = json_loads(s, 0, NULL);
    assert_true(json_equal(v, back));
    eddy_free(s);
    s = eddy_json_dumps_flags(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    assert_string_equal(s, "{\n  \"list\": [\n    1.0,\n    -0.0,\n    9007199254740993\n  ],\n"
                           "  \"o\": {\n    \"big\": 1e+300\n  },\n  \"temp\": 71.1\n}");
    eddy_free(s);
    json_decref(back);
    json_decref(v);
}

/* -- strings --------------------------------------------------------------- */

static void test_string_escapes(void **state)
{
    char raw[0x20], *s;
    json_t *v;
    (void)state;
    for (int c = 0; c < 0x20; c++)
        raw[c] = (char)c;
    v = json_stringn(raw, sizeof(raw));
    s = eddy_json_dumps(v);
    assert_string_equal(s,
                        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n"
                        "\\u000B\\f\\r\\u000E\\u000F\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015"
                        "\\u0016\\u0017\\u0018\\u0019\\u001A\\u001B\\u001C\\u001D\\u001E\\u001F\"");
    eddy_free(s);
    json_decref(v);

    v = json_string("a\"b\\c/d\x7f"
                    "é€😀");
    s = eddy_json_dumps(v);
    assert_string_equal(s, "\"a\\\"b\\\\c/d\x7f"
                           "é€😀\"");
    eddy_free(s);
    s = eddy_json_dumps_flags(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH);
    assert_string_equal(s, "\"a\\\"b\\\\c\\/d\x7f\\u00E9\\u20AC\\uD83D\\uDE00\"");
    eddy_free(s);
    json_decref(v);
}

static void test_invalid_utf8(void **state)
{
    static const char *bad[] = {
        "\x80",             /* lone continuation byte */
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\xAF",     /* overlong '/' */
        "\xED\xA0\x80",     /* surrogate half */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xF5\x80\x80\x80", /* never a lead byte */
        "\xFF",
        "ok\xE2\x82", /* cut short */
        "\xC3(",      /* not a continuation */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_string_nocheck(bad[i]), *o = json_object(), *a = json_array();
        eddy_buf b;
        json_object_set_new_nocheck(o, bad[i], json_integer(1));
        json_array_append(a, s);
        assert_null(eddy_json_dumps(s));
        assert_null(eddy_json_dumps(o)); /* in a key */
        assert_null(eddy_json_dumps_flags(a, JSON_INDENT(2) | JSON_ENSURE_ASCII));
        assert_null(json_dumps(s, JSON_ENCODE_ANY)); /* jansson agrees */
        /* the buffer is left as it was */
        eddy_buf_init(&b);
        eddy_buf_puts(&b, "keep");
        assert_int_equal(eddy_json_dump_buf(&b, a, 0), EDDY_EINVAL);
        assert_string_equal(b.data, "keep");
        assert_int_equal(b.len, 4);
        eddy_buf_free(&b);
        json_decref(s);
        json_decref(o);
        json_decref(a);
    }
}

/* -- nesting, cycles, bad arguments ----------------------------------------- */

/* DEPTH arrays (every other one an object with OBJECTS) around 7, or
 * around nothing (the innermost array empty) without LEAF. */
static json_t *nest(int depth, int objects, int leaf)
{
    json_t *v = leaf ? json_integer(7) : json_array();
    for (int i = leaf ? 0 : 1; i < depth; i++) {
        json_t *c = objects && (i & 1) ? json_object() : json_array();
        if (json_is_object(c))
            json_object_set_new(c, "k", v);
        else
            json_array_append_new(c, v);
        v = c;
    }
    return v;
}

static void test_nesting(void **state)
{
    eddy_buf b;
    (void)state;
    for (int objects = 0; objects <= 1; objects++) {
        /* 2048 levels, counting the 7 or the empty innermost array, are
         * what jansson's parser reads; one more it refuses, and so do we */
        for (int leaf = 0; leaf <= 1; leaf++) {
            json_t *ok = nest(EDDY_JSON_MAX_DEPTH - leaf, objects, leaf);
            json_t *deep = nest(EDDY_JSON_MAX_DEPTH + 1 - leaf, objects, leaf);
            char *s = eddy_json_dumps(ok), *text;
            json_t *back;
            assert_non_null(s);
            back = json_loads(s, 0, NULL);
            assert_non_null(back);
            assert_true(json_equal(ok, back));
            json_decref(back);
            eddy_free(s);
            assert_like_jansson(ok, JSON_INDENT(1) | JSON_SORT_KEYS);
            assert_null(eddy_json_dumps(deep));
            eddy_buf_init(&b);
            assert_int_equal(eddy_json_dump_buf(&b, deep, JSON_SORT_KEYS), EDDY_ERANGE);
            eddy_buf_free(&b);
            if ((text = json_dumps(deep, JSON_COMPACT))) /* jansson 2.14 writes it... */
                assert_null(json_loads(text, 0, NULL));  /* ...but cannot read it */
            free(text);
            json_decref(ok);
            json_decref(deep);
        }
    }
    {
        /* deeper than the limit by far: refused without walking it (jansson's
         * own json_decref recurses, so the test cannot go much deeper) */
        json_t *v = nest(10000, 0, 1);
        assert_null(eddy_json_dumps(v));
        json_decref(v);
    }
}

static void test_cycle_and_arguments(void **state)
{
    json_t *a = json_array(), *o = json_object();
    eddy_buf b;
    char *s;
    (void)state;
    json_array_append(a, o);
    json_object_set(o, "back", a); /* a -> o -> a: jansson allows building it */
    assert_null(eddy_json_dumps(a));
    eddy_buf_init(&b);
    assert_int_equal(eddy_json_dump_buf(&b, a, 0), EDDY_ERANGE);
    json_object_clear(o);
    json_decref(o);
    json_decref(a);

    assert_int_equal(eddy_json_dump_buf(&b, NULL, JSON_ENCODE_ANY), EDDY_EINVAL);
    assert_int_equal(eddy_json_dump_buf(&b, json_true(), 0), EDDY_EINVAL);
    a = json_array();
    assert_int_equal(eddy_json_dump_buf(&b, a, JSON_EMBED), EDDY_EINVAL);
    assert_int_equal(eddy_json_dump_buf(&b, a, 0), 0);
    assert_int_equal(eddy_json_dump_buf(&b, json_null(), JSON_ENCODE_ANY), 0);
    assert_string_equal(b.data, "[]null"); /* appends */
    eddy_buf_free(&b);
    json_decref(a);
    assert_null(eddy_json_dumps_flags(NULL, JSON_ENCODE_ANY));
    s = eddy_json_dumps(NULL); /* eddy_json_dumps's own contract */
    assert_string_equal(s, "null");
    eddy_free(s);
}

static void test_dumpf(void **state)
{
    json_t *v = json_pack("{s:f, s:s}", "temp", 71.1, "s", "x"), *bad;
    FILE *f = tmpfile();
    char line[128];
    (void)state;
    assert_non_null(f);
    assert_int_equal(eddy_json_dumpf(v, f, JSON_COMPACT), 0);
    bad = json_string_nocheck("\xFF");
    assert_int_equal(eddy_json_dumpf(bad, f, JSON_ENCODE_ANY), EDDY_EINVAL); /* writes nothing */
    rewind(f);
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "{\"temp\":71.1,\"s\":\"x\"}");
    fclose(f);
    json_decref(bad);
    json_decref(v);
}

/* -- numbers at their users ---------------------------------------------------
 * Fluss rows (fluss/rowjson.c; here because these are number-text checks):
 * FLOAT values print as written, and a real for a DECIMAL column is the
 * number as written, rounded half up at the scale. */

static void test_fluss_numbers(void **state)
{
    static eddy_fluss_column cols[] = {{"f", EDDY_FLUSS_FLOAT, 1, 0, 0},
                                       {"d", EDDY_FLUSS_DOUBLE, 1, 0, 0},
                                       {"dec", EDDY_FLUSS_DECIMAL, 1, 10, 2},
                                       {"big", EDDY_FLUSS_DECIMAL, 1, 38, 5},
                                       {"int", EDDY_FLUSS_DECIMAL, 1, 5, 0}};
    static const eddy_fluss_schema schema = {5, cols, 0, NULL, 0, NULL};
    static const struct {
        double x;
        const char *dec, *big;
    } cases[] = {
        {71.1, "71.10", "71.10000"},
        {2.675, "2.68", "2.67500"}, /* the double is 2.67499999999999982236431605997... */
        {1.005, "1.01", "1.00500"},
        {0.285, "0.29", "0.28500"},
        {-2.675, "-2.68", "-2.67500"},
        {0.125, "0.13", "0.12500"},
        {0.006, "0.01", "0.00600"},
        {0.004, "0.00", "0.00400"},
        {0.0004, "0.00", "0.00040"},
        {9.996, "10.00", "9.99600"},
        {0.199, "0.20", "0.19900"},
        {9999999.995, "10000000.00", "9999999.99500"},
        {99999999.995, NULL, "99999999.99500"}, /* rounds to 9 integer digits: too many */
        {1e-300, "0.00", "0.00000"},
        {1e20, NULL, "100000000000000000000.00000"},
        {-0.0, "0.00", "0.00000"},
    };
    eddy_fluss_value vals[5];
    eddy_fluss_arena arena = {0};
    eddy_err e;
    char *s;
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *in = json_pack("{s:f, s:f, s:f, s:f, s:f}", "f", 71.1, "d", 71.1, "dec", cases[i].x,
                               "big", cases[i].x, "int", 2.5),
               *out;
        int rc = eddy_fluss_row_from_json(&schema, in, 1, vals, &arena, &e);
        if (!cases[i].dec) {
            assert_int_equal(rc, EDDY_ESCHEMA);
            assert_non_null(strstr(e.msg, "does not fit DECIMAL(10,2)"));
            json_object_set_new(in, "dec", json_null());
            rc = eddy_fluss_row_from_json(&schema, in, 1, vals, &arena, &e);
        }
        if (rc)
            fail_msg("%g: %s", cases[i].x, e.msg);
        out = eddy_fluss_row_to_json(&schema, vals, NULL, 0);
        assert_non_null(out);
        if (cases[i].dec)
            assert_string_equal(json_string_value(json_object_get(out, "dec")), cases[i].dec);
        assert_string_equal(json_string_value(json_object_get(out, "big")), cases[i].big);
        assert_string_equal(json_string_value(json_object_get(out, "int")), "3");
        s = eddy_json_dumps_flags(json_object_get(out, "f"), JSON_ENCODE_ANY);
        assert_string_equal(s, "71.1"); /* 71.1f, not 71.09999847412109 */
        eddy_free(s);
        s = eddy_json_dumps_flags(json_object_get(out, "d"), JSON_ENCODE_ANY);
        assert_string_equal(s, "71.1");
        eddy_free(s);
        json_decref(in);
        json_decref(out);
    }
    eddy_fluss_arena_free(&arena);
}

/* -- allocation failures ----------------------------------------------------- */

/* Fail allocation n of a dump for n = 0, 1, 2, ...: each gives NULL (or
 * EDDY_ENOMEM with the buffer's oom set) and frees what it allocated
 * (leaks are checked under ASan and valgrind), until one succeeds. */
static void test_alloc_failures(void **state)
{
    json_t *v = json_pack("{s:o, s:[s, f, f], s:o}", "deep", nest(100, 1, 1), "list", "some text",
                          71.1, 1e300, "more", nest(40, 0, 0));
    char *want = eddy_json_dumps_flags(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    int done = 0;
    (void)state;
    assert_non_null(want);
    for (long n = 0; n < 10000 && !done; n++) {
        char *s;
        eddy_buf b;
        int rc;
        eddy_alloc_fail_after(n);
        s = eddy_json_dumps_flags(v, JSON_INDENT(2) | JSON_SORT_KEYS);
        eddy_alloc_fail_after(-1);
        if (s) {
            assert_string_equal(s, want);
            assert_true(n > 3); /* the stack, sorted keys and the buffer all allocate */
            done = 1;
        }
        eddy_free(s);
        eddy_buf_init(&b);
        eddy_alloc_fail_after(n);
        rc = eddy_json_dump_buf(&b, v, JSON_SORT_KEYS);
        eddy_alloc_fail_after(-1);
        if (rc) {
            assert_int_equal(rc, EDDY_ENOMEM);
            assert_true(b.oom);
            assert_null(eddy_buf_take(&b));
        }
        eddy_buf_free(&b);
    }
    assert_true(done);
    eddy_free(want);
    json_decref(v);
}

/* Out of memory at each allocation of a parse: NULL or the whole value,
 * never a part of it, and nothing leaked (ASan's leak check): escaped keys
 * (copied), duplicates (the old value freed), a number longer than the
 * stack's text, strings that grow the escape buffer. */
static void test_parse_alloc_failures(void **state)
{
    static const char t[] =
        "{\"a\\n\":[1,2.5,\"x\\u00e9\\ud83d\\ude00\"],\"a\\n\":{\"k\":[true,null,"
        "123456789012345678901234567890123456789012345678901234567890123456789.5e-3]},"
        "\"long\\t\":\"0123456789abcdef0123456789abcdef0123456789abcdef\\\"\","
        "\"plain\":{\"deep\":[[[{\"z\":\"end\"}]]]}}";
    json_t *ref = json_loadb(t, sizeof(t) - 1, 0, NULL);
    int done = 0;
    (void)state;
    assert_non_null(ref);
    json_set_alloc_funcs(eddy_malloc, eddy_free); /* jansson's nodes fail too */
    for (long n = 0; n < 10000 && !done; n++) {
        for (int fast = 0; fast < 2; fast++) {
            eddy_alloc_fail_after(n);
            json_t *v = fast ? eddy__json_parse_fast(t, sizeof(t) - 1, 0)
                             : eddy_json_loadb(t, sizeof(t) - 1, 0, NULL);
            eddy_alloc_fail_after(-1);
            if (v) {
                assert_true(json_equal(v, ref));
                done |= fast;
            }
            json_decref(v);
        }
    }
    json_set_alloc_funcs(malloc, free);
    assert_true(done);
    json_decref(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_known),
        cmocka_unit_test(test_negative_powers_lie_above),
        cmocka_unit_test(test_number_random_bits),
        cmocka_unit_test(test_number_random_decimals),
        cmocka_unit_test(test_float_value),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_like_jansson),
        cmocka_unit_test(test_parse_like_jansson),
        cmocka_unit_test(test_parse_grammar_stress),
        cmocka_unit_test(test_parse_reals_any_locale),
        cmocka_unit_test(test_parse_error_on_success),
        cmocka_unit_test(test_reals_in_values),
        cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_string_scan_offsets),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_cycle_and_arguments),
        cmocka_unit_test(test_dumpf),
        cmocka_unit_test(test_fluss_numbers),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_parse_alloc_failures),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
