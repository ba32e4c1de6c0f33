/*
 * include/eddy/tools.h - the tool registry and the Lua host.
 *
 * A tool is a Lua 5.4 file returning eddy.tool{ name, description, params,
 * run }. One host (one lua_State) per worker loop; each call runs as a
 * coroutine so host functions that wait (eddy.sleep) yield to the loop and
 * other calls go on. The environment is an allowlist: no io, os.execute,
 * debug, package, require, or bytecode loading.
 *
 * Lua values <-> JSON: arrays and objects are told apart by a metatable
 * (eddy.array / eddy.object) when they come from JSON, otherwise a table
 * whose keys are exactly 1..n is an array; integers stay integers, floats
 * floats; JSON null is eddy.null.
 */
#ifndef EDDY_TOOLS_H
#define EDDY_TOOLS_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

typedef struct eddy_tools eddy_tools;
typedef struct eddy_tool eddy_tool;

/* A memory document shared by the calls of one run: the Lua side sees it as
 * ctx.memory. Created from JSON, read back as JSON at the end of the run. */
typedef struct eddy_tool_memory eddy_tool_memory;

/* New host on LOOP. BASE_DIR confines eddy.file.read (the job's folder).
 * Returns 0 or EDDY_ENOMEM/EDDY_ELUA. */
int eddy_tools_new(uv_loop_t *loop, const char *base_dir, eddy_tools **out, eddy_err *err);
/* Make eddy.file.read refuse PATH (and its -wal, -shm and -journal files):
 * eddy's own stores, which hold every key's data. Copied. */
int eddy_tools_deny_file(eddy_tools *h, const char *path, eddy_err *err);
/* End every call in flight now: each callback runs once, later, from the
 * loop, with EDDY_ECANCELED. For shutdown. Loop thread only. */
void eddy_tools_cancel_all(eddy_tools *h);
/* Calls started and not yet delivered. */
int eddy_tools_active(const eddy_tools *h);
/* Calls not yet freed: those delivered, and those abandoned (their wall
 * budget, eddy_tools_cancel_all) whose native work has not answered yet.
 * H may be freed only when this is 0. */
int eddy_tools_pending(const eddy_tools *h);
/* Free the host. All calls must have completed. */
void eddy_tools_free(eddy_tools *h);

/* Budgets of one Lua tool call (and of running a tool file's top-level code
 * at load). A field of 0 takes the default below. Exceeding one ends that
 * call with a tool error naming the budget ("instruction budget of 200000000
 * exceeded", "memory budget of 64 MiB exceeded", "wall-clock budget of 30s
 * exceeded"); the worker goes on. */
typedef struct eddy_tool_limits {
    int64_t instructions; /* Lua VM instructions (and C library work, charged) */
    int64_t memory;       /* bytes of Lua heap the call may hold */
    int64_t wall_ms;      /* wall-clock deadline from the call's start */
} eddy_tool_limits;

#define EDDY_TOOL_DEFAULT_INSTRUCTIONS 200000000LL
#define EDDY_TOOL_DEFAULT_MEMORY (64LL << 20)
#define EDDY_TOOL_DEFAULT_WALL_MS 30000LL
/* Upper bounds a job may configure. */
#define EDDY_TOOL_MAX_INSTRUCTIONS 100000000000LL
#define EDDY_TOOL_MAX_MEMORY (4LL << 30)
#define EDDY_TOOL_MAX_WALL_MS (24LL * 3600 * 1000)

/* Load the tool file PATH, run its chunk under LIMITS (NULL: defaults), and
 * register the tool it returns. Loading the same PATH with the same limits
 * again returns the tool already loaded. Errors name the place:
 * "tools/x.lua:5:12: 'end' expected", or
 * "tools/x.lua:7:5: parameter 'id': unknown type 'strng'". */
int eddy_tools_load(eddy_tools *h, const char *path, const eddy_tool_limits *limits,
                    eddy_tool **out, eddy_err *err);

/* What a job's tool entry gives one Lua tool besides its file:
 * `{lua: tools/orders.lua, config: {...}, http: {allow: [...]}, limits: {...},
 * timeout: 5s}`. All borrowed for the call; the tool keeps copies. */
