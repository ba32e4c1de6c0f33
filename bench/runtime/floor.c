/*
 * bench/runtime/floor.c - the floor of bench/runtime: the least a program must do
 * to carry the bench/agents conversations, written with libcurl multi and jansson
 * only (no eddy code), so that eddy's CPU, syscalls and memory per event can be set
 * against it.
 *
 * Per event, exactly the two HTTP exchanges eddy makes: request 1 is the chat request
 * eddy sends (model, system prompt, the key's earlier runs, the user text, the
 * lookup_order tool; shape copied from eddy's bodies in the mock's --log), the answer's
 * tool call is parsed, a C "tool" looks the order up in orders.json, request 2 carries
 * the assistant's tool call and the tool result, its answer is parsed, and one JSONL
 * line is written (and flushed, as eddy's sink does) to the output file. Like eddy, at
 * most --in-flight events are accepted and unfinished, events of one key run one at a
 * time in arrival order, and a key's conversation (the last --history runs, kept in
 * memory only) is resent with every request. Nothing is persisted, retried or traced.
 *
 * curl runs on one epoll loop through CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION, as
 * eddy's client does on libuv. A failed exchange (transport error, status other than
 * 200, an answer without the expected tool call or text) is counted, reported on
 * stderr, and makes the exit status 1; the other events go on.
 *
 *   bench_floor --url URL --input EVENTS.jsonl --output OUT.jsonl --orders ORDERS.json
 *               [--in-flight 64] [--history 20] [--key customer_id]
 */
#include <curl/curl.h>
#include <jansson.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#define SYSTEM_PROMPT                                                                              \
    "You are the support agent of ACME Outdoor. Call lookup_order for order numbers."
#define MODEL "gpt-4o-mini"

typedef struct key_state {
    char *name;
    json_t *runs;     /* array of runs, each an array of messages (user .. assistant) */
    int busy;         /* one event of this key is running */
    int qhead, qtail; /* events waiting for the key: indices linked by ev.next, -1 none */
} key_state;

typedef struct event {
    char *id, *text;
    key_state *key;
    int next;
} event;

typedef struct conv {
    int ev;
    int stage; /* 1: the tool call is awaited, 2: the answer */
    CURL *easy;
    char *body;
    char *resp;
    size_t resp_len, resp_cap;
    json_t *run; /* this run's messages: user, assistant tool call, tool, assistant */
    json_int_t in_tokens, out_tokens;
} conv;

static struct {
    const char *url;
    int in_flight, history;
    CURLM *multi;
    int ep;
    long timeout_ms; /* curl's timer: -1 none */
    double deadline;
    struct curl_slist *headers;
    json_t *tools, *orders, *keys;
    event *evs;
    int n_ev, next_ev, accepted, done, failed;
    FILE *out;
} G;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_floor: out of memory\n");
        exit(2);
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

/* The lookup_order tool definition, exactly as eddy renders tools/lookup_order.lua. */
static json_t *tools_json(void)
{
    json_error_t je;
    json_t *t = json_loads(
        "[{\"type\":\"function\",\"function\":{\"name\":\"lookup_order\",\"description\":\"Look "
        "up the status, carrier and expected delivery date of an order\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"order_id\":{\"type\":\"string\",\"description\":\"Order "
        "number such as A1042\"}},\"required\":[\"order_id\"],\"additionalProperties\":false}}}]",
        0, &je);
    if (!t) {
        fprintf(stderr, "bench_floor: tools: %s\n", je.text);
        exit(2);
    }
    return t;
}

static json_t *msg(const char *role, const char *content)
{
    return json_pack("{s:s, s:s}", "role", role, "content", content);
}

