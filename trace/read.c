/*
 * trace/read.c - reading the trace store for `eddy trace list|show`.
 *
 * Opens its own read-only connection per call, so it works while a job is
 * writing (WAL) and from any thread. Output is plain text meant for a
 * terminal; `eddy_trace_get_json` gives the same data for programs.
 */
#include "eddy/trace.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <ctype.h>
#include <sqlite3.h>
#include <string.h>
#include <time.h>

static int has_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    int yes = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return yes;
}

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
        if (has_table(*db, "meta") || !has_table(*db, "spans") || tries)
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

int eddy_trace_print_list(const char *path, int limit, const char *status, FILE *out, eddy_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int rc, n = 0;
    if ((rc = open_ro(path, &db, err)))
        return rc;
    if (sqlite3_prepare_v2(db,
                           "SELECT trace_id, agent, key, event_id, status, start_ns, end_ns,"
                           " input_tokens, output_tokens, llm_calls, tool_calls, error FROM"
                           " (SELECT * FROM traces WHERE ?1 IS NULL OR status = ?1"
                           "  ORDER BY start_ns DESC LIMIT ?2) ORDER BY start_ns",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return rc;
    }
    if (status)
        sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit > 0 ? limit : 20);
    fprintf(out, "%-19s  %-32s  %-10s  %-12s  %-14s  %-5s  %8s  %11s  %3s  %5s\n", "started",
            "trace", "agent", "key", "event", "state", "ms", "tokens i/o", "llm", "tools");
    while (sqlite3_step(st) == SQLITE_ROW) {
        char when[32], tok[32];
        fmt_time(sqlite3_column_int64(st, 5), when, sizeof(when));
        snprintf(tok, sizeof(tok), "%lld/%lld", (long long)sqlite3_column_int64(st, 7),
                 (long long)sqlite3_column_int64(st, 8));
        fprintf(out, "%-19s  %-32s  %-10.10s  %-12.12s  %-14.14s  %-5s  %8.1f  %11s  %3d  %5d\n",
                when, col(st, 0), col(st, 1), col(st, 2), col(st, 3), col(st, 4),
                (double)(sqlite3_column_int64(st, 6) - sqlite3_column_int64(st, 5)) / 1e6, tok,
                sqlite3_column_int(st, 9), sqlite3_column_int(st, 10));
        if (!strcmp(col(st, 4), "error"))
            fprintf(out, "    error: %s\n", col(st, 11));
        n++;
    }
    if (n == 0)
        fprintf(out, "(no traces)\n");
    sqlite3_finalize(st);
    sqlite3_close(db);
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
     * so the traces of one moment share their first digits */
    snprintf(like, sizeof(like), "%s%%", id);
    snprintf(like_end, sizeof(like_end), "%%%s", id);
    if (sqlite3_prepare_v2(db,
                           "SELECT DISTINCT trace_id FROM spans WHERE trace_id LIKE ?1 OR "
                           "trace_id LIKE ?2 LIMIT 2",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, like, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, like_end, -1, SQLITE_STATIC);
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
