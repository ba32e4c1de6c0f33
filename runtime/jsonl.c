/*
 * runtime/jsonl.c - the JSONL source (file or stdin) and JSONL sinks.
 *
 * Source: a splitter cuts the bytes into lines and knows, for each, its byte
 * offset, the offset after its line end, its line number and a fingerprint
 * of the 64 bytes before that end (so that a restart can tell whether the
 * file it resumes in is the one it stopped in). A regular file is read by a
 * reader thread into a bounded FIFO; when full the thread waits on a
 * condition variable (backpressure). A pipe or terminal (stdin, a FIFO) is
 * read on the consumer's loop instead, with uv_read_stop while the FIFO is
 * full: a thread blocked in read(2) on a pipe could never be joined. A UTF-8
 * byte order mark at the start of the input is not part of its first line.
 *
 * Sinks: one compact JSON document per line, written by a writer thread in
 * batches with write(2); each value's delivery (or failure) comes back on
 * the loop with the file's length after it. A lazy sink (the dead letters)
 * creates its file, and the folders above it, at its first record. When the
 * reader of stdout goes away (EPIPE: `eddy run --output - | head`), every
 * value from then on fails with EDDY_ECLOSING: the runtime then ends the job
 * as a SIGTERM would, and one warning at the end counts the outputs lost.
 */
#include "eddy/connector.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "eddy/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FP_BYTES 64

/* -- the line splitter ------------------------------------------------------ */

typedef struct splitter {
    eddy_buf line; /* the current line's bytes so far */
    int64_t off;   /* offset of the current line's first byte */
    long lineno;   /* lines emitted */
    unsigned char tail[FP_BYTES];
    size_t ntail;
} splitter;

static int64_t fingerprint(const unsigned char *p, size_t n)
{
    return n ? (int64_t)(eddy_hash64(p, n) >> 1) : 0;
}

static void tail_add(splitter *sp, const unsigned char *p, size_t n)
{
    if (n >= FP_BYTES) {
        memcpy(sp->tail, p + n - FP_BYTES, FP_BYTES);
        sp->ntail = FP_BYTES;
        return;
    }
    if (sp->ntail + n > FP_BYTES) {
        size_t drop = sp->ntail + n - FP_BYTES;
        memmove(sp->tail, sp->tail + drop, sp->ntail - drop);
        sp->ntail -= drop;
    }
    memcpy(sp->tail + sp->ntail, p, n);
    sp->ntail += n;
}

typedef int (*emit_fn)(void *ud, eddy_record *rec);

/* The line in SP->line (TERM bytes of line end included) is complete. */
static int split_emit(splitter *sp, size_t term, emit_fn emit, void *ud)
{
    eddy_record rec;
    size_t raw = sp->line.len, len = raw - term;
    const char *start = sp->line.data ? sp->line.data : "";
    memset(&rec, 0, sizeof(rec));
    rec.fp_before = fingerprint(sp->tail, sp->ntail);
    tail_add(sp, (const unsigned char *)start, raw);
    sp->lineno++;
    if (sp->off == 0 && len >= 3 && !memcmp(start, "\xEF\xBB\xBF", 3)) {
        start += 3; /* editors on Windows write one; it is not JSON */
        len -= 3;
    }
    while (len > 0 && start[len - 1] == '\r')
        len--;
    rec.text = eddy_strndup(start, len);
    rec.len = len;
    rec.line = sp->lineno;
    rec.pos = sp->off;
    rec.next = sp->off + (int64_t)raw;
    rec.fp = fingerprint(sp->tail, sp->ntail);
    sp->off = rec.next;
    sp->line.len = 0;
    return emit(ud, &rec); /* takes rec.text, also when it is NULL (out of memory) */
}

static int split_feed(splitter *sp, const char *p, size_t n, emit_fn emit, void *ud)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) + 1 : n;
        eddy_buf_append(&sp->line, p, k);
        p += k;
        n -= k;
        if (nl && split_emit(sp, 1, emit, ud))
            return -1;
    }
    return 0;
}

