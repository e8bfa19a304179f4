//! A small ext4 filesystem on a loop device, for the disk-full tests of
//! fjord-storage and fjord-broker (the broker's test includes this file
//! with `#[path]`). Needs root: mkfs.ext4 and a loop mount.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A small ext4 filesystem mounted on a loop device; unmounted on drop.
pub struct SmallFs {
    _root: tempfile::TempDir,
    pub mount: PathBuf,
}

impl SmallFs {
    /// A `bytes`-byte filesystem with 4 KiB blocks (mkfs picks 1 KiB blocks
    /// for small images, where a 4 KiB write can fail with blocks left)
    /// and no reserved blocks.
    pub fn mount(bytes: u64) -> SmallFs {
        let root = tempfile::Builder::new()
            .prefix("fjord-small-fs")
            .tempdir()
            .expect("tempdir");
        let image = root.path().join("fs.img");
        let mount = root.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .expect("image file");
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", "-b", "4096", path_str(&image)],
        );
        run("mount", &["-o", "loop", path_str(&image), path_str(&mount)]);
        SmallFs { _root: root, mount }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let mount = path_str(&self.mount);
        let unmounted = Command::new("umount")
            .arg(mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process that outlived the test): detach it so
            // the loop device is freed once it is not.
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
    }
}

/// Whether the effective user is root (`Uid:` of /proc/self/status).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}
