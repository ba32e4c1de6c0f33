/* core/json_parse_int.h - the fast parser of core/json_parse.c alone, for tests. */
#ifndef EDDY_JSON_PARSE_INT_H
#define EDDY_JSON_PARSE_INT_H

#include <jansson.h>
#include <stddef.h>

/* The value of BUF (LEN bytes) when the fast path takes it, else NULL (with
 * no fallback to jansson). A new value. */
json_t *eddy__json_parse_fast(const char *buf, size_t len, size_t flags);

#endif
