/*
 * fluss/lookup.c - point lookups and prefix lookups on primary-key tables.
 *
 * Lookups are queued and sent on the next loop tick, so all lookups issued
 * in one iteration share requests: one Lookup (or PrefixLookup) request per
 * table and bucket leader, keys grouped by bucket. Answers come back as one
 * value per key, in key order (no value = not found); a value is an int16
 * schema id followed by a CompactedRow. Retriable bucket errors refresh the
 * metadata and queue the lookup again until the request timeout.
 */
#include "eddy/fluss.h"

#include <string.h>

#include "eddy/log.h"
#include "fluss_int.h"

typedef struct lk {
    struct lk *next;
    const eddy_fluss_table *t;
    int bucket;
    int prefix;
    uint8_t *key;
    size_t klen;
    eddy_fluss_lookup_cb cb;
    eddy_fluss_prefix_cb pcb;
    void *ud;
    uint64_t deadline_ms;
    int attempts;
} lk;

typedef struct lk_state {
    lk *queue;
    int scheduled;
    uv_timer_t retry;
    int retry_open;
    lk *later; /* waiting for the retry timer */
} lk_state;

typedef struct lk_req {
    eddy_fluss_client *c;
    lk **items; /* in request order */
    size_t n;
} lk_req;

/* The client's lookup state, created on first use; NULL when out of
 * memory or once the client is closing (the close frees it for good). */
static lk_state *state(eddy_fluss_client *c)
{
    void **slot = eddy__fluss_lookup_slot(c);
    if (!*slot && !eddy__rpc_closing(c))
        *slot = eddy_calloc(1, sizeof(lk_state));
    return *slot;
}

static void lk_free(lk *l)
{
    eddy_free(l->key);
    eddy_free(l);
}

static void fail(lk *l, int status, const eddy_err *err)
{
    if (l->prefix)
        l->pcb(status, err, NULL, 0, 0, l->ud);
    else
        l->cb(status, err, NULL, l->ud);
    lk_free(l);
}

static void flush(int status, void *ud);

static void retry_tick(uv_timer_t *t)
{
    eddy_fluss_client *c = t->data;
    lk_state *st = state(c);
    while (st && st->later) {
        lk *l = st->later;
        st->later = l->next;
        l->next = st->queue;
        st->queue = l;
    }
    flush(0, c);
}

static void refresh_done(int status, const eddy_err *err, void *ud)
{
    (void)status, (void)err, (void)ud;
}

/* Queue L again after a backoff (retriable trouble), or fail it at its deadline. */
static void again(eddy_fluss_client *c, lk *l, int status, const eddy_err *err)
{
    lk_state *st = state(c);
    if (eddy_now_ms() >= l->deadline_ms) {
        fail(l, status, err);
        return;
    }
    if (l->attempts++ == 0 || l->attempts % 4 == 0) {
        eddy__fluss_invalidate(c, l->t);
        eddy__fluss_refresh(c, l->t, refresh_done, NULL);
    }
    if (!st) { /* out of memory, or the client is closing */
        fail(l, status, err);
        return;
    }
    l->next = st->later;
    st->later = l;
    if (!st->retry_open) {
        uv_timer_init(eddy__rpc_loop(c), &st->retry);
        st->retry.data = c;
        st->retry_open = 1;
    }
    uv_timer_start(&st->retry, retry_tick, 100, 0);
}

static void answer_point(lk *l, const EddyFluss__PbValue *v)
{
    const eddy_fluss_schema *s = &l->t->schema;
    eddy_fluss_value *vals;
    eddy_err e;
    if (!v || !v->has_values) {
        l->cb(0, NULL, NULL, l->ud);
        return;
    }
    vals = eddy_calloc((size_t)s->ncols + 1, sizeof(*vals));
    int rc = !vals ? eddy_err_set(&e, EDDY_ENOMEM, "out of memory")
             : v->values.len < 2
                 ? eddy_err_set(&e, EDDY_ECORRUPT, "lookup value shorter than its schema id")
                 : eddy_fluss_compacted_decode(s, v->values.data + 2, v->values.len - 2, vals, &e);
    if (rc)
        l->cb(rc, &e, NULL, l->ud);
    else
        l->cb(0, NULL, vals, l->ud);
    eddy_free(vals);
}

