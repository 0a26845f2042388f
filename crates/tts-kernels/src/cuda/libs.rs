//! Finding and loading the CUDA libraries the backend uses at run time: NVRTC (`libnvrtc`), cuBLAS
//! (`libcublas`, with its `libcublasLt`), CUDA 12 *and* CUDA 13, wherever users have them.
//!
//! cudarc loads the driver (`libcuda.so.1`, from the NVIDIA driver, backward compatible across CUDA
//! versions). NVRTC and cuBLAS are loaded here instead of through cudarc's bindings, whose search is
//! fixed at build time to one CUDA major's names: a machine with only CUDA 13 (PyTorch's cu13 wheels,
//! a CUDA 13 toolkit) has no `libnvrtc.so.12`. The few entry points used (see `nvrtc.rs`,
//! `cublas.rs`) have the same C signatures in CUDA 12 and 13.
//!
//! # Search order (first library that loads wins)
//! 1. `$TTS_CUDA_LIB_DIR` (a `:`-separated list of folders): the user's explicit choice.
//! 2. The dynamic loader's own search by versioned name (`LD_LIBRARY_PATH`, the ld.so cache,
//!    `/usr/lib/...`): `libnvrtc.so.13`, then `libnvrtc.so.12`.
//! 3. CUDA toolkit folders: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`, `/usr/local/cuda-13.*`,
//!    `/usr/local/cuda-12.*` (newest first), `/opt/cuda` (`lib64`, `lib`, `targets/<arch>-linux/lib`).
//! 4. Python environments' NVIDIA wheels: `site-packages/nvidia/cu13/lib` (CUDA 13 wheels, as PyTorch's
//!    cu13 builds install them) and `site-packages/nvidia/{cuda_nvrtc,cublas}/lib` (CUDA 12 wheels),
//!    under `$VIRTUAL_ENV`, `$CONDA_PREFIX`, `~/.local` and the system Python prefixes; then the
//!    site-packages folders the `python3` on `PATH` reports.
//! 5. The unversioned development name (`libnvrtc.so`) through the dynamic loader.
//!
//! Within steps 2-5, CUDA 13 comes before CUDA 12; a library whose major version is newer than the
//! installed driver supports (`cuDriverGetVersion`) is skipped with a note, since its code objects
//! would not load. What was loaded, from where, is kept for `tts self-check` ([`loaded_libraries`]).
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// CUDA major versions searched, newest first.
pub const CUDA_MAJORS: [u32; 2] = [13, 12];

/// One library the backend loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibSpec {
    /// The file stem: `nvrtc` for `libnvrtc.so.13`.
    pub stem: &'static str,
    /// The folder under `site-packages/nvidia/` of the CUDA 12 wheel (`cuda_nvrtc`, `cublas`); CUDA 13
    /// wheels put every library in `nvidia/cu13/lib`.
    pub wheel12_dir: &'static str,
    /// Libraries it opens by bare name at run time, preloaded from the folder it is found in (file
    /// name prefixes): NVRTC opens `libnvrtc-builtins.so.13.0` by name, which the loader finds only
    /// on its search path, not beside a wheel's `libnvrtc.so.13`.
    pub companions: &'static [&'static str],
}

pub const NVRTC: LibSpec = LibSpec { stem: "nvrtc", wheel12_dir: "cuda_nvrtc", companions: &["libnvrtc-builtins.so"] };
pub const CUBLAS: LibSpec = LibSpec { stem: "cublas", wheel12_dir: "cublas", companions: &[] };
pub const CUBLAS_LT: LibSpec = LibSpec { stem: "cublasLt", wheel12_dir: "cublas", companions: &[] };

impl LibSpec {
    /// `libnvrtc.so.13`, or `libnvrtc.so` for `None`.
    pub fn file_name(&self, major: Option<u32>) -> String {
        match major {
            Some(m) => format!("lib{}.so.{m}", self.stem),
            None => format!("lib{}.so", self.stem),
        }
    }
}

/// Where a candidate came from (for reports and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A folder of `$TTS_CUDA_LIB_DIR`.
    EnvDir,
    /// The dynamic loader's search by name (LD_LIBRARY_PATH, ld.so cache, system folders).
    Loader,
    /// A CUDA toolkit folder.
    Toolkit,
    /// A Python environment's NVIDIA wheel folder.
    PythonWheel,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::EnvDir => "$TTS_CUDA_LIB_DIR",
            Origin::Loader => "the dynamic loader's search path",
            Origin::Toolkit => "a CUDA toolkit folder",
            Origin::PythonWheel => "a Python environment's NVIDIA wheel",
        })
    }
}

