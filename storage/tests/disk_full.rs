//! A partition log on a really full filesystem (issue 11): a small ext4
//! mounted from a loop image, filled to the last block with files. Every
//! write fault (a data write, its fdatasync or a roll running out of space)
//! must leave the log serving everything appended, refusing appends with a
//! disk-full error, and writing on by itself once a file is removed; after
//! a reopen every batch appended is there at its offset.
//!
//! Needs root (mkfs.ext4 + a loop mount); prints SKIPPED otherwise. The
//! mount is undone by a Drop guard, also when the test fails.

mod common;
#[path = "common/small_fs.rs"]
mod small_fs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fjord_schema::Offset;
use fjord_storage::{LogConfig, StorageError, SystemClock};
use small_fs::{is_root, SmallFs};

/// Fills the filesystem to the last block with files of at most
/// `file_bytes` (more than one: closing a file gives back what ext4 had
/// preallocated for it); returns them.
fn fill(dir: &Path, file_bytes: usize) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for n in 0.. {
        let path = dir.join(format!("filler-{n}"));
        let mut file = std::fs::File::create(&path).expect("filler");
        let mut written = 0;
        let block = vec![0x5au8; 4096];
        while written < file_bytes {
            match file.write_all(&block).and_then(|()| file.sync_data()) {
                Ok(()) => written += block.len(),
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filler: {e}"),
            }
        }
        if written == 0 {
            std::fs::remove_file(&path).expect("remove empty filler");
            return paths;
        }
        paths.push(path);
        assert!(n < 100_000, "the filesystem keeps giving space back");
    }
    unreachable!("the loop returns")
}

fn assert_disk_full(error: &StorageError) {
    assert!(
        matches!(
            error,
            StorageError::WriteFault {
                disk_full: true,
                ..
            }
        ),
        "expected a disk-full write fault: {error}"
    );
    assert!(error.to_string().starts_with("disk full"), "{error}");
}

#[test]
fn write_faults_heal_and_keep_every_appended_batch() {
    if !is_root() {
        println!("SKIPPED: disk_full needs root (mkfs.ext4 and a loop mount)");
        return;
    }
    let fs = SmallFs::mount(16 << 20);
    let config = LogConfig {
        // Small segments: faults land in rolls (index files, the next
        // segment file) as well as in data writes.
        segment_bytes_max: 48 << 10,
        prepare_step_bytes: 16 << 10,
        prepare_ahead_bytes: 16 << 10,
        write_retry_backoff_ms_min: 1,
        write_retry_backoff_ms_max: 20,
        ..small_config()
    };
    let dir = fs.mount.join("log");
    std::fs::create_dir(&dir).expect("log dir");
    let written: Vec<Bytes> = run(async {
        let clock = Rc::new(SystemClock);
        let log = open(&dir, config, cache(1 << 20), clock)
            .await
            .expect("open");
        let mut fillers = fill(&fs.mount, 256 << 10);
        let mut written = Vec::new();
        let mut faults = 0;
        // Faults that hit a roll writing the sealed segment's index files.
        let mut in_roll = 0;
        while let Some(filler) = fillers.pop() {
            // Write until the disk is full again.
            let error = loop {
                let batch = batch_for(log.log_end(), 3000);
                if let Err(error) = log.append(batch.clone()).await {
                    break error;
                }
                written.push(batch);
                if let Err(error) = log.flush().await {
                    break error;
                }
                assert_eq!(log.durable_end(), log.log_end());
            };
            assert_disk_full(&error);
            faults += 1;
            if error.to_string().contains("index") {
                in_roll += 1;
            }
            // Refused meanwhile; everything appended stays readable.
            let refused = log.append(batch_for(log.log_end(), 3000)).await;
            assert_disk_full(&refused.expect_err("appends are refused"));
            let end = log.log_end();
            assert_eq!(read_all(&log, Offset(0), end).await.expect("read"), written);
            // Space back: the log writes on by itself (its retry task runs
            // while this one sleeps), then takes appends again.
            std::fs::remove_file(&filler).expect("remove filler");
            let mut waited = 0;
            loop {
                let batch = batch_for(log.log_end(), 3000);
                match log.append(batch.clone()).await {
                    Ok(_) => {
                        written.push(batch);
                        break;
                    }
                    Err(error) => assert_disk_full(&error),
                }
                waited += 1;
                assert!(waited < 60_000, "the log never healed");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(log.durable_end(), end, "no offset moved");
            if faults == 40 {
                break;
            }
        }
        assert!(faults >= 10, "only {faults} faults");
        println!("{faults} write faults, {in_roll} of them in a roll's index files");
        log.close().await.expect("close");
        written
    });
    run(async {
        let log = open(&dir, config, cache(1 << 10), Rc::new(SystemClock))
            .await
            .expect("reopen");
        let end = log.log_end();
        assert_eq!(end, next_of(written.last().expect("batches")));
        assert_eq!(read_all(&log, Offset(0), end).await.expect("read"), written);
        log.close().await.expect("close");
    });
}
