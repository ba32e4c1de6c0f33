/*
 * tests/fuzz/fuzz_json_parse.c - the fast JSON parser (core/json_parse.c).
 *
 * Under every flag set eddy parses with: whatever the fast path takes,
 * jansson must take too, with the same value (same types, integers equal,
 * reals bit for bit, strings byte for byte) in the same key order; and
 * eddy_json_loadb must answer exactly as jansson does (a value or NULL).
 * Any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/json_parse_int.h"
#include "eddy/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A and B the same value in the same order, reals bit for bit. */
static int same(json_t *a, json_t *b)
{
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_REAL: {
        double p = json_real_value(a), q = json_real_value(b);
        return memcmp(&p, &q, sizeof(p)) == 0;
    }
    case JSON_INTEGER:
        return json_integer_value(a) == json_integer_value(b);
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    case JSON_OBJECT: {
        void *i = json_object_iter(a), *j = json_object_iter(b);
        for (; i && j; i = json_object_iter_next(a, i), j = json_object_iter_next(b, j)) {
            size_t n = json_object_iter_key_len(i);
            if (n != json_object_iter_key_len(j) ||
                memcmp(json_object_iter_key(i), json_object_iter_key(j), n) ||
                !same(json_object_iter_value(i), json_object_iter_value(j)))
                return 0;
        }
        return !i && !j;
    }
    default:
        return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t flags[] = {0, JSON_DECODE_ANY, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                   JSON_REJECT_DUPLICATES};
    const char *t = (const char *)data;
    for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
        json_t *fast = eddy__json_parse_fast(t, size, flags[f]);
        json_t *ref = json_loadb(t, size, flags[f], NULL);
        json_t *via = eddy_json_loadb(t, size, flags[f], NULL);
        if ((fast && (!ref || !same(fast, ref))) || (!via != !ref) || (via && !same(via, ref)))
            abort();
        json_decref(fast);
        json_decref(ref);
        json_decref(via);
    }
    return 0;
}
