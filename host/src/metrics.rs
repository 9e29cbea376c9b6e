//! Metrics: fixed-bucket histograms kept by the data plane (plain counters, no locks, no allocation per
//! observation); `control::render` turns them into Prometheus text on the control thread.

/// A histogram with fixed upper bounds (seconds), as Prometheus wants it: cumulative counts on rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    /// Upper bounds, ascending (the `+Inf` bucket is implied).
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds` for `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// Bounds for round-trip times: 1 ms to 10 s.
pub const RTT_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bounds for the loop's pass time: 10 µs to 100 ms.
pub const PASS_BOUNDS: &[f64] = &[0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1];

impl Buckets {
    /// Empty, with `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Buckets { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    /// Counts one observation of `v` seconds.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::new(RTT_BOUNDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_inf_takes_the_rest() {
        let mut h = Buckets::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        assert_eq!(h.counts, vec![1, 1, 1]);
        assert_eq!((h.count, h.sum), (3, 7.55));
    }
}
