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
    int run_ref;    /* registry ref of the run function (Lua tools) */
    int module;     /* native tools: index of the module, else -1 */
    eddy_native_tool native;
    eddy_tool_limits limits; /* resolved: no field is 0 */
};

struct eddy_tools {
    lua_State *L;
    uv_loop_t *loop;
    char *base_dir;
    int base_ref; /* registry ref of the allowlisted base environment */
    eddy_tool **tools;
    size_t ntools;
    int calls;        /* calls in flight */
    json_t *settings; /* the job's module settings {"fluss": {...}}, or NULL */
    void **mod_state; /* per registered module: its state once opened */
    size_t nmod_state;
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
/* Register T in H unless its name is taken (ERR starts with WHERE). */
int eddy__tools_add(eddy_tools *h, eddy_tool *t, const char *where, eddy_err *err);

/* Start a wait of MS on the current call's timer and yield; the call is
 * resumed when it fires. Raises a Lua error outside a tool call. */
int eddy__tools_call_wait(lua_State *L, uint64_t ms);
/* Start waiting for a native function's answer in the current call: returns
 * the wait, or NULL outside a tool call (or in a coroutine the tool made). */
eddy_tool_wait *eddy__tools_call_begin_wait(lua_State *L);
/* Stop waiting after the native function refused to start. */
void eddy__tools_call_cancel_wait(eddy_tool_wait *w);

/* Registered modules (native.c). */
const eddy_tools_module *eddy__tools_module(size_t i);
size_t eddy__tools_nmodules(void);
/* The state of module I on H, opening it on first use. */
int eddy__tools_module_state(eddy_tools *h, size_t i, void **state, eddy_err *err);
/* Add eddy.<module>.<fn> for every registered module to the eddy table at IDX. */
void eddy__tools_open_modules(eddy_tools *h, int idx);

/* Charge UNITS of work (about one Lua VM instruction each) that a C library
 * function does on behalf of the running call. Raises the budget error (does
 * not return) once a budget of the call is spent; does nothing outside a
 * call. C callers hold no malloc'd memory across it. */
void eddy__tools_charge(lua_State *L, int64_t units);

/* Set find, match, gmatch and gsub in the table at IDX (a copy of the
 * string library) to Lua 5.4 pattern functions that give the standard results
 * and errors but charge their matching work through eddy__tools_charge, so a
 * pattern that backtracks catastrophically ends with the call's budget error
 * instead of blocking the worker (lpattern.c). */
void eddy__tools_open_patterns(lua_State *L, int idx);

/* Name of the tool a call runs. */
const char *eddy__tool_call_name(const struct tool_call *c);

/* Open the eddy module and the sandboxed base environment into H. */
int eddy__tools_open_env(eddy_tools *h, eddy_err *err);

#endif
