/*
 * tests/mockllm/mockllm.c - a scripted stand-in for a model, for tests, the
 * demos and benchmarks. It speaks three wire formats, plain and streaming:
 *
 *   POST .../chat/completions  OpenAI chat completions (any path containing it)
 *   POST .../messages          Anthropic Messages (any path ending in /messages)
 *   POST .../api/chat          Ollama (any path ending in /api/chat)
 *   GET  /stats                {requests, in_flight, peak_in_flight, faults, streams,
 *                               formats: {openai, anthropic, ollama}}
 *
 * Each request is parsed into one neutral view (messages with role
 * system|user|assistant|tool and their text, the names of the tools offered;
 * see mockllm_int.h), the rules of a script look only at that view, and the
 * answer of the first rule that matches is rendered in the request's format
 * (openai.c, anthropic.c, ollama.c). A request streams when it says
 * "stream": true (Ollama: unless it says "stream": false, as Ollama does).
 *
 * Waiting never blocks other connections: a connection whose answer is not
 * due is suspended and a timer thread resumes it when it is, both before the
 * headers (latency) and between the chunks of a stream.
 *
 *   mockllm --script FILE [--port N] [--port-file F] [--latency-ms N] [--log F]
 *
 * THE SCRIPT (JSON; a key it does not know is an error at start):
 *   rules                 [RULE, ...]; the first that matches answers; none: 500 with
 *                         message "mockllm: no rule matched"
 *   latency_ms            every answer waits N ms before its headers (--latency-ms wins)
 *   require_api_key       true: 401 unless the request has a key (OpenAI
 *                         "Authorization: Bearer K", Anthropic x-api-key); a string: and
 *                         it equals that string. Ollama has no keys.
 *   strict_content        true: (OpenAI) 500 "Input should be a valid string" for an
 *                         assistant message whose content is null (llama-cpp-python)
 *   require_tool_choice   true: (OpenAI) the tools are ignored unless the request has
 *                         tool_choice (llama-cpp-python): tool_offered never matches and a
 *                         rule's tool_calls become its reply (or a "mock: the tools were
 *                         ignored ..." text)
 *   stream_index_zero     true: (OpenAI streams) every tool call delta has index 0; the
 *                         calls' distinct ids tell them apart
 * RULE:
 *   when                  conditions, all must hold (no when: always)
 *     last_role           role of the last message (Anthropic: a user message of
 *                         tool_result blocks is "tool")
 *     last_user_contains  a substring of the last user message
 *     last_user_regex     a POSIX extended regex on it; captures $1..$9
 *     system_contains     a substring of the system prompt (Anthropic: top-level system)
 *     tool_offered        a tool of that name is offered
 *     last_tool_contains  a substring of the last tool result
 *     min_user_messages   at least N user messages
 *     format              "openai" | "anthropic" | "ollama"
 *     stream              true | false: the request streams
 *   times                 the rule matches only N requests
 *   reply                 text, templated: $1..$9, ${user}, ${n_user}, ${tool},
 *                         ${tool.FIELD} (the last tool result read as JSON)
 *   tool_calls            [{name, arguments: JSON whose strings are templated,
 *                         raw_arguments: templated text sent as it is (may be invalid
 *                         JSON), id: the call's id (default call_N_I, toolu_mock_N_I)}]
 *   latency_ms            this rule's answers wait N ms before their headers
 *   usage                 {input, output, cached, reasoning, cache_creation}: the numbers
 *                         to report instead of the estimate (input: conversation bytes/4
 *                         + 1; output: answer bytes/4 + 1). OpenAI prompt_tokens,
 *                         completion_tokens, total_tokens (+ prompt_tokens_details.
 *                         cached_tokens and completion_tokens_details.reasoning_tokens
 *                         when cached or reasoning is given); Anthropic input_tokens,
 *                         output_tokens, cache_read_input_tokens (cached),
 *                         cache_creation_input_tokens; Ollama prompt_eval_count,
 *                         eval_count
 *   omit_usage            true: no usage in the answer (nor a usage chunk)
 *   finish_reason         "stop" | "tool_calls" | "length" | any other word, passed on;
 *                         Anthropic stop_reason end_turn | tool_use | max_tokens, Ollama
 *                         done_reason stop | stop | length
 *   model                 the model the answer names (default: the request's)
 *   headers               {NAME: string or number} added verbatim to every answer of the rule
 *   ratelimit             {remaining_requests, remaining_tokens, reset_requests,
 *                         reset_tokens, limit_requests, limit_tokens}: OpenAI (and Ollama)
 *                         x-ratelimit-remaining-requests, -remaining-tokens,
 *                         -reset-requests, -reset-tokens, -limit-requests, -limit-tokens;
 *                         Anthropic anthropic-ratelimit-requests-remaining,
 *                         -tokens-remaining, -requests-reset, -tokens-reset,
 *                         -requests-limit, -tokens-limit
 *   chunk_delay_ms        streams: wait N ms before every chunk, the first included (the
 *                         headers go at once): time to first token, idle gaps
 *   first_chunk_delay_ms  streams: wait N ms before the first chunk instead
 *   chunk_chars           streams: bytes of text or of arguments per chunk (default 8)
 *   strict_content        true: the script option, for the requests this rule answers
 *   stream_index_zero     true | false: the script option, for this rule's answers
 *   fault                 answer with a fault instead (counted in /stats faults):
 *     status              the HTTP status (default 500), with the format's error body:
 *                         OpenAI {"error": {message, type, code}}, Anthropic {"type":
 *                         "error", "error": {type, message}, "request_id"} (type by
 *                         status: 400 invalid_request_error, 401 authentication_error,
 *                         429 rate_limit_error, 500 api_error, 529 overloaded_error, ...),
 *                         Ollama {"error": message}
 *     message             the error's message (default "mock fault")
 *     type                the error's type (OpenAI default mock_error)
 *     error_code          OpenAI error.code (default mock_fault)
 *     retry_after         a retry-after: N header
 *     retry_after_ms      a retry-after-ms: N header
 *     delay_ms            wait N ms before the headers (past a client's timeout)
 *     truncate            true: 200 and half of a body, then the connection closes
 *     malformed           true: 200 and a body that is not JSON
 *     disconnect_after_chunks  N: the rule's answer, streamed; the connection drops
 *                         after N chunks, without the stream's end (a plain request:
 *                         right after the headers)
 *     stream_error        "TEXT": the rule's answer, streamed, cut after after_chunks
 *                         chunks by an error in the stream (Anthropic "event: error",
 *                         type overloaded_error; OpenAI data: {"error": ...}; Ollama
 *                         {"error": ...}); a plain request gets a status fault with it
 *     after_chunks        where stream_error cuts (default 2)
 * Rules may answer any format; errors before any rule (bad JSON, what a provider
 * requires: Anthropic anthropic-version header, model, max_tokens, messages; Ollama
 * model) are 400s in the format's shape with a "mock: ..." message.
 *
 * THE LOG (--log F): one JSON object a line per POST to a model route:
 *   {"t_ms": wall-clock ms since the epoch when the request arrived, "path", "format":
 *    "openai"|"anthropic"|"ollama", "stream": bool, "headers": {"authorization": bool,
 *    "x-api-key": bool, "anthropic-version": text|null, "content-type": text|null},
 *    "status", "rule": index|null, "fault": bool, "delay_ms", "body": the request,
 *    and the request's own top-level keys again where they do not clash with these
 *    (readers of the older log take line["messages"])}
 * Keys are logged only as present or not, never their values.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    eddy_buf body;
    struct MHD_Response *resp;
    unsigned status;
    int suspended;
} conn;

/* What a request is answered with, and how it is logged. */
typedef struct reply {
    struct MHD_Response *resp;
    unsigned status;
    long delay; /* ms before the headers */
    long rule;  /* index of the rule that answered, -1: none */
    int fault;
} reply;

