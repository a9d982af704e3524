//! A TOML error as one line, for case and fixture files: where it is (line, column, and the
//! key whose value it is about) and what is wrong. The toml crate's own rendering quotes the
//! source over several lines, which a usage error on a terminal or in a log should not.

/// `line 7, column 31, `offset`: bad number in …`; no position when the error has none.
pub fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    match key_before(before) {
        Some(key) => format!("line {line}, column {column}, `{key}`: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The key that the value starting right after `before` is assigned to (`offset` for
/// `{ offset = `), if it is one.
fn key_before(before: &str) -> Option<&str> {
    let assigned = before.trim_end().strip_suffix('=')?.trim_end();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let start = assigned.rfind(|c: char| !bare(c)).map_or(0, |i| i + 1);
    Some(&assigned[start..]).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Step {
        offset: crate::engine::case::Expr,
    }

    fn error(text: &str) -> String {
        let e = toml::from_str::<Step>(text).expect_err("must not parse");
        one_line(text, &e)
    }

    #[test]
    fn a_bad_value_names_its_line_column_and_key() {
        let e = error("\n\noffset = \"size+banana\"\n");
        assert!(
            e.starts_with("line 3, column 10, `offset`: bad number in \"size+banana\""),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn an_unknown_key_is_one_line_too() {
        let e = error("offset = \"0\"\nofset = \"1\"\n");
        assert!(
            e.starts_with("line 2, column 1: unknown field `ofset`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
