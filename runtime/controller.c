/*
 * runtime/controller.c - run a job: the controller loop and its workers.
 *
 * The controller (the calling thread's loop) opens the store, the sources
 * and sinks, and starts the workers. It takes records while fewer than
 * max_in_flight are unfinished, turns each into an event, and routes it by
 * key (key -> key group -> worker) as one task per agent that handles its
 * type. A run an earlier process finished (the store's replay table says
 * so) is not run again: its stored outcome is delivered, unless a
 * checkpoint saw it delivered. A finished task's output goes to the sink;
 * only when the sink says it is delivered is the record's part done with
 * it. Per source part, the records are kept in order; the position below
 * which all are done is what a checkpoint stores, every
 * checkpoint.interval, with the runs delivered since the last one and (for
 * exactly_once) the sink's committed length.
 *
 * Ending: at the end of input with nothing in flight, or after SIGINT or
 * SIGTERM (stop reading; running events get shutdown_grace to finish, then
 * are abandoned; a second signal abandons at once): deliver what the sinks
 * hold, take a last checkpoint, close the workers, print the summary. An
 * abandoned event holds its part's position: a restart reads it again, and
 * its run replays its journaled steps.
 */
#include "runtime_int.h"

#include <assert.h>
#include <signal.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/connector.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "eddy/trace.h"

typedef struct rec {
    int part;
    int64_t pos, next, fp;
    long line;
    int outstanding; /* runs and deliveries not finished */
    int finished;    /* nothing outstanding */
    int abandoned;   /* a run was abandoned: the part's position stays before it */
    struct rec *next_in_part;
} rec;

typedef struct part {
    char *name;
    int64_t hash; /* eddy_store_hash of "SOURCE\x1fPART": runs are named by it */
    rec *head, *tail;
    int64_t wm_pos, wm_line, wm_fp; /* everything before wm_pos is done */
    int64_t saved;                  /* wm_pos at the last checkpoint, -1: none */
    int used;
} part;

/* One value handed to a sink. */
typedef struct dlv {
    rec *r;
    int agent;  /* -1: not a run's outcome */
    int output; /* to the output sink (else the dead letters) */
    json_t *v;  /* kept until delivered: a failure sends it to the dead letters */
} dlv;

struct eddy__ctl {
    uv_loop_t loop;
    eddy_job *job;
    const eddy_run_opts *opts;
    const char *state_path, *trace_path;
    eddy_store *store;
    eddy_store_session *ss;
    eddy_trace_store *traces;
    eddy_metrics *metrics;
    eddy_source *src;
    eddy_sink *out, *dead;
    uv_async_t src_async;
    uv_signal_t sigint, sigterm;
    uv_timer_t grace, ckpt, progress;
    eddy_http *http;          /* the dashboard and /metrics, or NULL */
    eddy_mcp *mcp;            /* the job's MCP servers, or NULL */
    eddy__reloader *reloader; /* SIGHUP and --watch */
    eddy_span *ckpt_span;     /* the checkpoint being committed (a trace of its own) */
    eddy__queue done;
    eddy__worker **w;
    int nw;
    part *parts;
    int nparts;
    long in_flight, events, dead_letters, abandoned, replayed, redelivered, outputs_dropped;
    long llm_calls_seen, tokens_seen, tools_seen, outputs;
    eddy_delivered *dl, *posted; /* marks since the last checkpoint; those it carries */
    size_t ndl, capdl, nposted, capposted;
    int64_t sink_len;
    long sink_count;
    int exactly_once;
    /* checkpoints */
    long ckpts;
    double ckpt_total_ms, ckpt_max_ms;
    uint64_t ckpt_started;
    int ckpt_busy, ckpt_final;
    uint64_t start_ms, last_progress_events;
    int stopping, signal_no, eof, closing, closed_handles, progress_on;
    json_t *no_positions; /* --from-start: what the sources are told was stored */
    int waiting_base;     /* the first records wait for store_sink_base's commit */
};

typedef eddy__ctl ctl;

static void pump(ctl *c);
static void begin_close(ctl *c);

/* -- positions ------------------------------------------------------------- */

static part *part_of(ctl *c, int idx)
{
    if (idx < 0 || idx > 1 << 20)
        return NULL;
    if (idx >= c->nparts) {
        part *v = eddy_realloc(c->parts, (size_t)(idx + 1) * sizeof(*v));
        if (!v)
            return NULL;
        memset(v + c->nparts, 0, (size_t)(idx + 1 - c->nparts) * sizeof(*v));
        c->parts = v;
        c->nparts = idx + 1;
    }
    part *p = &c->parts[idx];
    if (!p->name) {
        char buf[128];
        const char *nm = eddy_source_part_name(c->src, idx, buf, sizeof(buf));
        p->name = eddy_strdup(nm);
        if (!p->name)
            return NULL;
        p->hash = eddy_store_part_hash(eddy_source_id(c->src), nm);
        p->saved = -1;
        p->wm_pos = -1;
    }
    return p;
}

/* R has nothing outstanding: its part may move past it. */
static void rec_finished(ctl *c, rec *r)
{
    assert(!r->finished && r->outstanding == 0);
    r->finished = 1;
    c->in_flight--;
    eddy_metrics_gauge(c->metrics, EDDY_M_IN_FLIGHT, c->in_flight);
    part *p = &c->parts[r->part];
    while (p->head && p->head->finished && !p->head->abandoned) {
        rec *h = p->head;
        p->wm_pos = h->next;
        p->wm_line = h->line;
        p->wm_fp = h->fp;
        p->head = h->next_in_part;
        if (!p->head)
            p->tail = NULL;
        eddy_free(h);
    }
    if (!c->closing)
        pump(c);
}

static void rec_release(ctl *c, rec *r)
{
    assert(r->outstanding > 0);
    if (--r->outstanding == 0)
        rec_finished(c, r);
}

/* -- delivery ---------------------------------------------------------------- */

static void stop(ctl *c, const char *why);

static void deliver(ctl *c, rec *r, int agent, int output, json_t *v);

static void dead_letter(ctl *c, rec *r, json_t *d)
{
    c->dead_letters++;
    eddy_metrics_count(c->metrics, EDDY_M_DEAD_LETTERS, 1);
    deliver(c, r, -1, 0, d);
}

static void sink_failed(ctl *c, rec *r, json_t *v, const char *reason)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:O}", "type", "dead_letter", "reason", reason, "sink",
                          eddy_sink_name(c->out), "output", v);
    EDDY_ERROR("runtime", "%s", reason);
    dead_letter(c, r, d ? d : v);
    json_decref(d);
}

/* Hand V (borrowed) to the output sink (OUTPUT) or the dead letters; R
 * waits for it. */
