//! A ring of provided buffers (IORING_REGISTER_PBUF_RING) shared by every
//! multishot receive of a worker.
//!
//! The kernel picks a free buffer when data arrives and names it in the
//! completion; the receiver copies the bytes out and hands the buffer back
//! at once, so a worker needs buffers for the data in flight, not one per
//! connection.
//!
//! Which buffers the kernel owns is known only from completions, so the
//! calls that read or return a buffer are `unsafe fn`: the caller vouches
//! that a completion handed that buffer over and that it was not returned
//! since. A loop that keeps what it received for a while borrows the
//! buffer as a [`RecvBuf`] guard instead, which returns it when dropped.
//! Memory the kernel may still write is never freed: dropping a ring that
//! was not [`release`](BufRing::release)d leaks it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the worker's ring.
pub(crate) const GROUP: u16 = 0;

/// The memory the kernel reads entries from and writes data into. Shared
/// with the [`RecvBuf`] guards lent out, so a guard that outlives the ring
/// still points at live memory.
struct Memory {
    /// The entries the kernel reads free buffers from (page-aligned).
    entries: *mut BufRingEntry,
    layout: Layout,
    /// `count` buffers of `size` bytes. A raw allocation, not a slice: the
    /// kernel writes into free buffers at any time, so no reference may
    /// span them; only a buffer a completion handed over is borrowed.
    data: *mut u8,
    data_layout: Layout,
    size: usize,
    /// Registered with the kernel (and not unregistered since): the memory
    /// must not be freed.
    registered: Cell<bool>,
    /// Buffers whose guards dropped, handed back at the next `reclaim`.
    returned: RefCell<Vec<u16>>,
}

