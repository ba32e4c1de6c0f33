/*
 * cli/state.c - `eddy state`: keys, get, history, positions, journal,
 * export, import, rm, vacuum on a job's store (include/eddy/state.h).
 *
 * The store is named by a job file (its checkpoint path, as the job loader
 * computes it), by its own path, or by nothing (the one .eddy/<job>/state.db
 * under the current folder). Reading commands open it read-only and work
 * while a job runs; writing commands take the store's lock and are refused
 * while a job holds it. Results on stdout, one line per item; errors on
 * stderr. Exit codes: 0 success, 1 failure, 2 usage.
 */
#include "eddy/eddy.h"
#include "eddy/state.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_int.h"

static const char kStateUsage[] =
    "usage: eddy state <command> ... [JOB.yaml|STATE.db]\n"
    "  keys [STORE] [--agent A] [--limit N]   agent, key, memory bytes, history runs\n"
    "  get KEY [STORE] [--agent A]            the key's memory document (JSON)\n"
    "  history KEY [STORE] [--agent A] [--limit N]\n"
    "                                         its history entries (JSON lines: seq, messages)\n"
    "  positions [STORE]                      source positions, sinks' committed lengths\n"
    "  journal KEY [STORE] [--agent A]        its journaled steps and finished runs still kept\n"
    "  export [STORE] [--output FILE]         every key's memory and history (JSONL)\n"
    "  import FILE|- [STORE]                  the reverse: replaces those keys' memory and\n"
    "                                         history (one transaction)\n"
    "  rm KEY [STORE] [--agent A]             delete a key's memory, history and journal\n"
    "  vacuum [STORE]                         VACUUM the store and truncate its WAL\n"
    "STORE: a job file (its checkpoint path) or the store itself; none: the one\n"
    ".eddy/<job>/state.db here. --agent is needed when several agents have the key.\n"
    "import, rm and vacuum refuse while a job runs on the store. A key that starts\n"
    "with '-' goes after '--'.\n";

enum { O_AGENT = 1, O_LIMIT = 2, O_OUTPUT = 4 };

typedef struct scmd {
    const char *name;
    const char *arg; /* the required argument ("KEY"), or NULL */
    int opts;        /* O_* it takes */
    int write;       /* needs EDDY_STATE_WRITE */
} scmd;

static const scmd kCmds[] = {
    {"keys", NULL, O_AGENT | O_LIMIT, 0},
    {"get", "KEY", O_AGENT, 0},
    {"history", "KEY", O_AGENT | O_LIMIT, 0},
    {"positions", NULL, 0, 0},
    {"journal", "KEY", O_AGENT, 0},
    {"export", NULL, O_OUTPUT, 0},
    {"import", "FILE", 0, 1},
    {"rm", "KEY", O_AGENT, 1},
    {"vacuum", NULL, 0, 1},
};

typedef struct sargs {
    const scmd *cmd;
    const char *arg, *store, *agent, *output;
    long limit;
    int quiet, given; /* O_* given */
} sargs;

static int usage_of(const scmd *c)
{
    fprintf(stderr, "usage: eddy state %s%s%s [JOB.yaml|STATE.db]%s%s%s\n", c->name,
            c->arg ? " " : "", c->arg ? c->arg : "", c->opts & O_AGENT ? " [--agent A]" : "",
            c->opts & O_LIMIT ? " [--limit N]" : "", c->opts & O_OUTPUT ? " [--output FILE]" : "");
    return 2;
}

