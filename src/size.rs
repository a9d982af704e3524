//! The one spelling of a byte count, wherever one is written (fixture layouts, case files,
//! command-line options, bitmap granularities): a decimal number with an optional binary
//! suffix `K`, `M`, `G` or `T` (case-insensitive), or a `0x` hexadecimal number; a size may
//! also be several such terms joined by `+` (`1G+4K`). No `KiB`/`KB` tails, to keep one
//! spelling.

/// One term: `4096`, `64K`, `0x1000`.
pub fn parse_number(term: &str) -> Result<u64, String> {
    let t = term.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| not_a_number(t));
    }
    let (digits, shift) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(format!(
                        "{t:?}: unknown size suffix {c:?} (use K, M, G or T)"
                    ))
                }
            };
            (&t[..t.len() - 1], shift)
        }
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .map_err(|_| not_a_number(t))?
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{t:?} does not fit in 64 bits"))
}

/// A size: one or more terms joined by `+`.
pub fn parse(text: &str) -> Result<u64, String> {
    if text.trim().is_empty() {
        return Err("empty size".into());
    }
    text.split('+').try_fold(0u64, |total, term| {
        total
            .checked_add(parse_number(term)?)
            .ok_or_else(|| format!("size {text:?} does not fit in 64 bits"))
    })
}

/// A byte count the way sizes are written: the largest exact binary unit.
pub fn human(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n % (1u64 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

fn not_a_number(t: &str) -> String {
    format!("{t:?} is not a size (a number with an optional K/M/G/T suffix, or 0x hex)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("4096", 4096)]
    #[case("64K", 65536)]
    #[case("64k", 65536)]
    #[case("1M", 1 << 20)]
    #[case("4G", 1 << 32)]
    #[case("2T", 2 << 40)]
    #[case("0x1000", 4096)]
    #[case(" 1G + 4K ", (1 << 30) + 4096)]
    #[case("0", 0)]
    fn sizes_parse(#[case] text: &str, #[case] bytes: u64) {
        assert_eq!(parse(text), Ok(bytes));
    }

    #[rstest]
    #[case("")]
    #[case("lots")]
    #[case("4KiB")]
    #[case("4X")]
    #[case("0x10K")]
    #[case("16777216T")]
    #[case("0xffffffffffffffff+1")]
    #[case("1+")]
    fn non_sizes_are_refused(#[case] text: &str) {
        assert!(parse(text).is_err(), "{text:?} parsed");
    }

    #[rstest]
    #[case(0, "0")]
    #[case(4096, "4K")]
    #[case(4097, "4097")]
    #[case(8 << 30, "8G")]
    fn human_sizes_parse_back(#[case] n: u64, #[case] text: &str) {
        assert_eq!(human(n), text);
        assert_eq!(parse(text), Ok(n));
    }
}
