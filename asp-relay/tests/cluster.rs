//! Relay cluster on Redis (SPEC §15.6), with a real `redis-server` started here on a free
//! loopback port (`--save '' --appendonly no`) and real relays: in this process, and as
//! `asp-relay` processes where a node must die with SIGKILL.

mod support;

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use support::*;

/// A push through node B reaches a client on node A (200, in order); an unknown id is 410;
/// `GET` through B names A; the metrics say which node routed and which delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_any_node_reaches_the_connection() {
    let redis = RedisServer::start();
    let (a, _b, aa, ba) = two_nodes(&redis, Duration::from_secs(30)).await;
    let (client, mut changes, cid) = live_client(&redis, &a.url(), ba, "node-a").await;

    for i in 0..10 {
        let via = if i % 2 == 0 { ba } else { aa };
        let (status, body) = push(via, &cid, &format!("p{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seq"], i + 1);
        assert_eq!(body["delivered"], true);
    }
    for i in 0..10 {
        assert_eq!(next_added(&mut changes).await, format!("p{i}"), "in order");
    }
    let (status, _) = push(ba, "no-such-connection", "x").await;
    assert_eq!(status, 410);
    let (status, _) = admin(ba, "GET", "/connections/no-such-connection", b"").await;
    assert_eq!(status, 410);
    let (status, _) = admin(ba, "POST", &format!("/connections/{cid}/frames"), b"\x01").await;
    assert_eq!(status, 400, "a bad body is refused by the node that got it");

    // The counters are updated by the nodes' own tasks: wait until they have caught up with
    // what the client already saw, then check all of them.
    until("metrics caught up", || async {
        let ma = admin(aa, "GET", "/metrics", b"").await.1;
        let mb = admin(ba, "GET", "/metrics", b"").await.1;
        ma["pushes_delivered"] == 10 && mb["pushes_routed"] == 5
    })
    .await;
    let ma = admin(aa, "GET", "/metrics", b"").await.1;
    let mb = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(ma["node"], "node-a");
    assert_eq!(ma["connections"], 1);
    assert_eq!(ma["pushes_delivered"], 10);
    assert_eq!(ma["pushes_local"], 5);
    assert_eq!(mb["pushes_routed"], 5);
    assert_eq!(mb["connections"], 0);

    // DELETE through B drains the connection on A (GOAWAY).
    let (status, _) = admin(
        ba,
        "DELETE",
        &format!("/connections/{cid}?timeout_ms=0"),
        b"",
    )
    .await;
    assert_eq!(status, 204);
    within("closed by the owner", client.closed()).await;
    until("session ended", || async {
        push(ba, &cid, "late").await.0 == 410
    })
    .await;
}

/// The owner is killed with SIGKILL: its subscription vanishes with its Redis connection, so
/// pushes through another node answer 202 (queued in the outbox, in order) until the resume
/// window ends, then 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_queue_when_the_owner_dies_and_go_when_the_window_ends() {
    let redis = RedisServer::start();
    let (mut a, a_url, aa) = node_process(&redis, "node-a", "2");
    let (_b, _, ba) = node_process(&redis, "node-b", "2");
    subscribed(aa).await;
    let (client, mut changes, cid) = live_client(&redis, &a_url, ba, "node-a").await;
    assert_eq!(push(ba, &cid, "live").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "live");

    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    until("202 once the owner is gone", || async {
        push(ba, &cid, "probe").await.0 == 202
    })
    .await;
    let (status, body) = push(ba, &cid, "queued").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], true);
    let cluster = observer(&redis).await;
    let s = cluster.session(&cid).await.unwrap().expect("session kept");
    assert_eq!(s.node, "node-a");
    assert_eq!(s.seq, body["seq"].as_u64().unwrap());
    until("410 after the resume window", || async {
        push(ba, &cid, "late").await.0 == 410
    })
    .await;
    drop(client);
}

/// Two nodes claim one session: each claim is a newer generation, and only the newest may
/// write the state blob (fencing, SPEC §15.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_generation_writes() {
    only_the_newest_generation_writes_on(&RedisServer::start()).await;
}

/// Redis restarts (empty: no persistence). Meanwhile pushes answer 503 and the client's
/// socket stays up; afterwards the owner writes its session again and pushes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sockets_up_and_pushes_flow_again() {
    let mut redis = RedisServer::start();
    let (a, _b, aa, ba) = two_nodes(&redis, Duration::from_secs(30)).await;
    let (client, mut changes, cid) = live_client(&redis, &a.url(), ba, "node-a").await;
    assert_eq!(push(ba, &cid, "before").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "before");

    redis.kill();
    let (status, body) = push(ba, &cid, "during").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(a.connections(), 1, "the socket stays up");

    redis.spawn();
    owned_by(ba, &cid, "node-a").await;
    subscribed(aa).await;
    until("pushes flow again", || async {
        push(ba, &cid, "after").await.0 == 200
    })
    .await;
    assert_eq!(next_added(&mut changes).await, "after");
    assert!(client.session().is_some());
    assert_eq!(a.connections(), 1);
}

