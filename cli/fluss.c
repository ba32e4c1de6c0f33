/*
 * cli/fluss.c - `eddy fluss`: tables, create-table, drop-table, info,
 * produce, scan, lookup.
 *
 * Each command runs the Fluss client on a private libuv loop until its
 * operation completes. Rows travel as JSON lines, mapped to and from the
 * table's columns by eddy_fluss_row_{to,from}_json. Exit codes: 0 success,
 * 1 failure (server, network, rows rejected), 2 usage, 3 lookup found nothing.
 */
#include "eddy/eddy.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"

static const char kFlussUsage[] =
    "usage: eddy fluss <command> [--bootstrap HOST:PORT] ...\n"
    "  tables [DB]                      list databases, or the tables of DB\n"
    "  create-table DB.TABLE SCHEMA     create from a YAML/JSON schema (creates DB)\n"
    "      [--if-not-exists]\n"
    "  drop-table DB.TABLE [--if-exists]\n"
    "  info DB.TABLE                    schema, buckets, leaders as JSON\n"
    "  produce DB.TABLE [FILE|-]        JSONL rows: append (log) or upsert (PK);\n"
    "                                   a row with \"_change\":\"-D\" deletes its key\n"
    "  scan DB.TABLE [--from earliest|latest|OFFSET|ISO-TIME] [--follow]\n"
    "      [--columns a,b] [--limit N] [--meta]\n"
    "                                   rows as JSONL; --meta adds _bucket, _offset,\n"
    "                                   _timestamp, _change\n"
    "  lookup DB.TABLE KEY-JSON [--prefix]\n"
    "bootstrap: --bootstrap or $FLUSS_BOOTSTRAP (default 127.0.0.1:9123)\n"
    "SASL PLAIN: $FLUSS_SASL_USER and $FLUSS_SASL_PASSWORD\n";

typedef struct fcli {
    uv_loop_t loop;
    eddy_fluss_client *c;
    const eddy_fluss_table *t;
    int done, status;
    eddy_err err;
    /* options */
    const char *bootstrap, *from, *columns;
    int follow, meta, prefix, if_not_exists, if_exists;
    long limit;
    /* scan / lookup state */
    int *proj, nproj;
    long rows;
    int64_t *next, *hw;
    int64_t start_ts;
    eddy_fluss_scanner *scanner;
} fcli;

static void set_done(fcli *f, int status, const eddy_err *err)
{
    f->done = 1;
    f->status = status;
    if (status && err)
        f->err = *err;
    else if (status)
        eddy_err_set(&f->err, status, "%s", eddy_strerror(status));
}

static int wait_done(fcli *f)
{
    while (!f->done)
        if (!uv_run(&f->loop, UV_RUN_ONCE) && !f->done) {
            /* nothing left that could ever call back: say so instead of spinning */
            set_done(f, EDDY_EINVAL, NULL);
            eddy_err_set(&f->err, EDDY_EINVAL,
                         "internal error: the operation stopped without an answer");
            break;
        }
    f->done = 0;
    return f->status;
}

static void done_cb(int status, const eddy_err *err, void *ud)
{
    set_done(ud, status, err);
}

static int fail(fcli *f)
{
    fprintf(stderr, "eddy fluss: %s\n", f->err.msg);
    return 1;
}

static int split_path(const char *arg, char *db, char *tb)
{
    eddy_err e;
    if (eddy_fluss_table_path(arg, db, tb, &e)) {
        fprintf(stderr, "eddy fluss: %s\n", e.msg);
        return 2;
    }
    return 0;
}

static void table_cb(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    fcli *f = ud;
    f->t = t;
    set_done(f, status, err);
}

static int open_table(fcli *f, const char *arg)
{
    char db[EDDY_FLUSS_NAME_MAX], tb[EDDY_FLUSS_NAME_MAX];
    int rc = split_path(arg, db, tb);
    if (rc)
        return rc;
    if ((rc = eddy_fluss_get_table(f->c, db, tb, table_cb, f)) || wait_done(f)) {
        if (rc)
            eddy_err_set(&f->err, rc, "cannot ask for %s", arg);
        return fail(f);
    }
    return 0;
}

/* -- tables ----------------------------------------------------------------- */

static void print_names(int status, const eddy_err *err, char **names, size_t n, void *ud)
{
    for (size_t i = 0; !status && i < n; i++)
        printf("%s\n", names[i]);
    set_done(ud, status, err);
}

