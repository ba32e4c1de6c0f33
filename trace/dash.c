/*
 * trace/dash.c - what the dashboard adds to trace/http.c: its static assets
 * (embedded from trace/assets/ at build time) and the live tail, /api/tail.
 *
 * The tail is a server-sent event stream: one "run" event (id: the row id,
 * data: the row as eddy_trace_query gives it) for each run stored after the
 * client's last one, found by polling the store every 500 ms through a
 * connection of its own. Its reader callback sleeps between polls, so the
 * daemon runs a thread per connection, and at most EDDY__DASH_TAIL_CLIENTS
 * streams are open at once. A stream ends after TAIL_LIFETIME_MS (the
 * browser's EventSource reconnects with Last-Event-ID and misses nothing),
 * and within 50 ms of eddy__dash_tail_stop. A client that goes away is found
 * out at the next write (a comment every TAIL_KEEPALIVE_MS at least); the
 * daemon then calls the free callback, which releases the slot.
 */
#include "dash_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/trace.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TAIL_POLL_MS = 500, TAIL_KEEPALIVE_MS = 1000, TAIL_LIFETIME_MS = 5 * 60 * 1000 };
enum { TAIL_BATCH = 200 };

struct eddy__dash_tail {
    const char *path;
    atomic_int stopping;
    atomic_int clients;
};

enum { F_AGENT, F_KEY, F_EVENT, F_STATUS, F_MODEL, F_TOOL, F_SEARCH, F_N };

typedef struct tail_client {
    eddy__dash_tail *t;
    char *filter[F_N]; /* the list's filters (copies; NULL: any) */
    int64_t last_id;
    int64_t started_ms, last_write_ms, next_poll_ms;
    eddy_buf out; /* what is still to be sent */
    size_t sent;  /* bytes of out already sent */
} tail_client;

/* -- assets -------------------------------------------------------------------- */

static const struct {
    const char *ext, *type;
} kTypes[] = {{".html", "text/html; charset=utf-8"},
              {".js", "text/javascript; charset=utf-8"},
              {".css", "text/css; charset=utf-8"},
              {".svg", "image/svg+xml"}};

const eddy__dash_asset *eddy__dash_find(const char *url, const char **type)
{
    const char *name = !strcmp(url, "/") ? "index.html" : url + 1;
    if (url[0] != '/' || !strcmp(name, "index.html") != !strcmp(url, "/"))
        return NULL; /* "/index.html" is not served: one URL per page */
    for (const eddy__dash_asset *a = eddy__dash_assets; a->name; a++) {
        if (strcmp(a->name, name))
            continue;
        const char *dot = strrchr(a->name, '.');
        for (size_t i = 0; dot && i < sizeof(kTypes) / sizeof(kTypes[0]); i++)
            if (!strcmp(dot, kTypes[i].ext)) {
                *type = kTypes[i].type;
                return a;
            }
        return NULL;
    }
    return NULL;
}

/* -- the tail ------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The greatest run id of the store at PATH; 0 when it has none or cannot be read. */
static int64_t max_id(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM traces", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return id;
}

/* Append the runs after c->last_id to c->out as events. A store that cannot
 * be read now (not created yet, busy) is tried again at the next poll. */
static void poll_runs(tail_client *c)
{
    eddy_trace_filter f = {.agent = c->filter[F_AGENT],
                           .key = c->filter[F_KEY],
                           .event_id = c->filter[F_EVENT],
                           .status = c->filter[F_STATUS],
                           .model = c->filter[F_MODEL],
                           .tool = c->filter[F_TOOL],
                           .search = c->filter[F_SEARCH]};
    json_t *rows = NULL, *row;
    size_t i;
    f.above_id = c->last_id; /* in id order */
    f.limit = TAIL_BATCH;
    if (eddy_trace_query(c->t->path, &f, &rows, NULL))
        return;
    json_array_foreach(rows, i, row)
    {
        int64_t id = eddy_json_int(row, "id", 0);
        char *s = eddy_json_dumps_flags(row, JSON_COMPACT);
        if (!s)
            break;
        eddy_buf_printf(&c->out, "event: run\nid: %lld\ndata: %s\n\n", (long long)id, s);
        eddy_free(s);
        if (id > c->last_id)
            c->last_id = id;
    }
    json_decref(rows);
}

