/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * TLS to Redis with OpenSSL: contexts, per-connection SSLs, sessions.
 */

#include "apr_strings.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "rrl_tls.h"

struct rrl_tls {
    SSL_CTX *ctx;
    int verify;
    rrl_tls_t *next;
};

/* Every context made, from a static: LeakSanitizer, which does not scan
 * APR's pools, sees them reachable in the children that inherit them */
static rrl_tls_t *rrl_tls_all;

/* An SSL's rrl_tls_session_t, where its new sessions go */
static int rrl_tls_session_index = -1;

/* OpenSSL's reasons for the last failure of this thread, "" if none */
static const char *rrl_tls_reasons(apr_pool_t *p)
{
    const char *out = "";
    unsigned long e;
    char buf[256];

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        out = *out ? apr_pstrcat(p, out, "; ", buf, NULL)
                   : apr_pstrdup(p, buf);
    }
    return out;
}

/* what: a failure of ssl, with why: the certificate's verification when it
 * failed (expired, name mismatch, unknown issuer), else OpenSSL's reasons */
const char *rrl_tls_error(apr_pool_t *p, SSL *ssl, const char *what)
{
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    const char *why = rrl_tls_reasons(p);

    if (v != X509_V_OK) {
        return apr_psprintf(p, "%s: the server's certificate does not "
                            "verify: %s", what,
                            X509_verify_cert_error_string(v));
    }
    return *why ? apr_psprintf(p, "%s: %s", what, why) : what;
}

/* A file the context reads: NULL, or why it cannot be read */
static const char *rrl_tls_readable(apr_pool_t *p, const char *what,
                                    const char *file)
{
    if (access(file, R_OK) != 0) {
        return apr_psprintf(p, "%s=%s cannot be read: %s", what, file,
                            strerror(errno));
    }
    return NULL;
}

static int rrl_tls_new_session(SSL *ssl, SSL_SESSION *session)
{
    rrl_tls_session_t *ts = SSL_get_ex_data(ssl, rrl_tls_session_index);
    SSL_SESSION *old;

    if (!ts) {
        return 0;                 /* not kept: OpenSSL frees it */
    }
    apr_thread_mutex_lock(ts->mutex);
    old = ts->session;
    ts->session = session;
    apr_thread_mutex_unlock(ts->mutex);
    if (old) {
        SSL_SESSION_free(old);
    }
    return 1;                     /* kept: ours to free */
}

