//! The configurations `real_servers` starts by hand: the program, its arguments, the image it
//! serves, the real deviations it shows (with the spec's word for each) and what a correct
//! verdict on it is.

/// A real deviation a server shows, with the spec's word for it.
pub(super) struct Known {
    pub(super) case: &'static str,
    pub(super) clause: &'static str,
}

/// nbdkit (1.32.5 here) answers SET_META_CONTEXT ["base:allocation", "base:allocation"] with
/// two META_CONTEXT replies carrying the same id: "NBD_OPT_SET_META_CONTEXT" wants one reply
/// per selected context, each with a unique id (MUST).
pub(super) const NBDKIT_DUPLICATE_QUERY: Known = Known {
    case: "neg.set.duplicate-query",
    clause: "SMC-REPLY-1",
};

/// What a configuration's run must show beyond "no false verdict".
#[derive(Clone, Copy)]
pub(super) enum Expect {
    /// Nothing else.
    Fair,
    /// The suite must catch this (the server lies): at least one case fails under the clause.
    Caught(&'static str),
    /// The server dies on one case's request; run one case at a time, the suite must name it.
    /// Only where the installed version has the bug (`nbdkit 1.32.`); elsewhere: `Fair`.
    DiesOn(&'static str, &'static str),
    /// The server serves one client and exits: the run cannot test, and must say why.
    SingleClient,
    /// The server does what this case is about (its backend fails): the case must pass, not
    /// be unsupported.
    Passes(&'static str),
}

pub(super) struct Config {
    pub(super) name: &'static str,
    pub(super) program: &'static str,
    /// `{socket}` and `{image}` are filled in.
    pub(super) args: &'static [&'static str],
    pub(super) image: Image,
    pub(super) known: &'static [Known],
    pub(super) expect: Expect,
    /// Case id prefixes to run (all when empty): a slow server gets a few cases.
    pub(super) only: &'static [&'static str],
    /// Dirty bitmaps the cases must find (by LIST) and test.
    pub(super) bitmaps: &'static [&'static str],
}

#[derive(Clone, Copy)]
pub(super) enum Image {
    /// Sparse raw of this size, data at 1000 (70,000 bytes) and at 3 MiB (5,000 bytes) where
    /// they fit.
    Raw(u64),
    /// 8 MiB raw, data at 0 (100 bytes) and at 3 MiB + 12345 (1,000 bytes), and an extent
    /// list for nbdkit's extentlist filter that calls everything after 64 KiB a hole.
    LyingExtents,
    /// 8 GiB raw with four bytes at 5 GiB: one hole of 5 GiB first.
    BigHole,
    /// qcow2 of this size with data, zero clusters and two bitmaps added before writes.
    Qcow2(u64),
    /// qcow2 over a qcow2 backing file: data in both layers.
    BackingChain,
}

pub(super) const G: u64 = 1 << 30;
pub(super) const M: u64 = 1 << 20;

pub(super) const CONFIGS: &[Config] = &[
    Config {
        name: "nbdkit-blocksize-policy-4k-min",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=blocksize-policy",
            "file",
            "{image}",
            "blocksize-minimum=4096",
            "blocksize-preferred=65536",
            "blocksize-maximum=1M",
            "blocksize-error-policy=error",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-blocksize-512-on-1000-bytes",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=blocksize",
            "file",
            "{image}",
            "minblock=512",
        ],
        image: Image::Raw(1000),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-truncate-to-4g-plus-1",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=truncate",
            "file",
            "{image}",
            "truncate=4294967297",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-cow",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "--filter=cow", "file", "{image}"],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-offset-and-cacheextents",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=cacheextents",
            "--filter=offset",
            "file",
            "{image}",
            "offset=1M",
            "range=8M",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-noextents",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=noextents",
            "file",
            "{image}",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-data-plugin",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "data",
            "1 2 3 @0x100000 4 5 6 @0x300000 0 * 65536",
            "size=4M",
        ],
        image: Image::Raw(0),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // 6 s per extents call: correct, only slow (it once failed BS-COMPLETE-1).
        name: "nbdkit-delay-extents-6s",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=delay",
            "file",
            "{image}",
            "delay-extents=6",
        ],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::Fair,
        only: &["bs.range", "oracle.mixed.full-map"],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-extentlist-that-lies",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=extentlist",
            "file",
            "{image}",
            "extentlist={image}.extents",
        ],
        image: Image::LyingExtents,
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Caught("ALLOC-ZERO-1"),
        only: &[],
        bitmaps: &[],
    },
    Config {
        // nbdkit 1.32.5 aborts on a 0xffffffff-byte block status over a big hole
        // (CVE-2025-47711: "Assertion `e.length <= length' failed").
        name: "nbdkit-file-8g",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "-r", "file", "{image}"],
        image: Image::BigHole,
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::DiesOn("bs.big.max-compact-length-in-bounds", "nbdkit 1.32."),
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-raw-8g",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "raw", "-x", "disk", "-k", "{socket}", "{image}",
        ],
        image: Image::Raw(8 * G),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-qcow2-8g-bitmaps-by-other-names",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "qcow2", "-x", "disk", "-B", "backup-a", "-B", "backup-b", "-k",
            "{socket}", "{image}",
        ],
        image: Image::Qcow2(8 * G),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &["backup-a", "backup-b"],
    },
    Config {
        name: "qemu-nbd-raw-window-of-a-file",
        program: "qemu-nbd",
        args: &[
            "-t",
            "-r",
            "--image-opts",
            "-k",
            "{socket}",
            "driver=raw,offset=1048576,size=33554432,file.driver=file,file.filename={image}",
        ],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-backing-chain-allocation-depth",
        program: "qemu-nbd",
        args: &["-t", "-r", "-f", "qcow2", "-A", "-k", "{socket}", "{image}"],
        image: Image::BackingChain,
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // Every extents call fails with EIO in the backend (issue 9 §2.6): nbdkit answers
        // with an ERROR chunk, which the backend cases are about.
        name: "nbdkit-error-filter-extents-eio",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=error",
            "file",
            "{image}",
            "error-extents=EIO",
            "error-extents-rate=100%",
        ],
        image: Image::Raw(4 * M),
        known: &[],
        expect: Expect::Passes("bs.backend.status-fails"),
        only: &["bs.backend"],
        bitmaps: &[],
    },
    Config {
        // An empty export (issue 9 §2.6): every request a case means is empty or past the
        // end here, so the cases that cannot mean anything on it must be unsupported.
        name: "nbdkit-null-size-0",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "-r", "null", "size=0"],
        image: Image::Raw(0),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-raw-size-0",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "raw", "-x", "disk", "-k", "{socket}", "{image}",
        ],
        image: Image::Raw(0),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // Without --persistent qemu-nbd serves one client and exits: no verdict is possible,
        // and the run must say so instead of calling the server conformant.
        name: "qemu-nbd-not-persistent",
        program: "qemu-nbd",
        args: &["-r", "-f", "raw", "-k", "{socket}", "{image}"],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::SingleClient,
        only: &[],
        bitmaps: &[],
    },
];
