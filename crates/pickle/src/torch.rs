//! PyTorch's object vocabulary on top of the safe pickle VM: which globals a
//! checkpoint may name (the equivalent of `torch.load(weights_only=True)`'s
//! allow-list), and how `_rebuild_tensor_v2` and friends become tensor
//! descriptions. Nothing here executes anything: calls are interpreted.

use weightkit_core::DType;

use crate::error::{Error, Result};
use crate::vm::{Obj, ObjId, Unpickled};

/// Globals a checkpoint may reference. Anything else is rejected by the VM
/// before it is even put on the stack.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.storage", "UntypedStorage"),
    ("torch", "UntypedStorage"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("torch", "float32"),
    ("torch", "float"),
    ("torch", "float64"),
    ("torch", "double"),
    ("torch", "float16"),
    ("torch", "half"),
    ("torch", "bfloat16"),
    ("torch", "int64"),
    ("torch", "long"),
    ("torch", "int32"),
    ("torch", "int"),
    ("torch", "int16"),
    ("torch", "short"),
    ("torch", "int8"),
    ("torch", "uint8"),
    ("torch", "uint16"),
    ("torch", "uint32"),
    ("torch", "uint64"),
    ("torch", "bool"),
    ("torch", "float8_e4m3fn"),
    ("torch", "float8_e5m2"),
    ("torch", "float8_e4m3fnuz"),
    ("torch", "float8_e5m2fnuz"),
    ("torch", "float8_e8m0fnu"),
    ("torch", "complex64"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
];

/// Globals whose call with no arguments is an empty dictionary.
pub const DICT_CLASSES: &[(&str, &str)] = &[("collections", "OrderedDict")];

/// Whether a checkpoint may name `module.name`.
pub fn is_allowed(module: &str, name: &str) -> bool {
    ALLOWED_GLOBALS
        .iter()
        .any(|&(m, n)| m == module && n == name)
}

/// The dtype of a legacy typed storage class (`torch.HalfStorage`).
pub fn storage_dtype(module: &str, name: &str) -> Option<DType> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// The legacy typed storage class name for a dtype (what `torch.save`
/// writes in a persistent id), if there is one.
pub fn storage_class(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
        _ => return None,
    })
}

/// The dtype a `torch.<name>` dtype global denotes.
pub fn dtype_global(module: &str, name: &str) -> Option<DType> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "float32" | "float" => DType::F32,
        "float64" | "double" => DType::F64,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "uint64" => DType::U64,
        "bool" => DType::Bool,
        "float8_e4m3fn" => DType::F8_E4M3,
        "float8_e5m2" => DType::F8_E5M2,
        "float8_e4m3fnuz" => DType::F8_E4M3FNUZ,
        "float8_e5m2fnuz" => DType::F8_E5M2FNUZ,
        "float8_e8m0fnu" => DType::F8_E8M0,
        "complex64" => DType::C64,
        _ => return None,
    })
}

/// Where a tensor's bytes are: a storage and a strided view into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// Storage key (zip: `data/<key>`; legacy: the storage's root key).
    pub storage_key: String,
    /// Storage element type (U8 for untyped storages).
    pub storage_dtype: DType,
    /// Storage length in elements of `storage_dtype`.
    pub storage_numel: u64,
    /// Legacy storage views: offset (in elements) of the view in its root.
    pub storage_view_offset: u64,
    /// The tensor's dtype.
    pub dtype: DType,
    /// Offset of the first element, in elements of `dtype`.
    pub offset: u64,
    /// Sizes, outermost first.
    pub size: Vec<usize>,
    /// Strides in elements, outermost first.
    pub stride: Vec<usize>,
    /// Whether the tensor required grad (recorded, not used).
    pub requires_grad: bool,
}

impl TensorRef {
    /// Whether the view is row-major contiguous (any offset).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&s, &st) in self.size.iter().zip(&self.stride).rev() {
            if s != 1 && st != expected {
                return false;
            }
            expected = expected.saturating_mul(s);
        }
        true
    }
}

