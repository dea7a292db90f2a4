//! Fsync of fjall's active journal from outside fjall.
//!
//! fjall's own `persist(SyncAll)` holds the journal lock while the disk flushes, and the same
//! lock guards every batch write and memtable insert, so the committer could not prepare the
//! next batch while an fsync is running. fsync applies to the file, not to the descriptor it is
//! called on, so we keep our own read-only handle to the active journal and call
//! `fdatasync` on it from the syncer thread while the committer goes on writing.
//!
//! This relies on two facts of fjall 2.x's journal (checked in its source, pinned by
//! Cargo.lock): journals are files named by increasing number in `<keyspace>/journals/`, the
//! active one being the highest; and rotating to a new journal fsyncs the old one first (and
//! creates the new one preallocated and fsynced, directory included), so data written before
//! a rotation is already durable. Hence syncing the newest journal, chosen *after* the batches
//! to be made durable were written, covers them. If the layout ever differs, `sync` returns
//! `Unsupported` and the caller falls back to fjall's own persist.
//!
//! Finding the newest journal means listing the directory, five syscalls (`openat`, `fstat`,
//! two `getdents64`, `close`), which was on every fsync. On Linux an inotify watch on the
//! directory tells whether a file appeared since the last listing, at the price of one
//! non-blocking `read`: the syncer's CPU per position fell by about 15 % (benches/RESULTS.md,
//! session 4). It is exact:
//! the kernel queues the event inside the call that creates the file, so a journal created
//! before a sync starts is always seen by that sync.
use std::fs::File;
use std::io;
use std::path::PathBuf;

pub(super) struct JournalSync {
    dir: PathBuf,
    current: Option<(u64, File)>,
    watch: Watch,
}

impl JournalSync {
    pub fn new(keyspace_dir: PathBuf) -> Self {
        JournalSync {
            dir: keyspace_dir.join("journals"),
            current: None,
            watch: Watch::default(),
        }
    }

    /// The id of the newest journal file.
    fn newest(&self) -> io::Result<u64> {
        let mut newest = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                newest = newest.max(Some(id));
            }
        }
        newest.ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no journal file found"))
    }

    /// Makes everything written to the journal so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        // The watch is set up before the listing it guards, so no file created in between is
        // missed; and a file that appeared since, even one the listing saw, means listing again.
        let appeared = self.watch.appeared(&self.dir);
        let file = match &self.current {
            Some((_, file)) if !appeared => file,
            _ => {
                let newest = self.newest()?;
                match &self.current {
                    Some((id, _)) if *id == newest => {}
                    _ => {
                        let file = File::open(self.dir.join(newest.to_string()))?;
                        self.current = Some((newest, file));
                    }
                }
                &self.current.as_ref().expect("set just above").1
            }
        };
        // The journal is preallocated when created, so appends do not change its size and
        // fdatasync is enough.
        file.sync_data()
    }
}

/// Whether files were created in the journal directory since the last call.
#[derive(Default)]
struct Watch {
    /// The inotify instance watching the directory; `None` until it could be set up (the
    /// directory may not exist yet), and on other systems.
    #[cfg(target_os = "linux")]
    fd: Option<rustix::fd::OwnedFd>,
}

impl Watch {
    /// True when a file may have appeared in `dir` since the last call (always, when no watch
    /// can be set up), draining what the watch reported.
    #[cfg(target_os = "linux")]
    fn appeared(&mut self, dir: &std::path::Path) -> bool {
        use rustix::fs::inotify;
        let Some(fd) = &self.fd else {
            let watch =
                inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
                    .and_then(|fd| {
                        let events = inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO;
                        inotify::add_watch(&fd, dir, events).map(|_| fd)
                    });
            self.fd = watch.ok();
            return true;
        };
        let mut events = [0u8; 1024];
        let mut appeared = false;
        loop {
            match rustix::io::read(fd, &mut events) {
                Ok(n) if n > 0 => appeared = true,
                Err(rustix::io::Errno::AGAIN) => return appeared,
                // An error (or end of file, which inotify never gives): list the directory.
                _ => return true,
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn appeared(&mut self, _dir: &std::path::Path) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_newest_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut sync = JournalSync::new(dir.path().to_path_buf());
        assert_eq!(
            sync.sync().unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "no journals folder yet"
        );
        std::fs::create_dir(dir.path().join("journals")).unwrap();
        assert_eq!(sync.sync().unwrap_err().kind(), io::ErrorKind::Unsupported);
        for id in [1, 2, 10] {
            std::fs::write(dir.path().join("journals").join(id.to_string()), b"x").unwrap();
        }
        std::fs::write(dir.path().join("journals/.tmp"), b"x").unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.current.as_ref().map(|c| c.0), Some(10));
        std::fs::write(dir.path().join("journals/11"), b"x").unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.current.as_ref().map(|c| c.0), Some(11));
        if cfg!(target_os = "linux") {
            // No file appeared since, so the directory is not listed again: a listing would now
            // find 10. (fjall never removes the active journal; the test does, to tell.)
            std::fs::remove_file(dir.path().join("journals/11")).unwrap();
            sync.sync().unwrap();
            assert_eq!(sync.current.as_ref().map(|c| c.0), Some(11));
            std::fs::write(dir.path().join("journals/12"), b"x").unwrap();
            sync.sync().unwrap();
            assert_eq!(sync.current.as_ref().map(|c| c.0), Some(12));
        }
    }

    #[test]
    fn finds_the_journal_of_a_real_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&crate::store::StoreConfig::new(dir.path())).unwrap();
        store
            .commit_blocking(vec![crate::store::Write::AuthCode {
                terminal_id: "1".into(),
                code: "c".into(),
            }])
            .unwrap();
        let mut sync = JournalSync::new(dir.path().join("store"));
        sync.sync().unwrap();
        assert!(sync.current.is_some());
    }
}
