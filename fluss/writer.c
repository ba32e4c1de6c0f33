/*
 * fluss/writer.c - the producer: appends to log tables, upserts and deletes
 * on primary-key tables.
 *
 * Rows go into an open batch per bucket (bucket by Murmur3 of the bucket
 * key, or sticky round-robin for log tables without one). A batch closes
 * when it reaches batch_bytes, when it has waited linger_ms, or on flush.
 * Closed batches of a bucket are sent one at a time, in order, each with
 * the writer id from InitWriter and the bucket's next sequence number
 * (given at its first send under that id), so a retry (same bytes, same
 * sequence) after a lost answer is recognized by the server and never
 * stored twice, and a retry cannot overtake a later batch. A server that
 * answers "unknown writer" or "out of order sequence" has no state for the
 * writer (lost in a restart, expired, or a batch before was given up on):
 * the writer asks for a new id, and every batch not yet acknowledged is
 * sent again under it, sequences from 0. Requests carry the batches of
 * every ready bucket of one leader. Retriable errors (not leader, unknown
 * bucket, leader not available, network, timeouts) refresh the metadata
 * and retry with backoff until retry_ms; other errors fail the batch's
 * rows. A writer is a child of its client: when the client closes, every
 * row not yet acknowledged fails with EDDY_ECANCELED and the writer lets go
 * of the client and the table (eddy_fluss_writer_free still releases it).
 */
#include "eddy/fluss.h"

#include <stdio.h>
#include <string.h>

#include "eddy/log.h"
#include "fluss_int.h"

typedef struct row_cb {
    eddy_fluss_done_cb cb;
    void *ud;
} row_cb;

typedef struct cb_list {
    row_cb *v;
    size_t n, cap;
} cb_list;

typedef struct wbatch {
    struct wbatch *next;
    eddy_buf bytes;
    size_t rows;
    cb_list cbs;
    int64_t writer; /* the writer id it was stamped with, -1: not yet */
    int32_t seq;
    int attempts;
    uint64_t first_sent_ms;
} wbatch;

typedef struct wbucket {
    eddy_fluss_log_builder *log;
    eddy_fluss_kv_builder *kv;
    cb_list open_cbs;
    uint64_t opened_ms;
    wbatch *head, *tail; /* closed, waiting */
    wbatch *inflight;
    int32_t next_seq;
    uint64_t retry_at_ms;
    int64_t acked_end; /* log tables: the offset after the last acknowledged batch, -1 */
} wbucket;

typedef struct flush_waiter {
    struct flush_waiter *next;
    eddy_fluss_done_cb cb;
    void *ud;
    long target;
} flush_waiter;

struct eddy_fluss_writer {
    eddy__fluss_child child; /* on the client until freed or detached */
    eddy_fluss_client *c;    /* NULL once the client has closed */
    const eddy_fluss_table *t;
    int nbuckets; /* of T, for freeing once T is gone */
    eddy_fluss_writer_opts o;
    int is_kv;
    int64_t writer_id;
    int init_state; /* 0 not asked, 1 asking, 2 done */
    wbucket *b;
    int sticky;
    uv_timer_t timer;
    int refreshing;
    size_t pending_bytes;
    long written, acked, failed;
    int first_status;
    eddy_err first_err;
    flush_waiter *waiters;
    eddy_buf key, val;
    int freeing, closed;
    int detached; /* the client has closed: nothing more is sent */
    int requests; /* in flight or deferred; the writer is freed when it drops to 0 */
};

static void pump(eddy_fluss_writer *w);

/* A request of W has been answered: free W when it is being freed and this
 * was its last request, else send what is ready. */
static void request_ended(eddy_fluss_writer *w)
{
    if (w->freeing) {
        if (w->requests == 0)
            eddy_fluss_writer_free(w);
        return;
    }
    pump(w);
}

static int cbs_push(cb_list *l, eddy_fluss_done_cb cb, void *ud)
{
    if (!cb)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        row_cb *v = eddy_realloc(l->v, cap * sizeof(*v));
        if (!v)
            return EDDY_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].cb = cb;
    l->v[l->n++].ud = ud;
    return 0;
}

/* -- completion --------------------------------------------------------------- */

static void check_waiters(eddy_fluss_writer *w)
{
    flush_waiter **pp = &w->waiters;
    while (*pp) {
        flush_waiter *f = *pp;
        if (w->acked + w->failed >= f->target) {
            *pp = f->next;
            f->cb(w->first_status, w->first_status ? &w->first_err : NULL, f->ud);
            eddy_free(f);
        } else {
            pp = &f->next;
        }
    }
}

