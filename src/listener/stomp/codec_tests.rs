//! Tests of the STOMP codec: every framing rule with exact bytes, byte-by-byte feeding,
//! limits and errors, and property tests (round trips, chunking, byte soup).
use super::*;
use proptest::prelude::*;

fn codec(version: Version, limits: Limits) -> StompCodec {
    let mut codec = StompCodec::new(limits);
    codec.set_version(version);
    codec
}

/// Feeds `input` in chunks of the given sizes (cycled), decoding after
/// each chunk. Returns everything decoded and the error that ended it.
fn decode_chunked(
    input: &[u8],
    version: Version,
    limits: Limits,
    chunks: &[usize],
) -> (Vec<Incoming>, Option<CodecError>) {
    let mut codec = codec(version, limits);
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

/// Decodes `input` all at once and byte by byte, asserts both agree
/// (errors by message), and returns the result.
fn decode(input: &[u8], version: Version, limits: Limits) -> (Vec<Incoming>, Option<String>) {
    let (items, err) = decode_chunked(input, version, limits, &[usize::MAX]);
    let err = err.map(|e| e.to_string());
    let (bytewise, bytewise_err) = decode_chunked(input, version, limits, &[1]);
    assert_eq!(items, bytewise, "byte-by-byte items differ");
    assert_eq!(
        err,
        bytewise_err.map(|e| e.to_string()),
        "byte-by-byte error differs"
    );
    (items, err)
}

fn decode_ok(input: &[u8], version: Version) -> Vec<Incoming> {
    let (items, err) = decode(input, version, Limits::default());
    assert_eq!(err, None);
    items
}

fn decode_frame(input: &[u8], version: Version) -> Frame {
    match decode_ok(input, version).as_slice() {
        [Incoming::Frame(frame)] => frame.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn decode_err_with(input: &[u8], version: Version, limits: Limits) -> String {
    match decode(input, version, limits) {
        (_, Some(err)) => err,
        (items, None) => panic!("expected an error, got {items:?}"),
    }
}

fn decode_err(input: &[u8], version: Version) -> String {
    decode_err_with(input, version, Limits::default())
}

fn encode(frame: &Frame, version: Version) -> Result<Vec<u8>, CodecError> {
    let mut dst = BytesMut::new();
    codec(version, Limits::default()).encode(frame.clone(), &mut dst)?;
    Ok(dst.to_vec())
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn err_string(e: CodecError) -> String {
    e.to_string()
}

// ----- decoding: framing -------------------------------------------------

#[test]
fn decodes_a_simple_frame() {
    for v in Version::ALL {
        let f = decode_frame(b"SEND\ndestination:/queue/a\n\nhello\0", v);
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.headers, headers(&[("destination", "/queue/a")]));
        assert_eq!(f.body, Bytes::from_static(b"hello"));
    }
}

#[test]
fn decodes_frame_without_headers_or_body() {
    let f = decode_frame(b"DISCONNECT\n\n\0", Version::V1_2);
    assert_eq!(f, Frame::new(Command::Disconnect));
}

#[test]
fn accepts_crlf_everywhere_in_every_version() {
    for v in Version::ALL {
        let f = decode_frame(b"SEND\r\ndestination:/q\r\nx:1\n\r\nhi\0", v);
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.headers, headers(&[("destination", "/q"), ("x", "1")]));
        assert_eq!(f.body, Bytes::from_static(b"hi"));
    }
}

#[test]
fn only_the_cr_of_a_crlf_is_stripped() {
    let f = decode_frame(b"SEND\na:b\r\r\nc:d\re\n\n\0", Version::V1_1);
    assert_eq!(f.headers, headers(&[("a", "b\r"), ("c", "d\re")]));
}

#[test]
fn decodes_every_command() {
    for c in Command::ALL {
        let input = format!("{}\n\n\0", c.as_str());
        assert_eq!(decode_frame(input.as_bytes(), Version::V1_2).command, c);
    }
}

#[test]
fn decodes_consecutive_frames_in_one_buffer() {
    let items = decode_ok(
        b"BEGIN\ntransaction:t\n\n\0COMMIT\ntransaction:t\n\n\0",
        Version::V1_2,
    );
    let cmds: Vec<_> = items
        .iter()
        .map(|i| match i {
            Incoming::Frame(f) => f.command,
            Incoming::HeartBeat => panic!("unexpected heart-beat"),
        })
        .collect();
    assert_eq!(cmds, [Command::Begin, Command::Commit]);
}

#[test]
fn eols_between_frames_are_heart_beats() {
    let items = decode_ok(b"\n\r\n\nSEND\n\nx\0\n\r\nACK\nid:1\n\n\0\n", Version::V1_2);
    let send = Frame::new(Command::Send).with_body(Bytes::from_static(b"x"));
    let ack = Frame::new(Command::Ack).with_header("id", "1");
    use Incoming::HeartBeat as Hb;
    assert_eq!(
        items,
        [
            Hb,
            Hb,
            Hb,
            Incoming::Frame(send),
            Hb,
            Hb,
            Incoming::Frame(ack),
            Hb
        ]
    );
}

#[test]
fn lone_cr_waits_for_its_lf() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"\n");
    assert_eq!(c.decode(&mut buf).unwrap(), Some(Incoming::HeartBeat));
    assert!(buf.is_empty());
}

