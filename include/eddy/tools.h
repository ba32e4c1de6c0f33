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
/* Calls started and not yet delivered. */
int eddy_tools_active(const eddy_tools *h);
/* Free the host. All calls must have completed. */
void eddy_tools_free(eddy_tools *h);

/* Load the tool file PATH, run its chunk, and register the tool it returns.
 * Errors name the place: "tools/x.lua:5:12: 'end' expected", or
 * "tools/x.lua:7:5: parameter 'id': unknown type 'strng'". */
int eddy_tools_load(eddy_tools *h, const char *path, eddy_tool **out, eddy_err *err);

const char *eddy_tool_name(const eddy_tool *t);
const char *eddy_tool_path(const eddy_tool *t);
/* OpenAI tool definition {type:"function", function:{name, description,
 * parameters}}; borrowed. */
json_t *eddy_tool_definition(const eddy_tool *t);
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

/* Context of a call visible to Lua as ctx: key, event (copied), memory. */
typedef struct eddy_tool_ctx {
    const char *key;
    json_t *event; /* borrowed */
    eddy_tool_memory *memory;
} eddy_tool_ctx;

/* Call T with ARGS (borrowed; validated against the schema first) as a
 * coroutine. Returns 0 and CB runs exactly once later on the loop (never
 * inside this call), or an error and CB never runs. */
int eddy_tool_call(eddy_tools *h, eddy_tool *t, json_t *args, const eddy_tool_ctx *ctx,
                   eddy_tool_cb cb, void *ud, eddy_err *err);

/* -- JSON <-> Lua, exposed for tests -------------------------------------- */
struct lua_State;
/* Push V (borrowed) onto L's stack. Returns 0 or EDDY_ENOMEM. */
int eddy_lua_push_json(struct lua_State *L, json_t *v);
/* Convert the value at IDX to JSON; new reference or NULL with ERR set. */
json_t *eddy_lua_to_json(struct lua_State *L, int idx, eddy_err *err);
/* The host's lua_State (tests only). */
struct lua_State *eddy_tools_lua(eddy_tools *h);

#endif
