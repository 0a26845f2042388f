//! The body of `POST /v1/audio/speech`: OpenAI's fields and Chatterbox's settings, each checked
//! by name (an error's `param` is the field).
//!
//! - `input` (required): the text, at most `max_input_chars` characters (more: 413).
//! - `model`: any string, ignored (one model is served; OpenAI clients send `tts-1`).
//! - `voice`: the built-in voice, by `"default"` or any of OpenAI's voice names (`alloy`, `ash`,
//!   `ballad`, `coral`, `echo`, `fable`, `nova`, `onyx`, `sage`, `shimmer`, `verse`, `marin`,
//!   `cedar`), or absent; otherwise the id of an uploaded voice (`POST /v1/voices`), looked up by the
//!   handler (unknown: 404).
//! - `response_format`: `wav` (default: OpenAI's is mp3, which is not served), `flac` (16-bit,
//!   whole responses only) or `pcm` (s16 little-endian, 24 kHz mono, as OpenAI's); others: 400
//!   naming these.
//! - `speed`: 0.25 to 4.0 (default 1.0): the speech that much faster at the same pitch (WSOLA,
//!   [`crate::stretch`]); whole responses only (with `stream_format`: 400).
//! - `stream_format`: `"audio"` streams the audio as it is produced (chunked transfer); `"sse"`
//!   sends it as server-sent events (OpenAI's `speech.audio.delta` with base64 audio, then
//!   `speech.audio.done`); absent: the whole file at once.
//! - `exaggeration`, `cfg_weight`, `temperature`, `min_p`, `top_p`, `repetition_penalty`, `seed`,
//!   `max_new_tokens`: Chatterbox's settings ([`SpeakOptions`]; defaults as `tts speak`).
//! - `instructions`: OpenAI's field for its instructable voices: accepted and ignored.
//! - Any other field: 400 naming it (a typo in a setting must not pass silently).
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::voices::BUILTIN_VOICE_ID;
use crate::output::Container;
use crate::speak::SpeakOptions;
use crate::synthesize::{Request, check_text};

/// OpenAI's voice names, all spoken with the built-in voice.
pub const OPENAI_VOICES: [&str; 13] =
    ["alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"];

/// Every field the endpoint takes.
pub const FIELDS: [&str; 16] = [
    "model",
    "input",
    "voice",
    "response_format",
    "speed",
    "stream_format",
    "instructions",
    "exaggeration",
    "cfg_weight",
    "temperature",
    "min_p",
    "top_p",
    "repetition_penalty",
    "seed",
    "max_new_tokens",
    "cfm_steps",
];

/// An error answered in OpenAI's JSON shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A short machine-readable code (`invalid_value`, `unknown_field`, `queue_full`, ...).
    pub code: String,
}

impl ApiError {
    fn bad(param: &str, message: String, code: &str) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message, param: Some(param.into()), code: code.into() }
    }
}

/// How a response is streamed (`stream_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// `"audio"`: the audio bytes as they are produced (chunked transfer).
    Audio,
    /// `"sse"`: server-sent events, OpenAI's `speech.audio.delta` (base64 audio) and
    /// `speech.audio.done`.
    Sse,
}

/// A checked speech request.
#[derive(Debug)]
pub struct SpeechRequest {
    /// The request, in the built-in voice ([`SpeechRequest::voice_id`] names another).
    pub request: Request,
    /// An uploaded voice's id (`POST /v1/voices`), to be looked up; `None`: the built-in voice.
    pub voice_id: Option<String>,
    /// `wav` or `pcm` (`flac` is sent as [`SpeechRequest::flac`] says).
    pub container: Container,
    /// `response_format: "flac"` (whole responses only).
    pub flac: bool,
    /// `None`: the whole file at once.
    pub stream: Option<StreamFormat>,
    /// The audio played this many times faster at the same pitch ([`crate::stretch`]; whole
    /// responses only).
    pub speed: f64,
}

