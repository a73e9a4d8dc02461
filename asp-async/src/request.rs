//! The client's answer to server requests (SPEC §8): the handler trait the state layer
//! (`shared`) runs. Below `shared`, so it names nothing of the connection.

use std::future::Future;

use asp_proto::frame::{Reply, Request};

use crate::runtime::BoxFuture;

/// Answers server requests on the client side (SPEC §8).
pub trait RequestHandler: Send + Sync + 'static {
    /// Produces the REPLY for one request.
    fn answer(&self, req: Request) -> BoxFuture<'static, Reply>;
}

impl<F, Fut> RequestHandler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    fn answer(&self, req: Request) -> BoxFuture<'static, Reply> {
        Box::pin(self(req))
    }
}
