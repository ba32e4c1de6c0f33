/*
 * mcp/stdio.c - the stdio transport: a child process per server, JSON-RPC
 * messages as lines on its stdin and stdout, its stderr into eddy's log.
 *
 * Each spawn gets its own mproc (the process and three pipes), freed when
 * all four handles have closed. The server points at its current mproc; a
 * restart detaches the old one (p->s = NULL), whose late events are then
 * ignored. The child runs in its own session (UV_PROCESS_DETACHED), so a
 * signal to -pid reaches what it spawned too (npx starts node).
 * Manager thread only.
 */
#include "mcp_int.h"

#include "eddy/log.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#define STDERR_LINE_MAX 2048
#define STDERR_LINES_PER_SEC 50

struct mproc {
    srv *s; /* NULL once detached */
    eddy_mcp *m;
    uv_process_t proc;
    uv_pipe_t in, out, err;
    int open;   /* handles not yet closed */
    int exited; /* the exit callback ran */
    int pid;
    eddy__mcp_lines lines, errlines;
    uint64_t log_sec;
    int log_lines, log_dropped;
};

typedef struct wreq {
    uv_write_t w;
    char *data;
} wreq;

static void handle_closed(uv_handle_t *h)
{
    mproc *p = h->data;
    if (--p->open)
        return;
    eddy__mcp_lines_free(&p->lines);
    eddy__mcp_lines_free(&p->errlines);
    p->m->live_procs--;
    eddy__mcp_check_shutdown(p->m);
    eddy_free(p);
}

static void close_pipes(mproc *p)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&p->in, (uv_handle_t *)&p->out, (uv_handle_t *)&p->err};
    for (size_t i = 0; i < 3; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], handle_closed);
}

static void on_line(void *ud, const char *line, size_t len)
{
    mproc *p = ud;
    json_error_t je;
    json_t *msg;
    if (!p->s)
        return;
    if (!line) {
        EDDY_WARN("mcp", "server '%s': a message of more than %u bytes was dropped",
                  p->s->cfg->name, EDDY_MCP_MAX_MESSAGE);
        return;
    }
    if (!len)
        return;
    msg = json_loadb(line, len, JSON_DECODE_ANY, &je);
    if (!msg) {
        EDDY_WARN("mcp", "server '%s': a line of stdout is not JSON (%s): %.*s", p->s->cfg->name,
                  je.text, (int)(len > 200 ? 200 : len), line);
        return;
    }
    eddy__mcp_on_message(p->s, msg);
    json_decref(msg);
}

static void on_err_line(void *ud, const char *line, size_t len)
{
    mproc *p = ud;
    uint64_t sec = eddy_now_ms() / 1000;
    const char *name = p->s ? p->s->cfg->name : "(old)";
    if (sec != p->log_sec) {
        if (p->log_dropped)
            EDDY_INFO("mcp", "%s: (%d lines of stderr not logged)", name, p->log_dropped);
        p->log_sec = sec;
        p->log_lines = p->log_dropped = 0;
    }
    if (++p->log_lines > STDERR_LINES_PER_SEC) {
        p->log_dropped++;
        return;
    }
    if (!line)
        EDDY_INFO("mcp", "%s: (a stderr line of more than %d bytes, cut)", name, STDERR_LINE_MAX);
    else
        EDDY_INFO("mcp", "%s: %.*s", name, (int)len, line);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = eddy_malloc(65536);
    buf->len = buf->base ? 65536 : 0;
}

static void read_out(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    mproc *p = st->data;
    if (n > 0 && p->s && eddy__mcp_lines_feed(&p->lines, buf->base, (size_t)n, on_line, p))
        EDDY_ERROR("mcp", "out of memory reading a server's stdout");
    eddy_free(buf->base);
    if (n < 0) {
        uv_read_stop(st);
        if (p->s && !p->exited && p->s->proc == p)
            eddy__mcp_stdout_closed(p->s);
    }
}

static void read_err(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    mproc *p = st->data;
    if (n > 0)
        eddy__mcp_lines_feed(&p->errlines, buf->base, (size_t)n, on_err_line, p);
    eddy_free(buf->base);
    if (n < 0)
        uv_read_stop(st);
}

static void exit_cb(uv_process_t *h, int64_t status, int sig)
{
    mproc *p = h->data;
    srv *s = p->s;
    p->exited = 1;
    /* what the server wrote before it ended is read first */
    if (!uv_is_closing((uv_handle_t *)&p->out)) {
        uv_buf_t b;
        char tmp[65536];
        ssize_t n;
        uv_os_fd_t fd;
        if (!uv_fileno((uv_handle_t *)&p->out, &fd))
            while ((n = read(fd, tmp, sizeof(tmp))) > 0 && p->s) {
                b = uv_buf_init(tmp, (unsigned)n);
                eddy__mcp_lines_feed(&p->lines, b.base, b.len, on_line, p);
            }
    }
    uv_close((uv_handle_t *)h, handle_closed);
    close_pipes(p);
    if (s && s->proc == p) {
        s->proc = NULL;
        p->s = NULL;
        if (sig)
            eddy__mcp_srv_down(s, 1, "killed by signal %d", sig);
        else
            eddy__mcp_srv_down(s, 1, "exit status %lld", (long long)status);
    }
}

