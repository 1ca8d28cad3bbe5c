//! A pickle virtual machine that builds an object graph and never executes
//! anything.
//!
//! Python's `pickle.load` imports modules and calls whatever the stream names,
//! which makes a downloaded checkpoint as dangerous as a downloaded script.
//! This module reads the same opcodes (protocols 0 to 5) but only *describes*
//! what Python would have done: a global becomes [`Obj::Global`], a call
//! (`REDUCE`, `NEWOBJ`, `NEWOBJ_EX`) becomes [`Obj::Call`] naming the global and
//! its argument tuple, and a persistent id becomes [`Obj::PersistentId`]. The
//! caller (the torch layer) decides what those mean.
//!
//! Safety comes from three rules, the same as torch's
//! `torch/_weights_only_unpickler.py`:
//!
//! * **Allow-list of globals.** `GLOBAL` and `STACK_GLOBAL` consult the
//!   caller's [`Policy`]; anything else is an immediate
//!   [`PickleError::UnsafeGlobal`]. The modules in [`BLOCKED_MODULES`] are
//!   refused even if the policy allows them, as torch does.
//! * **Calls only on globals.** `REDUCE` and `NEWOBJ` need an allowed global as
//!   the callable, so the result of one call can never be called again
//!   (`getattr(...)(...)` gadgets); `BUILD` only attaches state to a dict or a
//!   call. `INST`, `OBJ`, the extension registry (`EXT1/2/4`) and out-of-band
//!   buffers (`NEXT_BUFFER`, `READONLY_BUFFER`) are refused.
//! * **Bounded work.** Every length is checked against the input and the
//!   [`Limits`] before anything is allocated; objects live in one arena and the
//!   memo stores ids, so `GET` shares instead of copying (no exponential memo
//!   bombs); the machine is a loop, never recursion on the input, and the
//!   finished graph's nesting depth is checked so that later recursive walks
//!   are bounded too.
//!
//! **Architecture Invariant:** for any input, [`unpickle`] returns `Ok` or a
//! [`PickleError`]; it never panics, never allocates more than a constant
//! factor of the input plus the limits, and never calls into anything the
//! caller did not pass.
//!
//! Differences from Python worth knowing:
//!
//! * Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) are
//!   decoded as latin-1 into [`Obj::Str`] (what `pickle.load(...,
//!   encoding="latin1")` does), so `'storage'` in a legacy checkpoint reads as
//!   the string `storage`.
//! * `BYTEARRAY8` produces [`Obj::Bytes`].
//! * The modules `__builtin__` and `copy_reg` that Python 2 (and Python 3 at
//!   protocols 0-2) write are renamed `builtins` and `copyreg` before the
//!   policy sees them, as Python 3's `fix_imports` does.
//! * Dict and set entries are kept in the order they were added, duplicates
//!   included: Python keeps the last value for a repeated key.
//! * A string with a lone surrogate (legal in Python, not in Rust) is
//!   [`PickleError::InvalidUtf8`].

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;

/// Index of an object in [`Unpickled`]'s arena.
pub type ObjId = usize;

/// Modules refused whatever the [`Policy`] says (torch's
/// `_blocklisted_modules`); their submodules (`os.path`) are refused too.
pub const BLOCKED_MODULES: &[&str] = &["os", "sys", "posix", "nt", "subprocess"];

/// One object of the graph. Containers hold [`ObjId`]s into the same arena,
/// so shared references and cycles are represented exactly as in Python.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Obj {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in an `i64`.
    Int(i64),
    /// An integer outside `i64`: minimal little-endian two's complement, as
    /// `LONG1`/`LONG4` store it (at most [`Limits::max_bigint_bytes`] bytes).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A `str` (and, decoded as latin-1, a Python 2 byte string).
    Str(String),
    /// `bytes` or `bytearray`.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<ObjId>),
    /// A list (mutable: `APPEND` on a memoized list shows through every
    /// reference).
    List(Vec<ObjId>),
    /// A dict, or the result of calling one of [`Policy::dict_classes`]
    /// (such as `collections.OrderedDict`) with no arguments.
    Dict {
        /// `(key, value)` pairs in insertion order, duplicates kept.
        items: Vec<(ObjId, ObjId)>,
        /// State set by `BUILD` (an `OrderedDict`'s `__dict__`, such as a
        /// `state_dict`'s `_metadata`).
        state: Option<ObjId>,
    },
    /// A set (items in insertion order).
    Set(Vec<ObjId>),
    /// A frozenset (items in insertion order).
    FrozenSet(Vec<ObjId>),
    /// A global the [`Policy`] allowed. Never anything else.
    Global {
        /// The module, after the Python 2 renames (`__builtin__` is `builtins`).
        module: String,
        /// The qualified name within the module.
        name: String,
    },
    /// What Python would have got by calling `func(*args)` (`REDUCE`) or
    /// `func.__new__(func, *args)` (`NEWOBJ`, `NEWOBJ_EX`).
    Call {
        /// The callable: always an [`Obj::Global`].
        func: ObjId,
        /// The arguments: always an [`Obj::Tuple`].
        args: ObjId,
        /// The state passed by `BUILD` (`__setstate__` argument), if any.
        state: Option<ObjId>,
    },
    /// What `persistent_load(pid)` would have returned; the caller interprets
    /// the id (for torch, a tuple `('storage', storage type, key, location,
    /// numel)`).
    PersistentId(ObjId),
}

impl Obj {
    /// A short name of the object's kind, as used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) | Obj::BigInt(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict { .. } => "dict",
            Obj::Set(_) => "set",
            Obj::FrozenSet(_) => "frozenset",
            Obj::Global { .. } => "global",
            Obj::Call { .. } => "call result",
            Obj::PersistentId(_) => "persistent id",
        }
    }

    /// The `index`th object this one refers to, in a fixed order (items;
    /// dict keys and values alternating, then the state; a call's function,
    /// arguments, state; a persistent id's id).
    fn child(&self, index: usize) -> Option<ObjId> {
        match self {
            Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) | Obj::FrozenSet(v) => v.get(index).copied(),
            Obj::Dict { items, state } => match items.get(index / 2) {
                Some(&(k, v)) => Some(if index.is_multiple_of(2) { k } else { v }),
                None if index == items.len().saturating_mul(2) => *state,
                None => None,
            },
            Obj::Call { func, args, state } => match index {
                0 => Some(*func),
                1 => Some(*args),
                2 => *state,
                _ => None,
            },
            Obj::PersistentId(pid) => (index == 0).then_some(*pid),
            _ => None,
        }
    }

    /// Whether the object counts as a level of nesting for
    /// [`Limits::max_depth`].
    fn is_container(&self) -> bool {
        matches!(
            self,
            Obj::Tuple(_)
                | Obj::List(_)
                | Obj::Dict { .. }
                | Obj::Set(_)
                | Obj::FrozenSet(_)
                | Obj::Call { .. }
                | Obj::PersistentId(_)
        )
    }
}

