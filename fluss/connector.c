/*
 * fluss/connector.c - Fluss tables as eddy sources and sinks.
 *
 * Source: reads every bucket of a log table, or the changelog of a PK table
 * (change type in event._change), from the position the job's last
 * checkpoint stored for it, else from `start` (earliest, latest or a time).
 * Rows become JSON events in a bounded queue; when it is full the scanner
 * pauses (backpressure, nothing dropped). Each bucket is a part of the
 * source and each record's position its offset: the runtime's checkpoints
 * store, per bucket, the offset below which every record was handled and
 * delivered, so a restart reads again exactly what was not. With
 * `follow: false` the source ends at the end offsets it saw when it started.
 *
 * Sink: maps each output's fields onto the table's columns (fields that are
 * not columns are ignored; a value of the wrong type is an error naming the
 * column, so the output goes to the dead letters), appends to a log table or
 * upserts a PK table through the idempotent writer, and reports each row's
 * acknowledgement by the server (or its failure, after retries) through the
 * delivery callback. It is ready once the table is known (a run waits for
 * that before it reads: a table that is not there fails it at the start).
 */
#include "eddy/fluss.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/connector.h"
#include "eddy/log.h"
#include "eddy/memory.h"
#include "fluss_int.h"

typedef struct qitem {
    struct qitem *next;
    json_t *ev;
    char *where;
    int bucket;
    int64_t off;
} qitem;

/* Per bucket: the offset after the last record read. */
typedef struct pending {
    int64_t next;
} pending;

typedef struct fsrc {
    eddy_fluss_client *c;
    const eddy_fluss_table *t; /* owned by the client's cache: NULL once closed */
    int nbuckets;              /* of T, kept for src_free */
    eddy_fluss_scanner *sc;
    uv_loop_t *loop;
    uv_async_t *notify;
    const json_t *positions; /* stored for this source: {"bucket N": {"pos"}} */
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX], name[300], source_id[320];
    char *start;
    int follow;
    size_t cap;
    qitem *head, *tail;
    size_t n;
    pending *pend;
    int64_t *end; /* follow == 0: end offsets seen at start */
    int ready, ended, stopped, paused;
    int failed; /* the error that ended the input (logged), else 0 */
} fsrc;

static const char *bootstrap_of(const json_t *cfg)
{
    const char *b = json_string_value(json_object_get(cfg, "bootstrap"));
    if (!b)
        b = getenv("FLUSS_BOOTSTRAP");
    return b ? b : "127.0.0.1:9123";
}

static int open_client(const json_t *cfg, uv_loop_t *loop, eddy_fluss_client **c, char *db,
                       char *table, eddy_err *err)
{
    int rc =
        eddy_fluss_table_path(json_string_value(json_object_get(cfg, "table")), db, table, err);
    if (rc)
        return rc;
    eddy_fluss_client_opts o = {bootstrap_of(cfg),
                                json_string_value(json_object_get(cfg, "sasl_user")),
                                json_string_value(json_object_get(cfg, "sasl_password")), 0};
    return eddy_fluss_client_new(loop, &o, c, err);
}

/* -- source ------------------------------------------------------------------- */

static void src_notify(fsrc *s)
{
    uv_async_send(s->notify);
}

/* The input cannot be read on (STATUS; WHAT and MSG say why): it ends
 * here, and the run says it failed. EDDY_ECANCELED is the run closing the
 * client, not a failure. */
static void src_fail(fsrc *s, int status, const char *what, const char *msg)
{
    s->ended = 1;
    if (status != EDDY_ECANCELED) {
        EDDY_ERROR("fluss", "source %s: %s%s", s->name, what, msg ? msg : eddy_strerror(status));
        if (!s->failed)
            s->failed = status ? status : EDDY_EFLUSS;
    }
    src_notify(s);
}

static void check_end(fsrc *s)
{
    if (s->follow || !s->end || s->ended)
        return;
    for (int b = 0; b < s->t->nbuckets; b++)
        if (s->pend[b].next < s->end[b])
            return;
    s->ended = 1;
    src_notify(s);
}

