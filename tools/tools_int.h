/*
 * tools/tools_int.h - private structures of the tools module.
 */
#ifndef EDDY_TOOLS_INT_H
#define EDDY_TOOLS_INT_H

#include "eddy/tools.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>

#define EDDY_LUA_ARRAY_MT "eddy.array"
#define EDDY_LUA_OBJECT_MT "eddy.object"
/* tables made from JSON arrays and objects (eddy.array/eddy.object force) */
#define EDDY_LUA_JARRAY_MT "eddy.json.array"
#define EDDY_LUA_JOBJECT_MT "eddy.json.object"
#define EDDY_LUA_MEMORY_MT "eddy.memory" /* ctx.memory proxies */
#define EDDY_LUA_DEAD_MT "eddy.dead"     /* ctx objects after their call */
#define EDDY_LUA_FROZEN_MT "eddy.frozen" /* read-only library proxies */
#define EDDY_LUA_HOLDER_MT "eddy.holder" /* C resources owned by the GC */
/* registry fields: proxy -> real table (weak keys), for memory and frozen */
#define EDDY_LUA_PROXIES "eddy.proxies"
/* registry field: the threads tools may not resume or close (each call's
 * own coroutine, the host's main thread), weak keys */
#define EDDY_LUA_OWN_THREADS "eddy.threads"

/* Instructions between two runs of the count hook, and the time a call runs
 * before it yields back to the loop so other keys are served. */
#define EDDY_LUA_HOOK_EVERY 1000
#define EDDY_LUA_SLICE_NS (5u * 1000 * 1000)
/* The longest a call may run where it cannot yield (inside a metamethod or
 * a library's callback) before it is stopped. */
#define EDDY_LUA_NOYIELD_NS (250u * 1000 * 1000)
/* Lua time one loop iteration gives all sliced calls together. */
#define EDDY_LUA_ROUND_NS (10u * 1000 * 1000)
/* The whole host's Lua heap, whatever the calls' budgets add up to. */
#define EDDY_LUA_HOST_HEAP (1024LL << 20)
/* A tool's result, as JSON text, may not be bigger (it goes to the model). */
#define EDDY_LUA_RESULT_MAX (1LL << 20)
/* Lua -> JSON stops past about this many bytes of JSON (a table reached by
 * several paths counts once per path, so a DAG cannot blow up). */
#define EDDY_LUA_CONVERT_MAX (64LL << 20)
/* Coroutines kept for reuse per host (a call's coroutine is reused only
 * when the call returned normally: its stack is empty, nothing is pending). */
#define EDDY_LUA_POOL 64
/* eddy.file.read refuses bigger files. */
#define EDDY_LUA_FILE_MAX (16LL << 20)

struct eddy_tool {
    eddy_tools *host;
    char *name, *path, *description;
    json_t *schema;    /* JSON schema of the parameters */
    int run_ref;       /* registry ref of the run function (Lua tools) */
    int reconcile_ref; /* ... of reconcile, or LUA_NOREF */
    int side_effects;
    int chunk_ref; /* the file's main chunk: its _ENV upvalue is switched per call */
    int envmt_ref; /* metatable of a call's globals: __index = the file's globals */
    int module;    /* native tools: the module index, TOOL_BARE (none); TOOL_LUA: a Lua tool */
    eddy_native_tool native;
    eddy_tool_limits limits; /* resolved: no field is 0 */
    json_t *config;          /* ctx.config (an object), or NULL */
    json_t *native_cfg;      /* native tools of a kind: their settings (a copy), or NULL */
    json_t *http;            /* the entry's http settings, or NULL */
    char **secrets;          /* removed from error messages */
    size_t nsecrets;
};

#define TOOL_LUA (-1)  /* eddy_tool.module of a Lua tool */
#define TOOL_BARE (-2) /* ... of a native tool added with eddy_tools_add_native */
#define TOOL_IS_NATIVE(t) ((t)->module != TOOL_LUA)

/* Why a call was stopped (tool_call.killed). */
enum { KILL_NONE, KILL_INSTRUCTIONS, KILL_MEMORY, KILL_WALL, KILL_NOYIELD, KILL_CANCEL };

/* One tool call, or the run of a tool file's top-level code (is_load).
 * Lives from eddy_tool_call until its handles are closed and any native
 * wait it started has been answered. */
