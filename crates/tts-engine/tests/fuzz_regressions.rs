//! Regressions found by fuzzing the voice reader (`fuzz/`, docs/fuzzing.md): every input a fuzz
//! target flagged is committed under `tests/fuzz-regressions/<target>/` and runs through the same
//! entry point here, and each fix has a test of its own on a pickle built inline.
//!
//! A counting allocator (per thread, so that tests running in parallel do not disturb each other)
//! measures what a parse leaves allocated and how much it holds: a reference cycle that leaks, or a
//! memo read that copies a whole subtree, fails these tests instead of passing silently.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use tts_engine::voice::Conditionals;
use tts_engine::voice::pickle::{MAX_RANK, Pickle, Value, unpickle};

thread_local! {
    /// Bytes allocated and not yet freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The most `LIVE` has been since [`peak_during`] last reset it.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

fn count(delta: isize) {
    // try_with: never fails for a const-initialised Cell, which has no destructor.
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + delta);
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for `alloc` and `dealloc`: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// The most memory `f` held at once (bytes above what was allocated before it ran).
fn peak_during(f: impl FnOnce()) -> isize {
    let before = live();
    PEAK.with(|p| p.set(before));
    f();
    PEAK.with(Cell::get) - before
}

/// Runs `f`, asserting it leaves nothing allocated behind (`what` names the input).
fn leaves_nothing(what: &str, f: impl FnOnce()) {
    let before = live();
    f();
    let leaked = live() - before;
    assert_eq!(leaked, 0, "{what}: {leaked} bytes still allocated after the parse was dropped");
}

/// What a parse may hold per byte of pickle: about 100 for a pickle of nested one-item tuples (an
/// arena object, its item and the arena's spare capacity per opcode byte).
const BYTES_PER_INPUT_BYTE: isize = 256;

/// Parses `data`, asserting the result holds at most `per_byte` bytes of memory per input byte.
fn unpickle_bounded(data: &[u8], per_byte: isize) -> Result<Pickle, String> {
    let before = live();
    let r = unpickle(data);
    let held = live() - before;
    assert!(held <= per_byte * data.len() as isize, "a pickle of {} bytes holds {held} bytes", data.len());
    r
}

/// The committed inputs of one fuzz target, sorted (at least one: a missing folder is a failure).
fn flagged(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(target);
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no inputs in {}", dir.display());
    v
}

#[test]
fn flagged_pickles_leave_nothing_allocated() {
    // The fuzzer's first finding (pickle target, LeakSanitizer): dicts and lists put into
    // themselves through the memo were Rc cycles that were never freed.
    for (path, bytes) in flagged("pickle") {
        leaves_nothing(&path.display().to_string(), || drop(unpickle_bounded(&bytes, BYTES_PER_INPUT_BYTE)));
    }
}

#[test]
fn a_dict_holding_itself_is_a_cycle_of_indices() {
    // d = {}; d['k'] = d
    let p = b"\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s.";
    leaves_nothing("self-holding dict", || {
        let pkl = unpickle(p).unwrap();
        let root = pkl.root();
        assert!(matches!(root, Value::Dict(_)));
        assert_eq!(pkl.get(root, "k"), Some(root));
    });
    // l = []; l.append(l); d = {'l': l}; l.append(d)
    let p = b"\x80\x02]q\x00h\x00a}q\x01X\x01\x00\x00\x00lh\x00sa.";
    leaves_nothing("list and dict holding each other", || {
        let pkl = unpickle(p).unwrap();
        let l = pkl.root();
        let &[first, d] = pkl.items(l).unwrap() else { panic!("{:?}", pkl.items(l)) };
        assert_eq!(first, l);
        assert_eq!(pkl.get(d, "l"), Some(l));
    });
}

#[test]
fn memo_reads_share_instead_of_copying() {
    // t = (); then 64 times t = (t, t) (the second t read from the memo): 2**64 tuples if each memo
    // read copied its subtree.
    let mut p = b"\x80\x02)".to_vec();
    for _ in 0..64 {
        p.extend(b"q\x00h\x00\x86");
    }
    p.push(b'.');
    let pkl = unpickle_bounded(&p, BYTES_PER_INPUT_BYTE).unwrap();
    let mut t = pkl.root();
    for depth in 0..64 {
        let items = pkl.items(t).unwrap_or_else(|| panic!("depth {depth}: a {}", t.kind()));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
        t = items[0];
    }
    assert_eq!(pkl.items(t), Some(&[][..]));

    // A tuple of a 64 KiB string and 20,000 memo reads of it (1.3 GB if each read copied it).
    let mut p = b"\x80\x02(X\x00\x00\x01\x00".to_vec();
    p.extend(std::iter::repeat_n(b'x', 1 << 16));
    p.extend(b"q\x00");
    p.extend(b"h\x00".repeat(20_000));
    p.extend(b"t.");
    let pkl = unpickle_bounded(&p, BYTES_PER_INPUT_BYTE).unwrap();
    let items = pkl.items(pkl.root()).unwrap();
    assert_eq!(items.len(), 20_001);
    assert!(items.iter().all(|&s| s == items[0]));
    assert_eq!(pkl.str(items[0]).map(str::len), Some(1 << 16));
}

#[test]
fn deep_nesting_is_dropped_without_recursion() {
    // ((((...)))) a million tuples deep, and lists 300,000 deep: dropping either recursively
    // overflowed the stack.
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 1 << 20));
    p.push(b'.');
    leaves_nothing("deep tuples", || {
        let pkl = unpickle_bounded(&p, BYTES_PER_INPUT_BYTE).unwrap();
        assert!(matches!(pkl.root(), Value::Tuple(_)));
    });
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 300_000));
    p.extend(std::iter::repeat_n(b'a', 300_000 - 1));
    p.push(b'.');
    leaves_nothing("deep lists", || {
        let pkl = unpickle_bounded(&p, BYTES_PER_INPUT_BYTE).unwrap();
        assert!(matches!(pkl.root(), Value::List(_)));
    });
}

