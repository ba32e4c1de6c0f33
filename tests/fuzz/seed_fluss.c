/* tests/fuzz/seed_fluss.c - writes the seed inputs of the Fluss fuzz targets
 * (valid batches of every format and codec, wrapped in RPC answers), and the
 * hostile_* inputs: lengths and sizes from the wire that claim far more than
 * was received (frames, batches, records, strings, Arrow buffers, protobuf
 * fields, bucket counts), each of which must be a clean error.
 * Build and run by hand from the repository root when the formats change
 * ("hostile" writes only the hostile_* files):
 *   cc -Iinclude -Itests/fuzz tests/fuzz/seed_fluss.c build/libeddy.a \
 *      $(pkg-config --libs libuv jansson libzstd liblz4 libprotobuf-c) -lm -o /tmp/seed
 *   /tmp/seed [hostile] */
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

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The CRC of a magic-0 log batch, after patching it. */
static void reseal(eddy_buf *b)
{
    le32((uint8_t *)b->data + 21, eddy_fluss_crc32c(0, b->data + 25, b->len - 25));
}

/* A batch of ROWS all-types rows in FORMAT with CODEC. */
static void batch(eddy_buf *out, int format, int codec, int rows)
{
    eddy_fluss_log_builder *lb;
    eddy_fluss_value v[14];
    eddy_buf_init(out);
    eddy_fluss_log_builder_new(&fuzz_schema, 1, format, codec, 3, &lb, NULL);
    for (int i = 0; i < rows; i++) {
        row(v, i % 2); /* repetitive: ZSTD compresses every buffer */
        eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, v, NULL);
    }
    eddy_fluss_log_builder_finish(lb, out, NULL);
    eddy_fluss_log_builder_free(lb);
}

/* A FetchLogResponse around RECORDS into OUT. */
static void fetch_of(eddy_buf *out, const void *records, size_t n)
{
    eddy_buf bucket, table;
    eddy_buf_init(&bucket);
    eddy_buf_init(&table);
    eddy_buf_init(out);
    pb_int(&bucket, 2, 0);
    pb_bytes(&bucket, 8, records, n);
    pb_int(&table, 1, 7);
    pb_bytes(&table, 2, bucket.data, bucket.len);
    pb_bytes(out, 1, table.data, table.len);
    eddy_buf_free(&bucket);
    eddy_buf_free(&table);
}

/* A MetadataResponse for db.t with table JSON TJ into OUT. */
static void metadata_of(eddy_buf *out, const char *tj)
{
    eddy_buf path, tm;
    eddy_buf_init(&path);
    eddy_buf_init(&tm);
    eddy_buf_init(out);
    pb_bytes(&path, 1, "db", 2);
    pb_bytes(&path, 2, "t", 1);
    pb_bytes(&tm, 1, path.data, path.len);
    pb_int(&tm, 2, 5);
    pb_int(&tm, 3, 1);
    pb_bytes(&tm, 4, tj, strlen(tj));
    pb_int(&tm, 6, 0);
    pb_int(&tm, 7, 0);
    pb_bytes(out, 3, tm.data, tm.len);
    eddy_buf_free(&path);
    eddy_buf_free(&tm);
}

/* Offset of the first ZSTD-compressed buffer of the Arrow batch B whose
 * uncompressed-length prefix is at least MIN (0 when none). */
static size_t zstd_buffer(const eddy_buf *b, uint64_t min)
{
    const uint8_t *p = (const uint8_t *)b->data;
    for (size_t at = 56; at + 12 <= b->len; at++)
        if (p[at + 8] == 0x28 && p[at + 9] == 0xb5 && p[at + 10] == 0x2f && p[at + 11] == 0xfd &&
            rd64(p + at) >= min && rd64(p + at) < 1u << 20)
            return at;
    return 0;
}

