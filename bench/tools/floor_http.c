/*
 * bench/tools/floor_http.c - the floor of bench/tools' HTTP figure: the same GET
 * requests eddy.http makes, from a bare libcurl multi program (no eddy code, no
 * Lua, no allow lists, no spans), so eddy's CPU per request can be set against it.
 *
 * N requests to URL with at most C in flight; every easy handle is reused (so
 * connections are kept alive, as eddy's multi keeps them); the body is kept in
 * memory as eddy does. Prints one line: "floor: N requests, C in flight, X us CPU
 * per request (user+sys), Y requests/s". Exit status 1 when a request failed.
 *
 *   bench_tools_floor URL [N] [C]
 */
#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct slot {
    CURL *easy;
    char buf[4096];
    size_t len;
} slot;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    slot *s = ud;
    size_t len = size * n;
    if (s->len + len > sizeof(s->buf))
        return 0;
    memcpy(s->buf + s->len, p, len);
    s->len += len;
    return len;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void start(CURLM *m, slot *s, const char *url)
{
    s->len = 0;
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(m, s->easy);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : NULL;
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
    long c = argc > 3 ? strtol(argv[3], NULL, 10) : 50, started = 0, done = 0, failed = 0;
    slot *slots;
    CURLM *m;
    double c0, t0;
    if (!url || n <= 0 || c <= 0) {
        fprintf(stderr, "usage: bench_tools_floor URL [N] [C]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    m = curl_multi_init();
    slots = calloc((size_t)c, sizeof(*slots));
    c0 = cpu_us();
    t0 = now_s();
    for (long i = 0; i < c && started < n; i++, started++) {
        slots[i].easy = curl_easy_init();
        start(m, &slots[i], url);
    }
    while (done < n) {
        int running, left;
        CURLMsg *msg;
        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left))) {
            slot *s;
            long status = 0;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200)
                failed++;
            curl_multi_remove_handle(m, s->easy);
            done++;
            if (started < n) {
                started++;
                start(m, s, url);
            }
        }
        if (done < n)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double cpu = cpu_us() - c0, wall = now_s() - t0;
    printf("floor: %ld requests, %ld in flight, %.1f us CPU per request (user+sys), %.0f "
           "requests/s%s\n",
           n, c, cpu / (double)n, (double)n / wall, failed ? " (SOME FAILED)" : "");
    for (long i = 0; i < c; i++)
        if (slots[i].easy)
            curl_easy_cleanup(slots[i].easy);
    free(slots);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
