/*
 * tests/fuzz/fuzz_json_dump.c - the JSON writer (core/json.c).
 *
 * Whatever jansson parses, eddy's writer must write (the depth limits
 * agree), under every flag set eddy uses, and parse -> dump -> parse must
 * give the same value: same types, integers equal, reals equal bit for bit
 * (-0.0 stays -0.0), strings byte for byte. Dumping the reparsed value must
 * give the same text again, and a value without reals must come out exactly
 * as json_dumps writes it. Any difference aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A and B the same value, reals bit for bit. Recursion is bounded by
 * jansson's parser depth. */
static int same(json_t *a, json_t *b)
{
    size_t i;
    const char *k;
    json_t *x;
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
        json_array_foreach(a, i, x)
        {
            if (!same(x, json_array_get(b, i)))
                return 0;
        }
        return 1;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach(a, k, x)
        {
            json_t *y =
                json_object_getn(b, k, json_object_iter_key_len(json_object_key_to_iter(k)));
            if (!y || !same(x, y))
                return 0;
        }
        return 1;
    default:
        return 1;
    }
}

static int has_real(json_t *v)
{
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_real(v))
        return 1;
    json_array_foreach(v, i, x)
    {
        if (has_real(x))
            return 1;
    }
    if (json_is_object(v)) {
        json_object_foreach(v, k, x)
        {
            if (has_real(x))
                return 1;
        }
    }
    return 0;
}

static void fail(const char *what, const char *text)
{
    fprintf(stderr, "fuzz_json_dump: %s\n%s\n", what, text ? text : "(null)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t flag_sets[] = {
        JSON_COMPACT | JSON_ENCODE_ANY,
        JSON_ENCODE_ANY,
        JSON_INDENT(2) | JSON_ENCODE_ANY,
        JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY,
        JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH | JSON_ENCODE_ANY,
    };
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    int reals;
    if (!v)
        return 0;
    reals = has_real(v);
    for (size_t f = 0; f < sizeof(flag_sets) / sizeof(flag_sets[0]); f++) {
        char *text = eddy_json_dumps_flags(v, flag_sets[f]), *again;
        json_t *back;
        if (!text)
            fail("a parsed value cannot be written", NULL);
        back = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!back || !same(v, back))
            fail("parse -> dump -> parse changed the value", text);
        again = eddy_json_dumps_flags(back, flag_sets[f]);
        if (!again || strcmp(text, again))
            fail("dumping the reparsed value gave other text", again);
        if (!reals) {
            char *j = json_dumps(v, flag_sets[f]);
            if (!j || strcmp(j, text))
                fail("differs from json_dumps", text);
            eddy_free(j); /* eddy_free is free(), whichever allocator jansson has */
        }
        eddy_free(again);
        eddy_free(text);
        json_decref(back);
    }
    json_decref(v);
    return 0;
}
