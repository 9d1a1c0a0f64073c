//! An in-memory file system that remembers which bytes were synced, for crash tests.
//!
//! Every file keeps two images: `current` (what reads see, like the page cache) and
//! `durable` (what the last `sync_data` made safe). Every directory likewise keeps two
//! sets of entries: `current` (what lookups and listings see) and `durable` (what the
//! last [`Storage::sync_dir`] of that directory made safe). Creating, renaming or
//! removing a file, and creating or removing a directory, change only the `current`
//! entries of the directories involved.
//!
//! [`SimStorage::power_cut`] returns a fresh file system holding what a disk could hold
//! after losing power: the tree reached from the root through durable entries only,
//! each file with its durable image, plus, in [`CrashMode::Torn`], a random prefix of
//! the unsynced tail, possibly with garbage at its end (a torn sector). So:
//!
//! - a file (or directory) whose creation was not followed by a `sync_dir` of its
//!   parent is gone, even if its data was synced;
//! - a rename not made durable leaves the file under its old name if that name was
//!   durable (and nowhere if not); a rename whose target directory was synced but whose
//!   source directory was not leaves it under both names (one file, two links);
//! - a removal not made durable is undone: the file comes back with its durable image;
//! - a directory's entries travel with it: directories are identified as inodes are,
//!   so a renamed directory keeps what was durable in it.
//!
//! [`SimStorage::arm_power_cut`] takes that image just before the n-th file operation
//! from now, so a test can cut the power at every step of a multi-step operation (the
//! cleaner's swap) and recover from each.
//!
//! Simplification, stated: each directory is synced on its own. A real file system
//! with a journal (ext4, XFS) often makes a rename durable in both directories at once,
//! or makes a newly created file's entry durable with its data's fsync; the simulator
//! assumes neither, which is the strictest reading of POSIX and what catches a missing
//! `sync_dir`. The root directory always exists. Truncating a file (`set_len`, or
//! `CreateTruncate` of an existing one) is, like a write, durable only after `sync_data`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};
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

/// A directory's identity. Entries name directories by id, as an inode number, so a
/// renamed directory keeps its entries, durable and current.
type DirId = u64;
/// The root directory: always there, never renamed or removed.
const ROOT: DirId = 0;

/// What a directory entry points at.
#[derive(Debug, Clone)]
enum Node {
    File(Arc<SimFile>),
    Dir(DirId),
}

/// One directory's entries, by name.
#[derive(Debug, Default)]
struct Dir {
    /// What lookups and listings see.
    current: BTreeMap<String, Node>,
    /// What the last `sync_dir` of this directory made safe: all a power cut keeps.
    durable: BTreeMap<String, Node>,
}

/// Every directory ever created, by id. A removed directory stays here: an entry that
/// is still durable somewhere may bring it back at a power cut.
#[derive(Debug)]
struct Tree {
    dirs: HashMap<DirId, Dir>,
    next_dir: DirId,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            dirs: HashMap::from([(ROOT, Dir::default())]),
            next_dir: ROOT + 1,
        }
    }
}

