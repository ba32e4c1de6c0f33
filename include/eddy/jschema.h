/*
 * include/eddy/jschema.h - JSON Schema validation of structured LLM output.
 *
 * eddy enforces a subset of JSON Schema (draft 6 and later), and refuses any
 * schema that uses more: a job is never validated less strictly than its
 * author believes. Supported keywords:
 *
 *   type (string, number, integer, boolean, object, array, null, or an array
 *   of those; "integer" is a JSON integer or a real with no fractional part,
 *   "number" takes integers too), enum, const, required, properties,
 *   additionalProperties (true, false or a schema), items (one schema for
 *   every item), minItems, maxItems, uniqueItems, minimum, maximum,
 *   exclusiveMinimum, exclusiveMaximum (numbers, not draft 4's booleans),
 *   multipleOf, minLength, maxLength (in Unicode code points), pattern,
 *   minProperties, maxProperties; and the annotations title, description,
 *   default, examples, $schema, $id, $comment, which are not enforced.
 *
 * Refused: $ref and $defs, oneOf, anyOf, allOf, not, if/then/else,
 * patternProperties, prefixItems and the other keywords of the spec, any
 * keyword eddy does not know, and also `format`: the spec lets a validator
 * treat it as an annotation, but authors who write "format": "email" expect
 * it checked, so eddy says it is not rather than let it pass. Use `pattern`.
 *
 * Where eddy's semantics are its own:
 * - pattern is a POSIX extended regular expression (regcomp with
 *   REG_EXTENDED), not ECMA-262 as the spec says. The search is unanchored,
 *   as the spec says (write ^...$ to match the whole string). Text that
 *   means something else in ECMA-262 is refused by eddy_jschema_check rather
 *   than matched differently: a backslash before a letter or digit ("\d",
 *   "\w", "\n", back-references), a backslash inside [...] (a literal
 *   backslash in POSIX), and "(?". Matching is in UTF-8 whatever the
 *   process's locale ('.' and [...] take whole code points; [[:alpha:]] and
 *   the other classes are C.UTF-8's), where the C library has the C.UTF-8
 *   locale (glibc 2.35 and later always do; without it, bytes). '.' matches
 *   a newline, and ^ and $ only the ends of the string.
 * - Numbers compare exactly, integers with reals too (2^53 + 1 is more than
 *   the maximum 9007199254740992.0). enum, const and uniqueItems compare
 *   numbers by value: 1 and 1.0 are equal.
 * - multipleOf is decided in decimal, on the shortest decimal text of each
 *   number (for a real, what the model wrote unless it wrote more than 17
 *   significant digits): 12.34 is a multiple of 0.01, although 12.34 / 0.01
 *   is not an integer in binary floating point.
 * - Schemas nest at most EDDY_JSCHEMA_MAX_DEPTH levels (the outermost is
 *   level 1; every schema under properties, items or additionalProperties
 *   is one level deeper), and so do values inside enum and const. The
 *   validator's recursion follows the schema, so it is bounded too; items
 *   compared for uniqueItems may nest at most EDDY_JSCHEMA_MAX_DEPTH levels
 *   (deeper ones fail validation with that said).
 *
 * Messages name the place as a JSON pointer (RFC 6901: '~' is written "~0",
 * '/' "~1"), the outermost value shown as "/" (so a property named "" at the
 * top also shows as "/"). Values quoted in messages are cut to about 60
 * bytes (never inside a UTF-8 sequence), so a message always fits an
 * eddy_err.
 *
 * Nothing is kept between calls (but one C.UTF-8 locale object, made on
 * first use and switched to only by the calling thread, with uselocale,
 * while it compiles or runs a pattern): any thread may call these,
 * concurrently on the same schema, as long as nothing modifies the schema or
 * the value during the call. Neither function takes a reference. Cost: the
 * schema is checked, and its patterns compiled, on every validation.
 */
#ifndef EDDY_JSCHEMA_H
#define EDDY_JSCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "eddy/error.h"

/* How deep schemas (and values inside enum and const) may nest. */
#define EDDY_JSCHEMA_MAX_DEPTH 64

/*
 * Check that SCHEMA (borrowed) is a schema eddy can enforce, as described
 * above: an object with only supported keywords and annotations, each of
 * the right form (numbers where numbers belong, counts that are
 * non-negative integers, patterns that compile, nested schemas checked the
 * same way). Returns 0; EDDY_ESCHEMA with the first problem in MSG (CAP
 * bytes, NUL-terminated and cut at a UTF-8 boundary when it is too small;
 * MSG may be NULL when CAP is 0), naming its JSON pointer within SCHEMA:
 * "/properties/age/minimum: must be a number", "/oneOf: eddy does not
 * enforce 'oneOf'"; EDDY_EINVAL for a NULL SCHEMA; EDDY_ENOMEM when regcomp
 * runs out of memory. Any thread.
 */
int eddy_jschema_check(json_t *schema, char *msg, size_t cap);

/*
 * Validate VALUE (borrowed) against SCHEMA (borrowed). SCHEMA is checked
 * first, every time, as eddy_jschema_check does: a schema eddy cannot
 * enforce fails whatever VALUE is. Returns 0 when VALUE is valid;
 * EDDY_ESCHEMA when it is not, with ERR (may be NULL) holding one message,
 * for the first failure met (keywords in a fixed order, members and items
 * in order), that names the offending value's JSON pointer and what was
 * expected: "/items/2/price: 12.5 is more than the maximum 10",
 * "/: missing required property 'status'", "/: expected object, got string";
 * EDDY_EINVAL when SCHEMA is not one eddy can enforce (ERR: "schema " and
 * eddy_jschema_check's message) or an argument is NULL, so a caller can tell
 * bad output (retry the model) from a bad schema (fix the job);
 * EDDY_ENOMEM. Any thread.
 */
int eddy_jschema_validate(json_t *schema, json_t *value, eddy_err *err);

#endif
