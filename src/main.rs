//! The `nbd-conform` command line: `run` (the suite), `list` (cases and clauses), `map` (a
//! server's raw block-status stream) and `serve` (the reference server).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use nbd_conform::client::{ClientError, Session, SessionOptions, Target};
use nbd_conform::map::{map, MapEntry, MapError, MapOptions};
use nbd_conform::server::{
    BitmapSpec, ClientLimits, Fault, Listen, ServeError, ServeOptions, Server, Variant,
};
use nbd_conform::wire::consts::{context, draft};
use nbd_conform::wire::draft::DraftQuery;
use nbd_conform::Dialect;

use nbd_conform::report::{exit, KnownFailingList, Transcripts, Verdict};

mod cli;

#[derive(Parser)]
#[command(
    name = "nbd-conform",
    version,
    about = "Conformance and interop suite for NBD block-status queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a server's raw, uncoalesced block-status descriptors (what `nbdinfo --map` merges).
    Map(MapArgs),
    /// Run the reference server on a raw image (loopback and read-only by default).
    Serve(ServeArgs),
    /// Run the conformance cases against servers and write reports (exit codes below).
    #[command(after_help = cli::help::run_after_help())]
    Run(RunArgs),
    /// List the cases (or, with --clauses, the clause registry).
    List(ListArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DialectChoice {
    Standard,
    Draft,
    /// Both: every dialect the server is run in.
    Auto,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServerChoice {
    Reference,
    QemuNbd,
    Nbdkit,
    NbdServer,
    All,
}

#[derive(Args)]
struct RunArgs {
    /// A server someone else runs: host:port, nbd://HOST[:PORT]/EXPORT or
    /// nbd+unix:///EXPORT?socket=PATH (repeatable). Without it, local servers are launched.
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
    /// Servers to launch here, per fixture (repeatable; default: every installed one, unless
    /// --spawn is given).
    #[arg(long = "server", value_enum, conflicts_with = "targets")]
    servers: Vec<ServerChoice>,
    /// Launch any server per fixture from a command template (repeatable), e.g.
    /// 'nbdkit -f -r -U {socket} file {raw}'. Placeholders: {raw} {qcow2} (the fixture's
    /// images), {socket} or {port} (where to listen: a Unix socket path, or a free port on
    /// 127.0.0.1), {export} (the export name cases ask for), {dir} (a private temp dir). Run
    /// directly, without a shell; the server must stay in the foreground. Fixture-truth checks
    /// apply; snapshots are not compared.
    #[arg(long = "spawn", value_name = "TEMPLATE", conflicts_with = "targets")]
    spawns: Vec<String>,
    /// Run qemu-nbd, nbdkit and nbd-server in containers of IMAGE instead of as local
    /// processes (no network; the socket and the fixture are bind-mounted). Build the default
    /// image with docker/build-image.sh.
    #[arg(
        long = "in-container",
        value_name = "IMAGE",
        num_args = 0..=1,
        default_missing_value = nbd_conform::launch::DEFAULT_IMAGE,
        conflicts_with = "targets"
    )]
    in_container: Option<String>,
    /// Export name on --target servers (overrides the URI's).
    #[arg(long)]
    export: Option<String>,
    /// Which cases to run: today's protocol, the 2016 draft, or both (default: standard for
    /// --target, both for local servers that speak both).
    #[arg(long, value_enum)]
    dialect: Option<DialectChoice>,
    /// Run only cases whose id starts with PREFIX (repeatable).
    #[arg(long, value_name = "PREFIX")]
    only: Vec<String>,
    /// Skip cases whose id starts with PREFIX (repeatable).
    #[arg(long, value_name = "PREFIX")]
    skip: Vec<String>,
    /// Treat SHOULD violations (warn) as non-conformance.
    #[arg(long)]
    strict: bool,
    /// Seconds to wait for each message from the server, and (plus one second) for the whole
    /// reply to one request or the whole answer to one option, however many messages it takes
    /// (a slow but complete reply is correct; one that never completes fails BS-COMPLETE-1,
    /// or HS-OPTREP-1 for an option, after this long). A case as a whole has 120 s.
    #[arg(long, value_parser = nbd_conform::engine::run::parse_seconds, default_value = "30")]
    timeout: Duration,
    /// Seconds to wait to connect and for the greeting (an unreachable target is reported
    /// after this long).
    #[arg(long, value_parser = nbd_conform::engine::run::parse_seconds, default_value = "5")]
    connect_timeout: Duration,
    /// Bytes each case reads back of the ranges a server calls zero (K/M/G suffixes); what
    /// the budget leaves unread is reported as not checked.
    #[arg(long, value_parser = nbd_conform::size::parse, default_value = "256M")]
    read_back_budget: u64,
    /// A dirty bitmap the --target or --spawn server exports of its own (repeatable, in
    /// order: the first stands in for the fixture's first bitmap, bm0, the second for bm1).
    /// Cases judged by what the fixture's bitmaps recorded grade unsupported with --spawn;
    /// a --target has no fixture truth anyway. Default for --target: the bitmaps
    /// LIST_META_CONTEXT shows; for --spawn: the fixture's names.
    #[arg(long = "bitmap", value_name = "NAME")]
    bitmaps: Vec<String>,
    /// The --target's export may be written: run the cases that WRITE, WRITE_ZEROES and TRIM
    /// (they run after the others, one at a time; what they write stays there). Without it
    /// they grade unsupported. Servers launched here always write on a private copy.
    #[arg(long, requires = "targets")]
    writable: bool,
    /// Cases run side by side (most of a slow or hung server's time is waiting; a target that
    /// serves one client at a time gets them one by one anyway).
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Directory of case files (default: $NBD_CONFORM_CASES, else the cases built in).
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Write the Markdown report here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the JSON report here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// A known-failing list (repeatable), lines `CASE-GLOB@SERVER-GLOB[=VERSION-GLOB]  reason`:
    /// the failing cases it names are reported as known failures, not failures; a line whose
    /// cases now pass is stale and fails the run (README "Known failures").
    #[arg(
        long = "known-failing",
        value_name = "FILE",
        env = "NBD_CONFORM_KNOWN_FAILING"
    )]
    known_failing: Vec<PathBuf>,
    /// A known-flaky list (repeatable), lines as in --known-failing: failures that come and go
    /// from run to run (a race in the server); acknowledged the same way, never stale.
    #[arg(
        long = "known-flaky",
        value_name = "FILE",
        env = "NBD_CONFORM_KNOWN_FLAKY"
    )]
    known_flaky: Vec<PathBuf>,
    /// Which cases the JSON report carries transcripts and descriptor streams for: failing
    /// (fail, warn, error), all, or none.
    #[arg(long, value_enum, default_value_t = Transcripts::Failing)]
    json_transcripts: Transcripts,
}