/// The names along a path; the root and `.` are skipped, so `/a/b` and `a/b` agree.
fn names(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

impl Tree {
    fn dir(&self, id: DirId) -> &Dir {
        self.dirs
            .get(&id)
            .expect("entries name existing directories")
    }

    fn dir_mut(&mut self, id: DirId) -> &mut Dir {
        self.dirs
            .get_mut(&id)
            .expect("entries name existing directories")
    }

    fn new_dir(&mut self) -> DirId {
        let id = self.next_dir;
        self.next_dir += 1;
        self.dirs.insert(id, Dir::default());
        id
    }

    /// The directory a walk through current entries reaches, following `names`.
    fn walk(&self, names: &[String]) -> Option<DirId> {
        let mut at = ROOT;
        for n in names {
            match self.dir(at).current.get(n)? {
                Node::Dir(d) => at = *d,
                Node::File(_) => return None,
            }
        }
        Some(at)
    }

    /// What `path` names now.
    fn lookup(&self, path: &Path) -> Option<Node> {
        let names = names(path);
        let Some((last, parents)) = names.split_last() else {
            return Some(Node::Dir(ROOT));
        };
        self.dir(self.walk(parents)?).current.get(last).cloned()
    }

    fn lookup_dir(&self, path: &Path) -> Option<DirId> {
        match self.lookup(path)? {
            Node::Dir(d) => Some(d),
            Node::File(_) => None,
        }
    }

    fn lookup_file(&self, path: &Path) -> Option<Arc<SimFile>> {
        match self.lookup(path)? {
            Node::File(f) => Some(f),
            Node::Dir(_) => None,
        }
    }

    /// The existing directory that holds `path`'s entry, and the entry's name.
    fn parent_of(&self, path: &Path) -> Option<(DirId, String)> {
        let mut names = names(path);
        let last = names.pop()?;
        Some((self.walk(&names)?, last))
    }

    /// Creates the directories along `path` that are missing; `durable` makes each new
    /// entry durable at once (as a test's setup written by another program).
    fn make_dirs(&mut self, path: &Path, durable: bool) -> io::Result<DirId> {
        let mut at = ROOT;
        for n in names(path) {
            at = match self.dir(at).current.get(&n) {
                Some(Node::Dir(d)) => *d,
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", path.display()),
                    ));
                }
                None => {
                    let d = self.new_dir();
                    let parent = self.dir_mut(at);
                    parent.current.insert(n.clone(), Node::Dir(d));
                    if durable {
                        parent.durable.insert(n, Node::Dir(d));
                    }
                    d
                }
            };
        }
        Ok(at)
    }

    /// Whether directory `inner` is `outer` or lies below it (in current entries).
    fn contains_dir(&self, outer: DirId, inner: DirId) -> bool {
        outer == inner
            || self.dir(outer).current.values().any(|n| match n {
                Node::Dir(d) => self.contains_dir(*d, inner),
                Node::File(_) => false,
            })
    }

    /// Every file reachable through current entries, with its path.
    fn files_below(&self, id: DirId, at: &Path, out: &mut Vec<(PathBuf, Arc<SimFile>)>) {
        for (name, node) in &self.dir(id).current {
            match node {
                Node::File(f) => out.push((at.join(name), f.clone())),
                Node::Dir(d) => self.files_below(*d, &at.join(name), out),
            }
        }
    }
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

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::other(format!("{} is a directory", path.display()))
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

    /// The disk as it could be after a power cut: the durable entries of every
    /// directory, the durable image of every file (see the module docs). Open file
    /// handles of `self` keep working on the old state, as a dead process's would not
    /// matter.
    #[must_use]
    pub fn power_cut(&self, mode: CrashMode) -> SimStorage {
        cut_tree(&self.tree, mode)
    }

    /// Operations that changed (or synced) files or directories so far: writes, syncs,
    /// length changes, creations, removals, renames, directory syncs.
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

    /// Makes every directory sync fail (`true`) or succeed again (`false`). A failed
    /// directory sync makes nothing durable.
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
        let mut out = Vec::new();
        lock(&self.tree).files_below(ROOT, Path::new("/"), &mut out);
        let mut paths: Vec<PathBuf> = out.into_iter().map(|(p, _)| p).collect();
        paths.sort();
        paths
    }

    /// A file's current bytes.
    #[must_use]
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let file = lock(&self.tree).lookup_file(path)?;
        let bytes = lock(&file.image).current.clone();
        Some(bytes)
    }

    /// Replaces a file's bytes, durably (as if rewritten by another program, which
    /// synced the file and its directories). Creates the file and its directories if
    /// they are missing.
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut tree = lock(&self.tree);
        let (parent, name) = match path.parent() {
            Some(p) => (
                tree.make_dirs(p, true).expect("no file on the way"),
                path.file_name().expect("a file name"),
            ),
            None => panic!("{} is not a file path", path.display()),
        };
        let name = name.to_string_lossy().into_owned();
        let file = match tree.dir(parent).current.get(&name) {
            Some(Node::File(f)) => f.clone(),
            Some(Node::Dir(_)) => panic!("{} is a directory", path.display()),
            None => Arc::new(SimFile {
                image: Mutex::new(Image::default()),
                faults: self.faults.clone(),
                tree: Arc::downgrade(&self.tree),
            }),
        };
        let dir = tree.dir_mut(parent);
        dir.current.insert(name.clone(), Node::File(file.clone()));
        dir.durable.insert(name, Node::File(file.clone()));
        let mut img = lock(&file.image);
        img.durable = bytes.clone();
        img.current = bytes;
    }

    /// Deletes a file, durably.
    pub fn remove_file_for_test(&self, path: &Path) {
        let mut tree = lock(&self.tree);
        if let Some((parent, name)) = tree.parent_of(path) {
            let dir = tree.dir_mut(parent);
            dir.current.remove(&name);
            dir.durable.remove(&name);
        }
    }

    /// Flips one bit of a file, durably.
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) {
        let mut bytes = self.file_bytes(path).expect("file exists");
        bytes[byte] ^= 1 << bit;
        self.set_file_bytes(path, bytes);
    }
}