typedef struct timer_ent {
    uint64_t due;
    struct MHD_Connection *c;
} timer_ent;

static FILE *g_log;
static pthread_mutex_t g_heap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static timer_ent *g_heap;
static size_t g_nheap, g_capheap;
static atomic_long g_requests, g_in_flight, g_peak, g_faults, g_streams, g_by_fmt[MOCK_NFMT];
static atomic_int g_stop; /* set by a signal handler, read by the timer thread */
static struct MHD_Daemon *g_daemon;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* -- timer heap: resume suspended connections when due -------------------- */

static void heap_push(uint64_t due, struct MHD_Connection *c)
{
    size_t i;
    pthread_mutex_lock(&g_heap_mu);
    if (g_nheap == g_capheap) {
        g_capheap = g_capheap ? g_capheap * 2 : 1024;
        g_heap = realloc(g_heap, g_capheap * sizeof(*g_heap));
    }
    i = g_nheap++;
    while (i > 0 && g_heap[(i - 1) / 2].due > due) {
        g_heap[i] = g_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g_heap[i].due = due;
    g_heap[i].c = c;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_heap_mu);
}

static timer_ent heap_pop(void)
{
    timer_ent top = g_heap[0], last = g_heap[--g_nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < g_nheap && g_heap[l].due < last.due)
            m = l;
        if (l + 1 < g_nheap && g_heap[l + 1].due < (m == i ? last.due : g_heap[l].due))
            m = l + 1;
        if (m == i)
            break;
        g_heap[i] = g_heap[m];
        i = m;
    }
    if (g_nheap)
        g_heap[i] = last;
    return top;
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_heap_mu);
    while (!g_stop) {
        uint64_t t = now_ms();
        struct timespec ts;
        uint64_t wait = 1000;
        if (g_nheap && g_heap[0].due <= t) {
            timer_ent e = heap_pop();
            pthread_mutex_unlock(&g_heap_mu);
            MHD_resume_connection(e.c);
            pthread_mutex_lock(&g_heap_mu);
            continue;
        }
        if (g_nheap)
            wait = g_heap[0].due - t;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g_cv, &g_heap_mu, &ts);
    }
    pthread_mutex_unlock(&g_heap_mu);
    return NULL;
}