static int on_row(int bucket, int64_t off, int64_t ts, int change, const eddy_fluss_value *vals,
                  void *ud)
{
    fsrc *s = ud;
    (void)ts;
    if (s->end && !s->follow && off >= s->end[bucket])
        return s->n >= s->cap; /* past the end of a bounded read */
    json_t *ev = eddy_fluss_row_to_json(&s->t->schema, vals, NULL, 0);
    qitem *q = eddy_calloc(1, sizeof(*q));
    if (!ev || !q) {
        EDDY_ERROR("fluss",
                   "%s bucket %d offset %lld: out of memory; the record is read again "
                   "on the next start",
                   s->name, bucket, (long long)off);
        json_decref(ev);
        eddy_free(q);
        return 1;
    }
    if (s->t->schema.npk > 0)
        json_object_set_new(ev, "_change", json_string(eddy_fluss_change_name(change)));
    q->ev = ev;
    q->where = eddy_aprintf("%s bucket %d offset %lld", s->name, bucket, (long long)off);
    q->bucket = bucket;
    q->off = off;
    if (s->tail)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    s->n++;
    s->pend[bucket].next = off + 1;
    src_notify(s);
    return s->n >= s->cap;
}

static void on_progress(int status, const eddy_err *err, int bucket, int64_t next, int64_t hw,
                        void *ud)
{
    fsrc *s = ud;
    (void)hw;
    if (status) {
        /* a failed bucket ends the run: its position stays where it was */
        src_fail(s, status, "", err ? err->msg : NULL);
        return;
    }
    if (next > s->pend[bucket].next)
        s->pend[bucket].next = next;
    if (s->paused)
        return;
    check_end(s);
}

static void start_scanner(fsrc *s, const int64_t *from)
{
    eddy_err e;
    if (eddy_fluss_scanner_new(s->c, s->t, NULL, 0, on_row, on_progress, s, &s->sc, &e)) {
        src_fail(s, e.code, "", e.msg);
        return;
    }
    for (int b = 0; b < s->t->nbuckets; b++) {
        s->pend[b].next = from[b] >= 0 ? from[b] : 0;
        eddy_fluss_scanner_subscribe(s->sc, b, from[b]);
    }
    s->ready = 1;
    check_end(s);
}

typedef struct start_ctx {
    fsrc *s;
    int64_t *from;
} start_ctx;

static void stored_positions(start_ctx *x)
{
    const char *part;
    json_t *v;
    int b;
    json_object_foreach((json_t *)x->s->positions, part, v)
    {
        json_t *pos = json_object_get(v, "pos");
        if (sscanf(part, "bucket %d", &b) == 1 && b >= 0 && b < x->s->t->nbuckets &&
            json_is_integer(pos))
            x->from[b] = json_integer_value(pos);
    }
}

static void on_end_offsets(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    start_ctx *x = ud;
    fsrc *s = x->s;
    if (status) {
        src_fail(s, status, "end offsets: ", err ? err->msg : NULL);
    } else {
        for (int b = 0; b < n; b++)
            s->end[b] = offs[b];
        start_scanner(s, x->from);
    }
    eddy_free(x->from);
    eddy_free(x);
}

static void on_start_offsets(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    start_ctx *x = ud;
    fsrc *s = x->s;
    for (int b = 0; !status && b < n; b++)
        if (x->from[b] == EDDY_FLUSS_LATEST) /* not stored: from the start time */
            x->from[b] = offs[b];
    if (status) {
        src_fail(s, status, "offsets for 'start': ", err ? err->msg : NULL);
        eddy_free(x->from);
        eddy_free(x);
        return;
    }
    if (!s->follow &&
        eddy_fluss_list_offsets(s->c, s->t, EDDY_FLUSS_OFFSET_LATEST, 0, on_end_offsets, x) == 0)
        return;
    start_scanner(s, x->from);
    eddy_free(x->from);
    eddy_free(x);
}

