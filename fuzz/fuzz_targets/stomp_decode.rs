//! Feeds arbitrary bytes, in arbitrary chunkings, through `StompCodec::decode`
//! for every protocol version, checking that:
//! * nothing panics;
//! * chunked decoding yields the same items (and fails iff) one-shot does;
//! * every decoded frame that can be re-encoded decodes back to itself.
//!
//! Input layout: byte 0 picks limits (bit 7: tiny limits, to reach every
//! limit path) and seeds the chunk sizes (bits 0..7); the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard::listener::stomp::{codec, frame};
use tokio_util::codec::Decoder;

use codec::{CodecError, Incoming, Limits, StompCodec};
use frame::Version;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = if control & 0x80 != 0 {
        Limits {
            max_frame_size: 256,
            max_headers: 4,
            max_header_len: 32,
        }
    } else {
        Limits::default()
    };
    let chunks = chunk_sizes(control & 0x7f, input.len());
    for version in Version::ALL {
        let (whole, whole_err) = decode(input, version, limits, &[input.len().max(1)]);
        let (chunked, chunked_err) = decode(input, version, limits, &chunks);
        assert_eq!(whole, chunked, "chunking changed the decoded items");
        assert_eq!(
            whole_err.is_some(),
            chunked_err.is_some(),
            "{whole_err:?} vs {chunked_err:?}"
        );
        for item in &whole {
            if let Incoming::Frame(frame) = item {
                check_reencode(frame, version);
            }
        }
        // The stateless helper must agree with the codec on the first item.
        match codec::decode_one(input, version, &limits) {
            Ok(Some((item, _))) => assert_eq!(Some(&item), whole.first()),
            Ok(None) => assert!(whole.is_empty() && whole_err.is_none()),
            Err(_) => assert!(whole.is_empty() && whole_err.is_some()),
        }
    }
});

fn decode(
    input: &[u8],
    version: Version,
    limits: Limits,
    chunks: &[usize],
) -> (Vec<Incoming>, Option<CodecError>) {
    let mut codec = StompCodec::new(limits);
    codec.set_version(version);
    let mut buf = BytesMut::new();
    let (mut items, mut rest) = (Vec::new(), input);
    for i in 0.. {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Some(e)),
            }
        }
        if rest.is_empty() {
            break;
        }
        let n = chunks[i % chunks.len()].clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    (items, None)
}

/// Pseudo-random chunk sizes (xorshift), 1..=64 octets, from a 7-bit seed.
fn chunk_sizes(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let max = 1 + usize::from(seed % 64);
    (0..len.clamp(1, 256))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + (x as usize) % max
        })
        .collect()
}

fn check_reencode(frame: &frame::Frame, version: Version) {
    let mut wire = BytesMut::new();
    if codec::encode_frame(frame, version, &mut wire).is_err() {
        return;
    }
    let mut expected = frame.clone();
    if !frame.body.is_empty() && frame.header("content-length").is_none() {
        expected = expected.with_header("content-length", frame.body.len().to_string());
    }
    let unlimited = Limits {
        max_frame_size: usize::MAX,
        max_headers: usize::MAX,
        max_header_len: usize::MAX,
    };
    let decoded = codec::decode_one(&wire, version, &unlimited);
    match decoded {
        Ok(Some((item, used))) => {
            assert_eq!(used, wire.len());
            assert_eq!(item, Incoming::Frame(expected));
        }
        other => panic!("re-encoded frame did not decode: {other:?} from {wire:?}"),
    }
}
