/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A limit's store key for a request.
 */

#include "apr_strings.h"

#include <arpa/inet.h>
#include <string.h>

#include "rrl_private.h"
#include "rrl_key.h"
#include "rrl_util.h"

/* Printable ASCII up to 64 bytes stays as it is; anything else is SHA-1 */
const char *rrl_key_value(apr_pool_t *p, const char *v, apr_size_t len)
{
    apr_size_t i;

    if (len <= RRL_KEY_MAX) {
        for (i = 0; i < len; i++) {
            if (v[i] < ' ' || v[i] > '~') {
                break;
            }
        }
        if (i == len) {
            return v;
        }
    }
    return rrl_util_sha1_hex(p, v, len);
}

/* An IPv6 address stands for its first bits: "2001:db8:1:2::/64"; NULL
 * for an IPv4-mapped one, or all 128 bits */
static const char *rrl_ipv6_bits(apr_pool_t *p, struct in6_addr in6,
                                 int bits)
{
    unsigned char *a = in6.s6_addr;
    char buf[INET6_ADDRSTRLEN];
    int i;

    if (bits >= 128 || IN6_IS_ADDR_V4MAPPED(&in6)) {
        return NULL;
    }
    for (i = 0; i < 16; i++) {
        int keep = bits - 8 * i;

        if (keep <= 0) {
            a[i] = 0;
        }
        else if (keep < 8) {
            a[i] &= (unsigned char)(0xff << (8 - keep));
        }
    }
    if (!inet_ntop(AF_INET6, a, buf, sizeof(buf))) {
        return NULL;
    }
    return apr_psprintf(p, "%s/%d", buf, bits);
}

/* An IPv6 client stands for its first bits */
static const char *rrl_ipv6_group(request_rec *r, int bits)
{
    const apr_sockaddr_t *sa = r->useragent_addr;
    struct in6_addr in6;          /* aligned, for IN6_IS_ADDR_V4MAPPED */

    if (!sa || sa->family != APR_INET6) {
        return NULL;
    }
    memcpy(&in6, sa->ipaddr_ptr, 16);
    return rrl_ipv6_bits(r->pool, in6, bits);
}

/* prefix scope name ":" value (value hashed already), or ":{" value "}"
 * with tag (Redis Cluster) */
static const char *rrl_key_join(apr_pool_t *p, const rrl_limit_t *l,
                                const char *prefix, const char *v, int tag,
                                apr_size_t *lenp)
{
    apr_size_t pl = strlen(prefix), sl = strlen(l->scope),
               nl = strlen(l->name), vl = strlen(v);
    char *key = apr_palloc(p, pl + sl + nl + vl + 4), *o = key;

    memcpy(o, prefix, pl);
    memcpy(o += pl, l->scope, sl);
    memcpy(o += sl, l->name, nl);
    o += nl;
    *o++ = ':';
    if (tag) {
        *o++ = '{';
    }
    memcpy(o, v, vl);
    o += vl;
    if (tag) {
        *o++ = '}';
    }
    *o = '\0';
    *lenp = (apr_size_t)(o - key);
    return key;
}

/* The store key of limit l for a key value as an operator gives it (the
 * status page's unblock): hashed as requests' are, and a client address
 * of an IPv6 client grouped by the limit's ipv6-prefix= */
const char *rrl_key_of_value(apr_pool_t *p, const rrl_limit_t *l,
                             const char *prefix, const char *value, int tag,
                             apr_size_t *lenp)
{
    struct in6_addr in6;
    const char *group;

    if (!l->key && inet_pton(AF_INET6, value, &in6) == 1
        && (group = rrl_ipv6_bits(p, in6, l->ipv6_prefix)) != NULL) {
        value = group;
    }
    return rrl_key_join(p, l, prefix, rrl_key_value(p, value, strlen(value)),
                        tag, lenp);
}

/* "rl:" "api.example.com:" "login" ":" value, or NULL if the key is empty;
 * tag (Redis Cluster): the value as hash tag, ":{" value "}", so that
 * limits with equal values share a slot and one EVALSHA */
const char *rrl_key_build(request_rec *r, const rrl_limit_t *l,
                          const char *prefix, int tag,
                          apr_size_t *lenp)
{
    const char *v, *group;

    if (!l->key) {
        v = r->useragent_ip;
        group = rrl_ipv6_group(r, l->ipv6_prefix);
        if (group) {
            v = group;
        }
    }
    else {
        const char *err = NULL;

        v = l->key_header ? apr_table_get(r->headers_in, l->key_header)
                          : ap_expr_str_exec(r, l->key, &err);
        if (err) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RRL_LOGNO(00001)
                          "RateLimit %s: key expression failed (%s); the "
                          "limit does not count this request", l->name, err);
            return NULL;
        }
        if (v && *v && r->useragent_ip
            && (group = rrl_ipv6_group(r, l->ipv6_prefix)) != NULL) {
            /* each occurrence of the address becomes its group: one pass
             * to count, one to copy, so a value full of addresses costs
             * linear time and memory */
            const char *ip = r->useragent_ip, *hit, *from;
            apr_size_t iplen = strlen(ip), glen = strlen(group), hits = 0;
            char *out, *o;

            for (from = v; (hit = ap_strstr_c(from, ip)) != NULL;
                 from = hit + iplen) {
                hits++;
            }
            if (hits) {
                o = out = apr_palloc(r->pool, strlen(v) + 1
                                     + hits * (glen > iplen ? glen - iplen
                                                            : 0));
                while ((hit = ap_strstr_c(v, ip)) != NULL) {
                    memcpy(o, v, hit - v);
                    o += hit - v;
                    memcpy(o, group, glen);
                    o += glen;
                    v = hit + iplen;
                }
                strcpy(o, v);
                v = out;
            }
        }
    }
    if (!v || !*v) {
        return NULL;
    }
    return rrl_key_join(r->pool, l, prefix,
                        rrl_key_value(r->pool, v, strlen(v)), tag, lenp);
}

/* CRC16-CCITT (XMODEM), the key hash of Redis Cluster */
static unsigned rrl_crc16(const char *buf, apr_size_t len)
{
    unsigned crc = 0;
    apr_size_t i;
    int j;

    for (i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (j = 0; j < 8; j++) {
            crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        }
        crc &= 0xffff;
    }
    return crc;
}

/* A key's slot, by Redis's rule: of its hash tag, what stands between the
 * first { and the } after it, when that is not empty */
unsigned rrl_key_slot(const char *key, apr_size_t len)
{
    const char *open = memchr(key, '{', len), *close;

    if (open) {
        close = memchr(open + 1, '}', len - (apr_size_t)(open + 1 - key));
        if (close && close > open + 1) {
            key = open + 1;
            len = (apr_size_t)(close - key);
        }
    }
    return rrl_crc16(key, len) & (RRL_SLOTS - 1);
}