static void on_table(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    fsrc *s = ud;
    if (status) {
        src_fail(s, status, "", err ? err->msg : NULL);
        return;
    }
    s->t = t;
    s->nbuckets = t->nbuckets;
    s->pend = eddy_calloc((size_t)t->nbuckets, sizeof(*s->pend));
    s->end = eddy_calloc((size_t)t->nbuckets, sizeof(*s->end));
    start_ctx *x = eddy_calloc(1, sizeof(*x));
    if (x)
        x->from = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    if (!s->pend || !s->end || !x || !x->from) {
        src_fail(s, EDDY_ENOMEM, "", "out of memory");
        if (x)
            eddy_free(x->from);
        eddy_free(x);
        return;
    }
    x->s = s;
    const char *start = s->start ? s->start : "earliest";
    int64_t ts = 0;
    int by_time = strcmp(start, "earliest") && strcmp(start, "latest");
    for (int b = 0; b < t->nbuckets; b++)
        x->from[b] = !strcmp(start, "earliest") ? EDDY_FLUSS_EARLIEST : EDDY_FLUSS_LATEST;
    stored_positions(x);
    if (by_time && eddy_fluss_parse_time(start, &ts) == 0) {
        if (eddy_fluss_list_offsets(s->c, t, EDDY_FLUSS_OFFSET_TIMESTAMP, ts, on_start_offsets,
                                    x) == 0)
            return;
    }
    if (!s->follow) { /* a bounded read: learn where it ends first */
        if (eddy_fluss_list_offsets(s->c, t, EDDY_FLUSS_OFFSET_LATEST, 0, on_end_offsets, x) == 0)
            return;
    }
    start_scanner(s, x->from);
    eddy_free(x->from);
    eddy_free(x);
}

static const char *src_name(void *impl)
{
    return ((fsrc *)impl)->name;
}

static int src_next(void *impl, eddy_record *rec)
{
    fsrc *s = impl;
    qitem *q = s->head;
    if (!q) {
        if (s->paused && s->sc && !s->stopped) {
            s->paused = 0;
            eddy_fluss_scanner_resume(s->sc);
        }
        return s->ended || s->stopped ? -1 : 0;
    }
    s->head = q->next;
    if (!s->head)
        s->tail = NULL;
    s->n--;
    rec->event = q->ev;
    rec->where = q->where;
    rec->part = q->bucket;
    rec->pos = q->off;
    rec->next = q->off + 1;
    eddy_free(q);
    if (s->sc && s->n < s->cap / 2 && !s->stopped) {
        s->paused = 0;
        eddy_fluss_scanner_resume(s->sc);
    }
    return 1;
}

static const char *src_id(void *impl)
{
    return ((fsrc *)impl)->source_id;
}

static const char *src_part(void *impl, int part, char *buf, size_t n)
{
    (void)impl;
    snprintf(buf, n, "bucket %d", part);
    return buf;
}

static void src_stop(void *impl)
{
    fsrc *s = impl;
    s->stopped = 1;
    if (s->sc)
        eddy_fluss_scanner_pause(s->sc);
}

static void src_close(void *impl)
{
    fsrc *s = impl;
    eddy_fluss_scanner_free(s->sc);
    s->sc = NULL;
    eddy_fluss_client_close(s->c); /* frees the table T points to */
    s->c = NULL;
    s->t = NULL;
}

static void src_free(void *impl)
{
    fsrc *s = impl;
    while (s->head) {
        qitem *q = s->head;
        s->head = q->next;
        json_decref(q->ev);
        eddy_free(q->where);
        eddy_free(q);
    }
    eddy_free(s->pend);
    eddy_free(s->end);
    eddy_free(s->start);
    eddy_free(s);
}

static int src_failed(void *impl)
{
    return ((fsrc *)impl)->failed;
}

static const eddy_source_ops kSourceOps = {src_name, src_id,    src_part, NULL,      src_next,
                                           src_stop, src_close, src_free, src_failed};

