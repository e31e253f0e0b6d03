//! A small file system of its own for a test (disk-full tests): a
//! loop-mounted ext4 image or a tmpfs with `size=`, unmounted on drop.
//!
//! Mounting needs root, which CI has. Elsewhere [`SmallFs::mount`] returns
//! `None` and says loudly that the test is skipped; under `CI=true` it panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which kind of file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ext4 in an image file on a loop device (what a site's SD card or disk is like).
    Ext4,
    /// tmpfs with a size limit.
    Tmpfs,
}

/// A mounted small file system.
pub struct SmallFs {
    /// Holds the image and the mount point.
    _dir: tempfile::TempDir,
    mount_point: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl SmallFs {
    /// Mounts a fresh file system of `bytes`, or `None` (skipped loudly)
    /// when this process may not mount.
    pub fn mount(kind: Kind, bytes: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let r = match kind {
            Kind::Tmpfs => run(Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={bytes}"))
                .arg("tmpfs")
                .arg(&mount_point)),
            Kind::Ext4 => {
                let img = dir.path().join("fs.img");
                std::fs::File::create(&img)
                    .and_then(|f| f.set_len(bytes))
                    .expect("image file");
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0"])
                    .arg(&img))
                .and_then(|()| {
                    run(Command::new("mount")
                        .args(["-o", "loop"])
                        .arg(&img)
                        .arg(&mount_point))
                })
            }
        };
        match r {
            Ok(()) => Some(SmallFs {
                _dir: dir,
                mount_point,
            }),
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("cannot mount a small {kind:?} file system (CI runs as root): {e}");
                }
                eprintln!("SKIPPED: cannot mount a small {kind:?} file system (needs root): {e}");
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Free bytes for an unprivileged writer.
    pub fn free_bytes(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.mount_point).expect("statvfs");
        s.f_bavail * s.f_frsize
    }

    /// Fills the file system with a ballast file until fewer than `leave`
    /// bytes are free (another program filling the disk); [`Self::unfill`]
    /// removes it.
    pub fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.mount_point.join("ballast"))
            .expect("ballast");
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.free_bytes() > leave {
            let n = (self.free_bytes() - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n.max(1)]).is_err() {
                break;
            }
            let _ = f.sync_data();
        }
    }

    /// Removes the ballast file.
    pub fn unfill(&self) {
        let _ = std::fs::remove_file(self.mount_point.join("ballast"));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy: a gateway child that still holds files does not keep the
        // mount (and the temp dir) alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}
