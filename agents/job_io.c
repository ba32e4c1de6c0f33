/*
 * agents/job_io.c - will `eddy run` be able to open the job's files?
 *
 * The worker opens, at start and in this order: the state store and the
 * trace store (SQLite; creating their folders), the sink (fopen "a": its
 * folder must exist), the source (fopen "r"); the dead-letter file at its
 * first record (creating its folder). This file asks the same questions of
 * the file system without opening or creating anything, so `eddy check`
 * fails where `eddy run` would, and never blocks on a FIFO. Fluss sources
 * and sinks are not contacted here. The sink and the dead-letter file get
 * JSON lines appended: neither may be a file the job reads (the job file,
 * the source, a prompt or tool file, a store), compared by device and inode,
 * or by resolved path while a file does not exist yet.
 */
#include "eddy/agent.h"
#include "eddy/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct iochk {
    eddy_diag *diag;
    int errors;
    char made[2][4096]; /* folders the state and trace stores create, normalized */
} iochk;

/* One problem with PATH (the WHAT of the job), given at WHERE. */
static void ioerr(iochk *k, const char *where, const char *what, const char *path, int dflt,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void ioerr(iochk *k, const char *where, const char *what, const char *path, int dflt,
                  const char *fmt, ...)
{
    char msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eddy_diag_add(k->diag, "%s: %s '%s'%s: %s", where ? where : "?", what, path,
                  dflt ? " (the default)" : "", msg);
    k->errors++;
}

/* PATH with "." parts, repeated and trailing slashes removed, into OUT. */
static void normalize(const char *path, char *out, size_t n)
{
    size_t o = 0;
    const char *p = path;
    if (*p == '/' && o + 1 < n)
        out[o++] = '/';
    while (*p) {
        size_t len;
        while (*p == '/')
            p++;
        len = strcspn(p, "/");
        if (len == 0)
            break;
        if (!(len == 1 && p[0] == '.')) {
            if (o && out[o - 1] != '/' && o + 1 < n)
                out[o++] = '/';
            for (size_t i = 0; i < len && o + 1 < n; i++)
                out[o++] = p[i];
        }
        p += len;
    }
    if (!o && n > 1)
        out[o++] = '.';
    out[o < n ? o : n - 1] = '\0';
}

/* The folder of PATH, normalized, into OUT ("." for a bare name). */
static void folder_of(const char *path, char *out, size_t n)
{
    char norm[4096], *slash;
    normalize(path, norm, sizeof(norm));
    slash = strrchr(norm, '/');
    if (!slash)
        snprintf(out, n, ".");
    else if (slash == norm)
        snprintf(out, n, "/");
    else
        snprintf(out, n, "%.*s", (int)(slash - norm), norm);
}

/* Whether folder A is folder B or one of the folders above it. */
static int is_within(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (!*b)
        return 0;
    if (!strcmp(a, "."))
        return b[0] != '/';
    return !strncmp(a, b, n) && (b[n] == '\0' || b[n] == '/');
}

/* Can the folders above PATH be made (or do they exist) and a file be
 * created in the last one? The nearest existing folder must be a folder we
 * may write to. Returns 0 or -1 (reported). */
static int creatable(iochk *k, const char *where, const char *what, const char *path, int dflt)
{
    char dir[4096], missing[4096] = "";
    struct stat st;
    folder_of(path, dir, sizeof(dir));
    for (;;) {
        char up[4096];
        if (stat(dir, &st) == 0)
            break;
        if (errno != ENOENT && errno != ENOTDIR) {
            ioerr(k, where, what, path, dflt, "cannot look at '%s': %s", dir, strerror(errno));
            return -1;
        }
        snprintf(missing, sizeof(missing), "%s", dir);
        folder_of(dir, up, sizeof(up));
        if (!strcmp(up, dir))
            break;
        snprintf(dir, sizeof(dir), "%s", up);
    }
    if (!S_ISDIR(st.st_mode)) {
        ioerr(k, where, what, path, dflt, "'%s' is not a folder", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK)) {
        if (*missing)
            ioerr(k, where, what, path, dflt, "folder '%s' cannot be created in '%s': %s", missing,
                  dir, strerror(errno));
        else
            ioerr(k, where, what, path, dflt, "folder '%s' is not writable: %s", dir,
                  strerror(errno));
        return -1;
    }
    return 0;
}

/* An existing PATH must be a file we may write to. Returns 1 when it
 * exists, 0 when it does not, -1 (reported) when it cannot be written. */
static int existing_writable(iochk *k, const char *where, const char *what, const char *path,
                             int dflt, struct stat *st)
{
    if (stat(path, st)) {
        if (errno == ENOENT)
            return 0;
        if (errno == ENOTDIR)
            return 0; /* the folder check names the file in the way */
        ioerr(k, where, what, path, dflt, "%s", strerror(errno));
        return -1;
    }
    if (S_ISDIR(st->st_mode)) {
        ioerr(k, where, what, path, dflt, "it is a folder");
        return -1;
    }
    if (access(path, W_OK)) {
        ioerr(k, where, what, path, dflt, "cannot be written: %s", strerror(errno));
        return -1;
    }
    return 1;
}

/* A SQLite store: the file (if any) is a database we may write; its folder
 * exists or can be created. SLOT: where to remember that folder. */
static void check_store(iochk *k, const char *where, const char *what, const char *path, int dflt,
                        int slot)
{
    struct stat st;
    int ex = existing_writable(k, where, what, path, dflt, &st);
    if (ex < 0)
        return;
    if (ex == 0) {
        if (creatable(k, where, what, path, dflt) == 0)
            folder_of(path, k->made[slot], sizeof(k->made[slot]));
        return;
    }
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
        char head[16];
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, head, sizeof(head)) : -1;
        if (fd >= 0)
            close(fd);
        if (n < 0)
            ioerr(k, where, what, path, dflt, "cannot be read: %s", strerror(errno));
        else if (n < (ssize_t)sizeof(head) || memcmp(head, "SQLite format 3", 16))
            ioerr(k, where, what, path, dflt, "it is not an SQLite database");
    }
    folder_of(path, k->made[slot], sizeof(k->made[slot]));
}

