//! The Redis a relay cluster runs on (SPEC §15.6): one server (`redis://…`) or a Redis
//! Cluster (`redis+cluster://h1:p1,h2:p2`, with the `cluster` feature). The difference lives
//! here only: the rest of the cluster code is written once, over [`Redis`] (commands and
//! scripts) and [`Subscription`] (live delivery).
//!
//! On a Redis Cluster every key of one connection shares the hash tag `{cid}` (one slot, so
//! each Lua script runs on one shard), and the per-connection channel is a *sharded* channel
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis 7.0): a push is published on the shard that holds the
//! connection's keys instead of being broadcast over the cluster bus to every node.

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Cmd, RedisFuture, Value};

/// What `--redis` names.
#[derive(Clone)]
pub(crate) enum Target {
    /// One Redis server (`redis://`, `rediss://`, `redis+unix://`, …).
    Server(redis::Client),
    /// A Redis Cluster, reached through any of its nodes (the others are discovered).
    #[cfg(feature = "cluster")]
    Cluster {
        /// The nodes named in the URL, for the subscription client.
        seeds: Vec<String>,
        commands: Box<redis::cluster::ClusterClient>,
    },
}

/// The scheme that selects a Redis Cluster, `redis+cluster://` (or `rediss+cluster://`):
/// the plus form of redis-rs's own `redis+unix://`, with the seed nodes comma-separated in
/// the authority. `None` for any other URL.
fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    // `[user:password@]h1:p1,h2:p2[/db][?query]`: the credentials, path and query apply to
    // every seed node.
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
            .collect(),
    )
}

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, m)
}

impl Target {
    /// Parses `--redis`.
    pub(crate) fn parse(url: &str) -> io::Result<Target> {
        let Some(seeds) = cluster_seeds(url) else {
            return redis::Client::open(url)
                .map(Target::Server)
                .map_err(|e| invalid(format!("--redis {url}: {e}")));
        };
        if seeds.is_empty() {
            return Err(invalid(format!("--redis {url}: no cluster node named")));
        }
        #[cfg(feature = "cluster")]
        {
            cluster_builder(&seeds)
                .build()
                .map(|commands| Target::Cluster {
                    seeds,
                    commands: Box::new(commands),
                })
                .map_err(|e| invalid(format!("--redis {url}: {e}")))
        }
        #[cfg(not(feature = "cluster"))]
        {
            let _ = seeds;
            Err(invalid(format!(
                "--redis {url}: this asp-relay was built without Redis Cluster support \
                 (rebuild with `cargo install asp-relay --features cluster`), or name one \
                 server with redis://"
            )))
        }
    }

    /// The command connection, reconnecting by itself.
    pub(crate) async fn connect(&self) -> io::Result<Redis> {
        match self {
            Target::Server(client) => {
                // Short timeouts: while Redis is unreachable, pushes answer 503 at once
                // instead of hanging (SPEC §15.6), and the manager keeps reconnecting in the
                // background.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Redis::Server)
                    .map_err(io)
            }
            #[cfg(feature = "cluster")]
            Target::Cluster { commands, .. } => commands
                .get_async_connection()
                .await
                .map(Redis::Cluster)
                .map_err(io),
        }
    }

    /// A fresh subscription connection (live delivery), subscribed to nothing yet.
    pub(crate) async fn subscription(&self) -> redis::RedisResult<Subscription> {
        match self {
            Target::Server(client) => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(Subscription {
                    sink: Sink::Server(sink),
                    stream: Stream::Server(stream),
                })
            }
            #[cfg(feature = "cluster")]
            Target::Cluster { seeds, .. } => {
                // Sharded pub/sub on a Redis Cluster comes as RESP3 push messages; a bounded
                // channel carries them (a message lost to overflow is a gap in `seq`, filled
                // from the outbox: `Delivery::Lagged`).
                let (tx, rx) = tokio::sync::broadcast::channel(PUSH_BUFFER);
                let conn = cluster_builder(seeds)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok(Subscription {
                    sink: Sink::Cluster(conn),
                    stream: Stream::Cluster(rx),
                })
            }
        }
    }
}

/// A Redis Cluster client with short timeouts, as for one server: pushes answer 503 at once
/// while the cluster is unreachable (SPEC §15.6).
#[cfg(feature = "cluster")]
fn cluster_builder(seeds: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .retries(2)
}

/// How many live-delivery messages may wait for the subscriber on a Redis Cluster.
#[cfg(feature = "cluster")]
const PUSH_BUFFER: usize = 4096;

pub(crate) fn io(e: redis::RedisError) -> io::Error {
    io::Error::other(format!("redis: {e}"))
}

