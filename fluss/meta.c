/*
 * fluss/meta.c - metadata (servers, tables, bucket leaders) and admin calls.
 *
 * Tables are cached per client by database.name; a cached table object is
 * never freed before the client, so writers and scanners may hold it. A
 * refresh updates its leaders in place. A table whose buckets have no
 * leader yet (just created) is asked for again with a short backoff until
 * the request timeout. Admin calls go to the coordinator. Every operation
 * is a child of its client: one still waiting for a retry when the client
 * closes ends with EDDY_ECANCELED.
 */
#include "eddy/fluss.h"
#include "eddy/json.h"

#include <stdio.h>
#include <string.h>

#include "eddy/log.h"
#include "fluss_int.h"

typedef struct cached {
    struct cached *next;
    eddy_fluss_table *t;
    int stale;
} cached;

typedef struct meta {
    cached *tables;
} meta;

/* The cache, created on first use; NULL when out of memory or once the
 * client is closing (its cache is freed then and must not come back). */
static meta *get_meta(eddy_fluss_client *c)
{
    void **slot = eddy__fluss_meta_slot(c);
    if (!*slot && !eddy__rpc_closing(c))
        *slot = eddy_calloc(1, sizeof(meta));
    return *slot;
}

void eddy__fluss_meta_free(eddy_fluss_client *c)
{
    void **slot = eddy__fluss_meta_slot(c);
    meta *m = *slot;
    if (!m)
        return;
    while (m->tables) {
        cached *n = m->tables->next;
        eddy_fluss_table_free(m->tables->t);
        eddy_free(m->tables);
        m->tables = n;
    }
    eddy_free(m);
    *slot = NULL;
}

static cached *find_cached(eddy_fluss_client *c, const char *db, const char *name)
{
    meta *m = get_meta(c);
    for (cached *k = m ? m->tables : NULL; k; k = k->next)
        if (k->stale != 3 && !strcmp(k->t->database, db) && !strcmp(k->t->name, name))
            return k;
    return NULL;
}

int eddy__fluss_retriable(int code)
{
    return code == FE_NETWORK || code == FE_NOT_LEADER || code == FE_UNKNOWN_TABLE_OR_BUCKET ||
           code == FE_LEADER_NOT_AVAILABLE || code == FE_REQUEST_TIME_OUT ||
           code == FE_NOT_ENOUGH_REPLICAS || code == FE_LOG_STORAGE || code == FE_KV_STORAGE;
}

/* -- generic admin operation ------------------------------------------------- */

typedef struct op {
    eddy__fluss_child child; /* on the client until op_free */
    eddy_fluss_client *c;
    int kind;
    eddy_fluss_done_cb done;
    eddy_fluss_names_cb names;
    eddy_fluss_table_cb table;
    eddy_fluss_offsets_cb offsets;
    void *ud;
    char db[256], name[256];
    uint64_t deadline;
    uv_timer_t timer; /* metadata retry backoff */
    int timer_open;
    /* list offsets */
    const eddy_fluss_table *t;
    int64_t *offs;
    int pending, status;
    eddy_err err;
    int type;
    int64_t ts;
} op;

static void op_closing(eddy__fluss_child *ch);

/* A new operation of C (attached to it), or NULL when out of memory. */
static op *op_new(eddy_fluss_client *c, void *ud)
{
    op *o = eddy_calloc(1, sizeof(*o));
    if (o) {
        o->c = c;
        o->ud = ud;
        o->deadline = eddy_now_ms() + (uint64_t)eddy__rpc_timeout_ms(c);
        eddy__rpc_attach(c, &o->child, op_closing);
    }
    return o;
}

static void op_timer_closed(uv_handle_t *h)
{
    op *o = h->data;
    eddy_free(o->offs);
    eddy_free(o);
}

/* O's callback is about to run: off the client's list first, so that a
 * callback closing the client does not end O a second time. */
static void op_ending(op *o)
{
    eddy__rpc_detach(o->c, &o->child);
}

/* Release O (its callback has run, or it never started). */
static void op_free(op *o)
{
    eddy__rpc_detach(o->c, &o->child);
    if (o->timer_open) {
        uv_close((uv_handle_t *)&o->timer, op_timer_closed);
        return;
    }
    eddy_free(o->offs);
    eddy_free(o);
}

static void done_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    op *o = ud;
    (void)p, (void)n;
    op_ending(o);
    o->done(status, err, o->ud);
    op_free(o);
}

