/*
 * trace/otlp.c - OTLP/HTTP JSON export of the spans the trace store keeps:
 * the queue, the exporter thread and its retries (settings in otlp_config.c,
 * the request body in otlp_encode.c).
 *
 * The store's writer thread copies each kept span into one allocation (a rec)
 * at the tail of a bounded list under a mutex and returns; the exporter's
 * thread takes up to max_batch of them once the first has waited delay_ms (or
 * the batch is full, or the store closes), encodes one ExportTraceServiceRequest
 * with eddy_buf and the JSON string escaper (no jansson tree but the parsed
 * attributes of one span at a time), and POSTs it with a blocking curl easy
 * handle that it alone uses. Retries follow the OTLP/HTTP specification:
 * connection errors and 429/502/503/504 are retried with exponential backoff
 * and jitter, at least Retry-After when the receiver sends one; any other
 * answer but 2xx gives the batch up. Invariants: the writer never waits on
 * the network (a full queue drops the span and counts it); a failure streak is
 * logged once, at its start, and its end once; header values are never
 * logged, whatever the level. At close the queue gets flush_ms to drain (a
 * POST in flight is cut at the deadline), then what is left is dropped and
 * counted.
 */
#include "otlp_int.h"
#include "eddy/log.h"
#include "eddy/version.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_ATTEMPTS 6       /* POSTs of one batch, the first included */
#define BACKOFF_FIRST_MS 250 /* then doubled at each retry */
#define BACKOFF_MAX_MS 8000  /* before jitter */
#define RETRY_AFTER_MAX_MS 30000
#define ERR_BODY_MAX 512 /* of a receiver's error answer, kept for the log */

/* One queued span: the struct, then its strings, NUL-terminated, in DATA. */
typedef struct rec {
    struct rec *next;
    eddy__otlp_span sp; /* pointers into data */
    char data[];
} rec;

struct eddy__otlp {
    eddy__otlp_config cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;    /* CLOCK_MONOTONIC */
    rec *head, *tail;     /* under mu */
    size_t n;             /* under mu */
    int closing;          /* under mu */
    uint64_t deadline_ms; /* under mu: eddy_now_ms() by which close gives up */
    atomic_uint_fast64_t exported, dropped, failed, retries, queued;
    atomic_int full_warned; /* the queue-full warning of the current streak was logged */
    /* exporter thread only */
    CURL *easy;
    struct curl_slist *hdrs;
    int failing;             /* in a failure streak (its warning logged) */
    uint64_t streak_batches; /* batches given up in the current streak */
    long retry_after_ms;     /* from the last answer, -1 none */
    eddy_buf resp;           /* the last answer's body (bounded) */
    char *shown_url;         /* for the log: the URL without user:password@ and ?query */
};

/* -- the queue ----------------------------------------------------------------- */

static char *copy_in(char **at, const char *s, size_t n)
{
    char *p = *at;
    memcpy(p, s, n);
    p[n] = '\0';
    *at = p + n + 1;
    return p;
}

static rec *rec_new(const eddy__otlp_span *sp)
{
    size_t lt = strlen(sp->trace_id), ls = strlen(sp->span_id);
    size_t lp = sp->parent_id ? strlen(sp->parent_id) : 0, ln = strlen(sp->name);
    size_t le = sp->error ? strlen(sp->error) : 0;
    rec *r = eddy_malloc(sizeof(*r) + lt + ls + lp + ln + le + sp->attrs_len + 6);
    if (!r)
        return NULL;
    char *at = r->data;
    r->next = NULL;
    r->sp = *sp;
    r->sp.trace_id = copy_in(&at, sp->trace_id, lt);
    r->sp.span_id = copy_in(&at, sp->span_id, ls);
    r->sp.parent_id = copy_in(&at, sp->parent_id ? sp->parent_id : "", lp);
    r->sp.name = copy_in(&at, sp->name, ln);
    r->sp.error = sp->error ? copy_in(&at, sp->error, le) : NULL;
    r->sp.attrs = copy_in(&at, sp->attrs, sp->attrs_len);
    return r;
}

void eddy__otlp_add(eddy__otlp *x, const eddy__otlp_span *sp)
{
    rec *r = rec_new(sp); /* copied before the lock: the lock only links it */
    int wake = 0, queued = 0;
    if (r) {
        pthread_mutex_lock(&x->mu);
        if (x->n < x->cfg.max_queue && !x->closing) {
            if (x->tail)
                x->tail->next = r;
            else
                x->head = r;
            x->tail = r;
            x->n++;
            /* under mu, so the exporter's decrement (also under it) never comes first */
            atomic_fetch_add_explicit(&x->queued, 1, memory_order_relaxed);
            wake = x->n == 1 || x->n == x->cfg.max_batch;
            queued = 1;
        }
        pthread_mutex_unlock(&x->mu);
    }
    if (queued) {
        if (wake)
            pthread_cond_signal(&x->cv);
        return;
    }
    eddy_free(r);
    atomic_fetch_add_explicit(&x->dropped, 1, memory_order_relaxed);
    if (!atomic_exchange(&x->full_warned, 1)) {
        if (r)
            EDDY_WARN("trace",
                      "otlp: the export queue is full (%zu spans): spans are dropped "
                      "(logged once until an export succeeds)",
                      x->cfg.max_queue);
        else
            EDDY_WARN("trace", "otlp: out of memory: spans are dropped (logged once until an "
                               "export succeeds)");
    }
}

