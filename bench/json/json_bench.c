/*
 * bench/json/json_bench.c - eddy's JSON writer (core/json.c) against
 * jansson's json_dumps on the values eddy writes most.
 *
 * Workloads, each dumped compact (JSON_COMPACT | JSON_ENCODE_ANY, what
 * eddy_json_dumps does):
 *   event    an incoming event: ids, a sentence, 2 integers, 2 reals, a small object
 *   request  a chat request body: 12 messages of 100-400 characters (one with
 *            tool calls), 3 tool schemas, temperature: what llm/ sends every turn
 *   memory   a key's memory document: 20 members, strings, integers, a list of 10 orders
 *   reals    100 readings as people write them (71.1, 0.25, 1013.2 ...)
 *   computed 100 results of arithmetic on readings (x * 1.8 + 32, x / 3): mostly 16-17 digits
 *   bits     100 doubles from random bit patterns: 17 digits, any exponent (worst case)
 *   ints     100 integers of every size
 * Both writers run in alternation, REPEAT rounds of ITERS dumps each; the
 * figures are the medians over the rounds, in nanoseconds per dump. Both go
 * through the eddy allocator, as in the eddy binary. Timings decide nothing.
 *
 *   sh bench/json/run.sh [ITERS] [REPEAT]
 */
#include "eddy/buf.h"
#include "eddy/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const char *sentence(size_t n, char *buf)
{
    static const char *words[] = {"where", "is",        "my",   "order", "it",         "was",
                                  "due",   "yesterday", "and",  "the",   "tracking",   "page",
                                  "says",  "nothing",   "café", "déjà",  "\"quoted\"", "line\n"};
    size_t o = 0;
    while (o + 12 < n) {
        const char *w = words[rnd() % (sizeof(words) / sizeof(words[0]))];
        size_t l = strlen(w);
        memcpy(buf + o, w, l);
        o += l;
        buf[o++] = ' ';
    }
    buf[o] = '\0';
    return buf;
}

static json_t *make_event(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:{s:s, s:s, s:I}}", "id",
                     "evt-000184467", "customer_id", "C-1042", "type", "input", "text",
                     "Where is my order A1042? It was due yesterday and the page says nothing.",
                     "qty", (json_int_t)3, "ts", (json_int_t)1732270000123ll, "temp", 71.1, "score",
                     0.25, "meta", "source", "web", "lang", "en", "retries", (json_int_t)0);
}

static json_t *make_request(void)
{
    char buf[512];
    json_t *msgs = json_array(), *tools = json_array();
    json_array_append_new(msgs,
                          json_pack("{s:s, s:s}", "role", "system", "content", sentence(400, buf)));
    for (int i = 0; i < 11; i++) {
        const char *role = i % 2 ? "assistant" : "user";
        if (i == 5) {
            json_array_append_new(msgs,
                                  json_pack("{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}", "role",
                                            "assistant", "content", "tool_calls", "id", "call_0_0",
                                            "type", "function", "function", "name", "lookup_order",
                                            "arguments", "{\"order_id\":\"A1042\"}"));
            json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id",
                                                  "call_0_0", "content",
                                                  "{\"order_id\":\"A1042\",\"status\":\"shipped\","
                                                  "\"carrier\":\"DHL\",\"eta\":\"2026-11-25\"}"));
            continue;
        }
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role, "content",
                                              sentence(100 + rnd() % 300, buf)));
    }
    for (int i = 0; i < 3; i++)
        json_array_append_new(
            tools, json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}}, s:[s], s:b}}}", "type",
                             "function", "function", "name", "lookup_order", "description",
                             "Look up the status, carrier and expected delivery date of an order",
                             "parameters", "type", "object", "properties", "order_id", "type",
                             "string", "description", "Order number such as A1042", "required",
                             "order_id", "additionalProperties", 0));
    return json_pack("{s:s, s:o, s:o, s:f, s:I}", "model", "gpt-4o-mini", "messages", msgs, "tools",
                     tools, "temperature", 0.2, "max_tokens", (json_int_t)1024);
}

