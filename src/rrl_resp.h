/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The wire: commands written in RESP by the module, and replies read by
 * hiredis' reader into an rrl_reply_t on the caller's stack.
 */

#ifndef RRL_RESP_H
#define RRL_RESP_H

#include <hiredis/hiredis.h>

#include "rrl.h"

/*
 * Commands are written in RESP by the module itself and sent with one
 * send(); replies are parsed by hiredis' reader into an rrl_reply_t on the
 * caller's stack through reply functions of our own, so a request
 * allocates nothing outside its pool and formats nothing that could be
 * prepared at startup.  Connecting (AUTH, SELECT) uses hiredis' defaults.
 */
#define RRL_REPLY_STR 256         /* Redis 7's WRONGTYPE fits whole */

typedef struct rrl_reply rrl_reply_t;

struct rrl_reply {
    int type;                     /* REDIS_REPLY_*; 0: none yet */
    int bad;                      /* a shape the module never asks for */
    apr_int64_t integer;          /* of an integer reply */
    char str[RRL_REPLY_STR];      /* status, error or string; longer ones
                                   * cut at a word, with "..." */
    apr_size_t elements;          /* of an array reply */
    apr_int64_t *ints;            /* its elements, all integers */
    apr_size_t nints;             /* room in ints */
    /* a batch (the script's reply to several requests at once): an array
     * of an entry per request, each read into its request's own reply
     * (an array of integers, or an error); an error instead of the array
     * goes to every one */
    rrl_reply_t **parts;
    apr_size_t nparts;
};

/* PING */
#define RRL_RESP_PING "*1\r\n$4\r\nPING\r\n"

/* hiredis' reader builds rrl_reply_t with these (privdata: the reply) */
extern redisReplyObjectFunctions rrl_resp_reply_fns;

void rrl_resp_reset(rrl_reply_t *rep);
char *rrl_resp_put_bulk(char *o, const char *s, apr_size_t len);
char *rrl_resp_put_command(char *o, int argc, const char *const *argv,
                           const apr_size_t *lens);
const char *rrl_resp_format(apr_pool_t *p, int argc, const char *const *argv,
                            const apr_size_t *lens, apr_size_t *lenp);

#endif /* RRL_RESP_H */
