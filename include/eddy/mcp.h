/*
 * include/eddy/mcp.h - the MCP (Model Context Protocol) client: tools served
 * by other processes, over stdio or streamable HTTP.
 *
 * A job's top-level `mcp:` mapping names servers:
 *
 *   mcp:
 *     everything: { command: [node, srv.js, stdio], env: {K: V}, cwd: DIR, timeout: 60s }
 *     remote:     { url: http://127.0.0.1:3001/mcp, headers: {Authorization: ...} }
 *
 * One eddy_mcp manager per process owns every server. It runs on its own
 * thread with its own uv loop (child processes, pipes, a curl multi), so no
 * worker loop ever waits for it. Stdio servers are spawned at start and
 * restarted with exponential backoff (250 ms doubling to 30 s; reset after a
 * server stayed up 10 s) whenever they exit; HTTP servers that cannot be
 * reached are retried the same way. A server that is down at start does not
 * fail anything: its tools appear when it comes up. Tools are discovered with
 * `initialize` + `tools/list` (all pages) when a server comes up and again on
 * `notifications/tools/list_changed`.
 *
 * What other threads see:
 *  - the catalog: an immutable, refcounted snapshot of every server's state
 *    and last tool list, with a version that grows whenever a tool list
 *    changes. A server that went down keeps its last list (agents still see
 *    the tools; calls fail with a clear error until it is back);
 *  - calls: through a port, one per caller loop, which owns a uv_async_t on
 *    that loop; the callback of a call runs on the caller's loop.
 *
 * Errors a call's callback sees (status, message):
 *   EDDY_ETOOL     "mcp tool 'srv/echo': <the server's text>" (isError, or a
 *                  JSON-RPC error answer)
 *                  or an HTTP 4xx ("mcp tool 'srv/x': URL answered HTTP 400: ...")
 *   EDDY_ETIMEDOUT "mcp tool 'srv/slow' timed out after 5s" (also "... waiting
 *                  for the server to start (<why>)")
 *   EDDY_EIO       "mcp server 'srv' exited during the call (killed by signal 9)"
 *   EDDY_ENET      "mcp server 'srv' is not reachable: <why>", "mcp server
 *                  'srv' went away during the call (<why>)" (HTTP), or HTTP 5xx
 *   EDDY_ECANCELED the manager stopped, or the port closed, first.
 *
 * Typical use (a job): eddy_mcp_config_new(job->mcp, ...) -> eddy_mcp_new ->
 * eddy_mcp_start at job start (optionally eddy_mcp_wait_ready with a short
 * timeout so the first runs see the tools); each worker opens a port on its
 * loop (eddy_mcp_port_new), reads eddy_mcp_catalog_get when
 * eddy_mcp_version differs from the catalog it built its tools from, and
 * calls through its port; at the end each worker closes its port, then the
 * controller calls eddy_mcp_stop and eddy_mcp_free. Tool names the model
 * sees are the caller's choice (OpenAI-style names allow [A-Za-z0-9_-]
 * only: a server name may hold '.', a tool name anything the server says).
 *
 * Hostile servers: a message is at most EDDY_MCP_MAX_MESSAGE bytes (longer
 * lines are dropped and logged); invalid JSON is logged and skipped; answers
 * to unknown ids are ignored; server stderr goes to eddy's log line by line
 * ("mcp everything: ..."), each line cut at 2 KiB, at most 50 lines a second.
 */
#ifndef EDDY_MCP_H
#define EDDY_MCP_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

/* The protocol revision eddy asks for; whatever the server answers is used. */
#define EDDY_MCP_PROTOCOL_VERSION "2025-11-25"
#define EDDY_MCP_MAX_MESSAGE (16u << 20)
#define EDDY_MCP_DEFAULT_TIMEOUT_MS 60000
#define EDDY_MCP_DEFAULT_STARTUP_TIMEOUT_MS 30000
#define EDDY_MCP_MAX_SERVERS 64

typedef struct eddy_mcp eddy_mcp;
typedef struct eddy_mcp_config eddy_mcp_config;
typedef struct eddy_mcp_port eddy_mcp_port;
typedef struct eddy_mcp_catalog eddy_mcp_catalog;

/* -- configuration ---------------------------------------------------------- */

/* One problem of a configuration: PATH is the JSON pointer below the `mcp:`
 * mapping ("/everything/command/0"; its key rather than its value when KEY),
 * MSG names the server and the field. */
