/*
 * core/json.c - JSON text from jansson values: eddy's own writer.
 *
 * Numbers: a real prints as the shortest decimal that strtod reads back as
 * the same double (71.1, where jansson's %.17g gave 71.099999999999994), laid
 * out as Python's repr does, always with a '.' or an exponent so it stays a
 * real. Integers print as integers. Everything else is byte for byte what
 * json_dumps writes for the same flags (separators, indentation, escapes:
 * \" \\ \b \f \n \r \t, other control characters as \u00XX, UTF-8 passed
 * through, '/' unescaped), so callers can switch without other changes.
 *
 * Invariants: the walk over arrays and objects is a loop over an explicit
 * stack (inline for shallow values, on the heap past that), never recursion,
 * so no value can overflow the C stack; a value nested deeper than
 * EDDY_JSON_MAX_DEPTH levels (which is also what a cycle looks like) is an
 * error, as it would be for jansson's parser. Every allocation goes
 * through the eddy_malloc family; a failed one ends the dump with
 * EDDY_ENOMEM and frees what the dump allocated. Nothing here keeps state.
 */
#include "eddy/json.h"
#include "eddy/buf.h"
#include "eddy/error.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -- numbers ---------------------------------------------------------------- */

/*
 * How the shortest digits are found. The definition: the digits of the
 * shortest of %.1e..%.17e that strtod reads back as x. Three ways to them,
 * cheapest first; each is exact, none guesses.
 *
 * 1. Short decimals (71.1, 0.25, 1013.2), 1e-5 <= x < 1e15: for k = 0, 1, ...
 *    fractional digits, M = round(x * 10^k) and test M / 10^k == x. With at
 *    most 15 significant digits, M < 2^53 and 10^k <= 10^22 are exact
 *    doubles, so the IEEE division is the correctly rounded value of the
 *    decimal M * 10^-k: exactly what strtod makes of it. And 10^-k is then
 *    wider than x's rounding interval (an ulp, 2^-52 x, against 10^-15 x),
 *    which so holds at most one k-digit decimal: the nearest, which %.Ne
 *    prints too. The first k that passes gives the shortest digits.
 * 2. Other normal doubles: %.20e once (21 digits, correctly rounded by
 *    glibc), rounded in decimal to 15, 16 and 17 digits. That gives what
 *    %.14e .. %.16e would, except when the dropped digits are exactly a half
 *    (then that printf is asked). A 15-digit result that reads back is the
 *    shortest: x is within half an ulp (2^-53 x) of the shortest decimal,
 *    less than half a unit of the 15th digit (5e-16 x), so rounding x to 15
 *    digits gives that decimal. Else 16 digits if they read back, else 17.
 *    Whether they read back is decided from the 21 digits and the ulp
 *    (see digits_long), with strtod only where the 21 digits cannot tell.
 * 3. Subnormals carry fewer bits and so fewer digits: %.Ne for N = 1, 2, ...
 *
 * Text made here for strtod is an integer mantissa and an exponent ("711e-1"),
 * so the locale's decimal point never matters; printf's output is parsed
 * whatever its decimal point is.
 */

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The doubles nearest 10^-1 .. 10^-5. Each lies a little above its power
 * (tests/unit/test_json.c checks it), so x >= neg_pow10[m-1] exactly when
 * x >= 10^-m, for any double x. */
static const double neg_pow10[] = {1e-1, 1e-2, 1e-3, 1e-4, 1e-5};

/* Way 1, for 1e-5 <= X < 1e15. Returns the digit count, or 0: X needs more
 * than 15 digits. */
static int digits_short(double x, char digits[18], int *decpt)
{
    int lead, kmax; /* lead: the point position of x, 10^(lead-1) <= x < 10^lead */
    if (x >= 1) {
        for (lead = 1; lead < 15 && x >= pow10_exact[lead]; lead++)
            ;
    } else {
        for (lead = 0; x < neg_pow10[-lead]; lead--)
            ;
    }
    kmax = 15 - lead; /* at most 15 significant digits */
    for (int k = 0; k <= kmax; k++) {
        double m = nearbyint(x * pow10_exact[k]);
        if (m >= 1 && m / pow10_exact[k] == x) {
            char tmp[20];
            uint64_t u = (uint64_t)m;
            int n = 0, o = 0;
            while (u % 10 == 0)
                u /= 10, k--; /* only when k == 0: x is 7100 */
            for (; u; u /= 10)
                tmp[n++] = (char)('0' + (int)(u % 10));
            *decpt = n - k;
            while (n)
                digits[o++] = tmp[--n];
            digits[o] = '\0';
            return o;
        }
    }
    return 0;
}

