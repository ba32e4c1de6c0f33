/*
 * mcp/mcp_int.h - what the files of the MCP client share: the pure pieces
 * (line splitting, SSE parsing, result conversion; mcp/wire.c), the server
 * record of the manager thread and the two transports behind it.
 *
 * Everything below eddy_mcp_srv lives on the manager's thread only.
 */
#ifndef EDDY_MCP_INT_H
#define EDDY_MCP_INT_H

#include "eddy/buf.h"
#include "eddy/mcp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* -- wire.c: pure ------------------------------------------------------------ */

/* Splits a byte stream into lines ("\n", a "\r" before it dropped). A line
 * longer than MAX is reported once with LINE NULL and LEN its length so far,
 * and the rest of it, up to its newline, is skipped. */
typedef struct eddy__mcp_lines {
    eddy_buf buf;
    size_t max;
    int skipping;
    size_t skipped;
} eddy__mcp_lines;

typedef void (*eddy__mcp_line_fn)(void *ud, const char *line, size_t len);

void eddy__mcp_lines_init(eddy__mcp_lines *l, size_t max);
void eddy__mcp_lines_free(eddy__mcp_lines *l);
/* Feed N bytes; FN runs for each complete line. Returns 0 or EDDY_ENOMEM. */
int eddy__mcp_lines_feed(eddy__mcp_lines *l, const char *data, size_t n, eddy__mcp_line_fn fn,
                         void *ud);

/* Server-sent events (text/event-stream): lines end with \r\n, \n or \r;
 * "data:" lines of one event are joined with "\n"; lines starting with ':'
 * are comments; a blank line dispatches. An event larger than MAX is
 * dropped (FN gets DATA NULL). */
typedef struct eddy__mcp_sse {
    eddy_buf line, data;
    char event[64], id[256];
    size_t max;
    int has_data, cr, too_big;
} eddy__mcp_sse;

typedef void (*eddy__mcp_sse_fn)(void *ud, const char *event, const char *data, size_t len,
                                 const char *id);

void eddy__mcp_sse_init(eddy__mcp_sse *s, size_t max);
void eddy__mcp_sse_free(eddy__mcp_sse *s);
int eddy__mcp_sse_feed(eddy__mcp_sse *s, const char *data, size_t n, eddy__mcp_sse_fn fn, void *ud);

/* The result of tools/call RESULT (borrowed) as the model sees it: 0 and
 * *OUT (new), or EDDY_ETOOL (isError; ERR's message "mcp tool 'LABEL': TEXT")
 * or EDDY_EPARSE (not a result) with ERR set. */
int eddy__mcp_result_json(const json_t *result, const char *label, json_t **out, eddy_err *err);

/* A JSON-RPC message as a line: new string "…\n"; NULL on OOM. */
char *eddy__mcp_line(const json_t *msg, size_t *len);

/* -- config.c ---------------------------------------------------------------- */

enum { MCP_STDIO, MCP_HTTP };

typedef struct eddy__mcp_scfg {
    char *name;
    int kind;
    char **argv; /* NULL-ended */
    char **env;  /* "K=V", NULL-ended, added to eddy's environment */
    char *cwd;
    char *url;
    char **headers; /* "Name: value", NULL-ended */
    int64_t timeout_ms, startup_timeout_ms;
} eddy__mcp_scfg;

struct eddy_mcp_config {
    eddy__mcp_scfg *servers;
    size_t n;
};

int eddy__mcp_config_copy(const eddy_mcp_config *in, eddy_mcp_config **out);

/* -- manager.c: the manager thread ------------------------------------------- */

typedef struct mcall mcall;
typedef struct mproc mproc;
typedef struct hreq hreq;

/* A call. Made on a caller's loop, handed to the manager through its inbox,
 * handed back through the port's done list. Between the two it belongs to
 * the manager thread; ABANDONED (under the port's mutex) says the port
 * closed meanwhile and the manager frees it instead of handing it back. */
struct mcall {
    eddy_mcp_port *port;
    eddy_mcp_cb cb;
    void *ud;
    size_t srv;
    char *tool;
    json_t *args;
    int64_t timeout_ms;
    uint64_t start_ms, deadline_ms;
    int64_t rpc_id; /* 0 until sent */
    int status;
    json_t *result;
    eddy_err err;
    int abandoned;
    mcall *next;          /* inbox, a server's list, or the port's done list */
    mcall *pprev, *pnext; /* the port's outstanding list (caller thread) */
};

