//! Option haggling, sans IO: one option in, its replies out, and what to do next.
//!
//! The connection reads an option (after checking its magic and length) and hands it to
//! [`Negotiation::handle`], which writes every reply into a buffer and says whether to keep
//! haggling, close, or start transmission. Keeping this free of sockets lets tests drive whole
//! negotiations from byte buffers.

use bytes::BytesMut;

use super::export::{Export, DESCRIPTION};
use crate::wire::consts::{client_flag, info, limit, option, reply_type};
use crate::wire::handshake::{
    encode_export_name_reply, encode_meta_context_reply, encode_option_reply, encode_server_reply,
    parse_info_request, parse_meta_context_request, BlockSizes, Info,
};

/// Block sizes advertised in every INFO/GO (SIZE-DEFAULT-1 values, max = our I/O limit).
pub const BLOCK_SIZES: BlockSizes = BlockSizes {
    minimum: 1,
    preferred: 4096,
    maximum: limit::MAX_IO_PAYLOAD,
};

/// What the connection does after an option was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next option.
    Continue,
    /// Send what was written, then close.
    Close,
    /// Send what was written, then enter transmission with these settings.
    Transmit(Session),
}

/// Everything transmission needs from negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    pub structured: bool,
    pub extended: bool,
    /// Selected context ids, in id order; empty unless the final SET named the export used.
    pub contexts: Vec<u32>,
    /// The block-status payload form is offered (transmission flag bit 12).
    pub status_payload: bool,
}

/// The result of the last SET_META_CONTEXT. Every SET replaces it, even a failing one
/// (SMC-REPLACE-1).
#[derive(Debug, Clone, Default)]
struct Selection {
    export: Option<String>,
    ids: Vec<u32>,
}

/// Negotiation state of one connection.
#[derive(Debug)]
pub struct Negotiation<'a> {
    export: &'a Export,
    client_no_zeroes: bool,
    structured: bool,
    extended: bool,
    selection: Selection,
}

/// Client flags a server must accept; anything else ends the connection (HS-CFLAGS-3).
pub fn client_flags_acceptable(flags: u32) -> bool {
    flags & !(client_flag::FIXED_NEWSTYLE | client_flag::NO_ZEROES) == 0
}

impl<'a> Negotiation<'a> {
    pub fn new(export: &'a Export, client_flags: u32) -> Self {
        Negotiation {
            export,
            client_no_zeroes: client_flags & client_flag::NO_ZEROES != 0,
            structured: false,
            extended: false,
            selection: Selection::default(),
        }
    }

    /// Answers one option into `out`.
    pub fn handle(&mut self, opt: u32, data: &[u8], out: &mut BytesMut) -> Next {
        if self.export.variants.refuses_option(opt) {
            return error(out, opt, reply_type::ERR_UNSUP, "option not offered here");
        }
        match opt {
            option::EXPORT_NAME => self.export_name(data, out),
            option::ABORT => {
                ack(out, opt);
                Next::Close
            }
            option::LIST => self.list_exports(data, out),
            option::STARTTLS => error(out, opt, reply_type::ERR_POLICY, "TLS is not supported"),
            option::INFO | option::GO => self.info_or_go(opt, data, out),
            option::STRUCTURED_REPLY => self.structured_reply(data, out),
            option::EXTENDED_HEADERS => self.extended_headers(data, out),
            option::LIST_META_CONTEXT => self.list_meta_context(data, out),
            option::SET_META_CONTEXT => self.set_meta_context(data, out),
            other => error(out, other, reply_type::ERR_UNSUP, "option not supported"),
        }
    }

    fn session(&self) -> Session {
        let named_this_export = self.selection.export.as_deref() == Some(self.export.name.as_str());
        let contexts = if named_this_export {
            self.selection.ids.clone()
        } else {
            Vec::new()
        };
        Session {
            structured: self.structured,
            extended: self.extended,
            status_payload: self.status_payload(&contexts),
            contexts,
        }
    }

