//! A disk of our own that can be frozen: an ext4 image on a loop device,
//! mounted in a temporary directory. `fsfreeze` stalls every write and
//! fsync to it until it is thawed, as a disk that stops answering does;
//! nothing in the process under test is faked.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted ext4 image; thawed, unmounted and removed on drop. `None`
/// where it cannot be made (not root, no loop devices, no `mkfs.ext4` or
/// `fsfreeze`), unless HOOKPOOL_REQUIRE_MOUNT is set (CI sets it).
pub struct FrozenDisk {
    dir: PathBuf,
    image: PathBuf,
}

/// Runs `program` with `args`; `Err` with what it said if it failed.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

impl FrozenDisk {
    /// An ext4 file system of `mib` MiB mounted at `at` (created).
    pub fn mount(at: PathBuf, mib: u32) -> Option<FrozenDisk> {
        std::fs::create_dir_all(&at).unwrap();
        let image = at.with_extension("img");
        let made = (|| {
            let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
            file.set_len(u64::from(mib) << 20)
                .map_err(|e| e.to_string())?;
            let (img, dir) = (image.to_str().unwrap(), at.to_str().unwrap());
            run("mkfs.ext4", &["-q", "-F", img])?;
            run("mount", &["-o", "loop", img, dir])?;
            Ok::<(), String>(())
        })();
        match made {
            Ok(()) => Some(FrozenDisk { dir: at, image }),
            Err(why) => {
                let _ = std::fs::remove_file(&image);
                assert!(
                    std::env::var_os("HOOKPOOL_REQUIRE_MOUNT").is_none(),
                    "a loop-mounted ext4 is required but failed: {why}"
                );
                eprintln!("cannot mount an ext4 image here ({why}); skipped (CI runs it as root)");
                None
            }
        }
    }

    /// A path on the disk.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Stalls every write to the disk until the guard is dropped.
    pub fn freeze(&self) -> Frozen<'_> {
        run("fsfreeze", &["--freeze", self.dir.to_str().unwrap()]).unwrap();
        Frozen(&self.dir)
    }
}

/// A frozen disk; thawed on drop, even when a test fails while it is
/// frozen (else the writers blocked on it would never finish).
pub struct Frozen<'a>(&'a Path);

impl Frozen<'_> {
    /// Thaws the disk now.
    pub fn thaw(self) {}
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = run("fsfreeze", &["--unfreeze", self.0.to_str().unwrap()]);
    }
}

impl Drop for FrozenDisk {
    fn drop(&mut self) {
        // Thawed first in case a guard was leaked; unfreezing a thawed
        // disk only fails.
        let _ = run("fsfreeze", &["--unfreeze", self.dir.to_str().unwrap()]);
        let _ = run("umount", &[self.dir.to_str().unwrap()]);
        let _ = std::fs::remove_file(&self.image);
    }
}
