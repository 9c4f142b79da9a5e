//! A minimal `newc` cpio writer: the initramfs format the kernel unpacks at boot. Written
//! here so the matrix needs no host `cpio` and the archive is byte-for-byte reproducible
//! (all times and owners are zero).

/// An archive being built in memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

impl Cpio {
    /// A directory (its parents must have been added first).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A directory with its own permission bits (e.g. a sticky `tmp`).
    pub fn dir_mode(&mut self, name: &str, mode: u32) {
        self.entry(name, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[]);
    }

    /// A symbolic link to `target` (the link's data is its target, as newc stores it).
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, 1, (0, 0), data);
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | 0o600, 1, (major, minor), &[]);
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        // The kernel reads whole 512-byte blocks, as cpio writes them.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_headers_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        let a = c.finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 512, 0);
        // The file's header follows the directory's 4-byte aligned entry.
        // 110-byte header + "bin\0", padded to a multiple of 4; a directory has no data.
        let second = 116;
        assert_eq!(&a[second..second + 6], b"070701");
        // filesize field of bin/x is 5.
        assert_eq!(&a[second + 6 + 6 * 8..second + 6 + 7 * 8], b"00000005");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("TRAILER!!!"));
    }
}