static int cmd_tables(fcli *f, int argc, char **argv)
{
    int rc = argc > 0 ? eddy_fluss_list_tables(f->c, argv[0], print_names, f)
                      : eddy_fluss_list_databases(f->c, print_names, f);
    if (rc)
        return 1;
    return wait_done(f) ? fail(f) : 0;
}

static int cmd_create_table(fcli *f, int argc, char **argv)
{
    char db[EDDY_FLUSS_NAME_MAX], tb[EDDY_FLUSS_NAME_MAX];
    eddy_yaml_doc doc = {0};
    eddy_diag diag;
    json_t *tj = NULL;
    int rc = 1;
    if (argc < 2) {
        fputs(kFlussUsage, stderr);
        return 2;
    }
    if ((rc = split_path(argv[0], db, tb)))
        return rc;
    eddy_diag_init(&diag);
    if (eddy_yaml_load(argv[1], &doc, &diag) || diag.n) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(stderr, "%s\n", diag.msgs[i]);
        rc = 2;
        goto out;
    }
    if ((rc = eddy_fluss_table_json_build(doc.root, &tj, &f->err))) {
        fprintf(stderr, "%s: %s\n", argv[1], f->err.msg);
        rc = 2;
        goto out;
    }
    rc = 1;
    if (eddy_fluss_create_database(f->c, db, 1, done_cb, f) || wait_done(f) ||
        eddy_fluss_create_table(f->c, db, tb, tj, f->if_not_exists, done_cb, f) || wait_done(f)) {
        fail(f);
        goto out;
    }
    printf("created %s.%s\n", db, tb);
    rc = 0;
out:
    json_decref(tj);
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&diag);
    return rc;
}

static int cmd_drop_table(fcli *f, int argc, char **argv)
{
    char db[EDDY_FLUSS_NAME_MAX], tb[EDDY_FLUSS_NAME_MAX];
    int rc;
    if (argc < 1 || (rc = split_path(argv[0], db, tb)))
        return 2;
    if (eddy_fluss_drop_table(f->c, db, tb, f->if_exists, done_cb, f) || wait_done(f))
        return fail(f);
    return 0;
}

