/*
 * fluss/scanner.c - reads the log of a table (a PK table's changelog)
 * bucket by bucket from given offsets.
 *
 * One FetchLog per leader is outstanding at a time, carrying every
 * subscribed bucket that leader leads; the server long-polls (max_wait).
 * Answers are decoded in place: records below the requested offset are
 * skipped, a partial batch at the end is fetched again next time. The next
 * offset of a bucket advances only past complete batches, so nothing is
 * skipped and nothing is delivered twice within one scanner. Retriable
 * errors refresh the metadata and back off; an offset out of range restarts
 * the bucket at its earliest offset (with a warning). A scanner is a child
 * of its client: once the client has closed it fetches nothing more and
 * never touches the client or the table again.
 */
#include "eddy/fluss.h"

#include <string.h>

#include "eddy/log.h"
#include "fluss_int.h"

enum { B_OFF, B_RESOLVE, B_READY };

typedef struct sbucket {
    int state;
    int64_t offset; /* next offset to fetch, or EARLIEST / LATEST while resolving */
    int fetching;
    uint64_t retry_at_ms;
    int failures;
} sbucket;

struct eddy_fluss_scanner {
    eddy__fluss_child child; /* on the client until freed or detached */
    eddy_fluss_client *c;    /* NULL once the client has closed */
    const eddy_fluss_table *t;
    int nbuckets;
    int *proj;
    int nproj;
    eddy_fluss_scan_record_cb on_record;
    eddy_fluss_scan_progress_cb on_progress;
    void *ud;
    sbucket *b;
    int paused, freeing, closed, requests, resolving, refreshing;
    uv_timer_t timer;
};

static void pump(eddy_fluss_scanner *s);
static void schedule(eddy_fluss_scanner *s, uint64_t now);

static void maybe_free(eddy_fluss_scanner *s);

static void timer_cb(uv_timer_t *t)
{
    pump(t->data);
}

static void refresh_done(int status, const eddy_err *err, void *ud)
{
    eddy_fluss_scanner *s = ud;
    (void)status, (void)err;
    s->requests--;
    s->refreshing = 0;
    if (s->freeing) {
        maybe_free(s);
        return;
    }
    pump(s);
}

static void backoff(eddy_fluss_scanner *s, int bucket)
{
    sbucket *b = &s->b[bucket];
    uint64_t ms = 100u << (b->failures < 5 ? b->failures : 5);
    b->failures++;
    b->retry_at_ms = eddy_now_ms() + ms;
    if (!s->c)
        return;
    if (!s->refreshing && !s->freeing) {
        eddy__fluss_invalidate(s->c, s->t);
        if (eddy__fluss_refresh(s->c, s->t, refresh_done, s) == 0) {
            s->refreshing = 1;
            s->requests++;
        }
    }
    schedule(s, eddy_now_ms());
}

/* -- offsets ------------------------------------------------------------------ */

typedef struct resolve_ctx {
    eddy_fluss_scanner *s;
    int64_t want; /* EARLIEST or LATEST */
} resolve_ctx;

static void resolved(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    resolve_ctx *rc = ud;
    eddy_fluss_scanner *s = rc->s;
    s->requests--;
    s->resolving = 0;
    for (int i = 0; i < n && !s->freeing && s->c; i++) {
        sbucket *b = &s->b[i];
        if (b->state != B_RESOLVE || b->offset != rc->want)
            continue;
        if (status == 0 && offs[i] >= 0) {
            b->offset = offs[i];
            b->state = B_READY;
        } else if (status == EDDY_EFLUSS && err && !eddy__fluss_retriable((int)err->cause)) {
            b->state = B_OFF;
            s->on_progress(status, err, i, -1, -1, s->ud);
        } else {
            backoff(s, i);
        }
    }
    eddy_free(rc);
    if (s->freeing) {
        maybe_free(s);
        return;
    }
    pump(s);
}

static void resolve(eddy_fluss_scanner *s, int64_t want)
{
    resolve_ctx *rc = eddy_calloc(1, sizeof(*rc));
    if (!rc)
        return;
    rc->s = s;
    rc->want = want;
    int type = want == EDDY_FLUSS_EARLIEST ? EDDY_FLUSS_OFFSET_EARLIEST : EDDY_FLUSS_OFFSET_LATEST;
    if (eddy_fluss_list_offsets(s->c, s->t, type, 0, resolved, rc)) {
        eddy_free(rc);
        return;
    }
    s->resolving = 1;
    s->requests++;
}

