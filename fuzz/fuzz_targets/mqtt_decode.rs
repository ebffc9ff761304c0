//! Feeds arbitrary bytes, in arbitrary chunkings, through the MQTT codec wrapper
//! (version detection, then 3.1.1 or 5.0 decoding, then our conversion to `In`),
//! checking that nothing panics and that chunked decoding yields the same packets (and
//! fails iff) one-shot decoding does.
//!
//! Input layout: byte 0 seeds the chunk sizes and picks a small or default maximum
//! packet size; the rest is the stream a client would send.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard::listener::mqtt::codec::{Codec, In};
use tokio_util::codec::Decoder;

fn decode_all(input: &[u8], max: u32, chunk: usize) -> (Vec<In>, bool) {
    let mut codec = Codec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let max = if control & 0x80 != 0 { 64 } else { 1024 * 1024 };
    let (whole, whole_err) = decode_all(input, max, input.len().max(1));
    let chunk = usize::from(control & 0x1f) + 1;
    let (pieces, pieces_err) = decode_all(input, max, chunk);
    assert_eq!(
        whole_err, pieces_err,
        "chunking changed whether decoding fails"
    );
    assert_eq!(whole, pieces, "chunking changed the packets");
});