/* The request body for conversation C: system, the key's last runs, this run so far. */
static char *build_body(conv *c)
{
    key_state *k = G.evs[c->ev].key;
    json_t *msgs = json_array(), *body;
    size_t n = json_array_size(k->runs), i, j;
    char *s;
    json_array_append_new(msgs, msg("system", SYSTEM_PROMPT));
    for (i = n > (size_t)G.history ? n - (size_t)G.history : 0; i < n; i++) {
        json_t *run = json_array_get(k->runs, i);
        for (j = 0; j < json_array_size(run); j++)
            json_array_append(msgs, json_array_get(run, j));
    }
    for (j = 0; j < json_array_size(c->run); j++)
        json_array_append(msgs, json_array_get(c->run, j));
    body = json_pack("{s:s, s:o, s:O}", "model", MODEL, "messages", msgs, "tools", G.tools);
    s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

static size_t write_cb(char *p, size_t sz, size_t n, void *ud)
{
    conv *c = ud;
    size_t len = sz * n;
    if (c->resp_len + len + 1 > c->resp_cap) {
        size_t cap = c->resp_cap ? c->resp_cap : 1024;
        while (cap < c->resp_len + len + 1)
            cap *= 2;
        char *r = realloc(c->resp, cap);
        if (!r)
            return 0;
        c->resp = r;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, p, len);
    c->resp_len += len;
    return len;
}

static void send_request(conv *c)
{
    free(c->body);
    c->body = build_body(c);
    c->resp_len = 0;
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(c->body));
    curl_multi_add_handle(G.multi, c->easy);
}

static void start_event(int e)
{
    conv *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "bench_floor: out of memory\n");
        exit(2);
    }
    c->ev = e;
    c->stage = 1;
    c->run = json_array();
    json_array_append_new(c->run, msg("user", G.evs[e].text));
    G.evs[e].key->busy = 1;
    c->easy = curl_easy_init();
    curl_easy_setopt(c->easy, CURLOPT_URL, G.url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, G.headers);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c->easy, CURLOPT_USERAGENT, "bench_floor/0.1");
    curl_easy_setopt(c->easy, CURLOPT_ACCEPT_ENCODING, "");
    send_request(c);
}

/* Accept events while fewer than --in-flight are unfinished (eddy's max_in_flight). */
static void fill(void)
{
    while (G.accepted < G.in_flight && G.next_ev < G.n_ev) {
        int e = G.next_ev++;
        key_state *k = G.evs[e].key;
        G.accepted++;
        if (!k->busy) {
            start_event(e);
            continue;
        }
        G.evs[e].next = -1;
        if (k->qtail >= 0)
            G.evs[k->qtail].next = e;
        else
            k->qhead = e;
        k->qtail = e;
    }
}

static void add_usage(conv *c, json_t *root)
{
    json_t *u = json_object_get(root, "usage");
    c->in_tokens += json_integer_value(json_object_get(u, "prompt_tokens"));
    c->out_tokens += json_integer_value(json_object_get(u, "completion_tokens"));
}

/* The C tool: lookup_order's result object, keys in the order eddy's Lua tool gives. */
static char *run_tool(const char *arguments)
{
    json_t *args = json_loads(arguments, 0, NULL), *o, *res;
    const char *id = json_string_value(json_object_get(args, "order_id"));
    char *s;
    o = id ? json_object_get(G.orders, id) : NULL;
    if (!o) {
        json_decref(args);
        return NULL;
    }
    res = json_pack("{s:O, s:O, s:s, s:O}", "carrier", json_object_get(o, "carrier"), "status",
                    json_object_get(o, "status"), "order_id", id, "eta", json_object_get(o, "eta"));
    json_decref(args);
    s = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    return s;
}

/* Read answer 1: keep the assistant's tool call, run the tool, append its result. */
static int stage1(conv *c, json_t *root)
{
    json_t *m = json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message");
    json_t *call = json_array_get(json_object_get(m, "tool_calls"), 0);
    json_t *fn = json_object_get(call, "function");
    const char *id = json_string_value(json_object_get(call, "id"));
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    char *result;
    if (!id || !name || !args || strcmp(name, "lookup_order"))
        return -1;
    result = run_tool(args);
    if (!result)
        return -1;
    json_array_append_new(c->run,
                          json_pack("{s:s, s:s, s:[{s:s, s:s, s:{s:s, s:s}}]}", "role", "assistant",
                                    "content", "", "tool_calls", "id", id, "type", "function",
                                    "function", "name", name, "arguments", args));
    json_array_append_new(c->run, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id,
                                            "content", result));
    free(result);
    return 0;
}

