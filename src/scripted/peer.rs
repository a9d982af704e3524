//! A scripted NBD server, in the style of h2's test support: a proof writes the part
//! one connection of a server plays (expect this option, reply that; expect a request, send
//! these bytes; stall; hang up) and the peer plays it, so that any misbehaviour takes a few
//! lines and no fault of the reference server. What the client sends that the script did not
//! expect ends the script with an error the test can report.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::client::Target;
use crate::wire::consts::{command, command_flag, option, reply_type};
use crate::wire::handshake::{self, Greeting, Info, OptionHeader};
use crate::wire::request::{HeaderForm, Request};

/// Bytes built from the request being answered.
type BuildReply = Box<dyn Fn(&Request) -> Vec<u8> + Send>;

/// What the server does next.
enum Act {
    /// Send this greeting and read the client's flags.
    Greet(Greeting),
    /// Read one option; with a number, it must be that option.
    ExpectOption(Option<u32>),
    /// Answer the option just read.
    ReplyOption { reply_type: u32, data: Vec<u8> },
    /// Answer the option just read with a header alone, claiming `length` payload bytes.
    ReplyOptionHeader { reply_type: u32, length: u32 },
    /// Read one request header of this form.
    ExpectRequest(HeaderForm),
    /// Send bytes built from the request just read.
    Reply(BuildReply),
    /// Send bytes as they are.
    Send(Vec<u8>),
    /// Do nothing for a while (a stall, or a server that never answers).
    Pause(Duration),
    /// Hang up, and play the rest of the script on the next connection.
    NextConnection,
    /// Answer every request of this form with what the function builds, until the client
    /// hangs up or sends DISC: for cases whose number of requests the script cannot know (a
    /// map walk, its read-back).
    AnswerAll(HeaderForm, BuildReply),
    /// Send what the function builds from the last option (and the count so far) as a reply
    /// to it, `times` times (None: until the client hangs up): a server that never ends an
    /// option.
    FloodOption {
        reply_type: u32,
        data: Box<dyn Fn(u64) -> Vec<u8> + Send>,
        times: Option<u64>,
    },
    /// Send what the function builds from the last request, again and again, with `every`
    /// between sends, until the client hangs up: a server that never ends a reply.
    Flood { build: BuildReply, every: Duration },
}

/// Bytes a flood gathers before one write (small messages would otherwise cost a write each).
const FLOOD_BATCH: usize = 64 * 1024;

/// The script of one connection.
#[derive(Default)]
pub struct Peer {
    acts: Vec<Act>,
}

impl Peer {
    pub fn new() -> Peer {
        Peer::default()
    }

    fn then(mut self, act: Act) -> Peer {
        self.acts.push(act);
        self
    }

    /// A fixed-newstyle greeting (handshake flags FIXED_NEWSTYLE and NO_ZEROES).
    pub fn greet(self) -> Peer {
        self.greet_with(Greeting::new(3))
    }

    /// A greeting with any magic and flags.
    pub fn greet_with(self, greeting: Greeting) -> Peer {
        self.then(Act::Greet(greeting))
    }

    /// Expects the option `opt` next.
    pub fn option(self, opt: u32) -> Peer {
        self.then(Act::ExpectOption(Some(opt)))
    }

    /// Expects an option, whichever it is.
    pub fn any_option(self) -> Peer {
        self.then(Act::ExpectOption(None))
    }

    /// Answers the last option with `reply_type` and `data`.
    pub fn option_reply(self, reply_type: u32, data: &[u8]) -> Peer {
        self.then(Act::ReplyOption {
            reply_type,
            data: data.to_vec(),
        })
    }

    /// Answers the last option with a reply header that claims `length` payload bytes, and
    /// sends none of them (a length no client may trust).
    pub fn option_reply_claiming(self, reply_type: u32, length: u32) -> Peer {
        self.then(Act::ReplyOptionHeader { reply_type, length })
    }

    pub fn ack(self) -> Peer {
        self.option_reply(reply_type::ACK, &[])
    }

