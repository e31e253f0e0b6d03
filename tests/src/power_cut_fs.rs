//! # A file system that loses what was not made durable, and can cut power
//!
//! [`PowerCutFs`] mounts an in-memory FUSE file system (the `fuser` crate;
//! `/dev/fuse`, root) that keeps two images of everything:
//!
//! - the **volatile** image: what processes see (every write, create,
//!   rename, unlink at once);
//! - the **durable** image: what survives a power cut. It changes only by
//!   - `fsync`/`fdatasync` of a file: its data and size (4 KiB blocks
//!     written since its last sync are copied);
//!   - `fsync` of a directory: its entries (names created, renamed or
//!     removed in it). A new file whose directory was not fsynced is lost
//!     with its name even if the file itself was fsynced; a rename is
//!     durable when the directory is fsynced. (Strict POSIX: stricter than
//!     ext4, which also commits a fsynced new file's entry.)
//!
//! The power is cut ([`Cut`]) after the Nth successful sync, in the middle
//! of the Nth write (a prefix of it lands), or when the test says so. From
//! the cut on, every operation fails with EIO (a dead disk: nothing a
//! process does afterwards can become durable). In **torn** mode the cut
//! also writes back a random subset of the unsynced 4 KiB blocks and of the
//! unsynced directories, as a real disk's write-back may have done.
//! [`PowerCutFs::fail_syncs`] makes file syncs fail (EIO) at random
//! without cutting the power, the way Linux reports a write-back error: the
//! file's unsynced blocks are lost (not written, no longer dirty, so a later
//! successful sync does not write them either) and reading them returns
//! what the durable image holds, as after the kernel dropped the pages.
//! [`PowerCutFs::reboot`] (after the processes using it were killed)
//! unmounts, makes the durable image the volatile one and mounts again:
//! every later read sees exactly what the "disk" kept.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    WriteFlags,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const BLOCK: usize = 4096;
const ROOT: u64 = 1;

/// When the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Not automatically ([`PowerCutFs::cut_now`]).
    Manual,
    /// Right after the Nth successful sync (file or directory), counted from mount.
    AfterSync(u64),
    /// During the Nth write: a random prefix of it reaches the volatile image, the call fails.
    MidWrite(u64),
}

#[derive(Debug, Clone, Default)]
struct Node {
    dir: bool,
    data: Vec<u8>,
    entries: BTreeMap<OsString, u64>,
}

#[derive(Debug, Default)]
struct Disk {
    volatile: HashMap<u64, Node>,
    durable: HashMap<u64, Node>,
    /// Unsynced blocks per file (volatile), and files whose size changed.
    dirty_blocks: HashMap<u64, BTreeSet<usize>>,
    /// Directories whose entries changed since their last fsync.
    dirty_dirs: BTreeSet<u64>,
    next_ino: u64,
    syncs: u64,
    writes: u64,
    cut: Option<Cut>,
    dead: bool,
    torn: bool,
    rng: Option<rand::rngs::StdRng>,
    /// What the last cut did (for the test's log).
    last_cut: String,
    /// Probability that a file sync fails and loses its unsynced blocks.
    sync_failure: f64,
    /// File syncs failed so far (not reset by a reboot).
    failed_syncs: u64,
    /// Unsynced blocks those failures lost.
    lost_blocks: u64,
    /// Files and directories open now (open/create/opendir minus
    /// release/releasedir). The kernel sends RELEASE after close() has
    /// returned, so a reboot waits for this to reach 0: unmounting while a
    /// release is still on its way fails with EBUSY.
    open_handles: u64,
}

impl Disk {
    fn new(seed: u64) -> Disk {
        let mut d = Disk {
            next_ino: ROOT + 1,
            rng: Some(rand::rngs::StdRng::seed_from_u64(seed)),
            ..Disk::default()
        };
        let root = Node {
            dir: true,
            ..Node::default()
        };
        d.volatile.insert(ROOT, root.clone());
        d.durable.insert(ROOT, root);
        d
    }

