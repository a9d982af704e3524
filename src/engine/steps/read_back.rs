//! The read-back behind `map`: every byte of every range reported as reading zeros is read
//! and checked ([`checks::read_back`]), up to the case's budget
//! ([`crate::engine::run::Settings::read_back_budget`]). Smaller ranges go first, so that a
//! budget spent on one huge hole does not leave the small ones unread; what is left unread is
//! said in the result (`not_checked`), never passed over in silence.

use super::Run;
use crate::checks;
use crate::clauses::ClauseId;
use crate::engine::case::Expect;
use crate::engine::run::Stop;
use crate::map::{MapEntry, Track};
use crate::wire::consts::{errno, limit};

/// Longest READ of the read-back (less when the server advertises a smaller maximum payload).
const READ_PIECE: u64 = 1 << 20;

impl Run<'_> {
    pub(super) async fn read_back(&mut self, tracks: &[Track]) -> Result<(), Stop> {
        let Some(session) = self.link.session() else {
            return Ok(());
        };
        let neg = session.negotiated.clone();
        let align = neg.minimum_block();
        let piece = neg
            .block_sizes
            .map_or(READ_PIECE, |b| u64::from(b.maximum).min(READ_PIECE))
            .min(u64::from(limit::MAX_IO_PAYLOAD))
            / align
            * align;
        let piece = piece.max(align);
        let mut called_zero: Vec<(&MapEntry, ClauseId)> = Vec::new();
        for t in tracks {
            let Some(clause) = checks::read_back::zero_clause(&t.context) else {
                continue;
            };
            for e in &t.entries {
                if checks::read_back::says_zero(&t.context, e.flags) {
                    called_zero.push((e, clause));
                }
            }
        }
        called_zero.sort_by_key(|(e, _)| e.length);
        if piece > u64::from(limit::MAX_IO_PAYLOAD) {
            self.record.not_checked.push(format!(
                "nothing reported as zero was read back: the advertised minimum block size \
                 {align} is larger than the {} bytes a READ may ask for here",
                limit::MAX_IO_PAYLOAD
            ));
            return Ok(());
        }
        let (mut checked, mut unread, mut refused) = (0u64, 0u64, 0u64);
        // Everything from `offset` in range `i` on: what a stop leaves unread.
        let rest = |i: usize, offset: u64| {
            let (e, _) = called_zero[i];
            e.offset + e.length - offset
                + called_zero[i + 1..]
                    .iter()
                    .map(|(e, _)| e.length)
                    .sum::<u64>()
        };
        'ranges: for (i, (e, clause)) in called_zero.iter().enumerate() {
            for (offset, length) in Pieces::new(e.offset, e.length, align, piece) {
                if self.read_budget < length {
                    unread = rest(i, offset);
                    break 'ranges;
                }
                self.read_budget -= length;
                let Some(session) = self.link.session() else {
                    return Ok(());
                };
                // `piece` is at most MAX_IO_PAYLOAD (checked above), so the length fits.
                let reply = match session.read(offset, length as u32).await {
                    Ok(r) => r,
                    // A READ is a request like any other: a dropped or hung one is a finding.
                    Err(err) => {
                        self.record
                            .note(format!("→ READ offset={offset} length={length}"));
                        self.judge(Err(err), &Expect::SUCCESS, checks::request::MUST_SUCCEED)?;
                        self.drop_link();
                        self.record.not_checked.push(format!(
                            "{} bytes reported as zero were not read back: the connection was \
                             lost during the read-back",
                            rest(i, offset)
                        ));
                        break 'ranges;
                    }
                };
                self.record.violations(&reply.violations);
                match reply.read_data() {
                    Some(data) => {
                        checked += length;
                        if let Some(broken) = checks::read_back::nonzero(*clause, e, offset, &data)
                        {
                            self.record.found(broken);
                            continue 'ranges;
                        }
                    }
                    None => {
                        refused += length;
                        self.record.note(format!(
                            "→ READ offset={offset} length={length}: {}",
                            reply
                                .error()
                                .map_or("incomplete".into(), |e| errno::name(e).to_owned())
                        ));
                    }
                }
            }
        }
        if refused > 0 {
            self.record.not_checked.push(format!(
                "{refused} bytes reported as zero could not be read back: the server refused \
                 the READs"
            ));
        }
        if checked > 0 {
            self.record
                .note(format!("(read back {checked} bytes reported as zero)"));
        }
        if unread > 0 {
            let budget = self.settings.read_back_budget;
            self.record.not_checked.push(format!(
                "{unread} bytes reported as zero were not read back: the read-back budget of \
                 {budget} bytes per case was spent (--read-back-budget raises it)"
            ));
        }
        Ok(())
    }
}

/// The READs that cover `[offset, offset+length)` whole, `piece` bytes at a time, aligned
/// inward to `align` (bytes outside the aligned span cannot be asked for). An iterator: the
/// range's length comes from the server, and the budget stops the walk long before a hole of
/// exabytes could be listed.
struct Pieces {
    at: u64,
    end: u64,
    piece: u64,
}

impl Pieces {
    fn new(offset: u64, length: u64, align: u64, piece: u64) -> Pieces {
        let align = align.max(1);
        Pieces {
            at: offset.div_ceil(align).saturating_mul(align),
            end: offset.saturating_add(length) / align * align,
            piece: (piece / align * align).max(align),
        }
    }
}

impl Iterator for Pieces {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.at >= self.end {
            return None;
        }
        let n = self.piece.min(self.end - self.at);
        let item = (self.at, n);
        self.at += n;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_aligned_byte() {
        let pieces = |o, l, a, p| Pieces::new(o, l, a, p).collect::<Vec<_>>();
        assert_eq!(
            pieces(0, 4096, 512, 1024),
            vec![(0, 1024), (1024, 1024), (2048, 1024), (3072, 1024)]
        );
        assert_eq!(pieces(100, 1000, 512, 1024), vec![(512, 512)]);
        assert_eq!(pieces(100, 300, 512, 1024), vec![]);
        // A 4 GiB range is read whole, not sampled at its start, middle and end.
        let big = pieces(0, 1 << 32, 1, 1 << 20);
        assert_eq!(big.len(), 4096);
        assert_eq!(big.iter().map(|(_, n)| n).sum::<u64>(), 1 << 32);
        assert!(big.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        // An exabyte hole costs nothing until it is walked.
        let mut huge = Pieces::new(0, 1 << 60, 1, 1 << 20);
        assert_eq!(huge.next(), Some((0, 1 << 20)));
    }
}