static int open_source(const json_t *cfg, const eddy_connector_env *env, eddy_source **out,
                       eddy_err *err)
{
    fsrc *s = eddy_calloc(1, sizeof(*s));
    int rc;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->loop = env->loop;
    s->notify = env->notify;
    s->cap = env->capacity ? env->capacity : 1024;
    s->follow = !json_is_false(json_object_get(cfg, "follow"));
    const json_t *start = json_object_get(cfg, "start");
    if (json_is_integer(start))
        s->start = eddy_aprintf("%lld", (long long)json_integer_value(start));
    else if (json_is_string(start))
        s->start = eddy_strdup(json_string_value(start));
    if ((rc = open_client(cfg, env->loop, &s->c, s->db, s->table, err))) {
        src_free(s);
        return rc;
    }
    snprintf(s->name, sizeof(s->name), "%s.%s", s->db, s->table);
    snprintf(s->source_id, sizeof(s->source_id), "fluss:%s.%s", s->db, s->table);
    s->positions = json_object_get(env->positions, s->source_id);
    if (s->start && strcmp(s->start, "earliest") && strcmp(s->start, "latest")) {
        int64_t ms;
        if (eddy_fluss_parse_time(s->start, &ms)) {
            rc = eddy_err_set(err, EDDY_EINVAL,
                              "fluss source %s: start '%s' is not earliest, latest or an "
                              "ISO-8601 time",
                              s->name, s->start);
            eddy_fluss_client_close(s->c);
            src_free(s);
            return rc;
        }
    }
    if ((rc = eddy_fluss_get_table(s->c, s->db, s->table, on_table, s))) {
        eddy_fluss_client_close(s->c);
        src_free(s);
        return eddy_err_set(err, rc, "fluss source: cannot ask for the table");
    }
    if (!(*out = eddy_source_new(&kSourceOps, s))) {
        src_close(s);
        src_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

/* -- sink --------------------------------------------------------------------- */

typedef struct fsink {
    eddy_fluss_client *c;
    const eddy_fluss_table *t;
    eddy_fluss_writer *w;
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX], name[300];
    json_t *early; /* outputs written before the table was known */
    long count;
    int failed_table;
    eddy_err table_err;
    eddy_sink_done_cb done_cb;
    void *done_ud;
    void (*flush_cb)(void *ud);
    void *flush_ud;
    eddy_sink_ready_cb ready_cb;
    void *ready_ud;
} fsink;

typedef struct row_ctx {
    fsink *k;
    uint64_t tag;
} row_ctx;

/* The server acknowledged the row (or it failed for good, after retries). */
static void row_done(int status, const eddy_err *err, void *ud)
{
    row_ctx *r = ud;
    if (r->k->done_cb)
        r->k->done_cb(r->tag, status, status ? (err ? err->msg : eddy_strerror(status)) : NULL, 0,
                      r->k->done_ud);
    eddy_free(r);
}

static int put_row(fsink *k, json_t *v, uint64_t tag, eddy_err *err)
{
    const eddy_fluss_schema *s = &k->t->schema;
    eddy_fluss_value *vals = eddy_calloc((size_t)s->ncols, sizeof(*vals));
    eddy_fluss_arena a = {0};
    row_ctx *r = eddy_calloc(1, sizeof(*r));
    int rc;
    if (!vals || !r) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = eddy_fluss_row_from_json(s, v, 0, vals, &a, err))) {
        eddy_err_prefix(err, "fluss sink %s: ", k->name);
        goto out;
    }
    r->k = k;
    r->tag = tag;
    if ((rc = eddy_fluss_writer_write(k->w, vals, 0, row_done, r, err)))
        goto out;
    r = NULL;
    k->count++;
out:
    eddy_free(r);
    eddy_free(vals);
    eddy_fluss_arena_free(&a);
    return rc;
}

static void sink_table(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    fsink *k = ud;
    eddy_err e;
    size_t i;
    json_t *v;
    if (!status && eddy_fluss_writer_new(k->c, t, NULL, &k->w, &e) == 0) {
        k->t = t;
    } else {
        k->failed_table = 1;
        if (status && err)
            k->table_err = *err;
        else if (status)
            eddy_err_set(&k->table_err, status, "%s", eddy_strerror(status));
        else
            k->table_err = e;
        EDDY_ERROR("fluss", "sink %s: %s", k->name, k->table_err.msg);
    }
    json_array_foreach(k->early, i, v)
    {
        json_t *val = json_array_get(v, 0);
        uint64_t tag = (uint64_t)json_integer_value(json_array_get(v, 1));
        if ((k->failed_table || put_row(k, val, tag, &e)) && k->done_cb)
            k->done_cb(tag, EDDY_EFLUSS, k->failed_table ? k->table_err.msg : e.msg, 0, k->done_ud);
    }
    json_array_clear(k->early);
    if (k->ready_cb) {
        eddy_sink_ready_cb cb = k->ready_cb;
        k->ready_cb = NULL;
        cb(k->failed_table ? (k->table_err.code ? k->table_err.code : EDDY_EFLUSS) : 0,
           k->failed_table ? k->table_err.msg : NULL, k->ready_ud);
    }
    if (k->flush_cb) { /* a flush was waiting for the table */
        void (*cb)(void *) = k->flush_cb;
        k->flush_cb = NULL;
        cb(k->flush_ud);
    }
}

