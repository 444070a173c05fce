//! Concurrent berth invocations on one store.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};

use berth_e2e::{require_root, Berth};

#[test]
fn parallel_runs_all_succeed() {
    require_root!();
    let b = Berth::with_busybox();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let b = &b;
                s.spawn(move || {
                    let msg = format!("run-{i}");
                    let out = b.run(&["run", "--rm", "busybox", "echo", &msg]);
                    (i, out)
                })
            })
            .collect();
        let ps = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                b.ok(&["ps"]);
                b.ok(&["ps", "-a"]);
                n += 1;
            }
            n
        });
        for handle in runs {
            let (i, out) = handle.join().unwrap();
            out.assert_success();
            assert_eq!(out.stdout, format!("run-{i}\n"), "{out}");
        }
        done.store(true, Ordering::SeqCst);
        assert!(ps.join().unwrap() > 0);
    });
    assert!(b.all_ids().is_empty(), "--rm containers must all be gone");
}

#[test]
fn parallel_named_containers_get_distinct_ids() {
    require_root!();
    let b = Berth::with_busybox();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let b = &b;
                s.spawn(move || {
                    b.run_detached(&["--name", &format!("c{i}"), "busybox", "sleep", "1000"])
                })
            })
            .collect();
        let mut ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4);
    });
    for i in 0..4 {
        assert_eq!(b.inspect(&format!("c{i}"))["Name"], format!("/c{i}"));
    }
    let ids: Vec<String> = b.all_ids();
    assert_eq!(ids.len(), 4);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    b.ok(&args);
    assert!(b.all_ids().is_empty());
}