/// One place to try: an absolute path (a folder search) or a bare file name (the loader searches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// The CUDA major the name says (None for the unversioned name).
    pub major: Option<u32>,
    pub origin: Origin,
}

/// The inputs of a search: environment variables and the Python site folders, so tests can describe
/// a machine without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct SearchEnv {
    pub tts_cuda_lib_dir: Option<String>,
    pub cuda_home: Option<String>,
    pub cuda_path: Option<String>,
    pub virtual_env: Option<String>,
    pub conda_prefix: Option<String>,
    pub home: Option<String>,
    /// Folders scanned for `cuda-13.x`/`cuda-12.x` toolkits and system Pythons (`/usr/local`, `/opt`, `/usr`).
    pub system_prefixes: Vec<PathBuf>,
    /// site-packages folders reported by the `python3` on PATH (filled lazily by [`SearchEnv::from_process`]
    /// callers through [`python_site_dirs`]).
    pub python_sites: Vec<PathBuf>,
}

impl SearchEnv {
    /// This process's environment (without asking Python; see [`python_site_dirs`]).
    pub fn from_process() -> SearchEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        SearchEnv {
            tts_cuda_lib_dir: var("TTS_CUDA_LIB_DIR"),
            cuda_home: var("CUDA_HOME"),
            cuda_path: var("CUDA_PATH"),
            virtual_env: var("VIRTUAL_ENV"),
            conda_prefix: var("CONDA_PREFIX"),
            home: var("HOME"),
            system_prefixes: vec!["/usr/local".into(), "/opt".into(), "/usr".into()],
            python_sites: Vec::new(),
        }
    }
}

/// The folders of a CUDA toolkit root that may hold its libraries.
fn toolkit_lib_dirs(root: &Path) -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    vec![root.join("lib64"), root.join("lib"), root.join("targets").join(format!("{arch}-linux")).join("lib")]
}

/// Sub-folders of `dir` whose names start with `prefix`, sorted newest version first (by the numbers
/// in the name).
fn versioned_subdirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<(Vec<u64>, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(prefix)?;
            let nums: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
            e.path().is_dir().then_some((nums, e.path()))
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.into_iter().map(|(_, p)| p).collect()
}

/// The `site-packages` / `dist-packages` folders under a Python prefix (`<prefix>/lib/python3.*/`).
fn site_dirs_under(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        for py in versioned_subdirs(&prefix.join(lib), "python3") {
            for s in ["site-packages", "dist-packages"] {
                let d = py.join(s);
                if d.is_dir() {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Every place to try for `spec`, in search order (see the module docs). Folder candidates are
/// listed only when the file exists; bare names are always listed (the loader searches them).
pub fn candidates(spec: &LibSpec, env: &SearchEnv) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let push_dir = |out: &mut Vec<Candidate>, dir: &Path, origin: Origin, majors: &[Option<u32>]| {
        for &m in majors {
            let p = dir.join(spec.file_name(m));
            if p.is_file() && !out.iter().any(|c| c.path == p) {
                out.push(Candidate { path: p, major: m, origin: origin.clone() });
            }
        }
    };
    let all: Vec<Option<u32>> = CUDA_MAJORS.iter().map(|&m| Some(m)).chain([None]).collect();
    // 1. the explicit folders, every name
    if let Some(dirs) = &env.tts_cuda_lib_dir {
        for d in dirs.split(':').filter(|d| !d.is_empty()) {
            push_dir(&mut out, Path::new(d), Origin::EnvDir, &all);
        }
    }
    // toolkit and wheel folders, computed once
    let mut toolkits: Vec<PathBuf> = Vec::new();
    for v in [&env.cuda_home, &env.cuda_path].into_iter().flatten() {
        toolkits.push(PathBuf::from(v));
    }
    for p in &env.system_prefixes {
        toolkits.push(p.join("cuda"));
        toolkits.extend(versioned_subdirs(p, "cuda-"));
    }
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for v in [&env.virtual_env, &env.conda_prefix].into_iter().flatten() {
        prefixes.push(PathBuf::from(v));
    }
    if let Some(h) = &env.home {
        prefixes.push(Path::new(h).join(".local"));
    }
    prefixes.extend(env.system_prefixes.iter().cloned());
    let mut sites: Vec<PathBuf> = prefixes.iter().flat_map(|p| site_dirs_under(p)).collect();
    for s in &env.python_sites {
        if !sites.contains(s) {
            sites.push(s.clone());
        }
    }
    // 2-4, newest major first
    for &m in &CUDA_MAJORS {
        let name = spec.file_name(Some(m));
        out.push(Candidate { path: PathBuf::from(&name), major: Some(m), origin: Origin::Loader });
        for t in &toolkits {
            for d in toolkit_lib_dirs(t) {
                push_dir(&mut out, &d, Origin::Toolkit, &[Some(m)]);
            }
        }
        for s in &sites {
            let wheel = if m >= 13 {
                s.join("nvidia").join(format!("cu{m}")).join("lib")
            } else {
                s.join("nvidia").join(spec.wheel12_dir).join("lib")
            };
            push_dir(&mut out, &wheel, Origin::PythonWheel, &[Some(m)]);
        }
    }
    // 5. the unversioned name
    out.push(Candidate { path: PathBuf::from(spec.file_name(None)), major: None, origin: Origin::Loader });
    out
}

/// The site-packages folders of the `python3` on PATH (empty when there is none). Used only when no
/// earlier candidate loaded: it starts a process.
pub fn python_site_dirs() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import site,sys\nfor p in site.getsitepackages()+[site.getusersitepackages()]: print(p)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).filter(|p| p.is_dir()).collect()
        }
        _ => Vec::new(),
    }
}