static void deliver(ctl *c, rec *r, int agent, int output, json_t *v)
{
    eddy_sink *s = output ? c->out : c->dead;
    dlv *d = eddy_calloc(1, sizeof(*d));
    eddy_err e;
    int rc;
    if (!d) {
        EDDY_ERROR("runtime", "out of memory delivering an output");
        if (r)
            r->abandoned = 1; /* read again at the next start */
        return;
    }
    d->r = r;
    d->agent = agent;
    d->output = output;
    d->v = json_incref(v);
    if (r)
        r->outstanding++;
    if ((rc = eddy_sink_write(s, v, (uint64_t)(uintptr_t)d, &e)) == 0)
        return;
    json_decref(d->v);
    eddy_free(d);
    if (output && rc != EDDY_ECLOSING) {
        sink_failed(c, r, v, e.msg); /* the output does not fit the sink */
    } else if (output) {
        c->outputs_dropped++;
        if (r)
            r->abandoned = 1;
        stop(c, e.msg);
    } else {
        EDDY_ERROR("runtime", "cannot write a dead-letter record: %s", e.msg);
        if (r)
            r->abandoned = 1;
    }
    if (r)
        rec_release(c, r);
}

/* Note that the run D names was delivered, for the next checkpoint. 0, or
 * -1 out of memory (the mark is lost: the output may come again). */
static int mark_delivered(ctl *c, eddy_delivered d)
{
    if (c->ndl == c->capdl) {
        size_t n = c->capdl ? c->capdl * 2 : 256;
        eddy_delivered *v = eddy_realloc(c->dl, n * sizeof(*v));
        if (!v)
            return -1;
        c->dl = v;
        c->capdl = n;
    }
    c->dl[c->ndl++] = d;
    return 0;
}

static void on_delivered(uint64_t tag, int status, const char *reason, int64_t end, void *ud)
{
    ctl *c = ud;
    dlv *d = (dlv *)(uintptr_t)tag;
    if (d->output && !status) {
        c->sink_len = end;
        c->sink_count++;
        eddy_metrics_count(c->metrics, EDDY_M_EVENTS_OUT, 1);
        if (d->agent >= 0 && d->r) {
            mark_delivered(c, (eddy_delivered){c->job->agents[d->agent].name,
                                               c->parts[d->r->part].hash, d->r->pos});
        }
    } else if (d->output && status == EDDY_ECLOSING) {
        c->outputs_dropped++;
        if (d->r) /* not delivered: the record is read again at the next start */
            d->r->abandoned = 1;
        stop(c, reason); /* the output has nowhere to go: no new events */
    } else if (d->output) {
        sink_failed(c, d->r, d->v, reason);
    } else if (status) {
        EDDY_ERROR("runtime", "cannot write a dead-letter record: %s", reason);
        if (d->r)
            d->r->abandoned = 1;
    }
    if (d->r)
        rec_release(c, d->r);
    json_decref(d->v);
    eddy_free(d);
}

/* -- records -------------------------------------------------------------- */

static void dead_record(ctl *c, rec *r, const eddy_record *er, json_t *event, const char *event_id,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* A dead letter for the record ER: EVENT (borrowed) is its event when the
 * source gave one (structured), else its text goes in. */
static void dead_record(ctl *c, rec *r, const eddy_record *er, json_t *event, const char *event_id,
                        const char *fmt, ...)
{
    char reason[EDDY_ERR_MSG_MAX];
    json_t *d;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (event)
        d = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:O}", "type", "dead_letter", "reason", reason,
                      "source", eddy_source_name(c->src), "where", er->where, "event_id", event_id,
                      "event", event);
    else if ((d = json_pack("{s:s, s:s, s:s, s:i, s:s?}", "type", "dead_letter", "reason", reason,
                            "source", eddy_source_name(c->src), "line", (int)er->line, "event_id",
                            event_id)) &&
             eddy_jsonl_raw_fields(d, er->text, er->len)) { /* also when it is not UTF-8 */
        json_decref(d);
        d = NULL;
    }
    if (!d)
        d = json_pack("{s:s, s:s, s:i}", "type", "dead_letter", "reason", reason, "line",
                      (int)er->line);
    EDDY_WARN("runtime", "%s", reason);
    if (d)
        dead_letter(c, r, d);
    json_decref(d);
}

static char *event_id_of(json_t *ev, const char *pos)
{
    json_t *id = json_object_get(ev, "id");
    char *s;
    if (!id)
        id = json_object_get(ev, "event_id");
    if ((s = eddy_json_key_string(id)))
        return s;
    return eddy_strdup(pos);
}

static int64_t input_hash(const eddy_record *er)
{
    if (er->text)
        return eddy_store_hash(er->text, er->len, 0);
    char *t = eddy_json_dumps_flags(er->event, JSON_COMPACT | JSON_SORT_KEYS);
    int64_t h = t ? eddy_store_hash(t, strlen(t), 0) : 0;
    eddy_free(t);
    return h;
}

/* Turn one record into a task for each agent that handles its type (or
 * the delivery of an earlier process's outcome). */
