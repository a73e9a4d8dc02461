//! TLS on tokio: the connection type that is either plain TCP or rustls over TCP
//! (tokio-rustls), and the two handshakes the [`Runtime`](asp_async::Runtime) trait asks for,
//! as `asp-smol` has them for futures-io (both written once in `asp_async::adapter`).

asp_async::__tls_stream!(tokio, tokio::net::TcpStream, tokio_rustls);
