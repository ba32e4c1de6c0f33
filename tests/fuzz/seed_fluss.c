/* tests/fuzz/seed_fluss.c - writes the seed inputs of the Fluss fuzz targets
 * (valid batches of every format and codec, wrapped in RPC answers).
 * Build and run by hand when the formats change:
 *   cc -Iinclude -Itests/fuzz tests/fuzz/seed_fluss.c build/libeddy.a $(pkg-config --libs ...) */
#include <stdio.h>
#include <string.h>

#include "fluss_schema.h"

static void put(const char *dir, const char *name, uint8_t tag, const void *p, size_t n)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/fuzz/corpus/%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputc(tag, f);
    fwrite(p, 1, n, f);
    fclose(f);
}

static void pb_varint(eddy_buf *b, uint64_t v)
{
    uint8_t t[10];
    eddy_buf_append(b, t, eddy_fluss_varint_put(t, v));
}

static void pb_bytes(eddy_buf *b, int field, const void *p, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    eddy_buf_append(b, p, n);
}

static void pb_int(eddy_buf *b, int field, int64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, (uint64_t)v);
}

static void row(eddy_fluss_value *v, int k)
{
    memset(v, 0, sizeof(*v) * 14);
    v[0].v.i = k & 1;
    v[1].v.i = k - 3;
    v[2].v.i = 300 * k;
    v[3].v.i = -k;
    v[4].v.i = (int64_t)k << 35;
    v[5].v.f = 1.5f;
    v[6].v.d = 2.5 * k;
    v[7].v.s.p = "text";
    v[7].v.s.n = 4;
    v[8].v.s.p = "\x01\x02";
    v[8].v.s.n = 2;
    v[9].v.i = 19000 + k;
    v[10].v.ts.ms = 1700000000000LL + k;
    v[10].v.ts.nanos = 123000;
    v[11].v.ts.ms = 1700000000000LL;
    v[12].v.dec = 12345;
    v[13].v.dec = -((__int128)1 << 70);
    if (k == 2)
        v[7].is_null = v[13].is_null = 1;
}

int main(void)
{
    static const struct {
        const char *name;
        int format, codec;
    } kinds[] = {{"arrow_none", 0, 0},
                 {"arrow_lz4", 0, 1},
                 {"arrow_zstd", 0, 2},
                 {"indexed", 1, 0},
                 {"compacted", 2, 0}};
    eddy_fluss_value v[14];
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        eddy_fluss_log_builder *lb;
        eddy_buf b, resp, bucket, table;
        eddy_buf_init(&b);
        eddy_buf_init(&resp);
        eddy_buf_init(&bucket);
        eddy_buf_init(&table);
        eddy_fluss_log_builder_new(&fuzz_schema, 1, kinds[k].format, kinds[k].codec, 3, &lb, NULL);
        for (int i = 0; i < 4; i++) {
            row(v, i);
            eddy_fluss_log_builder_add(lb, i % 5, v, NULL);
        }
        eddy_fluss_log_builder_finish(lb, &b, NULL);
        eddy_fluss_log_builder_free(lb);
        put("fluss_batch", kinds[k].name, (uint8_t)kinds[k].format, b.data, b.len);
        if (kinds[k].format == 0)
            put("fluss_batch", "arrow_projected_hdr", 3, b.data, b.len);
        /* FetchLogResponse{tables_resp{table_id, buckets_resp{bucket_id, hw, records}}} */
        pb_int(&bucket, 2, 0);
        pb_int(&bucket, 5, 4);
        pb_bytes(&bucket, 8, b.data, b.len);
        pb_int(&table, 1, 7);
        pb_bytes(&table, 2, bucket.data, bucket.len);
        pb_bytes(&resp, 1, table.data, table.len);
        char name[64];
        snprintf(name, sizeof(name), "fetch_%s", kinds[k].name);
        put("fluss_rpc", name, (uint8_t)(1 + 6 * kinds[k].format), resp.data, resp.len);
        eddy_buf_free(&b);
        eddy_buf_free(&resp);
        eddy_buf_free(&bucket);
        eddy_buf_free(&table);
    }
    /* a lookup answer and single rows */
    eddy_buf r, val, bk, resp;
    eddy_buf_init(&r);
    eddy_buf_init(&val);
    eddy_buf_init(&bk);
    eddy_buf_init(&resp);
    row(v, 1);
    eddy_buf_append(&r, "\x01\x00", 2);
    eddy_fluss_compacted_encode(&fuzz_schema, v, &r);
    put("fluss_batch", "row_compacted", 4, r.data + 2, r.len - 2);
    pb_bytes(&val, 1, r.data, r.len);
    pb_int(&bk, 2, 1);
    pb_bytes(&bk, 5, val.data, val.len);
    pb_bytes(&bk, 5, "", 0);
    pb_bytes(&resp, 1, bk.data, bk.len);
    put("fluss_rpc", "lookup", 2, resp.data, resp.len);
    eddy_buf_reset(&r);
    eddy_fluss_indexed_encode(&fuzz_schema, v, &r);
    put("fluss_batch", "row_indexed", 5, r.data, r.len);
    /* a metadata answer with a table JSON */
    const char *tj = "{\"version\":1,\"schema\":{\"version\":1,\"columns\":[{\"name\":\"id\","
                     "\"data_type\":{\"type\":\"INTEGER\",\"nullable\":false}},{\"name\":\"n\","
                     "\"data_type\":{\"type\":\"DECIMAL\",\"precision\":12,\"scale\":3}}],"
                     "\"primary_key\":[\"id\"]},\"partition_key\":[],\"bucket_key\":[\"id\"],"
                     "\"bucket_count\":3,\"properties\":{\"table.log.format\":\"INDEXED\"},"
                     "\"custom_properties\":{}}";
    eddy_buf path, tm, md;
    eddy_buf_init(&path);
    eddy_buf_init(&tm);
    eddy_buf_init(&md);
    pb_bytes(&path, 1, "db", 2);
    pb_bytes(&path, 2, "t", 1);
    pb_bytes(&tm, 1, path.data, path.len);
    pb_int(&tm, 2, 5);
    pb_int(&tm, 3, 1);
    pb_bytes(&tm, 4, tj, strlen(tj));
    pb_int(&tm, 6, 0);
    pb_int(&tm, 7, 0);
    pb_bytes(&md, 3, tm.data, tm.len);
    put("fluss_rpc", "metadata", 0, md.data, md.len);
    return 0;
}