static void accept_record(ctl *c, eddy_record *er)
{
    json_error_t je;
    json_t *ev = NULL, *kv, *tv;
    char *key = NULL, *id = NULL, *tcopy = NULL, pos[512];
    const char *type;
    int routed = 0, structured = 0;
    part *p = part_of(c, er->part);
    rec *r = eddy_calloc(1, sizeof(*r));
    if (!p || !r) {
        EDDY_ERROR("runtime", "out of memory taking a record");
        eddy_free(r);
        return;
    }
    r->part = er->part;
    r->pos = er->pos;
    r->next = er->next;
    r->fp = er->fp;
    r->line = er->line;
    r->outstanding = 1; /* held until every agent's task is out */
    if (p->tail)
        p->tail->next_in_part = r;
    else
        p->head = r;
    p->tail = r;
    if (p->wm_pos < 0) { /* the part's first record: nothing before it is left to do */
        p->wm_pos = er->pos;
        p->wm_line = er->line > 0 ? er->line - 1 : 0;
        p->wm_fp = er->fp_before; /* a checkpoint before it finishes resumes here again */
    }
    p->used = 1;
    c->in_flight++;
    eddy_metrics_gauge(c->metrics, EDDY_M_IN_FLIGHT, c->in_flight);
    if (er->where)
        snprintf(pos, sizeof(pos), "%s", er->where);
    else
        snprintf(pos, sizeof(pos), "%s:%ld", eddy_source_name(c->src), er->line);
    if (er->event) { /* taken: it may go to a worker thread with a task */
        ev = er->event;
        er->event = NULL;
        structured = 1;
    } else {
        const char *q = er->text;
        while (*q == ' ' || *q == '\t')
            q++;
        if (!*q)
            goto out; /* blank line: not an event */
        ev = eddy_json_loadb(er->text, er->len, 0, &je);
        if (!ev) {
            dead_record(c, r, er, NULL, NULL, "%s:%d: not valid JSON: %s", pos, je.column, je.text);
            goto out;
        }
    }
    id = event_id_of(ev, pos);
    if (!json_is_object(ev)) {
        dead_record(c, r, er, structured ? ev : NULL, id, "%s: an event must be a JSON object",
                    pos);
        goto out;
    }
    kv = eddy_json_path(ev, c->job->key);
    if (!(key = eddy_json_key_string(kv)) || !*key) {
        dead_record(c, r, er, structured ? ev : NULL, id, "%s: event %s has no key '%s'%s", pos, id,
                    c->job->key, kv && !json_is_null(kv) ? " that is a string or number" : "");
        goto out;
    }
    tv = json_object_get(ev, "type");
    /* a copy: EV goes to a worker thread with the last task */
    type = tcopy = eddy_strdup(json_is_string(tv) ? json_string_value(tv) : "input");
    if (!type) {
        dead_record(c, r, er, structured ? ev : NULL, id, "event %s: out of memory", id);
        goto out;
    }
    c->events++;
    eddy_metrics_count(c->metrics, EDDY_M_EVENTS_IN, 1);
    int64_t ih = input_hash(er);
    unsigned kg = eddy_keygroup(key, (unsigned)eddy_store_keygroups(c->store));
    eddy__worker *w = c->w[kg % (unsigned)c->nw];
    size_t last = 0; /* the last agent that runs: its task takes EV itself */
    for (size_t i = 0; i < c->job->nagents; i++)
        for (size_t k = 0; k < c->job->agents[i].non; k++)
            if (!strcmp(c->job->agents[i].on[k], type))
                last = i;
    for (size_t i = 0; i < c->job->nagents; i++) {
        const eddy_agent_def *def = &c->job->agents[i];
        int handles = 0;
        for (size_t k = 0; k < def->non; k++)
            handles |= !strcmp(def->on[k], type);
        if (!handles)
            continue;
        routed++;
        const eddy_replay *rp = eddy_store_replay(c->store, def->name, p->hash, er->pos);
        if (rp && rp->done && rp->input_hash == ih) {
            /* an earlier process finished this run: what it left is the answer */
            c->replayed++;
            if (!rp->delivered) {
                c->redelivered++;
                if (!rp->ok) {
                    c->dead_letters++;
                    eddy_metrics_count(c->metrics, EDDY_M_DEAD_LETTERS, 1);
                }
                deliver(c, r, rp->ok ? (int)i : -1, rp->ok, rp->outcome);
            }
            continue;
        }
        eddy__task *t = eddy_calloc(1, sizeof(*t));
        if (t) {
            t->rec = r;
            t->agent = (int)i;
            /* a task's event is its own: the worker's thread must not share
             * reference counts with this one */
            if (i == last) {
                t->event = ev;
                ev = NULL;
            } else {
                t->event = json_deep_copy(ev);
            }
            t->key = eddy_strdup(key);
            t->event_id = eddy_strdup(id);
            t->mbkey = eddy_aprintf("%s\x1f%s", def->name, key);
            t->part = p->hash;
            t->pos = er->pos;
            t->input_hash = ih;
            t->replay = rp && !rp->done && rp->input_hash == ih ? rp : NULL;
        }
        if (!t || !t->event || !t->key || !t->event_id || !t->mbkey) {
            eddy__task_free(t);
            dead_record(c, r, er, structured ? ev : NULL, id, "event %s: out of memory queueing it",
                        id);
            continue;
        }
        r->outstanding++;
        eddy__worker_post(w, t);
    }
    if (!routed)
        dead_record(c, r, er, structured ? ev : NULL, id,
                    "%s: no agent handles events of type '%s'", pos, type);
out:
    eddy_free(id);
    eddy_free(key);
    eddy_free(tcopy);
    json_decref(ev);
    rec_release(c, r);
}

/* A task came back from its worker. */
static void task_back(ctl *c, eddy__task *t)
{
    rec *r = t->rec;
    if (t->status == EDDY_ECANCELED) {
        c->abandoned++;
        r->abandoned = 1;
        EDDY_WARN("runtime", "event %s (key %s) abandoned at shutdown", t->event_id, t->key);
    } else if (t->status) {
        EDDY_WARN("runtime", "event %s (key %s, agent %s): %s", t->event_id, t->key,
                  c->job->agents[t->agent].name, t->reason ? t->reason : "failed");
        if (t->output)
            dead_letter(c, r, t->output);
    } else if (t->output) {
        json_t *u = json_object_get(t->output, "usage");
        c->outputs++;
        c->llm_calls_seen += (long)eddy_json_int(t->output, "turns", 0);
        c->tools_seen += (long)eddy_json_int(t->output, "tool_calls", 0);
        c->tokens_seen += (long)eddy_json_int(u, "total_tokens", 0);
        deliver(c, r, t->agent, 1, t->output);
    }
    eddy__task_free(t);
    rec_release(c, r);
}

/* The workers' queues into their gauges (when something serves them). */
static void worker_gauges(ctl *c)
{
    for (int i = 0; i < c->nw; i++)
        eddy_metrics_worker(c->metrics, i, eddy__worker_load(c->w[i]));
}

static void on_done(uv_async_t *a)
{
    ctl *c = a->data;
    eddy__task *t = eddy__queue_take(&c->done);
    while (t) {
        eddy__task *nx = t->next;
        task_back(c, t);
        t = nx;
    }
    if (c->http)
        worker_gauges(c);
}

static void pump(ctl *c)
{
    eddy_record er;
    if (c->closing || c->waiting_base)
        return;
    while (!c->stopping && !c->eof && c->in_flight < c->job->max_in_flight) {
        int got = eddy_source_next(c->src, &er);
        if (got == 0)
            break;
        if (got < 0) {
            c->eof = 1;
            break;
        }
        accept_record(c, &er);
        eddy_free(er.text);
        eddy_free(er.where);
        json_decref(er.event);
    }
    if ((c->eof || c->stopping) && c->in_flight == 0)
        begin_close(c);
}

static void on_src(uv_async_t *a)
{
    pump(a->data);
}

/* -- checkpoints ---------------------------------------------------------------- */

static void on_ckpt_done(int status, const char *errmsg, void *ud)
{
    ctl *c = ud;
    double ms = (double)(eddy_now_ms() - c->ckpt_started);
    c->ckpt_busy = 0;
    if (status)
        eddy_span_error(c->ckpt_span, eddy_err_name(status), errmsg);
    eddy_span_end(c->ckpt_span, NULL); /* NULL-safe: the sink's first length has none */
    c->ckpt_span = NULL;
    if (status) {
        eddy_metrics_count(c->metrics, EDDY_M_CHECKPOINT_FAILURES, 1);
        EDDY_ERROR("runtime", "checkpoint failed: %s", errmsg);
        /* what it carried is not stored: the next one carries it again */
        for (int i = 0; i < c->nparts; i++)
            c->parts[i].saved = -1;
        for (size_t i = 0; i < c->nposted && mark_delivered(c, c->posted[i]) == 0; i++)
            ;
    } else {
        c->nposted = 0;
        c->ckpts++;
        c->ckpt_total_ms += ms;
        eddy_metrics_checkpoint(c->metrics, ms / 1000.0);
        if (ms > c->ckpt_max_ms)
            c->ckpt_max_ms = ms;
    }
    if (c->ckpt_final) {
        c->ckpt_final = 0;
        begin_close(c);
    }
    if (c->waiting_base) { /* the sink's starting length is stored: reading may begin */
        c->waiting_base = 0;
        if (status)
            stop(c, "cannot store the output file's length");
        pump(c);
    }
}