/* -- fetching ----------------------------------------------------------------- */

typedef struct fetch_ctx {
    eddy_fluss_scanner *s;
    int nb;
    int buckets[];
} fetch_ctx;

typedef struct deliver_ctx {
    eddy_fluss_scanner *s;
    int bucket;
    int pause;
} deliver_ctx;

static int deliver(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    deliver_ctx *d = ud;
    if (d->s->on_record(d->bucket, off, ts, change, vals, d->s->ud))
        d->pause = 1;
    return 0; /* finish the fetch's records: offsets must move past all of them */
}

static void bucket_answer(eddy_fluss_scanner *s, const EddyFluss__PbFetchLogRespForBucket *br)
{
    int i = br->bucket_id;
    sbucket *b = &s->b[i];
    eddy_err e;
    if (br->has_error_code && br->error_code) {
        int code = br->error_code;
        char brief[512];
        eddy_err_setc(&e, EDDY_EFLUSS, code, "fetch %s.%s bucket %d: Fluss error %d: %s",
                      s->t->database, s->t->name, i, code,
                      eddy__fluss_brief(br->error_message, brief, sizeof(brief)));
        if (code == FE_OFFSET_OUT_OF_RANGE) {
            EDDY_WARN("fluss", "%s; restarting the bucket at its earliest offset", e.msg);
            b->state = B_RESOLVE;
            b->offset = EDDY_FLUSS_EARLIEST;
        } else if (eddy__fluss_retriable(code)) {
            EDDY_DEBUG("fluss", "%s; retrying", e.msg);
            backoff(s, i);
        } else {
            b->state = B_OFF;
            s->on_progress(EDDY_EFLUSS, &e, i, b->offset, -1, s->ud);
        }
        return;
    }
    b->failures = 0;
    int64_t next = b->offset;
    if (br->has_remote_log_fetch_info && !(br->has_records && br->records.len)) {
        eddy_err_set(&e, EDDY_EFLUSS,
                     "%s.%s bucket %d: offsets from %lld are in remote (tiered) log storage, "
                     "which eddy's Fluss client does not read yet; start later "
                     "(local log starts at %lld)",
                     s->t->database, s->t->name, i, (long long)b->offset,
                     br->has_log_start_offset ? (long long)br->log_start_offset : -1LL);
        b->state = B_OFF;
        s->on_progress(EDDY_EFLUSS, &e, i, b->offset, -1, s->ud);
        return;
    }
    if (br->has_records && br->records.len) {
        deliver_ctx d = {s, i, 0};
        int rc = eddy_fluss_log_decode(&s->t->schema, s->t->log_format, br->records.data,
                                       br->records.len, b->offset, s->proj, s->nproj, deliver, &d,
                                       &next, &e);
        if (rc) {
            eddy_err_prefix(&e, "%s.%s bucket %d at offset %lld: ", s->t->database, s->t->name, i,
                            (long long)b->offset);
            b->state = B_OFF;
            s->on_progress(rc, &e, i, b->offset, -1, s->ud);
            return;
        }
        if (d.pause)
            s->paused = 1;
    }
    b->offset = next;
    s->on_progress(0, NULL, i, next, br->has_high_watermark ? br->high_watermark : -1, s->ud);
}

static void fetch_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    fetch_ctx *fc = ud;
    eddy_fluss_scanner *s = fc->s;
    s->requests--;
    for (int k = 0; k < fc->nb; k++)
        s->b[fc->buckets[k]].fetching = 0;
    if (s->freeing || !s->c) {
        eddy_free(fc);
        maybe_free(s);
        return;
    }
    if (status) {
        for (int k = 0; k < fc->nb; k++)
            backoff(s, fc->buckets[k]);
        EDDY_DEBUG("fluss", "fetch failed: %s", err ? err->msg : "");
    } else {
        EddyFluss__FetchLogResponse *r =
            eddy__rpc_unpack(&eddy_fluss__fetch_log_response__descriptor, p, n);
        for (size_t t = 0; r && t < r->n_tables_resp; t++)
            for (size_t k = 0; k < r->tables_resp[t]->n_buckets_resp; k++) {
                const EddyFluss__PbFetchLogRespForBucket *br = r->tables_resp[t]->buckets_resp[k];
                if (br->bucket_id >= 0 && br->bucket_id < s->t->nbuckets &&
                    s->b[br->bucket_id].state == B_READY)
                    bucket_answer(s, br);
                if (s->freeing || !s->c) /* a callback freed us or closed the client */
                    break;
            }
        eddy__rpc_free_unpacked(r);
    }
    eddy_free(fc);
    if (s->freeing) {
        maybe_free(s);
        return;
    }
    pump(s);
}

