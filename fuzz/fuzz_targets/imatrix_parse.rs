//! Fuzzes `ImportanceMatrix::from_bytes` (GGUF and legacy `.dat` imatrix
//! files): never panics; whatever parses answers every lookup consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weightkit_io::imatrix::ImportanceMatrix;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = ImportanceMatrix::from_bytes(data) else {
        return;
    };
    let names: Vec<String> = m.names().map(str::to_owned).collect();
    assert_eq!(names.len(), m.len());
    for name in &names {
        let v = m.get(name).expect("a listed name has a vector");
        assert!(v.iter().all(|x| x.is_finite()), "non-finite importance for {name}");
        // A lookup for a plausible shape never panics.
        let _ = m.for_tensor(name, &[1, v.len().max(1)]);
    }
});
