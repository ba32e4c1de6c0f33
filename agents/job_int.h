/*
 * agents/job_int.h - what the files of the job loader share.
 *
 * A vctx is one validation pass over one document. The getters read one
 * member of a mapping, report a problem with its file:line:col into the
 * diagnostics (counting it in c->errors) and return the default, so that
 * validation goes on and one `eddy check` lists every problem. PATH is the
 * JSON pointer of the mapping ("/models/default"); positions come from
 * yaml.c. No other module includes this.
 */
#ifndef EDDY_JOB_INT_H
#define EDDY_JOB_INT_H

#include <jansson.h>
#include <stdint.h>

#include "eddy/agent.h"

typedef struct vctx {
    eddy_yaml_doc *doc;
    eddy_diag *diag;
    eddy_job *job;
    int errors;
} vctx;

/* "file:line:col" of PATH (its key when KEY) into the caller's char where[]. */
#define WHERE(c, path, key) eddy_yaml_where((c)->doc, (path), (key), where, sizeof(where))

#define MS_DAY (86400LL * 1000)

#define S_REQ 1      /* eddy__job_str: must be present (and then not empty) */
#define S_NONEMPTY 2 /* eddy__job_str: may be absent, but not "" */

/* Report a problem at PATH (its key when KEY). */
void eddy__job_err(vctx *c, const char *path, int key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "a mapping", "an integer", ... for messages. */
const char *eddy__job_type(json_t *v);
/* PATH/KEY into OUT. */
void eddy__job_join(char *out, size_t n, const char *path, const char *key);
/* Report the keys of mapping V at PATH that are not in ALLOWED (NULL-ended),
 * with a "did you mean" when one is close. */
void eddy__job_keys(vctx *c, json_t *v, const char *path, const char *const *allowed);
/* Member KEY of mapping V (borrowed); reported when REQUIRED and missing. */
json_t *eddy__job_member(vctx *c, json_t *v, const char *path, const char *key, int required);
/* The text of the scalar at PATH when it was wholly one ${...} (before it
 * was typed), else NULL; borrowed from the document. */
const char *eddy__job_env_text(vctx *c, const char *path);
/* What the environment gave the scalar at PATH (an array of the non-empty
 * values its ${...} took), or NULL; borrowed from the document. */
json_t *eddy__job_env_values(vctx *c, const char *path);
/* The members KEYS of V that were wholly one ${...} become their text again. */
void eddy__job_env_strings(vctx *c, json_t *v, const char *path, const char *const *keys);

/* Free what R holds and zero it. */
void eddy__tool_ref_clear(eddy_tool_ref *r);

/* Typed members. Absent or null: DEF (eddy__job_str: a copy of DEF, or NULL;
 * FLAGS are S_REQ / S_NONEMPTY). Numbers outside [MIN, MAX] are reported as
 * "'KEY' must be between MIN and MAX". Strings are new, the rest borrowed. */
char *eddy__job_str(vctx *c, json_t *v, const char *path, const char *key, int flags,
                    const char *def);
long long eddy__job_int(vctx *c, json_t *v, const char *path, const char *key, long long def,
                        long long min, long long max);
int eddy__job_bool(vctx *c, json_t *v, const char *path, const char *key, int def);
/* Milliseconds: "250ms", "2s", "1.5m", "2h", "30d" or a number of seconds. */
int64_t eddy__job_duration(vctx *c, json_t *v, const char *path, const char *key, int64_t def,
                           int64_t min_ms, int64_t max_ms);
/* Bytes: a number, or one with B, KB, MB, GB, KiB, MiB, GiB. */
int64_t eddy__job_size(vctx *c, json_t *v, const char *path, const char *key, int64_t def,
                       int64_t min, int64_t max);
/* A mapping member, or NULL (reported when present but not a mapping). */
json_t *eddy__job_map(vctx *c, json_t *v, const char *path, const char *key, int required);

#endif
