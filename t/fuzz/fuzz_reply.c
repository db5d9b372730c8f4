/*
 * libFuzzer: the decoding of Redis replies as the module does it: hiredis'
 * reader with the module's reply functions (rrl_resp_reply_fns) into an
 * rrl_reply_t on the stack, then rrl_script_reply() into the items, as
 * rrl_redis_pipe_eval does for the script's reply.
 *
 * Input: byte 0: bits 0-3 the number of limits less one (1-16; above 8 the
 * integers go to the pool, as in rrl_redis_pipe_eval), bit 4: through
 * rrl_redis_pipe_roundtrip on a socketpair (the replies, then EOF) for 1-8
 * calls (bits 0-2 of byte 1), bit 5: with ASKING first (a reply read
 * before each one that counts); otherwise byte 1 is the size of the pieces
 * fed in the second reading.  Bit 6: each reply is a batch's (the script's
 * reply to several requests joined into one EVALSHA, rrl_batch), for 1-8
 * requests (bits 3-5 of byte 1) of that many limits each: its entries go
 * to the requests' own replies (nested errors, short arrays, wrong types:
 * a request whose entry is not one fails alone, never the others, and an
 * error instead of the whole array reaches each).  The rest: what Redis
 * sends.  Read directly, every reply in it is decoded twice, all at once
 * and in pieces, with other garbage in the integer buffer: the outcomes
 * must be the same.  A message about a reply never shows an item's key.
 */
#include "apr_strings.h"

#include <string.h>

#include "rrl_redis_pipe.h"
#include "rrl_resp.h"
#include "rrl_script.h"
#include "fuzz.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_N 16
#define MAX_REPLIES 16
#define MAX_PARTS 8

RRL_FUZZ_ROOT_POOL(root)

/* What one reply came to */
typedef struct {
    int rc;                       /* of redisReaderGetReply */
    int got;                      /* a reply was complete */
    int type, bad;
    apr_int64_t integer;
    char str[RRL_REPLY_STR];
    apr_size_t elements;
    const char *err;              /* of rrl_script_reply */
    int not_master;
    apr_int64_t now;
    rrl_item_t items[MAX_N];
} outcome_t;

/* What one reply came to: itself, or a batch's, each request's entry */
typedef struct {
    outcome_t whole;
    outcome_t part[MAX_PARTS];
} outcomes_t;

/* The limits and keys of the items: what messages about them name (the
 * limit) and must never show (the key) */
static rrl_limit_t limits[MAX_N];
static char keys[MAX_N][32];

static void items_of(rrl_item_t *items, int n)
{
    int i;

    memset(items, 0, sizeof(*items) * MAX_N);
    for (i = 0; i < n; i++) {
        if (!limits[i].name) {
            limits[i].name = apr_psprintf(root, "limit%d", i);
            limits[i].directive = i % 5 == RRL_ALG_CONCURRENCY
                                  ? "RateLimitConcurrency" : "RateLimit";
            limits[i].scope = i % 2 ? "vhost.example:" : "";
            limits[i].p.algorithm = i % 5;    /* every algorithm */
            apr_snprintf(keys[i], sizeof(keys[i]), "rl:%s:client%d",
                         limits[i].name, i);
        }
        items[i].limit = &limits[i];
        items[i].p = &limits[i].p;
        items[i].key = keys[i];
        items[i].keylen = strlen(keys[i]);
        items[i].cost = 1;
    }
}

/* The script's reply into items, as rrl_redis_pipe_eval takes it (in a
 * batch: a request's entry, which nothing may have filled) */
