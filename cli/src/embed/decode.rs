//! The embedding job's producer: decode and preprocess the files, in parallel and
//! without a barrier per batch, and hand out batches in path order.
//!
//! Each file is one rayon task. Tasks are started up to a window of images past
//! the batch being assembled, so while a slow file (a 12 MP photo among
//! thumbnails) finishes, the other threads already decode the next batch: one
//! slow file delays its own batch, not the decoding behind it. The window also
//! keeps every thread busy at batch 1 (memory models), where a batch-at-a-time
//! producer decodes on one thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// A decoded batch: its index and (index of the path, decoded value) for each of
/// its files that could be read.
pub struct Decoded<P> {
    pub index: usize,
    pub images: Vec<(usize, P)>,
}

/// Where the producer sends what it makes.
pub trait Sink<P> {
    /// A batch with at least one image; false when nobody takes batches any more.
    fn batch(&mut self, batch: Decoded<P>) -> bool;
    /// A batch whose every file was skipped; false as for [`Sink::batch`].
    fn empty(&mut self, index: usize) -> bool;
    /// A file skipped (unreadable or not an image), reported in path order.
    fn skipped(&mut self, path: &std::path::Path, why: &str);
}

/// What the producer did: the files it loaded, and where its time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Produced {
    /// Files skipped, with their errors, in path order.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files loaded (decoded and preprocessed, or failed while at it).
    pub loaded: usize,
    /// The threads' time in those loads, summed (seconds).
    pub load_seconds: f64,
}

/// The images decoded (or being decoded) ahead of the batch being assembled: at
/// least a batch, and two per thread.
pub fn window(batch_size: usize) -> usize {
    batch_size.max(2 * rayon::current_num_threads())
}

/// How the paths are cut into batches, and how far decoding runs ahead.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Images per batch.
    pub batch_size: usize,
    /// The first batch to make (a resumed job's; 0 otherwise).
    pub first_batch: usize,
    /// Images decoded (or being decoded) at most ahead of the batch being
    /// assembled: [`window`].
    pub window: usize,
}

/// Decode `paths` with `load` on the rayon pool and send the batches of `plan`
/// in order to `sink`. A file that fails to load is skipped (reported to the sink), or with
/// `strict` ends the job with its error. A panic while loading a file counts as
/// that file's error. `stop` set (elsewhere, or here on a strict failure) ends
/// the loop before the next batch; the files already started are not waited for
/// beyond their own load.
pub fn produce<P, L, S>(
    paths: &[PathBuf],
    plan: Plan,
    strict: bool,
    stop: &AtomicBool,
    load: L,
    sink: &mut S,
) -> Result<Produced, String>
where
    P: Send,
    L: Fn(&std::path::Path) -> Result<P, String> + Sync,
    S: Sink<P>,
{
    let batch_size = plan.batch_size.max(1);
    let (first_batch, window) = (plan.first_batch, plan.window.max(1));
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<P, String>, Option<f64>)>();
    let load = &load;
    // In place: this thread assembles batches (and may block on the sink) while
    // the pool's threads decode; the scope's end waits for the tasks started.
    rayon::in_place_scope(|scope| {
        let mut started = first_batch.saturating_mul(batch_size).min(paths.len());
        let mut ready: HashMap<usize, Result<P, String>> = HashMap::new();
        let mut out = Produced::default();
        for (index, chunk) in paths.chunks(batch_size).enumerate().skip(first_batch) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let base = index * batch_size;
            let end = base + chunk.len();
            let horizon = end.saturating_add(window).min(paths.len());
            while started < horizon {
                let (i, tx) = (started, done_tx.clone());
                scope.spawn(move |_| {
                    let (r, took) = if stop.load(Ordering::Relaxed) {
                        (Err("not decoded: the job stopped".to_string()), None)
                    } else {
                        let t = Instant::now();
                        let r = load_caught(load, &paths[i]);
                        (r, Some(t.elapsed().as_secs_f64()))
                    };
                    let _ = tx.send((i, r, took));
                });
                started += 1;
            }
            // Every task sends exactly once (panics are caught), and this thread
            // holds a sender: the receive cannot fail, nor wait forever.
            while (base..end).any(|i| !ready.contains_key(&i)) {
                match done_rx.recv() {
                    Ok((i, r, took)) => {
                        if let Some(t) = took {
                            out.loaded += 1;
                            out.load_seconds += t;
                        }
                        ready.insert(i, r);
                    }
                    Err(_) => return Err("the decoding tasks stopped answering".to_string()),
                }
            }
            if stop.load(Ordering::Relaxed) {
                break; // files not decoded because of the stop are not skips
            }
            let mut images = Vec::with_capacity(chunk.len());
            for (i, path) in (base..end).zip(chunk) {
                match ready.remove(&i) {
                    Some(Ok(px)) => images.push((i, px)),
                    Some(Err(e)) if strict => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("{e} (--strict)"));
                    }
                    Some(Err(e)) => {
                        sink.skipped(path, &e);
                        out.skipped.push((path.clone(), e));
                    }
                    None => {}
                }
            }
            let sent = if images.is_empty() {
                sink.empty(index)
            } else {
                sink.batch(Decoded { index, images })
            };
            if !sent {
                // Nobody takes batches: the job stopped, and its answers say why.
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        Ok(out)
    })
}