/* %.*e of X (positive) at PREC (<= 25) digits: writes PREC digits (trailing
 * zeros kept) and the point position. */
static void printf_digits(double x, int prec, char *digits, int *decpt)
{
    char tmp[48];
    const char *p = tmp;
    int k = 0, e = 0, neg;
    snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, x);
    digits[k++] = *p++;
    while (*p && *p != 'e' && (*p < '0' || *p > '9'))
        p++; /* the decimal point, one or more bytes */
    while (*p >= '0' && *p <= '9' && k < prec)
        digits[k++] = *p++;
    while (*p && *p != 'e')
        p++;
    if (*p == 'e')
        p++;
    neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    while (*p >= '0' && *p <= '9')
        e = e * 10 + (*p++ - '0');
    digits[k] = '\0';
    *decpt = (neg ? -e : e) + 1;
}

/* Strip trailing zeros (keeping one digit); returns the new count. */
static int trim(char *digits, int n)
{
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = '\0';
    return n;
}

/* Does the decimal 0.DIGITS[0..N) * 10^DECPT read back as X? */
static int reads_back(double x, const char *digits, int n, int decpt)
{
    char tmp[40];
    int o = n, e = decpt - n;
    memcpy(tmp, digits, (size_t)n);
    tmp[o++] = 'e';
    if (e < 0)
        tmp[o++] = '-', e = -e;
    if (e >= 100)
        tmp[o++] = (char)('0' + e / 100);
    if (e >= 10)
        tmp[o++] = (char)('0' + e / 10 % 10);
    tmp[o++] = (char)('0' + e % 10);
    tmp[o] = '\0';
    return strtod(tmp, NULL) == x;
}

/* SRC (LEN digits, point at DECPT_SRC) rounded to N < LEN digits into OUT,
 * half up as printf rounds x; 0 when the dropped digits are exactly a half
 * (5, 50, ...), where only x itself can tell which way. */
static int round_digits(const char *src, int len, int decpt_src, int n, char out[18], int *decpt)
{
    int up = src[n] > '5', half = src[n] == '5';
    for (int i = n + 1; half && i < len; i++)
        half = src[i] == '0';
    if (half)
        return 0;
    up |= src[n] == '5';
    memcpy(out, src, (size_t)n);
    *decpt = decpt_src;
    for (int i = n - 1; up && i >= 0; i--) {
        if (out[i] == '9') {
            out[i] = '0';
        } else {
            out[i]++;
            up = 0;
        }
    }
    if (up) { /* 99..9 became 100..0 */
        out[0] = '1';
        ++*decpt;
    }
    out[n] = '\0';
    return n;
}

enum { LONG_DIGITS = 21 };

/*
 * Does DL (x to LONG_DIGITS digits) rounded to N digits read back as x?
 * Written to OUT either way. In units of DL's last digit, that decimal lies
 * DELTA (an integer) from DL, and DL within 1/2 of x; it reads back when it
 * lies within x's rounding interval, H_LO below and H_HI above x. Returns 1
 * or 0, or -1 when DL cannot tell: a half to round, or an edge within reach
 * of the 1/2 (and of the 1e-10 error of H).
 */
static int rounded_reads_back(const char *dl, int decptl, int n, double h_lo, double h_hi,
                              char out[18], int *decpt)
{
    uint64_t tail = 0, unit = 1;
    double delta, h, margin = 0.5 + 1e-3;
    if (!round_digits(dl, LONG_DIGITS, decptl, n, out, decpt))
        return -1;
    for (int i = n; i < LONG_DIGITS; i++) {
        tail = tail * 10 + (uint64_t)(dl[i] - '0');
        unit *= 10;
    }
    delta = tail * 2 > unit ? (double)(unit - tail) : (double)tail;
    h = tail * 2 > unit ? h_hi : h_lo;
    if (delta + margin < h)
        return 1;
    if (delta - margin > h)
        return 0;
    return -1;
}

/*
 * Way 2, for normal X; SKIP15 when way 1 proved 15 digits are not enough.
 * One printf of 21 digits (DL) decides 15 and 16 digits without strtod but
 * where DL cannot tell (about one number in 10^4).
 * x = f 2^e with f in [0.5, 1): the rounding interval reaches half an ulp,
 * 2^(e-54), above x, and below it as well unless x is a power of two (then
 * a quarter). In units of DL's last digit, 10^(decpt-21), and with
 * x = 0.DL 10^decpt, that half ulp is (0.DL / f) 10^21 2^-54, 5.5e3 to
 * 1.1e5: no overflow, a relative error of a few 1e-16.
 */
