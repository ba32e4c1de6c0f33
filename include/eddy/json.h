/*
 * include/eddy/json.h - JSON text from jansson values, and small helpers over
 * jansson shared by every module.
 *
 * Every place eddy turns a value into text (prompts, request bodies, tool
 * results, memory, traces, sinks) goes through the writer here, not through
 * json_dumps: jansson prints reals with %.17g, so 71.1 became
 * 71.099999999999994. The writer prints the shortest decimal that reads back
 * as the same double, keeps a real a real (1.0, never 1) and -0.0 as -0.0, and
 * otherwise writes exactly what json_dumps would for the same flags.
 */
#ifndef EDDY_JSON_H
#define EDDY_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

struct eddy_buf;

/* How deep values may nest, the outermost being level 1 and every value
 * counted, scalars too: jansson's parser limit (2048), so whatever eddy
 * writes jansson reads back. A cycle (an array that contains itself) is
 * reported as this depth being passed. */
#define EDDY_JSON_MAX_DEPTH JSON_PARSER_MAX_DEPTH

/* Room for the text of any number with its NUL ("-2.2250738585072014e-308"). */
#define EDDY_JSON_NUMBER_MAX 32

/*
 * The shortest decimal text of X that strtod reads back as X: the digits of
 * the shortest of %.1g..%.17g that round-trips, laid out as Python's repr
 * (and json.dumps) does: plain for 1e-4 <= |x| < 1e16, else with an exponent
 * of at least two digits ("1e+300", "1e-05", "5e-324"). The text always has a
 * '.' or an 'e', so a JSON reader reads it back as a real: 1.0, -0.0, 71.1.
 * NaN and the infinities, which JSON cannot carry, give "null". Writes OUT
 * (NUL-terminated) and returns the length. Pure; any thread.
 */
size_t eddy_json_number_text(double x, char out[EDDY_JSON_NUMBER_MAX]);

/* Decimal text of the integer V ("-9223372036854775808"); returns the length. */
size_t eddy_json_integer_text(json_int_t v, char out[EDDY_JSON_NUMBER_MAX]);

/*
 * The shortest decimal digits of finite X as above, without sign: writes
 * DIGITS ("711", no trailing zeros, "0" for zero; NUL-terminated) and *DECPT,
 * the place of the decimal point (|x| = 0.711 * 10^2 -> 2). Returns the number
 * of digits (1..17). For code that lays numbers out itself (DECIMAL columns).
 */
int eddy_json_number_digits(double x, char digits[18], int *decpt);

/* The double whose shortest text is the shortest text of the float F (71.1f
 * gives 71.1, not 71.09999847412109), so FLOAT values print as written; it
 * converts back to F exactly. */
double eddy_json_float_value(float f);

/*
 * Append the JSON text of V to B. FLAGS are jansson's: JSON_COMPACT,
 * JSON_INDENT(n), JSON_SORT_KEYS, JSON_ENSURE_ASCII, JSON_ESCAPE_SLASH,
 * JSON_ENCODE_ANY (without it V must be an array or object);
 * JSON_PRESERVE_ORDER is the default anyway and JSON_REAL_PRECISION is
 * ignored (numbers always round-trip). Strings must be valid UTF-8 (they pass
 * through; control characters become \uXXXX, '/' stays as it is).
 * Returns 0; EDDY_ENOMEM (B's sticky oom is set); EDDY_EINVAL for a NULL V,
 * invalid UTF-8, a scalar without JSON_ENCODE_ANY or JSON_EMBED; EDDY_ERANGE
 * for nesting deeper than EDDY_JSON_MAX_DEPTH. On an error other than
 * EDDY_ENOMEM, B is as it was. Never recurses; any thread (V must not change
 * meanwhile).
 */
int eddy_json_dump_buf(struct eddy_buf *b, const json_t *v, size_t flags);

/*
 * json_loadb and json_loads, faster: the same value for every text jansson
 * accepts with FLAGS, and for everything else (an error, a flag other than
 * JSON_DECODE_ANY, JSON_REJECT_DUPLICATES, JSON_ALLOW_NUL) what jansson
 * returns, with its error in *ERROR. A new value (the caller's) or NULL.
 * Any thread. See core/json_parse.c.
 */
json_t *eddy_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);
json_t *eddy_json_loads(const char *text, size_t flags, json_error_t *error);

/* The JSON Schema type name of V: "object", "array", "string", "integer",
 * "number" (a real), "boolean" or "null" (also for NULL). Static string. */
const char *eddy_json_type_name(const json_t *v);

/* Append the N bytes at S to B as one quoted, escaped JSON string (as
 * eddy_json_dump_buf writes strings, compact). S must be valid UTF-8.
 * Returns 0, EDDY_ENOMEM, or EDDY_EINVAL for invalid UTF-8 (B as it was).
 * For writing JSON text without building a jansson tree first. */
int eddy_json_put_string(struct eddy_buf *b, const char *s, size_t n);

/* The JSON text of V as eddy_json_dump_buf writes it, as a new string (free
 * with eddy_free); NULL on any failure, as json_dumps. */
char *eddy_json_dumps_flags(const json_t *v, size_t flags);

/* Compact JSON text of any value (JSON_COMPACT | JSON_ENCODE_ANY; NULL-safe:
 * "null"); caller frees with eddy_free. NULL on failure. */
char *eddy_json_dumps(const json_t *v);

/* Write the JSON text of V to F (built in memory first: nothing is written
 * when it fails). Returns 0, an error of eddy_json_dump_buf, or EDDY_EIO. */
int eddy_json_dumpf(const json_t *v, FILE *f, size_t flags);

/* Value at dotted PATH ("customer.id") in ROOT; borrowed, NULL when absent. */
json_t *eddy_json_path(json_t *root, const char *path);

/* Value as a key string: strings as they are, integers and reals printed
 * (reals as eddy_json_number_text: 71.1), true/false; NULL for null, objects
 * and arrays. Caller frees. */
char *eddy_json_key_string(json_t *v);

/* String member NAME of object O, or DEF. Borrowed. */
const char *eddy_json_str(json_t *o, const char *name, const char *def);
/* Integer member NAME of object O (integers only), or DEF. */
long long eddy_json_int(json_t *o, const char *name, long long def);
/* Whether two optional values are the same: both NULL, or equal. */
int eddy_json_same(const json_t *a, const json_t *b);

#endif
