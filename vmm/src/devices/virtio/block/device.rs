//! The virtio-blk device model and request engine.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};

use super::event_handler::Worker;
use super::{blk_status, features, req, ID_BYTES, MAX_REQUEST_BYTES, QUEUE_SIZE, SECTOR_SIZE};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, DeviceWorker, VirtioDevice, TYPE_BLOCK,
    VIRTIO_F_VERSION_1,
};
use crate::memory::GuestMemory;
use crate::seccomp::ThreadKind;
use crate::vmm_config::DriveConfig;

/// Errors of [`Block::new`].
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file could not be opened.
    #[error("could not open drive backing file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The backing file's size could not be read.
    #[error("could not read the size of drive backing file {path}")]
    Size {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one block device, readable while it runs.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Requests completed (any status).
    pub requests: AtomicU64,
    /// Bytes read from the backing file into the guest.
    pub read_bytes: AtomicU64,
    /// Bytes written from the guest to the backing file.
    pub write_bytes: AtomicU64,
    /// Requests answered with IOERR or UNSUPP.
    pub failed: AtomicU64,
    /// Chains so malformed that no status could be written.
    pub malformed: AtomicU64,
    /// Flushes performed.
    pub flushes: AtomicU64,
}

/// Why a request failed; maps to a status byte.
#[derive(Debug, PartialEq, Eq)]
enum RequestError {
    /// IOERR.
    Io(&'static str),
    /// UNSUPP.
    Unsupported(u32),
}

/// Executes virtio-blk requests against a host file. Pure request processing: no threads, no
/// eventfds, no KVM.
#[derive(Debug)]
pub struct DiskEngine {
    file: File,
    nsectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    metrics: Arc<BlockMetrics>,
}

impl DiskEngine {
    /// An engine over `file` (of `len` bytes).
    pub fn new(file: File, len: u64, read_only: bool, id: &str) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Self {
            file,
            nsectors: len / SECTOR_SIZE,
            read_only,
            id: id_bytes,
            metrics: Arc::default(),
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    /// The device's counters.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// Processes every available chain of `queue`; returns whether any used entry was added.
    pub fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used_any = false;
        loop {
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    warn!(error = %e, "virtio-blk: cannot read the available ring");
                    None
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let used_len = self.handle_chain(chain, mem);
            if let Err(e) = queue.add_used(mem, head, used_len) {
                warn!(error = %e, "virtio-blk: cannot add to the used ring");
                break;
            }
            used_any = true;
        }
        used_any
    }