struct tool_call {
    eddy_tools *host;
    eddy_tool *tool;
    struct tool_call *prev, *next;         /* the host's live calls */
    lua_State *co;                         /* the call's coroutine */
    lua_State *running;                    /* the thread executing now (co or one the tool made) */
    int co_ref, env_ref, ctx_ref, mem_ref; /* registry refs, or LUA_NOREF; mem_ref: the
                                            * call's memory proxies, real -> proxy */
    int state_ref;                         /* the ctx.state handle (a userdata), or LUA_NOREF */
    struct eddy__state_handle *state_h;    /* ... itself: its call is cleared at the end */
    uv_timer_t timer;                      /* eddy.sleep, slices, delivery */
    uv_timer_t deadline;                   /* the wall-clock budget while the call waits */
    uv_idle_t slice;                       /* the next slice, in the next loop iteration */
    int nhandles;                          /* handles not yet closed */
    eddy_tool_cb cb;
    void *ud;
    /* the outcome; deliver() hands it over in an eddy_tool_result (so a live call
     * does not hold that struct's 1 KB message) */
    int res_status;
    json_t *res_result;
    char *res_msg; /* the failure's message; NULL when ok (or out of memory) */
    eddy_tool_limits limits;
    uint64_t start_ms, deadline_ns, slice_ns;
    uint64_t noyield_ns;  /* since when a slice is over where it cannot yield, or 0 */
    int64_t instructions; /* charged so far */
    int64_t mem;          /* Lua heap bytes allocated (net) while it ran */
    size_t refused_size;  /* last allocation refused (to spot Lua's retry) */
    int killed;           /* KILL_*: every further step raises */
    char kill_msg[160];
    int is_load;
    int slice_yield;                           /* the hook yielded to give the loop a turn */
    struct tool_call *slice_prev, *slice_next; /* in the host's queue of sliced calls */
    int sliced;                                /* ... is in it */
    int waiting;                               /* a host function started work and yielded */
    int native_wait;                           /* ... a native one, whose answer must still come */
    int finished, delivered;
    /* a native function's answer, pushed when the coroutine resumes */
    int wait_ready, wait_status;
    json_t *wait_result;
    char *wait_msg;                /* its failure's message, or NULL (out of memory) */
    struct eddy_span *span;        /* eddy_tool_ctx.span */
    void (*wait_cancel)(void *ud); /* eddy_tool_wait_on_cancel */
    void *wait_cancel_ud;
};

struct eddy_tools {
    lua_State *L;
    uv_loop_t *loop;
    char *base_dir;
    int base_fd;  /* O_PATH descriptor of base_dir, or -1 */
    int base_ref; /* registry ref of the allowlisted base environment */
    eddy_tool **tools;
    size_t ntools;
    int calls;                 /* calls started and not yet delivered */
    struct tool_call *current; /* the call whose Lua code runs now */
    struct tool_call *live;    /* calls not yet freed */
    /* calls waiting for their next slice, in order; one of them (the waker)
     * has its idle handle started, and its callback runs the queue for at
     * most EDDY_LUA_ROUND_NS per loop iteration */
    struct tool_call *slice_head, *slice_tail, *slice_waker;
    int64_t heap;    /* bytes the Lua state holds */
    int close_depth; /* coroutine.close calls nested now */
    char **deny;     /* files eddy.file.read refuses (eddy's stores) */
    size_t ndeny;
    json_t *settings; /* the job's module settings {"fluss": {...}}, or NULL */
    /* coroutines of calls that returned normally, ready for the next call
     * (registry refs; each is eddy's own, with the count hook set) */
    int pool[EDDY_LUA_POOL];
    int npool;
    void **mod_state; /* per registered module: its state once opened */
    size_t nmod_state;
};

struct eddy_tool_memory {
    eddy_tools *host;
    int ref;
};

/* -- budgets (budget.c) ----------------------------------------------------- */

/* The lua_Alloc of every host (UD is the host): counts the heap, charges
 * growth to the running call and refuses what its budget does not allow. */
void *eddy__tools_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* The count hook set on every call's coroutine. */
void eddy__tools_hook(lua_State *L, lua_Debug *ar);
/* The host of any thread of its state. */
eddy_tools *eddy__tools_host(lua_State *L);
/* Memory the running call is about to use outside the Lua heap (jansson's
 * tree while eddy.json.decode converts): stops the call (raises) when its
 * memory budget could not hold BYTES more. */
