/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Small helpers of every layer: whole numbers, hashes, numbers as text,
 * and the robust process-shared lock of the module's shared memory.
 */

#include "apr_lib.h"
#include "apr_sha1.h"
#include "apr_strings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rrl_util.h"

/* A whole decimal number in [min, max]; "10x", "1e9", "+5", overflow fail */
int rrl_util_parse_int(const char *s, apr_int64_t min, apr_int64_t max,
                       apr_int64_t *out)
{
    char *end;
    apr_int64_t v;

    if (!s || !apr_isdigit(*s)) {
        return 0;
    }
    errno = 0;
    v = apr_strtoi64(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        return 0;
    }
    *out = v;
    return 1;
}

/* The index of s among the NULL-terminated words, case aside; -1 if none */
int rrl_util_keyword(const char *const *words, const char *s)
{
    int i;

    for (i = 0; words[i]; i++) {
        if (strcasecmp(s, words[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *rrl_util_sha1_hex(apr_pool_t *p, const char *data,
                              apr_size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t ctx;
    char *out = apr_palloc(p, 2 * APR_SHA1_DIGESTSIZE + 1);
    int i;

    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, (const unsigned char *)data,
                           (unsigned int)len);
    apr_sha1_final(digest, &ctx);
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[2 * APR_SHA1_DIGESTSIZE] = '\0';
    return out;
}

apr_uint64_t rrl_util_fnv1a(const char *s)
{
    apr_uint64_t h = APR_UINT64_C(1469598103934665603);

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * APR_UINT64_C(1099511628211);
    }
    return h ? h : 1;
}

#define RRL_ROTL(x, b) (apr_uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define RRL_SIPROUND \
    do { \
        v0 += v1; v1 = RRL_ROTL(v1, 13); v1 ^= v0; v0 = RRL_ROTL(v0, 32); \
        v2 += v3; v3 = RRL_ROTL(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = RRL_ROTL(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = RRL_ROTL(v1, 17); v1 ^= v2; v2 = RRL_ROTL(v2, 32); \
    } while (0)

static apr_uint64_t rrl_le64(const unsigned char *b)
{
    return (apr_uint64_t)b[0] | (apr_uint64_t)b[1] << 8
           | (apr_uint64_t)b[2] << 16 | (apr_uint64_t)b[3] << 24
           | (apr_uint64_t)b[4] << 32 | (apr_uint64_t)b[5] << 40
           | (apr_uint64_t)b[6] << 48 | (apr_uint64_t)b[7] << 56;
}

/*
 * SipHash-2-4 with 128-bit output (Aumasson and Bernstein), keyed with the
 * store's secret salt: clients cannot aim keys at one bucket, and two keys
 * share a slot only if 128 bits collide.  A tenth of MD5's cost.
 */
void rrl_util_siphash128(const unsigned char k[16], const char *key,
                         apr_size_t len, apr_uint64_t h[2])
{
    const unsigned char *in = (const unsigned char *)key;
    const unsigned char *end = in + (len & ~(apr_size_t)7);
    apr_uint64_t k0 = rrl_le64(k), k1 = rrl_le64(k + 8), m, b;
    apr_uint64_t v0 = APR_UINT64_C(0x736f6d6570736575) ^ k0;
    apr_uint64_t v1 = APR_UINT64_C(0x646f72616e646f6d) ^ k1 ^ 0xee;
    apr_uint64_t v2 = APR_UINT64_C(0x6c7967656e657261) ^ k0;
    apr_uint64_t v3 = APR_UINT64_C(0x7465646279746573) ^ k1;
    int i;

    for (; in != end; in += 8) {
        m = rrl_le64(in);
        v3 ^= m;
        RRL_SIPROUND;
        RRL_SIPROUND;
        v0 ^= m;
    }
    b = (apr_uint64_t)len << 56;
    for (i = (int)(len & 7) - 1; i >= 0; i--) {
        b |= (apr_uint64_t)in[i] << (8 * i);
    }
    v3 ^= b;
    RRL_SIPROUND;
    RRL_SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    for (i = 0; i < 4; i++) {
        RRL_SIPROUND;
    }
    h[0] = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    for (i = 0; i < 4; i++) {
        RRL_SIPROUND;
    }
    h[1] = v0 ^ v1 ^ v2 ^ v3;
}

/* A number as text in p: apr_psprintf's formatter costs ten times more */
const char *rrl_util_i64(apr_pool_t *p, apr_int64_t v)
{
    char *buf = apr_palloc(p, 21), *o = buf;

    if (v < 0) {
        *o++ = '-';
        o = rrl_util_put_uint(o, (apr_uint64_t)0 - (apr_uint64_t)v);
    }
    else {
        o = rrl_util_put_uint(o, (apr_uint64_t)v);
    }
    *o = '\0';
    return buf;
}

/* The len bytes at s into buf of size, as a string: too long, cut after
 * the last whole word that fits, with "..." (mid-word only when one word
 * fills the second half of buf) */
void rrl_util_copy_words(char *buf, apr_size_t size, const char *s,
                         apr_size_t len)
{
    apr_size_t cut;

    if (len < size) {
        memcpy(buf, s, len);
        buf[len] = '\0';
        return;
    }
    for (cut = size - 4; cut > size / 2 && s[cut] != ' '; cut--)
        ;
    if (s[cut] != ' ') {
        cut = size - 4;
    }
    while (cut > 0 && (s[cut - 1] == ' ' || s[cut - 1] == ',')) {
        cut--;
    }
    memcpy(buf, s, cut);
    memcpy(buf + cut, "...", 4);
}

apr_status_t rrl_util_lock_init(rrl_lock_t *l)
{
    pthread_mutexattr_t a;
    int rv;

    if ((rv = pthread_mutexattr_init(&a)) != 0) {
        return rv;
    }
    if ((rv = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0
        && (rv = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0) {
        rv = pthread_mutex_init(&l->m, &a);
    }
    pthread_mutexattr_destroy(&a);
    return rv;
}

apr_status_t rrl_util_lock(rrl_lock_t *l)
{
    int rv = pthread_mutex_lock(&l->m);

    if (rv == EOWNERDEAD) {
        /* its holder died in a critical section of a few stores: what it
         * left is a slot at worst half written, which the algorithms
         * read as a state like any other */
        rv = pthread_mutex_consistent(&l->m);
    }
    return rv;
}

/* The lock if nobody holds it (0), else EBUSY at once */
apr_status_t rrl_util_trylock(rrl_lock_t *l)
{
    int rv = pthread_mutex_trylock(&l->m);

    if (rv == EOWNERDEAD) {
        rv = pthread_mutex_consistent(&l->m);
    }
    return rv;
}

void rrl_util_unlock(rrl_lock_t *l)
{
    pthread_mutex_unlock(&l->m);
}

#ifdef RRL_FAULTS
int rrl_util_fault(const char *fault)
{
    const char *f = getenv("RRL_FAULTS");

    return f && strstr(f, fault) != NULL;
}
#endif