/* What a stdio server inherits of eddy's environment: enough to find and
 * run a program, nothing else. eddy's environment holds the job's secrets
 * (API keys of the models); a server gets one only when its `env` says so
 * (env: {TOKEN: "${TOKEN}"}). */
static const char *const kInherit[] = {"HOME", "LOGNAME", "PATH",   "SHELL", "TERM", "USER",
                                       "LANG", "LC_ALL",  "TMPDIR", "TZ",    NULL};

static int inherited(const char *kv)
{
    for (size_t i = 0; kInherit[i]; i++) {
        size_t n = strlen(kInherit[i]);
        if (!strncmp(kv, kInherit[i], n) && kv[n] == '=')
            return 1;
    }
    return 0;
}

/* The environment of the child: the inherited names, then the server's `env`
 * (which wins). Borrows the strings. */
static char **child_env(const eddy__mcp_scfg *c)
{
    size_t n = 0, k = 0, extra = 0;
    char **env;
    while (environ[n])
        n++;
    while (c->env && c->env[extra])
        extra++;
    env = eddy_calloc(n + extra + 1, sizeof(char *));
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        if (!inherited(environ[i]))
            continue;
        for (size_t j = 0; j < extra; j++) {
            size_t kl = (size_t)(strchr(c->env[j], '=') - c->env[j]);
            if (!strncmp(environ[i], c->env[j], kl + 1))
                replaced = 1;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < extra; j++)
        env[k++] = c->env[j];
    return env;
}

int eddy__mcp_stdio_start(srv *s, eddy_err *err)
{
    eddy_mcp *m = s->m;
    uv_process_options_t o;
    uv_stdio_container_t io[3];
    mproc *p = eddy_calloc(1, sizeof(*p));
    char **env;
    int rc;
    if (!p)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    env = child_env(s->cfg);
    if (!env) {
        eddy_free(p);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    p->m = m;
    eddy__mcp_lines_init(&p->lines, EDDY_MCP_MAX_MESSAGE);
    eddy__mcp_lines_init(&p->errlines, STDERR_LINE_MAX);
    uv_pipe_init(&m->loop, &p->in, 0);
    uv_pipe_init(&m->loop, &p->out, 0);
    uv_pipe_init(&m->loop, &p->err, 0);
    p->in.data = p->out.data = p->err.data = p->proc.data = p;
    p->open = 3;
    memset(&o, 0, sizeof(o));
    io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    io[0].data.stream = (uv_stream_t *)&p->in;
    io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[1].data.stream = (uv_stream_t *)&p->out;
    io[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[2].data.stream = (uv_stream_t *)&p->err;
    o.file = s->cfg->argv[0];
    o.args = s->cfg->argv;
    o.env = env;
    o.cwd = s->cfg->cwd;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio_count = 3;
    o.stdio = io;
    o.exit_cb = exit_cb;
    rc = uv_spawn(&m->loop, &p->proc, &o);
    eddy_free(env);
    m->live_procs++;
    if (rc) {
        /* the process handle is closed as well, per libuv */
        p->open++;
        uv_close((uv_handle_t *)&p->proc, handle_closed);
        close_pipes(p);
        return eddy_err_setc(err, EDDY_EIO, rc, "cannot start '%s': %s", s->cfg->argv[0],
                             uv_strerror(rc));
    }
    p->open++;
    p->pid = p->proc.pid;
    p->s = s;
    s->proc = p;
    uv_read_start((uv_stream_t *)&p->out, alloc_cb, read_out);
    uv_read_start((uv_stream_t *)&p->err, alloc_cb, read_err);
    EDDY_DEBUG("mcp", "server '%s' started (pid %d)", s->cfg->name, p->pid);
    return 0;
}

static void write_cb(uv_write_t *w, int status)
{
    wreq *r = container_of(w, wreq, w);
    (void)status; /* a broken pipe shows as the process's exit */
    eddy_free(r->data);
    eddy_free(r);
}

int eddy__mcp_stdio_send(srv *s, const char *line, size_t len)
{
    mproc *p = s->proc;
    wreq *r;
    uv_buf_t b;
    int rc;
    if (!p || p->exited || uv_is_closing((uv_handle_t *)&p->in))
        return EDDY_EIO;
    r = eddy_calloc(1, sizeof(*r));
    if (!r || !(r->data = eddy_malloc(len))) {
        eddy_free(r);
        return EDDY_ENOMEM;
    }
    memcpy(r->data, line, len);
    b = uv_buf_init(r->data, (unsigned)len);
    if ((rc = uv_write(&r->w, (uv_stream_t *)&p->in, &b, 1, write_cb))) {
        eddy_free(r->data);
        eddy_free(r);
        return EDDY_EIO;
    }
    return 0;
}

void eddy__mcp_stdio_kill(srv *s, int sig, int detach)
{
    mproc *p = s->proc;
    if (!p)
        return;
    if (!p->exited && p->pid > 0)
        kill(-p->pid, sig);
    if (detach) {
        p->s = NULL;
        s->proc = NULL;
        close_pipes(p); /* the process handle closes at its exit */
    }
}

void eddy__mcp_stdio_kill_all(eddy_mcp *m, int sig)
{
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        if (s->proc && !s->proc->exited && s->proc->pid > 0)
            kill(-s->proc->pid, sig);
    }
    /* detached processes (restarted servers) were SIGKILLed already */
}