static int digits_long(double x, int skip15, char digits[18], int *decpt)
{
    char dl[LONG_DIGITS + 1];
    int decptl, e2, n;
    uint64_t lead17 = 0;
    double f = frexp(x, &e2), h_hi, h_lo;
    printf_digits(x, LONG_DIGITS, dl, &decptl);
    for (int i = 0; i < 17; i++)
        lead17 = lead17 * 10 + (uint64_t)(dl[i] - '0');
    h_hi = (double)lead17 / 1e17 / f * (1e21 / 18014398509481984.0);
    h_lo = f == 0.5 && x > DBL_MIN ? h_hi / 2 : h_hi;
    for (n = skip15 ? 16 : 15; n <= 16; n++) {
        int r = rounded_reads_back(dl, decptl, n, h_lo, h_hi, digits, decpt);
        if (r < 0) {
            printf_digits(x, n, digits, decpt);
            r = reads_back(x, digits, n, *decpt);
        }
        if (r)
            return trim(digits, n);
    }
    if (!round_digits(dl, LONG_DIGITS, decptl, 17, digits, decpt))
        printf_digits(x, 17, digits, decpt);
    return trim(digits, 17);
}

int eddy_json_number_digits(double x, char digits[18], int *decpt)
{
    int n;
    x = fabs(x);
    if (x == 0 || !isfinite(x)) {
        memcpy(digits, "0", 2);
        *decpt = 1;
        return 1;
    }
    if (x >= DBL_MIN) {
        int in_range = x >= 1e-5 && x < 1e15;
        if (in_range && (n = digits_short(x, digits, decpt)))
            return n;
        return digits_long(x, in_range, digits, decpt);
    }
    for (n = 1; n < 17; n++) { /* way 3 */
        printf_digits(x, n, digits, decpt);
        if (reads_back(x, digits, n, *decpt))
            return trim(digits, n);
    }
    printf_digits(x, 17, digits, decpt);
    return trim(digits, 17);
}

size_t eddy_json_number_text(double x, char out[EDDY_JSON_NUMBER_MAX])
{
    char d[18];
    int decpt, n, o = 0;
    if (!isfinite(x)) {
        memcpy(out, "null", 5);
        return 4;
    }
    n = eddy_json_number_digits(x, d, &decpt);
    if (signbit(x))
        out[o++] = '-';
    if (decpt <= -4 || decpt > 16) { /* 7.1e-05, 1e+300 */
        int e = decpt - 1;
        out[o++] = d[0];
        if (n > 1) {
            out[o++] = '.';
            memcpy(out + o, d + 1, (size_t)n - 1);
            o += n - 1;
        }
        out[o++] = 'e';
        out[o++] = e < 0 ? '-' : '+';
        e = e < 0 ? -e : e;
        if (e >= 100)
            out[o++] = (char)('0' + e / 100);
        out[o++] = (char)('0' + e / 10 % 10);
        out[o++] = (char)('0' + e % 10);
    } else if (decpt <= 0) { /* 0.0711 */
        out[o++] = '0';
        out[o++] = '.';
        memset(out + o, '0', (size_t)-decpt);
        o += -decpt;
        memcpy(out + o, d, (size_t)n);
        o += n;
    } else if (decpt >= n) { /* 7100.0 */
        memcpy(out + o, d, (size_t)n);
        o += n;
        memset(out + o, '0', (size_t)(decpt - n));
        o += decpt - n;
        out[o++] = '.';
        out[o++] = '0';
    } else { /* 71.1 */
        memcpy(out + o, d, (size_t)decpt);
        o += decpt;
        out[o++] = '.';
        memcpy(out + o, d + decpt, (size_t)(n - decpt));
        o += n - decpt;
    }
    out[o] = '\0';
    return (size_t)o;
}