static void decode(apr_pool_t *p, rrl_reply_t *rep, int n, outcome_t *o,
                   int entry)
{
    apr_size_t i;

    o->got = 1;
    o->type = rep->type;
    o->bad = rep->bad;
    o->integer = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    o->elements = rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0;
    RRL_FUZZ_ASSERT((entry && rep->type == 0)
                    || rep->type == REDIS_REPLY_STRING
                    || rep->type == REDIS_REPLY_ARRAY
                    || rep->type == REDIS_REPLY_INTEGER
                    || rep->type == REDIS_REPLY_NIL
                    || rep->type == REDIS_REPLY_STATUS
                    || rep->type == REDIS_REPLY_ERROR);
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS
        || rep->type == REDIS_REPLY_ERROR) {
        RRL_FUZZ_ASSERT(memchr(rep->str, '\0', RRL_REPLY_STR));
        strcpy(o->str, rep->str);
    }
    o->not_master = rrl_redis_pipe_not_master(rep);
    items_of(o->items, n);
    o->now = -1;
    o->err = rrl_script_reply(p, rep, o->items, n, &o->now);
    if (o->err) {
        /* "EVALSHA: RateLimit NAME, key SHA-1 ...: WHY" or "EVALSHA for
         * RateLimit NAMES: ...", never with a key (it may be an API key) */
        RRL_FUZZ_ASSERT(strncmp(o->err, "EVALSHA", 7) == 0);
        for (i = 0; i < (apr_size_t)n; i++) {
            RRL_FUZZ_ASSERT(!strstr(o->err, o->items[i].key));
        }
        return;
    }
    RRL_FUZZ_ASSERT(rep->type == REDIS_REPLY_ARRAY && !rep->bad
                    && rep->elements == (apr_size_t)(2 + 4 * n));
    RRL_FUZZ_ASSERT(!entry || !rep->parts);
    RRL_FUZZ_ASSERT(o->now >= 0);
    for (i = 0; i < (apr_size_t)n; i++) {
        RRL_FUZZ_ASSERT(o->items[i].allowed == 0 || o->items[i].allowed == 1);
        RRL_FUZZ_ASSERT(o->items[i].remaining >= 0 && o->items[i].reset >= 0
                        && o->items[i].retry >= 0);
    }
}

/* A reply of k requests' entries (a batch's, as rrl_batch_join makes
 * it), each with room for n limits, filled with fill; k 0: a reply alone */
static void make_reply(apr_pool_t *p, rrl_reply_t *rep, int n, int k,
                       int fill)
{
    int i;

    memset(rep, fill, sizeof(*rep));
    rep->nints = 2 + 4 * (apr_size_t)n;
    rep->ints = apr_palloc(p, sizeof(*rep->ints) * rep->nints);
    memset(rep->ints, fill, sizeof(*rep->ints) * rep->nints);
    rep->parts = NULL;
    rep->nparts = 0;
    if (!k) {
        return;
    }
    rep->nints = 0;               /* a batch's elements are its entries */
    rep->parts = apr_palloc(p, sizeof(*rep->parts) * (apr_size_t)k);
    rep->nparts = (apr_size_t)k;
    for (i = 0; i < k; i++) {
        rep->parts[i] = apr_palloc(p, sizeof(rrl_reply_t));
        make_reply(p, rep->parts[i], n, 0, fill);
    }
}

/* A batch's reply read: what each request has of it, decoded */
static void decode_batch(apr_pool_t *p, rrl_reply_t *rep, int n,
                         outcomes_t *o)
{
    apr_size_t i;
    int anybad = 0;

    for (i = 0; i < rep->nparts; i++) {
        const rrl_reply_t *e = rep->parts[i];

        anybad = anybad || e->bad;
        if (rep->type == REDIS_REPLY_ERROR) {
            /* the call failed: every request has its error */
            RRL_FUZZ_ASSERT(e->type == REDIS_REPLY_ERROR
                            && strcmp(e->str, rep->str) == 0);
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements != rep->nparts) {
            RRL_FUZZ_ASSERT(e->bad);   /* no entry of it is trusted */
        }
        if (rep->type != REDIS_REPLY_ARRAY
            && rep->type != REDIS_REPLY_ERROR) {
            RRL_FUZZ_ASSERT(e->type == 0 || e->bad);
        }
        decode(p, rep->parts[i], n, &o->part[i], 1);
    }
    /* an entry of a shape never asked for drops the connection */
    RRL_FUZZ_ASSERT(!anybad || rep->bad);
}

