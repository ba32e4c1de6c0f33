/*
 * tests/unit/test_jschema.c - the JSON Schema validator (core/jschema.c).
 *
 * Every keyword passing and failing with its exact message; JSON pointers
 * (RFC 6901 escapes, long pointers shortened); quoted values cut at UTF-8
 * boundaries; lengths in code points; integer against number; the schemas
 * eddy_jschema_check refuses, with their messages; hostile input (nesting
 * caps, cycles, huge arrays, bad patterns in unchecked schemas); and every
 * allocation failing in turn.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/error.h"
#include "eddy/jschema.h"
#include "eddy/json.h"

/* -- helpers ------------------------------------------------------------------- */

static json_t *J(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v)
        fail_msg("bad JSON in test: %s: %s", text, je.text);
    return v;
}

/* Validate VALUE against SCHEMA (both JSON text): valid when WANT is NULL,
 * else EDDY_ESCHEMA with exactly the message WANT. */
static void expect_at(const char *schema, const char *value, const char *want, int line)
{
    json_t *s = J(schema), *v = J(value);
    eddy_err e;
    int rc;
    eddy_err_clear(&e);
    rc = eddy_jschema_validate(s, v, &e);
    if (!want && rc)
        fail_msg("line %d: %s against %s: %s (%d)", line, value, schema, e.msg, rc);
    if (want && rc != EDDY_ESCHEMA)
        fail_msg("line %d: %s against %s: rc %d (%s), want '%s'", line, value, schema, rc, e.msg,
                 want);
    if (want && strcmp(e.msg, want))
        fail_msg("line %d: %s against %s:\n  got  '%s'\n  want '%s'", line, value, schema, e.msg,
                 want);
    /* the same answer without an eddy_err */
    assert_int_equal(eddy_jschema_validate(s, v, NULL), rc);
    if (want)
        assert_int_equal(eddy_utf8_invalid(e.msg, strlen(e.msg)), strlen(e.msg));
    json_decref(s);
    json_decref(v);
}
#define expect(s, v, w) expect_at(s, v, w, __LINE__)

/* eddy_jschema_check on SCHEMA: accepted when WANT is NULL, else refused with
 * exactly WANT; validation then fails with EDDY_EINVAL and "schema " WANT. */
static void expect_schema_at(const char *schema, const char *want, int line)
{
    json_t *s = J(schema), *v = json_null();
    char msg[EDDY_ERR_MSG_MAX], full[EDDY_ERR_MSG_MAX + 8];
    eddy_err e;
    int rc = eddy_jschema_check(s, msg, sizeof(msg));
    if (!want && rc)
        fail_msg("line %d: %s refused: %s", line, schema, msg);
    if (want && rc != EDDY_ESCHEMA)
        fail_msg("line %d: %s accepted (rc %d), want '%s'", line, schema, rc, want);
    if (want && strcmp(msg, want))
        fail_msg("line %d: %s:\n  got  '%s'\n  want '%s'", line, schema, msg, want);
    if (!want)
        assert_string_equal(msg, "");
    if (want) {
        assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_EINVAL);
        assert_int_equal(e.code, EDDY_EINVAL);
        snprintf(full, sizeof(full), "schema %s", want);
        assert_string_equal(e.msg, full);
    }
    json_decref(s);
    json_decref(v);
}
#define expect_schema(s, w) expect_schema_at(s, w, __LINE__)

/* The longest a pointer in a message gets: 120 bytes of head, "/...", 240 of tail. */
#define PTR_MAX_TEXT 400

