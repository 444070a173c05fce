//! The user's terminal: raw mode while attached to a container's tty, and window sizes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// Puts a terminal in raw mode and restores it when dropped.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Raw mode on `fd` if it is a terminal; None when it is not.
    pub fn enable(fd: BorrowedFd<'a>) -> Option<RawMode<'a>> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of terminal `from` onto pty `to`; does nothing if `from` is no terminal.
pub fn copy_window_size(from: impl AsFd, to: impl AsFd) {
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into `size`, which lives for the whole call.
    if unsafe { get_winsize(from.as_fd().as_raw_fd(), &mut size) }.is_err() {
        return;
    }
    // SAFETY: TIOCSWINSZ reads one Winsize from `size`, valid for the call; `to` is an open fd.
    let _ = unsafe { set_winsize(to.as_fd().as_raw_fd(), &size) };
}