/// A library that was loaded, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedLibrary {
    /// `libnvrtc`, `libcublas`, `libcublasLt`, `libcuda`.
    pub name: String,
    /// The file the dynamic loader opened.
    pub path: PathBuf,
    /// Its version as the library reports it (e.g. "13.0"), when it has a version call.
    pub version: Option<String>,
    pub origin: String,
}

static LOADED: Mutex<Vec<LoadedLibrary>> = Mutex::new(Vec::new());

pub(crate) fn note_loaded(lib: LoadedLibrary) {
    if let Ok(mut l) = LOADED.lock()
        && !l.iter().any(|x| x.name == lib.name)
    {
        l.push(lib);
    }
}

/// The CUDA libraries this process has loaded so far (NVRTC, cuBLAS, cuBLASLt; the driver once a Cuda
/// device was created), with the file each came from.
pub fn loaded_libraries() -> Vec<LoadedLibrary> {
    LOADED.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The file behind a loaded symbol (`dladdr`), or None.
pub(crate) fn path_of_symbol(sym: *const std::ffi::c_void) -> Option<PathBuf> {
    // SAFETY: Dl_info is plain C data (pointers and integers) for which all-zero bytes are valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`; the returned name points into the
    // loader's own tables, copied out at once.
    if unsafe { libc::dladdr(sym, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    Some(PathBuf::from(name))
}

/// The file of a mapped shared object whose name starts with `prefix` (e.g. `libcuda.so`), from
/// `/proc/self/maps`.
pub(crate) fn mapped_library(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find_map(|p| {
        let path = Path::new(p);
        path.file_name().is_some_and(|f| f.to_string_lossy().starts_with(prefix)).then(|| path.to_path_buf())
    })
}

/// The CUDA major version the installed driver supports (`cuDriverGetVersion` / 1000), or None when
/// there is no driver library.
pub fn driver_cuda_major() -> Option<u32> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut v = 0i32;
    // SAFETY: a plain out-parameter; callable before cuInit.
    let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (rc == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0).then_some(v as u32 / 1000)
}

/// Given a loaded library: the CUDA major it reports (if it can tell) and a version string, or why it
/// is unusable.
pub(crate) type Accept<'a> = &'a dyn Fn(&libloading::Library) -> Result<(Option<u32>, String), String>;

/// A library opened by [`open_first`], with the companions preloaded for it (kept loaded with it).
#[derive(Debug)]
pub(crate) struct Opened {
    pub lib: libloading::Library,
    pub companions: Vec<libloading::Library>,
    pub loaded: LoadedLibrary,
}

/// Opens the companions of `spec` found beside `path` (an absolute path; its real folder, as toolkit
/// libraries are symlinks). Files that do not open are left to the library's own search.
fn open_companions(spec: &LibSpec, path: &Path) -> Vec<libloading::Library> {
    if spec.companions.is_empty() || !path.is_absolute() {
        return Vec::new();
    }
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Some(dir) = real.parent() else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|f| spec.companions.iter().any(|c| f.to_string_lossy().starts_with(c))))
        .collect();
    files.sort();
    // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
    files.iter().filter_map(|f| unsafe { libloading::Library::new(f) }.ok()).collect()
}