/* An array nested N levels deep: [[[...]]] (the outermost is level 1). */
static json_t *nested_array(int n)
{
    json_t *v = json_array();
    for (int i = 1; i < n; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    return v;
}

/* {"items": {"items": ...}} with N schemas in all. */
static json_t *nested_items(int n)
{
    json_t *s = json_object();
    for (int i = 1; i < n; i++) {
        json_t *outer = json_object();
        json_object_set_new(outer, "items", s);
        s = outer;
    }
    return s;
}

/* -- type ---------------------------------------------------------------------- */

static void test_type(void **state)
{
    (void)state;
    expect("{\"type\":\"object\"}", "{}", NULL);
    expect("{\"type\":\"object\"}", "\"x\"", "/: expected object, got string");
    expect("{\"type\":\"object\"}", "[]", "/: expected object, got array");
    expect("{\"type\":\"array\"}", "[1]", NULL);
    expect("{\"type\":\"array\"}", "{}", "/: expected array, got object");
    expect("{\"type\":\"string\"}", "\"\"", NULL);
    expect("{\"type\":\"string\"}", "null", "/: expected string, got null");
    expect("{\"type\":\"boolean\"}", "false", NULL);
    expect("{\"type\":\"boolean\"}", "0", "/: expected boolean, got integer");
    expect("{\"type\":\"null\"}", "null", NULL);
    expect("{\"type\":\"null\"}", "false", "/: expected null, got boolean");
    /* number takes integers; integer takes reals with no fraction */
    expect("{\"type\":\"number\"}", "1", NULL);
    expect("{\"type\":\"number\"}", "2.5", NULL);
    expect("{\"type\":\"number\"}", "true", "/: expected number, got boolean");
    expect("{\"type\":\"number\"}", "\"1\"", "/: expected number, got string");
    expect("{\"type\":\"integer\"}", "1", NULL);
    expect("{\"type\":\"integer\"}", "-0", NULL);
    expect("{\"type\":\"integer\"}", "1.0", NULL);
    expect("{\"type\":\"integer\"}", "-3e2", NULL);
    expect("{\"type\":\"integer\"}", "1e300", NULL);
    expect("{\"type\":\"integer\"}", "9223372036854775807", NULL);
    expect("{\"type\":\"integer\"}", "1.5", "/: expected integer, got number 1.5");
    expect("{\"type\":\"integer\"}", "1e-300", "/: expected integer, got number 1e-300");
    expect("{\"type\":\"integer\"}", "\"1\"", "/: expected integer, got string");
    /* type arrays */
    expect("{\"type\":[\"string\",\"null\"]}", "null", NULL);
    expect("{\"type\":[\"string\",\"null\"]}", "\"a\"", NULL);
    expect("{\"type\":[\"string\",\"null\"]}", "3", "/: expected string or null, got integer");
    expect("{\"type\":[\"string\",\"integer\",\"null\"]}", "[]",
           "/: expected string, integer or null, got array");
    expect("{\"type\":[\"integer\",\"boolean\"]}", "2.5",
           "/: expected integer or boolean, got number 2.5");
    expect("{\"type\":[\"integer\",\"boolean\"]}", "2.0", NULL);
    expect("{\"type\":[\"number\"]}", "7", NULL);
    /* no type: anything */
    expect("{}", "[1, {\"a\": null}]", NULL);
    /* keywords of other types do not apply */
    expect("{\"minimum\":5,\"minLength\":9,\"minItems\":3,\"required\":[\"a\"]}", "true", NULL);
    expect("{\"minimum\":5}", "\"short\"", NULL);
    expect("{\"minLength\":9}", "3", NULL);
    expect("{\"required\":[\"a\"]}", "[]", NULL);
    expect("{\"minItems\":3}", "{}", NULL);
}

/* -- enum and const ------------------------------------------------------------ */

static void test_enum_const(void **state)
{
    char schema[2048], want[1024];
    size_t o;
    (void)state;
    expect("{\"enum\":[\"open\",\"closed\"]}", "\"open\"", NULL);
    expect("{\"enum\":[\"open\",\"closed\"]}", "\"maybe\"",
           "/: \"maybe\" is not one of \"open\", \"closed\"");
    expect("{\"properties\":{\"status\":{\"enum\":[\"open\",\"closed\"]}}}",
           "{\"status\":\"maybe\"}", "/status: \"maybe\" is not one of \"open\", \"closed\"");
    /* numbers by value, objects in any order, arrays in order */
    expect("{\"enum\":[1,\"a\",null,{\"k\":[1,2]}]}", "1.0", NULL);
    expect("{\"enum\":[1,\"a\",null,{\"k\":[1,2]}]}", "null", NULL);
    expect("{\"enum\":[1,\"a\",null,{\"k\":[1,2]}]}", "{\"k\":[1.0,2]}", NULL);
    expect("{\"enum\":[1,\"a\",null,{\"k\":[1,2]}]}", "{\"k\":[2,1]}",
           "/: {\"k\":[2,1]} is not one of 1, \"a\", null, {\"k\":[1,2]}");
    expect("{\"enum\":[{\"a\":1,\"b\":2}]}", "{\"b\":2,\"a\":1}", NULL);
    expect("{\"enum\":[{\"a\":1,\"b\":2}]}", "{\"b\":2,\"a\":1,\"c\":3}",
           "/: {\"b\":2,\"a\":1,\"c\":3} is not one of {\"a\":1,\"b\":2}");
    expect("{\"enum\":[true]}", "1", "/: 1 is not one of true");
    expect("{\"enum\":[0]}", "false", "/: false is not one of 0");
    expect("{\"enum\":[\"a\"]}", "\"a\\u0000\"", "/: \"a\\u0000\" is not one of \"a\"");
    expect("{\"enum\":[9007199254740993]}", "9007199254740992.0",
           "/: 9007199254740992.0 is not one of 9007199254740993");
    /* a long list is cut */
    o = (size_t)snprintf(schema, sizeof(schema), "{\"enum\":[");
    for (int i = 0; i < 30; i++)
        o += (size_t)snprintf(schema + o, sizeof(schema) - o, "%s\"value-number-%02d\"",
                              i ? "," : "", i);
    snprintf(schema + o, sizeof(schema) - o, "]}");
    o = (size_t)snprintf(want, sizeof(want), "/: \"nope\" is not one of ");
    for (int i = 0; i < 15; i++) /* 300 bytes hold 15 */
        o += (size_t)snprintf(want + o, sizeof(want) - o, "%s\"value-number-%02d\"", i ? ", " : "",
                              i);
    snprintf(want + o, sizeof(want) - o, ", ... (30 values)");
    expect(schema, "\"nope\"", want);

    expect("{\"const\":\"a\"}", "\"a\"", NULL);
    expect("{\"const\":\"a\"}", "\"b\"", "/: \"b\" is not the constant \"a\"");
    expect("{\"const\":{\"a\":1,\"b\":[true]}}", "{\"b\":[true],\"a\":1.0}", NULL);
    expect("{\"const\":{\"a\":1,\"b\":[true]}}", "{\"b\":[true]}",
           "/: {\"b\":[true]} is not the constant {\"a\":1,\"b\":[true]}");
    expect("{\"const\":null}", "null", NULL);
    expect("{\"const\":0}", "-0.0", NULL);
    expect("{\"const\":[]}", "{}", "/: {} is not the constant []");
}

/* -- objects ------------------------------------------------------------------- */

static void test_objects(void **state)
{
    (void)state;
    expect("{\"required\":[\"status\"]}", "{\"status\":1}", NULL);
    expect("{\"required\":[\"status\"]}", "{}", "/: missing required property 'status'");
    expect("{\"required\":[\"a\",\"b\"]}", "{\"a\":1}", "/: missing required property 'b'");
    expect("{\"required\":[\"a\\u0000b\"]}", "{\"a\":1}",
           "/: missing required property 'a\\u0000b'");
    expect("{\"required\":[]}", "{}", NULL);
    expect("{\"properties\":{\"age\":{\"type\":\"integer\",\"minimum\":0}}}", "{\"age\":-1}",
           "/age: -1 is less than the minimum 0");
    expect("{\"properties\":{\"age\":{\"type\":\"integer\"}}}", "{}", NULL);
    expect("{\"properties\":{\"a\":{\"properties\":{\"b\":{\"properties\":{\"c\":{"
           "\"type\":\"null\"}}}}}}}",
           "{\"a\":{\"b\":{\"c\":{}}}}", "/a/b/c: expected null, got object");
    expect("{\"properties\":{\"items\":{\"items\":{\"properties\":{\"price\":{\"maximum\":10}}}}}}",
           "{\"items\":[{\"price\":1},{\"price\":10},{\"price\":12.5}]}",
           "/items/2/price: 12.5 is more than the maximum 10");

    /* additionalProperties */
    expect("{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1}", NULL);
    expect("{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1,\"extra\":2}",
           "/extra: property not allowed (additionalProperties is false)");
    expect("{\"additionalProperties\":false}", "{}", NULL);
    expect("{\"additionalProperties\":false}", "{\"x\":null}",
           "/x: property not allowed (additionalProperties is false)");
    expect("{\"additionalProperties\":true}", "{\"x\":null}", NULL);
    expect("{\"properties\":{\"a\":{\"type\":\"string\"}},"
           "\"additionalProperties\":{\"type\":\"integer\"}}",
           "{\"a\":\"s\",\"n\":1}", NULL);
    expect("{\"properties\":{\"a\":{\"type\":\"string\"}},"
           "\"additionalProperties\":{\"type\":\"integer\"}}",
           "{\"a\":\"s\",\"n\":1,\"x\":\"s\"}", "/x: expected integer, got string");

    /* min/maxProperties */
    expect("{\"minProperties\":2}", "{\"a\":1,\"b\":2}", NULL);
    expect("{\"minProperties\":2}", "{\"a\":1}", "/: 1 property, fewer than minProperties 2");
    expect("{\"minProperties\":1}", "{}", "/: 0 properties, fewer than minProperties 1");
    expect("{\"maxProperties\":1}", "{\"a\":1}", NULL);
    expect("{\"maxProperties\":1}", "{\"a\":1,\"b\":2}",
           "/: 2 properties, more than maxProperties 1");
    expect("{\"maxProperties\":0.0}", "{\"a\":1}", "/: 1 property, more than maxProperties 0");

    /* the first failure, in a fixed order: type, const, enum, required,
     * properties, additionalProperties, counts */
    expect("{\"type\":\"object\",\"enum\":[1]}", "\"s\"", "/: expected object, got string");
    expect("{\"required\":[\"a\"],\"properties\":{\"b\":{\"type\":\"string\"}}}", "{\"b\":1}",
           "/: missing required property 'a'");
    expect("{\"properties\":{\"b\":{\"type\":\"string\"}},\"additionalProperties\":false,"
           "\"maxProperties\":0}",
           "{\"z\":1,\"b\":1}", "/b: expected string, got integer");
    expect("{\"additionalProperties\":false,\"maxProperties\":0}", "{\"z\":1}",
           "/z: property not allowed (additionalProperties is false)");
}

/* -- arrays -------------------------------------------------------------------- */

static void test_arrays(void **state)
{
    (void)state;
    expect("{\"items\":{\"type\":\"string\"}}", "[\"a\",\"b\"]", NULL);
    expect("{\"items\":{\"type\":\"string\"}}", "[\"a\",1]", "/1: expected string, got integer");
    expect("{\"items\":{\"type\":\"string\"}}", "[]", NULL);
    expect("{\"items\":{\"items\":{\"enum\":[1]}}}", "[[1],[1,1,2]]", "/1/2: 2 is not one of 1");
    expect("{\"minItems\":2}", "[1,2]", NULL);
    expect("{\"minItems\":2}", "[1]", "/: 1 item, fewer than minItems 2");
    expect("{\"minItems\":1}", "[]", "/: 0 items, fewer than minItems 1");
    expect("{\"maxItems\":2}", "[1,2]", NULL);
    expect("{\"maxItems\":2}", "[1,2,3]", "/: 3 items, more than maxItems 2");
    expect("{\"maxItems\":0}", "[null]", "/: 1 item, more than maxItems 0");

    expect("{\"uniqueItems\":true}", "[1,2,3]", NULL);
    expect("{\"uniqueItems\":true}", "[]", NULL);
    expect("{\"uniqueItems\":true}", "[1,2,1]", "/2: 1 repeats item 0 (uniqueItems is true)");
    expect("{\"uniqueItems\":true}", "[1,2,3,2,1]", "/3: 2 repeats item 1 (uniqueItems is true)");
    expect("{\"uniqueItems\":true}", "[1,1.0]", "/1: 1.0 repeats item 0 (uniqueItems is true)");
    expect("{\"uniqueItems\":true}", "[0,-0.0]", "/1: -0.0 repeats item 0 (uniqueItems is true)");
    expect("{\"uniqueItems\":true}", "[1,1.5,true,\"1\",[1],{\"1\":1},null,false]", NULL);
    expect("{\"uniqueItems\":true}", "[{\"a\":1,\"b\":[2]},{\"b\":[2.0],\"a\":1}]",
           "/1: {\"b\":[2.0],\"a\":1} repeats item 0 (uniqueItems is true)");
    expect("{\"uniqueItems\":true}", "[[1,2],[2,1]]", NULL);
    expect("{\"uniqueItems\":true}", "[\"a\",\"a\\u0000\",\"a\\u0000b\"]", NULL);
    expect("{\"uniqueItems\":true}", "[1e300,1e300]",
           "/1: 1e+300 repeats item 0 (uniqueItems is true)");
    expect("{\"uniqueItems\":false}", "[1,1]", NULL);
    expect("{\"items\":{\"type\":\"integer\"},\"uniqueItems\":true}", "[1,1,\"x\"]",
           "/2: expected integer, got string");
}

/* -- numbers ------------------------------------------------------------------- */

static void test_numbers(void **state)
{
    (void)state;
    expect("{\"minimum\":0}", "0", NULL);
    expect("{\"minimum\":0}", "-1", "/: -1 is less than the minimum 0");
    expect("{\"minimum\":0}", "-0.5", "/: -0.5 is less than the minimum 0");
    expect("{\"minimum\":0.5}", "0", "/: 0 is less than the minimum 0.5");
    expect("{\"maximum\":10}", "10", NULL);
    expect("{\"maximum\":10}", "10.0", NULL);
    expect("{\"maximum\":10}", "12.5", "/: 12.5 is more than the maximum 10");
    expect("{\"exclusiveMinimum\":0}", "0.001", NULL);
    expect("{\"exclusiveMinimum\":0}", "0", "/: 0 is not more than the exclusiveMinimum 0");
    expect("{\"exclusiveMinimum\":0}", "-0.0", "/: -0.0 is not more than the exclusiveMinimum 0");
    expect("{\"exclusiveMaximum\":10}", "9.999", NULL);
    expect("{\"exclusiveMaximum\":10}", "10", "/: 10 is not less than the exclusiveMaximum 10");
    expect("{\"exclusiveMaximum\":10.5}", "11", "/: 11 is not less than the exclusiveMaximum 10.5");
    expect("{\"minimum\":1,\"exclusiveMinimum\":1}", "1",
           "/: 1 is not more than the exclusiveMinimum 1");
    /* exact between integers and reals, past 2^53 */
    expect("{\"maximum\":9007199254740992.0}", "9007199254740992", NULL);
    expect("{\"maximum\":9007199254740992.0}", "9007199254740993",
           "/: 9007199254740993 is more than the maximum 9007199254740992.0");
    expect("{\"minimum\":9007199254740993}", "9007199254740992.0",
           "/: 9007199254740992.0 is less than the minimum 9007199254740993");
    expect("{\"maximum\":9223372036854775807}", "9223372036854775808.0",
           "/: 9.223372036854776e+18 is more than the maximum 9223372036854775807");
    expect("{\"minimum\":-9223372036854775808}", "-9223372036854775808.0", NULL);
    expect("{\"minimum\":-9223372036854775808}", "-1e19",
           "/: -1e+19 is less than the minimum -9223372036854775808");
    expect("{\"minimum\":-1e300,\"maximum\":1e300}", "-9223372036854775808", NULL);

    /* multipleOf, in decimal */
    expect("{\"multipleOf\":5}", "10", NULL);
    expect("{\"multipleOf\":5}", "-15", NULL);
    expect("{\"multipleOf\":5}", "0", NULL);
    expect("{\"multipleOf\":5}", "10.0", NULL);
    expect("{\"multipleOf\":5}", "7", "/: 7 is not a multiple of 5");
    expect("{\"multipleOf\":5}", "7.5", "/: 7.5 is not a multiple of 5");
    expect("{\"multipleOf\":0.01}", "12.34", NULL);
    expect("{\"multipleOf\":0.01}", "12", NULL);
    expect("{\"multipleOf\":0.01}", "12.345", "/: 12.345 is not a multiple of 0.01");
    expect("{\"multipleOf\":0.1}", "0.3", NULL);
    expect("{\"multipleOf\":0.5}", "2", NULL);
    expect("{\"multipleOf\":0.5}", "2.25", "/: 2.25 is not a multiple of 0.5");
    expect("{\"multipleOf\":2.5}", "7.5", NULL);
    expect("{\"multipleOf\":1e-7}", "0.0000003", NULL);
    expect("{\"multipleOf\":2}", "1e300", NULL);
    expect("{\"multipleOf\":3}", "1e300", "/: 1e+300 is not a multiple of 3");
    expect("{\"multipleOf\":1e300}", "3e300", NULL);
    expect("{\"multipleOf\":1e300}", "1e299", "/: 1e+299 is not a multiple of 1e+300");
    expect("{\"multipleOf\":2}", "-9223372036854775808", NULL);
    expect("{\"multipleOf\":9223372036854775807}", "9223372036854775807", NULL);
    expect("{\"multipleOf\":9223372036854775807}", "-9223372036854775808",
           "/: -9223372036854775808 is not a multiple of 9223372036854775807");
    expect("{\"multipleOf\":7}", "1e22", "/: 1e+22 is not a multiple of 7");
    expect("{\"multipleOf\":1e-300}", "1e300", NULL);
    expect("{\"type\":\"integer\",\"multipleOf\":3}", "9.0", NULL);
}

/* -- strings ------------------------------------------------------------------- */

static void test_strings(void **state)
{
    (void)state;
    expect("{\"minLength\":3}", "\"abc\"", NULL);
    expect("{\"minLength\":3}", "\"ab\"", "/: 2 characters, fewer than minLength 3");
    expect("{\"properties\":{\"name\":{\"minLength\":3}}}", "{\"name\":\"J\"}",
           "/name: 1 character, fewer than minLength 3");
    expect("{\"minLength\":1}", "\"\"", "/: 0 characters, fewer than minLength 1");
    expect("{\"maxLength\":3}", "\"abc\"", NULL);
    expect("{\"maxLength\":3}", "\"abcd\"", "/: 4 characters, more than maxLength 3");
    expect("{\"minLength\":2.0}", "\"a\"", "/: 1 character, fewer than minLength 2");
    /* code points, not bytes: é is 2 bytes, 日本語 9, each emoji 4 */
    expect("{\"minLength\":2}", "\"\xC3\xA9\"", "/: 1 character, fewer than minLength 2");
    expect("{\"maxLength\":1}", "\"\xC3\xA9\"", NULL);
    expect("{\"maxLength\":3}", "\"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\"", NULL);
    expect("{\"maxLength\":2}", "\"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\"",
           "/: 3 characters, more than maxLength 2");
    expect("{\"minLength\":3}", "\"\\ud83d\\ude00\\ud83d\\ude00\"",
           "/: 2 characters, fewer than minLength 3");
    expect("{\"maxLength\":2,\"minLength\":2}", "\"\xF0\x9F\x98\x80\xF0\x9F\x98\x80\"", NULL);
    expect("{\"maxLength\":1}", "\"a\\u0000\"", "/: 2 characters, more than maxLength 1");

    /* pattern: POSIX ERE, unanchored */
    expect("{\"pattern\":\"^[0-9]+$\"}", "\"123\"", NULL);
    expect("{\"pattern\":\"^[0-9]+$\"}", "\"12a\"",
           "/: \"12a\" does not match the pattern \"^[0-9]+$\"");
    expect("{\"pattern\":\"b\"}", "\"abc\"", NULL);
    expect("{\"pattern\":\"b\"}", "\"ac\"", "/: \"ac\" does not match the pattern \"b\"");
    expect("{\"pattern\":\"^[[:upper:]]{2}-[0-9]{3,}$\"}", "\"AB-1234\"", NULL);
    expect("{\"pattern\":\"^(open|closed)$\"}", "\"opened\"",
           "/: \"opened\" does not match the pattern \"^(open|closed)$\"");
    expect("{\"pattern\":\"^a\\\\.b$\"}", "\"a.b\"", NULL);
    expect("{\"pattern\":\"^a\\\\.b$\"}", "\"axb\"",
           "/: \"axb\" does not match the pattern \"^a\\\\.b$\"");
    expect("{\"pattern\":\"[]x]\"}", "\"]\"", NULL);
    expect("{\"pattern\":\"^[^]x]+$\"}", "\"ab\"", NULL);
    expect("{\"pattern\":\"\"}", "\"\"", NULL);
    /* in UTF-8, whatever the process's locale: characters, not bytes */
    expect("{\"pattern\":\"^.{2}$\"}", "\"\xC3\xA9\xC3\xA9\"", NULL);
    expect("{\"pattern\":\"^[\xC3\xA9]$\"}", "\"\xC3\xA9\"", NULL);
    expect("{\"pattern\":\"^[\xC3\xA9]$\"}", "\"\xC3\xA3\"",
           "/: \"\xC3\xA3\" does not match the pattern \"^[\xC3\xA9]$\"");
    expect("{\"pattern\":\"^[^a]$\"}", "\"\xF0\x9F\x98\x80\"", NULL);
    expect("{\"pattern\":\"^[[:alpha:]]+$\"}", "\"\xC3\xA9t\xC3\xA9\"", NULL);
    expect("{\"pattern\":\"^[a-z]+$\"}", "\"ABC\"",
           "/: \"ABC\" does not match the pattern \"^[a-z]+$\"");
    /* the whole string is searched, past a NUL */
    expect("{\"pattern\":\"^a$\"}", "\"a\\u0000\"",
           "/: \"a\\u0000\" does not match the pattern \"^a$\"");
    expect("{\"pattern\":\"b\"}", "\"a\\u0000b\"", NULL);
    /* patterns deep in the schema, over many strings */
    expect("{\"items\":{\"properties\":{\"id\":{\"pattern\":\"^x\"}},\"pattern\":\"q\"}}",
           "[{\"id\":\"x1\"},{\"id\":\"x2\"},\"q\",{\"id\":\"y\"}]",
           "/3/id: \"y\" does not match the pattern \"^x\"");
}

/* -- messages: pointers and quoted values --------------------------------------- */

static void test_pointers(void **state)
{
    char want[1024], schema[4096], value[4096], key[256];
    (void)state;
    expect("{\"properties\":{\"a/b\":{\"properties\":{\"c~d\":{\"type\":\"string\"}}}}}",
           "{\"a/b\":{\"c~d\":1}}", "/a~1b/c~0d: expected string, got integer");
    expect("{\"properties\":{\"~1\":{\"type\":\"string\"}}}", "{\"~1\":1}",
           "/~01: expected string, got integer");
    expect("{\"properties\":{\"a\\nb\\u0001\":{\"type\":\"string\"}}}", "{\"a\\nb\\u0001\":1}",
           "/a\\nb\\u0001: expected string, got integer");
    expect("{\"properties\":{\"\xC3\xA9t\xC3\xA9\":{\"type\":\"string\"}}}",
           "{\"\xC3\xA9t\xC3\xA9\":1}", "/\xC3\xA9t\xC3\xA9: expected string, got integer");
    expect("{\"additionalProperties\":false}", "{\"a/~b\":1}",
           "/a~1~0b: property not allowed (additionalProperties is false)");
    expect("{\"additionalProperties\":{\"items\":{\"type\":\"null\"}}}", "{\"k\":[null,0]}",
           "/k/1: expected null, got integer");

    /* a long key is cut in its segment, a long pointer in its middle */
    memset(key, 'k', 200);
    key[200] = '\0';
    snprintf(schema, sizeof(schema), "{\"properties\":{\"%s\":{\"type\":\"null\"}}}", key);
    snprintf(value, sizeof(value), "{\"%s\":1}", key);
    snprintf(want, sizeof(want), "/%.59s...: expected null, got integer", key);
    expect(schema, value, want);
    {
        size_t so = 0, vo = 0, wo = 0;
        const char *names[10] = {"a0", "b1", "c2", "d3", "e4", "f5", "g6", "h7", "i8", "j9"};
        char segs[10][64];
        for (int i = 0; i < 10; i++) /* 10 segments of 50 bytes: 500 in all */
            snprintf(segs[i], sizeof(segs[i]), "%s%048d", names[i], i);
        for (int i = 0; i < 10; i++) {
            so += (size_t)snprintf(schema + so, sizeof(schema) - so,
                                   "{\"properties\":{\"%s\":", segs[i]);
            vo += (size_t)snprintf(value + vo, sizeof(value) - vo, "{\"%s\":", segs[i]);
        }
        so += (size_t)snprintf(schema + so, sizeof(schema) - so, "{\"type\":\"null\"}");
        vo += (size_t)snprintf(value + vo, sizeof(value) - vo, "1");
        for (int i = 0; i < 10; i++) {
            so += (size_t)snprintf(schema + so, sizeof(schema) - so, "}}");
            vo += (size_t)snprintf(value + vo, sizeof(value) - vo, "}");
        }
        /* 120 bytes of head hold 2 segments (51 each), 240 of tail 4 */
        wo += (size_t)snprintf(want + wo, sizeof(want) - wo, "/%s/%s/...", segs[0], segs[1]);
        for (int i = 6; i < 10; i++)
            wo += (size_t)snprintf(want + wo, sizeof(want) - wo, "/%s", segs[i]);
        snprintf(want + wo, sizeof(want) - wo, ": expected null, got integer");
        expect(schema, value, want);
    }
}

static void test_quoting(void **state)
{
    char value[512], want[512], x[256];
    (void)state;
    /* 60 bytes at most: the quote and 59 x, then "..." */
    memset(x, 'x', 200);
    x[200] = '\0';
    snprintf(value, sizeof(value), "\"%s\"", x);
    snprintf(want, sizeof(want), "/: \"%.59s... is not the constant \"a\"", x);
    expect("{\"const\":\"a\"}", value, want);
    /* never inside a UTF-8 sequence: the quote and 29 é are 59 bytes */
    value[0] = '"';
    for (int i = 0; i < 100; i++)
        memcpy(value + 1 + 2 * i, "\xC3\xA9", 2);
    memcpy(value + 201, "\"", 2);
    snprintf(want, sizeof(want), "/: \"%.58s... is not the constant \"a\"", value + 1);
    expect("{\"const\":\"a\"}", value, want);
    /* nor inside an escape */
    expect("{\"const\":\"a\"}", "\"0123456789012345678901234567890123456789012345678901234567\\n\"",
           "/: \"0123456789012345678901234567890123456789012345678901234567... is not the "
           "constant \"a\"");
    /* containers: compact, cut, deep ones elided */
    expect("{\"const\":1}", "[1,[2,[3,[4,[5,[6,[7,[8,[9,[10]]]]]]]]]]",
           "/: [1,[2,[3,[4,[5,[6,[7,[8,[...]]]]]]]]] is not the constant 1");
    expect("{\"const\":1}", "{\"a\\\"b\":\"c\\\\\",\"n\":[true,false,null,1.5,-0.0]}",
           "/: {\"a\\\"b\":\"c\\\\\",\"n\":[true,false,null,1.5,-0.0]} is not the constant 1");
    expect("{\"maximum\":0.1}", "71.1", "/: 71.1 is more than the maximum 0.1");
    expect("{\"maximum\":0}", "1e-7", "/: 1e-07 is more than the maximum 0");
}

/* A huge array costs little to quote, and uniqueItems over it n log n. */
static void test_huge(void **state)
{
    json_t *s = J("{\"items\":{\"type\":\"integer\",\"minimum\":0},\"uniqueItems\":true}");
    json_t *v = json_array(), *q = J("{\"const\":1}");
    eddy_err e;
    (void)state;
    for (int i = 0; i < 200000; i++)
        json_array_append_new(v, json_integer(i));
    assert_int_equal(eddy_jschema_validate(s, v, &e), 0);
    json_array_append_new(v, json_real(199999.0));
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_ESCHEMA);
    assert_string_equal(e.msg, "/200000: 199999.0 repeats item 199999 (uniqueItems is true)");
    assert_int_equal(eddy_jschema_validate(q, v, &e), EDDY_ESCHEMA);
    assert_string_equal(e.msg, "/: [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,"
                               "... is not the constant 1");
    json_decref(s);
    json_decref(v);
    json_decref(q);
}

