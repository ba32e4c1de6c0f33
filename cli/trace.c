/*
 * cli/trace.c - `eddy trace list|show`: find a job's runs in its trace
 * store (include/eddy/trace.h does the reading).
 *
 * The store is named by a job file (its trace.path, read without the
 * environment variables the rest of the job needs), by its own path, or by
 * nothing (the one under .eddy/ here). Every option value is checked here,
 * before the store is opened: a bad one is a usage error (exit 2) that
 * names the option and what it takes. Exit codes: 0 success, 1 failure
 * (no such trace, an unreadable store), 2 usage.
 */
#include "eddy/eddy.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_int.h"

static const char kTraceUsage[] =
    "usage: eddy trace list [JOB.yaml|TRACES.db] [options]   the newest runs, oldest first\n"
    "         --agent A  --key K  --event ID  --status ok|error\n"
    "         --model M  --tool T               runs that used that model / tool\n"
    "         --since T  --until T              T: a time ago (30m, 2h, 7d) or a local date\n"
    "                                           and time (2026-12-01, 2026-12-01 14:30,\n"
    "                                           2026-12-01T14:30:05)\n"
    "         --search TEXT                     runs whose input or output holds all its words\n"
    "         --limit N                         at most N runs (default 20)\n"
    "         --json                            the rows as a JSON array, newest first\n"
    "       eddy trace show ID [JOB.yaml|TRACES.db] [--json]   ID: a unique prefix or suffix\n"
    "       eddy trace show --event ID [JOB.yaml|TRACES.db] [--json]\n"
    "                                           the newest run of that event\n";

enum {
    T_AGENT = 256,
    T_KEY,
    T_EVENT,
    T_STATUS,
    T_MODEL,
    T_TOOL,
    T_SINCE,
    T_UNTIL,
    T_SEARCH,
    T_LIMIT,
    T_JSON,
    T_QUIET,
    T_LOG
};

typedef struct targs {
    eddy_trace_filter f;
    const char *pos[3];
    int npos, json, list_only; /* list_only: an option `show` does not take was given */
    const char *list_opt;
} targs;

/* A local date and time, "YYYY-MM-DD[( |T)HH:MM[:SS]]", into *NS. */
static int parse_local_time(const char *s, int64_t *ns)
{
    struct tm tm = {0}, back;
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0, m = 0;
    time_t t;
    /* digits where digits go: sscanf alone would take " 1" or "+1" */
    for (size_t i = 0; s[i] && i < 19; i++)
        if (!(isdigit((unsigned char)s[i]) || i == 4 || i == 7 || i == 10 || i == 13 || i == 16))
            return -1;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    if (s[n]) {
        if ((s[n] != ' ' && s[n] != 'T') || sscanf(s + n + 1, "%2d:%2d%n", &h, &mi, &m) != 2 ||
            m != 5)
            return -1;
        n += 1 + m;
        if (s[n] && (sscanf(s + n, ":%2d%n", &sec, &m) != 1 || m != 3 || s[n + m]))
            return -1;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    tm.tm_isdst = -1;
    back = tm;
    if ((t = mktime(&tm)) == (time_t)-1)
        return -1;
    /* mktime moves 2026-02-30 to March: such a date is refused, not read */
    if (tm.tm_year != back.tm_year || tm.tm_mon != back.tm_mon || tm.tm_mday != back.tm_mday ||
        tm.tm_min != back.tm_min || tm.tm_sec != back.tm_sec || h > 23)
        return -1;
    *ns = (int64_t)t * 1000000000;
    return 0;
}

/* --since / --until: a duration ago or a local date and time. */
static int parse_when(const char *opt, const char *s, int64_t *ns)
{
    int64_t ms;
    if (eddy_parse_duration_ms(s, &ms) == 0 && ms <= (int64_t)(eddy_wall_ns() / 1000000)) {
        *ns = (int64_t)eddy_wall_ns() - ms * 1000000;
        return 0;
    }
    if (parse_local_time(s, ns) == 0 && *ns > 0)
        return 0;
    fprintf(stderr,
            "eddy trace: %s wants a time ago (30m, 2h, 7d) or a local date and time "
            "(2026-12-01, 2026-12-01 14:30, 2026-12-01T14:30:05), not '%s'\n",
            opt, s);
    return 2;
}

/* A text option's value: not empty. */
static int text_opt(const char *opt, const char *v, const char *what, const char **out)
{
    if (!*v) {
        fprintf(stderr, "eddy trace: %s wants %s, not an empty value\n", opt, what);
        return 2;
    }
    *out = v;
    return 0;
}

static int set_opt(int c, const char *v, targs *a)
{
    int64_t n;
    eddy_log_level lvl;
    switch (c) {
    case T_AGENT:
        return text_opt("--agent", v, "an agent's name", &a->f.agent);
    case T_KEY:
        return text_opt("--key", v, "a key", &a->f.key);
    case T_EVENT:
        return text_opt("--event", v, "an event id", &a->f.event_id);
    case T_MODEL:
        return text_opt("--model", v, "a model's name", &a->f.model);
    case T_TOOL:
        return text_opt("--tool", v, "a tool's name", &a->f.tool);
    case T_SEARCH:
        return text_opt("--search", v, "words to find", &a->f.search);
    case T_STATUS:
        if (strcmp(v, "ok") && strcmp(v, "error")) {
            fprintf(stderr, "eddy trace: --status wants ok or error, not '%s'\n", v);
            return 2;
        }
        a->f.status = v;
        return 0;
    case T_SINCE:
        return parse_when("--since", v, &a->f.since_ns);
    case T_UNTIL:
        return parse_when("--until", v, &a->f.until_ns);
    case T_LIMIT:
        if (eddy_parse_i64(v, &n) || n < 1 || n > EDDY_TRACE_QUERY_MAX) {
            fprintf(stderr, "eddy trace: --limit wants a number from 1 to %d, not '%s'\n",
                    EDDY_TRACE_QUERY_MAX, v);
            return 2;
        }
        a->f.limit = (int)n;
        return 0;
    case T_LOG:
        if (eddy_log_parse_level(v, &lvl)) {
            fprintf(stderr, "eddy: unknown log level '%s' (error, warn, info, debug, trace)\n", v);
            return 2;
        }
        eddy_log_set_level((int)lvl);
        return 0;
    }
    return 0;
}

static int parse(int argc, char **argv, targs *a)
{
    static const struct option kOpts[] = {{"agent", required_argument, NULL, T_AGENT},
                                          {"key", required_argument, NULL, T_KEY},
                                          {"event", required_argument, NULL, T_EVENT},
                                          {"status", required_argument, NULL, T_STATUS},
                                          {"model", required_argument, NULL, T_MODEL},
                                          {"tool", required_argument, NULL, T_TOOL},
                                          {"since", required_argument, NULL, T_SINCE},
                                          {"until", required_argument, NULL, T_UNTIL},
                                          {"search", required_argument, NULL, T_SEARCH},
                                          {"limit", required_argument, NULL, T_LIMIT},
                                          {"json", no_argument, NULL, T_JSON},
                                          {"quiet", no_argument, NULL, T_QUIET},
                                          {"log-level", required_argument, NULL, T_LOG},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int c, idx, rc;
    memset(a, 0, sizeof(*a));
    optind = 2;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", kOpts, &idx)) != -1) {
        if (c == 'h') {
            fputs(kTraceUsage, stdout);
            exit(0);
        }
        if (c == '?') {
            fputs(kTraceUsage, stderr);
            return 2;
        }
        if (c == T_JSON)
            a->json = 1;
        else if ((rc = set_opt(c, optarg, a)))
            return rc;
        if (c != T_JSON && c != T_QUIET && c != T_LOG && c != T_EVENT && !a->list_opt)
            a->list_opt = kOpts[idx].name;
    }
    while (optind < argc && a->npos < 3)
        a->pos[a->npos++] = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "eddy trace: too many arguments\n\n%s", kTraceUsage);
        return 2;
    }
    return 0;
}

