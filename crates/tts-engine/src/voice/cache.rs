//! Voices by content: what a voice file is (sniffed from its bytes, not its name), and a bounded
//! cache of the voices computed or read, keyed by the SHA-256 of the file's bytes, so a voice used by
//! many requests is read or computed once.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Conditionals;
use super::saved::VoiceMeta;

/// What a voice file holds, judged by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoiceFileKind {
    /// A zip archive: torch's format, the reference's `conds.pt`.
    CondsPt,
    /// A safetensors file: a saved voice (`voice.safetensors`).
    Saved,
    /// Anything else: a reference recording (WAV, FLAC, MP3), decoded and cloned; a file that is
    /// not audio either fails there, with the decoder's reason.
    Audio,
}

impl VoiceFileKind {
    /// Sniffs `bytes`: `PK\x03\x04` is a zip; an 8-byte little-endian header length that fits the
    /// file, followed by `{`, is safetensors; anything else is taken for audio.
    pub fn sniff(bytes: &[u8]) -> VoiceFileKind {
        if bytes.starts_with(b"PK\x03\x04") {
            return VoiceFileKind::CondsPt;
        }
        if bytes.len() > 9 {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            if n >= 2 && n <= (bytes.len() - 8) as u64 && bytes[8] == b'{' {
                return VoiceFileKind::Saved;
            }
        }
        VoiceFileKind::Audio
    }
}

/// SHA-256 of `bytes`, the cache key of a voice file.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the engine caches per voice file: the voice and the metadata a saved voice of it carries.
pub type CachedVoice = (Arc<Conditionals>, Arc<VoiceMeta>);

/// A bounded map from content hash to voice; the least recently used entry goes first when full.
/// Shared by all threads of an engine (a mutex held only for the lookup or the insertion, never
/// while a voice is computed).
pub struct VoiceCache {
    inner: Mutex<CacheInner>,
    capacity: usize,
}

struct CacheInner {
    map: HashMap<[u8; 32], (CachedVoice, u64)>,
    clock: u64,
    hits: u64,
    misses: u64,
}

impl VoiceCache {
    /// A cache of at most `capacity` voices (a voice takes about 170 KB).
    pub fn new(capacity: usize) -> VoiceCache {
        VoiceCache {
            inner: Mutex::new(CacheInner { map: HashMap::new(), clock: 0, hits: 0, misses: 0 }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // a panic while holding the lock leaves the map consistent (every update is one insert/remove)
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The voice of `hash`, if cached (counted as a hit or a miss).
    pub fn get(&self, hash: &[u8; 32]) -> Option<CachedVoice> {
        let mut c = self.lock();
        c.clock += 1;
        let now = c.clock;
        match c.map.get_mut(hash) {
            Some((v, used)) => {
                *used = now;
                let v = v.clone();
                c.hits += 1;
                Some(v)
            }
            None => {
                c.misses += 1;
                None
            }
        }
    }

    /// Caches `voice` under `hash`, evicting the least recently used voice when full. Returns the
    /// cached voice (an earlier insertion of the same hash wins: both are the same voice).
    pub fn insert(&self, hash: [u8; 32], voice: CachedVoice) -> CachedVoice {
        let mut c = self.lock();
        c.clock += 1;
        let now = c.clock;
        if let Some((v, used)) = c.map.get_mut(&hash) {
            *used = now;
            return v.clone();
        }
        if c.map.len() >= self.capacity
            && let Some(oldest) = c.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k)
        {
            c.map.remove(&oldest);
        }
        c.map.insert(hash, (voice.clone(), now));
        voice
    }

    /// (voices cached, hits, misses).
    pub fn stats(&self) -> (usize, u64, u64) {
        let c = self.lock();
        (c.map.len(), c.hits, c.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::{S3GenConds, T3Conds};

    fn voice(x: f32) -> CachedVoice {
        let v = Arc::new(Conditionals {
            t3: T3Conds { speaker_emb: vec![x], cond_prompt_speech_tokens: vec![], emotion_adv: 0.5 },
            s3gen: S3GenConds {
                prompt_token: vec![],
                prompt_token_len: 0,
                prompt_feat: vec![],
                prompt_feat_frames: 0,
                embedding: vec![x],
            },
        });
        (v, Arc::new(VoiceMeta::new()))
    }

    #[test]
    fn sniffing_tells_the_three_kinds_apart() {
        assert_eq!(VoiceFileKind::sniff(b"PK\x03\x04rest"), VoiceFileKind::CondsPt);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        st.push(0);
        assert_eq!(VoiceFileKind::sniff(&st), VoiceFileKind::Saved);
        assert_eq!(VoiceFileKind::sniff(b"RIFF\x24\x00\x00\x00WAVEfmt "), VoiceFileKind::Audio);
        assert_eq!(VoiceFileKind::sniff(b"fLaC\x00\x00\x00\x22"), VoiceFileKind::Audio);
        assert_eq!(VoiceFileKind::sniff(b""), VoiceFileKind::Audio);
        // a header length past the end is not safetensors
        let mut long = 1000u64.to_le_bytes().to_vec();
        long.extend_from_slice(b"{\"a\":1}");
        assert_eq!(VoiceFileKind::sniff(&long), VoiceFileKind::Audio);
    }

    #[test]
    fn the_cache_returns_what_it_holds_and_evicts_the_least_recently_used() {
        let c = VoiceCache::new(2);
        let (a, b, d) = (content_hash(b"a"), content_hash(b"b"), content_hash(b"d"));
        assert!(c.get(&a).is_none());
        c.insert(a, voice(1.0));
        c.insert(b, voice(2.0));
        assert_eq!(c.get(&a).unwrap().0.t3.speaker_emb, [1.0]); // a is now the most recent
        c.insert(d, voice(3.0)); // evicts b
        assert!(c.get(&b).is_none());
        assert_eq!(c.get(&a).unwrap().0.t3.speaker_emb, [1.0]);
        assert_eq!(c.get(&d).unwrap().0.t3.speaker_emb, [3.0]);
        // the first insertion of a hash wins
        assert_eq!(c.insert(d, voice(9.0)).0.t3.speaker_emb, [3.0]);
        let (n, hits, misses) = c.stats();
        assert_eq!((n, hits, misses), (2, 3, 2));
        assert_eq!(hex(&content_hash(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