static int split_end(splitter *sp, emit_fn emit, void *ud)
{
    return sp->line.len ? split_emit(sp, 0, emit, ud) : 0;
}

/* -- the source -------------------------------------------------------------- */

typedef struct node {
    eddy_record rec;
    struct node *next;
} node;

typedef struct jsonl_src {
    char *name, *id;
    int fd, own_fd, resumable;
    /* a regular file: the reader thread */
    pthread_t thread;
    int has_thread;
    /* a pipe or terminal: read on the loop */
    uv_loop_t *loop;
    union {
        uv_pipe_t pipe;
        uv_tty_t tty;
        uv_stream_t stream;
    } h;
    int on_loop, handle_open, reading;
    char rbuf[65536];
    splitter sp;
    pthread_mutex_t mu;
    pthread_cond_t not_full;
    node *head, *tail;
    size_t n, cap;
    int stop, eof, finished;
    int waiting; /* the thread waits for the FIFO to drain to half */
    int quiet;   /* closed: NOTIFY may be gone */
    uv_async_t *notify;
    int64_t taken; /* the consumer's: the byte after the last record taken */
} jsonl_src;

/* Queue REC; the thread waits while the FIFO is full, until it drained to
 * half (one wake-up per cap/2 records, not one per record). The loop is
 * told only when the FIFO stops being empty: it takes records until it is
 * empty again or it has enough in flight (then it comes back by itself).
 * Returns -1 when the source was stopped. */
static int push(void *ud, eddy_record *rec)
{
    jsonl_src *s = ud;
    node *nd = rec->text ? eddy_calloc(1, sizeof(*nd)) : NULL;
    if (nd)
        nd->rec = *rec;
    else
        eddy_free(rec->text); /* out of memory loses nothing silently: the line number gap shows */
    pthread_mutex_lock(&s->mu);
    while (!s->on_loop && s->n >= s->cap && !s->stop) {
        s->waiting = 1;
        pthread_cond_wait(&s->not_full, &s->mu);
    }
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        if (nd)
            eddy_free(nd->rec.text);
        eddy_free(nd);
        return -1;
    }
    if (nd) {
        if (s->tail)
            s->tail->next = nd;
        else
            s->head = nd;
        s->tail = nd;
        s->n++;
    }
    if (!s->quiet && s->n == 1) /* under the mutex: src_close silences it before the handle goes */
        uv_async_send(s->notify);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void mark_eof(jsonl_src *s)
{
    pthread_mutex_lock(&s->mu);
    s->eof = 1;
    s->finished = 1;
    if (!s->quiet)
        uv_async_send(s->notify);
    pthread_mutex_unlock(&s->mu);
}

