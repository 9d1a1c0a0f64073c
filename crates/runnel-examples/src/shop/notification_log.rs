//! The notifications file: the stand-in for e-mail or SMS, and the visible truth of
//! what was sent.
//!
//! ## Format
//!
//! One `notificationSent` event as JSON per line, `\n`-terminated, in the order sent:
//!
//! ```text
//! {"order_id":"o-3f2a…","customer_id":"ada","name":"Ada","email":"ada@example.com","message":"Dear Ada, …"}
//! ```
//!
//! A line without its `\n` is *torn*: a writer died between `write` and `fsync`. It was
//! never confirmed (the handler had not returned), so the order is delivered again; the
//! next writer (or [`NotificationLog::open`]) cuts the torn line off before appending.
//! Lines that are not a notification (a hand edit) are kept and ignored.
//!
//! ## Exactly once per order id
//!
//! [`NotificationLog::append`] does, under an in-process mutex *and* an exclusive lock
//! on the file (`flock`, so copies of the service in other processes that share the
//! file take turns too):
//!
//! 1. catch up: read what was appended since this process last looked (by anyone), and
//!    learn those order ids;
//! 2. if the order id is already there, append nothing and return the line that is;
//! 3. else append the line and `fsync` it, then read it back like any other line.
//!
//! The handler returns `Ok` only after step 3, so the runtime commits the order's
//! offset only after the line is durable. A crash anywhere before re-delivers the
//! order, and step 2 then finds it if it got written. Hence: **every order id appears
//! at most once in the file, and every order that is delivered appears exactly once**,
//! across crashes, restarts and rebalances, for any number of copies of the service as
//! long as they write the same file on one host (a lock that works across machines
//! needs another store; the essay's e-mail provider would take the order id as its
//! idempotency key instead).
//!
//! Not covered: a file edited or truncated by hand (it is re-read from the start; an
//! order whose line was removed is sent again only if it is delivered again).
//!
//! ## Failures
//!
//! A failed write or `fsync` is cut back to the last good line and reported (the
//! handler retries). If even that fails, the log is *poisoned*: it refuses every later
//! append, because it can no longer tell what the file holds; restarting the service
//! re-reads the file (fjall's `Poisoned`, for the same reason).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::events::NotificationSent;

/// Largest line read back; a longer one is a hand edit, not ours, and is skipped
/// without being held in memory twice.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// The notifications file, shared by the handlers of one process. Cloning shares it.
#[derive(Clone, Debug)]
pub struct NotificationLog {
    /// Where the file is, for messages.
    path: Arc<Path>,
    /// The open file and what was learned from it; one append at a time in-process.
    inner: Arc<Mutex<Inner>>,
}

/// The open file and what this process knows of its content.
#[derive(Debug)]
struct Inner {
    /// Opened for reading and appending; locked around every catch-up and append.
    file: File,
    /// Bytes already read: always the end of a complete line (or 0).
    read_to: u64,
    /// Each order id sent, by its index in `sent`.
    by_order: HashMap<String, usize>,
    /// Every notification in the file, in file order (the first line of an order id
    /// wins, should a hand edit have duplicated it).
    sent: Vec<NotificationSent>,
    /// Why appends are refused, once a failed write could not be undone.
    poisoned: Option<String>,
}

/// What [`NotificationLog::append`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The line is now in the file, and durable.
    Written(NotificationSent),
    /// The order was already notified: here is the line the file holds for it.
    AlreadySent(NotificationSent),
}

impl Appended {
    /// The notification the file holds for the order.
    #[must_use]
    pub fn notification(&self) -> &NotificationSent {
        match self {
            Appended::Written(n) | Appended::AlreadySent(n) => n,
        }
    }
}

/// Holds the exclusive lock on the file and releases it however the critical section
/// ends. It owns a duplicate of the descriptor (same open file, so the same lock), which
/// leaves the `Inner` it guards free to be borrowed mutably meanwhile.
struct FileLock(File);

impl FileLock {
    fn acquire(file: &File) -> io::Result<FileLock> {
        let dup = file.try_clone()?;
        dup.lock()?;
        Ok(FileLock(dup))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases it anyway; an unlock error leaves nothing to undo.
        let _ = self.0.unlock();
    }
}

