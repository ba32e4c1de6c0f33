/*
 * trace/read.c - reading the trace store for `eddy trace list|show`.
 *
 * Opens its own read-only connection per call, so it works while a job is
 * writing (WAL) and from any thread. The only place with SQL that reads
 * traces: eddy_trace_query (the list, the dashboard) builds its query from
 * fixed clauses, and everything a user gives is a bound value, the search
 * text an FTS5 query of quoted phrases. Output is plain text meant for a
 * terminal; `eddy_trace_get_json` gives the same data for programs.
 */
#include "eddy/trace.h"
#include "trace_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <ctype.h>
#include <sqlite3.h>
#include <string.h>
#include <time.h>

static int open_ro(const char *path, sqlite3 **db, eddy_err *err)
{
    for (int tries = 0;; tries++) {
        int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
        if (rc != SQLITE_OK) {
            eddy_err_setc(err, EDDY_ENOENT, rc, "%s: cannot open the trace store: %s", path,
                          sqlite3_errstr(rc));
            sqlite3_close(*db);
            *db = NULL;
            return EDDY_ENOENT;
        }
        sqlite3_busy_timeout(*db, 5000);
        if (eddy__trace_has_table(*db, "meta") || !eddy__trace_has_table(*db, "spans") || tries)
            return 0;
        /* written by an older eddy: brought to this version first */
        sqlite3_close(*db);
        *db = NULL;
        if ((rc = eddy_trace_store_upgrade(path, err)))
            return rc;
    }
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static void fmt_time(int64_t ns, char *buf, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

char *eddy_trace_fts_query(const char *text)
{
    eddy_buf b;
    const char *p = text ? text : "";
    eddy_buf_init(&b);
    while (*p) {
        size_t n = strcspn(p, " \t\r\n\f\v");
        int word = 0;
        for (size_t i = 0; i < n && !word; i++) /* bytes >= 0x80: letters, as far as we know */
            word = isalnum((unsigned char)p[i]) || (unsigned char)p[i] >= 0x80;
        if (word) {
            eddy_buf_puts(&b, b.len ? " \"" : "\"");
            for (size_t i = 0; i < n; i++)
                eddy_buf_append(&b, p[i] == '"' ? "\"\"" : &p[i], p[i] == '"' ? 2 : 1);
            eddy_buf_putc(&b, '"');
        }
        p += n;
        p += strspn(p, " \t\r\n\f\v");
    }
    if (!b.len) /* an empty phrase: a valid query that matches nothing */
        eddy_buf_puts(&b, "\"\"");
    if (b.oom) {
        eddy_buf_free(&b);
        return NULL;
    }
    return eddy_buf_take(&b);
}

/* One condition of a query: SQL with one named parameter, bound to TEXT
 * (when non-NULL) or NUM. */
typedef struct clause {
    const char *sql, *param, *text;
    int64_t num;
} clause;

enum { MAX_CLAUSES = 16 };

static int bad_filter(const eddy_trace_filter *f, eddy_err *err)
{
    if (f->status && strcmp(f->status, "ok") && strcmp(f->status, "error"))
        return eddy_err_set(err, EDDY_EINVAL, "status must be ok or error, not '%s'", f->status);
    if (f->limit < 0 || f->limit > EDDY_TRACE_QUERY_MAX)
        return eddy_err_set(err, EDDY_EINVAL, "limit must be between 1 and %d, not %d",
                            EDDY_TRACE_QUERY_MAX, f->limit);
    if ((f->model && strchr(f->model, ',')) || (f->tool && strchr(f->tool, ',')))
        return eddy_err_set(err, EDDY_EINVAL, "a model's or a tool's name has no ',' in it: '%s'",
                            f->model && strchr(f->model, ',') ? f->model : f->tool);
    if (f->min_duration_ns < 0 || f->max_duration_ns < 0 || f->min_tokens < 0 || f->since_ns < 0 ||
        f->until_ns < 0 || f->above_id < 0)
        return eddy_err_set(err, EDDY_EINVAL,
                            "times, durations and token counts of a filter are not negative");
    return 0;
}

/* The conditions F sets, into CL; returns how many. FTS: the search query. */
static size_t clauses(const eddy_trace_filter *f, const char *fts, clause *cl)
{
    size_t n = 0;
#define TEXT(cond, s, p, v)                                                                        \
    if (cond)                                                                                      \
    cl[n++] = (clause){s, p, v, 0}
#define NUM(cond, s, p, v)                                                                         \
    if (cond)                                                                                      \
        cl[n++] = (clause)                                                                         \
        {                                                                                          \
            s, p, NULL, v                                                                          \
        }
    TEXT(f->agent, " AND agent = :agent", ":agent", f->agent);
    TEXT(f->key, " AND key = :key", ":key", f->key);
    TEXT(f->event_id, " AND event_id = :event", ":event", f->event_id);
    TEXT(f->status, " AND status = :status", ":status", f->status);
    /* models and tools are "a,b": a whole name between commas, not a pattern */
    TEXT(f->model, " AND instr(',' || models || ',', ',' || :model || ',') > 0", ":model",
         f->model);
    TEXT(f->tool, " AND instr(',' || tools || ',', ',' || :tool || ',') > 0", ":tool", f->tool);
    TEXT(fts, " AND id IN (SELECT rowid FROM trace_text WHERE trace_text MATCH :search)", ":search",
         fts);
    NUM(f->since_ns, " AND start_ns >= :since", ":since", f->since_ns);
    NUM(f->until_ns, " AND start_ns < :until", ":until", f->until_ns);
    NUM(f->min_duration_ns, " AND end_ns - start_ns >= :mindur", ":mindur", f->min_duration_ns);
    NUM(f->max_duration_ns, " AND end_ns - start_ns <= :maxdur", ":maxdur", f->max_duration_ns);
    NUM(f->min_tokens, " AND input_tokens + output_tokens >= :mintok", ":mintok", f->min_tokens);
    NUM(f->after_id && !f->oldest_first, " AND (start_ns, id) < (:cstart, :cid)", ":cid",
        f->after_id);
    NUM(f->after_id && f->oldest_first, " AND (start_ns, id) > (:cstart, :cid)", ":cid",
        f->after_id);
    NUM(f->after_id, "", ":cstart", f->after_start_ns);
    NUM(f->above_id, " AND id > :aboveid", ":aboveid", f->above_id);
#undef TEXT
#undef NUM
    return n;
}

/* The prepared query for F (with FTS its search), bound; *ST NULL on failure. */
static int prepare_query(sqlite3 *db, const eddy_trace_filter *f, const char *fts,
                         sqlite3_stmt **st, eddy_err *err)
{
    clause cl[MAX_CLAUSES];
    size_t n = clauses(f, fts, cl);
    eddy_buf sql;
    int rc = 0;
    eddy_buf_init(&sql);
    eddy_buf_puts(&sql, "SELECT id, trace_id, name, agent, key, event_id, status, error, start_ns,"
                        " end_ns, input_tokens, output_tokens, cost, llm_calls, tool_calls, turns,"
                        " models, tools FROM traces WHERE 1");
    for (size_t i = 0; i < n; i++)
        eddy_buf_puts(&sql, cl[i].sql);
    eddy_buf_puts(&sql, f->above_id       ? " ORDER BY id LIMIT :limit"
                        : f->oldest_first ? " ORDER BY start_ns, id LIMIT :limit"
                                          : " ORDER BY start_ns DESC, id DESC LIMIT :limit");
    *st = NULL;
    if (sql.oom) {
        eddy_buf_free(&sql);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (sqlite3_prepare_v2(db, sql.data, -1, st, NULL) != SQLITE_OK) {
        rc = eddy_err_setc(err, EDDY_ESQLITE, sqlite3_errcode(db), "%s: %s",
                           sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int idx = sqlite3_bind_parameter_index(*st, cl[i].param);
        if (cl[i].text)
            sqlite3_bind_text(*st, idx, cl[i].text, -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(*st, idx, cl[i].num);
    }
    sqlite3_bind_int(*st, sqlite3_bind_parameter_index(*st, ":limit"),
                     f->limit ? f->limit : EDDY_TRACE_QUERY_LIMIT);
out:
    eddy_buf_free(&sql);
    return rc;
}

/* "a,b" as ["a", "b"] ("" as []). */
static json_t *names(const char *s)
{
    json_t *a = json_array();
    while (a && *s) {
        size_t n = strcspn(s, ",");
        json_array_append_new(a, json_stringn(s, n));
        s += n + (s[n] == ',');
    }
    return a;
}

static json_t *opt_text(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null() : json_string(col(st, i));
}

static json_t *row_json(sqlite3_stmt *st)
{
    int64_t start = sqlite3_column_int64(st, 8), end = sqlite3_column_int64(st, 9);
    return json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:f, s:I, s:I, s:o, s:i, s:i, s:i,"
        " s:o, s:o}",
        "id", (json_int_t)sqlite3_column_int64(st, 0), "trace_id", col(st, 1), "name", col(st, 2),
        "agent", col(st, 3), "key", col(st, 4), "event_id", col(st, 5), "status", col(st, 6),
        "error", opt_text(st, 7), "start_ns", (json_int_t)start, "end_ns", (json_int_t)end,
        "duration_ms", (double)(end - start) / 1e6, "input_tokens",
        (json_int_t)sqlite3_column_int64(st, 10), "output_tokens",
        (json_int_t)sqlite3_column_int64(st, 11), "cost",
        sqlite3_column_type(st, 12) == SQLITE_NULL ? json_null()
                                                   : json_real(sqlite3_column_double(st, 12)),
        "llm_calls", sqlite3_column_int(st, 13), "tool_calls", sqlite3_column_int(st, 14), "turns",
        sqlite3_column_int(st, 15), "models", names(col(st, 16)), "tools", names(col(st, 17)));
}

int eddy_trace_query(const char *path, const eddy_trace_filter *f, json_t **rows, eddy_err *err)
{
    static const eddy_trace_filter none;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *fts = NULL;
    json_t *a = NULL;
    int rc, step;
    f = f ? f : &none;
    *rows = NULL;
    if ((rc = bad_filter(f, err)))
        return rc;
    if (f->search && !(fts = eddy_trace_fts_query(f->search)))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if ((rc = open_ro(path, &db, err)) || (rc = prepare_query(db, f, fts, &st, err)))
        goto out;
    if (!(a = json_array())) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (json_array_append_new(a, row_json(st))) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        rc = eddy_err_setc(err, EDDY_ESQLITE, step, "%s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    *rows = a;
    a = NULL;
out:
    json_decref(a);
    sqlite3_finalize(st);
    sqlite3_close(db);
    eddy_free(fts);
    return rc;
}

/* S in exactly WIDTH characters: padded with spaces, or cut at a character
 * boundary with "…" as its last one. A byte that begins no UTF-8 sequence
 * is printed as '?'. */
static void put_col(FILE *out, const char *s, size_t width)
{
    size_t len = strlen(s), chars = 0, i = 0, keep, shown = 0;
    for (size_t j = 0; j < len && chars <= width; chars++) {
        size_t k = eddy_utf8_seq_len(s + j, len - j);
        j += k ? k : 1;
    }
    keep = chars > width ? width - 1 : width; /* cut: room for the "…" */
    for (; i < len && shown < keep; shown++) {
        size_t k = eddy_utf8_seq_len(s + i, len - i);
        if (k)
            fwrite(s + i, 1, k, out);
        else
            fputc('?', out);
        i += k ? k : 1;
    }
    if (chars > width) {
        fputs("\xE2\x80\xA6", out); /* … */
        shown++;
    }
    for (; shown < width; shown++)
        fputc(' ', out);
}

static void print_row(FILE *out, json_t *r)
{
    char when[32], tok[48];
    fmt_time(eddy_json_int(r, "start_ns", 0), when, sizeof(when));
    snprintf(tok, sizeof(tok), "%lld/%lld", (long long)eddy_json_int(r, "input_tokens", 0),
             (long long)eddy_json_int(r, "output_tokens", 0));
    fprintf(out, "%-19s  %-32s  ", when, eddy_json_str(r, "trace_id", ""));
    put_col(out, eddy_json_str(r, "agent", ""), 10);
    fputs("  ", out);
    put_col(out, eddy_json_str(r, "key", ""), 12);
    fputs("  ", out);
    put_col(out, eddy_json_str(r, "event_id", ""), 14);
    fprintf(out, "  %-5s  %8.1f  %11s  %3d  %5d\n", eddy_json_str(r, "status", ""),
            json_real_value(json_object_get(r, "duration_ms")), tok,
            (int)eddy_json_int(r, "llm_calls", 0), (int)eddy_json_int(r, "tool_calls", 0));
    if (!strcmp(eddy_json_str(r, "status", ""), "error"))
        fprintf(out, "    error: %s\n", eddy_json_str(r, "error", ""));
}

int eddy_trace_print_list(const char *path, const eddy_trace_filter *f, FILE *out, eddy_err *err)
{
    eddy_trace_filter newest = {0};
    json_t *rows;
    size_t n;
    int rc;
    if (f)
        newest = *f;
    newest.oldest_first = 0; /* the newest LIMIT, printed oldest first */
    if ((rc = eddy_trace_query(path, &newest, &rows, err)))
        return rc;
    fprintf(out, "%-19s  %-32s  %-10s  %-12s  %-14s  %-5s  %8s  %11s  %3s  %5s\n", "started",
            "trace", "agent", "key", "event", "state", "ms", "tokens i/o", "llm", "tools");
    for (n = json_array_size(rows); n > 0; n--)
        print_row(out, json_array_get(rows, n - 1));
    if (json_array_size(rows) == 0)
        fprintf(out, "(no traces)\n");
    json_decref(rows);
    return 0;
}

int eddy_trace_get_json(const char *path, const char *id, json_t **out, eddy_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    char like[80], like_end[80], hex[33];
    json_t *trace = NULL, *spans = json_array();
    int rc = 0, matches = 0;
    size_t n = id ? strlen(id) : 0;
    *out = NULL;
    /* 1 to 32 hex digits, in lowercase as stored (and nothing LIKE would
     * read as a pattern) */
    for (size_t i = 0; i < n && n <= 32; i++)
        if (!isxdigit((unsigned char)id[i]))
            n = 0;
    if (!n || n > 32) {
        json_decref(spans);
        return eddy_err_set(err, EDDY_EINVAL,
                            "trace id '%s': not a trace id (1 to 32 hex digits: all of it, its "
                            "first digits or its last ones)",
                            id ? id : "");
    }
    for (size_t i = 0; i <= n; i++)
        hex[i] = (char)tolower((unsigned char)id[i]);
    const char *given = id;
    id = hex;
    if ((rc = open_ro(path, &db, err))) {
        json_decref(spans);
        return rc;
    }
    /* a unique prefix or suffix of the id: trace ids begin with their time,
     * so the traces of one moment share their first digits. A prefix is a
     * range of the indexes (of the runs' rows, and of the spans, for a run
     * cut short before its row); a suffix is a scan of the runs' id index
     * (not of the spans: a run cut short is found by a prefix); a whole id
     * is a prefix (bench/traces: 1M spans, a LIKE over them took 444 ms). */
    snprintf(like, sizeof(like), "%s", id);
    snprintf(like_end, sizeof(like_end), "%sg", id); /* 'g' sorts after every hex digit */
    if (sqlite3_prepare_v2(db,
                           "SELECT trace_id FROM traces WHERE trace_id >= ?1 AND trace_id < ?2 "
                           "UNION SELECT trace_id FROM spans WHERE trace_id >= ?1 AND "
                           "trace_id < ?2 "
                           "UNION SELECT trace_id FROM traces WHERE ?3 < 32 AND "
                           "substr(trace_id, -?3) = ?1 LIMIT 2",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, like, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, like_end, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)n);
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (!matches++)
                trace = json_pack("{s:s}", "trace_id", col(st, 0));
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (matches != 1) {
        rc = eddy_err_set(err, EDDY_ENOENT,
                          matches ? "trace id '%s' is ambiguous: more than one trace id begins "
                                    "or ends with it (give more of its last digits)"
                                  : "no trace with id '%s'",
                          given);
        goto out;
    }
    if (sqlite3_prepare_v2(db, "SELECT summary, status, error FROM traces WHERE trace_id = ?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, eddy_json_str(trace, "trace_id", ""), -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW) {
            json_t *sum = json_loads(col(st, 0), 0, NULL);
            if (sum)
                json_object_update(trace, sum);
            json_decref(sum);
            json_object_set_new(trace, "status", json_string(col(st, 1)));
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT span_id, parent_id, name, kind, start_ns, end_ns, status,"
                           " error, attributes FROM spans WHERE trace_id = ? ORDER BY start_ns",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, eddy_json_str(trace, "trace_id", ""), -1, SQLITE_TRANSIENT);
        while (sqlite3_step(st) == SQLITE_ROW) {
            json_t *attrs = json_loads(col(st, 8), 0, NULL);
            json_t *sp =
                json_pack("{s:s, s:s?, s:s, s:i, s:I, s:I, s:s, s:s?, s:o}", "span_id", col(st, 0),
                          "parent_id", sqlite3_column_text(st, 1) ? col(st, 1) : NULL, "name",
                          col(st, 2), "kind", sqlite3_column_int(st, 3), "start_ns",
                          (json_int_t)sqlite3_column_int64(st, 4), "end_ns",
                          (json_int_t)sqlite3_column_int64(st, 5), "status", col(st, 6), "error",
                          sqlite3_column_text(st, 7) ? col(st, 7) : NULL, "attributes",
                          attrs ? attrs : json_object());
            json_array_append_new(spans, sp);
        }
    }
    json_object_set(trace, "spans", spans);
    *out = trace;
    trace = NULL;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    json_decref(trace);
    json_decref(spans);
    return rc;
}

static void print_attr(FILE *out, const char *indent, const char *label, json_t *v)
{
    char *s;
    if (!v)
        return;
    s = json_is_string(v) ? eddy_strdup(json_string_value(v)) : eddy_json_dumps(v);
    if (s && strlen(s) > 300)
        memcpy(s + 297, "...", 4);
    fprintf(out, "%s  %s: %s\n", indent, label, s ? s : "?");
    eddy_free(s);
}

static void print_tree(FILE *out, json_t *spans, const char *parent, int depth, int64_t t0)
{
    size_t i;
    json_t *sp;
    char indent[64];
    int d = depth < 15 ? depth : 15;
    memset(indent, ' ', (size_t)d * 2);
    indent[d * 2] = '\0';
    json_array_foreach(spans, i, sp)
    {
        const char *p = eddy_json_str(sp, "parent_id", NULL);
        json_t *a = json_object_get(sp, "attributes");
        int64_t s = eddy_json_int(sp, "start_ns", 0), e = eddy_json_int(sp, "end_ns", 0);
        if ((parent == NULL) != (p == NULL) || (parent && strcmp(parent, p)))
            continue;
        fprintf(out, "%s%s %s  +%.1fms  %.1fms%s%s\n", indent, depth ? "└─" : "●",
                eddy_json_str(sp, "name", "?"), (double)(s - t0) / 1e6, (double)(e - s) / 1e6,
                strcmp(eddy_json_str(sp, "status", "ok"), "ok") ? "  ERROR: " : "",
                strcmp(eddy_json_str(sp, "status", "ok"), "ok") ? eddy_json_str(sp, "error", "")
                                                                : "");
        print_attr(out, indent, "tokens in", json_object_get(a, "gen_ai.usage.input_tokens"));
        print_attr(out, indent, "tokens out", json_object_get(a, "gen_ai.usage.output_tokens"));
        print_attr(out, indent, "finish", json_object_get(a, "gen_ai.response.finish_reasons"));
        print_attr(out, indent, "attempts", json_object_get(a, "eddy.llm.attempts"));
        print_attr(out, indent, "tool calls", json_object_get(a, "eddy.llm.tool_calls"));
        print_attr(out, indent, "answer", json_object_get(a, "eddy.llm.content"));
        print_attr(out, indent, "arguments", json_object_get(a, "gen_ai.tool.call.arguments"));
        print_attr(out, indent, "result", json_object_get(a, "gen_ai.tool.call.result"));
        print_tree(out, spans, eddy_json_str(sp, "span_id", ""), depth + 1, t0);
    }
}

int eddy_trace_print_show(const char *path, const char *id, FILE *out, eddy_err *err)
{
    json_t *t;
    json_t *spans;
    int rc = eddy_trace_get_json(path, id, &t, err);
    if (rc)
        return rc;
    spans = json_object_get(t, "spans");
    fprintf(out, "trace %s  agent=%s key=%s event=%s status=%s\n", eddy_json_str(t, "trace_id", ""),
            eddy_json_str(t, "agent", "?"), eddy_json_str(t, "key", "?"),
            eddy_json_str(t, "event_id", "?"), eddy_json_str(t, "status", "?"));
    print_tree(out, spans, NULL, 0, eddy_json_int(json_array_get(spans, 0), "start_ns", 0));
    json_decref(t);
    return 0;
}
