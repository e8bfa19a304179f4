//! Crash test with real processes: a child appends and flushes, reporting
//! each durable offset on stdout, and is killed with SIGKILL at random
//! moments (also during its own recovery). After every kill the reopened
//! log must hold every batch reported flushed, in order, intact, and
//! nothing corrupt.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use common::*;
use fjord_schema::{BatchView, Offset};
use fjord_storage::{LogConfig, SystemClock};

const CHILD_ENV: &str = "FJORD_STORAGE_CRASH_CHILD";
const KILLS: usize = 60;
const VALUE_LEN_MAX: usize = 6000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 512 << 10,
        index_interval_bytes: 4096,
        batch_bytes_max: 32 << 10,
        write_buffer_bytes: 64 << 10,
        prepare_step_bytes: 128 << 10,
        prepare_ahead_bytes: 256 << 10,
        read_chunk_bytes: 64 << 10,
        ..small_config()
    }
}

/// xorshift64*: enough randomness for kill points, no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id())) | 1
}

/// The child: one writer appending bursts, two tasks flushing concurrently
/// (group commit), each durable end printed once the flush returned.
#[test]
#[ignore = "child process of kill9_keeps_every_flushed_batch, which runs it"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run(async move {
        let log = Rc::new(
            open(
                std::path::Path::new(&dir),
                config(),
                cache(1 << 20),
                Rc::new(SystemClock),
            )
            .await
            .expect("child open"),
        );
        println!("OPENED {}", log.log_end().get());
        let mut flushers = Vec::new();
        for _ in 0..2 {
            let log = log.clone();
            flushers.push(glommio::spawn_local(async move {
                loop {
                    let durable = log.flush().await.expect("child flush");
                    println!("FLUSHED {}", durable.get());
                    glommio::yield_if_needed().await;
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                }
            }));
        }
        let mut rng = Rng(seed());
        loop {
            for _ in 0..1 + rng.below(6) {
                log.append(batch_for(log.log_end(), VALUE_LEN_MAX))
                    .await
                    .expect("child append");
            }
            glommio::timer::sleep(Duration::from_micros(rng.below(500))).await;
        }
    });
}

#[test]
fn kill9_keeps_every_flushed_batch() {
    let dir = temp_dir();
    let exe = std::env::current_exe().expect("test binary path");
    let mut rng = Rng(seed());
    let mut reported_max = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        if round % 4 == 0 {
            // Kill at an arbitrary moment, possibly during recovery.
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            let flushes = 1 + rng.below(60);
            let mut seen = 0;
            while seen < flushes {
                let Some(Ok(line)) = lines.next() else { break };
                if let Some(n) = line.strip_prefix("FLUSHED ") {
                    reported_max = reported_max.max(n.parse().expect("offset"));
                    seen += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait child");
        assert!(!status.success(), "child ended on its own: {status:?}");
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("FLUSHED ") {
                reported_max = reported_max.max(n.parse().expect("offset"));
            }
        }
        verify(dir.path(), Offset(reported_max));
    }
    assert!(reported_max > 0, "children made progress");
    eprintln!("{KILLS} SIGKILLs; offsets reported durable: {reported_max}");
}

/// Every batch up to the log end is there, intact, in order, and the log
/// reaches at least what was reported durable.
fn verify(dir: &std::path::Path, reported: Offset) {
    run(async move {
        let log = open(dir, config(), cache(1 << 10), Rc::new(SystemClock))
            .await
            .expect("recovery after SIGKILL");
        let end = log.log_end();
        assert!(
            end >= reported,
            "lost flushed data: log ends at {end:?}, {reported:?} was durable"
        );
        let batches = read_all(&log, Offset(0), end)
            .await
            .expect("read after recovery");
        let mut expected = Offset(0);
        for batch in &batches {
            let (view, _) = BatchView::parse(batch).expect("served batch is valid");
            let base = view.header().base_offset();
            assert_eq!(base, expected, "batches in order, no gaps");
            assert_eq!(
                batch,
                &batch_for(base, VALUE_LEN_MAX),
                "batch content intact"
            );
            expected = view.header().next_offset();
        }
        assert_eq!(expected, end);
        log.close().await.expect("close");
    });
}