static void check_sink(iochk *k, const char *where, const char *path)
{
    char dir[4096];
    struct stat st;
    int ex = existing_writable(k, where, "sink", path, 0, &st);
    if (ex != 0)
        return;
    folder_of(path, dir, sizeof(dir));
    if (is_within(dir, k->made[0]) || is_within(dir, k->made[1]))
        return; /* the state or trace store creates it first */
    if (stat(dir, &st)) {
        ioerr(k, where, "sink", path, 0,
              "folder '%s' does not exist (eddy run creates the folders of its stores and "
              "dead-letter file, not the sink's)",
              dir);
        return;
    }
    if (!S_ISDIR(st.st_mode))
        ioerr(k, where, "sink", path, 0, "'%s' is not a folder", dir);
    else if (access(dir, W_OK | X_OK))
        ioerr(k, where, "sink", path, 0, "folder '%s' is not writable: %s", dir, strerror(errno));
}

/* Which file PATH is: device and inode when it exists, else its path with
 * the folders above it resolved (when they exist) and made absolute. */
typedef struct fileid {
    int exists;
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX + 256];
} fileid;

static void file_id(const char *path, fileid *id)
{
    char dir[4096], norm[4096], real[PATH_MAX], cwd[PATH_MAX];
    const char *base;
    struct stat st;
    memset(id, 0, sizeof(*id));
    if (stat(path, &st) == 0) {
        id->exists = 1;
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        return;
    }
    normalize(path, norm, sizeof(norm));
    base = strrchr(norm, '/') ? strrchr(norm, '/') + 1 : norm;
    folder_of(path, dir, sizeof(dir));
    if (realpath(dir, real))
        snprintf(id->path, sizeof(id->path), "%s/%s", strcmp(real, "/") ? real : "", base);
    else if (norm[0] != '/' && getcwd(cwd, sizeof(cwd)))
        snprintf(id->path, sizeof(id->path), "%s/%s", cwd, norm);
    else
        snprintf(id->path, sizeof(id->path), "%s", norm);
}

static int same_file(const fileid *a, const char *path)
{
    fileid b;
    if (!path || !strcmp(path, "-"))
        return 0;
    file_id(path, &b);
    if (a->exists != b.exists)
        return 0;
    return a->exists ? a->dev == b.dev && a->ino == b.ino : !strcmp(a->path, b.path);
}

