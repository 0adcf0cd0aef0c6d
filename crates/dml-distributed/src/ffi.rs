//! The C surface of src/shim.cpp. Every function returns null on success or a `malloc`'d
//! message that [`take_error`] turns into a `String` and frees.

use std::ffi::{CStr, c_char, c_int, c_void};

#[repr(C)]
pub struct Store {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Pg {
    _private: [u8; 0],
}

/// `at::Tensor*`, as tch hands it out.
pub type TensorPtr = *mut c_void;

unsafe extern "C" {
    pub fn dml_dist_free(p: *mut c_void);
    pub fn dml_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
    ) -> *mut c_char;
    pub fn dml_store_file(path: *const c_char, world: c_int, out: *mut *mut Store) -> *mut c_char;
    pub fn dml_store_prefixed(
        base: *mut Store,
        prefix: *const c_char,
        out: *mut *mut Store,
    ) -> *mut c_char;
    pub fn dml_store_free(s: *mut Store);
    pub fn dml_store_set(
        s: *mut Store,
        key: *const c_char,
        data: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn dml_store_try_get(
        s: *mut Store,
        key: *const c_char,
        found: *mut c_int,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    pub fn dml_pg_gloo(
        s: *mut Store,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        host: *const c_char,
        by_interface: c_int,
        threads: c_int,
        out: *mut *mut Pg,
    ) -> *mut c_char;
    /// Only in a build against the CUDA LibTorch (build.rs sets `dml_nccl`).
    #[cfg(dml_nccl)]
    pub fn dml_pg_nccl(
        s: *mut Store,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        device_index: c_int,
        out: *mut *mut Pg,
    ) -> *mut c_char;
    pub fn dml_pg_free(p: *mut Pg);
    pub fn dml_pg_allreduce_sum(p: *mut Pg, tensors: *mut TensorPtr, n: usize) -> *mut c_char;
    pub fn dml_pg_allgather(p: *mut Pg, input: TensorPtr, outputs: *mut TensorPtr) -> *mut c_char;
    pub fn dml_pg_broadcast(
        p: *mut Pg,
        tensors: *mut TensorPtr,
        n: usize,
        root: c_int,
    ) -> *mut c_char;
    pub fn dml_pg_barrier(p: *mut Pg) -> *mut c_char;
}

/// `Err(message)` when `err` is non-null (and frees it).
///
/// # Safety
/// `err` is null or a pointer returned by one of the shim's functions, not yet freed.
pub unsafe fn take_error(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns NUL-terminated strings from malloc.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .trim()
        .to_owned();
    // SAFETY: allocated by the shim's malloc, freed once here.
    unsafe { dml_dist_free(err.cast()) };
    Err(message)
}