    /// The payload form is for extended headers only (TX-BSPL-1), and only worth offering
    /// with contexts to filter: INFO says what GO would.
    fn status_payload(&self, contexts: &[u32]) -> bool {
        self.extended && !contexts.is_empty() && !self.export.variants.hides_status_payload()
    }

    fn flags(&self) -> u16 {
        let offered = self.status_payload(&self.session().contexts);
        let flags = self.export.transmission_flags(self.structured, offered);
        self.export.faults.transmission_flags(flags)
    }

    /// EXPORT_NAME cannot report an error: an unknown name ends the session (EXPNAME-FAIL-1).
    fn export_name(&mut self, data: &[u8], out: &mut BytesMut) -> Next {
        let known = std::str::from_utf8(data)
            .ok()
            .and_then(|name| self.export.resolve(name))
            .is_some();
        if !known {
            return Next::Close;
        }
        encode_export_name_reply(
            out,
            self.export.size(),
            self.flags(),
            !self.client_no_zeroes,
        );
        Next::Transmit(self.session())
    }

    fn list_exports(&self, data: &[u8], out: &mut BytesMut) -> Next {
        if !data.is_empty() {
            return error(
                out,
                option::LIST,
                reply_type::ERR_INVALID,
                "LIST takes no data",
            );
        }
        let mut entry = BytesMut::new();
        encode_server_reply(&mut entry, &self.export.name, DESCRIPTION);
        encode_option_reply(out, option::LIST, reply_type::SERVER, &entry);
        ack(out, option::LIST)
    }