#[derive(Args)]
struct ListArgs {
    /// List the clause registry instead of the cases.
    #[arg(long)]
    clauses: bool,
    /// Show, for every clause, the cases that name and evaluate it, the code that reports it
    /// and the faults or scripted peers that prove it fires, with totals (docs/coverage.md).
    #[arg(long, conflicts_with = "clauses")]
    coverage: bool,
    /// Directory of case files (default: $NBD_CONFORM_CASES, else the cases built in).
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
}

#[derive(Args)]
struct MapArgs {
    /// The server: host:port, nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH.
    target: String,
    /// Metadata context to map (repeatable). Standard default: base:allocation. Draft dialect:
    /// draft:allocated (selector 0) or draft:dirty (selector 1).
    #[arg(long = "context", value_name = "NAME")]
    contexts: Vec<String>,
    /// Set NBD_CMD_FLAG_REQ_ONE: one descriptor per context per request.
    #[arg(long)]
    req_one: bool,
    /// Negotiate extended headers (64-bit requests, BLOCK_STATUS_EXT replies).
    #[arg(long)]
    extended: bool,
    /// Speak today's protocol or the 2016 GET_LBA_STATUS draft.
    #[arg(long, value_enum, default_value_t = Dialect::Standard)]
    dialect: Dialect,
    /// First byte to map (accepts K, M, G, T suffixes).
    #[arg(long, default_value = "0", value_parser = nbd_conform::size::parse)]
    offset: u64,
    /// Bytes to map (default: to the end of the export).
    #[arg(long, value_parser = nbd_conform::size::parse)]
    length: Option<u64>,
    /// One JSON object per descriptor per line.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each message from the server; a whole reply (however many chunks)
    /// or option answer gets one second more. The walk as a whole has --deadline.
    #[arg(long, value_parser = nbd_conform::engine::run::parse_seconds, default_value = "10")]
    timeout: Duration,
    /// Seconds the whole walk may take before it ends with an error (a server that answers
    /// every request, slowly and a little at a time, cannot keep it going forever).
    #[arg(long, value_parser = nbd_conform::engine::run::parse_seconds, default_value = "3600")]
    deadline: Duration,
    /// Requests in flight at once (one per window).
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Bytes per request window. 256M with 8 in flight was the fastest of 64M-1G against
    /// nbdkit (sparse-random, file) and qemu-nbd here (benches/map-vs-nbdinfo.sh).
    #[arg(long, default_value = "256M", value_parser = parse_window)]
    window: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// Raw image file to serve (not needed for `--fault list`).
    image: Option<PathBuf>,
    /// TCP address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:10809", conflicts_with = "socket")]
    listen: std::net::SocketAddr,
    /// Listen on a Unix socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Export name (the empty name always reaches the export too).
    #[arg(long, default_value = "")]
    export: String,
    /// Serve today's block status or the 2016 GET_LBA_STATUS draft.
    #[arg(long, value_enum, default_value_t = Dialect::Standard)]
    dialect: Dialect,
    /// Export a dirty bitmap qemu:dirty-bitmap:NAME tracking writes since start (repeatable).
    #[arg(long = "bitmap", value_name = "NAME[:GRANULARITY]")]
    bitmaps: Vec<BitmapSpec>,
    /// Accept writes (the export is read-only otherwise).
    #[arg(long)]
    writable: bool,
    /// Break one clause on purpose, to test a client or this suite (repeatable; `--fault list`
    /// prints every fault with its dialect and clause).
    #[arg(long = "fault", value_name = "NAME")]
    faults: Vec<String>,
    /// Take one unusual choice the spec allows (repeatable; `--variant list` prints every
    /// variant with the clause that allows it): a conformant client or suite must accept it.
    #[arg(long = "variant", value_name = "NAME")]
    variants: Vec<String>,
    /// Advertise (and keep) this minimum block size: a power of two up to 65536. Unaligned
    /// requests get EINVAL; descriptor boundaries fall on its multiples; the export is cut
    /// to whole blocks.
    #[arg(long, value_name = "BYTES", value_parser = parse_u32_size)]
    min_block: Option<u32>,
    /// Advertise this maximum payload: at least the preferred block size, at most 2^25. Status
    /// chunks keep their descriptor lists within it; longer READs get EINVAL.
    #[arg(long, value_name = "BYTES", value_parser = parse_u32_size)]
    max_payload: Option<u32>,
    /// Fail every block status as if the backend had: an EIO ERROR_OFFSET chunk whose offset
    /// lies inside the request (what the cases under bs/backend/ need a server to do).
    #[arg(long)]
    fail_block_status: bool,
    /// Connections open at once. At the cap a new client takes the place of the negotiating
    /// client silent longest, or waits until a connection closes.
    #[arg(long, value_name = "N", default_value_t = ClientLimits::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_connections)]
    max_connections: usize,
    /// Seconds a client may take from connecting to the end of negotiation before it is closed.
    #[arg(long, value_name = "SECS", value_parser = nbd_conform::engine::run::parse_seconds,
          default_value = "10")]
    handshake_timeout: Duration,
    /// Seconds a client in transmission may take to send its next request (or a request's
    /// payload, or to take a reply) before it is closed [default: never, as the spec asks].
    #[arg(long, value_name = "SECS", value_parser = nbd_conform::engine::run::parse_seconds)]
    idle_timeout: Option<Duration>,
    /// Bytes of request payloads and READ replies held in memory, all clients together; a
    /// client over it waits (K/M/G suffixes).
    #[arg(long, value_name = "BYTES", default_value = "128M", value_parser = nbd_conform::size::parse)]
    max_buffered: u64,
    /// IMAGE may be a block device (refused without this, so that a slip of the path never
    /// exports a disk).
    #[arg(long)]
    block_device: bool,
}

