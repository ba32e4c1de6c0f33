/*
 * core/alloc.c - the one allocation family.
 *
 * eddy_malloc and friends wrap libc. A test can ask the n-th
 * allocation from now to fail (eddy_alloc_fail_after) to prove that every
 * out-of-memory path returns EDDY_ENOMEM without leaking. jansson, libuv and
 * curl are pointed at this family by eddy_alloc_install; Lua gets it through
 * its lua_Alloc in tools/. SQLite keeps its own allocator (its fault
 * injection is its own concern).
 */
#include "eddy/buf.h"

#include <curl/curl.h>
#include <jansson.h>
#include <malloc.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

static atomic_long g_fail_after = -1;

/* No shared counter is written on the common path: every thread allocates
 * all the time, and one atomic add per call kept a cache line bouncing
 * between them (bench/runtime: eddy_malloc was 6 % of a worker's time). */
static int should_fail(void)
{
    long left = atomic_load_explicit(&g_fail_after, memory_order_relaxed);
    if (left < 0)
        return 0;
    if (left == 0)
        return 1;
    atomic_fetch_sub(&g_fail_after, 1);
    return 0;
}

/* The allocation budget of this thread (eddy_alloc_budget_begin), or -1. */
static _Thread_local long long t_budget = -1;
static _Thread_local int t_over;

static int over_budget(size_t n)
{
    if (t_budget < 0)
        return 0;
    if ((unsigned long long)n > (unsigned long long)t_budget) {
        t_over = 1;
        return 1;
    }
    t_budget -= (long long)n;
    return 0;
}

void eddy_alloc_budget_begin(long long bytes)
{
    t_budget = bytes < 0 ? 0 : bytes;
    t_over = 0;
}

int eddy_alloc_budget_end(void)
{
    int over = t_over;
    t_budget = -1;
    t_over = 0;
    return over;
}

void *eddy_malloc(size_t n)
{
    if (should_fail() || over_budget(n))
        return NULL;
    return malloc(n ? n : 1);
}

void *eddy_calloc(size_t n, size_t size)
{
    if (should_fail() || (size && n > SIZE_MAX / size) || over_budget(n * size))
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *eddy_realloc(void *p, size_t n)
{
    if (should_fail() || over_budget(n))
        return NULL;
    return realloc(p, n ? n : 1);
}

void eddy_free(void *p)
{
    free(p);
}

char *eddy_strndup(const char *s, size_t n)
{
    char *d;
    if (!s)
        return NULL;
    d = eddy_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *eddy_strdup(const char *s)
{
    return s ? eddy_strndup(s, strlen(s)) : NULL;
}

char *eddy_aprintf(const char *fmt, ...)
{
    va_list ap, ap2;
    char *s;
    int n;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !(s = eddy_malloc((size_t)n + 1))) {
        va_end(ap2);
        return NULL;
    }
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

void eddy_alloc_fail_after(long n)
{
    atomic_store(&g_fail_after, n);
}

static char *curl_strdup_cb(const char *s)
{
    return eddy_strdup(s);
}

/* mimalloc's, when the binary is linked with it (see the Makefile's
 * MALLOC); NULL otherwise. */
extern void mi_collect(bool force) __attribute__((weak));

void eddy_alloc_collect(void)
{
    /* mimalloc keeps freed pages committed until its heap is collected, even
     * while the thread goes on allocating (600 MB of freed 1-3 MiB blocks
     * stayed resident); glibc gives blocks over 1 MiB back at free (below) */
    if (mi_collect)
        mi_collect(false);
}

void eddy_alloc_install(void)
{
    /* blocks of 1 MiB and more always come from mmap and go back to the
     * system when freed: glibc would otherwise raise the threshold after the
     * first big free, and a tool that was stopped at its memory budget
     * would leave the process that much bigger for good */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    json_set_alloc_funcs(eddy_malloc, eddy_free);
    uv_replace_allocator(eddy_malloc, eddy_realloc, eddy_calloc, eddy_free);
    curl_global_init_mem(CURL_GLOBAL_DEFAULT, eddy_malloc, eddy_free, eddy_realloc, curl_strdup_cb,
                         eddy_calloc);
    /* SQLite counts its allocations under one process-wide mutex: the store's
     * writer, its readers and the trace writer waited on it for each other
     * (2,000 futex sleeps of the reader per 10,000 events). eddy reads no
     * sqlite3_memory_used. Refused (harmlessly) once SQLite is initialized. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
