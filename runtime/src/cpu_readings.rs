//! CPU rates from cumulative CPU time: the previous reading per container
//! or pod, kept between stats calls.

use std::collections::HashMap;
use std::sync::Mutex;

/// The last CPU reading (time, cumulative nanoseconds) per container or pod:
/// a CPU rate is the difference between two readings, as kubelet's
/// `usage_nano_cores` expects from the runtime.
#[derive(Default)]
pub struct CpuReadings(Mutex<HashMap<String, (i64, u64)>>);

impl CpuReadings {
    /// Records a reading and returns the rate since the previous one, in
    /// nanocores (0 for the first reading).
    pub(crate) fn rate(&self, key: &str, at: i64, cpu: u64) -> u64 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let rate = match map.get(key) {
            Some(&(t0, c0)) if at > t0 && cpu >= c0 => ((cpu - c0) as u128 * 1_000_000_000 / (at - t0) as u128) as u64,
            _ => 0,
        };
        map.insert(key.to_string(), (at, cpu));
        rate
    }

    /// Forgets readings of containers and pods that no longer exist.
    pub(crate) fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| alive(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_is_the_difference_of_two_readings() {
        let r = CpuReadings::default();
        assert_eq!(r.rate("c", 1_000_000_000, 5_000_000_000), 0, "first reading");
        // Half a CPU second over one second: 0.5 cores.
        assert_eq!(r.rate("c", 2_000_000_000, 5_500_000_000), 500_000_000);
        r.retain(|_| false);
        assert_eq!(r.rate("c", 3_000_000_000, 6_000_000_000), 0, "forgotten");
    }
}
