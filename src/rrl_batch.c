/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The decisions of a round trip joined into one EVALSHA per slot.
 */

#include "apr_strings.h"

#include <string.h>

#include "rrl_batch.h"

/* A node's room for its round trips' batches of cap calls, in its pool
 * (pchild, or the Cluster's pool of nodes): nothing is allocated per
 * request, and only what rrl_batch_join writes is ever touched */
apr_status_t rrl_batch_init(rrl_batch_set_t *bs, apr_pool_t *p, int cap)
{
    apr_size_t n = (apr_size_t)cap;

    bs->cap = cap;
    bs->n = 0;
    bs->calls = apr_palloc(p, sizeof(*bs->calls) * n);
    bs->joined = apr_palloc(p, sizeof(*bs->joined) * n);
    bs->reps = apr_palloc(p, sizeof(*bs->reps) * n);
    bs->members = apr_palloc(p, sizeof(*bs->members) * n);
    bs->parts = apr_palloc(p, sizeof(*bs->parts) * n);
    /* a call alone goes as it is: no command is written for it */
    bs->buf = cap > 1 ? apr_palloc(p, RRL_BATCH_ROOM) : NULL;
    return bs->calls && bs->joined && bs->reps && bs->members && bs->parts
           && (cap == 1 || bs->buf) ? APR_SUCCESS : APR_ENOMEM;
}

/* A decision's part of a batch's command */
static apr_size_t rrl_batch_size(const rrl_call_t *c)
{
    return c->decision->keys_len + c->decision->args_len;
}

/* The batch's command in the set's room at *at: the head, every member's
 * KEYS, ARGV[1..2], every member's ARGV */
static void rrl_batch_write(rrl_batch_set_t *bs, rrl_call_t *b,
                            apr_size_t *at)
{
    char *o = bs->buf + *at;
    int i, nkeys = 0, nargs = 0;

    for (i = 0; i < b->nmembers; i++) {
        nkeys += b->members[i]->decision->nkeys;
        nargs += b->members[i]->decision->nargs;
    }
    b->cmd = o;
    o = rrl_script_batch_head(o, nkeys, nargs);
    for (i = 0; i < b->nmembers; i++) {
        const rrl_script_parts_t *d = b->members[i]->decision;

        memcpy(o, b->members[i]->cmd + d->keys_at, d->keys_len);
        o += d->keys_len;
    }
    o = rrl_script_batch_now(o, b->nmembers);
    for (i = 0; i < b->nmembers; i++) {
        const rrl_script_parts_t *d = b->members[i]->decision;

        memcpy(o, b->members[i]->cmd + d->args_at, d->args_len);
        o += d->args_len;
    }
    b->len = o - b->cmd;
    *at += b->len;
}

/*
 * The n calls taken off a node's queue, as they go (into bs->calls): each
 * decision joins the batch of its slot that the latest decision of that
 * slot went into, unless it is full (RRL_BATCH_MAX requests,
 * RRL_BATCH_BYTES, or the room of the set); then it starts another.  A
 * batch goes where its first request was; the other calls stay in place.
 * A decision that asks (ASKING, a slot being migrated) goes alone.
 */
void rrl_batch_join(rrl_batch_set_t *bs, rrl_call_t *const *calls, int n)
{
    int of[RRL_PIPE_MAX], count[RRL_PIPE_MAX], first[RRL_PIPE_MAX];
    apr_size_t size[RRL_PIPE_MAX], used = 0, at = 0;
    int i, b, nb = 0, k;

    for (i = 0; i < n; i++) {
        const rrl_call_t *c = calls[i];
        apr_size_t more;

        of[i] = -1;
        if (!c->decision) {
            continue;
        }
        for (b = nb - 1; b >= 0; b--) {
            if (calls[first[b]]->decision->slot == c->decision->slot) {
                break;
            }
        }
        /* what joining adds to the room the set's batches take */
        more = b < 0 ? 0 : rrl_batch_size(c)
                           + (count[b] == 1 ? RRL_SCRIPT_BATCH_HEAD
                                              + size[b] : 0);
        if (b < 0 || c->asking || calls[first[b]]->asking
            || count[b] == RRL_BATCH_MAX
            || size[b] + rrl_batch_size(c) > RRL_BATCH_BYTES
            || used + more > RRL_BATCH_ROOM) {
            b = nb++;
            first[b] = i;
            count[b] = 0;
            size[b] = 0;
            more = 0;
        }
        of[i] = b;
        count[b]++;
        size[b] += rrl_batch_size(c);
        used += more;
    }
    /* the batches' members in turn, and the calls in order */
    for (b = 0, k = 0; b < nb; b++) {
        rrl_call_t *j = &bs->joined[b];
        rrl_reply_t *rep = &bs->reps[b];

        /* what the round trip reads of a call (no memset: a call and a
         * reply are a few hundred bytes, most of them their texts) */
        j->next = NULL;
        j->what = "EVALSHA";
        j->asking = calls[first[b]]->asking;
        j->queued = calls[first[b]]->queued;
        j->rc = RRL_REDIS_DOWN;
        j->err[0] = '\0';
        j->decision = NULL;
        j->members = &bs->members[k];
        j->rep = rep;
        rep->type = rep->bad = 0;
        rep->str[0] = '\0';
        rep->elements = 0;
        rep->ints = NULL;
        rep->nints = 0;
        rep->parts = &bs->parts[k];
        rep->nparts = (apr_size_t)count[b];
        for (i = first[b]; i < n; i++) {
            if (of[i] == b) {
                bs->members[k] = calls[i];
                bs->parts[k++] = calls[i]->rep;
            }
        }
        j->nmembers = count[b];
    }
    for (i = 0, bs->n = 0; i < n; i++) {
        if (of[i] < 0) {
            bs->calls[bs->n++] = calls[i];
        }
        else if (first[of[i]] == i) {
            rrl_call_t *j = &bs->joined[of[i]];

            if (j->nmembers == 1) {
                /* alone: its own command, as it is */
                j->cmd = calls[i]->cmd;
                j->len = calls[i]->len;
            }
            else {
                rrl_batch_write(bs, j, &at);
            }
            bs->calls[bs->n++] = j;
        }
    }
}

/* The round trip over: each request in a batch ends as its batch did (its
 * entry of the reply already read into its own) */
void rrl_batch_settle(rrl_batch_set_t *bs)
{
    int i, k;

    for (i = 0; i < bs->n; i++) {
        const rrl_call_t *j = bs->calls[i];

        for (k = 0; k < j->nmembers; k++) {
            j->members[k]->rc = j->rc;
            if (j->rc != RRL_REDIS_OK) {
                memcpy(j->members[k]->err, j->err, sizeof(j->err));
            }
        }
    }
    bs->n = 0;
}
