/*
 * libFuzzer: the RateLimitRedis URL parser (rrl_url_parse, with
 * rrl_parse_hostport, rrl_url_query and rrl_url_unescape).  Input: the URL
 * (up to its first NUL, as httpd passes a directive argument).
 */
#include "apr_strings.h"

#include <string.h>

#include "rrl_url.h"
#include "fuzz.h"

RRL_FUZZ_ROOT_POOL(root)

static void check_host(const char *host, int port)
{
    RRL_FUZZ_ASSERT(host && *host);
    RRL_FUZZ_ASSERT(port >= 1 && port <= 65535);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *url, *err;
    rrl_redis_url_t *u = NULL;

    apr_pool_create(&p, root);
    url = apr_pstrmemdup(p, (const char *)data, size);
    err = rrl_url_parse(p, url, &u);
    if (err) {
        RRL_FUZZ_ASSERT(*err);
        apr_pool_destroy(p);
        return 0;
    }
    RRL_FUZZ_ASSERT(u && u->url == url && u->masked);
    RRL_FUZZ_ASSERT(u->db >= 0 && u->db <= (1 << 30));
    /* TLS options only on TLS URLs; a client certificate whole */
    RRL_FUZZ_ASSERT(u->tls || (!u->cacert && !u->cert && !u->key && !u->sni
                               && u->verify));
    RRL_FUZZ_ASSERT(!u->cert == !u->key);
    switch (u->kind) {
    case RRL_REDIS_UNIX:
        RRL_FUZZ_ASSERT(u->path && u->path[0] == '/' && u->path[1]);
        RRL_FUZZ_ASSERT(!u->addrs && !u->master);
        break;
    case RRL_REDIS_TCP:
        check_host(u->host, u->port);
        RRL_FUZZ_ASSERT(!u->addrs && !u->master);
        break;
    case RRL_REDIS_SENTINEL:
    case RRL_REDIS_CLUSTER: {
        int i;

        RRL_FUZZ_ASSERT(u->addrs && u->addrs->nelts >= 1);
        for (i = 0; i < u->addrs->nelts; i++) {
            const rrl_addr_t *a = &APR_ARRAY_IDX(u->addrs, i, rrl_addr_t);

            check_host(a->host, a->port);
        }
        RRL_FUZZ_ASSERT(u->host == APR_ARRAY_IDX(u->addrs, 0,
                                                 rrl_addr_t).host);
        if (u->kind == RRL_REDIS_SENTINEL) {
            RRL_FUZZ_ASSERT(u->master && *u->master
                            && !strpbrk(u->master, "/?"));
        }
        else {
            RRL_FUZZ_ASSERT(!u->master && u->db == 0);
        }
        break;
    }
    default:
        RRL_FUZZ_ASSERT(0);
    }
    if (u->password) {
        /* nothing says the password but the URL itself: masked hides it */
        RRL_FUZZ_ASSERT(*u->password);
        RRL_FUZZ_ASSERT(u->masked != url && strstr(u->masked, "****"));
    }
    else {
        /* nothing to hide; the mask, which does not parse, may still hide
         * what looks like a password (USER:PASSWORD@ after a "://", a
         * ?password= or &password= inside another parameter's value) */
        RRL_FUZZ_ASSERT(u->masked == url || strstr(u->masked, "****"));
    }
    if (u->user) {
        RRL_FUZZ_ASSERT(*u->user);
    }
    apr_pool_destroy(p);
    return 0;
}
