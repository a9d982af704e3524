//! `--spawn` command templates: any server, started by the harness on each fixture.
//!
//! A template is a command line with placeholders, e.g.
//! `nbdkit -f -r -U {socket} file {raw}`. It is split into words the way a POSIX shell splits a
//! simple command (blanks separate words; single quotes, double quotes and backslashes quote),
//! but no shell runs it: placeholders are filled in word by word and the program is started
//! directly, so the harness can stop exactly the process it started, and a path with spaces
//! never needs quoting. A server that needs a shell can be given one: `sh -c '…'` is a template
//! like any other (the shell then has to `exec` the server, or stopping it stops only the shell).

use std::fmt;
use std::path::Path;

/// The placeholders a template may use, with what they stand for (for `--help` and errors).
pub const PLACEHOLDERS: [(&str, &str); 6] = [
    ("{raw}", "the fixture as a raw sparse image"),
    (
        "{qcow2}",
        "the fixture as qcow2 (zero clusters, persistent bitmaps, backing file)",
    ),
    (
        "{socket}",
        "a Unix socket path in a private temp dir: serve on it",
    ),
    (
        "{port}",
        "a free TCP port on 127.0.0.1: serve on it (instead of {socket})",
    ),
    ("{export}", "the export name the cases ask for"),
    (
        "{dir}",
        "the server's private temp dir (for configs, pid files, logs)",
    ),
];

/// A parsed `--spawn` template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpawnTemplate {
    /// The template as the user wrote it.
    text: String,
    /// Its words, placeholders still in them.
    words: Vec<String>,
    /// The dirty bitmaps the server exports of its own (`--bitmap`), standing in, in order,
    /// for the fixture's: the template cannot pass it the fixture's.
    bitmaps: Vec<String>,
}

/// Where the spawned server listens, chosen by the harness before it starts the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Socket,
    Port,
}

/// The values a template's placeholders take for one launch.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub raw: &'a Path,
    pub qcow2: &'a Path,
    pub socket: &'a Path,
    pub port: u16,
    pub export: &'a str,
    pub dir: &'a Path,
}

impl SpawnTemplate {
    /// Parses and checks a template: it must name a program, use only known placeholders, and
    /// say where to listen (`{socket}` or `{port}`, not both).
    pub fn parse(text: &str) -> Result<SpawnTemplate, String> {
        let words = split_words(text)?;
        if words.is_empty() {
            return Err("the --spawn template is empty".into());
        }
        for word in &words {
            check_placeholders(word)?;
        }
        let uses = |p: &str| words.iter().any(|w| w.contains(p));
        match (uses("{socket}"), uses("{port}")) {
            (true, true) => {
                Err("the --spawn template uses both {socket} and {port}; pick one".into())
            }
            (false, false) => Err(
                "the --spawn template must say where the server listens: put {socket} (a Unix \
                 socket path) or {port} (a TCP port on 127.0.0.1) in it"
                    .into(),
            ),
            _ => Ok(SpawnTemplate {
                text: text.to_owned(),
                words,
                bitmaps: Vec::new(),
            }),
        }
    }

    /// The template whose server exports these dirty bitmaps of its own (`--bitmap NAME`):
    /// the cases ask for them, in order, instead of the fixture's (`bm0`, `bm1`).
    pub fn with_bitmaps(self, bitmaps: Vec<String>) -> SpawnTemplate {
        SpawnTemplate { bitmaps, ..self }
    }

