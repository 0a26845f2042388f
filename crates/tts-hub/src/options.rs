//! Where the Hub is and where its cache lives: the settings of `huggingface_hub` (Python), read from
//! the same environment variables with the same precedence.
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// How many times a broken download is resumed within one call by default.
pub const DEFAULT_RETRIES: usize = 3;

/// How to reach the Hub and where its cache is.
#[derive(Clone)]
pub struct HubOptions {
    /// The Hub's base URL, without a trailing `/` (`HF_ENDPOINT`; [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The cache directory holding `models--{owner}--{name}/` (`HF_HUB_CACHE`; `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// The access token, sent as `Authorization: Bearer {token}` (`HF_TOKEN`; the token file).
    pub token: Option<String>,
    /// Never use the network: files come from the cache or not at all (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// How many times a broken download is resumed within one call before giving up (the partial
    /// file is kept for the next call either way).
    pub retries: usize,
}

impl HubOptions {
    /// Options for `cache_dir`: the public Hub, no token, online, [`DEFAULT_RETRIES`].
    pub fn new(cache_dir: impl Into<PathBuf>) -> HubOptions {
        HubOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            retries: DEFAULT_RETRIES,
        }
    }

    /// The options of the process environment; see [`HubOptions::from_lookup`].
    pub fn from_env() -> Result<HubOptions> {
        HubOptions::from_lookup(|var| std::env::var(var).ok(), std::env::home_dir().as_deref())
    }

    /// The options `lookup` (an environment variable's value, `None` when unset) and the home
    /// directory give, by the rules of `huggingface_hub`:
    ///
    /// - cache: `HF_HUB_CACHE` (legacy `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, where `HF_HOME`
    ///   defaults to `$XDG_CACHE_HOME/huggingface`, then `~/.cache/huggingface`; a leading `~` is
    ///   expanded;
    /// - endpoint: `HF_ENDPOINT` (an `http://` or `https://` URL), trailing `/` removed;
    /// - token: `HF_TOKEN` (legacy `HUGGING_FACE_HUB_TOKEN`), else the first line of the token file
    ///   `HF_TOKEN_PATH`, default `$HF_HOME/token` (what `huggingface-cli login` writes); empty means
    ///   none;
    /// - offline: `HF_HUB_OFFLINE` (legacy `TRANSFORMERS_OFFLINE`): `1`, `true`, `yes`, `on` turn it
    ///   on, `0`, `false`, `no`, `off` or empty leave it off (any case); another value is an error.
    ///
    /// Only the token file is read from disk. Empty variables count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<HubOptions> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let first = |names: &[&'static str]| names.iter().find_map(|&n| var(n).map(|v| (n, v)));
        let expand = |name: &'static str, value: &str| -> Result<PathBuf> {
            match value.strip_prefix('~') {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => match home {
                    Some(home) => Ok(home.join(rest.trim_start_matches('/'))),
                    None => Err(no_home(name, value)),
                },
                _ => Ok(PathBuf::from(value)),
            }
        };

        let hf_home = match var("HF_HOME") {
            Some(v) => Some(expand("HF_HOME", &v)?),
            None => match (var("XDG_CACHE_HOME"), home) {
                (Some(xdg), _) => Some(expand("XDG_CACHE_HOME", &xdg)?.join("huggingface")),
                (None, Some(home)) => Some(home.join(".cache").join("huggingface")),
                (None, None) => None,
            },
        };
        let cache_dir = match first(&["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"]) {
            Some((name, v)) => expand(name, &v)?,
            None => hf_home.as_ref().map(|h| h.join("hub")).ok_or_else(|| no_home("HF_HOME", ""))?,
        };

        let endpoint = match var("HF_ENDPOINT") {
            Some(v) => {
                let trimmed = v.trim().trim_end_matches('/');
                let host = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
                if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
                    return Err(Error::BadSetting {
                        var: "HF_ENDPOINT",
                        value: v,
                        detail: "expected an http:// or https:// URL, such as https://huggingface.co".into(),
                    });
                }
                trimmed.to_string()
            }
            None => DEFAULT_ENDPOINT.to_string(),
        };

        let token = match first(&["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]) {
            Some((_, v)) => Some(v.trim().to_string()),
            None => {
                let file = match var("HF_TOKEN_PATH") {
                    Some(v) => Some(expand("HF_TOKEN_PATH", &v)?),
                    None => hf_home.as_ref().map(|h| h.join("token")),
                };
                file.and_then(|f| read_token_file(&f))
            }
        };

        let offline = match first(&["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]) {
            None => false,
            Some((name, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(Error::BadSetting {
                        var: name,
                        value: v,
                        detail: "expected 1, true, yes or on (offline), or 0, false, no or off".into(),
                    });
                }
            },
        };

        Ok(HubOptions { endpoint, cache_dir, token, offline, retries: DEFAULT_RETRIES })
    }
}

fn no_home(var: &'static str, value: &str) -> Error {
    Error::BadSetting {
        var,
        value: value.to_string(),
        detail: "no home directory is known: set HF_HUB_CACHE or HF_HOME to a directory for the Hugging Face cache".into(),
    }
}

/// The token in `path`: its first line, trimmed; `None` when the file is missing, unreadable or empty
/// (as `huggingface_hub` does, a bad token file is not an error: the requests go without a token).
fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.lines().next().unwrap_or("").trim();
    (!token.is_empty()).then(|| token.to_string())
}

impl fmt::Debug for HubOptions {
    /// Everything but the token's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("retries", &self.retries)
            .finish()
    }
}
