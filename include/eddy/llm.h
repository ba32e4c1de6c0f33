/*
 * include/eddy/llm.h - the LLM layer: provider-neutral conversations and
 * the client that sends them.
 *
 * Agents, tools and memory speak only the neutral types below: a
 * conversation of messages (system, user, assistant, tool) whose parts are
 * text, tool calls and tool results; tool definitions; a response with a
 * normalized finish reason and usage. Providers (llm/openai.c,
 * llm/anthropic.c, llm/ollama.c: one table of functions each) turn them into
 * wire bodies and back, plain or streamed.
 *
 * The client runs requests over libcurl's multi-socket API on one libuv
 * loop: many in flight on one thread, nothing blocks. Per model it enforces
 * concurrency, requests and tokens per minute (token buckets, FIFO waiters,
 * one timer per limiter) for the whole process, across the clients of all
 * worker loops; it retries (wire-notes.md) and falls back to other models.
 * API keys are sent in headers and never appear in logs, traces, errors or
 * results.
 */
#ifndef EDDY_LLM_H
#define EDDY_LLM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

struct eddy_buf;

/* -- the neutral conversation ------------------------------------------------ */

typedef enum eddy_llm_role {
    EDDY_ROLE_SYSTEM,
    EDDY_ROLE_USER,
    EDDY_ROLE_ASSISTANT,
    EDDY_ROLE_TOOL /* carries tool results */
} eddy_llm_role;

typedef enum eddy_llm_part_kind {
    EDDY_PART_TEXT,
    EDDY_PART_TOOL_CALL,  /* assistant: the model asks for a tool */
    EDDY_PART_TOOL_RESULT /* tool: what a tool answered */
} eddy_llm_part_kind;

/* One part; every string is owned by the part (freed with its message). */
typedef struct eddy_llm_part {
    eddy_llm_part_kind kind;
    char *text;   /* TEXT: the text; TOOL_RESULT: the result as text */
    char *id;     /* TOOL_CALL, TOOL_RESULT: the call id */
    char *name;   /* TOOL_CALL, TOOL_RESULT: the tool */
    char *args;   /* TOOL_CALL: the arguments as JSON text, as the model wrote them */
    int is_error; /* TOOL_RESULT: the tool failed; TEXT is the error */
} eddy_llm_part;

typedef struct eddy_llm_msg {
    eddy_llm_role role;
    eddy_llm_part *parts;
    size_t nparts, cap;
    /* The message's wire form for the provider WIRE_FOR, built once and reused
     * by every request of a conversation (providers' business: see
     * eddy_llm_msg_wire); dropped when a part is added or the message cleared. */
    json_t *wire;
    const void *wire_for;
} eddy_llm_msg;

/* The cached wire form of M for provider P, or NULL. */
json_t *eddy_llm_msg_wire(const eddy_llm_msg *m, const void *p);
/* Keep W (a new reference, taken) as M's wire form for P; M is logically
 * const (the cache does not change what M says). Returns W, borrowed. */
json_t *eddy_llm_msg_set_wire(const eddy_llm_msg *m, const void *p, json_t *w);

/* A conversation; owns its messages. Zero-initialized is empty. */
typedef struct eddy_llm_conv {
    eddy_llm_msg *msgs;
    size_t n, cap;
} eddy_llm_conv;

/* Append a message with ROLE and no parts; NULL on out-of-memory. The
 * pointer is valid until the next append. */
eddy_llm_msg *eddy_llm_conv_add(eddy_llm_conv *c, eddy_llm_role role);
/* Append a deep copy of M. Returns 0 or EDDY_ENOMEM (C unchanged). */
int eddy_llm_conv_add_copy(eddy_llm_conv *c, const eddy_llm_msg *m);
/* Drop the messages from index N on. */
void eddy_llm_conv_truncate(eddy_llm_conv *c, size_t n);
void eddy_llm_conv_clear(eddy_llm_conv *c);

/* Add parts to M; strings are copied (NULL ones stay NULL; ARGS NULL or
 * empty becomes "{}"). Return 0 or EDDY_ENOMEM (M unchanged). */
int eddy_llm_msg_text(eddy_llm_msg *m, const char *text);
int eddy_llm_msg_text_n(eddy_llm_msg *m, const char *text, size_t n);
int eddy_llm_msg_tool_call(eddy_llm_msg *m, const char *id, const char *name, const char *args);
int eddy_llm_msg_tool_result(eddy_llm_msg *m, const char *id, const char *name, const char *text,
                             int is_error);