static void batch_done(eddy_fluss_writer *w, wbatch *b, int status, const eddy_err *err)
{
    if (status) {
        w->failed += (long)b->rows;
        if (!w->first_status) {
            w->first_status = status;
            w->first_err = *err;
        }
        if (status != EDDY_ECANCELED) /* canceling is the caller's own doing */
            EDDY_WARN("fluss", "writing %zu rows to %s.%s failed: %s", b->rows, w->t->database,
                      w->t->name, err->msg);
    } else {
        w->acked += (long)b->rows;
    }
    w->pending_bytes -= b->bytes.len;
    for (size_t i = 0; i < b->cbs.n; i++)
        b->cbs.v[i].cb(status, err, b->cbs.v[i].ud);
    eddy_free(b->cbs.v);
    eddy_buf_free(&b->bytes);
    eddy_free(b);
    check_waiters(w);
}

/* -- batching ----------------------------------------------------------------- */

static size_t open_size(const eddy_fluss_writer *w, const wbucket *bk)
{
    if (w->is_kv)
        return bk->kv ? eddy_fluss_kv_builder_rows(bk->kv) : 0;
    return bk->log ? eddy_fluss_log_builder_rows(bk->log) : 0;
}

/* Write the writer id and B's sequence into its header (and CRC). */
static void stamp(const eddy_fluss_writer *w, wbatch *b)
{
    if (w->is_kv)
        eddy__kv_batch_set_writer((uint8_t *)b->bytes.data, b->bytes.len, w->writer_id, b->seq);
    else
        eddy__log_batch_set_writer((uint8_t *)b->bytes.data, b->bytes.len, w->writer_id, b->seq);
}

/* Close BUCKET's open batch (if it has rows) and queue it. */
static int close_batch(eddy_fluss_writer *w, int bucket)
{
    wbucket *bk = &w->b[bucket];
    eddy_err e;
    if (!open_size(w, bk))
        return 0;
    wbatch *b = eddy_calloc(1, sizeof(*b));
    if (!b)
        return EDDY_ENOMEM;
    eddy_buf_init(&b->bytes);
    b->rows = open_size(w, bk);
    int rc = w->is_kv ? eddy_fluss_kv_builder_finish(bk->kv, &b->bytes, &e)
                      : eddy_fluss_log_builder_finish(bk->log, &b->bytes, &e);
    if (rc) {
        eddy_free(b);
        return rc;
    }
    b->cbs = bk->open_cbs;
    memset(&bk->open_cbs, 0, sizeof(bk->open_cbs));
    b->writer = -1; /* stamped when first sent */
    w->pending_bytes += b->bytes.len;
    if (bk->tail)
        bk->tail->next = b;
    else
        bk->head = b;
    bk->tail = b;
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    eddy_fluss_writer *w = t->data;
    uint64_t now = eddy_now_ms();
    for (int i = 0; i < w->nbuckets; i++)
        if (open_size(w, &w->b[i]) && now >= w->b[i].opened_ms + (uint64_t)w->o.linger_ms)
            close_batch(w, i);
    pump(w);
}

/* Schedule the timer for the earliest of: an open batch's linger, a retry. */
static void schedule(eddy_fluss_writer *w)
{
    uint64_t now = eddy_now_ms(), due = UINT64_MAX;
    for (int i = 0; i < w->nbuckets; i++) {
        wbucket *bk = &w->b[i];
        if (open_size(w, bk) && bk->opened_ms + (uint64_t)w->o.linger_ms < due)
            due = bk->opened_ms + (uint64_t)w->o.linger_ms;
        if (bk->head && !bk->inflight && bk->retry_at_ms > now && bk->retry_at_ms < due)
            due = bk->retry_at_ms;
    }
    if (due == UINT64_MAX || w->freeing)
        return;
    uv_timer_start(&w->timer, on_timer, due > now ? due - now : 0, 0);
}

/* -- sending ------------------------------------------------------------------ */

typedef struct send_ctx {
    eddy_fluss_writer *w;
    int leader;
    int nb;
    int buckets[];
} send_ctx;

