//! The Sans-IO core over a plain blocking `std::net::TcpStream` (the byte-stream binding,
//! SPEC §2.2): no WebSocket, no async runtime. One loop drives both roles.
//! `cargo run -p asp-proto --example blocking_tcp`
use std::io::{ErrorKind::*, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use asp_proto::frame::{Metrics, RawValue, Status, Text, ToolDef, ToolOp};
use asp_proto::{Config, Connection, Event, Instant, ServerParams, StreamOptions};
use bytes::{Bytes, BytesMut};

/// Runs `conn` over `tcp` until it closes, calling `on_event` for every event.
fn drive(
    mut conn: Connection,
    mut tcp: TcpStream,
    mut on_event: impl FnMut(&mut Connection, Event),
) {
    // This loop is the IO side: it owns the clock (the crate's clippy.toml forbids it inside
    // the core).
    #[allow(clippy::disallowed_methods)]
    let epoch = StdInstant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let (mut out, mut buf) = (BytesMut::new(), [0u8; 16 * 1024]);
    loop {
        while conn.poll_transmit(&mut out) > 0 {
            if tcp.write_all(&out.split()).is_err() {
                conn.handle_transport_closed(now());
            }
        }
        while let Some(event) = conn.poll_event() {
            let closed = matches!(event, Event::Closed(_));
            on_event(&mut conn, event);
            if closed {
                return;
            }
        }
        if conn.wants_transmit() {
            continue; // an event handler queued frames: send them before blocking
        }
        // Block until input arrives or the core's next deadline.
        let wait = conn
            .poll_timeout()
            .map(|t| Duration::from_micros(t.as_micros().saturating_sub(now().as_micros())));
        tcp.set_read_timeout(wait.map(|d| d.max(Duration::from_millis(1))))
            .ok();
        match tcp.read(&mut buf) {
            Ok(0) => conn.handle_transport_closed(now()),
            Ok(n) => conn.handle_bytes(now(), Bytes::copy_from_slice(&buf[..n])),
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => conn.handle_timeout(now()),
            Err(_) => conn.handle_transport_closed(now()),
        }
    }
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (tcp, _) = listener.accept()?;
        let params = ServerParams::new("tcp-1");
        let mut conn = Connection::server(Config::default(), params, Instant::ZERO);
        let (name, description) = ("upper".into(), "upper-cases text".into());
        let (op, input_schema, annotations) = (ToolOp::Add, None, None);
        conn.add_tool(ToolDef {
            op,
            name,
            description,
            input_schema,
            annotations,
        })
        .ok();
        drive(conn, tcp, |conn, event| match event {
            Event::Invoked(inv) => {
                // The arguments are one MessagePack string: stream it back upper-cased, word by word.
                let args = inv.args.as_ref().map_or(&[][..], |a| &a.as_bytes()[..]);
                let text = rmp::decode::read_str_from_slice(args)
                    .map_or(String::new(), |(s, _)| s.to_uppercase());
                for word in text.split_inclusive(' ') {
                    conn.stream(
                        inv.id,
                        Bytes::copy_from_slice(word.as_bytes()),
                        StreamOptions::TEXT,
                    )
                    .ok();
                }
                let result = Some(RawValue::uint(text.len() as u64));
                conn.complete(inv.id, Status::Ok, result, Metrics::default())
                    .ok();
            }
            Event::Closed(reason) => println!("server: closed ({reason})"),
            _ => {}
        });
        Ok(())
    });

    let client = Connection::client(Config::default(), Instant::ZERO);
    drive(
        client,
        TcpStream::connect(addr)?,
        |conn, event| match event {
            Event::Connected(s) => {
                let tools: Vec<_> = conn.tools().map(|t| t.name.to_string()).collect();
                println!(
                    "client: connected to {} with tools {tools:?}",
                    s.connection_id
                );
                let args = Some(RawValue::string("sans-io over plain tcp"));
                conn.invoke(Text::from("upper"), args, Default::default())
                    .ok();
            }
            Event::Chunk(c) => println!("client: chunk {:?}", String::from_utf8_lossy(&c.data)),
            Event::InvocationEnded { outcome, .. } => {
                println!("client: ended {outcome:?}");
                conn.close(asp_proto::CloseReason::Local);
            }
            _ => {}
        },
    );
    server.join().expect("server thread")?;
    Ok(())
}