impl NotificationLog {
    /// Opens (creating it and its directory if need be) the file at `path`, learns the
    /// order ids it holds, and cuts off a torn last line. Blocking: call it at start or
    /// from `spawn_blocking`.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<NotificationLog> {
        let path: PathBuf = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut inner = Inner {
            file,
            read_to: 0,
            by_order: HashMap::new(),
            sent: Vec::new(),
            poisoned: None,
        };
        {
            let _lock = FileLock::acquire(&inner.file)?;
            inner.catch_up(&path)?;
        }
        Ok(NotificationLog {
            path: Arc::from(path),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `n` unless its order was already notified; see the module docs for why
    /// this makes each order id appear once. Blocking (it `fsync`s): call it from
    /// `spawn_blocking`, which also lets it finish if the calling task is cancelled.
    pub fn append(&self, n: &NotificationSent) -> io::Result<Appended> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &inner.poisoned {
            return Err(io::Error::other(format!(
                "{} refuses appends after an earlier failure ({why}); restart the service",
                self.path.display()
            )));
        }
        let inner = &mut *inner;
        let _lock = FileLock::acquire(&inner.file)?;
        inner.catch_up(&self.path)?;
        if let Some(&i) = inner.by_order.get(&n.order_id) {
            return Ok(Appended::AlreadySent(inner.sent[i].clone()));
        }
        let mut line = serde_json::to_vec(n).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(e) = (&inner.file)
            .write_all(&line)
            .and_then(|()| inner.file.sync_data())
        {
            inner.undo(&self.path, &e);
            return Err(e);
        }
        // Learn our own line the way any other is learned: by reading it back.
        inner.catch_up(&self.path)?;
        let i = *inner.by_order.get(&n.order_id).ok_or_else(|| {
            io::Error::other(format!(
                "the line for order {} did not read back from {}",
                n.order_id,
                self.path.display()
            ))
        })?;
        Ok(Appended::Written(inner.sent[i].clone()))
    }

    /// The notification sent for `order_id`, if any, after catching up with the file.
    /// Blocking.
    pub fn get(&self, order_id: &str) -> io::Result<Option<NotificationSent>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.refresh(&self.path)?;
        Ok(inner.by_order.get(order_id).map(|&i| inner.sent[i].clone()))
    }

    /// How many orders were notified, and the last `recent` notifications, after
    /// catching up with the file. Blocking.
    pub fn summary(&self, recent: usize) -> io::Result<(usize, Vec<NotificationSent>)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.refresh(&self.path)?;
        let from = inner.sent.len().saturating_sub(recent);
        Ok((inner.sent.len(), inner.sent[from..].to_vec()))
    }
}

impl Inner {
    /// Catches up under the file lock, unless poisoned (then what is known is served).
    fn refresh(&mut self, path: &Path) -> io::Result<()> {
        if self.poisoned.is_some() {
            return Ok(());
        }
        let _lock = FileLock::acquire(&self.file)?;
        self.catch_up(path)
    }

    /// Reads the lines appended since `read_to`; cuts off a torn last line. The caller
    /// holds the file lock, so no writer is between its write and its `fsync`.
    fn catch_up(&mut self, path: &Path) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.read_to {
            warn!(path = %path.display(), "the notifications file shrank; reading it again");
            self.read_to = 0;
            self.by_order.clear();
            self.sent.clear();
        }
        if len == self.read_to {
            return Ok(());
        }
        let mut buf = Vec::new();
        (&self.file).seek(SeekFrom::Start(self.read_to))?;
        (&self.file)
            .take(len - self.read_to)
            .read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..complete].split(|b| *b == b'\n') {
            self.learn(line);
        }
        self.read_to += complete as u64;
        if complete < buf.len() {
            warn!(
                path = %path.display(),
                bytes = buf.len() - complete,
                "cutting off a torn last line: its order was never confirmed and will be sent again"
            );
            self.file.set_len(self.read_to)?;
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Learns one complete line.
    fn learn(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) || line.len() > LINE_BYTES_MAX {
            return;
        }
        let Ok(n) = serde_json::from_slice::<NotificationSent>(line) else {
            return; // not ours: kept in the file, ignored here
        };
        if !self.by_order.contains_key(&n.order_id) {
            self.by_order.insert(n.order_id.clone(), self.sent.len());
            self.sent.push(n);
        }
    }

    /// After a failed write or `fsync`: cut the file back to the last line known good,
    /// or, if that fails too, refuse every later append.
    fn undo(&mut self, path: &Path, error: &io::Error) {
        let cut = self
            .file
            .set_len(self.read_to)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = cut {
            warn!(path = %path.display(), %error, cut_error = %e, "notifications file poisoned");
            self.poisoned = Some(format!(
                "write failed ({error}), then cutting back failed ({e})"
            ));
        } else {
            warn!(path = %path.display(), %error, "a notification append failed and was undone");
        }
    }
}