/* -- sending ------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    eddy__otlp *x = ud;
    size_t len = size * n;
    if (x->resp.len < ERR_BODY_MAX)
        eddy_buf_append(&x->resp, p,
                        len < ERR_BODY_MAX - x->resp.len ? len : ERR_BODY_MAX - x->resp.len);
    return len;
}

/* Retry-After: delay-seconds, or an HTTP date. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    eddy__otlp *x = ud;
    size_t len = size * n;
    if (len > 12 && !strncasecmp(p, "Retry-After:", 12)) {
        char v[64];
        size_t vl = len - 12 < sizeof(v) - 1 ? len - 12 : sizeof(v) - 1;
        memcpy(v, p + 12, vl);
        v[vl] = '\0';
        char *s = v, *end;
        while (isspace((unsigned char)*s))
            s++;
        for (char *e = s + strlen(s); e > s && isspace((unsigned char)e[-1]);)
            *--e = '\0';
        errno = 0;
        long secs = strtol(s, &end, 10);
        if (end != s && !*end && !errno && secs >= 0) {
            x->retry_after_ms = secs > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : secs * 1000;
        } else {
            time_t t = curl_getdate(s, NULL), now = time(NULL);
            if (t != -1)
                x->retry_after_ms = t <= now                              ? 0
                                    : t - now > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS
                                                                          : (long)(t - now) * 1000;
        }
    }
    return len;
}

/* Cuts a POST at the close deadline. */
static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    eddy__otlp *x = ud;
    (void)a, (void)b, (void)c, (void)d;
    pthread_mutex_lock(&x->mu);
    int stop = x->closing && eddy_now_ms() >= x->deadline_ms;
    pthread_mutex_unlock(&x->mu);
    return stop;
}

/* Mask in TEXT each header value the receiver may have echoed back (an
 * error body that quotes the request): header values are never logged. */
static void scrub(const eddy__otlp *x, char *text)
{
    for (size_t i = 0; x->cfg.headers && x->cfg.headers[i]; i++) {
        const char *v = strchr(x->cfg.headers[i], ':');
        v = v ? v + 2 : "";
        size_t vl = strlen(v);
        for (char *hit; vl >= 3 && (hit = strstr(text, v));)
            memset(hit, '*', vl);
    }
}

enum { SENT, RETRY, GIVE_UP };

/* One POST of BODY. Returns SENT, RETRY or GIVE_UP; WHY (for the log) says
 * what went wrong. */
static int post(eddy__otlp *x, const eddy_buf *body, char *why, size_t whylen)
{
    long status = 0;
    x->retry_after_ms = -1;
    eddy_buf_reset(&x->resp);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    CURLcode cc = curl_easy_perform(x->easy);
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
        return cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL ||
                       cc == CURLE_ABORTED_BY_CALLBACK
                   ? GIVE_UP
                   : RETRY;
    }
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return SENT;
    /* the receiver's answer, one line, bounded: it says why (a 400's reason);
     * scrubbed whole (ERR_BODY_MAX), before it is cut to what is shown */
    char text[160];
    size_t n = 0;
    if (x->resp.data && !x->resp.oom)
        scrub(x, x->resp.data);
    for (size_t i = 0; x->resp.data && i < x->resp.len && n < sizeof(text) - 1; i++)
        text[n++] = x->resp.data[i] == '\n' || x->resp.data[i] == '\r' ? ' ' : x->resp.data[i];
    text[n] = '\0';
    snprintf(why, whylen, "HTTP %ld%s%s", status, n ? ": " : "", text);
    return status == 429 || status == 502 || status == 503 || status == 504 ? RETRY : GIVE_UP;
}

/* Wait MS, or less when closing and the deadline comes first. Returns
 * nonzero when the close deadline has passed. */
static int pause_ms(eddy__otlp *x, uint64_t ms)
{
    uint64_t until = eddy_now_ms() + ms;
    int over;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        uint64_t now = eddy_now_ms(),
                 end = x->closing && x->deadline_ms < until ? x->deadline_ms : until;
        if (now >= end)
            break;
        struct timespec ts;
        eddy_deadline_in(&ts, end - now);
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    over = x->closing && eddy_now_ms() >= x->deadline_ms;
    pthread_mutex_unlock(&x->mu);
    return over;
}

