//! The control socket: accepts one connection at a time, reads one JSON
//! request line, answers with one JSON response line. Stops on SIGINT/SIGTERM.
//! Between requests (at least every tick) the daemon takes in what the
//! cluster store says.

use crate::control::{Request, Response, MAX_REQUEST};
use crate::daemon::Daemon;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
const TICK_MS: i32 = 200;
/// A client gets this long to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Listen on `path`, replacing a stale socket file but never a live daemon's.
    pub fn bind(path: &Path) -> io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another vswitchd is listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display())))?;
        listener.set_nonblocking(true)?;
        Ok(Server { listener, path: path.to_path_buf() })
    }

    /// Serve requests until `stop` is set.
    pub fn serve(&self, daemon: &mut Daemon, stop: &Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            daemon.tick();
            if !self.wait_readable() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = serve_one(stream, daemon) {
                        log::warn!("control connection: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => log::warn!("accept: {e}"),
            }
        }
    }

    fn wait_readable(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, TICK_MS) > 0 }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, daemon: &mut Daemon) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    // A client that stops reading must not hold the only control thread.
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            log::debug!("request: {request:?}");
            daemon.handle(request)
        }
        Err(e) => Response::error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}