/* -- hostile input --------------------------------------------------------------- */

static void test_nesting(void **state)
{
    json_t *s, *v, *deep;
    char msg[EDDY_ERR_MSG_MAX], want[EDDY_ERR_MSG_MAX];
    size_t o = 0;
    eddy_err e;
    (void)state;
    /* 64 levels of schema are fine, and the value follows them */
    s = nested_items(EDDY_JSCHEMA_MAX_DEPTH);
    assert_int_equal(eddy_jschema_check(s, msg, sizeof(msg)), 0);
    v = nested_array(EDDY_JSCHEMA_MAX_DEPTH + 1);
    assert_int_equal(eddy_jschema_validate(s, v, &e), 0);
    json_decref(v);
    json_decref(s);
    /* 65 are not: the pointer keeps 20 segments of its head and 40 of its tail */
    s = nested_items(EDDY_JSCHEMA_MAX_DEPTH + 1);
    for (int i = 0; i < 20; i++)
        o += (size_t)snprintf(want + o, sizeof(want) - o, "/items");
    o += (size_t)snprintf(want + o, sizeof(want) - o, "/...");
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(want + o, sizeof(want) - o, "/items");
    snprintf(want + o, sizeof(want) - o, ": schema nests deeper than 64 levels");
    assert_int_equal(eddy_jschema_check(s, msg, sizeof(msg)), EDDY_ESCHEMA);
    assert_string_equal(msg, want);
    v = json_array();
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_EINVAL);
    assert_string_equal(e.msg + strlen("schema "), want);
    json_decref(v);
    json_decref(s);
    /* a schema that contains itself is a schema nested without end */
    s = json_object();
    json_object_set_new(s, "properties", json_object());
    json_object_set(json_object_get(s, "properties"), "self", s);
    assert_int_equal(eddy_jschema_check(s, msg, sizeof(msg)), EDDY_ESCHEMA);
    assert_non_null(strstr(msg, "/properties/self/.../properties/self/"));
    assert_non_null(strstr(msg, "/properties/self/properties/self: schema nests deeper than 64 "
                                "levels"));
    assert_true(strlen(msg) < PTR_MAX_TEXT);
    json_object_clear(json_object_get(s, "properties"));
    json_decref(s);
    /* a value nested far deeper than jansson's parser allows: only walked
     * where the schema goes, and hashed to a cap */
    deep = nested_array(10000);
    s = J("{\"type\":\"array\",\"items\":{\"type\":\"array\"},\"minItems\":1}");
    assert_int_equal(eddy_jschema_validate(s, deep, &e), 0);
    json_decref(s);
    s = J("{\"const\":[[[1]]]}");
    assert_int_equal(eddy_jschema_validate(s, deep, &e), EDDY_ESCHEMA);
    assert_string_equal(e.msg, "/: [[[[[[[[[...]]]]]]]]] is not the constant [[[1]]]");
    json_decref(s);
    s = J("{\"enum\":[1, [[2]]]}");
    assert_int_equal(eddy_jschema_validate(s, deep, &e), EDDY_ESCHEMA);
    json_decref(s);
    v = json_pack("[i, o]", 1, deep);
    s = J("{\"uniqueItems\":true}");
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_ESCHEMA);
    assert_string_equal(e.msg, "/1: nests deeper than 64 levels, too deep to compare for "
                               "uniqueItems");
    json_decref(s);
    json_decref(v);
    /* items of 64 levels still compare */
    v = json_pack("[o, o]", nested_array(EDDY_JSCHEMA_MAX_DEPTH),
                  nested_array(EDDY_JSCHEMA_MAX_DEPTH));
    s = J("{\"uniqueItems\":true}");
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "/1: [[[[[[[[[...]]]]]]]]] repeats item 0"));
    json_decref(s);
    json_decref(v);
    /* enum and const values nest 64 levels at most */
    s = json_pack("{s:[o]}", "enum", nested_array(EDDY_JSCHEMA_MAX_DEPTH + 1));
    assert_int_equal(eddy_jschema_check(s, msg, sizeof(msg)), EDDY_ESCHEMA);
    assert_string_equal(msg, "/enum/0: value nests deeper than 64 levels");
    json_decref(s);
    s = json_pack("{s:o}", "const", nested_array(EDDY_JSCHEMA_MAX_DEPTH));
    assert_int_equal(eddy_jschema_check(s, msg, sizeof(msg)), 0);
    json_decref(s);
}