size_t eddy_json_integer_text(json_int_t v, char out[EDDY_JSON_NUMBER_MAX])
{
    char tmp[24];
    int k = 0, o = 0;
    /* the magnitude in unsigned arithmetic: -INT64_MIN does not fit */
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[k++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (v < 0)
        out[o++] = '-';
    while (k)
        out[o++] = tmp[--k];
    out[o] = '\0';
    return (size_t)o;
}

double eddy_json_float_value(float f)
{
    char tmp[32];
    if (f == 0 || !isfinite(f))
        return (double)f;
    /* As for doubles: FLT_DIG (6) digits are shortest when they read back,
     * for normal floats; subnormal ones search from one digit. */
    for (int prec = fabsf(f) >= FLT_MIN ? 6 : 1; prec <= 9; prec++) {
        int n = snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, (double)f);
        if (n > 0 && n < (int)sizeof(tmp) && strtof(tmp, NULL) == f) {
            double d = strtod(tmp, NULL);
            /* float -> decimal -> double -> float could round twice; keep
             * the exact value in that (theoretical) case */
            return (float)d == f ? d : (double)f;
        }
    }
    return (double)f;
}

/* -- output ----------------------------------------------------------------- */

typedef struct out {
    eddy_buf *b;
    size_t flags;
    int indent; /* spaces per level, 0: one line */
    int rc;
} out;

/* Make room for N more bytes (and the NUL eddy_buf keeps after them). */
static int room(out *w, size_t n)
{
    if (w->rc)
        return w->rc;
    if (w->b->cap - w->b->len > n)
        return 0;
    if (eddy_buf_reserve(w->b, n))
        w->rc = EDDY_ENOMEM;
    return w->rc;
}

static void put(out *w, const char *p, size_t n)
{
    if (room(w, n))
        return;
    memcpy(w->b->data + w->b->len, p, n);
    w->b->len += n;
}

static void putch(out *w, char c)
{
    if (room(w, 1))
        return;
    w->b->data[w->b->len++] = c;
}

/* What jansson's dump_indent writes: a newline and LEVEL indents, or with
 * SPACE a blank between items of a one-line, non-compact dump. */
static void indent(out *w, int level, int space)
{
    if (w->indent > 0) {
        size_t n = (size_t)w->indent * (size_t)level;
        if (room(w, n + 1))
            return;
        w->b->data[w->b->len++] = '\n';
        memset(w->b->data + w->b->len, ' ', n);
        w->b->len += n;
    } else if (space && !(w->flags & JSON_COMPACT)) {
        putch(w, ' ');
    }
}

/* Length of the valid UTF-8 sequence at S (at most N bytes) and its code
 * point; 0 when invalid (jansson's rules: no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, v = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, v = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, v = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10FFFF ||
        (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static void put_u(out *w, uint32_t u)
{
    static const char hex[] = "0123456789ABCDEF";
    char e[6] = {'\\',       'u', hex[(u >> 12) & 15], hex[(u >> 8) & 15], hex[(u >> 4) & 15],
                 hex[u & 15]};
    put(w, e, 6);
}

/* What a byte of a string needs: 2 nothing (printable ASCII but '"' and
 * '\\'), 1 nothing unless JSON_ESCAPE_SLASH ('/'), 0 the slow path (escapes,
 * and UTF-8 sequences to check). */
/* clang-format off */
static const unsigned char kPlain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

/* 1 when none of the 8 bytes at P needs anything: no byte below 0x20 or
 * above 0x7F, no '"', no '\\' (nor '/' with SLASH). Word-at-a-time tests
 * (a byte's borrow reaches its top bit only where the test holds, or past a
 * byte where it holds): an eighth of the byte loop's work on long text. */
static int plain8(const unsigned char *p, int slash)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t x, q, b, sl = 0;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    if (slash) {
        sl = x ^ (ones * '/');
        sl = (sl - ones) & ~sl;
    }
    return !((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | sl | x) & high);
}

/* Quoted, escaped string S of N bytes. Runs of bytes that need nothing are
 * copied in one piece. */