/// Builds the disk a power cut leaves: a walk from the root through durable entries.
struct Cut<'a> {
    from: &'a Tree,
    to: &'a mut Tree,
    mode: CrashMode,
    rng: Rng,
    /// Old file to new: a file reached under two durable names stays one file.
    files: HashMap<*const SimFile, Arc<SimFile>>,
    /// Directories already copied: one reached twice (a rename durable in both
    /// directories' entries) is kept only at the first name met.
    dirs: HashSet<DirId>,
    faults: Arc<Faults>,
    tree: Weak<Mutex<Tree>>,
}

impl Cut<'_> {
    fn copy_dir(&mut self, old: DirId, new: DirId) {
        for (name, node) in &self.from.dir(old).durable {
            let copied = match node {
                Node::File(f) => Node::File(self.copy_file(f)),
                Node::Dir(d) => {
                    if !self.dirs.insert(*d) {
                        continue;
                    }
                    let id = self.to.new_dir();
                    self.copy_dir(*d, id);
                    Node::Dir(id)
                }
            };
            let dir = self.to.dir_mut(new);
            dir.current.insert(name.clone(), copied.clone());
            dir.durable.insert(name.clone(), copied);
        }
    }

    fn copy_file(&mut self, file: &Arc<SimFile>) -> Arc<SimFile> {
        if let Some(f) = self.files.get(&Arc::as_ptr(file)) {
            return f.clone();
        }
        let bytes = surviving_bytes(&lock(&file.image), self.mode, &mut self.rng);
        let copy = Arc::new(SimFile {
            image: Mutex::new(Image {
                current: bytes.clone(),
                durable: bytes,
            }),
            faults: self.faults.clone(),
            tree: self.tree.clone(),
        });
        self.files.insert(Arc::as_ptr(file), copy.clone());
        copy
    }
}