/* A schema that was never checked fails cleanly, whatever the value. */
static void test_unchecked(void **state)
{
    json_t *s, *v;
    eddy_err e;
    (void)state;
    s = J("{\"properties\":{\"absent\":{\"pattern\":\"(\"}}}");
    v = J("{}");
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_EINVAL);
    assert_int_equal(e.code, EDDY_EINVAL);
    assert_string_equal(e.msg, "schema /properties/absent/pattern: does not compile as a POSIX "
                               "extended regular expression: Unmatched ( or \\(");
    json_decref(s);
    s = J("{\"anyOf\":[{\"type\":\"string\"}]}");
    assert_int_equal(eddy_jschema_validate(s, v, &e), EDDY_EINVAL);
    assert_string_equal(e.msg, "schema /anyOf: eddy does not enforce 'anyOf'");
    assert_int_equal(eddy_jschema_validate(s, v, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_jschema_validate(NULL, v, &e), EDDY_EINVAL);
    assert_string_equal(e.msg, "eddy_jschema_validate: no schema");
    assert_int_equal(eddy_jschema_validate(s, NULL, &e), EDDY_EINVAL);
    assert_string_equal(e.msg, "eddy_jschema_validate: no value");
    json_decref(s);
    json_decref(v);
}

/* -- what eddy_jschema_check refuses ------------------------------------------- */