static void refresh_done(int status, const eddy_err *err, void *ud)
{
    eddy_fluss_writer *w = ud;
    (void)status, (void)err;
    w->refreshing = 0;
    w->requests--;
    if (w->freeing && w->requests == 0) {
        eddy_fluss_writer_free(w);
        return;
    }
    pump(w);
}

static void need_refresh(eddy_fluss_writer *w)
{
    if (w->refreshing || w->freeing || w->detached)
        return;
    eddy__fluss_invalidate(w->c, w->t);
    if (eddy__fluss_refresh(w->c, w->t, refresh_done, w) == 0) {
        w->refreshing = 1;
        w->requests++;
    }
}

/* The in-flight batch of BUCKET failed with a retriable problem. */
static void retry_later(eddy_fluss_writer *w, int bucket, int status, const eddy_err *err)
{
    wbucket *bk = &w->b[bucket];
    wbatch *b = bk->inflight;
    bk->inflight = NULL;
    if (eddy_now_ms() - b->first_sent_ms > (uint64_t)w->o.retry_ms) {
        batch_done(w, b, status, err);
        return;
    }
    b->next = bk->head; /* back to the front: order is kept */
    bk->head = b;
    if (!bk->tail)
        bk->tail = b;
    uint64_t backoff = 100u << (b->attempts < 5 ? b->attempts : 5);
    bk->retry_at_ms = eddy_now_ms() + backoff;
    EDDY_DEBUG("fluss", "%s.%s bucket %d: retry in %llu ms: %s", w->t->database, w->t->name, bucket,
               (unsigned long long)backoff, err ? err->msg : "");
    need_refresh(w);
}

/* The server refused a batch for want of the writer's state: forget the
 * id; pump asks for a new one, and batches are stamped again as they go. */
static void new_writer_id(eddy_fluss_writer *w, const eddy_err *e)
{
    EDDY_WARN("fluss",
              "%s; asking for a new writer id (batches not yet acknowledged are sent "
              "again under it)",
              e->msg);
    w->writer_id = -1;
    w->init_state = 0;
    for (int i = 0; i < w->nbuckets; i++)
        w->b[i].next_seq = 0;
}

static void bucket_result(eddy_fluss_writer *w, int bucket, int code, const char *msg,
                          int64_t base_offset)
{
    wbucket *bk = &w->b[bucket];
    wbatch *b = bk->inflight;
    eddy_err e;
    char brief[512];
    if (!b)
        return;
    if (code == 0 || code == FE_DUPLICATE_SEQUENCE) {
        bk->inflight = NULL;
        if (base_offset >= 0 && !w->is_kv) /* before the rows' callbacks: they may ask */
            bk->acked_end = base_offset + (int64_t)b->rows;
        batch_done(w, b, 0, NULL);
        return;
    }
    eddy_err_setc(&e, EDDY_EFLUSS, code, "%s.%s bucket %d: Fluss error %d: %s", w->t->database,
                  w->t->name, bucket, code, eddy__fluss_brief(msg, brief, sizeof(brief)));
    if (code == FE_OUT_OF_ORDER_SEQUENCE || code == FE_UNKNOWN_WRITER_ID) {
        if (b->writer == w->writer_id) /* else: a batch sent before the id was renewed */
            new_writer_id(w, &e);
        retry_later(w, bucket, EDDY_EFLUSS, &e);
        return;
    }
    if (eddy__fluss_retriable(code)) {
        retry_later(w, bucket, EDDY_EFLUSS, &e);
        return;
    }
    bk->inflight = NULL;
    batch_done(w, b, EDDY_EFLUSS, &e);
}

