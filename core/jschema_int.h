/*
 * core/jschema_int.h - what the files of the JSON Schema validator share:
 * jschema.c (checking, validating, the API), jschema_text.c (bounded text
 * for messages: quoted values and JSON pointers) and jschema_value.c (value
 * semantics: exact number comparison, decimal multipleOf, equality, hashes,
 * type names). No other module includes this.
 */
#ifndef EDDY_JSCHEMA_INT_H
#define EDDY_JSCHEMA_INT_H

#include "eddy/jschema.h"

#include <stdint.h>

enum {
    JSCHEMA_QUOTE_MAX = 60, /* bytes of a value quoted in a message */
    JSCHEMA_QUOTE_BUF = JSCHEMA_QUOTE_MAX + 8,
    JSCHEMA_SEG_MAX = 60,   /* bytes of one pointer segment, its '/' included */
    JSCHEMA_PTR_HEAD = 120, /* a longer pointer keeps this much of its start */
    JSCHEMA_PTR_TAIL = 240, /* ... and of its end, with "/..." between */
    JSCHEMA_PTR_BUF = JSCHEMA_PTR_HEAD + JSCHEMA_PTR_TAIL + 16,
};

/* One step of a JSON pointer: KEY (LEN bytes, borrowed), or an array index
 * when KEY is NULL. */
typedef struct eddy__jschema_seg {
    const char *key;
    size_t len;
    size_t index;
} eddy__jschema_seg;

/* Type bits, in the order of the names eddy__jschema_type_bit knows. */
enum {
    JSCHEMA_T_STRING = 1,
    JSCHEMA_T_NUMBER = 2,
    JSCHEMA_T_INTEGER = 4,
    JSCHEMA_T_BOOLEAN = 8,
    JSCHEMA_T_OBJECT = 16,
    JSCHEMA_T_ARRAY = 32,
    JSCHEMA_T_NULL = 64,
};

/* -- jschema_text.c -- */

/* V as compact JSON text of at most about JSCHEMA_QUOTE_MAX bytes (cut
 * between characters and escapes, then "..."), containers past 8 levels as
 * "[...]"; returns BUF. Reads only what fits, so a huge V costs little. */
const char *eddy__jschema_quote(const json_t *v, char buf[JSCHEMA_QUOTE_BUF]);
/* The N bytes at S as a name in single quotes, bounded the same way. */
const char *eddy__jschema_quote_name(const char *s, size_t n, char buf[JSCHEMA_QUOTE_BUF]);
/* The JSON pointer of the N segments PATH ("/" when N is 0): RFC 6901
 * escapes, each segment cut to JSCHEMA_SEG_MAX bytes, the middle left out
 * as "/..." past JSCHEMA_PTR_HEAD + JSCHEMA_PTR_TAIL bytes. */
void eddy__jschema_pointer(const eddy__jschema_seg *path, int n, char buf[JSCHEMA_PTR_BUF]);
/* "object", "array", "string", "integer" (a JSON integer), "number" (a
 * real), "boolean", "null"; and the article that goes before it ("an",
 * "a", "" for null). */
const char *eddy__jschema_type_article(const json_t *v);

/* -- jschema_value.c -- */

/* Numbers A and B compared by value, exactly: -1, 0 or 1. */
int eddy__jschema_cmp(const json_t *a, const json_t *b);
/* Is the finite D a whole number? */
int eddy__jschema_integral(double d);
/* A count (minLength and the like): a non-negative integer, or a real with
 * no fraction. Returns 0 with *N set, or -1. */
int eddy__jschema_count(const json_t *v, long long *n);
/* Is V a whole multiple of BY (> 0), both taken as their shortest decimals? */
int eddy__jschema_multiple(const json_t *v, const json_t *by);
/* JSON Schema equality: numbers by value, objects in any member order.
 * DEPTH is the level of A and B (1 at the top); past the depth cap values
 * count as different, so callers compare only values within it. */
int eddy__jschema_equal(const json_t *a, const json_t *b, int depth);
/* A hash of V under SEED, alike for equal values. Returns 0, or -1 when V
 * nests deeper than EDDY_JSCHEMA_MAX_DEPTH levels. */
int eddy__jschema_hash(const json_t *v, uint64_t seed, int depth, uint64_t *hash);
/* Does V nest deeper than LIMIT levels, V itself being the first? */
int eddy__jschema_too_deep(const json_t *v, int limit);
/* The JSCHEMA_T_* bit of the type named by the string T, or 0. */
unsigned eddy__jschema_type_bit(const json_t *t);
/* The bits of a checked "type" value (a name or an array of names). */
unsigned eddy__jschema_type_mask(const json_t *type);
/* Is V of one of the types in MASK ("integer" takes reals with no
 * fraction, "number" takes integers)? */
int eddy__jschema_type_matches(unsigned mask, const json_t *v);

#endif
