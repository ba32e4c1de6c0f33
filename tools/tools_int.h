/*
 * tools/tools_int.h - private structures of the tools module.
 */
#ifndef EDDY_TOOLS_INT_H
#define EDDY_TOOLS_INT_H

#include "eddy/tools.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define EDDY_LUA_ARRAY_MT "eddy.array"
#define EDDY_LUA_OBJECT_MT "eddy.object"
/* instructions one tool call may execute before it is stopped */
#define EDDY_LUA_MAX_INSTRUCTIONS 200000000L

struct eddy_tool {
    eddy_tools *host;
    char *name, *path, *description;
    json_t *schema; /* JSON schema of the parameters */
    json_t *def;    /* OpenAI tool definition */
    int run_ref;    /* registry ref of the run function */
};

struct eddy_tools {
    lua_State *L;
    uv_loop_t *loop;
    char *base_dir;
    int base_ref; /* registry ref of the allowlisted base environment */
    eddy_tool **tools;
    size_t ntools;
    int calls; /* calls in flight */
};

struct eddy_tool_memory {
    eddy_tools *host;
    int ref;
};

/* Build a JSON schema from the params table at IDX. On error, *BAD_PARAM
 * names the parameter at fault (borrowed from Lua, valid while it is on the
 * stack) and ERR says what is wrong. */
json_t *eddy__tools_params_schema(lua_State *L, int idx, char *bad_param, size_t n, eddy_err *err);

struct tool_call;
void eddy__tool_free(eddy_tool *t);

/* Start a wait of MS on the current call's timer and yield; the call is
 * resumed when it fires. Raises a Lua error outside a tool call. */
int eddy__tools_call_wait(lua_State *L, uint64_t ms);
/* Name of the tool a call runs. */
const char *eddy__tool_call_name(const struct tool_call *c);

/* Open the eddy module and the sandboxed base environment into H. */
int eddy__tools_open_env(eddy_tools *h, eddy_err *err);

#endif
