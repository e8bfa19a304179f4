//! Two transports on one executor, over real sockets on 127.0.0.1.

use std::io::Write;

use super::*;

/// Records one-way frames; answers requests with their body reversed, or
/// an error for an empty body; a body `payload N` is answered with N
/// payload chunks of growing size (small ones gathered, large ones not).
#[derive(Default)]
struct Echo {
    one_way: RefCell<Vec<(ClusterApiKey, Bytes)>>,
}

impl ClusterService for Echo {
    fn one_way(&self, api: ClusterApiKey, body: Bytes) {
        self.one_way.borrow_mut().push((api, body));
    }

    fn request(
        &self,
        _api: ClusterApiKey,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>>>> {
        Box::pin(async move {
            if body.is_empty() {
                return Err("empty".to_string());
            }
            if let Some(n) = std::str::from_utf8(&body)
                .ok()
                .and_then(|b| b.strip_prefix("payload "))
                .and_then(|n| n.parse::<usize>().ok())
            {
                return Ok(Reply {
                    body: Bytes::from_static(b"chunks"),
                    payload: payload_chunks(n),
                });
            }
            let mut reversed = body.to_vec();
            reversed.reverse();
            Ok(Reply::from(Bytes::from(reversed)))
        })
    }
}

fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { test().await })
        .unwrap()
        .join()
        .unwrap();
}

const LONG: Duration = Duration::from_secs(10);

/// `n` chunks, the i-th of 1000 × 4^i bytes (capped at 1 MiB) of byte i.
fn payload_chunks(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let len = (1000usize << (2 * i.min(10))).min(1 << 20);
            Bytes::from(vec![i as u8; len])
        })
        .collect()
}

/// An answer's payload chunks, small and large, arrive as one payload
/// after the body, in order.
#[test]
fn payload_chunks_arrive_in_order_after_the_body() {
    run(|| async {
        let server = Transport::new(2);
        let addr = server
            .listen("127.0.0.1:0".parse().unwrap(), Rc::new(Echo::default()))
            .unwrap();
        let client = Transport::new(1);
        client.set_peer(2, addr.to_string());
        for n in [0, 1, 3, 8] {
            let answer = client
                .call_frame(
                    2,
                    ClusterApiKey::ReplicaFetch,
                    Bytes::from(format!("payload {n}")),
                    LONG,
                )
                .await
                .unwrap();
            assert_eq!(answer.body, Bytes::from_static(b"chunks"));
            assert_eq!(answer.payload, Bytes::from(payload_chunks(n).concat()));
        }
    });
}

#[test]
fn frames_one_way_in_order_and_calls_answered() {
    run(|| async {
        let echo = Rc::new(Echo::default());
        let server = Transport::new(2);
        let addr = server
            .listen("127.0.0.1:0".parse().unwrap(), echo.clone())
            .unwrap();
        let client = Transport::new(1);
        client.set_peer(2, addr.to_string());
        for i in 0..10u8 {
            assert!(client.send(2, ClusterApiKey::RaftMessages, Bytes::from(vec![i])));
        }
        let answer = client
            .call(
                2,
                ClusterApiKey::ControllerCommand,
                Bytes::from_static(b"abc"),
                LONG,
            )
            .await;
        assert_eq!(answer, Ok(Bytes::from_static(b"cba")));
        // The one-way frames were sent before the call on the same
        // connection, so they arrived first and in order.
        let got: Vec<u8> = echo.one_way.borrow().iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        let error = client
            .call(2, ClusterApiKey::ControllerCommand, Bytes::new(), LONG)
            .await;
        assert_eq!(
            error,
            Err(CallError::Remote {
                node: 2,
                message: "empty".to_string()
            })
        );
        assert!(
            !client.send(3, ClusterApiKey::RaftMessages, Bytes::new()),
            "unknown peer"
        );
    });
}

#[test]
fn a_bad_frame_closes_its_connection_not_the_listener() {
    run(|| async {
        let echo = Rc::new(Echo::default());
        let server = Transport::new(2);
        let addr = server
            .listen("127.0.0.1:0".parse().unwrap(), echo.clone())
            .unwrap();
        // Garbage, a client-api frame and an oversized frame header, each
        // on its own connection (blocking std sockets on a helper thread).
        let garbage = std::thread::spawn(move || {
            let mut closed = 0;
            let mut client_api = BytesMut::new();
            encode_frame(
                &mut client_api,
                1,
                0,
                FrameFlags(0),
                CorrelationId(1),
                b"x",
                &[],
            );
            let mut big = BytesMut::new();
            encode_frame(&mut big, 1000, 0, FrameFlags(0), CorrelationId(1), &[], &[]);
            big[16..20].copy_from_slice(&(CLUSTER_FRAME_BYTES_MAX + 1).to_le_bytes());
            let inputs = [
                b"not a frame at all, not at all".to_vec(),
                client_api.to_vec(),
                big.to_vec(),
            ];
            for bytes in inputs {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(&bytes).unwrap();
                let mut buf = [0u8; 16];
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                if matches!(std::io::Read::read(&mut s, &mut buf), Ok(0)) {
                    closed += 1;
                }
            }
            closed
        });
        while !garbage.is_finished() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(garbage.join().unwrap(), 3, "each connection closed");
        let client = Transport::new(1);
        client.set_peer(2, addr.to_string());
        let answer = client
            .call(
                2,
                ClusterApiKey::ControllerCommand,
                Bytes::from_static(b"ok"),
                LONG,
            )
            .await;
        assert_eq!(answer, Ok(Bytes::from_static(b"ko")));
        assert!(echo.one_way.borrow().is_empty());
    });
}

#[test]
fn calls_to_an_unreachable_peer_fail_and_its_queue_stays_bounded() {
    run(|| async {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Transport::new(1);
        client.set_peer(2, format!("127.0.0.1:{port}"));
        for _ in 0..PEER_QUEUE_FRAMES_MAX * 2 {
            client.send(2, ClusterApiKey::RaftMessages, Bytes::from_static(b"m"));
        }
        let peer = client.peer(2).unwrap();
        assert_eq!(peer.queue.borrow().len(), PEER_QUEUE_FRAMES_MAX);
        let answer = client
            .call(
                2,
                ClusterApiKey::ControllerCommand,
                Bytes::from_static(b"x"),
                Duration::from_millis(300),
            )
            .await;
        assert!(
            matches!(
                answer,
                Err(CallError::Timeout(2) | CallError::Disconnected(2))
            ),
            "{answer:?}"
        );
        assert!(!client.connected(2));
        assert!(peer.pending.borrow().is_empty());
        // The call did not displace the Raft frames' bound.
        assert!(peer.queue.borrow().len() <= PEER_QUEUE_FRAMES_MAX);
    });
}
