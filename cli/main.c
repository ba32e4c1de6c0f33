/*
 * cli/main.c - the `eddy` command: run, check; the others' dispatch.
 *
 * Wires the modules together; holds no logic of its own beyond argument
 * parsing. Exit codes: 0 success, 1 runtime failure, 2 invalid job or usage.
 */
#include "eddy/eddy.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#ifdef EDDY_MIMALLOC
#include <mimalloc.h>
#endif

#include "cli_int.h"

/* How long `eddy check` gives each MCP server to list its tools. */
#define EDDY_MCP_PROBE_MS 15000

static const char kUsage[] =
    "usage: eddy <command> [options]\n"
    "\n"
    "commands:\n"
    "  run JOB.yaml      run a job to the end of its input\n"
    "      --input FILE        events to read (JSONL; - for stdin), overrides source\n"
    "      --output FILE       where outputs go (JSONL; - for stdout), overrides sink\n"
    "      --dead-letter FILE  where failed events go, overrides dead_letter\n"
    "      --state FILE        memory store (SQLite), overrides checkpoint.path\n"
    "      --traces FILE       trace store (SQLite), overrides trace.path\n"
    "      --summary-json FILE write the end-of-run summary as JSON\n"
    "      --workers N         worker threads (default: the job's workers, else one per core)\n"
    "      --from-start        read the input from its start, not from the last checkpoint\n"
    "      --dashboard[=ADDR]  serve the dashboard and /metrics (ADDR: HOST:PORT; default the\n"
    "                          job's dashboard.listen, else 127.0.0.1:8765)\n"
    "      --watch             reload tools and prompts when their files change (as SIGHUP\n"
    "                          does); runs in progress finish with the version they began\n"
    "      --progress          a status line on stderr also when it is not a terminal\n"
    "      --no-progress       no status line, also on a terminal\n"
    "      --quiet             nothing on stderr but warnings and errors (no summary)\n"
    "  check JOB.yaml    validate a job and everything it references\n"
    "  trace ...         a job's runs: list (filtered by agent, key, event, status, model,\n"
    "                    tool, time, words of the input or output), show (eddy trace for\n"
    "                    details)\n"
    "  dashboard [JOB.yaml|TRACES.db] [--listen HOST:PORT]\n"
    "                    serve a trace store's dashboard and JSON API until Ctrl-C\n"
    "  state ...         a job's store: keys, get, history, positions, journal, export,\n"
    "                    import, rm, vacuum (eddy state for details)\n"
    "  fluss ...         Fluss tables: tables, create-table, drop-table, info, produce,\n"
    "                    scan, lookup (eddy fluss for details)\n"
    "  version\n"
    "\n"
    "global options, before or after the command:\n"
    "  --log-level error|warn|info|debug|trace   (or EDDY_LOG)\n"
    "  --quiet                                   warnings and errors only\n";

enum {
    OPT_INPUT = 256,
    OPT_OUTPUT,
    OPT_DEAD,
    OPT_STATE,
    OPT_TRACES,
    OPT_SUMMARY,
    OPT_QUIET,
    OPT_LOG,
    OPT_HELP,
    OPT_WORKERS,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_FROM_START,
    OPT_WATCH,
    OPT_DASHBOARD
};