/* exactly_once, a file sink the store knows nothing of yet: store its
 * length before anything is written to it, so that a crash before the
 * first checkpoint cuts it back to that (a Fluss log sink: its offsets).
 * Returns 1 when the first records must wait for that commit. */
static int store_sink_base(ctl *c)
{
    char *state = eddy_sink_state(c->out);
    eddy_sink_commit sk = {eddy_sink_name(c->out), eddy_sink_length(c->out), 0, state};
    eddy_checkpoint ck = {NULL, 0, NULL, 0, &sk, 1};
    eddy_err e;
    int stored = json_object_get(eddy_store_sinks(c->store), sk.sink) != NULL;
    /* a sink with a state (a Fluss log table): its end now, unless an
     * exactly_once start read what an earlier process appended (the first
     * checkpoint keeps offsets past it, with the marks of those runs) */
    int need = state ? !stored || c->opts->from_start || !c->exactly_once
                     : c->exactly_once && sk.length >= 0 && !stored;
    if (!need) {
        eddy_free(state);
        return 0;
    }
    c->ckpt_started = eddy_now_ms();
    int rc = eddy_store_checkpoint(c->ss, &ck, on_ckpt_done, c, &e);
    eddy_free(state);
    if (rc) {
        EDDY_ERROR("runtime", "cannot store the output's starting position: %s", e.msg);
        return 0;
    }
    c->ckpt_busy = 1;
    c->waiting_base = 1;
    return 1;
}

/* Store the positions, the runs delivered since the last checkpoint and
 * the sink's length. Returns 0 when a checkpoint was posted (its callback
 * comes), 1 when there was nothing new, or an error. */
static int checkpoint(ctl *c)
{
    eddy_position *ps = eddy_calloc((size_t)c->nparts + 1, sizeof(*ps));
    eddy_sink_commit sk;
    size_t np = 0;
    eddy_err e;
    if (!ps)
        return EDDY_ENOMEM;
    for (int i = 0; i < c->nparts; i++) {
        part *p = &c->parts[i];
        if (!p->used || p->wm_pos < 0 || p->wm_pos == p->saved)
            continue;
        ps[np++] = (eddy_position){
            eddy_source_id(c->src), p->name, p->hash, p->wm_pos, p->wm_line, p->wm_fp};
    }
    /* a file's length (exactly_once), or what the sink keeps (a Fluss log
     * table's offsets: read only by an exactly_once start, kept either way) */
    int file = c->exactly_once && eddy_sink_length(c->out) >= 0;
    char *state = c->ndl > 0 ? eddy_sink_state(c->out) : NULL;
    int sinks = (file || state) && c->ndl > 0;
    if (sinks)
        sk = (eddy_sink_commit){eddy_sink_name(c->out), file ? c->sink_len : -1, c->sink_count,
                                state};
    if (!np && !c->ndl) {
        eddy_free(ps);
        eddy_free(state);
        return 1;
    }
    eddy_checkpoint ck = {ps, np, c->dl, c->ndl, &sk, (size_t)sinks};
    c->ckpt_started = eddy_now_ms();
    c->ckpt_span = eddy_span_start(c->traces, NULL, "eddy.checkpoint", EDDY_SPAN_INTERNAL);
    eddy_span_set_int(c->ckpt_span, "eddy.checkpoint.positions", (long long)np);
    eddy_span_set_int(c->ckpt_span, "eddy.checkpoint.delivered", (long long)c->ndl);
    int rc = eddy_store_checkpoint(c->ss, &ck, on_ckpt_done, c, &e);
    if (rc) {
        eddy_span_error(c->ckpt_span, eddy_err_name(rc), e.msg);
        eddy_span_end(c->ckpt_span, NULL);
        c->ckpt_span = NULL;
    }
    eddy_free(state);
    if (rc) {
        EDDY_ERROR("runtime", "cannot checkpoint: %s", e.msg);
    } else {
        c->ckpt_busy = 1;
        for (size_t i = 0; i < np; i++)
            for (int k = 0; k < c->nparts; k++)
                if (c->parts[k].hash == ps[i].part_hash)
                    c->parts[k].saved = ps[i].pos;
        /* the marks posted are kept until the commit says how it went */
        eddy_delivered *t = c->posted;
        size_t tc = c->capposted;
        c->posted = c->dl;
        c->nposted = c->ndl;
        c->capposted = c->capdl;
        c->dl = t;
        c->capdl = tc;
        c->ndl = 0;
    }
    eddy_free(ps);
    return rc;
}

/* The source's lag, for /metrics (each checkpoint interval). */
static void measure_lag(ctl *c)
{
    int bytes;
    int64_t lag = eddy_source_lag(c->src, &bytes);
    if (lag >= 0)
        eddy_metrics_gauge(c->metrics, bytes ? EDDY_M_SOURCE_LAG_BYTES : EDDY_M_SOURCE_LAG_RECORDS,
                           (long)lag);
}

static void on_ckpt_timer(uv_timer_t *t)
{
    ctl *c = t->data;
    measure_lag(c);
    if (!c->ckpt_busy && !c->closing)
        checkpoint(c);
}

/* -- progress and summary ---------------------------------------------------------- */

static void on_progress(uv_timer_t *t)
{
    ctl *c = t->data;
    char loads[160] = "";
    size_t n = 0;
    for (int i = 0; i < c->nw && n < sizeof(loads) - 16; i++)
        n += (size_t)snprintf(loads + n, sizeof(loads) - n, "%s%ld", i ? "/" : "",
                              eddy__worker_load(c->w[i]));
    double secs = (double)(eddy_now_ms() - c->start_ms) / 1000.0;
    fprintf(stderr,
            "\reddy: %ld in, %ld out, %ld in flight (workers %s), %ld LLM calls, %ld tokens, "
            "%ld tool calls, %ld errors, %.0f/s\033[K",
            c->events, c->sink_count, c->in_flight, loads, c->llm_calls_seen, c->tokens_seen,
            c->tools_seen, c->dead_letters, secs > 0 ? (double)c->events / secs : 0.0);
    fflush(stderr);
}

static void add_stats(eddy_run_stats *to, eddy_run_stats *from)
{
    to->runs_ok += from->runs_ok;
    to->runs_failed += from->runs_failed;
    to->llm_calls += from->llm_calls;
    to->llm_retries += from->llm_retries;
    to->tool_calls += from->tool_calls;
    to->tool_errors += from->tool_errors;
    to->llm_replayed += from->llm_replayed;
    to->tools_replayed += from->tools_replayed;
    to->tools_reconciled += from->tools_reconciled;
    to->tools_rerun += from->tools_rerun;
    to->input_tokens += from->input_tokens;
    to->output_tokens += from->output_tokens;
    to->cost += from->cost;
    if (from->per_model) {
        if (!to->per_model) {
            to->per_model = json_incref(from->per_model);
        } else {
            const char *k;
            json_t *v;
            json_object_foreach(from->per_model, k, v)
            {
                json_t *e = json_object_get(to->per_model, k);
                if (!e) {
                    json_object_set(to->per_model, k, v);
                    continue;
                }
                const char *f;
                json_t *x;
                json_object_foreach(v, f, x)
                {
                    json_t *y = json_object_get(e, f);
                    json_object_set_new(
                        e, f,
                        json_is_integer(x) && json_is_integer(y)
                            ? json_integer(json_integer_value(x) + json_integer_value(y))
                            : json_real(json_number_value(x) + json_number_value(y)));
                }
            }
        }
    }
    if (from->per_key) {
        if (!to->per_key)
            to->per_key = json_incref(from->per_key);
        else
            json_object_update_missing(to->per_key, from->per_key); /* keys are per worker */
    }
}

