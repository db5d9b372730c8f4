/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * RateLimitRedis URLs: redis://, unix:, redis-sentinel://, redis-cluster://
 * and the same over TLS (rediss://, rediss-sentinel://, rediss-cluster://),
 * parsed once at startup.  APR only.
 */

#ifndef RRL_URL_H
#define RRL_URL_H

#include "rrl.h"

typedef enum {
    RRL_REDIS_TCP = 0, RRL_REDIS_UNIX,
    RRL_REDIS_SENTINEL,           /* the master that Sentinels name */
    RRL_REDIS_CLUSTER             /* slots routed to the nodes that own them */
} rrl_redis_kind_e;

/* HOST:PORT of a Sentinel or a Cluster node */
typedef struct {
    const char *host;
    int port;
} rrl_addr_t;

/* A parsed RateLimitRedis URL */
typedef struct {
    const char *url;              /* as configured */
    const char *masked;           /* the password replaced: for logs, pages */
    rrl_redis_kind_e kind;
    const char *host;             /* tcp; the first of sentinels, seeds */
    int port;
    const char *path;             /* unix */
    const char *user;             /* ACL user, or NULL */
    const char *password;         /* or NULL */
    int db;
    apr_array_header_t *addrs;    /* rrl_addr_t: sentinels, cluster seeds */
    const char *master;           /* sentinel: the master's name */
    /* rediss://, rediss-sentinel://, rediss-cluster://: every connection
     * over TLS */
    int tls;
    const char *cacert;           /* NULL: the system's CA bundle */
    const char *cert, *key;       /* a client certificate, or NULL */
    const char *sni;              /* name sent and verified; NULL: host's */
    int verify;                   /* 0: verify=off, no check at all */
} rrl_redis_url_t;

/* "RateLimitRedis off": the local store, whatever the main server says */
extern const rrl_redis_url_t rrl_url_off;

const char *rrl_url_parse(apr_pool_t *p, const char *url,
                          rrl_redis_url_t **out);
const char *rrl_url_mask(apr_pool_t *p, const char *url);

#endif /* RRL_URL_H */
