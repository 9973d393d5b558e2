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
//! since. Memory the kernel may still write is never freed: dropping a
//! ring that was not [`release`](BufRing::release)d leaks it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the worker's ring.
pub const GROUP: u16 = 0;

pub struct BufRing {
    /// The entries the kernel reads free buffers from (page-aligned).
    entries: *mut BufRingEntry,
    /// Buffers completions handed to the application and not yet given back.
    held: usize,
    /// Registered with the kernel (and not unregistered since): the memory
    /// must not be freed.
    registered: bool,
    layout: Layout,
    count: u16,
    /// Our copy of the tail: entries published so far.
    tail: u16,
    /// `count` buffers of `size` bytes. A raw allocation, not a slice: the
    /// kernel writes into free buffers at any time, so no reference may
    /// span them; only a buffer a completion handed over is borrowed.
    data: *mut u8,
    data_layout: Layout,
    size: usize,
}

impl BufRing {
    /// Allocates `count` (a power of two) buffers of `size` bytes (neither
    /// zero, `size` below 4 GiB), registers them as group [`GROUP`] and
    /// provides them all.
    pub fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
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
        let mut br = BufRing {
            entries: entries.cast::<BufRingEntry>(),
            held: 0,
            registered: false,
            layout,
            count,
            tail: 0,
            data,
            data_layout,
            size,
        };
        // SAFETY: `entries` is page-aligned, zeroed and `count` entries long,
        // and it stays allocated until after unregistering (see `release`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.entries as u64, count, GROUP, 0)?;
        }
        br.registered = true;
        for bid in 0..count {
            br.stage(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Notes that a completion handed a buffer to the application (the
    /// count behind [`free`](Self::free)).
    pub fn taken(&mut self) {
        self.held += 1;
    }

    /// Buffers the kernel can still fill.
    pub fn free(&self) -> usize {
        usize::from(self.count) - self.held
    }

    /// Bytes `..len` of buffer `bid`, as a completion reported them.
    ///
    /// # Safety
    /// A completion handed buffer `bid` to the application, and it was not
    /// given back since: otherwise the kernel may be writing it.
    pub unsafe fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: buffer `bid` lies inside the allocation; the caller
        // vouches the kernel handed it over, and it does not write it until
        // `give_back`, which needs `&mut self` and so ends this borrow first.
        unsafe {
            std::slice::from_raw_parts(
                self.data.add(usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }

    /// Hands buffer `bid` back to the kernel.
    ///
    /// # Safety
    /// A completion handed buffer `bid` to the application and it was not
    /// given back since: publishing one buffer twice would let the kernel
    /// fill it for two receives at once.
    pub unsafe fn give_back(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id {bid} out of range");
        self.held -= 1;
        self.stage(bid);
        self.publish();
    }

    /// Takes buffer `bid` as a completion just handed it over (counting it
    /// taken): the guard reads its first `len` bytes and gives it back
    /// when dropped.
    ///
    /// # Safety
    /// As for [`give_back`](Self::give_back): a completion handed `bid`
    /// over, and neither this nor `give_back` was called for it since.
    pub unsafe fn take(&mut self, bid: u16, len: usize) -> Taken<'_> {
        assert!(bid < self.count, "buffer id {bid} out of range");
        self.held += 1;
        Taken {
            ring: self,
            bid,
            len,
        }
    }

    fn stage(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: `idx < count`, inside the entries allocation; the kernel
        // only reads entries between its head and the published tail, and
        // this one is past the tail until `publish`.
        let entry = unsafe { &mut *self.entries.add(idx) };
        // In bounds (`bid < count`); only the address is taken, nothing borrowed.
        let addr = self.data.wrapping_add(usize::from(bid) * self.size) as u64;
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our allocation;
        // the kernel reads it concurrently, hence the atomic release store
        // (entries written before it become visible first).
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group and frees the memory. Call only when no
    /// operation that selects buffers is in flight; if the kernel refuses,
    /// the memory is leaked rather than freed under it.
    pub fn release(mut self, ring: &IoUring) {
        if ring.submitter().unregister_buf_ring(GROUP).is_ok() {
            self.registered = false;
        }
    }
}

/// A buffer a completion handed over, readable until the guard drops and
/// gives it back to the kernel.
pub struct Taken<'a> {
    ring: &'a mut BufRing,
    bid: u16,
    len: usize,
}

impl std::ops::Deref for Taken<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `take`'s caller vouched the kernel handed `bid` over; it
        // is given back only when this guard drops.
        unsafe { self.ring.data(self.bid, self.len) }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        // SAFETY: handed over (see `take`) and given back only here, once.
        unsafe { self.ring.give_back(self.bid) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Never unregistered: a receive may still pick a buffer, so the
            // memory stays allocated for as long as the process lives.
            return;
        }
        // SAFETY: both allocated in `register` with these layouts, and the
        // kernel no longer refers to them (never or no longer registered).
        unsafe {
            dealloc(self.entries.cast(), self.layout);
            dealloc(self.data, self.data_layout);
        }
    }
}
