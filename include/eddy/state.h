/*
 * include/eddy/state.h - inspecting and maintaining a job's store (the
 * SQLite file of memory.h) from outside the job: `eddy state`.
 *
 * A store opened read-only (flags 0) may be read while a job writes it: the
 * connection is SQLITE_OPEN_READONLY, WAL lets it read a snapshot while the
 * writer commits, and no call waits on the writer longer than the busy
 * timeout (EDDY_STATE_BUSY_MS). A store opened with EDDY_STATE_WRITE is
 * first locked like a running job locks it (an exclusive flock on
 * "PATH.lock", which then holds our pid), so it is never changed under a
 * running job; the lock is held until eddy_state_close.
 *
 * Only stores of the schema version this eddy writes (3) are read; an older
 * one is refused (a job migrates it when it opens it), as is a file that is
 * not an eddy store.
 *
 * Output goes to a FILE, one line per item: JSON lines where the command
 * gives JSON (get, history, journal, export), tab-separated columns with a
 * header line for the tables (keys, positions). In the tables, a backslash,
 * a tab and any control character of a name are written as C escapes
 * (\\, \t, \n, \x01), so one line is one item; the JSON carries names as
 * they are. Memory documents and history entries are written as the store
 * holds them (byte for byte, when they are one line of valid JSON).
 *
 * Every function returns 0 or a negative EDDY_E* code with ERR set to a
 * message that names the store (and the key); EDDY_ENOENT when the key or
 * the store is not there. One thread at a time per eddy_state.
 */
#ifndef EDDY_STATE_H
#define EDDY_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eddy/error.h"

typedef struct eddy_state eddy_state;

/* Open for writing (import, rm, vacuum): take the store's lock first. */
#define EDDY_STATE_WRITE 1
/* How long a statement waits for a lock held by another connection. */
#define EDDY_STATE_BUSY_MS 5000

/* Open the store at PATH (never created). Fails with EDDY_ENOENT when PATH
 * does not exist, EDDY_ECORRUPT when it is not an eddy store or not of
 * schema version 3, EDDY_EEXIST (FLAGS EDDY_STATE_WRITE) when a running
 * eddy holds its lock ("PATH is in use by a running eddy (pid N): stop it
 * first"). *OUT is the caller's, freed by eddy_state_close. */
int eddy_state_open(const char *path, int flags, eddy_state **out, eddy_err *err);
/* Close the connection and release the lock. NULL-safe. */
void eddy_state_close(eddy_state *st);
/* The path given to eddy_state_open; borrowed. */
const char *eddy_state_path(const eddy_state *st);

/* The keys the store holds rows for (memory, history, journal, finished
 * runs), in (agent, key) byte order: a header line, then
 * "AGENT\tKEY\tMEMORY_BYTES\tHISTORY_RUNS" per key (0 bytes: no memory
 * document), of AGENT only when it is not NULL, at most LIMIT of them (0:
 * all). *MORE (may be NULL) is set when LIMIT left keys out. */
int eddy_state_keys(eddy_state *st, const char *agent, long limit, FILE *out, int *more,
                    eddy_err *err);

/* The memory document of KEY as one line of JSON ({} when it has none
 * yet: what its next run starts from). AGENT may be NULL when only one
 * agent has KEY; when several have it the error lists them. */
int eddy_state_get(eddy_state *st, const char *agent, const char *key, FILE *out, eddy_err *err);

/* The history entries of KEY, oldest first, the last LIMIT of them (0:
 * all): one line {"seq":N,"messages":[...]} each. AGENT as for _get. */
int eddy_state_history(eddy_state *st, const char *agent, const char *key, long limit, FILE *out,
                       eddy_err *err);

/* The source positions ("source\tpart\tposition\tline" and a line per
 * part), a blank line, and the sinks' commits ("sink\tlength\tcount" and a
 * line per sink); both sorted by name. */
int eddy_state_positions(eddy_state *st, FILE *out, eddy_err *err);

/* What the store keeps of KEY's runs not yet covered by a checkpoint, as
 * JSON lines in (part, pos) order: {"row":"run", ...} for a finished run
 * (its outcome, ok, delivered) and {"row":"step", ...} for each journaled
 * step of a run that was in flight when the job stopped. Each line names
 * the run by "source", "part" (null when the store has no position for
 * the part yet), "part_hash" and "pos". AGENT as for _get. */
int eddy_state_journal(eddy_state *st, const char *agent, const char *key, FILE *out,
                       eddy_err *err);

/* Every key with memory or history, one JSON line each in (agent, key)
 * order, from one snapshot of the store:
 * {"agent":A,"key":K,"memory":DOC|null,"history":[{"seq":N,"messages":[...]},...]}.
 * *NKEYS (may be NULL) gets their number. */
int eddy_state_export(eddy_state *st, FILE *out, long *nkeys, eddy_err *err);

/* Read lines written by eddy_state_export from IN (named NAME in errors,
 * "NAME:LINE: ...") and make each key's memory and history what the line
 * says (memory null: none), in one transaction: when any line is wrong
 * (not JSON, a member missing or of the wrong type, history messages that
 * are not eddy's format, a key twice), nothing changes. Blank lines are
 * skipped. The journal and run rows of the keys are left alone. Needs
 * EDDY_STATE_WRITE. *NKEYS (may be NULL) gets the number of keys. */
int eddy_state_import(eddy_state *st, FILE *in, const char *name, long *nkeys, eddy_err *err);

/* What eddy_state_rm removed. */
typedef struct eddy_state_removed {
    int64_t memory_bytes; /* -1: the key had no memory document */
    int64_t history, steps;
} eddy_state_removed;

/* Delete KEY's memory, history and journal rows (one transaction); its
 * finished-run rows stay (they keep outcomes for delivery until the next
 * checkpoint). EDDY_ENOENT when it has none of those. AGENT as for _get.
 * Needs EDDY_STATE_WRITE. RM (may be NULL) says what went. */
int eddy_state_rm(eddy_state *st, const char *agent, const char *key, eddy_state_removed *rm,
                  eddy_err *err);

/* VACUUM the store, then checkpoint and truncate its WAL. *BEFORE and
 * *AFTER (may be NULL) get the bytes of the file and its WAL. Needs
 * EDDY_STATE_WRITE. */
int eddy_state_vacuum(eddy_state *st, int64_t *before, int64_t *after, eddy_err *err);

#endif
