use super::*;
use bytes::BytesMut;
use fjord_schema::frame::{encode_frame, FrameFlags};
use fjord_schema::CorrelationId;
use proptest::prelude::*;

fn config() -> ConnectionConfig {
    ConnectionConfig {
        frame_bytes_max: 256,
        write_queue_bytes_max: 100,
        idle_timeout: Duration::from_secs(10),
        first_request_timeout: Duration::from_secs(10),
    }
}

/// [`config`] with a first-request deadline of 2 s.
fn config_first_request_2s() -> ConnectionConfig {
    ConnectionConfig {
        first_request_timeout: Duration::from_secs(2),
        ..config()
    }
}

fn frame(cid: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, 0, 0, FrameFlags(0), CorrelationId(cid), body, &[]);
    out.to_vec()
}

/// Feeds `bytes` into the connection the way a driver would, in reads of at
/// most `chunk` bytes.
fn feed(conn: &mut Connection, mut bytes: &[u8], chunk: usize) {
    while !bytes.is_empty() {
        let space = conn.read_space();
        let n = space.len().min(chunk).min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        conn.handle_read(n);
        bytes = &bytes[n..];
    }
}

/// Runs the connection until it asks for a read or closes, answering every
/// request with a `response_len`-byte response and writing at most
/// `write_chunk` bytes at a time. Returns the correlation ids handled.
fn run(conn: &mut Connection, now: Instant, response_len: usize, write_chunk: usize) -> Vec<u32> {
    let mut handled = Vec::new();
    loop {
        match conn.poll_action(now).expect("no connection error") {
            Action::Handle(frame) => {
                handled.push(frame.header.correlation_id().get());
                conn.queue_response(Bytes::from(vec![7u8; response_len]));
            }
            Action::Write => {
                let n = conn
                    .transmit_chunk()
                    .expect("queued")
                    .len()
                    .min(write_chunk);
                conn.handle_written(n);
            }
            Action::Read | Action::Close => return handled,
        }
    }
}

#[test]
fn yields_frames_split_across_reads() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    let wire = [frame(1, b"hello"), frame(2, b"world")].concat();
    let mut handled = Vec::new();
    for byte in &wire {
        feed(&mut conn, std::slice::from_ref(byte), 1);
        handled.extend(run(&mut conn, now, 3, 1));
    }
    assert_eq!(handled, vec![1, 2]);
    assert_eq!(conn.write_queue_bytes(), 0);
    assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
}

#[test]
fn full_write_queue_stops_decoding_until_written() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    let wire: Vec<u8> = (0..5).flat_map(|cid| frame(cid, b"x")).collect();
    feed(&mut conn, &wire, usize::MAX);
    // Each response is 60 bytes and the queue bound is 100: after two
    // responses the core must ask for a write before decoding more.
    let mut handled = 0;
    loop {
        match conn.poll_action(now).expect("ok") {
            Action::Handle(_) => {
                handled += 1;
                conn.queue_response(Bytes::from(vec![0u8; 60]));
                assert!(conn.write_queue_bytes() <= 100 + 60);
            }
            Action::Write => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(handled, 2);
    // Writing everything resumes decoding.
    assert_eq!(run(&mut conn, now, 60, usize::MAX), vec![2, 3, 4]);
}

#[test]
fn oversized_frame_is_a_connection_error() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    // The header alone announces too much.
    feed(&mut conn, &frame(1, &[0u8; 300])[..40], usize::MAX);
    assert!(matches!(
        conn.poll_action(now),
        Err(ConnectionError::Frame(FrameError::TooLarge { .. }))
    ));
}

#[test]
fn garbage_is_a_connection_error() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    feed(&mut conn, &[0xAB; 64], usize::MAX);
    assert!(matches!(
        conn.poll_action(now),
        Err(ConnectionError::Frame(FrameError::BadMagic(_)))
    ));
}

