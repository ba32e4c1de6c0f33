/*
 * fluss/schema.c - table schemas and row values <-> JSON.
 *
 * Reads the server's table JSON (TableDescriptor) into eddy_fluss_table,
 * builds table JSON for CreateTable from eddy's small schema document, and
 * converts rows to and from JSON objects with a type check per column. Every
 * error names the column. Pure functions; any thread.
 */
#include "eddy/fluss.h"
#include "eddy/json.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluss_int.h"

static const struct {
    const char *sql;  /* how users spell it */
    const char *json; /* the server's type root */
    eddy_fluss_type type;
} TYPES[] = {
    {"BOOLEAN", "BOOLEAN", EDDY_FLUSS_BOOLEAN},
    {"TINYINT", "TINYINT", EDDY_FLUSS_TINYINT},
    {"SMALLINT", "SMALLINT", EDDY_FLUSS_SMALLINT},
    {"INT", "INTEGER", EDDY_FLUSS_INT},
    {"BIGINT", "BIGINT", EDDY_FLUSS_BIGINT},
    {"FLOAT", "FLOAT", EDDY_FLUSS_FLOAT},
    {"DOUBLE", "DOUBLE", EDDY_FLUSS_DOUBLE},
    {"STRING", "STRING", EDDY_FLUSS_STRING},
    {"BYTES", "BYTES", EDDY_FLUSS_BYTES},
    {"DATE", "DATE", EDDY_FLUSS_DATE},
    {"TIMESTAMP", "TIMESTAMP_WITHOUT_TIME_ZONE", EDDY_FLUSS_TIMESTAMP},
    {"TIMESTAMP_LTZ", "TIMESTAMP_WITH_LOCAL_TIME_ZONE", EDDY_FLUSS_TIMESTAMP_LTZ},
    {"DECIMAL", "DECIMAL", EDDY_FLUSS_DECIMAL},
};
#define NTYPES (sizeof(TYPES) / sizeof(TYPES[0]))

/* -- arena ------------------------------------------------------------------ */

struct eddy__arena_chunk {
    struct eddy__arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *eddy_fluss_arena_alloc(eddy_fluss_arena *a, size_t n)
{
    struct eddy__arena_chunk *c = a->head;
    n = (n + 15) & ~(size_t)15;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        c = eddy_malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void eddy_fluss_arena_free(eddy_fluss_arena *a)
{
    while (a->head) {
        struct eddy__arena_chunk *n = a->head->next;
        eddy_free(a->head);
        a->head = n;
    }
}

/* -- types ------------------------------------------------------------------ */

static int default_precision(eddy_fluss_type t)
{
    return t == EDDY_FLUSS_DECIMAL                                        ? 10
           : (t == EDDY_FLUSS_TIMESTAMP || t == EDDY_FLUSS_TIMESTAMP_LTZ) ? 6
                                                                          : 0;
}

int eddy_fluss_type_parse(const char *text, eddy_fluss_column *col, eddy_err *err)
{
    char word[32];
    size_t n = 0;
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    while ((isalnum((unsigned char)*p) || *p == '_') && n + 1 < sizeof(word))
        word[n++] = (char)toupper((unsigned char)*p++);
    word[n] = 0;
    if (!strcmp(word, "INTEGER"))
        snprintf(word, sizeof(word), "INT");
    if (!strcmp(word, "VARCHAR") || !strcmp(word, "TEXT"))
        snprintf(word, sizeof(word), "STRING");
    size_t i;
    for (i = 0; i < NTYPES && strcmp(TYPES[i].sql, word); i++)
        ;
    if (i == NTYPES)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "unknown or unsupported type '%s' (eddy handles BOOLEAN, TINYINT, "
                            "SMALLINT, INT, BIGINT, FLOAT, DOUBLE, STRING, BYTES, DATE, "
                            "TIMESTAMP(p), TIMESTAMP_LTZ(p), DECIMAL(p,s))",
                            text);
    col->type = TYPES[i].type;
    col->precision = default_precision(col->type);
    col->scale = 0;
    col->nullable = 1;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '(') {
        char *end;
        long a = strtol(p + 1, &end, 10), b = 0;
        if (*end == ',')
            b = strtol(end + 1, &end, 10);
        if (*end != ')' || (col->type != EDDY_FLUSS_DECIMAL && col->type != EDDY_FLUSS_TIMESTAMP &&
                            col->type != EDDY_FLUSS_TIMESTAMP_LTZ))
            return eddy_err_set(err, EDDY_ESCHEMA, "bad type parameters in '%s'", text);
        col->precision = (int)a;
        col->scale = (int)b;
        p = end + 1;
    }
    if (col->type == EDDY_FLUSS_DECIMAL && (col->precision < 1 || col->precision > 38 ||
                                            col->scale < 0 || col->scale > col->precision))
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "'%s': DECIMAL needs 1 <= precision <= 38 and "
                            "0 <= scale <= precision",
                            text);
    if ((col->type == EDDY_FLUSS_TIMESTAMP || col->type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
        (col->precision < 0 || col->precision > 9))
        return eddy_err_set(err, EDDY_ESCHEMA, "'%s': timestamp precision must be 0..9", text);
    while (isspace((unsigned char)*p))
        p++;
    if (!strncasecmp(p, "NOT NULL", 8)) {
        col->nullable = 0;
        p += 8;
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p)
        return eddy_err_set(err, EDDY_ESCHEMA, "unexpected '%s' in type '%s'", p, text);
    return 0;
}