#[test]
fn incomplete_frames_wait_for_more() {
    for partial in [
        &b"SE"[..],
        b"SEND",
        b"SEND\r",
        b"SEND\nde",
        b"SEND\ndest:x\r",
        b"SEND\n\nbody",
        b"SEND\ncontent-length:3\n\nab",
        b"SEND\ncontent-length:3\n\nabc",
    ] {
        let (items, err) = decode(partial, Version::V1_2, Limits::default());
        assert!(items.is_empty() && err.is_none(), "{partial:?}");
    }
}

#[test]
fn partial_input_is_kept_in_the_buffer() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"SEND\na:1\n\nxy"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert_eq!(&buf[..], b"SEND\na:1\n\nxy");
    buf.extend_from_slice(b"\0MESS");
    assert!(matches!(c.decode(&mut buf), Ok(Some(Incoming::Frame(_)))));
    assert_eq!(&buf[..], b"MESS");
}

// ----- decoding: headers ---------------------------------------------------

#[test]
fn only_the_first_colon_separates_and_whitespace_is_kept() {
    for v in Version::ALL {
        let f = decode_frame(b"SEND\nurl:http://x:80/ \n a : b\t\n\n\0", v);
        assert_eq!(
            f.headers,
            headers(&[("url", "http://x:80/ "), (" a ", " b\t")])
        );
    }
}

#[test]
fn empty_header_value_is_allowed() {
    let f = decode_frame(b"SEND\nempty:\n\n\0", Version::V1_2);
    assert_eq!(f.headers, headers(&[("empty", "")]));
}

