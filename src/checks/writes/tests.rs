use super::*;

fn entry(context: &str, offset: u64, length: u64, flags: u64) -> MapEntry {
    MapEntry {
        context: context.into(),
        offset,
        length,
        flags,
        state: format!("{flags}"),
    }
}

#[test]
fn the_later_op_decides_and_a_refusal_keeps_what_was_there() {
    let mut l = Ledger::default();
    l.record(Op::write(0, 8192, 0xC3));
    l.record(Op::write_zeroes(4096, 8192));
    l.record(Op::refused_fast_zero(0, 4096));
    let s = l.segments(0, 16384);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(
        (s[0].offset, s[0].end, s[0].content),
        (0, 4096, Content::Byte(0xC3))
    );
    assert_eq!(s[0].clause, id::WZ_FAST_2);
    assert_eq!(
        (s[1].offset, s[1].end, s[1].content),
        (4096, 12288, Content::Zeros)
    );
    assert!(l.changed());
}

#[test]
fn a_read_that_contradicts_an_op_is_found_at_its_first_wrong_byte() {
    let mut l = Ledger::default();
    l.record(Op::write(1000, 100, 0xC3));
    l.record(Op::write_zeroes(1100, 100));
    let mut data = vec![0xC3u8; 100];
    data.extend([0u8; 100]);
    assert!(read_matches(&l, 1000, &data).is_empty());
    data[150] = 7;
    data[5] = 0;
    let f = read_matches(&l, 1000, &data);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].clause, id::WRITE_READ_1);
    assert_eq!(f[0].observed, "byte 0x00 at offset 1005");
    assert_eq!(f[1].clause, id::WZ_READ_1);
    assert_eq!(f[1].observed, "byte 0x07 at offset 1150");
}

#[test]
fn trimmed_bytes_may_read_as_anything() {
    let mut l = Ledger::default();
    l.record(Op::write(0, 512, 0xC3));
    l.record(Op::trim(0, 512));
    assert!(read_matches(&l, 0, &[0x11; 512]).is_empty());
    assert!(l.changed());
}

#[test]
fn zero_over_written_data_is_found_but_not_over_zeroed_or_trimmed_data() {
    let mut l = Ledger::default();
    l.record(Op::write(0, 4096, 0xC3));
    l.record(Op::write_zeroes(4096, 4096));
    l.record(Op::trim(8192, 4096));
    let a = context::BASE_ALLOCATION;
    let fine = [entry(a, 0, 4096, 0), entry(a, 4096, 8192, 3)];
    assert!(zero_over_written(&l, &fine).is_empty());
    let lying = [entry(a, 0, 12288, 2)];
    let f = zero_over_written(&l, &lying);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].clause, id::ALLOC_WRITTEN_1);
}

#[test]
fn a_clean_granule_under_a_write_is_found() {
    let mut l = Ledger::default();
    l.record(Op::write(65536, 4096, 0xC3));
    l.record(Op::trim(0, 4096));
    let bm = "qemu:dirty-bitmap:bm0";
    let covers = [entry(bm, 0, 65536, 0), entry(bm, 65536, 65536, 1)];
    assert_eq!(dirty_misses_writes(&l, bm, &covers, 0, 131072), None);
    let misses = [entry(bm, 0, 131072, 0)];
    let f = dirty_misses_writes(&l, bm, &misses, 0, 131072).expect("a finding");
    assert_eq!(f.clause, id::QEMU_DB_COVER_1);
    assert_eq!(f.observed, "offset 65536 reported clean");
    // Dirty only over the write's first half.
    let half = [entry(bm, 0, 67584, 1), entry(bm, 67584, 63488, 0)];
    assert!(dirty_misses_writes(&l, bm, &half, 0, 131072).is_some());
}

#[test]
fn fast_zero_allows_enotsup_only_with_the_flag() {
    assert_eq!(fast_zero_reply(true, None, "success"), None);
    assert_eq!(fast_zero_reply(true, Some(errno::ENOTSUP), "ENOTSUP"), None);
    let f = fast_zero_reply(true, Some(errno::EINVAL), "EINVAL").expect("a finding");
    assert_eq!(f.clause, id::WZ_FAST_1);
    let f = fast_zero_reply(false, Some(errno::ENOTSUP), "ENOTSUP").expect("a finding");
    assert_eq!(f.clause, id::WZ_NOTSUP_1);
    assert_eq!(fast_zero_reply(false, Some(errno::EIO), "EIO"), None);
}

#[test]
fn cache_must_not_change_what_reads_return() {
    assert_eq!(cache_kept(0, &[1, 2, 3], &[1, 2, 3]), None);
    let f = cache_kept(100, &[1, 2, 3], &[1, 9, 3]).expect("a finding");
    assert_eq!(f.observed, "byte 0x02 at offset 101 became 0x09");
}