/* WHAT at PATH (the sink or dead-letter file) must not be a file the job
 * reads: report the first one it is. */
static void check_not_read(iochk *k, const eddy_job *job, const eddy_job_io *io, const char *where,
                           const char *what, const char *path, int dflt)
{
    static const char *const prompt_keys[] = {"system_file", "user_file"};
    const char *src = io->input ? io->input : job->source_cfg ? NULL : job->source;
    char also[1024] = "";
    fileid id;
    file_id(path, &id);
    if (same_file(&id, job->file))
        snprintf(also, sizeof(also), "the job file");
    else if (same_file(&id, src))
        snprintf(also, sizeof(also), "the source (%s)",
                 io->input           ? "--input"
                 : job->source_where ? job->source_where
                                     : "?");
    else if (same_file(&id, io->state ? io->state : job->state_path))
        snprintf(also, sizeof(also), "the state store");
    else if (same_file(&id, io->traces ? io->traces : job->trace_path))
        snprintf(also, sizeof(also), "the trace store");
    for (size_t i = 0; !*also && i < job->nagents; i++) {
        const eddy_agent_def *a = &job->agents[i];
        for (int j = 0; !*also && j < 2; j++)
            if (same_file(&id, a->prompt_file[j]))
                snprintf(also, sizeof(also), "the %s of agent '%s' (%s)", prompt_keys[j], a->name,
                         a->prompt_where[j] ? a->prompt_where[j] : "?");
        for (size_t j = 0; !*also && j < a->ntools; j++)
            if (same_file(&id, a->tools[j].path))
                snprintf(also, sizeof(also), "the tool file of agent '%s' listed at %s", a->name,
                         a->tools[j].where ? a->tools[j].where : "?");
    }
    if (*also)
        ioerr(k, where, what, path, dflt, "it is also %s, and eddy would append JSON lines to it",
              also);
}

static void check_source(iochk *k, const char *where, const char *path)
{
    struct stat st;
    if (stat(path, &st))
        ioerr(k, where, "source", path, 0, "cannot be read: %s", strerror(errno));
    else if (S_ISDIR(st.st_mode))
        ioerr(k, where, "source", path, 0, "it is a folder");
    else if (access(path, R_OK)) /* no open: a FIFO would wait for its writer */
        ioerr(k, where, "source", path, 0, "cannot be read: %s", strerror(errno));
}

int eddy_job_check_io(const eddy_job *job, const eddy_job_io *io, eddy_diag *diag)
{
    static const eddy_job_io none;
    iochk k;
    const char *p;
    memset(&k, 0, sizeof(k));
    k.diag = diag;
    if (!io)
        io = &none;
    if (io->state)
        check_store(&k, "--state", "state store", io->state, 0, 0);
    else if (job->state_path)
        check_store(&k, job->state_where, "state store", job->state_path,
                    !!(job->defaults & EDDY_JOB_DEFAULT_STATE), 0);
    if (io->traces)
        check_store(&k, "--traces", "trace store", io->traces, 0, 1);
    else if (job->trace_path)
        check_store(&k, job->trace_where, "trace store", job->trace_path,
                    !!(job->defaults & EDDY_JOB_DEFAULT_TRACE), 1);
    p = io->output ? io->output : job->sink_cfg ? NULL : job->sink;
    if (p && strcmp(p, "-")) {
        check_sink(&k, io->output ? "--output" : job->sink_where, p);
        check_not_read(&k, job, io, io->output ? "--output" : job->sink_where, "sink", p, 0);
    }
    p = io->dead_letter ? io->dead_letter : job->dead_letter;
    if (p && strcmp(p, "-")) {
        const char *where = io->dead_letter ? "--dead-letter" : job->dead_letter_where;
        int dflt = !io->dead_letter && (job->defaults & EDDY_JOB_DEFAULT_DEAD_LETTER);
        struct stat st;
        if (existing_writable(&k, where, "dead-letter file", p, dflt, &st) == 0)
            creatable(&k, where, "dead-letter file", p, dflt);
        check_not_read(&k, job, io, where, "dead-letter file", p, dflt);
    }
    p = io->input ? io->input : job->source_cfg ? NULL : job->source;
    if (p && strcmp(p, "-"))
        check_source(&k, io->input ? "--input" : job->source_where, p);
    return k.errors ? EDDY_ESCHEMA : 0;
}