void eddy__tools_reserve(lua_State *L, int64_t bytes);
/* Bytes the running call's memory budget still allows (outside a call, a
 * generous bound). */
int64_t eddy__tools_mem_left(lua_State *L);
/* Stop call C for budget WHY (once; later calls keep the first reason). */
void eddy__tools_kill(struct tool_call *c, int why);
/* After a protected call inside Lua returned STATUS: when the running call
 * was stopped, raise its budget error again so pcall cannot swallow it. */
void eddy__tools_recheck(lua_State *L, int status);
/* Raise the running call's budget error if it was stopped. */
void eddy__tools_raise_if_killed(lua_State *L);
/* A userdata whose finalizer calls FREE(P): C resources held across code
 * that may raise. Push it (may raise), then fill p. */
typedef struct eddy_holder {
    void (*free)(void *p);
    void *p;
} eddy_holder;
eddy_holder *eddy__tools_holder(lua_State *L);
/* Free what H holds now (the holder stays, empty). */
void eddy__tools_holder_release(eddy_holder *h);
/* Run FN(L) with UD as its one light userdata argument inside lua_pcall on
 * the host's main thread; returns 0, or EDDY_ENOMEM / EDDY_ELUA with ERR
 * holding Lua's message. NRES results are left on the stack on success. */
int eddy__tools_protect(eddy_tools *h, lua_CFunction fn, void *ud, int nres, eddy_err *err);

/* Whether the value at IDX has the registry metatable NAME (raw: no
 * metamethod runs, nothing is allocated). */
int eddy__tools_is_mt(lua_State *L, int idx, const char *name);
/* eddy_lua_to_json that stops (EDDY_ERANGE) past about MAX_BYTES of JSON. */
json_t *eddy__lua_to_json_max(lua_State *L, int idx, int64_t max_bytes, eddy_err *err);

/* -- the sandbox (sandbox.c) --------------------------------------------- */

/* Open the libraries and build the base environment and the eddy module
 * (called protected, on the main thread). */
int eddy__tools_open_sandbox(lua_State *L);
/* Mark the thread on top of the stack as eddy's own: tools cannot resume
 * or close it (it stays on the stack). */
void eddy__tools_own_thread(lua_State *L);
/* The real table behind the live memory or library proxy at IDX, pushed
 * (returns 1), or 0 with nothing pushed. Never raises, never allocates. */
int eddy__tools_proxy_real(lua_State *L, int idx);
/* A read-only proxy of the table at IDX, pushed. */
void eddy__tools_freeze(lua_State *L, int idx);
/* The real table behind a memory or frozen proxy at IDX (pushed, returns
 * 1), or 0 with nothing pushed when IDX is not a proxy. Raises for the
 * proxy of a call that has ended. */
int eddy__tools_unproxy(lua_State *L, int idx);
/* Push the ctx.memory proxy of the memory table at IDX for the call whose
 * proxy cache (real table -> proxy) is at CACHE, making it on first use. */
void eddy__tools_memory_proxy(lua_State *L, int idx, int cache);
/* Make the ctx table or proxy at IDX unusable (its call has returned). */
void eddy__tools_kill_proxy(lua_State *L, int idx);

/* Build a JSON schema from the params table at IDX. On error, *BAD_PARAM
 * names the parameter at fault (borrowed from Lua, valid while it is on the
 * stack) and ERR says what is wrong. */
json_t *eddy__tools_params_schema(lua_State *L, int idx, char *bad_param, size_t n, eddy_err *err);

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
/* MSG (N bytes), a line a tool logs, without the current call's tool's
 * secrets: MSG itself when it has none, else BUF (SIZE bytes) holding the
 * redacted text (its first 8 KiB). Never raises. */
const char *eddy__tools_log_clean(lua_State *L, const char *msg, size_t n, char *buf, size_t size);

/* eddy.file.read (file.c): below the job's folder only, never through a
 * symbolic link, never eddy's own stores. */
int eddy__tools_file_read(lua_State *L);
/* O_PATH descriptor of DIR for eddy.file.read, or -1. */
int eddy__tools_open_base(const char *dir);

/* Add the eddy module's own functions (host.c) to the table at IDX. */
void eddy__tools_open_eddy(lua_State *L, int idx);
/* Set the _ENV of T's file to the table at IDX (a call's globals). */
void eddy__tools_set_env(lua_State *L, eddy_tool *t, int idx);

#endif