static int list(const targs *a, const char *db, eddy_err *e)
{
    json_t *rows;
    int rc;
    if (!a->json)
        return eddy_trace_print_list(db, &a->f, stdout, e);
    if ((rc = eddy_trace_query(db, &a->f, &rows, e)))
        return rc;
    eddy_json_dumpf(rows, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(rows);
    return 0;
}

/* `show ID` or `show --event ID`: the newest run of the event, and how
 * many it had (replayed after a crash, each try is a run). */
static int show(const targs *a, const char *id, const char *db, eddy_err *e)
{
    json_t *rows = NULL, *t;
    size_t runs = 0;
    int rc;
    if (a->f.event_id) {
        eddy_trace_filter f = {.event_id = a->f.event_id, .limit = EDDY_TRACE_QUERY_MAX};
        if ((rc = eddy_trace_query(db, &f, &rows, e)))
            return rc;
        if (!(runs = json_array_size(rows))) {
            json_decref(rows);
            return eddy_err_set(e, EDDY_ENOENT, "no run of event '%s'", a->f.event_id);
        }
        id = eddy_json_str(json_array_get(rows, 0), "trace_id", "");
    }
    if (!a->json) {
        if (runs > 1)
            printf("event %s has %zu runs; the newest:\n", a->f.event_id, runs);
        rc = eddy_trace_print_show(db, id, stdout, e);
    } else if (!(rc = eddy_trace_get_json(db, id, &t, e))) {
        if (runs)
            json_object_set_new(t, "event_runs", json_integer((json_int_t)runs));
        eddy_json_dumpf(t, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(t);
    }
    json_decref(rows);
    return rc;
}

int eddy_cli_trace(int argc, char **argv, int quiet)
{
    targs a;
    eddy_err e;
    char *db;
    const char *cmd, *id = NULL, *store = NULL;
    int rc;
    (void)quiet; /* nothing but results on stdout and errors on stderr */
    if ((rc = parse(argc, argv, &a)))
        return rc;
    cmd = a.npos ? a.pos[0] : "";
    if (!strcmp(cmd, "list") && a.npos <= 2) {
        store = a.npos == 2 ? a.pos[1] : NULL;
    } else if (!strcmp(cmd, "show") && a.list_opt) {
        fprintf(stderr, "eddy trace show: --%s is an option of `eddy trace list`\n", a.list_opt);
        return 2;
    } else if (!strcmp(cmd, "show") && a.f.event_id && a.npos <= 2) {
        store = a.npos == 2 ? a.pos[1] : NULL;
    } else if (!strcmp(cmd, "show") && !a.f.event_id && a.npos >= 2 && a.npos <= 3) {
        id = a.pos[1];
        store = a.npos == 3 ? a.pos[2] : NULL;
    } else {
        fputs(kTraceUsage, stderr);
        return 2;
    }
    if (!(db = eddy__cli_store_path(store, 1)))
        return 2;
    rc = !strcmp(cmd, "list") ? list(&a, db, &e) : show(&a, id, db, &e);
    eddy_free(db);
    if (rc) {
        fprintf(stderr, "eddy: %s\n", e.msg);
        return 1;
    }
    return 0;
}
