//! A bounded cache of read handles for closed segments: the open-file budget.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::io::{OpenMode, Storage, StorageFile};

/// Keeps at most `max` handles open; past that the least recently used is closed.
/// Readers hold their own `Arc`, so closing a cached handle never breaks a read.
#[derive(Debug)]
pub(crate) struct FileCache {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tick: u64,
    open: HashMap<PathBuf, (Arc<dyn StorageFile>, u64)>,
}

impl FileCache {
    pub(crate) fn new(max: usize) -> Self {
        FileCache {
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn get(
        &self,
        storage: &dyn Storage,
        path: &Path,
    ) -> io::Result<Arc<dyn StorageFile>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((file, used)) = inner.open.get_mut(path) {
            *used = tick;
            return Ok(file.clone());
        }
        let file = storage.open(path, OpenMode::Read)?;
        if inner.open.len() >= self.max {
            let oldest = inner
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                inner.open.remove(&p);
            }
        }
        inner.open.insert(path.to_path_buf(), (file.clone(), tick));
        Ok(file)
    }

    pub(crate) fn forget(&self, path: &Path) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(path);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn never_holds_more_than_the_budget() {
        let storage = SimStorage::new();
        storage.create_dir_all(Path::new("/d")).unwrap();
        let cache = FileCache::new(2);
        for i in 0..5 {
            let p = PathBuf::from(format!("/d/{i}"));
            storage.open(&p, OpenMode::CreateNew).unwrap();
            cache.get(&storage, &p).unwrap();
            assert!(cache.len() <= 2);
        }
        // The most recently used survive.
        cache.get(&storage, Path::new("/d/3")).unwrap();
        assert_eq!(cache.len(), 2);
        cache.forget(Path::new("/d/3"));
        assert_eq!(cache.len(), 1);
    }
}