impl Memory {
    /// Bytes `..len` of buffer `bid`.
    ///
    /// # Safety
    /// A completion handed buffer `bid` to the application and it was not
    /// staged again since, or the group is unregistered: the kernel is not
    /// writing it.
    unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        // SAFETY: `bid < count` (checked by every caller), so the range lies
        // inside the allocation; the caller vouches the kernel leaves it alone.
        unsafe {
            std::slice::from_raw_parts(
                self.data.add(usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.registered.get() {
            // Never unregistered: a receive may still pick a buffer, so the
            // memory stays allocated for as long as the process lives.
            return;
        }
        // SAFETY: both allocated in `register` with these layouts; the
        // kernel no longer refers to them (never or no longer registered),
        // and no guard is left (this is the last reference).
        unsafe {
            dealloc(self.entries.cast(), self.layout);
            dealloc(self.data, self.data_layout);
        }
    }
}

pub(crate) struct BufRing {
    mem: Rc<Memory>,
    /// Buffers completions handed to the application and not yet given back.
    held: usize,
    count: u16,
    /// Our copy of the tail: entries published so far.
    tail: u16,
}

impl BufRing {
    /// Allocates `count` (a power of two) buffers of `size` bytes (neither
    /// zero, `size` below 4 GiB), registers them as group [`GROUP`] and
    /// provides them all.
    pub(crate) fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || size == 0 || u32::try_from(size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("provided buffers: {count} x {size} bytes (count must be a power of two, size 1..4 GiB)"),
            ));
        }
        let layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let data_layout =
            Layout::from_size_align(usize::from(count) * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have non-zero sizes.
        let (entries, data) = unsafe { (alloc_zeroed(layout), alloc_zeroed(data_layout)) };
        if entries.is_null() || data.is_null() {
            // SAFETY: each pointer, when not null, was allocated just above with its layout.
            unsafe {
                if !entries.is_null() {
                    dealloc(entries, layout);
                }
                if !data.is_null() {
                    dealloc(data, data_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mem = Rc::new(Memory {
            entries: entries.cast::<BufRingEntry>(),
            layout,
            data,
            data_layout,
            size,
            registered: Cell::new(false),
            returned: RefCell::new(Vec::new()),
        });
        // SAFETY: `entries` is page-aligned, zeroed and `count` entries long,
        // and it stays allocated until after unregistering (`Memory::drop`
        // leaks it while `registered` is set).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(mem.entries as u64, count, GROUP, 0)?;
        }
        mem.registered.set(true);
        let mut br = BufRing {
            mem,
            held: 0,
            count,
            tail: 0,
        };
        for bid in 0..count {
            br.stage(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Notes that a completion handed a buffer to the application (the
    /// count behind [`free`](Self::free)).
    pub(crate) fn taken(&mut self) {
        self.held += 1;
    }

    /// Buffers the kernel can still fill.
    pub(crate) fn free(&self) -> usize {
        usize::from(self.count) - self.held
    }

    /// Bytes `..len` of buffer `bid`, as a completion reported them.
    ///
    /// # Safety
    /// A completion handed buffer `bid` to the application, and it was not
    /// given back since: otherwise the kernel may be writing it.
    pub(crate) unsafe fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: the caller vouches the kernel handed `bid` over; it does
        // not write it until `give_back`, which needs `&mut self` and so
        // ends this borrow first.
        unsafe { self.mem.bytes(bid, len) }
    }

    /// Hands buffer `bid` back to the kernel.
    ///
    /// # Safety
    /// A completion handed buffer `bid` to the application and it was not
    /// given back since: publishing one buffer twice would let the kernel
    /// fill it for two receives at once.
    pub(crate) unsafe fn give_back(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id {bid} out of range");
        self.held -= 1;
        self.stage(bid);
        self.publish();
    }

    /// Lends buffer `bid`, which a completion just handed over (and which
    /// was counted [`taken`](Self::taken)), as a guard that reads its first
    /// `len` bytes and returns it when dropped; [`reclaim`](Self::reclaim)
    /// gives returned buffers back to the kernel.
    ///
    /// # Safety
    /// As for [`give_back`](Self::give_back): a completion handed `bid`
    /// over, and it was neither given back nor lent since.
    pub(crate) unsafe fn lend(&self, bid: u16, len: usize) -> RecvBuf {
        assert!(bid < self.count, "buffer id {bid} out of range");
        RecvBuf {
            mem: Rc::clone(&self.mem),
            bid,
            len,
        }
    }

    /// Gives the buffers whose guards dropped back to the kernel.
    pub(crate) fn reclaim(&mut self) {
        let returned = std::mem::take(&mut *self.mem.returned.borrow_mut());
        if returned.is_empty() {
            return;
        }
        for &bid in &returned {
            self.held -= 1;
            self.stage(bid);
        }
        self.publish();
        // Keep the vector's capacity for the next returns.
        let mut slot = self.mem.returned.borrow_mut();
        if slot.is_empty() {
            let mut returned = returned;
            returned.clear();
            *slot = returned;
        }
    }

    fn stage(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: `idx < count`, inside the entries allocation; the kernel
        // only reads entries between its head and the published tail, and
        // this one is past the tail until `publish`.
        let entry = unsafe { &mut *self.mem.entries.add(idx) };
        // In bounds (`bid < count`); only the address is taken, nothing borrowed.
        let addr = self.mem.data.wrapping_add(usize::from(bid) * self.mem.size) as u64;
        entry.set_addr(addr);
        entry.set_len(self.mem.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our allocation;
        // the kernel reads it concurrently, hence the atomic release store
        // (entries written before it become visible first).
        unsafe {
            let tail = BufRingEntry::tail(self.mem.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group, so the memory is freed once no guard holds
    /// it. Call only when no operation that selects buffers is in flight;
    /// if the kernel refuses, the memory is leaked rather than freed under it.
    pub(crate) fn release(self, ring: &IoUring) {
        if ring.submitter().unregister_buf_ring(GROUP).is_ok() {
            self.mem.registered.set(false);
        }
    }
}

/// A provided buffer a completion handed over, lent out whole: it reads
/// the bytes the kernel put there, and goes back to the ring (for the
/// kernel to fill again) only when dropped. It keeps the ring's memory
/// alive, so it can outlive the ring itself.
pub struct RecvBuf {
    mem: Rc<Memory>,
    bid: u16,
    len: usize,
}

impl std::ops::Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `lend`'s caller vouched the kernel handed `bid` over; it
        // is staged again only after this guard drops (`reclaim`).
        unsafe { self.mem.bytes(self.bid, self.len) }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.mem.returned.borrow_mut().push(self.bid);
    }
}

impl std::fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}
