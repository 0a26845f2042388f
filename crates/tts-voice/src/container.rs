//! The containers' metadata, dropped before the decoder sees a file: a recording's tags, pictures
//! and comments are never needed to decode it, and symphonia allocates what their length fields
//! claim before it reads them (a 4 GB Vorbis comment in a 2 kB FLAC file, found by the `audio` fuzz
//! target; RIFF `INFO` chunks and ID3v2 frames the same). Each container is walked here with every
//! length checked against the bytes present, and rebuilt with only what decoding needs:
//! - RIFF/WAVE: the `fmt ` and `fact` chunks, then the `data` chunk and whatever follows it as it
//!   is (its length is the decoder's to check: it streams the samples, allocating nothing by it);
//! - FLAC: `STREAMINFO` (marked the last metadata block), then the frames;
//! - a leading ID3v2 tag (MP3, sometimes FLAC) is skipped, and what follows is looked at again.
//!
//! Anything else is passed on untouched; [`Kind::of`] then says which container's reader decodes
//! it (none: not audio). The decoded samples are the same: the audio bytes are not changed.
use std::borrow::Cow;

use crate::{Error, Result};

/// The containers decoded, told by the first bytes (after any ID3v2 tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Wav,
    Flac,
    /// An MPEG audio frame (its 11-bit sync) at the start.
    Mp3,
}

impl Kind {
    /// The container whose header `b` starts with; `None` for anything else.
    pub fn of(b: &[u8]) -> Option<Kind> {
        if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE" {
            Some(Kind::Wav)
        } else if b.starts_with(b"fLaC") {
            Some(Kind::Flac)
        } else if b.len() >= 2 && b[0] == 0xff && b[1] & 0xe0 == 0xe0 {
            Some(Kind::Mp3)
        } else {
            None
        }
    }
}

/// `bytes` with the metadata of its container removed (see the module); `what` names the file in
/// errors (a metadata block or chunk that runs past the end of the file is an error).
pub fn strip_metadata<'a>(bytes: &'a [u8], what: &str) -> Result<Cow<'a, [u8]>> {
    let mut b = bytes;
    // ID3v2 tags, possibly several (a tag written twice): skipped by their declared size
    while b.len() >= 10 && &b[..3] == b"ID3" {
        let size = b[6..10].iter().fold(0usize, |s, &x| (s << 7) | (x & 0x7f) as usize);
        let footer = if b[5] & 0x10 != 0 { 10 } else { 0 };
        let end = 10 + size + footer;
        if end > b.len() {
            return Err(Error::audio(what, format!("corrupt ID3v2 tag: it claims {end} bytes, the file has {}", b.len())));
        }
        b = &b[end..];
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE" {
        return wav(b, what).map(Cow::Owned);
    }
    if b.len() >= 4 && &b[..4] == b"fLaC" {
        return flac(b, what).map(Cow::Owned);
    }
    Ok(Cow::Borrowed(b))
}

/// RIFF/WAVE with only `fmt `, `fact` and `data`.
fn wav(b: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b"RIFF\0\0\0\0WAVE");
    let mut at = 12usize;
    let mut dropped = 0usize;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        let left = b.len() - body;
        if id == b"data" {
            // the samples, with their declared length (the decoder streams them and says when a
            // file is shorter than its header, or longer than it may be)
            out.extend_from_slice(&b[at..]);
            break;
        }
        if size > left {
            let name = String::from_utf8_lossy(id);
            return Err(Error::audio(what, format!("corrupt WAV: the {name:?} chunk claims {size} bytes, {left} are left")));
        }
        let next = (body + size + (size & 1)).min(b.len());
        if id == b"fmt " || id == b"fact" {
            out.extend_from_slice(&b[at..body + size]);
            if size % 2 == 1 {
                out.push(0);
            }
        } else {
            dropped += next - at;
        }
        at = next;
    }
    // the RIFF length as declared, less what was dropped: the decoder checks the chunks against it
    // as it would have (a truncated file stays one)
    let declared = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
    let riff = u32::try_from(declared.saturating_sub(dropped)).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    Ok(out)
}