    /// Handles one chain; returns the number of bytes written into guest buffers.
    pub fn handle_chain(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        let descs: Vec<Descriptor> = chain.collect();
        // The iterator stops early (leaving a descriptor that still has NEXT) on a loop, an
        // index beyond the table or an unreadable descriptor.
        let truncated = descs.last().is_none_or(|d| d.has_next());
        let status_desc = descs
            .last()
            .filter(|d| !truncated && d.is_write_only() && d.len() >= 1 && descs.len() >= 2);
        let Some(status_desc) = status_desc else {
            warn!("virtio-blk: malformed descriptor chain, no status written");
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        let header = &descs[0];
        let data = &descs[1..descs.len() - 1];

        let result = self.execute(header, data, mem);
        let (status, written) = match result {
            Ok(written) => (blk_status::OK, written),
            Err(e) => {
                warn!(error = ?e, "virtio-blk: request failed");
                self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                let s = match e {
                    RequestError::Io(_) => blk_status::IOERR,
                    RequestError::Unsupported(_) => blk_status::UNSUPP,
                };
                (s, 0)
            }
        };
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if mem.write_obj(status, status_desc.addr()).is_err() {
            warn!("virtio-blk: status byte outside guest memory");
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        written.saturating_add(1)
    }

    fn execute(
        &mut self,
        header: &Descriptor,
        data: &[Descriptor],
        mem: &GuestMemory,
    ) -> Result<u32, RequestError> {
        if header.is_write_only() || header.len() < 16 {
            return Err(RequestError::Io("header descriptor is write-only or short"));
        }
        let raw: [u8; 16] = mem
            .read_obj(header.addr())
            .map_err(|_| RequestError::Io("header outside guest memory"))?;
        let [t0, t1, t2, t3, _, _, _, _, s @ ..] = raw;
        let rtype = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes(s);

        match rtype {
            req::IN | req::OUT => {
                let is_read = rtype == req::IN;
                if data.iter().any(|d| d.is_write_only() != is_read) {
                    return Err(RequestError::Io("data descriptor has the wrong direction"));
                }
                let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
                if total > MAX_REQUEST_BYTES {
                    return Err(RequestError::Io("request larger than the maximum"));
                }
                if total % SECTOR_SIZE != 0 {
                    return Err(RequestError::Io(
                        "length is not a multiple of the sector size",
                    ));
                }
                sector
                    .checked_add(total / SECTOR_SIZE)
                    .filter(|&end| end <= self.nsectors)
                    .ok_or(RequestError::Io("request beyond the end of the disk"))?;
                if !is_read && self.read_only {
                    return Err(RequestError::Io("write to a read-only drive"));
                }
                for d in data {
                    if !mem.check_range(d.addr(), d.len() as usize) {
                        return Err(RequestError::Io("data buffer outside guest memory"));
                    }
                }
                // sector + total/512 <= nsectors, so this cannot overflow.
                self.file
                    .seek(SeekFrom::Start(sector * SECTOR_SIZE))
                    .map_err(|_| RequestError::Io("seek failed"))?;
                for d in data {
                    let len = d.len() as usize;
                    if is_read {
                        mem.read_exact_volatile_from(d.addr(), &mut self.file, len)
                            .map_err(|_| RequestError::Io("read from the backing file failed"))?;
                    } else {
                        mem.write_all_volatile_to(d.addr(), &mut self.file, len)
                            .map_err(|_| RequestError::Io("write to the backing file failed"))?;
                    }
                }
                if is_read {
                    self.metrics.read_bytes.fetch_add(total, Ordering::Relaxed);
                    // total <= MAX_REQUEST_BYTES < u32::MAX.
                    Ok(total as u32)
                } else {
                    self.metrics.write_bytes.fetch_add(total, Ordering::Relaxed);
                    Ok(0)
                }
            }
            req::FLUSH => {
                if !self.read_only {
                    self.file
                        .sync_data()
                        .map_err(|_| RequestError::Io("fsync of the backing file failed"))?;
                }
                self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
                Ok(0)
            }
            req::GET_ID => {
                let [d] = data else {
                    return Err(RequestError::Io("GET_ID needs exactly one data buffer"));
                };
                if !d.is_write_only() {
                    return Err(RequestError::Io("GET_ID buffer is not writable"));
                }
                let n = (d.len() as usize).min(ID_BYTES);
                mem.write_slice(&self.id[..n], d.addr())
                    .map_err(|_| RequestError::Io("GET_ID buffer outside guest memory"))?;
                Ok(n as u32)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    #[cfg(test)]
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// The virtio-blk device.
#[derive(Debug)]
pub struct Block {
    id: String,
    avail_features: u64,
    config_space: [u8; 16],
    metrics: Arc<BlockMetrics>,
    /// The engine, on the worker thread while active.
    worker: DeviceWorker<DiskEngine>,
}

impl Block {
    /// Opens the drive's backing file (read-only drives are opened read-only).
    pub fn new(cfg: &DriveConfig) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.is_read_only)
            .open(&cfg.path_on_host)
            .map_err(|source| BlockError::Open {
                path: cfg.path_on_host.clone(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| BlockError::Size {
                path: cfg.path_on_host.clone(),
                source,
            })?
            .len();
        Ok(Self::with_engine(
            &cfg.drive_id,
            DiskEngine::new(file, len, cfg.is_read_only, &cfg.drive_id),
        ))
    }

    fn with_engine(id: &str, engine: DiskEngine) -> Self {
        let mut avail_features =
            (1u64 << VIRTIO_F_VERSION_1) | (1u64 << features::FLUSH) | (1u64 << features::SEG_MAX);
        if engine.read_only {
            avail_features |= 1 << features::RO;
        }
        let mut config_space = [0u8; 16];
        config_space[..8].copy_from_slice(&engine.nsectors.to_le_bytes());
        // size_max (8..12) stays 0: not offered.
        config_space[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        Self {
            id: id.to_owned(),
            avail_features,
            config_space,
            metrics: engine.metrics.clone(),
            worker: DeviceWorker::new("virtio-blk", "drive", engine),
        }
    }

    /// The drive id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data)
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!(offset, "virtio-blk: guest wrote the read-only config space");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        // The error names the number of queues the driver really set up.
        let (mem, [queue], [queue_evt], interrupt) = ctx.into_queues::<1>()?;
        self.worker.start(
            format!("blk-{}", self.id),
            ThreadKind::Block,
            |engine, kill_evt| Worker {
                engine,
                queue,
                mem,
                interrupt,
                queue_evt,
                kill_evt,
            },
            Worker::run,
            |w| w.engine,
        )
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.worker.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::virtq::{DriverQueue, F_NEXT, F_WRITE};
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use vm_memory::GuestAddress;

    fn read_back(engine: &DiskEngine, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        engine.file().read_exact_at(&mut buf, offset).unwrap();
        buf
    }

    const MEM: u64 = 0x40_0000;
    const QBASE: u64 = 0x1_0000;
    const HDR: u64 = 0x2_0000;
    const BUF: u64 = 0x3_0000;
    const STATUS: u64 = 0x8_0000;

    struct Fixture {
        mem: GuestMemory,
        queue: Queue,
        driver: DriverQueue,
        engine: DiskEngine,
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn fixture(read_only: bool) -> Fixture {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = File::create(&path).unwrap();
        let content: Vec<u8> = (0..64 * 512).map(|i| (i / 512) as u8).collect();
        f.write_all(&content).unwrap();
        drop(f);
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .unwrap();
        let engine = DiskEngine::new(file, 64 * 512, read_only, "berth-test-drive-id-long");
        let driver = DriverQueue::new(GuestAddress(QBASE), 16);
        driver.init(&mem);
        let mut queue = Queue::new(16).unwrap();
        queue.set_size(16);
        queue.set_desc_table_address(Some(driver.desc_table().0 as u32), Some(0));
        queue.set_avail_ring_address(Some(driver.avail_ring().0 as u32), Some(0));
        queue.set_used_ring_address(Some(driver.used_ring().0 as u32), Some(0));
        queue.set_ready(true);
        assert!(queue.is_valid(&mem));
        Fixture {
            mem,
            queue,
            driver,
            engine,
            _dir: dir,
            path,
        }
    }

    fn header(mem: &GuestMemory, rtype: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&rtype.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    impl Fixture {
        /// Submits a chain of (addr, len, flags) and runs the engine; returns (used len, status).
        fn run(&mut self, chain: &[(u64, u32, u16)]) -> (u32, u8) {
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            let head = self.driver.add_chain(&self.mem, chain);
            assert!(self.engine.process_queue(&mut self.queue, &self.mem));
            let (id, len) = self.driver.pop_used(&self.mem).expect("a used entry");
            assert_eq!(id, u32::from(head));
            (len, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
        }
    }

    #[test]
    fn read_sectors() {
        let mut f = fixture(false);
        header(&f.mem, req::IN, 3);
        let (len, st) = f.run(&[
            (HDR, 16, 0),
            (BUF, 512, F_WRITE),
            (BUF + 512, 512, F_WRITE),
            (STATUS, 1, F_WRITE),
        ]);
        assert_eq!(st, blk_status::OK);
        assert_eq!(len, 1025);
        let mut buf = [0u8; 1024];
        f.mem.read_slice(&mut buf, GuestAddress(BUF)).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 3));
        assert!(buf[512..].iter().all(|&b| b == 4));
        assert_eq!(f.engine.metrics().read_bytes.load(Ordering::Relaxed), 1024);
    }

    #[test]
    fn write_then_flush_reaches_the_file() {
        let mut f = fixture(false);
        f.mem.write_slice(&[0xab; 1024], GuestAddress(BUF)).unwrap();
        header(&f.mem, req::OUT, 10);
        let (len, st) = f.run(&[(HDR, 16, 0), (BUF, 1024, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!((len, st), (1, blk_status::OK));
        header(&f.mem, req::FLUSH, 0);
        let (_, st) = f.run(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::OK);
        let on_disk = std::fs::read(&f.path).unwrap();
        assert!(on_disk[10 * 512..12 * 512].iter().all(|&b| b == 0xab));
        assert!(on_disk[9 * 512..10 * 512].iter().all(|&b| b == 9));
        assert!(on_disk[12 * 512..13 * 512].iter().all(|&b| b == 12));
        assert_eq!(read_back(&f.engine, 10 * 512, 1), vec![0xab]);
        assert_eq!(f.engine.metrics().flushes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn get_id_truncates_to_20_bytes() {
        let mut f = fixture(false);
        header(&f.mem, req::GET_ID, 0);
        let (len, st) = f.run(&[(HDR, 16, 0), (BUF, 64, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!((len, st), (21, blk_status::OK));
        let mut id = [0u8; 20];
        f.mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
        assert_eq!(&id, b"berth-test-drive-id-");
    }

    #[test]
    fn read_only_drive_refuses_writes() {
        let mut f = fixture(true);
        f.mem.write_slice(&[0xcd; 512], GuestAddress(BUF)).unwrap();
        header(&f.mem, req::OUT, 0);
        let (len, st) = f.run(&[(HDR, 16, 0), (BUF, 512, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!((len, st), (1, blk_status::IOERR));
        assert!(std::fs::read(&f.path).unwrap()[..512]
            .iter()
            .all(|&b| b == 0));
        // Reads and flushes still work.
        header(&f.mem, req::IN, 1);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::OK);
        header(&f.mem, req::FLUSH, 0);
        assert_eq!(
            f.run(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]).1,
            blk_status::OK
        );

        let dev = Block::with_engine("ro", fixture(true).engine);
        assert_ne!(dev.avail_features() & (1 << features::RO), 0);
    }

    #[test]
    fn unknown_type_is_unsupp() {
        let mut f = fixture(false);
        header(&f.mem, 77, 0);
        let (len, st) = f.run(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!((len, st), (1, blk_status::UNSUPP));
    }

    #[test]
    fn out_of_range_requests_fail_with_ioerr() {
        let mut f = fixture(false);
        // Past the end of the 64-sector disk.
        header(&f.mem, req::IN, 63);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 1024, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        // Sector arithmetic overflow.
        header(&f.mem, req::IN, u64::MAX);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        // Data buffer outside guest memory.
        header(&f.mem, req::IN, 0);
        let (_, st) = f.run(&[
            (HDR, 16, 0),
            (MEM - 256, 512, F_WRITE),
            (STATUS, 1, F_WRITE),
        ]);
        assert_eq!(st, blk_status::IOERR);
        // Header outside guest memory.
        let (_, st) = f.run(&[(MEM + 0x1000, 16, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        // Not a whole number of sectors.
        header(&f.mem, req::IN, 0);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 100, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        assert_eq!(f.engine.metrics().failed.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn oversized_request_is_refused() {
        let mut f = fixture(false);
        header(&f.mem, req::IN, 0);
        let (len, st) = f.run(&[
            (HDR, 16, 0),
            (BUF, (MAX_REQUEST_BYTES + SECTOR_SIZE) as u32, F_WRITE),
            (STATUS, 1, F_WRITE),
        ]);
        assert_eq!((len, st), (1, blk_status::IOERR));
    }

    #[test]
    fn wrong_direction_is_refused() {
        let mut f = fixture(false);
        // A read whose data buffer is device-readable.
        header(&f.mem, req::IN, 0);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 512, 0), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        // A write whose data buffer is device-writable.
        header(&f.mem, req::OUT, 0);
        let (_, st) = f.run(&[(HDR, 16, 0), (BUF, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        assert!(std::fs::read(&f.path).unwrap()[..512]
            .iter()
            .all(|&b| b == 0));
        // A writable header.
        let (_, st) = f.run(&[(HDR, 16, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(st, blk_status::IOERR);
        // A read-only status descriptor: nothing can be reported.
        header(&f.mem, req::FLUSH, 0);
        let (len, st) = f.run(&[(HDR, 16, 0), (STATUS, 1, 0)]);
        assert_eq!((len, st), (0, 0xff));
        assert_eq!(f.engine.metrics().malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn looping_chain_is_refused_without_hanging() {
        let mut f = fixture(false);
        header(&f.mem, req::IN, 0);
        // Two descriptors pointing at each other.
        let head = f.driver.add_raw(
            &f.mem,
            &[(HDR, 16, F_NEXT, 1), (BUF, 512, F_WRITE | F_NEXT, 0)],
        );
        assert!(f.engine.process_queue(&mut f.queue, &f.mem));
        let (id, len) = f.driver.pop_used(&f.mem).unwrap();
        assert_eq!((id, len), (u32::from(head), 0));
        assert_eq!(f.engine.metrics().malformed.load(Ordering::Relaxed), 1);
        // The queue keeps working afterwards.
        header(&f.mem, req::FLUSH, 0);
        assert_eq!(
            f.run(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]).1,
            blk_status::OK
        );
    }

    #[test]
    fn next_index_beyond_the_table_is_refused() {
        let mut f = fixture(false);
        let head = f.driver.add_raw(&f.mem, &[(HDR, 16, F_NEXT, 200)]);
        assert!(f.engine.process_queue(&mut f.queue, &f.mem));
        assert_eq!(f.driver.pop_used(&f.mem), Some((u32::from(head), 0)));
    }

    #[test]
    fn single_descriptor_chain_is_refused() {
        let mut f = fixture(false);
        let (len, _) = f.run(&[(STATUS, 1, F_WRITE)]);
        assert_eq!(len, 0);
    }

    #[test]
    fn config_space_and_features() {
        let dev = Block::with_engine("x", fixture(false).engine);
        let mut cap = [0u8; 8];
        dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
        let mut seg = [0u8; 4];
        dev.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), u32::from(QUEUE_SIZE) - 2);
        assert_eq!(dev.avail_features() & (1 << features::RO), 0);
        assert_ne!(dev.avail_features() & (1 << VIRTIO_F_VERSION_1), 0);
        assert_ne!(dev.avail_features() & (1 << features::FLUSH), 0);
    }
}
