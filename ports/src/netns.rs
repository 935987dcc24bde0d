//! Named network namespaces, kept where `ip netns` keeps them (/run/netns/NAME),
//! so that `ip netns exec NAME ...` and vswitchd see the same namespaces.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::netlink::context;

/// Where iproute2 bind-mounts named namespaces.
pub const RUN_DIR: &str = "/run/netns";

/// The longest name a file in /run/netns may have (NAME_MAX).
const NAME_MAX: usize = 255;

/// Path of the bind mount that names namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Validate a namespace name the way iproute2 does (a single path component
/// of at most NAME_MAX bytes), and also refuse whitespace and control
/// characters, which only make names impossible to type or log.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("netns name is empty".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!("netns name is longer than {NAME_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("netns name {name:?} is not allowed"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control() || c.is_whitespace()) {
        return Err(format!("netns name {name:?} contains {c:?}"));
    }
    Ok(())
}

/// Whether namespace `name` exists (an invalid name never does).
pub fn exists(name: &str) -> bool {
    validate_name(name).is_ok() && path(name).exists()
}

/// Like `ip netns add NAME`.
pub fn create(name: &str) -> io::Result<()> {
    check_name(name)?;
    let what = format!("netns {name}");
    std::fs::create_dir_all(RUN_DIR).map_err(|e| context(e, format!("{what}: mkdir {RUN_DIR}")))?;
    make_run_dir_shared().map_err(|e| context(e, what.clone()))?;
    let target = path(name);
    // O_EXCL makes "already exists" race-free between concurrent creators.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| context(e, format!("{what}: create {}", target.display())))?;
    let bound = on_scratch_thread(name, move || bind_new_netns(&target)).and_then(|r| r);
    if bound.is_err() {
        // Leave no empty file behind: it would look like a broken namespace.
        let _ = std::fs::remove_file(path(name));
    }
    bound.map_err(|e| context(e, what))
}

/// Like `ip netns del NAME`.
pub fn delete(name: &str) -> io::Result<()> {
    check_name(name)?;
    let target = path(name);
    if !target.exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("netns {name} does not exist")));
    }
    // EINVAL means "not a mount point": a half-created namespace, still unlink it.
    if let Err(e) = umount_detach(&target) {
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(context(e, format!("netns {name}: umount")));
        }
    }
    std::fs::remove_file(&target).map_err(|e| context(e, format!("netns {name}: unlink")))
}

/// Run `f` on a fresh thread that has entered namespace `name`.
///
/// A fresh thread because setns() changes the calling thread for good. A panic
/// in `f` is propagated to the caller, so assertions work inside `f`.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    check_name(name)?;
    let what = format!("netns {name}");
    let ns = File::open(path(name)).map_err(|e| context(e, format!("{what}: open")))?;
    on_scratch_thread(name, move || {
        // SAFETY: plain syscall on an fd we own for the duration of the call.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(context(io::Error::last_os_error(), format!("{what}: setns")));
        }
        Ok(f())
    })?
}

fn check_name(name: &str) -> io::Result<()> {
    validate_name(name).map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// Run `f` on a new thread, join it and re-raise its panic if it panicked.
fn on_scratch_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    // Thread names are limited to 15 bytes by the kernel; std truncates.
    let handle = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(f)
        .map_err(|e| context(e, format!("netns {name}: spawn thread")))?;
    match handle.join() {
        Ok(v) => Ok(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Make RUN_DIR a shared mount point, as iproute2 does, so that unmounting a
/// namespace in one mount namespace unmounts it in all of them and the
/// namespace can be freed. If RUN_DIR is not yet a mount point, bind it onto
/// itself first.
fn make_run_dir_shared() -> io::Result<()> {
    let dir = cstring(Path::new(RUN_DIR))?;
    let mut made_mount_point = false;
    loop {
        match mount(None, &dir, libc::MS_SHARED | libc::MS_REC) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !made_mount_point => {
                mount(Some(&dir), &dir, libc::MS_BIND | libc::MS_REC)
                    .map_err(|e| context(e, format!("mount --bind {RUN_DIR} {RUN_DIR}")))?;
                made_mount_point = true;
            }
            Err(e) => return Err(context(e, format!("mount --make-rshared {RUN_DIR}"))),
        }
    }
}

/// On the current (scratch) thread: enter a new network namespace and pin it
/// by bind-mounting the thread's namespace file onto `target`.
fn bind_new_netns(target: &Path) -> io::Result<()> {
    // SAFETY: plain syscall; it only affects this scratch thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(context(io::Error::last_os_error(), "unshare(CLONE_NEWNET)"));
    }
    // thread-self, not self: /proc/self names the main thread's namespace.
    let source = cstring(Path::new("/proc/thread-self/ns/net"))?;
    mount(Some(&source), &cstring(target)?, libc::MS_BIND)
        .map_err(|e| context(e, format!("bind mount onto {}", target.display())))
}

fn umount_detach(target: &Path) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mount(source: Option<&CString>, target: &CString, flags: libc::c_ulong) -> io::Result<()> {
    let none = c"none";
    let source = source.map_or(c"".as_ptr(), |s| s.as_ptr());
    // SAFETY: all pointers are valid NUL-terminated strings or null data.
    let rc = unsafe { libc::mount(source, target.as_ptr(), none.as_ptr(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Helpers for the tests that need root and real namespaces (all files).
#[cfg(test)]
pub(crate) mod testutil {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Lab tests must fail loudly, never pass silently, without root.
    pub fn require_root() {
        // SAFETY: geteuid cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "lab test needs root");
    }

    /// A namespace name no other test (or test run) uses.
    pub fn unique_name() -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("vsw-t-{}-{}", std::process::id(), n)
    }

    /// Deletes its namespace when dropped, also when the test panics.
    pub struct NetnsGuard(pub String);

    impl NetnsGuard {
        pub fn create(name: &str) -> Self {
            super::create(name).expect("create netns");
            NetnsGuard(name.to_string())
        }
    }

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            if super::exists(&self.0) {
                if let Err(e) = super::delete(&self.0) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{require_root, unique_name, NetnsGuard};
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("c1").is_ok());
        assert!(validate_name("vsw-t-1_2.x").is_ok());
        assert!(validate_name(&"a".repeat(255)).is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a\nb", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
        assert!(!exists("a/b"));
    }

    fn own_netns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).expect("stat ns")
    }

    #[test]
    fn create_run_in_delete() {
        require_root();
        let name = unique_name();
        let guard = NetnsGuard::create(&name);
        assert!(exists(&name));
        let err = create(&name).expect_err("second create");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");

        let outside = own_netns_inode();
        let inside = run_in(&name, own_netns_inode).expect("run_in");
        let again = run_in(&name, own_netns_inode).expect("run_in");
        assert_ne!(inside, outside, "run_in did not switch namespace");
        assert_eq!(inside, again, "run_in entered two different namespaces");

        drop(guard);
        assert!(!exists(&name));
        let err = delete(&name).expect_err("delete of absent");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let err = run_in(&name, || ()).expect_err("run_in absent");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&name), "{err}");
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn run_in_propagates_panics() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard::create(&name);
        run_in(&name, || panic!("boom")).ok();
    }
}