static void finish_event(conv *c, const char *answer)
{
    event *ev = &G.evs[c->ev];
    key_state *k = ev->key;
    if (answer) {
        json_t *line;
        json_array_append_new(c->run, msg("assistant", answer));
        json_array_append(k->runs, c->run);
        line = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:I, s:I, s:I}, s:i, s:i, s:s}", "type",
                         "output", "event_id", ev->id, "key", k->name, "agent", "support", "output",
                         answer, "usage", "input_tokens", c->in_tokens, "output_tokens",
                         c->out_tokens, "total_tokens", c->in_tokens + c->out_tokens, "turns", 2,
                         "tool_calls", 1, "model", "default");
        json_dumpf(line, G.out, JSON_COMPACT);
        fputc('\n', G.out);
        fflush(G.out); /* as eddy's JSONL sink: each line is written when its event ends */
        json_decref(line);
    } else {
        G.failed++;
    }
    G.done++;
    G.accepted--;
    json_decref(c->run);
    curl_easy_cleanup(c->easy);
    free(c->body);
    free(c->resp);
    free(c);
    if (k->qhead >= 0) {
        int e = k->qhead;
        k->qhead = G.evs[e].next;
        if (k->qhead < 0)
            k->qtail = -1;
        start_event(e);
    } else {
        k->busy = 0;
    }
}

static void completed(CURL *easy, CURLcode rc)
{
    conv *c;
    long status = 0;
    json_t *root = NULL;
    const char *answer = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(G.multi, easy);
    if (rc != CURLE_OK || status != 200) {
        fprintf(stderr, "bench_floor: event %s: %s, status %ld\n", G.evs[c->ev].id,
                curl_easy_strerror(rc), status);
        goto fail;
    }
    root = json_loadb(c->resp, c->resp_len, 0, NULL);
    if (!root)
        goto bad;
    add_usage(c, root);
    if (c->stage == 1) {
        if (stage1(c, root))
            goto bad;
        json_decref(root);
        c->stage = 2;
        send_request(c);
        return;
    }
    answer = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message"),
        "content"));
    if (!answer)
        goto bad;
    finish_event(c, answer);
    json_decref(root);
    return;
bad:
    fprintf(stderr, "bench_floor: event %s: unexpected answer %d: %.200s\n", G.evs[c->ev].id,
            c->stage, c->resp_len ? c->resp : "");
