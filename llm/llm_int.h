/*
 * llm/llm_int.h - what the files of llm/ share and nobody else sees.
 */
#ifndef EDDY_LLM_INT_H
#define EDDY_LLM_INT_H

#include "eddy/llm.h"

extern const eddy_llm_provider eddy__llm_openai;
extern const eddy_llm_provider eddy__llm_anthropic;
extern const eddy_llm_provider eddy__llm_ollama;

/* Whether U has no counts at all (the server sent no usage). */
int eddy__llm_usage_missing(eddy_llm_usage *u);

/* error_info for bodies shaped {"error": {"code"|"type", "message"}},
 * {"error": "text"}, {"detail": ...} or plain text. */
void eddy__llm_error_info_json(const char *body, size_t len, eddy_llm_error_info *out);

/* The error a 2xx body or stream chunk of OpenAI or Ollama carries
 * ({"error": "..."} or {"error": {"message"}}): EDDY_ELLM; 0 when none. */
int eddy__llm_body_error(json_t *root, eddy_err *err);

/* ADD the header PREFIX + KEY when KEY is set; the line is wiped after use. */
void eddy__llm_secret_header(void (*add)(void *ud, const char *line), void *ud, const char *prefix,
                             const char *key);
/* Headers of providers that take the key as "Authorization: Bearer KEY". */
void eddy__llm_bearer_headers(const eddy_llm_model *m, void (*add)(void *ud, const char *line),
                              void *ud);
/* R's raw finish reason becomes a copy of S. */
void eddy__llm_set_finish(eddy_llm_response *r, const char *s);

/* ARGS (a tool call's JSON text) as an object (new), {} when empty, NULL
 * when it is not a JSON object. */
json_t *eddy__llm_args_object(const char *args);

/* RQ's tools as OpenAI function definitions (new array; the elements are
 * cached in the definitions). NULL on OOM. */
json_t *eddy__llm_function_tools(const eddy_llm_request *rq);

/* O[K] = the string S (NULL: nothing set), without jansson's UTF-8 check:
 * every string of a neutral message is valid UTF-8 already (from JSON,
 * templates checked at load, or the tool host's JSON). 0 or -1 on OOM. */
int eddy__llm_set_str(json_t *o, const char *k, const char *s);

/* The endpoint BASE_URL + PATH without doubled slashes (new string). */
char *eddy__llm_join_url(const char *base_url, const char *path);

#endif
