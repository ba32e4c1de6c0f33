/*
 * tests/unit/testutil.h - a temp folder per test binary, and writing files
 * into it. Header-only: each test binary includes it once.
 */
#ifndef EDDY_TESTUTIL_H
#define EDDY_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256];

/* Write TEXT to NAME inside the temp folder; returns the path (static). */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int tmpdir_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/eddy-unit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int tmpdir_teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
