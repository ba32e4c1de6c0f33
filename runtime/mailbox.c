/*
 * runtime/mailbox.c - per-instance event queues.
 *
 * Events for one key run one at a time, in arrival order; keys interleave on
 * the worker loop. A chained hash table maps a key to its mailbox. A mailbox
 * with a queue and no running item sits on the ready list (each at most
 * once); dispatch starts the heads of ready mailboxes. Empty idle mailboxes
 * are removed, so memory follows the keys in flight, not all keys ever seen.
 * Invariant: a mailbox has at most one item running (mb->running).
 * Nothing here blocks or allocates on dispatch.
 */
#include "eddy/runtime.h"
#include "eddy/buf.h"

#include <assert.h>
#include <string.h>

typedef struct item {
    void *data;
    struct item *next;
} item;

typedef struct box {
    char *key;
    uint64_t hash;
    item *head, *tail;
    int running, ready;
    struct box *chain; /* hash bucket */
    struct box *ready_next;
} box;

struct eddy_mailboxes {
    box **buckets;
    size_t nbuckets, nboxes, pending, nrunning;
    box *ready_head, *ready_tail;
    eddy_mailbox_start_cb start;
    void *ud;
};

unsigned eddy_keygroup(const char *key, unsigned ngroups)
{
    assert(ngroups > 0);
    return (unsigned)(eddy_hash64(key, strlen(key)) % ngroups);
}

int eddy_mailboxes_new(eddy_mailbox_start_cb start, void *ud, eddy_mailboxes **out, eddy_err *err)
{
    eddy_mailboxes *mb = eddy_calloc(1, sizeof(*mb));
    *out = NULL;
    if (!mb || !(mb->buckets = eddy_calloc(256, sizeof(box *)))) {
        eddy_free(mb);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    mb->nbuckets = 256;
    mb->start = start;
    mb->ud = ud;
    *out = mb;
    return 0;
}

void eddy_mailboxes_free(eddy_mailboxes *mb, void (*free_item)(void *))
{
    if (!mb)
        return;
    for (size_t i = 0; i < mb->nbuckets; i++) {
        box *b = mb->buckets[i];
        while (b) {
            box *nb = b->chain;
            while (b->head) {
                item *it = b->head;
                b->head = it->next;
                if (free_item)
                    free_item(it->data);
                eddy_free(it);
            }
            eddy_free(b->key);
            eddy_free(b);
            b = nb;
        }
    }
    eddy_free(mb->buckets);
    eddy_free(mb);
}

static box **find(eddy_mailboxes *mb, const char *key, uint64_t h)
{
    box **pp = &mb->buckets[h & (mb->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key)))
        pp = &(*pp)->chain;
    return pp;
}

static void grow(eddy_mailboxes *mb)
{
    size_t n = mb->nbuckets * 2;
    box **nb = eddy_calloc(n, sizeof(box *));
    if (!nb)
        return; /* keep the longer chains; still correct */
    for (size_t i = 0; i < mb->nbuckets; i++) {
        box *b = mb->buckets[i];
        while (b) {
            box *next = b->chain;
            b->chain = nb[b->hash & (n - 1)];
            nb[b->hash & (n - 1)] = b;
            b = next;
        }
    }
    eddy_free(mb->buckets);
    mb->buckets = nb;
    mb->nbuckets = n;
}

static void make_ready(eddy_mailboxes *mb, box *b)
{
    if (b->ready || b->running || !b->head)
        return;
    b->ready = 1;
    b->ready_next = NULL;
    if (mb->ready_tail)
        mb->ready_tail->ready_next = b;
    else
        mb->ready_head = b;
    mb->ready_tail = b;
}

int eddy_mailbox_push(eddy_mailboxes *mb, const char *key, void *data, eddy_err *err)
{
    uint64_t h = eddy_hash64(key, strlen(key));
    box **pp = find(mb, key, h), *b = *pp;
    item *it = eddy_malloc(sizeof(*it));
    if (!it)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (!b) {
        b = eddy_calloc(1, sizeof(*b));
        if (!b || !(b->key = eddy_strdup(key))) {
            eddy_free(b);
            eddy_free(it);
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
        b->hash = h;
        *pp = b;
        if (++mb->nboxes > mb->nbuckets)
            grow(mb);
    }
    it->data = data;
    it->next = NULL;
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    mb->pending++;
    make_ready(mb, b);
    return 0;
}

static void remove_if_empty(eddy_mailboxes *mb, box *b)
{
    box **pp;
    if (b->head || b->running || b->ready)
        return;
    pp = find(mb, b->key, b->hash);
    *pp = b->chain;
    mb->nboxes--;
    eddy_free(b->key);
    eddy_free(b);
}

void eddy_mailbox_done(eddy_mailboxes *mb, const char *key)
{
    uint64_t h = eddy_hash64(key, strlen(key));
    box *b = *find(mb, key, h);
    if (!b || !b->running)
        return;
    b->running = 0;
    mb->nrunning--;
    mb->pending--;
    make_ready(mb, b);
    remove_if_empty(mb, b);
}

void eddy_mailboxes_dispatch(eddy_mailboxes *mb)
{
    box *b;
    while ((b = mb->ready_head)) {
        item *it = b->head;
        mb->ready_head = b->ready_next;
        if (!mb->ready_head)
            mb->ready_tail = NULL;
        b->ready = 0;
        b->head = it->next;
        if (!b->head)
            b->tail = NULL;
        b->running = 1;
        mb->nrunning++;
        mb->start(b->key, it->data, mb->ud);
        eddy_free(it);
    }
}

size_t eddy_mailboxes_pending(const eddy_mailboxes *mb)
{
    return mb->pending;
}

size_t eddy_mailboxes_running(const eddy_mailboxes *mb)
{
    return mb->nrunning;
}