static int send_done(eddy_fluss_client *c, int api, const ProtobufCMessage *m,
                     eddy_fluss_done_cb cb, void *ud)
{
    op *o = op_new(c, ud);
    if (!o)
        return EDDY_ENOMEM;
    o->done = cb;
    int rc = eddy__rpc_send(c, NODE_COORDINATOR, api, 0, m, done_cb, o);
    if (rc)
        op_free(o);
    return rc;
}

int eddy_fluss_create_database(eddy_fluss_client *c, const char *db, int ignore_if_exists,
                               eddy_fluss_done_cb cb, void *ud)
{
    static const char js[] = "{\"version\":1,\"custom_properties\":{}}";
    EddyFluss__CreateDatabaseRequest r = EDDY_FLUSS__CREATE_DATABASE_REQUEST__INIT;
    r.database_name = (char *)db;
    r.ignore_if_exists = ignore_if_exists != 0;
    r.has_database_json = 1;
    r.database_json.data = (uint8_t *)js;
    r.database_json.len = sizeof(js) - 1;
    return send_done(c, API_CREATE_DATABASE, &r.base, cb, ud);
}

int eddy_fluss_drop_database(eddy_fluss_client *c, const char *db, int ignore_if_missing,
                             int cascade, eddy_fluss_done_cb cb, void *ud)
{
    EddyFluss__DropDatabaseRequest r = EDDY_FLUSS__DROP_DATABASE_REQUEST__INIT;
    r.database_name = (char *)db;
    r.ignore_if_not_exists = ignore_if_missing != 0;
    r.cascade = cascade != 0;
    return send_done(c, API_DROP_DATABASE, &r.base, cb, ud);
}

int eddy_fluss_create_table(eddy_fluss_client *c, const char *db, const char *table,
                            const json_t *table_json, int ignore_if_exists, eddy_fluss_done_cb cb,
                            void *ud)
{
    EddyFluss__CreateTableRequest r = EDDY_FLUSS__CREATE_TABLE_REQUEST__INIT;
    EddyFluss__PbTablePath path = EDDY_FLUSS__PB_TABLE_PATH__INIT;
    char *text = eddy_json_dumps_flags(table_json, JSON_COMPACT);
    if (!text)
        return EDDY_ENOMEM;
    path.database_name = (char *)db;
    path.table_name = (char *)table;
    r.table_path = &path;
    r.table_json.data = (uint8_t *)text;
    r.table_json.len = strlen(text);
    r.ignore_if_exists = ignore_if_exists != 0;
    int rc = send_done(c, API_CREATE_TABLE, &r.base, cb, ud);
    eddy_free(text);
    return rc;
}

int eddy_fluss_drop_table(eddy_fluss_client *c, const char *db, const char *table,
                          int ignore_if_missing, eddy_fluss_done_cb cb, void *ud)
{
    EddyFluss__DropTableRequest r = EDDY_FLUSS__DROP_TABLE_REQUEST__INIT;
    EddyFluss__PbTablePath path = EDDY_FLUSS__PB_TABLE_PATH__INIT;
    path.database_name = (char *)db;
    path.table_name = (char *)table;
    r.table_path = &path;
    r.ignore_if_not_exists = ignore_if_missing != 0;
    cached *k = find_cached(c, db, table);
    if (k)
        k->stale = 2; /* gone: the next get_table reloads everything */
    return send_done(c, API_DROP_TABLE, &r.base, cb, ud);
}

static void names_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    op *o = ud;
    op_ending(o);
    if (status) {
        o->names(status, err, NULL, 0, o->ud);
        op_free(o);
        return;
    }
    /* ListDatabasesResponse and ListTablesResponse share their layout */
    EddyFluss__ListTablesResponse *r =
        eddy__rpc_unpack(&eddy_fluss__list_tables_response__descriptor, p, n);
    if (!r) {
        eddy_err e;
        eddy_err_set(&e, EDDY_ECORRUPT, "unreadable list response");
        o->names(EDDY_ECORRUPT, &e, NULL, 0, o->ud);
    } else {
        o->names(0, NULL, r->table_name, r->n_table_name, o->ud);
    }
    eddy__rpc_free_unpacked(r);
    op_free(o);
}

int eddy_fluss_list_databases(eddy_fluss_client *c, eddy_fluss_names_cb cb, void *ud)
{
    EddyFluss__ListDatabasesRequest r = EDDY_FLUSS__LIST_DATABASES_REQUEST__INIT;
    op *o = op_new(c, ud);
    if (!o)
        return EDDY_ENOMEM;
    o->names = cb;
    int rc = eddy__rpc_send(c, NODE_COORDINATOR, API_LIST_DATABASES, 0, &r.base, names_cb, o);
    if (rc)
        op_free(o);
    return rc;
}