/// A client whose connection drops resumes on its node (SPEC §11); pushes taken through
/// another node meanwhile wait in the outbox and arrive after the resume: every one once,
/// in order, on the same connection id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_detached_arrive_after_the_resume() {
    let redis = RedisServer::start();
    let (a, _b, aa, ba) = two_nodes(&redis, Duration::from_secs(3)).await;
    let proxy = DropProxy::start(a.local_addr()).await;
    let (client, mut changes, cid) = resuming_client(&proxy.url(&a.url()), ba, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");

    proxy.drop_all();
    push_taken(ba, &cid, 1..6).await;
    added_once_in_order(&mut changes, 1..6).await;
    assert_eq!(conn_id(&client), cid, "the same session");
    assert_eq!(push(ba, &cid, "p6").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p6");
    let m = admin(aa, "GET", "/metrics", b"").await.1;
    assert_eq!(m["pushes_delivered"], 7, "{m}");
}

/// SIGKILL of the node holding a session: the client reconnects through the balancer to
/// another node, which resumes the session from its snapshot in Redis (SPEC §11.4, §15.6):
/// same connection id and state blob, the pushes queued meanwhile once and in order, and
/// the invocation the dead node was running ended with a retryable UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_node_after_sigkill() {
    let redis = RedisServer::start();
    let upstream = function(Default::default()).await;
    // `_b`, not `_`: node B lives until the test ends.
    let BalancedProcesses {
        mut a,
        b: _b,
        ba,
        url,
        ..
    } = balanced_processes(&redis, &upstream).await;
    let (client, mut changes, cid) = resuming_client(&url, ba, "node-a").await;
    // The state blob, written at the owner's generation (as a function's X-Asp-State is).
    let observer = observer(&redis).await;
    let gen = observer.session(&cid).await.unwrap().unwrap().gen;
    assert!(observer.write_state_at(&cid, gen, b"blob").await.unwrap());
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");

    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    push_taken(ba, &cid, 1..4).await;
    match within("the lost invocation's end", call.completion()).await {
        Err(asp_async::Error::Remote(e)) => {
            assert_eq!(e.code, asp_proto::ErrorCode::UNAVAILABLE, "{e:?}");
            assert!(e.retryable, "retryable");
        }
        other => panic!("expected a retryable ERROR, got {other:?}"),
    }
    added_once_in_order(&mut changes, 1..4).await;
    assert_eq!(conn_id(&client), cid, "the same session");
    owner_is(&observer, &cid, "node-b").await;
    live(&redis, &cid).await;
    let (status, info) = admin(ba, "GET", &format!("/connections/{cid}"), b"").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["state_bytes"], 4, "{info}");
    assert_eq!(push(ba, &cid, "p4").await.0, 200, "live on node B");
    assert_eq!(next_added(&mut changes).await, "p4");
    let m = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(m["resumes"], 1, "{m}");
    // The session goes on: a new invocation runs on node B.
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");
}

/// A node drained with SIGTERM (a rolling deploy): it stops accepting, lets the invocation
/// in flight finish, then moves the session to another node; nothing is lost — the
/// invocation's result arrives, and every push taken meanwhile arrives once, in order, on
/// the same connection id (SPEC §15.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_moves_its_sessions_without_loss() {
    if std::env::var_os("ASP_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
    }
    let redis = RedisServer::start();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let upstream = function(release.clone()).await;
    let BalancedProcesses {
        mut a,
        a_url,
        b: _b,
        ba,
        url,
    } = balanced_processes(&redis, &upstream).await;
    let (client, mut changes, cid) = resuming_client(&url, ba, "node-a").await;
    live(&redis, &cid).await;
    assert_eq!(push(ba, &cid, "p0").await.0, 200);
    assert_eq!(next_added(&mut changes).await, "p0");
    let mut call = client.invoke("slow", &serde_json::json!({})).unwrap();
    assert_eq!(first_chunk(&mut call).await, "first");

    let term = Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Node A stops accepting at once; until the invocation ends it still holds the session.
    until("node A stopped accepting", || async {
        tokio::net::TcpStream::connect(ws_addr(&a_url))
            .await
            .is_err()
    })
    .await;
    push_taken(ba, &cid, 1..3).await;
    release.notify_one();
    let mut text = String::new();
    while let Some(c) = within("the rest of the result", call.next()).await {
        text.push_str(&String::from_utf8_lossy(&c.data));
    }
    assert_eq!(text, "last");
    let done = within("the result", call.completion()).await;
    assert!(done.is_ok(), "{done:?}");
    // The move: the client resumes on node B.
    let observer = observer(&redis).await;
    owner_is(&observer, &cid, "node-b").await;
    push_taken(ba, &cid, 3..5).await;
    added_once_in_order(&mut changes, 1..5).await;
    assert_eq!(conn_id(&client), cid, "the same session");
    let exit = within("node A exits", async {
        tokio::task::spawn_blocking(move || a.0.wait().unwrap())
            .await
            .unwrap()
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    live(&redis, &cid).await;
    let m = admin(ba, "GET", "/metrics", b"").await.1;
    assert_eq!(m["resumes"], 1, "{m}");
    assert_eq!(push(ba, &cid, "p5").await.0, 200, "live on node B");
    assert_eq!(next_added(&mut changes).await, "p5");
}