/* -- response bodies ------------------------------------------------------------ */

static struct MHD_Response *text_response(const char *s)
{
    return MHD_create_response_from_buffer(strlen(s), (void *)s, MHD_RESPMEM_MUST_COPY);
}

/* S (taken) as an application/json response. */
static struct MHD_Response *json_response(char *s)
{
    struct MHD_Response *resp = text_response(s ? s : "{}");
    eddy_free(s);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return resp;
}

/* A body of which only the first CUT bytes are sent: the declared length is the
 * whole body's, so the client sees the connection close early. */
typedef struct cut_body {
    size_t cut;
    char data[];
} cut_body;

static ssize_t cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    cut_body *cb = cls;
    if (pos >= cb->cut)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (max > cb->cut - pos)
        max = cb->cut - (size_t)pos;
    memcpy(buf, cb->data + pos, max);
    return (ssize_t)max;
}

static struct MHD_Response *cut_response(const char *body, size_t cut)
{
    size_t len = strlen(body);
    cut_body *cb = malloc(sizeof(*cb) + len + 1);
    struct MHD_Response *resp;
    cb->cut = cut;
    memcpy(cb->data, body, len + 1);
    resp = MHD_create_response_from_callback(len, 1024, cut_reader, cb, free);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return resp;
}

/* A streamed answer: chunk after chunk, each when due. A chunk that is not due
 * suspends the connection from inside the reader (libmicrohttpd allows it
 * there) and the timer thread resumes it, so a slow stream holds no thread. */
typedef struct stream_state {
    struct MHD_Connection *c;
    mock_chunks chunks;
    size_t next, off;        /* the chunk being sent and how much of it went */
    long first_delay, delay; /* ms before the first chunk, before each later one */
    long disconnect_after;   /* drop the connection after this many chunks; -1: never */
    uint64_t due;            /* when chunk `next` may go; 0: not yet decided */
} stream_state;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_state *st = cls;
    size_t len, k;
    (void)pos;
    if (st->off == 0) {
        long d = st->next == 0 ? st->first_delay : st->delay;
        if (st->disconnect_after >= 0 && st->next >= (size_t)st->disconnect_after)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (st->next == st->chunks.n)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (d > 0) {
            uint64_t t = now_ms();
            if (!st->due)
                st->due = t + (uint64_t)d;
            if (t < st->due) {
                MHD_suspend_connection(st->c);
                heap_push(st->due, st->c);
                return 0;
            }
        }
    }
    len = strlen(st->chunks.v[st->next]);
    k = len - st->off < max ? len - st->off : max;
    memcpy(buf, st->chunks.v[st->next] + st->off, k);
    st->off += k;
    if (st->off == len) {
        st->next++;
        st->off = 0;
        st->due = 0;
    }
    return (ssize_t)k;
}