static const struct option kOpts[] = {{"input", required_argument, NULL, OPT_INPUT},
                                      {"output", required_argument, NULL, OPT_OUTPUT},
                                      {"dead-letter", required_argument, NULL, OPT_DEAD},
                                      {"state", required_argument, NULL, OPT_STATE},
                                      {"traces", required_argument, NULL, OPT_TRACES},
                                      {"summary-json", required_argument, NULL, OPT_SUMMARY},
                                      {"quiet", no_argument, NULL, OPT_QUIET},
                                      {"log-level", required_argument, NULL, OPT_LOG},
                                      {"help", no_argument, NULL, OPT_HELP},
                                      {"workers", required_argument, NULL, OPT_WORKERS},
                                      {"progress", no_argument, NULL, OPT_PROGRESS},
                                      {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
                                      {"from-start", no_argument, NULL, OPT_FROM_START},
                                      {"dashboard", optional_argument, NULL, OPT_DASHBOARD},
                                      {"watch", no_argument, NULL, OPT_WATCH},
                                      {NULL, 0, NULL, 0}};

typedef struct args {
    eddy_run_opts run;
    int log_set;
    char *pos[4];
    int npos;
} args;

/* Options given before the command (`eddy --log-level debug check J`). */
typedef struct globals {
    int quiet, log_set;
} globals;

/* Whether EDDY_LOG names a level (it was read by eddy_log_set_level(-1)). */
static int env_level_valid(void)
{
    eddy_log_level lvl;
    const char *env = getenv("EDDY_LOG");
    return env && *env && eddy_log_parse_level(env, &lvl) == 0;
}

static int set_log_level(const char *s, args *a)
{
    eddy_log_level lvl;
    if (eddy_log_parse_level(s, &lvl)) {
        fprintf(stderr, "eddy: unknown log level '%s' (error, warn, info, debug, trace)\n", s);
        return 2;
    }
    eddy_log_set_level((int)lvl);
    if (a)
        a->log_set = 1;
    return 0;
}

static int parse(int argc, char **argv, const globals *g, args *a)
{
    int c;
    memset(a, 0, sizeof(*a));
    a->run.quiet = g->quiet;
    a->log_set = g->log_set;
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", kOpts, NULL)) != -1) {
        int64_t n;
        switch (c) {
        case OPT_INPUT:
            a->run.input = optarg;
            break;
        case OPT_OUTPUT:
            a->run.output = optarg;
            break;
        case OPT_DEAD:
            a->run.dead_letter = optarg;
            break;
        case OPT_STATE:
            a->run.state = optarg;
            break;
        case OPT_TRACES:
            a->run.traces = optarg;
            break;
        case OPT_SUMMARY:
            a->run.summary_json = optarg;
            break;
        case OPT_QUIET:
            a->run.quiet = 1;
            break;
        case OPT_WORKERS:
            if (eddy_parse_i64(optarg, &n) || n < 1 || n > EDDY_JOB_MAX_WORKERS) {
                fprintf(stderr, "eddy: --workers wants a number from 1 to %d, not '%s'\n",
                        EDDY_JOB_MAX_WORKERS, optarg);
                return 2;
            }
            a->run.workers = (int)n;
            break;
        case OPT_PROGRESS:
            a->run.progress = 1;
            break;
        case OPT_NO_PROGRESS:
            a->run.progress = -1;
            break;
        case OPT_DASHBOARD:
            a->run.dashboard = optarg ? optarg : "";
            break;
        case OPT_FROM_START:
            a->run.from_start = 1;
            break;
        case OPT_WATCH:
            a->run.watch = 1;
            break;
        case OPT_LOG:
            if (set_log_level(optarg, a))
                return 2;
            break;
        case 'h':
        case OPT_HELP:
            fputs(kUsage, stdout);
            exit(0);
        default:
            fputs(kUsage, stderr);
            return 2;
        }
    }
    while (optind < argc && a->npos < 4)
        a->pos[a->npos++] = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "eddy: too many arguments\n");
        return 2;
    }
    /* quiet: only what needs attention, unless a level was asked for */
    if (a->run.quiet && !a->log_set && !env_level_valid())
        eddy_log_set_level(EDDY_LOG_WARN);
    return 0;
}

/* `eddy check`: start the job's MCP servers, list what each offers, stop
 * them. An unreachable server is reported, not a problem: a job whose
 * server comes up later gets its tools then. */