/* Every reply in data, fed in pieces of chunk bytes (0: all at once), with
 * the integer buffer first filled with fill; k: a batch's, of k requests */
static int read_all(apr_pool_t *p, const char *data, size_t size, int n,
                    int k, size_t chunk, int fill, outcomes_t *out)
{
    rrl_reply_t rep;
    redisReader *reader = redisReaderCreate();
    size_t fed = 0;
    int count = 0;

    RRL_FUZZ_ASSERT(reader);
    reader->fn = &rrl_resp_reply_fns;
    reader->privdata = &rep;
    make_reply(p, &rep, n, k, fill);
    while (count < MAX_REPLIES) {
        outcome_t *o = &out[count].whole;
        void *reply = NULL;

        memset(&out[count], 0, sizeof(out[count]));
        /* as rrl_redis_pipe_roundtrip, before each command */
        rrl_resp_reset(&rep);
        for (;;) {
            o->rc = redisReaderGetReply(reader, &reply);
            if (o->rc != REDIS_OK || reply || fed == size) {
                break;
            }
            {
                size_t take = chunk && size - fed > chunk ? chunk
                                                          : size - fed;

                RRL_FUZZ_ASSERT(redisReaderFeed(reader, data + fed, take)
                                == REDIS_OK);
                fed += take;
            }
        }
        count++;
        if (o->rc != REDIS_OK || !reply) {
            break;
        }
        RRL_FUZZ_ASSERT(reply == &rep);
        if (k) {
            o->got = 1;
            o->type = rep.type;
            o->bad = rep.bad;
            decode_batch(p, &rep, n, &out[count - 1]);
        }
        else {
            decode(p, &rep, n, o, 0);
        }
    }
    redisReaderFree(reader);
    return count;
}

static void same1(const outcome_t *a, const outcome_t *b, int n)
{
    int i;

    RRL_FUZZ_ASSERT(a->rc == b->rc && a->got == b->got);
    if (!a->got) {
        return;
    }
    RRL_FUZZ_ASSERT(a->type == b->type && a->bad == b->bad
                    && a->integer == b->integer
                    && a->elements == b->elements
                    && strcmp(a->str, b->str) == 0
                    && a->not_master == b->not_master);
    RRL_FUZZ_ASSERT(!a->err == !b->err);
    if (a->err) {
        RRL_FUZZ_ASSERT(strcmp(a->err, b->err) == 0);
        return;
    }
    RRL_FUZZ_ASSERT(a->now == b->now);
    for (i = 0; i < n; i++) {
        RRL_FUZZ_ASSERT(a->items[i].allowed == b->items[i].allowed
                        && a->items[i].remaining == b->items[i].remaining
                        && a->items[i].reset == b->items[i].reset
                        && a->items[i].retry == b->items[i].retry);
    }
}

static void same(const outcomes_t *a, const outcomes_t *b, int n, int k)
{
    int i;

    if (!k) {
        same1(&a->whole, &b->whole, n);
        return;
    }
    RRL_FUZZ_ASSERT(a->whole.rc == b->whole.rc
                    && a->whole.got == b->whole.got
                    && a->whole.type == b->whole.type
                    && a->whole.bad == b->whole.bad);
    for (i = 0; a->whole.got && i < k; i++) {
        same1(&a->part[i], &b->part[i], n);
    }
}

/* Through rrl_redis_pipe_roundtrip, as a round trip of k calls: Redis answers
 * with data, then hangs up */
