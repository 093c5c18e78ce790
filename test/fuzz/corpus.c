/*
 * corpus.c - writes the fuzz targets' seed corpora (test/fuzz/corpus/NAME/)
 * with the library's own encoders, so that every seed is a message, object
 * or context a node really sends or stores, framed as the target reads it
 * (fuzz.h). Run by `make fuzz-corpus`; the output is committed, and named
 * by content so that running it again changes nothing.
 *
 *     fuzz-corpus DIR
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "http.h"
#include "kvdist.h"
#include "object.h"
#include "options.h"
#include "vclock.h"
#include "wire.h"

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "fuzz-corpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void seed(const char *target, const char *name, const void *p,
                 size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        die(path);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        die(path);
    }
}

static void seed_buf(const char *target, const char *name, buf_t *b)
{
    if (b->oom) {
        fprintf(stderr, "fuzz-corpus: out of memory\n");
        exit(1);
    }
    seed(target, name, b->p, b->len);
    buf_free(b);
}

/* ---- peer messages, batches, rows ---- */

static void put_gossip_list(buf_t *b, size_t n)
{
    static const char *const ids[] = {"n1", "n2", "node-3"};
    static const char *const urls[] = {"tcp://127.0.0.1:7001",
                                       "tcp://127.0.0.1:7002",
                                       "tls+tcp://[::1]:7003"};
    buf_put_varint(b, n);
    for (size_t i = 0; i < n; i++) {
        wire_put_gossip(b, ids[i % 3], urls[i % 3], 1700000000 + i, 42 * i);
    }
}

static void put_member_list(buf_t *b, size_t n)
{
    static const char *const ids[] = {"n1", "n2", "node-3"};
    buf_put_varint(b, n);
    for (size_t i = 0; i < n; i++) {
        wire_put_member(b, ids[i % 3], "ipc:///tmp/kv.sock", (uint8_t)(i % 4));
    }
}

/* Every kind of message, each as its own seed; also kept in msgs[] for the
 * batches. */
static buf_t msgs[32];
static size_t nmsgs;

static void msg(const char *name, buf_t *b)
{
    /* A seed the decoder refuses would teach the fuzzer nothing. */
    static const wire_limits_t lim = {64, 1024, 2048}; /* fuzz_wire's */
    wire_msg_t m;
    if (b->oom || wire_decode(b->p, b->len, &lim, &m) != 0) {
        fprintf(stderr, "fuzz-corpus: wire seed %s does not decode\n", name);
        exit(1);
    }
    buf_t copy;
    buf_init(&copy);
    buf_put(&copy, b->p, b->len);
    msgs[nmsgs++] = copy;
    seed_buf("wire", name, b);
}

