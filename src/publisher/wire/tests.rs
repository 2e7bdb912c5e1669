//! The reader's bookkeeping without a socket: frames cut, confirms settled, returns attributed,
//! the end of the connection.

use super::*;

fn shared() -> (Arc<Shared>, mpsc::UnboundedReceiver<WireEvent>) {
    shared_of(1)
}

fn shared_of(width: u16) -> (Arc<Shared>, mpsc::UnboundedReceiver<WireEvent>) {
    let (events, rx) = mpsc::unbounded_channel();
    let shared = Shared::new(FRAME_MAX as usize, None, width, events);
    shared.state().last_renew = Instant::now() - RENEW_AFTER;
    (Arc::new(shared), rx)
}

fn message(id: &str) -> Message {
    Message {
        id: id.into(),
        routing_key: "wegocod.order.status_changed".into(),
        source: "webhook-bridge/wegocod/a".into(),
        timestamp: 1_700_000_000,
        body: br#"{"id":"x"}"#.to_vec(),
    }
}

#[test]
fn frames_are_cut_only_when_whole_and_never_oversized() {
    let heartbeat = [8u8, 0, 0, 0, 0, 0, 0, 0xCE];
    let mut at = 0;
    assert!(next_frame(&heartbeat[..5], &mut at).unwrap().is_none());
    assert!(next_frame(&heartbeat[..7], &mut at).unwrap().is_none());
    assert_eq!(at, 0);
    let two = [heartbeat, heartbeat].concat();
    assert_eq!(
        next_frame(&two, &mut at).unwrap(),
        Some(AMQPFrame::Heartbeat)
    );
    assert_eq!(at, 8);
    assert_eq!(
        next_frame(&two, &mut at).unwrap(),
        Some(AMQPFrame::Heartbeat)
    );
    assert!(next_frame(&two, &mut at).unwrap().is_none());
    let mut at = 0;
    assert!(next_frame(&[1, 0, 1, 0xff, 0xff, 0xff, 0xff], &mut at).is_err());
    let mut at = 0;
    assert!(next_frame(&[1, 0, 1, 0, 0, 0, 1, 0, 0x00], &mut at).is_err());
}

#[test]
fn a_multiple_ack_settles_every_earlier_tag_and_a_nack_opens_a_new_channel() {
    let (shared, _events) = shared();
    let mut rx: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| shared.push_pending(id))
        .collect();
    shared.settle(1, 2, true, true);
    assert!(matches!(rx[0].try_recv(), Ok(Outcome::Acked)));
    assert!(matches!(rx[1].try_recv(), Ok(Outcome::Acked)));
    assert!(rx[2].try_recv().is_err(), "tag 3 is not settled yet");
    assert!(shared.state().out.is_empty());
    shared.settle(1, 3, false, false);
    assert!(matches!(rx[2].try_recv(), Ok(Outcome::Nacked(None))));
    let st = shared.state();
    assert_eq!(
        st.replacing,
        Some(1),
        "a nack on an open channel opens a new one"
    );
    let mut at = 0;
    assert_eq!(
        next_frame(&st.out, &mut at).unwrap(),
        Some(AMQPFrame::Method(2, channel_open()))
    );
}