typedef void (*eddy_mcp_problem_fn)(void *ud, const char *path, int key, const char *msg);

/*
 * Check and copy the `mcp:` mapping MCP (borrowed; NULL or an empty mapping
 * gives a configuration without servers). Per server: exactly one of
 * `command` (a non-empty list of strings; `env` a mapping of strings: the
 * child gets these and only HOME, LOGNAME, PATH, SHELL, TERM, USER, LANG,
 * LC_ALL, TMPDIR, TZ of eddy's environment; `cwd` a string) or `url` (http:// or https://;
 * `headers` a mapping of strings); `timeout` and `startup_timeout` are durations ("5s", "250ms", or
 * a number of seconds). Server names are 1-64 of [A-Za-z0-9_.-]. Every problem goes to PROBLEM (may
 * be NULL); the first also to ERR. Returns 0 and *OUT (free with eddy_mcp_config_free),
 * EDDY_ESCHEMA (*OUT NULL) or EDDY_ENOMEM. Pure; any thread.
 */
int eddy_mcp_config_new(const json_t *mcp, eddy_mcp_problem_fn problem, void *ud,
                        eddy_mcp_config **out, eddy_err *err);
void eddy_mcp_config_free(eddy_mcp_config *cfg);
/* Number of servers, and the name of server I (borrowed from CFG). */
size_t eddy_mcp_config_count(const eddy_mcp_config *cfg);
const char *eddy_mcp_config_name(const eddy_mcp_config *cfg, size_t i);

/* -- the manager ------------------------------------------------------------ */

/* New manager for CFG (copied: CFG may be freed afterwards). Nothing starts
 * until eddy_mcp_start. Returns 0 or EDDY_ENOMEM. Any thread. */
int eddy_mcp_new(const eddy_mcp_config *cfg, eddy_mcp **out, eddy_err *err);

/* Start the manager's thread: spawn the stdio servers, contact the HTTP
 * ones. Returns 0 (servers that fail are retried, never an error here) or
 * EDDY_EUV. Call once, from the thread that owns M. */
int eddy_mcp_start(eddy_mcp *m, eddy_err *err);

/* Block until every server has come up (tools listed) or failed its first
 * attempt, or TIMEOUT_MS passed. Returns 0 when all settled, EDDY_ETIMEDOUT
 * otherwise. For `eddy check`, tests, and a job that wants its tools before
 * the first event. Any thread except the manager's. */
int eddy_mcp_wait_ready(eddy_mcp *m, int64_t timeout_ms);

/* Stop: fail every call in flight with EDDY_ECANCELED, end HTTP sessions
 * (DELETE, 1 s at most), SIGTERM each stdio server's process group and
 * SIGKILL it after 2 s, then join the thread. Blocks until done (about 2 s
 * at worst). Idempotent; the thread that started M. Ports should be closed
 * first (a port left open only receives cancellations). */
void eddy_mcp_stop(eddy_mcp *m);

/* Stop if needed, and free M. Every port must have been closed (its close
 * callback need not have run). NULL-safe. */
void eddy_mcp_free(eddy_mcp *m);

/* The catalog's version: grows by one whenever a server's tool list
 * changes. Atomic, any thread: compare with a catalog's to know whether to
 * rebuild. */
uint64_t eddy_mcp_version(const eddy_mcp *m);

/* -- the catalog ------------------------------------------------------------ */

/* One tool of one server. All borrowed from the catalog it came from, valid
 * until that catalog is released; INPUT_SCHEMA is the server's JSON schema
 * (an object; never NULL). Read only: do not incref or change it from
 * another thread without a deep copy (json_deep_copy). */
typedef struct eddy_mcp_tool {
    const char *server;
    const char *name;
    const char *description; /* "" when the server gave none */
    const json_t *input_schema;
} eddy_mcp_tool;

/* The current snapshot (new reference: release it with
 * eddy_mcp_catalog_release). Never NULL after a successful eddy_mcp_new. Any
 * thread; takes a mutex for a few instructions. */
eddy_mcp_catalog *eddy_mcp_catalog_get(eddy_mcp *m);
/* Drop a reference (any thread); NULL-safe. */
void eddy_mcp_catalog_release(eddy_mcp_catalog *c);
uint64_t eddy_mcp_catalog_version(const eddy_mcp_catalog *c);

