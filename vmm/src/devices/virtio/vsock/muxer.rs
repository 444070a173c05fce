//! The vsock connection state machine and its host side (Firecracker's hybrid vsock).
//!
//! Host-initiated: a client connects to the Unix socket at `uds_path` and writes
//! `CONNECT <port>\n`; the muxer picks a host port, sends the guest an OP_REQUEST to `<port>` and,
//! once the guest answers OP_RESPONSE, writes `OK <hostport>\n` to the client. Guest-initiated: an
//! OP_REQUEST to host port P is connected to the Unix socket `<uds_path>_P` and answered with
//! OP_RESPONSE, or OP_RST when nothing listens there. Established connections carry OP_RW in
//! both directions under credit-based flow control: the host sends no more than the guest's
//! `buf_alloc - (tx_cnt - fwd_cnt)`, and advertises its own `buf_alloc`/`fwd_cnt`.
//!
//! Everything runs on the caller's thread: the caller polls the file descriptors of
//! [`VsockMuxer::poll_set`], reports readiness with [`VsockMuxer::handle_ready`], feeds guest
//! packets to [`VsockMuxer::send_pkt`] and takes packets for the guest from
//! [`VsockMuxer::recv_pkt`].

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::packet::{Packet, PacketHeader};
use super::{op, shutdown, CONN_BUF_ALLOC, HOST_CID, MAX_PKT_PAYLOAD, TYPE_STREAM};

/// How long a host client may take to send its `CONNECT` line, and the guest to answer a
/// host-initiated OP_REQUEST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest accepted `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 64;
/// First host port handed out to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Forwarded bytes after which the host tells the guest about its new `fwd_cnt` unasked.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 4;

/// Errors of [`VsockMuxer::bind`].
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// Something accepts connections at the path already.
    #[error("vsock Unix socket path {0} is already in use")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("vsock Unix socket path {0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// The listener could not be created.
    #[error("could not listen on vsock Unix socket path {path}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one vsock device, readable while it runs.
#[derive(Debug, Default)]
pub struct VsockMetrics {
    /// Packets taken from the tx queue.
    pub tx_packets: AtomicU64,
    /// Packets put into the rx queue.
    pub rx_packets: AtomicU64,
    /// Chains or packets refused as malformed.
    pub malformed: AtomicU64,
    /// OP_RST packets sent to the guest.
    pub rst_sent: AtomicU64,
    /// Connections established.
    pub connections: AtomicU64,
}

/// Checks whether `path` can be bound: free, or a stale socket nobody accepts on.
pub fn check_uds_path(path: &Path) -> Result<(), MuxerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(MuxerError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(MuxerError::InUse(path.to_owned())),
        Err(_) => Ok(()),
    }
}

/// A connection as keyed by the host: (host port, guest port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The host-side port.
    pub local_port: u32,
    /// The guest-side port.
    pub peer_port: u32,
}

/// What a descriptor from [`VsockMuxer::poll_set`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollTarget {
    /// The listening socket.
    Listener,
    /// A host client that has not sent its `CONNECT` line yet.
    Client(u64),
    /// A connection's host socket.
    Conn(ConnKey),
}

/// Connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated, OP_REQUEST sent, waiting for the guest's OP_RESPONSE.
    LocalInit,
    /// Data flows.
    Established,
}

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    state: ConnState,
    deadline: Option<Instant>,
    // Host to guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,
    /// Bytes read from the host before the connection was established.
    pending_host: VecDeque<u8>,
    readable: bool,
    host_eof: bool,
    // Guest to host.
    to_host: VecDeque<u8>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
}

impl Connection {
    fn new(stream: UnixStream, state: ConnState) -> Self {
        Self {
            stream,
            state,
            deadline: None,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            pending_host: VecDeque::new(),
            readable: false,
            host_eof: false,
            to_host: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shut_send: false,
            peer_shut_rcv: false,
        }
    }

