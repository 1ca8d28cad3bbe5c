//! Number formatting for human output.

/// `1234567` -> `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in 1024-based units: `"512 B"`, `"241.6 KiB"`, `"1.5 GiB"`.
pub(crate) fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss is irrelevant at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        // Switch units before rounding would print "1024.0".
        if value < 1023.95 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// `"247,424 bytes (241.6 KiB)"`; small counts without the redundant unit.
pub(crate) fn bytes_with_unit(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{} bytes", thousands(bytes))
    } else {
        format!("{} bytes ({})", thousands(bytes), binary_size(bytes))
    }
}

/// Seconds for a summary: `"0.04 s"`, `"12.3 s"`, `"2 min 05 s"`.
pub(crate) fn duration(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        // Whole seconds; the value is positive and far below u64::MAX.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let s = seconds.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(123_712), "123,712");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(binary_size(0), "0 B");
        assert_eq!(binary_size(1023), "1023 B");
        assert_eq!(binary_size(1024), "1.0 KiB");
        assert_eq!(binary_size(247_424), "241.6 KiB");
        assert_eq!(binary_size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(binary_size(3 << 30), "3.0 GiB");
        assert_eq!(binary_size(u64::MAX), "16.0 EiB");
        assert_eq!(bytes_with_unit(12), "12 bytes");
        assert_eq!(bytes_with_unit(494_848), "494,848 bytes (483.2 KiB)");
        assert_eq!(duration(0.0412), "0.04 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(125.2), "2 min 05 s");
    }
}
