/*
 * tests/shim/slowdns.c - an LD_PRELOAD library whose getaddrinfo takes its
 * time: it sleeps eddy_slowdns_ms (600 unless the test changes it), then
 * asks the real one (the next in the lookup order). Stands for a slow or
 * unreachable DNS resolver in the Fluss client tests (tests/unit/test_fluss.c
 * loads it into a child of itself). eddy_slowdns_calls counts the lookups,
 * so that a test can tell the shim is in place and was used.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

atomic_int eddy_slowdns_ms = 600;
atomic_int eddy_slowdns_calls;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    int ms = atomic_load(&eddy_slowdns_ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    atomic_fetch_add(&eddy_slowdns_calls, 1);
    while (nanosleep(&ts, &ts))
        ;
    if (!real)
        return EAI_SYSTEM;
    return real(node, service, hints, res);
}