static void streak_failed(eddy__otlp *x, const char *why, size_t n, int will_retry)
{
    if (!x->failing) {
        x->failing = 1;
        EDDY_WARN("trace",
                  "otlp: cannot export %zu spans to %s: %s%s (logged once until an "
                  "export succeeds)",
                  n, x->shown_url, why, will_retry ? "; retrying" : "; dropped");
    } else {
        EDDY_DEBUG("trace", "otlp: export to %s failed again: %s", x->shown_url, why);
    }
}

/* Send the batch of N spans in BODY, retrying what may be retried. */
static void send_batch(eddy__otlp *x, const eddy_buf *body, size_t n)
{
    char why[256];
    uint64_t backoff = BACKOFF_FIRST_MS;
    for (int attempt = 1;; attempt++) {
        int r = post(x, body, why, sizeof(why));
        if (r == SENT) {
            atomic_fetch_add_explicit(&x->exported, n, memory_order_relaxed);
            if (x->failing)
                EDDY_INFO("trace",
                          "otlp: export to %s works again (%llu batches given up "
                          "meanwhile)",
                          x->shown_url, (unsigned long long)x->streak_batches);
            x->failing = 0;
            x->streak_batches = 0;
            atomic_store(&x->full_warned, 0);
            return;
        }
        int retry = r == RETRY && attempt < MAX_ATTEMPTS;
        streak_failed(x, why, n, retry);
        if (retry) {
            /* full jitter over the upper half: [backoff/2, backoff] */
            uint64_t wait = backoff / 2 + (uint64_t)(eddy_random_unit() * (double)(backoff / 2));
            if (x->retry_after_ms >= 0 && (uint64_t)x->retry_after_ms > wait)
                wait = (uint64_t)x->retry_after_ms;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            if (!pause_ms(x, wait)) {
                atomic_fetch_add_explicit(&x->retries, 1, memory_order_relaxed);
                continue;
            }
        }
        atomic_fetch_add_explicit(&x->failed, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&x->dropped, n, memory_order_relaxed);
        x->streak_batches++;
        return;
    }
}

/* Take up to max_batch spans once the batch is due; NULL when closed and
 * empty. Called and returns with mu held. */
static rec *take_batch(eddy__otlp *x, size_t *n_out)
{
    uint64_t first_at = 0;
    for (;;) {
        if (!x->n) {
            if (x->closing)
                return NULL;
            pthread_cond_wait(&x->cv, &x->mu);
            first_at = eddy_now_ms();
            continue;
        }
        if (!first_at)
            first_at = eddy_now_ms();
        uint64_t now = eddy_now_ms();
        if (x->closing || x->n >= x->cfg.max_batch || now >= first_at + (uint64_t)x->cfg.delay_ms)
            break;
        struct timespec ts;
        eddy_deadline_in(&ts, first_at + (uint64_t)x->cfg.delay_ms - now);
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    rec *head = x->head, *r = head;
    size_t n = 1;
    while (n < x->cfg.max_batch && r->next)
        r = r->next, n++;
    x->head = r->next;
    r->next = NULL;
    if (!x->head)
        x->tail = NULL;
    x->n -= n;
    *n_out = n;
    return head;
}

static void free_recs(rec *r)
{
    while (r) {
        rec *nx = r->next;
        eddy_free(r);
        r = nx;
    }
}

static void *run(void *arg)
{
    eddy__otlp *x = arg;
    const eddy__otlp_span **v = eddy_malloc(x->cfg.max_batch * sizeof(*v));
    eddy_buf body;
    eddy_buf_init(&body);
    pthread_setname_np(pthread_self(), "eddy-otlp");
    pthread_mutex_lock(&x->mu);
    for (;;) {
        size_t n = 0;
        rec *batch = take_batch(x, &n);
        if (!batch)
            break;
        int over = x->closing && eddy_now_ms() >= x->deadline_ms;
        atomic_fetch_sub_explicit(&x->queued, n, memory_order_relaxed);
        pthread_mutex_unlock(&x->mu);
        size_t i = 0;
        for (rec *r = batch; r && v; r = r->next)
            v[i++] = &r->sp;
        eddy_buf_reset(&body);
        if (over || !v || eddy__otlp_encode(&body, x->cfg.service_name, v, n)) {
            if (!over)
                streak_failed(x, "out of memory", n, 0);
            if (!over)
                atomic_fetch_add_explicit(&x->failed, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&x->dropped, n, memory_order_relaxed);
        } else {
            send_batch(x, &body, n);
        }
        free_recs(batch);
        pthread_mutex_lock(&x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    eddy_buf_free(&body);
    eddy_free(v);
    return NULL;
}

/* -- lifecycle ----------------------------------------------------------------- */

static int setup_curl(eddy__otlp *x, eddy_err *err)
{
    if (!(x->easy = curl_easy_init()))
        return eddy_err_set(err, EDDY_ENOMEM, "otlp: cannot create a curl handle");
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    for (size_t i = 0; h && x->cfg.headers && x->cfg.headers[i]; i++) {
        struct curl_slist *h2 = curl_slist_append(h, x->cfg.headers[i]);
        if (!h2) {
            curl_slist_free_all(h);
            h = NULL;
        }
        h = h2;
    }
    if (!h)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    x->hdrs = h;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, x->cfg.url); /* the one use of the full URL */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)x->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(x->cfg.timeout_ms < 5000 ? x->cfg.timeout_ms : 5000));
    curl_easy_setopt(e, CURLOPT_USERAGENT, "eddy/" EDDY_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    return 0;
}

/* URL as the log shows it: credentials in it (user:password@, a ?token=)
 * are secrets as much as a header is. NULL when out of memory. */
static char *redact_url(const char *url)
{
    const char *host = strstr(url, "://"), *end, *at;
    host = host ? host + 3 : url;
    end = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(end - host));
    const char *path = end, *q = path + strcspn(path, "?#");
    return eddy_aprintf("%.*s%s%.*s%s", (int)(host - url), url, at ? "***@" : "",
                        (int)(q - (at ? at + 1 : host)), at ? at + 1 : host, *q ? "?..." : "");
}