static int cmd_info(fcli *f, int argc, char **argv)
{
    if (argc < 1)
        return 2;
    int rc = open_table(f, argv[0]);
    if (rc)
        return rc;
    const eddy_fluss_table *t = f->t;
    json_t *cols = json_array(), *leaders = json_array();
    for (int i = 0; i < t->schema.ncols; i++) {
        char type[48];
        eddy_fluss_type_name(&t->schema.cols[i], type, sizeof(type));
        if (!t->schema.cols[i].nullable)
            strncat(type, " NOT NULL", sizeof(type) - strlen(type) - 1);
        json_array_append_new(cols,
                              json_pack("{s:s,s:s}", "name", t->schema.cols[i].name, "type", type));
    }
    for (int b = 0; b < t->nbuckets; b++)
        json_array_append_new(leaders, json_integer(t->leaders[b]));
    static const char *fmts[] = {"arrow", "indexed", "compacted"};
    static const char *codecs[] = {"none", "lz4", "zstd"};
    json_t *o = json_pack("{s:s,s:s,s:I,s:i,s:o,s:i,s:o,s:s,s:s}", "database", t->database, "table",
                          t->name, "table_id", (json_int_t)t->table_id, "schema_id", t->schema_id,
                          "columns", cols, "buckets", t->nbuckets, "leaders", leaders, "log_format",
                          fmts[t->log_format], "compression", codecs[t->codec]);
    json_t *pk = json_array();
    for (int i = 0; i < t->schema.npk; i++)
        json_array_append_new(pk, json_string(t->schema.cols[t->schema.pk[i]].name));
    json_object_set_new(o, "primary_key", pk);
    char *s = eddy_json_dumps_flags(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    eddy_free(s);
    json_decref(o);
    return 0;
}

/* -- produce ---------------------------------------------------------------- */

static int cmd_produce(fcli *f, int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "-";
    FILE *in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    eddy_fluss_writer *w = NULL;
    eddy_fluss_value *vals = NULL;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, bad = 0;
    int rc;
    if (argc < 1)
        return 2;
    if (!in) {
        fprintf(stderr, "eddy fluss: cannot open %s\n", path);
        return 1;
    }
    if ((rc = open_table(f, argv[0])))
        goto out;
    rc = 1;
    const eddy_fluss_table *t = f->t;
    vals = eddy_calloc((size_t)t->schema.ncols, sizeof(*vals));
    if (!vals || eddy_fluss_writer_new(f->c, t, NULL, &w, &f->err))
        goto out;
    while (getline(&line, &cap, in) > 0) {
        json_error_t je;
        eddy_fluss_arena arena = {0};
        eddy_err e;
        lineno++;
        if (line[strspn(line, " \t\r\n")] == 0)
            continue;
        json_t *row = json_loads(line, 0, &je);
        const char *change = json_string_value(json_object_get(row, "_change"));
        int del = change && !strcmp(change, "-D");
        if (row && change)
            json_object_del(row, "_change");
        if (!row) {
            fprintf(stderr, "%s:%ld: not JSON: %s\n", path, lineno, je.text);
            bad++;
        } else if (eddy_fluss_row_from_json(&t->schema, row, 1, vals, &arena, &e) ||
                   eddy_fluss_writer_write(w, vals, del, NULL, NULL, &e)) {
            fprintf(stderr, "%s:%ld: %s\n", path, lineno, e.msg);
            bad++;
        }
        json_decref(row);
        eddy_fluss_arena_free(&arena);
        while (eddy_fluss_writer_pending(w) > (64u << 20)) /* backpressure */
            if (!uv_run(&f->loop, UV_RUN_ONCE))
                break; /* nothing in flight: waiting would spin */
    }
    if (eddy_fluss_writer_flush(w, done_cb, f) == 0 && wait_done(f) == 0) {
        long acked, failed;
        eddy_fluss_writer_counts(w, &acked, &failed);
        fprintf(stderr, "eddy fluss: %ld rows written to %s, %ld rejected\n", acked, argv[0], bad);
        rc = bad ? 1 : 0;
    } else {
        fail(f);
    }
out:
    eddy_fluss_writer_free(w);
    eddy_free(vals);
    free(line);
    if (in && in != stdin)
        fclose(in);
    return rc;
}

/* -- scan ------------------------------------------------------------------- */

static int scan_record(int bucket, int64_t off, int64_t ts, int change,
                       const eddy_fluss_value *vals, void *ud)
{
    fcli *f = ud;
    if (f->limit >= 0 && f->rows >= f->limit)
        return 1;
    json_t *o = eddy_fluss_row_to_json(&f->t->schema, vals, f->proj, f->nproj);
    if (f->meta) {
        json_object_set_new(o, "_bucket", json_integer(bucket));
        json_object_set_new(o, "_offset", json_integer(off));
        json_object_set_new(o, "_timestamp", json_integer(ts));
        json_object_set_new(o, "_change", json_string(eddy_fluss_change_name(change)));
    }
    char *s = eddy_json_dumps_flags(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputs(s, stdout);
    fputc('\n', stdout);
    eddy_free(s);
    json_decref(o);
    f->rows++;
    if (f->follow)
        fflush(stdout);
    return f->limit >= 0 && f->rows >= f->limit;
}

static int caught_up(const fcli *f)
{
    for (int b = 0; b < f->t->nbuckets; b++)
        if (f->hw[b] < 0 || f->next[b] < f->hw[b])
            return 0;
    return 1;
}

static void scan_progress(int status, const eddy_err *err, int bucket, int64_t next, int64_t hw,
                          void *ud)
{
    fcli *f = ud;
    if (status) {
        set_done(f, status, err);
        return;
    }
    f->next[bucket] = next;
    if (hw >= 0)
        f->hw[bucket] = hw;
    if ((f->limit >= 0 && f->rows >= f->limit) || (!f->follow && caught_up(f)))
        set_done(f, 0, NULL);
}

static void ts_offsets(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    fcli *f = ud;
    for (int i = 0; !status && i < n; i++)
        f->next[i] = offs[i];
    set_done(f, status, err);
}

static int parse_columns(fcli *f)
{
    char *list = eddy_strdup(f->columns), *tok = list;
    const eddy_fluss_schema *s = &f->t->schema;
    int *mark = eddy_calloc((size_t)s->ncols, sizeof(int));
    while (tok) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = 0;
        int i = eddy_fluss_column_index(s, tok);
        if (i < 0) {
            fprintf(stderr, "eddy fluss: no column '%s' in %s.%s\n", tok, f->t->database,
                    f->t->name);
            eddy_free(list);
            eddy_free(mark);
            return 2;
        }
        mark[i] = 1;
        tok = comma ? comma + 1 : NULL;
    }
    f->proj = eddy_calloc((size_t)s->ncols, sizeof(int));
    for (int i = 0; i < s->ncols; i++)
        if (mark[i])
            f->proj[f->nproj++] = i;
    eddy_free(list);
    eddy_free(mark);
    return 0;
}

static int scan_start(fcli *f, int64_t *start)
{
    const char *from = f->from ? f->from : "earliest";
    int n = f->t->nbuckets;
    char *end;
    if (!strcmp(from, "earliest") || !strcmp(from, "latest")) {
        for (int b = 0; b < n; b++)
            start[b] = !strcmp(from, "earliest") ? EDDY_FLUSS_EARLIEST : EDDY_FLUSS_LATEST;
        return 0;
    }
    long long off = strtoll(from, &end, 10);
    if (!*end && off >= 0) {
        for (int b = 0; b < n; b++)
            start[b] = off;
        return 0;
    }
    /* an ISO time: offsets by timestamp */
    int64_t ms;
    if (eddy_fluss_parse_time(from, &ms)) {
        fprintf(stderr, "eddy fluss: --from '%s': not earliest, latest, an offset or a time\n",
                from);
        return 2;
    }
    if (eddy_fluss_list_offsets(f->c, f->t, EDDY_FLUSS_OFFSET_TIMESTAMP, ms, ts_offsets, f) ||
        wait_done(f))
        return fail(f);
    for (int b = 0; b < n; b++)
        start[b] = f->next[b];
    return 0;
}

static int cmd_scan(fcli *f, int argc, char **argv)
{
    int rc;
    if (argc < 1)
        return 2;
    if ((rc = open_table(f, argv[0])))
        return rc;
    int n = f->t->nbuckets;
    int64_t *start = eddy_calloc((size_t)n, sizeof(int64_t));
    f->next = eddy_calloc((size_t)n, sizeof(int64_t));
    f->hw = eddy_calloc((size_t)n, sizeof(int64_t));
    for (int b = 0; b < n; b++)
        f->hw[b] = -1;
    if (f->columns && (rc = parse_columns(f)))
        goto out;
    if ((rc = scan_start(f, start)))
        goto out;
    rc = 1;
    if (eddy_fluss_scanner_new(f->c, f->t, f->proj, f->nproj, scan_record, scan_progress, f,
                               &f->scanner, &f->err)) {
        fail(f);
        goto out;
    }
    for (int b = 0; b < n; b++)
        eddy_fluss_scanner_subscribe(f->scanner, b, start[b]);
    rc = wait_done(f) ? fail(f) : 0;
    fflush(stdout);
out:
    eddy_fluss_scanner_free(f->scanner);
    eddy_free(start);
    eddy_free(f->proj);
    eddy_free(f->next);
    eddy_free(f->hw);
    return rc;
}

/* -- lookup ----------------------------------------------------------------- */

static void print_row(const fcli *f, const eddy_fluss_value *vals)
{
    json_t *o = eddy_fluss_row_to_json(&f->t->schema, vals, NULL, 0);
    char *s = eddy_json_dumps_flags(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    eddy_free(s);
    json_decref(o);
}

static void lookup_cb(int status, const eddy_err *err, const eddy_fluss_value *vals, void *ud)
{
    fcli *f = ud;
    if (!status && vals) {
        print_row(f, vals);
        f->rows++;
    }
    set_done(f, status, err);
}

static void prefix_cb(int status, const eddy_err *err, const eddy_fluss_value *vals, size_t row,
                      size_t n, void *ud)
{
    fcli *f = ud;
    if (!status && vals) {
        print_row(f, vals);
        f->rows++;
    }
    if (status || row + 1 >= n)
        set_done(f, status, err);
}

static int cmd_lookup(fcli *f, int argc, char **argv)
{
    json_error_t je;
    eddy_fluss_arena a = {0};
    int rc;
    if (argc < 2)
        return 2;
    if ((rc = open_table(f, argv[0])))
        return rc;
    json_t *key = json_loads(argv[1], JSON_DECODE_ANY, &je);
    eddy_fluss_value *vals = eddy_calloc((size_t)f->t->schema.ncols, sizeof(*vals));
    rc = 1;
    if (!key) {
        fprintf(stderr, "eddy fluss: key is not JSON: %s\n", je.text);
        rc = 2;
    } else if (!vals) {
        eddy_err_set(&f->err, EDDY_ENOMEM, "out of memory");
        fail(f);
    } else if (eddy_fluss_key_from_json(f->t, key, f->prefix, vals, &a, &f->err) ||
               (f->prefix ? eddy_fluss_prefix_lookup(f->c, f->t, vals, prefix_cb, f, &f->err)
                          : eddy_fluss_lookup(f->c, f->t, vals, lookup_cb, f, &f->err))) {
        fail(f);
    } else if (wait_done(f)) {
        fail(f);
    } else {
        rc = f->rows ? 0 : 3;
        if (!f->rows)
            fprintf(stderr, "eddy fluss: no row for %s\n", argv[1]);
    }
    json_decref(key);
    eddy_fluss_arena_free(&a);
    eddy_free(vals);
    return rc;
}

/* -- entry ------------------------------------------------------------------ */

enum { O_BOOT = 300, O_FROM, O_FOLLOW, O_COLS, O_LIMIT, O_META, O_PREFIX, O_INE, O_IE, O_LOG };

int eddy_cli_fluss(int argc, char **argv)
{
    static const struct option opts[] = {{"bootstrap", required_argument, NULL, O_BOOT},
                                         {"from", required_argument, NULL, O_FROM},
                                         {"follow", no_argument, NULL, O_FOLLOW},
                                         {"columns", required_argument, NULL, O_COLS},
                                         {"limit", required_argument, NULL, O_LIMIT},
                                         {"meta", no_argument, NULL, O_META},
                                         {"prefix", no_argument, NULL, O_PREFIX},
                                         {"if-not-exists", no_argument, NULL, O_INE},
                                         {"if-exists", no_argument, NULL, O_IE},
                                         {"log-level", required_argument, NULL, O_LOG},
                                         {NULL, 0, NULL, 0}};
    fcli f;
    int opt, rc;
    memset(&f, 0, sizeof(f));
    f.limit = -1;
    f.bootstrap = getenv("FLUSS_BOOTSTRAP") ? getenv("FLUSS_BOOTSTRAP") : "127.0.0.1:9123";
    if (argc < 3) {
        fputs(kFlussUsage, stderr);
        return 2;
    }
    const char *sub = argv[2];
    optind = 3;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        eddy_log_level lvl;
        switch (opt) {
        case O_BOOT:
            f.bootstrap = optarg;
            break;
        case O_FROM:
            f.from = optarg;
            break;
        case O_FOLLOW:
            f.follow = 1;
            break;
        case O_COLS:
            f.columns = optarg;
            break;
        case O_LIMIT:
            f.limit = strtol(optarg, &end, 10);
            if (*end || f.limit < 0) {
                fprintf(stderr, "eddy fluss: --limit needs a count\n");
                return 2;
            }
            break;
        case O_META:
            f.meta = 1;
            break;
        case O_PREFIX:
            f.prefix = 1;
            break;
        case O_INE:
            f.if_not_exists = 1;
            break;
        case O_IE:
            f.if_exists = 1;
            break;
        case O_LOG:
            if (eddy_log_parse_level(optarg, &lvl))
                return 2;
            eddy_log_set_level((int)lvl);
            break;
        default:
            fputs(kFlussUsage, stderr);
            return 2;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    eddy_fluss_client_opts co = {f.bootstrap, getenv("FLUSS_SASL_USER"),
                                 getenv("FLUSS_SASL_PASSWORD"), 0};
    uv_loop_init(&f.loop);
    if (eddy_fluss_client_new(&f.loop, &co, &f.c, &f.err)) {
        fprintf(stderr, "eddy fluss: %s\n", f.err.msg);
        return 2;
    }
    if (!strcmp(sub, "tables"))
        rc = cmd_tables(&f, nargs, args);
    else if (!strcmp(sub, "create-table"))
        rc = cmd_create_table(&f, nargs, args);
    else if (!strcmp(sub, "drop-table"))
        rc = cmd_drop_table(&f, nargs, args);
    else if (!strcmp(sub, "info"))
        rc = cmd_info(&f, nargs, args);
    else if (!strcmp(sub, "produce"))
        rc = cmd_produce(&f, nargs, args);
    else if (!strcmp(sub, "scan"))
        rc = cmd_scan(&f, nargs, args);
    else if (!strcmp(sub, "lookup"))
        rc = cmd_lookup(&f, nargs, args);
    else {
        fprintf(stderr, "eddy fluss: unknown command '%s'\n%s", sub, kFlussUsage);
        rc = 2;
    }
    if (rc == 2 && nargs == 0)
        fputs(kFlussUsage, stderr);
    eddy_fluss_client_close(f.c);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    uv_loop_close(&f.loop);
    return rc;
}
