/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Unblock a client: a POST to the status handler.
 */

#include "apr_hash.h"
#include "apr_strings.h"

#include <string.h>

#include "http_main.h"
#include "http_protocol.h"

#include "rrl_private.h"
#include "rrl_unblock.h"
#include "rrl_config.h"
#include "rrl_key.h"
#include "rrl_limit.h"
#include "rrl_local.h"

/* The value of form field name, or NULL */
static const char *rrl_form_value(request_rec *r, apr_array_header_t *form,
                                  const char *name)
{
    int i;

    for (i = 0; i < form->nelts; i++) {
        ap_form_pair_t *f = &APR_ARRAY_IDX(form, i, ap_form_pair_t);
        apr_off_t len;
        apr_size_t size;
        char *buf;

        if (strcmp(f->name, name) != 0
            || apr_brigade_length(f->value, 1, &len) != APR_SUCCESS) {
            continue;
        }
        size = (apr_size_t)len;
        buf = apr_palloc(r->pool, size + 1);
        apr_brigade_flatten(f->value, buf, &size);
        buf[size] = '\0';
        return buf;
    }
    return NULL;
}

/* A browser sent here by another site (a page the operator visits that
 * makes it POST): Sec-Fetch-Site says so, or an Origin that is not this
 * host */
static int rrl_cross_site(request_rec *r)
{
    const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site");
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *host = apr_table_get(r->headers_in, "Host"), *o;

    if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none")) {
        return 1;
    }
    if (origin) {
        o = strstr(origin, "://");
        return !host || !o || strcasecmp(o + 3, host) != 0;
    }
    return 0;
}

/* A plain answer to a POST, with its status */
static int rrl_unblock_say(request_rec *r, int status, const char *text)
{
    r->status = status;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rvputs(r, text, "\n", NULL);
    return OK;
}

/*
 * POST action=unblock&limit=NAME[&vhost=VHOST]&key=VALUE: forget that
 * key's state in the local store, as only a full restart did (whoever the
 * location's own Require lets in may).  VALUE as the key has it: the
 * client address (an IPv6 one grouped as requests' are) or what key=
 * gives (hashed as requests' are); it is neither logged nor echoed.
 */
int rrl_unblock_post(request_rec *r)
{
    const apr_array_header_t *pairs = rrl_limit_pairs();
    const char *action, *name, *vhost, *value, *where;
    const rrl_limit_t *l = NULL;
    apr_array_header_t *form;
    apr_hash_t *prefixes = apr_hash_make(r->pool);
    int i, rv, found = 0, failed = 0, in_redis = 0;
    server_rec *s;

    if (rrl_cross_site(r)) {
        return rrl_unblock_say(r, HTTP_FORBIDDEN, "a request from another "
                              "site (Origin, Sec-Fetch-Site) is refused");
    }
    if ((rv = ap_parse_form_data(r, NULL, &form, 8, 8192)) != OK) {
        return rv;
    }
    action = rrl_form_value(r, form, "action");
    name = rrl_form_value(r, form, "limit");
    vhost = rrl_form_value(r, form, "vhost");
    value = rrl_form_value(r, form, "key");
    vhost = vhost ? vhost : "";
    if (!action || strcmp(action, "unblock") != 0 || !name || !value
        || !*value) {
        return rrl_unblock_say(r, HTTP_BAD_REQUEST, "expected a form "
                              "(application/x-www-form-urlencoded): "
                              "action=unblock, limit=NAME, vhost=VHOST "
                              "(for a limit of a virtual host) and "
                              "key=VALUE");
    }
    for (i = 0; pairs && i < pairs->nelts && !l; i++) {
        l = APR_ARRAY_IDX(pairs, i, const rrl_limit_t *);
        if (strcmp(l->name, name) != 0
            || strcmp(rrl_limit_vhost(l), vhost) != 0) {
            l = NULL;
        }
    }
    where = *vhost ? apr_pstrcat(r->pool, " of virtual host ",
                                 ap_escape_html(r->pool, vhost), NULL) : "";
    if (!l) {
        return rrl_unblock_say(r, HTTP_NOT_FOUND, apr_pstrcat(
            r->pool, "no limit named ", ap_escape_html(r->pool, name), where,
            "; the status page lists each limit and its virtual host",
            NULL));
    }
    /* every prefix its requests may have, plain and hash-tagged (the
     * local store stands in for a Cluster too) */
    for (s = ap_server_conf; s; s = s->next) {
        const rrl_srv_conf_t *sc = ap_get_module_config(
            s->module_config, &redis_ratelimit_module);
        const char *prefix = rrl_config_prefix(sc);
        int tag;

        if ((l->in_vhost && s != l->server)
            || apr_hash_get(prefixes, prefix, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(prefixes, prefix, APR_HASH_KEY_STRING, prefix);
        in_redis |= sc->backend != NULL;
        for (tag = 0; tag < 2; tag++) {
            apr_size_t len;
            const char *key = rrl_key_of_value(r->pool, l, prefix, value,
                                               tag, &len);

            rv = rrl_local_forget(key, len);
            found |= rv > 0;
            failed |= rv < 0;
        }
    }
    if (failed) {
        return rrl_unblock_say(r, HTTP_INTERNAL_SERVER_ERROR,
                              "cannot lock the local store");
    }
    if (found) {
        ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, RRL_LOGNO(00025)
                      "RateLimit %s%s: a key's state cleared in the local "
                      "store from the status page", l->name, where);
    }
    return rrl_unblock_say(r, HTTP_OK, apr_pstrcat(
        r->pool, "RateLimit ", l->name, where, found
        ? ": that key's state was cleared in the local store"
        : ": the local store kept no state for that key", in_redis
        ? "; this limit is kept in Redis: delete the key there "
          "(docs/operations.md, Unblock a client)" : "", NULL));
}
