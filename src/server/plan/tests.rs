//! The checks of [`plan`] and [`payload_of`], one rule at a time.

use super::*;
use crate::server::bitmap::BitmapSpec;
use crate::server::image::Image;
use crate::wire::request::HeaderForm;
use crate::Dialect;

const SIZE: u64 = 1 << 20;

fn export(
    dialect: Dialect,
    writable: bool,
    bitmaps: &[BitmapSpec],
) -> (tempfile::NamedTempFile, Export) {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(SIZE).unwrap();
    let image = Image::open(file.path(), writable).unwrap();
    let e = Export::new("disk".into(), dialect, image, bitmaps);
    (file, e)
}

fn req(command: u16, flags: u16, offset: u64, length: u64) -> Request {
    Request::new(HeaderForm::Compact, command, flags, 1, offset, length)
}

fn structured(contexts: Vec<u32>) -> Session {
    Session {
        structured: true,
        extended: false,
        contexts,
        status_payload: false,
    }
}

fn errno_of(r: Result<Command, Refusal>) -> u32 {
    r.map(|c| panic!("expected a refusal, got {c:?}"))
        .unwrap_or_else(|r| r.errno)
}

#[test]
fn block_status_checks() {
    let (_f, e) = export(Dialect::Standard, false, &[]);
    let s = structured(vec![0]);
    assert_eq!(
        plan(
            &req(cmd::BLOCK_STATUS, flag::REQ_ONE | flag::FUA, 0, 512),
            vec![],
            &e,
            &s
        ),
        Ok(Command::BlockStatus {
            offset: 0,
            length: 512,
            req_one: true,
            only: None,
        })
    );
    assert_eq!(
        errno_of(plan(&req(cmd::BLOCK_STATUS, 0, 0, 0), vec![], &e, &s)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(&req(cmd::BLOCK_STATUS, 0, SIZE, 512), vec![], &e, &s)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::BLOCK_STATUS, 0, u64::MAX - 511, 1024),
            vec![],
            &e,
            &s
        )),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::BLOCK_STATUS, flag::DF, 0, 512),
            vec![],
            &e,
            &s
        )),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::BLOCK_STATUS, 0x8000, 0, 512),
            vec![],
            &e,
            &s
        )),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::BLOCK_STATUS, 0, 0, 512),
            vec![],
            &e,
            &structured(vec![])
        )),
        errno::EINVAL
    );
}

#[test]
fn command_and_flag_checks() {
    let (_f, e) = export(Dialect::Standard, false, &[]);
    let plain = Session::default();
    assert_eq!(
        errno_of(plan(&req(0x7fff, 0, 0, 0), vec![], &e, &plain)),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(&req(cmd::READ, flag::DF, 0, 512), vec![], &e, &plain)),
        errno::EINVAL
    );
    assert!(plan(
        &req(cmd::READ, flag::DF, 0, 512),
        vec![],
        &e,
        &structured(vec![])
    )
    .is_ok());
    assert_eq!(
        errno_of(plan(
            &req(cmd::READ, flag::REQ_ONE, 0, 512),
            vec![],
            &e,
            &plain
        )),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(&req(cmd::WRITE, 0, 0, 1), vec![0], &e, &plain)),
        errno::EPERM
    );
    assert_eq!(
        errno_of(plan(&req(cmd::TRIM, 0, 0, 1), vec![], &e, &plain)),
        errno::EPERM
    );
    assert_eq!(
        errno_of(plan(&req(cmd::READ, 0, SIZE - 1, 2), vec![], &e, &plain)),
        errno::EINVAL
    );
    assert_eq!(
        plan(&req(cmd::FLUSH, flag::FUA, 0, 0), vec![], &e, &plain),
        Ok(Command::Flush)
    );
    assert_eq!(
        plan(&req(cmd::CACHE, 0, 0, SIZE), vec![], &e, &plain),
        Ok(Command::Cache)
    );
}

#[test]
fn write_zeroes_flags() {
    let (_f, e) = export(Dialect::Standard, true, &[]);
    let plain = Session::default();
    assert_eq!(
        plan(
            &req(cmd::WRITE_ZEROES, flag::NO_HOLE, 0, 4096),
            vec![],
            &e,
            &plain
        ),
        Ok(Command::WriteZeroes {
            offset: 0,
            length: 4096,
            punch: false,
            fua: false
        })
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::WRITE_ZEROES, flag::FAST_ZERO, 0, 4096),
            vec![],
            &e,
            &plain
        )),
        errno::ENOTSUP
    );
}