/// Resource limits; [`Limits::default`] suits any real checkpoint. Each is
/// checked before the memory it guards is allocated, except `max_depth`,
/// which is checked on the finished graph at `STOP` (where it also catches
/// nesting built top-down through the memo).
///
/// Build one with struct update syntax:
/// `Limits { max_depth: 100, ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memo entries (default 1 Mi).
    pub max_memo: usize,
    /// Stack entries plus open marks (default 1 Mi).
    pub max_stack: usize,
    /// Objects in the arena (default 10 Mi, about 500 MiB of graph).
    pub max_objects: usize,
    /// Bytes in one string, bytes object or text line (default 1 GiB); a
    /// length past the end of the input is [`PickleError::Truncated`] anyway.
    pub max_string_len: usize,
    /// Nesting depth of containers in the finished graph, counting the root
    /// (default 1000, Python's own recursion limit), measured by one
    /// depth-first walk that expands each object once and cuts cycles. With
    /// shared objects and cycles the longest chain can depend on the walk's
    /// order (fuzz/regressions/pickle_vm/depth_order_dependent.pkl), so a
    /// later walker that may expand an object more than once must keep its
    /// own depth limit, as the torch layer does.
    pub max_depth: usize,
    /// Bytes of one integer (default 1 KiB, about 2466 decimal digits).
    pub max_bigint_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memo: 1 << 20,
            max_stack: 1 << 20,
            max_objects: 10 << 20,
            max_string_len: 1 << 30,
            max_depth: 1000,
            max_bigint_bytes: 1024,
        }
    }
}

/// What the caller allows: which globals may appear, and which of them
/// construct dicts.
///
/// The machine knows nothing about torch; the torch layer passes its
/// allow-list here.
pub struct Policy<'a> {
    /// Whether the global `module.name` may be referenced (and so called by
    /// `REDUCE`/`NEWOBJ`). Consulted after the Python 2 renames; the modules
    /// in [`BLOCKED_MODULES`] are refused before it is asked.
    pub is_allowed: &'a dyn Fn(&str, &str) -> bool,
    /// Globals (`("collections", "OrderedDict")`) whose call with no
    /// arguments produces an empty [`Obj::Dict`] rather than an
    /// [`Obj::Call`], so that `SETITEMS` and `BUILD` can fill it. They must
    /// also be allowed by `is_allowed`.
    pub dict_classes: &'a [(&'a str, &'a str)],
}

fn deny_everything(_module: &str, _name: &str) -> bool {
    false
}

impl Policy<'static> {
    /// A policy that allows no global at all: plain data only.
    pub fn deny_all() -> Self {
        Policy {
            is_allowed: &deny_everything,
            dict_classes: &[],
        }
    }
}

impl<'a> Policy<'a> {
    /// A policy allowing the globals `is_allowed` accepts, with no dict
    /// classes.
    pub fn new(is_allowed: &'a dyn Fn(&str, &str) -> bool) -> Self {
        Policy {
            is_allowed,
            dict_classes: &[],
        }
    }

    /// Sets [`Policy::dict_classes`].
    pub fn with_dict_classes(mut self, dict_classes: &'a [(&'a str, &'a str)]) -> Self {
        self.dict_classes = dict_classes;
        self
    }

    /// Whether `module.name` may appear: not in [`BLOCKED_MODULES`] and
    /// accepted by [`Policy::is_allowed`].
    pub fn allows(&self, module: &str, name: &str) -> bool {
        let blocked = BLOCKED_MODULES.iter().any(|b| {
            module == *b
                || module
                    .strip_prefix(*b)
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        !blocked && (self.is_allowed)(module, name)
    }

    fn is_dict_class(&self, module: &str, name: &str) -> bool {
        self.dict_classes
            .iter()
            .any(|&(m, n)| m == module && n == name)
    }
}

impl fmt::Debug for Policy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("is_allowed", &"<fn>")
            .field("dict_classes", &self.dict_classes)
            .finish()
    }
}