void eddy_fluss_type_name(const eddy_fluss_column *col, char *out, size_t cap)
{
    const char *base = "?";
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].type == col->type)
            base = TYPES[i].sql;
    if (col->type == EDDY_FLUSS_DECIMAL)
        snprintf(out, cap, "%s(%d,%d)", base, col->precision, col->scale);
    else if (col->type == EDDY_FLUSS_TIMESTAMP || col->type == EDDY_FLUSS_TIMESTAMP_LTZ)
        snprintf(out, cap, "%s(%d)", base, col->precision);
    else
        snprintf(out, cap, "%s", base);
}

/* -- table JSON ------------------------------------------------------------- */

int eddy_fluss_column_index(const eddy_fluss_schema *s, const char *name)
{
    for (int i = 0; i < s->ncols; i++)
        if (!strcmp(s->cols[i].name, name))
            return i;
    return -1;
}

static int parse_column(const json_t *jc, eddy_fluss_column *c, const char *table, eddy_err *err)
{
    const char *name = json_string_value(json_object_get(jc, "name"));
    const json_t *dt = json_object_get(jc, "data_type");
    const char *root = json_string_value(json_object_get(dt, "type"));
    if (!name || !root)
        return eddy_err_set(err, EDDY_ECORRUPT, "table %s: column without name or type", table);
    c->name = eddy_strdup(name);
    if (!c->name)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    size_t i;
    for (i = 0; i < NTYPES && strcmp(TYPES[i].json, root); i++)
        ;
    if (i == NTYPES)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "table %s: column '%s' has type %s, which eddy's Fluss client does "
                            "not handle",
                            table, name, root);
    c->type = TYPES[i].type;
    c->nullable = !json_is_false(json_object_get(dt, "nullable"));
    json_int_t p = json_integer_value(json_object_get(dt, "precision"));
    json_int_t sc = json_integer_value(json_object_get(dt, "scale"));
    if (!json_object_get(dt, "precision"))
        p = default_precision(c->type);
    /* precision and scale size buffers (digits, fraction text): check them */
    if (c->type == EDDY_FLUSS_DECIMAL && (p < 1 || p > 38 || sc < 0 || sc > p))
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "table %s: column '%s' is DECIMAL(%lld,%lld); precision must be "
                            "1..38 and scale 0..precision",
                            table, name, (long long)p, (long long)sc);
    if ((c->type == EDDY_FLUSS_TIMESTAMP || c->type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
        (p < 0 || p > 9))
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "table %s: column '%s' has timestamp precision %lld (0..9)", table,
                            name, (long long)p);
    c->precision = (int)p;
    c->scale = c->type == EDDY_FLUSS_DECIMAL ? (int)sc : 0;
    return 0;
}

static int name_list(const eddy_fluss_schema *s, const json_t *arr, int **out, int *n,
                     const char *what, eddy_err *err)
{
    size_t k = json_array_size(arr);
    *n = 0;
    *out = eddy_calloc(k + 1, sizeof(int));
    if (!*out)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < k; i++) {
        const char *nm = json_string_value(json_array_get(arr, i));
        int idx = nm ? eddy_fluss_column_index(s, nm) : -1;
        if (idx < 0)
            return eddy_err_set(err, EDDY_ESCHEMA, "%s names unknown column '%s'", what,
                                nm ? nm : "?");
        (*out)[(*n)++] = idx;
    }
    return 0;
}

static const char *prop(const json_t *props, const char *key)
{
    return json_string_value(json_object_get(props, key));
}

