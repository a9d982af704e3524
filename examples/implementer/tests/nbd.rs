//! The nbd-conform cases against this crate's server, one trial per case:
//! `cargo test` runs them all, `cargo test -- --only bs.range` some, and
//! `cargo test -- --target nbd://HOST:PORT/EXPORT` (or `NBD_TARGET=…`) tests a running server
//! instead. The harness builds each fixture image and starts the server on it from the
//! template (`{socket}`, `{export}`, `{raw}` filled in per fixture).

use nbd_conform::harness::Harness;

fn main() {
    Harness::from_args()
        .spawn(concat!(
            env!("CARGO_BIN_EXE_toy-nbd-server"),
            " --socket {socket} --export {export} {raw}"
        ))
        .run()
}