static void stream_free(void *cls)
{
    stream_state *st = cls;
    mock_chunks_free(&st->chunks);
    free(st);
}

static struct MHD_Response *stream_response(struct MHD_Connection *c, const mock_wire *w,
                                            mock_chunks *chunks, json_t *def, long disconnect_after)
{
    stream_state *st = calloc(1, sizeof(*st));
    struct MHD_Response *resp;
    st->c = c;
    st->chunks = *chunks;
    memset(chunks, 0, sizeof(*chunks));
    st->delay = (long)eddy_json_int(def, "chunk_delay_ms", 0);
    st->first_delay = (long)eddy_json_int(def, "first_chunk_delay_ms", st->delay);
    st->disconnect_after = disconnect_after;
    resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, st, stream_free);
    MHD_add_response_header(resp, "Content-Type", w->stream_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    atomic_fetch_add(&g_streams, 1);
    return resp;
}

/* -- answers ---------------------------------------------------------------------- */

static struct MHD_Response *error_response(const mock_wire *w, const mock_req *req,
                                           const mock_error *e)
{
    return json_response(w->error(req, e));
}

/* Header text of a script value: strings as they are, numbers printed. */
static void add_header(struct MHD_Response *resp, const char *name, json_t *v)
{
    char *s = json_is_string(v) ? eddy_strdup(json_string_value(v)) : eddy_json_key_string(v);
    if (s)
        MHD_add_response_header(resp, name, s);
    eddy_free(s);
}

static void add_rule_headers(struct MHD_Response *resp, const mock_wire *w, json_t *def)
{
    json_t *rl = json_object_get(def, "ratelimit"), *v;
    const char *k;
    for (size_t i = 0; kRatelimitKeys[i]; i++)
        if ((v = json_object_get(rl, kRatelimitKeys[i])))
            add_header(resp, w->ratelimit_headers[i], v);
    json_object_foreach(json_object_get(def, "headers"), k, v) add_header(resp, k, v);
}

/* The rule's answer streamed and cut by fault F (stream_error, disconnect_after_chunks),
 * or for a plain request its body cut right after the headers. */
static struct MHD_Response *cut_stream(struct MHD_Connection *c, const mock_wire *w,
                                       const mock_req *req, json_t *def, json_t *f,
                                       const mock_answer *a)
{
    mock_chunks ch = {0};
    const char *msg = eddy_json_str(f, "stream_error", NULL);
    long disc = json_is_integer(json_object_get(f, "disconnect_after_chunks"))
                    ? (long)eddy_json_int(f, "disconnect_after_chunks", 0)
                    : -1;
    struct MHD_Response *resp;
    if (!req->stream) {
        char *body = w->body(req, a);
        resp = cut_response(body ? body : "{}", 0);
        eddy_free(body);
        return resp;
    }
    w->stream(req, a, &ch);
    if (msg) {
        mock_error e;
        size_t after = (size_t)eddy_json_int(f, "after_chunks", 2);
        if (after >= ch.n)
            after = ch.n ? ch.n - 1 : 0; /* never past the stream's end */
        while (ch.n > after)
            eddy_free(ch.v[--ch.n]);
        mock_error_set(&e, 200, eddy_json_str(f, "type", NULL), "%s", msg);
        e.code = eddy_json_str(f, "error_code", NULL);
        mock_chunks_add(&ch, w->stream_error(req, &e));
    }
    return stream_response(c, w, &ch, def, disc);
}