    fn info_or_go(&mut self, opt: u32, data: &[u8], out: &mut BytesMut) -> Next {
        let Ok((name, requests)) = parse_info_request(data) else {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "malformed INFO/GO request",
            );
        };
        if self.export.resolve(&name).is_none() {
            return error(out, opt, reply_type::ERR_UNKNOWN, "no such export");
        }
        let mut infos = vec![Info::Export {
            size: self.export.size(),
            flags: self.flags(),
        }];
        let volunteer = self.export.variants.sends_unrequested_info();
        if volunteer || requests.contains(&info::NAME) {
            infos.push(Info::Name(self.export.name.clone()));
        }
        if volunteer || requests.contains(&info::DESCRIPTION) {
            infos.push(Info::Description(DESCRIPTION.to_owned()));
        }
        let sizes = self.export.block_sizes();
        infos.push(Info::BlockSize(self.export.faults.block_sizes(sizes)));
        for item in &infos {
            let mut payload = BytesMut::new();
            item.encode(&mut payload);
            encode_option_reply(out, opt, reply_type::INFO, &payload);
        }
        ack(out, opt);
        if opt == option::GO {
            Next::Transmit(self.session())
        } else {
            Next::Continue
        }
    }

    fn structured_reply(&mut self, data: &[u8], out: &mut BytesMut) -> Next {
        let opt = option::STRUCTURED_REPLY;
        if self.export.is_draft() {
            return error(
                out,
                opt,
                reply_type::ERR_UNSUP,
                "the 2016 draft predates structured replies",
            );
        }
        if !data.is_empty() {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "STRUCTURED_REPLY takes no data",
            );
        }
        if self.extended {
            return error(
                out,
                opt,
                reply_type::ERR_EXT_HEADER_REQD,
                "extended headers are already on",
            );
        }
        if self.structured {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "structured replies are already on",
            );
        }
        self.structured = true;
        ack(out, opt)
    }

    fn extended_headers(&mut self, data: &[u8], out: &mut BytesMut) -> Next {
        let opt = option::EXTENDED_HEADERS;
        if self.export.is_draft() {
            return error(
                out,
                opt,
                reply_type::ERR_UNSUP,
                "the 2016 draft predates extended headers",
            );
        }
        if !data.is_empty() {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "EXTENDED_HEADERS takes no data",
            );
        }
        if self.extended {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "extended headers are already on",
            );
        }
        self.extended = true;
        self.structured = true;
        ack(out, opt)
    }

    /// What LIST and SET_META_CONTEXT share before they part: the draft has no contexts, and
    /// the request must parse. `Err` holds what to do next once the error reply is written.
    fn meta_context_request(
        &self,
        opt: u32,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(String, Vec<String>), Next> {
        if self.export.is_draft() {
            return Err(error(
                out,
                opt,
                reply_type::ERR_UNSUP,
                "the 2016 draft has no metadata contexts",
            ));
        }
        parse_meta_context_request(data).map_err(|_| {
            let message = format!("malformed {} request", option::name(opt));
            error(out, opt, reply_type::ERR_INVALID, &message)
        })
    }

    fn list_meta_context(&self, data: &[u8], out: &mut BytesMut) -> Next {
        let opt = option::LIST_META_CONTEXT;
        let (name, queries) = match self.meta_context_request(opt, data, out) {
            Ok(request) => request,
            Err(next) => return next,
        };
        if self.export.resolve(&name).is_none() {
            return error(out, opt, reply_type::ERR_UNKNOWN, "no such export");
        }
        for id in self.export.contexts.list(&queries) {
            // Ids in LIST replies mean nothing; send 0 (LMC-ID-1).
            meta_context(
                out,
                opt,
                0,
                self.export.contexts.name(id).unwrap_or_default(),
            );
        }
        ack(out, opt)
    }

    fn set_meta_context(&mut self, data: &[u8], out: &mut BytesMut) -> Next {
        let opt = option::SET_META_CONTEXT;
        self.selection = Selection::default();
        let (name, queries) = match self.meta_context_request(opt, data, out) {
            Ok(request) => request,
            Err(next) => return next,
        };
        if !self.structured {
            return error(
                out,
                opt,
                reply_type::ERR_INVALID,
                "negotiate structured replies first",
            );
        }
        let Some(export) = self.export.resolve(&name) else {
            return error(out, opt, reply_type::ERR_UNKNOWN, "no such export");
        };
        let mut ids = self.export.contexts.select(&queries);
        self.export.variants.announce_order(&mut ids);
        let shown = self.export.faults.meta_context_ids(&ids);
        for (&id, &shown_id) in ids.iter().zip(&shown) {
            meta_context(
                out,
                opt,
                shown_id,
                self.export.contexts.name(id).unwrap_or_default(),
            );
        }
        self.selection = Selection {
            export: Some(export.to_owned()),
            ids,
        };
        ack(out, opt)
    }
}

fn ack(out: &mut BytesMut, opt: u32) -> Next {
    encode_option_reply(out, opt, reply_type::ACK, &[]);
    Next::Continue
}

/// An error reply with a short human-readable message (HS-ERRBIT-1); haggling goes on.
fn error(out: &mut BytesMut, opt: u32, reply: u32, message: &str) -> Next {
    encode_option_reply(out, opt, reply, message.as_bytes());
    Next::Continue
}