int eddy_fluss_list_tables(eddy_fluss_client *c, const char *db, eddy_fluss_names_cb cb, void *ud)
{
    EddyFluss__ListTablesRequest r = EDDY_FLUSS__LIST_TABLES_REQUEST__INIT;
    op *o = op_new(c, ud);
    if (!o)
        return EDDY_ENOMEM;
    r.database_name = (char *)db;
    o->names = cb;
    int rc = eddy__rpc_send(c, NODE_COORDINATOR, API_LIST_TABLES, 0, &r.base, names_cb, o);
    if (rc)
        op_free(o);
    return rc;
}

/* -- metadata --------------------------------------------------------------- */

static int send_metadata(op *o);

/* Apply one table's metadata; returns 1 when every bucket has a leader. */
static int apply_table(op *o, const EddyFluss__PbTableMetadata *tm, eddy_err *err, int *rc)
{
    meta *m = get_meta(o->c);
    cached *k = find_cached(o->c, o->db, o->name);
    *rc = 0;
    if (!m) {
        *rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        return 0;
    }
    if (!k || k->stale == 2) {
        eddy_fluss_table *t;
        *rc = eddy_fluss_table_parse(o->db, o->name, (const char *)tm->table_json.data,
                                     tm->table_json.len, &t, err);
        if (*rc)
            return 0;
        t->leaders = eddy_malloc(sizeof(int) * (size_t)t->nbuckets);
        if (!t->leaders) {
            eddy_fluss_table_free(t);
            *rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            return 0;
        }
        if (k) { /* dropped and re-created: keep the old object alive for holders */
            cached *nk = eddy_calloc(1, sizeof(*nk));
            if (!nk) {
                eddy_fluss_table_free(t);
                *rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
                return 0;
            }
            k->stale = 3; /* retired: never found again */
            k = nk;
            k->next = m->tables;
            m->tables = k;
        } else {
            k = eddy_calloc(1, sizeof(*k));
            if (!k) {
                eddy_fluss_table_free(t);
                *rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
                return 0;
            }
            k->next = m->tables;
            m->tables = k;
        }
        k->t = t;
    }
    eddy_fluss_table *t = k->t;
    t->table_id = tm->table_id;
    t->schema_id = tm->schema_id;
    for (int b = 0; b < t->nbuckets; b++)
        t->leaders[b] = -1;
    for (size_t i = 0; i < tm->n_bucket_metadata; i++) {
        const EddyFluss__PbBucketMetadata *bm = tm->bucket_metadata[i];
        if (bm->bucket_id >= 0 && bm->bucket_id < t->nbuckets && bm->has_leader_id)
            t->leaders[bm->bucket_id] = bm->leader_id;
    }
    k->stale = 0;
    for (int b = 0; b < t->nbuckets; b++)
        if (t->leaders[b] < 0 || !eddy__rpc_has_node(o->c, t->leaders[b]))
            return 0;
    return 1;
}

static void retry_timer(uv_timer_t *h)
{
    op *o = h->data;
    int rc = send_metadata(o);
    if (rc) {
        eddy_err e;
        eddy_err_set(&e, rc, "table %s.%s: cannot ask for metadata: %s", o->db, o->name,
                     eddy_strerror(rc));
        op_ending(o);
        if (o->table)
            o->table(rc, &e, NULL, o->ud);
        else
            o->done(rc, &e, o->ud);
        op_free(o);
    }
}

static void meta_finish(op *o, int status, const eddy_err *err)
{
    cached *k = status ? NULL : find_cached(o->c, o->db, o->name);
    op_ending(o);
    if (o->table)
        o->table(status, err, k ? k->t : NULL, o->ud);
    else
        o->done(status, err, o->ud);
    op_free(o);
}

/* Try again after a pause, unless the deadline has passed. */
static void meta_retry(op *o, int status, const eddy_err *err)
{
    if (eddy_now_ms() + 200 > o->deadline) {
        meta_finish(o, status ? status : EDDY_ETIMEDOUT, err);
        return;
    }
    if (!o->timer_open) {
        uv_timer_init(eddy__rpc_loop(o->c), &o->timer);
        o->timer.data = o;
        o->timer_open = 1;
    }
    uv_timer_start(&o->timer, retry_timer, 200, 0);
}

