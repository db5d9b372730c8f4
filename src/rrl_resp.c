/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The wire: RESP written by hand, replies into rrl_reply_t.
 */

#include "apr_strings.h"

#include <string.h>

#include "rrl_resp.h"
#include "rrl_util.h"

/*
 * Where an element goes.  A reply's own elements (depth 1) are its ints;
 * a batch's (depth 1) are the requests' replies, and their elements
 * (depth 2) those replies' ints.  Anything else is a shape the module
 * never asks for: the reply is bad, and in a batch so is the request's
 * entry it is in (the others are read as they came).
 */
static int rrl_reply_depth(const redisReadTask *task)
{
    int d = 0;

    while ((task = task->parent) != NULL) {
        d++;
    }
    return d;
}

/* The request's reply that the element at task is in (a batch's) */
static rrl_reply_t *rrl_reply_part(rrl_reply_t *rep,
                                   const redisReadTask *task)
{
    while (task->parent && task->parent->parent) {
        task = task->parent;
    }
    if (!rep->parts || !task->parent || task->idx < 0
        || (apr_size_t)task->idx >= rep->nparts) {
        return NULL;
    }
    return rep->parts[task->idx];
}

static void rrl_reply_spoil(rrl_reply_t *rep, const redisReadTask *task)
{
    rrl_reply_t *part = rrl_reply_part(rep, task);

    rep->bad = 1;
    if (part) {
        part->bad = 1;
    }
}

/* Reset before a reply is read into rep (and its parts) */
void rrl_resp_reset(rrl_reply_t *rep)
{
    apr_size_t i;

    rep->type = 0;
    rep->bad = 0;
    for (i = 0; rep->parts && i < rep->nparts; i++) {
        rep->parts[i]->type = 0;
        rep->parts[i]->bad = 0;
    }
}

static void *rrl_reply_string(const redisReadTask *task, char *s,
                              size_t len)
{
    rrl_reply_t *rep = task->privdata, *into = rep;
    apr_size_t i;

    if (!rep) {
        return NULL;
    }
    if (task->parent) {
        /* in a batch, a request's entry may be an error: that request
         * failed alone */
        if (!rep->parts || rrl_reply_depth(task) != 1
            || task->type != REDIS_REPLY_ERROR
            || !(into = rrl_reply_part(rep, task))) {
            rrl_reply_spoil(rep, task);  /* the module's arrays hold integers */
            return rep;
        }
    }
    into->type = task->type;
    rrl_util_copy_words(into->str, sizeof(into->str), s, len);
    for (i = 0; into == rep && task->type == REDIS_REPLY_ERROR && rep->parts
                && i < rep->nparts; i++) {
        /* the whole call failed (NOSCRIPT, MOVED, ...): each request has
         * the error */
        rep->parts[i]->type = REDIS_REPLY_ERROR;
        memcpy(rep->parts[i]->str, rep->str, sizeof(rep->str));
    }
    return into;
}

/* RRL_HIREDIS_ARRAY_LEN: what configure found hiredis passes (0.14: int,
 * 1.x: size_t) */
static void *rrl_reply_array(const redisReadTask *task,
                             RRL_HIREDIS_ARRAY_LEN len)
{
    rrl_reply_t *rep = task->privdata, *into = rep;
    apr_size_t i;

    if (!rep) {
        return NULL;
    }
    if (task->parent) {
        if (!rep->parts || rrl_reply_depth(task) != 1
            || !(into = rrl_reply_part(rep, task))) {
            rrl_reply_spoil(rep, task);
            return rep;
        }
    }
    else if (rep->parts && (apr_size_t)len != rep->nparts) {
        /* not an entry per request: none of them can be trusted */
        rep->bad = 1;
        for (i = 0; i < rep->nparts; i++) {
            rep->parts[i]->bad = 1;
        }
    }
    into->type = REDIS_REPLY_ARRAY;
    into->elements = (apr_size_t)len;
    /* its elements find it as their parent's obj */
    return into;
}

static void *rrl_reply_integer(const redisReadTask *task, long long v)
{
    rrl_reply_t *rep = task->privdata, *into;

    if (!rep) {
        return NULL;
    }
    if (!task->parent) {
        rep->type = REDIS_REPLY_INTEGER;
        rep->integer = v;
        return rep;
    }
    into = task->parent->obj;
    if (rrl_reply_depth(task) != (rep->parts ? 2 : 1) || !into
        || (rep->parts && into == rep) || task->idx < 0
        || (apr_size_t)task->idx >= into->nints) {
        rrl_reply_spoil(rep, task);
    }
    else {
        into->ints[task->idx] = v;
    }
    return rep;
}

static void *rrl_reply_nil(const redisReadTask *task)
{
    rrl_reply_t *rep = task->privdata;

    if (!rep) {
        return NULL;
    }
    if (task->parent) {
        rrl_reply_spoil(rep, task);
    }
    else {
        rep->type = REDIS_REPLY_NIL;
    }
    return rep;
}

static void rrl_reply_free(void *obj)
{
    (void)obj;                    /* it lives on the caller's stack */
}

redisReplyObjectFunctions rrl_resp_reply_fns = {
    .createString = rrl_reply_string,
    .createArray = rrl_reply_array,
    .createInteger = rrl_reply_integer,
    .createNil = rrl_reply_nil,
    .freeObject = rrl_reply_free
    /* hiredis 1.x: createDouble, createBool, RESP3 only, never asked */
};

char *rrl_resp_put_bulk(char *o, const char *s, apr_size_t len)
{
    *o++ = '$';
    o = rrl_util_put_uint(o, len);
    *o++ = '\r';
    *o++ = '\n';
    memcpy(o, s, len);
    o += len;
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

/* "*N" then N bulk strings; room: 16 + sum(len + 26) */
char *rrl_resp_put_command(char *o, int argc, const char *const *argv,
                           const apr_size_t *lens)
{
    int i;

    *o++ = '*';
    o = rrl_util_put_uint(o, (apr_uint64_t)argc);
    *o++ = '\r';
    *o++ = '\n';
    for (i = 0; i < argc; i++) {
        o = rrl_resp_put_bulk(o, argv[i], lens ? lens[i] : strlen(argv[i]));
    }
    return o;
}

/* A command's RESP in p */
const char *rrl_resp_format(apr_pool_t *p, int argc,
                            const char *const *argv, const apr_size_t *lens,
                            apr_size_t *lenp)
{
    apr_size_t room = 16;
    char *buf;
    int i;

    for (i = 0; i < argc; i++) {
        room += (lens ? lens[i] : strlen(argv[i])) + 26;
    }
    buf = apr_palloc(p, room);
    *lenp = rrl_resp_put_command(buf, argc, argv, lens) - buf;
    return buf;
}