fail:
    json_decref(root);
    finish_event(c, NULL);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *ud, void *sockp)
{
    struct epoll_event ev = {0};
    (void)easy;
    (void)ud;
    if (what == CURL_POLL_REMOVE) {
        if (sockp)
            epoll_ctl(G.ep, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(G.multi, s, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = s;
    if (epoll_ctl(G.ep, sockp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev)) {
        fprintf(stderr, "bench_floor: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    if (!sockp)
        curl_multi_assign(G.multi, s, &G); /* any non-NULL: registered */
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    (void)ud;
    G.timeout_ms = timeout_ms;
    G.deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    return 0;
}

static void reap(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(G.multi, &left)))
        if (m->msg == CURLMSG_DONE)
            completed(m->easy_handle, m->data.result);
    fill();
}

static void loop(void)
{
    struct epoll_event evs[256];
    int running, n, i;
    while (G.done < G.n_ev) {
        int wait = -1;
        if (G.timeout_ms >= 0) {
            double left = G.deadline - now_ms();
            wait = left > 0 ? (int)left + 1 : 0;
        }
        n = epoll_wait(G.ep, evs, 256, wait);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "bench_floor: epoll_wait: %s\n", strerror(errno));
            exit(2);
        }
        for (i = 0; i < n; i++) {
            int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                        (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                        (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(G.multi, evs[i].data.fd, flags, &running);
        }
        if (G.timeout_ms >= 0 && now_ms() >= G.deadline) {
            G.timeout_ms = -1;
            curl_multi_socket_action(G.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        reap();
    }
}

static json_t *load_file(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        fprintf(stderr, "bench_floor: %s:%d: %s\n", path, je.line, je.text);
        exit(2);
    }
    return j;
}

/* Read the events: id, key (--key) and text of each line. */
static void load_events(const char *path, const char *key_field)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, n_alloc = 0;
    ssize_t len;
    int lineno = 0;
    if (!f) {
        fprintf(stderr, "bench_floor: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    while ((len = getline(&line, &cap, f)) > 0) {
        json_t *e, *ks;
        const char *id, *key, *text;
        lineno++;
        if (len <= 1)
            continue;
        e = json_loadb(line, (size_t)len, 0, NULL);
        id = json_string_value(json_object_get(e, "id"));
        key = json_string_value(json_object_get(e, key_field));
        text = json_string_value(json_object_get(e, "text"));
        if (!id || !key || !text) {
            fprintf(stderr, "bench_floor: %s:%d: needs string id, %s and text\n", path, lineno,
                    key_field);
            exit(2);
        }
        if ((size_t)G.n_ev == n_alloc) {
            n_alloc = n_alloc ? 2 * n_alloc : 1024;
            G.evs = realloc(G.evs, n_alloc * sizeof *G.evs);
            if (!G.evs)
                exit(2);
        }
        ks = json_object_get(G.keys, key);
        if (!ks) {
            key_state *k = xmalloc(sizeof *k);
            k->name = xstrdup(key);
            k->runs = json_array();
            k->busy = 0;
            k->qhead = k->qtail = -1;
            ks = json_integer((json_int_t)(intptr_t)k);
            json_object_set_new(G.keys, key, ks);
        }
        G.evs[G.n_ev].key = (key_state *)(intptr_t)json_integer_value(ks);
        G.evs[G.n_ev].id = xstrdup(id);
        G.evs[G.n_ev].text = xstrdup(text);
        G.evs[G.n_ev].next = -1;
        G.n_ev++;
        json_decref(e);
    }
    free(line);
    fclose(f);
}

static long arg_long(const char *name, const char *v, long lo, long hi)
{
    char *end;
    long x;
    errno = 0;
    x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "bench_floor: %s wants a number from %ld to %ld\n", name, lo, hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    const char *input = NULL, *output = NULL, *orders = NULL, *key_field = "customer_id";
    struct rlimit rl;
    int i;
    G.in_flight = 64;
    G.history = 20;
    G.timeout_ms = -1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--url"))
            G.url = v;
        else if (!strcmp(a, "--input"))
            input = v;
        else if (!strcmp(a, "--output"))
            output = v;
        else if (!strcmp(a, "--orders"))
            orders = v;
        else if (!strcmp(a, "--key"))
            key_field = v;
        else if (!strcmp(a, "--in-flight"))
            G.in_flight = (int)arg_long(a, v, 1, 10000000);
        else if (!strcmp(a, "--history"))
            G.history = (int)arg_long(a, v, 0, 100000);
        else {
            fprintf(stderr, "bench_floor: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!G.url || !input || !output || !orders || !key_field) {
        fprintf(stderr, "usage: bench_floor --url URL --input EVENTS.jsonl --output OUT.jsonl "
                        "--orders ORDERS.json [--in-flight 64] [--history 20] [--key FIELD]\n");
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    G.keys = json_object();
    G.orders = load_file(orders);
    G.tools = tools_json();
    load_events(input, key_field);
    G.out = fopen(output, "w");
    if (!G.out) {
        fprintf(stderr, "bench_floor: %s: %s\n", output, strerror(errno));
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    G.headers = curl_slist_append(NULL, "Content-Type: application/json");
    G.headers = curl_slist_append(G.headers, "Expect:");
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    G.multi = curl_multi_init();
    curl_multi_setopt(G.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(G.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(G.multi, CURLMOPT_MAXCONNECTS, 1024L);
    fill();
    loop();
    if (fclose(G.out)) {
        fprintf(stderr, "bench_floor: %s: %s\n", output, strerror(errno));
        return 1;
    }
    if (G.failed)
        fprintf(stderr, "bench_floor: %d of %d events failed\n", G.failed, G.n_ev);
    return G.failed ? 1 : 0;
}
