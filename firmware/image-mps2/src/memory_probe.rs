//! Memory measurements on the emulated core: peak stack by stack painting
//! and peak heap by an allocator that keeps its high-water mark.
//!
//! Stack: cortex-m-rt puts the stack at the top of RAM growing down to
//! `_stack_end` (the end of the statics, heap array included). [`paint`]
//! fills everything below the caller's frame with [`PAINT`];
//! [`stack_peak`] finds the lowest word that no longer holds it. The
//! result is exact up to a word, except that a frame which reserved stack
//! without writing it is not seen (Rust writes what it reserves, in
//! practice).
//!
//! Heap: [`PeakHeap`] wraps the image's `LlffHeap` and records the highest
//! `used()` after every allocation (bytes handed out, allocator padding
//! included, free-list fragmentation not).
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use embedded_alloc::LlffHeap;

/// The paint pattern.
pub const PAINT: u32 = 0xC0DE_57AC;

unsafe extern "C" {
    static mut _stack_end: u32;
    static mut _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    // SAFETY: taking the addresses of linker symbols, not reading them.
    unsafe {
        (
            &raw const _stack_end as usize,
            &raw const _stack_start as usize,
        )
    }
}

/// Bytes of stack the region holds (top of RAM down to the statics).
pub fn stack_size() -> usize {
    let (end, start) = bounds();
    start - end
}

/// Paints the unused stack below the current frame (minus a margin for
/// this function's own frame).
#[inline(never)]
pub fn paint() {
    let (end, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = end;
    while p + 64 < sp {
        // SAFETY: [end, sp - 64) is stack memory below every live frame:
        // nothing reads it until a deeper call writes it first.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Deepest stack use so far, bytes from the top of RAM.
pub fn stack_peak() -> usize {
    let (end, start) = bounds();
    let mut p = end;
    // SAFETY: reads words of the stack region below the live frames'
    // lowest point or inside them; both are plain RAM.
    while p < start && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    start - p
}

/// `LlffHeap` with a high-water mark.
pub struct PeakHeap {
    heap: LlffHeap,
    peak: AtomicUsize,
    failed: AtomicUsize,
}

impl PeakHeap {
    /// An empty heap (call [`PeakHeap::init`] before any allocation).
    pub const fn empty() -> Self {
        Self {
            heap: LlffHeap::empty(),
            peak: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Gives the heap its memory.
    ///
    /// # Safety
    /// As `LlffHeap::init`: once, before any allocation, with memory used
    /// by nothing else.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.init(start, size) }
    }

    /// Bytes allocated now.
    pub fn used(&self) -> usize {
        self.heap.used()
    }

    /// Most bytes ever allocated at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Allocations that failed (out of memory).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards to LlffHeap, which is a correct GlobalAlloc; the
// counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.heap.alloc(layout) };
        if p.is_null() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
