//! What every runtime adapter writes the same way, written once as macros: the connection
//! type that is plain TCP or rustls over TCP, its two handshakes, and the [`Runtime`]
//! methods that only hand a stream to a TLS or WebSocket library.
//!
//! Macros rather than generic code because the adapters' IO traits are foreign to each other
//! and to this crate (tokio's `AsyncRead` against `futures-io`'s, `tokio-rustls` against
//! `futures-rustls`): an adapter cannot implement them for a type defined here, and this
//! crate stays free of any runtime. The paths in the expansions (`tokio::…`,
//! `futures_lite::…`, the TLS and WebSocket crates named) resolve in the adapter's crate,
//! which depends on them anyway. Nothing here imports from the rest of the crate.
//!
//! [`Runtime`]: crate::Runtime

/// Defines, in the calling module, `pub enum Stream` (plain TCP, or TLS over it as a client
/// or a server) with the IO traits of the runtime's family, and the handshakes `accept` and
/// `connect` that [`Runtime::tls_accept`](crate::Runtime::tls_accept) and
/// [`Runtime::tls_connect`](crate::Runtime::tls_connect) run.
///
/// `tokio, TcpStream, tokio_rustls` or `futures, TcpStream, futures_rustls`: the IO family
/// (the caller depends on `tokio`, or on `futures_lite` for `futures-io`), the TCP stream
/// type (it has `peek`), and the rustls adapter crate of that family.
#[doc(hidden)]
#[macro_export]
macro_rules! __tls_stream {
    (tokio, $tcp:ty, $tls:ident) => {
        $crate::__tls_stream!(@common $tcp, $tls, [tokio::io::AsyncWriteExt], shutdown);

        impl tokio::io::AsyncRead for Stream {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                $crate::__tls_each!(self, s => s.poll_read(cx, buf))
            }
        }

        impl tokio::io::AsyncWrite for Stream {
            $crate::__tls_stream!(@write);
            fn is_write_vectored(&self) -> bool {
                match self {
                    Stream::Plain(s) => s.is_write_vectored(),
                    Stream::Client(s) => s.is_write_vectored(),
                    Stream::Server(s) => s.is_write_vectored(),
                }
            }
            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                $crate::__tls_each!(self, s => s.poll_shutdown(cx))
            }
        }
    };
    (futures, $tcp:ty, $tls:ident) => {
        $crate::__tls_stream!(@common $tcp, $tls, [futures_lite::AsyncWriteExt], close);

        impl futures_lite::AsyncRead for Stream {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut [u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                $crate::__tls_each!(self, s => s.poll_read(cx, buf))
            }
        }

        impl futures_lite::AsyncWrite for Stream {
            $crate::__tls_stream!(@write);
            fn poll_close(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                $crate::__tls_each!(self, s => s.poll_close(cx))
            }
        }
    };
    // The `AsyncWrite` methods both IO families spell alike.
    (@write) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            $crate::__tls_each!(self, s => s.poll_write(cx, buf))
        }
        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            $crate::__tls_each!(self, s => s.poll_write_vectored(cx, bufs))
        }
        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            $crate::__tls_each!(self, s => s.poll_flush(cx))
        }
    };
    (@common $tcp:ty, $tls:ident, [$($ext:tt)*], $close:ident) => {
        /// A connection: plain TCP (`ws://`), or TLS over TCP as a client (`wss://`) or
        /// server.
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum Stream {
            /// Plain TCP.
            Plain($tcp),
            /// The client side of TLS.
            Client(Box<$tls::client::TlsStream<$tcp>>),
            /// The server side of TLS.
            Server(Box<$tls::server::TlsStream<$tcp>>),
        }

        impl Stream {
            /// The TCP connection underneath.
            pub fn tcp(&self) -> &$tcp {
                match self {
                    Stream::Plain(s) => s,
                    Stream::Client(s) => s.get_ref().0,
                    Stream::Server(s) => s.get_ref().0,
                }
            }

            /// Whether TLS runs on this connection.
            pub fn is_tls(&self) -> bool {
                !matches!(self, Stream::Plain(_))
            }
        }

        /// The server handshake: a client whose first byte is no TLS record gets the
        /// plain-HTTP 400 of [`asp_async::tls::plaintext_to_tls_response`] instead of
        /// silence.
        pub(crate) fn accept(
            tcp: Stream,
            config: ::std::sync::Arc<$crate::rustls::ServerConfig>,
        ) -> $crate::BoxFuture<'static, ::std::io::Result<Stream>> {
            Box::pin(async move {
                use $($ext)* as _;
                let Stream::Plain(mut tcp) = tcp else {
                    return Err(::std::io::Error::other(
                        "TLS is already running on this connection",
                    ));
                };
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await? == 0 {
                    return Err(::std::io::ErrorKind::UnexpectedEof.into());
                }
                if !$crate::tls::is_tls_handshake(first[0]) {
                    let _ = tcp
                        .write_all(&$crate::tls::plaintext_to_tls_response())
                        .await;
                    let _ = tcp.$close().await;
                    return Err(::std::io::Error::new(
                        ::std::io::ErrorKind::InvalidData,
                        "plaintext request on a TLS port",
                    ));
                }
                let tls = $tls::TlsAcceptor::from(config).accept(tcp).await?;
                Ok(Stream::Server(Box::new(tls)))
            })
        }

        /// The client handshake to `name`.
        pub(crate) fn connect(
            tcp: Stream,
            name: $crate::rustls::pki_types::ServerName<'static>,
            config: ::std::sync::Arc<$crate::rustls::ClientConfig>,
        ) -> $crate::BoxFuture<'static, ::std::io::Result<Stream>> {
            Box::pin(async move {
                let Stream::Plain(tcp) = tcp else {
                    return Err(::std::io::Error::other(
                        "TLS is already running on this connection",
                    ));
                };
                let tls = $tls::TlsConnector::from(config).connect(name, tcp).await?;
                Ok(Stream::Client(Box::new(tls)))
            })
        }
    };
}