#[test]
fn a_key_set_again_reads_as_its_last_value() {
    // {'a': 1, 'b': 2, 'a': 3} through one SETITEMS, then 'b' = 4 through SETITEM.
    let p = b"\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00aK\x03uX\x01\x00\x00\x00bK\x04s.";
    let pkl = unpickle(p).unwrap();
    assert_eq!(pkl.get(pkl.root(), "a"), Some(Value::Int(3)));
    assert_eq!(pkl.get(pkl.root(), "b"), Some(Value::Int(4)));
    assert_eq!(pkl.get(pkl.root(), "c"), None);
}

/// `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with `rank` dimensions of 1.
fn tensor_pickle(rank: usize) -> Vec<u8> {
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
    p.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00(");
    p.extend(b"K\x01".repeat(rank));
    p.extend(b"t(");
    p.extend(b"K\x01".repeat(rank));
    p.extend(b"t\x89ccollections\nOrderedDict\n)RtR.");
    p
}

#[test]
fn tensor_rank_is_capped() {
    let pkl = unpickle(&tensor_pickle(MAX_RANK)).unwrap();
    assert_eq!(pkl.tensor(pkl.root()).unwrap().shape, vec![1; MAX_RANK]);
    let e = unpickle(&tensor_pickle(MAX_RANK + 1)).unwrap_err();
    assert!(e.contains(&format!("tensor size has {} dimensions, more than the {MAX_RANK}", MAX_RANK + 1)), "{e}");
}

/// The fixture voice's entries, in order.
fn fixture_entries() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/t3_cond_enc_a/conds.pt");
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b).unwrap();
            (f.name().unwrap().to_string(), b)
        })
        .collect()
}

