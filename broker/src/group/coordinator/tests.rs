//! Data-driven tests: each test is a transcript. Lines starting with `> `
//! are events fed to the coordinator (with a simulated clock); the lines
//! after each event are the actions it produced, rendered one per line.
//! The runner replays the events and compares the whole transcript; on a
//! mismatch it prints the actual transcript, ready to paste.
//!
//! Events (`#N` is the reply id; `member=-` is an empty member id):
//! - `tick MS` — the clock moves to MS and timers run
//! - `join #N GROUP member=ID [instance=I] [client=C] [session=MS]
//!   [rebalance=MS] [protocols=NAME:META,...] [type=T]`
//! - `sync #N GROUP gen=G member=ID [instance=I] [assign=ID:BYTES,...]`
//! - `heartbeat #N GROUP gen=G member=ID [instance=I]`
//! - `leave #N GROUP member=ID [instance=I]`
//! - `commit #N GROUP gen=G member=ID [instance=I] offsets=T-P:OFFSET,...
//!   [meta=TEXT]`
//! - `persisted #N OUTCOME`, `fetch GROUP`, `describe GROUP`, `list`
//! - `delete #N GROUP`, `deleted #N OUTCOME` (its tombstones written)
//!
//! OUTCOME is how the append to `__consumer_offsets` ended: `ok`, `fail`
//! (a storage error), or the append's error code as transcripts show
//! codes (`NotEnoughReplicas`, `NotLeaderOrFollower`, ...).

use std::collections::BTreeMap;

use super::*;

/// A `persisted` / `deleted` outcome (see the module doc).
fn append_outcome(outcome: &str) -> Result<(), ErrorCode> {
    match outcome {
        "ok" => Ok(()),
        "fail" => Err(ErrorCode::KafkaStorageError),
        name => Err((-1..=200)
            .map(ErrorCode::from_code)
            .find(|c| format!("{c:?}") == name)
            .unwrap_or_else(|| panic!("unknown error code {name}"))),
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        groups_max: 3,
        members_per_group_max: 3,
        session_timeout_min_ms: 1_000,
        session_timeout_max_ms: 60_000,
        rebalance_timeout_max_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        offsets_per_group_max: 3,
        offset_metadata_bytes_max: 8,
        member_metadata_bytes_max: 64,
        protocols_per_member_max: 2,
        commits_in_flight_max: 2,
    }
}

/// With Kafka's default initial rebalance delay.
fn delayed() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..config()
    }
}

struct Harness {
    coordinator: Coordinator,
    now: Millis,
}