static int parse_schema(eddy_fluss_table *t, const json_t *root, const char *full, eddy_err *err)
{
    const json_t *schema = json_object_get(root, "schema");
    const json_t *cols = json_object_get(schema, "columns");
    int rc;
    if (!json_is_array(cols) || json_array_size(cols) == 0)
        return eddy_err_set(err, EDDY_ECORRUPT, "table %s: no columns in the table JSON", full);
    if (json_array_size(json_object_get(root, "partition_key")) > 0)
        return eddy_err_set(err, EDDY_ESCHEMA,
                            "table %s is partitioned; eddy's Fluss client does not handle "
                            "partitioned tables yet",
                            full);
    t->schema.cols = eddy_calloc(json_array_size(cols), sizeof(eddy_fluss_column));
    if (!t->schema.cols)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(cols); i++) {
        t->schema.ncols++; /* counted first: a failed column's name is freed too */
        if ((rc = parse_column(json_array_get(cols, i), &t->schema.cols[i], full, err)))
            return rc;
    }
    if ((rc = name_list(&t->schema, json_object_get(schema, "primary_key"), &t->schema.pk,
                        &t->schema.npk, "primary key", err)))
        return rc;
    const json_t *bk = json_object_get(root, "bucket_key");
    if (json_array_size(bk) > 0)
        return name_list(&t->schema, bk, &t->schema.bk, &t->schema.nbk, "bucket key", err);
    return name_list(&t->schema, json_object_get(schema, "primary_key"), &t->schema.bk,
                     &t->schema.nbk, "bucket key", err);
}

static int parse_properties(eddy_fluss_table *t, const json_t *root, const char *full,
                            eddy_err *err)
{
    const json_t *props = json_object_get(root, "properties");
    const char *fmt = prop(props, "table.log.format");
    const char *codec = prop(props, "table.log.arrow.compression.type");
    const char *level = prop(props, "table.log.arrow.compression.zstd.level");
    t->log_format = EDDY_FLUSS_LOG_ARROW;
    if (fmt && !strcasecmp(fmt, "INDEXED"))
        t->log_format = EDDY_FLUSS_LOG_INDEXED;
    else if (fmt && !strcasecmp(fmt, "COMPACTED"))
        t->log_format = EDDY_FLUSS_LOG_COMPACTED;
    t->codec = EDDY_FLUSS_CODEC_ZSTD;
    if (codec && !strcasecmp(codec, "NONE"))
        t->codec = EDDY_FLUSS_CODEC_NONE;
    else if (codec && !strcasecmp(codec, "LZ4_FRAME"))
        t->codec = EDDY_FLUSS_CODEC_LZ4;
    t->zstd_level = level ? (int)strtol(level, NULL, 10) : 3;
    /* per-bucket state is allocated by this count */
    json_int_t buckets = json_integer_value(json_object_get(root, "bucket_count"));
    if (buckets > EDDY__FLUSS_MAX_BUCKETS)
        return eddy_err_set(err, EDDY_ECORRUPT, "table %s: %lld buckets (the limit is %d)", full,
                            (long long)buckets, EDDY__FLUSS_MAX_BUCKETS);
    t->nbuckets = buckets > 0 ? (int)buckets : 1;
    return 0;
}

int eddy_fluss_table_parse(const char *database, const char *name, const char *text, size_t len,
                           eddy_fluss_table **out, eddy_err *err)
{
    json_error_t je;
    char full[256];
    int rc;
    snprintf(full, sizeof(full), "%s.%s", database, name);
    eddy_fluss_table *t = eddy_calloc(1, sizeof(*t));
    if (!t)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    t->database = eddy_strdup(database);
    t->name = eddy_strdup(name);
    t->json = json_loadb(text, len, 0, &je);
    if (!t->database || !t->name) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    if (!json_is_object(t->json)) {
        rc = eddy_err_set(err, EDDY_ECORRUPT, "table %s: table JSON does not parse: %s", full,
                          je.text);
        goto fail;
    }
    if ((rc = parse_schema(t, t->json, full, err)) ||
        (rc = parse_properties(t, t->json, full, err)))
        goto fail;
    *out = t;
    return 0;
fail:
    eddy_fluss_table_free(t);
    return rc;
}

void eddy_fluss_table_free(eddy_fluss_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->schema.ncols; i++)
        eddy_free(t->schema.cols[i].name);
    eddy_free(t->schema.cols);
    eddy_free(t->schema.pk);
    eddy_free(t->schema.bk);
    eddy_free(t->leaders);
    eddy_free(t->database);
    eddy_free(t->name);
    json_decref(t->json);
    eddy_free(t);
}

static json_t *type_json(const eddy_fluss_column *c)
{
    const char *root = "?";
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].type == c->type)
            root = TYPES[i].json;
    json_t *t = json_pack("{s:s}", "type", root);
    if (!c->nullable)
        json_object_set_new(t, "nullable", json_false());
    if (c->type == EDDY_FLUSS_DECIMAL) {
        json_object_set_new(t, "precision", json_integer(c->precision));
        json_object_set_new(t, "scale", json_integer(c->scale));
    } else if (c->type == EDDY_FLUSS_TIMESTAMP || c->type == EDDY_FLUSS_TIMESTAMP_LTZ) {
        json_object_set_new(t, "precision", json_integer(c->precision));
    }
    return t;
}

