//! Whether a request a case asks for may go out on this export, and in which form.
//!
//! The client keeps every rule that binds a client (the export's size, the minimum block size
//! it asked for with NBD_INFO_BLOCK_SIZE, the maximum payload of a READ, the 32 bits of a compact
//! length) unless the case is about breaking that rule; then the server's answer is judged by
//! that rule. A request that cannot mean on this export what it means on the case's fixture
//! makes the case `unsupported` here: never a verdict on the server.

use crate::wire::consts::command;
use crate::wire::request::{HeaderForm, Request};

/// What the client knows of the export it talks to.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    pub size: u64,
    /// The size of the case's own fixture, when known: what the case was written for.
    pub fixture_size: Option<u64>,
    pub form: HeaderForm,
    /// The advertised minimum block size (1 when none was advertised).
    pub minimum: u64,
    /// The advertised maximum payload, if any.
    pub max_payload: Option<u64>,
}

/// What the case expects of the request, as far as fitting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// It must succeed: it has to keep every client rule.
    Succeed,
    /// It must be refused because it reaches past the end (or overflows): it has to do so here
    /// as it does on the fixture, and break no other rule the server could be refusing.
    RefusedOutOfRange,
    /// It must be refused for a reason of its own (an unknown command or flag): it has to fit
    /// the export, so that the refusal is for that reason.
    RefusedInRange,
    /// Any answer will do (zero-length requests): only the header form matters.
    Anything,
    /// It must be refused because it is off the advertised minimum block grid: it has to be
    /// off the grid here, and inside the export, so that the refusal is for that reason.
    RefusedUnaligned,
}

/// The request to send, or why the case does not apply here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Send {
        offset: u64,
        length: u64,
        /// Said in the transcript when the length differs from the case's.
        note: Option<String>,
    },
    Unsupported(String),
}

/// `end` reached by `offset + length`, if it does not overflow.
fn end(offset: u64, length: u64) -> Option<u64> {
    offset.checked_add(length)
}