static void metadata_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    op *o = ud;
    eddy_err e;
    int rc = 0;
    if (status) {
        if (status == EDDY_ECANCELED ||
            (status == EDDY_EFLUSS && err && !eddy__fluss_retriable((int)err->cause)))
            meta_finish(o, status, err);
        else
            meta_retry(o, status, err);
        return;
    }
    EddyFluss__MetadataResponse *r =
        eddy__rpc_unpack(&eddy_fluss__metadata_response__descriptor, p, n);
    if (!r) {
        eddy_err_set(&e, EDDY_ECORRUPT, "unreadable metadata response");
        meta_finish(o, EDDY_ECORRUPT, &e);
        return;
    }
    if (r->coordinator_server)
        eddy__rpc_set_node(o->c, NODE_COORDINATOR, r->coordinator_server->host,
                           r->coordinator_server->port);
    for (size_t i = 0; i < r->n_tablet_servers; i++)
        eddy__rpc_set_node(o->c, r->tablet_servers[i]->node_id, r->tablet_servers[i]->host,
                           r->tablet_servers[i]->port);
    int ready = 0;
    for (size_t i = 0; i < r->n_table_metadata && !rc; i++) {
        const EddyFluss__PbTableMetadata *tm = r->table_metadata[i];
        if (!strcmp(tm->table_path->database_name, o->db) &&
            !strcmp(tm->table_path->table_name, o->name))
            ready = apply_table(o, tm, &e, &rc);
    }
    eddy__rpc_free_unpacked(r);
    if (rc)
        meta_finish(o, rc, &e);
    else if (ready)
        meta_finish(o, 0, NULL);
    else {
        eddy_err_set(&e, EDDY_ETIMEDOUT, "table %s.%s: buckets without a leader", o->db, o->name);
        meta_retry(o, EDDY_ETIMEDOUT, &e);
    }
}

static int send_metadata(op *o)
{
    EddyFluss__MetadataRequest r = EDDY_FLUSS__METADATA_REQUEST__INIT;
    EddyFluss__PbTablePath path = EDDY_FLUSS__PB_TABLE_PATH__INIT, *pp = &path;
    path.database_name = o->db;
    path.table_name = o->name;
    r.n_table_path = 1;
    r.table_path = &pp;
    return eddy__rpc_send(o->c, NODE_COORDINATOR, API_METADATA, 0, &r.base, metadata_cb, o);
}

static void deliver_cached(int status, void *ud)
{
    eddy_err e;
    eddy_err_set(&e, EDDY_ECANCELED, "client closed");
    meta_finish(ud, status, status ? &e : NULL);
}

/* The client is closing: O waits for a retry (anything on the wire has
 * been answered already); end it. */
static void op_closing(eddy__fluss_child *ch)
{
    op *o = EDDY__CONTAINER(ch, op, child);
    eddy_err e;
    eddy_err_set(&e, EDDY_ECANCELED, "client closed");
    if (o->timer_open)
        uv_timer_stop(&o->timer);
    if (o->offsets)
        o->offsets(EDDY_ECANCELED, &e, o->offs, o->t->nbuckets, o->ud);
    else if (o->names)
        o->names(EDDY_ECANCELED, &e, NULL, 0, o->ud);
    else if (o->table)
        o->table(EDDY_ECANCELED, &e, NULL, o->ud);
    else if (o->done)
        o->done(EDDY_ECANCELED, &e, o->ud);
    op_free(o);
}

int eddy_fluss_get_table(eddy_fluss_client *c, const char *db, const char *table,
                         eddy_fluss_table_cb cb, void *ud)
{
    if (eddy__rpc_closing(c))
        return EDDY_ECLOSING;
    op *o = get_meta(c) ? op_new(c, ud) : NULL;
    if (!o)
        return EDDY_ENOMEM;
    o->table = cb;
    snprintf(o->db, sizeof(o->db), "%s", db);
    snprintf(o->name, sizeof(o->name), "%s", table);
    cached *k = find_cached(c, db, table);
    int rc = k && !k->stale ? eddy__rpc_defer(c, deliver_cached, o) : send_metadata(o);
    if (rc)
        op_free(o);
    return rc;
}

int eddy__fluss_refresh(eddy_fluss_client *c, const eddy_fluss_table *t, eddy_fluss_done_cb cb,
                        void *ud)
{
    op *o = op_new(c, ud);
    if (!o)
        return EDDY_ENOMEM;
    o->done = cb;
    snprintf(o->db, sizeof(o->db), "%s", t->database);
    snprintf(o->name, sizeof(o->name), "%s", t->name);
    int rc = send_metadata(o);
    if (rc)
        op_free(o);
    return rc;
}