    fn rng(&mut self) -> &mut rand::rngs::StdRng {
        self.rng.as_mut().expect("seeded at creation")
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.volatile.get(&ino)?;
        let size = if n.dir { 0 } else { n.data.len() as u64 };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if n.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if n.dir { 0o755 } else { 0o644 },
            nlink: if n.dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    fn mark_dirty(&mut self, ino: u64, from: usize, to: usize) {
        let set = self.dirty_blocks.entry(ino).or_default();
        if to > from {
            set.extend(from / BLOCK..=(to - 1) / BLOCK);
        } else {
            set.insert(from / BLOCK);
        }
    }

    /// Copies `ino`'s dirty blocks (all of them, or those `keep` picks)
    /// into the durable image.
    fn persist_file(&mut self, ino: u64, mut keep: impl FnMut(&mut Self) -> bool) {
        let Some(v) = self.volatile.get(&ino) else {
            return;
        };
        let vdata = v.data.clone();
        let blocks = self.dirty_blocks.remove(&ino).unwrap_or_default();
        let mut picked = Vec::new();
        let mut size_kept = true;
        for b in blocks {
            if keep(self) {
                picked.push(b);
            } else {
                size_kept = false;
            }
        }
        let d = self.durable.entry(ino).or_default();
        if size_kept {
            d.data.resize(vdata.len(), 0);
        }
        for b in picked {
            let start = b * BLOCK;
            let end = ((b + 1) * BLOCK).min(vdata.len());
            if start >= end {
                continue;
            }
            if d.data.len() < end {
                d.data.resize(end, 0);
            }
            d.data[start..end].copy_from_slice(&vdata[start..end]);
        }
    }

    /// Makes `dir`'s entries durable; nodes new to the durable image start
    /// empty (their data becomes durable with their own fsync).
    fn persist_dir(&mut self, dir: u64) {
        let Some(v) = self.volatile.get(&dir) else {
            return;
        };
        let entries = v.entries.clone();
        for &ino in entries.values() {
            if !self.durable.contains_key(&ino) {
                let is_dir = self.volatile.get(&ino).is_some_and(|n| n.dir);
                self.durable.insert(
                    ino,
                    Node {
                        dir: is_dir,
                        ..Node::default()
                    },
                );
                if let Some(n) = self.volatile.get(&ino)
                    && !n.dir
                {
                    let len = n.data.len();
                    self.mark_dirty(ino, 0, len);
                }
            }
        }
        self.durable.entry(dir).or_default().entries = entries;
        self.durable.entry(dir).or_default().dir = true;
        self.dirty_dirs.remove(&dir);
    }

    /// A failed write-back: `ino`'s unsynced blocks are lost; reading them
    /// returns the durable image's bytes (zeros past its end).
    fn drop_unsynced(&mut self, ino: u64) {
        let blocks = self.dirty_blocks.remove(&ino).unwrap_or_default();
        self.lost_blocks += blocks.len() as u64;
        let durable = self
            .durable
            .get(&ino)
            .map(|n| n.data.clone())
            .unwrap_or_default();
        let Some(v) = self.volatile.get_mut(&ino) else {
            return;
        };
        for b in blocks {
            let start = b * BLOCK;
            let end = ((b + 1) * BLOCK).min(v.data.len());
            for i in start..end {
                v.data[i] = durable.get(i).copied().unwrap_or(0);
            }
        }
    }

    fn check(&mut self) -> Result<(), Errno> {
        if self.dead { Err(Errno::EIO) } else { Ok(()) }
    }

    fn synced(&mut self) {
        self.syncs += 1;
        if self.cut == Some(Cut::AfterSync(self.syncs)) {
            self.power_off(format!("after sync {}", self.syncs));
        }
    }

    fn power_off(&mut self, why: String) {
        if self.dead {
            return;
        }
        self.dead = true;
        let mut torn_blocks = 0;
        let mut torn_dirs = 0;
        if self.torn {
            // The disk's write-back may have written some of what was not synced.
            let files: Vec<u64> = self.dirty_blocks.keys().copied().collect();
            for ino in files {
                let before = self.dirty_blocks.get(&ino).map_or(0, BTreeSet::len);
                let mut kept = 0;
                self.persist_file(ino, |d| {
                    let k = d.rng().gen_bool(0.5);
                    kept += usize::from(k);
                    k
                });
                let _ = before;
                torn_blocks += kept;
            }
            let dirs: Vec<u64> = self.dirty_dirs.iter().copied().collect();
            for dir in dirs {
                if self.rng().gen_bool(0.5) {
                    self.persist_dir(dir);
                    torn_dirs += 1;
                }
            }
        }
        self.last_cut = format!(
            "power cut {why}: {} syncs, {} writes; torn: {torn_blocks} unsynced blocks and {torn_dirs} directories written back",
            self.syncs, self.writes
        );
    }

    /// The durable image becomes what is seen; counters restart.
    fn restore(&mut self) {
        // Only what is reachable from the root survives.
        let mut reachable = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(i) = stack.pop() {
            if reachable.insert(i)
                && let Some(n) = self.durable.get(&i)
            {
                stack.extend(n.entries.values().copied());
            }
        }
        self.durable.retain(|i, _| reachable.contains(i));
        for n in self.durable.values_mut() {
            n.entries.retain(|_, i| reachable.contains(i));
        }
        self.volatile = self.durable.clone();
        self.dirty_blocks.clear();
        self.dirty_dirs.clear();
        self.syncs = 0;
        self.writes = 0;
        self.cut = None;
        self.dead = false;
    }
}

struct Fs(Arc<Mutex<Disk>>);

impl Fs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const TTL: Duration = Duration::ZERO;

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let d = self.disk();
        let ino = d
            .volatile
            .get(&parent.0)
            .and_then(|p| p.entries.get(name).copied());
        match ino.and_then(|i| d.attr(i)) {
            Some(a) if !d.dead => reply.entry(&TTL, &a, Generation(0)),
            _ if d.dead => reply.error(Errno::EIO),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let d = self.disk();
        match d.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        if let Some(size) = size {
            let Some(n) = d.volatile.get_mut(&ino.0) else {
                return reply.error(Errno::ENOENT);
            };
            let old = n.data.len();
            n.data.resize(size as usize, 0);
            let (a, b) = (old.min(size as usize), old.max(size as usize));
            d.mark_dirty(ino.0, a, b);
        }
        match d.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut d = self.disk();
        match new_node(&mut d, parent.0, name, true) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut d = self.disk();
        match new_node(&mut d, parent.0, name, false) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut d = self.disk();
        match new_node(&mut d, parent.0, name, false) {
            Ok(a) => {
                d.open_handles += 1;
                reply.created(
                    &TTL,
                    &a,
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        let removed = d
            .volatile
            .get_mut(&parent.0)
            .and_then(|p| p.entries.remove(name));
        match removed {
            Some(_) => {
                d.dirty_dirs.insert(parent.0);
                reply.ok()
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        {
            let d = self.disk();
            let child = d
                .volatile
                .get(&parent.0)
                .and_then(|p| p.entries.get(name))
                .and_then(|i| d.volatile.get(i));
            if child.is_some_and(|c| !c.entries.is_empty()) {
                return reply.error(Errno::ENOTEMPTY);
            }
        }
        self.unlink(req, parent, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let Some(ino) = d
            .volatile
            .get_mut(&parent.0)
            .and_then(|p| p.entries.remove(name))
        else {
            return reply.error(Errno::ENOENT);
        };
        match d.volatile.get_mut(&newparent.0) {
            Some(np) => {
                np.entries.insert(newname.to_os_string(), ino);
            }
            None => return reply.error(Errno::ENOENT),
        }
        d.dirty_dirs.insert(parent.0);
        d.dirty_dirs.insert(newparent.0);
        reply.ok()
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut d = self.disk();
        match d.volatile.get(&ino.0) {
            Some(_) if d.dead => reply.error(Errno::EIO),
            Some(_) => {
                d.open_handles += 1;
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        d.open_handles = d.open_handles.saturating_sub(1);
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        d.open_handles = d.open_handles.saturating_sub(1);
        reply.ok()
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let d = self.disk();
        if d.dead {
            return reply.error(Errno::EIO);
        }
        match d.volatile.get(&ino.0) {
            Some(n) => {
                let start = (offset as usize).min(n.data.len());
                let end = (start + size as usize).min(n.data.len());
                reply.data(&n.data[start..end])
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        d.writes += 1;
        let mut data = data;
        let cut_here = d.cut == Some(Cut::MidWrite(d.writes));
        if cut_here {
            let n = d.rng().gen_range(0..=data.len());
            data = &data[..n];
        }
        let start = offset as usize;
        let end = start + data.len();
        let Some(n) = d.volatile.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[start..end].copy_from_slice(data);
        d.mark_dirty(ino.0, start, end);
        if cut_here {
            let w = d.writes;
            d.power_off(format!(
                "in the middle of write {w} ({} bytes landed)",
                data.len()
            ));
            return reply.error(Errno::EIO);
        }
        reply.written(data.len() as u32)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        if d.volatile.get(&ino.0).is_some_and(|n| n.dir) {
            d.persist_dir(ino.0);
        } else {
            let p = d.sync_failure;
            if p > 0.0 && d.rng().gen_bool(p.min(1.0)) {
                d.drop_unsynced(ino.0);
                d.failed_syncs += 1;
                return reply.error(Errno::EIO);
            }
            d.persist_file(ino.0, |_| true);
        }
        d.synced();
        reply.ok()
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut d = self.disk();
        match d.volatile.get(&ino.0) {
            Some(n) if n.dir => {
                d.open_handles += 1;
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let d = self.disk();
        if d.dead {
            return reply.error(Errno::EIO);
        }
        let Some(n) = d.volatile.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ROOT, FileType::Directory, "..".into()),
        ];
        for (name, &i) in &n.entries {
            let kind = if d.volatile.get(&i).is_some_and(|c| c.dir) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((i, kind, name.clone()));
        }
        for (k, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), k as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        d.persist_dir(ino.0);
        d.synced();
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let d = self.disk();
        let used: u64 = d.volatile.values().map(|n| n.data.len() as u64).sum();
        let blocks = (4u64 << 30) / BLOCK as u64;
        let free = blocks.saturating_sub(used / BLOCK as u64);
        reply.statfs(
            blocks,
            free,
            free,
            1 << 20,
            1 << 20,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut d = self.disk();
        if let Err(e) = d.check() {
            return reply.error(e);
        }
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let end = (offset + length) as usize;
        let Some(n) = d.volatile.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.data.len() < end {
            let old = n.data.len();
            n.data.resize(end, 0);
            d.mark_dirty(ino.0, old, end);
        }
        reply.ok()
    }
}

fn new_node(d: &mut Disk, parent: u64, name: &OsStr, dir: bool) -> Result<FileAttr, Errno> {
    d.check()?;
    let ino = d.next_ino;
    let p = d.volatile.get_mut(&parent).ok_or(Errno::ENOENT)?;
    if p.entries.contains_key(name) {
        return Err(Errno::EEXIST);
    }
    p.entries.insert(name.to_os_string(), ino);
    d.next_ino += 1;
    d.volatile.insert(
        ino,
        Node {
            dir,
            ..Node::default()
        },
    );
    d.dirty_dirs.insert(parent);
    d.attr(ino).ok_or(Errno::EIO)
}

/// The mounted file system (see the module doc). Unmounted on drop.
pub struct PowerCutFs {
    disk: Arc<Mutex<Disk>>,
    session: Option<fuser::BackgroundSession>,
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl PowerCutFs {
    /// Mounts an empty file system; `seed` drives torn writes and mid-write
    /// cuts. `None` (skipped loudly, or a panic under `CI=true`) when FUSE
    /// cannot be mounted here.
    pub fn mount(seed: u64) -> Option<PowerCutFs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mut fs = PowerCutFs {
            disk: Arc::new(Mutex::new(Disk::new(seed))),
            session: None,
            mount_point,
            _dir: dir,
        };
        match fs.attach() {
            Ok(()) => Some(fs),
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("cannot mount the FUSE power-cut file system (CI runs as root): {e}");
                }
                eprintln!("SKIPPED: cannot mount the FUSE power-cut file system: {e}");
                None
            }
        }
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("mrv-power-cut".into()),
            MountOption::DefaultPermissions,
        ];
        self.session = Some(fuser::spawn_mount(
            Fs(self.disk.clone()),
            &self.mount_point,
            &cfg,
        )?);
        Ok(())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Arms the next cut (counted from the last [`Self::reboot`]); `torn`
    /// also writes back a random part of what was not synced.
    pub fn arm(&self, cut: Cut, torn: bool) {
        let mut d = self.lock();
        d.cut = Some(cut);
        d.torn = torn;
    }

    /// From now on each file sync fails with EIO with `probability` and
    /// loses the file's unsynced blocks (see the module doc); 0 stops it.
    pub fn fail_syncs(&self, probability: f64) {
        self.lock().sync_failure = probability;
    }

    /// File syncs failed by [`Self::fail_syncs`] so far, and the unsynced
    /// blocks they lost.
    pub fn failed_syncs(&self) -> (u64, u64) {
        let d = self.lock();
        (d.failed_syncs, d.lost_blocks)
    }

    /// Cuts the power now (if it is still on).
    pub fn cut_now(&self, why: &str) {
        self.lock().power_off(why.to_string());
    }

    /// True once the power is cut.
    pub fn is_off(&self) -> bool {
        self.lock().dead
    }

    /// Successful syncs and writes since the last reboot.
    pub fn counts(&self) -> (u64, u64) {
        let d = self.lock();
        (d.syncs, d.writes)
    }

    /// What the last cut did.
    pub fn last_cut(&self) -> String {
        self.lock().last_cut.clone()
    }

    /// After the processes using it are gone: cuts the power if it is still
    /// on, unmounts, keeps only the durable image and mounts again.
    pub fn reboot(&mut self) -> std::io::Result<()> {
        self.cut_now("at reboot");
        // Files the caller closed may still have their RELEASE in flight.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.lock().open_handles > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some(s) = self.session.take() {
            s.umount_and_join()?;
        }
        self.lock().restore();
        self.attach()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sync_dir(p: &Path) {
        std::fs::File::open(p)
            .and_then(|d| d.sync_all())
            .expect("dir fsync");
    }

    #[test]
    fn only_what_was_synced_survives_a_cut() {
        let Some(mut fs) = PowerCutFs::mount(1) else {
            return;
        };
        let p = fs.path().to_path_buf();
        // Synced file in a synced directory: survives.
        let mut f = std::fs::File::create(p.join("kept")).expect("create");
        f.write_all(b"durable").expect("write");
        f.sync_all().expect("fsync");
        sync_dir(&p);
        f.write_all(b" but not this").expect("write");
        // Renamed but the directory not synced: the old name stays.
        std::fs::write(p.join("old"), b"r").expect("write");
        std::fs::File::open(p.join("old"))
            .and_then(|f| f.sync_all())
            .expect("fsync");
        sync_dir(&p);
        std::fs::rename(p.join("old"), p.join("new")).expect("rename");
        // Synced file whose directory entry was never synced: gone.
        let mut g = std::fs::File::create(p.join("nameless")).expect("create");
        g.write_all(b"x").expect("write");
        g.sync_all().expect("fsync");
        drop((f, g));
        fs.reboot().expect("reboot");
        assert_eq!(std::fs::read(p.join("kept")).expect("kept"), b"durable");
        assert!(!p.join("nameless").exists());
        assert!(p.join("old").exists() && !p.join("new").exists());
    }

    #[test]
    fn a_failed_sync_loses_the_unsynced_blocks_for_good() {
        let Some(mut fs) = PowerCutFs::mount(3) else {
            return;
        };
        let p = fs.path().to_path_buf();
        let mut f = std::fs::File::create(p.join("a")).expect("create");
        f.write_all(b"durable").expect("write");
        f.sync_all().expect("fsync");
        sync_dir(&p);
        fs.fail_syncs(1.0);
        f.write_all(b" lost").expect("write");
        let e = f.sync_data().expect_err("the sync fails");
        assert_eq!(e.raw_os_error(), Some(5), "{e}");
        fs.fail_syncs(0.0);
        // Linux: the pages are clean now, a second fsync succeeds and
        // writes nothing.
        f.sync_all().expect("the next sync works");
        assert_eq!(fs.failed_syncs(), (1, 1));
        drop(f);
        fs.reboot().expect("reboot");
        let got = std::fs::read(p.join("a")).expect("read");
        assert!(got.starts_with(b"durable"), "{got:?}");
        assert!(!got.windows(4).any(|w| w == b"lost"), "{got:?}");
    }

    #[test]
    fn after_the_cut_every_operation_fails_and_a_mid_write_cut_fails_that_write() {
        let Some(mut fs) = PowerCutFs::mount(2) else {
            return;
        };
        let p = fs.path().to_path_buf();
        fs.arm(Cut::AfterSync(1), false);
        let mut f = std::fs::File::create(p.join("a")).expect("create");
        f.write_all(b"one").expect("write");
        f.sync_all().expect("the first sync works");
        assert!(fs.is_off());
        assert!(f.write_all(b"two").is_err());
        assert!(std::fs::File::create(p.join("b")).is_err());
        drop(f);
        fs.reboot().expect("reboot");
        // "a" was never in a synced directory.
        assert!(!p.join("a").exists());
        fs.arm(Cut::MidWrite(1), true);
        let mut f = std::fs::File::create(p.join("c")).expect("create");
        assert!(f.write_all(&[7u8; 10_000]).is_err());
        drop(f);
        fs.reboot().expect("reboot");
        assert!(
            fs.last_cut().contains("middle of write 1"),
            "{}",
            fs.last_cut()
        );
    }
}