static void print_summary(ctl *c, eddy__worker_stats *ws, uint64_t wall_ms)
{
    eddy_run_stats st;
    memset(&st, 0, sizeof(st));
    for (int i = 0; i < c->nw; i++)
        add_stats(&st, &ws[i].run);
    json_t *workers = json_array();
    for (int i = 0; i < c->nw; i++)
        json_array_append_new(
            workers, json_pack("{s:I, s:I, s:I, s:I}", "runs", (json_int_t)ws[i].runs, "llm_calls",
                               (json_int_t)ws[i].run.llm_calls, "tool_calls",
                               (json_int_t)ws[i].run.tool_calls, "tasks", (json_int_t)ws[i].tasks));
    json_t *s = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:i, s:o, s:{s:I, s:f, s:f}}",
        "events", (json_int_t)c->events, "runs_ok", (json_int_t)st.runs_ok, "runs_failed",
        (json_int_t)st.runs_failed, "dead_letters", (json_int_t)c->dead_letters, "llm_calls",
        (json_int_t)st.llm_calls, "llm_retries", (json_int_t)st.llm_retries, "input_tokens",
        (json_int_t)st.input_tokens, "output_tokens", (json_int_t)st.output_tokens, "tool_calls",
        (json_int_t)st.tool_calls, "tool_errors", (json_int_t)st.tool_errors, "outputs",
        (json_int_t)c->sink_count, "abandoned", (json_int_t)c->abandoned, "wall_ms",
        (json_int_t)wall_ms, "replayed_runs", (json_int_t)c->replayed, "llm_replayed",
        (json_int_t)st.llm_replayed, "tools_replayed", (json_int_t)st.tools_replayed, "redelivered",
        (json_int_t)c->redelivered, "workers", c->nw, "per_worker", workers, "checkpoints", "count",
        (json_int_t)c->ckpts, "mean_ms", c->ckpts ? c->ckpt_total_ms / (double)c->ckpts : 0.0,
        "max_ms", c->ckpt_max_ms);
    int priced = 0;
    for (size_t i = 0; i < c->job->nmodels; i++)
        priced |= c->job->models[i].has_price;
    if (s) {
        json_object_set_new(s, "tools_reconciled", json_integer(st.tools_reconciled));
        json_object_set_new(s, "tools_rerun_after_crash", json_integer(st.tools_rerun));
    }
    if (s && priced)
        json_object_set_new(s, "cost", json_real(st.cost));
    if (s && st.per_model)
        json_object_set(s, "models", st.per_model);
    if (s && st.per_key)
        json_object_set(s, "keys", st.per_key);
    if (!c->opts->quiet && priced)
        fprintf(stderr, "eddy: cost %.6g (at the models' prices)\n", st.cost);
    if (!c->opts->quiet) {
        fprintf(stderr,
                "eddy: %ld events, %ld runs ok, %ld failed, %ld dead letters, %ld LLM calls "
                "(%ld retries), %ld+%ld tokens, %ld tool calls (%ld errors), %.2f s\n",
                c->events, st.runs_ok, st.runs_failed, c->dead_letters, st.llm_calls,
                st.llm_retries, st.input_tokens, st.output_tokens, st.tool_calls, st.tool_errors,
                (double)wall_ms / 1000.0);
        if (c->replayed || st.llm_replayed || st.tools_replayed || st.tools_reconciled ||
            st.tools_rerun)
            fprintf(stderr,
                    "eddy: after a restart: %ld runs had finished (%ld outputs delivered again), "
                    "%ld LLM calls and %ld tool calls served from the journal, %ld interrupted "
                    "side effects reconciled, %ld run again\n",
                    c->replayed, c->redelivered, st.llm_replayed, st.tools_replayed,
                    st.tools_reconciled, st.tools_rerun);
        if (c->nw > 1) {
            fprintf(stderr, "eddy: %d workers:", c->nw);
            for (int i = 0; i < c->nw; i++)
                fprintf(stderr, " %ld", ws[i].runs);
            fprintf(stderr, " runs; %ld checkpoints (mean %.1f ms, max %.1f ms)\n", c->ckpts,
                    c->ckpts ? c->ckpt_total_ms / (double)c->ckpts : 0.0, c->ckpt_max_ms);
        }
    }
    if (c->opts->summary_json && s) {
        FILE *f = fopen(c->opts->summary_json, "w");
        if (f) {
            eddy_json_dumpf(s, f, JSON_INDENT(2));
            fputc('\n', f);
            fclose(f);
        }
    }
    json_decref(s);
    eddy_run_stats_clear(&st);
    for (int i = 0; i < c->nw; i++)
        eddy_run_stats_clear(&ws[i].run);
}

/* -- ending ---------------------------------------------------------------------- */

static void on_grace(uv_timer_t *t)
{
    ctl *c = t->data;
    EDDY_WARN("runtime", "shutdown grace period over: abandoning %ld event(s) in flight",
              c->in_flight);
    for (int i = 0; i < c->nw; i++)
        eddy__worker_cancel(c->w[i]);
}

/* Stop reading (WHY says what asked), give running events shutdown_grace. */
static void stop(ctl *c, const char *why)
{
    if (c->stopping)
        return;
    c->stopping = 1;
    EDDY_INFO("runtime", "%s: no new events; waiting up to %lld ms for %ld in flight", why,
              (long long)c->job->shutdown_grace_ms, c->in_flight);
    eddy_source_stop(c->src);
    uv_timer_start(&c->grace, on_grace, (uint64_t)c->job->shutdown_grace_ms, 0);
    pump(c);
}