static void on_response(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    send_ctx *sc = ud;
    eddy_fluss_writer *w = sc->w;
    w->requests--;
    if (status) {
        for (int i = 0; i < sc->nb; i++)
            if (w->b[sc->buckets[i]].inflight) {
                if (status == EDDY_ECANCELED ||
                    (status == EDDY_EFLUSS && !eddy__fluss_retriable((int)err->cause))) {
                    wbatch *b = w->b[sc->buckets[i]].inflight;
                    w->b[sc->buckets[i]].inflight = NULL;
                    batch_done(w, b, status, err);
                } else {
                    retry_later(w, sc->buckets[i], status, err);
                }
            }
    } else {
        /* PutKvResponse and ProduceLogResponse share their wire layout up to
         * what is read here (bucket id, error code, error message: fields
         * 2-4), so one descriptor reads both answers. */
        EddyFluss__ProduceLogResponse *r =
            eddy__rpc_unpack(&eddy_fluss__produce_log_response__descriptor, p, n);
        for (size_t i = 0; r && i < r->n_buckets_resp; i++) {
            const EddyFluss__PbProduceLogRespForBucket *br = r->buckets_resp[i];
            if (br->bucket_id >= 0 && br->bucket_id < w->nbuckets)
                bucket_result(w, br->bucket_id, br->has_error_code ? br->error_code : 0,
                              br->error_message, br->has_base_offset ? br->base_offset : -1);
        }
        eddy__rpc_free_unpacked(r);
    }
    /* a bucket the answer did not mention: treat as lost, retry */
    for (int i = 0; i < sc->nb; i++)
        if (w->b[sc->buckets[i]].inflight) {
            eddy_err e;
            eddy_err_set(&e, EDDY_ECORRUPT, "bucket %d missing from the answer", sc->buckets[i]);
            retry_later(w, sc->buckets[i], EDDY_ECORRUPT, &e);
        }
    eddy_free(sc);
    request_ended(w);
}

/* Send the head batches of the ready buckets led by LEADER in one request. */
static void send_leader(eddy_fluss_writer *w, int leader, uint64_t now)
{
    int nb = 0, total = w->nbuckets;
    send_ctx *sc = eddy_calloc(1, sizeof(*sc) + sizeof(int) * (size_t)total);
    void **items = eddy_calloc((size_t)total, sizeof(void *));
    if (!sc || !items) {
        eddy_free(sc);
        eddy_free(items);
        return;
    }
    EddyFluss__PbProduceLogReqForBucket *lb = eddy_calloc((size_t)total, sizeof(*lb));
    EddyFluss__PbPutKvReqForBucket *kb = eddy_calloc((size_t)total, sizeof(*kb));
    for (int i = 0; lb && kb && i < total; i++) {
        wbucket *bk = &w->b[i];
        if (w->t->leaders[i] != leader || bk->inflight || !bk->head || bk->retry_at_ms > now)
            continue;
        wbatch *b = bk->head;
        bk->head = b->next;
        if (!bk->head)
            bk->tail = NULL;
        b->next = NULL;
        bk->inflight = b;
        if (!b->attempts++)
            b->first_sent_ms = now;
        if (b->writer != w->writer_id) { /* its first send under this writer id */
            b->writer = w->writer_id;
            b->seq = bk->next_seq++;
            stamp(w, b);
        }
        sc->buckets[nb] = i;
        if (w->is_kv) {
            eddy_fluss__pb_put_kv_req_for_bucket__init(&kb[nb]);
            kb[nb].bucket_id = i;
            kb[nb].records.data = (uint8_t *)b->bytes.data;
            kb[nb].records.len = b->bytes.len;
            items[nb] = &kb[nb];
        } else {
            eddy_fluss__pb_produce_log_req_for_bucket__init(&lb[nb]);
            lb[nb].bucket_id = i;
            lb[nb].records.data = (uint8_t *)b->bytes.data;
            lb[nb].records.len = b->bytes.len;
            items[nb] = &lb[nb];
        }
        nb++;
    }
    int rc = EDDY_ENOMEM;
    sc->w = w;
    sc->leader = leader;
    sc->nb = nb;
    if (nb && w->is_kv) {
        EddyFluss__PutKvRequest r = EDDY_FLUSS__PUT_KV_REQUEST__INIT;
        r.acks = w->o.acks;
        r.table_id = w->t->table_id;
        r.timeout_ms = eddy__rpc_timeout_ms(w->c);
        r.n_buckets_req = (size_t)nb;
        r.buckets_req = (EddyFluss__PbPutKvReqForBucket **)items;
        rc = eddy__rpc_send(w->c, leader, API_PUT_KV, 0, &r.base, on_response, sc);
    } else if (nb) {
        EddyFluss__ProduceLogRequest r = EDDY_FLUSS__PRODUCE_LOG_REQUEST__INIT;
        r.acks = w->o.acks;
        r.table_id = w->t->table_id;
        r.timeout_ms = eddy__rpc_timeout_ms(w->c);
        r.n_buckets_req = (size_t)nb;
        r.buckets_req = (EddyFluss__PbProduceLogReqForBucket **)items;
        rc = eddy__rpc_send(w->c, leader, API_PRODUCE_LOG, 0, &r.base, on_response, sc);
    }
    eddy_free(items);
    eddy_free(lb);
    eddy_free(kb);
    if (rc == 0 && nb) {
        w->requests++;
        return;
    }
    /* not sent (out of memory, client closing): back to the front, in order */
    for (int k = 0; k < nb; k++) {
        wbucket *bk = &w->b[sc->buckets[k]];
        wbatch *b = bk->inflight;
        bk->inflight = NULL;
        if (b->attempts-- == 1)
            b->first_sent_ms = 0;
        b->next = bk->head;
        bk->head = b;
        if (!bk->tail)
            bk->tail = b;
        bk->retry_at_ms = now + 100;
    }
    eddy_free(sc);
}