static void roundtrip(apr_pool_t *p, const char *data, size_t size, int n,
                      int asking, int k, int parts)
{
    static const rrl_redis_url_t url = { .kind = RRL_REDIS_TCP };
    rrl_backend_t be;
    rrl_call_t call[8], *calls[8];
    rrl_reply_t rep[8];
    rrl_conn_t conn;
    const char *err;
    int fds[2], stale, got, i;
    size_t off = 0;

    memset(&be, 0, sizeof(be));
    be.u = &url;
    be.command_timeout = apr_time_from_sec(1);
    RRL_FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    while (off < size) {
        ssize_t w = write(fds[1], data + off, size - off);

        RRL_FUZZ_ASSERT(w > 0);
        off += (size_t)w;
    }
    shutdown(fds[1], SHUT_WR);
    /* a connection as rrl_redis_conn_connect makes it */
    memset(&conn, 0, sizeof(conn));
    conn.sock.fd = fds[0];
    RRL_FUZZ_ASSERT(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
    RRL_FUZZ_ASSERT((conn.reader = redisReaderCreate()) != NULL);
    conn.reader->fn = &rrl_resp_reply_fns;
    for (i = 0; i < k; i++) {
        memset(&call[i], 0, sizeof(call[i]));
        call[i].cmd = RRL_RESP_PING;
        call[i].len = sizeof(RRL_RESP_PING) - 1;
        call[i].asking = asking;
        call[i].rep = &rep[i];
        make_reply(p, &rep[i], n, parts, 0);
        calls[i] = &call[i];
    }
    got = rrl_redis_pipe_roundtrip(p, &be, &conn, calls, k,
                                   RRL_SEND | RRL_RECEIVE, &err, &stale);
    RRL_FUZZ_ASSERT(got >= 0 && got <= k);
    RRL_FUZZ_ASSERT((got < k) == (err != NULL));
    if (err) {
        RRL_FUZZ_ASSERT(*err);
        RRL_FUZZ_ASSERT(stale == 0 || stale == 1);
    }
    for (i = 0; i < got; i++) {
        outcomes_t o;
        char redirect[RRL_REPLY_STR];

        if (rep[i].type == REDIS_REPLY_ERROR
            && (strncmp(rep[i].str, "MOVED ", 6) == 0
                || strncmp(rep[i].str, "ASK ", 4) == 0)) {
            memcpy(redirect, rep[i].str, RRL_REPLY_STR);  /* as eval does */
            RRL_FUZZ_ASSERT(memchr(redirect, '\0', sizeof(redirect)));
        }
        if (parts) {
            decode_batch(p, &rep[i], n, &o);
        }
        else {
            decode(p, &rep[i], n, &o.whole, 0);
        }
    }
    redisReaderFree(conn.reader);
    close(fds[0]);
    close(fds[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    outcomes_t *a, *b;
    int n, na, nb, i, k;

    if (size < 2) {
        return 0;
    }
    apr_pool_create(&p, root);
    n = (data[0] & 15) + 1;
    k = data[0] & 64 ? ((data[1] >> 3) & 7) + 1 : 0;
    if (k && n > 8) {
        n = 8;                    /* keep a batch's input small */
    }
    if (data[0] & 16) {
        roundtrip(p, (const char *)data + 2, size - 2, n, (data[0] & 32) != 0,
                  (data[1] & 7) + 1, k);
    }
    else {
        a = apr_palloc(p, sizeof(*a) * MAX_REPLIES);
        b = apr_palloc(p, sizeof(*b) * MAX_REPLIES);
        na = read_all(p, (const char *)data + 2, size - 2, n, k, 0, 0, a);
        nb = read_all(p, (const char *)data + 2, size - 2, n, k,
                      (size_t)data[1] % 64 + 1, 0x5a, b);
        RRL_FUZZ_ASSERT(na == nb);
        for (i = 0; i < na; i++) {
            same(&a[i], &b[i], n, k);
        }
    }
    apr_pool_destroy(p);
    return 0;
}