void eddy_llm_msg_clear(eddy_llm_msg *m);
/* The text parts of M joined (new string, "" when none); NULL on OOM. */
char *eddy_llm_msg_join_text(const eddy_llm_msg *m);
/* Number of parts of KIND in M. */
size_t eddy_llm_msg_count(const eddy_llm_msg *m, eddy_llm_part_kind kind);

const char *eddy_llm_role_name(eddy_llm_role r);

/* -- history format ---------------------------------------------------------
 *
 * Stored history is the neutral form as JSON, format version
 * EDDY_LLM_HISTORY_VERSION:
 *   {"role": "assistant", "parts": [{"type": "text", "text": "..."},
 *     {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": "{...}"}]}
 *   {"role": "tool", "parts": [{"type": "tool_result", "id": "c1",
 *     "name": "lookup", "content": "...", "is_error": false}]}
 * Version 1 (eddy before the neutral layer) stored OpenAI chat messages;
 * eddy_llm_history_upgrade turns those into version 2.
 */
#define EDDY_LLM_HISTORY_VERSION 2

/* M as JSON (new reference; NULL on OOM). */
json_t *eddy_llm_msg_to_json(const eddy_llm_msg *m);
/* Append M's JSON text to B: the text eddy_llm_msg_to_json's value dumps to
 * (compact, the same keys in the same order), without building it. Returns
 * 0; EDDY_EINVAL (a string is not UTF-8; B as it was) or EDDY_ENOMEM (B's
 * oom set). */
int eddy_llm_msg_write(struct eddy_buf *b, const eddy_llm_msg *m);
/* Append the messages of the JSON array ARR (version 2) to C. Returns 0 or
 * EDDY_ECORRUPT/EDDY_ENOMEM with ERR naming the bad message; C keeps what
 * came before. */
int eddy_llm_conv_from_json(eddy_llm_conv *c, json_t *arr, eddy_err *err);
/* A version-1 array of OpenAI messages as a version-2 array (new
 * reference). Tool results get the name of the call they answer. NULL with
 * ERR set when ARR is not a readable version-1 history. */
json_t *eddy_llm_history_upgrade(json_t *arr, eddy_err *err);

/* -- tools, requests, responses --------------------------------------------- */

/* A tool offered to the model; borrowed from its owner (tools/). */
typedef struct eddy_llm_tool_def {
    const char *name;
    const char *description;
    json_t *parameters; /* JSON schema of the arguments (an object schema) */
    /* the definition's wire form for WIRE_FOR, built once (providers' cache,
     * as eddy_llm_msg's; the owner of the array frees WIRE with it) */
    json_t *wire;
    const void *wire_for;
} eddy_llm_tool_def;

/* What the model may do with the tools (agents' `tool_choice:`). */
typedef enum eddy_llm_tool_choice {
    EDDY_TOOL_CHOICE_DEFAULT, /* not sent */
    EDDY_TOOL_CHOICE_AUTO,
    EDDY_TOOL_CHOICE_REQUIRED,
    EDDY_TOOL_CHOICE_NONE,
    EDDY_TOOL_CHOICE_TOOL /* the tool named tool_choice_name */
} eddy_llm_tool_choice;

/* One chat request; everything borrowed for the duration of eddy_llm_chat
 * (the body is built before it returns, and again from the same request
 * only for a fallback model, so the caller keeps it alive until its
 * callback has run). */
typedef struct eddy_llm_request {
    const eddy_llm_conv *conv;
    const eddy_llm_tool_def *tools;
    size_t ntools;
    eddy_llm_tool_choice tool_choice;
    const char *tool_choice_name;
    json_t *output_schema;   /* structured output: a JSON schema, or NULL */
    const char *output_name; /* its name for providers that want one ("answer") */
} eddy_llm_request;

/* The tool name providers that force a tool for structured output use;
 * a job cannot name a tool so. */
#define EDDY_LLM_OUTPUT_TOOL "eddy_structured_output"

typedef enum eddy_llm_finish {
    EDDY_FINISH_STOP,
    EDDY_FINISH_TOOL_CALLS,
    EDDY_FINISH_LENGTH,
    EDDY_FINISH_CONTENT_FILTER,
    EDDY_FINISH_ERROR
} eddy_llm_finish;

const char *eddy_llm_finish_name(eddy_llm_finish f); /* "stop", "tool_calls", ... */

