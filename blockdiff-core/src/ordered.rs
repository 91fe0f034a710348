//! An ordered parallel map with bounded memory: jobs are made one by one on
//! the calling thread, worked on by a pool of threads, and finished on the
//! calling thread in the order they were made.
//!
//! Only `work` runs on the pool; `make` and `finish` run on the calling
//! thread, so they may hold what is not `Send` (a `&mut dyn Progress`, the
//! target being written). A fixed set of job buffers circulates: a job is
//! made only into a buffer that `finish` gave back, so at most `spares`
//! jobs exist whatever the input, and their buffers are reused.
//!
//! Errors travel inside the jobs: a job that `make` or `work` found bad is
//! reported by `finish`, in order, so the first error in the order the jobs
//! were made wins, whichever thread found it first. When `finish` fails the
//! channels are dropped: every worker stops after the job it holds, and
//! none is left blocked.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::thread;

use crossbeam_channel::unbounded;

/// What a worker sends back: the job and its sequence number, or the panic
/// that `work` raised (resumed on the calling thread).
type Done<J> = (u64, thread::Result<J>);

/// Runs jobs through `work` on `threads` threads (inline on the calling
/// thread when `threads` is 0 or 1) and gives each to `finish` in the order
/// `make` made it.
///
/// - `spares`: the job buffers; their number bounds the jobs in flight
///   (at least one is used).
/// - `make` fills a buffer with the next job and returns `true`, or returns
///   `false` when there is none left (it is not called again).
/// - `init` makes each worker's own state (a decompression context).
/// - `finish` consumes a worked job; its first error ends the run and is
///   returned.
pub(crate) fn run<J, W, E>(
    threads: usize,
    mut spares: Vec<J>,
    mut make: impl FnMut(&mut J) -> bool,
    init: impl Fn() -> W + Sync,
    work: impl Fn(&mut W, &mut J) + Sync,
    mut finish: impl FnMut(&mut J) -> Result<(), E>,
) -> Result<(), E>
where
    J: Send + Default,
{
    if threads <= 1 {
        let mut state = init();
        let mut job = spares.pop().unwrap_or_default();
        while make(&mut job) {
            work(&mut state, &mut job);
            finish(&mut job)?;
        }
        return Ok(());
    }
    if spares.is_empty() {
        spares.push(J::default());
    }
    let (init, work) = (&init, &work);
    thread::scope(|scope| {
        let (work_tx, work_rx) = unbounded::<(u64, J)>();
        let (done_tx, done_rx) = unbounded::<Done<J>>();
        for _ in 0..threads {
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut state = init();
                for (seq, mut job) in work_rx {
                    let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut state, &mut job)));
                    let panicked = outcome.is_err();
                    if done_tx.send((seq, outcome.map(|()| job))).is_err() || panicked {
                        return;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        // Made, and finished: every sequence number in between is in flight
        // (queued, on a worker, or waiting in `ready`).
        let (mut made, mut finished) = (0u64, 0u64);
        let mut exhausted = false;
        let mut ready: BTreeMap<u64, J> = BTreeMap::new();
        loop {
            while !exhausted && let Some(mut job) = spares.pop() {
                if make(&mut job) {
                    // The workers outlive `work_tx`: this send cannot fail.
                    let _ = work_tx.send((made, job));
                    made += 1;
                } else {
                    spares.push(job);
                    exhausted = true;
                }
            }
            if finished == made {
                return Ok(());
            }
            // A job in flight is on its way back: the workers hold
            // `done_tx` until `work_tx` is dropped.
            let Ok((seq, outcome)) = done_rx.recv() else {
                unreachable!("the workers stopped with jobs in flight");
            };
            match outcome {
                Ok(job) => {
                    ready.insert(seq, job);
                }
                Err(panic) => resume_unwind(panic),
            }
            while let Some(mut job) = ready.remove(&finished) {
                finished += 1;
                // On an error, `work_tx` and `done_rx` are dropped on the
                // way out: the workers stop.
                finish(&mut job)?;
                spares.push(job);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Job {
        n: u64,
        square: u64,
        fail: bool,
    }

    fn squares(threads: usize, count: u64, fail_at: &[u64]) -> (Result<(), u64>, Vec<u64>) {
        let mut next = 0u64;
        let mut seen = Vec::new();
        let result = run(
            threads,
            (0..2 * threads).map(|_| Job::default()).collect(),
            |job: &mut Job| {
                if next == count {
                    return false;
                }
                job.n = next;
                next += 1;
                true
            },
            || (),
            |(), job| {
                job.square = job.n * job.n;
                job.fail = fail_at.contains(&job.n);
            },
            |job| {
                if job.fail {
                    return Err(job.n);
                }
                seen.push(job.square);
                Ok(())
            },
        );
        (result, seen)
    }

    #[test]
    fn results_come_in_order_whatever_the_thread_count() {
        let expected: Vec<u64> = (0..500).map(|n| n * n).collect();
        for threads in [0, 1, 2, 3, 8] {
            let (result, seen) = squares(threads, 500, &[]);
            assert_eq!(result, Ok(()));
            assert_eq!(seen, expected, "{threads} threads");
        }
    }

    #[test]
    fn the_first_error_in_order_wins() {
        for threads in [1, 2, 8] {
            let (result, seen) = squares(threads, 500, &[377, 123, 499]);
            assert_eq!(result, Err(123), "{threads} threads");
            assert_eq!(seen.len(), 123);
        }
    }

    #[test]
    fn a_job_finished_early_waits_for_the_ones_before_it() {
        // Job 0's worker waits until job 1 is worked on: job 1 comes back
        // first, and still job 0 is finished (and its error wins) first.
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let mut next = 0u64;
        let mut seen = Vec::new();
        let result = run(
            2,
            (0..4).map(|_| Job::default()).collect(),
            |job: &mut Job| {
                job.n = next;
                next += 1;
                job.n < 2
            },
            || (),
            |(), job| {
                match job.n {
                    0 => rx.recv().unwrap(),
                    _ => tx.send(()).unwrap(),
                }
                job.fail = true;
            },
            |job| {
                seen.push(job.n);
                Err(job.n)
            },
        );
        assert_eq!(result, Err(0));
        assert_eq!(seen, [0]);
    }

    #[test]
    fn jobs_in_flight_are_bounded_by_the_spares() {
        let alive = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut made = 0;
        run(
            4,
            (0..3).map(|_| Job::default()).collect(),
            |_job: &mut Job| {
                made += 1;
                if made > 1000 {
                    return false;
                }
                let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                true
            },
            || (),
            |(), _| {},
            |_| {
                alive.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert!(most.load(Ordering::SeqCst) <= 3, "{most:?}");
    }

    #[test]
    #[should_panic(expected = "job 7")]
    fn a_worker_panic_reaches_the_caller() {
        let mut next = 0u64;
        let _ = run(
            2,
            Vec::new(),
            |job: &mut Job| {
                job.n = next;
                next += 1;
                next < 100
            },
            || (),
            |(), job| assert!(job.n != 7, "job 7"),
            |_| Ok::<(), ()>(()),
        );
    }
}