/* The context of a URL's connections, or NULL and *errp */
static SSL_CTX *rrl_tls_ctx(apr_pool_t *p, const rrl_redis_url_t *u,
                            const char **errp)
{
    SSL_CTX *ctx;

    ERR_clear_error();
    if ((u->cacert && (*errp = rrl_tls_readable(p, "cacert", u->cacert)))
        || (u->cert && (*errp = rrl_tls_readable(p, "cert", u->cert)))
        || (u->key && (*errp = rrl_tls_readable(p, "key", u->key)))) {
        return NULL;
    }
    if (!(ctx = SSL_CTX_new(TLS_client_method()))) {
        *errp = rrl_tls_error(p, NULL, "cannot make a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* a server gone without close_notify (restarted, killed) is a closed
     * connection, found stale, not an error of TLS: RESP says by itself
     * where a reply ends, so nothing cut short is taken for whole */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, u->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       NULL);
    if (u->cacert ? !SSL_CTX_load_verify_locations(ctx, u->cacert, NULL)
                  : !SSL_CTX_set_default_verify_paths(ctx)) {
        *errp = rrl_tls_error(p, NULL, u->cacert
                              ? apr_psprintf(p, "cacert=%s", u->cacert)
                              : "the system's CA certificates");
    }
    else if (u->cert
             && !SSL_CTX_use_certificate_chain_file(ctx, u->cert)) {
        *errp = rrl_tls_error(p, NULL, apr_psprintf(p, "cert=%s", u->cert));
    }
    else if (u->key
             && !SSL_CTX_use_PrivateKey_file(ctx, u->key, SSL_FILETYPE_PEM)) {
        *errp = ERR_GET_REASON(ERR_peek_last_error())
                == X509_R_KEY_VALUES_MISMATCH
                ? apr_psprintf(p, "key=%s does not belong to cert=%s",
                               u->key, u->cert)
                : rrl_tls_error(p, NULL, apr_psprintf(p, "key=%s", u->key));
        ERR_clear_error();
    }
    else if (u->key && !SSL_CTX_check_private_key(ctx)) {
        *errp = rrl_tls_error(p, NULL, apr_psprintf(p, "key=%s does not "
                                                    "belong to cert=%s",
                                                    u->key, u->cert));
    }
    else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* For the directive (apachectl -t): can the URL's files make a context? */
const char *rrl_tls_check(apr_pool_t *p, const rrl_redis_url_t *u)
{
    const char *err = NULL;
    SSL_CTX *ctx = rrl_tls_ctx(p, u, &err);

    if (ctx) {
        SSL_CTX_free(ctx);
    }
    return err;
}

static apr_status_t rrl_tls_free(void *data)
{
    rrl_tls_t *t = data, **l;

    for (l = &rrl_tls_all; *l; l = &(*l)->next) {
        if (*l == t) {
            *l = t->next;
            break;
        }
    }
    SSL_CTX_free(t->ctx);
    free(t);
    return APR_SUCCESS;
}

/* post_config: the URL's context, freed with pconf (never OPENSSL_cleanup:
 * mod_ssl shares the library) */
const char *rrl_tls_create(apr_pool_t *pconf, const rrl_redis_url_t *u,
                           rrl_tls_t **out)
{
    const char *err = NULL;
    rrl_tls_t *t;
    SSL_CTX *ctx;

    if (rrl_tls_session_index < 0) {
        rrl_tls_session_index = SSL_get_ex_new_index(0, NULL, NULL, NULL,
                                                     NULL);
    }
    if (!(ctx = rrl_tls_ctx(pconf, u, &err))) {
        return err;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT
                                        | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, rrl_tls_new_session);
    if (!(t = calloc(1, sizeof(*t)))) {
        SSL_CTX_free(ctx);
        return "out of memory";
    }
    t->ctx = ctx;
    t->verify = u->verify;
    t->next = rrl_tls_all;
    rrl_tls_all = t;
    apr_pool_cleanup_register(pconf, t, rrl_tls_free, apr_pool_cleanup_null);
    *out = t;
    return NULL;
}

static apr_status_t rrl_tls_session_free(void *data)
{
    rrl_tls_session_t *ts = data;

    if (ts->session) {
        SSL_SESSION_free(ts->session);
        ts->session = NULL;
    }
    return APR_SUCCESS;
}

/* A node's session slot, emptied with p */
apr_status_t rrl_tls_session_init(rrl_tls_session_t *ts, apr_pool_t *p)
{
    apr_status_t rv;

    ts->session = NULL;
    if ((rv = apr_thread_mutex_create(&ts->mutex, APR_THREAD_MUTEX_DEFAULT,
                                      p)) == APR_SUCCESS) {
        apr_pool_cleanup_register(p, ts, rrl_tls_session_free,
                                  apr_pool_cleanup_null);
    }
    return rv;
}

/*
 * An SSL on fd for a connection to host (an address or a name, as
 * configured or as Sentinel or Cluster names it; sni= replaces it): the
 * name sent (SNI, not for addresses) and verified, the last session of
 * ts offered (ts NULL: a connection for one question, nothing kept).
 * NULL and *errp when it cannot be made.
 */
SSL *rrl_tls_new(apr_pool_t *p, rrl_tls_t *tls, int fd, const char *host,
                 rrl_tls_session_t *ts, const char **errp)
{
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, host, addr) == 1
                || inet_pton(AF_INET6, host, addr) == 1;
    SSL *ssl;

    ERR_clear_error();
    if (!(ssl = SSL_new(tls->ctx))) {
        *errp = rrl_tls_error(p, NULL, "TLS");
        return NULL;
    }
    if (!SSL_set_fd(ssl, fd)
        || (!is_ip && !SSL_set_tlsext_host_name(ssl, host))
        || (tls->verify
            && (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
                                                       host)
                      : !SSL_set1_host(ssl, host)))) {
        *errp = rrl_tls_error(p, NULL, apr_psprintf(p, "TLS to %s", host));
        SSL_free(ssl);
        return NULL;
    }
    if (ts) {
        SSL_set_ex_data(ssl, rrl_tls_session_index, ts);
        apr_thread_mutex_lock(ts->mutex);
        if (ts->session) {
            SSL_set_session(ssl, ts->session);
        }
        apr_thread_mutex_unlock(ts->mutex);
    }
    return ssl;
}
