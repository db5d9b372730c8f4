/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * RateLimitRedis URLs, parsed once at startup.
 */

#include "apr_lib.h"
#include "apr_strings.h"

#include <stdlib.h>
#include <string.h>

#include "rrl_url.h"
#include "rrl_util.h"

const rrl_redis_url_t rrl_url_off = { .kind = RRL_REDIS_TCP };

/* %XX in the user and password of a URL: "p%40ss" is "p@ss" */
static char *rrl_url_unescape(apr_pool_t *p, const char *s, apr_size_t len)
{
    char *out = apr_palloc(p, len + 1), *o = out;
    apr_size_t i;

    for (i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len
            && apr_isxdigit(s[i + 1]) && apr_isxdigit(s[i + 2])) {
            char hex[3] = { s[i + 1], s[i + 2], '\0' };
            char c = (char)strtol(hex, NULL, 16);

            if (c == '\0') {
                return NULL;
            }
            *o++ = c;
            i += 2;
        }
        else if (s[i] == '%') {
            return NULL;
        }
        else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

#define RRL_URL_FORMS "redis://[USER:PASSWORD@]HOST[:PORT][/DB] " \
                      "(IPv6 as [::1]), " \
                      "unix:/PATH[?db=N&user=U&password=P], " \
                      "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME" \
                      "[/DB], redis-cluster://HOST:PORT[,HOST:PORT...], " \
                      "or rediss://, rediss-sentinel://, rediss-cluster:// " \
                      "for the same over TLS, with ?cacert=FILE, " \
                      "cert=FILE&key=FILE, sni=NAME, verify=off"

/*
 * The URL as messages, logs and pages show it: the password of
 * [USER:]PASSWORD@ and of password= replaced by ****, whatever else is
 * wrong with the URL.
 */
const char *rrl_url_mask(apr_pool_t *p, const char *url)
{
    const char *auth = strstr(url, "://"), *end, *at = NULL, *colon, *c;
    char *out;

    if (auth) {
        auth += 3;
        end = auth + strcspn(auth, "/?");
        for (c = auth; c < end; c++) {
            if (*c == '@') {
                at = c;
            }
        }
        if (at && (colon = memchr(auth, ':', at - auth)) != NULL) {
            url = apr_pstrcat(p, rrl_util_strmemdup(p, url, colon + 1 - url),
                              "****", at, NULL);
        }
    }
    /* password=... of the query, each: up to its & (a parameter that
     * only ends in "password=", user=mypassword=..., is not one) */
    for (c = strchr(url, '?'); c && (c = strstr(c, "password=")) != NULL;
         c += 9) {
        if (c[-1] == '?' || c[-1] == '&') {
            apr_size_t off = c + 9 - url;

            out = rrl_util_strmemdup(p, url, off);
            url = apr_pstrcat(p, out, "****", c + 9 + strcspn(c + 9, "&"),
                              NULL);
            c = url + off - 9;
        }
    }
    return url;
}

/* A TLS option into the URL: 1 if name is one */
static int rrl_url_tls_option(apr_pool_t *p, rrl_redis_url_t *u,
                              const char *name, const char *v,
                              const char **errp)
{
    if (strcmp(name, "cacert") == 0) {
        u->cacert = v;
    }
    else if (strcmp(name, "cert") == 0) {
        u->cert = v;
    }
    else if (strcmp(name, "key") == 0) {
        u->key = v;
    }
    else if (strcmp(name, "sni") == 0) {
        u->sni = v;
    }
    else if (strcmp(name, "verify") == 0) {
        if (strcasecmp(v, "off") != 0 && strcasecmp(v, "on") != 0) {
            *errp = apr_psprintf(p, "verify=%s is not accepted; expected "
                                 "verify=off (no certificate or name check) "
                                 "or verify=on (the default)", v);
        }
        u->verify = strcasecmp(v, "off") != 0;
    }
    else {
        return 0;
    }
    return 1;
}

/* A query string's NAME=VALUE pairs into the URL (unix: and TLS ones) */
static const char *rrl_url_query(apr_pool_t *p, const char *q,
                                 rrl_redis_url_t *u)
{
    char *list = apr_pstrdup(p, q), *pair, *state;
    const char *err = NULL;

    for (pair = apr_strtok(list, "&", &state); pair;
         pair = apr_strtok(NULL, "&", &state)) {
        char *eq = strchr(pair, '=');
        const char *v;
        apr_int64_t db;

        if (!eq || eq == pair) {
            return apr_psprintf(p, "'%s' is not NAME=VALUE", pair);
        }
        *eq = '\0';
        if (!(v = rrl_url_unescape(p, eq + 1, strlen(eq + 1))) || !*v) {
            return apr_psprintf(p, "%s= has no value or a bad %%-escape",
                                pair);
        }
        if (u->kind == RRL_REDIS_UNIX && strcmp(pair, "db") == 0) {
            if (!rrl_util_parse_int(v, 0, 1 << 30, &db)) {
                return apr_psprintf(p, "db=%s is not a database number", v);
            }
            u->db = (int)db;
        }
        else if (u->kind == RRL_REDIS_UNIX && strcmp(pair, "user") == 0) {
            u->user = v;
        }
        else if (u->kind == RRL_REDIS_UNIX && strcmp(pair, "password") == 0) {
            u->password = v;
        }
        else if (!u->tls || !rrl_url_tls_option(p, u, pair, v, &err)) {
            return apr_psprintf(p, "'%s' is not a parameter of this URL "
                                "(unix: takes db, user, password; rediss://, "
                                "rediss-sentinel:// and rediss-cluster:// "
                                "take cacert, cert, key, sni, verify)", pair);
        }
        if (err) {
            return err;
        }
    }
    if ((u->cert == NULL) != (u->key == NULL)) {
        return "a client certificate needs both cert=FILE and key=FILE";
    }
    return NULL;
}

/* HOST[:PORT] or [IPV6][:PORT]: the len bytes at s (url: for messages) */
static const char *rrl_parse_hostport(apr_pool_t *p, const char *url,
                                      const char *s, apr_size_t len,
                                      int default_port, const char **hostp,
                                      int *portp)
{
    char *host = rrl_util_strmemdup(p, s, len);

    *portp = default_port;
    if (host[0] == '[') {
        char *close = strchr(host, ']');

        if (!close || (close[1] && close[1] != ':')) {
            return apr_psprintf(p, "'%s': an IPv6 address goes in brackets, "
                                "such as redis://[::1]:6379", url);
        }
        *close = '\0';
        *hostp = host + 1;
        host = close + 1;
    }
    else {
        *hostp = host;
        host = strchr(host, ':');
        if (host && strchr(host + 1, ':')) {
            return apr_psprintf(p, "'%s': an IPv6 address goes in brackets, "
                                "such as redis://[::1]:6379", url);
        }
        if (!host) {
            host = "";
        }
    }
    if (*host == ':') {
        apr_int64_t port;

        *host = '\0';
        if (!rrl_util_parse_int(host + 1, 1, 65535, &port)) {
            return apr_psprintf(p, "'%s': '%s' is not a port (1-65535)", url,
                                host + 1);
        }
        *portp = (int)port;
    }
    if (!**hostp) {
        return apr_psprintf(p, "'%s' names no host; expected %s", url,
                            RRL_URL_FORMS);
    }
    return NULL;
}

/* unix:/PATH[?db=N&user=U&password=P] */
static const char *rrl_url_unix(apr_pool_t *p, const char *url,
                                rrl_redis_url_t *u)
{
    const char *q = strchr(url + 5, '?'), *err;

    u->path = q ? rrl_util_strmemdup(p, url + 5, q - (url + 5)) : url + 5;
    if (u->path[0] != '/' || u->path[1] == '\0') {
        return apr_psprintf(p, "'%s': the socket path must be absolute; "
                            "expected %s", u->masked, RRL_URL_FORMS);
    }
    if (q && (err = rrl_url_query(p, q + 1, u)) != NULL) {
        return apr_psprintf(p, "'%s': %s", u->masked, err);
    }
    return NULL;
}

/* [USER:PASSWORD@] at rest, before end: *at is its @ (NULL: none) */
static const char *rrl_url_userinfo(apr_pool_t *p, const char *url,
                                    const char *rest, const char *end,
                                    rrl_redis_url_t *u, const char **at)
{
    const char *c, *colon;

    *at = NULL;
    for (c = rest; c < end; c++) {
        if (*c == '@') {
            *at = c;                     /* the last @ ends the userinfo */
        }
    }
    if (!*at) {
        return NULL;
    }
    if (!(colon = memchr(rest, ':', *at - rest))) {
        return apr_psprintf(p, "'%s': a user needs a password: expected "
                            "USER:PASSWORD@ or :PASSWORD@", url);
    }
    if (colon > rest
        && !(u->user = rrl_url_unescape(p, rest, colon - rest))) {
        return apr_psprintf(p, "'%s': bad %%-escape in the user", url);
    }
    u->password = rrl_url_unescape(p, colon + 1, *at - colon - 1);
    if (!u->password || !*u->password) {
        return apr_psprintf(p, "'%s': the password is empty or has a bad "
                            "%%-escape", url);
    }
    return NULL;
}

/* HOST[:PORT], or for Sentinel and Cluster HOST:PORT[,HOST:PORT...], from
 * hostport to end */
static const char *rrl_url_hosts(apr_pool_t *p, const char *url,
                                 const char *hostport, const char *end,
                                 rrl_redis_url_t *u)
{
    const char *err;

    if (u->kind != RRL_REDIS_SENTINEL && u->kind != RRL_REDIS_CLUSTER) {
        return rrl_parse_hostport(p, url, hostport, end - hostport, 6379,
                                  &u->host, &u->port);
    }
    u->addrs = apr_array_make(p, 3, sizeof(rrl_addr_t));
    while (hostport < end) {
        const char *comma = memchr(hostport, ',', end - hostport);
        rrl_addr_t *a = apr_array_push(u->addrs);

        comma = comma ? comma : end;
        if ((err = rrl_parse_hostport(p, url, hostport, comma - hostport,
                                      u->kind == RRL_REDIS_SENTINEL
                                      ? 26379 : 6379,
                                      &a->host, &a->port)) != NULL) {
            return err;
        }
        hostport = comma + (comma < end);
    }
    if (!u->addrs->nelts) {
        return apr_psprintf(p, "'%s' names no host; expected %s", url,
                            RRL_URL_FORMS);
    }
    u->host = APR_ARRAY_IDX(u->addrs, 0, rrl_addr_t).host;
    u->port = APR_ARRAY_IDX(u->addrs, 0, rrl_addr_t).port;
    return NULL;
}

/* What follows the hosts: [/MASTERNAME] (Sentinel), [/DB], [?OPTIONS] */
static const char *rrl_url_path(apr_pool_t *p, const char *url,
                                const char *end, rrl_redis_url_t *u)
{
    const char *err;

    if (u->kind == RRL_REDIS_SENTINEL) {
        const char *name = end + (*end == '/'), *slash;

        slash = name + strcspn(name, "/?");
        if (*end != '/' || slash == name) {
            return apr_psprintf(p, "'%s' names no master; expected "
                                "redis-sentinel://HOST:PORT[,HOST:PORT...]/"
                                "MASTERNAME[/DB]", url);
        }
        u->master = rrl_util_strmemdup(p, name, slash - name);
        end = slash;
    }
    if (u->kind == RRL_REDIS_CLUSTER && *end == '/' && end[1]) {
        return apr_psprintf(p, "'%s': a Redis Cluster has only database 0; "
                            "expected redis-cluster://HOST:PORT[,HOST:PORT"
                            "...]", url);
    }
    if (*end == '/') {
        const char *q = strchr(end, '?');
        apr_size_t len = q ? (apr_size_t)(q - end - 1) : strlen(end + 1);
        apr_int64_t n = 0;

        /* "/" alone is database 0 */
        if (len) {
            char *db = rrl_util_strmemdup(p, end + 1, len);

            if (!rrl_util_parse_int(db, 0, 1 << 30, &n)) {
                return apr_psprintf(p, "'%s': '/%s' is not a database "
                                    "number", url, db);
            }
        }
        u->db = (int)n;
        end = q ? q : end + strlen(end);
    }
    if (*end == '?') {
        if (!u->tls) {
            return apr_psprintf(p, "'%s': redis:// URLs take no parameters; "
                                "expected %s", u->masked, RRL_URL_FORMS);
        }
        if ((err = rrl_url_query(p, end + 1, u)) != NULL) {
            return apr_psprintf(p, "'%s': %s", u->masked, err);
        }
    }
    return NULL;
}

static const struct {
    const char *scheme;
    rrl_redis_kind_e kind;
    int tls;
} rrl_schemes[] = {
    { "redis://", RRL_REDIS_TCP, 0 },
    { "rediss://", RRL_REDIS_TCP, 1 },
    { "redis-sentinel://", RRL_REDIS_SENTINEL, 0 },
    { "rediss-sentinel://", RRL_REDIS_SENTINEL, 1 },
    { "redis-cluster://", RRL_REDIS_CLUSTER, 0 },
    { "rediss-cluster://", RRL_REDIS_CLUSTER, 1 },
    { "unix:", RRL_REDIS_UNIX, 0 },
    { NULL, 0, 0 }
};

const char *rrl_url_parse(apr_pool_t *p, const char *url,
                          rrl_redis_url_t **out)
{
    rrl_redis_url_t *u = apr_pcalloc(p, sizeof(*u));
    const char *rest, *end, *at, *err;
    int i;

    for (i = 0; rrl_schemes[i].scheme; i++) {
        if (strncasecmp(url, rrl_schemes[i].scheme,
                        strlen(rrl_schemes[i].scheme)) == 0) {
            break;
        }
    }
    u->url = url;
    u->masked = rrl_url_mask(p, url);
    if (!rrl_schemes[i].scheme) {
        return apr_psprintf(p, "'%s' is not a Redis URL; expected %s",
                            u->masked, RRL_URL_FORMS);
    }
    u->kind = rrl_schemes[i].kind;
    u->tls = rrl_schemes[i].tls;
    u->verify = 1;
    if (u->kind == RRL_REDIS_UNIX) {
        err = rrl_url_unix(p, url, u);
    }
    else {
        /* [USER:PASSWORD@]HOSTS[/...][?...] */
        rest = url + strlen(rrl_schemes[i].scheme);
        end = rest + strcspn(rest, "/?");
        /* messages show the URL masked */
        if (!(err = rrl_url_userinfo(p, u->masked, rest, end, u, &at))
            && !(err = rrl_url_hosts(p, u->masked, at ? at + 1 : rest, end,
                                     u))) {
            err = rrl_url_path(p, u->masked, end, u);
        }
    }
    if (err) {
        return err;
    }
    *out = u;
    return NULL;
}