static void check_mcp(const eddy_job *job)
{
    eddy_mcp_config *cfg = NULL;
    json_t *rep = NULL, *o;
    eddy_err err = {0};
    const char *name;
    if (!job->mcp || !json_object_size(job->mcp))
        return;
    if (eddy_mcp_config_new(job->mcp, NULL, NULL, &cfg, &err) ||
        eddy_mcp_probe(cfg, EDDY_MCP_PROBE_MS, &rep, &err)) {
        printf("mcp: could not probe the servers: %s\n", err.msg);
        eddy_mcp_config_free(cfg);
        return;
    }
    json_object_foreach(rep, name, o)
    {
        const char *tr = eddy_json_str(o, "transport", "?");
        json_t *tools = json_object_get(o, "tools"), *t;
        size_t i;
        if (!json_is_true(json_object_get(o, "reachable"))) {
            printf("mcp %s (%s): not reachable: %s\n", name, tr, eddy_json_str(o, "error", "?"));
            continue;
        }
        printf("mcp %s (%s): %zu tool%s:", name, tr, json_array_size(tools),
               json_array_size(tools) == 1 ? "" : "s");
        json_array_foreach(tools, i, t) printf("%s %s", i ? "," : "", json_string_value(t));
        printf("\n");
    }
    json_decref(rep);
    eddy_mcp_config_free(cfg);
}

static int cmd_check(args *a)
{
    eddy_diag d;
    eddy_job *job;
    int rc;
    if (a->npos != 1) {
        fprintf(stderr, "usage: eddy check JOB.yaml\n");
        return 2;
    }
    eddy_diag_init(&d);
    rc = eddy_job_load(a->pos[0], EDDY_JOB_TOOLS | EDDY_JOB_FILES, &job, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    if (rc) {
        fprintf(stderr, "%s: %zu problem%s found\n", a->pos[0], d.n, d.n == 1 ? "" : "s");
        eddy_diag_free(&d);
        return 2;
    }
    {
        size_t tools = 0;
        for (size_t i = 0; i < job->nagents; i++)
            tools += job->agents[i].ntools;
        printf("%s: ok (job '%s', %zu agent%s, %zu model%s, %zu tool%s)\n", a->pos[0], job->name,
               job->nagents, job->nagents == 1 ? "" : "s", job->nmodels,
               job->nmodels == 1 ? "" : "s", tools, tools == 1 ? "" : "s");
    }
    check_mcp(job);
    eddy_job_free(job);
    eddy_diag_free(&d);
    return 0;
}

/* Load FILE, printing all its problems and how many there are. FLAGS:
 * EDDY_JOB_TOOLS to also load its tools (to report every problem before a
 * run starts; not needed to read paths). IO (may be NULL): also check the
 * files a run opens, with these overrides. Problems with what the command
 * line gave ("--output: ...") are not sent to `eddy check`, which knows
 * nothing of them. */
static int load_job(const char *file, int flags, const eddy_job_io *io, eddy_job **job)
{
    eddy_diag d;
    size_t flagged = 0;
    int rc;
    eddy_diag_init(&d);
    rc = eddy_job_load_io(file, flags | (io ? EDDY_JOB_FILES : 0), io, job, &d);
    for (size_t i = 0; i < d.n; i++) {
        fprintf(stderr, "%s\n", d.msgs[i]);
        flagged += !strncmp(d.msgs[i], "--", 2);
    }
    if (rc && flagged && flagged == d.n)
        fprintf(stderr, "%s: %zu problem%s found with the command line\n", file, d.n,
                d.n == 1 ? "" : "s");
    else if (rc && flagged)
        fprintf(stderr,
                "%s: %zu problems found (%zu with the command line; `eddy check` shows the "
                "job's own)\n",
                file, d.n, flagged);
    else if (rc)
        fprintf(stderr, "%s: %zu problem%s found; see `eddy check`\n", file, d.n,
                d.n == 1 ? "" : "s");
    eddy_diag_free(&d);
    return rc;
}

/* Take the state store STATE for this run (eddy_store_lock): two runs on
 * one store would each overwrite the memory the other writes. Returns the
 * lock's descriptor, or -1 after saying why. */
static int lock_state(const char *state)
{
    eddy_err e;
    long holder;
    int fd = eddy_store_lock(state, &holder, &e);
    if (fd >= 0)
        return fd;
    if (e.code == EDDY_EEXIST && holder)
        fprintf(stderr, "eddy: another eddy run (pid %ld) is using %s\n", holder, state);
    else if (e.code == EDDY_EEXIST)
        fprintf(stderr, "eddy: another eddy run is using %s\n", state);
    else
        fprintf(stderr, "eddy: %s\n", e.msg);
    return -1;
}

static int cmd_run(args *a)
{
    eddy_job *job;
    int rc, lock;
    /* SIGHUP reloads tools and prompts once the job runs; before that (and
     * after) it must not end the process. Blocked in every thread made from
     * here on; the reloader unblocks it in this one (runtime/reload.c). */
    signal(SIGHUP, SIG_IGN);
    {
        sigset_t hup;
        sigemptyset(&hup);
        sigaddset(&hup, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &hup, NULL);
    }
    if (a->npos != 1) {
        fprintf(stderr, "usage: eddy run JOB.yaml [options]\n");
        return 2;
    }
    {
        const eddy_run_opts *o = &a->run;
        eddy_job_io io = {o->input, o->output, o->dead_letter, o->state, o->traces, NULL};
        if (load_job(a->pos[0], EDDY_JOB_TOOLS, &io, &job))
            return 2;
    }
    if ((lock = lock_state(a->run.state ? a->run.state : job->state_path)) < 0) {
        eddy_job_free(job);
        return 1;
    }
    rc = eddy_runtime_run(job, &a->run);
    eddy_job_free(job);
    close(lock);
    return rc;
}

char *eddy__cli_default_store(const char *file, const char *legacy, const char *what,
                              const char *upper)
{
    DIR *d = opendir(".eddy");
    struct dirent *de;
    char *found[8];
    size_t n = 0;
    if (legacy && access(legacy, F_OK) == 0)
        found[n++] = eddy_strdup(legacy);
    while (d && (de = readdir(d)) && n < sizeof(found) / sizeof(found[0])) {
        char *p = de->d_name[0] == '.' ? NULL : eddy_aprintf(".eddy/%s/%s", de->d_name, file);
        if (p && access(p, F_OK) == 0)
            found[n++] = p;
        else
            eddy_free(p);
    }
    if (d)
        closedir(d);
    if (n == 1)
        return found[0];
    if (n == 0)
        fprintf(stderr, "eddy: no %s in .eddy/ here: name the job (JOB.yaml) or the store (%s)\n",
                what, upper);
    else
        fprintf(stderr,
                "eddy: several %ss in .eddy/ here: name the job (JOB.yaml) or the store (%s):\n",
                what, upper);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "  %s\n", found[i]);
        eddy_free(found[i]);
    }
    return NULL;
}

