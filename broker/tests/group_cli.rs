//! `fjord consume --group` and `fjord group list|describe|reset-offsets`
//! against a real 2-shard broker. No timing assertions.

mod common;

use std::process::{Command, Output, Stdio};

use common::{batch, Broker};
use fjord_schema::ErrorCode;

fn fjord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fjord")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "fjord failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf8")
}

#[test]
fn consume_with_a_group_commits_and_group_commands_show_and_reset_it() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.addr.to_string();
    let mut conn = broker.conn();
    assert_eq!(conn.create_topic("logs", 2, &[]), ErrorCode::None);
    for partition in 0..2 {
        let values: Vec<String> = (0..5).map(|i| format!("p{partition}-{i}")).collect();
        let records: Vec<(&[u8], &[u8])> =
            values.iter().map(|v| (&b"k"[..], v.as_bytes())).collect();
        let (error, _) = conn.produce("logs", partition, &batch(&records, 1), -1);
        assert_eq!(error, ErrorCode::None);
    }

    // Read 6 of the 10 records as group "audit", then exit (commits).
    let printed = ok(&fjord(&[
        "consume",
        "logs",
        "--group",
        "audit",
        "-n",
        "6",
        "--format",
        "%p %o",
        "--brokers",
        &addr,
    ]));
    assert_eq!(printed.lines().count(), 6);

    let listed = ok(&fjord(&["group", "list", "--brokers", &addr]));
    assert!(listed.lines().any(|l| l.starts_with("audit ")), "{listed}");

    let described = ok(&fjord(&["group", "describe", "audit", "--brokers", &addr]));
    assert!(described.contains("state Empty"), "{described}");
    // Committed + lag = 5 per partition; 6 read in total.
    let rows: Vec<Vec<&str>> = described
        .lines()
        .filter(|l| l.starts_with("logs "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{described}");
    let mut committed_total = 0;
    for row in &rows {
        let committed: i64 = row[2].parse().unwrap_or(0);
        let end: i64 = row[3].parse().expect("log end");
        let lag: i64 = if row[4] == "-" {
            end
        } else {
            row[4].parse().expect("lag")
        };
        assert_eq!(end, 5);
        assert_eq!(committed + lag, 5, "{described}");
        committed_total += committed;
    }
    assert_eq!(committed_total, 6);

    // The next member of the group continues where the first stopped.
    let rest = ok(&fjord(&[
        "consume",
        "logs",
        "--group",
        "audit",
        "-n",
        "4",
        "--format",
        "%v",
        "--brokers",
        &addr,
    ]));
    let all: Vec<String> = (0..2)
        .flat_map(|p| (0..5).map(move |i| format!("p{p}-{i}")))
        .collect();
    // Offsets equal the record index, so "%p %o" names the value.
    let mut both: Vec<String> = printed
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').expect("%p %o");
            format!("p{p}-{o}")
        })
        .chain(rest.lines().map(str::to_owned))
        .collect();
    both.sort_unstable();
    assert_eq!(both, all, "nothing skipped, nothing read twice");

    // Reset to the start: everything is read again.
    let reset = ok(&fjord(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "logs",
        "--to",
        "earliest",
        "--brokers",
        &addr,
    ]));
    assert_eq!(reset.lines().collect::<Vec<_>>(), ["logs 0 0", "logs 1 0"]);
    let again = ok(&fjord(&[
        "consume",
        "logs",
        "--group",
        "audit",
        "-n",
        "10",
        "--format",
        "%v",
        "--brokers",
        &addr,
    ]));
    let mut again: Vec<String> = again.lines().map(str::to_owned).collect();
    again.sort_unstable();
    assert_eq!(again, all);

    // Reset to an explicit offset.
    ok(&fjord(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "logs",
        "--to",
        "3",
        "--brokers",
        &addr,
    ]));
    let described = ok(&fjord(&["group", "describe", "audit", "--brokers", &addr]));
    for row in described.lines().filter(|l| l.starts_with("logs ")) {
        assert_eq!(row.split_whitespace().nth(2), Some("3"), "{described}");
    }

    // The offsets topic cannot be deleted.
    assert_ne!(conn.delete_topic("__consumer_offsets"), ErrorCode::None);
}

/// SIGTERM makes `fjord consume --group` leave the group (and exit 0), so
/// the group does not wait for its session to time out.
#[test]
fn a_terminated_group_consumer_leaves_the_group() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.addr.to_string();
    assert_eq!(broker.conn().create_topic("logs", 1, &[]), ErrorCode::None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["consume", "logs", "--group", "g", "--brokers", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let members = || {
        let described = fjord(&["group", "describe", "g", "--brokers", &addr]);
        ok(&described).lines().next().unwrap_or_default().to_owned()
    };
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !members().ends_with("members 1") {
        assert!(std::time::Instant::now() < deadline, "never joined");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(members().ends_with("members 0"), "{}", members());
}