static void *reader(void *arg)
{
    jsonl_src *s = arg;
    pthread_setname_np(pthread_self(), "eddy-input");
    for (;;) {
        ssize_t got = read(s->fd, s->rbuf, sizeof(s->rbuf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            EDDY_ERROR("jsonl", "%s: read failed: %s", s->name, strerror(errno));
        if (got <= 0) {
            split_end(&s->sp, push, s);
            break;
        }
        if (split_feed(&s->sp, s->rbuf, (size_t)got, push, s))
            break;
    }
    mark_eof(s);
    return NULL;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    jsonl_src *s = h->data;
    (void)hint;
    *b = uv_buf_init(s->rbuf, sizeof(s->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    jsonl_src *s = st->data;
    if (n > 0) {
        split_feed(&s->sp, b->base, (size_t)n, push, s);
        if (s->n >= s->cap && s->reading) { /* backpressure */
            uv_read_stop(st);
            s->reading = 0;
        }
        return;
    }
    if (n == 0 || n == UV_EAGAIN)
        return;
    if (n != UV_EOF)
        EDDY_ERROR("jsonl", "%s: read failed: %s", s->name, uv_strerror((int)n));
    uv_read_stop(st);
    s->reading = 0;
    split_end(&s->sp, push, s);
    mark_eof(s);
}

static const char *src_name(void *impl);
static const char *src_id(void *impl);
static const char *src_part(void *impl, int part, char *buf, size_t n);
static int src_resumable(void *impl);
static int src_next(void *impl, eddy_record *rec);
/* A regular file: its size now minus the bytes taken. A pipe: unknown. */
static int64_t src_lag(void *impl, int *bytes)
{
    jsonl_src *s = impl;
    struct stat st;
    if (s->on_loop || fstat(s->fd, &st) || !S_ISREG(st.st_mode))
        return -1;
    *bytes = 1;
    return st.st_size > s->taken ? (int64_t)st.st_size - s->taken : 0;
}

static void src_stop(void *impl);
static void src_close(void *impl);
static void src_free(void *impl);
static int64_t src_lag(void *impl, int *bytes);
static const eddy_source_ops kJsonlSource = {src_name, src_id,    src_part, src_resumable, src_next,
                                             src_stop, src_close, src_free, NULL,          src_lag};

/* Resume S at the stored position RESUME when the file still has, before
 * it, the bytes it had. */
static void resume_at(jsonl_src *s, const json_t *cresume)
{
    json_t *resume = (json_t *)cresume; /* read only */
    int64_t pos = eddy_json_int(resume, "pos", 0), fp = eddy_json_int(resume, "fp", 0);
    long line = (long)eddy_json_int(resume, "line", 0);
    unsigned char buf[FP_BYTES];
    struct stat st;
    size_t k;
    if (pos <= 0)
        return;
    if (fstat(s->fd, &st) || st.st_size < pos) {
        EDDY_WARN("jsonl",
                  "%s: the checkpoint resumes at byte %lld (line %ld) but the file has %lld "
                  "bytes: it was replaced; reading it from the top",
                  s->name, (long long)pos, line + 1, (long long)st.st_size);
        return;
    }
    k = pos < FP_BYTES ? (size_t)pos : FP_BYTES;
    if (pread(s->fd, buf, k, pos - (int64_t)k) != (ssize_t)k || fingerprint(buf, k) != fp) {
        EDDY_WARN("jsonl",
                  "%s: the bytes before byte %lld are not those the checkpoint was taken after: "
                  "the file changed; reading it from the top",
                  s->name, (long long)pos);
        return;
    }
    if (lseek(s->fd, pos, SEEK_SET) != pos)
        return;
    memcpy(s->sp.tail, buf, k);
    s->sp.ntail = k;
    s->sp.off = pos;
    s->taken = pos;
    s->sp.lineno = line;
    EDDY_INFO("jsonl", "%s: resuming at line %ld (byte %lld), as checkpointed", s->name, line + 1,
              (long long)pos);
}

int eddy_source_open_jsonl(const char *path, size_t capacity, uv_loop_t *loop, uv_async_t *notify,
                           const json_t *resume, eddy_source **out, eddy_err *err)
{
    jsonl_src *s = eddy_calloc(1, sizeof(*s));
    int is_stdin = !strcmp(path, "-");
    uv_handle_type kind;
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0) {
        int e = errno;
        eddy_free(s);
        return eddy_err_setc(err, e == ENOENT ? EDDY_ENOENT : EDDY_EIO, e,
                             "%s: cannot open the input: %s", path, strerror(e));
    }
    s->own_fd = !is_stdin;
    s->name = eddy_strdup(is_stdin ? "stdin" : path);
    if (is_stdin) {
        s->id = eddy_strdup("stdin");
    } else {
        char *abs = realpath(path, NULL);
        s->id = eddy_aprintf("jsonl:%s", abs ? abs : path);
        free(abs); /* realpath allocates with malloc */
    }
    s->cap = capacity ? capacity : 1024;
    s->notify = notify;
    s->loop = loop;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->not_full, NULL);
    if (!s->name || !s->id) {
        src_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    kind = uv_guess_handle(s->fd);
    if (kind == UV_FILE) {
        if (!is_stdin)
            fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK);
        s->resumable = !is_stdin;
        if (s->resumable && resume)
            resume_at(s, resume);
        if (pthread_create(&s->thread, NULL, reader, s)) {
            src_free(s);
            return eddy_err_set(err, EDDY_EIO, "cannot start the reader thread");
        }
        s->has_thread = 1;
    } else if (kind == UV_NAMED_PIPE || kind == UV_TTY) {
        int rc = kind == UV_TTY ? uv_tty_init(loop, &s->h.tty, s->fd, 1)
                                : uv_pipe_init(loop, &s->h.pipe, 0);
        if (!rc && kind == UV_NAMED_PIPE)
            rc = uv_pipe_open(&s->h.pipe, s->fd);
        if (!rc) {
            s->handle_open = 1;
            s->on_loop = 1;
            s->own_fd = 0; /* the handle closes it (stdin too: nobody else reads it) */
            s->h.stream.data = s;
            rc = uv_read_start(&s->h.stream, on_alloc, on_read);
            s->reading = rc == 0;
        }
        if (rc) {
            if (s->handle_open)
                uv_close((uv_handle_t *)&s->h, NULL);
            s->handle_open = 0;
            src_free(s);
            return eddy_err_set(err, EDDY_EIO, "%s: cannot read it: %s", path, uv_strerror(rc));
        }
    } else {
        src_free(s);
        return eddy_err_set(err, EDDY_EINVAL, "%s: not a file, a pipe or a terminal", path);
    }
    if (!(*out = eddy_source_new(&kJsonlSource, s))) {
        src_stop(s);
        src_close(s);
        src_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

static const char *src_name(void *impl)
{
    return ((jsonl_src *)impl)->name;
}

static const char *src_id(void *impl)
{
    return ((jsonl_src *)impl)->id;
}

static const char *src_part(void *impl, int part, char *buf, size_t n)
{
    (void)impl;
    (void)part;
    snprintf(buf, n, "file");
    return buf;
}

static int src_resumable(void *impl)
{
    return ((jsonl_src *)impl)->resumable;
}

static int src_next(void *impl, eddy_record *rec)
{
    jsonl_src *s = impl;
    node *nd;
    int r;
    pthread_mutex_lock(&s->mu);
    nd = s->head;
    if (nd) {
        s->head = nd->next;
        if (!s->head)
            s->tail = NULL;
        s->n--;
        if (s->waiting && s->n <= s->cap / 2) {
            s->waiting = 0;
            pthread_cond_signal(&s->not_full);
        }
        *rec = nd->rec;
        s->taken = rec->next;
        r = 1;
    } else {
        r = s->eof || s->stop ? -1 : 0;
    }
    pthread_mutex_unlock(&s->mu);
    eddy_free(nd);
    if (s->on_loop && s->handle_open && !s->reading && !s->eof && !s->stop && s->n < s->cap / 2 &&
        uv_read_start(&s->h.stream, on_alloc, on_read) == 0)
        s->reading = 1;
    return r;
}

static void src_stop(void *impl)
{
    jsonl_src *s = impl;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->not_full);
    pthread_mutex_unlock(&s->mu);
    if (s->on_loop && s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = 0;
    }
}

static void src_close(void *impl)
{
    jsonl_src *s = impl;
    pthread_mutex_lock(&s->mu);
    s->quiet = 1;
    pthread_mutex_unlock(&s->mu);
    if (s->handle_open) {
        if (s->reading)
            uv_read_stop(&s->h.stream);
        s->reading = 0;
        uv_close((uv_handle_t *)&s->h, NULL);
        s->handle_open = 0;
    }
}

static void src_free(void *impl)
{
    jsonl_src *s = impl;
    src_stop(s);
    if (s->has_thread)
        pthread_join(s->thread, NULL); /* a regular file: its reads always return */
    while (s->head) {
        node *nd = s->head;
        s->head = nd->next;
        eddy_free(nd->rec.text);
        eddy_free(nd);
    }
    if (s->own_fd)
        close(s->fd);
    eddy_buf_free(&s->sp.line);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->not_full);
    eddy_free(s->name);
    eddy_free(s->id);
    eddy_free(s);
}

/* -- dead-letter fields ------------------------------------------------------------ */

static void base64(eddy_buf *b, const unsigned char *s, size_t n)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {digits[v >> 18 & 63], digits[v >> 12 & 63],
                     i + 1 < n ? digits[v >> 6 & 63] : '=', i + 2 < n ? digits[v & 63] : '='};
        eddy_buf_append(b, q, 4);
    }
}

