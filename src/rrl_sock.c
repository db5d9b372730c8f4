/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A socket to Redis, TCP or unix, plain or TLS, non-blocking with bounded
 * waits.
 */

#include "apr_strings.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#include "rrl_sock.h"

/* A socket error that says the server closed the connection (Redis
 * restarted, idle timeout, CLIENT KILL), which a fresh one may not have; a
 * timeout is not such a failure: a retry would only double the wait */
static int rrl_stale_errno(int err)
{
    return err == ECONNRESET || err == EPIPE || err == ENOTCONN
           || err == ECONNABORTED;
}

/* Wait until fd can do what events say, or until deadline: 1 when it can
 * (or has an error its next call tells), 0 when the time is up, -1 (errno)
 * when poll fails */
static int rrl_sock_wait(int fd, short events, apr_time_t deadline)
{
    for (;;) {
        apr_interval_time_t left = deadline - apr_time_now();
        struct pollfd pfd;
        int rv;

        if (left <= 0) {
            return 0;
        }
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        rv = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (rv > 0) {
            return 1;
        }
        if (rv < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* fd's connect under way: 1 when it is done, else 0 and *err */
static int rrl_sock_connected(int fd, apr_time_t deadline, int *err)
{
    socklen_t len = sizeof(*err);
    int w = rrl_sock_wait(fd, POLLOUT, deadline);

    if (w <= 0) {
        *err = w == 0 ? ETIMEDOUT : errno;
        return 0;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) != 0) {
        *err = errno;
    }
    return *err == 0;
}

/* TCP: Nagle off (a pipeline's writes are small and waited for), and
 * keepalive as hiredis sets it: a dead peer is found in under a minute */
static void rrl_sock_tcp_options(int fd)
{
    int on = 1, idle = 15, intvl = 5, cnt = 3;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_KEEPIDLE
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#endif
}

/* A connected, non-blocking socket to to's host or path in *fd, or why
 * not (an errno, or a message in *errp) */
static int rrl_sock_open(apr_pool_t *p, const rrl_sock_to_t *to,
                         apr_time_t deadline, int *fdp, const char **errp)
{
    struct addrinfo hints, *ai = NULL, *a;
    struct sockaddr_un sun;
    char port[16];
    int fd = -1, err = 0, rv;

    if (!to->host) {
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        if (strlen(to->path) >= sizeof(sun.sun_path)) {
            return ENAMETOOLONG;
        }
        strcpy(sun.sun_path, to->path);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                         0)) < 0) {
            return errno;
        }
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0
            && ((errno != EINPROGRESS && errno != EAGAIN && (err = errno))
                || !rrl_sock_connected(fd, deadline, &err))) {
            close(fd);
            return err;
        }
        *fdp = fd;
        return 0;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    apr_snprintf(port, sizeof(port), "%d", to->port);
    if ((rv = getaddrinfo(to->host, port, &hints, &ai)) != 0) {
        *errp = apr_pstrdup(p, gai_strerror(rv));
        return -1;
    }
    for (a = ai; a; a = a->ai_next, fd = -1) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK
                                  | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0
            || (errno == EINPROGRESS && rrl_sock_connected(fd, deadline,
                                                           &err))) {
            break;
        }
        if (errno != EINPROGRESS) {
            err = errno;
        }
        close(fd);
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        return err ? err : ECONNREFUSED;
    }
    rrl_sock_tcp_options(fd);
    *fdp = fd;
    return 0;
}

/* The TLS handshake on s, by deadline */
static const char *rrl_sock_handshake(apr_pool_t *p, rrl_sock_t *s,
                                      const rrl_sock_to_t *to,
                                      apr_time_t deadline, int *resumed)
{
    const char *err = NULL;

    if (!(s->ssl = rrl_tls_new(p, to->tls, s->fd, to->tls_name, to->session,
                               &err))) {
        return err;
    }
    for (;;) {
        int rv, e, w;

        ERR_clear_error();
        if ((rv = SSL_connect(s->ssl)) == 1) {
            break;
        }
        e = SSL_get_error(s->ssl, rv);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if ((w = rrl_sock_wait(s->fd, e == SSL_ERROR_WANT_READ
                                          ? POLLIN : POLLOUT, deadline)) > 0) {
                continue;
            }
            return w == 0 ? "TLS handshake: timed out"
                          : apr_psprintf(p, "TLS handshake: %s",
                                         strerror(errno));
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            return apr_psprintf(p, "TLS handshake: %s", errno
                                ? strerror(errno)
                                : "the server closed the connection (is "
                                  "it a TLS port?)");
        }
        return rrl_tls_error(p, s->ssl, "TLS handshake");
    }
    *resumed = SSL_session_reused(s->ssl);
    return NULL;
}

/*
 * Connect s as to says, TLS included, within to->timeout.  NULL, or what
 * went wrong; *resumed: the TLS session of the last connection resumed.
 */
const char *rrl_sock_connect(apr_pool_t *p, rrl_sock_t *s,
                             const rrl_sock_to_t *to, int *resumed)
{
    apr_time_t deadline = apr_time_now() + to->timeout;
    const char *err = NULL;
    int rv;

    s->fd = -1;
    s->ssl = NULL;
    *resumed = 0;
    if ((rv = rrl_sock_open(p, to, deadline, &s->fd, &err)) != 0) {
        return err ? err : rv == ETIMEDOUT ? "timed out" : strerror(rv);
    }
    if (to->tls && (err = rrl_sock_handshake(p, s, to, deadline, resumed))) {
        rrl_sock_close(s);
        return err;
    }
    return NULL;
}