static void fetch_leader(eddy_fluss_scanner *s, int leader, uint64_t now)
{
    int total = s->t->nbuckets, nb = 0;
    fetch_ctx *fc = eddy_calloc(1, sizeof(*fc) + sizeof(int) * (size_t)total);
    EddyFluss__PbFetchLogReqForBucket *bs = eddy_calloc((size_t)total, sizeof(*bs));
    EddyFluss__PbFetchLogReqForBucket **bp = eddy_calloc((size_t)total, sizeof(*bp));
    if (!fc || !bs || !bp)
        goto out;
    for (int i = 0; i < total; i++) {
        sbucket *b = &s->b[i];
        if (s->t->leaders[i] != leader || b->state != B_READY || b->fetching ||
            b->retry_at_ms > now)
            continue;
        eddy_fluss__pb_fetch_log_req_for_bucket__init(&bs[nb]);
        bs[nb].bucket_id = i;
        bs[nb].fetch_offset = b->offset;
        bs[nb].max_fetch_bytes = 4 << 20;
        bp[nb] = &bs[nb];
        fc->buckets[nb++] = i;
    }
    if (!nb)
        goto out;
    EddyFluss__PbFetchLogReqForTable tr = EDDY_FLUSS__PB_FETCH_LOG_REQ_FOR_TABLE__INIT, *tp = &tr;
    tr.table_id = s->t->table_id;
    tr.projection_pushdown_enabled = s->proj != NULL;
    tr.n_projected_fields = s->proj ? (size_t)s->nproj : 0;
    tr.projected_fields = s->proj;
    tr.n_buckets_req = (size_t)nb;
    tr.buckets_req = bp;
    EddyFluss__FetchLogRequest r = EDDY_FLUSS__FETCH_LOG_REQUEST__INIT;
    r.follower_server_id = -1;
    r.max_bytes = 16 << 20;
    r.n_tables_req = 1;
    r.tables_req = &tp;
    r.has_max_wait_ms = 1;
    r.max_wait_ms = 500;
    r.has_min_bytes = 1;
    r.min_bytes = 1;
    fc->s = s;
    fc->nb = nb;
    if (eddy__rpc_send(s->c, leader, API_FETCH_LOG, 0, &r.base, fetch_cb, fc) == 0) {
        for (int k = 0; k < nb; k++)
            s->b[fc->buckets[k]].fetching = 1;
        s->requests++;
        fc = NULL;
    }
out:
    eddy_free(fc);
    eddy_free(bs);
    eddy_free(bp);
}

/* Wake when the first bucket in backoff may go again. The timer's clock
 * (the loop's) and eddy_now_ms() differ by up to a millisecond, so a timer
 * may fire just before a bucket is due: without this, that bucket would wait
 * for nothing, and with every bucket in that state the scanner stopped. */
static void schedule(eddy_fluss_scanner *s, uint64_t now)
{
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < s->t->nbuckets; i++) {
        const sbucket *b = &s->b[i];
        if ((b->state == B_READY || b->state == B_RESOLVE) && !b->fetching &&
            b->retry_at_ms > now && b->retry_at_ms < due)
            due = b->retry_at_ms;
    }
    if (due != UINT64_MAX)
        uv_timer_start(&s->timer, timer_cb, due - now, 0);
}

static void pump(eddy_fluss_scanner *s)
{
    uint64_t now = eddy_now_ms();
    if (s->paused || s->freeing || !s->c)
        return;
    for (int i = 0; i < s->t->nbuckets && !s->resolving; i++)
        if (s->b[i].state == B_RESOLVE && s->b[i].retry_at_ms <= now)
            resolve(s, s->b[i].offset);
    for (int i = 0; i < s->t->nbuckets && s->c && !s->freeing; i++) {
        sbucket *b = &s->b[i];
        if (b->state != B_READY || b->fetching || b->retry_at_ms > now)
            continue;
        if (s->t->leaders[i] < 0) {
            backoff(s, i);
            continue;
        }
        fetch_leader(s, s->t->leaders[i], now);
    }
    if (s->c && !s->freeing)
        schedule(s, now);
}