#[test]
fn payload_rules() {
    let compact = Session::default();
    let extended = Session {
        structured: true,
        extended: true,
        contexts: vec![],
        status_payload: false,
    };
    assert_eq!(
        payload_of(&req(cmd::WRITE, 0, 0, 10), &compact, limit::MAX_IO_PAYLOAD),
        Payload::Bytes(10)
    );
    assert_eq!(
        payload_of(&req(cmd::READ, 0, 0, 10), &compact, limit::MAX_IO_PAYLOAD),
        Payload::None
    );
    assert_eq!(
        payload_of(
            &req(cmd::BLOCK_STATUS, flag::PAYLOAD_LEN, 0, 16),
            &compact,
            limit::MAX_IO_PAYLOAD
        ),
        Payload::None
    );
    assert_eq!(
        payload_of(
            &req(cmd::BLOCK_STATUS, flag::PAYLOAD_LEN, 0, 16),
            &extended,
            limit::MAX_IO_PAYLOAD
        ),
        Payload::Bytes(16)
    );
    assert_eq!(
        payload_of(
            &req(cmd::WRITE, 0, 0, limit::MAX_IO_PAYLOAD as u64 + 1),
            &compact,
            limit::MAX_IO_PAYLOAD
        ),
        Payload::TooBig
    );
}

#[test]
fn payload_len_is_only_valid_on_extended_writes() {
    let (_f, e) = export(Dialect::Standard, true, &[]);
    let extended = Session {
        structured: true,
        extended: true,
        contexts: vec![0],
        status_payload: false,
    };
    assert!(plan(
        &req(cmd::WRITE, flag::PAYLOAD_LEN, 0, 1),
        vec![1],
        &e,
        &extended
    )
    .is_ok());
    assert_eq!(
        errno_of(plan(
            &req(cmd::WRITE, flag::PAYLOAD_LEN, 0, 1),
            vec![1],
            &e,
            &Session::default()
        )),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(plan(
            &req(cmd::BLOCK_STATUS, flag::PAYLOAD_LEN, 0, 16),
            vec![0; 16],
            &e,
            &extended
        )),
        errno::EINVAL
    );
}

#[test]
fn draft_selector_is_not_a_flag_mask() {
    let bitmaps = [BitmapSpec {
        name: "b".into(),
        granularity: 65536,
    }];
    let (_f, e) = export(Dialect::Draft, false, &bitmaps);
    let plain = Session::default();
    let lba = |flags| {
        plan(
            &req(draft::CMD_GET_LBA_STATUS, flags, 0, 4096),
            vec![],
            &e,
            &plain,
        )
    };
    assert!(matches!(
        lba(0),
        Ok(Command::LbaStatus {
            query: DraftQuery::Allocated,
            ..
        })
    ));
    assert!(matches!(
        lba(1),
        Ok(Command::LbaStatus {
            query: DraftQuery::Dirty,
            ..
        })
    ));
    assert!(matches!(
        lba(0x8000),
        Ok(Command::LbaStatus {
            query: DraftQuery::Other(0x8000),
            ..
        })
    ));
    let zero = plan(&req(draft::CMD_GET_LBA_STATUS, 0, 0, 0), vec![], &e, &plain);
    assert_eq!(errno_of(zero), errno::EINVAL);

    let (_g, no_bitmap) = export(Dialect::Draft, false, &[]);
    let dirty = plan(
        &req(draft::CMD_GET_LBA_STATUS, 1, 0, 4096),
        vec![],
        &no_bitmap,
        &plain,
    );
    assert!(matches!(
        dirty,
        Ok(Command::LbaStatus {
            query: DraftQuery::Other(1),
            ..
        })
    ));
}

/// The payload form: the payload's effect length is the area of interest (at the last byte,
/// where the 12-byte payload length would run past the end), its ids the contexts answered.
#[test]
fn the_payload_form_filters_and_says_the_length() {
    let bitmaps = [BitmapSpec {
        name: "b".into(),
        granularity: 65536,
    }];
    let (_f, e) = export(Dialect::Standard, false, &bitmaps);
    let s = Session {
        structured: true,
        extended: true,
        contexts: vec![0, 1],
        status_payload: true,
    };
    let mut payload = vec![0, 0, 0, 0, 0, 0, 0, 1];
    payload.extend(1u32.to_be_bytes());
    let at_end = req(cmd::BLOCK_STATUS, flag::PAYLOAD_LEN, SIZE - 1, 12);
    assert_eq!(
        plan(&at_end, payload.clone(), &e, &s),
        Ok(Command::BlockStatus {
            offset: SIZE - 1,
            length: 1,
            req_one: false,
            only: Some(vec![1]),
        })
    );
    // Without bit 12 on this connection the same request is refused, and never as misuse.
    let unoffered = Session {
        status_payload: false,
        ..s
    };
    let refusal = plan(&at_end, payload, &e, &unoffered).unwrap_err();
    assert_eq!((refusal.errno, refusal.misuse), (errno::EINVAL, false));
}
