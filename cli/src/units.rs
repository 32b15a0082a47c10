//! Human-readable numbers.

/// `1.5 MiB`, `512 B`.
pub fn bytes(b: f64) -> String {
    let neg = b < 0.0;
    let mut v = b.abs();
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    let sign = if neg { "-" } else { "" };
    if u == 0 {
        format!("{sign}{:.0} B", v)
    } else if v >= 100.0 {
        format!("{sign}{:.0} {}", v, units[u])
    } else {
        format!("{sign}{:.1} {}", v, units[u])
    }
}

/// `+1.5 MiB` / `-2.0 KiB` / `0 B`.
pub fn signed_bytes(b: f64) -> String {
    if b > 0.0 {
        format!("+{}", bytes(b))
    } else {
        bytes(b)
    }
}

/// Objects: estimates rounded to whole numbers.
pub fn count(c: f64) -> String {
    format!("{}", c.round() as i64)
}

pub fn signed_count(c: f64) -> String {
    let r = c.round() as i64;
    if r > 0 {
        format!("+{r}")
    } else {
        format!("{r}")
    }
}

pub fn percent(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "0.0%".to_string()
    } else {
        format!("{:.1}%", 100.0 * part / whole)
    }
}

/// Parses `512K`, `4M`, `1G`, `123` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(200.0 * 1048576.0), "200 MiB");
        assert_eq!(signed_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(signed_bytes(2048.0), "+2.0 KiB");
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("x"), None);
    }
}