typedef struct eddy_llm_usage {
    long input_tokens;        /* prompt, cached part included */
    long output_tokens;       /* completion, reasoning included */
    long cached_input_tokens; /* read from a prompt cache */
    long cache_write_tokens;  /* written to a prompt cache (Anthropic) */
    long reasoning_tokens;
    int estimated; /* the server sent no usage: eddy estimated (bytes / 4) */
} eddy_llm_usage;

typedef struct eddy_llm_response {
    eddy_llm_msg message; /* assistant: text and tool-call parts, in order */
    eddy_llm_finish finish;
    char *finish_raw; /* as the server said it ("end_turn"), or NULL */
    char *id, *model; /* the server's response id and the model that answered */
    eddy_llm_usage usage;
} eddy_llm_response;

void eddy_llm_response_clear(eddy_llm_response *r);

/* -- models ----------------------------------------------------------------- */

typedef struct eddy_llm_provider eddy_llm_provider;

/* One configured model endpoint; strings are owned by whoever filled it (the
 * job). The client borrows it for the life of its requests. */
typedef struct eddy_llm_model {
    char *name;     /* the job's name for it ("default") */
    char *provider; /* "openai", "anthropic", "ollama" */
    const eddy_llm_provider *prov;
    char *base_url;                 /* "https://api.openai.com/v1" */
    char *api_key;                  /* secret (from api_key or api_key_file) */
    char *model;                    /* "gpt-4o-mini" */
    char *api_version;              /* Anthropic's anthropic-version; NULL: 2023-06-01 */
    int64_t timeout_ms;             /* whole request */
    int64_t connect_timeout_ms;     /* 0: min(timeout, 10 s) */
    int64_t first_token_timeout_ms; /* streaming: request sent -> first chunk; 0 = off */
    int64_t idle_timeout_ms;        /* streaming: between chunks; 0 = off */
    int stream;
    int max_attempts;
    int64_t backoff_base_ms, backoff_cap_ms;
    int64_t max_wait_ms;    /* a retry-after longer than this ends the call */
    int64_t unavailable_ms; /* keep retrying connection refused / 503 this long */
    int concurrency;        /* requests in flight to this model */
    double requests_per_minute, tokens_per_minute; /* 0: no limit */
    long max_tokens; /* 0: not sent (Anthropic: 4096, it is required) */
    double temperature;
    int has_temperature;
    int prompt_cache; /* Anthropic: cache_control on the stable prefix */
    double price_input, price_output, price_cached_input; /* per million tokens */
    int has_price;
    struct eddy_llm_model **fallback; /* borrowed, tried in order */
    size_t nfallback;
} eddy_llm_model;

/* Cost in the price's currency of USAGE on M (0 when M has no price). */
double eddy_llm_cost(const eddy_llm_model *m, const eddy_llm_usage *u);

/* -- providers ---------------------------------------------------------------
 *
 * A provider is one table of pure functions; the client does the I/O.
 * Adding one is a file in llm/ and a line in llm/provider.c's list.
 */

typedef enum eddy_llm_framing { EDDY_FRAMING_SSE, EDDY_FRAMING_NDJSON } eddy_llm_framing;

typedef struct eddy_llm_stream eddy_llm_stream;

/* What an error answer said, for messages and the retry decision. */
typedef struct eddy_llm_error_info {
    char code[64];     /* the body's error code/type ("insufficient_quota"), or "" */
    char message[512]; /* the server's message, bounded, or "" */
    int overloaded;    /* the server says it is overloaded (Anthropic 529) */
} eddy_llm_error_info;