    /// A META_CONTEXT reply selecting `name` under `id`.
    pub fn meta_context(self, id: u32, name: &str) -> Peer {
        let mut data = BytesMut::new();
        handshake::encode_meta_context_reply(&mut data, id, name);
        self.option_reply(reply_type::META_CONTEXT, &data)
    }

    /// An NBD_INFO_EXPORT reply: the export's size and transmission flags.
    pub fn export_info(self, size: u64, flags: u16) -> Peer {
        let mut data = BytesMut::new();
        Info::Export { size, flags }.encode(&mut data);
        self.option_reply(reply_type::INFO, &data)
    }

    /// Any NBD_INFO reply.
    pub fn info(self, info: Info) -> Peer {
        let mut data = BytesMut::new();
        info.encode(&mut data);
        self.option_reply(reply_type::INFO, &data)
    }

    /// A GO on a connection with simple replies (no other option), answered with the export's
    /// size and `flags`, then `more` INFO replies, then ACK.
    pub fn plain_go(self, size: u64, flags: u16, more: &[Info]) -> Peer {
        let mut peer = self.greet().option(option::GO).export_info(size, flags);
        for info in more {
            peer = peer.info(info.clone());
        }
        peer.ack()
    }

    /// The usual haggling done right, up to GO: greeting, structured replies,
    /// `base:allocation` as context 1.
    pub fn haggled(self) -> Peer {
        self.greet()
            .option(option::STRUCTURED_REPLY)
            .ack()
            .option(option::SET_META_CONTEXT)
            .meta_context(1, "base:allocation")
            .ack()
            .option(option::GO)
    }

    /// The whole handshake with extended headers: EXTENDED_HEADERS, `base:allocation` as
    /// context 1, GO on an export of `size` bytes.
    pub fn negotiated_extended(self, size: u64) -> Peer {
        self.greet()
            .option(option::EXTENDED_HEADERS)
            .ack()
            .option(option::SET_META_CONTEXT)
            .meta_context(1, "base:allocation")
            .ack()
            .option(option::GO)
            .export_info(size, 1)
            .ack()
    }

    /// The whole handshake done right: [`Peer::haggled`], then GO on an export of `size` bytes.
    pub fn negotiated(self, size: u64) -> Peer {
        self.haggled().export_info(size, 1).ack()
    }

    /// Expects a request next.
    pub fn request(self) -> Peer {
        self.then(Act::ExpectRequest(HeaderForm::Compact))
    }

    /// Answers every extended request from here on with what `reply` builds from it, until the
    /// client hangs up or sends DISC.
    pub fn answer_all_extended(self, reply: impl Fn(&Request) -> Vec<u8> + Send + 'static) -> Peer {
        self.then(Act::AnswerAll(HeaderForm::Extended, Box::new(reply)))
    }

    /// Expects an extended (32-byte) request next.
    pub fn extended_request(self) -> Peer {
        self.then(Act::ExpectRequest(HeaderForm::Extended))
    }

    /// Answers the last request with what `reply` builds from it.
    pub fn reply(self, reply: impl Fn(&Request) -> Vec<u8> + Send + 'static) -> Peer {
        self.then(Act::Reply(Box::new(reply)))
    }

    /// Answers the last request with what `write` writes from it.
    pub fn answer(self, write: impl Fn(&Request, &mut BytesMut) + Send + 'static) -> Peer {
        self.reply(move |r| {
            let mut out = BytesMut::new();
            write(r, &mut out);
            out.to_vec()
        })
    }

    pub fn send(self, bytes: &[u8]) -> Peer {
        self.then(Act::Send(bytes.to_vec()))
    }

    /// Answers every request from here on with what `reply` builds from it (compact headers),
    /// until the client hangs up or sends DISC.
    pub fn answer_all(self, reply: impl Fn(&Request) -> Vec<u8> + Send + 'static) -> Peer {
        self.then(Act::AnswerAll(HeaderForm::Compact, Box::new(reply)))
    }

    /// Hangs up; the rest of the script is played on the next connection the client makes.
    pub fn next_connection(self) -> Peer {
        self.then(Act::NextConnection)
    }

    pub fn pause(self, how_long: Duration) -> Peer {
        self.then(Act::Pause(how_long))
    }

