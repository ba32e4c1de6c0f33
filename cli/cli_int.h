/*
 * cli/cli_int.h - the subcommands of `eddy` that live in their own files.
 */
#ifndef EDDY_CLI_INT_H
#define EDDY_CLI_INT_H

/* `eddy fluss ...` (ARGV as given to main). Returns the exit code. */
int eddy_cli_fluss(int argc, char **argv);

/* `eddy state ...` (ARGV as given to main; QUIET: --quiet came before the
 * command). Returns the exit code. */
int eddy_cli_state(int argc, char **argv, int quiet);

/* `eddy trace ...` (ARGV as given to main). Returns the exit code. */
int eddy_cli_trace(int argc, char **argv, int quiet);
/* `eddy dashboard ...`: serves until SIGINT/SIGTERM; the exit code. */
int eddy_cli_dashboard(int argc, char **argv, int quiet);

/* The store ARG names (new string): a job file's trace.path (TRACES) or
 * checkpoint path, read without requiring the environment variables the
 * rest of the job uses (EDDY_JOB_PATHS); a database's own path; with no ARG
 * the one under .eddy/ here. NULL after saying why on stderr. */
char *eddy__cli_store_path(const char *arg, int traces);

/* With no store named: the one .eddy/<job>/FILE here (or LEGACY, may be
 * NULL, when it exists). NULL after saying, on stderr, that there is none
 * or more than one (WHAT: "trace store"; UPPER: "TRACES.db"). */
char *eddy__cli_default_store(const char *file, const char *legacy, const char *what,
                              const char *upper);
/* Whether S ends with SUFFIX. */
int eddy__cli_ends_with(const char *s, const char *suffix);

#endif
