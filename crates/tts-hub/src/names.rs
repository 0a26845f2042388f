//! What a Hub repository id, a revision and a file name may be. Each of them becomes part of a path in
//! the cache (`models--{owner}--{name}/refs/{revision}`, `snapshots/{commit}/{file}`) and of a URL,
//! so anything that could climb out of the cache (`..`, an absolute path) or break the URL is refused.

/// Why `id` is not a Hub repository id `owner/name`, or `None` when it is one.
///
/// The rules of `huggingface_hub.utils.validate_repo_id`, with ASCII word characters: exactly one `/`;
/// each part 1 to 96 of `A-Z a-z 0-9 _ - .`, starting and ending with a letter, digit or `_`; no `--`
/// and no `..` anywhere.
pub fn repo_id_problem(id: &str) -> Option<String> {
    let Some((owner, name)) = id.split_once('/') else {
        return Some("a Hub repository id has the form owner/name".into());
    };
    if name.contains('/') {
        return Some("a Hub repository id has exactly one '/' (owner/name)".into());
    }
    if id.contains("--") || id.contains("..") {
        return Some("a Hub repository id cannot contain \"--\" or \"..\"".into());
    }
    for (part, what) in [(owner, "owner"), (name, "name")] {
        if part.is_empty() || part.len() > 96 {
            return Some(format!("the {what} part must have 1 to 96 characters"));
        }
        if let Some(c) = part.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Some(format!("{c:?} is not allowed (letters, digits, '_', '-' and '.' only)"));
        }
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if !part.starts_with(word) || !part.ends_with(word) {
            return Some(format!("the {what} part must start and end with a letter, a digit or '_'"));
        }
    }
    None
}

/// Why `rev` is not a revision (a branch, tag or commit; `refs/pr/1` style names included), or `None`.
/// Allowed: 1 to 255 of `A-Z a-z 0-9 _ - . /`, `/`-separated parts that are neither empty nor `.` or
/// `..`, not starting with `.` (git's own rules are stricter; this keeps the cache path safe).
pub fn revision_problem(rev: &str) -> Option<String> {
    if rev.is_empty() || rev.len() > 255 {
        return Some("a revision has 1 to 255 characters".into());
    }
    if let Some(c) = rev.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))) {
        return Some(format!("{c:?} is not allowed in a revision (letters, digits, '_', '-', '.' and '/')"));
    }
    if rev.split('/').any(|part| part.is_empty() || part.starts_with('.')) {
        return Some("each '/'-separated part of a revision must be non-empty and not start with '.'".into());
    }
    None
}

/// Why `name` cannot be the path of a file inside a repository, or `None`: it must be relative,
/// `/`-separated, with parts that are neither empty nor `.` or `..`, and hold no backslash, no
/// control character and no `%`/`?`/`#` (they would change the URL).
pub fn file_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".into());
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || matches!(c, '\\' | '%' | '?' | '#')) {
        return Some(format!("{c:?} is not allowed in a repository file name"));
    }
    if name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Some("must be a relative path without empty, '.' or '..' parts".into());
    }
    None
}

/// Whether `s` is a full commit id (40 hexadecimal digits, lower case as the Hub writes them; 64 for
/// SHA-256 repositories).
pub fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["ResembleAI/chatterbox", "a/b", "o_1/n-2.x", "_a/b_"] {
            assert_eq!(repo_id_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a",
            "a/b/c",
            "/b",
            "a/",
            "a--b/c",
            "a/b..c",
            "-a/b",
            "a/b-",
            "a/.b",
            "a b/c",
            "a/ü",
            &format!("a/{}", "x".repeat(97)),
        ] {
            assert!(repo_id_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn revisions() {
        for ok in ["main", "v1.0", "refs/pr/1", "0123456789abcdef0123456789abcdef01234567", "feature_x-2"] {
            assert_eq!(revision_problem(ok), None, "{ok}");
        }
        for bad in ["", "..", "../x", "a/../b", "/main", "main/", "a//b", ".hidden", "a b", "a\\b", "a:b", &"x".repeat(256)] {
            assert!(revision_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["t3_cfg.safetensors", "sub/dir/x.json", ".gitattributes"] {
            assert_eq!(file_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\nb", "a%2Fb", "a?b", "a#b", "a/"] {
            assert!(file_name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id(&"a1".repeat(20)));
        assert!(is_commit_id(&"0f".repeat(32)));
        assert!(!is_commit_id(&"A1".repeat(20)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id(&"a".repeat(41)));
        assert!(!is_commit_id(&"g".repeat(40)));
    }
}