/// A connection cap: at least one.
fn parse_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("a server that takes no connection serves nothing; give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of connections")),
    }
}

/// A byte count that fits 32 bits (`4K`, `65536`).
fn parse_u32_size(s: &str) -> Result<u32, String> {
    let n = nbd_conform::size::parse(s)?;
    u32::try_from(n).map_err(|_| format!("{n} does not fit 32 bits"))
}

/// A `map` window: a size of at least one byte (a window of 0 would walk nothing).
fn parse_window(s: &str) -> Result<u64, String> {
    match nbd_conform::size::parse(s)? {
        0 => Err("a window of 0 bytes maps nothing; give at least 1".into()),
        n => Ok(n),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `map` is one connection whose replies are parsed and printed in order: one thread does
    // it without handing wake-ups across threads. The others run many cases or clients at once.
    let runtime = match &cli.command {
        Command::Map(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nbd-conform: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match cli.command {
        Command::Map(args) => runtime.block_on(run_map(args)),
        Command::Serve(args) => runtime.block_on(run_serve(args)),
        Command::Run(args) => {
            let code = runtime.block_on(run_cases(args));
            // Also after an interrupt: launches in flight, pooled servers, containers by label,
            // fixture builds that will never finish.
            nbd_conform::launch::shutdown();
            nbd_conform::fixtures::remove_unfinished_builds();
            // Not waiting for a fixture build's blocking thread: its dir is gone already.
            runtime.shutdown_background();
            code
        }
        Command::List(args) => list(args),
    }
}

async fn run_map(args: MapArgs) -> ExitCode {
    let target: Target = match args.target.parse() {
        Ok(t) => t,
        Err(e) => return usage(e),
    };

    let mut options = MapOptions {
        offset: args.offset,
        length: args.length,
        req_one: args.req_one,
        depth: args.depth,
        window: args.window,
        deadline: Some(args.deadline),
        ..MapOptions::default()
    };
    let contexts = match args.dialect {
        Dialect::Standard if args.contexts.is_empty() => vec![context::BASE_ALLOCATION.to_owned()],
        Dialect::Standard => args.contexts.clone(),
        Dialect::Draft => {
            if args.extended || args.req_one {
                return usage("--extended and --req-one do not exist in the draft dialect");
            }
            let names = if args.contexts.is_empty() {
                vec![draft::CONTEXT_ALLOCATED.to_owned()]
            } else {
                args.contexts.clone()
            };
            let mut queries = Vec::new();
            for n in &names {
                queries.push(match n.as_str() {
                    draft::CONTEXT_ALLOCATED => DraftQuery::Allocated,
                    draft::CONTEXT_DIRTY => DraftQuery::Dirty,
                    other => {
                        return usage(format!(
                            "{other:?}: the draft dialect knows draft:allocated and draft:dirty"
                        ))
                    }
                });
            }
            options.draft_queries = queries;
            Vec::new()
        }
    };
    let session_options = SessionOptions {
        timeout: args.timeout,
        structured: true,
        extended: args.extended,
        contexts,
        dialect: args.dialect,
    };
    let mut session = match Session::open(&target, &session_options).await {
        Ok(s) => s,
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("nbd-conform map: {e}");
            return ExitCode::from(exit::COULD_NOT_TEST);
        }
        Err(e) => {
            eprintln!("nbd-conform map: {target}: {e}");
            return ExitCode::from(exit::COULD_NOT_TEST);
        }
    };
    if args.dialect == Dialect::Draft && !session.negotiated.advertises_draft_status() {
        eprintln!("nbd-conform map: {target}: the server does not set transmission flag bit 7 (NBD_FLAG_SEND_GET_LBA_STATUS); it does not speak the draft");
        return ExitCode::from(exit::COULD_NOT_TEST);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let json = args.json;
    let result = map(&mut session, &options, |e: &MapEntry| {
        if json {
            // `From` keeps an I/O error's kind (a closed pipe stays BrokenPipe, a quiet end).
            serde_json::to_writer(&mut out, e).map_err(std::io::Error::from)?;
            writeln!(out)
        } else {
            writeln!(
                out,
                "{:<28} {:>16} {:>14} {:>6}  {}",
                e.context, e.offset, e.length, e.flags, e.state
            )
        }
    })
    .await;
    let flushed = out.flush();
    // What the server broke on the way that did not stop the walk (bounded at the source).
    for v in &session.violations {
        eprintln!("nbd-conform map: {target}: the server broke {v}");
    }
    session.disconnect().await;
    match (result, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(MapError::Client(ClientError::Io(e))), _) | (Ok(()), Err(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        (Err(e @ MapError::Range { .. }), _) => usage(e),
        (Err(e), _) => {
            eprintln!("nbd-conform map: {target}: {e}");
            ExitCode::from(exit::FAILED)
        }
        (Ok(()), Err(e)) => {
            eprintln!("nbd-conform map: writing output: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

async fn run_serve(args: ServeArgs) -> ExitCode {
    if args.faults.iter().any(|f| f == "list") {
        return list_faults();
    }
    if args.variants.iter().any(|v| v == "list") {
        return print_or_fail(&Variant::table());
    }
    let variants = match args
        .variants
        .iter()
        .map(|v| v.parse::<Variant>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => v,
        Err(e) => return usage(format!("--variant: {e} (or `list`)")),
    };
    let faults = match args
        .faults
        .iter()
        .map(|f| f.parse::<Fault>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(f) => f,
        Err(e) => return usage(format!("--fault: {e} (or `list`)")),
    };
    let Some(image) = args.image else {
        return usage("serve: an IMAGE to serve is required");
    };
    if !args.block_device && is_block_device(&image) {
        return usage(format!(
            "serve: image {}: is a block device (pass --block-device to serve one)",
            image.display()
        ));
    }
    let listen = match args.socket {
        Some(path) => Listen::Unix(path),
        None => Listen::Tcp(args.listen),
    };
    for fault in &faults {
        eprintln!(
            "nbd-conform serve: injecting fault {fault}: breaks {} ({})",
            fault.clause(),
            fault.description()
        );
        if !fault.dialect().dialects().contains(&args.dialect) {
            eprintln!(
                "nbd-conform serve: note: {fault} is meant for the {} dialect and may do nothing here",
                fault.dialect().as_str()
            );
        }
    }
    let block_sizes =
        match nbd_conform::server::limits::block_sizes(args.min_block, args.max_payload) {
            Ok(b) => b,
            Err(e) => return usage(format!("serve: {e}")),
        };
    let options = ServeOptions {
        block_sizes,
        image,
        listen,
        export_name: args.export,
        dialect: args.dialect,
        bitmaps: args.bitmaps,
        writable: args.writable,
        faults,
        variants,
        failing_status: args.fail_block_status,
        client_limits: ClientLimits {
            max_connections: args.max_connections,
            handshake_timeout: args.handshake_timeout,
            idle_timeout: args.idle_timeout,
            max_buffered: usize::try_from(args.max_buffered).unwrap_or(usize::MAX),
        },
    };
    // SIGINT, SIGTERM and SIGHUP (a closed terminal) all end the server the same way; watched
    // before the socket exists, so that no signal can leave it behind.
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let watch = |name: &str, kind: SignalKind| -> Result<Signal, ExitCode> {
        signal(kind).map_err(|e| {
            eprintln!("nbd-conform serve: cannot watch {name}: {e}");
            ExitCode::from(exit::FAILED)
        })
    };
    let (mut interrupt, mut terminate, mut hangup) = match (
        watch("SIGINT", SignalKind::interrupt()),
        watch("SIGTERM", SignalKind::terminate()),
        watch("SIGHUP", SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return code,
    };
    let server = match Server::bind(options).await {
        Ok(s) => s,
        // What the user gave cannot be served: bad input, before anything listens.
        Err(
            e @ (ServeError::Image { .. } | ServeError::Bitmap(_) | ServeError::ExportName { .. }),
        ) => {
            return usage(format!("serve: {e}"));
        }
        Err(e) => {
            eprintln!("nbd-conform serve: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    eprintln!("nbd-conform serve: listening on {}", server.local_addr());
    // Returning drops the server, which removes a Unix socket it created.
    tokio::select! {
        result = server.run() => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nbd-conform serve: {e}");
                ExitCode::from(exit::FAILED)
            }
        },
        _ = interrupt.recv() => ExitCode::SUCCESS,
        _ = terminate.recv() => ExitCode::SUCCESS,
        _ = hangup.recv() => ExitCode::SUCCESS,
    }
}

fn is_block_device(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Prints `text` to stdout. A reader that stopped early (`| head`) got what it wanted: that
/// is success, as for any Unix tool; another write error is a failure.
fn print_or_fail(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(exit::FAILED),
    }
}

/// `serve --fault list`: NAME  DIALECT  CLAUSE  description, one fault a line. Built whole,
/// then written once, as `list` is: `| head -1` ends it quietly.
fn list_faults() -> ExitCode {
    use std::fmt::Write as _;
    let mut text = String::new();
    for fault in Fault::ALL {
        let line = format!(
            "{:<28} {:<9} {:<20} {}",
            fault.name(),
            fault.dialect().as_str(),
            fault.clause(),
            fault.description()
        );
        let _ = writeln!(text, "{}", line.trim_end());
    }
    print_or_fail(&text)
}

fn load(dir: Option<PathBuf>) -> Result<Vec<nbd_conform::engine::case::Case>, ExitCode> {
    match dir {
        Some(dir) => nbd_conform::engine::case::load_cases(&dir),
        None => nbd_conform::engine::case::load_suite_cases(),
    }
    .map_err(|e| usage(format!("cannot load cases: {e}")))
}

fn list(args: ListArgs) -> ExitCode {
    use std::fmt::Write as _;
    // Built whole, then written once: `list | head -1` closes the pipe, which is no panic.
    let mut text = String::new();
    if args.clauses {
        for c in nbd_conform::clauses::CLAUSES {
            let _ = writeln!(text, "{:<22} {:<8} {}", c.id, c.level.as_str(), c.text);
        }
        return print_or_fail(&text);
    }
    let cases = match load(args.cases) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.coverage {
        return print_or_fail(&nbd_conform::coverage::Coverage::measure(&cases).markdown());
    }
    for c in &cases {
        let _ = writeln!(
            text,
            "{:<48} {:<9} {:<22} {}",
            c.id,
            c.dialect.as_str(),
            c.clause_ids()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(","),
            c.title
        );
    }
    let _ = writeln!(text, "{} cases", cases.len());
    print_or_fail(&text)
}

async fn run_cases(args: RunArgs) -> ExitCode {
    use nbd_conform::engine::run::Settings;
    use nbd_conform::engine::suite::{run_subject_observed, run_subject_until, Subject};
    use nbd_conform::launch::{Launcher, ServerKind, SpawnTemplate};
    use nbd_conform::report::RunReport;

    // First, so that nothing the run starts can be left behind by a signal's default action.
    let (interrupted, stop) = match on_interrupt() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("nbd-conform run: cannot watch for SIGINT and SIGTERM: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    // What an earlier run that was killed left behind.
    nbd_conform::fixtures::sweep_orphaned_builds(&nbd_conform::fixtures::cache_dir());
    nbd_conform::launch::sweep_orphaned_scratch();
    if !args.bitmaps.is_empty() && args.targets.is_empty() && args.spawns.is_empty() {
        return usage(
            "--bitmap names a dirty bitmap of a server you give (--target or --spawn); the \
             servers launched here export the fixture's own",
        );
    }
    // A report that cannot be written is found out now, not after every case has run (and
    // never taken for a verdict).
    let outputs = match cli::outputs::check(
        args.report.as_deref(),
        args.json.as_deref(),
        args.junit.as_deref(),
    ) {
        Ok(o) => o,
        Err(refused) => {
            eprintln!("nbd-conform run: {}", refused.message);
            return ExitCode::from(refused.code);
        }
    };
    let mut cases = match load(args.cases.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let all_ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let ids: Vec<&str> = all_ids.iter().map(String::as_str).collect();
    let mut known_failing =
        match KnownFailingList::load(&args.known_failing, &args.known_flaky, &ids) {
            Ok(list) => list,
            Err(e) => return usage(e),
        };
    cases.retain(|c| {
        (args.only.is_empty() || args.only.iter().any(|p| c.id.starts_with(p.as_str())))
            && !args.skip.iter().any(|p| c.id.starts_with(p.as_str()))
    });
    let selected: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    known_failing.note_selection(&ids, &selected);
    if cases.is_empty() {
        return usage(if args.only.is_empty() && args.skip.is_empty() {
            "no case to run: the cases directory holds none (NBD_CONFORM_CASES chooses it)"
        } else {
            "no case matches --only/--skip"
        });
    }
    let mut subjects = Vec::new();
    let dialects = |choice: Option<DialectChoice>, offered: &[Dialect]| -> Vec<Dialect> {
        match choice {
            Some(DialectChoice::Standard) => vec![Dialect::Standard],
            Some(DialectChoice::Draft) => vec![Dialect::Draft],
            Some(DialectChoice::Auto) | None => offered.to_vec(),
        }
    };
    if !args.targets.is_empty() {
        for t in &args.targets {
            let mut target: Target = match t.parse() {
                Ok(t) => t,
                Err(e) => return usage(e),
            };
            if let Some(e) = &args.export {
                target.export = e.clone();
            }
            let offered = if args.dialect.is_none() {
                &[Dialect::Standard][..]
            } else {
                &[Dialect::Standard, Dialect::Draft][..]
            };
            for dialect in dialects(args.dialect, offered) {
                subjects.push(Subject::Remote {
                    target: target.clone(),
                    dialect,
                    bitmaps: args.bitmaps.clone(),
                });
            }
        }
    } else {
        for text in &args.spawns {
            let template = match SpawnTemplate::parse(text) {
                Ok(t) => t.with_bitmaps(args.bitmaps.clone()),
                Err(e) => return usage(e),
            };
            for dialect in dialects(args.dialect, &[Dialect::Standard]) {
                subjects.push(Subject::Launched {
                    launcher: Launcher::Spawn(template.clone()),
                    dialect,
                });
            }
        }
        let every = args.servers.is_empty() || args.servers.contains(&ServerChoice::All);
        let wanted: Vec<ServerKind> = if !args.spawns.is_empty() && args.servers.is_empty() {
            Vec::new()
        } else if every {
            ServerKind::ALL.to_vec()
        } else {
            args.servers
                .iter()
                .map(|s| match s {
                    ServerChoice::Reference | ServerChoice::All => ServerKind::Reference,
                    ServerChoice::QemuNbd => ServerKind::QemuNbd,
                    ServerChoice::Nbdkit => ServerKind::Nbdkit,
                    ServerChoice::NbdServer => ServerKind::NbdServer,
                })
                .collect()
        };
        // A missing server is named once, here, not once per case. In a container, the image
        // decides what is installed (asked at launch).
        let (wanted, missing): (Vec<ServerKind>, Vec<ServerKind>) = wanted
            .into_iter()
            .partition(|k| args.in_container.is_some() || k.installed_version().is_some());
        for kind in &missing {
            let what = if every { "skipped" } else { "cannot test" };
            eprintln!("nbd-conform run: {what}: {}", kind.not_installed());
        }
        // Asked for by name: without it the run would not test what was asked.
        if !every && !missing.is_empty() {
            return ExitCode::from(exit::COULD_NOT_TEST);
        }
        for kind in wanted {
            for dialect in dialects(args.dialect, kind.dialects()) {
                if !kind.dialects().contains(&dialect) {
                    continue;
                }
                match &args.in_container {
                    // The reference server runs in-process wherever the others run.
                    Some(image) if kind != ServerKind::Reference => {
                        subjects.push(Subject::Launched {
                            launcher: Launcher::Container {
                                kind,
                                image: image.clone(),
                            },
                            dialect,
                        })
                    }
                    _ => subjects.push(Subject::Local { kind, dialect }),
                }
            }
        }
    }
    let settings = Settings {
        timeout: args.connect_timeout,
        reply_timeout: args.timeout,
        read_back_budget: args.read_back_budget,
        writable: args.writable,
        ..Settings::default()
    };
    let progress = cli::progress::Progress::on_terminal(subjects.len());
    let mut targets = Vec::new();
    for subject in &subjects {
        if *stop.borrow() {
            break;
        }
        eprintln!("nbd-conform run: {} …", subject.name());
        let result = match &progress {
            Some(p) => {
                let _ticker = p.tick();
                let result = run_subject_observed(
                    subject,
                    &cases,
                    settings,
                    args.parallel,
                    stop.clone(),
                    p.as_ref(),
                )
                .await;
                p.end_target();
                result
            }
            None => run_subject_until(subject, &cases, settings, args.parallel, stop.clone()).await,
        };
        // This subject's servers (and containers) are done with: stop them before the next.
        nbd_conform::launch::Pool::global().shutdown_all();
        // Known failures are matched by target name: two `--spawn` templates of one program
        // must not share one.
        let mut result = result;
        let base = result.name.clone();
        for n in 2.. {
            if !targets
                .iter()
                .any(|t: &nbd_conform::engine::outcome::TargetResult| t.name == result.name)
            {
                break;
            }
            result.name = format!("{base} #{n}");
        }
        // Which of this target's failures the lists acknowledge (stale lines are told at the
        // end, once every target has run).
        let acknowledged = known_failing.apply(std::slice::from_ref(&result), args.strict);
        let s = acknowledged.summary(&result);
        let known = if s.known > 0 {
            format!(", {} known", s.known)
        } else {
            String::new()
        };
        eprintln!(
            "  {} pass, {} fail{known}, {} warn, {} info, {} unsupported, {} error",
            s.pass, s.fail, s.warn, s.info, s.unsupported, s.error
        );
        for note in &result.notes {
            eprintln!("  note: {note}");
        }
        let known =
            |c: &nbd_conform::engine::outcome::CaseResult| acknowledged.of(&result, c).is_some();
        for line in cli::failures::told(&result.cases, args.strict, known) {
            eprintln!("  {line}");
        }
        targets.push(result);
    }
    let report = RunReport {
        known_failing: known_failing.apply(&targets, args.strict),
        targets,
        strict: args.strict,
        interrupted: interrupted.get().map(|s| (*s).to_owned()),
        json_transcripts: args.json_transcripts,
    };
    // Every report is written, whichever fails: what was written is still worth having.
    let mut written = Vec::new();
    let mut failed = false;
    for output in &outputs {
        use cli::outputs::Format;
        let text = match output.format {
            Format::Markdown => report.to_markdown(),
            Format::Json => report.to_json(),
            Format::Junit => report.to_junit(),
        };
        match output.write(&text) {
            Ok(()) => written.push(output.place()),
            Err(e) => {
                eprintln!("nbd-conform run: cannot write {}: {e}", output.place());
                failed = true;
            }
        }
    }
    for line in report.known_failing.lines() {
        eprintln!("nbd-conform run: {line}");
    }
    let verdict = report.verdict();
    // A report that is lost leaves no verdict to act on.
    let code = if failed {
        exit::IO
    } else {
        verdict.exit_code()
    };
    let verdict_text = match verdict {
        Verdict::NonConformant => verdict.as_str().to_uppercase(),
        _ => verdict.as_str().to_owned(),
    };
    let wrote = if outputs.is_empty() {
        "wrote no report (--report, --json, --junit)".to_owned()
    } else if written.is_empty() {
        "wrote none of its reports".to_owned()
    } else {
        format!("wrote {}", written.join(", "))
    };
    eprintln!("nbd-conform run: {verdict_text} (exit {code}); {wrote}");
    ExitCode::from(code)
}

/// The signal that stopped `run`, once one came.
type Interrupted = std::sync::Arc<std::sync::OnceLock<&'static str>>;

/// Watches for SIGINT and SIGTERM: the first one is recorded and turns the receiver true, so
/// that the cases running are dropped and the reports are written for what finished (exit
/// [`exit::INTERRUPTED`]). Later ones change nothing: the clean-up that follows is bounded.
fn on_interrupt() -> std::io::Result<(Interrupted, tokio::sync::watch::Receiver<bool>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tell, stop) = tokio::sync::watch::channel(false);
    let interrupted = Interrupted::default();
    let record = interrupted.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        let _ = record.set(name);
        eprintln!(
            "{}nbd-conform run: {name}: stopping, writing the reports of what finished",
            cli::progress::wipe()
        );
        let _ = tell.send(true);
        // Keep the handlers (and the receivers) alive: a second signal must not kill the
        // clean-up half way.
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    });
    Ok((interrupted, stop))
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("nbd-conform: {message}");
    ExitCode::from(exit::USAGE)
}