fn meta_context(out: &mut BytesMut, opt: u32, id: u32, name: &str) {
    let mut payload = BytesMut::new();
    encode_meta_context_reply(&mut payload, id, name);
    encode_option_reply(out, opt, reply_type::META_CONTEXT, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::bitmap::BitmapSpec;
    use crate::server::image::Image;
    use crate::wire::consts::{magic, transmission_flag as tf};
    use crate::wire::handshake::{info_request_payload, meta_context_payload, OptionReplyHeader};
    use crate::Dialect;

    struct Fixture {
        _file: tempfile::NamedTempFile,
        export: Export,
    }

    fn fixture(dialect: Dialect) -> Fixture {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let image = Image::open(file.path(), false).unwrap();
        let bitmaps = [BitmapSpec {
            name: "b0".into(),
            granularity: 65536,
        }];
        Fixture {
            export: Export::new("disk".into(), dialect, image, &bitmaps),
            _file: file,
        }
    }

    /// Splits a reply buffer into (reply type, payload) pairs.
    fn replies(mut buf: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let h = OptionReplyHeader::decode(buf).unwrap();
            assert_eq!(h.magic, magic::OPTION_REPLY);
            let end = magic::OPTION_REPLY_HEADER_LEN + h.length as usize;
            out.push((
                h.reply_type,
                buf[magic::OPTION_REPLY_HEADER_LEN..end].to_vec(),
            ));
            buf = &buf[end..];
        }
        out
    }

    fn run(n: &mut Negotiation, opt: u32, data: &[u8]) -> (Next, Vec<(u32, Vec<u8>)>) {
        let mut out = BytesMut::new();
        let next = n.handle(opt, data, &mut out);
        (next, replies(&out))
    }

    fn types(r: &[(u32, Vec<u8>)]) -> Vec<u32> {
        r.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn rejects_unknown_client_flags() {
        assert!(client_flags_acceptable(3));
        assert!(!client_flags_acceptable(4));
    }

    #[test]
    fn structured_then_set_then_go_selects_contexts() {
        let f = fixture(Dialect::Standard);
        let mut n = Negotiation::new(&f.export, 3);
        assert_eq!(
            types(&run(&mut n, option::STRUCTURED_REPLY, &[]).1),
            vec![reply_type::ACK]
        );
        let set = meta_context_payload(
            "disk",
            &["qemu:dirty-bitmap:b0", "base:allocation", "base:"],
        );
        let (_, r) = run(&mut n, option::SET_META_CONTEXT, &set);
        assert_eq!(
            types(&r),
            vec![
                reply_type::META_CONTEXT,
                reply_type::META_CONTEXT,
                reply_type::ACK
            ]
        );
        assert_eq!(&r[0].1[..4], &0u32.to_be_bytes());
        assert_eq!(&r[0].1[4..], b"base:allocation");
        assert_eq!(&r[1].1[..4], &1u32.to_be_bytes());
        let (next, r) = run(&mut n, option::GO, &info_request_payload("", &[]));
        assert_eq!(*types(&r).last().unwrap(), reply_type::ACK);
        let Next::Transmit(session) = next else {
            panic!("GO should start transmission")
        };
        assert_eq!(session.contexts, vec![0, 1]);
        assert!(session.structured && !session.extended);
        // INFO_EXPORT carries SEND_DF and READ_ONLY in standard mode with structured replies.
        let flags = u16::from_be_bytes([r[0].1[10], r[0].1[11]]);
        assert_eq!(
            flags & (tf::SEND_DF | tf::READ_ONLY),
            tf::SEND_DF | tf::READ_ONLY
        );
    }

    #[test]
    fn failing_set_clears_the_selection() {
        let f = fixture(Dialect::Standard);
        let mut n = Negotiation::new(&f.export, 1);
        run(&mut n, option::STRUCTURED_REPLY, &[]);
        run(
            &mut n,
            option::SET_META_CONTEXT,
            &meta_context_payload("disk", &["base:allocation"]),
        );
        let (_, r) = run(&mut n, option::SET_META_CONTEXT, &[0, 0, 0, 9]);
        assert_eq!(types(&r), vec![reply_type::ERR_INVALID]);
        let (next, _) = run(&mut n, option::GO, &info_request_payload("disk", &[]));
        assert_eq!(
            next,
            Next::Transmit(Session {
                structured: true,
                extended: false,
                contexts: vec![],
                status_payload: false,
            })
        );
    }

    #[test]
    fn set_before_structured_replies_is_invalid() {
        let f = fixture(Dialect::Standard);
        let mut n = Negotiation::new(&f.export, 1);
        let (_, r) = run(
            &mut n,
            option::SET_META_CONTEXT,
            &meta_context_payload("disk", &["base:allocation"]),
        );
        assert_eq!(types(&r), vec![reply_type::ERR_INVALID]);
    }

    #[test]
    fn list_meta_context_uses_id_zero_and_wildcards() {
        let f = fixture(Dialect::Standard);
        let mut n = Negotiation::new(&f.export, 1);
        let (_, r) = run(
            &mut n,
            option::LIST_META_CONTEXT,
            &meta_context_payload("", &["qemu:"]),
        );
        assert_eq!(types(&r), vec![reply_type::META_CONTEXT, reply_type::ACK]);
        assert_eq!(&r[0].1[..4], &[0, 0, 0, 0]);
        assert_eq!(&r[0].1[4..], b"qemu:dirty-bitmap:b0");
        let (_, r) = run(
            &mut n,
            option::LIST_META_CONTEXT,
            &meta_context_payload("other", &[]),
        );
        assert_eq!(types(&r), vec![reply_type::ERR_UNKNOWN]);
    }

    #[test]
    fn option_state_rules() {
        let f = fixture(Dialect::Standard);
        let mut n = Negotiation::new(&f.export, 1);
        assert_eq!(
            types(&run(&mut n, option::STRUCTURED_REPLY, &[1]).1),
            vec![reply_type::ERR_INVALID]
        );
        assert_eq!(
            types(&run(&mut n, option::EXTENDED_HEADERS, &[]).1),
            vec![reply_type::ACK]
        );
        assert_eq!(
            types(&run(&mut n, option::EXTENDED_HEADERS, &[]).1),
            vec![reply_type::ERR_INVALID]
        );
        assert_eq!(
            types(&run(&mut n, option::STRUCTURED_REPLY, &[]).1),
            vec![reply_type::ERR_EXT_HEADER_REQD]
        );
        assert_eq!(
            types(&run(&mut n, option::STARTTLS, &[]).1),
            vec![reply_type::ERR_POLICY]
        );
        assert_eq!(
            types(&run(&mut n, 0x7fff_1234, &[1, 2, 3]).1),
            vec![reply_type::ERR_UNSUP]
        );
        assert_eq!(
            types(&run(&mut n, option::LIST, &[]).1),
            vec![reply_type::SERVER, reply_type::ACK]
        );
        assert_eq!(
            types(&run(&mut n, option::GO, &[0, 0]).1),
            vec![reply_type::ERR_INVALID]
        );
        assert_eq!(
            types(&run(&mut n, option::GO, &info_request_payload("nope", &[])).1),
            vec![reply_type::ERR_UNKNOWN]
        );
        let (next, r) = run(&mut n, option::ABORT, &[]);
        assert_eq!((next, types(&r)), (Next::Close, vec![reply_type::ACK]));
    }

    #[test]
    fn draft_refuses_modern_options_and_sets_bit_7() {
        let f = fixture(Dialect::Draft);
        let mut n = Negotiation::new(&f.export, 1);
        for opt in [
            option::STRUCTURED_REPLY,
            option::EXTENDED_HEADERS,
            option::LIST_META_CONTEXT,
            option::SET_META_CONTEXT,
        ] {
            assert_eq!(types(&run(&mut n, opt, &[]).1), vec![reply_type::ERR_UNSUP]);
        }
        let mut out = BytesMut::new();
        let next = n.handle(option::EXPORT_NAME, b"disk", &mut out);
        assert!(matches!(next, Next::Transmit(_)));
        assert_eq!(out.len(), 10 + 124, "client did not ask for NO_ZEROES");
        let flags = u16::from_be_bytes([out[8], out[9]]);
        assert_ne!(flags & crate::wire::consts::draft::SEND_GET_LBA_STATUS, 0);
    }

    #[test]
    fn export_name_unknown_closes_and_no_zeroes_is_honoured() {
        let f = fixture(Dialect::Standard);
        let mut out = BytesMut::new();
        assert_eq!(
            Negotiation::new(&f.export, 3).handle(option::EXPORT_NAME, b"x", &mut out),
            Next::Close
        );
        assert!(out.is_empty());
        Negotiation::new(&f.export, 3).handle(option::EXPORT_NAME, b"", &mut out);
        assert_eq!(out.len(), 10);
    }
}