static json_t *make_memory(void)
{
    char key[32], buf[128];
    json_t *o = json_object(), *orders = json_array();
    for (int i = 0; i < 18; i++) {
        snprintf(key, sizeof(key), "field_%d", i);
        json_object_set_new(o, key,
                            i % 3 ? json_string(sentence(40, buf))
                                  : json_integer((json_int_t)(rnd() % 100000)));
    }
    for (int i = 0; i < 10; i++)
        json_array_append_new(orders, json_pack("{s:s, s:s, s:I}", "id", "A1042", "status",
                                                "shipped", "n", (json_int_t)i));
    json_object_set_new(o, "orders", orders);
    json_object_set_new(o, "last_order", json_string("A1042"));
    return o;
}

static json_t *make_array(int kind)
{
    json_t *a = json_array();
    for (int i = 0; i < 100; i++) {
        if (kind == 0) { /* a reading with 1-2 decimals: 71.1, 1013.25 */
            double scale = (rnd() & 1) ? 10.0 : 100.0;
            json_array_append_new(a, json_real((double)(rnd() % 200000) / scale));
        } else if (kind == 3) { /* 159.98000000000002, 23.7 / 3 */
            double r = (double)(rnd() % 2000) / 10.0;
            json_array_append_new(a, json_real((rnd() & 1) ? r * 1.8 + 32 : r / 3));
        } else if (kind == 1) {
            double d;
            uint64_t u;
            do {
                u = rnd();
                memcpy(&d, &u, sizeof(d));
            } while (d != d || d - d != 0);
            json_array_append_new(a, json_real(d));
        } else {
            json_array_append_new(a, json_integer((json_int_t)(rnd() >> (rnd() % 63))));
        }
    }
    return a;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static size_t g_sink;

static double run_one(const json_t *v, int eddy, long iters)
{
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        char *s = eddy ? eddy_json_dumps(v) : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        g_sink += s[0];
        eddy_free(s);
    }
    return (now_ns() - t0) / (double)iters;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    int repeat = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 7;
    struct {
        const char *name;
        json_t *v;
    } w[7];
    double te[64], tj[64];
    eddy_alloc_install();
    w[0].name = "event", w[0].v = make_event();
    w[1].name = "request", w[1].v = make_request();
    w[2].name = "memory", w[2].v = make_memory();
    w[3].name = "reals", w[3].v = make_array(0);
    w[4].name = "computed", w[4].v = make_array(3);
    w[5].name = "bits", w[5].v = make_array(1);
    w[6].name = "ints", w[6].v = make_array(2);
    if (repeat < 1 || repeat > 64 || iters < 1)
        return 2;
    printf("json_bench: %ld dumps x %d rounds, medians in ns per dump\n", iters, repeat);
    printf("%-8s %7s %12s %12s %8s\n", "workload", "bytes", "eddy ns", "jansson ns", "ratio");
    for (int k = 0; k < 7; k++) {
        char *a = eddy_json_dumps(w[k].v), *b = json_dumps(w[k].v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_t *pa = json_loads(a, JSON_DECODE_ANY, NULL),
               *pb = json_loads(b, JSON_DECODE_ANY, NULL);
        if (!json_equal(pa, pb) || !json_equal(pa, w[k].v)) {
            fprintf(stderr, "json_bench: %s: the two texts differ in value\n", w[k].name);
            return 1;
        }
        for (int r = 0; r < repeat; r++) {
            long n = k >= 3 && k <= 5 ? iters / 10 : iters;
            te[r] = run_one(w[k].v, 1, n);
            tj[r] = run_one(w[k].v, 0, n);
        }
        double me = median(te, repeat), mj = median(tj, repeat);
        printf("%-8s %7zu %12.0f %12.0f %7.2fx\n", w[k].name, strlen(a), me, mj, mj / me);
        eddy_free(a);
        eddy_free(b);
        json_decref(pa);
        json_decref(pb);
        json_decref(w[k].v);
    }
    printf("ratio = jansson / eddy (above 1: eddy is faster)\n");
    return g_sink == 0;
}