/// FLAC with `STREAMINFO` alone before the frames.
fn flac(b: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut at = 4usize;
    let mut streaminfo: Option<&[u8]> = None;
    loop {
        if at + 4 > b.len() {
            return Err(Error::audio(what, "corrupt FLAC: the metadata blocks end before the audio"));
        }
        let (last, kind) = (b[at] & 0x80 != 0, b[at] & 0x7f);
        let len = u32::from_be_bytes([0, b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let body = at + 4;
        if len > b.len() - body {
            return Err(Error::audio(
                what,
                format!("corrupt FLAC: metadata block {kind} claims {len} bytes, {} are left", b.len() - body),
            ));
        }
        if kind == 0 && streaminfo.is_none() {
            streaminfo = Some(&b[body..body + len]);
        }
        at = body + len;
        if last {
            break;
        }
    }
    let info = streaminfo.ok_or_else(|| Error::audio(what, "corrupt FLAC: no STREAMINFO block"))?;
    let mut out = Vec::with_capacity(8 + info.len() + b.len() - at);
    out.extend_from_slice(b"fLaC");
    out.push(0x80); // the last metadata block, of type 0 (STREAMINFO)
    out.extend_from_slice(&(info.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(info);
    out.extend_from_slice(&b[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = id.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn wav_keeps_fmt_and_data_and_drops_the_rest() {
        let fmt = chunk(b"fmt ", &[1, 0, 1, 0, 0x80, 0x3e, 0, 0, 0, 0x7d, 0, 0, 2, 0, 16, 0]);
        let data = chunk(b"data", &[1, 2, 3, 4, 5, 6]);
        let list = chunk(b"LIST", b"INFOISFT\x05\0\0\0Lavf5\0");
        let f = riff(&[fmt.clone(), list, data.clone()]);
        let got = strip_metadata(&f, "x.wav").unwrap();
        assert_eq!(got.as_ref(), riff(&[fmt.clone(), data]).as_slice());
        // a LIST chunk claiming 4 GB: an error naming it, not an allocation
        let mut huge = b"LIST".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = strip_metadata(&riff(&[fmt.clone(), huge]), "x.wav").unwrap_err();
        assert!(e.to_string().contains("\"LIST\" chunk claims 4294967295 bytes"), "{e}");
        // the data chunk and what follows it pass as they are, declared length included
        let mut streamed = riff(std::slice::from_ref(&fmt));
        streamed.extend_from_slice(b"data");
        streamed.extend_from_slice(&u32::MAX.to_le_bytes());
        streamed.extend_from_slice(&[9, 9, 9, 9]);
        let got = strip_metadata(&streamed, "x.wav").unwrap();
        assert_eq!(&got[got.len() - 12..], &streamed[streamed.len() - 12..]);
    }

    #[test]
    fn flac_keeps_streaminfo_then_the_frames() {
        let info = [7u8; 34];
        let mut f = b"fLaC".to_vec();
        f.extend_from_slice(&[0, 0, 0, 34]);
        f.extend_from_slice(&info);
        // a Vorbis comment block (type 4), the last one, then the frames
        f.extend_from_slice(&[0x84, 0, 0, 8]);
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        f.extend_from_slice(&[0xff, 0xf8, 1, 2, 3]);
        let got = strip_metadata(&f, "x.flac").unwrap();
        let mut want = b"fLaC".to_vec();
        want.extend_from_slice(&[0x80, 0, 0, 34]);
        want.extend_from_slice(&info);
        want.extend_from_slice(&[0xff, 0xf8, 1, 2, 3]);
        assert_eq!(got.as_ref(), want.as_slice());
        // a block claiming more than the file
        let mut bad = b"fLaC".to_vec();
        bad.extend_from_slice(&[0, 0, 0, 34]);
        bad.extend_from_slice(&info);
        bad.extend_from_slice(&[0x84, 0xff, 0xff, 0xff, 1, 2]);
        let e = strip_metadata(&bad, "x.flac").unwrap_err();
        assert!(e.to_string().contains("metadata block 4 claims 16777215 bytes"), "{e}");
        // no last block before the end
        let e = strip_metadata(&bad[..42], "x.flac").unwrap_err();
        assert!(e.to_string().contains("end before the audio"), "{e}");
    }

    #[test]
    fn id3v2_tags_are_skipped_and_what_follows_is_looked_at() {
        let mut f = b"ID3\x04\x00\x00\x00\x00\x00\x05".to_vec();
        f.extend_from_slice(b"12345");
        f.extend_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
        assert_eq!(strip_metadata(&f, "x.mp3").unwrap().as_ref(), &[0xff, 0xfb, 0x90, 0x64]);
        // a tag claiming more than the file
        let e = strip_metadata(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", "x.mp3").unwrap_err();
        assert!(e.to_string().contains("corrupt ID3v2 tag"), "{e}");
        // anything else passes untouched
        assert!(matches!(strip_metadata(b"OggS....", "x.ogg").unwrap(), Cow::Borrowed(_)));
    }
}