static void on_signal(uv_signal_t *s, int signum)
{
    ctl *c = s->data;
    if (c->stopping) {
        EDDY_WARN("runtime", "second signal: abandoning running events now");
        for (int i = 0; i < c->nw; i++)
            eddy__worker_cancel(c->w[i]);
        return;
    }
    c->signal_no = signum;
    stop(c, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void closed_one(uv_handle_t *h)
{
    (void)h;
}

static void finish_close(ctl *c)
{
    if (c->progress_on) {
        on_progress(&c->progress);
        fputc('\n', stderr);
    }
    eddy_store_session_close(c->ss, NULL, NULL);
    c->ss = NULL;
    eddy_source_close(c->src);
    uv_close((uv_handle_t *)&c->src_async, closed_one);
    uv_close((uv_handle_t *)&c->sigint, closed_one);
    uv_close((uv_handle_t *)&c->sigterm, closed_one);
    uv_close((uv_handle_t *)&c->grace, closed_one);
    uv_close((uv_handle_t *)&c->ckpt, closed_one);
    uv_close((uv_handle_t *)&c->progress, closed_one);
    eddy__queue_close(&c->done);
    for (int i = 0; i < c->nw; i++)
        eddy__worker_finish(c->w[i]);
}

static void dead_flushed(void *ud)
{
    ctl *c = ud;
    c->closing = 3; /* the last checkpoint */
    begin_close(c);
}

static void out_flushed(void *ud)
{
    ctl *c = ud;
    c->closing = 2;
    if (eddy_sink_flush(c->dead, dead_flushed, c) != 0)
        dead_flushed(c);
}

/* Nothing is in flight and nothing new will come: deliver what the sinks
 * hold, take the last checkpoint, close. Re-entered as each stage ends. */
static void begin_close(ctl *c)
{
    if (!c->closing) {
        c->closing = 1;
        eddy__reloader_close(c->reloader);
        uv_timer_stop(&c->ckpt);
        uv_timer_stop(&c->progress);
        if (eddy_sink_flush(c->out, out_flushed, c) != 0)
            out_flushed(c);
        return;
    }
    if (c->closing == 3) {
        if (c->ckpt_busy) { /* a checkpoint is being written: the last one follows it */
            c->ckpt_final = 1;
            return;
        }
        c->closing = 4;
        if (checkpoint(c) == 0) {
            c->ckpt_final = 1;
            return;
        }
    }
    if (c->closing == 4) {
        c->closing = 5;
        finish_close(c);
    }
}

/* -- setup ---------------------------------------------------------------------- */

/* Open the source (SRC non-NULL) or sink named by CFG ({"kind": {...}}). */
static int open_connector(const json_t *cfg, const eddy_connector_env *env, eddy_source **src,
                          eddy_sink **sink, eddy_err *err)
{
    const char *kind = NULL;
    json_t *v;
    json_object_foreach((json_t *)cfg, kind, v)
    {
        break;
    }
    if (!kind)
        return eddy_err_set(err, EDDY_EINVAL, "empty connector configuration");
    eddy_source_factory sf = eddy_connector_source(kind);
    eddy_sink_factory kf = eddy_connector_sink(kind);
    if (src && sf)
        return sf(v, env, src, err);
    if (sink && kf)
        return kf(v, env, sink, err);
    return eddy_err_set(err, EDDY_EINVAL, "this eddy has no '%s' %s connector", kind,
                        src ? "source" : "sink");
}

static void count_down(void *ud)
{
    (*(int *)ud)--;
}

static void wake_tick(uv_timer_t *t) /* wakes a loop run once, for a deadline */
{
    (void)t;
}

/* How long a run waits for its output sink at the start (a Fluss table's
 * metadata; for a log table with exactly_once, reading back what was
 * appended since the last checkpoint), and how often it says it waits. */
#define SINK_WAIT_MS (3 * 60 * 1000)
#define SINK_WAIT_SAY_MS 10000

typedef struct sink_wait {
    int done, status;
    char msg[EDDY_ERR_MSG_MAX];
    const char *name;
    uint64_t since;
} sink_wait;

static void sink_ready(int status, const char *msg, void *ud)
{
    sink_wait *w = ud;
    w->done = 1;
    w->status = status;
    snprintf(w->msg, sizeof(w->msg), "%s", msg ? msg : eddy_strerror(status));
}

static void sink_wait_tick(uv_timer_t *t)
{
    sink_wait *w = t->data;
    uint64_t waited = eddy_now_ms() - w->since;
    if (waited >= SINK_WAIT_MS) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "it did not become ready within %d s (is the cluster reachable, its buckets "
                 "led? see the warnings above)",
                 SINK_WAIT_MS / 1000);
        sink_ready(EDDY_ETIMEDOUT, msg, w);
        return;
    }
    EDDY_WARN("runtime",
              "still waiting for the output sink %s (%llu s): nothing is read until it "
              "is ready",
              w->name, (unsigned long long)(waited / 1000));
}

/* Runs an earlier process finished and did not see delivered, whose
 * output the sink holds (it appended it after the last checkpoint): they
 * are delivered, and the next checkpoint says so before it keeps offsets
 * past them. */
static void mark_held(ctl *c)
{
    size_t held = 0, n = eddy_store_replay_count(c->store, NULL);
    const eddy_replay *rp;
    const char *agent;
    int64_t rpart, rpos;
    char oid[33];
    for (size_t i = 0; i < n && (rp = eddy_store_replay_at(c->store, i, &agent, &rpart, &rpos));
         i++) {
        if (!rp->done || !rp->ok || rp->delivered)
            continue;
        eddy_output_id(agent, rpart, rpos, oid);
        if (eddy_sink_holds(c->out, oid) &&
            mark_delivered(c, (eddy_delivered){agent, rpart, rpos}) == 0)
            held++;
    }
    if (held)
        EDDY_INFO("runtime", "%zu output(s) of runs before the restart are in %s already", held,
                  eddy_sink_name(c->out));
}

/* Before anything is read: a sink that opens asynchronously (a Fluss table)
 * or must first learn what an earlier process delivered (a Fluss log table,
 * exactly_once) does so now, on this loop (its requests are asynchronous;
 * nothing else runs yet). A sink that cannot be written fails the run here:
 * no record is read, no model called. */
static int wait_for_sink(ctl *c, eddy_err *err)
{
    sink_wait w = {0};
    w.name = eddy_sink_name(c->out);
    w.since = eddy_now_ms();
    int rc = eddy_sink_ready(c->out, sink_ready, &w);
    if (rc == EDDY_ENOENT)
        return 0;
    if (rc)
        return eddy_err_set(err, rc, "the output sink %s cannot be written (%s): nothing is read",
                            eddy_sink_name(c->out), eddy_strerror(rc));
    uv_timer_t tick;
    uv_timer_init(&c->loop, &tick);
    tick.data = &w;
    uv_timer_start(&tick, sink_wait_tick, SINK_WAIT_SAY_MS, SINK_WAIT_SAY_MS);
    while (!w.done && uv_run(&c->loop, UV_RUN_ONCE))
        ;
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&c->loop, UV_RUN_NOWAIT); /* its close callback: TICK is on this stack */
    if (!w.done)
        return eddy_err_set(err, EDDY_EINVAL, "sink %s did not become ready",
                            eddy_sink_name(c->out));
    if (w.status)
        return eddy_err_set(err, w.status,
                            "the output sink %s cannot be written (%s): nothing is read",
                            eddy_sink_name(c->out), w.msg);
    if (c->exactly_once)
        mark_held(c);
    return 0;
}

static int nworkers(const ctl *c)
{
    int n = c->opts->workers > 0 ? c->opts->workers : c->job->workers;
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    return n > EDDY_JOB_MAX_WORKERS ? EDDY_JOB_MAX_WORKERS : n;
}

