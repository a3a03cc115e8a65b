//! The heap: a fixed arena in `.bss`, managed by `linked_list_allocator`.

use linked_list_allocator::LockedHeap;

/// Heap size. The arena costs nothing until touched: `.bss` pages are fresh zeroed memory.
const HEAP_SIZE: usize = 256 * 1024;

static mut ARENA: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

#[cfg_attr(target_os = "none", global_allocator)]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the arena to the allocator. Called once, before `main`.
pub(crate) fn init() {
    let arena = core::ptr::addr_of_mut!(ARENA).cast::<u8>();
    // SAFETY: called once at start-up, before anything allocates; the arena is a static that
    // nothing else references, so the allocator owns it from here on.
    unsafe { ALLOCATOR.lock().init(arena, HEAP_SIZE) };
}