/// `load(path)`, with a panic turned into an error naming the file.
fn load_caught<P, L>(load: &L, path: &std::path::Path) -> Result<P, String>
where
    L: Fn(&std::path::Path) -> Result<P, String>,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(path))).unwrap_or_else(|_| {
        Err(format!(
            "{}: decoding panicked (a bug in the decoder; please report the file)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// Collects what the producer sends; refuses batches after `accept` of them.
    #[derive(Default)]
    struct Collect {
        batches: Vec<(usize, Vec<(usize, String)>)>,
        skipped: Vec<String>,
        accept: Option<usize>,
    }

    impl Sink<String> for Collect {
        fn batch(&mut self, b: Decoded<String>) -> bool {
            if self.accept.is_some_and(|n| self.batches.len() >= n) {
                return false;
            }
            self.batches.push((b.index, b.images));
            true
        }
        fn empty(&mut self, index: usize) -> bool {
            self.batch(Decoded {
                index,
                images: Vec::new(),
            })
        }
        fn skipped(&mut self, path: &Path, why: &str) {
            self.skipped.push(format!("{}|{why}", path.display()));
        }
    }

    fn plan(batch_size: usize, window: usize) -> Plan {
        Plan {
            batch_size,
            first_batch: 0,
            window,
        }
    }

    fn paths(n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| PathBuf::from(format!("f{i}"))).collect()
    }

    fn number(p: &Path) -> usize {
        p.to_str().unwrap()[1..].parse().unwrap()
    }

    /// Files whose number is a multiple of 7 fail, of 5 panic; the time each
    /// takes varies (so they finish out of order).
    fn flaky(p: &Path) -> Result<String, String> {
        let i = number(p);
        std::thread::sleep(Duration::from_micros(((i * 7919) % 13) as u64 * 200));
        if i % 7 == 3 {
            Err(format!("{}: broken", p.display()))
        } else if i % 5 == 4 {
            panic!("decoder bug");
        } else {
            Ok(format!("px{i}"))
        }
    }

    #[test]
    fn batches_come_in_path_order_with_failures_skipped() {
        for (n, batch, window) in [(23, 4, 1), (23, 4, 9), (10, 1, 3), (5, 8, 2), (0, 3, 3)] {
            let stop = AtomicBool::new(false);
            let mut sink = Collect::default();
            let ps = paths(n);
            let done = produce(&ps, plan(batch, window), false, &stop, flaky, &mut sink).unwrap();
            let skipped = done.skipped;
            assert_eq!(done.loaded, n, "every file loaded once");
            // Expected, from the rule itself: batch b holds files b·batch.. that load.
            let want: Vec<(usize, Vec<(usize, String)>)> = (0..n.div_ceil(batch))
                .map(|b| {
                    let images = (b * batch..((b + 1) * batch).min(n))
                        .filter(|i| i % 7 != 3 && i % 5 != 4)
                        .map(|i| (i, format!("px{i}")))
                        .collect();
                    (b, images)
                })
                .collect();
            assert_eq!(sink.batches, want, "n {n} batch {batch} window {window}");
            let bad: Vec<usize> = (0..n).filter(|i| i % 7 == 3 || i % 5 == 4).collect();
            let names: Vec<usize> = skipped.iter().map(|(p, _)| number(p)).collect();
            assert_eq!(names, bad, "skipped in path order");
            assert_eq!(sink.skipped.len(), bad.len());
            for (s, i) in sink.skipped.iter().zip(&bad) {
                let why = if i % 7 == 3 { "broken" } else { "panicked" };
                assert!(s.starts_with(&format!("f{i}|")) && s.contains(why), "{s}");
            }
            assert!(!stop.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn strict_stops_at_the_first_failure_in_path_order() {
        let stop = AtomicBool::new(false);
        let mut sink = Collect::default();
        // f3 fails (broken) first in path order, though f4's panic may come first.
        let err = produce(&paths(40), plan(2, 8), true, &stop, flaky, &mut sink).unwrap_err();
        assert!(
            err.starts_with("f3: broken") && err.ends_with("(--strict)"),
            "{err}"
        );
        assert_eq!(sink.batches.len(), 1, "only the batch before f3's");
        assert!(stop.load(Ordering::Relaxed));
    }

    #[test]
    fn a_refused_batch_or_a_stop_ends_the_loop() {
        let stop = AtomicBool::new(false);
        let mut sink = Collect {
            accept: Some(2),
            ..Collect::default()
        };
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = |p: &Path| {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok(p.display().to_string())
        };
        produce(&paths(1000), plan(3, 4), false, &stop, load, &mut sink).unwrap();
        assert_eq!(sink.batches.len(), 2);
        assert!(stop.load(Ordering::Relaxed), "a refused batch sets stop");
        // The window bounds the work started: 3 batches + 4 images ahead.
        assert!(loads.load(Ordering::Relaxed) <= 13, "{loads:?}");

        let stop = AtomicBool::new(true);
        let mut sink = Collect::default();
        produce(&paths(10), plan(3, 4), false, &stop, flaky, &mut sink).unwrap();
        assert!(sink.batches.is_empty(), "stopped before the first batch");
    }

    /// The point of the window: a slow file delays its own batch only. File 0
    /// waits (up to 20 s) until the other 11 files, in this batch and the next
    /// two, have loaded; a producer that decodes batch by batch never starts the
    /// next batches while file 0 runs, and fails this.
    #[test]
    fn a_slow_file_does_not_hold_up_the_next_batches_decoding() {
        if rayon::current_num_threads() < 2 {
            return; // one thread decodes in order whatever the window
        }
        let stop = AtomicBool::new(false);
        let mut sink = Collect::default();
        let loaded = std::sync::atomic::AtomicUsize::new(0);
        let load = |p: &Path| {
            let i = number(p);
            if i == 0 {
                let t = std::time::Instant::now();
                while loaded.load(Ordering::SeqCst) < 11 {
                    if t.elapsed() > std::time::Duration::from_secs(20) {
                        return Err("the other files were not decoded meanwhile".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            loaded.fetch_add(1, Ordering::SeqCst);
            Ok(format!("px{i}"))
        };
        let done = produce(&paths(12), plan(4, 8), false, &stop, load, &mut sink).unwrap();
        assert!(done.skipped.is_empty(), "{:?}", done.skipped);
        assert_eq!(sink.batches.len(), 3);
    }

    /// The load time reported holds at least what the loads took (sleeps are
    /// lower bounds, so this cannot pass by luck of the clock).
    #[test]
    fn load_time_is_counted() {
        let stop = AtomicBool::new(false);
        let load = |p: &Path| {
            std::thread::sleep(Duration::from_millis(10));
            Ok(p.display().to_string())
        };
        let mut sink = Collect::default();
        let done = produce(&paths(9), plan(2, 3), false, &stop, load, &mut sink).unwrap();
        assert_eq!((sink.batches.len(), done.loaded), (5, 9));
        assert!(done.load_seconds >= 0.090, "{done:?}");
    }

    /// A resumed job starts at its first batch: earlier files are not loaded.
    #[test]
    fn a_resumed_job_starts_at_its_first_batch() {
        let stop = AtomicBool::new(false);
        let mut sink = Collect::default();
        let early = std::sync::atomic::AtomicUsize::new(0);
        let load = |p: &Path| {
            if number(p) < 6 {
                early.fetch_add(1, Ordering::Relaxed);
            }
            Ok(p.display().to_string())
        };
        let plan = Plan {
            batch_size: 3,
            first_batch: 2,
            window: 2,
        };
        let done = produce(&paths(10), plan, false, &stop, load, &mut sink).unwrap();
        let got: Vec<(usize, Vec<usize>)> = sink
            .batches
            .iter()
            .map(|(b, imgs)| (*b, imgs.iter().map(|(i, _)| *i).collect()))
            .collect();
        assert_eq!(got, [(2, vec![6, 7, 8]), (3, vec![9])]);
        assert_eq!(done.loaded, 4);
        assert_eq!(
            early.load(Ordering::Relaxed),
            0,
            "files before batch 2 loaded"
        );
        // Past the end: nothing to do.
        let plan = Plan {
            first_batch: 4,
            ..plan
        };
        let done = produce(
            &paths(10),
            plan,
            false,
            &stop,
            load,
            &mut Collect::default(),
        );
        assert_eq!(done.unwrap().loaded, 0);
    }
}
