/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Small helpers of every layer: whole numbers, hashes, numbers as text,
 * and the robust process-shared lock of the module's shared memory.
 */

#ifndef RRL_UTIL_H
#define RRL_UTIL_H

#include <pthread.h>
#include <string.h>

#include "rrl.h"

int rrl_util_parse_int(const char *s, apr_int64_t min, apr_int64_t max,
                       apr_int64_t *out);
int rrl_util_keyword(const char *const *words, const char *s);
const char *rrl_util_sha1_hex(apr_pool_t *p, const char *data, apr_size_t len);
apr_uint64_t rrl_util_fnv1a(const char *s);
void rrl_util_siphash128(const unsigned char k[16], const char *key,
                         apr_size_t len, apr_uint64_t h[2]);
const char *rrl_util_i64(apr_pool_t *p, apr_int64_t v);
void rrl_util_copy_words(char *buf, apr_size_t size, const char *s,
                         apr_size_t len);

/* The first word of the module's shared memory regions */
#define RRL_SHM_MAGIC 0x52524c31u      /* "RRL1" */

/* A process-shared, robust mutex in shared memory, alone on its cache line:
 * the lock of a stripe of the store's buckets, taken without a system
 * call when nobody holds it.  A child that dies holding one leaves it to
 * the next taker, who carries on (robust) */
typedef union {
    pthread_mutex_t m;
    char line[64];
} rrl_lock_t;

apr_status_t rrl_util_lock_init(rrl_lock_t *l);
apr_status_t rrl_util_lock(rrl_lock_t *l);
apr_status_t rrl_util_trylock(rrl_lock_t *l);
void rrl_util_unlock(rrl_lock_t *l);

/* The first n bytes of s, terminated, in p: apr_pstrmemdup, but made as
 * the n + 1 bytes it is.  APR 1.7 declares apr_pstrmemdup's result
 * alloc_size n, so that gcc's object-size checks (UBSan on Debian 13)
 * call a read of its terminator, or of "" when n is 0, out of bounds */
static APR_INLINE char *rrl_util_strmemdup(apr_pool_t *p, const char *s,
                                           apr_size_t n)
{
    char *d = apr_palloc(p, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* v in decimal at o; the end.  Inline: every number of every header and
 * of every RESP length goes through it */
static APR_INLINE char *rrl_util_put_uint(char *o, apr_uint64_t v)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324"
        "25262728293031323334353637383940414243444546474849"
        "50515253545556575859606162636465666768697071727374"
        "75767778798081828384858687888990919293949596979899";
    char tmp[20], *t = tmp + sizeof(tmp);
    apr_size_t n;

    while (v >= 100) {              /* two digits a division */
        const char *d = &pairs[(v % 100) * 2];

        v /= 100;
        *--t = d[1];
        *--t = d[0];
    }
    if (v >= 10) {
        *--t = pairs[v * 2 + 1];
        *--t = pairs[v * 2];
    }
    else {
        *--t = (char)('0' + v);
    }
    n = (apr_size_t)(tmp + sizeof(tmp) - t);
    memcpy(o, t, n);
    return o + n;
}

#ifdef RRL_FAULTS
/* Fault injection, in a build with -DRRL_FAULTS only (the tests' faults/
 * copy of the module): is fault named in RRL_FAULTS of httpd's
 * environment?  lose-wakeups (src/rrl_redis_pipe.c), fail-release
 * (src/rrl_reserve.c) */
int rrl_util_fault(const char *fault);
#else
#define rrl_util_fault(fault) 0
#endif

#endif /* RRL_UTIL_H */