static const char *sink_name(void *impl)
{
    return ((fsink *)impl)->name;
}

static int sink_write(void *impl, json_t *v, uint64_t tag, eddy_err *err)
{
    fsink *k = impl;
    if (k->failed_table)
        return eddy_err_set(err, EDDY_EFLUSS, "fluss sink %s: %s", k->name, k->table_err.msg);
    if (!k->t) { /* tags are pointers: they fit a JSON integer's 64 bits */
        if (json_array_append_new(k->early, json_pack("[O, I]", v, (json_int_t)tag)))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        k->count++;
        return 0;
    }
    return put_row(k, v, tag, err);
}

static long sink_count(void *impl)
{
    return ((fsink *)impl)->count;
}

typedef struct flush_ctx {
    fsink *k;
    void (*cb)(void *ud);
    void *ud;
} flush_ctx;

static void flushed(int status, const eddy_err *err, void *ud)
{
    flush_ctx *f = ud;
    fsink *k = f->k;
    if (status && status != EDDY_ECANCELED)
        EDDY_WARN("fluss", "sink %s: %s", k->name, err ? err->msg : eddy_strerror(status));
    eddy_fluss_writer_free(k->w);
    k->w = NULL;
    eddy_fluss_client_close(k->c);
    k->c = NULL;
    f->cb(f->ud);
    eddy_free(f);
}

static void flush_after_table(void *ud);
static void flush_after_table(void *ud)
{
    flush_ctx *f = ud;
    if (f->k->w && eddy_fluss_writer_flush(f->k->w, flushed, f) == 0)
        return;
    flushed(0, NULL, f);
}

static int sink_flush(void *impl, void (*cb)(void *ud), void *ud)
{
    fsink *k = impl;
    flush_ctx *f = eddy_calloc(1, sizeof(*f));
    if (!f)
        return EDDY_ENOMEM;
    f->k = k;
    f->cb = cb;
    f->ud = ud;
    if (!k->t && !k->failed_table) { /* still opening: flush once the table is known */
        k->flush_cb = flush_after_table;
        k->flush_ud = f;
        return 0;
    }
    flush_after_table(f);
    return 0;
}

static void sink_on_done(void *impl, eddy_sink_done_cb cb, void *ud)
{
    fsink *k = impl;
    k->done_cb = cb;
    k->done_ud = ud;
}

static int sink_ready(void *impl, eddy_sink_ready_cb cb, void *ud)
{
    fsink *k = impl;
    if (k->t || k->failed_table)
        return EDDY_ENOENT;
    k->ready_cb = cb;
    k->ready_ud = ud;
    return 0;
}

static void sink_free(void *impl)
{
    fsink *k = impl;
    json_decref(k->early);
    eddy_free(k);
}

static const eddy_sink_ops kSinkOps = {sink_name,    sink_write, sink_count, sink_flush,
                                       sink_on_done, NULL,       sink_free,  sink_ready};

static int open_sink(const json_t *cfg, const eddy_connector_env *env, eddy_sink **out,
                     eddy_err *err)
{
    fsink *k = eddy_calloc(1, sizeof(*k));
    int rc;
    if (!k)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    k->early = json_array();
    if ((rc = open_client(cfg, env->loop, &k->c, k->db, k->table, err))) {
        sink_free(k);
        return rc;
    }
    snprintf(k->name, sizeof(k->name), "%s.%s", k->db, k->table);
    if ((rc = eddy_fluss_get_table(k->c, k->db, k->table, sink_table, k)) ||
        !(*out = eddy_sink_new(&kSinkOps, k))) {
        eddy_fluss_client_close(k->c);
        sink_free(k);
        return eddy_err_set(err, rc ? rc : EDDY_ENOMEM, "fluss sink: cannot start");
    }
    return 0;
}

int eddy_fluss_register_connectors(void)
{
    return eddy_connector_register("fluss", open_source, open_sink);
}
