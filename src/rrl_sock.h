/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A socket to Redis: TCP (keepalive, no Nagle) or unix, with TLS over it
 * when the URL says so; connect (and the handshake) within the connect
 * timeout, each wait to write or to read within the command timeout, on a
 * non-blocking socket, the same code on every platform.  A failure says
 * what went wrong and whether it looks like a connection the server
 * closed (stale), which a fresh one may not meet.
 */

#ifndef RRL_SOCK_H
#define RRL_SOCK_H

#include <sys/uio.h>

#include "rrl.h"
#include "rrl_tls.h"

/* The bytes of one read of a socket, on the reader's stack */
#define RRL_READ_BUF 16384

typedef struct {
    int fd;                       /* -1: closed */
    SSL *ssl;                     /* TLS over fd, or NULL */
} rrl_sock_t;

/* What connecting asks for */
typedef struct {
    const char *host;             /* TCP: a name or an address */
    int port;
    const char *path;             /* unix: the socket's path (host NULL) */
    apr_interval_time_t timeout;  /* connect and TLS handshake */
    rrl_tls_t *tls;               /* TLS, or NULL */
    const char *tls_name;         /* the name sent and verified */
    rrl_tls_session_t *session;   /* where its sessions are kept */
} rrl_sock_to_t;

const char *rrl_sock_connect(apr_pool_t *p, rrl_sock_t *s,
                             const rrl_sock_to_t *to, int *resumed);
int rrl_sock_writev(apr_pool_t *p, rrl_sock_t *s, struct iovec *iov, int n,
                    apr_interval_time_t timeout, const char **errp,
                    int *stale);
apr_size_t rrl_sock_read(apr_pool_t *p, rrl_sock_t *s, char *buf,
                         apr_size_t len, apr_interval_time_t timeout,
                         const char **errp, int *stale);
void rrl_sock_close(rrl_sock_t *s);

#endif /* RRL_SOCK_H */
