//! The builtin publishing connection's reader (`publisher::wire`), fed what a broker might send:
//! the first byte sets how many publishes wait for their confirm, the rest is the byte stream.
//! Any bytes: no panic, never more consumed than given, never more settled than waiting.

use webhook_bridge::publisher::wire::offline;

pub fn run(data: &[u8]) {
    let Some((&pending, stream)) = data.split_first() else {
        return;
    };
    let pending = usize::from(pending % 16);
    let (settled, consumed) = offline(stream, pending);
    assert!(consumed <= stream.len());
    assert!(settled <= pending);
}

/// One frame: type, channel, size, payload, end octet.
fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// A `basic` method frame on channel 1: class 60, `method`, then `args`.
fn basic(method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 60];
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(1, 1, &p)
}

fn ack(tag: u64, multiple: bool) -> Vec<u8> {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(u8::from(multiple));
    basic(80, &a)
}

fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// `basic.return` of the message with id `id`, with its content header and body.
fn returned(id: &str, body: &[u8]) -> Vec<u8> {
    let mut args = 312u16.to_be_bytes().to_vec();
    args.extend(short("NO_ROUTE"));
    args.extend(short("webhooks"));
    args.extend(short("wegocod.order.status_changed"));
    let mut out = basic(50, &args);
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    header.extend_from_slice(&0x0080u16.to_be_bytes()); // message-id only
    header.extend(short(id));
    out.extend(frame(2, 1, &header));
    out.extend(frame(3, 1, body));
    out
}

/// Streams a broker sends a publisher, the first byte the number of publishes waiting: acks
/// (single and multiple), a nack, a return before its ack, heartbeats, `connection.blocked`.
pub fn seeds() -> Vec<Vec<u8>> {
    let heartbeat = frame(8, 0, &[]);
    let blocked = frame(1, 0, &[0, 10, 0, 60, 3, b'm', b'e', b'm']);
    let nack = {
        let mut a = 2u64.to_be_bytes().to_vec();
        a.push(1);
        basic(120, &a)
    };
    let streams: Vec<Vec<u8>> = vec![
        [ack(1, false), ack(3, true)].concat(),
        [
            heartbeat.clone(),
            returned("1", br#"{"id":"1"}"#),
            ack(2, true),
        ]
        .concat(),
        [nack, heartbeat, ack(4, false)].concat(),
        [blocked, ack(1, true)].concat(),
    ];
    streams
        .into_iter()
        .map(|s| [vec![4u8], s].concat())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what they claim: whole frames the reader takes, settling publishes.
    #[test]
    fn every_seed_is_read_to_its_end_and_settles_publishes() {
        let expected = [3, 2, 3, 1];
        for (seed, want) in seeds().iter().zip(expected) {
            let (settled, consumed) = offline(&seed[1..], usize::from(seed[0]));
            assert_eq!(consumed, seed.len() - 1);
            assert_eq!(settled, want);
        }
    }
}