typedef struct eddy_tool_opts {
    eddy_tool_limits limits; /* 0 fields: the defaults */
    json_t *config;          /* ctx.config of every call (an object), or NULL: {} */
    json_t *http;            /* the entry's `http:` settings (eddy.http reads them), or NULL */
    /* values the job took from the environment for this tool (its secrets):
     * never shown in the tool's error messages (traces redact them too, as
     * the job hands them to the trace store) */
    const char *const *secrets;
    size_t nsecrets;
    /* the file's text as the job's version read it (LEN bytes; borrowed), or
     * NULL to read PATH now: a version's tools are what it checked, not what
     * the file holds when a worker builds them later */
    const char *source;
    size_t source_len;
} eddy_tool_opts;

/* eddy_tools_load with OPTS (NULL: as eddy_tools_load with defaults). The
 * same file with other options (limits, config, http) is another tool. */
int eddy_tools_load_opts(eddy_tools *h, const char *path, const eddy_tool_opts *opts,
                         eddy_tool **out, eddy_err *err);
/* The tool's ctx.config (an object) and `http:` settings; borrowed, NULL
 * when the entry gave none. */
json_t *eddy_tool_config(const eddy_tool *t);
json_t *eddy_tool_http(const eddy_tool *t);
/* Copy MSG into BUF (size N) with T's secrets replaced by [REDACTED]; BUF. */
const char *eddy_tool_redact(const eddy_tool *t, const char *msg, char *buf, size_t n);

const char *eddy_tool_name(const eddy_tool *t);
const char *eddy_tool_path(const eddy_tool *t);
/* What the model is told the tool does; borrowed, never NULL. */
const char *eddy_tool_description(const eddy_tool *t);
/* The JSON schema of the parameters; borrowed. */
json_t *eddy_tool_schema(const eddy_tool *t);

/* Check ARGS against SCHEMA. Returns 0 or EDDY_ESCHEMA with ERR naming the
 * argument ("argument 'order_id': expected string, got integer"). */
int eddy_tool_validate_args(json_t *schema, json_t *args, eddy_err *err);

/* Memory documents for ctx.memory. DOC is borrowed (copied in). */
int eddy_tool_memory_new(eddy_tools *h, json_t *doc, eddy_tool_memory **out, eddy_err *err);
/* Current content as JSON; new reference, NULL with ERR set when a tool
 * stored something that has no JSON form. */
json_t *eddy_tool_memory_json(eddy_tool_memory *m, eddy_err *err);
void eddy_tool_memory_free(eddy_tool_memory *m);

/* Result of a call. On success RESULT is the tool's return value as JSON;
 * on failure STATUS is negative and ERR.msg is the message to hand the model
 * ("lookup_order: tools/lookup_order.lua:9: attempt to index a nil value"). */
typedef struct eddy_tool_result {
    int status;
    json_t *result; /* new, or NULL; callee frees after the callback */
    eddy_err err;
    uint64_t duration_ms;
} eddy_tool_result;

typedef void (*eddy_tool_cb)(eddy_tool_result *res, void *ud);

/* ctx.state of a call: OP ("get", "set", "incr", "compare_and_set",
 * "delete") on the agent-wide KEY with A and B (borrowed; NULL when the
 * Lua side gave nil or nothing), answered at once with the result (new
 * reference; raised in Lua when NULL, with ERR; a JSON null is nil in Lua:
 * no key holds null). Loop thread. */
typedef json_t *(*eddy_tool_state_fn)(void *ud, const char *op, const char *key, json_t *a,
                                      json_t *b, eddy_err *err);

/* Context of a call visible to Lua as ctx: key, event (copied), memory,
 * and ctx.state when STATE is set (ctx.state.get(k), .set(k, v), .incr(k
 * [, by]), .compare_and_set(k, expected, new), .delete(k)). */
typedef struct eddy_tool_ctx {
    const char *key;
    json_t *event; /* borrowed */
    eddy_tool_memory *memory;
    eddy_tool_state_fn state;
    void *state_ud;
    /* the call's span (trace.h's eddy_span), parent of the spans native
     * functions record for it (eddy.http requests); borrowed, may be NULL,
     * must outlive the call's callback */
    struct eddy_span *span;
} eddy_tool_ctx;

