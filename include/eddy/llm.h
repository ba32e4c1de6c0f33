/*
 * include/eddy/llm.h - the LLM client.
 *
 * OpenAI-compatible chat completions over libcurl's multi-socket API, driven
 * by one libuv loop: many requests in flight on one thread, nothing blocks.
 * Retries follow wire-notes.md (connection errors, 408, 409, 429, 5xx;
 * retry-after-ms, then retry-after; else exponential backoff with jitter).
 * The API key is sent in a header and never logged or traced.
 */
#ifndef EDDY_LLM_H
#define EDDY_LLM_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

/* One configured model endpoint; strings are owned by whoever filled it (the
 * job). The client only borrows it for the life of its requests. */
typedef struct eddy_llm_model {
    char *name;     /* the job's name for it ("default") */
    char *provider; /* "openai" */
    char *base_url; /* "https://api.openai.com/v1" */
    char *api_key;  /* secret */
    char *model;    /* "gpt-4o-mini" */
    int64_t timeout_ms;
    int max_attempts;
    int64_t backoff_base_ms, backoff_cap_ms;
    int concurrency; /* requests in flight to this model from one client */
    long max_tokens; /* 0: not sent */
    double temperature;
    int has_temperature;
} eddy_llm_model;

typedef struct eddy_llm_usage {
    long input_tokens, output_tokens, total_tokens, cached_tokens;
} eddy_llm_usage;

typedef struct eddy_llm_response {
    json_t *message;    /* assistant message to append to the conversation (new) */
    char *content;      /* its text, or NULL */
    json_t *tool_calls; /* array of {id, name, arguments|null, arguments_raw, error?} (new) */
    char *finish_reason;
    char *id, *model;
    eddy_llm_usage usage;
} eddy_llm_response;

typedef struct eddy_llm_result {
    int status; /* 0 or EDDY_E*; err has the detail */
    eddy_err err;
    long http_status;
    int attempts;
    uint64_t latency_ms; /* first send to final answer, retries included */
    eddy_llm_response resp;
} eddy_llm_result;

/* Called exactly once per started request, on the client's loop. RES is
 * borrowed for the call; steal members (setting them NULL) to keep them. */
typedef void (*eddy_llm_cb)(eddy_llm_result *res, void *ud);

typedef struct eddy_llm_client eddy_llm_client;
typedef struct eddy_llm_req eddy_llm_req;

/* New client on LOOP (the loop's thread is the only one that may use it). */
int eddy_llm_client_new(uv_loop_t *loop, eddy_llm_client **out, eddy_err *err);

/* Cancel what is in flight (callbacks get EDDY_ECANCELED) and close the
 * client's handles; memory is released once the loop has run the closes. */
void eddy_llm_client_close(eddy_llm_client *c);

/* Start a chat completion: MESSAGES (array) and TOOLS (array of OpenAI tool
 * definitions, or NULL) are borrowed and copied into the request body before
 * returning. *OUT (may be NULL) gets a handle valid until CB runs. Returns 0
 * (CB will run exactly once, never inside this call) or an error (CB never
 * runs). */
int eddy_llm_chat(eddy_llm_client *c, const eddy_llm_model *m, json_t *messages, json_t *tools,
                  eddy_llm_cb cb, void *ud, eddy_llm_req **out, eddy_err *err);

/* Cancel REQ: its callback runs soon with EDDY_ECANCELED. */
void eddy_llm_cancel(eddy_llm_req *req);

/* Requests started and currently in flight on C (for summaries). */
long eddy_llm_client_in_flight(const eddy_llm_client *c);

/* -- pure functions, exposed for tests ----------------------------------- */

/* Request body for M; new reference. NULL on out-of-memory. */
json_t *eddy_llm_build_openai(const eddy_llm_model *m, json_t *messages, json_t *tools);

/* Parse a chat-completions response body into OUT (cleared first).
 * Returns 0, or EDDY_EPARSE/EDDY_ELLM with ERR saying what is wrong. */
int eddy_llm_parse_openai(const char *body, size_t len, eddy_llm_response *out, eddy_err *err);

void eddy_llm_response_clear(eddy_llm_response *r);

/* The retry decision after attempt ATTEMPT (1-based) ended with HTTP
 * status HTTP (0 when there was no response) or a transport failure
 * (TRANSPORT_FAILED != 0). RETRY_AFTER_MS / RETRY_AFTER are the response
 * headers or NULL; ERROR_CODE is the body's error.code or NULL. JITTER in
 * [0,1). Returns the delay in ms before the next attempt, or -1: no retry. */
int64_t eddy_llm_retry_delay(const eddy_llm_model *m, int attempt, long http, int transport_failed,
                             const char *retry_after_ms, const char *retry_after,
                             const char *error_code, double jitter);

#endif
