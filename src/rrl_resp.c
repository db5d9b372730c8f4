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

static void *rrl_reply_string(const redisReadTask *task, char *s,
                              size_t len)
{
    rrl_reply_t *rep = task->privdata;

    if (!rep) {
        return NULL;
    }
    if (task->parent) {
        rep->bad = 1;             /* the module's arrays hold integers */
        return rep;
    }
    rep->type = task->type;
    rrl_util_copy_words(rep->str, sizeof(rep->str), s, len);
    return rep;
}

/* RRL_HIREDIS_ARRAY_LEN: what configure found hiredis passes (0.14: int,
 * 1.x: size_t) */
static void *rrl_reply_array(const redisReadTask *task,
                             RRL_HIREDIS_ARRAY_LEN len)
{
    rrl_reply_t *rep = task->privdata;

    if (!rep) {
        return NULL;
    }
    if (task->parent) {
        rep->bad = 1;
        return rep;
    }
    rep->type = REDIS_REPLY_ARRAY;
    rep->elements = (apr_size_t)len;
    return rep;
}

static void *rrl_reply_integer(const redisReadTask *task, long long v)
{
    rrl_reply_t *rep = task->privdata;

    if (!rep) {
        return NULL;
    }
    if (!task->parent) {
        rep->type = REDIS_REPLY_INTEGER;
        rep->integer = v;
    }
    else if (task->parent->parent || task->idx < 0
             || (apr_size_t)task->idx >= rep->nints) {
        rep->bad = 1;
    }
    else {
        rep->ints[task->idx] = v;
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
        rep->bad = 1;
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
