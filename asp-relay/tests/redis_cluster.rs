//! The relay cluster on a Redis Cluster (SPEC §15.6; feature `cluster`): three masters
//! without replicas started here on free loopback ports, and `asp-relay` processes given
//! `--redis redis+cluster://…`. Each connection's keys share one slot (its `{cid}` hash
//! tag), its channel is a sharded channel on that slot's node.

mod support;

use support::*;

/// On a Redis Cluster: fencing; a push through node B reaches a client on node A (200, in
/// order); 410 for no session; the session's keys on one shard; SIGKILL of A, pushes through
/// B then answer 202; the client resumes through the balancer on node C with every push once
/// and in order, and pushes through B reach it there (200); DELETE through B ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cluster_runs_on_a_redis_cluster() {
    let redis = RedisCluster::start();
    only_the_newest_generation_writes_on(&redis).await;

    let (mut a, a_url, aa) = node_process(&redis, "node-a", "30");
    let (_b, _, ba) = node_process(&redis, "node-b", "30");
    let (_c, c_url, ca) = node_process(&redis, "node-c", "30");
    subscribed(aa).await;
    subscribed(ca).await;
    // New connections go to A until the test points the balancer at C.
    let backends = Backends::new(vec![ws_addr(&a_url)]);
    let url = balancer_of(backends.clone(), &a_url).await;
    let (client, mut changes, cid) = resuming_client(&url, ba, "node-a").await;
    live(&redis, &cid).await;
    let session = redis.holders(&format!("asp:{{{cid}}}:s"));
    assert_eq!(session.len(), 1, "one shard holds the session");

    for i in 0..4 {
        let (status, body) = push(ba, &cid, &format!("p{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seq"], i + 1);
    }
    for i in 0..4 {
        assert_eq!(next_added(&mut changes).await, format!("p{i}"), "in order");
    }
    assert_eq!(
        redis.holders(&format!("asp:{{{cid}}}:o")),
        session,
        "the outbox is on the session's shard"
    );
    assert_eq!(push(ba, "no-such-connection", "x").await.0, 410);

    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    // Until Redis has seen A's connections close, a push may still answer 200 (to a dead
    // subscriber); every push is in the outbox either way.
    let mut pushed = 4;
    let id = cid.as_str();
    until("202 once the owner is gone", || {
        pushed += 1;
        let name = format!("p{}", pushed - 1);
        async move { push(ba, id, &name).await.0 == 202 }
    })
    .await;
    for _ in 0..2 {
        let (status, body) = push(ba, &cid, &format!("p{pushed}")).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["queued"], true);
        pushed += 1;
    }

    backends.set(vec![ws_addr(&c_url)]);
    added_once_in_order(&mut changes, 4..pushed).await;
    assert_eq!(conn_id(&client), cid, "the same session");
    let observer = observer(&redis).await;
    owner_is(&observer, &cid, "node-c").await;
    live(&redis, &cid).await;
    let (status, body) = push(ba, &cid, "last").await;
    assert_eq!(status, 200, "live on node C: {body}");
    assert_eq!(next_added(&mut changes).await, "last", "nothing twice");
    let m = admin(ca, "GET", "/metrics", b"").await.1;
    assert_eq!(m["resumes"], 1, "{m}");

    // DELETE through B drains the connection on C (its sharded channel's control message).
    let path = format!("/connections/{cid}?timeout_ms=0");
    assert_eq!(admin(ba, "DELETE", &path, b"").await.0, 204);
    within("closed by the owner", client.closed()).await;
    until("session ended", || async {
        push(ba, &cid, "late").await.0 == 410
    })
    .await;
}
