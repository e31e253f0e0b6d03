//! Data-parallel map over a slice, used for the per-reading and per-frame
//! work of building and verifying reports (Merkle leaves, device
//! signatures). With the `std` feature the slice is split into one chunk per
//! available core (at most 8) on scoped threads; without it, or for small
//! inputs, it runs sequentially. Output order is input order either way.

use alloc::vec::Vec;

/// Below this many items the work runs on the calling thread.
#[cfg(feature = "std")]
const MIN_PARALLEL: usize = 2048;

/// `items.iter().map(f).collect()`, possibly on several threads.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    #[cfg(feature = "std")]
    {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        if threads > 1 && items.len() >= MIN_PARALLEL {
            let chunk = items.len().div_ceil(threads);
            let f = &f;
            return std::thread::scope(|s| {
                let handles: Vec<_> = items
                    .chunks(chunk)
                    .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
                    .collect();
                let mut out = Vec::with_capacity(items.len());
                for h in handles {
                    out.extend(h.join().expect("a worker thread does not panic"));
                }
                out
            });
        }
    }
    items.iter().map(f).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order_for_small_and_large_inputs() {
        for n in [0usize, 5, 10_000] {
            let v: alloc::vec::Vec<usize> = (0..n).collect();
            assert_eq!(
                super::map(&v, |x| x * 2),
                v.iter().map(|x| x * 2).collect::<alloc::vec::Vec<_>>()
            );
        }
    }
}
