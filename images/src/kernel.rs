//! The kernel release inside an x86 bzImage.
//!
//! The boot protocol header (Documentation/arch/x86/boot.rst) starts at
//! 0x1F1: the boot flag 0xAA55 is at 0x1FE and the magic `HdrS` at 0x202.
//! The little-endian u16 at 0x20E (`kernel_version`) points, minus 0x200, at a
//! NUL-terminated string such as
//! `6.12.117+deb12-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ...`,
//! whose first word is the release `uname -r` prints.

/// Offset of the boot flag (0xAA55).
const BOOT_FLAG: usize = 0x1FE;
/// Offset of the header magic.
const HEADER_MAGIC: usize = 0x202;
/// Offset of `kernel_version`.
const KERNEL_VERSION: usize = 0x20E;
/// The longest version string read.
const MAX_VERSION_LEN: usize = 512;

/// The release of a bzImage, or what is wrong with it.
pub(crate) fn bzimage_release(image: &[u8]) -> Result<String, &'static str> {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if u16_at(BOOT_FLAG) != Some(0xAA55) {
        return Err("no 0xAA55 boot flag at offset 0x1FE");
    }
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err("no `HdrS` boot header at offset 0x202");
    }
    let pointer = u16_at(KERNEL_VERSION).ok_or("the header is cut short")?;
    if pointer == 0 {
        return Err("the header has no kernel version string");
    }
    let start = usize::from(pointer) + 0x200;
    let tail = image
        .get(start..)
        .ok_or("the kernel version pointer is past the end of the file")?;
    let tail = &tail[..tail.len().min(MAX_VERSION_LEN)];
    let end = tail
        .iter()
        .position(|b| *b == 0)
        .ok_or("the kernel version string is not NUL-terminated")?;
    let text = std::str::from_utf8(&tail[..end]).map_err(|_| "the kernel version is not UTF-8")?;
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or("the kernel version string is empty")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first bytes of a bzImage whose version string is `version`.
    pub(crate) fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        image[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        image[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        let at = 0x3C0;
        image[KERNEL_VERSION..KERNEL_VERSION + 2]
            .copy_from_slice(&u16::try_from(at - 0x200).expect("small").to_le_bytes());
        image[at..at + version.len()].copy_from_slice(version.as_bytes());
        image
    }

    #[test]
    fn the_release_is_the_first_word_of_the_version_string() {
        let image = fake_bzimage(
            "6.12.117+deb12-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1",
        );
        assert_eq!(
            bzimage_release(&image).as_deref(),
            Ok("6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            bzimage_release(&fake_bzimage("6.13.0-rc1")).as_deref(),
            Ok("6.13.0-rc1")
        );
    }

    #[test]
    fn files_that_are_not_bzimages_say_why() {
        let check = |image: &[u8], want: &str| {
            assert_eq!(bzimage_release(image), Err(want));
        };
        check(b"\x7fELF", "no 0xAA55 boot flag at offset 0x1FE");
        let mut image = fake_bzimage("6.1.0");
        image[HEADER_MAGIC] = b'X';
        check(&image, "no `HdrS` boot header at offset 0x202");
        let mut image = fake_bzimage("6.1.0");
        image[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
        check(
            &image,
            "the kernel version pointer is past the end of the file",
        );
        let mut image = fake_bzimage("6.1.0");
        image[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&0u16.to_le_bytes());
        check(&image, "the header has no kernel version string");
        let mut image = fake_bzimage("");
        image[0x3C0..].fill(b'x');
        check(&image, "the kernel version string is not NUL-terminated");
        check(&fake_bzimage(" "), "the kernel version string is empty");
    }
}
