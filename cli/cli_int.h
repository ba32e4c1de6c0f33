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

#endif
