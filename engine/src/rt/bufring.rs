//! A ring of provided buffers (IORING_REGISTER_PBUF_RING) shared by every
//! multishot receive of a worker.
//!
//! The kernel picks a free buffer when data arrives and names it in the
//! completion; the receiver copies the bytes out and hands the buffer back
//! at once, so a worker needs buffers for the data in flight, not one per
//! connection.

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
    /// Allocates `count` (a power of two) buffers of `size` bytes, registers
    /// them as group [`GROUP`] and provides them all.
    pub fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
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
        for bid in 0..count {
            br.stage(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Notes that a completion handed buffer `bid` to the application.
    pub fn taken(&mut self) {
        self.held += 1;
    }

    /// Buffers the kernel can still fill.
    pub fn free(&self) -> usize {
        usize::from(self.count) - self.held
    }

    /// Bytes `..len` of buffer `bid`, as a completion reported them.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: buffer `bid` lies inside the allocation; the kernel handed
        // it to a completion and does not write it until `give_back`, which
        // needs `&mut self` and so ends this borrow first.
        unsafe {
            std::slice::from_raw_parts(
                self.data.add(usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        self.held -= 1;
        self.stage(bid);
        self.publish();
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

    /// Unregisters the group; the memory is freed when `self` drops. Call
    /// only when no operation that selects buffers is in flight.
    pub fn release(self, ring: &IoUring) {
        if ring.submitter().unregister_buf_ring(GROUP).is_ok() {
            drop(self);
        } else {
            // The kernel may still refer to it: leaking is the safe choice.
            std::mem::forget(self);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both allocated in `register` with these layouts;
        // unregistered (or never registered) by the time the ring lets go.
        unsafe {
            dealloc(self.entries.cast(), self.layout);
            dealloc(self.data, self.data_layout);
        }
    }
}