static void answer_prefix(lk *l, const EddyFluss__PbValueList *vl)
{
    const eddy_fluss_schema *s = &l->t->schema;
    size_t n = vl ? vl->n_values : 0;
    eddy_err e;
    if (n == 0) {
        l->pcb(0, NULL, NULL, 0, 0, l->ud);
        return;
    }
    eddy_fluss_value *vals = eddy_calloc((size_t)s->ncols + 1, sizeof(*vals));
    for (size_t i = 0; i < n; i++) {
        const ProtobufCBinaryData *b = &vl->values[i];
        int rc = !vals        ? eddy_err_set(&e, EDDY_ENOMEM, "out of memory")
                 : b->len < 2 ? eddy_err_set(&e, EDDY_ECORRUPT, "prefix lookup value too short")
                              : eddy_fluss_compacted_decode(s, b->data + 2, b->len - 2, vals, &e);
        if (rc) {
            l->pcb(rc, &e, NULL, i, n, l->ud);
            break;
        }
        l->pcb(0, NULL, vals, i, n, l->ud);
    }
    eddy_free(vals);
}

/* Index of the first unanswered item of BUCKET in RQ (rq->n when none). */
static size_t first_of(const lk_req *rq, int bucket)
{
    for (size_t i = 0; i < rq->n; i++)
        if (rq->items[i] && rq->items[i]->bucket == bucket)
            return i;
    return rq->n;
}

static void point_k(lk *l, const void *resp, size_t k)
{
    const EddyFluss__PbLookupRespForBucket *br = resp;
    answer_point(l, k < br->n_values ? br->values[k] : NULL);
}

static void prefix_k(lk *l, const void *resp, size_t k)
{
    const EddyFluss__PbPrefixLookupRespForBucket *br = resp;
    answer_prefix(l, k < br->n_value_lists ? br->value_lists[k] : NULL);
}

/* Answer the items of BUCKET in RQ: a bucket error retries or fails each of
 * them; otherwise item k gets the k-th value (list) of RESP through ANSWER. */
static void answer_bucket(eddy_fluss_client *c, lk_req *rq, int bucket, int code, const char *msg,
                          void (*answer)(lk *l, const void *resp, size_t k), const void *resp)
{
    size_t k = 0;
    for (size_t at = first_of(rq, bucket);
         at < rq->n && rq->items[at] && rq->items[at]->bucket == bucket; at++, k++) {
        lk *l = rq->items[at];
        rq->items[at] = NULL;
        if (code) {
            eddy_err e;
            char brief[512];
            eddy_err_setc(&e, EDDY_EFLUSS, code, "%slookup in %s.%s bucket %d: Fluss error %d: %s",
                          l->prefix ? "prefix " : "", l->t->database, l->t->name, bucket, code,
                          eddy__fluss_brief(msg, brief, sizeof(brief)));
            if (eddy__fluss_retriable(code))
                again(c, l, EDDY_EFLUSS, &e);
            else
                fail(l, EDDY_EFLUSS, &e);
            continue;
        }
        answer(l, resp, k);
        lk_free(l);
    }
}

static void on_answer(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    lk_req *rq = ud;
    eddy_fluss_client *c = rq->c;
    int prefix = rq->n ? rq->items[0]->prefix : 0;
    if (status) {
        for (size_t i = 0; i < rq->n; i++) {
            if (status == EDDY_ECANCELED ||
                (status == EDDY_EFLUSS && !eddy__fluss_retriable((int)err->cause)))
                fail(rq->items[i], status, err);
            else
                again(c, rq->items[i], status, err);
        }
        goto out;
    }
    /* Items are grouped by bucket; each answered bucket lists one value
     * (list) per key, in the order its keys were sent. */
    void *msg = eddy__rpc_unpack(prefix ? &eddy_fluss__prefix_lookup_response__descriptor
                                        : &eddy_fluss__lookup_response__descriptor,
                                 p, n);
    if (msg && !prefix) {
        EddyFluss__LookupResponse *r = msg;
        for (size_t b = 0; b < r->n_buckets_resp; b++) {
            const EddyFluss__PbLookupRespForBucket *br = r->buckets_resp[b];
            answer_bucket(c, rq, br->bucket_id, br->has_error_code ? br->error_code : 0,
                          br->error_message, point_k, br);
        }
    } else if (msg) {
        EddyFluss__PrefixLookupResponse *r = msg;
        for (size_t b = 0; b < r->n_buckets_resp; b++) {
            const EddyFluss__PbPrefixLookupRespForBucket *br = r->buckets_resp[b];
            answer_bucket(c, rq, br->bucket_id, br->has_error_code ? br->error_code : 0,
                          br->error_message, prefix_k, br);
        }
    }
    eddy__rpc_free_unpacked(msg);
    for (size_t i = 0; i < rq->n; i++)
        if (rq->items[i]) {
            eddy_err e;
            eddy_err_set(&e, EDDY_ECORRUPT, "lookup answer did not cover every key");
            fail(rq->items[i], EDDY_ECORRUPT, &e);
        }
out:
    eddy_free(rq->items);
    eddy_free(rq);
}

