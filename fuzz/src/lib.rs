/*!
What every fuzz target links: an allocator that aborts on any single allocation over
`FUZZ_MAX_ALLOC_MB` (default 64) MiB. libFuzzer's own `-malloc_limit_mb` needs a sanitizer
runtime, which stable Rust does not have; this finds the same bug, an allocation sized by a
length field in the input, without one.
*/

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;

struct Capped;

fn limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("FUZZ_MAX_ALLOC_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(64)
            << 20
    })
}

fn check(size: usize) {
    // Reading the limit allocates the first time (the environment); anything that small passes.
    if size > 1 << 20 && size > limit() {
        let msg = b"fuzz: an allocation over FUZZ_MAX_ALLOC_MB: a length field sized it?\n";
        // SAFETY: writing a static buffer to stderr, then aborting.
        unsafe {
            libc_write(2, msg.as_ptr(), msg.len());
        }
        std::process::abort();
    }
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;
