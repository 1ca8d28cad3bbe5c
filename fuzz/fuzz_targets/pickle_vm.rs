//! Fuzzes the pickle VM (`weightkit_pickle::vm::unpickle`) with arbitrary
//! bytes, under torch's allow-list and under `Policy::deny_all()`.
//!
//! The machine must never panic, and never allocate past the (tight) limits
//! used here. Whatever it accepts must be a well-formed graph: `consumed()`
//! ends at a `STOP` inside the input, every id in the arena resolves, a call
//! is always on an allowed global with a tuple of arguments, no global the
//! policy refuses appears (none at all under `deny_all`), and the graph can
//! be walked iteratively from the root, touching every reachable object.
//! The depth limit holds for every chain of containment, whatever order a
//! walk takes: the longest chains found by a depth-first search that visits
//! children last to first (the VM's own check goes first to last) are at
//! most `max_depth` containers long. Trailing bytes after `STOP` change
//! nothing. Every object is also handed
//! to `torch::tensor_ref` (the checkpoint layer's interpretation), which
//! must not panic either.
//!
//! The two policies must agree wherever no global is involved: if
//! `deny_all` accepts, or fails for a reason other than a global, the torch
//! policy gives the same result; and where `deny_all` stops at a global,
//! the torch policy cannot fail earlier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weightkit_pickle::torch;
use weightkit_pickle::vm::{self, Limits, Obj, ObjId, PickleError, Policy, Unpickled};

/// Tight enough that no input can make the fuzzer run out of memory (the
/// default limits allow about 500 MiB of graph and 1 GiB strings).
fn limits() -> Limits {
    Limits {
        max_memo: 1 << 18,
        max_stack: 1 << 18,
        max_objects: 1 << 20,
        max_string_len: 16 << 20,
        ..Limits::default()
    }
}

fn torch_policy() -> Policy<'static> {
    Policy {
        is_allowed: &torch::is_allowed,
        dict_classes: torch::DICT_CLASSES,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let torch = torch_policy();
    let deny = Policy::deny_all();

    let t = vm::unpickle(data, &torch, &limits);
    let d = vm::unpickle(data, &deny, &limits);

    if let Ok(u) = &t {
        check(u, data, &torch, &limits);
        for id in 0..u.objects().len() {
            // Errors are fine (not a tensor); panics are not.
            let _ = std::hint::black_box(torch::tensor_ref(u, id, "fuzz"));
        }
    }
    if let Ok(u) = &d {
        check(u, data, &deny, &limits);
    }

    match &d {
        Ok(du) => {
            let tu = t
                .as_ref()
                .expect("deny_all accepts what the torch policy rejects");
            assert!(
                same_graph(du, tu),
                "policies disagree on a global-free pickle"
            );
        }
        Err(PickleError::UnsafeGlobal { offset, .. }) => {
            if let Err(e) = &t {
                assert!(
                    e.offset() >= *offset,
                    "torch policy fails at {} ({e}) before deny_all's global at {offset}",
                    e.offset()
                );
            }
        }
        Err(de) => {
            assert_eq!(
                t.as_ref().err(),
                Some(de),
                "policies disagree on a pickle that failed before any global"
            );
        }
    }
});

