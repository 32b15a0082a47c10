//! The guarded pool: SLOTS slots of SLOT_PAGES OS pages each, with an
//! inaccessible guard page before every slot and after the last, reserved
//! once from the kernel (never from malloc) when the first guarded object
//! is asked for; and the slots' metadata, mapped beside it.
//!
//! ```text
//!   base: [G][slot 0: SLOT_PAGES pages][G][slot 1]...[G][slot SLOTS-1][G]
//!   slot i starts at base + page + i * stride, stride = (SLOT_PAGES + 1) * page
//! ```
//! A live object's pages are readable and writable; everything else in the
//! pool (guard pages, the rest of each slot, every freed slot) is PROT_NONE.
//! Objects sit alternately at the end of their slot (against the guard page
//! after it: overflows fault) and at its start (right after the guard page
//! before it: underflows fault). Freed slots wait in a FIFO quarantine and
//! are reused oldest first once QUARANTINE of them wait (until then a
//! never-used slot is taken, while there is one): a use after free faults
//! until at least QUARANTINE more guarded objects have been freed, and a
//! process that guards rarely touches the metadata of only about
//! QUARANTINE + live slots (each slot's stacks are half a KiB).
//!
//! Owns: the reservation, the slots and the quarantine, under one leaf lock
//! (no other lock is taken while holding it). Slot fields are written under
//! that lock with `state` stored last, so the fault handler may read them
//! without it. Must never: allocate through malloc, or hand out a slot whose
//! pages could not be opened.

use crate::sys::lock::{Lock, Locked};
use crate::sys::{self, unwind};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// Slots in the pool: at most this many guarded objects live at once (more
/// requests are served unguarded), and the quarantine is what is not live.
pub const SLOTS: usize = 512;
/// OS pages per slot: the largest guarded object.
pub const SLOT_PAGES: usize = 4;
/// Freed slots kept inaccessible before the oldest is reused.
pub const QUARANTINE: usize = 64;
/// Frames kept per stack.
pub const DEPTH: usize = 32;

pub const EMPTY: u8 = 0;
pub const LIVE: u8 = 1;
pub const FREED: u8 = 2;

/// A captured stack and the thread it was taken on.
#[derive(Clone, Copy)]
pub struct Trace {
    pub tid: i64,
    /// frames[..depth] are return addresses, innermost first.
    pub depth: usize,
    pub frames: [usize; DEPTH],
}

impl Trace {
    pub const EMPTY: Trace = Trace {
        tid: 0,
        depth: 0,
        frames: [0; DEPTH],
    };

    /// The calling thread's stack (memx's own frames dropped).
    pub fn capture() -> Trace {
        let mut t = Trace {
            tid: sys::gettid(),
            depth: 0,
            frames: [0; DEPTH],
        };
        t.depth = unwind::backtrace(&mut t.frames);
        t
    }

    pub fn frames(&self) -> &[usize] {
        &self.frames[..self.depth.min(DEPTH)]
    }
}

pub struct Slot {
    /// EMPTY, LIVE or FREED; stored last (Release) by the pool.
    pub state: AtomicU8,
    /// The object: [addr, addr + size) inside this slot's pages.
    pub addr: usize,
    pub size: usize,
    pub alloc: Trace,
    /// Meaningful when state == FREED.
    pub free: Trace,
}

/// Where the pool is, once reserved (read without a lock by the handler).
#[derive(Clone, Copy)]
pub struct Layout {
    pub base: usize,
    pub page: usize,
    pub slots: *const Slot,
}

impl Layout {
    pub fn stride(&self) -> usize {
        (SLOT_PAGES + 1) * self.page
    }

    pub fn bytes(&self) -> usize {
        SLOTS * self.stride() + self.page
    }

    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.bytes()
    }

    /// First byte of slot `i`.
    pub fn slot_start(&self, i: usize) -> usize {
        self.base + self.page + i * self.stride()
    }

    pub fn slot_bytes(&self) -> usize {
        SLOT_PAGES * self.page
    }

    pub fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < SLOTS);
        // SAFETY: `slots` is the pool's metadata array of SLOTS entries,
        // mapped for the life of the process.
        unsafe { &*self.slots.add(i) }
    }

    /// (slot index, in its guard page before it): the slot whose pages or
    /// leading guard page hold `addr` (index SLOTS: the final guard page).
    pub fn position(&self, addr: usize) -> (usize, bool) {
        let off = addr - self.base;
        (off / self.stride(), off % self.stride() < self.page)
    }
}