static void wire_seeds(void)
{
    buf_t b;
    buf_init(&b);
    wire_build_simple(&b, WIRE_PING, 1, 0);
    msg("ping", &b);
    wire_build_simple(&b, WIRE_PING | WIRE_REPLY, 1, 0);
    msg("ping-reply", &b);
    wire_build_simple(&b, WIRE_ERROR | WIRE_REPLY, 2, KV_EPROTO);
    msg("error-reply", &b);
    wire_header(&b, WIRE_JOIN, 3, 0, 0);
    wire_put_member(&b, "n4", "tcp://10.0.0.4:7000", 2);
    msg("join", &b);
    wire_header(&b, WIRE_JOIN | WIRE_REPLY, 3, 0, 0);
    put_member_list(&b, 3);
    msg("join-reply", &b);
    wire_build_simple(&b, WIRE_MEMBERS, 4, 0);
    msg("members", &b);
    wire_header(&b, WIRE_MEMBERS | WIRE_REPLY, 4, 0, 0);
    put_member_list(&b, 2);
    msg("members-reply", &b);
    wire_build_replica_put(&b, 5, "key", 3, "OBJECT", 6);
    msg("replica-put", &b);
    wire_build_simple(&b, WIRE_REPLICA_PUT | WIRE_REPLY, 5, 0);
    msg("replica-put-reply", &b);
    wire_build_hinted(&b, WIRE_REPLICA_PUT, 6, "n2", "k", 1, "OBJ", 3);
    msg("replica-put-hint", &b);
    wire_build_key(&b, WIRE_REPLICA_GET, 7, "key", 3);
    msg("replica-get", &b);
    wire_build_hinted(&b, WIRE_REPLICA_GET, 8, "n3", "key", 3, NULL, 0);
    msg("replica-get-hint", &b);
    wire_build_obj_reply(&b, WIRE_REPLICA_GET, 7, 0, 0, 0, "OBJECT", 6);
    msg("replica-get-reply", &b);
    wire_build_coord_put(&b, 9, 0, "key", 3, "value", 5, NULL, 0, 2, 5000, 0);
    msg("coord-put", &b);
    wire_build_coord_put(&b, 10, WIRE_F_HAS_CTX, "key", 3, "value", 5,
                         "CONTEXT", 7, 3, 100, 0xfeedfacecafebeefull);
    msg("coord-put-ctx-token", &b);
    wire_build_coord_put(&b, 11, WIRE_F_TOMBSTONE | WIRE_F_HAS_CTX, "key", 3,
                         NULL, 0, "CTX", 3, 0, 0, 7);
    msg("coord-put-tombstone", &b);
    wire_build_obj_reply(&b, WIRE_COORD_PUT, 9, KV_EQUORUM, 1, 2, NULL, 0);
    msg("coord-put-reply", &b);
    wire_build_coord_get(&b, 12, "key", 3, 2, 250);
    msg("coord-get", &b);
    wire_build_obj_reply(&b, WIRE_COORD_GET, 12, 0, 2, 2, "OBJECT", 6);
    msg("coord-get-reply", &b);
    wire_build_key(&b, WIRE_LOCAL_GET, 13, "key", 3);
    msg("local-get", &b);
    wire_build_simple(&b, WIRE_STATS, 14, 0);
    msg("stats", &b);
    wire_header(&b, WIRE_STATS | WIRE_REPLY, 14, 0, 0);
    wire_put_bytes(&b, "kvdist_puts_total 3\n", 20);
    msg("stats-reply", &b);
    wire_header(&b, WIRE_GOSSIP, 15, 0, 0);
    put_gossip_list(&b, 3);
    msg("gossip", &b);
    wire_header(&b, WIRE_GOSSIP | WIRE_REPLY, 15, 0, 0);
    put_gossip_list(&b, 2);
    msg("gossip-reply", &b);
    wire_header(&b, WIRE_AE, 16, 0, 2);
    wire_put_bytes(&b, "\x01\x02\x03\x04", 4);
    msg("ae", &b);
    wire_header(&b, WIRE_AE | WIRE_REPLY, 16, 0, 2);
    wire_put_bytes(&b, "", 0);
    msg("ae-reply", &b);
    wire_header(&b, WIRE_SHUTDOWN, 17, 0, 0);
    put_gossip_list(&b, 1);
    msg("shutdown", &b);
    wire_build_simple(&b, WIRE_SHUTDOWN | WIRE_REPLY, 17, 0);
    msg("shutdown-reply", &b);
    /* A peer's answer to a probe carries its own row. */
    wire_header(&b, WIRE_PING | WIRE_REPLY, 18, 0, 0);
    put_gossip_list(&b, 1);
    msg("ping-reply-row", &b);
    wire_build_key(&b, WIRE_CONN_CHECK, 19, "127.0.0.1:40123", 15);
    msg("conn-check", &b);
    wire_build_simple(&b, WIRE_CONN_CHECK | WIRE_REPLY, 19, KV_ENOTFOUND);
    msg("conn-check-reply", &b);
    wire_build_status(&b, WIRE_COORD_GET, 20, KV_EAUTH);
    msg("refused-reply", &b);
}

static void batch_seeds(void)
{
    buf_t b;
    buf_init(&b);
    /* Requests: the ping, join, members, replica and coordinator ones. */
    wire_batch_header(&b, false, 100, 3);
    wire_put_bytes(&b, msgs[0].p, msgs[0].len);
    wire_put_bytes(&b, msgs[7].p, msgs[7].len);
    wire_put_bytes(&b, msgs[13].p, msgs[13].len);
    seed_buf("batch", "request-3", &b);
    wire_batch_header(&b, false, 101, 1);
    wire_put_bytes(&b, msgs[17].p, msgs[17].len);
    seed_buf("batch", "request-1", &b);
    /* A reply with an entry left empty: send that one again alone. */
    wire_batch_header(&b, true, 100, 3);
    wire_put_bytes(&b, msgs[1].p, msgs[1].len);
    wire_put_bytes(&b, NULL, 0);
    wire_put_bytes(&b, msgs[18].p, msgs[18].len);
    seed_buf("batch", "reply-3", &b);
    wire_batch_header(&b, true, 102, 2);
    wire_put_bytes(&b, msgs[8].p, msgs[8].len);
    wire_put_bytes(&b, msgs[16].p, msgs[16].len);
    seed_buf("batch", "reply-2", &b);
}