/* -- public ------------------------------------------------------------------- */

/* The client closes (our fetches are answered already): stop for good. */
static void client_closing(eddy__fluss_child *ch)
{
    eddy_fluss_scanner *s = EDDY__CONTAINER(ch, eddy_fluss_scanner, child);
    uv_timer_stop(&s->timer);
    s->c = NULL; /* S->T stays readable until the close ends, then is never used */
}

int eddy_fluss_scanner_new(eddy_fluss_client *c, const eddy_fluss_table *t, const int *projection,
                           int nproj, eddy_fluss_scan_record_cb on_record,
                           eddy_fluss_scan_progress_cb on_progress, void *ud,
                           eddy_fluss_scanner **out, eddy_err *err)
{
    if (projection) {
        if (t->log_format != EDDY_FLUSS_LOG_ARROW)
            return eddy_err_set(err, EDDY_EINVAL,
                                "%s.%s: column projection needs an ARROW log table", t->database,
                                t->name);
        for (int i = 0; i < nproj; i++)
            if (projection[i] < 0 || projection[i] >= t->schema.ncols ||
                (i && projection[i] <= projection[i - 1]))
                return eddy_err_set(err, EDDY_EINVAL,
                                    "projection must list ascending column indexes");
    }
    if (eddy__rpc_closing(c))
        return eddy_err_set(err, EDDY_ECLOSING, "scanner: the Fluss client is closed");
    eddy_fluss_scanner *s = eddy_calloc(1, sizeof(*s));
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->c = c;
    s->t = t;
    s->nbuckets = t->nbuckets;
    s->on_record = on_record;
    s->on_progress = on_progress;
    s->ud = ud;
    s->b = eddy_calloc((size_t)t->nbuckets, sizeof(*s->b));
    if (projection && nproj > 0) {
        s->proj = eddy_malloc(sizeof(int) * (size_t)nproj);
        if (s->proj)
            memcpy(s->proj, projection, sizeof(int) * (size_t)nproj);
        s->nproj = nproj;
    }
    if (!s->b || (projection && nproj > 0 && !s->proj)) {
        eddy_free(s->b);
        eddy_free(s->proj);
        eddy_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    uv_timer_init(eddy__rpc_loop(c), &s->timer);
    s->timer.data = s;
    eddy__rpc_attach(c, &s->child, client_closing);
    *out = s;
    return 0;
}

int eddy_fluss_scanner_subscribe(eddy_fluss_scanner *s, int bucket, int64_t offset)
{
    if (!s->c || s->freeing)
        return EDDY_ECLOSING;
    if (bucket < 0 || bucket >= s->nbuckets)
        return EDDY_EINVAL;
    s->b[bucket].offset = offset;
    s->b[bucket].state = offset < 0 ? B_RESOLVE : B_READY;
    uv_timer_start(&s->timer, timer_cb, 0, 0); /* start on the next tick */
    return 0;
}

void eddy_fluss_scanner_pause(eddy_fluss_scanner *s)
{
    s->paused = 1;
}

void eddy_fluss_scanner_resume(eddy_fluss_scanner *s)
{
    if (!s->paused || !s->c || s->freeing)
        return;
    s->paused = 0;
    uv_timer_start(&s->timer, timer_cb, 0, 0);
}

static void timer_closed(uv_handle_t *h)
{
    eddy_fluss_scanner *s = h->data;
    eddy_free(s->b);
    eddy_free(s->proj);
    eddy_free(s);
}

static void maybe_free(eddy_fluss_scanner *s)
{
    if (s->requests == 0 && !s->closed) {
        s->closed = 1;
        uv_close((uv_handle_t *)&s->timer, timer_closed);
    }
}

void eddy_fluss_scanner_free(eddy_fluss_scanner *s)
{
    if (!s || s->freeing)
        return;
    s->freeing = 1;
    if (s->c)
        eddy__rpc_detach(s->c, &s->child);
    uv_timer_stop(&s->timer);
    maybe_free(s);
}
