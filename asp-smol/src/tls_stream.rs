//! TLS on smol: the connection type that is either plain TCP or rustls over TCP
//! (futures-rustls), and the two handshakes the [`Runtime`](asp_async::Runtime) trait asks for,
//! as `asp-tokio` has them for tokio's IO traits (both written once in `asp_async::adapter`).

asp_async::__tls_stream!(futures, smol::net::TcpStream, futures_rustls);