/* A tool file may say `side_effects = true` (what it does outside cannot
 * simply be done again after a crash) and give `reconcile = function(args,
 * ctx)`: asked after a crash whether a call that had started happened; it
 * returns the call's result when it did, nil when it did not. */
int eddy_tool_side_effects(const eddy_tool *t);
int eddy_tool_has_reconcile(const eddy_tool *t);
/* Call T's reconcile with ARGS as eddy_tool_call calls run (same budgets,
 * same callback rules); the result is null when the action did not happen. */
int eddy_tool_reconcile(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                        eddy_tool_cb cb, void *ud, eddy_err *err);

/* Call T with ARGS (borrowed; validated against the schema first) as a
 * coroutine. Returns 0 and CB runs exactly once later on the loop (never
 * inside this call), or an error and CB never runs. */
int eddy_tool_call(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                   eddy_tool_cb cb, void *ud, eddy_err *err);

/* -- native functions and tools ---------------------------------------------
 *
 * Other modules add functions written in C to the Lua `eddy` table
 * (eddy.fluss.lookup) and tool kinds a job lists next to its Lua files
 * (`tools: [ {fluss_lookup: {table: db.t}} ]`), through a module registered
 * once at start-up. A native function starts its work on the host's loop and
 * answers later; the Lua caller's coroutine waits meanwhile, the loop goes on.
 */

/* The pending answer of one native function or native tool call. */
typedef struct eddy_tool_wait eddy_tool_wait;

/* Answer W, exactly once: STATUS 0 with RESULT (new reference, taken; NULL
 * is nil in Lua, null for a tool), or STATUS < 0 with MSG (borrowed) saying
 * what failed: a Lua function raises it, a tool call fails with it. May be
 * called inside the native function that received W; the caller resumes
 * from the loop either way. Loop thread only. */
void eddy_tool_wait_done(eddy_tool_wait *w, int status, json_t *result, const char *msg);
/* The tool whose call W belongs to (its eddy_tool_http, eddy_tool_config),
 * and that call's span (eddy_tool_ctx.span; NULL when none). Valid until W
 * is answered. Loop thread. */
const eddy_tool *eddy_tool_wait_tool(const eddy_tool_wait *w);
struct eddy_span *eddy_tool_wait_span(const eddy_tool_wait *w);
/* Ask for CANCEL(UD) when W's call is abandoned before W is answered (its
 * wall-clock budget ran out, eddy_tools_cancel_all): the work should then
 * stop and answer W soon (the answer is dropped). At most one per wait;
 * called at most once, from the loop, never after W was answered. */
void eddy_tool_wait_on_cancel(eddy_tool_wait *w, void (*cancel)(void *ud), void *ud);

/* A native function or tool body. STATE: the module's state on this host;
 * DATA: the native tool's data (NULL for functions); ARGS borrowed: the Lua
 * arguments as a JSON array (functions) or the checked arguments object
 * (tools). Start the work and return 0 (W is then answered once), or return
 * an error with ERR (W is never answered). */
typedef int (*eddy_native_fn)(void *state, void *data, json_t *args, eddy_tool_wait *w,
                              eddy_err *err);

typedef struct eddy_native_reg {
    const char *name;
    eddy_native_fn fn;
} eddy_native_reg;

/* What a tool kind's factory fills in for one listed tool. */
typedef struct eddy_native_tool {
    char *name;        /* owned (eddy_malloc) */
    char *description; /* owned */
    json_t *params;    /* JSON schema of the arguments, owned */
    eddy_native_fn call;
    void *data; /* handed to CALL; freed with FREE_DATA */
    void (*free_data)(void *data);
} eddy_native_tool;

typedef struct eddy_tools_module {
    const char *name; /* Lua sees eddy.NAME; jobs configure it under NAME: */
    /* Open STATE on one host's LOOP at its first use. CFG: the job's
     * settings for this module, borrowed, may be NULL. */
    int (*open)(uv_loop_t *loop, const json_t *cfg, void **state, eddy_err *err);
    /* Release STATE from the loop (it may finish asynchronously). */
    void (*close)(void *state);
    const eddy_native_reg *fns; /* eddy.NAME.<fn>; ends with {NULL, NULL} */
    const char *tool_kind;      /* a tool kind this module provides, or NULL */
    /* Check the listed tool's CFG (borrowed) and fill T. MODCFG: the job's
     * settings for the module (may be NULL). Runs when tools load, before
     * the loop runs; it may block briefly (e.g. to read a table's schema). */
    int (*tool_new)(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t, eddy_err *err);
} eddy_tools_module;