static int parse(int argc, char **argv, int quiet, sargs *a)
{
    static const struct option kOpts[] = {{"agent", required_argument, NULL, 'a'},
                                          {"limit", required_argument, NULL, 'n'},
                                          {"output", required_argument, NULL, 'o'},
                                          {"quiet", no_argument, NULL, 'q'},
                                          {"log-level", required_argument, NULL, 'L'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    const char *pos[3];
    int c, npos = 0;
    memset(a, 0, sizeof(*a));
    a->quiet = quiet;
    for (size_t i = 0; i < sizeof(kCmds) / sizeof(kCmds[0]); i++)
        if (!strcmp(argv[2], kCmds[i].name))
            a->cmd = &kCmds[i];
    if (!a->cmd) {
        fprintf(stderr, "eddy state: unknown command '%s'\n\n%s", argv[2], kStateUsage);
        return 2;
    }
    optind = 3;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", kOpts, NULL)) != -1) {
        int64_t n;
        eddy_log_level lvl;
        switch (c) {
        case 'a':
            a->agent = optarg;
            a->given |= O_AGENT;
            break;
        case 'n':
            if (eddy_parse_i64(optarg, &n) || n < 1 || n > 1000000000) {
                fprintf(stderr, "eddy: --limit wants a positive number, not '%s'\n", optarg);
                return 2;
            }
            a->limit = (long)n;
            a->given |= O_LIMIT;
            break;
        case 'o':
            a->output = optarg;
            a->given |= O_OUTPUT;
            break;
        case 'q':
            a->quiet = 1;
            break;
        case 'L':
            if (eddy_log_parse_level(optarg, &lvl)) {
                fprintf(stderr, "eddy: unknown log level '%s' (error, warn, info, debug, trace)\n",
                        optarg);
                return 2;
            }
            eddy_log_set_level((int)lvl);
            break;
        case 'h':
            fputs(kStateUsage, stdout);
            exit(0);
        default:
            return usage_of(a->cmd);
        }
    }
    while (optind < argc && npos < 3)
        pos[npos++] = argv[optind++];
    if (optind < argc || npos > (a->cmd->arg ? 2 : 1) || (a->cmd->arg && npos < 1)) {
        if (a->cmd->arg && npos < 1)
            fprintf(stderr, "eddy state %s: which %s?\n", a->cmd->name, a->cmd->arg);
        else
            fprintf(stderr, "eddy state %s: too many arguments\n", a->cmd->name);
        return usage_of(a->cmd);
    }
    if (a->given & ~a->cmd->opts) {
        const char *o = a->given & ~a->cmd->opts & O_AGENT   ? "--agent"
                        : a->given & ~a->cmd->opts & O_LIMIT ? "--limit"
                                                             : "--output";
        fprintf(stderr, "eddy state %s: %s is not one of its options\n", a->cmd->name, o);
        return usage_of(a->cmd);
    }
    if (a->cmd->arg)
        a->arg = pos[0];
    if (npos > (a->cmd->arg ? 1 : 0))
        a->store = pos[npos - 1];
    return 0;
}

/* export --output FILE: written beside FILE first and renamed over it, so a
 * failed export never leaves half a backup where a whole one was. */
static int export_to(eddy_state *st, const sargs *a, eddy_err *e)
{
    char *tmp;
    FILE *f;
    long n = 0;
    int rc;
    if (!a->output || !strcmp(a->output, "-"))
        return eddy_state_export(st, stdout, &n, e);
    if (!(tmp = eddy_aprintf("%s.tmp%ld", a->output, (long)getpid())))
        return eddy_err_set(e, EDDY_ENOMEM, "out of memory");
    if (!(f = fopen(tmp, "w"))) {
        rc = eddy_err_set(e, EDDY_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        eddy_free(tmp);
        return rc;
    }
    rc = eddy_state_export(st, f, &n, e);
    if (fclose(f) && !rc)
        rc = eddy_err_set(e, EDDY_EIO, "cannot write '%s': %s", tmp, strerror(errno));
    if (!rc && rename(tmp, a->output))
        rc = eddy_err_set(e, EDDY_EIO, "cannot rename '%s' to '%s': %s", tmp, a->output,
                          strerror(errno));
    if (rc)
        unlink(tmp);
    else if (!a->quiet)
        fprintf(stderr, "eddy: %ld key%s exported to %s\n", n, n == 1 ? "" : "s", a->output);
    eddy_free(tmp);
    return rc;
}

static int import_from(eddy_state *st, const sargs *a, eddy_err *e)
{
    int std = !strcmp(a->arg, "-"), rc;
    FILE *f = std ? stdin : fopen(a->arg, "r");
    long n = 0;
    if (!f)
        return eddy_err_set(e, EDDY_ENOENT, "cannot read '%s': %s", a->arg, strerror(errno));
    rc = eddy_state_import(st, f, std ? "<stdin>" : a->arg, &n, e);
    if (!std)
        fclose(f);
    if (!rc)
        printf("%s: %ld key%s imported\n", eddy_state_path(st), n, n == 1 ? "" : "s");
    return rc;
}

static int run(eddy_state *st, const sargs *a, eddy_err *e)
{
    const char *c = a->cmd->name;
    int rc = 0, more = 0;
    if (!strcmp(c, "keys")) {
        rc = eddy_state_keys(st, a->agent, a->limit, stdout, &more, e);
        if (!rc && more && !a->quiet)
            fprintf(stderr, "eddy: more keys than --limit %ld\n", a->limit);
    } else if (!strcmp(c, "get")) {
        rc = eddy_state_get(st, a->agent, a->arg, stdout, e);
    } else if (!strcmp(c, "history")) {
        rc = eddy_state_history(st, a->agent, a->arg, a->limit, stdout, e);
    } else if (!strcmp(c, "positions")) {
        rc = eddy_state_positions(st, stdout, e);
    } else if (!strcmp(c, "journal")) {
        rc = eddy_state_journal(st, a->agent, a->arg, stdout, e);
    } else if (!strcmp(c, "export")) {
        rc = export_to(st, a, e);
    } else if (!strcmp(c, "import")) {
        rc = import_from(st, a, e);
    } else if (!strcmp(c, "rm")) {
        eddy_state_removed r;
        if (!(rc = eddy_state_rm(st, a->agent, a->arg, &r, e)))
            printf("%s: removed memory (%lld bytes), %lld history entr%s, %lld journal step%s\n",
                   eddy_state_path(st), (long long)(r.memory_bytes < 0 ? 0 : r.memory_bytes),
                   (long long)r.history, r.history == 1 ? "y" : "ies", (long long)r.steps,
                   r.steps == 1 ? "" : "s");
    } else if (!strcmp(c, "vacuum")) {
        int64_t before, after;
        if (!(rc = eddy_state_vacuum(st, &before, &after, e)))
            printf("%s: %lld bytes before, %lld after\n", eddy_state_path(st), (long long)before,
                   (long long)after);
    }
    if (!rc && fflush(stdout))
        rc = eddy_err_set(e, EDDY_EIO, "cannot write the output: %s", strerror(errno));
    return rc;
}

int eddy_cli_state(int argc, char **argv, int quiet)
{
    eddy_state *st = NULL;
    eddy_err e;
    sargs a;
    char *path;
    int rc;
    if (argc < 3 || !strcmp(argv[2], "help") || !strcmp(argv[2], "--help") ||
        !strcmp(argv[2], "-h")) {
        fputs(kStateUsage, argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    if ((rc = parse(argc, argv, quiet, &a)))
        return rc;
    eddy_fluss_register_connectors(); /* a job file may name a Fluss source */
    if (!(path = eddy__cli_store_path(a.store, 0)))
        return 2;
    eddy_err_clear(&e);
    rc = eddy_state_open(path, a.cmd->write ? EDDY_STATE_WRITE : 0, &st, &e);
    if (!rc)
        rc = run(st, &a, &e);
    eddy_state_close(st);
    eddy_free(path);
    if (rc && !(e.code == EDDY_EIO && e.cause == EPIPE)) /* `| head` stopped reading */
        fprintf(stderr, "eddy: %s\n", e.msg);
    return rc ? 1 : 0;
}