static void put_string(out *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    int ascii = (w->flags & JSON_ENSURE_ASCII) != 0;
    unsigned char plain = (w->flags & JSON_ESCAPE_SLASH) ? 2 : 1; /* kPlain at least this */
    size_t i = 0, run = 0;
    if (room(w, n + 2))
        return;
    while (i + 8 <= n && plain8(s + i, plain == 2))
        i += 8;
    while (i < n && kPlain[s[i]] >= plain)
        i++;
    if (i == n) { /* nothing to escape (keys, names, most values): one copy */
        char *d = w->b->data + w->b->len;
        d[0] = '"';
        if (n)
            memcpy(d + 1, str, n);
        d[n + 1] = '"';
        w->b->len += n + 2;
        return;
    }
    putch(w, '"');
    while (i < n) {
        while (i + 8 <= n && plain8(s + i, plain == 2))
            i += 8;
        while (i < n && kPlain[s[i]] >= plain)
            i++;
        if (i == n)
            break;
        unsigned char c = s[i];
        uint32_t cp = 0;
        size_t len = 1;
        if (c >= 0x80) {
            if (!(len = utf8_seq(s + i, n - i, &cp))) {
                if (!w->rc)
                    w->rc = EDDY_EINVAL;
                return;
            }
            if (!ascii) {
                i += len;
                continue;
            }
        }
        put(w, str + run, i - run);
        switch (c) {
        case '"':
            put(w, "\\\"", 2);
            break;
        case '\\':
            put(w, "\\\\", 2);
            break;
        case '/':
            put(w, "\\/", 2);
            break;
        case '\b':
            put(w, "\\b", 2);
            break;
        case '\f':
            put(w, "\\f", 2);
            break;
        case '\n':
            put(w, "\\n", 2);
            break;
        case '\r':
            put(w, "\\r", 2);
            break;
        case '\t':
            put(w, "\\t", 2);
            break;
        default:
            if (c < 0x80) {
                put_u(w, c);
            } else if (cp < 0x10000) {
                put_u(w, cp);
                i += len - 1;
            } else {
                cp -= 0x10000;
                put_u(w, 0xD800 | (cp >> 10));
                put_u(w, 0xDC00 | (cp & 0x3FF));
                i += len - 1;
            }
        }
        run = ++i;
    }
    put(w, str + run, n - run);
    putch(w, '"');
}

static void put_scalar(out *w, const json_t *v)
{
    char num[EDDY_JSON_NUMBER_MAX];
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_string(w, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        put(w, num, eddy_json_integer_text(json_integer_value(v), num));
        break;
    case JSON_REAL:
        put(w, num, eddy_json_number_text(json_real_value(v), num));
        break;
    case JSON_TRUE:
        put(w, "true", 4);
        break;
    case JSON_FALSE:
        put(w, "false", 5);
        break;
    default:
        put(w, "null", 4);
        break;
    }
}

/* -- the walk ---------------------------------------------------------------- */

typedef struct member {
    const char *key;
    size_t len;
    json_t *value;
} member;

/* One open array or object: the next item to write is number I of N. */
typedef struct frame {
    json_t *v;
    size_t i, n;
    void *iter;   /* object, in insertion order: the member to write next */
    member *keys; /* object with JSON_SORT_KEYS: its members, sorted */
} frame;

enum { INLINE_FRAMES = 32 };

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int sort_members(frame *f)
{
    void *it = json_object_iter(f->v);
    size_t k = 0;
    f->keys = eddy_malloc(f->n * sizeof(member));
    if (!f->keys)
        return EDDY_ENOMEM;
    for (; it && k < f->n; it = json_object_iter_next(f->v, it), k++) {
        f->keys[k].key = json_object_iter_key(it);
        f->keys[k].len = json_object_iter_key_len(it);
        f->keys[k].value = json_object_iter_value(it);
    }
    f->n = k;
    qsort(f->keys, k, sizeof(member), member_cmp);
    return 0;
}

/* Write the key of the next member of object frame F and return its value;
 * for an array frame, just the next item. Advances F. */
static json_t *next_item(out *w, frame *f)
{
    const char *key;
    size_t len;
    json_t *v;
    if (json_is_array(f->v))
        return json_array_get(f->v, f->i++);
    if (f->keys) {
        key = f->keys[f->i].key;
        len = f->keys[f->i].len;
        v = f->keys[f->i].value;
    } else {
        key = json_object_iter_key(f->iter);
        len = json_object_iter_key_len(f->iter);
        v = json_object_iter_value(f->iter);
        f->iter = json_object_iter_next(f->v, f->iter);
    }
    f->i++;
    put_string(w, key, len);
    if (w->flags & JSON_COMPACT)
        putch(w, ':');
    else
        put(w, ": ", 2);
    return v;
}

/* Grow the frame stack to hold one more; frames past INLINE_FRAMES live on
 * the heap. */
static int push_room(frame **stack, frame *inline_frames, size_t depth, size_t *cap)
{
    frame *p;
    size_t ncap;
    if (depth < *cap)
        return 0;
    if (depth >= EDDY_JSON_MAX_DEPTH)
        return EDDY_ERANGE;
    ncap = *cap * 2 > EDDY_JSON_MAX_DEPTH ? EDDY_JSON_MAX_DEPTH : *cap * 2;
    if (*stack == inline_frames) {
        p = eddy_malloc(ncap * sizeof(frame));
        if (p)
            memcpy(p, inline_frames, depth * sizeof(frame));
    } else {
        p = eddy_realloc(*stack, ncap * sizeof(frame));
    }
    if (!p)
        return EDDY_ENOMEM;
    *stack = p;
    *cap = ncap;
    return 0;
}