/* Send the queued lookups of table T, kind PREFIX, led by LEADER (taken off
 * *QUEUE) as one request. */
static void send_group(eddy_fluss_client *c, lk **queue, const eddy_fluss_table *t, int prefix,
                       int leader)
{
    size_t n = 0, nb = 0;
    for (lk *l = *queue; l; l = l->next)
        n += l->t == t && l->prefix == prefix && t->leaders[l->bucket] == leader;
    lk_req *rq = eddy_calloc(1, sizeof(*rq));
    lk **items = eddy_calloc(n, sizeof(*items));
    EddyFluss__PbLookupReqForBucket *bs = eddy_calloc((size_t)t->nbuckets, sizeof(*bs));
    void **bp = eddy_calloc((size_t)t->nbuckets, sizeof(*bp));
    ProtobufCBinaryData *keys = eddy_calloc(n, sizeof(*keys));
    if (!rq || !items || !bs || !bp || !keys) {
        eddy_free(rq), eddy_free(items), eddy_free(bs), eddy_free(bp), eddy_free(keys);
        return; /* stays queued; the next flush tries again */
    }
    rq->c = c;
    /* take the group off the queue, ordered by bucket */
    for (int b = 0; b < t->nbuckets; b++) {
        size_t first = rq->n;
        for (lk **pp = queue; *pp;) {
            lk *l = *pp;
            if (l->t == t && l->prefix == prefix && l->bucket == b && t->leaders[b] == leader) {
                *pp = l->next;
                l->next = NULL;
                keys[rq->n].data = l->key;
                keys[rq->n].len = l->klen;
                items[rq->n++] = l;
            } else {
                pp = &l->next;
            }
        }
        if (rq->n == first)
            continue;
        /* PbLookupReqForBucket and PbPrefixLookupReqForBucket share a layout */
        eddy_fluss__pb_lookup_req_for_bucket__init(&bs[nb]);
        bs[nb].bucket_id = b;
        bs[nb].n_keys = rq->n - first;
        bs[nb].keys = keys + first;
        bp[nb] = &bs[nb];
        nb++;
    }
    rq->items = items;
    int rc;
    if (prefix) {
        EddyFluss__PbPrefixLookupReqForBucket *pb = eddy_calloc(nb + 1, sizeof(*pb));
        EddyFluss__PbPrefixLookupReqForBucket **pbp = eddy_calloc(nb + 1, sizeof(*pbp));
        for (size_t i = 0; pb && pbp && i < nb; i++) {
            eddy_fluss__pb_prefix_lookup_req_for_bucket__init(&pb[i]);
            pb[i].bucket_id = bs[i].bucket_id;
            pb[i].n_keys = bs[i].n_keys;
            pb[i].keys = bs[i].keys;
            pbp[i] = &pb[i];
        }
        EddyFluss__PrefixLookupRequest r = EDDY_FLUSS__PREFIX_LOOKUP_REQUEST__INIT;
        r.table_id = t->table_id;
        r.n_buckets_req = nb;
        r.buckets_req = pbp;
        rc = pb && pbp ? eddy__rpc_send(c, leader, API_PREFIX_LOOKUP, 0, &r.base, on_answer, rq)
                       : EDDY_ENOMEM;
        eddy_free(pb);
        eddy_free(pbp);
    } else {
        EddyFluss__LookupRequest r = EDDY_FLUSS__LOOKUP_REQUEST__INIT;
        r.table_id = t->table_id;
        r.n_buckets_req = nb;
        r.buckets_req = (EddyFluss__PbLookupReqForBucket **)bp;
        rc = eddy__rpc_send(c, leader, API_LOOKUP, 0, &r.base, on_answer, rq);
    }
    eddy_free(bs);
    eddy_free(bp);
    eddy_free(keys);
    if (rc) {
        eddy_err e;
        eddy_err_set(&e, rc, "cannot send a lookup");
        for (size_t i = 0; i < rq->n; i++)
            fail(items[i], rc, &e);
        eddy_free(items);
        eddy_free(rq);
    }
}

/* The tick after lookups were queued: send them. STATUS EDDY_ECANCELED:
 * the client is closing and eddy__fluss_lookup_cancel fails the queue. */