/// Opens the first candidate of `spec` that loads and passes `accept` (given the library, it returns
/// the CUDA major version it reports, if it can tell, and a version string, or why it is unusable;
/// without a reported major the file name's is used). The error lists every place tried and why
/// each failed.
pub(crate) fn open_first(spec: &LibSpec, env: &SearchEnv, max_major: Option<u32>, accept: Accept<'_>) -> Result<Opened, String> {
    let mut tried: Vec<String> = Vec::new();
    let try_list = |list: Vec<Candidate>, tried: &mut Vec<String>| -> Option<Opened> {
        for c in list {
            if let (Some(m), Some(max)) = (c.major, max_major)
                && m > max
            {
                tried.push(format!("{} (CUDA {m} is newer than the driver supports: CUDA {max})", c.path.display()));
                continue;
            }
            if tried.iter().any(|t| t.starts_with(&format!("{} ", c.path.display()))) {
                continue;
            }
            let companions = if c.path.is_file() { open_companions(spec, &c.path) } else { Vec::new() };
            // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
            match unsafe { libloading::Library::new(&c.path) } {
                Err(e) => {
                    if c.path.is_absolute() {
                        tried.push(format!("{} ({e})", c.path.display()));
                    } else {
                        tried.push(format!("{} (not found by the loader)", c.path.display()));
                    }
                }
                Ok(lib) => match accept(&lib).map(|(m, v)| (m.or(c.major), v)) {
                    Ok((major, version)) if max_major.is_none_or(|max| major.is_none_or(|m| m <= max)) => {
                        let loaded = LoadedLibrary {
                            name: format!("lib{}", spec.stem),
                            path: c.path.clone(),
                            version: Some(version),
                            origin: c.origin.to_string(),
                        };
                        return Some(Opened { lib, companions, loaded });
                    }
                    Ok((major, _)) => tried.push(format!(
                        "{} (CUDA {} is newer than the driver supports: CUDA {})",
                        c.path.display(),
                        major.unwrap_or(0),
                        max_major.unwrap_or(0)
                    )),
                    Err(why) => tried.push(format!("{} ({why})", c.path.display())),
                },
            }
        }
        None
    };
    if let Some(found) = try_list(candidates(spec, env), &mut tried) {
        return Ok(found);
    }
    let sites = python_site_dirs();
    if !sites.is_empty() {
        let env2 = SearchEnv { python_sites: sites, ..env.clone() };
        if let Some(found) = try_list(candidates(spec, &env2), &mut tried) {
            return Ok(found);
        }
    }
    Err(format!(
        "lib{stem} (CUDA 12 or 13) was not found; tried: {}. Install the CUDA toolkit, or the NVIDIA wheels \
         (`pip install nvidia-cuda-nvrtc nvidia-cublas` for CUDA 13, `nvidia-cuda-nvrtc-cu12 nvidia-cublas-cu12` \
         for CUDA 12), or point TTS_CUDA_LIB_DIR (or LD_LIBRARY_PATH) at the folder that holds lib{stem}.so.*",
        tried.join("; "),
        stem = spec.stem
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake machine: empty files with library names in folders of a temporary root.
    struct FakeRoot(PathBuf);
    impl FakeRoot {
        fn new(tag: &str) -> FakeRoot {
            let p = std::env::temp_dir().join(format!("tts-libs-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            FakeRoot(p)
        }
        fn file(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"not a real library").unwrap();
            p
        }
        fn env(&self) -> SearchEnv {
            SearchEnv { system_prefixes: vec![self.0.join("usr/local"), self.0.join("opt")], ..SearchEnv::default() }
        }
    }
    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn paths(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| c.path.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn nothing_installed_leaves_the_loader_names_newest_first() {
        let root = FakeRoot::new("empty");
        let c = candidates(&NVRTC, &root.env());
        assert_eq!(paths(&c), vec!["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]);
        assert!(c.iter().all(|c| c.origin == Origin::Loader));
    }

    #[test]
    fn wheels_of_both_majors_toolkits_and_the_explicit_folder_in_order() {
        let root = FakeRoot::new("order");
        let venv = root.0.join("venv");
        let w13 = root.file("venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13");
        let w12 = root.file("venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        let tk12 = root.file("usr/local/cuda-12.4/lib64/libnvrtc.so.12");
        let tk13 = root.file(&format!("usr/local/cuda-13.0/targets/{}-linux/lib/libnvrtc.so.13", std::env::consts::ARCH));
        let tk126 = root.file("usr/local/cuda-12.6/lib64/libnvrtc.so.12");
        let explicit = root.file("mine/libnvrtc.so");
        let explicit12 = root.file("mine/libnvrtc.so.12");
        let env = SearchEnv {
            virtual_env: Some(venv.to_string_lossy().into()),
            tts_cuda_lib_dir: Some(format!("{}:/does/not/exist", root.0.join("mine").display())),
            ..root.env()
        };
        let c = candidates(&NVRTC, &env);
        let want: Vec<String> = [
            explicit12.to_string_lossy().into_owned(),
            explicit.to_string_lossy().into_owned(),
            "libnvrtc.so.13".into(),
            tk13.to_string_lossy().into_owned(),
            w13.to_string_lossy().into_owned(),
            "libnvrtc.so.12".into(),
            tk126.to_string_lossy().into_owned(), // newest 12.x toolkit first
            tk12.to_string_lossy().into_owned(),
            w12.to_string_lossy().into_owned(),
            "libnvrtc.so".into(),
        ]
        .into();
        assert_eq!(paths(&c), want);
        assert_eq!(c[0].origin, Origin::EnvDir);
        assert_eq!(c[4].origin, Origin::PythonWheel);
        assert_eq!(c[4].major, Some(13));
        assert_eq!(c[3].origin, Origin::Toolkit);
    }

    #[test]
    fn cublas_wheels_use_their_own_folder_and_lt_shares_it() {
        let root = FakeRoot::new("cublas");
        let site = root.0.join("site");
        let b12 = root.file("site/nvidia/cublas/lib/libcublas.so.12");
        let lt12 = root.file("site/nvidia/cublas/lib/libcublasLt.so.12");
        let b13 = root.file("site/nvidia/cu13/lib/libcublas.so.13");
        let env = SearchEnv { python_sites: vec![site], ..root.env() };
        let c = candidates(&CUBLAS, &env);
        assert_eq!(
            paths(&c),
            vec![
                "libcublas.so.13".to_string(),
                b13.to_string_lossy().into(),
                "libcublas.so.12".into(),
                b12.to_string_lossy().into(),
                "libcublas.so".into()
            ]
        );
        let lt = candidates(&CUBLAS_LT, &env);
        assert!(paths(&lt).contains(&lt12.to_string_lossy().into_owned()));
        // no libcublasLt.so.13 file: only its loader name is listed for 13
        assert!(!paths(&lt).iter().any(|p| p.ends_with("cu13/lib/libcublasLt.so.13")));
    }

    #[test]
    fn conda_home_local_and_cuda_home_are_searched() {
        let root = FakeRoot::new("prefixes");
        let conda = root.file("conda/lib/python3.11/site-packages/nvidia/cu13/lib/libnvrtc.so.13");
        let local = root.file("home/.local/lib/python3.10/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        let home_tk = root.file("cudahome/lib64/libnvrtc.so.13");
        let env = SearchEnv {
            conda_prefix: Some(root.0.join("conda").to_string_lossy().into()),
            home: Some(root.0.join("home").to_string_lossy().into()),
            cuda_home: Some(root.0.join("cudahome").to_string_lossy().into()),
            ..root.env()
        };
        let p = paths(&candidates(&NVRTC, &env));
        let pos = |f: &PathBuf| p.iter().position(|x| *x == f.to_string_lossy()).unwrap_or_else(|| panic!("{f:?} not in {p:?}"));
        assert!(pos(&home_tk) < pos(&conda), "toolkits before wheels within a major: {p:?}");
        assert!(pos(&conda) < pos(&local), "CUDA 13 before CUDA 12: {p:?}");
    }

    #[test]
    fn a_fake_file_is_refused_and_reported_with_every_place_tried() {
        let root = FakeRoot::new("refuse");
        let fake = root.file("mine/libnvrtc.so.13");
        let env = SearchEnv { tts_cuda_lib_dir: Some(root.0.join("mine").to_string_lossy().into()), ..root.env() };
        // accept nothing the loader finds on this machine either, so the message lists every try
        let e = open_first(&NVRTC, &env, None, &|_| Err("refused by the test".into())).unwrap_err();
        assert!(e.contains(&fake.to_string_lossy().into_owned()), "{e}");
        assert!(e.contains("libnvrtc.so.12"), "{e}");
        assert!(e.contains("TTS_CUDA_LIB_DIR"), "{e}");
    }

    #[test]
    fn a_major_newer_than_the_driver_is_skipped() {
        let root = FakeRoot::new("driver");
        let f13 = root.file("mine/libnvrtc.so.13");
        let env = SearchEnv { tts_cuda_lib_dir: Some(root.0.join("mine").to_string_lossy().into()), ..root.env() };
        let e = open_first(&NVRTC, &env, Some(12), &|_| Err("no".into())).unwrap_err();
        assert!(e.contains(&format!("{} (CUDA 13 is newer than the driver supports: CUDA 12)", f13.display())), "{e}");
    }
}