/// Reads the persistent id of a storage: `('storage', storage_type, key,
/// location, numel)`, plus a sixth element (view metadata) in the legacy
/// format.
fn storage_pid(u: &Unpickled, pid: ObjId, what: &str) -> Result<(String, DType, u64, u64)> {
    let bad = |msg: &str| Error::Structure(format!("{what}: persistent id {msg}"));
    let Some(Obj::Tuple(items)) = u.get(pid) else {
        return Err(bad("is not a tuple"));
    };
    if items.len() != 5 && items.len() != 6 {
        return Err(bad("does not have 5 or 6 fields"));
    }
    if str_at(u, items[0]) != Some("storage") {
        return Err(bad("is not a storage reference"));
    }
    let (module, name) = global_at(u, items[1]).ok_or_else(|| bad("has no storage type"))?;
    let dtype = if name == "UntypedStorage" {
        DType::U8
    } else {
        storage_dtype(module, name).ok_or_else(|| bad("names an unknown storage type"))?
    };
    let key = str_at(u, items[2])
        .ok_or_else(|| bad("key is not a string"))?
        .to_owned();
    if key.is_empty() || key.contains(['/', '\\', '\0']) || key.contains("..") {
        return Err(Error::Structure(format!(
            "{what}: storage key {key:?} is not a plain name"
        )));
    }
    let numel = int_at(u, items[4])
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad("numel is not a non-negative int"))?;
    // Legacy views: (view_key, offset, view_size).
    let mut view_offset = 0;
    if let Some(&vm) = items.get(5) {
        match u.get(vm) {
            Some(Obj::None) | None => {}
            Some(Obj::Tuple(v)) if v.len() == 3 => {
                view_offset = int_at(u, v[1])
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| bad("view offset is not an int"))?;
            }
            Some(_) => return Err(bad("view metadata is malformed")),
        }
    }
    Ok((key, dtype, numel, view_offset))
}

fn str_at(u: &Unpickled, id: ObjId) -> Option<&str> {
    match u.get(id)? {
        Obj::Str(s) => Some(s),
        _ => None,
    }
}

