/*
 * include/eddy/prompt.h - prompt templates.
 *
 * A template is text with {{path}} placeholders, where path is dotted:
 * {{event.text}}, {{memory.name}}, {{key}}, {{agent}}. {{path?}} renders as
 * empty when the value is missing; plain {{path}} makes a missing value an
 * error. Objects and arrays render as compact JSON, strings as they are,
 * numbers as the shortest text that reads back (71.1; a real keeps its
 * point: 72.0). {{{{ writes a literal "{{".
 */
#ifndef EDDY_PROMPT_H
#define EDDY_PROMPT_H

#include <jansson.h>
#include <stddef.h>

#include "eddy/error.h"

typedef struct eddy_template eddy_template;

/* Compile TEXT; ORIGIN ("prompts/support.md" or "job.yaml:12:9") names it in
 * errors. LINE0/COL0 are the 1-based position of TEXT's first character in
 * ORIGIN (1,1 for a file); columns count characters. TEXT must be UTF-8.
 * Returns 0 or EDDY_ETEMPLATE/EDDY_ENOMEM with ERR naming origin:line:col
 * (of the first bad byte when TEXT is not UTF-8). */
int eddy_template_new(const char *text, const char *origin, int line0, int col0,
                      eddy_template **out, eddy_err *err);
void eddy_template_free(eddy_template *t);

/* Number of placeholders and the I-th one: its path (borrowed), whether it is
 * optional, and its position in the origin. */
size_t eddy_template_nvars(const eddy_template *t);
const char *eddy_template_var(const eddy_template *t, size_t i, int *optional, int *line, int *col);
const char *eddy_template_origin(const eddy_template *t);

/* Render against CTX (borrowed object whose members are the roots: event,
 * memory, key, agent). *OUT is new, caller frees. Returns 0, EDDY_ENOMEM, or
 * EDDY_ETEMPLATE naming the variable and its place (missing, or a value with
 * invalid UTF-8 that cannot be written as JSON). */
int eddy_template_render(const eddy_template *t, json_t *ctx, char **out, eddy_err *err);

#endif
