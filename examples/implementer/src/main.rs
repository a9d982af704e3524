//! `toy-nbd-server --socket PATH [--export NAME] IMAGE`: the server under test. It is the
//! reference server's code (what `nbd-conform serve` runs), but to tests/nbd.rs it is a
//! third-party program like any other, started from a `--spawn` template.

use std::path::PathBuf;
use std::process::ExitCode;

use nbd_conform::server::{negotiate, ClientLimits, Listen, ServeOptions, Server};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut socket, mut export, mut image) = (None, String::new(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = args.next().map(PathBuf::from),
            "--export" => export = args.next().unwrap_or_default(),
            _ => image = Some(PathBuf::from(arg)),
        }
    }
    let (Some(socket), Some(image)) = (socket, image) else {
        eprintln!("usage: toy-nbd-server --socket PATH [--export NAME] IMAGE");
        return ExitCode::from(2);
    };
    let options = ServeOptions {
        image,
        listen: Listen::Unix(socket),
        export_name: export,
        dialect: nbd_conform::Dialect::Standard,
        bitmaps: Vec::new(),
        writable: false,
        faults: Vec::new(),
        variants: Vec::new(),
        block_sizes: negotiate::BLOCK_SIZES,
        failing_status: false,
        client_limits: ClientLimits::default(),
    };
    let served = match Server::bind(options).await {
        Ok(server) => server.run().await,
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toy-nbd-server: {e}");
            ExitCode::FAILURE
        }
    }
}
