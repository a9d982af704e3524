//! Seed capture helper for `scripts/fuzz-seeds.py` (not a fuzz target).
//!
//! `capture client SOCKET SELECTOR`: runs the `client_stream` session
//! (`nbd_conform_fuzz::client_drive::drive`) against the NBD server at the Unix socket SOCKET
//! (in practice the script's recording proxy) and prints one line about how it went.
//!
//! `capture replay FILE...`: feeds `client_stream` seeds back through that target's harness and
//! prints how far each session got (a good seed reaches stage=done).
//!
//! `capture serve SOCKET IMAGE [standard|draft]`: serves IMAGE read-only as export "disk" with
//! the reference server (one dirty bitmap, b0) until killed, for captures of our own server.

use std::path::PathBuf;
use std::time::Duration;

use nbd_conform::client::{Endpoint, Target};
use nbd_conform::server::{BitmapSpec, Listen, ServeOptions, Server};
use nbd_conform::Dialect;
use nbd_conform_fuzz::client_drive::{self, Plan};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["client", socket, selector] => {
            let selector: u8 = selector.parse().expect("SELECTOR is a number 0..=255");
            let plan = Plan::from_selector(selector);
            let target = Target {
                endpoint: Endpoint::Unix(PathBuf::from(socket)),
                export: String::new(),
            };
            let out = rt.block_on(client_drive::drive(&target, &plan, Duration::from_secs(2)));
            client_drive::check_entries(&out);
            println!(
                "selector={selector} plan={plan:?} stage={} size={:?} entries={} violations={} error={:?}",
                out.stage,
                out.size,
                out.entries.len(),
                out.violations,
                out.error
            );
        }
        ["replay", ref files @ ..] => {
            // Feeds client_stream seeds back through the fuzz harness's own rig.
            drop(rt);
            for file in files {
                let data = std::fs::read(file).expect("cannot read the seed");
                match nbd_conform_fuzz::client_stream::replay(&data) {
                    Some(out) => {
                        println!(
                            "{file}: stage={} entries={} violations={} error={:?}",
                            out.stage,
                            out.entries.len(),
                            out.violations,
                            out.error
                        );
                        // The same invariants the fuzz target asserts, so a crash reproduces here.
                        nbd_conform_fuzz::client_drive::check_entries(&out);
                    }
                    None => println!("{file}: empty"),
                }
            }
        }
        ["serve", socket, image, ref rest @ ..] => {
            let dialect = match rest {
                [] | ["standard"] => Dialect::Standard,
                ["draft"] => Dialect::Draft,
                _ => usage(),
            };
            let options = ServeOptions {
                image: PathBuf::from(image),
                listen: Listen::Unix(PathBuf::from(socket)),
                export_name: "disk".into(),
                dialect,
                bitmaps: vec![BitmapSpec {
                    name: "b0".into(),
                    granularity: 65536,
                }],
                writable: false,
                faults: Vec::new(),
            };
            rt.block_on(async {
                let server = Server::bind(options)
                    .await
                    .expect("cannot start the server");
                server.run().await.expect("server failed");
            });
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: capture client SOCKET SELECTOR | capture replay FILE... | capture serve SOCKET IMAGE [standard|draft]"
    );
    std::process::exit(2);
}
