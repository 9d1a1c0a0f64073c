//! File I/O behind a small trait, so that tests can cut the power.
//!
//! The log touches the file system only through [`Storage`] and [`StorageFile`].
//! [`StdStorage`] is the real thing; [`crate::sim::SimStorage`] keeps files in memory,
//! remembers which bytes were synced, and can produce the disk as it would look after a
//! power cut.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; create the file, failing if it exists.
    CreateNew,
    /// Read and write; create the file or truncate it to zero.
    CreateTruncate,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// File or directory name (not the full path).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// An open file. Writes are positional so that the log decides where bytes go, and
/// nothing is durable until [`StorageFile::sync_data`] returns.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `pos`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// A guard that holds a lock on a data directory until dropped.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// The file system, as the log sees it.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Lists a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (a file) so two processes cannot share a data
    /// directory. Fails at once if another process holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;

    /// Writes `data` to `path` atomically: a temporary file, fsync, rename, directory
    /// fsync. A crash leaves either the old file or the new one; once this returns, the
    /// new one (the rename is durable only after the directory fsync).
    ///
    /// The directory holding `path` must itself be durable already: this syncs its
    /// entries, not its own entry in its parent (see `create_dir_durable`).
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let file = self.open(&tmp, OpenMode::CreateTruncate)?;
        file.write_all_at(data, 0)?;
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, path)?;
        if let Some(dir) = parent_dir(path) {
            self.sync_dir(dir)?;
        }
        Ok(())
    }
}

/// The directory that holds `path`'s entry: `.` for a bare file name (whose `parent()`
/// is the empty path, which no file system opens), `None` for a root.
pub(crate) fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    })
}

/// Creates the directory `path` and any missing parents, and makes each one's entry
/// durable: a directory's creation, like a file's, survives a power cut only once its
/// parent directory is synced. The parent of `path` is synced even when `path` already
/// existed, since a crash may have left it created but not yet durable; a directory
/// created here is synced before its parent, so a power cut in between leaves at worst
/// a durable entry in a directory that is not (and so nothing).
pub(crate) fn create_dir_durable(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !storage.exists(p))
        .collect();
    storage.create_dir_all(path)?;
    let mut parents: Vec<&Path> = missing.iter().filter_map(|p| parent_dir(p)).collect();
    if missing.is_empty() {
        parents.extend(parent_dir(path));
    }
    for dir in parents {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

/// The temporary name used by [`Storage::write_atomic`]; leftovers are removed on open.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdFile(fs::File);

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] fs::File);
impl DirLock for StdLock {}

impl Storage for StdStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut o = fs::OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateNew => {
                o.write(true).create_new(true);
            }
            OpenMode::CreateTruncate => {
                o.write(true).create(true).truncate(true);
            }
        }
        Ok(Arc::new(StdFile(o.open(path)?)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => {
                io::Error::new(io::ErrorKind::WouldBlock, "another process holds the lock")
            }
            fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(StdLock(file)))
    }
}
