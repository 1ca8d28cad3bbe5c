//! A generated PyTorch zip checkpoint for the pickle benchmarks, written by
//! our `TorchWriter` with the same tensors and bytes as a safetensors file
//! written by [`crate::generate_file`].

use std::io;
use std::path::{Path, PathBuf};

use weightkit_core::TensorInfo;
use weightkit_pickle::{TorchFile, TorchWriter};

use crate::{bench_dir, write_weights};

/// Writes `infos` to `path` with [`TorchWriter`] (torch 2.x's zip layout:
/// every storage stored, 64-byte aligned), with the data
/// [`crate::generate_file`] writes for the same tensors.
pub fn generate_torch_file(path: &Path, infos: Vec<TensorInfo>) -> io::Result<PathBuf> {
    let plan = infos.clone();
    let w = TorchWriter::create(path, infos).map_err(io::Error::other)?;
    write_weights(w, &plan)
}

/// Returns the path of a zip checkpoint holding `infos` (as written by
/// [`generate_torch_file`]) named `name` in [`bench_dir`], generating it
/// unless a file that opens to exactly these tensors, in this order, is
/// already there. (`TorchWriter` renames a complete temporary file into
/// place, and opening checks that every storage is long enough, so a file
/// that opens this way is complete.)
pub fn ensure_torch_file(name: &str, infos: Vec<TensorInfo>) -> io::Result<PathBuf> {
    ensure_torch_file_in(&bench_dir()?, name, infos)
}

/// As [`ensure_torch_file`], in `dir`.
pub fn ensure_torch_file_in(dir: &Path, name: &str, infos: Vec<TensorInfo>) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let reusable = TorchFile::open(&path)
        .is_ok_and(|f| f.container() == "zip" && f.tensors() == infos.as_slice());
    if !reusable {
        eprintln!(
            "generating {} ({:.2} GiB of tensor data) ...",
            path.display(),
            crate::data_len(&infos) as f64 / f64::from(1u32 << 30)
        );
        generate_torch_file(&path, infos)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use weightkit_core::DType;
    use weightkit_safetensors::SafetensorsFile;

    use super::*;
    use crate::ensure_file_in;

    #[test]
    fn torch_and_safetensors_files_hold_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let infos = vec![
            TensorInfo::new("b.weight", DType::BF16, [300, 7]),
            TensorInfo::new("a.norm", DType::F32, [7]),
        ];
        let pt = ensure_torch_file_in(dir.path(), "t.pt", infos.clone()).unwrap();
        let st = ensure_file_in(dir.path(), "t.safetensors", infos.clone()).unwrap();
        let (pt, st) = (
            TorchFile::open(&pt).unwrap(),
            SafetensorsFile::open(&st).unwrap(),
        );
        assert_eq!(pt.tensors(), infos.as_slice());
        for info in &infos {
            let a = pt.tensor(&info.name).unwrap();
            let b = st.tensor(&info.name).unwrap();
            assert_eq!(a.view().data(), b.data(), "{}", info.name);
        }
    }

    #[test]
    fn ensure_torch_file_reuses_a_matching_file() {
        let dir = tempfile::tempdir().unwrap();
        let infos = vec![TensorInfo::new("w", DType::F32, [64])];
        let path = ensure_torch_file_in(dir.path(), "t.pt", infos.clone()).unwrap();
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        ensure_torch_file_in(dir.path(), "t.pt", infos).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        // A different layout is regenerated.
        let other = vec![TensorInfo::new("v", DType::BF16, [8])];
        ensure_torch_file_in(dir.path(), "t.pt", other.clone()).unwrap();
        assert_eq!(TorchFile::open(&path).unwrap().tensors(), other.as_slice());
    }
}
