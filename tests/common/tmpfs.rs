//! A tmpfs of a given size, for tests of a disk that fills up
//! (tests/journal.rs, tests/cli_journal.rs).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A tmpfs of our own, unmounted on drop; `None` where mounting is not
/// allowed (not root, or no CAP_SYS_ADMIN), unless HOOKPOOL_REQUIRE_MOUNT is
/// set (CI sets it).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(at)),
            other => {
                assert!(
                    std::env::var_os("HOOKPOOL_REQUIRE_MOUNT").is_none(),
                    "mounting a tmpfs is required but failed: {other:?}"
                );
                eprintln!("cannot mount a tmpfs here ({other:?}); skipped (CI runs it as root)");
                None
            }
        }
    }

    /// Fills the tmpfs but for about `room` bytes, with a file of its own;
    /// removing that file gives the room back.
    pub fn fill_leaving(&self, room: u64) -> PathBuf {
        let path = self.0.join("filler");
        let mut filler = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        let mut written = 0u64;
        while filler.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
            assert!(written < 64 << 20, "the tmpfs never filled");
        }
        filler.set_len(written.saturating_sub(room)).unwrap();
        filler.sync_all().unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
