//! An in-memory file system that remembers which bytes were synced, for crash tests.
//!
//! Every file keeps two images: `current` (what reads see, like the page cache) and
//! `durable` (what the last `sync_data` made safe). [`SimStorage::power_cut`] returns a
//! fresh file system holding what a disk could hold after losing power: each file's
//! durable image, plus, in [`CrashMode::Torn`], a random prefix of the unsynced tail,
//! possibly with garbage at its end (a torn sector).
//!
//! [`SimStorage::arm_power_cut`] takes that image just before the n-th file operation
//! from now, so a test can cut the power at every step of a multi-step operation (the
//! cleaner's swap) and recover from each.
//!
//! Simplification, stated: directory operations (create, rename, remove) are durable at
//! once. The log still calls `sync_dir` where a real disk needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::io::{DirEntry, DirLock, OpenMode, Storage, StorageFile};

/// What survives a power cut.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Only synced bytes survive.
    DropUnsynced,
    /// Synced bytes survive, plus a random prefix of each file's unsynced tail whose last
    /// bytes may be garbage. Deterministic for a given seed.
    Torn {
        /// Seed for the choice of prefixes and garbage.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct Faults {
    /// Syncs left before every sync fails; negative means never fail.
    syncs_before_failure: AtomicI64,
    /// Total successful `sync_data` calls, for tests that count fsyncs.
    syncs: AtomicU64,
    /// When set, writes fail with an I/O error.
    fail_writes: AtomicBool,
    /// When set, directory syncs fail with an I/O error.
    fail_dir_syncs: AtomicBool,
    /// Operations that change files or directories so far (see [`SimStorage::op_count`]).
    ops: AtomicU64,
    /// A power cut armed to happen just before this operation.
    armed: Mutex<Option<(u64, CrashMode)>>,
    /// The disk as the armed power cut left it.
    cut: Mutex<Option<SimStorage>>,
}

impl Faults {
    /// Counts one mutating operation, taking the armed power cut first if it is due.
    /// Must be called before the operation takes any lock of the file system.
    fn tick(&self, tree: &Weak<Mutex<Tree>>) {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let due = match *lock(&self.armed) {
            Some((at, mode)) if at == n => Some(mode),
            _ => None,
        };
        if let (Some(mode), Some(tree)) = (due, tree.upgrade()) {
            *lock(&self.cut) = Some(cut_tree(&tree, mode));
        }
    }
}

#[derive(Debug, Default)]
struct Image {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct SimFile {
    image: Mutex<Image>,
    faults: Arc<Faults>,
    /// The file system the file belongs to, for armed power cuts.
    tree: Weak<Mutex<Tree>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let img = lock(&self.image);
        let pos = usize::try_from(pos).map_err(io::Error::other)?;
        if pos >= img.current.len() {
            return Ok(0);
        }
        let n = buf.len().min(img.current.len() - pos);
        buf[..n].copy_from_slice(&img.current[pos..pos + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.faults.tick(&self.tree);
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated write failure"));
        }
        let mut img = lock(&self.image);
        let pos = usize::try_from(pos).map_err(io::Error::other)?;
        if img.current.len() < pos + buf.len() {
            img.current.resize(pos + buf.len(), 0);
        }
        img.current[pos..pos + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.tick(&self.tree);
        let left = self.faults.syncs_before_failure.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::other("simulated fsync failure"));
        }
        if left > 0 {
            self.faults
                .syncs_before_failure
                .fetch_sub(1, Ordering::SeqCst);
        }
        let mut img = lock(&self.image);
        img.durable = img.current.clone();
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.image).current.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.tick(&self.tree);
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock(&self.image).current.resize(len, 0);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Tree {
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    dirs: BTreeSet<PathBuf>,
}

/// The simulated file system. Cloning shares it.
#[derive(Debug, Clone)]
pub struct SimStorage {
    tree: Arc<Mutex<Tree>>,
    faults: Arc<Faults>,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct NoLock;
impl DirLock for NoLock {}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// A small deterministic generator (xorshift64*), so the library needs no `rand`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

impl SimStorage {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        let faults = Faults::default();
        faults.syncs_before_failure.store(-1, Ordering::SeqCst);
        SimStorage {
            tree: Arc::new(Mutex::new(Tree::default())),
            faults: Arc::new(faults),
        }
    }