static void init_writer_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud);

static void ask_writer_id(eddy_fluss_writer *w)
{
    EddyFluss__InitWriterRequest r = EDDY_FLUSS__INIT_WRITER_REQUEST__INIT;
    EddyFluss__PbTablePath path = EDDY_FLUSS__PB_TABLE_PATH__INIT, *pp = &path;
    path.database_name = w->t->database;
    path.table_name = w->t->name;
    r.n_table_path = 1;
    r.table_path = &pp;
    int leader = w->t->leaders[0];
    if (eddy__rpc_send(w->c, leader >= 0 ? leader : NODE_COORDINATOR, API_INIT_WRITER, 0, &r.base,
                       init_writer_cb, w) == 0) {
        w->init_state = 1;
        w->requests++;
    }
}

static void init_writer_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    eddy_fluss_writer *w = ud;
    w->requests--;
    if (status == 0) {
        EddyFluss__InitWriterResponse *r =
            eddy__rpc_unpack(&eddy_fluss__init_writer_response__descriptor, p, n);
        if (r) {
            w->writer_id = r->writer_id;
            w->init_state = 2;
        }
        eddy__rpc_free_unpacked(r);
    }
    if (w->init_state != 2) {
        /* retried on the next pump; network trouble usually means a refresh */
        w->init_state = 0;
        EDDY_DEBUG("fluss", "InitWriter for %s.%s failed: %s", w->t->database, w->t->name,
                   err ? err->msg : "unreadable answer");
        if (status != EDDY_ECANCELED)
            need_refresh(w);
    }
    request_ended(w);
}

static void pump(eddy_fluss_writer *w)
{
    uint64_t now = eddy_now_ms();
    if (w->freeing || w->detached)
        return;
    if (w->init_state != 2) {
        if (w->init_state == 0 && !w->refreshing)
            ask_writer_id(w);
        schedule(w);
        return;
    }
    for (int i = 0; i < w->nbuckets; i++) {
        wbucket *bk = &w->b[i];
        int leader = w->t->leaders[i];
        if (bk->inflight || !bk->head || bk->retry_at_ms > now)
            continue;
        if (leader < 0) {
            need_refresh(w);
            continue;
        }
        send_leader(w, leader, now);
    }
    schedule(w);
}

/* -- public ------------------------------------------------------------------- */

static void client_closing(eddy__fluss_child *ch);