struct eddy_llm_provider {
    const char *name;
    eddy_llm_framing framing;
    /* The endpoint for M (new string; NULL on OOM). */
    char *(*url)(const eddy_llm_model *m);
    /* Headers beside Content-Type, one "Name: value" line per call of ADD
     * (the key among them: ADD's owner wipes it after use). */
    void (*headers)(const eddy_llm_model *m, void (*add)(void *ud, const char *line), void *ud);
    /* The request body: BUILD gives it as a tree (new reference; NULL on
     * OOM), or WRITE appends its JSON text to B (0, or EDDY_ENOMEM /
     * EDDY_EINVAL); a provider has one of them. STREAM asks for a stream. */
    json_t *(*build)(const eddy_llm_model *m, const eddy_llm_request *rq, int stream);
    int (*write)(const eddy_llm_model *m, const eddy_llm_request *rq, int stream,
                 struct eddy_buf *b);
    /* Read a whole 2xx body, parsed to ROOT (borrowed), into OUT (zeroed, an
     * assistant message). 0, or EDDY_EPARSE / EDDY_ELLM with ERR saying what
     * is wrong (the caller clears OUT then). Called by eddy_llm_parse. */
    int (*parse)(const eddy_llm_request *rq, json_t *root, eddy_llm_response *out, eddy_err *err);
    /* One streamed event (SSE: its event name or NULL, and its data; NDJSON:
     * the line, NAME NULL) into ST's accumulator. 0, or an error that ends
     * the stream (an in-stream error event: EDDY_ELLM with the message). */
    int (*event)(eddy_llm_stream *st, const char *name, const char *data, size_t len,
                 eddy_err *err);
    /* Read an error body (may be empty or not JSON) into OUT (zeroed first). */
    void (*error_info)(const char *body, size_t len, eddy_llm_error_info *out);
};

/* The provider called NAME, or NULL. */
const eddy_llm_provider *eddy_llm_provider_find(const char *name);
/* "openai, anthropic, ollama": for messages. */
const char *eddy_llm_provider_names(void);

/* Headers PROV sends for M, one string per line (new array of strings,
 * for golden tests; the key's line included). */
json_t *eddy_llm_headers_json(const eddy_llm_model *m);

/* -- streams ------------------------------------------------------------------
 *
 * A stream turns the bytes of a streamed answer (any split) into the same
 * response the plain answer gives. Used by the client; public for tests.
 */
eddy_llm_stream *eddy_llm_stream_new(const eddy_llm_provider *p, const eddy_llm_request *rq);
/* Feed N bytes. 0, or an error (then the stream is done). */
int eddy_llm_stream_feed(eddy_llm_stream *st, const char *p, size_t n, eddy_err *err);
/* Whether the provider's end marker arrived ([DONE], message_stop, done). */
int eddy_llm_stream_ended(const eddy_llm_stream *st);
/* Whether any event arrived (for time to first token). */
int eddy_llm_stream_started(const eddy_llm_stream *st);
/* The assembled response into OUT (the stream keeps nothing). 0, or
 * EDDY_EPARSE when the stream ended before its end marker. */
int eddy_llm_stream_finish(eddy_llm_stream *st, eddy_llm_response *out, eddy_err *err);
void eddy_llm_stream_free(eddy_llm_stream *st);

/* Accumulator, for providers' event functions. Text and tool calls keep the
 * order of their first appearance. A tool call is found by INDEX, and when
 * ID is given and differs from the one at INDEX, by ID (servers that give
 * every call index 0); INDEX < 0: by ID only, else a new call. Strings are
 * copied; NULL leaves a field as it is. */
int eddy_llm_stream_text(eddy_llm_stream *st, const char *text, size_t n);
int eddy_llm_stream_tool(eddy_llm_stream *st, long index, const char *id, const char *name,
                         const char *args, size_t args_len);
/* Replace the arguments of the call found by INDEX / ID as above, or add a
 * call (servers that send arguments whole, possibly more than once). */
int eddy_llm_stream_tool_args_set(eddy_llm_stream *st, long index, const char *id,
                                  const char *args);
eddy_llm_response *eddy_llm_stream_resp(eddy_llm_stream *st); /* id, model, usage, finish */
void eddy_llm_stream_end(eddy_llm_stream *st);
const eddy_llm_request *eddy_llm_stream_request(const eddy_llm_stream *st);

/* -- pure functions, for tests and providers ---------------------------------- */

/* The body M's provider sends for RQ, as a tree (new reference; a written
 * body parsed back). NULL on failure. */
json_t *eddy_llm_build(const eddy_llm_model *m, const eddy_llm_request *rq, int stream);
/* Parse a whole 2xx body of M's provider. */
int eddy_llm_parse(const eddy_llm_model *m, const eddy_llm_request *rq, const char *body,
                   size_t len, eddy_llm_response *out, eddy_err *err);
/* Map a provider's finish string ("end_turn", "tool_calls", "max_tokens",
 * ...) to the neutral reason; unknown strings are STOP. */
eddy_llm_finish eddy_llm_finish_from(const char *s);
/* Estimated tokens of a request body of N bytes (N / 4, at least 1). */
long eddy_llm_estimate_tokens(size_t n);

