//! What the core's integration tests share: a `Core` on a real log in a temporary
//! directory, removed when the fixture is dropped.
#![allow(dead_code)]

use std::sync::Arc;

use runnel_core::Core;
use runnel_log::{Log, LogConfig};

pub struct Fixture {
    pub core: Arc<Core>,
    pub dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh log under a directory named after `tag` and this process.
pub fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("runnel-core-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = LogConfig::new(&dir);
    config.background = false;
    let log = Arc::new(Log::open(config).unwrap());
    let core = Core::new(log, runnel_group::Config::default(), 7).unwrap();
    Fixture { core, dir }
}
