//! Which servers the harness knows how to start, and which version of each is installed here.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Dialect;

/// A server the harness can launch on a fixture.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// Our own server, run in-process.
    Reference,
    QemuNbd,
    Nbdkit,
    NbdServer,
}

impl ServerKind {
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Reference,
        ServerKind::QemuNbd,
        ServerKind::Nbdkit,
        ServerKind::NbdServer,
    ];

    /// The name used on the command line and in reports; for the others also the program name.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Reference => "reference",
            ServerKind::QemuNbd => "qemu-nbd",
            ServerKind::Nbdkit => "nbdkit",
            ServerKind::NbdServer => "nbd-server",
        }
    }

    /// The installed version ("10.0.2", "1.32.5", "3.24"), or `None` when the program is not
    /// installed. Asked once per process, then remembered.
    pub fn installed_version(self) -> Option<String> {
        static VERSIONS: [OnceLock<Option<String>>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        VERSIONS[self as usize]
            .get_or_init(|| self.ask_version())
            .clone()
    }

    /// The dialects this server can speak: only ours implements the 2016 draft.
    pub fn dialects(self) -> &'static [Dialect] {
        match self {
            ServerKind::Reference => &[Dialect::Standard, Dialect::Draft],
            _ => &[Dialect::Standard],
        }
    }

    /// The Debian package that installs this server; none for the reference server, which
    /// is built in.
    pub fn debian_package(self) -> Option<&'static str> {
        match self {
            ServerKind::Reference => None,
            ServerKind::QemuNbd => Some("qemu-utils"),
            ServerKind::Nbdkit => Some("nbdkit"),
            ServerKind::NbdServer => Some("nbd-server"),
        }
    }

    /// What to tell a user whose machine lacks this server: its name and how to install it.
    pub fn not_installed(self) -> String {
        match self.debian_package() {
            Some(package) => format!(
                "{} is not installed here (Debian: apt-get install {package})",
                self.name()
            ),
            None => format!("{} is not installed here", self.name()),
        }
    }

    fn ask_version(self) -> Option<String> {
        if self == ServerKind::Reference {
            return Some(env!("CARGO_PKG_VERSION").to_owned());
        }
        let mut ran = false;
        for flag in self.version_flags() {
            let Ok(out) = Command::new(self.name())
                .arg(flag)
                .stdin(Stdio::null())
                .output()
            else {
                continue;
            };
            ran = true;
            let text = [out.stdout, out.stderr].concat();
            if let Some(version) = parse_version(&String::from_utf8_lossy(&text)) {
                return Some(version);
            }
        }
        // Installed, but it printed nothing we recognise.
        ran.then(|| "unknown".to_owned())
    }
}

impl ServerKind {
    /// The flags that make the program print its version, in the order to try them.
    pub(super) fn version_flags(self) -> &'static [&'static str] {
        // nbd-server 3.24 knows `-V` ("This is nbd-server version 3.24", on stdout); newer
        // releases also accept `--version`.
        match self {
            ServerKind::Reference => &[],
            ServerKind::NbdServer => &["-V", "--version"],
            ServerKind::QemuNbd | ServerKind::Nbdkit => &["--version"],
        }
    }
}

/// The first word that looks like a version number: "qemu-nbd 10.0.2 (Debian …)" → "10.0.2".
pub(super) fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_each_banner() {
        let banners = [
            (
                "qemu-nbd 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nWritten by",
                "10.0.2",
            ),
            ("nbdkit 1.32.5\n", "1.32.5"),
            ("This is nbd-server version 3.24\n", "3.24"),
        ];
        for (banner, version) in banners {
            assert_eq!(parse_version(banner).as_deref(), Some(version), "{banner}");
        }
        assert_eq!(parse_version("usage: nbd-server [options]"), None);
    }

    #[test]
    fn names_match_the_command_line_values() {
        use clap::ValueEnum;
        for kind in ServerKind::ALL {
            let value = kind.to_possible_value().expect("every kind is selectable");
            assert_eq!(value.get_name(), kind.name());
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
    }
}
