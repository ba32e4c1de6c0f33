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
 * that before it reads: a table that is not there fails it at the start). A
 * log sink keeps its acknowledged offsets with each checkpoint; with
 * delivery: exactly_once it reads its own log from there at the start,
 * before it takes a value, and does not append again an output whose
 * output_id it found (see "sink" below). It never blocks the loop:
 * everything it asks the cluster is asynchronous.
 */
#include "eddy/fluss.h"

#include <stdarg.h>
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

/* Per bucket: the offset after the last record read, and the bucket's
 * high watermark as the last fetch saw it (-1: not yet known). */
typedef struct pending {
    int64_t next, hw;
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
    if (status) {
        /* a failed bucket ends the run: its position stays where it was */
        src_fail(s, status, "", err ? err->msg : NULL);
        return;
    }
    if (next > s->pend[bucket].next)
        s->pend[bucket].next = next;
    if (hw >= 0)
        s->pend[bucket].hw = hw;
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
        s->pend[b].hw = -1;
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

/* Records not yet taken: those queued here, and those past what was read
 * up to each bucket's high watermark. -1 until every bucket was fetched. */
static int64_t src_lag(void *impl, int *bytes)
{
    fsrc *s = impl;
    int64_t lag = (int64_t)s->n;
    (void)bytes;
    if (!s->pend || !s->t)
        return -1;
    for (int b = 0; b < s->nbuckets; b++) {
        if (s->pend[b].hw < 0)
            return -1;
        if (s->pend[b].hw > s->pend[b].next)
            lag += s->pend[b].hw - s->pend[b].next;
    }
    return lag;
}

static const eddy_source_ops kSourceOps = {src_name, src_id,    src_part, NULL,       src_next,
                                           src_stop, src_close, src_free, src_failed, src_lag};

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

/*
 * A log sink with delivery: exactly_once (and any log sink, for the next
 * start) keeps with every checkpoint the offsets its writer saw
 * acknowledged (fluss/sinkpos.c). At the start it reads its table's log
 * from the last checkpoint's offsets to the end it sees then, before it
 * takes any value: the output_ids found there are outputs an earlier
 * process appended after that checkpoint; written again, such an output is
 * reported delivered and not appended.
 */
typedef struct fsink {
    eddy_fluss_client *c;
    const eddy_fluss_table *t;
    eddy_fluss_writer *w;
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX], name[300];
    json_t *early; /* outputs written before the sink was ready */
    long count;
    int failed_table;
    eddy_err table_err;
    eddy_sink_done_cb done_cb;
    void *done_ud;
    void (*flush_cb)(void *ud);
    void *flush_ud;
    /* log tables: offsets, and what the start found */
    int exactly_once;
    json_t *stored;   /* the last checkpoint's state for this sink, or NULL */
    int64_t table_id; /* of T, and its buckets: kept once T is gone */
    int nb;
    int based;            /* BASE is known */
    int64_t *base, *from; /* per bucket: the end at the start (after the flush: the
                           * acknowledged end); where reading began */
    int64_t *end, *got;   /* per bucket: where reading ends; the next offset to read */
    eddy_fluss_scanner *sc;
    int oid;       /* index of the output_id column, -1 */
    json_t *found; /* output_id -> true */
    long nfound, skipped;
    char gap[EDDY_ERR_MSG_MAX]; /* rows missing where reading began */
    int asking;                 /* the offsets asked for: EDDY_FLUSS_OFFSET_* */
    uv_timer_t *retry;          /* retrying a retriable answer, until retry_until */
    uint64_t retry_until;
    int retries;
    int ready; /* 0 not yet, 1 ready, -1 refused */
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

/* An output found in the table at the start: delivered (also when the
 * client closes first: the row is there). */
static void skip_done(int status, void *ud)
{
    row_ctx *r = ud;
    (void)status;
    if (r->k->done_cb)
        r->k->done_cb(r->tag, 0, NULL, 0, r->k->done_ud);
    eddy_free(r);
}

/* V's output_id when an earlier process appended it: the row is not
 * appended again. Returns 1 when V was taken that way, 0 when it must be
 * written, or an error. */
static int skip_found(fsink *k, json_t *v, uint64_t tag, eddy_err *err)
{
    const char *oid = json_string_value(json_object_get(v, "output_id"));
    if (!k->found || !oid || !json_object_get(k->found, oid))
        return 0;
    row_ctx *r = eddy_calloc(1, sizeof(*r));
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->k = k;
    r->tag = tag;
    if (eddy__rpc_defer(k->c, skip_done, r)) {
        eddy_free(r);
        return eddy_err_set(err, EDDY_ECLOSING, "fluss sink %s: closing", k->name);
    }
    json_object_del(k->found, oid);
    k->skipped++;
    k->count++;
    return 1;
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
    if ((rc = skip_found(k, v, tag, err)) != 0) {
        rc = rc > 0 ? 0 : rc;
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

static void retry_closed(uv_handle_t *h)
{
    eddy_free(h);
}

/* The sink takes values from now on (REFUSED: it fails them): those
 * written early go out. */
static void become_ready(fsink *k, int refused)
{
    eddy_err e;
    size_t i;
    json_t *v;
    if (k->ready)
        return;
    k->ready = refused ? -1 : 1;
    if (k->retry) {
        uv_close((uv_handle_t *)k->retry, retry_closed);
        k->retry = NULL;
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
        cb(k->ready > 0 ? 0 : k->table_err.code, k->ready > 0 ? NULL : k->table_err.msg,
           k->ready_ud);
    }
    if (k->flush_cb) { /* a flush was waiting for the table */
        void (*cb)(void *) = k->flush_cb;
        k->flush_cb = NULL;
        cb(k->flush_ud);
    }
}

/* This job cannot use the sink (exactly_once cannot be kept): say why,
 * let go of the cluster, fail every write. */
static void refuse(fsink *k, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(fsink *k, int code, const char *fmt, ...)
{
    va_list ap;
    if (k->ready)
        return;
    char msg[EDDY_ERR_MSG_MAX];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eddy_err_set(&k->table_err, code, "%s", msg);
    k->failed_table = 1;
    eddy_fluss_scanner_free(k->sc);
    k->sc = NULL;
    eddy_fluss_writer_free(k->w);
    k->w = NULL;
    eddy_fluss_client_close(k->c);
    k->c = NULL;
    k->t = NULL;
    become_ready(k, 1);
}

static void scan_finished(fsink *k)
{
    for (int b = 0; b < k->t->nbuckets; b++)
        if (k->got[b] < k->end[b])
            return;
    eddy_fluss_scanner_free(k->sc);
    k->sc = NULL;
    memcpy(k->base, k->end, sizeof(int64_t) * (size_t)k->t->nbuckets);
    k->based = 1;
    EDDY_INFO("fluss",
              "sink %s: %ld output_id(s) in the rows appended after the last checkpoint; "
              "an output with one of them is not appended again",
              k->name, k->nfound);
    become_ready(k, 0);
}

static int scan_row(int bucket, int64_t off, int64_t ts, int change, const eddy_fluss_value *vals,
                    void *ud)
{
    fsink *k = ud;
    const eddy_fluss_value *v = &vals[k->oid];
    (void)ts, (void)change;
    if (off >= k->end[bucket] || k->gap[0])
        return 0; /* appended since the start: not an earlier process's */
    if (off > k->got[bucket]) {
        snprintf(k->gap, sizeof(k->gap),
                 "bucket %d: offsets %lld to %lld are missing from the log (retention?), so "
                 "eddy cannot tell which outputs after the last checkpoint are in the table",
                 bucket, (long long)k->got[bucket], (long long)off - 1);
        return 0;
    }
    k->got[bucket] = off + 1;
    if (!v->is_null && !json_object_getn(k->found, v->v.s.p, v->v.s.n)) {
        json_object_setn_new_nocheck(k->found, v->v.s.p, v->v.s.n, json_true());
        k->nfound++;
    }
    return 0;
}

static void scan_progress(int status, const eddy_err *err, int bucket, int64_t next, int64_t hw,
                          void *ud)
{
    fsink *k = ud;
    (void)hw;
    if (status || k->gap[0]) {
        refuse(k, status ? status : EDDY_ECORRUPT,
               "fluss sink %s: delivery: exactly_once: reading the table's log from the last "
               "checkpoint's offsets failed: %s; nothing was written (with delivery: "
               "at_least_once the job starts, and outputs after that checkpoint may be in the "
               "table twice)",
               k->name, status ? (err ? err->msg : eddy_strerror(status)) : k->gap);
        return;
    }
    if (next > k->got[bucket] && next <= k->end[bucket])
        k->got[bucket] = next;
    else if (next > k->end[bucket])
        k->got[bucket] = k->end[bucket];
    scan_finished(k);
}

/* Read the log from K->from to K->end, collecting output_ids. */
static void start_scan(fsink *k)
{
    const eddy_fluss_table *t = k->t;
    int proj = k->oid, arrow = t->log_format == EDDY_FLUSS_LOG_ARROW;
    long long rows = 0;
    eddy_err e;
    if (!(k->found = json_object()) ||
        eddy_fluss_scanner_new(k->c, t, arrow ? &proj : NULL, arrow ? 1 : 0, scan_row,
                               scan_progress, k, &k->sc, &e)) {
        refuse(k, EDDY_ENOMEM, "fluss sink %s: cannot read the table's log: %s", k->name,
               k->found ? e.msg : "out of memory");
        return;
    }
    for (int b = 0; b < t->nbuckets; b++) {
        k->got[b] = k->from[b];
        if (k->from[b] < k->end[b]) {
            rows += k->end[b] - k->from[b];
            eddy_fluss_scanner_subscribe(k->sc, b, k->from[b]);
        }
    }
    EDDY_INFO("fluss",
              "sink %s: reading %lld row(s) appended after the last checkpoint for outputs "
              "already delivered",
              k->name, rows);
    scan_finished(k); /* nothing to read */
}

static void ask_offsets(fsink *k);

static void retry_refreshed(int status, const eddy_err *err, void *ud)
{
    fsink *k = ud;
    (void)err;
    if (status != EDDY_ECANCELED && !k->ready)
        ask_offsets(k);
}

static void retry_fired(uv_timer_t *t)
{
    fsink *k = t->data;
    if (k->ready || !k->c)
        return;
    eddy__fluss_invalidate(k->c, k->t);
    if (eddy__fluss_refresh(k->c, k->t, retry_refreshed, k))
        ask_offsets(k);
}

/* A retriable answer (a table just created has buckets without a leader
 * for a moment): ask again with backoff, for up to a minute. 1 when a
 * retry is scheduled. */
static int retry_later(fsink *k, int status, const eddy_err *err)
{
    uint64_t now = eddy_now_ms();
    int retriable = status == EDDY_ENET || status == EDDY_ETIMEDOUT ||
                    (status == EDDY_EFLUSS && err && eddy__fluss_retriable((int)err->cause));
    if (!retriable || !k->c)
        return 0;
    if (!k->retry_until)
        k->retry_until = now + 60000;
    if (now >= k->retry_until)
        return 0;
    if (!k->retry) {
        if (!(k->retry = eddy_calloc(1, sizeof(*k->retry))))
            return 0;
        uv_timer_init(eddy__rpc_loop(k->c), k->retry);
        k->retry->data = k;
    }
    uint64_t ms = 100u << (k->retries < 4 ? k->retries : 4);
    k->retries++;
    EDDY_DEBUG("fluss", "sink %s: offsets: %s; again in %llu ms", k->name,
               err ? err->msg : eddy_strerror(status), (unsigned long long)ms);
    uv_timer_start(k->retry, retry_fired, ms, 0);
    return 1;
}

static void on_earliest(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    fsink *k = ud;
    char why[EDDY_ERR_MSG_MAX];
    if (!k->t || status == EDDY_ECANCELED || k->ready)
        return;
    if (status && retry_later(k, status, err))
        return;
    if (status) {
        refuse(k, status,
               "fluss sink %s: delivery: exactly_once: cannot read where the log starts: %s",
               k->name, err ? err->msg : eddy_strerror(status));
        return;
    }
    int rc = eddy__fluss_sink_plan(k->stored, k->t->table_id, n, offs, k->end, k->from, why,
                                   sizeof(why));
    if (rc < 0) {
        refuse(k, EDDY_EINVAL,
               "fluss sink %s: delivery: exactly_once: %s; nothing was written. Start it once "
               "with delivery: at_least_once (outputs after that checkpoint may then be in the "
               "table twice), or keep the log longer (table.log.ttl)",
               k->name, why);
        return;
    }
    if (rc > 0)
        EDDY_WARN("fluss", "sink %s: %s", k->name, why);
    start_scan(k);
}

static void on_latest(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    fsink *k = ud;
    if (!k->t || status == EDDY_ECANCELED || k->ready)
        return;
    if (status && retry_later(k, status, err))
        return;
    if (status && k->exactly_once) {
        refuse(k, status,
               "fluss sink %s: delivery: exactly_once: cannot read the end of the log: %s", k->name,
               err ? err->msg : eddy_strerror(status));
        return;
    }
    if (status) { /* at least once: no offsets to keep this time */
        EDDY_WARN("fluss", "sink %s: end offsets: %s", k->name, err ? err->msg : "");
        become_ready(k, 0);
        return;
    }
    memcpy(k->end, offs, sizeof(int64_t) * (size_t)n);
    if (!k->exactly_once || !k->stored) {
        memcpy(k->base, offs, sizeof(int64_t) * (size_t)n);
        k->based = 1;
        become_ready(k, 0);
        return;
    }
    k->asking = EDDY_FLUSS_OFFSET_EARLIEST;
    k->retry_until = 0;
    k->retries = 0;
    ask_offsets(k);
}

static void ask_offsets(fsink *k)
{
    int rc =
        eddy_fluss_list_offsets(k->c, k->t, k->asking, 0,
                                k->asking == EDDY_FLUSS_OFFSET_LATEST ? on_latest : on_earliest, k);
    if (rc && k->exactly_once)
        refuse(k, rc, "fluss sink %s: cannot ask for the log's offsets: %s", k->name,
               eddy_strerror(rc));
    else if (rc) /* at least once: no offsets to keep this time */
        become_ready(k, 0);
}

/* The table is known: a PK table or a failed lookup is ready now; a log
 * table learns its offsets first (and, exactly once, reads its log). */
static void log_sink_start(fsink *k)
{
    const eddy_fluss_table *t = k->t;
    k->oid = eddy_fluss_column_index(&t->schema, "output_id");
    if (k->exactly_once && (k->oid < 0 || t->schema.cols[k->oid].type != EDDY_FLUSS_STRING)) {
        refuse(k, EDDY_EINVAL,
               "fluss sink %s: delivery: exactly_once needs an output_id column (STRING) in "
               "this log table, to find at a restart which outputs are already in it; add "
               "the column (%s), or use delivery: at_least_once (a consumer then "
               "deduplicates by output_id)",
               k->name, k->oid < 0 ? "the table has none" : "the table's is not a STRING");
        return;
    }
    k->table_id = t->table_id;
    k->nb = t->nbuckets;
    k->base = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    k->from = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    k->end = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    k->got = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    if (!k->base || !k->from || !k->end || !k->got) {
        refuse(k, EDDY_ENOMEM, "fluss sink %s: out of memory", k->name);
        return;
    }
    k->asking = EDDY_FLUSS_OFFSET_LATEST;
    ask_offsets(k);
}

static void sink_table(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    fsink *k = ud;
    eddy_err e;
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
    if (k->t && t->schema.npk == 0) {
        log_sink_start(k);
        return;
    }
    /* a PK table is idempotent by key; a table that cannot be opened is
     * refused: the run fails at its start, before it reads anything */
    become_ready(k, k->failed_table);
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
    if (k->ready <= 0) { /* tags are pointers: they fit a JSON integer's 64 bits */
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
    eddy_fluss_scanner_free(k->sc);
    k->sc = NULL;
    for (int b = 0; k->w && k->based && b < k->nb; b++) { /* for the last checkpoint */
        int64_t a = eddy_fluss_writer_acked_end(k->w, b);
        if (a > k->base[b])
            k->base[b] = a;
    }
    eddy_fluss_writer_free(k->w);
    k->w = NULL;
    eddy_fluss_client_close(k->c);
    k->c = NULL;
    if (k->skipped)
        EDDY_INFO("fluss", "sink %s: %ld output(s) were in the table already (not appended again)",
                  k->name, k->skipped);
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
    if (!k->ready) { /* still opening: flush once the sink is ready */
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
    if (k->ready > 0)
        return EDDY_ENOENT;
    if (k->ready < 0)
        return k->table_err.code ? k->table_err.code : EDDY_EFLUSS;
    k->ready_cb = cb;
    k->ready_ud = ud;
    return 0;
}

/* A log table's offsets: per bucket, after the last batch acknowledged,
 * or where the log ended at the start when nothing was written since. */
static char *sink_state(void *impl)
{
    fsink *k = impl;
    if (k->ready <= 0 || !k->based)
        return NULL;
    int n = k->nb;
    int64_t *offs = eddy_calloc((size_t)n, sizeof(*offs));
    char *s = NULL;
    if (!offs)
        return NULL;
    for (int b = 0; b < n; b++) {
        int64_t a = k->w ? eddy_fluss_writer_acked_end(k->w, b) : -1;
        offs[b] = a > k->base[b] ? a : k->base[b];
    }
    s = eddy__fluss_sink_state(k->table_id, offs, n);
    eddy_free(offs);
    return s;
}

static int sink_holds(void *impl, const char *output_id)
{
    fsink *k = impl;
    return k->found && json_object_get(k->found, output_id) != NULL;
}

static void sink_free(void *impl)
{
    fsink *k = impl;
    json_decref(k->early);
    json_decref(k->stored);
    json_decref(k->found);
    eddy_free(k->base);
    eddy_free(k->from);
    eddy_free(k->end);
    eddy_free(k->got);
    eddy_free(k);
}

static const eddy_sink_ops kSinkOps = {sink_name, sink_write, sink_count, sink_flush, sink_on_done,
                                       NULL,      sink_free,  sink_ready, sink_state, sink_holds};

static int open_sink(const json_t *cfg, const eddy_connector_env *env, eddy_sink **out,
                     eddy_err *err)
{
    fsink *k = eddy_calloc(1, sizeof(*k));
    int rc;
    if (!k)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    k->early = json_array();
    k->oid = -1;
    k->exactly_once = env->exactly_once;
    if ((rc = open_client(cfg, env->loop, &k->c, k->db, k->table, err))) {
        sink_free(k);
        return rc;
    }
    snprintf(k->name, sizeof(k->name), "%s.%s", k->db, k->table);
    k->stored = json_incref(json_object_get(json_object_get(env->sinks, k->name), "state"));
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
