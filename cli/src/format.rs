//! Terminal output: aligned tables, Docker-style sizes, ages and short IDs.

use std::time::{SystemTime, UNIX_EPOCH};

pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A progress line on stderr when it is a terminal: bytes so far, and a
/// percentage when the total is known.
pub fn progress(what: &str, done: u64, total: Option<u64>) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    match total {
        Some(t) if t > 0 => eprint!("\r{what} {} / {} ({}%)   ", human_size(done), human_size(t), done * 100 / t),
        _ => eprint!("\r{what} {}   ", human_size(done)),
    }
}

pub fn progress_done() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// Decimal units, as Docker prints sizes: 4.26MB, 512B.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string() + UNITS[unit]
    }
}

/// The first 12 hex digits of an ID (`sha256:` dropped).
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} seconds ago"),
        s if s < 3600 => format!("{} minutes ago", s / 60),
        s if s < 86400 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An RFC 3339 time as an age; the text itself if it does not parse.
pub fn age(rfc3339: &str) -> String {
    match parse_rfc3339(rfc3339) {
        Some(t) => ago(now_secs() - t),
        None => rfc3339.to_string(),
    }
}

pub fn age_nanos(nanos: i64) -> String {
    ago(now_secs() - nanos / 1_000_000_000)
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0, 4)?, num(5, 7)?, num(8, 10)?, num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let mut secs = days * 86400 + h * 3600 + mi * 60 + se;
    let tz = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if let Some(off) = tz.strip_prefix('+').or_else(|| tz.strip_prefix('-')) {
        let sign = if tz.starts_with('+') { 1 } else { -1 };
        let oh: i64 = off.get(0..2)?.parse().ok()?;
        let om: i64 = off.get(3..5)?.parse().ok()?;
        secs -= sign * (oh * 3600 + om * 60);
    }
    Some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ids_times_and_tables() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Some(86400));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5+01:00"), Some(1_700_000_000 - 3600));
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A     LONGER\nxyz   1\n");
    }
}