static void test_check(void **state)
{
    const char *re = "is not POSIX extended regular expression syntax (patterns are POSIX "
                     "ERE, not ECMA-262)";
    char want[512];
    (void)state;
    expect_schema("{}", NULL);
    expect_schema("{\"title\":\"t\",\"description\":\"d\",\"default\":{\"x\":[1]},"
                  "\"examples\":[1,\"a\"],\"$schema\":\"https://json-schema.org/draft/2020-12/"
                  "schema\",\"$id\":\"order\",\"$comment\":\"c\"}",
                  NULL);
    expect_schema("{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":{\"type\":["
                  "\"string\",\"null\"],\"minLength\":1,\"maxLength\":9,\"pattern\":\"^[a-z]\","
                  "\"enum\":[\"ab\",null]},\"n\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1,"
                  "\"exclusiveMinimum\":-1,\"exclusiveMaximum\":2.5,\"multipleOf\":0.25},"
                  "\"l\":{\"type\":\"array\",\"items\":{\"const\":1},\"minItems\":0,\"maxItems\":"
                  "3,\"uniqueItems\":false}},\"additionalProperties\":{\"type\":\"integer\"},"
                  "\"minProperties\":1,\"maxProperties\":3.0}",
                  NULL);

    /* not a schema */
    expect_schema("[]", "/: a schema must be an object, not an array");
    expect_schema("true", "/: a schema must be an object, not a boolean");
    expect_schema("null", "/: a schema must be an object, not null");
    expect_schema("\"s\"", "/: a schema must be an object, not a string");
    expect_schema("{\"properties\":{\"a\":1}}",
                  "/properties/a: a schema must be an object, not an integer");
    expect_schema("{\"items\":true}", "/items: a schema must be an object, not a boolean");

    /* keywords eddy does not enforce */
    expect_schema("{\"$ref\":\"#/$defs/x\"}",
                  "/$ref: eddy does not enforce '$ref' (write the referenced schema in place)");
    expect_schema("{\"$defs\":{}}",
                  "/$defs: eddy does not enforce '$defs' (write the referenced schema in place)");
    expect_schema("{\"oneOf\":[]}", "/oneOf: eddy does not enforce 'oneOf'");
    expect_schema("{\"anyOf\":[]}", "/anyOf: eddy does not enforce 'anyOf'");
    expect_schema("{\"allOf\":[]}", "/allOf: eddy does not enforce 'allOf'");
    expect_schema("{\"not\":{}}", "/not: eddy does not enforce 'not'");
    expect_schema("{\"if\":{}}", "/if: eddy does not enforce 'if'");
    expect_schema("{\"then\":{}}", "/then: eddy does not enforce 'then'");
    expect_schema("{\"else\":{}}", "/else: eddy does not enforce 'else'");
    expect_schema("{\"prefixItems\":[]}", "/prefixItems: eddy does not enforce 'prefixItems'");
    expect_schema("{\"patternProperties\":{}}",
                  "/patternProperties: eddy does not enforce 'patternProperties'");
    expect_schema("{\"properties\":{\"email\":{\"type\":\"string\",\"format\":\"email\"}}}",
                  "/properties/email/format: eddy does not enforce 'format' (constrain the "
                  "string with 'pattern')");
    expect_schema("{\"properties\":{\"age\":{\"minimun\":0}}}",
                  "/properties/age/minimun: eddy does not enforce 'minimun', a keyword it does "
                  "not know (did you mean 'minimum'?)");
    expect_schema("{\"MaxLength\":3}", "/MaxLength: eddy does not enforce 'MaxLength', a keyword "
                                       "it does not know (did you mean 'maxLength'?)");
    expect_schema("{\"frobnicate\":1}",
                  "/frobnicate: eddy does not enforce 'frobnicate', a keyword it does not know");
    expect_schema("{\"a/b\":1}", "/a~1b: eddy does not enforce 'a/b', a keyword it does not know");
    expect_schema("{\"items\":{\"additionalProperties\":{\"$ref\":\"#\"}}}",
                  "/items/additionalProperties/$ref: eddy does not enforce '$ref' (write the "
                  "referenced schema in place)");

    /* type */
    expect_schema("{\"type\":\"int\"}", "/type: unknown type \"int\" (expected string, number, "
                                        "integer, boolean, object, array or null)");
    expect_schema("{\"type\":[]}", "/type: must be a type name or a non-empty array of type names");
    expect_schema("{\"type\":3}", "/type: must be a type name or a non-empty array of type names");
    expect_schema("{\"type\":[\"string\",1]}", "/type/1: must be a type name (a string)");
    expect_schema("{\"type\":[\"string\",\"string\"]}", "/type/1: \"string\" is listed twice");
    expect_schema("{\"type\":[\"string\",\"float\"]}",
                  "/type/1: unknown type \"float\" (expected string, number, integer, boolean, "
                  "object, array or null)");

    /* forms of the other keywords */
    expect_schema("{\"required\":\"a\"}", "/required: must be an array of property names");
    expect_schema("{\"required\":true}", "/required: must be an array of property names");
    expect_schema("{\"required\":[\"a\",2]}", "/required/1: must be a string");
    expect_schema("{\"properties\":[]}", "/properties: must be an object of schemas, one per "
                                         "property");
    expect_schema("{\"additionalProperties\":\"no\"}",
                  "/additionalProperties: must be true, false or a schema (an object)");
    expect_schema("{\"items\":[{}]}", "/items: must be one schema for every item (the array form, "
                                      "a schema per position, is not supported)");
    expect_schema("{\"enum\":[]}", "/enum: must be a non-empty array");
    expect_schema("{\"enum\":\"a\"}", "/enum: must be a non-empty array");
    expect_schema("{\"uniqueItems\":1}", "/uniqueItems: must be true or false");
    expect_schema("{\"properties\":{\"age\":{\"minimum\":\"0\"}}}",
                  "/properties/age/minimum: must be a number");
    expect_schema("{\"maximum\":null}", "/maximum: must be a number");
    expect_schema("{\"exclusiveMinimum\":true}", "/exclusiveMinimum: must be a number (the bound "
                                                 "itself; the draft 4 boolean form is not "
                                                 "supported)");
    expect_schema("{\"exclusiveMaximum\":\"1\"}", "/exclusiveMaximum: must be a number");
    expect_schema("{\"multipleOf\":0}", "/multipleOf: must be a number greater than 0");
    expect_schema("{\"multipleOf\":-0.5}", "/multipleOf: must be a number greater than 0");
    expect_schema("{\"multipleOf\":0.0}", "/multipleOf: must be a number greater than 0");
    expect_schema("{\"minLength\":-1}", "/minLength: must be a non-negative integer");
    expect_schema("{\"maxLength\":1.5}", "/maxLength: must be a non-negative integer");
    expect_schema("{\"minItems\":\"3\"}", "/minItems: must be a non-negative integer");
    expect_schema("{\"maxItems\":1e30}", "/maxItems: must be a non-negative integer");
    expect_schema("{\"minProperties\":null}", "/minProperties: must be a non-negative integer");
    expect_schema("{\"maxProperties\":2.0}", NULL);
    expect_schema("{\"title\":1}", "/title: must be a string");
    expect_schema("{\"description\":[]}", "/description: must be a string");
    expect_schema("{\"$schema\":null}", "/$schema: must be a string");
    expect_schema("{\"examples\":1}", "/examples: must be an array");

    /* patterns: POSIX ERE, and nothing ECMA-262 reads another way */
    expect_schema("{\"pattern\":5}", "/pattern: must be a string");
    expect_schema("{\"pattern\":\"a\\u0000b\"}", "/pattern: must not contain a NUL character");
    expect_schema("{\"pattern\":\"(\"}", "/pattern: does not compile as a POSIX extended regular "
                                         "expression: Unmatched ( or \\(");
    expect_schema("{\"pattern\":\"a{2\"}",
                  "/pattern: does not compile as a POSIX extended regular expression: Unmatched "
                  "\\{");
    snprintf(want, sizeof(want), "/pattern: '\\d' %s (write [0-9])", re);
    expect_schema("{\"pattern\":\"^\\\\d+$\"}", want);
    snprintf(want, sizeof(want), "/pattern: '\\w' %s (write [[:alnum:]_])", re);
    expect_schema("{\"pattern\":\"\\\\w\"}", want);
    snprintf(want, sizeof(want), "/pattern: '\\s' %s (write [[:space:]])", re);
    expect_schema("{\"pattern\":\"\\\\s\"}", want);
    snprintf(want, sizeof(want), "/pattern: '\\n' %s", re);
    expect_schema("{\"pattern\":\"a\\\\nb\"}", want);
    snprintf(want, sizeof(want), "/pattern: '\\1' %s (back-references are not supported)", re);
    expect_schema("{\"pattern\":\"(a)\\\\1\"}", want);
    expect_schema("{\"pattern\":\"[\\\\w-]\"}",
                  "/pattern: a backslash inside [...] is a literal backslash in POSIX extended "
                  "regular expressions, not an escape as in ECMA-262");
    expect_schema("{\"pattern\":\"(?:ab)+\"}", "/pattern: '(?' is ECMA-262 syntax, not POSIX "
                                               "extended regular expression syntax (patterns are "
                                               "POSIX ERE)");
    expect_schema("{\"pattern\":\"^\\\\.\\\\*\\\\(\\\\[\\\\\\\\\\\\/$\"}", NULL);
    expect_schema("{\"pattern\":\"[[:digit:]]+[.][0-9]{2}\"}", NULL);
    expect_schema("{\"pattern\":\"[[:alpha:]\\\\]\"}",
                  "/pattern: a backslash inside [...] is a literal backslash in POSIX extended "
                  "regular expressions, not an escape as in ECMA-262");
    expect_schema("{\"pattern\":\"[]\\\\d]\"}",
                  "/pattern: a backslash inside [...] is a literal backslash in POSIX extended "
                  "regular expressions, not an escape as in ECMA-262");
    expect_schema("{\"pattern\":\"[(?]\"}", NULL);
    expect_schema("{\"pattern\":\"[[:alpha:]\"}", "/pattern: does not compile as a POSIX extended "
                                                  "regular expression: Unmatched [, [^, [:, [., "
                                                  "or [=");
}

/* The message copied into the caller's buffer: cut to fit, never inside a
 * UTF-8 sequence; CAP 0 writes nothing. */
static void test_check_buffer(void **state)
{
    json_t *s = J("{\"properties\":{\"\xC3\xA9\xC3\xA9\":{\"oneOf\":[]}}}");
    char msg[64];
    (void)state;
    /* "/properties/éé/oneOf: ..." : the é bytes are at 12..15 */
    memset(msg, 'z', sizeof(msg));
    assert_int_equal(eddy_jschema_check(s, msg, 15), EDDY_ESCHEMA);
    assert_string_equal(msg, "/properties/\xC3\xA9");
    assert_int_equal(eddy_jschema_check(s, msg, 14), EDDY_ESCHEMA);
    assert_string_equal(msg, "/properties/");
    assert_int_equal(eddy_jschema_check(s, msg, 13), EDDY_ESCHEMA);
    assert_string_equal(msg, "/properties/");
    assert_int_equal(eddy_jschema_check(s, msg, 1), EDDY_ESCHEMA);
    assert_string_equal(msg, "");
    assert_int_equal(eddy_jschema_check(s, NULL, 0), EDDY_ESCHEMA);
    assert_int_equal(eddy_jschema_check(NULL, msg, sizeof(msg)), EDDY_EINVAL);
    assert_string_equal(msg, "no schema");
    json_decref(s);
}

/* -- allocation failures ----------------------------------------------------- */

/* Fail allocation n of a validation for n = 0, 1, 2, ...: each gives
 * EDDY_ENOMEM and frees what it allocated (leaks are checked under ASan and
 * valgrind), until one gets the answer. */
static void test_alloc_failures(void **state)
{
    json_t *s = J("{\"properties\":{\"a\":{\"pattern\":\"^a\"},\"b\":{\"pattern\":\"b$\"},"
                  "\"l\":{\"uniqueItems\":true,\"items\":{\"pattern\":\"x\"}}}}");
    json_t *ok = J("{\"a\":\"a1\",\"b\":\"1b\",\"l\":[\"x1\",\"x2\"]}");
    json_t *bad = J("{\"a\":\"a1\",\"b\":\"1b\",\"l\":[\"x1\",\"x1\"]}");
    int done = 0;
    (void)state;
    for (long n = 0; n < 100 && !done; n++) {
        eddy_err e;
        int rc, rc2;
        eddy_alloc_fail_after(n);
        rc = eddy_jschema_validate(s, ok, &e);
        eddy_alloc_fail_after(n);
        rc2 = eddy_jschema_validate(s, bad, &e);
        eddy_alloc_fail_after(-1);
        if (rc) {
            assert_int_equal(rc, EDDY_ENOMEM);
            assert_int_equal(rc2, EDDY_ENOMEM);
            continue;
        }
        assert_int_equal(rc2, EDDY_ESCHEMA);
        assert_string_equal(e.msg, "/l/1: \"x1\" repeats item 0 (uniqueItems is true)");
        assert_true(n >= 4); /* three patterns and the hash array */
        done = 1;
    }
    assert_true(done);
    json_decref(s);
    json_decref(ok);
    json_decref(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type),         cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_objects),      cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_numbers),      cmocka_unit_test(test_strings),
        cmocka_unit_test(test_pointers),     cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_huge),         cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_unchecked),    cmocka_unit_test(test_check),
        cmocka_unit_test(test_check_buffer), cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests_name("jschema", tests, NULL, NULL);
}
