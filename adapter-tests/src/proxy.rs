//! A TCP proxy the test can cut: it forwards every connection to an upstream address (which
//! the test may change), and [`Proxy::cut`] closes both sockets of every connection it
//! carries, as a network failure would; [`Proxy::hold`] first stops forwarding what the
//! server sends, so that it is surely lost in the cut; [`Proxy::vanish`] drops only the
//! client's side and leaves the server's open and silent (a half-open connection);
//! [`Proxy::reset`] ends every connection with a TCP reset (RST, no FIN, no WebSocket
//! close); [`Proxy::freeze`] stops forwarding both ways on the connections carried so far
//! and leaves their sockets open (a silent link). Plain threads and `std::net`, so it serves
//! any runtime. Every blocking call ends when its sockets are cut or closed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// One connection: (client side, server side, vanished, frozen). Once vanished, its pumps
/// leave the server side open when they end; while frozen, they forward nothing.
type Carried = (TcpStream, TcpStream, Arc<AtomicBool>, Arc<Frozen>);

/// A connection's freeze: both pumps wait while it is set.
#[derive(Default)]
struct Frozen {
    on: Mutex<bool>,
    thaw: Condvar,
}

impl Frozen {
    fn set(&self, on: bool) {
        *self.on.lock().unwrap_or_else(|e| e.into_inner()) = on;
        self.thaw.notify_all();
    }

    fn wait(&self) {
        let mut on = self.on.lock().unwrap_or_else(|e| e.into_inner());
        while *on {
            on = self.thaw.wait(on).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct Inner {
    upstream: Mutex<SocketAddr>,
    /// (client side, server side) of every connection carried so far (closed ones are
    /// harmless to cut).
    sockets: Mutex<Vec<Carried>>,
    /// Server sides left open by `vanish`, closed when the proxy is dropped.
    zombies: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    stop: AtomicBool,
    /// While set, nothing is forwarded from the upstream (server) side.
    held: Mutex<bool>,
    release: Condvar,
}

/// A cuttable TCP proxy on `127.0.0.1:0`.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(Inner {
            upstream: Mutex::new(upstream),
            sockets: Mutex::new(Vec::new()),
            zombies: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            held: Mutex::new(false),
            release: Condvar::new(),
        });
        let inner2 = inner.clone();
        thread::spawn(move || {
            for down in listener.incoming() {
                if inner2.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(down) = down else { continue };
                let upstream = *inner2.upstream.lock().unwrap_or_else(|e| e.into_inner());
                let Ok(up) = TcpStream::connect(upstream) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                inner2.accepted.fetch_add(1, Ordering::AcqRel);
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let clones = (down.try_clone(), up.try_clone());
                let (Ok(down2), Ok(up2)) = clones else {
                    continue;
                };
                let vanished = Arc::new(AtomicBool::new(false));
                let frozen = Arc::new(Frozen::default());
                if let (Ok(d), Ok(u)) = (down.try_clone(), up.try_clone()) {
                    let mut socks = inner2.sockets.lock().unwrap_or_else(|e| e.into_inner());
                    socks.push((d, u, vanished.clone(), frozen.clone()));
                }
                let (i1, v1, f1) = (inner2.clone(), vanished.clone(), frozen.clone());
                thread::spawn(move || pump(down, up, v1, f1, None));
                thread::spawn(move || pump(up2, down2, vanished, frozen, Some(i1)));
            }
        });
        Proxy { addr, inner }
    }

    /// `ws://proxy-address{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connections accepted (and forwarded) so far.
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::Acquire)
    }

    /// Forwards new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .inner
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// Stops forwarding server → client (until the next [`cut`](Self::cut)): what the
    /// server sends from now on stays in socket buffers and is lost in the cut.
    pub fn hold(&self) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Every connection carried so far, no longer tracked by the proxy.
    fn take_carried(&self) -> Vec<Carried> {
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Closes both sockets of every connection carried so far: each end sees its
    /// connection drop; data still in flight is lost.
    pub fn cut(&self) {
        let socks = self.take_carried();
        for (down, up, _, frozen) in socks {
            let _ = down.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            frozen.set(false);
        }
        self.release();
    }

    /// Resets every connection carried so far: both ends get a TCP RST (SO_LINGER 0, then
    /// the last descriptor closes), with no FIN and no WebSocket close, as when a NAT or a
    /// middlebox drops the connection; data still in flight is lost.
    pub fn reset(&self) {
        let socks = self.take_carried();
        for (down, up, vanished, frozen) in socks {
            // The pumps end without shutting down (which would send FIN) and drop their
            // descriptors; SO_LINGER 0 makes the last close send RST.
            vanished.store(true, Ordering::Release);
            for s in [&down, &up] {
                let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
                // Wakes a pump blocked reading (Linux sends nothing for SHUT_RD).
                let _ = s.shutdown(Shutdown::Read);
            }
            frozen.set(false);
        }
        self.release();
    }

    /// Stops forwarding in both directions on every connection carried so far, leaving
    /// their sockets open: to both ends the link goes silent (until [`cut`](Self::cut) or
    /// [`reset`](Self::reset)). Later connections are forwarded normally.
    pub fn freeze(&self) {
        for (.., frozen) in self
            .inner
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            frozen.set(true);
        }
    }

    /// Drops the client side of every connection carried so far, and leaves the server
    /// side open without a word: the server does not learn that the client is gone.
    pub fn vanish(&self) {
        let socks = self.take_carried();
        let mut zombies = self.inner.zombies.lock().unwrap_or_else(|e| e.into_inner());
        for (down, up, vanished, frozen) in socks {
            vanished.store(true, Ordering::Release);
            let _ = down.shutdown(Shutdown::Both);
            frozen.set(false);
            zombies.push(up);
        }
    }

    fn release(&self) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.inner.release.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.cut();
        for z in self
            .inner
            .zombies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = z.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` → `to` until either side ends, then ends both directions (unless the
/// connection vanished: the server side then stays open). `hold`: server → client, which
/// waits while the proxy is held.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    vanished: Arc<AtomicBool>,
    frozen: Arc<Frozen>,
    hold: Option<Arc<Inner>>,
) {
    let mut buf = [0u8; 16 << 10];
    loop {
        frozen.wait();
        if let Some(inner) = &hold {
            let mut held = inner.held.lock().unwrap_or_else(|e| e.into_inner());
            while *held {
                held = inner.release.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // What was read while the link froze is forwarded only after it thaws.
                frozen.wait();
                if vanished.load(Ordering::Acquire) {
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if vanished.load(Ordering::Acquire) {
        return;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
