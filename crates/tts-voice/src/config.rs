//! The `config.json` sections of the cloning models. `config.json` is one flat object shared by
//! every component of a model (tools/reference/README.md); each model here takes the keys it
//! [`Section::owns`] (its prefix, plus any key of another component whose value it must agree with,
//! read without being claimed), parses them with serde (its unknown keys refused by name), and
//! checks them ([`Section::check`]); an error is an [`Error::Config`] naming the file and the key.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tts_kernels::checkpoint::config_json::{self, ConfigJsonError};

use crate::{Error, Result};

/// One model's part of `config.json`.
pub trait Section: DeserializeOwned {
    /// Whether `key` is read by this model.
    fn owns(key: &str) -> bool;
    /// The dimensions fit together; else the key at fault and why.
    fn check(&self) -> std::result::Result<(), (&'static str, String)>;
}

/// The `T` of `v`, a `config.json` object (`file` names it in errors): its defaults overridden by
/// the keys it owns.
pub fn from_json<T: Section>(file: &Path, v: &Value) -> Result<T> {
    let err = |e: ConfigJsonError| Error::Config { file: file.to_path_buf(), key: e.key, detail: e.detail };
    let c: T = config_json::from_keys(config_json::own_keys(v, T::owns).map_err(err)?).map_err(err)?;
    checked(file, c)
}

/// The `T` of the `config.json` in `dir`, or its defaults when there is none (a real model
/// directory has none).
pub fn from_model_dir<T: Section + Default>(dir: &Path) -> Result<T> {
    let path = dir.join("config.json");
    match config_json::read(&path).map_err(|e| Error::Config { file: path.clone(), key: e.key, detail: e.detail })? {
        None => checked(&path, T::default()),
        Some(v) => from_json(&path, &v),
    }
}

/// Checks a config built in memory as [`from_json`] does; the file is `(in memory)`.
pub fn validate<T: Section>(c: &T) -> Result<()> {
    c.check().map_err(|(key, detail)| Error::Config { file: "(in memory)".into(), key: Some(key.into()), detail })
}

fn checked<T: Section>(file: &Path, c: T) -> Result<T> {
    c.check().map_err(|(key, detail)| Error::Config { file: file.to_path_buf(), key: Some(key.into()), detail })?;
    Ok(c)
}