#[test]
fn a_return_goes_to_its_own_publish_whichever_confirm_comes_first() {
    let (shared, _events) = shared();
    let mut first = shared.push_pending("first");
    let mut second = shared.push_pending("second");
    shared.returned(1, message("second"));
    shared.settle(1, 2, true, true);
    assert!(matches!(first.try_recv(), Ok(Outcome::Acked)));
    match second.try_recv() {
        Ok(Outcome::Returned(m)) => assert_eq!(m.id, "second"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_end_of_the_connection_fails_every_waiting_publish_and_tells_the_manager() {
    let (shared, mut events) = shared();
    let mut rx = shared.push_pending("a");
    shared.die(WireError::Io("gone".into()));
    assert!(matches!(
        rx.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ));
    assert!(matches!(events.try_recv(), Ok(WireEvent::Down)));
    assert!(shared.state().dead.is_some());
}

/// The channel ids in `out`'s method frames, in order.
fn methods(out: &[u8]) -> Vec<(u16, AMQPClass)> {
    let mut at = 0;
    let mut found = Vec::new();
    while let Some(frame) = next_frame(out, &mut at).unwrap() {
        if let AMQPFrame::Method(ch, class) = frame {
            found.push((ch, class));
        }
    }
    found
}

#[test]
fn publishes_take_the_channels_in_turn_and_a_nacked_one_is_replaced_alone() {
    let (shared, _events) = shared_of(3);
    let mut rx: Vec<_> = (0..6)
        .map(|i| shared.push_pending(&i.to_string()))
        .collect();
    {
        let st = shared.state();
        let tags: Vec<_> = st
            .channels
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.pending.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            tags,
            [
                (1, vec!["0".to_string(), "3".to_string()]),
                (2, vec!["1".to_string(), "4".to_string()]),
                (3, vec!["2".to_string(), "5".to_string()]),
            ]
        );
    }
    // Tags are per channel: tag 1 on channel 2 is publish "1".
    shared.settle(2, 1, false, false);
    assert!(matches!(rx[1].try_recv(), Ok(Outcome::Nacked(None))));
    assert!(rx[0].try_recv().is_err() && rx[2].try_recv().is_err());
    assert_eq!(shared.state().replacing, Some(2));
    assert_eq!(
        methods(&std::mem::take(&mut shared.state().out)),
        [(4, channel_open())]
    );
    // The replacement is open: channel 2 takes no new publish and closes once settled.
    shared
        .on_frame(AMQPFrame::Method(
            4,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        ))
        .unwrap();
    let later: Vec<_> = (6..12)
        .map(|i| shared.push_pending(&i.to_string()))
        .collect();
    {
        let st = shared.state();
        assert!(st.channels.iter().any(|c| c.id == 2 && c.retired));
        for c in st.channels.iter().filter(|c| c.id == 2) {
            assert_eq!(c.pending.len(), 1, "only publish 4 is left on channel 2");
        }
        let on_4 = st.channels.iter().find(|c| c.id == 4).unwrap();
        assert_eq!(on_4.pending.len(), 2, "the new channel takes its turns");
    }
    shared.settle(2, 2, false, true);
    assert!(matches!(rx[4].try_recv(), Ok(Outcome::Acked)));
    let st = shared.state();
    assert!(
        st.channels.iter().all(|c| c.id != 2),
        "settled, then closed"
    );
    assert_eq!(methods(&st.out), [(2, channel_close())]);
    assert_eq!(later.len(), 6);
}

#[test]
fn a_confirm_select_ok_nobody_asked_for_ends_the_connection() {
    let (shared, _events) = shared();
    let unasked = shared.on_frame(AMQPFrame::Method(
        2,
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
    ));
    assert!(unasked.is_err());
    assert_eq!(shared.state().channels.len(), 1);
}

/// What amq-protocol generates for a publish of `msg`: the method frame and the content header
/// with `publisher::properties`, as the builtin connection sent them before
/// [`frames::publish_frames`] wrote them directly.
fn generated(channel: u16, exchange: &str, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    let method = AMQPFrame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: msg.routing_key.as_str().into(),
            mandatory: true,
            immediate: false,
        })),
    );
    let header = AMQPFrame::Header(
        channel,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: msg.body.len() as u64,
            properties: crate::publisher::properties::properties(msg),
        },
    );
    append(&mut out, &method).unwrap();
    append(&mut out, &header).unwrap();
    out
}

#[test]
fn publish_frames_are_byte_for_byte_what_amq_protocol_generates() {
    let mut long = message("x");
    long.id = "i".repeat(255);
    long.routing_key = "r".repeat(255);
    long.source = "s".repeat(70_000);
    long.timestamp = u64::MAX;
    long.body = vec![b'{'; 300_000];
    let mut empty = message("");
    empty.routing_key.clear();
    empty.source.clear();
    empty.timestamp = 0;
    empty.body.clear();
    let mut unicode = message("ü-1");
    unicode.source = "/webhooks/wégocod".into();
    for (channel, exchange, msg) in [
        (1, "events", message("00000000-0000-4000-8000-000000000001")),
        (7, "", empty),
        (u16::MAX, &*"e".repeat(255), long),
        (3, "ex", unicode),
    ] {
        let mut out = vec![0xAA];
        frames::publish_frames(&mut out, channel, exchange, &msg).unwrap();
        assert_eq!(out[0], 0xAA);
        assert_eq!(
            out[1..],
            generated(channel, exchange, &msg)[..],
            "{}",
            msg.id
        );
        // And the reader's parser takes them back as a publish and its header.
        let (mut at, mut kinds) = (1, Vec::new());
        while let Some(frame) = next_frame(&out, &mut at).unwrap() {
            kinds.push(matches!(frame, AMQPFrame::Method(..)));
        }
        assert_eq!((kinds, at), (vec![true, false], out.len()));
    }
}

#[test]
fn a_name_no_short_string_can_hold_is_refused_and_nothing_written() {
    let mut too_long = message(&"i".repeat(256));
    let mut out = b"queued".to_vec();
    assert!(frames::publish_frames(&mut out, 1, "ex", &too_long).is_err());
    too_long.id = "ok".into();
    too_long.routing_key = "r".repeat(256);
    assert!(frames::publish_frames(&mut out, 1, "ex", &too_long).is_err());
    too_long.routing_key = "ok".into();
    assert!(frames::publish_frames(&mut out, 1, &"e".repeat(256), &too_long).is_err());
    assert_eq!(out, b"queued");
}