/// A zip of `entries`, every one deflated.
fn deflated_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        std::io::Write::write_all(&mut w, data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Sets the uncompressed size of the entry `name` to `size` in both its local header and the
/// central directory (a zip that lies about an entry's size).
fn declare_size(zip: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for at in 0..zip.len().saturating_sub(46) {
        let (sig, size_at, name_len_at, name_at) = match zip[at..at + 4] {
            [0x50, 0x4b, 0x03, 0x04] => ("local", 22, 26, 30),
            [0x50, 0x4b, 0x01, 0x02] => ("central", 24, 28, 46),
            _ => continue,
        };
        let n = u16::from_le_bytes([zip[at + name_len_at], zip[at + name_len_at + 1]]) as usize;
        if zip.get(at + name_at..at + name_at + n) == Some(name.as_bytes()) {
            zip[at + size_at..at + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
            let _ = sig;
        }
    }
    assert_eq!(patched, 2, "{name}: local header and central directory entry");
}

#[test]
fn a_deflated_entry_is_never_inflated_past_its_declared_size() {
    // data.pkl replaced by 64 MiB of zeros (64 KiB once deflated) that declares 748 bytes.
    let mut entries = fixture_entries();
    let pkl = entries.iter_mut().find(|(n, _)| n.ends_with("/data.pkl")).unwrap();
    let name = pkl.0.clone();
    pkl.1 = vec![0; 64 << 20];
    let mut zip = deflated_zip(&entries);
    assert!(zip.len() < 1 << 20);
    declare_size(&mut zip, &name, 748);
    let mut r = None;
    let peak = peak_during(|| r = Some(Conditionals::parse(zip.clone())));
    let e = r.unwrap().unwrap_err();
    assert!(e.contains(&name), "{e}");
    assert!(peak < 16 * zip.len() as isize, "a {}-byte voice file took {peak} bytes", zip.len());
}

#[test]
fn a_storage_is_capped_before_it_is_read() {
    // speaker_emb's storage declares 2**23 elements (not 256) and holds them: 32 MiB of zeros,
    // 32 KiB once deflated.
    let mut entries = fixture_entries();
    let pkl = &mut entries.iter_mut().find(|(n, _)| n.ends_with("/data.pkl")).unwrap().1;
    let from: &[u8] = b"cpuq\x08M\x00\x01t";
    let at = pkl.windows(from.len()).position(|w| w == from).expect("speaker_emb's storage numel");
    pkl.splice(at..at + from.len(), b"cpuq\x08J\x00\x00\x80\x00t".iter().copied());
    entries.iter_mut().find(|(n, _)| n.ends_with("/data/0")).unwrap().1 = vec![0; 4 << 23];
    let zip = deflated_zip(&entries);
    let mut r = None;
    let peak = peak_during(|| r = Some(Conditionals::parse(zip.clone())));
    let e = r.unwrap().unwrap_err();
    assert!(e.contains("t3.speaker_emb: storage data/0 has 8388608 elements, more than the 4194304 accepted"), "{e}");
    assert!(peak < 16 * zip.len() as isize, "a {}-byte voice file took {peak} bytes", zip.len());

    // A broadcast view (stride 0) of one element as speaker_emb's (1, 256).
    let mut entries = fixture_entries();
    let pkl = &mut entries.iter_mut().find(|(n, _)| n.ends_with("/data.pkl")).unwrap().1;
    let (from, to): (&[u8], &[u8]) = (b"cpuq\x08M\x00\x01t", b"cpuq\x08K\x01t");
    let at = pkl.windows(from.len()).position(|w| w == from).unwrap();
    pkl.splice(at..at + from.len(), to.iter().copied());
    let (from, to): (&[u8], &[u8]) = (b"M\x00\x01K\x01\x86", b"K\x00K\x00\x86");
    let at = pkl.windows(from.len()).position(|w| w == from).expect("speaker_emb's stride (256, 1)");
    pkl.splice(at..at + from.len(), to.iter().copied());
    entries.iter_mut().find(|(n, _)| n.ends_with("/data/0")).unwrap().1 = vec![0; 4];
    let e = Conditionals::parse(deflated_zip(&entries)).unwrap_err();
    assert!(
        e.contains("t3.speaker_emb: a view of 256 elements (size [1, 256], stride [0, 0]) of a storage of 1 elements"),
        "{e}"
    );
}

#[test]
fn flagged_recordings_are_refused_before_the_decoder_allocates() {
    // The audio target's findings (libFuzzer, out of memory): a FLAC whose Vorbis comment claims
    // 4 GB made symphonia allocate it before reading; the container's metadata is now walked with
    // every length checked and dropped before the decoder sees the file (tts_voice::container).
    // Then the same block behind leading junk, which symphonia's probe scanned past: the
    // container's own reader is now chosen by the header at the start, and junk is not audio.
    for (path, bytes) in flagged("audio") {
        let what = path.display().to_string();
        let before = live();
        let r = tts_voice::audio::decode(&bytes, &what);
        assert!(live() - before < 1 << 20, "{what}: memory held after the decode");
        let e = r.err().unwrap_or_else(|| panic!("{what}: decoded"));
        let m = e.to_string();
        assert!(m.contains("claims") || m.contains("no WAV, FLAC or MP3 header at its start"), "{what}: {m}");
    }
}