int eddy_fluss_writer_new(eddy_fluss_client *c, const eddy_fluss_table *t,
                          const eddy_fluss_writer_opts *opts, eddy_fluss_writer **out,
                          eddy_err *err)
{
    if (eddy__rpc_closing(c))
        return eddy_err_set(err, EDDY_ECLOSING, "writer: the Fluss client is closed");
    eddy_fluss_writer *w = eddy_calloc(1, sizeof(*w));
    if (!w)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    w->c = c;
    w->t = t;
    w->nbuckets = t->nbuckets;
    w->o.batch_bytes = opts && opts->batch_bytes ? opts->batch_bytes : 1 << 20;
    w->o.linger_ms = opts && opts->linger_ms > 0 ? opts->linger_ms : 5;
    w->o.acks = opts && opts->acks ? opts->acks : -1;
    w->o.retry_ms = opts && opts->retry_ms > 0 ? opts->retry_ms : 120000;
    w->is_kv = t->schema.npk > 0;
    w->writer_id = -1;
    w->b = eddy_calloc((size_t)t->nbuckets, sizeof(*w->b));
    eddy_buf_init(&w->key);
    eddy_buf_init(&w->val);
    if (!w->b) {
        eddy_free(w);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    for (int i = 0; i < w->nbuckets; i++)
        w->b[i].acked_end = -1;
    uv_timer_init(eddy__rpc_loop(c), &w->timer);
    w->timer.data = w;
    eddy__rpc_attach(c, &w->child, client_closing);
    *out = w;
    return 0;
}

static int pick_bucket(eddy_fluss_writer *w, const eddy_fluss_value *vals, eddy_err *err)
{
    const eddy_fluss_schema *s = &w->t->schema;
    if (w->nbuckets == 1)
        return 0;
    if (s->nbk == 0) { /* sticky: fill one bucket's batch, then move on */
        if (!open_size(w, &w->b[w->sticky]) && w->b[w->sticky].head)
            w->sticky = (w->sticky + 1) % w->nbuckets;
        return w->sticky;
    }
    eddy_buf_reset(&w->val);
    int rc = eddy_fluss_key_encode(s, s->bk, s->nbk, vals, &w->val, err);
    if (rc)
        return rc;
    return eddy_fluss_bucket(w->val.data, w->val.len, w->nbuckets);
}

int eddy_fluss_writer_write(eddy_fluss_writer *w, const eddy_fluss_value *vals, int is_delete,
                            eddy_fluss_done_cb cb, void *ud, eddy_err *err)
{
    const eddy_fluss_table *t = w->t;
    int bucket, rc;
    if (w->detached || w->freeing)
        return eddy_err_set(err, EDDY_ECLOSING, "the writer or its Fluss client is closed");
    bucket = pick_bucket(w, vals, err);
    if (bucket < 0)
        return bucket;
    wbucket *bk = &w->b[bucket];
    if (is_delete && !w->is_kv)
        return eddy_err_set(err, EDDY_EINVAL, "%s.%s is a log table: rows cannot be deleted",
                            t->database, t->name);
    for (int i = 0; i < t->schema.ncols; i++) {
        const eddy_fluss_column *c = &t->schema.cols[i];
        if ((c->type == EDDY_FLUSS_TIMESTAMP || c->type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
            !vals[i].is_null && (rc = eddy__fluss_ts_check(c, &vals[i], err)))
            return rc;
    }
    if (!open_size(w, bk))
        bk->opened_ms = eddy_now_ms();
    if (w->is_kv) {
        eddy_buf_reset(&w->key);
        eddy_buf_reset(&w->val);
        if ((rc = eddy_fluss_key_encode(&t->schema, t->schema.pk, t->schema.npk, vals, &w->key,
                                        err)))
            return rc;
        if (!is_delete && eddy_fluss_compacted_encode(&t->schema, vals, &w->val))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        if (!bk->kv && eddy_fluss_kv_builder_new(t->schema_id, &bk->kv, err))
            return EDDY_ENOMEM;
        if (eddy_fluss_kv_builder_add(bk->kv, w->key.data, w->key.len, w->val.data, w->val.len,
                                      is_delete))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    } else {
        if (!bk->log && eddy_fluss_log_builder_new(&t->schema, t->schema_id, t->log_format,
                                                   t->codec, t->zstd_level, &bk->log, err))
            return EDDY_ENOMEM;
        if ((rc = eddy_fluss_log_builder_add(bk->log, EDDY_FLUSS_APPEND, vals, err)))
            return rc;
    }
    if (cbs_push(&bk->open_cbs, cb, ud))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    w->written++;
    size_t size =
        w->is_kv ? eddy_fluss_kv_builder_size(bk->kv) : eddy_fluss_log_builder_size(bk->log);
    if (size >= w->o.batch_bytes) {
        close_batch(w, bucket);
        if (!bk->inflight)
            pump(w);
    } else if (!uv_is_active((uv_handle_t *)&w->timer)) {
        schedule(w);
    }
    return 0;
}

size_t eddy_fluss_writer_pending(const eddy_fluss_writer *w)
{
    return w->pending_bytes;
}

int64_t eddy_fluss_writer_acked_end(const eddy_fluss_writer *w, int bucket)
{
    return bucket >= 0 && bucket < w->nbuckets ? w->b[bucket].acked_end : -1;
}

void eddy_fluss_writer_counts(const eddy_fluss_writer *w, long *acked, long *failed)
{
    *acked = w->acked;
    *failed = w->failed;
}

/* A flush that had nothing to wait for, a tick later. Its rows are done,
 * so even when the client is closing (STATUS EDDY_ECANCELED) it gets
 * their real outcome. */
static void flush_now(int status, void *ud)
{
    eddy_fluss_writer *w = ud;
    (void)status;
    w->requests--;
    if (!w->freeing)
        check_waiters(w);
    request_ended(w);
}

int eddy_fluss_writer_flush(eddy_fluss_writer *w, eddy_fluss_done_cb cb, void *ud)
{
    if (w->detached || w->freeing)
        return EDDY_ECLOSING;
    flush_waiter *f = eddy_calloc(1, sizeof(*f));
    if (!f)
        return EDDY_ENOMEM;
    f->cb = cb;
    f->ud = ud;
    f->target = w->written;
    f->next = w->waiters;
    w->waiters = f;
    for (int i = 0; i < w->nbuckets; i++)
        close_batch(w, i);
    pump(w);
    if (w->acked + w->failed >= f->target) {
        int rc = eddy__rpc_defer(w->c, flush_now, w);
        if (rc) { /* a start that fails calls nothing: take the waiter back */
            flush_waiter **pp = &w->waiters;
            while (*pp && *pp != f)
                pp = &(*pp)->next;
            if (*pp)
                *pp = f->next;
            eddy_free(f);
            return rc;
        }
        w->requests++;
    }
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    eddy_fluss_writer *w = h->data;
    eddy_buf_free(&w->key);
    eddy_buf_free(&w->val);
    eddy_free(w->b);
    eddy_free(w);
}

/* Fail every queued batch (and, when ALSO_INFLIGHT, the in-flight ones). */
static void drain(eddy_fluss_writer *w, int also_inflight, const eddy_err *e)
{
    for (int i = 0; i < w->nbuckets; i++) {
        wbucket *bk = &w->b[i];
        while (bk->head) {
            wbatch *b = bk->head;
            bk->head = b->next;
            batch_done(w, b, EDDY_ECANCELED, e);
        }
        bk->tail = NULL;
        if (also_inflight && bk->inflight) {
            wbatch *b = bk->inflight;
            bk->inflight = NULL;
            batch_done(w, b, EDDY_ECANCELED, e);
        }
    }
}

/* Close every open batch (when the builders still exist) and fail all
 * queued batches and the flush waiters with E. */
static void cancel_rows(eddy_fluss_writer *w, const eddy_err *e)
{
    for (int i = 0; i < w->nbuckets; i++) {
        wbucket *bk = &w->b[i];
        cb_list open = {0};
        if (close_batch(w, i)) { /* out of memory: the open rows fail here */
            w->failed += (long)open_size(w, bk);
            open = bk->open_cbs;
        } else {
            eddy_free(bk->open_cbs.v);
        }
        memset(&bk->open_cbs, 0, sizeof(bk->open_cbs));
        eddy_fluss_log_builder_free(bk->log);
        eddy_fluss_kv_builder_free(bk->kv);
        bk->log = NULL;
        bk->kv = NULL;
        for (size_t k = 0; k < open.n; k++)
            open.v[k].cb(EDDY_ECANCELED, e, open.v[k].ud);
        eddy_free(open.v);
    }
    drain(w, 0, e);
    while (w->waiters) {
        flush_waiter *f = w->waiters;
        w->waiters = f->next;
        f->cb(EDDY_ECANCELED, e, f->ud);
        eddy_free(f);
    }
}

/* The client closes (its requests, ours included, are answered already):
 * fail what is left and never touch the client or the table again. */
static void client_closing(eddy__fluss_child *ch)
{
    eddy_fluss_writer *w = EDDY__CONTAINER(ch, eddy_fluss_writer, child);
    eddy_err e;
    eddy_err_set(&e, EDDY_ECANCELED, "%s.%s: the Fluss client closed", w->t->database, w->t->name);
    w->detached = 1;
    uv_timer_stop(&w->timer);
    cancel_rows(w, &e);
    drain(w, 1, &e); /* in flight without a request (none expected) */
    w->c = NULL;     /* W->T stays readable until the close ends, then is never used */
}

void eddy_fluss_writer_free(eddy_fluss_writer *w)
{
    eddy_err e;
    if (!w)
        return;
    eddy_err_set(&e, EDDY_ECANCELED, "writer closed");
    if (!w->freeing) {
        w->freeing = 1;
        if (w->c)
            eddy__rpc_detach(w->c, &w->child);
        uv_timer_stop(&w->timer);
        cancel_rows(w, &e);
    }
    if (w->requests > 0 || w->closed)
        return; /* in-flight answers come back first; the last one frees */
    w->closed = 1;
    drain(w, 1, &e);
    uv_close((uv_handle_t *)&w->timer, timer_closed);
}