static BASE: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(0);
static SLOT_META: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());

/// The pool's layout, once it is reserved.
pub fn layout() -> Option<Layout> {
    let slots = SLOT_META.load(Ordering::Acquire);
    if slots.is_null() {
        return None;
    }
    Some(Layout {
        base: BASE.load(Ordering::Relaxed),
        page: PAGE.load(Ordering::Relaxed),
        slots,
    })
}

/// Whether `p` is inside the pool (one compare when it is not reserved).
#[inline]
pub fn owns(p: usize) -> bool {
    p.wrapping_sub(BASE.load(Ordering::Relaxed)) < pool_bytes()
}

fn pool_bytes() -> usize {
    // 0 until reserved: nothing is inside.
    match PAGE.load(Ordering::Relaxed) {
        0 => 0,
        page => SLOTS * (SLOT_PAGES + 1) * page + page,
    }
}

struct Pool {
    /// Reservation tried and failed: stay off.
    failed: bool,
    /// Freed slots, oldest first: queue[(head + k) % SLOTS], k < len.
    queue: *mut u16,
    head: usize,
    len: usize,
    /// Slots never used yet: fresh..SLOTS.
    fresh: usize,
    /// Where the next object goes: at the end of its slot (false) or its
    /// start (true).
    at_start: bool,
}

// SAFETY: the raw pointer is the pool's own metadata, used under the lock.
unsafe impl Send for Pool {}

static POOL: Locked<Pool> = Locked::new(Pool {
    failed: false,
    queue: core::ptr::null_mut(),
    head: 0,
    len: 0,
    fresh: 0,
    at_start: false,
});

/// The pool's lock, for the fork handler (a leaf: last in the order).
pub fn lock() -> &'static Lock {
    POOL.raw()
}

impl Pool {
    /// Reserves the pool and maps its metadata; false on failure.
    fn reserve(&mut self, on_ready: fn()) -> bool {
        let page = sys::os_page_size();
        let bytes = SLOTS * (SLOT_PAGES + 1) * page + page;
        let base = sys::reserve(bytes);
        let meta_bytes = SLOTS * core::mem::size_of::<Slot>() + SLOTS * 2;
        let meta = sys::map(meta_bytes.next_multiple_of(page));
        if base.is_null() || meta.is_null() {
            self.failed = true;
            return false;
        }
        // SAFETY: `meta` is fresh zeroed memory of meta_bytes: SLOTS slots
        // (all-zero is EMPTY with empty traces), then the queue.
        self.queue = unsafe { meta.add(SLOTS * core::mem::size_of::<Slot>()) } as *mut u16;
        BASE.store(base as usize, Ordering::Relaxed);
        PAGE.store(page, Ordering::Relaxed);
        SLOT_META.store(meta as *mut Slot, Ordering::Release);
        on_ready();
        true
    }

    /// A slot for a new object: the oldest freed one once the quarantine
    /// is full (or no fresh slot is left), else a fresh one.
    fn pop(&mut self) -> Option<usize> {
        if self.len < QUARANTINE && self.fresh < SLOTS {
            self.fresh += 1;
            return Some(self.fresh - 1);
        }
        if self.len == 0 {
            return None;
        }
        // SAFETY: head < SLOTS, inside the queue.
        let i = unsafe { *self.queue.add(self.head) } as usize;
        self.head = (self.head + 1) % SLOTS;
        self.len -= 1;
        Some(i)
    }

    /// Puts back a slot just popped (its pages could not be opened).
    fn push_front(&mut self, i: usize) {
        if i + 1 == self.fresh && self.len < QUARANTINE {
            self.fresh -= 1;
            return;
        }
        self.head = (self.head + SLOTS - 1) % SLOTS;
        // SAFETY: head < SLOTS, inside the queue.
        unsafe { *self.queue.add(self.head) = i as u16 };
        self.len += 1;
    }