enum srv_state { S_IDLE, S_STARTING, S_UP, S_BACKOFF, S_STOPPED };

typedef struct srv {
    struct eddy_mcp *m;
    size_t idx;
    const eddy__mcp_scfg *cfg;
    int state;
    unsigned gen; /* grows at each (re)start: a stale transport event is ignored */
    int64_t next_id;
    int64_t init_id, list_id; /* in flight, or 0 */
    json_t *tools;            /* last published list (array of tool objects), or NULL */
    json_t *building;         /* tools/list pages gathered so far */
    int pages, relist;
    char *error; /* why it is down, or NULL */
    char *proto; /* protocol version the server answered */
    int fails;   /* attempts failed in a row */
    int64_t backoff_ms;
    uint64_t up_since, startup_deadline;
    uint64_t down_since; /* went down (or first started) and not up since, or 0 */
    int ever_up, settled;
    uv_timer_t retry;
    int retry_kind;
    unsigned eof_gen; /* RETRY_EOF: the start whose stdout closed */
    mcall *calls;     /* sent, awaiting answers */
    mcall *parked;    /* waiting for the server to come up */
    /* stdio */
    mproc *proc;
    /* http */
    char *session;
    hreq *get; /* the GET stream for server messages, or NULL */
    int get_unsupported;
} srv;

struct eddy_mcp {
    eddy_mcp_config *cfg;
    srv *srv;
    size_t nsrv;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t deadline; /* the earliest call deadline / startup deadline */
    uv_timer_t grace;    /* shutdown: SIGKILL what is left */
    int started, stopping, stopped, loop_ready;
    int quiet;   /* a probe: failures are told in its report, logged at debug */
    int closing; /* shutdown: handles being closed */
    int live_procs, live_hreqs;
    /* curl */
    void *multi;
    hreq *hreqs;
    int in_curl, reaping;
    uv_timer_t curl_timer;
    /* shared with other threads, under MU */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    mcall *inbox, *inbox_tail;
    int stop_asked;
    size_t settled;
    eddy_mcp_catalog *cat;
    atomic_uint_fast64_t version;
};

/* manager.c, for the transports */
void eddy__mcp_on_message(srv *s, json_t *msg);
/* The transport failed or the process ended: fail what is in flight, retry
 * with backoff. EXITED: a stdio process ended (the calls' message says so). */
void eddy__mcp_srv_down(srv *s, int exited, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A request the server answered without a JSON-RPC response (HTTP error). */
void eddy__mcp_rpc_failed(srv *s, int64_t id, int code, const char *msg);
void eddy__mcp_check_shutdown(struct eddy_mcp *m);
/* Open the GET stream of S again in MS (it ended while S is up). */
void eddy__mcp_retry_get(srv *s, uint64_t ms);
/* A stdio server closed its stdout: unless its exit follows soon, it is
 * taken down (and killed) as a server that cannot answer any more. */
void eddy__mcp_stdout_closed(srv *s);

/* stdio.c */
int eddy__mcp_stdio_start(srv *s, eddy_err *err);
int eddy__mcp_stdio_send(srv *s, const char *line, size_t len);
/* SIG to the process group of S's server, if it runs; detach it from S. */
void eddy__mcp_stdio_kill(srv *s, int sig, int detach);
void eddy__mcp_stdio_kill_all(struct eddy_mcp *m, int sig);

/* http.c */
int eddy__mcp_http_init(struct eddy_mcp *m);
/* POST MSG (a line without the newline is fine); ID: the request's id, or 0. */
int eddy__mcp_http_send(srv *s, const char *body, size_t len, int64_t id, int64_t timeout_ms);
void eddy__mcp_http_open_get(srv *s);
/* Drop S's requests in flight (a restart, a timed-out call when ID != 0). */
void eddy__mcp_http_abort(srv *s, int64_t id);
/* Shutdown: DELETE each session, abort the rest. */
void eddy__mcp_http_shutdown(struct eddy_mcp *m);
void eddy__mcp_http_abort_all(struct eddy_mcp *m);
void eddy__mcp_http_close(struct eddy_mcp *m);

#endif
