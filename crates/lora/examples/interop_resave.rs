//! Opens a PEFT adapter directory and saves it again with
//! [`Adapter::save`], for `cargo xtask interop` to load the copy with real
//! PEFT and compare it with the original.
//!
//! Usage: `cargo run -p weightkit-lora --example interop_resave -- IN_DIR OUT_DIR`

use std::path::PathBuf;

use weightkit_lora::Adapter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: interop_resave IN_DIR OUT_DIR";
    let input = PathBuf::from(args.next().ok_or(usage)?);
    let output = PathBuf::from(args.next().ok_or(usage)?);
    let adapter = Adapter::open(&input)?;
    adapter.save(&output)?;
    let dtypes: std::collections::BTreeSet<String> = adapter
        .peft_tensors()
        .map(|t| t.dtype.to_string())
        .collect();
    println!(
        "re-saved {} -> {} ({} tensors, {} parameters, dtypes {dtypes:?})",
        input.display(),
        output.display(),
        adapter.peft_tensors().len(),
        adapter.parameter_count()
    );
    Ok(())
}