#[test]
fn eof_after_whole_frames_flushes_then_closes() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    feed(&mut conn, &frame(9, b"abc"), usize::MAX);
    conn.handle_eof();
    assert!(matches!(conn.poll_action(now), Ok(Action::Handle(_))));
    conn.queue_response(Bytes::from_static(b"resp"));
    assert!(matches!(conn.poll_action(now), Ok(Action::Write)));
    conn.handle_written(4);
    assert!(matches!(conn.poll_action(now), Ok(Action::Close)));
}

#[test]
fn eof_mid_frame_is_reported() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    let wire = frame(1, b"abcdef");
    feed(&mut conn, &wire[..wire.len() - 2], usize::MAX);
    assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
    let _ = conn.read_space();
    conn.handle_read(0);
    assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
    conn.handle_eof();
    assert!(matches!(
        conn.poll_action(now),
        Err(ConnectionError::ClosedMidFrame { .. })
    ));
}

#[test]
fn partial_frames_do_not_reset_the_idle_timer() {
    let start = Instant::now();
    let mut conn = Connection::new(config(), start);
    let wire = frame(1, b"slow");
    // A byte every second for nine seconds: still inside the timeout.
    for (second, byte) in wire.iter().take(9).enumerate() {
        let now = start + Duration::from_secs(second as u64);
        conn.handle_timeout(now).expect("not idle yet");
        feed(&mut conn, std::slice::from_ref(byte), 1);
        assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
    }
    assert_eq!(
        conn.handle_timeout(start + Duration::from_secs(10)),
        Err(ConnectionError::IdleTimeout {
            idle_timeout: Duration::from_secs(10)
        })
    );
}

#[test]
fn a_whole_request_resets_the_idle_timer() {
    let start = Instant::now();
    let mut conn = Connection::new(config(), start);
    let later = start + Duration::from_secs(8);
    feed(&mut conn, &frame(1, b""), usize::MAX);
    assert_eq!(run(&mut conn, later, 1, usize::MAX), vec![1]);
    assert_eq!(conn.poll_timeout(), later + Duration::from_secs(10));
    conn.handle_timeout(start + Duration::from_secs(12))
        .expect("timer was reset by the request");
}

#[test]
fn a_silent_connection_is_closed_at_the_first_request_deadline() {
    let start = Instant::now();
    let mut conn = Connection::new(config_first_request_2s(), start);
    assert!(matches!(conn.poll_action(start), Ok(Action::Read)));
    assert_eq!(conn.poll_timeout(), start + Duration::from_secs(2));
    conn.handle_timeout(start + Duration::from_millis(1999))
        .expect("inside the first-request deadline");
    assert_eq!(
        conn.handle_timeout(start + Duration::from_secs(2)),
        Err(ConnectionError::FirstRequestTimeout {
            first_request_timeout: Duration::from_secs(2)
        })
    );
}

#[test]
fn a_partial_first_request_does_not_stop_the_first_request_deadline() {
    let start = Instant::now();
    let mut conn = Connection::new(config_first_request_2s(), start);
    let wire = frame(1, b"almost");
    let at = start + Duration::from_secs(1);
    feed(&mut conn, &wire[..wire.len() - 1], usize::MAX);
    assert!(matches!(conn.poll_action(at), Ok(Action::Read)));
    assert_eq!(conn.poll_timeout(), start + Duration::from_secs(2));
    assert!(matches!(
        conn.handle_timeout(start + Duration::from_secs(2)),
        Err(ConnectionError::FirstRequestTimeout { .. })
    ));
}

#[test]
fn the_first_whole_request_switches_to_the_idle_timeout() {
    let start = Instant::now();
    let mut conn = Connection::new(config_first_request_2s(), start);
    let at = start + Duration::from_secs(1);
    feed(&mut conn, &frame(1, b""), usize::MAX);
    assert_eq!(run(&mut conn, at, 1, usize::MAX), vec![1]);
    // From now on only the idle timeout counts, from the request.
    assert_eq!(conn.poll_timeout(), at + Duration::from_secs(10));
    conn.handle_timeout(start + Duration::from_secs(5))
        .expect("past the first-request deadline but not idle");
    assert_eq!(
        conn.handle_timeout(at + Duration::from_secs(10)),
        Err(ConnectionError::IdleTimeout {
            idle_timeout: Duration::from_secs(10)
        })
    );
}

