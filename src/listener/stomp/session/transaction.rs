//! BEGIN, COMMIT and ABORT: the SENDs, ACKs and NACKs of a transaction are buffered,
//! within limits, until it commits (done in order) or aborts (dropped).

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::headers::header;
use super::transport::Transport;
use crate::core::{Core, Destination, Held, Message};
use crate::listener::stomp::frame::{Command, Frame};
use crate::ratelog::Cause;

/// A frame of an open transaction, done when it commits.
pub(super) enum TxOp {
    /// A SEND: where to, the message, the destination as the client wrote it.
    Send(Destination, Message, String),
    /// An ACK or NACK, with its `requeue` read when it arrived.
    Ack(Frame, bool),
}

/// Counted, rate-limited causes of this listener (see [`crate::ratelog`]).
static TRANSACTION_BYTES: Cause = Cause::new("stomp.transaction_bytes");

/// The bytes buffered in a connection's open transactions, reported to the core (the
/// memory watermark counts them) and given back when the transactions end, however the
/// connection ends.
pub(super) struct TxBytes {
    core: Core,
    bytes: usize,
}

impl TxBytes {
    pub(super) fn new(core: Core) -> Self {
        Self { core, bytes: 0 }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n;
        Held::add(&self.core.held().transactions, n);
    }

    fn sub(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        Held::sub(&self.core.held().transactions, n);
    }
}

impl Drop for TxBytes {
    fn drop(&mut self) {
        Held::sub(&self.core.held().transactions, self.bytes);
    }
}

/// An open transaction: its frames and their size.
#[derive(Default)]
pub(super) struct Tx {
    ops: Vec<TxOp>,
    bytes: usize,
}

/// Approximate bytes a buffered frame holds.
pub(super) fn frame_bytes(f: &Frame) -> usize {
    f.body.len()
        + f.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
        + 64
}

impl<T: Transport> Connection<T> {
    /// Buffers one frame of transaction `tx`, within the frame and byte limits; over
    /// them, the connection ends with an ERROR (and its buffers are freed).
    pub(super) fn buffer_tx(&mut self, tx: &str, size: usize, op: TxOp) -> Result<(), Fatal> {
        let settings = &self.shared.settings;
        let t = self.txs.get_mut(tx).ok_or_else(|| {
            fatal(
                "unknown transaction",
                format!("transaction `{tx}` was not begun"),
            )
        })?;
        if t.ops.len() >= settings.max_transaction_frames {
            return Err(fatal(
                "transaction too large",
                format!(
                    "more than {} frames in one transaction",
                    settings.max_transaction_frames
                ),
            ));
        }
        if self.tx_bytes.bytes + size > settings.max_transaction_bytes {
            crate::rate_warn!(
                TRANSACTION_BYTES,
                peer = %self.peer,
                limit = settings.max_transaction_bytes,
                "STOMP transactions over the byte limit: connection closed"
            );
            return Err(fatal(
                "transaction too large",
                format!(
                    "the open transactions of this connection would buffer more than {} bytes (stomp.max_transaction_bytes)",
                    settings.max_transaction_bytes
                ),
            ));
        }
        t.ops.push(op);
        t.bytes += size;
        self.tx_bytes.add(size);
        Ok(())
    }

    /// BEGIN, COMMIT or ABORT.
    pub(super) async fn on_tx(&mut self, f: Frame) -> Result<(), Fatal> {
        let tx = header(&f, "transaction")?.to_owned();
        match f.command {
            Command::Begin => {
                if self.txs.contains_key(&tx) {
                    return Err(fatal(
                        "duplicate transaction",
                        format!("transaction `{tx}` is already open"),
                    ));
                }
                if self.txs.len() >= self.shared.settings.max_transactions {
                    return Err(fatal("too many transactions", "too many open transactions"));
                }
                self.txs.insert(tx, Tx::default());
            }
            Command::Commit => {
                let Tx { ops, bytes } = self.txs.remove(&tx).ok_or_else(|| {
                    fatal(
                        "unknown transaction",
                        format!("transaction `{tx}` was not begun"),
                    )
                })?;
                self.tx_bytes.sub(bytes);
                for op in ops {
                    match op {
                        TxOp::Send(dest, m, text) => self.publish(dest, m, &text).await?,
                        TxOp::Ack(a, requeue) => {
                            if let Ok(token) = self.find_ack(&a) {
                                self.settle(token, a.command == Command::Ack, requeue);
                            }
                        }
                    }
                }
            }
            _ => {
                let aborted = self.txs.remove(&tx).ok_or_else(|| {
                    fatal(
                        "unknown transaction",
                        format!("transaction `{tx}` was not begun"),
                    )
                })?;
                self.tx_bytes.sub(aborted.bytes);
            }
        }
        self.receipt(&f).await
    }
}