fn cut_tree(tree: &Arc<Mutex<Tree>>, mode: CrashMode) -> SimStorage {
    let tree = lock(tree);
    let next = SimStorage::new();
    let rng = Rng(match mode {
        CrashMode::Torn { seed } => seed | 1,
        CrashMode::DropUnsynced => 1,
    });
    {
        let mut out = lock(&next.tree);
        let mut cut = Cut {
            from: &tree,
            to: &mut out,
            mode,
            rng,
            files: HashMap::new(),
            dirs: HashSet::from([ROOT]),
            faults: next.faults.clone(),
            tree: Arc::downgrade(&next.tree),
        };
        cut.copy_dir(ROOT, ROOT);
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
        let (parent, name) = tree.parent_of(path).ok_or_else(|| not_found(path))?;
        let existing = tree.dir(parent).current.get(&name).cloned();
        let file = match (mode, existing) {
            (_, Some(Node::Dir(_))) => return Err(is_a_directory(path)),
            (OpenMode::Read | OpenMode::ReadWrite, Some(Node::File(f))) => f,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(Node::File(_))) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            (OpenMode::CreateTruncate, Some(Node::File(f))) => {
                lock(&f.image).current.clear();
                f
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                let f = Arc::new(SimFile {
                    image: Mutex::new(Image::default()),
                    faults: self.faults.clone(),
                    tree: Arc::downgrade(&self.tree),
                });
                // Only the current entry: the name is durable after `sync_dir`.
                tree.dir_mut(parent)
                    .current
                    .insert(name, Node::File(f.clone()));
                f
            }
        };
        Ok(file)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick();
        lock(&self.tree).make_dirs(path, false).map(|_| ())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let tree = lock(&self.tree);
        let dir = tree.lookup_dir(path).ok_or_else(|| not_found(path))?;
        // Entries are kept by name, so the listing comes out sorted.
        Ok(tree
            .dir(dir)
            .current
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                is_dir: matches!(node, Node::Dir(_)),
            })
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.tree).lookup(path).is_some()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        let (parent, name) = tree.parent_of(path).ok_or_else(|| not_found(path))?;
        let dir = tree.dir_mut(parent);
        match dir.current.get(&name) {
            Some(Node::File(_)) => {
                dir.current.remove(&name);
                Ok(())
            }
            Some(Node::Dir(_)) => Err(is_a_directory(path)),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        let (parent, name) = tree.parent_of(path).ok_or_else(|| not_found(path))?;
        let dir = tree.dir_mut(parent);
        match dir.current.get(&name) {
            // The directory's own entries stay as they are: if its removal is not made
            // durable, it comes back with what was durable in it.
            Some(Node::Dir(_)) => {
                dir.current.remove(&name);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick();
        let mut tree = lock(&self.tree);
        let (src, src_name) = tree.parent_of(from).ok_or_else(|| not_found(from))?;
        let node = tree
            .dir(src)
            .current
            .get(&src_name)
            .cloned()
            .ok_or_else(|| not_found(from))?;
        let (dst, dst_name) = tree.parent_of(to).ok_or_else(|| not_found(to))?;
        if (src, &src_name) == (dst, &dst_name) {
            return Ok(());
        }
        match (&node, tree.dir(dst).current.get(&dst_name)) {
            (Node::Dir(d), _) if tree.contains_dir(*d, dst) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot move {} into itself", from.display()),
                ));
            }
            (Node::File(_), Some(Node::Dir(_))) => return Err(is_a_directory(to)),
            (Node::Dir(_), Some(Node::File(_))) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    to.display()
                )));
            }
            (Node::Dir(_), Some(Node::Dir(d))) if !tree.dir(*d).current.is_empty() => {
                return Err(io::Error::other(format!("{} is not empty", to.display())));
            }
            _ => {}
        }
        tree.dir_mut(src).current.remove(&src_name);
        tree.dir_mut(dst).current.insert(dst_name, node);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.tick();
        if self.faults.fail_dir_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated directory sync failure"));
        }
        let mut tree = lock(&self.tree);
        let id = tree.lookup_dir(path).ok_or_else(|| not_found(path))?;
        let dir = tree.dir_mut(id);
        dir.durable = dir.current.clone();
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(NoLock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_with_dir(dir: &str) -> SimStorage {
        let s = SimStorage::new();
        s.create_dir_all(Path::new(dir)).unwrap();
        s.sync_dir(Path::new("/")).unwrap();
        s.sync_dir(Path::new(dir)).unwrap();
        s
    }

    fn write_synced(s: &SimStorage, path: &str, data: &[u8]) {
        let f = s.open(Path::new(path), OpenMode::CreateNew).unwrap();
        f.write_all_at(data, 0).unwrap();
        f.sync_data().unwrap();
    }

    fn cut(s: &SimStorage) -> SimStorage {
        s.power_cut(CrashMode::DropUnsynced)
    }

    #[test]
    fn a_created_file_is_lost_without_a_sync_of_its_directory() {
        let s = sim_with_dir("/d");
        write_synced(&s, "/d/f", b"data");
        assert!(!cut(&s).exists(Path::new("/d/f")));
        s.sync_dir(Path::new("/d")).unwrap();
        assert_eq!(cut(&s).file_bytes(Path::new("/d/f")).unwrap(), b"data");
    }

    #[test]
    fn a_created_directory_is_lost_without_a_sync_of_its_parent() {
        let s = sim_with_dir("/d");
        s.create_dir_all(Path::new("/d/e/f")).unwrap();
        s.sync_dir(Path::new("/d/e")).unwrap();
        assert!(!cut(&s).exists(Path::new("/d/e")));
        s.sync_dir(Path::new("/d")).unwrap();
        let after = cut(&s);
        assert!(after.exists(Path::new("/d/e")));
        assert!(after.exists(Path::new("/d/e/f")));
    }

    #[test]
    fn a_rename_not_made_durable_leaves_the_old_name() {
        let s = sim_with_dir("/d");
        write_synced(&s, "/d/a.tmp", b"new");
        s.sync_dir(Path::new("/d")).unwrap();
        s.rename(Path::new("/d/a.tmp"), Path::new("/d/a")).unwrap();
        let before = cut(&s);
        assert_eq!(before.file_bytes(Path::new("/d/a.tmp")).unwrap(), b"new");
        assert!(!before.exists(Path::new("/d/a")));
        s.sync_dir(Path::new("/d")).unwrap();
        let after = cut(&s);
        assert!(!after.exists(Path::new("/d/a.tmp")));
        assert_eq!(after.file_bytes(Path::new("/d/a")).unwrap(), b"new");
    }

    #[test]
    fn a_rename_over_a_file_not_made_durable_leaves_the_old_file() {
        let s = sim_with_dir("/d");
        write_synced(&s, "/d/a", b"old");
        write_synced(&s, "/d/a.tmp", b"new");
        s.sync_dir(Path::new("/d")).unwrap();
        s.rename(Path::new("/d/a.tmp"), Path::new("/d/a")).unwrap();
        assert_eq!(cut(&s).file_bytes(Path::new("/d/a")).unwrap(), b"old");
        assert_eq!(s.file_bytes(Path::new("/d/a")).unwrap(), b"new");
    }

    #[test]
    fn an_unlink_not_made_durable_is_undone() {
        let s = sim_with_dir("/d");
        write_synced(&s, "/d/f", b"data");
        s.sync_dir(Path::new("/d")).unwrap();
        s.remove_file(Path::new("/d/f")).unwrap();
        assert!(!s.exists(Path::new("/d/f")));
        assert_eq!(cut(&s).file_bytes(Path::new("/d/f")).unwrap(), b"data");
        s.sync_dir(Path::new("/d")).unwrap();
        assert!(!cut(&s).exists(Path::new("/d/f")));
    }

    #[test]
    fn a_moved_directory_keeps_its_durable_entries() {
        let s = sim_with_dir("/a");
        s.create_dir_all(Path::new("/trash")).unwrap();
        s.sync_dir(Path::new("/")).unwrap();
        write_synced(&s, "/a/f", b"data");
        s.sync_dir(Path::new("/a")).unwrap();
        s.rename(Path::new("/a"), Path::new("/trash/a")).unwrap();
        assert_eq!(cut(&s).file_bytes(Path::new("/a/f")).unwrap(), b"data");
        s.sync_dir(Path::new("/")).unwrap();
        s.sync_dir(Path::new("/trash")).unwrap();
        let after = cut(&s);
        assert!(!after.exists(Path::new("/a")));
        assert_eq!(after.file_bytes(Path::new("/trash/a/f")).unwrap(), b"data");
    }

    #[test]
    fn a_failed_directory_sync_makes_nothing_durable() {
        let s = sim_with_dir("/d");
        write_synced(&s, "/d/f", b"data");
        s.fail_dir_syncs(true);
        assert!(s.sync_dir(Path::new("/d")).is_err());
        assert!(!cut(&s).exists(Path::new("/d/f")));
    }
}
