//! Fuzzes `SafeTensors::parse` with arbitrary bytes.
//!
//! The parser must never panic; and whatever it accepts must be fully
//! usable and survive a round trip: every tensor view is reachable (by
//! position and by name) and readable; re-encoding with the declared layout
//! parses to the same tensor infos (same order), metadata and bytes;
//! re-encoding with `serialize` (the `safetensors` library's layout, which
//! may reorder) parses to the same tensors by name, and re-encoding that
//! reproduces it byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weightkit_core::TensorView;
use weightkit_safetensors::{Layout, SafeTensors, serialize, serialize_with_layout};

fuzz_target!(|data: &[u8]| {
    let Ok(st) = SafeTensors::parse(data) else {
        return;
    };

    let n = st.tensors().len();
    let mut views: Vec<(&str, TensorView<'_>)> = Vec::with_capacity(n);
    let mut sum = 0u64;
    for (i, info) in st.tensors().iter().enumerate() {
        let view = st.tensor_at(i).expect("tensor_at(i) of a parsed tensor");
        assert_eq!(view.dtype(), info.dtype, "tensor {i} dtype");
        assert_eq!(view.shape(), &info.shape, "tensor {i} shape");
        assert_eq!(
            Some(view.data().len()),
            info.byte_len().ok(),
            "tensor {i} length"
        );
        let by_name = st
            .tensor(&info.name)
            .expect("tensor(name) of a parsed tensor");
        assert_eq!(by_name.data(), view.data(), "tensor {i} by name");
        sum = view
            .data()
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        views.push((info.name.as_str(), view));
    }
    assert!(st.tensor_at(n).is_err(), "tensor_at past the end");
    std::hint::black_box(sum);

    // Declared layout: the same order, so the same infos and bytes in place.
    let bytes = serialize_with_layout(&views, st.metadata(), Layout::Declared)
        .expect("re-serialise a parsed file (declared layout)");
    let again = SafeTensors::parse(&bytes).expect("parse our own serialisation");
    assert_eq!(
        again.tensors(),
        st.tensors(),
        "tensor infos after round trip"
    );
    assert_eq!(again.metadata(), st.metadata(), "metadata after round trip");
    for (i, (name, view)) in views.iter().enumerate() {
        let v = again.tensor_at(i).expect("tensor_at(i) after round trip");
        assert_eq!(v.data(), view.data(), "bytes of `{name}` after round trip");
    }

    // Default (`safetensors` library) layout: may reorder, so compare by
    // name; and serialising its parse again must reproduce it byte for byte.
    let sorted = serialize(&views, st.metadata()).expect("re-serialise a parsed file");
    let again = SafeTensors::parse(&sorted).expect("parse our own serialisation");
    assert_eq!(again.tensors().len(), n, "tensor count after round trip");
    assert_eq!(again.metadata(), st.metadata(), "metadata after round trip");
    let mut again_views: Vec<(&str, TensorView<'_>)> = Vec::with_capacity(n);
    for (i, info) in again.tensors().iter().enumerate() {
        let v = again.tensor_at(i).expect("tensor_at(i) after round trip");
        let orig = st.tensor(&info.name).expect("round trip invented a tensor");
        assert_eq!(v.dtype(), orig.dtype(), "dtype of `{}`", info.name);
        assert_eq!(v.shape(), orig.shape(), "shape of `{}`", info.name);
        assert_eq!(v.data(), orig.data(), "bytes of `{}`", info.name);
        again_views.push((info.name.as_str(), v));
    }
    let twice = serialize(&again_views, again.metadata()).expect("re-serialise our output");
    assert!(twice == sorted, "serialisation is not a fixed point");
});
