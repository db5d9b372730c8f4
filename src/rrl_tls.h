/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * TLS to Redis, the module's own, with OpenSSL (as mod_ssl, whose library
 * it shares): a context per rediss URL made at startup, and for each
 * connection an SSL that sends the server name and verifies the chain and
 * the name (or IP address) by default, resuming the node's last session.
 * The handshake and the I/O are rrl_sock's.
 */

#ifndef RRL_TLS_H
#define RRL_TLS_H

#include "apr_thread_mutex.h"

#include <openssl/ssl.h>

#include "rrl.h"
#include "rrl_url.h"

/* A rediss URL's TLS: the SSL_CTX every connection of it comes from */
typedef struct rrl_tls rrl_tls_t;

/* Where a node keeps its last TLS session, for its next connection to
 * resume (per child) */
typedef struct {
    apr_thread_mutex_t *mutex;
    SSL_SESSION *session;
} rrl_tls_session_t;

const char *rrl_tls_check(apr_pool_t *p, const rrl_redis_url_t *u);
const char *rrl_tls_create(apr_pool_t *pconf, const rrl_redis_url_t *u,
                           rrl_tls_t **out);
apr_status_t rrl_tls_session_init(rrl_tls_session_t *ts, apr_pool_t *p);
SSL *rrl_tls_new(apr_pool_t *p, rrl_tls_t *tls, int fd, const char *host,
                 rrl_tls_session_t *ts, const char **errp);
const char *rrl_tls_error(apr_pool_t *p, SSL *ssl, const char *what);

#endif /* RRL_TLS_H */