    /// Answers the last option with `times` replies of `reply_type` (None: until the client
    /// hangs up), the i-th carrying `data(i)`.
    pub fn flood_option(
        self,
        reply_type: u32,
        times: Option<u64>,
        data: impl Fn(u64) -> Vec<u8> + Send + 'static,
    ) -> Peer {
        self.then(Act::FloodOption {
            reply_type,
            data: Box::new(data),
            times,
        })
    }

    /// Sends what `build` builds from the last request over and over, `every` apart (zero: as
    /// fast as the client reads), until the client hangs up.
    pub fn flood(
        self,
        every: Duration,
        build: impl Fn(&Request) -> Vec<u8> + Send + 'static,
    ) -> Peer {
        self.then(Act::Flood {
            build: Box::new(build),
            every,
        })
    }

    /// Plays the script on the first connection `listener` accepts (and the next ones, after
    /// each [`Peer::next_connection`]), then closes it.
    pub async fn serve(self, listener: UnixListener) -> Result<(), String> {
        let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
        self.play(s, Some(&listener)).await
    }

    /// Plays the script on `s`; [`Peer::next_connection`] needs the listener.
    async fn play(self, mut s: UnixStream, listener: Option<&UnixListener>) -> Result<(), String> {
        let mut last_option = 0;
        let mut last_request = None;
        for act in self.acts {
            match act {
                Act::Greet(greeting) => {
                    let mut out = BytesMut::new();
                    greeting.encode(&mut out);
                    write(&mut s, &out).await?;
                    let mut flags = [0u8; 4];
                    s.read_exact(&mut flags).await.map_err(|e| e.to_string())?;
                }
                Act::ExpectOption(want) => {
                    let (opt, _) = read_option(&mut s).await?;
                    if want.is_some_and(|w| w != opt) {
                        return Err(format!(
                            "expected option {}, got {}",
                            option::name(want.unwrap_or(0)),
                            option::name(opt)
                        ));
                    }
                    last_option = opt;
                }
                Act::ReplyOption { reply_type, data } => {
                    let mut out = BytesMut::new();
                    handshake::encode_option_reply(&mut out, last_option, reply_type, &data);
                    write(&mut s, &out).await?;
                }
                Act::ReplyOptionHeader { reply_type, length } => {
                    let mut out = BytesMut::new();
                    handshake::encode_option_reply(&mut out, last_option, reply_type, &[]);
                    out[16..20].copy_from_slice(&length.to_be_bytes());
                    write(&mut s, &out).await?;
                }
                Act::ExpectRequest(form) => {
                    last_request = read_request(&mut s, form)
                        .await?
                        .ok_or("the client hung up before a request")?;
                }
                Act::AnswerAll(form, build) => {
                    while let Some(request) = read_request(&mut s, form).await? {
                        if request.as_ref().is_some_and(|r| r.command == command::DISC) {
                            break;
                        }
                        let request = request.ok_or("a request header that does not decode")?;
                        write(&mut s, &build(&request)).await?;
                    }
                }
                Act::Reply(build) => {
                    let request = last_request.as_ref().ok_or("a reply before any request")?;
                    write(&mut s, &build(request)).await?;
                }
                Act::Send(bytes) => write(&mut s, &bytes).await?,
                Act::Pause(how_long) => tokio::time::sleep(how_long).await,
                Act::NextConnection => {
                    drop(s);
                    let listener =
                        listener.ok_or("a next connection in a per-connection script")?;
                    s = listener.accept().await.map_err(|e| e.to_string())?.0;
                }
                Act::FloodOption {
                    reply_type,
                    data,
                    times,
                } => {
                    let mut out = BytesMut::new();
                    for i in 0..times.unwrap_or(u64::MAX) {
                        handshake::encode_option_reply(&mut out, last_option, reply_type, &data(i));
                        if out.len() >= FLOOD_BATCH && write(&mut s, &out.split()).await.is_err() {
                            return Ok(());
                        }
                    }
                    if write(&mut s, &out).await.is_err() {
                        return Ok(());
                    }
                }
                Act::Flood { build, every } => {
                    let request = last_request.as_ref().ok_or("a flood before any request")?;
                    let bytes = build(request);
                    let mut out = BytesMut::new();
                    loop {
                        out.extend_from_slice(&bytes);
                        if every.is_zero() && out.len() < FLOOD_BATCH {
                            continue;
                        }
                        // The client hung up: the flood is over, as the script meant.
                        if write(&mut s, &out.split()).await.is_err() {
                            return Ok(());
                        }
                        tokio::time::sleep(every).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Listens on a fresh Unix socket and plays the script there (on the current tokio
    /// runtime); the target reaches it, the dir holds the socket (and goes with it).
    pub fn listen(self) -> Result<Listening, String> {
        let (dir, listener, target) = bind()?;
        Ok(Listening {
            _dir: dir,
            target,
            script: tokio::spawn(self.serve(listener)),
        })
    }

    /// Listens on a fresh Unix socket and plays a new script from `make` on every connection,
    /// side by side: for a whole `nbd-conform run`, which probes a target on connections of
    /// its own before a case starts. A script that goes wrong ends its connection only.
    pub fn listen_each(make: fn() -> Peer) -> Result<Listening, String> {
        let (dir, listener, target) = bind()?;
        let accepting = async move {
            let mut scripts = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                scripts.spawn(make().play(s, None));
                while scripts.try_join_next().is_some() {}
            }
            Ok(())
        };
        Ok(Listening {
            _dir: dir,
            target,
            script: tokio::spawn(accepting),
        })
    }
}

/// A Unix socket in a temp dir of its own, and the target that reaches it.
fn bind() -> Result<(tempfile::TempDir, UnixListener, Target), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let path = dir.path().join("peer.sock");
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind the peer: {e}"))?;
    let target = format!("nbd+unix:///?socket={}", path.display())
        .parse()
        .map_err(|e| format!("the peer's target: {e}"))?;
    Ok((dir, listener, target))
}

/// A peer playing its script on a socket of its own.
pub struct Listening {
    _dir: tempfile::TempDir,
    /// Where the peer listens.
    pub target: Target,
    /// The script being played: what it ends with says whether the client did as expected.
    pub script: tokio::task::JoinHandle<Result<(), String>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.script.abort();
    }
}

/// One request header of `form` (None inside: it does not decode), with a WRITE's data read
/// past as any server would; None when the client hung up first.
async fn read_request(
    s: &mut UnixStream,
    form: HeaderForm,
) -> Result<Option<Option<Request>>, String> {
    let mut header = vec![0u8; form.header_len()];
    match s.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("no request: {e}")),
    }
    let request = Request::decode(form, &header);
    // A WRITE carries its data, and so does any extended request with PAYLOAD_LEN (a
    // block-status filter): read past it, as any server would.
    let carries = |r: &&Request| {
        r.command == command::WRITE
            || (form == HeaderForm::Extended && r.flags & command_flag::PAYLOAD_LEN != 0)
    };
    if let Some(r) = request.as_ref().filter(carries) {
        if r.length > u64::from(crate::wire::consts::limit::MAX_IO_PAYLOAD) {
            return Err(format!("a WRITE of {} bytes", r.length));
        }
        let mut data = vec![0u8; r.length as usize];
        s.read_exact(&mut data)
            .await
            .map_err(|e| format!("no WRITE data: {e}"))?;
    }
    Ok(Some(request))
}

async fn write(s: &mut UnixStream, bytes: &[u8]) -> Result<(), String> {
    s.write_all(bytes).await.map_err(|e| e.to_string())
}

async fn read_option(s: &mut UnixStream) -> Result<(u32, Vec<u8>), String> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h)
        .await
        .map_err(|e| format!("no option: {e}"))?;
    let header = OptionHeader::decode(&h).ok_or("a short option header")?;
    if header.length > crate::wire::consts::limit::MAX_OPTION_PAYLOAD {
        return Err(format!("an option of {} bytes", header.length));
    }
    let mut data = vec![0u8; header.length as usize];
    s.read_exact(&mut data).await.map_err(|e| e.to_string())?;
    Ok((header.option, data))
}