    /// The server's own dirty bitmaps (empty: the fixture's names are the server's).
    pub fn bitmaps(&self) -> &[String] {
        &self.bitmaps
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The program's file name, to name the server in reports ("my-server" for
    /// `/opt/bin/my-server --port {port}`).
    pub fn program_name(&self) -> String {
        let program = &self.words[0];
        Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
    }

    pub fn listen(&self) -> Listen {
        if self.words.iter().any(|w| w.contains("{port}")) {
            Listen::Port
        } else {
            Listen::Socket
        }
    }

    /// The program and its arguments with every placeholder filled in.
    pub fn render(&self, values: &Values<'_>) -> Vec<String> {
        let port = values.port.to_string();
        let raw = values.raw.to_string_lossy();
        let qcow2 = values.qcow2.to_string_lossy();
        let socket = values.socket.to_string_lossy();
        let dir = values.dir.to_string_lossy();
        let table: [(&str, &str); 6] = [
            ("{raw}", &raw),
            ("{qcow2}", &qcow2),
            ("{socket}", &socket),
            ("{port}", &port),
            ("{export}", values.export),
            ("{dir}", &dir),
        ];
        self.words.iter().map(|word| fill(word, &table)).collect()
    }
}

impl fmt::Display for SpawnTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Replaces every `{name}` in one left-to-right pass, so a value that happens to contain a
/// placeholder's text (a path named `{raw}`) is never expanded again.
fn fill(word: &str, table: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match table.iter().find(|(name, _)| tail.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &tail[name.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every `{…}` in a word must be a known placeholder: a typo such as `{sock}` would otherwise
/// reach the server as a literal argument and fail far from its cause.
fn check_placeholders(word: &str) -> Result<(), String> {
    let mut rest = word;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start..];
        let Some(end) = tail.find('}') else {
            return Ok(());
        };
        let name = &tail[..=end];
        // `${x}` is shell syntax the user meant literally (no shell runs a template).
        let after_dollar = rest[..start].ends_with('$');
        let is_name = name[1..end]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if is_name && !after_dollar && end > 1 && !PLACEHOLDERS.iter().any(|(p, _)| *p == name) {
            let known: Vec<&str> = PLACEHOLDERS.iter().map(|(p, _)| *p).collect();
            return Err(format!(
                "the --spawn template uses {name}, which is not a placeholder (known: {})",
                known.join(" ")
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

/// Splits like a POSIX shell splits a simple command, without expansions: blanks separate
/// words, `'…'` quotes everything, `"…"` quotes everything but `\"`, `\\`, `\$` and `` \` ``,
/// and a backslash outside quotes quotes the next character.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("the --spawn template has an unclosed '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("the --spawn template has an unclosed \"".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("the --spawn template has an unclosed \"".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("the --spawn template ends with a lone backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn values<'a>(socket: &'a Path, dir: &'a Path) -> Values<'a> {
        Values {
            raw: Path::new("/fx/a b.raw"),
            qcow2: Path::new("/fx/a.qcow2"),
            socket,
            port: 10999,
            export: "conform",
            dir,
        }
    }

    #[test]
    fn words_split_like_a_shell_without_expansions() {
        assert_eq!(
            split_words(r#"srv  -a 'x y' "p \"q\" $HOME" c\ d ''"#).unwrap(),
            ["srv", "-a", "x y", "p \"q\" $HOME", "c d", ""]
        );
        assert!(split_words("srv 'open").is_err());
        assert!(split_words("srv \"open").is_err());
        assert!(split_words("srv \\").is_err());
    }

    #[test]
    fn placeholders_fill_whole_words_and_parts_of_words() {
        let t = SpawnTemplate::parse("/opt/bin/srv --unix={socket} -e {export} {raw}").unwrap();
        let (socket, dir) = (PathBuf::from("/t/nbd.sock"), PathBuf::from("/t"));
        assert_eq!(
            t.render(&values(&socket, &dir)),
            [
                "/opt/bin/srv",
                "--unix=/t/nbd.sock",
                "-e",
                "conform",
                "/fx/a b.raw"
            ]
        );
        assert_eq!(t.program_name(), "srv");
        assert_eq!(t.listen(), Listen::Socket);
        let t = SpawnTemplate::parse("srv -p {port} -C {dir}/x.conf {qcow2}").unwrap();
        assert_eq!(t.listen(), Listen::Port);
        assert_eq!(
            t.render(&values(&socket, &dir)),
            ["srv", "-p", "10999", "-C", "/t/x.conf", "/fx/a.qcow2"]
        );
    }

    #[test]
    fn a_value_is_never_expanded_twice() {
        let t = SpawnTemplate::parse("srv {socket} {raw}").unwrap();
        let (socket, dir) = (PathBuf::from("/t/{raw}"), PathBuf::from("/t"));
        assert_eq!(
            t.render(&values(&socket, &dir)),
            ["srv", "/t/{raw}", "/fx/a b.raw"]
        );
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("srv {raw}", "where the server listens"),
            ("srv {socket} {port}", "both"),
            ("srv {sock} {socket}", "{sock}"),
            ("srv 'x {socket}", "unclosed"),
        ] {
            let e = SpawnTemplate::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // Braces that are not placeholder-shaped (JSON, shell `${x}`) pass through.
        assert!(SpawnTemplate::parse(r#"srv {socket} --json {"a":1} ${x}"#).is_ok());
    }
}
