/*
 * include/eddy/json.h - small helpers over jansson shared by every module.
 */
#ifndef EDDY_JSON_H
#define EDDY_JSON_H

#include <jansson.h>

/* Value at dotted PATH ("customer.id") in ROOT; borrowed, NULL when absent. */
json_t *eddy_json_path(json_t *root, const char *path);

/* Value as a key string: strings as they are, integers and reals printed,
 * true/false; NULL for null, objects and arrays. Caller frees. */
char *eddy_json_key_string(json_t *v);

/* Compact JSON text of V (NULL-safe: "null"); caller frees with eddy_free. */
char *eddy_json_dumps(const json_t *v);

/* String member NAME of object O, or DEF. Borrowed. */
const char *eddy_json_str(json_t *o, const char *name, const char *def);
/* Integer member NAME of object O (integers only), or DEF. */
long long eddy_json_int(json_t *o, const char *name, long long def);

#endif