static int walk(out *w, json_t *v)
{
    frame inline_frames[INLINE_FRAMES], *stack = inline_frames, *f;
    size_t depth = 0, cap = INLINE_FRAMES;
    int rc = 0;
    for (;;) {
        /* write V: a scalar whole, a container its opening (and first key) */
        if (depth >= EDDY_JSON_MAX_DEPTH) {
            rc = EDDY_ERANGE;
            goto out;
        }
        if (json_is_array(v) || json_is_object(v)) {
            int is_obj = json_is_object(v);
            size_t n = is_obj ? json_object_size(v) : json_array_size(v);
            putch(w, is_obj ? '{' : '[');
            if (n == 0) {
                putch(w, is_obj ? '}' : ']');
            } else {
                if ((rc = push_room(&stack, inline_frames, depth, &cap)))
                    goto out;
                f = &stack[depth++];
                memset(f, 0, sizeof(*f));
                f->v = v;
                f->n = n;
                if (is_obj && (w->flags & JSON_SORT_KEYS) && (rc = sort_members(f))) {
                    depth--;
                    goto out;
                }
                if (is_obj && !f->keys)
                    f->iter = json_object_iter(v);
                indent(w, (int)depth, 0);
                v = next_item(w, f);
                if (w->rc)
                    break;
                continue;
            }
        } else {
            put_scalar(w, v);
        }
        if (w->rc)
            break;
        /* V is done: close the containers it finished, go on with the next item */
        while (depth > 0) {
            f = &stack[depth - 1];
            if (f->i < f->n && (f->keys || !json_is_object(f->v) || f->iter))
                break;
            indent(w, (int)depth - 1, 0);
            putch(w, json_is_object(f->v) ? '}' : ']');
            eddy_free(f->keys);
            depth--;
        }
        if (depth == 0 || w->rc)
            break;
        putch(w, ',');
        indent(w, (int)depth, 1);
        v = next_item(w, &stack[depth - 1]);
        if (w->rc)
            break;
    }
out:
    while (depth > 0)
        eddy_free(stack[--depth].keys);
    if (stack != inline_frames)
        eddy_free(stack);
    return rc ? rc : w->rc;
}

const char *eddy_json_type_name(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

int eddy_json_put_string(eddy_buf *b, const char *s, size_t n)
{
    out w = {b, JSON_COMPACT, 0, 0};
    size_t start = b->len;
    put_string(&w, s, n);
    if (!w.rc && b->oom)
        w.rc = EDDY_ENOMEM;
    if (!w.rc)
        b->data[b->len] = '\0'; /* room() kept a byte for it */
    if (w.rc && w.rc != EDDY_ENOMEM) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
    }
    return w.rc;
}

int eddy_json_dump_buf(eddy_buf *b, const json_t *v, size_t flags)
{
    out w = {b, flags, (int)(flags & JSON_MAX_INDENT), 0};
    size_t start = b->len;
    int rc;
    if (b->oom)
        return EDDY_ENOMEM;
    if (!v || (flags & JSON_EMBED) ||
        (!(flags & JSON_ENCODE_ANY) && !json_is_array(v) && !json_is_object(v)))
        return EDDY_EINVAL;
    rc = walk(&w, (json_t *)v);
    if (rc == EDDY_ENOMEM) {
        b->oom = 1;
        return rc;
    }
    if (rc)
        b->len = start; /* as it was */
    if (b->data)
        b->data[b->len] = '\0';
    return rc;
}

char *eddy_json_dumps_flags(const json_t *v, size_t flags)
{
    eddy_buf b;
    eddy_buf_init(&b);
    if (eddy_json_dump_buf(&b, v, flags)) {
        eddy_buf_free(&b);
        return NULL;
    }
    return eddy_buf_take(&b);
}

char *eddy_json_dumps(const json_t *v)
{
    if (!v)
        return eddy_strdup("null");
    return eddy_json_dumps_flags(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

int eddy_json_dumpf(const json_t *v, FILE *f, size_t flags)
{
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    rc = eddy_json_dump_buf(&b, v, flags);
    if (!rc && b.len && fwrite(b.data, 1, b.len, f) != b.len)
        rc = EDDY_EIO;
    eddy_buf_free(&b);
    return rc;
}
