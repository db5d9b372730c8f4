/*
 * libFuzzer: the store key of a limit (rrl_key_build): the client address
 * or a key= value, an IPv6 client's group (rrl_ipv6_group) put in place of
 * its address, and the rule that keeps printable ASCII up to 64 bytes and
 * turns anything else into its SHA-1 (rrl_key_value).
 *
 * Input: byte 0 flags (1: key= expression, else the client address; 2:
 * Cluster hash tag; 4: IPv6 client; 8: the expression fails; 16: a limit
 * of a virtual host), byte 1 the ipv6-prefix (1-128), bytes 2-17 the client
 * address (its first 4 for IPv4), then the key value: all of it, NULs too,
 * for rrl_key_value, up to the first NUL for the expression (a C string, as
 * ap_expr gives it).  Values go up to 64 KiB.
 */
#include "apr_lib.h"
#include "apr_sha1.h"
#include "apr_strings.h"

#include <arpa/inet.h>
#include <string.h>

#include "rrl_key.h"
#include "fuzz.h"

#define HEAD 18

RRL_FUZZ_ROOT_POOL(root)

/* What a key value may be: printable ASCII (no CR, LF or other control
 * bytes), at most 64 bytes; hashed: 40 hex digits */
static void check_value(const char *v, apr_size_t len)
{
    apr_size_t i;

    RRL_FUZZ_ASSERT(len >= 1 && len <= RRL_KEY_MAX);
    for (i = 0; i < len; i++) {
        RRL_FUZZ_ASSERT(v[i] >= ' ' && v[i] <= '~');
    }
}

static void check_key_value(apr_pool_t *p, const char *v, apr_size_t len)
{
    const char *k = rrl_key_value(p, v, len);
    apr_size_t i;
    int plain = len <= RRL_KEY_MAX;

    for (i = 0; plain && i < len; i++) {
        plain = v[i] >= ' ' && v[i] <= '~';
    }
    if (plain) {
        RRL_FUZZ_ASSERT(k == v);
        return;
    }
    RRL_FUZZ_ASSERT(strlen(k) == 2 * APR_SHA1_DIGESTSIZE);
    for (i = 0; k[i]; i++) {
        RRL_FUZZ_ASSERT(apr_isxdigit(k[i]) && !apr_isupper(k[i]));
    }
    check_value(k, strlen(k));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    unsigned char head[HEAD];
    const char *value, *key, *prefix = "rl:", *want;
    apr_size_t vlen, keylen = 0, wlen;
    request_rec r;
    conn_rec c;
    server_rec s;
    rrl_limit_t l;
    apr_sockaddr_t *sa;
    char ip[INET6_ADDRSTRLEN];
    int flags, tag, v6;

    apr_pool_create(&p, root);
    memset(head, 0, sizeof(head));
    memcpy(head, data, size < HEAD ? size : HEAD);
    value = size > HEAD ? (const char *)data + HEAD : "";
    vlen = size > HEAD ? size - HEAD : 0;
    flags = head[0];
    tag = (flags & 2) != 0;
    v6 = (flags & 4) != 0;

    /* 1: the value rule, on every byte given */
    check_key_value(p, apr_pmemdup(p, value, vlen), vlen);

    /* 2: the key of a limit for a request from that client */
    memset(&r, 0, sizeof(r));
    memset(&c, 0, sizeof(c));
    memset(&s, 0, sizeof(s));
    memset(&l, 0, sizeof(l));
    r.pool = p;
    r.connection = &c;
    r.server = &s;
    c.pool = p;
    if (apr_sockaddr_info_get(&sa, NULL, v6 ? APR_INET6 : APR_INET, 0, 0, p)
        != APR_SUCCESS) {
        apr_pool_destroy(p);
        return 0;
    }
    memcpy(sa->ipaddr_ptr, head + 2, v6 ? 16 : 4);
    RRL_FUZZ_ASSERT(inet_ntop(v6 ? AF_INET6 : AF_INET, head + 2, ip,
                              sizeof(ip)));
    r.useragent_addr = sa;
    r.useragent_ip = apr_pstrdup(p, ip);
    l.name = "login";
    l.scope = (flags & 16) ? "www.example.com:" : "";
    l.ipv6_prefix = head[1] % 128 + 1;
    if (flags & 1) {
        l.key_text = "%{HTTP:X-Api-Key}";
        l.key = apr_pcalloc(p, sizeof(*l.key));
        rrl_fuzz_expr_value = apr_pstrmemdup(p, value, vlen);
        rrl_fuzz_expr_fail = (flags & 8) != 0;
    }
    key = rrl_key_build(&r, &l, prefix, tag, &keylen);
    if (!key) {
        RRL_FUZZ_ASSERT(l.key && (rrl_fuzz_expr_fail
                                  || !*rrl_fuzz_expr_value));
        apr_pool_destroy(p);
        return 0;
    }
    RRL_FUZZ_ASSERT(keylen == strlen(key));
    want = apr_pstrcat(p, prefix, l.scope, l.name, tag ? ":{" : ":", NULL);
    wlen = strlen(want);
    RRL_FUZZ_ASSERT(keylen > wlen + tag && strncmp(key, want, wlen) == 0);
    if (tag) {
        RRL_FUZZ_ASSERT(key[keylen - 1] == '}');
    }
    check_value(key + wlen, keylen - wlen - tag);
    RRL_FUZZ_ASSERT(rrl_key_slot(key, keylen) < RRL_SLOTS);

    if (!l.key) {
        /* the client address, or an IPv6 one's group: "net/bits", the net
         * the address with every bit past bits cleared */
        const char *v = key + wlen, *slash;
        unsigned char net[16];
        char *addr;
        struct in6_addr a6;
        int b;

        memcpy(&a6, head + 2, sizeof(a6));
        if (!v6 || l.ipv6_prefix == 128 || IN6_IS_ADDR_V4MAPPED(&a6)) {
            RRL_FUZZ_ASSERT(strncmp(v, ip, strlen(ip)) == 0
                            && v[strlen(ip)] == (tag ? '}' : '\0'));
        }
        else {
            slash = strchr(v, '/');
            RRL_FUZZ_ASSERT(slash);
            addr = apr_pstrmemdup(p, v, slash - v);
            RRL_FUZZ_ASSERT(inet_pton(AF_INET6, addr, net) == 1);
            RRL_FUZZ_ASSERT(atoi(slash + 1) == l.ipv6_prefix);
            for (b = 0; b < 128; b++) {
                int bit = (net[b / 8] >> (7 - b % 8)) & 1;
                int orig = (head[2 + b / 8] >> (7 - b % 8)) & 1;

                RRL_FUZZ_ASSERT(bit == (b < l.ipv6_prefix ? orig : 0));
            }
        }
    }
    apr_pool_destroy(p);
    return 0;
}