fn kv(words: &[&str]) -> BTreeMap<String, String> {
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("expected key=value: {w}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn reply(word: &str) -> ReplyId {
    ReplyId(word.trim_start_matches('#').parse().expect("#N"))
}

fn member_id(args: &BTreeMap<String, String>) -> String {
    match args.get("member").map(String::as_str) {
        None | Some("-") => String::new(),
        Some(id) => id.to_owned(),
    }
}

fn num<T: std::str::FromStr>(args: &BTreeMap<String, String>, key: &str, default: T) -> T {
    args.get(key)
        .map(|v| v.parse().ok().unwrap_or_else(|| panic!("{key}={v}")))
        .unwrap_or(default)
}

fn bytes(text: &str) -> String {
    String::from_utf8_lossy(text.as_bytes()).into_owned()
}

fn show(data: &[u8]) -> String {
    if data.is_empty() {
        "''".to_owned()
    } else {
        String::from_utf8_lossy(data).into_owned()
    }
}

fn err(code: ErrorCode) -> String {
    format!("{code:?}")
}

fn render(action: &Action) -> String {
    match action {
        Action::Join { reply, response: r } => {
            let mut line = format!("join #{} {}", reply.0, err(r.error));
            if r.error == ErrorCode::None {
                line += &format!(
                    " gen={} protocol={} leader={}",
                    r.generation_id,
                    r.protocol_name.as_deref().unwrap_or("-"),
                    r.leader
                );
            }
            line += &format!(" member={}", r.member_id);
            if r.skip_assignment {
                line += " skip_assignment";
            }
            if !r.members.is_empty() {
                let members: Vec<String> = r
                    .members
                    .iter()
                    .map(|m| format!("{}:{}", m.member_id, show(&m.metadata)))
                    .collect();
                line += &format!(" members=[{}]", members.join(" "));
            }
            line
        }
        Action::Sync { reply, response } => {
            let mut line = format!("sync #{} {}", reply.0, err(response.error));
            if response.error == ErrorCode::None {
                line += &format!(" assignment={}", show(&response.assignment));
            }
            line
        }
        Action::Heartbeat { reply, error } => format!("heartbeat #{} {}", reply.0, err(*error)),
        Action::Leave { reply, response } => {
            let members: Vec<String> = response
                .members
                .iter()
                .map(|(m, e)| {
                    let who = m.instance_id.as_deref().unwrap_or(&m.member_id);
                    format!("{who}:{}", err(*e))
                })
                .collect();
            format!("leave #{} {}", reply.0, members.join(" "))
        }
        Action::PersistOffsets {
            reply,
            group_id,
            offsets,
        } => {
            let offsets: Vec<String> = offsets
                .iter()
                .map(|(tp, o)| format!("{tp}:{}", o.offset))
                .collect();
            format!("persist #{} {group_id} {}", reply.0, offsets.join(" "))
        }
        Action::OffsetCommit { reply, results } => {
            let results: Vec<String> = results
                .iter()
                .map(|(tp, e)| format!("{tp}:{}", err(*e)))
                .collect();
            format!("commit #{} {}", reply.0, results.join(" "))
        }
        Action::PersistTombstones {
            reply,
            group_id,
            partitions,
        } => {
            let partitions: Vec<String> = partitions.iter().map(ToString::to_string).collect();
            format!(
                "tombstones #{} {group_id} {}",
                reply.0,
                partitions.join(" ")
            )
        }
        Action::DeleteGroup { reply, error } => format!("delete #{} {}", reply.0, err(*error)),
    }
}

impl Harness {
    fn new(config: GroupConfig) -> Harness {
        Harness {
            coordinator: Coordinator::new(config, 0),
            now: Millis(0),
        }
    }

    /// Runs one event; returns the lines it produced.
    fn event(&mut self, line: &str) -> Vec<String> {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| if w == "''" { "" } else { w })
            .collect();
        let c = &mut self.coordinator;
        let instance = |args: &BTreeMap<String, String>| args.get("instance").cloned();
        let mut out = Vec::new();
        match words.as_slice() {
            ["tick", ms] => {
                self.now = Millis(ms.parse().expect("ms"));
                c.handle_tick(self.now);
            }
            ["join", n, group, rest @ ..] => {
                let args = kv(rest);
                let protocols = args
                    .get("protocols")
                    .map_or("range:m", String::as_str)
                    .split(',')
                    .map(|p| {
                        let (name, meta) = p.split_once(':').unwrap_or((p, ""));
                        Protocol {
                            name: name.to_owned(),
                            metadata: meta.as_bytes().to_vec(),
                        }
                    })
                    .collect();
                let request = JoinRequest {
                    group_id: group.to_string(),
                    member_id: member_id(&args),
                    instance_id: instance(&args),
                    client_id: args.get("client").cloned().unwrap_or_else(|| "c".into()),
                    protocol_type: args
                        .get("type")
                        .cloned()
                        .unwrap_or_else(|| "consumer".into()),
                    protocols,
                    session_timeout_ms: num(&args, "session", 10_000),
                    rebalance_timeout_ms: num(&args, "rebalance", 30_000),
                };
                c.handle_join(self.now, reply(n), request);
            }
            ["sync", n, group, rest @ ..] => {
                let args = kv(rest);
                let assignments = args
                    .get("assign")
                    .map(|a| {
                        a.split(',')
                            .map(|pair| {
                                let (id, data) = pair.split_once(':').expect("ID:BYTES");
                                (id.to_owned(), bytes(data).into_bytes())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let request = SyncRequest {
                    group_id: group.to_string(),
                    generation_id: num(&args, "gen", -1),
                    member_id: member_id(&args),
                    instance_id: instance(&args),
                    protocol_type: None,
                    protocol_name: None,
                    assignments,
                };
                c.handle_sync(self.now, reply(n), request);
            }
            ["heartbeat", n, group, rest @ ..] => {
                let args = kv(rest);
                let request = HeartbeatRequest {
                    group_id: group.to_string(),
                    generation_id: num(&args, "gen", -1),
                    member_id: member_id(&args),
                    instance_id: instance(&args),
                };
                c.handle_heartbeat(self.now, reply(n), request);
            }
            ["leave", n, group, rest @ ..] => {
                let args = kv(rest);
                let leaving = LeavingMember {
                    member_id: member_id(&args),
                    instance_id: instance(&args),
                };
                c.handle_leave(self.now, reply(n), group, vec![leaving]);
            }
            ["commit", n, group, rest @ ..] => {
                let args = kv(rest);
                let metadata = args.get("meta").cloned().unwrap_or_default();
                let offsets = args
                    .get("offsets")
                    .expect("offsets=")
                    .split(',')
                    .map(|o| {
                        let (tp, offset) = o.split_once(':').expect("T-P:OFFSET");
                        let (topic, partition) = tp.rsplit_once('-').expect("T-P");
                        (
                            TopicPartition::new(topic, partition.parse().expect("partition")),
                            CommittedOffset {
                                offset: offset.parse().expect("offset"),
                                leader_epoch: -1,
                                metadata: metadata.clone(),
                            },
                        )
                    })
                    .collect();
                let request = CommitRequest {
                    group_id: group.to_string(),
                    generation_id: num(&args, "gen", -1),
                    member_id: member_id(&args),
                    instance_id: instance(&args),
                    offsets,
                };
                c.handle_offset_commit(self.now, reply(n), request);
            }
            ["persisted", n, outcome] => c.offsets_persisted(reply(n), append_outcome(outcome)),
            ["delete", n, group] => c.handle_delete_group(reply(n), group),
            ["deleted", n, outcome] => c.tombstones_persisted(reply(n), append_outcome(outcome)),
            ["fetch", group] => {
                let offsets: Vec<String> = c
                    .offset_fetch(group, None)
                    .into_iter()
                    .map(|(tp, o)| format!("{tp}:{}", o.map_or(-1, |o| o.offset)))
                    .collect();
                out.push(format!("offsets {}", offsets.join(" ")));
            }
            ["describe", group] => {
                let g = c.describe_group(group);
                let members: Vec<String> = g
                    .members
                    .iter()
                    .map(|m| {
                        let instance = m
                            .instance_id
                            .as_deref()
                            .map_or(String::new(), |i| format!("({i})"));
                        format!("{}{instance}:{}", m.member_id, show(&m.assignment))
                    })
                    .collect();
                out.push(format!(
                    "group {} {} protocol={} members=[{}]",
                    g.group_id,
                    g.state.name(),
                    if g.protocol_name.is_empty() {
                        "-"
                    } else {
                        &g.protocol_name
                    },
                    members.join(" ")
                ));
            }
            ["list"] => {
                let groups: Vec<String> = c
                    .list_groups(&[])
                    .into_iter()
                    .map(|g| format!("{}:{}", g.group_id, g.state.name()))
                    .collect();
                out.push(format!("groups {}", groups.join(" ")));
            }
            _ => panic!("unknown event: {line}"),
        }
        while let Some(action) = c.poll_action() {
            out.push(render(&action));
        }
        out
    }
}

/// Replays the `> ` lines of `script` and checks the rest.
fn check_with(config: GroupConfig, script: &str) {
    let mut harness = Harness::new(config);
    let mut actual = Vec::new();
    let mut expected = Vec::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        expected.push(line.to_owned());
        if let Some(event) = line.strip_prefix("> ") {
            actual.push(line.to_owned());
            actual.extend(harness.event(event).iter().map(|l| l.trim().to_owned()));
        }
    }
    let (actual, expected) = (actual.join("\n"), expected.join("\n"));
    assert!(
        actual == expected,
        "transcript differs; actual:\n{actual}\n\nexpected:\n{expected}"
    );
}

fn check(script: &str) {
    check_with(config(), script);
}

/// Two dynamic members form a group; a third joins and everyone rejoins.
#[test]
fn members_join_in_two_steps_and_the_leader_assigns() {
    check(
        "
        > join #1 g member=- client=a
        join #1 MemberIdRequired member=a-0-1
        > join #2 g member=a-0-1 protocols=range:A
        join #2 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:A]
        > sync #3 g gen=1 member=a-0-1 assign=a-0-1:p0p1
        sync #3 None assignment=p0p1
        > join #4 g member=- client=b
        join #4 MemberIdRequired member=b-0-2
        > join #5 g member=b-0-2 protocols=range:B
        > heartbeat #6 g gen=1 member=a-0-1
        heartbeat #6 RebalanceInProgress
        > join #7 g member=a-0-1 protocols=range:A
        join #7 None gen=2 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:A b-0-2:B]
        join #5 None gen=2 protocol=range leader=a-0-1 member=b-0-2
        > sync #8 g gen=2 member=b-0-2
        > describe g
        group g CompletingRebalance protocol=range members=[a-0-1:'' b-0-2:'']
        > sync #9 g gen=2 member=a-0-1 assign=a-0-1:p0,b-0-2:p1
        sync #9 None assignment=p0
        sync #8 None assignment=p1
        > heartbeat #10 g gen=2 member=b-0-2
        heartbeat #10 None
        > describe g
        group g Stable protocol=range members=[a-0-1:p0 b-0-2:p1]
        ",
    );
}

/// Stale generations and unknown members are fenced on every api.
#[test]
fn stale_generations_and_unknown_members_are_fenced() {
    check(
        "
        > join #1 g member=- client=a
        join #1 MemberIdRequired member=a-0-1
        > join #2 g member=a-0-1
        join #2 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m]
        > sync #3 g gen=0 member=a-0-1
        sync #3 IllegalGeneration
        > sync #4 g gen=1 member=a-0-1 assign=a-0-1:x
        sync #4 None assignment=x
        > heartbeat #5 g gen=0 member=a-0-1
        heartbeat #5 IllegalGeneration
        > heartbeat #6 g gen=1 member=zombie
        heartbeat #6 UnknownMemberId
        > join #7 g member=zombie
        join #7 UnknownMemberId member=zombie
        > join #8 nosuchgroup member=zombie
        join #8 UnknownMemberId member=zombie
        > commit #9 g gen=0 member=a-0-1 offsets=t-0:5
        commit #9 t-0:IllegalGeneration
        > commit #10 g gen=1 member=zombie offsets=t-0:5
        commit #10 t-0:UnknownMemberId
        > commit #11 g gen=-1 member=- offsets=t-0:5
        commit #11 t-0:UnknownMemberId
        > commit #12 g gen=1 member=a-0-1 offsets=t-0:5,t-1:7
        persist #12 g t-0:5 t-1:7
        > fetch g
        offsets
        > persisted #12 ok
        commit #12 t-0:None t-1:None
        > fetch g
        offsets t-0:5 t-1:7
        ",
    );
}

/// A member that stops heartbeating is dropped after its session timeout
/// and the others rebalance; a member that does not rejoin within the
/// rebalance timeout is dropped from the new generation.
#[test]
fn session_and_rebalance_timeouts_drop_members() {
    check(
        "
        > join #1 g member=- client=a
        join #1 MemberIdRequired member=a-0-1
        > join #2 g member=a-0-1 session=5000 rebalance=8000
        join #2 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m]
        > sync #3 g gen=1 member=a-0-1
        sync #3 None assignment=''
        > join #4 g member=- client=b
        join #4 MemberIdRequired member=b-0-2
        > join #5 g member=b-0-2 session=5000 rebalance=8000
        > tick 4000
        > heartbeat #6 g gen=1 member=a-0-1
        heartbeat #6 RebalanceInProgress
        > tick 7999
        > tick 8000
        join #5 None gen=2 protocol=range leader=b-0-2 member=b-0-2 members=[b-0-2:m]
        > heartbeat #7 g gen=1 member=a-0-1
        heartbeat #7 UnknownMemberId
        > sync #8 g gen=2 member=b-0-2 assign=b-0-2:all
        sync #8 None assignment=all
        > join #9 g member=- client=c
        join #9 MemberIdRequired member=c-0-3
        > join #10 g member=c-0-3 session=5000 rebalance=8000
        > join #11 g member=b-0-2 session=5000 rebalance=8000
        join #11 None gen=3 protocol=range leader=b-0-2 member=b-0-2 members=[b-0-2:m c-0-3:m]
        join #10 None gen=3 protocol=range leader=b-0-2 member=c-0-3
        > sync #12 g gen=3 member=c-0-3
        > sync #13 g gen=3 member=b-0-2 assign=b-0-2:x,c-0-3:y
        sync #13 None assignment=x
        sync #12 None assignment=y
        > tick 12999
        > heartbeat #14 g gen=3 member=b-0-2
        heartbeat #14 None
        > tick 13000
        > describe g
        group g PreparingRebalance protocol=range members=[b-0-2:'']
        > heartbeat #15 g gen=3 member=b-0-2
        heartbeat #15 RebalanceInProgress
        > join #16 g member=b-0-2 session=5000 rebalance=8000
        join #16 None gen=4 protocol=range leader=b-0-2 member=b-0-2 members=[b-0-2:m]
        ",
    );
}

/// Leaving triggers a rebalance; the last member leaving empties the group;
/// an empty group without offsets is dropped (and then described as Dead).
#[test]
fn leaving_rebalances_and_the_last_member_empties_the_group() {
    check(
        "
        > join #1 g member=- client=a
        join #1 MemberIdRequired member=a-0-1
        > join #2 g member=a-0-1
        join #2 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m]
        > join #3 g member=- client=b
        join #3 MemberIdRequired member=b-0-2
        > join #4 g member=b-0-2
        > join #5 g member=a-0-1
        join #5 None gen=2 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m b-0-2:m]
        join #4 None gen=2 protocol=range leader=a-0-1 member=b-0-2
        > sync #6 g gen=2 member=b-0-2
        > leave #7 g member=a-0-1
        sync #6 RebalanceInProgress
        leave #7 a-0-1:None
        > join #8 g member=b-0-2
        join #8 None gen=3 protocol=range leader=b-0-2 member=b-0-2 members=[b-0-2:m]
        > leave #9 g member=b-0-2
        leave #9 b-0-2:None
        > describe g
        group g Dead protocol=- members=[]
        > leave #10 g member=b-0-2
        leave #10 b-0-2:UnknownMemberId
        ",
    );
}

/// Static members: a restart within the session timeout takes the old slot
/// back without a rebalance (the leader is told to skip assignment), the
/// old id is fenced, and a duplicate instance fences the older process.
#[test]
fn static_members_restart_without_rebalance_and_duplicates_are_fenced() {
    check_with(
        delayed(),
        "
        > join #1 g member=- instance=i1
        > join #2 g member=- instance=i2
        > describe g
        group g PreparingRebalance protocol=- members=[i1-0-1(i1):'' i2-0-2(i2):'']
        > tick 3000
        join #1 None gen=1 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m i2-0-2:m]
        join #2 None gen=1 protocol=range leader=i1-0-1 member=i2-0-2
        > sync #3 g gen=1 member=i1-0-1 instance=i1 assign=i1-0-1:A,i2-0-2:B
        sync #3 None assignment=A
        > sync #4 g gen=1 member=i2-0-2 instance=i2
        sync #4 None assignment=B
        > join #5 g member=- instance=i2
        join #5 None gen=1 protocol=range leader=i1-0-1 member=i2-0-3
        > sync #6 g gen=1 member=i2-0-3 instance=i2
        sync #6 None assignment=B
        > heartbeat #7 g gen=1 member=i2-0-2 instance=i2
        heartbeat #7 FencedInstanceId
        > commit #8 g gen=1 member=i2-0-2 instance=i2 offsets=t-0:1
        commit #8 t-0:FencedInstanceId
        > join #9 g member=i2-0-2 instance=i2
        join #9 FencedInstanceId member=i2-0-2
        > join #10 g member=- instance=i1
        join #10 None gen=1 protocol=range leader=i1-0-4 member=i1-0-4 skip_assignment members=[i1-0-4:m i2-0-3:m]
        > describe g
        group g Stable protocol=range members=[i1-0-4(i1):A i2-0-3(i2):B]
        > leave #11 g member=i2-0-2 instance=i2
        leave #11 i2:FencedInstanceId
        > leave #12 g member=- instance=i2
        leave #12 i2:None
        > describe g
        group g PreparingRebalance protocol=range members=[i1-0-4(i1):'']
        ",
    );
}

/// A static member that rejoins with different protocols, or during a
/// rebalance, does trigger one; its old parked request is fenced.
#[test]
fn static_member_replaced_during_a_rebalance_fences_the_parked_join() {
    check_with(
        delayed(),
        "
        > join #1 g member=- instance=i1
        > join #2 g member=- instance=i2
        > tick 3000
        join #1 None gen=1 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m i2-0-2:m]
        join #2 None gen=1 protocol=range leader=i1-0-1 member=i2-0-2
        > sync #3 g gen=1 member=i2-0-2 instance=i2
        > join #4 g member=- instance=i2 protocols=range:new
        sync #3 FencedInstanceId
        > describe g
        group g PreparingRebalance protocol=range members=[i1-0-1(i1):'' i2-0-3(i2):'']
        > join #5 g member=i1-0-1 instance=i1
        join #5 None gen=2 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m i2-0-3:new]
        join #4 None gen=2 protocol=range leader=i1-0-1 member=i2-0-3
        ",
    );
}

/// The first rebalance of an empty group waits the initial delay, extended
/// by each new member up to the rebalance timeout.
#[test]
fn initial_rebalance_delay_waits_for_more_members() {
    check_with(
        delayed(),
        "
        > join #1 g member=- instance=i1 rebalance=7000
        > tick 2000
        > join #2 g member=- instance=i2 rebalance=7000
        > tick 4999
        > join #3 g member=- instance=i3 rebalance=7000
        > tick 7000
        join #1 None gen=1 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m i2-0-2:m i3-0-3:m]
        join #2 None gen=1 protocol=range leader=i1-0-1 member=i2-0-2
        join #3 None gen=1 protocol=range leader=i1-0-1 member=i3-0-3
        ",
    );
}

/// The leader never syncs: after the rebalance timeout the members that
/// did not sync are dropped and the rest rebalance.
#[test]
fn a_leader_that_never_syncs_is_dropped() {
    check(
        "
        > join #1 g member=- instance=i1 rebalance=5000
        join #1 None gen=1 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m]
        > sync #2 g gen=1 member=i1-0-1 instance=i1
        sync #2 None assignment=''
        > join #3 g member=- instance=i2 rebalance=5000
        > join #4 g member=i1-0-1 instance=i1 rebalance=5000
        join #4 None gen=2 protocol=range leader=i1-0-1 member=i1-0-1 members=[i1-0-1:m i2-0-2:m]
        join #3 None gen=2 protocol=range leader=i1-0-1 member=i2-0-2
        > sync #5 g gen=2 member=i2-0-2 instance=i2
        > tick 4999
        > tick 5000
        sync #5 RebalanceInProgress
        > join #6 g member=i2-0-2 instance=i2 rebalance=5000
        join #6 None gen=3 protocol=range leader=i2-0-2 member=i2-0-2 members=[i2-0-2:m]
        ",
    );
}

/// Protocol selection: only protocols every member supports; by vote.
#[test]
fn protocols_are_chosen_by_vote_among_common_ones() {
    check(
        "
        > join #1 g member=- instance=a protocols=roundrobin:1,range:2
        join #1 None gen=1 protocol=roundrobin leader=a-0-1 member=a-0-1 members=[a-0-1:1]
        > join #2 g member=- instance=b protocols=sticky:3
        join #2 InconsistentGroupProtocol member=
        > join #3 g member=- instance=b type=connect protocols=roundrobin:3
        join #3 InconsistentGroupProtocol member=
        > join #4 g member=- instance=b protocols=range:3,roundrobin:4
        > join #5 g member=- instance=c protocols=range:5
        > join #6 g member=a-0-1 instance=a protocols=roundrobin:1,range:2
        join #6 None gen=2 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:2 b-0-2:3 c-0-3:5]
        join #4 None gen=2 protocol=range leader=a-0-1 member=b-0-2
        join #5 None gen=2 protocol=range leader=a-0-1 member=c-0-3
        ",
    );
}

/// Limits: members per group, groups per coordinator, session timeouts,
/// protocol metadata; the group id must not be empty.
#[test]
fn limits_are_enforced() {
    check(
        "
        > join #1 g member=- session=999
        join #1 InvalidSessionTimeout member=
        > join #2 g member=- session=60001
        join #2 InvalidSessionTimeout member=
        > join #3 g member=- rebalance=0
        join #3 InvalidSessionTimeout member=
        > join #4 g member=- protocols=a:1,b:2,c:3
        join #4 InvalidRequest member=
        > join #5 g member=- protocols=range:0123456789012345678901234567890123456789012345678901234567890123
        join #5 InvalidRequest member=
        > join #6 '' member=-
        join #6 InvalidGroupId member=
        > join #7 g member=- client=a
        join #7 MemberIdRequired member=a-0-1
        > join #8 g member=- client=b
        join #8 MemberIdRequired member=b-0-2
        > join #9 g member=- instance=i
        > join #10 g member=- client=d
        join #10 GroupMaxSizeReached member=
        > join #11 h member=- instance=h
        join #11 None gen=1 protocol=range leader=h-0-4 member=h-0-4 members=[h-0-4:m]
        > commit #12 k gen=-1 member=- offsets=t-0:1
        persist #12 k t-0:1
        > join #13 l member=- instance=l
        join #13 CoordinatorNotAvailable member=
        > list
        groups g:PreparingRebalance h:CompletingRebalance k:Empty
        ",
    );
}

/// Offset commits: simple commits on member-less groups, per-partition
/// limits, durable-before-visible, failed writes, in-flight bound.
#[test]
fn offset_commits_are_validated_and_visible_only_once_durable() {
    check(
        "
        > commit #1 manual gen=-1 member=- offsets=t-0:10,t-1:20
        persist #1 manual t-0:10 t-1:20
        > commit #2 manual gen=-1 member=- offsets=t-0:11 meta=toolongmetadata
        commit #2 t-0:OffsetMetadataTooLarge
        > commit #3 manual gen=-1 member=- offsets=t-2:1,t-3:1
        persist #3 manual t-2:1 t-3:1
        > commit #4 manual gen=-1 member=- offsets=t-0:1
        commit #4 t-0:BrokerBusy
        > persisted #3 fail
        commit #3 t-2:KafkaStorageError t-3:KafkaStorageError
        > persisted #1 ok
        commit #1 t-0:None t-1:None
        > commit #5 manual gen=-1 member=- offsets=t-0:12,t-2:3,t-3:4
        persist #5 manual t-0:12 t-2:3
        > persisted #5 ok
        commit #5 t-0:None t-2:None t-3:InvalidCommitOffsetSize
        > fetch manual
        offsets t-0:12 t-1:20 t-2:3
        > join #6 manual member=- instance=i
        join #6 None gen=1 protocol=range leader=i-0-1 member=i-0-1 members=[i-0-1:m]
        > commit #7 manual gen=1 member=i-0-1 instance=i offsets=t-0:13
        commit #7 t-0:RebalanceInProgress
        > commit #8 manual gen=-1 member=- offsets=t-0:13
        commit #8 t-0:RebalanceInProgress
        > sync #9 manual gen=1 member=i-0-1 instance=i
        sync #9 None assignment=''
        > commit #10 manual gen=-1 member=- offsets=t-0:13
        commit #10 t-0:UnknownMemberId
        > commit #11 manual gen=1 member=i-0-1 instance=i offsets=t-0:13
        persist #11 manual t-0:13
        > leave #12 manual member=i-0-1
        leave #12 i-0-1:None
        > describe manual
        group manual Empty protocol=- members=[]
        > persisted #11 ok
        commit #11 t-0:None
        > commit #13 manual gen=-1 member=- offsets=t-1:21
        persist #13 manual t-1:21
        > persisted #13 ok
        commit #13 t-1:None
        > fetch manual
        offsets t-0:13 t-1:21 t-2:3
        ",
    );
}

/// Commits from members of the current generation are accepted while the
/// group prepares a rebalance (so consumers can commit on revocation).
#[test]
fn members_commit_during_preparing_rebalance() {
    check(
        "
        > join #1 g member=- instance=a
        join #1 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m]
        > sync #2 g gen=1 member=a-0-1
        sync #2 None assignment=''
        > join #3 g member=- instance=b
        > commit #4 g gen=1 member=a-0-1 offsets=t-0:9
        persist #4 g t-0:9
        > persisted #4 ok
        commit #4 t-0:None
        ",
    );
}

/// Loading restores offsets (latest record wins, tombstones delete); the
/// deadline index stays consistent as groups come and go.
#[test]
fn loaded_offsets_are_served_and_tombstones_delete() {
    let mut c = Coordinator::new(config(), 7);
    let offset = |o| CommittedOffset {
        offset: o,
        leader_epoch: 3,
        metadata: String::new(),
    };
    c.load_offset("g", TopicPartition::new("t", 0), Some(offset(1)));
    c.load_offset("g", TopicPartition::new("t", 0), Some(offset(2)));
    c.load_offset("g", TopicPartition::new("t", 1), Some(offset(5)));
    c.load_offset("g", TopicPartition::new("t", 1), None);
    c.load_offset("gone", TopicPartition::new("t", 0), Some(offset(1)));
    c.load_offset("gone", TopicPartition::new("t", 0), None);
    assert_eq!(c.group_count(), 1);
    assert_eq!(c.next_deadline(), None);
    let wanted = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
    assert_eq!(
        c.offset_fetch("g", Some(&wanted)),
        vec![
            (TopicPartition::new("t", 0), Some(offset(2))),
            (TopicPartition::new("t", 1), None),
        ]
    );
    assert_eq!(c.list_groups(&[GroupState::Stable]), vec![]);
    assert_eq!(c.list_groups(&[GroupState::Empty]).len(), 1);
    // Member ids carry the nonce, so ids from another start never collide.
    c.handle_join(
        Millis(0),
        ReplyId(1),
        JoinRequest {
            group_id: "g".into(),
            member_id: String::new(),
            instance_id: None,
            client_id: String::new(),
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Vec::new(),
            }],
            session_timeout_ms: 5_000,
            rebalance_timeout_ms: -1,
        },
    );
    let Some(Action::Join { response, .. }) = c.poll_action() else {
        panic!("expected a join response");
    };
    assert_eq!(response.member_id, "member-7-1");
    assert_eq!(c.next_deadline(), Some(Millis(5_000)));
    c.handle_tick(Millis(5_000));
    assert_eq!(c.next_deadline(), None);
}

/// DeleteGroups: only Empty groups without commits in flight; the offsets
/// go once the tombstones are durable and come back if they are not.
#[test]
fn delete_groups_waits_for_tombstones_and_restores_on_failure() {
    check(
        "
        > delete #1 nope
        delete #1 GroupIdNotFound
        > commit #2 g gen=-1 member=- offsets=t-0:5,t-1:6
        persist #2 g t-0:5 t-1:6
        > delete #3 g
        delete #3 NonEmptyGroup
        > persisted #2 ok
        commit #2 t-0:None t-1:None
        > join #4 g member=- instance=a
        join #4 None gen=1 protocol=range leader=a-0-1 member=a-0-1 members=[a-0-1:m]
        > delete #5 g
        delete #5 NonEmptyGroup
        > leave #6 g member=a-0-1 instance=a
        leave #6 a:None
        > delete #7 g
        tombstones #7 g t-0 t-1
        > list
        groups
        > commit #8 g gen=-1 member=- offsets=t-0:9
        persist #8 g t-0:9
        > persisted #8 ok
        commit #8 t-0:None
        > deleted #7 fail
        delete #7 KafkaStorageError
        > fetch g
        offsets t-0:9 t-1:6
        > delete #9 g
        tombstones #9 g t-0 t-1
        > deleted #9 ok
        delete #9 None
        > fetch g
        offsets
        > list
        groups
        > join #10 h member=- client=x
        join #10 MemberIdRequired member=x-0-2
        > delete #11 h
        delete #11 None
        > tick 60000
        ",
    );
}

/// Commits and group deletes are acknowledged only once the append to
/// `__consumer_offsets` is (acks=all); a failed append answers what Kafka
/// answers for it, and the offsets stay as they were.
#[test]
fn failed_offsets_appends_answer_as_kafka_does() {
    check(
        "
        > commit #1 g gen=-1 member=- offsets=t-0:5
        persist #1 g t-0:5
        > persisted #1 NotEnoughReplicas
        commit #1 t-0:CoordinatorNotAvailable
        > commit #2 g gen=-1 member=- offsets=t-0:6
        persist #2 g t-0:6
        > persisted #2 NotEnoughReplicasAfterAppend
        commit #2 t-0:CoordinatorNotAvailable
        > commit #3 g gen=-1 member=- offsets=t-0:7
        persist #3 g t-0:7
        > persisted #3 RequestTimedOut
        commit #3 t-0:CoordinatorNotAvailable
        > commit #4 g gen=-1 member=- offsets=t-0:8
        persist #4 g t-0:8
        > persisted #4 NotLeaderOrFollower
        commit #4 t-0:NotCoordinator
        > commit #5 g gen=-1 member=- offsets=t-0:9
        persist #5 g t-0:9
        > persisted #5 MessageTooLarge
        commit #5 t-0:InvalidCommitOffsetSize
        > fetch g
        offsets
        > commit #6 g gen=-1 member=- offsets=t-0:10
        persist #6 g t-0:10
        > persisted #6 ok
        commit #6 t-0:None
        > delete #7 g
        tombstones #7 g t-0
        > deleted #7 NotLeaderOrFollower
        delete #7 NotCoordinator
        > delete #8 g
        tombstones #8 g t-0
        > deleted #8 NotEnoughReplicas
        delete #8 CoordinatorNotAvailable
        > fetch g
        offsets t-0:10
        ",
    );
}

#[test]
fn group_state_names_round_trip() {
    for state in GroupState::ALL {
        assert_eq!(GroupState::from_name(state.name()), Some(state));
    }
    assert_eq!(GroupState::from_name("stable"), Some(GroupState::Stable));
    assert_eq!(GroupState::from_name("Rebalancing"), None);
}
