/*
 * tests/mockllm/mockllm_int.h - what the mock's files share.
 *
 * A request of any wire format is parsed into one neutral view (mock_req:
 * messages with role and text, the names of the tools offered) that the rules
 * of the script look at; the rule that answers decides a neutral answer
 * (mock_answer: text, tool calls, usage, finish reason) that the request's
 * format renders (mock_wire), plain or as a list of stream chunks.
 *
 * Threads: parsing, matching and rendering run on libmicrohttpd's one
 * internal thread; the rule table's hit counts are guarded by mock_lock().
 * Nothing here blocks or sleeps.
 */
#ifndef MOCKLLM_INT_H
#define MOCKLLM_INT_H

#include <jansson.h>
#include <regex.h>
#include <stddef.h>

typedef enum mock_fmt { MOCK_OPENAI, MOCK_ANTHROPIC, MOCK_OLLAMA, MOCK_NFMT } mock_fmt;

/* Options of the whole script; set once by mock_script_load, read-only after. */
typedef struct mock_opts {
    long latency_ms;
    int require_api_key; /* a key header must be present ... */
    char *api_key;       /* ... and, when non-NULL, equal this */
    int strict_content, require_tool_choice, stream_index_zero;
} mock_opts;

extern mock_opts g_opts;

/* One request in the neutral view. Header values are borrowed from
 * libmicrohttpd and valid only during the access handler's call. */
typedef struct mock_req {
    mock_fmt fmt;
    long seq;          /* the request's number, from 1 */
    json_t *body;      /* the request as parsed (owned) */
    json_t *msgs;      /* [{role, content}]: role system|user|assistant|tool, content text */
    json_t *tools;     /* names of the tools offered; empty when they are ignored */
    const char *model; /* the request's model, "mock" when absent (borrowed from body) */
    int stream;        /* the answer is streamed */
    int include_usage; /* a streamed answer carries usage */
    int tools_ignored; /* require_tool_choice and no tool_choice: no tool calls */
    long prompt_chars; /* size of the conversation, for the usage estimate */
    const char *authorization, *x_api_key, *anthropic_version, *content_type;
} mock_req;

/* An error answer: status, the format's error type and code (NULL: its
 * default, or none), a message. */
typedef struct mock_error {
    unsigned status;
    const char *type, *code;
    char message[512];
} mock_error;

typedef struct mock_call {
    char id[64];
    char *name;
    char *args;    /* the arguments as JSON text, as the model "wrote" them (may be invalid) */
    json_t *input; /* the same as an object when they parse as one, else NULL */
} mock_call;

typedef struct mock_answer {
    long id;
    char *text; /* NULL: no text */
    mock_call *calls;
    size_t ncalls;
    const char *finish; /* "stop", "tool_calls", "length", or a value passed through */
    long long in, out, cached, reasoning, cache_creation;
    int omit_usage;
    int usage_details; /* OpenAI: show prompt/completion_tokens_details */
    int index_zero;    /* OpenAI streams: every tool call has index 0 */
    const char *model;
    size_t piece; /* bytes of text or arguments per stream chunk */
} mock_answer;

/* The chunks of a streamed answer, each a whole SSE event or NDJSON line. */
typedef struct mock_chunks {
    char **v;
    size_t n, cap;
} mock_chunks;

/* One wire format: its parser (fills the neutral view, validates what the
 * provider requires; 0, or -1 with E set) and its renderers (new strings,
 * freed with eddy_free; stream appends to OUT). */
typedef struct mock_wire {
    const char *name;
    const char *stream_type;
    const char *malformed;                /* body of the malformed fault */
    const char *truncated;                /* body of the truncate fault, of which half is sent */
    const char *const *ratelimit_headers; /* one per kRatelimitKeys entry */
    int (*parse)(mock_req *r, mock_error *e);
    char *(*body)(const mock_req *r, const mock_answer *a);
    void (*stream)(const mock_req *r, const mock_answer *a, mock_chunks *out);
    char *(*error)(const mock_req *r, const mock_error *e);
    char *(*stream_error)(const mock_req *r, const mock_error *e);
} mock_wire;

extern const mock_wire mock_openai, mock_anthropic, mock_ollama;
extern const char *const kRatelimitKeys[];

/* The wire format F. */
const mock_wire *mock_wire_of(mock_fmt f);
/* strict_content for one OpenAI request: 0, or -1 with E set (a 500, as
 * llama-cpp-python answers an assistant message whose content is null). */
int mock_openai_strict(const mock_req *r, mock_error *e);

/* -- rules (script.c) ---------------------------------------------------------- */

typedef struct mock_rule {
    json_t *def;
    regex_t re;
    int has_re;
    long times; /* -1: unlimited */
    long hits;
} mock_rule;

typedef struct mock_match {
    regmatch_t caps[10];
    const char *subject;
    int ncaps;
} mock_match;

/* Load the script at PATH into the rule table and g_opts; refuses unknown keys,
 * naming the rule. Returns 0, or -1 after printing why. */
int mock_script_load(const char *path);
/* The first rule that matches REQ (its hit counted) and its index; NULL when none. */
mock_rule *mock_script_pick(const mock_req *req, mock_match *mt, long *index);
/* Build the answer rule DEF gives REQ. Free with mock_answer_free. */
void mock_answer_build(mock_answer *a, json_t *def, const mock_req *req, const mock_match *mt);
void mock_answer_free(mock_answer *a);
/* Expand $1..$9, ${user}, ${n_user}, ${tool}, ${tool.FIELD} in T; caller frees. */
char *mock_expand(const char *t, const mock_req *req, const mock_match *mt);

void mock_lock(void);
void mock_unlock(void);

/* -- helpers shared by the formats (wire.c) ---------------------------------------- */

/* Append S (taken) to C. */
void mock_chunks_add(mock_chunks *c, char *s);
void mock_chunks_free(mock_chunks *c);
/* An SSE event of DATA (stolen): "event: EVENT\n" (when EVENT is non-NULL), "data: ...\n\n". */
char *mock_sse(const char *event, json_t *data);
/* DATA (stolen) as one NDJSON line. */
char *mock_line(json_t *data);
/* Compact JSON text of V (stolen); caller frees. */
char *mock_dump(json_t *v);
/* Length of the piece of at most WANT bytes that starts S (N bytes left), cut at a
 * UTF-8 boundary and never empty when N > 0. */
size_t mock_piece_len(const char *s, size_t n, size_t want);
/* Append {role, content} to the neutral messages. */
void mock_msg_add(json_t *msgs, const char *role, const char *text);
/* The text of CONTENT: a string as it is, the "text" of an array's text blocks
 * joined by newlines, else "". Caller frees. */
char *mock_content_text(json_t *content);
/* Length of the compact JSON text of V (0 for NULL). */
long mock_json_chars(json_t *v);
/* Set E to an error with a formatted message; returns -1. */
int mock_error_set(mock_error *e, unsigned status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Map the neutral finish reason: "stop", "tool_calls", "length" to the
 * format's own words (STOP, TOOLS, LENGTH); anything else passes through. */
const char *mock_finish_word(const char *finish, const char *stop, const char *tools,
                             const char *length);

#endif