/* Add a native tool to H that belongs to no module: DEF (its fields are
 * taken, also on failure: DEF is zeroed) says its name, description,
 * schema and body; its body gets STATE NULL. WHAT names it in messages
 * ("mcp server 'fs'"). The tool's wall-clock budget is the longest a job
 * may set: the native side (an MCP call's timeout) keeps its own time.
 * Loop thread. Returns 0 or EDDY_EINVAL (a field missing) / EDDY_ENOMEM. */
int eddy_tools_add_native(eddy_tools *h, eddy_native_tool *def, const char *what, eddy_tool **out,
                          eddy_err *err);

/* The data of native tool T when its body is CALL, else NULL (which module
 * a tool came from, for that module). */
void *eddy_tool_native_data(const eddy_tool *t, eddy_native_fn call);

/* Register M (borrowed for the life of the process) before any host is
 * created. Returns 0, EDDY_EEXIST for a name or kind already registered,
 * EDDY_ENOMEM. Not thread-safe: call from main. */
int eddy_tools_register_module(const eddy_tools_module *m);
/* Whether a registered module provides tool kind KIND. */
int eddy_tools_has_kind(const char *kind);
/* The job's module settings, an object keyed by module name (borrowed:
 * the host keeps a copy of its own). Call before the first tool loads. */
void eddy_tools_configure(eddy_tools *h, json_t *settings);
/* Register the tool of kind KIND configured by CFG (borrowed). Errors say
 * what is wrong with CFG; the caller adds where the tool is listed. */
int eddy_tools_load_native(eddy_tools *h, const char *kind, const json_t *cfg, eddy_tool **out,
                           eddy_err *err);
/* Release the module states of H from its loop (no call may be active);
 * eddy_tools_free afterwards. */
void eddy_tools_close(eddy_tools *h);

/* -- JSON <-> Lua, exposed for tests -------------------------------------- */
struct lua_State;
/* Push V (borrowed) onto L's stack. Returns 0 or EDDY_ENOMEM. */
int eddy_lua_push_json(struct lua_State *L, json_t *v);
/* Convert the value at IDX to JSON; new reference or NULL with ERR set. */
json_t *eddy_lua_to_json(struct lua_State *L, int idx, eddy_err *err);
/* The host's lua_State (tests only). */
struct lua_State *eddy_tools_lua(eddy_tools *h);

/* -- built-in tools and eddy.http ------------------------------------------------
 *
 * eddy.http.request{method, url, headers, body | json, timeout}, eddy.http.get
 * (url [, opts]) and eddy.http.post(url, body or table [, opts]) for Lua tools
 * (answering {status, headers, body, json}); the tool kinds http_request
 * (`{http_request: {url: "https://api.example.com/orders/{id}", params:
 * {...}}}`) and current_time. Requests reach only the hosts a tool's entry
 * allows (`http: {allow: [...]}` for Lua tools; the URL's own host plus
 * `allow:` for http_request), checked before any connection and again on
 * every redirect and for every address a name resolves to. See docs/tools.md.
 */

/* Register the http module (eddy.http, http_request) and current_time.
 * Call once from main before any host is created, like
 * eddy_tools_register_module. Returns 0, or EDDY_EEXIST / EDDY_ENOMEM. Not
 * thread-safe. */
int eddy_tools_register_builtins(void);

/* One allow-list entry of eddy.http or http_request: "host", "host:port",
 * "*.example.com[:port]", "[::1]:8080" -> {host (lower case), port (0: any)}
 * (new), or NULL with ERR saying what is wrong ("allow entry 'h:99999': the
 * port must be 1 to 65535"; EDDY_EINVAL, or EDDY_ENOMEM). S non-empty. */
json_t *eddy_http_allow_entry(const char *s, eddy_err *err);

#endif
