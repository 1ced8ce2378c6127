//! The smallest useful port forwarder on the builder API: every connection to `LISTEN` is
//! relayed to `UPSTREAM` (an `ip:port` or a `host:port`, resolved per connection), kernel to
//! kernel with splice(2).
//!
//! ```text
//! cargo run --example forward -- 127.0.0.1:8080 example.com:80
//! ```
//!
//! It prints `listening on ADDR` once bound (with the port the kernel chose for port 0) and runs
//! until killed. A real program would also stop it with [`spliceway::RelayHandle::shutdown`]
//! on a signal (the `spliceway` binary does), and read the counters with
//! [`spliceway::RelayHandle::snapshot`].

use spliceway::{Relay, Route, UpstreamAddr, parse_listen_addr};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: forward LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let route =
        Route::new("forward", UpstreamAddr::parse(&upstream)?).listen(parse_listen_addr(&listen)?);
    // build() checks the route, resolves the upstream once (a typo fails here) and binds.
    let relay = Relay::builder().route(route).build()?;
    for (_, addr) in relay.local_addrs() {
        println!("listening on {addr}");
    }
    relay.run()?; // blocks this thread; the relay has one worker (builder().threads(n) for more)
    Ok(())
}