    fn push(&mut self, i: usize) {
        debug_assert!(self.len < SLOTS);
        // SAFETY: the index is < SLOTS, inside the queue.
        unsafe { *self.queue.add((self.head + self.len) % SLOTS) = i as u16 };
        self.len += 1;
    }
}

/// A guarded object of `size` bytes with the allocation stack `alloc`, or
/// null when it cannot be guarded (too big, an alignment above the OS page,
/// every slot live, or no memory); the caller then allocates normally.
/// `on_ready` runs once, when the pool has just been reserved.
pub fn alloc(size: usize, alloc: &Trace, on_ready: fn()) -> *mut u8 {
    let page = sys::os_page_size();
    if size > SLOT_PAGES * page {
        return core::ptr::null_mut();
    }
    // malloc's alignment, and more for sizes that are multiples of more
    // (aligned requests arrive as the size of a class whose objects are
    // aligned because its size is a multiple of the alignment).
    let align = 1usize << size.max(1).next_multiple_of(16).trailing_zeros();
    if align > page {
        return core::ptr::null_mut();
    }
    let mut pool = POOL.lock();
    if SLOT_META.load(Ordering::Relaxed).is_null() && (pool.failed || !pool.reserve(on_ready)) {
        return core::ptr::null_mut();
    }
    let Some(i) = pool.pop() else {
        return core::ptr::null_mut();
    };
    let Some(lay) = layout() else {
        return core::ptr::null_mut();
    };
    let start = lay.slot_start(i);
    let end = start + lay.slot_bytes();
    pool.at_start = !pool.at_start;
    let addr = if pool.at_start {
        start
    } else {
        (end - size) & !(align - 1)
    };
    if size > 0 {
        let first = addr & !(page - 1);
        let last = (addr + size).next_multiple_of(page);
        if !sys::open_pages(first as *mut u8, last - first) {
            pool.push_front(i);
            return core::ptr::null_mut();
        }
    }
    let slot = lay.slot(i) as *const Slot as *mut Slot;
    // SAFETY: the slot was on the free queue, so only this thread (holding
    // the lock) writes it; the handler reads `state` first.
    unsafe {
        (*slot).addr = addr;
        (*slot).size = size;
        (*slot).alloc = *alloc;
        (*slot).state.store(LIVE, Ordering::Release);
    }
    addr as *mut u8
}

/// What `free` found.
pub enum Freed {
    Ok,
    /// The object was freed before: its slot.
    Twice(usize),
    /// Not the start of a live guarded object.
    NotAnObject,
}

/// Frees the guarded object at `p` (inside the pool) into the quarantine.
pub fn free(p: usize, free: &Trace) -> Freed {
    let Some(lay) = layout() else {
        return Freed::NotAnObject;
    };
    let (i, in_guard) = lay.position(p);
    if in_guard || i >= SLOTS {
        return Freed::NotAnObject;
    }
    let mut pool = POOL.lock();
    let slot = lay.slot(i);
    let state = slot.state.load(Ordering::Relaxed);
    if slot.addr != p || state == EMPTY {
        return Freed::NotAnObject;
    }
    if state == FREED {
        return Freed::Twice(i);
    }
    // Whole slot: one call drops the pages and closes them. If it fails
    // (out of mappings) the pages stay open: reusing the slot later is
    // still safe, only this use after free goes unseen.
    sys::close_pages(lay.slot_start(i) as *mut u8, lay.slot_bytes());
    let s = slot as *const Slot as *mut Slot;
    // SAFETY: a live slot whose owner gives it back, under the lock.
    unsafe {
        (*s).free = *free;
        (*s).state.store(FREED, Ordering::Release);
    }
    pool.push(i);
    Freed::Ok
}

/// The requested size of the live guarded object at `p`.
pub fn usable_size(p: usize) -> Option<usize> {
    let lay = layout()?;
    let (i, in_guard) = lay.position(p);
    if in_guard || i >= SLOTS {
        return None;
    }
    let slot = lay.slot(i);
    (slot.state.load(Ordering::Acquire) == LIVE && slot.addr == p).then_some(slot.size)
}
