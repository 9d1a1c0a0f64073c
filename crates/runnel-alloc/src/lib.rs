//! # runnel-alloc: a global allocator that survives lying length prefixes
//!
//! Decoders of the Kafka protocol (the `kafka-protocol` crate, up to at least 0.18.0)
//! reserve capacity for the element count a peer declares before decoding a single
//! element: `Vec::with_capacity(n)` with `n` read off the wire. A 20-byte request that
//! declares two billion topics asks for 150 GB. The system allocator refuses, and Rust
//! answers a refused allocation by aborting the process: every connection dies, and no
//! `catch_unwind` can help.
//!
//! [`LazyHuge`] turns such requests into a reservation of address space. Allocations of
//! [`HUGE_BYTES_MIN`] or more are anonymous mappings made with `MAP_NORESERVE`: the kernel
//! commits memory only for pages actually written. The decoder then runs out of input
//! after a few elements and returns an error; the mapping is dropped, having cost a few
//! pages. Everything smaller goes to the system allocator unchanged.
//!
//! ## Limits
//!
//! - Linux only; elsewhere [`LazyHuge`] is the system allocator.
//! - With `vm.overcommit_memory = 2` (strict accounting) the kernel refuses such mappings
//!   too, and the process aborts as before.
//! - Memory that is really written is really used: this removes the up-front
//!   reservation, not the cost of data that exists.
//!
//! This is the only crate in Runnel with `unsafe` code. Once `kafka-protocol` bounds its
//! preallocation by the bytes remaining (upstream pull requests #152, #161 and #200),
//! it can go.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are reserved lazily. No allocation Runnel
/// makes on purpose comes near it: frames are at most 1 GiB and are read in full.
pub const HUGE_BYTES_MIN: usize = 1 << 30;

/// The allocator: install it with `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LazyHuge;

#[cfg(target_os = "linux")]
mod lazy {
    use std::alloc::Layout;

    /// Mappings are page-aligned; stricter alignments go to the system allocator.
    const PAGE_BYTES: usize = 4096;

    pub(crate) fn applies(layout: Layout) -> bool {
        layout.size() >= super::HUGE_BYTES_MIN && layout.align() <= PAGE_BYTES
    }

    /// A private anonymous mapping, zero-filled, with no swap reserved: memory is
    /// committed page by page as it is written. Null on failure, as `alloc` requires.
    pub(crate) fn map(size: usize) -> *mut u8 {
        // SAFETY: an anonymous mapping at an address of the kernel's choosing touches no
        // existing memory; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    /// Unmaps what [`map`] returned.
    ///
    /// # Safety
    /// `ptr` and `size` must be those of a live mapping made by [`map`].
    pub(crate) unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: the caller passes a mapping of exactly this size, no longer used.
        let r = unsafe { libc::munmap(ptr.cast(), size) };
        debug_assert_eq!(r, 0, "munmap of a mapping we made failed");
    }
}

#[cfg(not(target_os = "linux"))]
mod lazy {
    use std::alloc::Layout;

    pub(crate) fn applies(_: Layout) -> bool {
        false
    }

    pub(crate) fn map(_: usize) -> *mut u8 {
        std::ptr::null_mut()
    }

    pub(crate) unsafe fn unmap(_: *mut u8, _: usize) {}
}

// SAFETY: every block comes either from `System` or from `lazy::map`, decided by
// `lazy::applies(layout)` alone; the same layout is passed back to free it, so each block
// returns to the allocator that made it. Mappings are page-aligned, which satisfies every
// alignment `applies` admits, and are zero-filled, which `alloc_zeroed` needs.
unsafe impl GlobalAlloc for LazyHuge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy::applies(layout) {
            lazy::map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy::applies(layout) {
            lazy::map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy::applies(layout) {
            // SAFETY: this layout was mapped by `alloc` (see the impl's comment).
            unsafe { lazy::unmap(ptr, layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `realloc`'s contract guarantees the new size, with the old alignment,
        // is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy::applies(layout) && !lazy::applies(new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Into, out of or within the lazy range: move the bytes.
        // SAFETY: `new_layout` is valid (above) and non-zero-sized (it is at least as
        // large as one of two layouts, one of which is huge or the old block).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