/// Decides whether `offset+length` (as evaluated on this export) may go out for a case with
/// `intent`; `end_on_fixture` is where the same expressions end on the case's fixture (None:
/// they overflow there too, or the fixture is unknown).
pub fn fit(
    cmd: u16,
    offset: u64,
    length: u64,
    intent: Intent,
    export: &Export,
    end_on_fixture: Option<u64>,
) -> Fit {
    let fits_here = end(offset, length).is_some_and(|e| e <= export.size);
    let fits_fixture = match (export.fixture_size, end_on_fixture) {
        (Some(size), Some(e)) => Some(e <= size),
        (Some(_), None) => Some(false),
        (None, _) => None,
    };
    match intent {
        Intent::Succeed if !fits_here => {
            let needs = match end(offset, length) {
                Some(e) => format!("an export of at least {e} bytes"),
                None => "a bigger export".to_owned(),
            };
            return Fit::Unsupported(format!("needs {needs}; this one has {}", export.size));
        }
        Intent::RefusedOutOfRange if fits_here => {
            return Fit::Unsupported(format!(
                "the request {offset}+{length} is meant to reach past the end of the export, \
                 as it does on the case's fixture; on this export of {} bytes it does not",
                export.size
            ));
        }
        Intent::RefusedUnaligned if !fits_here => {
            return Fit::Unsupported(format!(
                "the request {offset}+{length} is meant to be refused for being off the minimum \
                 block grid, inside the export; on this export of {} bytes it reaches past the \
                 end, which the server may be refusing instead",
                export.size
            ));
        }
        Intent::RefusedInRange if !fits_here && fits_fixture != Some(false) => {
            return Fit::Unsupported(format!(
                "the request {offset}+{length} is meant to be refused for its own reason, inside \
                 the export; on this export of {} bytes it reaches past the end, which the \
                 server may be refusing instead",
                export.size
            ));
        }
        _ => {}
    }
    if intent == Intent::Succeed && length == 0 {
        // An empty range asks nothing (a client should not send one), unlike on the fixture.
        return Fit::Unsupported(format!(
            "the request at {offset} is empty on this export of {} bytes",
            export.size
        ));
    }
    let mut length = length;
    let mut note = None;
    if export.form == HeaderForm::Compact && u32::try_from(length).is_err() {
        if intent != Intent::Succeed {
            return Fit::Unsupported(format!(
                "the request's length {length} does not fit the 32 bits of a compact header"
            ));
        }
        // A compact request carries at most 4 GiB: a case about a whole large export asks
        // for what fits, as any client must, and the server may answer less anyway.
        let clamped = Request::compact_max(export.minimum);
        note = Some(format!(
            "(the case asks for {length} bytes; a compact header carries at most 32 bits, so \
             {clamped} are asked for)"
        ));
        length = clamped;
    }
    let keeps_alignment =
        export.minimum <= 1 || (offset % export.minimum == 0 && length % export.minimum == 0);
    if keeps_alignment && intent == Intent::RefusedUnaligned {
        return Fit::Unsupported(format!(
            "the request {offset}+{length} is meant to be off the minimum block grid; the \
             advertised minimum block size here is {}, which it keeps",
            export.minimum
        ));
    }
    let breaks_on_purpose = matches!(intent, Intent::RefusedOutOfRange | Intent::RefusedUnaligned);
    if !keeps_alignment && !breaks_on_purpose {
        return Fit::Unsupported(format!(
            "the request {offset}+{length} is not a multiple of the advertised minimum block \
             size {}, which a client that asked for block sizes must keep (GO-BLKSZ-3)",
            export.minimum
        ));
    }
    // Payloads the client sends or asks for stay within the maximum the server advertised.
    if (cmd == command::READ || cmd == command::WRITE) && intent == Intent::Succeed {
        if let Some(max) = export.max_payload.filter(|m| length > *m) {
            return Fit::Unsupported(format!(
                "a {} of {length} bytes is more than the advertised maximum payload {max}",
                command::name(cmd)
            ));
        }
    }
    Fit::Send {
        offset,
        length,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn export(size: u64, minimum: u64) -> Export {
        Export {
            size,
            fixture_size: Some(4 << 20),
            form: HeaderForm::Compact,
            minimum,
            max_payload: None,
        }
    }

    fn sent(f: Fit) -> (u64, u64) {
        match f {
            Fit::Send { offset, length, .. } => (offset, length),
            Fit::Unsupported(why) => panic!("unsupported: {why}"),
        }
    }

    #[test]
    fn whole_export_requests_are_clamped_to_32_bits_never_truncated() {
        let eight_g = 8u64 << 30;
        let e = export(eight_g, 1);
        let (_, length) = sent(fit(
            command::BLOCK_STATUS,
            0,
            eight_g,
            Intent::Succeed,
            &e,
            Some(4 << 20),
        ));
        assert_eq!(length, (1 << 32) - 4096);
        // 8 GiB - 8 KiB: was sent as 4 GiB - 8 KiB; now the longest aligned compact length.
        let (_, length) = sent(fit(
            command::BLOCK_STATUS,
            8192,
            eight_g - 8192,
            Intent::Succeed,
            &e,
            None,
        ));
        assert_eq!(length, (1 << 32) - 4096);
        // Extended headers carry it whole.
        let ext = Export {
            form: HeaderForm::Extended,
            ..e
        };
        assert_eq!(
            sent(fit(
                command::BLOCK_STATUS,
                0,
                eight_g,
                Intent::Succeed,
                &ext,
                None
            )),
            (0, eight_g)
        );
        // A refusal meant for a length past the end cannot be said in 32 bits.
        assert!(matches!(
            fit(
                command::BLOCK_STATUS,
                0,
                eight_g + 1,
                Intent::RefusedOutOfRange,
                &e,
                Some((4 << 20) + 1)
            ),
            Fit::Unsupported(_)
        ));
    }

    /// On a 4 MiB export with a 4 KiB minimum block: `None` is `unsupported`.
    #[rstest]
    #[case::unaligned_offset(1000, 4096, Intent::Succeed, None, None)]
    #[case::unaligned_length(65535, 2, Intent::Succeed, None, None)]
    #[case::aligned(4096, 8192, Intent::Succeed, None, Some((4096, 8192)))]
    #[case::out_of_range_whatever_its_alignment(
        4 << 20,
        1,
        Intent::RefusedOutOfRange,
        Some((4 << 20) + 1),
        Some((4 << 20, 1))
    )]
    fn the_minimum_block_size_is_kept_unless_the_request_is_out_of_range_anyway(
        #[case] offset: u64,
        #[case] length: u64,
        #[case] intent: Intent,
        #[case] end_on_fixture: Option<u64>,
        #[case] sends: Option<(u64, u64)>,
    ) {
        let e = export(4 << 20, 4096);
        let got = match fit(
            command::BLOCK_STATUS,
            offset,
            length,
            intent,
            &e,
            end_on_fixture,
        ) {
            Fit::Send { offset, length, .. } => Some((offset, length)),
            Fit::Unsupported(_) => None,
        };
        assert_eq!(got, sends);
    }

    /// A request off the grid on purpose goes out only where it is off the grid and in range.
    #[rstest]
    #[case::unaligned_offset(1, 4096, 4096, Some((1, 4096)))]
    #[case::unaligned_length(0, 4097, 4096, Some((0, 4097)))]
    #[case::aligned_here(4096, 4096, 4096, None)]
    #[case::no_minimum(1, 4096, 1, None)]
    #[case::past_the_end(1, 4 << 20, 4096, None)]
    fn an_unaligned_request_is_sent_only_where_it_is_one(
        #[case] offset: u64,
        #[case] length: u64,
        #[case] minimum: u64,
        #[case] sends: Option<(u64, u64)>,
    ) {
        let e = export(4 << 20, minimum);
        let got = match fit(
            command::BLOCK_STATUS,
            offset,
            length,
            Intent::RefusedUnaligned,
            &e,
            Some(offset + length),
        ) {
            Fit::Send { offset, length, .. } => Some((offset, length)),
            Fit::Unsupported(_) => None,
        };
        assert_eq!(got, sends);
    }

    #[test]
    fn the_compact_clamp_stays_on_the_grid_of_a_64k_minimum() {
        assert_eq!(Request::compact_max(1 << 16) % (1 << 16), 0);
    }

    #[test]
    fn requests_must_mean_here_what_they_mean_on_the_fixture() {
        // A READ at 1M+64K on a 1,000,000-byte export: its EINVAL says nothing of cookies.
        let small = export(1_000_000, 1);
        assert!(matches!(
            fit(
                command::READ,
                1 << 20,
                64 << 10,
                Intent::Succeed,
                &small,
                None
            ),
            Fit::Unsupported(_)
        ));
        // Past the end of 4 MiB, but not past the end of 8 GiB.
        let big = export(8 << 30, 1);
        assert!(matches!(
            fit(
                command::BLOCK_STATUS,
                (4 << 20) - 512,
                1024,
                Intent::RefusedOutOfRange,
                &big,
                Some((4 << 20) + 512)
            ),
            Fit::Unsupported(_)
        ));
        // An unknown command at 0+4K on a 1000-byte export: refused maybe for the size.
        let tiny = export(1000, 1);
        assert!(matches!(
            fit(0x7fff, 0, 4096, Intent::RefusedInRange, &tiny, Some(4096)),
            Fit::Unsupported(_)
        ));
        // READ longer than the advertised maximum payload.
        let capped = Export {
            max_payload: Some(65536),
            ..export(4 << 20, 1)
        };
        assert!(matches!(
            fit(command::READ, 0, 1 << 20, Intent::Succeed, &capped, None),
            Fit::Unsupported(_)
        ));
    }
}