#define RAW_MAX 65536 /* bytes of a line kept in its dead letter */

int eddy_jsonl_raw_fields(json_t *d, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = len > RAW_MAX ? RAW_MAX : len, i = 0, k;
    int bad = 0, rc = 0;
    eddy_buf raw, b64;
    eddy_buf_init(&raw);
    eddy_buf_init(&b64);
    while (i < n) {
        if ((k = eddy_utf8_seq_len((const char *)s + i, len - i)) == 0) {
            eddy_buf_append(&raw, "\xEF\xBF\xBD", 3); /* U+FFFD for each byte that is not UTF-8 */
            bad = 1;
            i++;
        } else {
            eddy_buf_append(&raw, s + i, k); /* a character across the cut is kept whole */
            i += k;
        }
    }
    if (bad)
        base64(&b64, s, n);
    if (raw.oom || b64.oom ||
        json_object_set_new(d, "raw", json_stringn(raw.data ? raw.data : "", raw.len)) ||
        (bad && json_object_set_new(d, "raw_base64", json_stringn(b64.data, b64.len))) ||
        (len > i && json_object_set_new(d, "raw_truncated", json_true())))
        rc = EDDY_ENOMEM;
    eddy_buf_free(&raw);
    eddy_buf_free(&b64);
    return rc;
}