int eddy__cli_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

char *eddy__cli_store_path(const char *arg, int traces)
{
    eddy_job *job;
    char *p;
    if (!arg &&
        traces) /* each job keeps its own; .eddy/traces.db is where older versions kept it */
        return eddy__cli_default_store("traces.db", ".eddy/traces.db", "trace store", "TRACES.db");
    if (!arg)
        return eddy__cli_default_store("state.db", NULL, "store", "STATE.db");
    if (!eddy__cli_ends_with(arg, ".yaml") && !eddy__cli_ends_with(arg, ".yml"))
        return eddy_strdup(arg);
    if (load_job(arg, EDDY_JOB_PATHS, NULL, &job))
        return NULL;
    p = eddy_strdup(traces ? job->trace_path : job->state_path);
    eddy_job_free(job);
    return p;
}

/* The options before the command: --log-level L (or --log-level=L), which
 * is applied now, and --quiet. Returns the index of the command in ARGV
 * (ARGC when there is none), or -1 with *RC the exit code. */
static int leading_options(int argc, char **argv, globals *g, int *rc)
{
    int i = 1;
    memset(g, 0, sizeof(*g));
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--quiet")) {
            g->quiet = 1;
        } else if (!strncmp(o, "--log-level=", 12) || !strcmp(o, "--log-level")) {
            const char *v = o[11] == '=' ? o + 12 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) {
                fprintf(stderr, "eddy: --log-level wants a level (error, warn, info, debug, "
                                "trace)\n");
                return *rc = 2, -1;
            }
            if ((*rc = set_log_level(v, NULL)))
                return -1;
            g->log_set = 1;
        } else if (!strcmp(o, "--help") || !strcmp(o, "-h") || !strcmp(o, "--version")) {
            break; /* handled as commands */
        } else {
            int known = 0;
            for (size_t k = 0; kOpts[k].name; k++)
                known |= !strncmp(o + 2, kOpts[k].name, strlen(kOpts[k].name));
            if (known)
                fprintf(stderr,
                        "eddy: '%s' goes after the command (eddy COMMAND ... %s); before it "
                        "only --log-level and --quiet\n",
                        o, o);
            else
                fprintf(stderr, "eddy: unknown option '%s'\n\n%s", o, kUsage);
            return *rc = 2, -1;
        }
    }
    return i;
}