    /// The disk as it could be after a power cut. Open file handles of `self` keep
    /// working on the old state, as a dead process's would not matter.
    #[must_use]
    pub fn power_cut(&self, mode: CrashMode) -> SimStorage {
        cut_tree(&self.tree, mode)
    }

    /// Operations that changed (or synced) files or directories so far: writes, syncs,
    /// length changes, creations, removals, renames.
    #[must_use]
    pub fn op_count(&self) -> u64 {
        self.faults.ops.load(Ordering::SeqCst)
    }

    /// Arms a power cut just before the `n`-th operation from now (counted as in
    /// [`SimStorage::op_count`]; `n >= 1`). The program keeps running on `self`; the disk
    /// as the cut left it is taken with [`SimStorage::take_power_cut`]. This is how a
    /// test cuts the power in the middle of a multi-step operation, at every step.
    pub fn arm_power_cut(&self, n: u64, mode: CrashMode) {
        let at = self.op_count() + n.max(1);
        *lock(&self.faults.armed) = Some((at, mode));
        *lock(&self.faults.cut) = None;
    }

    /// The disk as the armed power cut left it, or `None` if fewer operations ran.
    #[must_use]
    pub fn take_power_cut(&self) -> Option<SimStorage> {
        *lock(&self.faults.armed) = None;
        lock(&self.faults.cut).take()
    }

    fn tick(&self) {
        self.faults.tick(&Arc::downgrade(&self.tree));
    }

    /// After `n` more successful syncs, every sync fails.
    pub fn fail_syncs_after(&self, n: i64) {
        self.faults.syncs_before_failure.store(n, Ordering::SeqCst);
    }

    /// Makes every directory sync fail (`true`) or succeed again (`false`).
    pub fn fail_dir_syncs(&self, fail: bool) {
        self.faults.fail_dir_syncs.store(fail, Ordering::SeqCst);
    }

    /// Makes every write fail (or succeed again).
    pub fn fail_writes(&self, fail: bool) {
        self.faults.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Successful `sync_data` calls so far.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// All file paths, sorted.
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.tree).files.keys().cloned().collect()
    }

    /// A file's current bytes.
    #[must_use]
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let tree = lock(&self.tree);
        tree.files.get(path).map(|f| lock(&f.image).current.clone())
    }

    /// Replaces a file's bytes, durably (as if rewritten by another program).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut tree = lock(&self.tree);
        let file = tree
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                Arc::new(SimFile {
                    image: Mutex::new(Image::default()),
                    faults: self.faults.clone(),
                    tree: Arc::downgrade(&self.tree),
                })
            })
            .clone();
        let mut img = lock(&file.image);
        img.durable = bytes.clone();
        img.current = bytes;
    }

    /// Deletes a file, durably.
    pub fn remove_file_for_test(&self, path: &Path) {
        lock(&self.tree).files.remove(path);
    }

    /// Flips one bit of a file, durably.
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) {
        let mut bytes = self.file_bytes(path).expect("file exists");
        bytes[byte] ^= 1 << bit;
        self.set_file_bytes(path, bytes);
    }
}

fn cut_tree(tree: &Arc<Mutex<Tree>>, mode: CrashMode) -> SimStorage {
    let tree = lock(tree);
    let next = SimStorage::new();
    let mut rng = Rng(match mode {
        CrashMode::Torn { seed } => seed | 1,
        CrashMode::DropUnsynced => 1,
    });
    {
        let mut out = lock(&next.tree);
        out.dirs = tree.dirs.clone();
        for (path, file) in &tree.files {
            let img = lock(&file.image);
            let bytes = surviving_bytes(&img, mode, &mut rng);
            out.files.insert(
                path.clone(),
                Arc::new(SimFile {
                    image: Mutex::new(Image {
                        current: bytes.clone(),
                        durable: bytes,
                    }),
                    faults: next.faults.clone(),
                    tree: Arc::downgrade(&next.tree),
                }),
            );
        }
    }
    next
}