/* The retry decision after attempt ATTEMPT (1-based) ended with HTTP status
 * HTTP (0 when there was no response) or a transport failure
 * (TRANSPORT_FAILED != 0). RETRY_AFTER_MS / RETRY_AFTER are the response
 * headers or NULL; ERROR_CODE is the body's error code or NULL. JITTER in
 * [0,1). Returns the delay in ms before the next attempt, or -1: no retry.
 * A server's hint is followed exactly (never earlier); one longer than
 * M->max_wait_ms (0: any wait at all) returns -2 (the caller ends the call
 * saying so). */
int64_t eddy_llm_retry_delay(const eddy_llm_model *m, int attempt, long http, int transport_failed,
                             const char *retry_after_ms, const char *retry_after,
                             const char *error_code, double jitter);
/* A retry-after header value (seconds or an HTTP date) in ms, at most
 * 10^12; -1 when unreadable. */
int64_t eddy_llm_parse_retry_after(const char *v);
/* A retry-after-ms header value in ms, at most 10^12; -1 when unreadable
 * (NULL, empty, negative, not a number). */
int64_t eddy_llm_parse_retry_ms(const char *v);

/* Usage counts above this are taken as this (a server's absurd numbers must
 * not overflow totals or stall a rate limiter). */
#define EDDY_LLM_MAX_USAGE 1000000000000L
/* A rate-limit reset ("6m0s", "1.5s", "20ms", "2026-12-01T10:00:00Z") in ms
 * from now; -1 when unreadable. */
int64_t eddy_llm_parse_reset(const char *v);

/* -- the client ----------------------------------------------------------------- */

typedef struct eddy_llm_result {
    int status; /* 0 or EDDY_E*; err has the detail (the server's message too) */
    eddy_err err;
    long http_status;
    int attempts;                /* over every model tried */
    uint64_t latency_ms;         /* first send to final answer, retries included */
    uint64_t first_token_ms;     /* streaming: send -> first chunk of the last attempt */
    uint64_t queued_ms;          /* waiting for a rate-limit or concurrency slot */
    uint64_t first_wait_ms;      /* of it, before the first attempt */
    const eddy_llm_model *model; /* the model that answered (or failed last) */
    char fallback_reason[256];   /* why the previous model was left, or "" */
    int fallbacks;               /* models left for another */
    eddy_llm_response resp;
} eddy_llm_result;

/* What the journal keeps of an answer, as JSON text: the message, why it
 * ended, usage, and which model answered, written without a tree; exactly
 * the compact dump of the json_pack it replaced (agents/run.c's
 * llm_from_json reads it). A new string (eddy_free), or NULL when out of
 * memory or a string is not UTF-8. */
char *eddy_llm_result_text(const eddy_llm_result *res);

/* Called exactly once per started request, on the client's loop. RES is
 * borrowed for the call; steal members (setting them NULL/zero) to keep. */
typedef void (*eddy_llm_cb)(eddy_llm_result *res, void *ud);

typedef struct eddy_llm_client eddy_llm_client;
typedef struct eddy_llm_req eddy_llm_req;

/* New client on LOOP (the loop's thread is the only one that may use it;
 * any number of clients on other loops may exist). Limits are process-wide:
 * shared by every model of every client in the process that names the same
 * provider, endpoint, model and key (the strictest settings among them
 * hold), so N workers with `concurrency: 3` still run 3 requests at a time.
 * Clients wake each other through an async handle when a slot frees. */
int eddy_llm_client_new(uv_loop_t *loop, eddy_llm_client **out, eddy_err *err);

/* Cancel what is in flight (callbacks get EDDY_ECANCELED) and close the
 * client's handles; memory is released once the loop has run the closes. */
void eddy_llm_client_close(eddy_llm_client *c);

/* Start a chat with M (falling back along M->fallback): the body is built
 * from RQ before returning. *OUT (may be NULL) gets a handle valid until CB
 * runs. Returns 0 (CB will run exactly once, never inside this call) or an
 * error (CB never runs). */
int eddy_llm_chat(eddy_llm_client *c, const eddy_llm_model *m, const eddy_llm_request *rq,
                  eddy_llm_cb cb, void *ud, eddy_llm_req **out, eddy_err *err);

/* Cancel REQ: its callback runs soon with EDDY_ECANCELED. */
void eddy_llm_cancel(eddy_llm_req *req);

/* Requests started and currently in flight on C (for summaries). */
long eddy_llm_client_in_flight(const eddy_llm_client *c);

#endif