static ssize_t tail_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    tail_client *c = cls;
    (void)pos;
    while (c->sent == c->out.len) {
        c->sent = 0;
        c->out.len = 0;
        int64_t now = now_ms();
        if (atomic_load(&c->t->stopping) || now - c->started_ms >= TAIL_LIFETIME_MS)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (now >= c->next_poll_ms) {
            poll_runs(c);
            c->next_poll_ms = now + TAIL_POLL_MS;
        }
        if (!c->out.len && now - c->last_write_ms >= TAIL_KEEPALIVE_MS)
            eddy_buf_puts(&c->out, ": keep-alive\n\n");
        if (c->out.oom)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!c->out.len)
            sleep_ms(50);
    }
    size_t n = c->out.len - c->sent < max ? c->out.len - c->sent : max;
    memcpy(buf, c->out.data + c->sent, n);
    c->sent += n;
    c->last_write_ms = now_ms();
    return (ssize_t)n;
}

static void tail_free(void *cls)
{
    tail_client *c = cls;
    atomic_fetch_sub(&c->t->clients, 1);
    for (int i = 0; i < F_N; i++)
        eddy_free(c->filter[i]);
    eddy_buf_free(&c->out);
    eddy_free(c);
}

struct MHD_Response *eddy__dash_tail_response(eddy__dash_tail *t, const char *last_id,
                                              const eddy_trace_filter *f, unsigned *status)
{
    char *end;
    *status = 503;
    if (atomic_fetch_add(&t->clients, 1) >= EDDY__DASH_TAIL_CLIENTS) {
        atomic_fetch_sub(&t->clients, 1);
        return NULL;
    }
    *status = 500;
    tail_client *c = eddy_calloc(1, sizeof(*c));
    if (!c) {
        atomic_fetch_sub(&t->clients, 1);
        return NULL;
    }
    c->t = t;
    eddy_buf_init(&c->out);
    const char *given[F_N] = {f ? f->agent : NULL,  f ? f->key : NULL,   f ? f->event_id : NULL,
                              f ? f->status : NULL, f ? f->model : NULL, f ? f->tool : NULL,
                              f ? f->search : NULL};
    for (int i = 0; i < F_N; i++)
        if (given[i] && !(c->filter[i] = eddy_strdup(given[i]))) {
            tail_free(c);
            return NULL;
        }
    long long id = last_id && *last_id ? strtoll(last_id, &end, 10) : -1;
    c->last_id = last_id && *last_id && !*end && id >= 0 ? id : max_id(t->path);
    c->started_ms = c->last_write_ms = now_ms();
    c->next_poll_ms = c->started_ms + TAIL_POLL_MS;
    /* at once, so the browser sees the stream open: how soon to reconnect */
    eddy_buf_printf(&c->out, "retry: 1000\n: tail after %lld\n\n", (long long)c->last_id);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, tail_read, c, tail_free);
    if (!r) /* the daemon never calls tail_free for a response it did not make */
        tail_free(c);
    return r;
}

eddy__dash_tail *eddy__dash_tail_new(const char *path)
{
    eddy__dash_tail *t = eddy_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->path = path;
    atomic_init(&t->stopping, 0);
    atomic_init(&t->clients, 0);
    return t;
}

void eddy__dash_tail_stop(eddy__dash_tail *t)
{
    if (t)
        atomic_store(&t->stopping, 1);
}

void eddy__dash_tail_free(eddy__dash_tail *t)
{
    eddy_free(t);
}