#[test]
fn repeated_headers_are_kept_and_the_first_wins() {
    let f = decode_frame(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0", Version::V1_2);
    assert_eq!(f.header("foo"), Some("World"));
    assert_eq!(
        f.headers_named("foo").collect::<Vec<_>>(),
        ["World", "Hello"]
    );
}

#[test]
fn unescapes_per_version() {
    let input = b"SEND\nk\\c\\n:a\\cb\\nc\\\\d\n\n\0";
    let f = decode_frame(input, Version::V1_2);
    assert_eq!(f.headers, headers(&[("k:\n", "a:b\nc\\d")]));
    let f = decode_frame(input, Version::V1_1);
    assert_eq!(f.headers, headers(&[("k:\n", "a:b\nc\\d")]));
    let f = decode_frame(input, Version::V1_0);
    assert_eq!(f.headers, headers(&[("k\\c\\n", "a\\cb\\nc\\\\d")]));
}

#[test]
fn backslash_r_is_an_escape_only_in_1_2() {
    let input = b"SEND\nk:a\\rb\n\n\0";
    assert_eq!(
        decode_frame(input, Version::V1_2).headers,
        headers(&[("k", "a\rb")])
    );
    assert_eq!(
        decode_err(input, Version::V1_1),
        r#"invalid escape sequence "\\r" in header"#
    );
    assert_eq!(
        decode_frame(input, Version::V1_0).headers,
        headers(&[("k", "a\\rb")])
    );
}

#[test]
fn undefined_escapes_are_fatal_in_1_1_and_1_2() {
    for v in [Version::V1_1, Version::V1_2] {
        assert_eq!(
            decode_err(b"SEND\nk:a\\tb\n\n\0", v),
            r#"invalid escape sequence "\\t" in header"#
        );
        assert_eq!(
            decode_err(b"SEND\nk\\x:v\n\n\0", v),
            r#"invalid escape sequence "\\x" in header"#
        );
        assert_eq!(
            decode_err(b"SEND\nk:trailing\\\n\n\0", v),
            r#"invalid escape sequence "\\" in header"#
        );
    }
    let f = decode_frame(b"SEND\nk:a\\tb\\\n\n\0", Version::V1_0);
    assert_eq!(f.headers, headers(&[("k", "a\\tb\\")]));
}

#[test]
fn connect_stomp_and_connected_are_never_unescaped() {
    for v in Version::ALL {
        for cmd in ["CONNECT", "STOMP", "CONNECTED"] {
            let input = format!("{cmd}\nlogin:a\\cb\npasscode:p\\t\\\\\n\n\0");
            let f = decode_frame(input.as_bytes(), v);
            assert_eq!(
                f.headers,
                headers(&[("login", "a\\cb"), ("passcode", "p\\t\\\\")])
            );
        }
    }
}

#[test]
fn version_can_change_between_frames() {
    let mut c = codec(Version::V1_0, Limits::default());
    let mut buf = BytesMut::from(&b"CONNECT\naccept-version:1.2\n\n\0SEND\nk:\\n\n\n\0"[..]);
    let Some(Incoming::Frame(connect)) = c.decode(&mut buf).unwrap() else {
        panic!("expected CONNECT");
    };
    c.set_version(Version::negotiate(connect.header("accept-version")).unwrap());
    assert_eq!(c.version(), Version::V1_2);
    let Some(Incoming::Frame(send)) = c.decode(&mut buf).unwrap() else {
        panic!("expected SEND");
    };
    assert_eq!(send.header("k"), Some("\n"));
}

// ----- decoding: bodies ----------------------------------------------------

#[test]
fn content_length_allows_nul_in_body() {
    let f = decode_frame(b"SEND\ncontent-length:5\n\na\0b\0c\0", Version::V1_2);
    assert_eq!(f.body, Bytes::from_static(b"a\0b\0c"));
    assert_eq!(f.header("content-length"), Some("5"));
}

#[test]
fn content_length_zero_and_leading_zeros() {
    assert_eq!(
        decode_frame(b"SEND\ncontent-length:0\n\n\0", Version::V1_0).body,
        Bytes::new()
    );
    assert_eq!(
        decode_frame(b"SEND\ncontent-length:002\n\nab\0", Version::V1_0).body,
        Bytes::from_static(b"ab")
    );
}

#[test]
fn octet_after_content_length_body_must_be_nul() {
    assert_eq!(
        decode_err(b"SEND\ncontent-length:2\n\nabc\0", Version::V1_2),
        err_string(CodecError::MissingNul)
    );
}

#[test]
fn invalid_content_length_is_an_error() {
    for bad in [
        "abc",
        "-1",
        "+5",
        " 5",
        "5 ",
        "",
        "1.0",
        "0x10",
        "99999999999999999999999999",
    ] {
        let input = format!("SEND\ncontent-length:{bad}\n\n\0");
        assert_eq!(
            decode_err(input.as_bytes(), Version::V1_2),
            err_string(CodecError::InvalidContentLength),
            "{bad:?}"
        );
    }
}

#[test]
fn first_content_length_wins() {
    let f = decode_frame(
        b"SEND\ncontent-length:3\ncontent-length:1\n\na\0c\0",
        Version::V1_2,
    );
    assert_eq!(f.body, Bytes::from_static(b"a\0c"));
    // A later, invalid repeat is ignored like any repeated header.
    let f = decode_frame(
        b"SEND\ncontent-length:1\ncontent-length:x\n\na\0",
        Version::V1_2,
    );
    assert_eq!(f.body, Bytes::from_static(b"a"));
}

#[test]
fn body_without_content_length_ends_at_first_nul() {
    let items = decode_ok(b"SEND\n\nab\0cd\0", Version::V1_2);
    assert_eq!(
        items.len(),
        1,
        "\"cd\" is not a command and is not complete"
    );
    let (items, err) = decode(b"SEND\n\nab\0cd\n\0", Version::V1_2, Limits::default());
    assert_eq!(items.len(), 1);
    assert_eq!(
        err,
        Some(err_string(CodecError::UnknownCommand("cd".into())))
    );
}

// ----- decoding: errors --------------------------------------------------------

#[test]
fn unknown_commands_are_rejected() {
    assert_eq!(
        decode_err(b"send\n\n\0", Version::V1_2),
        r#"unknown command "send""#
    );
    assert_eq!(
        decode_err(b"FOO\r\n\n\0", Version::V1_2),
        r#"unknown command "FOO""#
    );
    assert_eq!(
        decode_err(b"SEND \n\n\0", Version::V1_2),
        r#"unknown command "SEND ""#
    );
    assert_eq!(
        decode_err(b"\0\n", Version::V1_2),
        r#"unknown command "\0""#
    );
    // A stray NUL right after a frame is not tolerated either.
    assert_eq!(
        decode_err(b"SEND\n\n\0\0\n", Version::V1_2),
        r#"unknown command "\0""#
    );
}

#[test]
fn unknown_command_is_rejected_without_waiting_for_eol() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1"[..]);
    let err = c.decode(&mut buf).unwrap_err();
    assert_eq!(err.to_string(), r#"unknown command "GET / HTTP/1.""#);
    // Within the longest command length we still wait.
    let mut buf = BytesMut::from(&b"UNSUBSCRIBE\r"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
}

#[test]
fn header_without_colon_or_name_is_malformed() {
    for input in [
        &b"SEND\nnocolon\n\n\0"[..],
        b"SEND\n:value\n\n\0",
        b"SEND\n:\n\n\0",
    ] {
        for v in Version::ALL {
            assert_eq!(
                decode_err(input, v),
                err_string(CodecError::MalformedHeader)
            );
        }
    }
}

#[test]
fn non_utf8_headers_are_rejected() {
    for input in [&b"SEND\nk:\xff\n\n\0"[..], b"SEND\n\xc3:v\n\n\0"] {
        assert_eq!(
            decode_err(input, Version::V1_2),
            err_string(CodecError::InvalidUtf8)
        );
    }
    assert_eq!(
        decode_err(b"S\xffND\n\n\0", Version::V1_2),
        "unknown command \"S\u{fffd}ND\""
    );
    // Bodies are octets: no UTF-8 requirement.
    let f = decode_frame(b"SEND\n\n\xff\xfe\0", Version::V1_2);
    assert_eq!(f.body, Bytes::from_static(b"\xff\xfe"));
}

#[test]
fn error_messages_are_single_line() {
    let errors = [
        CodecError::UnknownCommand("A\r\nB".into()),
        CodecError::MalformedHeader,
        CodecError::InvalidEscape("\\\r".into()),
        CodecError::InvalidUtf8,
        CodecError::InvalidContentLength,
        CodecError::MissingNul,
        CodecError::FrameTooLarge { limit: 1 },
        CodecError::TooManyHeaders { limit: 1 },
        CodecError::HeaderTooLong { limit: 1 },
        CodecError::Unencodable {
            version: Version::V1_0,
            reason: "x",
        },
        CodecError::from(std::io::Error::other("boom")),
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(!msg.contains(['\r', '\n']), "{msg:?}");
    }
}

#[test]
fn errors_reset_the_decoder() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"SEND\nbad\n\n\0"[..]);
    assert!(c.decode(&mut buf).is_err());
    let mut buf = BytesMut::from(&b"ACK\n\n\0"[..]);
    assert!(matches!(c.decode(&mut buf), Ok(Some(Incoming::Frame(_)))));
}