fn surviving_bytes(img: &Image, mode: CrashMode, rng: &mut Rng) -> Vec<u8> {
    let durable = &img.durable;
    let extends_durable =
        img.current.len() > durable.len() && img.current[..durable.len()] == durable[..];
    match mode {
        CrashMode::Torn { .. } if extends_durable => {
            let unsynced = &img.current[durable.len()..];
            let keep = rng.below(unsynced.len() as u64 + 1) as usize;
            let mut out = durable.clone();
            out.extend_from_slice(&unsynced[..keep]);
            // Half the time, the last few kept bytes are garbage: a torn sector.
            if keep > 0 && rng.below(2) == 0 {
                let garbage = (rng.below(16) as usize + 1).min(keep);
                let len = out.len();
                for b in &mut out[len - garbage..] {
                    *b = rng.next() as u8;
                }
            }
            out
        }
        _ => durable.clone(),
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if matches!(mode, OpenMode::CreateNew | OpenMode::CreateTruncate) {
            self.tick();
        }
        let mut tree = lock(&self.tree);
        let parent_ok = path
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || tree.dirs.contains(p));
        if !parent_ok {
            return Err(not_found(path));
        }
        let existing = tree.files.get(path).cloned();
        let file = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(f)) => f,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            (OpenMode::CreateTruncate, Some(f)) => {
                lock(&f.image).current.clear();
                f
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                let f = Arc::new(SimFile {
                    image: Mutex::new(Image::default()),
                    faults: self.faults.clone(),
                    tree: Arc::downgrade(&self.tree),
                });
                tree.files.insert(path.to_path_buf(), f.clone());
                f
            }
        };
        Ok(file)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        for anc in path.ancestors() {
            if !anc.as_os_str().is_empty() {
                tree.dirs.insert(anc.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let tree = lock(&self.tree);
        if !tree.dirs.contains(path) {
            return Err(not_found(path));
        }
        let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut out: Vec<DirEntry> = Vec::new();
        for d in &tree.dirs {
            if d.parent() == Some(path) {
                out.extend(name_of(d).map(|name| DirEntry { name, is_dir: true }));
            }
        }
        for f in tree.files.keys() {
            if f.parent() == Some(path) {
                out.extend(name_of(f).map(|name| DirEntry {
                    name,
                    is_dir: false,
                }));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        let tree = lock(&self.tree);
        tree.files.contains_key(path) || tree.dirs.contains(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.tick();
        lock(&self.tree)
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        if !tree.dirs.contains(path) {
            return Err(not_found(path));
        }
        tree.files.retain(|p, _| !p.starts_with(path));
        tree.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        if let Some(f) = tree.files.remove(from) {
            tree.files.insert(to.to_path_buf(), f);
            return Ok(());
        }
        if !tree.dirs.contains(from) {
            return Err(not_found(from));
        }
        let moved_dirs: Vec<PathBuf> = tree
            .dirs
            .iter()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for d in moved_dirs {
            tree.dirs.remove(&d);
            let rest = d.strip_prefix(from).map_err(io::Error::other)?;
            tree.dirs.insert(to.join(rest));
        }
        let moved_files: Vec<PathBuf> = tree
            .files
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in moved_files {
            let f = tree.files.remove(&p).expect("listed above");
            let rest = p.strip_prefix(from).map_err(io::Error::other)?;
            tree.files.insert(to.join(rest), f);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.tick();
        if self.faults.fail_dir_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated directory sync failure"));
        }
        if lock(&self.tree).dirs.contains(path) {
            Ok(())
        } else {
            Err(not_found(path))
        }
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(NoLock))
    }
}
