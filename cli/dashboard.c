/*
 * cli/dashboard.c - `eddy dashboard [JOB.yaml|TRACES.db] [--listen HOST:PORT]`:
 * the dashboard of a trace store on its own (no job running: no /metrics).
 * Serves until SIGINT or SIGTERM.
 */
#include "cli_int.h"
#include "eddy/agent.h"
#include "eddy/buf.h"
#include "eddy/trace.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char kDashUsage[] =
    "usage: eddy dashboard [JOB.yaml|TRACES.db] [--listen HOST:PORT]\n"
    "  serves the trace store's dashboard and its JSON API (read-only) until Ctrl-C;\n"
    "  HOST:PORT defaults to the job's dashboard.listen, else 127.0.0.1:8765; an address\n"
    "  other than loopback needs a token (dashboard.token or EDDY_DASHBOARD_TOKEN)\n";

int eddy_cli_dashboard(int argc, char **argv, int quiet)
{
    const char *store = NULL, *listen = NULL;
    eddy_job *job = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--listen") && i + 1 < argc) {
            listen = argv[++i];
        } else if (!strncmp(a, "--listen=", 9)) {
            listen = a + 9;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(kDashUsage, stdout);
            return 0;
        } else if (a[0] == '-' || store) {
            fprintf(stderr, "eddy dashboard: unexpected '%s'\n%s", a, kDashUsage);
            return 2;
        } else {
            store = a;
        }
    }
    char *path = eddy__cli_store_path(store, 1);
    if (!path)
        return 2;
    if (store && (eddy__cli_ends_with(store, ".yaml") || eddy__cli_ends_with(store, ".yml"))) {
        eddy_diag d;
        eddy_diag_init(&d);
        if (eddy_job_load(store, EDDY_JOB_PATHS, &job, &d))
            job = NULL; /* eddy__cli_store_path has read it already: said why */
        eddy_diag_free(&d);
    }
    const char *token =
        job && job->dashboard_token ? job->dashboard_token : getenv("EDDY_DASHBOARD_TOKEN");
    if (!listen)
        listen = job && job->dashboard_listen ? job->dashboard_listen : "127.0.0.1:8765";
    eddy_http_opts o = {listen, token && *token ? token : NULL, path,
                        NULL,   job ? job->state_path : NULL,   NULL};
    eddy_http *h;
    eddy_err e;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before the server's thread: it inherits it */
    int rc = eddy_http_start(&o, &h, &e);
    if (!rc) {
        int sig;
        if (!quiet)
            fprintf(stderr, "eddy: dashboard of %s at %s (Ctrl-C stops it)\n", path,
                    eddy_http_url(h));
        sigwait(&set, &sig);
        eddy_http_stop(h);
    } else {
        fprintf(stderr, "eddy: %s\n", e.msg);
    }
    eddy_job_free(job);
    eddy_free(path);
    return rc ? (rc == EDDY_EINVAL ? 2 : 1) : 0;
}
