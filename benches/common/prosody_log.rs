//! What the shared Prosody's debug log (`$PROSODY_DIR/prosody.log`, written line by line
//! at level debug: scripts/peers/prosody.cfg.lua) says about one c2s session: its id
//! and the stream-management (XEP-0198) traffic on it. The XMPP benchmark uses it to
//! show how many acknowledgement round trips the bot link's stream carried; the log is
//! the only place that counts them, the bot's stream being TLS.

use std::io::{Read, Seek, SeekFrom};

fn path() -> String {
    let dir = std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into());
    format!("{dir}/prosody.log")
}

/// The log's length now: where the lines of what happens next start.
pub fn offset() -> u64 {
    std::fs::metadata(path()).map_or(0, |m| m.len())
}

/// The log's text from `from` to its end (empty when it is gone or was started afresh).
pub fn since(from: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path()) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The id (`c2s…`) of the last session that authenticated as `jid` in `text`.
pub fn session_of(text: &str, jid: &str) -> Option<String> {
    let said = format!("\tAuthenticated as {jid}");
    text.lines()
        .rev()
        .find(|l| l.ends_with(&said))
        .and_then(|l| l.split('\t').next()?.rsplit(' ').next().map(str::to_owned))
}

/// Stream-management traffic of one session in a stretch of the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Acks {
    /// `<r/>` Prosody sent (it asks once its queue holds unacknowledged stanzas and no
    /// request is out).
    pub requests: u64,
    /// `<a/>` of the client that Prosody handled.
    pub answers: u64,
    /// Stanzas those `<a/>` acknowledged.
    pub acked: u64,
}

impl std::ops::AddAssign for Acks {
    fn add_assign(&mut self, o: Acks) {
        self.requests += o.requests;
        self.answers += o.answers;
        self.acked += o.acked;
    }
}

/// Counts the stream-management lines of `session` in `text` (mod_smacks of Prosody
/// 0.12: "Sending <r> (inside timer, after send) …" for a request, "#queue = N (acked:
/// K)" for an answer that acknowledged K stanzas).
pub fn acks(text: &str, session: &str) -> Acks {
    let mine = format!(" {session}\t");
    let mut a = Acks::default();
    for l in text.lines().filter(|l| l.contains(&mine)) {
        if l.contains("\tSending <r> (inside timer, after send)") {
            a.requests += 1;
        } else if let Some((_, k)) = l.split_once("\t#queue = ")
            && let Some((_, k)) = k.split_once("(acked: ")
        {
            a.answers += 1;
            a.acked += k.trim_end_matches(')').parse::<u64>().unwrap_or(0);
        }
    }
    a
}