/* Tools of every server, in server order then the server's order. */
size_t eddy_mcp_catalog_count(const eddy_mcp_catalog *c);
const eddy_mcp_tool *eddy_mcp_catalog_tool(const eddy_mcp_catalog *c, size_t i);
/* The tool TOOL of SERVER, or NULL. */
const eddy_mcp_tool *eddy_mcp_catalog_find(const eddy_mcp_catalog *c, const char *server,
                                           const char *tool);

/* Servers as configured, with what the manager knows of them. */
size_t eddy_mcp_catalog_servers(const eddy_mcp_catalog *c);
typedef struct eddy_mcp_server_info {
    const char *name;
    const char *transport; /* "stdio" or "http" */
    int up;                /* initialized and listed, and not down since */
    int ever_up;           /* has listed tools at least once */
    const char *error;     /* why it is down (or why its last attempt failed), or NULL */
    size_t ntools;
} eddy_mcp_server_info;
/* Fill *INFO for server I (strings borrowed from C). Returns 0 or EDDY_ERANGE. */
int eddy_mcp_catalog_server(const eddy_mcp_catalog *c, size_t i, eddy_mcp_server_info *info);

/* -- calls ------------------------------------------------------------------ */

/* The end of a call. On success STATUS is 0 and RESULT the answer for the
 * model: the server's structuredContent when it gave one, else the text of
 * its text contents joined with "\n" (a JSON string), else (images,
 * resources) its content array. On failure STATUS < 0, RESULT NULL and
 * ERR.msg the message for the model (see the list at the top). RESULT is
 * borrowed: json_incref it to keep it past the callback. */
typedef struct eddy_mcp_result {
    int status;
    json_t *result;
    eddy_err err;
    uint64_t duration_ms; /* from eddy_mcp_call to the answer */
} eddy_mcp_result;

typedef void (*eddy_mcp_cb)(eddy_mcp_result *res, void *ud);

/* A port: where the answers of calls made from one loop arrive. Owns a
 * uv_async_t on LOOP. Returns 0 or EDDY_ENOMEM / EDDY_EUV. LOOP's thread. */
int eddy_mcp_port_new(eddy_mcp *m, uv_loop_t *loop, eddy_mcp_port **out, eddy_err *err);

/* Close P, asynchronously: answers already back are delivered, every
 * other call still in flight through P gets its callback with
 * EDDY_ECANCELED (its answer, when it comes, is dropped by the manager),
 * then CB (may be NULL) runs, all from LOOP, after this returns; P is freed
 * after CB. No eddy_mcp_call on P after this. May be called from a call's
 * callback. LOOP's thread. */
void eddy_mcp_port_close(eddy_mcp_port *p, void (*cb)(void *ud), void *ud);

/* Calls started through P and not yet delivered. LOOP's thread. */
int eddy_mcp_port_active(const eddy_mcp_port *p);

/*
 * Call TOOL of SERVER with ARGS (borrowed, copied; NULL: {}) on the manager's
 * thread. TIMEOUT_MS: 0 for the server's `timeout`; past it the call fails
 * with EDDY_ETIMEDOUT and the server is sent notifications/cancelled. A call
 * to a server that is starting or restarting waits for it, within the
 * timeout: until `startup_timeout` has passed since the server went down (or
 * first started); after that, calls fail at once (EDDY_ENET) until it is up.
 * Returns 0 and CB runs exactly once later from P's loop (never inside this
 * call), or EDDY_ENOENT (no such server), EDDY_ECLOSING (P closing, manager
 * stopped), EDDY_ENOMEM with ERR set and CB never runs. P's loop thread.
 */
int eddy_mcp_call(eddy_mcp_port *p, const char *server, const char *tool, const json_t *args,
                  int64_t timeout_ms, eddy_mcp_cb cb, void *ud, eddy_err *err);

/* -- probe (eddy check) ----------------------------------------------------- */

/*
 * Start every server of CFG, wait up to TIMEOUT_MS for each to list its
 * tools, stop them. *REPORT (new) is an object keyed by server name:
 * {"transport": "stdio", "reachable": true, "tools": ["echo", ...]} or
 * {"transport": "http", "reachable": false, "error": "connection refused ..."}.
 * Returns 0, or EDDY_ENOMEM / EDDY_EUV. Blocks; any thread.
 */
int eddy_mcp_probe(const eddy_mcp_config *cfg, int64_t timeout_ms, json_t **report, eddy_err *err);

#endif