/* The process's metrics: a series per agent and model of the job. */
static int new_metrics(ctl *c, eddy_err *err)
{
    const char **agents = eddy_calloc(c->job->nagents + 1, sizeof(char *));
    const char **models = eddy_calloc(c->job->nmodels + 1, sizeof(char *));
    for (size_t i = 0; agents && i < c->job->nagents; i++)
        agents[i] = c->job->agents[i].name;
    for (size_t i = 0; models && i < c->job->nmodels; i++)
        models[i] = c->job->models[i].name;
    eddy_metrics_names n = {agents, models, c->job->nagents, c->job->nmodels};
    if (agents && models)
        c->metrics = eddy_metrics_new(&n, nworkers(c));
    eddy_free(agents);
    eddy_free(models);
    return c->metrics ? 0 : eddy_err_set(err, EDDY_ENOMEM, "out of memory");
}

/* The dashboard and /metrics, when the job or --dashboard asks for them. */
static int start_http(ctl *c, const eddy_run_opts *o, eddy_err *err)
{
    const char *listen = o->dashboard && *o->dashboard ? o->dashboard
                         : c->job->dashboard_listen    ? c->job->dashboard_listen
                         : o->dashboard                ? "127.0.0.1:8765"
                                                       : NULL;
    const char *token =
        c->job->dashboard_token ? c->job->dashboard_token : getenv("EDDY_DASHBOARD_TOKEN");
    if (!listen)
        return 0;
    eddy_http_opts ho = {listen,        token && *token ? token : NULL,
                         c->trace_path, c->metrics,
                         c->state_path, c->traces};
    int rc = eddy_http_start(&ho, &c->http, err);
    if (rc)
        return rc;
    if (!o->quiet)
        fprintf(stderr, "eddy: dashboard and metrics at %s\n", eddy_http_url(c->http));
    return 0;
}

/* The trace store, with the models' API keys and what the environment gave
 * tool settings among the text it redacts. */
static int open_traces(ctl *c, eddy_err *err)
{
    eddy_trace_opts o = c->job->trace;
    const char **keys = eddy_calloc(c->job->nmodels + c->job->nsecrets + 1, sizeof(*keys));
    int rc;
    if (!keys)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < c->job->nmodels; i++)
        if (c->job->models[i].api_key && *c->job->models[i].api_key)
            keys[o.nsecrets++] = c->job->models[i].api_key;
    for (size_t i = 0; i < c->job->nsecrets; i++)
        keys[o.nsecrets++] = c->job->secrets[i];
    o.secrets = keys;
    rc = eddy_trace_store_open(c->trace_path, &o, &c->traces, err);
    eddy_free(keys);
    return rc;
}

/* The job's MCP servers, started before the workers; the first runs see
 * the tools of the servers that came up within MCP_READY_MS (the others'
 * tools appear when they do). */
#define MCP_READY_MS 10000
static int start_mcp(ctl *c, eddy_err *err)
{
    eddy_mcp_config *cfg = NULL;
    int rc;
    if (!json_object_size(c->job->mcp))
        return 0;
    if ((rc = eddy_mcp_config_new(c->job->mcp, NULL, NULL, &cfg, err)) ||
        (rc = eddy_mcp_new(cfg, &c->mcp, err)) || (rc = eddy_mcp_start(c->mcp, err))) {
        eddy_mcp_config_free(cfg);
        return rc;
    }
    eddy_mcp_config_free(cfg);
    if (eddy_mcp_wait_ready(c->mcp, MCP_READY_MS))
        EDDY_WARN("mcp",
                  "not every MCP server is up after %d s: their tools appear when they "
                  "are",
                  MCP_READY_MS / 1000);
    {
        eddy_mcp_catalog *cat = eddy_mcp_catalog_get(c->mcp);
        for (size_t i = 0; i < eddy_mcp_catalog_servers(cat); i++) {
            eddy_mcp_server_info in;
            if (eddy_mcp_catalog_server(cat, i, &in))
                continue;
            if (in.up)
                EDDY_INFO("mcp", "server '%s' (%s): %zu tool(s)", in.name, in.transport, in.ntools);
            else
                EDDY_WARN("mcp", "server '%s' (%s) is not up yet: %s", in.name, in.transport,
                          in.error ? in.error : "starting");
        }
        eddy_mcp_catalog_release(cat);
    }
    return 0;
}

