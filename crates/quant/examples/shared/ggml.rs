//! llama.cpp's ggml shared libraries loaded with `dlopen`, shared by the
//! examples that time weightkit against them (`ggml_inproc`, `ggml_matvec`),
//! included with `#[path]`. The structs mirror ggml.h / ggml-cpu.h at the
//! commit `cargo xtask quant-perf` builds (0c1e570).

#![allow(dead_code)] // each example uses part of it

use std::ffi::{CString, c_char, c_int, c_void};

/// ggml's `struct ggml_type_traits` (ggml.h).
#[repr(C)]
pub(crate) struct TypeTraits {
    pub(crate) type_name: *const c_char,
    pub(crate) blck_size: i64,
    pub(crate) blck_size_interleave: i64,
    pub(crate) type_size: usize,
    pub(crate) is_quantized: bool,
    pub(crate) to_float: Option<unsafe extern "C" fn(*const u8, *mut f32, i64)>,
    pub(crate) from_float_ref: Option<unsafe extern "C" fn(*const f32, *mut u8, i64)>,
}

/// ggml's `ggml_vec_dot_t`: `(n, s, bs, x, bx, y, by, nrc)`.
pub(crate) type VecDot =
    unsafe extern "C" fn(i32, *mut f32, usize, *const u8, usize, *const u8, usize, i32);

/// ggml-cpu's `struct ggml_type_traits_cpu` (ggml-cpu.h).
#[repr(C)]
pub(crate) struct CpuTraits {
    pub(crate) from_float: Option<unsafe extern "C" fn(*const f32, *mut u8, i64)>,
    pub(crate) vec_dot: Option<VecDot>,
    pub(crate) vec_dot_type: i32,
    pub(crate) nrows: i64,
}

/// `struct ggml_init_params` (ggml.h).
#[repr(C)]
pub(crate) struct InitParams {
    pub(crate) mem_size: usize,
    pub(crate) mem_buffer: *mut c_void,
    pub(crate) no_alloc: bool,
}

/// `struct ggml_cplan` (ggml-cpu.h).
#[repr(C)]
pub(crate) struct Cplan {
    pub(crate) work_size: usize,
    pub(crate) work_data: *mut u8,
    pub(crate) n_threads: c_int,
    pub(crate) threadpool: *mut c_void,
    pub(crate) abort_callback: *mut c_void,
    pub(crate) abort_callback_data: *mut c_void,
    pub(crate) use_ref: bool,
}

/// Room for `struct ggml_threadpool_params` (ggml.h: 512 `bool`s of CPU
/// mask, then `n_threads`, `prio`, `poll` (at byte 520), `strict_cpu`,
/// `paused`: 528 bytes), filled by `ggml_threadpool_params_init`.
#[repr(C, align(8))]
pub(crate) struct ThreadpoolParams(pub(crate) [u8; 1024]);

/// Byte offset of `poll` in `struct ggml_threadpool_params`.
pub(crate) const POLL_OFFSET: usize = 520;

/// The ggml entry points the examples call.
pub(crate) struct Ggml {
    pub(crate) traits: unsafe extern "C" fn(i32) -> *const TypeTraits,
    pub(crate) cpu_traits: unsafe extern "C" fn(i32) -> *const CpuTraits,
    pub(crate) init: unsafe extern "C" fn(InitParams) -> *mut c_void,
    pub(crate) free: unsafe extern "C" fn(*mut c_void),
    pub(crate) new_tensor_2d: unsafe extern "C" fn(*mut c_void, i32, i64, i64) -> *mut c_void,
    pub(crate) get_data: unsafe extern "C" fn(*const c_void) -> *mut c_void,
    pub(crate) mul_mat: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> *mut c_void,
    pub(crate) new_graph: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    pub(crate) build_forward_expand: unsafe extern "C" fn(*mut c_void, *mut c_void),
    pub(crate) threadpool_params_init: unsafe extern "C" fn(*mut ThreadpoolParams, c_int),
    pub(crate) threadpool_new: unsafe extern "C" fn(*mut ThreadpoolParams) -> *mut c_void,
    pub(crate) threadpool_free: unsafe extern "C" fn(*mut c_void),
    pub(crate) graph_plan: unsafe extern "C" fn(*const c_void, c_int, *mut c_void) -> Cplan,
    pub(crate) graph_compute: unsafe extern "C" fn(*mut c_void, *mut Cplan) -> c_int,
}

unsafe extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;
const RTLD_GLOBAL: c_int = 0x100;

fn open(path: &str) -> Result<*mut c_void, String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a NUL-terminated path; dlopen has no other
    // preconditions, and a null result is handled below.
    let h = unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a NUL-terminated message (or null)
        // describing the failed dlopen above.
        let msg = unsafe { dlerror() };
        let msg = if msg.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next dl*
            // call on this thread.
            unsafe { std::ffi::CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("dlopen {path}: {msg}"));
    }
    Ok(h)
}

fn sym(h: *mut c_void, name: &str) -> Result<*mut c_void, String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: `h` is a live handle from dlopen and `c` NUL-terminated.
    let p = unsafe { dlsym(h, c.as_ptr()) };
    if p.is_null() {
        return Err(format!("{name} not found"));
    }
    Ok(p)
}

/// `sym` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be an `extern "C"` function pointer type matching the symbol's
/// C declaration.
unsafe fn func<F: Copy>(h: *mut c_void, name: &str) -> Result<F, String> {
    let p = sym(h, name)?;
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `F` is a function pointer type (the caller's contract), as
    // wide as the non-null symbol address it is read from.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Loads `libggml-base.so` and `libggml-cpu.so` from `dir` and runs
/// `ggml_cpu_init` (its f16 tables).
pub(crate) fn load(dir: &str) -> Result<Ggml, String> {
    let base = open(&format!("{dir}/libggml-base.so"))?;
    let cpu = open(&format!("{dir}/libggml-cpu.so"))?;
    // SAFETY: each type below is the symbol's declaration in ggml.h or
    // ggml-cpu.h at the pinned commit (structs mirrored above; tensors,
    // contexts, graphs and threadpools as opaque pointers, enums as i32).
    unsafe {
        let init: unsafe extern "C" fn() = func(cpu, "ggml_cpu_init")?;
        init();
        Ok(Ggml {
            traits: func(base, "ggml_get_type_traits")?,
            cpu_traits: func(cpu, "ggml_get_type_traits_cpu")?,
            init: func(base, "ggml_init")?,
            free: func(base, "ggml_free")?,
            new_tensor_2d: func(base, "ggml_new_tensor_2d")?,
            get_data: func(base, "ggml_get_data")?,
            mul_mat: func(base, "ggml_mul_mat")?,
            new_graph: func(base, "ggml_new_graph")?,
            build_forward_expand: func(base, "ggml_build_forward_expand")?,
            threadpool_params_init: func(base, "ggml_threadpool_params_init")?,
            threadpool_new: func(cpu, "ggml_threadpool_new")?,
            threadpool_free: func(cpu, "ggml_threadpool_free")?,
            graph_plan: func(cpu, "ggml_graph_plan")?,
            graph_compute: func(cpu, "ggml_graph_compute")?,
        })
    }
}