    /// Bytes the guest can still take.
    fn credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_send(&self) -> bool {
        self.state == ConnState::Established && !self.peer_shut_rcv && self.credit() > 0
    }

    fn has_data(&self) -> bool {
        !self.pending_host.is_empty() || (self.readable && !self.host_eof)
    }

    /// Writes what the host socket takes without blocking; returns the bytes written.
    fn flush(&mut self) -> std::io::Result<u32> {
        let mut total = 0u32;
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    // n <= CONN_BUF_ALLOC.
                    total = total.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.fwd_cnt += total;
        Ok(total)
    }
}

#[derive(Debug)]
struct PendingClient {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// The host side of one vsock device.
#[derive(Debug)]
pub struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    clients: HashMap<u64, PendingClient>,
    next_client: u64,
    conns: HashMap<ConnKey, Connection>,
    /// Header-only packets for the guest, in order.
    ctrl: VecDeque<PacketHeader>,
    next_local_port: u32,
    metrics: Arc<VsockMetrics>,
}

fn header(guest_cid: u64, key: ConnKey, op: u16) -> PacketHeader {
    PacketHeader {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: key.local_port,
        dst_port: key.peer_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: CONN_BUF_ALLOC,
        fwd_cnt: 0,
    }
}

/// A header for `conn`, carrying (and recording as sent) its current `fwd_cnt`.
fn stamped(guest_cid: u64, key: ConnKey, op: u16, conn: &mut Connection) -> PacketHeader {
    conn.last_fwd_cnt_sent = conn.fwd_cnt;
    PacketHeader {
        fwd_cnt: conn.fwd_cnt.0,
        ..header(guest_cid, key, op)
    }
}