static void gossip_seeds(void)
{
    buf_t b;
    buf_init(&b);
    put_gossip_list(&b, 0);
    seed_buf("gossip", "empty", &b);
    put_gossip_list(&b, 1);
    seed_buf("gossip", "gossip-1", &b);
    put_gossip_list(&b, 3);
    seed_buf("gossip", "gossip-3", &b);
    put_member_list(&b, 1);
    seed_buf("gossip", "members-1", &b);
    put_member_list(&b, 4);
    seed_buf("gossip", "members-4", &b);
    wire_put_member(&b, "n9", "tcp://192.168.1.9:7000", 0);
    seed_buf("gossip", "join-member", &b);
}

/* ---- objects and contexts ---- */

/* Two parts framed as fuzz_split reads them, after a mode byte (1:
 * reseal, so the fuzzer's changes to a body are not all checksum
 * failures). */
static void seed_pair(const char *target, const char *name, uint8_t mode,
                      const buf_t *a, const buf_t *b)
{
    buf_t s;
    buf_init(&s);
    buf_put_u8(&s, mode);
    buf_put_u8(&s, (uint8_t)a->len);
    buf_put_u8(&s, (uint8_t)(a->len >> 8));
    buf_put(&s, a->p, a->len);
    buf_put(&s, b->p, b->len);
    seed_buf(target, name, &s);
}

static void encode_obj(const obj_t *o, buf_t *b)
{
    static const obj_limits_t lim = {256, 16, 24}; /* fuzz_object's */
    buf_init(b);
    obj_t back;
    obj_init(&back);
    if (obj_encode(o, b) != 0 || obj_decode(b->p, b->len, &lim, &back) != 0) {
        fprintf(stderr, "fuzz-corpus: object seed does not decode\n");
        exit(1);
    }
    obj_free(&back);
}

static void update(obj_t *o, const vc_t *ctx, uint64_t actor,
                   uint64_t token, const char *val, bool tombstone)
{
    vc_dot_t dot = {actor, vc_get(&o->cc, actor) + 1};
    if (obj_update(o, ctx, dot, 1700000000000000 + (int64_t)actor, token,
                   val, val ? strlen(val) : 0, tombstone) != 0) {
        fprintf(stderr, "fuzz-corpus: obj_update failed\n");
        exit(1);
    }
}

static void object_seeds(void)
{
    const uint64_t a1 = vc_actor_make(1700000000, 0x11111111);
    const uint64_t a2 = vc_actor_make(1700000100, 0x22222222);
    const uint64_t a3 = vc_actor_make(1600000000, 0x33333333);
    obj_t empty;
    obj_t one;
    obj_t two;
    obj_t dead;
    obj_init(&empty);
    obj_init(&one);
    obj_init(&two);
    obj_init(&dead);
    /* The histories of one key on three replicas: each starts with the
     * same first write (a dot names one write only). */
    update(&one, NULL, a1, 0, "hello", false);
    /* Then two writes that did not see each other: siblings. */
    update(&two, NULL, a1, 0, "hello", false);
    update(&two, NULL, a2, 0xabcdef, "right", false);
    update(&two, NULL, a3, 0, "", false);
    /* Then a delete that saw the first write. */
    update(&dead, NULL, a1, 0, "hello", false);
    vc_t seen;
    vc_init(&seen);
    vc_copy(&seen, &dead.cc);
    update(&dead, &seen, a3, 99, NULL, true);
    vc_free(&seen);

    buf_t e, o1, o2, d;
    encode_obj(&empty, &e);
    encode_obj(&one, &o1);
    encode_obj(&two, &o2);
    encode_obj(&dead, &d);
    seed_pair("object", "empty-one", 1, &e, &o1);
    seed_pair("object", "one-two", 1, &o1, &o2);
    seed_pair("object", "two-dead", 1, &o2, &d);
    seed_pair("object", "dead-one-raw", 0, &d, &o1);
    seed_pair("object", "two-two", 1, &o2, &o2);

    /* Contexts: the clocks of those objects, as a read returns them. */
    buf_t c[4];
    const obj_t *objs[4] = {&empty, &one, &two, &dead};
    for (int i = 0; i < 4; i++) {
        buf_init(&c[i]);
        if (vc_context_encode(&objs[i]->cc, &c[i]) != 0) {
            fprintf(stderr, "fuzz-corpus: vc_context_encode failed\n");
            exit(1);
        }
    }
    buf_t none;
    buf_init(&none);
    seed_pair("context", "empty-one", 1, &c[0], &c[1]);
    seed_pair("context", "one-two", 1, &c[1], &c[2]);
    seed_pair("context", "two-dead", 1, &c[2], &c[3]);
    seed_pair("context", "dead-none-raw", 0, &c[3], &none);

    /* The HTTP target: a context as X-Kv-Context carries it. */
    char b64[256];
    for (int i = 1; i < 4; i++) {
        if (http_b64_len(c[i].len) >= sizeof(b64)) {
            continue;
        }
        http_b64_encode(c[i].p, c[i].len, b64);
        char name[32];
        snprintf(name, sizeof(name), "context-%d", i);
        seed("http", name, b64, strlen(b64));
    }
    for (int i = 0; i < 4; i++) {
        buf_free(&c[i]);
    }
    buf_free(&e);
    buf_free(&o1);
    buf_free(&o2);
    buf_free(&d);
    obj_free(&empty);
    obj_free(&one);
    obj_free(&two);
    obj_free(&dead);
}

