/*
 * fluss/check.c - decode response payloads without a connection.
 *
 * The same unpacking and record decoding the client performs on answers,
 * reachable from one function so that fuzzers (tests/fuzz/fuzz_fluss_rpc.c)
 * and diagnostics can drive it with arbitrary bytes.
 */
#include "eddy/fluss.h"

#include "fluss_int.h"

static int count_row(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    (void)off, (void)ts, (void)change, (void)vals;
    ++*(long *)ud;
    return 0;
}

static int check_fetch(const uint8_t *p, size_t n, const eddy_fluss_schema *s, int format,
                       eddy_err *err)
{
    EddyFluss__FetchLogResponse *r =
        eddy__rpc_unpack(&eddy_fluss__fetch_log_response__descriptor, p, n);
    int rc = 0;
    long rows = 0;
    if (!r)
        return eddy_err_set(err, EDDY_ECORRUPT, "unreadable fetch response");
    for (size_t t = 0; t < r->n_tables_resp && !rc; t++)
        for (size_t b = 0; b < r->tables_resp[t]->n_buckets_resp && !rc; b++) {
            const EddyFluss__PbFetchLogRespForBucket *br = r->tables_resp[t]->buckets_resp[b];
            int64_t next;
            if (br->has_records)
                rc = eddy_fluss_log_decode(s, format, br->records.data, br->records.len, 0, NULL, 0,
                                           count_row, &rows, &next, err);
        }
    eddy__rpc_free_unpacked(r);
    return rc;
}

static int check_lookup(const uint8_t *p, size_t n, const eddy_fluss_schema *s, eddy_err *err)
{
    EddyFluss__LookupResponse *r = eddy__rpc_unpack(&eddy_fluss__lookup_response__descriptor, p, n);
    eddy_fluss_value *vals = eddy_calloc((size_t)s->ncols + 1, sizeof(*vals));
    int rc = 0;
    if (!r || !vals) {
        eddy__rpc_free_unpacked(r);
        eddy_free(vals);
        return eddy_err_set(err, EDDY_ECORRUPT, "unreadable lookup response");
    }
    for (size_t b = 0; b < r->n_buckets_resp && !rc; b++)
        for (size_t k = 0; k < r->buckets_resp[b]->n_values && !rc; k++) {
            const EddyFluss__PbValue *v = r->buckets_resp[b]->values[k];
            if (v->has_values && v->values.len >= 2)
                rc = eddy_fluss_compacted_decode(s, v->values.data + 2, v->values.len - 2, vals,
                                                 err);
        }
    eddy__rpc_free_unpacked(r);
    eddy_free(vals);
    return rc;
}

static int check_metadata(const uint8_t *p, size_t n, eddy_err *err)
{
    EddyFluss__MetadataResponse *r =
        eddy__rpc_unpack(&eddy_fluss__metadata_response__descriptor, p, n);
    int rc = 0;
    if (!r)
        return eddy_err_set(err, EDDY_ECORRUPT, "unreadable metadata response");
    for (size_t i = 0; i < r->n_table_metadata && !rc; i++) {
        const EddyFluss__PbTableMetadata *tm = r->table_metadata[i];
        eddy_fluss_table *t = NULL;
        rc = eddy_fluss_table_parse(tm->table_path->database_name, tm->table_path->table_name,
                                    (const char *)tm->table_json.data, tm->table_json.len, &t, err);
        eddy_fluss_table_free(t);
    }
    eddy__rpc_free_unpacked(r);
    return rc;
}

/* A stream of response frames, split and read as a connection does. */
static int check_frames(const uint8_t *p, size_t n, eddy_err *err)
{
    size_t at = 0, len;
    char why[96];
    while (at < n) {
        int type, k = eddy__rpc_frame_next(p + at, n - at, &len, why, sizeof(why));
        int32_t id;
        if (k < 0)
            return eddy_err_set(err, EDDY_ECORRUPT, "%s", why);
        if (k == 0)
            return 0; /* the rest has not arrived */
        const uint8_t *f = p + at + 4;
        if (eddy__rpc_frame_head(f, len, &type, &id))
            return eddy_err_set(err, EDDY_ECORRUPT, "malformed response frame");
        if (type) {
            size_t skip = type == 2 ? 1 : 5;
            void *m =
                eddy__rpc_unpack(&eddy_fluss__error_response__descriptor, f + skip, len - skip);
            if (!m)
                return eddy_err_set(err, EDDY_ECORRUPT, "unreadable error response");
            eddy__rpc_free_unpacked(m);
        }
        at += 4 + len;
    }
    return 0;
}

int eddy_fluss_response_check(int api_key, const uint8_t *p, size_t n,
                              const eddy_fluss_schema *schema, int format, eddy_err *err)
{
    const ProtobufCMessageDescriptor *d = NULL;
    switch (api_key) {
    case 0:
        return check_frames(p, n, err);
    case API_FETCH_LOG:
        return check_fetch(p, n, schema, format, err);
    case API_LOOKUP:
        return check_lookup(p, n, schema, err);
    case API_METADATA:
        return check_metadata(p, n, err);
    case API_LIST_OFFSETS:
        d = &eddy_fluss__list_offsets_response__descriptor;
        break;
    case API_PRODUCE_LOG:
        d = &eddy_fluss__produce_log_response__descriptor;
        break;
    case API_PUT_KV:
        d = &eddy_fluss__put_kv_response__descriptor;
        break;
    default:
        return eddy_err_set(err, EDDY_EINVAL, "api %d is not checked", api_key);
    }
    void *m = eddy__rpc_unpack(d, p, n);
    if (!m)
        return eddy_err_set(err, EDDY_ECORRUPT, "unreadable response to api %d", api_key);
    eddy__rpc_free_unpacked(m);
    return 0;
}