static struct MHD_Response *fault_response(struct MHD_Connection *c, const mock_wire *w,
                                           const mock_req *req, json_t *def, const mock_match *mt,
                                           unsigned *status)
{
    json_t *f = json_object_get(def, "fault");
    struct MHD_Response *resp;
    mock_error e;
    char num[32];
    const char *stream_msg = eddy_json_str(f, "stream_error", NULL);
    atomic_fetch_add(&g_faults, 1);
    *status = 200;
    if (json_is_true(json_object_get(f, "malformed")))
        return text_response(w->malformed);
    if (json_is_true(json_object_get(f, "truncate")))
        return cut_response(w->truncated, strlen(w->truncated) / 2);
    if ((stream_msg && req->stream) || json_object_get(f, "disconnect_after_chunks")) {
        mock_answer a;
        mock_answer_build(&a, def, req, mt);
        resp = cut_stream(c, w, req, def, f, &a);
        mock_answer_free(&a);
        return resp;
    }
    *status = (unsigned)eddy_json_int(f, "status", 500);
    mock_error_set(&e, *status, eddy_json_str(f, "type", NULL), "%s",
                   eddy_json_str(f, "message", stream_msg ? stream_msg : "mock fault"));
    e.code = eddy_json_str(f, "error_code", NULL);
    if (req->fmt == MOCK_OPENAI) { /* what the mock always answered */
        e.type = e.type ? e.type : "mock_error";
        e.code = e.code ? e.code : "mock_fault";
    }
    resp = error_response(w, req, &e);
    if (json_is_integer(json_object_get(f, "retry_after_ms"))) {
        snprintf(num, sizeof(num), "%lld", eddy_json_int(f, "retry_after_ms", 0));
        MHD_add_response_header(resp, "retry-after-ms", num);
    }
    if (json_is_integer(json_object_get(f, "retry_after"))) {
        snprintf(num, sizeof(num), "%lld", eddy_json_int(f, "retry_after", 0));
        MHD_add_response_header(resp, "retry-after", num);
    }
    return resp;
}

/* Decide the answer to REQ (parsed and valid) into RP. */
static void answer(struct MHD_Connection *c, const mock_wire *w, const mock_req *req, reply *rp)
{
    mock_match mt;
    mock_error e;
    mock_rule *r = mock_script_pick(req, &mt, &rp->rule);
    json_t *def, *f;
    if (!r) {
        mock_error_set(&e, 500, NULL, "mockllm: no rule matched");
        e.code = "no_rule";
        rp->status = 500;
        rp->resp = error_response(w, req, &e);
        return;
    }
    def = r->def;
    f = json_object_get(def, "fault");
    if (json_is_integer(json_object_get(def, "latency_ms")))
        rp->delay = (long)eddy_json_int(def, "latency_ms", 0);
    if (req->fmt == MOCK_OPENAI && json_is_true(json_object_get(def, "strict_content")) &&
        mock_openai_strict(req, &e)) {
        rp->status = e.status;
        rp->resp = error_response(w, req, &e);
    } else if (f) {
        if (json_is_integer(json_object_get(f, "delay_ms")))
            rp->delay = (long)eddy_json_int(f, "delay_ms", 0);
        rp->fault = 1;
        rp->resp = fault_response(c, w, req, def, &mt, &rp->status);
    } else {
        mock_answer a;
        mock_answer_build(&a, def, req, &mt);
        if (req->stream) {
            mock_chunks ch = {0};
            w->stream(req, &a, &ch);
            rp->resp = stream_response(c, w, &ch, def, -1);
        } else {
            rp->resp = json_response(w->body(req, &a));
        }
        rp->status = 200;
        mock_answer_free(&a);
    }
    add_rule_headers(rp->resp, w, def);
}

/* -- the request log -------------------------------------------------------------- */