/* -- sinks --------------------------------------------------------------------- */

typedef struct wjob {
    char *text;
    size_t len;
    uint64_t tag;
    int status;
    int64_t end;
    char reason[200];
    struct wjob *next;
} wjob;

typedef struct jsonl_sink {
    char *path;
    int is_stdout, lazy;
    /* the writer thread's */
    int fd;
    int64_t length;
    int broken; /* EPIPE on stdout */
    eddy_buf buf;
    wjob *batch, *batch_tail;
    eddy_bgq *q;
    /* shared */
    pthread_mutex_t mu;
    wjob *done, *done_tail;
    /* the loop's */
    uv_async_t async;
    int async_open;
    eddy_sink_done_cb cb;
    void *ud;
    long count, dropped, pending;
    int64_t loop_length;
    void (*flush_cb)(void *ud);
    void *flush_ud;
} jsonl_sink;

static int open_out(jsonl_sink *s, char *why, size_t n)
{
    eddy_err e;
    if (s->fd >= 0)
        return 0;
    if (s->lazy && eddy_mkdirs_for(s->path, &e)) {
        snprintf(why, n, "%s", e.msg); /* the default folder need not exist yet */
        return -1;
    }
    s->fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        snprintf(why, n, "%s: cannot open for writing: %s", s->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Writer thread: the value joins the batch. */
static void w_job(void *p, void *ctx)
{
    jsonl_sink *s = ctx;
    wjob *j = p;
    eddy_buf_append(&s->buf, j->text, j->len);
    eddy_buf_append(&s->buf, "\n", 1);
    j->end = s->length + (int64_t)s->buf.len;
    eddy_free(j->text);
    j->text = NULL;
    if (s->batch_tail)
        s->batch_tail->next = j;
    else
        s->batch = j;
    s->batch_tail = j;
}

/* Writer thread: write the batch and say how it went. */
static void w_flush(void *ctx)
{
    jsonl_sink *s = ctx;
    wjob *list = s->batch;
    char why[200] = "";
    int status = 0;
    s->batch = s->batch_tail = NULL;
    if (!list)
        return;
    if (s->broken) {
        status = EDDY_ECLOSING;
        snprintf(why, sizeof(why), "stdout was closed by its reader");
    } else if (s->buf.oom) {
        status = EDDY_ENOMEM;
        snprintf(why, sizeof(why), "out of memory");
    } else if (open_out(s, why, sizeof(why))) {
        status = EDDY_EIO;
    } else {
        size_t off = 0;
        while (off < s->buf.len) {
            ssize_t w = write(s->fd, s->buf.data + off, s->buf.len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                int e = errno;
                if (e == EPIPE && s->is_stdout) {
                    s->broken = 1;
                    status = EDDY_ECLOSING;
                    snprintf(why, sizeof(why), "stdout was closed by its reader");
                } else {
                    status = EDDY_EIO;
                    snprintf(why, sizeof(why), "%s: write failed: %s", s->path, strerror(e));
                }
                break;
            }
            off += (size_t)w;
        }
        if (status && off && !s->is_stdout && ftruncate(s->fd, s->length) == 0)
            off = 0; /* no torn line: the batch is not there at all (its values failed) */
        s->length += (int64_t)off;
    }
    for (wjob *j = list; j; j = j->next)
        if (status) {
            j->status = status;
            snprintf(j->reason, sizeof(j->reason), "%s", why);
        }
    s->buf.len = 0;
    s->buf.oom = 0;
    pthread_mutex_lock(&s->mu);
    if (s->done_tail)
        s->done_tail->next = list;
    else
        s->done = list;
    while (list->next)
        list = list->next;
    s->done_tail = list;
    if (s->async_open) /* under the mutex: the loop may close it once it has the list */
        uv_async_send(&s->async);
    pthread_mutex_unlock(&s->mu);
}

/* Loop: no more deliveries will be reported (the writer stops waking us). */
static void close_async(jsonl_sink *s)
{
    pthread_mutex_lock(&s->mu);
    int open = s->async_open;
    s->async_open = 0;
    pthread_mutex_unlock(&s->mu);
    if (open)
        uv_close((uv_handle_t *)&s->async, NULL);
}

static void sink_async(uv_async_t *a)
{
    jsonl_sink *s = a->data;
    wjob *list;
    pthread_mutex_lock(&s->mu);
    list = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (list) {
        wjob *j = list;
        list = j->next;
        s->pending--;
        if (!j->status) {
            s->count++;
            s->loop_length = j->end;
        } else if (j->status == EDDY_ECLOSING) {
            s->dropped++;
        }
        if (s->cb)
            s->cb(j->tag, j->status, j->reason, j->end, s->ud);
        eddy_free(j);
    }
    if (s->flush_cb && s->pending == 0) {
        void (*cb)(void *) = s->flush_cb;
        s->flush_cb = NULL;
        close_async(s);
        cb(s->flush_ud);
    }
}

static const char *sink_name(void *impl);
static int sink_write(void *impl, json_t *v, uint64_t tag, eddy_err *err);
static long sink_count(void *impl);
static int sink_flush(void *impl, void (*cb)(void *ud), void *ud);
static void sink_on_done(void *impl, eddy_sink_done_cb cb, void *ud);
static int64_t sink_length(void *impl);
static void sink_free(void *impl);
static const eddy_sink_ops kJsonlSink = {sink_name,    sink_write,  sink_count, sink_flush,
                                         sink_on_done, sink_length, sink_free,  NULL,
                                         NULL,         NULL};

int eddy_sink_open_jsonl(const char *path, int lazy, int64_t truncate, uv_loop_t *loop,
                         eddy_sink **out, eddy_err *err)
{
    jsonl_sink *s = eddy_calloc(1, sizeof(*s));
    int rc;
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->fd = -1;
    s->is_stdout = !path || !strcmp(path, "-");
    s->lazy = lazy;
    s->path = eddy_strdup(s->is_stdout ? "stdout" : path);
    pthread_mutex_init(&s->mu, NULL);
    if (!s->path) {
        sink_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (s->is_stdout) {
        s->fd = 1;
    } else if (!lazy || truncate >= 0) {
        char why[200];
        if (open_out(s, why, sizeof(why))) {
            rc = eddy_err_setc(err, EDDY_EIO, errno, "%s", why);
            sink_free(s);
            return rc;
        }
    }
    if (s->fd >= 0 && !s->is_stdout) {
        struct stat st;
        if (truncate >= 0 && fstat(s->fd, &st) == 0 && st.st_size > truncate) {
            if (ftruncate(s->fd, truncate)) {
                rc = eddy_err_setc(err, EDDY_EIO, errno, "%s: cannot cut it back to %lld bytes: %s",
                                   s->path, (long long)truncate, strerror(errno));
                sink_free(s);
                return rc;
            }
            EDDY_INFO("jsonl", "%s: cut back to %lld bytes, its length at the last checkpoint",
                      s->path, (long long)truncate);
        }
        if (fstat(s->fd, &st) == 0)
            s->length = s->loop_length = st.st_size;
    }
    /* a 1 ms linger: outputs written together (one wake-up and one write for a
     * batch, not one a line) */
    eddy_bgq_limits lim = {512, 2, 1, "eddy-sink"};
    if ((rc = eddy_bgq_new(w_job, w_flush, s, &lim, &s->q, err))) {
        sink_free(s);
        return rc;
    }
    uv_async_init(loop, &s->async, sink_async);
    s->async.data = s;
    s->async_open = 1;
    if (!(*out = eddy_sink_new(&kJsonlSink, s))) {
        close_async(s);
        sink_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

static int sink_write(void *impl, json_t *v, uint64_t tag, eddy_err *err)
{
    jsonl_sink *s = impl;
    wjob *j = eddy_calloc(1, sizeof(*j));
    if (!j || !(j->text = eddy_json_dumps(v))) {
        eddy_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    j->len = strlen(j->text);
    j->tag = tag;
    if (eddy_bgq_post(s->q, j)) {
        eddy_free(j->text);
        eddy_free(j);
        return eddy_err_set(err, EDDY_ECLOSING, "%s: the sink is closed", s->path);
    }
    s->pending++;
    return 0;
}

static int sink_flush(void *impl, void (*cb)(void *ud), void *ud)
{
    jsonl_sink *s = impl;
    if (s->pending == 0) {
        close_async(s);
        return EDDY_ENOENT;
    }
    s->flush_cb = cb;
    s->flush_ud = ud;
    return 0;
}

static void sink_on_done(void *impl, eddy_sink_done_cb cb, void *ud)
{
    jsonl_sink *s = impl;
    s->cb = cb;
    s->ud = ud;
}

static int64_t sink_length(void *impl)
{
    jsonl_sink *s = impl;
    return s->is_stdout ? -1 : s->loop_length;
}

static long sink_count(void *impl)
{
    return ((jsonl_sink *)impl)->count;
}

static const char *sink_name(void *impl)
{
    return ((jsonl_sink *)impl)->path;
}

static void sink_free(void *impl)
{
    jsonl_sink *s = impl;
    eddy_bgq_free(s->q); /* writes what is queued */
    if (s->dropped)      /* a warning: --quiet must not hide that outputs were lost */
        EDDY_WARN("jsonl", "stdout was closed by its reader: %ld output(s) not written",
                  s->dropped);
    pthread_mutex_lock(&s->mu);
    while (s->done) {
        wjob *j = s->done;
        s->done = j->next;
        eddy_free(j);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->fd >= 0 && !s->is_stdout)
        close(s->fd);
    eddy_buf_free(&s->buf);
    pthread_mutex_destroy(&s->mu);
    eddy_free(s->path);
    eddy_free(s);
}
