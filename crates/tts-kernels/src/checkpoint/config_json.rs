//! `config.json` of a model directory, read the same way by every model crate: the file (absent
//! means the defaults), its top-level object, and a component's keys deserialized (serde) into its
//! config type, every error naming the key at fault. Each crate wraps [`ConfigJsonError`] into its
//! own error with the file's path.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// What is wrong with a `config.json`: the key at fault when one is, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigJsonError {
    pub key: Option<String>,
    pub detail: String,
}

impl ConfigJsonError {
    fn whole(detail: String) -> ConfigJsonError {
        ConfigJsonError { key: None, detail }
    }
}

/// The JSON value in the file at `path`; `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Value>, ConfigJsonError> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigJsonError::whole(format!("cannot read: {e}"))),
        Ok(bytes) => bytes,
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| ConfigJsonError::whole(format!("not valid JSON: {e}")))
}

/// The keys of `v` that `keep` selects (a component's own keys), or an error when `v` is not an object.
pub fn own_keys(v: &Value, keep: impl Fn(&str) -> bool) -> Result<Map<String, Value>, ConfigJsonError> {
    let obj = v.as_object().ok_or_else(|| ConfigJsonError::whole(format!("expected a JSON object, found {}", json_kind(v))))?;
    Ok(obj.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Removes `key` from `keys` and deserializes its value; an error names the key.
pub fn take_key<T: DeserializeOwned>(keys: &mut Map<String, Value>, key: &str) -> Result<Option<T>, ConfigJsonError> {
    keys.remove(key)
        .map(|v| serde_json::from_value(v).map_err(|e| ConfigJsonError { key: Some(key.to_string()), detail: e.to_string() }))
        .transpose()
}

/// Deserializes `keys` into `T`. serde_json's message names an unknown key but not the key whose
/// value has the wrong type, so on an error each key is tried alone to find the one at fault.
pub fn from_keys<T: DeserializeOwned>(keys: Map<String, Value>) -> Result<T, ConfigJsonError> {
    serde_json::from_value(Value::Object(keys.clone())).map_err(|all| {
        let alone = |(k, v): (&String, &Value)| {
            let one = Map::from_iter([(k.clone(), v.clone())]);
            serde_json::from_value::<T>(Value::Object(one)).err().map(|e| (k.clone(), e))
        };
        match keys.iter().find_map(alone) {
            Some((k, e)) => ConfigJsonError { key: Some(k), detail: e.to_string() },
            None => ConfigJsonError::whole(all.to_string()),
        }
    })
}

/// "an array", "a string", ...: what a JSON value is, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Dims {
        width: usize,
        depth: u32,
    }

    impl Default for Dims {
        fn default() -> Self {
            Dims { width: 7, depth: 3 }
        }
    }

    fn keys(v: Value) -> Map<String, Value> {
        own_keys(&v, |_| true).unwrap()
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let ok: Dims = from_keys(keys(serde_json::json!({"width": 9}))).unwrap();
        assert_eq!(ok, Dims { width: 9, depth: 3 });
        let e = from_keys::<Dims>(keys(serde_json::json!({"width": 9, "depth": "deep"}))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("depth"), "{e:?}");
        let e = from_keys::<Dims>(keys(serde_json::json!({"width": 9, "widht": 1}))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("widht"), "{e:?}");
        assert!(e.detail.contains("unknown field"), "{e:?}");
        let e = from_keys::<Dims>(keys(serde_json::json!({"depth": 4294967296u64}))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("depth"), "{e:?}");
        let mut k = keys(serde_json::json!({"extra": "x", "width": 1}));
        assert_eq!(take_key::<String>(&mut k, "extra").unwrap().as_deref(), Some("x"));
        assert_eq!(take_key::<u32>(&mut k, "missing").unwrap(), None);
        let e = take_key::<u32>(&mut k, "width")
            .map(|_| ())
            .and_then(|_| take_key::<u32>(&mut keys(serde_json::json!({"w": -1})), "w"));
        assert_eq!(e.unwrap_err().key.as_deref(), Some("w"));
        let e = own_keys(&serde_json::json!([1]), |_| true).unwrap_err();
        assert_eq!((e.key, e.detail.as_str()), (None, "expected a JSON object, found an array"));
    }

    #[test]
    fn a_missing_file_is_none_and_bad_json_an_error() {
        let dir = std::env::temp_dir().join(format!("tts-config-json-{}-{}", std::process::id(), crate::testing::fresh_seed()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir.join("config.json")).unwrap(), None);
        std::fs::write(dir.join("config.json"), b"{\"a\": 1,").unwrap();
        let e = read(&dir.join("config.json")).unwrap_err();
        assert!(e.key.is_none() && e.detail.starts_with("not valid JSON"), "{e:?}");
        std::fs::write(dir.join("config.json"), b"{\"a\": 1}").unwrap();
        assert_eq!(read(&dir.join("config.json")).unwrap(), Some(serde_json::json!({"a": 1})));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