void eddy__fluss_invalidate(eddy_fluss_client *c, const eddy_fluss_table *t)
{
    cached *k = find_cached(c, t->database, t->name);
    if (k && !k->stale)
        k->stale = 1;
}

/* -- list offsets ----------------------------------------------------------- */

static void offsets_cb(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    op *o = ud;
    if (status && !o->status) {
        o->status = status;
        o->err = *err;
    } else if (!status) {
        EddyFluss__ListOffsetsResponse *r =
            eddy__rpc_unpack(&eddy_fluss__list_offsets_response__descriptor, p, n);
        for (size_t i = 0; r && i < r->n_buckets_resp; i++) {
            const EddyFluss__PbListOffsetsRespForBucket *b = r->buckets_resp[i];
            if (b->has_error_code && b->error_code && !o->status) {
                char brief[512];
                o->status = EDDY_EFLUSS;
                eddy_err_setc(&o->err, EDDY_EFLUSS, b->error_code,
                              "list offsets of %s.%s bucket %d: Fluss error %d: %s", o->db, o->name,
                              b->bucket_id, b->error_code,
                              eddy__fluss_brief(b->error_message, brief, sizeof(brief)));
            } else if (b->bucket_id >= 0 && b->bucket_id < o->t->nbuckets) {
                o->offs[b->bucket_id] = b->has_offset ? b->offset : -1;
            }
        }
        if (!r && !o->status) {
            o->status = EDDY_ECORRUPT;
            eddy_err_set(&o->err, EDDY_ECORRUPT, "unreadable list-offsets response");
        }
        eddy__rpc_free_unpacked(r);
    }
    if (--o->pending == 0) {
        if (o->status && o->status != EDDY_EFLUSS)
            eddy__fluss_invalidate(o->c, o->t);
        op_ending(o);
        o->offsets(o->status, o->status ? &o->err : NULL, o->offs, o->t->nbuckets, o->ud);
        op_free(o);
    }
}

int eddy_fluss_list_offsets(eddy_fluss_client *c, const eddy_fluss_table *t, int type,
                            int64_t timestamp_ms, eddy_fluss_offsets_cb cb, void *ud)
{
    if (eddy__rpc_closing(c))
        return EDDY_ECLOSING;
    op *o = op_new(c, ud);
    int32_t *ids = eddy_malloc(sizeof(int32_t) * (size_t)t->nbuckets);
    int rc = 0;
    if (!o || !ids) {
        if (o)
            op_free(o);
        eddy_free(ids);
        return EDDY_ENOMEM;
    }
    o->offs = eddy_calloc((size_t)t->nbuckets, sizeof(int64_t));
    o->t = t;
    o->offsets = cb;
    snprintf(o->db, sizeof(o->db), "%s", t->database);
    snprintf(o->name, sizeof(o->name), "%s", t->name);
    o->pending = 1; /* held until every request is out */
    for (int b = 0; b < t->nbuckets && o->offs; b++) {
        int leader = t->leaders[b], seen = 0;
        for (int x = 0; x < b; x++)
            seen |= t->leaders[x] == leader;
        if (seen)
            continue;
        size_t k = 0;
        for (int x = b; x < t->nbuckets; x++)
            if (t->leaders[x] == leader)
                ids[k++] = x;
        EddyFluss__ListOffsetsRequest r = EDDY_FLUSS__LIST_OFFSETS_REQUEST__INIT;
        r.follower_server_id = -1;
        r.offset_type = type;
        r.table_id = t->table_id;
        r.n_bucket_id = k;
        r.bucket_id = ids;
        if (type == EDDY_FLUSS_OFFSET_TIMESTAMP) {
            r.has_start_timestamp = 1;
            r.start_timestamp = timestamp_ms;
        }
        o->pending++;
        if ((rc = eddy__rpc_send(c, leader, API_LIST_OFFSETS, 0, &r.base, offsets_cb, o)))
            o->pending--;
    }
    eddy_free(ids);
    if (!o->offs)
        rc = EDDY_ENOMEM;
    if (rc && o->pending == 1) {
        op_free(o);
        return rc;
    }
    /* release the hold: completes now only if every send failed late */
    if (--o->pending == 0) {
        op_ending(o);
        o->offsets(o->status, &o->err, o->offs, t->nbuckets, o->ud);
        op_free(o);
    }
    return 0;
}