static void log_request(uint64_t t_ms, const char *url, const mock_req *req, const reply *rp)
{
    json_t *line, *v;
    const char *k;
    if (!g_log)
        return;
    line =
        json_pack("{s:I, s:s, s:s, s:b, s:{s:b, s:b, s:s?, s:s?}, s:I, s:o, s:b, s:I}", "t_ms",
                  (json_int_t)t_ms, "path", url, "format", mock_wire_of(req->fmt)->name, "stream",
                  req->stream, "headers", "authorization", req->authorization != NULL, "x-api-key",
                  req->x_api_key != NULL, "anthropic-version", req->anthropic_version,
                  "content-type", req->content_type, "status", (json_int_t)rp->status, "rule",
                  rp->rule >= 0 ? json_integer(rp->rule) : json_null(), "fault", rp->fault,
                  "delay_ms", (json_int_t)rp->delay);
    json_object_set(line, "body", req->body ? req->body : json_null());
    json_object_foreach(req->body, k, v)
    {
        if (!json_object_get(line, k))
            json_object_set(line, k, v);
    }
    mock_lock();
    eddy_json_dumpf(line, g_log, JSON_COMPACT);
    fputc('\n', g_log);
    fflush(g_log);
    mock_unlock();
    json_decref(line);
}

/* -- the HTTP side ---------------------------------------------------------------- */

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *v)
{
    char *s = eddy_json_dumps_flags(v, JSON_COMPACT);
    struct MHD_Response *resp = json_response(s);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

/* The format of a POST to URL; -1 when URL is no model route. */
static int route(const char *url)
{
    if (strstr(url, "chat/completions"))
        return MOCK_OPENAI;
    if (ends_with(url, "/messages"))
        return MOCK_ANTHROPIC;
    if (ends_with(url, "/api/chat"))
        return MOCK_OLLAMA;
    return -1;
}

static void count_in_flight(void)
{
    long cur = atomic_fetch_add(&g_in_flight, 1) + 1;
    for (long p = atomic_load(&g_peak); cur > p && !atomic_compare_exchange_weak(&g_peak, &p, cur);)
        ;
}

static enum MHD_Result model_request(struct MHD_Connection *c, conn *cn, const char *url,
                                     mock_fmt fmt)
{
    const mock_wire *w = mock_wire_of(fmt);
    uint64_t t_ms = eddy_wall_ns() / 1000000;
    mock_req req;
    mock_error e;
    reply rp = {.rule = -1, .delay = g_opts.latency_ms};
    enum MHD_Result ret;
    memset(&req, 0, sizeof(req));
    req.fmt = fmt;
    req.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "authorization");
    req.x_api_key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    req.anthropic_version = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version");
    req.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "content-type");
    req.body = json_loadb(cn->body.data ? cn->body.data : "", cn->body.len, 0, NULL);
    if (!req.body) { /* answered at once and not counted, as always */
        mock_error_set(&e, 400, fmt == MOCK_OPENAI ? NULL : "invalid_request_error", "%s",
                       fmt == MOCK_OPENAI ? "request body is not JSON"
                                          : "mock: request body is not JSON");
        rp.status = 400;
        rp.delay = 0;
        rp.resp = error_response(w, &req, &e);
        log_request(t_ms, url, &req, &rp);
        ret = MHD_queue_response(c, rp.status, rp.resp);
        MHD_destroy_response(rp.resp);
        return ret;
    }
    req.seq = atomic_fetch_add(&g_requests, 1) + 1;
    atomic_fetch_add(&g_by_fmt[fmt], 1);
    count_in_flight();
    req.msgs = json_array();
    req.tools = json_array();
    if (w->parse(&req, &e)) {
        rp.status = e.status;
        rp.resp = error_response(w, &req, &e);
    } else {
        answer(c, w, &req, &rp);
    }
    if (fmt == MOCK_ANTHROPIC) {
        char rid[48];
        snprintf(rid, sizeof(rid), "req_mock_%ld", req.seq);
        MHD_add_response_header(rp.resp, "request-id", rid);
    }
    log_request(t_ms, url, &req, &rp);
    json_decref(req.body);
    json_decref(req.msgs);
    json_decref(req.tools);
    cn->resp = rp.resp;
    cn->status = rp.status;
    if (rp.delay > 0) {
        cn->suspended = 1;
        MHD_suspend_connection(c);
        heap_push(now_ms() + (uint64_t)rp.delay, c);
        return MHD_YES;
    }
    ret = MHD_queue_response(c, cn->status, cn->resp);
    MHD_destroy_response(cn->resp);
    cn->resp = NULL;
    atomic_fetch_sub(&g_in_flight, 1);
    return ret;
}