/* ---- text: RESP, HTTP, options ---- */

static void text(const char *target, const char *name, const char *s)
{
    seed(target, name, s, strlen(s));
}

static void resp_seeds(void)
{
    /* The first byte chooses the limits (fuzz_resp.c, its low two bits):
     * 3 is a node's, 0 the smallest (written as 4: text() stops at NUL). */
    text("resp", "set-get", "\x03*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\n"
                            "value\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    text("resp", "mset-pipeline",
         "\x02*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$0\r\n"
         "\r\n*1\r\n$4\r\nPING\r\n");
    text("resp", "inline", "\x03PING\r\nGET  a\tb\nECHO hi\r\n");
    text("resp", "empty-arrays", "\x01*0\r\n*-1\r\n\r\n");
    text("resp", "too-long", "\x04*1\r\n$9\r\n123456789\r\n");
    text("resp", "incomplete", "\x03*2\r\n$3\r\nDEL\r\n$3\r\nke");
    text("resp", "client", "\x03*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n"
                           "$4\r\nname\r\n");
}

static void http_seeds(void)
{
    text("http", "plain", "my-key_1.2~3");
    text("http", "escaped", "a%2Fb%20c%25d%3F");
    text("http", "utf8", "%C3%A9t%C3%A9");
    text("http", "b64", "aGVsbG8gd29ybGQ=");
    text("http", "b64-pad2", "YQ==");
}

static void options_seeds(void)
{
    /* Every option at its default (as --print-config writes it), then
     * values of each kind. */
    kv_options_t *o = kv_options_create();
    if (o == NULL) {
        fprintf(stderr, "fuzz-corpus: kv_options_create failed\n");
        exit(1);
    }
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; kv_options_name(i) != NULL; i++) {
        char v[4096];
        kv_options_get(o, kv_options_name(i), v, sizeof(v));
        buf_put(&b, kv_options_name(i), strlen(kv_options_name(i)));
        buf_put_u8(&b, '=');
        buf_put(&b, v, strlen(v));
        buf_put_u8(&b, '\n');
    }
    kv_options_destroy(o);
    seed_buf("options", "defaults", &b);
    text("options", "peer",
         "data_dir=/var/lib/kvdist\nnode_id=n1\nlisten=tcp://0.0.0.0:7000\n"
         "join=tcp://10.0.0.2:7000,tls+tcp://h3:7000\nresp=127.0.0.1:6379\n"
         "http=[::1]:8080\nn=3\nr=2\nw=2\nsync=fsync\n");
    text("options", "sizes",
         "cache_size=256MiB\nmax_key_size=1k\nmax_value_size=1G\n"
         "cache_size=18446744073709551615\nmax_value_size=0\n");
    text("options", "client",
         "role=client\njoin=ipc:///tmp/kv\nsloppy_quorum=off\n"
         "hinted_handoff=no\nanti_entropy=false\ntombstone_grace_ms=0\n");
    text("options", "bad",
         "n=17\nbogus=1\nnode_id=a b\nresp=localhost\nw=4\nr=-1\n"
         "timeout_ms= 5\n");
}

static void config_seeds(void)
{
    /* kvdistd.conf files (the Makefile adds examples/kvdistd.conf). */
    text("config", "peer",
         "# a peer\ndata_dir = /srv/kv#2\nnode_id=n1 # its name\n\n"
         "  listen = tcp://127.0.0.1:7000\r\njoin = tcp://127.0.0.1:7001,"
         "tcp://127.0.0.1:7002\ncache_size = 1GiB\nsync = fsync\n");
    text("config", "later-wins",
         "n = 5\nn = 3\nr=1\tw = 1\n\tresp = 127.0.0.1:6379 # redis\n");
    text("config", "bad-line", "data_dir = /d\nno equals sign\nn = 3\n");
    text("config", "client", "role = client\njoin = ipc:///tmp/kv\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-corpus DIR\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        die(root);
    }
    wire_seeds();
    batch_seeds();
    gossip_seeds();
    object_seeds();
    resp_seeds();
    http_seeds();
    options_seeds();
    config_seeds();
    for (size_t i = 0; i < nmsgs; i++) {
        buf_free(&msgs[i]);
    }
    return 0;
}