/// `field` of `map` as a `T` (absent or null: `None`); a value of the wrong type names the field.
fn take<T: DeserializeOwned>(map: &Map<String, Value>, field: &str) -> Result<Option<T>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::bad(field, format!("{field}: {e} (got {v})"), "invalid_type")),
    }
}

impl SpeechRequest {
    /// Parses and checks a request body (JSON), the settings included, before it is queued.
    pub fn parse(body: &[u8], max_input_chars: usize) -> Result<SpeechRequest, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("the body is not valid JSON: {e}"),
            param: None,
            code: "invalid_json".into(),
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: "the body must be a JSON object".into(),
                param: None,
                code: "invalid_json".into(),
            });
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ApiError::bad(
                unknown,
                format!("unknown field {unknown:?}; the fields are {}", FIELDS.join(", ")),
                "unknown_field",
            ));
        }
        let _model: Option<String> = take(&map, "model")?;
        let _instructions: Option<String> = take(&map, "instructions")?;
        let Some(input) = take::<String>(&map, "input")? else {
            return Err(ApiError::bad("input", "input: the text to speak is required".into(), "missing_field"));
        };
        if let Err(e) = check_text(0, &input, max_input_chars) {
            let mut err = ApiError::from_engine(&e);
            err.message = format!("input: {}", e.to_string().trim_start_matches("text 0: "));
            if err.status == StatusCode::PAYLOAD_TOO_LARGE {
                err.message = format!("input has {} characters, more than the {max_input_chars} allowed", input.chars().count());
            }
            return Err(err);
        }
        let voice_id = match take::<String>(&map, "voice")? {
            None => None,
            Some(v) if v == BUILTIN_VOICE_ID || OPENAI_VOICES.contains(&v.as_str()) => None,
            Some(v) => Some(v),
        };
        let (container, flac) = match take::<String>(&map, "response_format")?.as_deref() {
            None | Some("wav") => (Container::Wav, false),
            Some("pcm") => (Container::Pcm, false),
            Some("flac") => (Container::Wav, true),
            Some(f) => {
                return Err(ApiError::bad(
                    "response_format",
                    format!("response_format {f:?} is not supported: use \"wav\", \"flac\" or \"pcm\" (s16le, 24 kHz mono)"),
                    "invalid_value",
                ));
            }
        };
        let speed = take::<f64>(&map, "speed")?.unwrap_or(1.0);
        crate::stretch::check_speed(speed)
            .map_err(|_| ApiError::bad("speed", format!("speed {speed} is out of range: 0.25 to 4.0"), "invalid_value"))?;
        let stream = match take::<String>(&map, "stream_format")?.as_deref() {
            None => None,
            Some("audio") => Some(StreamFormat::Audio),
            Some("sse") => Some(StreamFormat::Sse),
            Some(f) => {
                return Err(ApiError::bad(
                    "stream_format",
                    format!(
                        "stream_format {f:?} is not supported: use \"audio\" (chunked audio), \"sse\" (server-sent events) or leave it out"
                    ),
                    "invalid_value",
                ));
            }
        };
        if flac && stream.is_some() {
            return Err(ApiError::bad(
                "response_format",
                "flac is sent whole: leave stream_format out, or stream \"wav\" or \"pcm\"".into(),
                "invalid_value",
            ));
        }
        if speed != 1.0 && stream.is_some() {
            return Err(ApiError::bad(
                "speed",
                format!("speed {speed} needs a whole response: leave stream_format out (streams play at speed 1.0)"),
                "invalid_value",
            ));
        }
        let mut options = SpeakOptions::default();
        for (field, slot) in [
            ("exaggeration", &mut options.exaggeration),
            ("cfg_weight", &mut options.cfg_weight),
            ("temperature", &mut options.temperature),
            ("min_p", &mut options.min_p),
            ("top_p", &mut options.top_p),
            ("repetition_penalty", &mut options.repetition_penalty),
        ] {
            if let Some(v) = take::<f32>(&map, field)? {
                *slot = v;
            }
        }
        if let Some(seed) = take::<u64>(&map, "seed")? {
            options.seed = seed;
        }
        if let Some(n) = take::<usize>(&map, "max_new_tokens")? {
            options.max_new_tokens = n;
        }
        if let Some(n) = take::<usize>(&map, "cfm_steps")? {
            options.cfm_steps = n;
        }
        options.validate().map_err(|e| {
            let mut err = ApiError::from_engine(&e);
            err.code = "invalid_value".into();
            err
        })?;
        Ok(SpeechRequest { request: Request::new(input).with_options(options), voice_id, container, flac, stream, speed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn parse(body: &str) -> Result<SpeechRequest, ApiError> {
        SpeechRequest::parse(body.as_bytes(), 100)
    }

    #[test]
    fn settings_are_read_by_name() {
        let (mut rng, _) = Rng::fresh();
        let (seed, t, n) = (rng.next(), rng.uniform(0.1, 2.0) as f32, 1 + rng.below(50));
        let r = parse(&format!(
            r#"{{"model":"tts-1","input":"Hello there.","voice":"alloy","response_format":"pcm","speed":1.0,
                "stream_format":"audio","seed":{seed},"temperature":{t},"max_new_tokens":{n},"instructions":"calm"}}"#
        ))
        .unwrap();
        assert_eq!(r.container, Container::Pcm);
        assert_eq!(r.stream, Some(StreamFormat::Audio));
        assert_eq!(parse(r#"{"input":"hi","stream_format":"sse"}"#).unwrap().stream, Some(StreamFormat::Sse));
        assert_eq!(parse(r#"{"input":"hi"}"#).unwrap().stream, None);
        assert_eq!(parse(r#"{"input":"hi","speed":0.5}"#).unwrap().speed, 0.5);
        assert_eq!(r.request.options.seed, seed);
        assert_eq!(r.request.options.temperature, t);
        assert_eq!(r.request.options.max_new_tokens, n);
        assert_eq!(r.request.text, "Hello there.");
        assert_eq!(r.voice_id, None, "OpenAI's voice names are the built-in voice");
        assert_eq!(parse(r#"{"input":"hi","voice":"default"}"#).unwrap().voice_id, None);
        let id = "voice_0123456789abcdef01234567";
        assert_eq!(parse(&format!(r#"{{"input":"hi","voice":"{id}"}}"#)).unwrap().voice_id.as_deref(), Some(id));
    }

    #[test]
    fn each_bad_field_is_named() {
        for (body, param, status) in [
            (r#"{"input":"hi","speed":4.5}"#, "speed", 400),
            (r#"{"input":"hi","speed":0}"#, "speed", 400),
            (r#"{"input":"hi","speed":1.5,"stream_format":"audio"}"#, "speed", 400),
            (r#"{"input":"hi","response_format":"mp3"}"#, "response_format", 400),
            (r#"{"input":"hi","response_format":"flac","stream_format":"audio"}"#, "response_format", 400),
            (r#"{"input":"hi","stream_format":"websocket"}"#, "stream_format", 400),
            (r#"{"input":"hi","temperature":0}"#, "temperature", 400),
            (r#"{"input":"hi","top_p":"high"}"#, "top_p", 400),
            (r#"{"input":"hi","colour":"blue"}"#, "colour", 400),
            (r#"{"input":""}"#, "input", 400),
            (r#"{"voice":"alloy"}"#, "input", 400),
        ] {
            let e = parse(body).expect_err(body);
            assert_eq!((e.param.as_deref(), e.status.as_u16()), (Some(param), status), "{body}: {e:?}");
        }
        let long = format!(r#"{{"input":"{}"}}"#, "a".repeat(101));
        let e = parse(&long).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("100"), "{}", e.message);
        for body in ["{", "[1,2]", "\"text\""] {
            assert_eq!(parse(body).unwrap_err().code, "invalid_json", "{body}");
        }
    }
}
