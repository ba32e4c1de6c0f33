/*
 * include/eddy/agent.h - jobs and agents: loading, validation, runs.
 *
 * A job is one YAML file. eddy_job_load parses it (keeping line and column
 * of every node), interpolates ${VAR} and ${VAR:-default}, validates every
 * field and everything the job references (prompt files, Lua tools, models),
 * and collects all problems found, each naming file:line:col.
 */
#ifndef EDDY_AGENT_H
#define EDDY_AGENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"
#include "eddy/llm.h"
#include "eddy/prompt.h"
#include "eddy/tools.h"
#include "eddy/trace.h"

/* A list of diagnostics ("job.yaml:4:3: unknown key 'modle' (did you mean
 * 'model'?)"), in the order found. */
typedef struct eddy_diag {
    char **msgs;
    size_t n, cap;
} eddy_diag;

void eddy_diag_init(eddy_diag *d);
void eddy_diag_free(eddy_diag *d);
void eddy_diag_add(eddy_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* -- YAML with positions --------------------------------------------------- */

/* A YAML document as jansson values plus positions by JSON-pointer path
 * ("/agents/support/model"): POS[path] = [value_line, value_col, key_line,
 * key_col], all 1-based. */
typedef struct eddy_yaml_doc {
    char *file;
    json_t *root;
    json_t *pos;
    json_t *deferred; /* EDDY_YAML_LAX_ENV: path -> "file:line:col: message", else NULL */
} eddy_yaml_doc;

/* eddy_yaml_load_flags: a ${...} that cannot be interpolated (an unset
 * variable) is not reported to DIAG but kept in DOC->deferred by path, and
 * the scalar keeps its text as written, for a reader that needs only part
 * of the file (`eddy trace`: the paths) and reports what it reads. */
#define EDDY_YAML_LAX_ENV 1

/* Parse FILE into DOC. ${...} in scalars is interpolated from the
 * environment; an unset variable is reported to DIAG but parsing goes on.
 * Returns 0, or EDDY_EPARSE when the file is not valid YAML (DIAG says
 * where). Callers check DIAG->n as well. */
int eddy_yaml_load(const char *file, eddy_yaml_doc *doc, eddy_diag *diag);
/* The same with FLAGS (EDDY_YAML_* bits). */
int eddy_yaml_load_flags(const char *file, int flags, eddy_yaml_doc *doc, eddy_diag *diag);
/* Same from a string (tests). */
int eddy_yaml_load_string(const char *text, const char *name, eddy_yaml_doc *doc, eddy_diag *diag);
void eddy_yaml_doc_free(eddy_yaml_doc *doc);
/* "file:line:col" of PATH's value (or its key when KEY), into BUF. */
const char *eddy_yaml_where(const eddy_yaml_doc *doc, const char *path, int key, char *buf,
                            size_t n);

/* Interpolate ${VAR} / ${VAR:-default} / $$ in S. *OUT new. Returns 0 or
 * EDDY_EINVAL with ERR naming the variable. */
int eddy_interpolate(const char *s, char **out, eddy_err *err);
/* The same; each non-empty value taken from the environment is appended to
 * USED (an array; NULL: not kept), for the secrets a job must not show. */
int eddy_interpolate_env(const char *s, char **out, json_t *used, eddy_err *err);

/* -- the job -------------------------------------------------------------- */

struct eddy_tools;
struct eddy_tool;

/* One entry of an agent's tool list: a Lua file, or a native tool kind
 * with its settings (`- fluss_lookup: {table: db.customers}`). */
typedef struct eddy_tool_ref {
    char *path;              /* the Lua file (resolved), or NULL */
    char *kind;              /* the native tool kind, or NULL */
    json_t *cfg;             /* the native tool's settings (owned) */
    char *where;             /* "job.yaml:12:7": where the tool is listed */
    eddy_tool_limits limits; /* Lua tools: `limits:` (and `timeout:`) of the entry (0 = default) */
    json_t *config;          /* Lua tools: `config:` (ctx.config), owned, or NULL */
    json_t *http;            /* Lua tools: `http:` (eddy.http's allowlist), owned, or NULL */
    char **secrets;          /* what the environment gave config (owned), for redaction */
    size_t nsecrets;
    /* `mcp: SERVER` (every tool of the server) or `mcp: SERVER/TOOL` (one):
     * the tools come from the server's list as the job runs; owned, or NULL */
    char *mcp_server, *mcp_tool;
    /* Lua tools, loaded with EDDY_JOB_TOOLS: the file's text as this version
     * checked it (owned; every worker builds the tool from it), else NULL */
    char *source;
    size_t source_len;
} eddy_tool_ref;

/* The load options of R's Lua tool, pointing into R (valid while R is). */
void eddy_tool_ref_opts(const eddy_tool_ref *r, eddy_tool_opts *o);
/* Whether A and B load the same Lua tool (file, limits, config, http). */
int eddy_tool_ref_same(const eddy_tool_ref *a, const eddy_tool_ref *b);

typedef struct eddy_agent_def {
    char *name;
    eddy_llm_model *model; /* borrowed from the job's models */
    eddy_template *system, *user;
    /* system_file and user_file when given: the file (resolved) and where
     * it was given ("job.yaml:9:20"); NULL otherwise */
    char *prompt_file[2], *prompt_where[2];
    eddy_tool_ref *tools; /* in the order listed */
    size_t ntools;
    int history;           /* runs of history kept and sent */
    int budget_turns;      /* LLM calls in one run */
    int64_t budget_tokens; /* total tokens in one run; 0 = unlimited */
    int64_t budget_wall_ms;
    int budget_tool_calls;
    double budget_cost; /* in the model's price currency; 0 = unlimited */
    eddy_llm_tool_choice tool_choice;
    char *tool_choice_name; /* EDDY_TOOL_CHOICE_TOOL: the tool */
    char **on;              /* event types that start a react run */
    json_t **output_schema; /* per entry of ON: the react action's output_schema, or NULL */
    size_t non;
} eddy_agent_def;

/* The output schema of the action EVENT starts (by its "type", else
 * "input"), or NULL; borrowed from DEF. */
json_t *eddy_agent_output_schema(const eddy_agent_def *def, json_t *event);

typedef struct eddy_job {
    char *file; /* as given */
    char *dir;  /* folder of the file: relative paths resolve here */
    char *name;
    char *key;          /* dotted path of the key in an event */
    char *source;       /* JSONL path, "-" for stdin, NULL when not set */
    char *sink;         /* JSONL path, NULL for stdout */
    json_t *source_cfg; /* {"fluss": {...}} for a connector source, else NULL */
    json_t *sink_cfg;   /* {"fluss": {...}} for a connector sink, else NULL */
    /* settings of native modules by name ({"fluss": {bootstrap, ...}}),
     * from the job's top-level `fluss:` block; never NULL after a load */
    json_t *modules;
    char *dead_letter; /* JSONL path */
    char *state_path;  /* SQLite memory store */
    char *trace_path;  /* SQLite trace store */
    /* dashboard.listen (NULL: no dashboard unless asked) and dashboard.token */
    char *dashboard_listen, *dashboard_token;
    /* where each path was given ("job.yaml:7:17"), or for a default path
     * (bit set in DEFAULTS) where `job:` names the job it derives from;
     * NULL when the file has neither */
    char *source_where, *sink_where, *dead_letter_where, *state_where, *trace_where;
    unsigned defaults; /* EDDY_JOB_DEFAULT_* */
    int64_t shutdown_grace_ms;
    int max_in_flight;     /* events accepted but not finished, across keys */
    int workers;           /* worker threads; 0 = one per core */
    int max_keygroups;     /* key groups (recorded in the store) */
    int delivery;          /* EDDY_DELIVERY_* */
    int64_t checkpoint_ms; /* checkpoint.interval */
    int64_t memory_cache;  /* memory.cache: bytes of key memory cached per worker */
    eddy_trace_opts trace; /* trace.retention, .sample, .content, .max_payload, .redact */
    char **trace_redact;   /* the patterns trace.redact points into */
    size_t ntrace_redact;
    /* values the environment gave tool settings (config, native tools):
     * secrets the trace store redacts, at least EDDY_JOB_SECRET_MIN bytes */
    char **secrets;
    size_t nsecrets;
    eddy_llm_model *models;
    size_t nmodels;
    eddy_agent_def *agents;
    size_t nagents;
    /* the top-level `mcp:` mapping as written (checked with
     * eddy_mcp_config_new; include/eddy/mcp.h), or NULL when absent */
    json_t *mcp;
} eddy_job;

#define EDDY_JOB_MAX_WORKERS 256
/* Shorter values from the environment are not taken for secrets ("443",
 * "true" would blank every trace that mentions them). */
#define EDDY_JOB_SECRET_MIN 6
/* delivery: at_least_once (every output at least once; duplicates carry the
 * same output_id) or exactly_once (a file sink is cut back to its last
 * checkpoint after a crash and what followed is written again). */
#define EDDY_DELIVERY_AT_LEAST_ONCE 0
#define EDDY_DELIVERY_EXACTLY_ONCE 1

#define EDDY_JOB_DEFAULT_DEAD_LETTER 1u
#define EDDY_JOB_DEFAULT_STATE 2u
#define EDDY_JOB_DEFAULT_TRACE 4u

/* What eddy_job_load checks beyond the file itself. */
#define EDDY_JOB_TOOLS 1 /* load every agent's tools into one throwaway host, as a run does */
#define EDDY_JOB_FILES 2 /* eddy_job_check_io with no overrides */
/* Only the job's name and its stores' paths (state_path, trace_path) are
 * read and checked: the rest of the file is not validated, and a ${VAR}
 * left unset is a problem only where it is read (`eddy trace`, `eddy state`
 * on a job whose API keys are not in this shell). Never for a run. */
#define EDDY_JOB_PATHS 4

/* Paths given on the command line instead of the job's (NULL: the job's;
 * "-" is stdin / stdout). */
typedef struct eddy_job_io {
    const char *input, *output, *dead_letter, *state, *traces;
    /* EDDY_JOB_TOOLS: an idle loop of the caller's thread to load the tools
     * on (it is run until they are released), or NULL for a loop of the
     * call's own (a reload: no loop made and closed while workers run) */
    uv_loop_t *loop;
} eddy_job_io;

/* Load and validate FILE. Every problem goes to DIAG; returns 0 when there
 * were none, else EDDY_ESCHEMA (or EDDY_EPARSE, EDDY_ENOMEM) and *OUT NULL.
 * FLAGS: EDDY_JOB_* bits. Paths that are not given default to
 * .eddy/<job name>/{state.db,traces.db,dead-letter.jsonl} beside the file. */
int eddy_job_load(const char *file, int flags, eddy_job **out, eddy_diag *diag);
/* The same, where EDDY_JOB_FILES checks the files with IO's overrides (may
 * be NULL: the job's own), also when the job has other problems, so that
 * DIAG holds every problem a run would have. */
int eddy_job_load_io(const char *file, int flags, const eddy_job_io *io, eddy_job **out,
                     eddy_diag *diag);
void eddy_job_free(eddy_job *job);

/* Check, without opening anything that could block (FIFOs) or creating
 * anything, that a run of JOB can open what it opens at start: the source
 * exists and is readable; the sink's folder exists (or is one the state or
 * trace store creates first) and the sink is writable; the folders of the
 * state and trace stores and of the dead-letter file exist or can be
 * created, and existing stores are SQLite databases; neither the sink nor
 * the dead-letter file is a file the job reads (the job file, the source,
 * a prompt or tool file, a store), which eddy would append JSON lines to.
 * Fluss connectors are not contacted. Each problem goes to DIAG naming where the path was given
 * (file:line:col, or the option). Returns 0, or EDDY_ESCHEMA when there was
 * a problem. */
int eddy_job_check_io(const eddy_job *job, const eddy_job_io *io, eddy_diag *diag);

/* The folder name a job name becomes under .eddy/: NAME itself when it is
 * made of [A-Za-z0-9._-], is at most 64 bytes and is not "." or "..", else
 * its first 64 bytes with every other byte as '_' and "-" plus 8 hex digits
 * of a hash of NAME appended, so two names do not share a folder. New
 * string, NULL on OOM. */
char *eddy_job_dir_name(const char *name);

/* Resolve REL against the job's folder; new string. */
char *eddy_job_path(const eddy_job *job, const char *rel);

/* -- runs ----------------------------------------------------------------- */

#include <uv.h>

#include "eddy/memory.h"
#include "eddy/tools.h"
#include "eddy/trace.h"

/* What runs on one worker loop share. All borrowed; loop thread only. */
typedef struct eddy_agent_env {
    uv_loop_t *loop;
    eddy_llm_client *llm;
    eddy_tools *tools;
    eddy_store_session *store;
    eddy_trace_store *traces;
    int worker;            /* the worker's index (traces say where a run ran) */
    eddy_metrics *metrics; /* the process's counters, or NULL */
    /* the MCP tools `mcp:` entries take: the catalog the runtimes are built
     * from and the worker's port to call through; NULL: none */
    struct eddy_mcp_catalog *mcp_catalog;
    struct eddy_mcp_port *mcp_port;
} eddy_agent_env;

/* An agent ready to run on one worker: its definition and loaded tools. */
typedef struct eddy_agent_rt eddy_agent_rt;
typedef struct eddy_run eddy_run;

/* Load DEF's tools into ENV->tools. Errors name the tool file. */
int eddy_agent_rt_new(const eddy_agent_def *def, eddy_agent_env *env, eddy_agent_rt **out,
                      eddy_err *err);
void eddy_agent_rt_free(eddy_agent_rt *rt);
const eddy_agent_def *eddy_agent_rt_def(const eddy_agent_rt *rt);
/* Runs of RT started and not yet freed (a run is freed after its callback,
 * once its handles have closed): RT and the tools it holds are in use
 * while this is not 0. Loop thread. */
int eddy_agent_rt_live(const eddy_agent_rt *rt);
/* Whether events of TYPE start a run of this agent. */
int eddy_agent_handles(const eddy_agent_rt *rt, const char *type);

/* Totals over the runs of one worker, for the end-of-job summary. */
typedef struct eddy_run_stats {
    long runs_ok, runs_failed, llm_calls, llm_retries, tool_calls, tool_errors;
    long llm_replayed, tools_replayed;  /* steps served from the journal */
    long tools_reconciled, tools_rerun; /* side effects found started after a crash */
    long input_tokens, output_tokens;
    double cost;
    /* {model: {calls, input_tokens, output_tokens, cached_input_tokens, cost}} */
    json_t *per_model;
    /* {key: {runs, failed, tokens, cost}}, at most EDDY_STATS_MAX_KEYS keys;
     * the rest are counted under "(other keys)" */
    json_t *per_key;
} eddy_run_stats;

#define EDDY_STATS_MAX_KEYS 10000

/* Count one answer of MODEL (USAGE, COST) / one finished run of KEY. */
void eddy_run_stats_add_model(eddy_run_stats *s, const char *model, const eddy_llm_usage *usage,
                              double cost);
void eddy_run_stats_add_key(eddy_run_stats *s, const char *key, double cost, long tokens, int ok);
void eddy_run_stats_clear(eddy_run_stats *s);

/* Outcome of a run. On success OUTPUT is the output event; on failure it is
 * the dead-letter record (with the reason). Borrowed for the callback, which
 * may take it (and set res->output to NULL). */
typedef struct eddy_run_result {
    int status;
    eddy_err err;
    json_t *output;
} eddy_run_result;

typedef void (*eddy_run_cb)(eddy_run_result *res, void *ud);

/* What a run starts from: EVENT (borrowed; copied) of KEY, and the record
 * it came from: (PART, POS) names the run in the store's journal, INPUT_HASH
 * tells the record's bytes apart; REPLAY (may be NULL, borrowed from the
 * store for the life of the run) is what the store kept of an earlier try
 * of this run: its journaled steps are served from it instead of running. */
typedef struct eddy_run_input {
    json_t *event;
    const char *key, *event_id;
    int64_t part, pos, input_hash;
    const eddy_replay *replay;
} eddy_run_input;

/* Start a run of RT for IN. STATS (may be NULL) is updated as the run goes.
 * Every step's result is journaled as it comes; at the end the run's memory,
 * history and outcome are committed in one store job, and CB runs exactly
 * once on the loop after that commit, never inside this call. The output
 * carries "output_id", the same for every try of the run. */
int eddy_agent_run_start(eddy_agent_rt *rt, const eddy_run_input *in, eddy_run_stats *stats,
                         eddy_run_cb cb, void *ud, eddy_run **out, eddy_err *err);

/* The output_id of AGENT's run at (PART, POS): 32 hex digits into BUF[33]. */
void eddy_output_id(const char *agent, int64_t part, int64_t pos, char buf[33]);

/* Abandon R: its LLM request is canceled, and it ends with EDDY_ECANCELED
 * (nothing is committed: a restart runs it again, from its journal). CB
 * runs later, from the loop, never inside this call. */
void eddy_run_cancel(eddy_run *r);

#endif