/// The command connection: one server's connection manager, or a Redis Cluster connection
/// that routes each command to the shard of its key.
#[derive(Clone)]
pub(crate) enum Redis {
    Server(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Server(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Redis::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Server(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Redis::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Server(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Redis::Cluster(c) => c.get_db(),
        }
    }
}

impl Redis {
    /// The publish command for a connection's channel: `SPUBLISH` (sharded, the channel's
    /// slot is the connection's) on a Redis Cluster, `PUBLISH` on one server.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Redis::Server(_) => "PUBLISH",
            #[cfg(feature = "cluster")]
            Redis::Cluster(_) => "SPUBLISH",
        }
    }

    /// How many clients are subscribed to `channel`: `PUBSUB NUMSUB`, or `PUBSUB
    /// SHARDNUMSUB` on a Redis Cluster (asked of every node and summed by redis-rs).
    pub(crate) async fn subscribers(&self, channel: &str) -> io::Result<u64> {
        let sub = match self {
            Redis::Server(_) => "NUMSUB",
            #[cfg(feature = "cluster")]
            Redis::Cluster(_) => "SHARDNUMSUB",
        };
        let counts: std::collections::HashMap<String, u64> = redis::cmd("PUBSUB")
            .arg(sub)
            .arg(channel)
            .query_async(&mut self.clone())
            .await
            .map_err(io)?;
        Ok(counts.get(channel).copied().unwrap_or(0))
    }
}

/// One live-delivery connection, split so that (un)subscribing and receiving can be awaited
/// in one `select!`.
pub(crate) struct Subscription {
    pub(crate) sink: Sink,
    pub(crate) stream: Stream,
}

/// The (un)subscribing half.
pub(crate) enum Sink {
    Server(redis::aio::PubSubSink),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Sink {
    pub(crate) async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Sink::Server(s) => s.subscribe(channel).await,
            #[cfg(feature = "cluster")]
            Sink::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub(crate) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Sink::Server(s) => s.unsubscribe(channel).await,
            #[cfg(feature = "cluster")]
            Sink::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

/// What the receiving half gives.
pub(crate) enum Delivery {
    /// A message on a subscribed channel.
    Message(redis::Msg),
    /// Messages were dropped (the bounded buffer overflowed): every connection held here
    /// catches up from its outbox.
    #[cfg(feature = "cluster")]
    Lagged,
    /// The subscription connection is gone: reconnect and subscribe again.
    Lost,
}

/// The receiving half.
pub(crate) enum Stream {
    Server(redis::aio::PubSubStream),
    #[cfg(feature = "cluster")]
    Cluster(tokio::sync::broadcast::Receiver<redis::PushInfo>),
}

impl Stream {
    pub(crate) async fn next(&mut self) -> Delivery {
        match self {
            Stream::Server(s) => s.next().await.map_or(Delivery::Lost, Delivery::Message),
            #[cfg(feature = "cluster")]
            Stream::Cluster(rx) => loop {
                use tokio::sync::broadcast::error::RecvError;
                match rx.recv().await {
                    // A node connection closed: redis-rs reconnects and subscribes again
                    // by itself, but messages may have been missed meanwhile; a fresh
                    // subscription runs the same continuity check as after a lost server.
                    Ok(p) if p.kind == redis::PushKind::Disconnection => return Delivery::Lost,
                    Ok(p) => {
                        if let Some(m) = redis::Msg::from_push_info(p) {
                            return Delivery::Message(m);
                        }
                        // (S)SUBSCRIBE confirmations and the like.
                    }
                    Err(RecvError::Lagged(_)) => return Delivery::Lagged,
                    Err(RecvError::Closed) => return Delivery::Lost,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_seeds;

    #[test]
    fn cluster_urls_name_every_seed_with_the_shared_parts() {
        assert_eq!(cluster_seeds("redis://h:1/"), None);
        assert_eq!(
            cluster_seeds("redis+cluster://h1:7000,h2:7001").unwrap(),
            ["redis://h1:7000", "redis://h2:7001"]
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://u:p@h1:7000,h2:7001/?protocol=resp3").unwrap(),
            [
                "rediss://u:p@h1:7000/?protocol=resp3",
                "rediss://u:p@h2:7001/?protocol=resp3"
            ]
        );
        assert!(cluster_seeds("redis+cluster://").unwrap().is_empty());
    }

    #[test]
    fn a_cluster_url_needs_the_feature() {
        let parsed = super::Target::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        #[cfg(feature = "cluster")]
        assert!(matches!(parsed, Ok(super::Target::Cluster { .. })));
        #[cfg(not(feature = "cluster"))]
        assert!(parsed
            .err()
            .is_some_and(|e| e.to_string().contains("--features cluster")));
        assert!(super::Target::parse("redis+cluster://").is_err());
        assert!(matches!(
            super::Target::parse("redis://127.0.0.1:6379/"),
            Ok(super::Target::Server(_))
        ));
    }
}