/* All of buf written over TLS, each wait up to timeout */
static int rrl_sock_tls_write(apr_pool_t *p, rrl_sock_t *s, const char *buf,
                              apr_size_t len, apr_interval_time_t timeout,
                              const char **errp, int *stale)
{
    while (len > 0) {
        int rv, e, w;

        ERR_clear_error();
        if ((rv = SSL_write(s->ssl, buf, (int)len)) > 0) {
            buf += rv;
            len -= (apr_size_t)rv;
            continue;
        }
        e = SSL_get_error(s->ssl, rv);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            w = rrl_sock_wait(s->fd, e == SSL_ERROR_WANT_READ ? POLLIN
                                                              : POLLOUT,
                              apr_time_now() + timeout);
            if (w > 0) {
                continue;
            }
            *errp = w == 0 ? "write: timed out"
                           : apr_psprintf(p, "write: %s", strerror(errno));
            return 0;
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            *stale = errno == 0 || rrl_stale_errno(errno);
            *errp = apr_psprintf(p, "write: %s", errno ? strerror(errno)
                                 : "the server closed the connection");
            return 0;
        }
        *stale = e == SSL_ERROR_ZERO_RETURN;
        *errp = rrl_tls_error(p, s->ssl, "write");
        return 0;
    }
    return 1;
}

/*
 * The n pieces at iov written in one go (one sendmsg, or over TLS one
 * buffer for as few records as can be), each wait up to timeout.  1 when
 * all is written, else 0 and *errp, *stale.  iov is used up.
 */
int rrl_sock_writev(apr_pool_t *p, rrl_sock_t *s, struct iovec *iov, int n,
                    apr_interval_time_t timeout, const char **errp,
                    int *stale)
{
    struct msghdr msg;
    int i;

    *stale = 0;
    if (s->ssl) {
        apr_size_t len = 0;
        char *buf, *o;

        if (n == 1) {
            return rrl_sock_tls_write(p, s, iov[0].iov_base, iov[0].iov_len,
                                      timeout, errp, stale);
        }
        for (i = 0; i < n; i++) {
            len += iov[i].iov_len;
        }
        o = buf = apr_palloc(p, len);
        for (i = 0; i < n; i++) {
            memcpy(o, iov[i].iov_base, iov[i].iov_len);
            o += iov[i].iov_len;
        }
        return rrl_sock_tls_write(p, s, buf, len, timeout, errp, stale);
    }
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)n;
    while (msg.msg_iovlen > 0) {
        ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        int rv;

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if ((rv = rrl_sock_wait(s->fd, POLLOUT,
                                    apr_time_now() + timeout)) > 0) {
                continue;
            }
            *errp = rv == 0 ? "write: timed out"
                            : apr_psprintf(p, "write: %s", strerror(errno));
            return 0;
        }
        if (w <= 0) {
            int err = w < 0 ? errno : EPIPE;

            *stale = rrl_stale_errno(err);
            *errp = apr_psprintf(p, "write: %s", strerror(err));
            return 0;
        }
        while (msg.msg_iovlen > 0 && (size_t)w >= msg.msg_iov->iov_len) {
            w -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + w;
            msg.msg_iov->iov_len -= (size_t)w;
        }
    }
    return 1;
}

/*
 * What there is to read, up to len bytes, waiting up to timeout for the
 * first: over TLS what OpenSSL has decrypted already comes first, without
 * a wait.  The count, or 0 and *errp, *stale.
 */
apr_size_t rrl_sock_read(apr_pool_t *p, rrl_sock_t *s, char *buf,
                         apr_size_t len, apr_interval_time_t timeout,
                         const char **errp, int *stale)
{
    apr_time_t deadline = apr_time_now() + timeout;
    short want = POLLIN;
    int w;

    *stale = 0;
    for (;;) {
        if (s->ssl) {
            int rv, e;

            ERR_clear_error();
            if ((rv = SSL_read(s->ssl, buf, (int)len)) > 0) {
                return (apr_size_t)rv;
            }
            e = SSL_get_error(s->ssl, rv);
            if (e == SSL_ERROR_ZERO_RETURN
                || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                    && (errno == 0 || rrl_stale_errno(errno)))) {
                *stale = 1;
                *errp = "read: the server closed the connection";
                return 0;
            }
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                *errp = e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                        ? apr_psprintf(p, "read: %s", strerror(errno))
                        : rrl_tls_error(p, s->ssl, "read");
                return 0;
            }
            want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        }
        else {
            ssize_t r = recv(s->fd, buf, len, 0);

            if (r > 0) {
                return (apr_size_t)r;
            }
            if (r == 0) {
                *stale = 1;
                *errp = "read: the server closed the connection";
                return 0;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                *stale = rrl_stale_errno(errno);
                *errp = apr_psprintf(p, "read: %s", strerror(errno));
                return 0;
            }
        }
        if ((w = rrl_sock_wait(s->fd, want, deadline)) <= 0) {
            *errp = w == 0 ? "read: timed out"
                           : apr_psprintf(p, "read: %s", strerror(errno));
            return 0;
        }
    }
}

/* Close s (a TLS close_notify offered, not waited for) */
void rrl_sock_close(rrl_sock_t *s)
{
    if (s->ssl) {
        SSL_shutdown(s->ssl);
        SSL_free(s->ssl);
        ERR_clear_error();
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}