int main(int argc, char **argv)
{
    args a;
    globals g;
    int rc, ci;
    const char *cmd, *env;
    eddy_alloc_install();
    eddy_log_set_level(-1);
    if ((env = getenv("EDDY_LOG")) && *env && !env_level_valid())
        fprintf(stderr,
                "eddy: warning: EDDY_LOG='%s' is not a log level, so it is ignored (levels: "
                "error, warn, info, debug, trace)\n",
                env);
    if ((ci = leading_options(argc, argv, &g, &rc)) < 0)
        return rc;
    if (ci > 1) { /* the command takes the place of argv[1], as if the options came after it */
        argv[ci - 1] = argv[0];
        argv += ci - 1;
        argc -= ci - 1;
    }
    cmd = argc > 1 ? argv[1] : NULL;
    /* A reader that goes away (`eddy run --output - | head`) or a peer that
     * closes its socket is an EPIPE to handle, not a death. `eddy fluss
     * scan` still relies on SIGPIPE to end under `| head`: it keeps the
     * default until it stops on a failed write itself. */
    if (!cmd || strcmp(cmd, "fluss"))
        signal(SIGPIPE, SIG_IGN);
    if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(kUsage, cmd ? stdout : stderr);
        return cmd ? 0 : 2;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("eddy %s\n", EDDY_VERSION);
#ifdef EDDY_MIMALLOC
        printf("allocator: mimalloc %d.%d.%d\n", mi_version() / 100, mi_version() / 10 % 10,
               mi_version() % 10);
#else
        printf("allocator: glibc malloc\n");
#endif
        return 0;
    }
    if (!strcmp(cmd, "fluss")) {
        if (g.quiet) {
            fprintf(stderr, "eddy: --quiet is not an option of `eddy fluss`\n");
            return 2;
        }
        rc = eddy_cli_fluss(argc, argv);
        curl_global_cleanup();
        return rc;
    }
    if (!strcmp(cmd, "trace")) {
        rc = eddy_cli_trace(argc, argv, g.quiet);
        curl_global_cleanup();
        return rc;
    }
    if (!strcmp(cmd, "dashboard")) {
        rc = eddy_cli_dashboard(argc, argv, g.quiet);
        curl_global_cleanup();
        return rc;
    }
    if (!strcmp(cmd, "state")) {
        rc = eddy_cli_state(argc, argv, g.quiet);
        curl_global_cleanup();
        return rc;
    }
    if ((rc = parse(argc, argv, &g, &a)))
        return rc;
    eddy_fluss_register_connectors();
    eddy_fluss_register_tools();
    eddy_tools_register_builtins();
    if (!strcmp(cmd, "run"))
        rc = cmd_run(&a);
    else if (!strcmp(cmd, "check"))
        rc = cmd_check(&a);
    else {
        fprintf(stderr, "eddy: unknown command '%s'\n\n%s", cmd, kUsage);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