static void hostile(void)
{
    eddy_buf b, w;
    uint8_t *p;
    /* -- record batches --------------------------------------------------- */
    batch(&b, 1, 0, 4); /* INDEXED */
    p = (uint8_t *)b.data;
    le32(p + 8, 0x7fffffff); /* batch length: 2 GiB */
    put("fluss_batch", "hostile_batch_length", 1, b.data, b.len);
    le32(p + 8, (uint32_t)(b.len - 12));
    le32(p + 48, 0xfffffff0u); /* first record's length */
    reseal(&b);
    put("fluss_batch", "hostile_record_length", 1, b.data, b.len);
    le32(p + 48, 0); /* a zero-length record */
    reseal(&b);
    put("fluss_batch", "hostile_record_zero", 1, b.data, b.len);
    eddy_buf_free(&b);
    batch(&b, 1, 0, 4);
    p = (uint8_t *)b.data;
    le64(p, INT64_MAX); /* base offset: the offsets would overflow */
    put("fluss_batch", "hostile_base_offset", 1, b.data, b.len);
    /* magic 1 (statistics after the header) claiming 2 GiB of statistics */
    eddy_buf_init(&w);
    eddy_buf_append(&w, b.data, 48);
    eddy_buf_append(&w, "ÿÿÿ", 4);
    eddy_buf_append(&w, b.data + 48, b.len - 48);
    p = (uint8_t *)w.data;
    le64(p, 0);
    p[12] = 1;
    le32(p + 8, (uint32_t)(w.len - 12));
    reseal(&w);
    put("fluss_batch", "hostile_stats_length", 1, w.data, w.len);
    eddy_buf_free(&w);
    eddy_buf_free(&b);

    batch(&b, 0, 2, 200); /* ARROW, ZSTD */
    p = (uint8_t *)b.data;
    size_t at = zstd_buffer(&b, 64);
    if (at) {
        uint64_t was = rd64(p + at);
        le64(p + at, (uint64_t)1 << 31); /* a buffer claims 2 GiB uncompressed */
        reseal(&b);
        put("fluss_batch", "hostile_arrow_claim", 0, b.data, b.len);
        le64(p + at, was);
        /* 100 million rows (RecordBatch.length and every field node), and
         * a buffer claiming 400 MB, which those rows could use */
        le64(p + 56 + 72, 100000000);
        for (int i = 0; i < 14; i++)
            le64(p + 56 + 104 + 16 * i, 100000000);
        le64(p + at, 400000000);
        reseal(&b);
        put("fluss_batch", "hostile_arrow_rows", 0, b.data, b.len);
    }
    eddy_buf_free(&b);
    batch(&b, 0, 0, 4); /* ARROW, no compression */
    p = (uint8_t *)b.data;
    le32(p + 52, 0x7ffffff0u); /* IPC metadata length */
    reseal(&b);
    put("fluss_batch", "hostile_arrow_meta_length", 0, b.data, b.len);
    eddy_buf_free(&b);

    /* single rows: column 7 (str) set, all others null */
    static const uint8_t str_row[] = {0x7f, 0x3f, 0x80, 0x80, 0x80, 0x80, 0x08, 'a', 'b', 'c'};
    put("fluss_batch", "hostile_row_string_length", 4, str_row, sizeof(str_row));
    static const uint8_t ts_row[] = {0xff, 0x3b, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    put("fluss_batch", "hostile_row_nanos", 4, ts_row, sizeof(ts_row)); /* ts: nanos 2^40 */
    static const uint8_t idx_row[] = {0x7f, 0x3f, 0xff, 0xff, 0xff, 0x7f, 0,  0,
                                      0,    0,    0,    0,    'a',  'b',  'c'};
    put("fluss_batch", "hostile_indexed_var_length", 5, idx_row, sizeof(idx_row));

    /* -- RPC answers -------------------------------------------------------- */
    static const uint8_t fetch_claim[] = {0x0a, 0x0c, 0x08, 0x07, 0x12, 0x08, 0x10,
                                          0x00, 0x42, 0x80, 0x80, 0x80, 0x80, 0x08};
    put("fluss_rpc", "hostile_fetch_records_length", 1, fetch_claim, sizeof(fetch_claim));
    const char *names[] = {"hostile_batch_length", "hostile_arrow_claim", "hostile_stats_length"};
    const uint8_t tags[] = {1 + 6 * 1, 1, 1 + 6 * 1};
    for (int k = 0; k < 3; k++) {
        char path[256], *data;
        size_t len;
        eddy_err e;
        snprintf(path, sizeof(path), "tests/fuzz/corpus/fluss_batch/%s", names[k]);
        if (eddy_read_file(path, &data, &len, &e))
            continue;
        fetch_of(&w, data + 1, len - 1);
        snprintf(path, sizeof(path), "%s_fetch", names[k]);
        put("fluss_rpc", path, tags[k], w.data, w.len);
        eddy_buf_free(&w);
        eddy_free(data);
    }
    metadata_of(&w, "{\"schema\":{\"columns\":[{\"name\":\"id\",\"data_type\":{\"type\":"
                    "\"INTEGER\"}}]},\"partition_key\":[],\"bucket_count\":2147483647}");
    put("fluss_rpc", "hostile_metadata_buckets", 0, w.data, w.len);
    eddy_buf_free(&w);
    metadata_of(&w, "{\"schema\":{\"columns\":[{\"name\":\"ts\",\"data_type\":{\"type\":"
                    "\"TIMESTAMP_WITHOUT_TIME_ZONE\",\"precision\":100}},{\"name\":\"d\","
                    "\"data_type\":{\"type\":\"DECIMAL\",\"precision\":100,\"scale\":200}}]},"
                    "\"partition_key\":[]}");
    put("fluss_rpc", "hostile_metadata_precision", 0, w.data, w.len);
    eddy_buf_free(&w);
    /* LookupResponse{buckets_resp{bucket 1, values{values: schema id + str_row}}} */
    eddy_buf val, bk;
    eddy_buf_init(&val);
    eddy_buf_init(&bk);
    eddy_buf_init(&w);
    eddy_buf_init(&b);
    eddy_buf_append(&b, "\x01\x00", 2);
    eddy_buf_append(&b, str_row, sizeof(str_row));
    pb_bytes(&val, 1, b.data, b.len);
    pb_int(&bk, 2, 1);
    pb_bytes(&bk, 5, val.data, val.len);
    pb_bytes(&w, 1, bk.data, bk.len);
    put("fluss_rpc", "hostile_lookup_string_length", 2, w.data, w.len);
    eddy_buf_free(&val);
    eddy_buf_free(&bk);
    eddy_buf_free(&w);
    eddy_buf_free(&b);
    /* response frame streams (first byte 252..255) */
    static const uint8_t frames_huge[] = {0x20, 0, 0, 0, 0, 0, 0, 0, 1};
    put("fluss_rpc", "hostile_frame_512m", 252, frames_huge, sizeof(frames_huge));
    static const uint8_t frames_2g[] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1};
    put("fluss_rpc", "hostile_frame_2g", 253, frames_2g, sizeof(frames_2g));
    static const uint8_t frames_zero[] = {0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    put("fluss_rpc", "hostile_frame_zero", 254, frames_zero, sizeof(frames_zero));
    static const uint8_t frames_ok[] = {0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 7, 1, 0, 0,
                                        0, 2, 8, 7, 0, 0, 0, 3, 2, 8, 1, 0, 0, 0, 9, 0};
    put("fluss_rpc", "frames", 255, frames_ok, sizeof(frames_ok));
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "hostile")) {
        hostile();
        return 0;
    }
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
    hostile();
    return 0;
}
