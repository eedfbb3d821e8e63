//! `limit_panic_reports`: a panic loop writes a bounded number of reports.
//! (Its own test binary: the panic hook is process-wide.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn a_panic_loop_reaches_the_hook_a_bounded_number_of_times() {
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    std::panic::set_hook(Box::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    keayl_cable::socket::limit_panic_reports(5);
    for _ in 0..5_000 {
        let _ = std::panic::catch_unwind(|| panic!("boom"));
    }
    let reached = reached.load(Ordering::Relaxed);
    // At most 5 a second (the loop may straddle a second boundary or two).
    assert!(
        (5..=15).contains(&reached),
        "reached the hook {reached} times"
    );
    assert_eq!(
        keayl_cable::socket::suppressed_panic_reports() as usize,
        5_000 - reached
    );
}