/// Everything that can go wrong. Each variant carries `offset`, the byte
/// offset of the opcode at fault (of `STOP` for [`PickleError::TooDeep`], of
/// the end of input for [`PickleError::NoStop`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// A byte that is no pickle opcode.
    #[error("unknown opcode 0x{op:02x} at byte {offset}")]
    UnknownOpcode {
        /// Where.
        offset: usize,
        /// The byte.
        op: u8,
    },
    /// The input ends inside an opcode's argument.
    #[error("pickle truncated: {opcode} at byte {offset} runs past the end of the input")]
    Truncated {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
    },
    /// A global the policy does not allow (`os.system`, `builtins.eval`, ...).
    #[error("global `{module}.{name}` is not allowed ({opcode} at byte {offset})")]
    UnsafeGlobal {
        /// Where.
        offset: usize,
        /// `GLOBAL` or `STACK_GLOBAL`.
        opcode: &'static str,
        /// The module.
        module: String,
        /// The name.
        name: String,
    },
    /// An opcode that is refused outright: `INST` and `OBJ` (calls that
    /// bypass `REDUCE`), `EXT1/2/4` (the copyreg extension registry),
    /// `NEXT_BUFFER`/`READONLY_BUFFER` (out-of-band buffers).
    #[error("opcode {opcode} at byte {offset} is not allowed")]
    ForbiddenOpcode {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
    },
    /// `REDUCE` whose callable is not a global (the result of another call,
    /// a string, ...).
    #[error("REDUCE at byte {offset} calls a {kind}: only allowed globals can be called")]
    ReduceOnNonGlobal {
        /// Where.
        offset: usize,
        /// What was on the stack.
        kind: &'static str,
    },
    /// `NEWOBJ`/`NEWOBJ_EX` whose class is not a global.
    #[error("{opcode} at byte {offset} instantiates a {kind}: only allowed globals can be")]
    NewObjNotAllowed {
        /// Where.
        offset: usize,
        /// `NEWOBJ` or `NEWOBJ_EX`.
        opcode: &'static str,
        /// What was on the stack.
        kind: &'static str,
    },
    /// `BUILD` on something other than a dict or a call result.
    #[error("BUILD at byte {offset} on a {kind}: only dicts and call results take state")]
    BuildOnUnsupported {
        /// Where.
        offset: usize,
        /// What was on the stack.
        kind: &'static str,
    },
    /// An opcode needs more stack entries (above the last mark) than there are.
    #[error("stack underflow: {opcode} at byte {offset}")]
    StackUnderflow {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
    },
    /// An opcode that needs a `MARK` when none is open.
    #[error("{opcode} at byte {offset} without a MARK")]
    MarkNotFound {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
    },
    /// `STOP` with nothing to return.
    #[error("STOP at byte {offset} with an empty stack")]
    EmptyStack {
        /// Where.
        offset: usize,
    },
    /// `GET` of a memo key never `PUT`.
    #[error("{opcode} at byte {offset} reads memo key {key}, which was never stored")]
    MemoKeyMissing {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// The key.
        key: u64,
    },
    /// More memo entries than [`Limits::max_memo`].
    #[error("{opcode} at byte {offset} would exceed the memo limit of {limit} entries")]
    MemoTooLarge {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// The limit.
        limit: usize,
    },
    /// More stack entries and marks than [`Limits::max_stack`].
    #[error("{opcode} at byte {offset} would exceed the stack limit of {limit} entries")]
    StackTooDeep {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// The limit.
        limit: usize,
    },
    /// More objects than [`Limits::max_objects`].
    #[error("{opcode} at byte {offset} would exceed the limit of {limit} objects")]
    TooManyObjects {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The result nests deeper than [`Limits::max_depth`].
    #[error("the object returned at byte {offset} nests deeper than {limit} levels")]
    TooDeep {
        /// Where (the `STOP`).
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// A string, bytes object or text line longer than
    /// [`Limits::max_string_len`].
    #[error("{opcode} at byte {offset} declares {len} bytes, over the limit of {limit}")]
    StringTooLong {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// The declared (or, for a text line, at least the scanned) length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Text that does not decode (bad UTF-8, a surrogate, non-ASCII `PERSID`,
    /// a bad `\u` escape).
    #[error("{opcode} at byte {offset}: invalid text")]
    InvalidUtf8 {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
    },
    /// An integer longer than [`Limits::max_bigint_bytes`].
    #[error("{opcode} at byte {offset}: integer of {len} bytes, over the limit of {limit}")]
    BigIntTooLarge {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// Its length in bytes (for decimal text, a lower bound).
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// `PROTO` above 5.
    #[error("unsupported pickle protocol {proto} at byte {offset} (supported: 0 to 5)")]
    UnsupportedProtocol {
        /// Where.
        offset: usize,
        /// The protocol.
        proto: u8,
    },
    /// The input ends between opcodes without a `STOP`.
    #[error("pickle ends at byte {offset} without STOP")]
    NoStop {
        /// The input's length.
        offset: usize,
    },
    /// A `FRAME` longer than the rest of the input, a `FRAME` before the
    /// current frame ends, or an opcode that straddles a frame's end.
    #[error("bad FRAME at byte {offset}: {reason}")]
    BadFrame {
        /// Where.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An operand of the wrong type or value (`SETITEM` on a list, `APPEND`
    /// on a dict, arguments that are not a tuple, a malformed decimal, ...).
    #[error("{opcode} at byte {offset}: {reason}")]
    BadArgument {
        /// Where.
        offset: usize,
        /// The opcode.
        opcode: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl PickleError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> usize {
        match self {
            PickleError::UnknownOpcode { offset, .. }
            | PickleError::Truncated { offset, .. }
            | PickleError::UnsafeGlobal { offset, .. }
            | PickleError::ForbiddenOpcode { offset, .. }
            | PickleError::ReduceOnNonGlobal { offset, .. }
            | PickleError::NewObjNotAllowed { offset, .. }
            | PickleError::BuildOnUnsupported { offset, .. }
            | PickleError::StackUnderflow { offset, .. }
            | PickleError::MarkNotFound { offset, .. }
            | PickleError::EmptyStack { offset }
            | PickleError::MemoKeyMissing { offset, .. }
            | PickleError::MemoTooLarge { offset, .. }
            | PickleError::StackTooDeep { offset, .. }
            | PickleError::TooManyObjects { offset, .. }
            | PickleError::TooDeep { offset, .. }
            | PickleError::StringTooLong { offset, .. }
            | PickleError::InvalidUtf8 { offset, .. }
            | PickleError::BigIntTooLarge { offset, .. }
            | PickleError::UnsupportedProtocol { offset, .. }
            | PickleError::NoStop { offset }
            | PickleError::BadFrame { offset, .. }
            | PickleError::BadArgument { offset, .. } => *offset,
        }
    }
}

/// The result of [`unpickle`]: an arena of objects and the root.
///
/// Every [`ObjId`] stored in an object indexes this arena; the accessors
/// still return `Option` so that callers never need to index.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpickled {
    arena: Vec<Obj>,
    root: ObjId,
    consumed: usize,
}

impl Unpickled {
    /// The object `id`, or `None` for an id outside the arena.
    pub fn get(&self, id: ObjId) -> Option<&Obj> {
        self.arena.get(id)
    }

    /// The object `STOP` returned.
    pub fn root(&self) -> ObjId {
        self.root
    }

    /// Bytes read, up to and including `STOP`. The legacy torch format stores
    /// several pickles back to back: the next one starts here.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// All objects, indexed by [`ObjId`] (including ones the root does not
    /// reach).
    pub fn objects(&self) -> &[Obj] {
        &self.arena
    }

    /// The string `id`, if it is a [`Obj::Str`].
    pub fn as_str(&self, id: ObjId) -> Option<&str> {
        match self.get(id)? {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id`, if it is an [`Obj::Int`] (not a bool, not a big int).
    pub fn as_int(&self, id: ObjId) -> Option<i64> {
        match self.get(id)? {
            Obj::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The bool `id`, if it is an [`Obj::Bool`].
    pub fn as_bool(&self, id: ObjId) -> Option<bool> {
        match self.get(id)? {
            Obj::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The float `id`, if it is an [`Obj::Float`].
    pub fn as_float(&self, id: ObjId) -> Option<f64> {
        match self.get(id)? {
            Obj::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The bytes `id`, if it is an [`Obj::Bytes`].
    pub fn as_bytes(&self, id: ObjId) -> Option<&[u8]> {
        match self.get(id)? {
            Obj::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Whether `id` is [`Obj::None`].
    pub fn is_none(&self, id: ObjId) -> bool {
        matches!(self.get(id), Some(Obj::None))
    }

    /// The items of `id`, if it is an [`Obj::Tuple`].
    pub fn tuple_items(&self, id: ObjId) -> Option<&[ObjId]> {
        match self.get(id)? {
            Obj::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The items of `id`, if it is an [`Obj::List`].
    pub fn list_items(&self, id: ObjId) -> Option<&[ObjId]> {
        match self.get(id)? {
            Obj::List(v) => Some(v),
            _ => None,
        }
    }

    /// The `(key, value)` pairs of `id`, if it is an [`Obj::Dict`].
    pub fn dict_items(&self, id: ObjId) -> Option<&[(ObjId, ObjId)]> {
        match self.get(id)? {
            Obj::Dict { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The value of the last entry of dict `id` whose key is the string
    /// `key` (Python's semantics for repeated keys).
    pub fn dict_get_str(&self, id: ObjId, key: &str) -> Option<ObjId> {
        self.dict_items(id)?
            .iter()
            .rev()
            .find(|&&(k, _)| self.as_str(k) == Some(key))
            .map(|&(_, v)| v)
    }

    /// `(module, name)` of `id`, if it is an [`Obj::Global`].
    pub fn global_name(&self, id: ObjId) -> Option<(&str, &str)> {
        match self.get(id)? {
            Obj::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// `(func, args, state)` of `id`, if it is an [`Obj::Call`].
    pub fn call_parts(&self, id: ObjId) -> Option<(ObjId, ObjId, Option<ObjId>)> {
        match self.get(id)? {
            Obj::Call { func, args, state } => Some((*func, *args, *state)),
            _ => None,
        }
    }

    /// `(module, name)` of the function `id` calls and its argument tuple, if
    /// `id` is an [`Obj::Call`].
    pub fn call_target(&self, id: ObjId) -> Option<((&str, &str), &[ObjId])> {
        let (func, args, _) = self.call_parts(id)?;
        Some((self.global_name(func)?, self.tuple_items(args)?))
    }

    /// The persistent id of `id`, if it is an [`Obj::PersistentId`].
    pub fn persistent_id(&self, id: ObjId) -> Option<ObjId> {
        match self.get(id)? {
            Obj::PersistentId(pid) => Some(*pid),
            _ => None,
        }
    }
}

/// Runs the pickle at the start of `data` and returns the object graph it
/// describes. Bytes after `STOP` are ignored (see [`Unpickled::consumed`]).
///
/// Never panics and never executes anything, for any input.
pub fn unpickle(
    data: &[u8],
    policy: &Policy<'_>,
    limits: &Limits,
) -> Result<Unpickled, PickleError> {
    Vm {
        data,
        pos: 0,
        frame_end: None,
        offset: 0,
        op: "?",
        arena: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        policy,
        limits,
    }
    .run()
}

mod op {
    pub(super) const MARK: u8 = b'(';
    pub(super) const STOP: u8 = b'.';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    pub(super) const FLOAT: u8 = b'F';
    pub(super) const INT: u8 = b'I';
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const LONG: u8 = b'L';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const NONE: u8 = b'N';
    pub(super) const PERSID: u8 = b'P';
    pub(super) const BINPERSID: u8 = b'Q';
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const STRING: u8 = b'S';
    pub(super) const BINSTRING: u8 = b'T';
    pub(super) const SHORT_BINSTRING: u8 = b'U';
    pub(super) const UNICODE: u8 = b'V';
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const DICT: u8 = b'd';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const GET: u8 = b'g';
    pub(super) const BINGET: u8 = b'h';
    pub(super) const INST: u8 = b'i';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const LIST: u8 = b'l';
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const OBJ: u8 = b'o';
    pub(super) const PUT: u8 = b'p';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const SETITEMS: u8 = b'u';
    pub(super) const BINFLOAT: u8 = b'G';
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const EXT1: u8 = 0x82;
    pub(super) const EXT2: u8 = 0x83;
    pub(super) const EXT4: u8 = 0x84;
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE2: u8 = 0x86;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINBYTES8: u8 = 0x8e;
    pub(super) const EMPTY_SET: u8 = 0x8f;
    pub(super) const ADDITEMS: u8 = 0x90;
    pub(super) const FROZENSET: u8 = 0x91;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const BYTEARRAY8: u8 = 0x96;
    pub(super) const NEXT_BUFFER: u8 = 0x97;
    pub(super) const READONLY_BUFFER: u8 = 0x98;

    /// The opcode's name as in `pickletools`, or `None` for an unknown byte.
    pub(super) fn name(op: u8) -> Option<&'static str> {
        Some(match op {
            MARK => "MARK",
            STOP => "STOP",
            POP => "POP",
            POP_MARK => "POP_MARK",
            DUP => "DUP",
            FLOAT => "FLOAT",
            INT => "INT",
            BININT => "BININT",
            BININT1 => "BININT1",
            LONG => "LONG",
            BININT2 => "BININT2",
            NONE => "NONE",
            PERSID => "PERSID",
            BINPERSID => "BINPERSID",
            REDUCE => "REDUCE",
            STRING => "STRING",
            BINSTRING => "BINSTRING",
            SHORT_BINSTRING => "SHORT_BINSTRING",
            UNICODE => "UNICODE",
            BINUNICODE => "BINUNICODE",
            APPEND => "APPEND",
            BUILD => "BUILD",
            GLOBAL => "GLOBAL",
            DICT => "DICT",
            EMPTY_DICT => "EMPTY_DICT",
            APPENDS => "APPENDS",
            GET => "GET",
            BINGET => "BINGET",
            INST => "INST",
            LONG_BINGET => "LONG_BINGET",
            LIST => "LIST",
            EMPTY_LIST => "EMPTY_LIST",
            OBJ => "OBJ",
            PUT => "PUT",
            BINPUT => "BINPUT",
            LONG_BINPUT => "LONG_BINPUT",
            SETITEM => "SETITEM",
            TUPLE => "TUPLE",
            EMPTY_TUPLE => "EMPTY_TUPLE",
            SETITEMS => "SETITEMS",
            BINFLOAT => "BINFLOAT",
            PROTO => "PROTO",
            NEWOBJ => "NEWOBJ",
            EXT1 => "EXT1",
            EXT2 => "EXT2",
            EXT4 => "EXT4",
            TUPLE1 => "TUPLE1",
            TUPLE2 => "TUPLE2",
            TUPLE3 => "TUPLE3",
            NEWTRUE => "NEWTRUE",
            NEWFALSE => "NEWFALSE",
            LONG1 => "LONG1",
            LONG4 => "LONG4",
            BINBYTES => "BINBYTES",
            SHORT_BINBYTES => "SHORT_BINBYTES",
            SHORT_BINUNICODE => "SHORT_BINUNICODE",
            BINUNICODE8 => "BINUNICODE8",
            BINBYTES8 => "BINBYTES8",
            EMPTY_SET => "EMPTY_SET",
            ADDITEMS => "ADDITEMS",
            FROZENSET => "FROZENSET",
            NEWOBJ_EX => "NEWOBJ_EX",
            STACK_GLOBAL => "STACK_GLOBAL",
            MEMOIZE => "MEMOIZE",
            FRAME => "FRAME",
            BYTEARRAY8 => "BYTEARRAY8",
            NEXT_BUFFER => "NEXT_BUFFER",
            READONLY_BUFFER => "READONLY_BUFFER",
            _ => return None,
        })
    }
}

/// How a length-prefixed string's bytes become an object.
#[derive(Clone, Copy)]
enum Text {
    Utf8,
    Latin1,
    Bytes,
}

/// The machine's state while it runs.
struct Vm<'d, 'p> {
    data: &'d [u8],
    /// Next byte to read.
    pos: usize,
    /// End of the current `FRAME`, while inside one.
    frame_end: Option<usize>,
    /// Offset of the opcode being executed.
    offset: usize,
    /// Name of the opcode being executed.
    op: &'static str,
    arena: Vec<Obj>,
    /// Every open frame's items, oldest first; `marks` says where each
    /// frame after a `MARK` begins.
    stack: Vec<ObjId>,
    marks: Vec<usize>,
    memo: HashMap<u64, ObjId>,
    policy: &'p Policy<'p>,
    limits: &'p Limits,
}

impl<'d> Vm<'d, '_> {
    fn run(mut self) -> Result<Unpickled, PickleError> {
        loop {
            if self.pos >= self.data.len() {
                return Err(PickleError::NoStop { offset: self.pos });
            }
            self.offset = self.pos;
            self.op = "opcode";
            let code = self.read_u8()?;
            let Some(name) = op::name(code) else {
                return Err(PickleError::UnknownOpcode {
                    offset: self.offset,
                    op: code,
                });
            };
            self.op = name;
            if code == op::STOP {
                return self.stop();
            }
            self.step(code)?;
        }
    }

    /// Executes one opcode other than `STOP`.
    fn step(&mut self, code: u8) -> Result<(), PickleError> {
        match code {
            // Protocol and framing.
            op::PROTO => {
                let proto = self.read_u8()?;
                if proto > 5 {
                    return Err(PickleError::UnsupportedProtocol {
                        offset: self.offset,
                        proto,
                    });
                }
            }
            op::FRAME => self.frame()?,

            // Constants.
            op::NONE => self.push_new(Obj::None)?,
            op::NEWTRUE => self.push_new(Obj::Bool(true))?,
            op::NEWFALSE => self.push_new(Obj::Bool(false))?,
            op::INT => {
                let line = self.read_line()?;
                let obj = match line {
                    b"00" => Obj::Bool(false),
                    b"01" => Obj::Bool(true),
                    _ => self.parse_decimal(line)?,
                };
                self.push_new(obj)?;
            }
            op::LONG => {
                let line = self.read_line()?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let obj = self.parse_decimal(digits)?;
                self.push_new(obj)?;
            }
            op::BININT => {
                let v = i32::from_le_bytes(self.read_array()?);
                self.push_new(Obj::Int(i64::from(v)))?;
            }
            op::BININT1 => {
                let v = self.read_u8()?;
                self.push_new(Obj::Int(i64::from(v)))?;
            }
            op::BININT2 => {
                let v = u16::from_le_bytes(self.read_array()?);
                self.push_new(Obj::Int(i64::from(v)))?;
            }
            op::LONG1 => {
                let n = self.read_u8()?;
                self.long_bytes(u64::from(n))?;
            }
            op::LONG4 => {
                let n = i32::from_le_bytes(self.read_array()?);
                let n = u64::try_from(n).map_err(|_| self.bad("negative byte count"))?;
                self.long_bytes(n)?;
            }
            op::FLOAT => {
                let line = self.read_line()?;
                let text = std::str::from_utf8(line)
                    .map_err(|_| self.bad("float is not ASCII"))?
                    .trim();
                let v: f64 = text.parse().map_err(|_| self.bad("malformed float"))?;
                self.push_new(Obj::Float(v))?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.read_array()?);
                self.push_new(Obj::Float(v))?;
            }

            // Strings and bytes.
            op::STRING => {
                let line = self.read_line()?;
                let inner = match line {
                    [q @ (b'"' | b'\''), inner @ .., last] if last == q => inner,
                    _ => return Err(self.bad("argument must be quoted")),
                };
                let bytes = escape_decode(inner).ok_or_else(|| self.bad("bad escape"))?;
                self.push_new(Obj::Str(latin1(&bytes)))?;
            }
            op::UNICODE => {
                let line = self.read_line()?;
                let s = raw_unicode_escape_decode(line).ok_or(PickleError::InvalidUtf8 {
                    offset: self.offset,
                    opcode: self.op,
                })?;
                self.push_new(Obj::Str(s))?;
            }
            op::BINSTRING => {
                let n = i32::from_le_bytes(self.read_array()?);
                let n = u64::try_from(n).map_err(|_| self.bad("negative byte count"))?;
                self.counted_text(n, Text::Latin1)?;
            }
            op::SHORT_BINSTRING => {
                let n = self.read_u8()?;
                self.counted_text(u64::from(n), Text::Latin1)?;
            }
            op::BINUNICODE => {
                let n = u32::from_le_bytes(self.read_array()?);
                self.counted_text(u64::from(n), Text::Utf8)?;
            }
            op::SHORT_BINUNICODE => {
                let n = self.read_u8()?;
                self.counted_text(u64::from(n), Text::Utf8)?;
            }
            op::BINUNICODE8 => {
                let n = u64::from_le_bytes(self.read_array()?);
                self.counted_text(n, Text::Utf8)?;
            }
            op::BINBYTES => {
                let n = u32::from_le_bytes(self.read_array()?);
                self.counted_text(u64::from(n), Text::Bytes)?;
            }
            op::SHORT_BINBYTES => {
                let n = self.read_u8()?;
                self.counted_text(u64::from(n), Text::Bytes)?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = u64::from_le_bytes(self.read_array()?);
                self.counted_text(n, Text::Bytes)?;
            }

            // Containers.
            op::EMPTY_TUPLE => self.push_new(Obj::Tuple(Vec::new()))?,
            op::EMPTY_LIST => self.push_new(Obj::List(Vec::new()))?,
            op::EMPTY_DICT => self.push_new(Obj::Dict {
                items: Vec::new(),
                state: None,
            })?,
            op::EMPTY_SET => self.push_new(Obj::Set(Vec::new()))?,
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push_new(Obj::Tuple(items))?;
            }
            op::TUPLE1 => {
                let a = self.pop()?;
                self.push_new(Obj::Tuple(vec![a]))?;
            }
            op::TUPLE2 => {
                self.need(2)?;
                let b = self.pop()?;
                let a = self.pop()?;
                self.push_new(Obj::Tuple(vec![a, b]))?;
            }
            op::TUPLE3 => {
                self.need(3)?;
                let c = self.pop()?;
                let b = self.pop()?;
                let a = self.pop()?;
                self.push_new(Obj::Tuple(vec![a, b, c]))?;
            }
            op::LIST => {
                let items = self.pop_mark()?;
                self.push_new(Obj::List(items))?;
            }
            op::DICT => {
                let items = self.pop_mark()?;
                let items = self.pairs(&items)?;
                self.push_new(Obj::Dict { items, state: None })?;
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push_new(Obj::FrozenSet(items))?;
            }
            op::APPEND => {
                self.need(2)?;
                let item = self.pop()?;
                let target = self.top()?;
                match self.obj_mut(target)? {
                    Obj::List(v) => v.push(item),
                    _ => return Err(self.bad("target is not a list")),
                }
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.obj_mut(target)? {
                    Obj::List(v) => v.extend(items),
                    _ => return Err(self.bad("target is not a list")),
                }
            }
            op::SETITEM => {
                self.need(3)?;
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                match self.obj_mut(target)? {
                    Obj::Dict { items, .. } => items.push((key, value)),
                    _ => return Err(self.bad("target is not a dict")),
                }
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(&items)?;
                let target = self.top()?;
                match self.obj_mut(target)? {
                    Obj::Dict { items, .. } => items.extend(pairs),
                    _ => return Err(self.bad("target is not a dict")),
                }
            }
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.obj_mut(target)? {
                    Obj::Set(v) => v.extend(items),
                    _ => return Err(self.bad("target is not a set")),
                }
            }

            // Stack manipulation.
            op::MARK => {
                self.check_stack_room()?;
                self.marks.push(self.stack.len());
            }
            op::POP => {
                // Python pops the mark itself when the frame is empty.
                if self.stack.len() > self.floor() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.push(top)?;
            }

            // Memo.
            op::PUT => {
                let line = self.read_line()?;
                let key = self.parse_memo_key(line)?;
                self.memo_put(key)?;
            }
            op::BINPUT => {
                let key = self.read_u8()?;
                self.memo_put(u64::from(key))?;
            }
            op::LONG_BINPUT => {
                let key = u32::from_le_bytes(self.read_array()?);
                self.memo_put(u64::from(key))?;
            }
            op::MEMOIZE => {
                let key = u64::try_from(self.memo.len()).map_err(|_| self.bad("memo overflow"))?;
                self.memo_put(key)?;
            }
            op::GET => {
                let line = self.read_line()?;
                let key = self.parse_memo_key(line)?;
                self.memo_get(key)?;
            }
            op::BINGET => {
                let key = self.read_u8()?;
                self.memo_get(u64::from(key))?;
            }
            op::LONG_BINGET => {
                let key = u32::from_le_bytes(self.read_array()?);
                self.memo_get(u64::from(key))?;
            }

            // Globals, calls, persistent ids.
            op::GLOBAL => {
                let module = self.read_line()?;
                let name = self.read_line()?;
                let module = self.utf8(module)?;
                let name = self.utf8(name)?;
                self.push_global(module, name)?;
            }
            op::STACK_GLOBAL => {
                self.need(2)?;
                let name = self.pop()?;
                let module = self.pop()?;
                let (Obj::Str(module), Obj::Str(name)) = (self.obj(module)?, self.obj(name)?)
                else {
                    return Err(self.bad("module and name must be str"));
                };
                let (module, name) = (module.clone(), name.clone());
                self.push_global(&module, &name)?;
            }
            op::REDUCE => {
                self.need(2)?;
                let args = self.pop()?;
                let func = self.top()?;
                let kind = self.obj(func)?.kind();
                if !matches!(self.obj(func)?, Obj::Global { .. }) {
                    return Err(PickleError::ReduceOnNonGlobal {
                        offset: self.offset,
                        kind,
                    });
                }
                let result = self.call(func, args)?;
                self.replace_top(result)?;
            }
            op::NEWOBJ => {
                self.need(2)?;
                let args = self.pop()?;
                let cls = self.pop()?;
                self.new_obj(cls, args)?;
            }
            op::NEWOBJ_EX => {
                self.need(3)?;
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                match self.obj(kwargs)? {
                    Obj::Dict { items, .. } if items.is_empty() => {}
                    Obj::Dict { .. } => {
                        return Err(self.bad("keyword arguments are not supported"));
                    }
                    _ => return Err(self.bad("keyword arguments must be a dict")),
                }
                self.new_obj(cls, args)?;
            }
            op::BUILD => {
                self.need(2)?;
                let new_state = self.pop()?;
                let target = self.top()?;
                let offset = self.offset;
                let slot = match self.obj_mut(target)? {
                    Obj::Dict { state, .. } | Obj::Call { state, .. } => state,
                    other => {
                        return Err(PickleError::BuildOnUnsupported {
                            offset,
                            kind: other.kind(),
                        });
                    }
                };
                if slot.is_some() {
                    return Err(self.bad("the object already has state"));
                }
                *slot = Some(new_state);
            }
            op::PERSID => {
                let line = self.read_line()?;
                if !line.is_ascii() {
                    return Err(PickleError::InvalidUtf8 {
                        offset: self.offset,
                        opcode: self.op,
                    });
                }
                let pid = self.alloc(Obj::Str(latin1(line)))?;
                self.push_new(Obj::PersistentId(pid))?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.push_new(Obj::PersistentId(pid))?;
            }

            // Refused.
            op::INST
            | op::OBJ
            | op::EXT1
            | op::EXT2
            | op::EXT4
            | op::NEXT_BUFFER
            | op::READONLY_BUFFER => {
                return Err(PickleError::ForbiddenOpcode {
                    offset: self.offset,
                    opcode: self.op,
                });
            }
            _ => {
                return Err(PickleError::UnknownOpcode {
                    offset: self.offset,
                    op: code,
                });
            }
        }
        Ok(())
    }

    /// `STOP`: pops the result and checks its depth.
    fn stop(mut self) -> Result<Unpickled, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::EmptyStack {
                offset: self.offset,
            });
        }
        let root = self.pop()?;
        if !depth_within(&self.arena, root, self.limits.max_depth) {
            return Err(PickleError::TooDeep {
                offset: self.offset,
                limit: self.limits.max_depth,
            });
        }
        Ok(Unpickled {
            arena: self.arena,
            root,
            consumed: self.pos,
        })
    }

    // ---- reading -------------------------------------------------------

    /// Takes `n` bytes, enforcing frame boundaries.
    fn take(&mut self, n: usize) -> Result<&'d [u8], PickleError> {
        if let Some(end) = self.frame_end {
            if self.pos == end {
                self.frame_end = None;
            } else if n > end.saturating_sub(self.pos) {
                return Err(PickleError::BadFrame {
                    offset: self.offset,
                    reason: "opcode runs past the end of its frame",
                });
            }
        }
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= data.len())
            .ok_or(PickleError::Truncated {
                offset: self.offset,
                opcode: self.op,
            })?;
        let bytes = data.get(self.pos..end).ok_or(PickleError::Truncated {
            offset: self.offset,
            opcode: self.op,
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn read_u8(&mut self) -> Result<u8, PickleError> {
        let [b] = self.read_array()?;
        Ok(b)
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| PickleError::Truncated {
            offset: self.offset,
            opcode: self.op,
        })
    }

    /// Reads a `\n`-terminated line and returns it without the `\n`.
    fn read_line(&mut self) -> Result<&'d [u8], PickleError> {
        let limit = self.limits.max_string_len;
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let window = match self.frame_end {
            Some(end) if end > self.pos => rest.get(..end - self.pos).unwrap_or(rest),
            _ => rest,
        };
        let scan = window.get(..limit.saturating_add(1)).unwrap_or(window);
        let Some(len) = scan.iter().position(|&b| b == b'\n') else {
            return Err(if scan.len() > limit {
                PickleError::StringTooLong {
                    offset: self.offset,
                    opcode: self.op,
                    len: u64::try_from(scan.len()).unwrap_or(u64::MAX),
                    limit,
                }
            } else if window.len() < rest.len() {
                PickleError::BadFrame {
                    offset: self.offset,
                    reason: "text line runs past the end of its frame",
                }
            } else {
                PickleError::Truncated {
                    offset: self.offset,
                    opcode: self.op,
                }
            });
        };
        let line = self.take(len.saturating_add(1))?;
        Ok(line.get(..len).unwrap_or_default())
    }

    /// `FRAME`: checks the declared length against the input.
    fn frame(&mut self) -> Result<(), PickleError> {
        let len = u64::from_le_bytes(self.read_array()?);
        if self.frame_end.is_some_and(|end| self.pos != end) {
            return Err(PickleError::BadFrame {
                offset: self.offset,
                reason: "a new frame starts before the current one ends",
            });
        }
        let remaining = self.data.len().saturating_sub(self.pos);
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= remaining)
            .ok_or(PickleError::BadFrame {
                offset: self.offset,
                reason: "frame is longer than the rest of the input",
            })?;
        self.frame_end = self.pos.checked_add(len);
        Ok(())
    }

    /// A string or bytes object of `n` bytes.
    fn counted_text(&mut self, n: u64, text: Text) -> Result<(), PickleError> {
        let limit = self.limits.max_string_len;
        let len = usize::try_from(n).ok().filter(|&len| len <= limit).ok_or(
            PickleError::StringTooLong {
                offset: self.offset,
                opcode: self.op,
                len: n,
                limit,
            },
        )?;
        let bytes = self.take(len)?;
        let obj = match text {
            Text::Bytes => Obj::Bytes(bytes.to_vec()),
            Text::Latin1 => Obj::Str(latin1(bytes)),
            Text::Utf8 => Obj::Str(self.utf8(bytes)?.to_owned()),
        };
        self.push_new(obj)
    }

    /// `LONG1`/`LONG4`: `n` bytes of little-endian two's complement.
    fn long_bytes(&mut self, n: u64) -> Result<(), PickleError> {
        let limit = self.limits.max_bigint_bytes;
        let len = usize::try_from(n).ok().filter(|&len| len <= limit).ok_or(
            PickleError::BigIntTooLarge {
                offset: self.offset,
                opcode: self.op,
                len: n,
                limit,
            },
        )?;
        let bytes = self.take(len)?;
        let obj = int_from_le(bytes.to_vec());
        self.push_new(obj)
    }

    fn utf8<'s>(&self, bytes: &'s [u8]) -> Result<&'s str, PickleError> {
        std::str::from_utf8(bytes).map_err(|_| PickleError::InvalidUtf8 {
            offset: self.offset,
            opcode: self.op,
        })
    }

    /// A decimal integer of `INT`/`LONG` (Python's `int(text, 0)` for the
    /// decimal forms pickles contain).
    fn parse_decimal(&self, text: &[u8]) -> Result<Obj, PickleError> {
        let text = text.trim_ascii();
        let (negative, digits) = match text {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.bad("malformed integer"));
        }
        let significant = match digits.iter().position(|&d| d != b'0') {
            Some(first) => {
                if first > 0 {
                    return Err(self.bad("leading zeros in a decimal integer"));
                }
                digits
            }
            None => return Ok(Obj::Int(0)),
        };
        // Little-endian magnitude, grown digit by digit; bounded by the limit.
        let limit = self.limits.max_bigint_bytes;
        let mut magnitude: Vec<u8> = Vec::new();
        for &d in significant {
            let mut carry = u32::from(d - b'0');
            for byte in magnitude.iter_mut() {
                let [lo, hi, ..] = (u32::from(*byte) * 10 + carry).to_le_bytes();
                *byte = lo;
                carry = u32::from(hi);
            }
            if carry > 0 {
                let [lo, ..] = carry.to_le_bytes();
                magnitude.push(lo);
            }
            if magnitude.len() > limit {
                return Err(PickleError::BigIntTooLarge {
                    offset: self.offset,
                    opcode: self.op,
                    len: u64::try_from(magnitude.len()).unwrap_or(u64::MAX),
                    limit,
                });
            }
        }
        // Two's complement, with a sign byte of headroom.
        magnitude.push(0);
        if negative {
            let mut carry = true;
            for byte in magnitude.iter_mut() {
                let (v, c) = (!*byte).overflowing_add(u8::from(carry));
                *byte = v;
                carry = c;
            }
        }
        let obj = int_from_le(magnitude);
        if let Obj::BigInt(b) = &obj
            && b.len() > limit
        {
            return Err(PickleError::BigIntTooLarge {
                offset: self.offset,
                opcode: self.op,
                len: u64::try_from(b.len()).unwrap_or(u64::MAX),
                limit,
            });
        }
        Ok(obj)
    }

    fn parse_memo_key(&self, line: &[u8]) -> Result<u64, PickleError> {
        let text = line.trim_ascii();
        if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
            return Err(self.bad("memo key must be a non-negative decimal"));
        }
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.bad("memo key out of range"))
    }

    // ---- objects and stack ---------------------------------------------

    fn bad(&self, reason: &'static str) -> PickleError {
        PickleError::BadArgument {
            offset: self.offset,
            opcode: self.op,
            reason,
        }
    }

    fn obj(&self, id: ObjId) -> Result<&Obj, PickleError> {
        self.arena.get(id).ok_or(PickleError::BadArgument {
            offset: self.offset,
            opcode: self.op,
            reason: "dangling object id",
        })
    }

    fn obj_mut(&mut self, id: ObjId) -> Result<&mut Obj, PickleError> {
        let (offset, opcode) = (self.offset, self.op);
        self.arena.get_mut(id).ok_or(PickleError::BadArgument {
            offset,
            opcode,
            reason: "dangling object id",
        })
    }

    fn alloc(&mut self, obj: Obj) -> Result<ObjId, PickleError> {
        if self.arena.len() >= self.limits.max_objects {
            return Err(PickleError::TooManyObjects {
                offset: self.offset,
                opcode: self.op,
                limit: self.limits.max_objects,
            });
        }
        self.arena.push(obj);
        Ok(self.arena.len() - 1)
    }

    fn check_stack_room(&self) -> Result<(), PickleError> {
        if self.stack.len().saturating_add(self.marks.len()) >= self.limits.max_stack {
            return Err(PickleError::StackTooDeep {
                offset: self.offset,
                opcode: self.op,
                limit: self.limits.max_stack,
            });
        }
        Ok(())
    }

    fn push(&mut self, id: ObjId) -> Result<(), PickleError> {
        self.check_stack_room()?;
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, obj: Obj) -> Result<(), PickleError> {
        self.check_stack_room()?;
        let id = self.alloc(obj)?;
        self.stack.push(id);
        Ok(())
    }

    /// Where the innermost frame (after the last `MARK`) begins.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn underflow(&self) -> PickleError {
        PickleError::StackUnderflow {
            offset: self.offset,
            opcode: self.op,
        }
    }

    /// Fails unless the innermost frame holds at least `n` items.
    fn need(&self, n: usize) -> Result<(), PickleError> {
        if self.stack.len().saturating_sub(self.floor()) < n {
            return Err(self.underflow());
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<ObjId, PickleError> {
        self.need(1)?;
        self.stack.pop().ok_or_else(|| self.underflow())
    }

    fn top(&self) -> Result<ObjId, PickleError> {
        self.need(1)?;
        self.stack.last().copied().ok_or_else(|| self.underflow())
    }

    fn replace_top(&mut self, id: ObjId) -> Result<(), PickleError> {
        self.need(1)?;
        let underflow = self.underflow();
        *self.stack.last_mut().ok_or(underflow)? = id;
        Ok(())
    }

    /// Closes the innermost `MARK` and returns the items pushed since.
    fn pop_mark(&mut self) -> Result<Vec<ObjId>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MarkNotFound {
            offset: self.offset,
            opcode: self.op,
        })?;
        if mark > self.stack.len() {
            return Err(self.underflow());
        }
        Ok(self.stack.split_off(mark))
    }

    /// Alternating keys and values into pairs.
    fn pairs(&self, items: &[ObjId]) -> Result<Vec<(ObjId, ObjId)>, PickleError> {
        let chunks = items.chunks_exact(2);
        if !chunks.remainder().is_empty() {
            return Err(self.bad("odd number of items for a dict"));
        }
        Ok(chunks
            .filter_map(|pair| match pair {
                &[k, v] => Some((k, v)),
                _ => None,
            })
            .collect())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        if !self.memo.contains_key(&key) && self.memo.len() >= self.limits.max_memo {
            return Err(PickleError::MemoTooLarge {
                offset: self.offset,
                opcode: self.op,
                limit: self.limits.max_memo,
            });
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let id = *self.memo.get(&key).ok_or(PickleError::MemoKeyMissing {
            offset: self.offset,
            opcode: self.op,
            key,
        })?;
        self.push(id)
    }

    /// `GLOBAL`/`STACK_GLOBAL`: pushes the global if the policy allows it.
    fn push_global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        let module = match module {
            "__builtin__" => "builtins",
            "copy_reg" => "copyreg",
            other => other,
        };
        if !self.policy.allows(module, name) {
            return Err(PickleError::UnsafeGlobal {
                offset: self.offset,
                opcode: self.op,
                module: module.to_owned(),
                name: name.to_owned(),
            });
        }
        self.push_new(Obj::Global {
            module: module.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The object calling global `func` with tuple `args` describes.
    fn call(&mut self, func: ObjId, args: ObjId) -> Result<ObjId, PickleError> {
        let no_args = match self.obj(args)? {
            Obj::Tuple(items) => items.is_empty(),
            _ => return Err(self.bad("arguments must be a tuple")),
        };
        let is_dict = match self.obj(func)? {
            Obj::Global { module, name } => no_args && self.policy.is_dict_class(module, name),
            _ => false,
        };
        self.alloc(if is_dict {
            Obj::Dict {
                items: Vec::new(),
                state: None,
            }
        } else {
            Obj::Call {
                func,
                args,
                state: None,
            }
        })
    }

    /// `NEWOBJ`/`NEWOBJ_EX` (keyword arguments already checked empty).
    fn new_obj(&mut self, cls: ObjId, args: ObjId) -> Result<(), PickleError> {
        let kind = self.obj(cls)?.kind();
        if !matches!(self.obj(cls)?, Obj::Global { .. }) {
            return Err(PickleError::NewObjNotAllowed {
                offset: self.offset,
                opcode: self.op,
                kind,
            });
        }
        let result = self.call(cls, args)?;
        self.push(result)
    }
}

/// Decodes latin-1: every byte is the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// A minimal two's-complement integer: `Int` when it fits in an `i64`.
fn int_from_le(mut bytes: Vec<u8>) -> Obj {
    // Strip sign-extension bytes that the next byte down already implies.
    while let [.., prev, last] = bytes[..] {
        let redundant = (last == 0x00 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
        if !redundant {
            break;
        }
        bytes.pop();
    }
    if bytes.len() == 1 && bytes.first() == Some(&0) {
        bytes.clear();
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = if negative { [0xff; 8] } else { [0; 8] };
        for (dst, src) in buf.iter_mut().zip(&bytes) {
            *dst = *src;
        }
        Obj::Int(i64::from_le_bytes(buf))
    } else {
        Obj::BigInt(bytes)
    }
}

/// Python's `codecs.escape_decode` (the `STRING` argument between quotes).
fn escape_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = s.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = it.next()?; // a trailing backslash is an error
        match c {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(c),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                // Python keeps the low byte of an octal escape over \377.
                let [lo, ..] = v.to_le_bytes();
                out.push(lo);
            }
            b'x' => {
                let hi = char::from(it.next()?).to_digit(16)?;
                let lo = char::from(it.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding (the `UNICODE` argument): bytes
/// are latin-1, except that `\uXXXX` and `\UXXXXXXXX` after an odd number of
/// backslashes are code points.
fn raw_unicode_escape_decode(s: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b != b'\\' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run = s.get(i..)?.iter().take_while(|&&c| c == b'\\').count();
        i += run;
        let digits = match s.get(i) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = s.get(i + 1..i + 1 + digits)?;
        let mut cp: u32 = 0;
        for &h in hex {
            cp = cp
                .checked_mul(16)?
                .checked_add(char::from(h).to_digit(16)?)?;
        }
        out.push(char::from_u32(cp)?);
        i += 1 + digits;
    }
    Some(out)
}

/// Whether every chain of containment from `root` is at most `max_depth`
/// containers long. Iterative depth-first search; each object is expanded
/// once, and an edge back to an object still being expanded (a cycle) is cut.
fn depth_within(arena: &[Obj], root: ObjId, max_depth: usize) -> bool {
    const UNSEEN: u32 = u32::MAX;
    const OPEN: u32 = u32::MAX - 1;
    // height[id]: UNSEEN, OPEN, or the finished object's height.
    let mut height = vec![UNSEEN; arena.len()];
    let limit = u32::try_from(max_depth).unwrap_or(OPEN - 1).min(OPEN - 1);
    // (object, next child index, height so far)
    let mut path: Vec<(ObjId, usize, u32)> = Vec::new();
    let Some(slot) = height.get_mut(root) else {
        return false;
    };
    *slot = OPEN;
    path.push((root, 0, 0));
    while let Some(frame) = path.last_mut() {
        let (node, next, best) = *frame;
        let Some(obj) = arena.get(node) else {
            return false;
        };
        match obj.child(next) {
            Some(child) => {
                frame.1 = next + 1;
                match height.get(child).copied() {
                    None => return false,
                    Some(UNSEEN) => {
                        if path.len() > max_depth {
                            return false;
                        }
                        if let Some(slot) = height.get_mut(child) {
                            *slot = OPEN;
                        }
                        path.push((child, 0, 0));
                    }
                    Some(OPEN) => {}
                    Some(h) => frame.2 = best.max(h),
                }
            }
            None => {
                path.pop();
                let h = best.saturating_add(u32::from(obj.is_container()));
                if h > limit {
                    return false;
                }
                if let Some(slot) = height.get_mut(node) {
                    *slot = h;
                }
                if let Some(parent) = path.last_mut() {
                    parent.2 = parent.2.max(h);
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod unit {
    use super::*;

    fn num(text: &str) -> Obj {
        let limits = Limits::default();
        let policy = Policy::deny_all();
        let vm = Vm {
            data: b"",
            pos: 0,
            frame_end: None,
            offset: 0,
            op: "INT",
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            policy: &policy,
            limits: &limits,
        };
        vm.parse_decimal(text.as_bytes()).unwrap()
    }

    #[test]
    fn decimal_to_twos_complement() {
        assert_eq!(num("0"), Obj::Int(0));
        assert_eq!(num("-0"), Obj::Int(0));
        assert_eq!(num("127"), Obj::Int(127));
        assert_eq!(num("-128"), Obj::Int(-128));
        assert_eq!(num("9223372036854775807"), Obj::Int(i64::MAX));
        assert_eq!(num("-9223372036854775808"), Obj::Int(i64::MIN));
        assert_eq!(
            num("9223372036854775808"),
            Obj::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
        );
        assert_eq!(
            num("-9223372036854775809"),
            Obj::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
        );
        assert_eq!(num("-256"), Obj::Int(-256));
        assert_eq!(num("+255"), Obj::Int(255));
        assert!(matches!(int_from_le(vec![0xff, 0xff, 0xff]), Obj::Int(-1)));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape_decode(br"a\n\x41\101\\\'\q").unwrap(),
            b"a\nAA\\'\\q".to_vec()
        );
        assert!(escape_decode(b"\\").is_none());
        assert!(escape_decode(b"\\x4").is_none());
        assert_eq!(
            raw_unicode_escape_decode(br"\u00e9\\u00e9\\\u00e9\U0001f980").unwrap(),
            "\u{e9}\\\\u00e9\\\\\u{e9}\u{1f980}"
        );
        assert!(raw_unicode_escape_decode(br"\ud800").is_none());
        assert!(raw_unicode_escape_decode(br"\u12").is_none());
    }
}