/// Runs `$e` with `$s` bound to the pinned stream under a [`__tls_stream`]'s `Stream`,
/// whichever it is.
#[doc(hidden)]
#[macro_export]
macro_rules! __tls_each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = ::std::pin::Pin::new($s);
                $e
            }
            Stream::Client($s) => {
                let $s = ::std::pin::Pin::new(&mut **$s);
                $e
            }
            Stream::Server($s) => {
                let $s = ::std::pin::Pin::new(&mut **$s);
                $e
            }
        }
    };
}

/// Expands to the [`Runtime`](crate::Runtime) methods `upgrade` and `handshake`, which only
/// hand the stream to the WebSocket crate named (`tokio_tungstenite`, `async_tungstenite`:
/// both have `accept_hdr_async_with_config` and `client_async_with_config`). Used inside
/// `impl Runtime for …`, whose `Tcp` the crate's `WebSocketStream` runs over.
#[doc(hidden)]
#[macro_export]
macro_rules! __ws_handshakes {
    ($ws:ident) => {
        fn upgrade(
            &self,
            tcp: Self::Tcp,
            check: $crate::UpgradeCheck,
            config: $crate::WsConfig,
        ) -> $crate::BoxFuture<'static, Result<Self::Ws, $crate::tungstenite::Error>> {
            Box::pin($ws::accept_hdr_async_with_config(tcp, check, Some(config)))
        }

        fn handshake(
            &self,
            request: $crate::tungstenite::handshake::client::Request,
            tcp: Self::Tcp,
            config: $crate::WsConfig,
        ) -> $crate::BoxFuture<
            'static,
            Result<
                (Self::Ws, $crate::tungstenite::handshake::client::Response),
                $crate::tungstenite::Error,
            >,
        > {
            Box::pin($ws::client_async_with_config(request, tcp, Some(config)))
        }
    };
}

/// Expands to the [`Runtime`](crate::Runtime) methods `tls_accept` and `tls_connect`, which
/// run the handshakes of the module `$m` that [`__tls_stream`] filled in.
#[doc(hidden)]
#[macro_export]
macro_rules! __tls_handshakes {
    ($m:ident) => {
        fn tls_accept(
            &self,
            tcp: Self::Tcp,
            config: ::std::sync::Arc<$crate::rustls::ServerConfig>,
        ) -> $crate::BoxFuture<'static, ::std::io::Result<Self::Tcp>> {
            $m::accept(tcp, config)
        }

        fn tls_connect(
            &self,
            tcp: Self::Tcp,
            name: $crate::rustls::pki_types::ServerName<'static>,
            config: ::std::sync::Arc<$crate::rustls::ClientConfig>,
        ) -> $crate::BoxFuture<'static, ::std::io::Result<Self::Tcp>> {
            $m::connect(tcp, name, config)
        }
    };
}

/// Expands to the [`Runtime`](crate::Runtime) methods `spawn`, `now` and `new_timer`, handed
/// to the runtime in the field named: for a runtime that replaces only the sockets of another
/// (an in-memory pipe over `asp_tokio::Tokio`, in benchmarks and tests), so that its tasks
/// and its clock are the other runtime's, written once.
#[doc(hidden)]
#[macro_export]
macro_rules! __tasks_and_time_of {
    ($field:ident) => {
        fn spawn(&self, fut: $crate::BoxFuture<'static, ()>) {
            $crate::Runtime::spawn(&self.$field, fut)
        }

        fn now(&self) -> ::std::time::Instant {
            $crate::Runtime::now(&self.$field)
        }

        fn new_timer(
            &self,
            deadline: ::std::time::Instant,
        ) -> ::std::pin::Pin<::std::boxed::Box<dyn $crate::AsyncTimer>> {
            $crate::Runtime::new_timer(&self.$field, deadline)
        }
    };
}