static void otlp_destroy(eddy__otlp *x)
{
    eddy_free(x->shown_url);
    free_recs(x->head);
    curl_slist_free_all(x->hdrs);
    curl_easy_cleanup(x->easy);
    eddy_buf_free(&x->resp);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    eddy__otlp_config_free(&x->cfg);
    eddy_free(x);
}

int eddy__otlp_new_take(eddy__otlp_config *c, eddy__otlp **out, eddy_err *err)
{
    eddy__otlp *x = eddy_calloc(1, sizeof(*x));
    pthread_condattr_t ca;
    int rc;
    *out = NULL;
    if (!x) {
        eddy__otlp_config_free(c);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    x->cfg = *c;
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&x->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&x->cv, &ca);
    pthread_condattr_destroy(&ca);
    eddy_buf_init(&x->resp);
    if (!(x->shown_url = redact_url(x->cfg.url))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = setup_curl(x, err)))
        goto fail;
    if ((rc = pthread_create(&x->thread, NULL, run, x))) {
        rc = eddy_err_setc(err, EDDY_EIO, rc, "otlp: cannot start the export thread: %s",
                           strerror(rc));
        goto fail;
    }
    size_t nh = 0;
    while (x->cfg.headers && x->cfg.headers[nh])
        nh++;
    EDDY_DEBUG("trace", "otlp: exporting spans to %s (%zu headers set)", x->shown_url, nh);
    *out = x;
    return 0;
fail:
    otlp_destroy(x);
    return rc;
}

void eddy__otlp_stats(const eddy__otlp *x, eddy_otlp_stats *out)
{
    eddy__otlp *m = (eddy__otlp *)x; /* atomics are read, not changed */
    memset(out, 0, sizeof(*out));
    if (!x)
        return;
    out->exported = atomic_load_explicit(&m->exported, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&m->dropped, memory_order_relaxed);
    out->failed_batches = atomic_load_explicit(&m->failed, memory_order_relaxed);
    out->retries = atomic_load_explicit(&m->retries, memory_order_relaxed);
    out->queued = atomic_load_explicit(&m->queued, memory_order_relaxed);
}

void eddy__otlp_free(eddy__otlp *x)
{
    eddy_otlp_stats st;
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->closing = 1;
    x->deadline_ms = eddy_now_ms() + (uint64_t)x->cfg.flush_ms;
    pthread_mutex_unlock(&x->mu);
    pthread_cond_broadcast(&x->cv);
    pthread_join(x->thread, NULL);
    eddy__otlp_stats(x, &st);
    if (st.dropped || st.failed_batches)
        EDDY_WARN("trace",
                  "otlp: %llu spans exported to %s, %llu dropped, %llu batches failed, "
                  "%llu retries",
                  (unsigned long long)st.exported, x->shown_url, (unsigned long long)st.dropped,
                  (unsigned long long)st.failed_batches, (unsigned long long)st.retries);
    else
        EDDY_INFO("trace",
                  "otlp: %llu spans exported to %s, 0 dropped, 0 batches failed, "
                  "%llu retries",
                  (unsigned long long)st.exported, x->shown_url, (unsigned long long)st.retries);
    otlp_destroy(x);
}
