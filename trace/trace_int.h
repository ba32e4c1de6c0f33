/*
 * trace/trace_int.h - what the trace module's files share (not public).
 */
#ifndef EDDY_TRACE_INT_H
#define EDDY_TRACE_INT_H

#include <sqlite3.h>

/* Whether DB has a table NAME. Any thread (DB is the caller's connection). */
int eddy__trace_has_table(sqlite3 *db, const char *name);

#endif