static int setup(ctl *c, eddy_err *err)
{
    const eddy_run_opts *o = c->opts;
    const char *input = o->input ? o->input : c->job->source;
    const json_t *src_cfg = o->input ? NULL : c->job->source_cfg;
    const json_t *sink_cfg = o->output ? NULL : c->job->sink_cfg;
    const char *output = o->output ? o->output : c->job->sink;
    int rc;
    if (!input && !src_cfg)
        return eddy_err_set(err, EDDY_EINVAL,
                            "%s: no input: give 'source: {jsonl: FILE}' in the job or --input "
                            "FILE (- for stdin)",
                            c->job->file);
    eddy_store_opts so = {c->job->max_keygroups, 0, 0, c->job->memory_cache, o->from_start};
    if ((rc = eddy_store_open(c->state_path, &so, &c->store, err)) ||
        (rc = eddy_store_session_new(c->store, &c->loop, &c->ss, err)) ||
        (rc = open_traces(c, err)) || (rc = new_metrics(c, err)))
        return rc;
    if ((rc = eddy__queue_init(&c->done, &c->loop, on_done, c)))
        return eddy_err_set(err, rc, "cannot create an async handle");
    c->nw = nworkers(c);
    if (!(c->w = eddy_calloc((size_t)c->nw, sizeof(*c->w))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if ((rc = start_mcp(c, err)))
        return rc;
    for (int i = 0; i < c->nw; i++)
        if ((rc = eddy__worker_start(i, c->job, c->store, c->traces, c->metrics, c->mcp,
                                     c->state_path, c->trace_path, &c->done, &c->w[i], err)))
            return rc;
    if ((rc = start_http(c, o, err)))
        return rc;
    c->exactly_once = c->job->delivery == EDDY_DELIVERY_EXACTLY_ONCE;
    uv_async_init(&c->loop, &c->src_async, on_src);
    c->src_async.data = c;
    c->no_positions = json_object();
    eddy_connector_env env = {&c->loop,
                              &c->src_async,
                              c->job->dir,
                              1024,
                              o->from_start ? c->no_positions : eddy_store_positions(c->store),
                              o->from_start ? c->no_positions : eddy_store_sinks(c->store),
                              c->exactly_once};
    int64_t cut = -1;
    if (c->exactly_once && !sink_cfg && output && strcmp(output, "-")) {
        json_t *sk = json_object_get(eddy_store_sinks(c->store), output);
        if (sk)
            cut = eddy_json_int(sk, "length", -1);
    } else if (c->exactly_once && !sink_cfg) {
        EDDY_WARN("runtime", "delivery: exactly_once needs a file or Fluss sink; stdout gets "
                             "every output at least once");
    }
    if ((rc = sink_cfg ? open_connector(sink_cfg, &env, NULL, &c->out, err)
                       : eddy_sink_open_jsonl(output, 0, cut, &c->loop, &c->out, err)) ||
        (rc = eddy_sink_open_jsonl(o->dead_letter ? o->dead_letter : c->job->dead_letter, 1, -1,
                                   &c->loop, &c->dead, err)))
        return rc;
    eddy_sink_on_done(c->out, on_delivered, c);
    eddy_sink_on_done(c->dead, on_delivered, c);
    if ((rc = wait_for_sink(c, err)))
        return rc;
    if (src_cfg) {
        rc = open_connector(src_cfg, &env, &c->src, NULL, err);
    } else {
        const json_t *resume = NULL;
        if (strcmp(input, "-")) {
            char *abs = realpath(input, NULL);
            char *id = eddy_aprintf("jsonl:%s", abs ? abs : input);
            free(abs);
            resume = json_object_get(json_object_get(env.positions, id ? id : ""), "file");
            eddy_free(id);
        }
        rc = eddy_source_open_jsonl(input, 1024, &c->loop, &c->src_async, resume, &c->src, err);
    }
    if (rc)
        return rc;
    if ((rc = eddy__reloader_new(&c->loop, c->job, c->mcp, c->w, c->nw, o->watch, &c->reloader,
                                 err)))
        return rc;
    uv_signal_init(&c->loop, &c->sigint);
    uv_signal_init(&c->loop, &c->sigterm);
    c->sigint.data = c->sigterm.data = c;
    uv_signal_start(&c->sigint, on_signal, SIGINT);
    uv_signal_start(&c->sigterm, on_signal, SIGTERM);
    uv_timer_init(&c->loop, &c->grace);
    uv_timer_init(&c->loop, &c->ckpt);
    uv_timer_init(&c->loop, &c->progress);
    c->grace.data = c->ckpt.data = c->progress.data = c;
    uv_timer_start(&c->ckpt, on_ckpt_timer, (uint64_t)c->job->checkpoint_ms,
                   (uint64_t)c->job->checkpoint_ms);
    c->progress_on = !o->quiet && (o->progress > 0 || (o->progress == 0 && isatty(2)));
    if (c->progress_on)
        uv_timer_start(&c->progress, on_progress, 1000, 1000);
    size_t fin, nrep = eddy_store_replay_count(c->store, &fin);
    if (nrep)
        EDDY_INFO("runtime",
                  "%s: %zu run(s) from before the restart: %zu finished, %zu with journaled steps",
                  c->state_path, nrep, fin, nrep - fin);
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void teardown(ctl *c, eddy__worker_stats *ws)
{
    for (int i = 0; c->w && i < c->nw; i++) {
        if (c->w[i])
            eddy__worker_finish(c->w[i]);
        eddy__worker_join(c->w[i], ws ? &ws[i] : NULL);
    }
    eddy_free(c->w);
    c->w = NULL;
    eddy_mcp_stop(c->mcp); /* after the workers closed their ports: kills the servers */
    eddy_mcp_free(c->mcp);
    c->mcp = NULL;
    eddy__reloader_close(c->reloader); /* a start that failed did not close it */
    eddy__reloader_free(c->reloader);
    c->reloader = NULL;
    eddy_http_stop(c->http); /* before what it reads */
    c->http = NULL;
    eddy_metrics_free(c->metrics);
    c->metrics = NULL;
    for (int i = 0; i < c->nparts; i++) {
        while (c->parts[i].head) {
            rec *r = c->parts[i].head;
            c->parts[i].head = r->next_in_part;
            eddy_free(r);
        }
        eddy_free(c->parts[i].name);
    }
    eddy_free(c->parts);
    eddy_free(c->dl);
    eddy_free(c->posted);
    eddy_source_free(c->src);
    eddy_sink_free(c->out);
    eddy_sink_free(c->dead);
    eddy_span_discard(c->ckpt_span); /* a checkpoint that never answered */
    c->ckpt_span = NULL;
    eddy_trace_store_close(c->traces);
    eddy_store_close(c->store);
    json_decref(c->no_positions);
}

int eddy_runtime_run(eddy_job *job, const eddy_run_opts *opts)
{
    ctl c;
    eddy_err e;
    int rc;
    struct rlimit rl;
    memset(&c, 0, sizeof(c));
    /* every LLM request in flight is a socket: allow as many as the system does */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    c.job = job;
    c.opts = opts;
    c.state_path = opts->state ? opts->state : job->state_path;
    c.trace_path = opts->traces ? opts->traces : job->trace_path;
    c.start_ms = eddy_now_ms();
    if (uv_loop_init(&c.loop)) {
        EDDY_ERROR("runtime", "cannot create the event loop");
        return 1;
    }
    if ((rc = setup(&c, &e))) {
        EDDY_ERROR("runtime", "%s", e.msg);
        /* the sinks opened already let go of their connections (a Fluss
         * client): nothing was written, so this is quick; a sink still
         * waiting for its cluster gets 5 s */
        int flushing = 0;
        eddy_sink *open_sinks[] = {c.out, c.dead};
        for (size_t i = 0; i < 2; i++)
            if (open_sinks[i] && eddy_sink_flush(open_sinks[i], count_down, &flushing) == 0)
                flushing++;
        uint64_t until = eddy_now_ms() + 5000;
        uv_timer_t tick;
        uv_timer_init(&c.loop, &tick);
        uv_timer_start(&tick, wake_tick, 100, 100);
        while (flushing > 0 && eddy_now_ms() < until && uv_run(&c.loop, UV_RUN_ONCE))
            ;
        uv_close((uv_handle_t *)&tick, NULL);
        if (c.src)
            eddy_source_close(c.src); /* its reader wakes nobody from now on */
        eddy_store_session_close(c.ss, NULL, NULL);
        for (int i = 0; c.w && i < c.nw; i++)
            if (c.w[i])
                eddy__worker_finish(c.w[i]);
        eddy__reloader_close(c.reloader); /* its handles free what they hold */
        uv_walk(&c.loop, close_walk, NULL);
        uv_run(&c.loop, UV_RUN_DEFAULT);
        teardown(&c, NULL);
        uv_loop_close(&c.loop);
        return 1;
    }
    EDDY_INFO("runtime", "job '%s': reading %s, %zu agent(s), key '%s', %d worker(s)", job->name,
              eddy_source_name(c.src), job->nagents, job->key, c.nw);
    if (!store_sink_base(&c))
        pump(&c);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    /* a source that could not be read to its end: what it gave is done (and
     * checkpointed), but the run did not do its job */
    int src_failed = eddy_source_failed(c.src);
    if (src_failed)
        EDDY_ERROR("runtime", "%s could not be read to its end (%s, above): exit 1",
                   eddy_source_name(c.src), eddy_strerror(src_failed));
    eddy__worker_stats *ws = eddy_calloc((size_t)c.nw + 1, sizeof(*ws));
    uint64_t wall = eddy_now_ms() - c.start_ms;
    teardown(&c, ws);
    if (ws)
        print_summary(&c, ws, wall);
    eddy_free(ws);
    if (uv_loop_close(&c.loop))
        EDDY_WARN("runtime", "event loop closed with handles still open");
    if (src_failed)
        return 1;
    if (c.signal_no)
        return c.abandoned ? 3 : 0;
    return 0;
}