#[test]
fn an_idle_timeout_shorter_than_the_first_request_deadline_wins() {
    let start = Instant::now();
    let config = ConnectionConfig {
        idle_timeout: Duration::from_secs(1),
        ..config_first_request_2s()
    };
    let mut conn = Connection::new(config, start);
    assert_eq!(conn.poll_timeout(), start + Duration::from_secs(1));
    assert_eq!(
        conn.handle_timeout(start + Duration::from_secs(1)),
        Err(ConnectionError::IdleTimeout {
            idle_timeout: Duration::from_secs(1)
        })
    );
}

#[test]
fn read_space_never_exceeds_the_buffer_bound() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    let bound = conn.config().read_buffer_bytes_max();
    // A header announcing a maximal frame, then its body one chunk at a time.
    let wire = frame(1, &[1u8; 256]);
    let mut sent = 0;
    while sent < wire.len() {
        let buffered = conn.read_buffered_bytes();
        let space = conn.read_space();
        assert!(buffered + space.len() <= bound);
        let n = space.len().min(wire.len() - sent).min(100);
        space[..n].copy_from_slice(&wire[sent..sent + n]);
        conn.handle_read(n);
        sent += n;
        if sent < wire.len() {
            assert!(matches!(conn.poll_action(now), Ok(Action::Read)));
        }
    }
    assert_eq!(run(&mut conn, now, 1, usize::MAX), vec![1]);
}

proptest! {
    /// Any bytes, in any read sizes, with any write sizes: the core never
    /// panics, and never queues responses past the bound plus one response.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        valid in prop::collection::vec(0u32..4, 0..6),
        chunk in 1usize..70,
        write_chunk in 1usize..70,
    ) {
        let now = Instant::now();
        let mut conn = Connection::new(config(), now);
        let mut wire: Vec<u8> = valid.iter().flat_map(|cid| frame(*cid, b"ok")).collect();
        wire.extend_from_slice(&bytes);
        let mut offset = 0;
        loop {
            match conn.poll_action(now) {
                Err(_) | Ok(Action::Close) => break,
                Ok(Action::Handle(_)) => conn.queue_response(Bytes::from(vec![1u8; 30])),
                Ok(Action::Write) => {
                    let n = conn.transmit_chunk().map_or(0, |c| c.len().min(write_chunk));
                    conn.handle_written(n);
                }
                Ok(Action::Read) if offset == wire.len() => conn.handle_eof(),
                Ok(Action::Read) => {
                    let space = conn.read_space();
                    let n = space.len().min(chunk).min(wire.len() - offset);
                    space[..n].copy_from_slice(&wire[offset..offset + n]);
                    conn.handle_read(n);
                    offset += n;
                }
            }
            prop_assert!(conn.write_queue_bytes() <= 100 + 30);
        }
    }
}

#[test]
fn small_chunks_are_gathered_large_ones_written_in_place() {
    let now = Instant::now();
    let mut conn = Connection::new(config(), now);
    let mut scratch = Vec::new();
    for piece in [&b"head"[..], b"ab", b"cd", &[9u8; 50], b"tail"] {
        conn.queue_response(Bytes::copy_from_slice(piece));
    }
    // "head", "ab", "cd" are small (< 10) and fit in 6 bytes with the first chunk.
    assert_eq!(
        conn.transmit_gather(&mut scratch, 10, 6),
        Some(&b"headab"[..])
    );
    conn.handle_written(5);
    assert_eq!(conn.transmit_gather(&mut scratch, 10, 6), Some(&b"bcd"[..]));
    conn.handle_written(3);
    // A large chunk is returned as it is, without copying.
    let large = conn.transmit_gather(&mut scratch, 10, 6).expect("queued");
    assert_eq!(large, &[9u8; 50][..]);
    conn.handle_written(50);
    assert_eq!(
        conn.transmit_gather(&mut scratch, 10, 6),
        Some(&b"tail"[..])
    );
    conn.handle_written(4);
    assert_eq!(conn.transmit_gather(&mut scratch, 10, 6), None);
    assert_eq!(conn.write_queue_bytes(), 0);
}