static int build_properties(const json_t *doc, json_t *props, eddy_err *err)
{
    const char *fmt = json_string_value(json_object_get(doc, "log_format"));
    const char *comp = json_string_value(json_object_get(doc, "compression"));
    const char *k;
    json_t *v;
    if (fmt) {
        if (strcasecmp(fmt, "arrow") && strcasecmp(fmt, "indexed") && strcasecmp(fmt, "compacted"))
            return eddy_err_set(err, EDDY_ESCHEMA,
                                "log_format '%s' is not one of arrow, indexed, compacted", fmt);
        char up[16];
        snprintf(up, sizeof(up), "%s", fmt);
        for (char *q = up; *q; q++)
            *q = (char)toupper((unsigned char)*q);
        json_object_set_new(props, "table.log.format", json_string(up));
    }
    if (comp) {
        const char *c = !strcasecmp(comp, "zstd")   ? "ZSTD"
                        : !strcasecmp(comp, "lz4")  ? "LZ4_FRAME"
                        : !strcasecmp(comp, "none") ? "NONE"
                                                    : NULL;
        if (!c)
            return eddy_err_set(err, EDDY_ESCHEMA, "compression '%s' is not one of zstd, lz4, none",
                                comp);
        json_object_set_new(props, "table.log.arrow.compression.type", json_string(c));
    }
    json_object_foreach((json_t *)json_object_get(doc, "properties"), k, v)
    {
        char *text = json_is_string(v) ? NULL : eddy_json_dumps_flags(v, JSON_ENCODE_ANY);
        json_object_set_new(props, k, json_string(text ? text : json_string_value(v)));
        eddy_free(text);
    }
    return 0;
}

int eddy_fluss_table_json_build(const json_t *doc, json_t **out, eddy_err *err)
{
    const json_t *cols = json_object_get(doc, "columns");
    json_t *jcols = json_array(), *props = json_object();
    json_t *t = NULL;
    int rc = 0;
    size_t i;
    const json_t *c;
    if (!json_is_array(cols) || json_array_size(cols) == 0) {
        rc = eddy_err_set(err, EDDY_ESCHEMA, "the schema needs a non-empty 'columns' list");
        goto out;
    }
    json_array_foreach(cols, i, c)
    {
        eddy_fluss_column col = {0};
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *type = json_string_value(json_object_get(c, "type"));
        if (!name || !type) {
            rc = eddy_err_set(err, EDDY_ESCHEMA, "column %zu needs 'name' and 'type'", i + 1);
            goto out;
        }
        if ((rc = eddy_fluss_type_parse(type, &col, err))) {
            eddy_err_prefix(err, "column '%s': ", name);
            goto out;
        }
        json_t *jc =
            json_pack("{s:s,s:o,s:i}", "name", name, "data_type", type_json(&col), "id", (int)i);
        if (json_object_get(c, "comment"))
            json_object_set(jc, "comment", json_object_get(c, "comment"));
        json_array_append_new(jcols, jc);
    }
    if ((rc = build_properties(doc, props, err)))
        goto out;
    json_t *schema = json_pack("{s:i,s:O,s:i}", "version", 1, "columns", jcols, "highest_field_id",
                               (int)json_array_size(jcols) - 1);
    json_t *pk = json_object_get(doc, "primary_key");
    if (json_array_size(pk))
        json_object_set(schema, "primary_key", pk);
    t = json_pack("{s:i,s:o,s:[],s:o,s:{}}", "version", 1, "schema", schema, "partition_key",
                  "properties", props, "custom_properties");
    props = NULL;
    if (json_object_get(doc, "comment"))
        json_object_set(t, "comment", json_object_get(doc, "comment"));
    json_int_t buckets = json_integer_value(json_object_get(doc, "buckets"));
    const json_t *bk = json_object_get(doc, "bucket_key");
    if (buckets > 0) {
        json_object_set_new(t, "bucket_count", json_integer(buckets));
        json_object_set_new(t, "bucket_key",
                            json_array_size(bk)   ? json_incref((json_t *)bk)
                            : json_array_size(pk) ? json_incref(pk)
                                                  : json_array());
    } else if (json_array_size(bk)) {
        json_object_set(t, "bucket_key", (json_t *)bk);
    }
    *out = t;
    t = NULL;
out:
    json_decref(jcols);
    json_decref(props);
    json_decref(t);
    return rc;
}