static void flush(int status, void *ud)
{
    eddy_fluss_client *c = ud;
    lk_state *st = state(c);
    if (!st)
        return;
    st->scheduled = 0;
    if (status)
        return;
    while (st->queue) {
        lk *l = st->queue;
        int leader = l->t->leaders[l->bucket];
        if (leader < 0) {
            eddy_err e;
            st->queue = l->next;
            eddy_err_set(&e, EDDY_ENET, "%s.%s bucket %d has no leader", l->t->database, l->t->name,
                         l->bucket);
            again(c, l, EDDY_ENET, &e);
            continue;
        }
        lk *before = st->queue;
        send_group(c, &st->queue, l->t, l->prefix, leader);
        if (st->queue == before && before == l)
            break; /* out of memory: leave the rest for the next flush */
    }
}

static int enqueue(eddy_fluss_client *c, const eddy_fluss_table *t, const eddy_fluss_value *key,
                   int prefix, eddy_fluss_lookup_cb cb, eddy_fluss_prefix_cb pcb, void *ud,
                   eddy_err *err)
{
    const eddy_fluss_schema *s = &t->schema;
    lk_state *st = state(c);
    eddy_buf kb, bb;
    int rc;
    if (eddy__rpc_closing(c)) /* T may be gone with the client's cache: no names */
        return eddy_err_set(err, EDDY_ECLOSING, "lookup: the Fluss client is closed");
    if (s->npk == 0)
        return eddy_err_set(err, EDDY_EINVAL, "%s.%s has no primary key: nothing to look up",
                            t->database, t->name);
    if (!st)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    eddy_buf_init(&kb);
    eddy_buf_init(&bb);
    if (prefix)
        rc = eddy_fluss_key_encode(s, s->bk, s->nbk, key, &kb, err);
    else
        rc = eddy_fluss_key_encode(s, s->pk, s->npk, key, &kb, err);
    if (!rc && !prefix && s->nbk &&
        (s->nbk != s->npk || memcmp(s->bk, s->pk, sizeof(int) * (size_t)s->npk)))
        rc = eddy_fluss_key_encode(s, s->bk, s->nbk, key, &bb, err);
    lk *l = rc ? NULL : eddy_calloc(1, sizeof(*l));
    if (rc || !l) {
        eddy_buf_free(&kb);
        eddy_buf_free(&bb);
        return rc ? rc : eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    const eddy_buf *bucket_bytes = bb.len ? &bb : &kb;
    l->bucket = eddy_fluss_bucket(bucket_bytes->data, bucket_bytes->len, t->nbuckets);
    l->t = t;
    l->prefix = prefix;
    l->klen = kb.len;
    l->key = (uint8_t *)eddy_buf_take(&kb);
    l->cb = cb;
    l->pcb = pcb;
    l->ud = ud;
    l->deadline_ms = eddy_now_ms() + (uint64_t)eddy__rpc_timeout_ms(c);
    eddy_buf_free(&bb);
    if (!l->key) {
        eddy_free(l);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (!st->scheduled) {
        if (eddy__rpc_defer(c, flush, c)) {
            lk_free(l);
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
        st->scheduled = 1;
    }
    l->next = st->queue;
    st->queue = l;
    return 0;
}

int eddy_fluss_lookup(eddy_fluss_client *c, const eddy_fluss_table *t, const eddy_fluss_value *key,
                      eddy_fluss_lookup_cb cb, void *ud, eddy_err *err)
{
    return enqueue(c, t, key, 0, cb, NULL, ud, err);
}

int eddy_fluss_prefix_lookup(eddy_fluss_client *c, const eddy_fluss_table *t,
                             const eddy_fluss_value *prefix, eddy_fluss_prefix_cb cb, void *ud,
                             eddy_err *err)
{
    return enqueue(c, t, prefix, 1, NULL, cb, ud, err);
}

static void retry_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

void eddy__fluss_lookup_cancel(eddy_fluss_client *c)
{
    void **slot = eddy__fluss_lookup_slot(c);
    lk_state *st = *slot;
    eddy_err e;
    if (!st)
        return;
    eddy_err_set(&e, EDDY_ECANCELED, "client closed");
    while (st->queue) {
        lk *l = st->queue;
        st->queue = l->next;
        fail(l, EDDY_ECANCELED, &e);
    }
    while (st->later) {
        lk *l = st->later;
        st->later = l->next;
        fail(l, EDDY_ECANCELED, &e);
    }
    *slot = NULL;
    if (st->retry_open) {
        st->retry.data = st;
        uv_close((uv_handle_t *)&st->retry, retry_closed);
    } else {
        eddy_free(st);
    }
}