static enum MHD_Result stats(struct MHD_Connection *c)
{
    json_t *st = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}}", "requests",
        (json_int_t)atomic_load(&g_requests), "in_flight", (json_int_t)atomic_load(&g_in_flight),
        "peak_in_flight", (json_int_t)atomic_load(&g_peak), "faults",
        (json_int_t)atomic_load(&g_faults), "streams", (json_int_t)atomic_load(&g_streams),
        "formats", "openai", (json_int_t)atomic_load(&g_by_fmt[MOCK_OPENAI]), "anthropic",
        (json_int_t)atomic_load(&g_by_fmt[MOCK_ANTHROPIC]), "ollama",
        (json_int_t)atomic_load(&g_by_fmt[MOCK_OLLAMA]));
    enum MHD_Result ret = send_json(c, 200, st);
    json_decref(st);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    conn *cn = *ctx;
    int fmt;
    (void)cls;
    (void)version;
    if (!cn) {
        cn = calloc(1, sizeof(*cn));
        eddy_buf_init(&cn->body);
        *ctx = cn;
        return MHD_YES;
    }
    if (*size) {
        eddy_buf_append(&cn->body, data, *size);
        *size = 0;
        return MHD_YES;
    }
    if (cn->suspended) { /* resumed: the answer is due */
        enum MHD_Result ret = MHD_queue_response(c, cn->status, cn->resp);
        MHD_destroy_response(cn->resp);
        cn->resp = NULL;
        cn->suspended = 0;
        atomic_fetch_sub(&g_in_flight, 1);
        return ret;
    }
    if (!strcmp(method, "GET") && !strcmp(url, "/stats"))
        return stats(c);
    if (!strcmp(method, "POST") && (fmt = route(url)) >= 0)
        return model_request(c, cn, url, (mock_fmt)fmt);
    {
        json_t *e = json_pack("{s:{s:s}}", "error", "message", "not found");
        enum MHD_Result ret = send_json(c, 404, e);
        json_decref(e);
        return ret;
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode toe)
{
    conn *cn = *ctx;
    (void)cls;
    (void)c;
    (void)toe;
    if (!cn)
        return;
    if (cn->resp)
        MHD_destroy_response(cn->resp);
    eddy_buf_free(&cn->body);
    free(cn);
    *ctx = NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

int main(int argc, char **argv)
{
    const char *script = NULL, *port_file = NULL;
    int port = 0;
    long latency = 0;
    pthread_t timer;
    struct rlimit rl;
    const union MHD_DaemonInfo *info;
    struct sockaddr_in addr;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--script") && i + 1 < argc)
            script = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--port-file") && i + 1 < argc)
            port_file = argv[++i];
        else if (!strcmp(argv[i], "--latency-ms") && i + 1 < argc)
            latency = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--log") && i + 1 < argc)
            g_log = fopen(argv[++i], "a");
        else {
            fprintf(stderr, "usage: mockllm --script FILE [--port N] [--port-file F] "
                            "[--latency-ms N] [--log FILE]\n");
            return 2;
        }
    }
    g_opts.latency_ms = latency;
    if (!script || mock_script_load(script))
        return 2;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_daemon = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)20000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_END);
    if (!g_daemon) {
        fprintf(stderr, "mockllm: cannot listen on port %d\n", port);
        return 1;
    }
    info = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_BIND_PORT);
    port = info ? info->port : port;
    pthread_create(&timer, NULL, timer_main, NULL);
    printf("mockllm: scripted stand-in for a model on http://127.0.0.1:%d (OpenAI "
           "/v1/chat/completions, Anthropic /v1/messages, Ollama /api/chat)\n",
           port);
    fflush(stdout);
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (f) {
            fprintf(f, "%d\n", port);
            fclose(f);
        }
    }
    while (!g_stop)
        pause();
    pthread_mutex_lock(&g_heap_mu);
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_heap_mu);
    pthread_join(timer, NULL);
    while (g_nheap) /* a daemon must not stop with suspended connections */
        MHD_resume_connection(heap_pop().c);
    MHD_stop_daemon(g_daemon);
    return 0;
}
