//! Allocation of large output matrices.
//!
//! An n×n f32 distance matrix for n = 8192 is 256 MiB; with 4 KiB pages, writing it for the first
//! time costs 65,536 page faults, which on the development machine took about as long as the
//! GEMM itself (and, measured again on a 2-core AMD EPYC, about 120 ms of a 340 ms product). On
//! Linux we therefore ask for transparent huge pages on large buffers (`madvise(MADV_HUGEPAGE)`,
//! effective when THP is in `madvise` or `always` mode), as numpy does for its arrays; elsewhere,
//! or if the kernel refuses, this is an ordinary zeroed allocation.

use ndarray::Array2;

/// Buffers at least this large (bytes) are advised to use huge pages.
const HUGE_PAGE_THRESHOLD: usize = 4 << 20;

/// A zero-filled `rows × cols` matrix, backed by huge pages where the OS allows.
pub(crate) fn zeros(rows: usize, cols: usize) -> Array2<f32> {
    let len = rows.saturating_mul(cols);
    if len.saturating_mul(4) < HUGE_PAGE_THRESHOLD {
        return Array2::zeros((rows, cols));
    }
    // `vec![0.0; len]` allocates with `calloc`, which for a buffer this large maps fresh pages
    // that the kernel zeroes on first touch: no zero-filling pass of our own (the GEMM's first
    // write of each page is the touch, spread over the tiles' threads), and the advice below
    // lands before any page is touched.
    let mut v: Vec<f32> = vec![0.0; len];
    advise_huge_pages(v.as_mut_ptr().cast(), len * 4);
    Array2::from_shape_vec((rows, cols), v).unwrap_or_else(|_| Array2::zeros((rows, cols)))
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation `ptr..ptr + bytes` that the caller owns;
        // MADV_HUGEPAGE is only advice and changes no memory contents. Failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _bytes: usize) {}