fn int_at(u: &Unpickled, id: ObjId) -> Option<i64> {
    match u.get(id)? {
        Obj::Int(i) => Some(*i),
        Obj::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn global_at(u: &Unpickled, id: ObjId) -> Option<(&str, &str)> {
    match u.get(id)? {
        Obj::Global { module, name } => Some((module, name)),
        _ => None,
    }
}

fn usize_tuple(u: &Unpickled, id: ObjId, what: &str) -> Result<Vec<usize>> {
    usize_tuple_at(u, id, what, 0)
}

fn usize_tuple_at(u: &Unpickled, id: ObjId, what: &str, depth: usize) -> Result<Vec<usize>> {
    if depth > 4 {
        return Err(Error::Structure(format!(
            "{what}: torch.Size nested too deeply"
        )));
    }
    let items = match u.get(id) {
        Some(Obj::Tuple(items)) | Some(Obj::List(items)) => items,
        // torch.Size((..)) appears as a call of torch.Size on a tuple.
        Some(Obj::Call { func, args, .. }) if global_at(u, *func) == Some(("torch", "Size")) => {
            let Some(Obj::Tuple(a)) = u.get(*args) else {
                return Err(Error::Structure(format!(
                    "{what}: torch.Size without arguments"
                )));
            };
            let Some(&inner) = a.first() else {
                return Ok(Vec::new());
            };
            return usize_tuple_at(u, inner, what, depth + 1);
        }
        _ => {
            return Err(Error::Structure(format!(
                "{what}: expected a tuple of ints"
            )));
        }
    };
    items
        .iter()
        .map(|&i| {
            int_at(u, i)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Error::Structure(format!("{what}: expected non-negative ints")))
        })
        .collect()
}

/// Interprets `id` as a tensor, if it is one: `_rebuild_tensor_v2`,
/// `_rebuild_tensor_v3`, `_rebuild_parameter(_with_state)` or
/// `_rebuild_from_type_v2` wrapping one of those. `Ok(None)` if it is some
/// other object (an int, a string, a nested dict ...).
pub fn tensor_ref(u: &Unpickled, id: ObjId, name: &str) -> Result<Option<TensorRef>> {
    let Some(Obj::Call { func, args, .. }) = u.get(id) else {
        return Ok(None);
    };
    let Some((module, fname)) = global_at(u, *func) else {
        return Ok(None);
    };
    let Some(Obj::Tuple(a)) = u.get(*args) else {
        return Err(Error::Structure(format!(
            "`{name}`: call arguments are not a tuple"
        )));
    };
    interpret_call(u, module, fname, a, name, 0)
}

fn interpret_call(
    u: &Unpickled,
    module: &str,
    fname: &str,
    a: &[ObjId],
    name: &str,
    depth: usize,
) -> Result<Option<TensorRef>> {
    if depth > 8 {
        return Err(Error::Structure(format!(
            "`{name}`: tensor wrappers nested too deeply"
        )));
    }
    let arg = |i: usize| {
        a.get(i).copied().ok_or_else(|| {
            Error::Structure(format!("`{name}`: {module}.{fname} needs argument {i}"))
        })
    };
    match (module, fname) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor_v3") => {
            let Some(Obj::PersistentId(pid)) = u.get(arg(0)?) else {
                return Err(Error::Structure(format!(
                    "`{name}`: storage is not a persistent id"
                )));
            };
            let (storage_key, storage_dtype, storage_numel, storage_view_offset) =
                storage_pid(u, *pid, name)?;
            let offset = int_at(u, arg(1)?)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    Error::Structure(format!("`{name}`: storage offset is not an int"))
                })?;
            let size = usize_tuple(u, arg(2)?, name)?;
            let stride = usize_tuple(u, arg(3)?, name)?;
            if size.len() != stride.len() {
                return Err(Error::Structure(format!(
                    "`{name}`: {} sizes but {} strides",
                    size.len(),
                    stride.len()
                )));
            }
            let requires_grad = matches!(a.get(4).and_then(|&i| u.get(i)), Some(Obj::Bool(true)));
            let dtype = if fname == "_rebuild_tensor_v3" {
                let (m, n) = global_at(u, arg(6)?).ok_or_else(|| {
                    Error::Structure(format!("`{name}`: dtype is not a torch dtype"))
                })?;
                dtype_global(m, n).ok_or_else(|| {
                    Error::Structure(format!("`{name}`: unsupported dtype torch.{n}"))
                })?
            } else {
                storage_dtype
            };
            Ok(Some(TensorRef {
                storage_key,
                storage_dtype,
                storage_numel,
                storage_view_offset,
                dtype,
                offset,
                size,
                stride,
                requires_grad,
            }))
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => {
            let inner = arg(0)?;
            let Some(Obj::Call { func, args, .. }) = u.get(inner) else {
                return Ok(None);
            };
            let Some((m, n)) = global_at(u, *func) else {
                return Ok(None);
            };
            let Some(Obj::Tuple(ia)) = u.get(*args) else {
                return Err(Error::Structure(format!(
                    "`{name}`: call arguments are not a tuple"
                )));
            };
            interpret_call(u, m, n, ia, name, depth + 1)
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            // (func, new_type, args, state): the tensor is func(*args).
            let Some((m, n)) = global_at(u, arg(0)?) else {
                return Err(Error::Structure(format!(
                    "`{name}`: _rebuild_from_type_v2 needs a function"
                )));
            };
            let Some(Obj::Tuple(ia)) = u.get(arg(2)?) else {
                return Err(Error::Structure(format!(
                    "`{name}`: _rebuild_from_type_v2 args are not a tuple"
                )));
            };
            interpret_call(u, m, n, ia, name, depth + 1)
        }
        _ => Ok(None),
    }
}