/// Checks the graph `u` that `data` produced under `policy`.
fn check(u: &Unpickled, data: &[u8], policy: &Policy<'_>, limits: &Limits) {
    let n = u.objects().len();
    assert!(n <= limits.max_objects, "{n} objects over the limit");
    let consumed = u.consumed();
    assert!(
        consumed <= data.len(),
        "consumed {consumed} of {} bytes",
        data.len()
    );
    assert!(consumed > 0, "consumed nothing");
    assert_eq!(
        data.get(consumed - 1),
        Some(&b'.'),
        "consumed() does not end at STOP"
    );
    assert!(
        u.get(u.root()).is_some(),
        "root {} outside the arena",
        u.root()
    );

    // Every object's references resolve, and the structural promises hold.
    let resolves = |id: ObjId| assert!(id < n, "id {id} outside an arena of {n}");
    for obj in u.objects() {
        for_each_child(obj, resolves);
        match obj {
            Obj::Call { func, args, .. } => {
                assert!(
                    matches!(u.get(*func), Some(Obj::Global { .. })),
                    "call on a non-global"
                );
                assert!(
                    matches!(u.get(*args), Some(Obj::Tuple(_))),
                    "call arguments not a tuple"
                );
            }
            Obj::Global { module, name } => {
                assert!(
                    policy.allows(module, name),
                    "refused global {module}.{name} in the graph"
                );
            }
            Obj::Str(s) => assert!(s.len() <= limits.max_string_len.saturating_mul(4)),
            Obj::Bytes(b) => assert!(b.len() <= limits.max_string_len),
            Obj::BigInt(b) => assert!(b.len() <= limits.max_bigint_bytes),
            _ => {}
        }
    }

    // Walk everything reachable from the root, iteratively, once each.
    let mut seen = vec![false; n];
    let mut todo = vec![u.root()];
    let mut touched = 0usize;
    let mut sum = 0u64;
    while let Some(id) = todo.pop() {
        let Some(slot) = seen.get_mut(id) else {
            panic!("id {id} outside the arena");
        };
        if std::mem::replace(slot, true) {
            continue;
        }
        touched += 1;
        let obj = u.get(id).expect("checked above");
        sum = sum.wrapping_add(touch(obj));
        for_each_child(obj, |c| todo.push(c));
    }
    assert!(touched >= 1 && touched <= n);
    std::hint::black_box(sum);

    let depth = reverse_order_depth(u);
    assert!(
        depth <= limits.max_depth,
        "a chain of {depth} containers under max_depth {}",
        limits.max_depth
    );

    // Bytes after STOP are ignored.
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\x80\x05garbage(.");
    let again = vm::unpickle(&longer, policy, limits).expect("trailing bytes after STOP broke it");
    assert_eq!(
        again.consumed(),
        consumed,
        "trailing bytes changed consumed()"
    );
    assert!(same_graph(&again, u), "trailing bytes changed the graph");
}

/// The longest chain of containers from the root found by an iterative
/// depth-first search that expands each object once, visits children last
/// to first, and cuts edges back to objects still being expanded (cycles).
/// Every chain it measures exists in the graph (no object repeats), so it
/// is a lower bound on the longest chain.
fn reverse_order_depth(u: &Unpickled) -> usize {
    const UNSEEN: usize = usize::MAX;
    const OPEN: usize = usize::MAX - 1;
    let is_container = |o: &Obj| {
        matches!(
            o,
            Obj::Tuple(_)
                | Obj::List(_)
                | Obj::Dict { .. }
                | Obj::Set(_)
                | Obj::FrozenSet(_)
                | Obj::Call { .. }
                | Obj::PersistentId(_)
        )
    };
    let children = |id: ObjId| {
        let mut c = Vec::new();
        if let Some(o) = u.get(id) {
            for_each_child(o, |x| c.push(x));
        }
        c
    };
    let mut height = vec![UNSEEN; u.objects().len()];
    // (object, its children not yet visited (popped from the back), best)
    let mut path: Vec<(ObjId, Vec<ObjId>, usize)> = vec![(u.root(), children(u.root()), 0)];
    height[u.root()] = OPEN;
    while let Some((node, todo, best)) = path.last_mut() {
        match todo.pop() {
            Some(child) => match height[child] {
                UNSEEN => {
                    height[child] = OPEN;
                    path.push((child, children(child), 0));
                }
                OPEN => {}
                h => *best = (*best).max(h),
            },
            None => {
                let node = *node;
                let h = *best + usize::from(u.get(node).is_some_and(is_container));
                height[node] = h;
                path.pop();
                if let Some((_, _, b)) = path.last_mut() {
                    *b = (*b).max(h);
                }
            }
        }
    }
    height[u.root()]
}

/// Calls `f` with every id `obj` refers to.
fn for_each_child(obj: &Obj, mut f: impl FnMut(ObjId)) {
    match obj {
        Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) | Obj::FrozenSet(v) => {
            v.iter().copied().for_each(f);
        }
        Obj::Dict { items, state } => {
            for &(k, v) in items {
                f(k);
                f(v);
            }
            state.iter().copied().for_each(f);
        }
        Obj::Call { func, args, state } => {
            f(*func);
            f(*args);
            state.iter().copied().for_each(f);
        }
        Obj::PersistentId(pid) => f(*pid),
        _ => {}
    }
}

/// A cheap digest of one object's own contents (not its children).
fn touch(obj: &Obj) -> u64 {
    let bytes = |b: &[u8]| {
        b.iter().fold(b.len() as u64, |s, &x| {
            s.wrapping_mul(31).wrapping_add(u64::from(x))
        })
    };
    match obj {
        Obj::None => 1,
        Obj::Bool(b) => 2 + u64::from(*b),
        Obj::Int(i) => *i as u64,
        Obj::BigInt(b) | Obj::Bytes(b) => bytes(b),
        Obj::Float(f) => f.to_bits(),
        Obj::Str(s) => bytes(s.as_bytes()),
        Obj::Global { module, name } => bytes(module.as_bytes()) ^ bytes(name.as_bytes()),
        Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) | Obj::FrozenSet(v) => v.len() as u64,
        Obj::Dict { items, .. } => items.len() as u64,
        other => other.kind().len() as u64,
    }
}

/// Graph equality with floats compared by bits (a NaN equals itself).
fn same_graph(a: &Unpickled, b: &Unpickled) -> bool {
    a.root() == b.root()
        && a.consumed() == b.consumed()
        && a.objects().len() == b.objects().len()
        && a.objects()
            .iter()
            .zip(b.objects())
            .all(|(x, y)| match (x, y) {
                (Obj::Float(p), Obj::Float(q)) => p.to_bits() == q.to_bits(),
                (x, y) => x == y,
            })
}
