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

/* ARGS (a tool call's JSON text) as an object (new), {} when empty, NULL
 * when it is not a JSON object. */
json_t *eddy__llm_args_object(const char *args);

/* The endpoint BASE_URL + PATH without doubled slashes (new string). */
char *eddy__llm_join_url(const char *base_url, const char *path);

#endif