impl VsockMuxer {
    /// Listens at `uds_path` (replacing a stale socket nobody accepts on).
    pub fn bind(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        check_uds_path(uds_path)?;
        // A stale socket file (its owner died): take the path over.
        let _ = std::fs::remove_file(uds_path);
        let bind_err = |source| MuxerError::Bind {
            path: uds_path.to_owned(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            clients: HashMap::new(),
            next_client: 0,
            conns: HashMap::new(),
            ctrl: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            metrics: Arc::default(),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> &Arc<VsockMetrics> {
        &self.metrics
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// State of the connection (host port, guest port), if it exists.
    pub fn conn_state(&self, key: ConnKey) -> Option<ConnState> {
        self.conns.get(&key).map(|c| c.state)
    }

    /// Number of open connections.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Header-only packets waiting for rx buffers.
    pub fn rx_backlog(&self) -> usize {
        self.ctrl.len()
    }

    /// Whether [`VsockMuxer::recv_pkt`] may have something.
    pub fn has_rx(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(|c| c.can_send() && c.has_data())
    }

    /// The descriptors to poll and the events wanted on each.
    pub fn poll_set(&self) -> Vec<(RawFd, i16, PollTarget)> {
        let mut set = vec![(
            self.listener.as_raw_fd(),
            libc::POLLIN,
            PollTarget::Listener,
        )];
        for (&id, c) in &self.clients {
            set.push((c.stream.as_raw_fd(), libc::POLLIN, PollTarget::Client(id)));
        }
        for (&key, c) in &self.conns {
            let mut events = 0;
            if c.can_send() && !c.readable && !c.host_eof && c.pending_host.is_empty() {
                events |= libc::POLLIN;
            }
            if !c.to_host.is_empty() {
                events |= libc::POLLOUT;
            }
            if events != 0 {
                set.push((c.stream.as_raw_fd(), events, PollTarget::Conn(key)));
            }
        }
        set
    }

    /// The earliest time [`VsockMuxer::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let clients = self.clients.values().map(|c| c.deadline);
        let conns = self.conns.values().filter_map(|c| c.deadline);
        clients.chain(conns).min()
    }

    /// Drops host clients that never sent their line and connections the guest never answered.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|_, c| c.deadline > now);
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in late {
            debug!(
                ?key,
                "vsock: guest did not answer the connection request in time"
            );
            self.reset(key);
        }
    }

    /// Handles readiness `revents` reported by `poll(2)` for `target`.
    pub fn handle_ready(&mut self, target: PollTarget, revents: i16) {
        match target {
            PollTarget::Listener => self.accept_clients(),
            PollTarget::Client(id) => self.read_connect_line(id),
            PollTarget::Conn(key) => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    conn.readable = true;
                }
                if revents & libc::POLLOUT != 0 || revents & libc::POLLERR != 0 {
                    self.flush_to_host(key);
                }
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!(error = %e, "vsock: cannot make a host client non-blocking");
                        continue;
                    }
                    let id = self.next_client;
                    self.next_client = self.next_client.wrapping_add(1);
                    self.clients.insert(
                        id,
                        PendingClient {
                            stream,
                            line: Vec::new(),
                            deadline: Instant::now() + CONNECT_TIMEOUT,
                        },
                    );
                    // The line may already be there.
                    self.read_connect_line(id);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(error = %e, "vsock: accept on the Unix socket failed");
                    return;
                }
            }
        }
    }

    fn read_connect_line(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        loop {
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    self.clients.remove(&id);
                    return;
                }
                Ok(n) => {
                    client.line.extend_from_slice(&buf[..n]);
                    if client.line.contains(&b'\n') {
                        break;
                    }
                    if client.line.len() > MAX_CONNECT_LINE {
                        debug!("vsock: host client's CONNECT line is too long");
                        self.clients.remove(&id);
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients.remove(&id);
                    return;
                }
            }
        }
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        let Some(nl) = client.line.iter().position(|&b| b == b'\n') else {
            return;
        };
        let port = std::str::from_utf8(&client.line[..nl])
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(peer_port) = port else {
            debug!("vsock: host client sent something other than CONNECT <port>");
            return;
        };
        let local_port = self.alloc_local_port();
        let key = ConnKey {
            local_port,
            peer_port,
        };
        let mut conn = Connection::new(client.stream, ConnState::LocalInit);
        conn.pending_host.extend(&client.line[nl + 1..]);
        conn.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        let hdr = stamped(self.guest_cid, key, op::REQUEST, &mut conn);
        self.conns.insert(key, conn);
        self.ctrl.push_back(hdr);
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|k| k.local_port == port) {
                return port;
            }
        }
    }

    /// Drops the connection (if any) and tells the guest with OP_RST.
    fn reset(&mut self, key: ConnKey) {
        self.conns.remove(&key);
        self.push_rst(key);
    }

    fn push_rst(&mut self, key: ConnKey) {
        self.metrics.rst_sent.fetch_add(1, Ordering::Relaxed);
        self.ctrl.push_back(header(self.guest_cid, key, op::RST));
    }

    fn flush_to_host(&mut self, key: ConnKey) {
        let guest_cid = self.guest_cid;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if let Err(e) = conn.flush() {
            debug!(?key, error = %e, "vsock: host socket write failed; resetting");
            self.reset(key);
            return;
        }
        if conn.to_host.is_empty() && conn.peer_shut_send {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        if (conn.fwd_cnt - conn.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            let hdr = stamped(guest_cid, key, op::CREDIT_UPDATE, conn);
            self.ctrl.push_back(hdr);
        }
    }

    /// Handles one packet from the guest.
    pub fn send_pkt(&mut self, pkt: Packet) {
        let h = pkt.hdr;
        self.metrics.tx_packets.fetch_add(1, Ordering::Relaxed);
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            warn!(
                src = h.src_cid,
                dst = h.dst_cid,
                "vsock: dropping a packet with foreign CIDs"
            );
            return;
        }
        let key = ConnKey {
            local_port: h.dst_port,
            peer_port: h.src_port,
        };
        if h.type_ != TYPE_STREAM {
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            if h.op != op::RST {
                self.push_rst(key);
            }
            return;
        }
        if h.op == op::REQUEST {
            self.guest_connect(key, &h);
            return;
        }
        let guest_cid = self.guest_cid;
        let Some(conn) = self.conns.get_mut(&key) else {
            if h.op != op::RST {
                self.push_rst(key);
            }
            return;
        };
        conn.peer_buf_alloc = h.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        match h.op {
            op::RESPONSE => {
                if conn.state != ConnState::LocalInit {
                    self.reset(key);
                    return;
                }
                let line = format!("OK {}\n", key.local_port);
                if let Err(e) = conn.stream.write_all(line.as_bytes()) {
                    debug!(error = %e, "vsock: host client went away before OK");
                    self.reset(key);
                    return;
                }
                conn.state = ConnState::Established;
                conn.deadline = None;
                self.metrics.connections.fetch_add(1, Ordering::Relaxed);
            }
            op::RW => {
                if conn.state != ConnState::Established || conn.peer_shut_send {
                    self.reset(key);
                    return;
                }
                if pkt.payload.is_empty() {
                    return;
                }
                if conn.to_host.len() + pkt.payload.len() > CONN_BUF_ALLOC as usize {
                    warn!(
                        ?key,
                        "vsock: guest overran the advertised credit; resetting"
                    );
                    self.reset(key);
                    return;
                }
                conn.to_host.extend(&pkt.payload);
                self.flush_to_host(key);
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                let hdr = stamped(guest_cid, key, op::CREDIT_UPDATE, conn);
                self.ctrl.push_back(hdr);
            }
            op::SHUTDOWN => {
                conn.peer_shut_rcv |= h.flags & shutdown::RCV != 0;
                conn.peer_shut_send |= h.flags & shutdown::SEND != 0;
                let done = conn.peer_shut_rcv && conn.peer_shut_send;
                if done || (conn.peer_shut_send && conn.host_eof) {
                    // Both directions are finished: the best-effort last flush, then RST.
                    let _ = conn.flush();
                    self.reset(key);
                } else if conn.peer_shut_send && conn.to_host.is_empty() {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                }
            }
            op::RST => {
                self.conns.remove(&key);
            }
            other => {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(
                    op = other,
                    "vsock: unknown operation; resetting the connection"
                );
                self.reset(key);
            }
        }
    }

    fn guest_connect(&mut self, key: ConnKey, h: &PacketHeader) {
        if self.conns.contains_key(&key) {
            self.reset(key);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.local_port));
        let stream = UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|()| s));
        match stream {
            Ok(stream) => {
                let mut conn = Connection::new(stream, ConnState::Established);
                conn.peer_buf_alloc = h.buf_alloc;
                conn.peer_fwd_cnt = Wrapping(h.fwd_cnt);
                let hdr = stamped(self.guest_cid, key, op::RESPONSE, &mut conn);
                self.conns.insert(key, conn);
                self.ctrl.push_back(hdr);
                self.metrics.connections.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(path = ?path, error = %e, "vsock: guest connection refused on the host");
                self.push_rst(key);
            }
        }
    }

    /// The next packet for the guest, with at most `max_payload` payload bytes.
    pub fn recv_pkt(&mut self, max_payload: usize) -> Option<Packet> {
        if let Some(hdr) = self.ctrl.pop_front() {
            self.metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
            return Some(Packet {
                hdr,
                payload: Vec::new(),
            });
        }
        let guest_cid = self.guest_cid;
        let mut failed = None;
        let mut out = None;
        for (&key, conn) in self.conns.iter_mut() {
            if !conn.can_send() || !conn.has_data() {
                continue;
            }
            let want = (conn.credit() as usize)
                .min(max_payload)
                .min(MAX_PKT_PAYLOAD as usize);
            if want == 0 {
                continue;
            }
            let payload: Vec<u8> = if conn.pending_host.is_empty() {
                let mut buf = vec![0u8; want];
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        conn.host_eof = true;
                        let mut hdr = stamped(guest_cid, key, op::SHUTDOWN, conn);
                        hdr.flags = shutdown::SEND;
                        out = Some(Packet {
                            hdr,
                            payload: Vec::new(),
                        });
                        break;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        buf
                    }
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted =>
                    {
                        conn.readable = false;
                        continue;
                    }
                    Err(e) => {
                        debug!(?key, error = %e, "vsock: host socket read failed; resetting");
                        failed = Some(key);
                        break;
                    }
                }
            } else {
                let n = want.min(conn.pending_host.len());
                conn.pending_host.drain(..n).collect()
            };
            // payload.len() <= MAX_PKT_PAYLOAD.
            let len = payload.len() as u32;
            conn.tx_cnt += len;
            let mut hdr = stamped(guest_cid, key, op::RW, conn);
            hdr.len = len;
            out = Some(Packet { hdr, payload });
            break;
        }
        if let Some(key) = failed {
            self.reset(key);
            return self.recv_pkt(max_payload);
        }
        if out.is_some() {
            self.metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    const CID: u64 = 3;

    fn muxer() -> (tempfile::TempDir, PathBuf, VsockMuxer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let m = VsockMuxer::bind(CID, &path).unwrap();
        (dir, path, m)
    }

    /// Polls the muxer's descriptors once (up to `ms`) and reports readiness.
    fn pump(m: &mut VsockMuxer, ms: i32) {
        let set = m.poll_set();
        let mut fds: Vec<libc::pollfd> = set
            .iter()
            .map(|&(fd, events, _)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        assert!(n >= 0);
        for (pfd, &(_, _, target)) in fds.iter().zip(&set) {
            if pfd.revents != 0 {
                m.handle_ready(target, pfd.revents);
            }
        }
    }

    /// Pumps until the muxer yields a packet.
    fn next_pkt(m: &mut VsockMuxer, max: usize) -> Packet {
        for _ in 0..200 {
            if let Some(p) = m.recv_pkt(max) {
                return p;
            }
            pump(m, 10);
        }
        panic!("no packet for the guest");
    }

    fn guest_hdr(op: u16, src_port: u32, dst_port: u32) -> PacketHeader {
        PacketHeader {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    fn pkt(hdr: PacketHeader, payload: &[u8]) -> Packet {
        Packet {
            hdr: PacketHeader {
                len: payload.len() as u32,
                ..hdr
            },
            payload: payload.to_vec(),
        }
    }

    /// A host client through CONNECT, accepted by the "guest"; returns (client, host port).
    fn host_connection(m: &mut VsockMuxer, path: &Path, guest_port: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(path).unwrap();
        client
            .write_all(format!("CONNECT {guest_port}\n").as_bytes())
            .unwrap();
        let req = next_pkt(m, 4096);
        assert_eq!(req.hdr.op, op::REQUEST);
        assert_eq!(
            (req.hdr.src_cid, req.hdr.dst_cid, req.hdr.dst_port),
            (HOST_CID, CID, guest_port)
        );
        assert_eq!(req.hdr.buf_alloc, CONN_BUF_ALLOC);
        let host_port = req.hdr.src_port;
        m.send_pkt(pkt(guest_hdr(op::RESPONSE, guest_port, host_port), b""));
        let mut line = String::new();
        std::io::BufReader::new(&client)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, format!("OK {host_port}\n"));
        (client, host_port)
    }

    #[test]
    fn host_initiated_connection_carries_data_both_ways() {
        let (_dir, path, mut m) = muxer();
        let (mut client, hp) = host_connection(&mut m, &path, 1234);
        let key = ConnKey {
            local_port: hp,
            peer_port: 1234,
        };
        assert_eq!(m.conn_state(key), Some(ConnState::Established));

        client.write_all(b"from host").unwrap();
        let rw = next_pkt(&mut m, 4096);
        assert_eq!(rw.hdr.op, op::RW);
        assert_eq!(rw.payload, b"from host");
        assert_eq!(rw.hdr.len, 9);

        m.send_pkt(pkt(guest_hdr(op::RW, 1234, hp), b"from guest"));
        let mut got = [0u8; 10];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from guest");

        // Host EOF becomes SHUTDOWN(SEND); the guest's full shutdown is answered with RST.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let sd = next_pkt(&mut m, 4096);
        assert_eq!((sd.hdr.op, sd.hdr.flags), (op::SHUTDOWN, shutdown::SEND));
        let mut h = guest_hdr(op::SHUTDOWN, 1234, hp);
        h.flags = shutdown::RCV | shutdown::SEND;
        m.send_pkt(pkt(h, b""));
        assert_eq!(m.recv_pkt(4096).unwrap().hdr.op, op::RST);
        assert_eq!(m.conn_count(), 0);
    }

    #[test]
    fn bytes_after_the_connect_line_are_kept() {
        let (_dir, path, mut m) = muxer();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"CONNECT 7\nearly bytes").unwrap();
        let req = next_pkt(&mut m, 4096);
        m.send_pkt(pkt(guest_hdr(op::RESPONSE, 7, req.hdr.src_port), b""));
        let rw = next_pkt(&mut m, 4096);
        assert_eq!(rw.payload, b"early bytes");
    }

    #[test]
    fn guest_initiated_connection_reaches_the_port_socket() {
        let (_dir, path, mut m) = muxer();
        let listener = UnixListener::bind(format!("{}_5000", path.display())).unwrap();
        m.send_pkt(pkt(guest_hdr(op::REQUEST, 40000, 5000), b""));
        let resp = m.recv_pkt(4096).unwrap();
        assert_eq!(resp.hdr.op, op::RESPONSE);
        assert_eq!((resp.hdr.src_port, resp.hdr.dst_port), (5000, 40000));
        let (mut server, _) = listener.accept().unwrap();
        m.send_pkt(pkt(guest_hdr(op::RW, 40000, 5000), b"ping"));
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").unwrap();
        assert_eq!(next_pkt(&mut m, 4096).payload, b"pong");

        // Nothing listens on port 5001.
        m.send_pkt(pkt(guest_hdr(op::REQUEST, 40001, 5001), b""));
        let rst = m.recv_pkt(4096).unwrap();
        assert_eq!((rst.hdr.op, rst.hdr.dst_port), (op::RST, 40001));
    }

    #[test]
    fn host_sends_no_more_than_the_guest_credit() {
        let (_dir, path, mut m) = muxer();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"CONNECT 9\n").unwrap();
        let req = next_pkt(&mut m, 4096);
        let hp = req.hdr.src_port;
        let mut resp = guest_hdr(op::RESPONSE, 9, hp);
        resp.buf_alloc = 8;
        m.send_pkt(pkt(resp, b""));
        let mut line = [0u8; 64];
        let _ = client.read(&mut line).unwrap();
        client.write_all(&[7u8; 20]).unwrap();
        let first = next_pkt(&mut m, 4096);
        assert_eq!(first.payload.len(), 8);
        // No credit left: nothing more, however long we wait.
        pump(&mut m, 50);
        assert!(m.recv_pkt(4096).is_none());
        assert!(!m.has_rx());
        // The guest consumed 8 bytes.
        let mut upd = guest_hdr(op::CREDIT_UPDATE, 9, hp);
        upd.buf_alloc = 8;
        upd.fwd_cnt = 8;
        m.send_pkt(pkt(upd, b""));
        assert_eq!(next_pkt(&mut m, 4096).payload.len(), 8);
        // The rx buffer size limits a packet too.
        upd.fwd_cnt = 16;
        m.send_pkt(pkt(upd, b""));
        assert_eq!(next_pkt(&mut m, 3).payload, vec![7u8; 3]);
    }

    #[test]
    fn credit_request_is_answered_and_overrun_resets() {
        let (_dir, path, mut m) = muxer();
        let (_client, hp) = host_connection(&mut m, &path, 11);
        m.send_pkt(pkt(guest_hdr(op::CREDIT_REQUEST, 11, hp), b""));
        let upd = m.recv_pkt(4096).unwrap();
        assert_eq!(upd.hdr.op, op::CREDIT_UPDATE);
        assert_eq!(upd.hdr.buf_alloc, CONN_BUF_ALLOC);
        // The client does not read; the guest sends more than buf_alloc.
        let chunk = vec![1u8; MAX_PKT_PAYLOAD as usize];
        let mut reset = false;
        for _ in 0..16 {
            m.send_pkt(pkt(guest_hdr(op::RW, 11, hp), &chunk));
            if m.conn_count() == 0 {
                reset = true;
                break;
            }
        }
        assert!(reset, "credit overrun must reset the connection");
        // Credit updates for what the host socket took come first, then the RST.
        let mut ops = Vec::new();
        while let Some(p) = m.recv_pkt(4096) {
            ops.push(p.hdr.op);
        }
        assert_eq!(ops.last(), Some(&op::RST));
        assert!(ops[..ops.len() - 1].iter().all(|&o| o == op::CREDIT_UPDATE));
    }

    #[test]
    fn unknown_ops_strangers_and_zero_length_packets() {
        let (_dir, path, mut m) = muxer();
        let (_client, hp) = host_connection(&mut m, &path, 12);
        // Zero-length RW: accepted, nothing happens.
        m.send_pkt(pkt(guest_hdr(op::RW, 12, hp), b""));
        assert!(m.recv_pkt(4096).is_none());
        assert_eq!(m.conn_count(), 1);
        // Unknown op: RST, connection gone.
        m.send_pkt(pkt(guest_hdr(99, 12, hp), b""));
        assert_eq!(m.recv_pkt(4096).unwrap().hdr.op, op::RST);
        assert_eq!(m.conn_count(), 0);
        // A packet for no connection: RST; an RST for no connection: nothing.
        m.send_pkt(pkt(guest_hdr(op::RW, 1, 2), b"x"));
        assert_eq!(m.recv_pkt(4096).unwrap().hdr.op, op::RST);
        m.send_pkt(pkt(guest_hdr(op::RST, 1, 2), b""));
        assert!(m.recv_pkt(4096).is_none());
        // Foreign CIDs are dropped silently; a non-stream type gets RST.
        let mut h = guest_hdr(op::REQUEST, 1, 2);
        h.src_cid = 77;
        m.send_pkt(pkt(h, b""));
        assert!(m.recv_pkt(4096).is_none());
        let mut h = guest_hdr(op::REQUEST, 1, 2);
        h.type_ = 2;
        m.send_pkt(pkt(h, b""));
        assert_eq!(m.recv_pkt(4096).unwrap().hdr.op, op::RST);
        assert_eq!(m.metrics().malformed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn bad_connect_lines_and_silent_guests() {
        let (_dir, path, mut m) = muxer();
        let mut bad = UnixStream::connect(&path).unwrap();
        bad.write_all(b"HELLO 5\n").unwrap();
        pump(&mut m, 50);
        pump(&mut m, 10);
        assert!(m.recv_pkt(4096).is_none());
        let mut buf = [0u8; 8];
        assert_eq!(bad.read(&mut buf).unwrap(), 0, "closed without an answer");

        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"CONNECT 5\n").unwrap();
        let req = next_pkt(&mut m, 4096);
        assert_eq!(req.hdr.op, op::REQUEST);
        // The guest never answers.
        m.expire(Instant::now() + CONNECT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(m.recv_pkt(4096).unwrap().hdr.op, op::RST);
        assert_eq!(client.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_path_in_use_is_refused_and_a_stale_one_taken_over() {
        let (_dir, path, m) = muxer();
        let err = VsockMuxer::bind(CID, &path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "vsock Unix socket path {} is already in use",
                path.display()
            )
        );
        // Dropping the muxer removes its socket.
        drop(m);
        assert!(!path.exists());
        // A stale socket (nobody accepts) is taken over.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _m = VsockMuxer::bind(CID, &path).unwrap();
        // A regular file is not.
        let file = path.with_extension("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            VsockMuxer::bind(CID, &file),
            Err(MuxerError::NotASocket(_))
        ));
    }
}