// ----- decoding: limits --------------------------------------------------------

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!(
        (l.max_frame_size, l.max_headers, l.max_header_len),
        (4 << 20, 64, 8 << 10)
    );
}

fn limits(max_frame_size: usize, max_headers: usize, max_header_len: usize) -> Limits {
    Limits {
        max_frame_size,
        max_headers,
        max_header_len,
    }
}

#[test]
fn frame_size_limit_is_inclusive() {
    // "SEND\n\n" (6) + body 4 = 10 octets, NUL not counted.
    let input = b"SEND\n\nabcd\0";
    let (items, err) = decode(input, Version::V1_2, limits(10, 64, 100));
    assert_eq!((items.len(), err), (1, None));
    assert_eq!(
        decode_err_with(input, Version::V1_2, limits(9, 64, 100)),
        err_string(CodecError::FrameTooLarge { limit: 9 })
    );
    let input = b"SEND\ncontent-length:4\n\nab\0d\0";
    let (items, err) = decode(input, Version::V1_2, limits(27, 64, 100));
    assert_eq!((items.len(), err), (1, None));
    assert_eq!(
        decode_err_with(input, Version::V1_2, limits(26, 64, 100)),
        err_string(CodecError::FrameTooLarge { limit: 26 })
    );
}

#[test]
fn content_length_over_limit_fails_before_the_body_arrives() {
    let mut c = codec(Version::V1_2, limits(1000, 64, 100));
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:995\n"[..]);
    assert!(matches!(
        c.decode(&mut buf),
        Err(CodecError::FrameTooLarge { limit: 1000 })
    ));
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:18446744073709551615\n"[..]);
    assert!(matches!(
        c.decode(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn unterminated_body_fails_once_over_limit() {
    let mut c = codec(Version::V1_2, limits(100, 64, 100));
    let mut buf = BytesMut::from(&b"SEND\n\n"[..]);
    buf.extend_from_slice(&[b'x'; 94]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"x");
    assert!(matches!(
        c.decode(&mut buf),
        Err(CodecError::FrameTooLarge { limit: 100 })
    ));
}

#[test]
fn endless_headers_fail_once_over_frame_limit() {
    let mut c = codec(Version::V1_2, limits(64, 1000, 1000));
    let mut buf = BytesMut::from(&b"SEND\n"[..]);
    while buf.len() <= 64 {
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"a:b\n");
    }
    assert!(matches!(
        c.decode(&mut buf),
        Err(CodecError::FrameTooLarge { limit: 64 })
    ));
}

#[test]
fn header_count_limit() {
    let input = b"SEND\na:1\nb:2\na:3\n\n\0";
    let (items, err) = decode(input, Version::V1_2, limits(1000, 3, 100));
    assert_eq!((items.len(), err), (1, None));
    assert_eq!(
        decode_err_with(input, Version::V1_2, limits(1000, 2, 100)),
        err_string(CodecError::TooManyHeaders { limit: 2 })
    );
}

#[test]
fn header_length_limit() {
    // "name:value" is 10 octets; the CR of CRLF does not count.
    let input = b"SEND\nname:value\r\n\n\0";
    for v in Version::ALL {
        let (items, err) = decode(input, v, limits(1000, 64, 10));
        assert_eq!((items.len(), err), (1, None));
        assert_eq!(
            decode_err_with(input, v, limits(1000, 64, 9)),
            err_string(CodecError::HeaderTooLong { limit: 9 })
        );
    }
    // Measured on the wire, before unescaping.
    assert_eq!(
        decode_err_with(
            b"SEND\nn:\\n\\n\\n\\n\n\n\0",
            Version::V1_2,
            limits(1000, 64, 9)
        ),
        err_string(CodecError::HeaderTooLong { limit: 9 })
    );
}

#[test]
fn overlong_header_line_fails_before_its_eol() {
    let mut c = codec(Version::V1_2, limits(1 << 20, 64, 16));
    let mut buf = BytesMut::from(&b"SEND\n"[..]);
    buf.extend_from_slice(&[b'a'; 16]);
    buf.extend_from_slice(b"\r");
    assert!(
        c.decode(&mut buf).unwrap().is_none(),
        "CR may still be an EOL"
    );
    buf.extend_from_slice(b"a");
    assert!(matches!(
        c.decode(&mut buf),
        Err(CodecError::HeaderTooLong { limit: 16 })
    ));
}

#[test]
fn a_shrunken_buffer_does_not_panic() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"SEND\nabc:def"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    let mut other = BytesMut::from(&b"ACK\n\n\0"[..]);
    assert!(matches!(c.decode(&mut other), Ok(Some(Incoming::Frame(_)))));
}

// ----- decoding: streaming efficiency -----------------------------------------

#[test]
fn scanning_resumes_where_it_stopped() {
    let mut p = Parser::default();
    let mut buf = b"SEND\nk:v\n\n".to_vec();
    buf.extend_from_slice(&[b'x'; 1000]);
    let l = Limits::default();
    assert!(p.step(&buf, Version::V1_2, &l).unwrap().is_none());
    assert_eq!(p.scan, buf.len());
    buf.extend_from_slice(b"header-in-progress");
    let mut p = Parser::default();
    let head = b"SEND\nlong-header:".to_vec();
    assert!(p.step(&head, Version::V1_2, &l).unwrap().is_none());
    assert_eq!((p.pos, p.scan), (5, head.len()));
}

#[test]
fn large_body_in_small_chunks_is_linear() {
    // Quadratic rescanning would take ~10^10 steps here.
    let mut input = b"SEND\n\n".to_vec();
    input.resize(4 << 20, b'x');
    input.push(0);
    let (items, err) = decode_chunked(&input, Version::V1_2, Limits::default(), &[256]);
    assert!(err.is_none());
    assert!(matches!(&items[..], [Incoming::Frame(f)] if f.body.len() == (4 << 20) - 6));
}

#[test]
fn known_content_length_reserves_space_once() {
    let mut c = codec(Version::V1_2, Limits::default());
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:100000\n\n"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() > 100_000 + 28);
}

// ----- decode_one --------------------------------------------------------------

#[test]
fn decode_one_reports_consumed_octets() {
    let buf = b"\r\nSEND\ncontent-length:1\n\n\0\0\nACK\n";
    let l = Limits::default();
    let (item, n) = decode_one(buf, Version::V1_2, &l).unwrap().unwrap();
    assert_eq!((item, n), (Incoming::HeartBeat, 2));
    let (item, m) = decode_one(&buf[n..], Version::V1_2, &l).unwrap().unwrap();
    let expected = Frame::new(Command::Send)
        .with_header("content-length", "1")
        .with_body(Bytes::from_static(b"\0"));
    assert_eq!((item, m), (Incoming::Frame(expected), 25));
    let (item, _) = decode_one(&buf[n + m..], Version::V1_2, &l)
        .unwrap()
        .unwrap();
    assert_eq!(item, Incoming::HeartBeat);
    assert!(decode_one(b"ACK\n", Version::V1_2, &l).unwrap().is_none());
    assert!(decode_one(b"NOPE\n", Version::V1_2, &l).is_err());
}

// ----- encoding ----------------------------------------------------------------

#[test]
fn encodes_heart_beat_as_lf() {
    let mut dst = BytesMut::new();
    StompCodec::default()
        .encode(Outgoing::HeartBeat, &mut dst)
        .unwrap();
    assert_eq!(&dst[..], b"\n");
}

#[test]
fn encodes_with_1_2_escaping_and_content_length() {
    let f = Frame::new(Command::Message)
        .with_header("destination", "/q")
        .with_header("k:1", "a\nb\rc\\d")
        .with_body(Bytes::from_static(b"h\0i"));
    assert_eq!(
        encode(&f, Version::V1_2).unwrap(),
        b"MESSAGE\ndestination:/q\nk\\c1:a\\nb\\rc\\\\d\ncontent-length:3\n\nh\0i\0"
    );
    assert_eq!(
        encode(&f, Version::V1_1).unwrap(),
        b"MESSAGE\ndestination:/q\nk\\c1:a\\nb\rc\\\\d\ncontent-length:3\n\nh\0i\0"
    );
}

#[test]
fn encodes_1_0_verbatim() {
    let f = Frame::new(Command::Error).with_header("message", "a:b\\n\r x");
    assert_eq!(
        encode(&f, Version::V1_0).unwrap(),
        b"ERROR\nmessage:a:b\\n\r x\n\n\0"
    );
}

#[test]
fn connected_is_never_escaped() {
    let f = Frame::new(Command::Connected)
        .with_header("version", "1.2")
        .with_header("server", "switchboard/1.0:x\\y");
    for v in Version::ALL {
        assert_eq!(
            encode(&f, v).unwrap(),
            b"CONNECTED\nversion:1.2\nserver:switchboard/1.0:x\\y\n\n\0"
        );
    }
}

#[test]
fn existing_content_length_is_not_duplicated() {
    let f = Frame::new(Command::Message)
        .with_header("content-length", "2")
        .with_body(Bytes::from_static(b"ok"));
    assert_eq!(
        encode(&f, Version::V1_2).unwrap(),
        b"MESSAGE\ncontent-length:2\n\nok\0"
    );
    let empty = Frame::new(Command::Receipt).with_header("receipt-id", "7");
    assert_eq!(
        encode(&empty, Version::V1_2).unwrap(),
        b"RECEIPT\nreceipt-id:7\n\n\0"
    );
}

#[test]
fn encoder_for_frame_matches_outgoing() {
    let f = Frame::new(Command::Receipt).with_header("receipt-id", "1");
    let mut a = BytesMut::new();
    let mut b = BytesMut::new();
    let mut c = StompCodec::default();
    c.encode(f.clone(), &mut a).unwrap();
    c.encode(Outgoing::from(f.clone()), &mut b).unwrap();
    assert_eq!(a, b);
    let mut d = BytesMut::new();
    encode_frame(&f, Version::V1_0, &mut d).unwrap();
    assert_eq!(a, d);
}

#[test]
fn unrepresentable_frames_are_refused_without_writing() {
    let cases = [
        (
            Frame::new(Command::Message).with_header("", "v"),
            Version::V1_2,
        ),
        (
            Frame::new(Command::Message).with_header("k", "a\nb"),
            Version::V1_0,
        ),
        (
            Frame::new(Command::Message).with_header("a:b", "v"),
            Version::V1_0,
        ),
        (
            Frame::new(Command::Message).with_header("a\nb", "v"),
            Version::V1_0,
        ),
        (
            Frame::new(Command::Message).with_header("k", "v\r"),
            Version::V1_1,
        ),
        (
            Frame::new(Command::Message).with_header("k", "v\r"),
            Version::V1_0,
        ),
        (
            Frame::new(Command::Connected).with_header("k", "a\nb"),
            Version::V1_2,
        ),
        (
            Frame::new(Command::Connected).with_header("k", "v\r"),
            Version::V1_2,
        ),
        (
            Frame::new(Command::Message)
                .with_header("content-length", "3")
                .with_body(Bytes::from_static(b"ab")),
            Version::V1_2,
        ),
        (
            Frame::new(Command::Message).with_header("content-length", "x"),
            Version::V1_2,
        ),
    ];
    for (frame, v) in cases {
        let mut dst = BytesMut::from(&b"prev"[..]);
        let err = encode_frame(&frame, v, &mut dst).unwrap_err();
        assert!(matches!(err, CodecError::Unencodable { .. }), "{frame:?}");
        assert_eq!(&dst[..], b"prev");
    }
    // The same value is fine where it can be escaped.
    let f = Frame::new(Command::Message).with_header("k", "v\r");
    assert!(encode(&f, Version::V1_2).is_ok());
}

#[test]
fn encoder_reserves_exactly() {
    let f = Frame::new(Command::Message)
        .with_header("k:\\", "\n\rx")
        .with_body(Bytes::from_static(b"body"));
    for v in [Version::V1_1, Version::V1_2] {
        let mut dst = BytesMut::new();
        encode_frame(&f, v, &mut dst).unwrap();
        assert_eq!(dst.len(), dst.capacity(), "{v}");
    }
}

// ----- properties ----------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![':', '\n', '\r', '\\', 'c', 'n', 'r', ' ', '\0', 'é']);
    prop::collection::vec(prop_oneof![2 => special, 1 => any::<char>()], 0..10)
        .prop_map(|chars| chars.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    text().prop_filter("header names are non-empty", |n| {
        !n.is_empty() && n != "content-length"
    })
}

fn body() -> impl Strategy<Value = Bytes> {
    let octet = prop_oneof![1 => Just(0u8), 1 => Just(b'\n'), 3 => any::<u8>()];
    prop::collection::vec(octet, 0..48).prop_map(Bytes::from)
}

fn frame_with(commands: Vec<Command>) -> impl Strategy<Value = Frame> {
    (
        prop::sample::select(commands),
        prop::collection::vec((name(), text()), 0..6),
        body(),
    )
        .prop_map(|(command, headers, body)| Frame {
            command,
            headers,
            body,
        })
}

fn any_frame() -> impl Strategy<Value = Frame> {
    frame_with(Command::ALL.to_vec())
}

/// Frames that use header escaping, restricted to what `version` can
/// represent: in 1.1 a value may not end in CR (no `\r` escape, and a
/// trailing CR reads as part of a CRLF).
fn escaped_frame(version: Version) -> impl Strategy<Value = Frame> {
    let commands = Command::ALL
        .into_iter()
        .filter(|c| c.uses_header_escaping())
        .collect();
    frame_with(commands).prop_map(move |mut f| {
        if version == Version::V1_1 {
            for (_, value) in &mut f.headers {
                while value.ends_with('\r') {
                    value.pop();
                }
            }
        }
        f
    })
}

/// What a frame decodes to after encoding (the encoder may add
/// `content-length`).
fn after_round_trip(frame: &Frame) -> Frame {
    let mut expected = frame.clone();
    if !frame.body.is_empty() && frame.header("content-length").is_none() {
        expected = expected.with_header("content-length", frame.body.len().to_string());
    }
    expected
}

fn roundtrip_limits() -> Limits {
    Limits {
        max_header_len: 1 << 20,
        ..Limits::default()
    }
}

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

proptest! {
    #[test]
    fn escaped_frames_round_trip_in_1_1_and_1_2(
        (version, frame) in prop_oneof![Just(Version::V1_1), Just(Version::V1_2)]
            .prop_flat_map(|v| (Just(v), escaped_frame(v)))
    ) {
        let wire = encode(&frame, version).expect("representable");
        let decoded = decode_one(&wire, version, &roundtrip_limits())?;
        prop_assert_eq!(decoded, Some((Incoming::Frame(after_round_trip(&frame)), wire.len())));
    }

    #[test]
    fn anything_encoded_decodes_to_the_same_frame(version in version(), frame in any_frame()) {
        if let Ok(wire) = encode(&frame, version) {
            let decoded = decode_one(&wire, version, &roundtrip_limits())?;
            prop_assert_eq!(decoded, Some((Incoming::Frame(after_round_trip(&frame)), wire.len())));
        }
    }

    #[test]
    fn chunked_stream_equals_one_shot(
        version in version(),
        items in prop::collection::vec(prop::option::of(any_frame()), 0..6),
        chunks in prop::collection::vec(1usize..40, 1..8),
    ) {
        let mut wire = BytesMut::new();
        let mut codec = codec(version, Limits::default());
        for item in items {
            let item = item.map_or(Outgoing::HeartBeat, Outgoing::Frame);
            // Unencodable frames are refused and leave no trace.
            let _ = codec.encode(item, &mut wire);
        }
        let (whole, err) = decode_chunked(&wire, version, roundtrip_limits(), &[usize::MAX]);
        prop_assert!(err.is_none());
        let (chunked, err) = decode_chunked(&wire, version, roundtrip_limits(), &chunks);
        prop_assert!(err.is_none());
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn byte_soup_never_panics_and_chunking_is_invisible(
        version in version(),
        prefix in prop::sample::select(vec!["", "SEND\n", "CONNECT\n", "MESSAGE\ncontent-length:3\n", "ACK\na:b\n\n"]),
        soup in prop::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => prop::sample::select(b"\n\r\0:\\cnr".to_vec())],
            0..300,
        ),
        small in any::<bool>(),
        chunks in prop::collection::vec(1usize..20, 1..8),
    ) {
        let limits = if small { limits(64, 3, 12) } else { Limits::default() };
        let input = [prefix.as_bytes(), &soup].concat();
        let (whole, whole_err) = decode_chunked(&input, version, limits, &[usize::MAX]);
        let (chunked, chunked_err) = decode_chunked(&input, version, limits, &chunks);
        prop_assert_eq!(whole, chunked);
        prop_assert_eq!(whole_err.is_some(), chunked_err.is_some());
        let _ = decode_one(&input, version, &limits);
    }
}
