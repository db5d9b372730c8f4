/*
 * libFuzzer: the slot map from a CLUSTER SLOTS reply (rrl_redis_cluster_learn,
 * rrl_cluster_node), read by hiredis' own reader as rrl_redis_cluster_refresh
 * reads it.  Input: what the node sends.  Every slot learnt must name a
 * node known, and learning the same reply again must add no node.
 *
 * hiredis 0.14's own reply objects calloc an array's element pointers as
 * soon as its count is read ("*2000000000" asks for 16 GB before a single
 * element): that is hiredis', not the module's, so arrays of more than
 * 2^20 are refused here (the reader reports out of memory, as it would if
 * calloc failed) and the seed oom-huge-array keeps that in view.
 */
#include "apr_strings.h"

#include <string.h>

#include "rrl_redis_cluster.h"
#include "fuzz.h"

static apr_pool_t *root;
static const rrl_redis_url_t url = { .kind = RRL_REDIS_CLUSTER };
static redisReplyObjectFunctions bounded;
static void *(*create_array)(const redisReadTask *, RRL_HIREDIS_ARRAY_LEN);

static void *bounded_array(const redisReadTask *task,
                           RRL_HIREDIS_ARRAY_LEN len)
{
    return len > (1 << 20) ? NULL : create_array(task, len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    apr_initialize();
    apr_pool_create(&root, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    redisReader *reader = redisReaderCreate();
    void *reply = NULL;
    rrl_backend_t be;
    int i, nodes;

    RRL_FUZZ_ASSERT(reader);
    if (!create_array) {
        bounded = *reader->fn;
        create_array = bounded.createArray;
        bounded.createArray = bounded_array;
    }
    reader->fn = &bounded;
    if (redisReaderFeed(reader, (const char *)data, size) != REDIS_OK
        || redisReaderGetReply(reader, &reply) != REDIS_OK || !reply) {
        redisReaderFree(reader);
        return 0;
    }
    apr_pool_create(&p, root);
    memset(&be, 0, sizeof(be));
    be.u = &url;
    be.cpool = p;
    be.pool_max = 1;
    be.pool_ttl = apr_time_from_sec(60);
    be.command_timeout = apr_time_from_msec(100);
    be.slots = apr_pcalloc(p, sizeof(*be.slots) * RRL_SLOTS);
    RRL_FUZZ_ASSERT(apr_thread_mutex_create(&be.mutex,
                                            APR_THREAD_MUTEX_DEFAULT, p)
                    == APR_SUCCESS);

    i = rrl_redis_cluster_learn(&be, reply, "10.0.0.9");
    RRL_FUZZ_ASSERT(i == 0 || i == 1);
    RRL_FUZZ_ASSERT(be.nnodes >= 0 && be.nnodes <= RRL_MAX_NODES);
    RRL_FUZZ_ASSERT(!i || be.nnodes >= 1);
    for (i = 0; i < be.nnodes; i++) {
        RRL_FUZZ_ASSERT(be.nodes[i]->host[0]
                        && strlen(be.nodes[i]->host)
                           < sizeof(be.nodes[i]->host));
        RRL_FUZZ_ASSERT(be.nodes[i]->pool);
    }
    for (i = 0; i < RRL_SLOTS; i++) {
        RRL_FUZZ_ASSERT(be.slots[i] <= be.nnodes);
        if (be.slots[i]) {
            RRL_FUZZ_ASSERT(rrl_redis_cluster_route(&be, (unsigned)i)
                            == be.nodes[be.slots[i] - 1]);
        }
    }
    nodes = be.nnodes;
    rrl_redis_cluster_learn(&be, reply, "10.0.0.9");
    RRL_FUZZ_ASSERT(be.nnodes == nodes);

    freeReplyObject(reply);
    redisReaderFree(reader);
    apr_pool_destroy(p);
    return 0;
}
