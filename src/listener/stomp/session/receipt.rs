//! RECEIPTs, sent once what the frame did is durable.

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::transport::Transport;
use crate::core::{Confirmation, PublishError};
use crate::listener::stomp::codec::Outgoing;
use crate::listener::stomp::frame::{Command, Frame};

/// What a SEND whose message, or an ACK/NACK whose settlement, is not durable yet is
/// answered with: its RECEIPT, or the ERROR should the store fail.
pub(super) struct Unconfirmed {
    pub(super) receipt: Option<String>,
    /// What the ERROR says when it cannot be made durable.
    pub(super) refused: &'static str,
    /// The destination (SEND) or the message (ACK/NACK), for the ERROR and the log.
    pub(super) dest_text: String,
}

/// The ERROR title of a settlement that could not be made durable.
const SETTLE_REFUSED: &str = "acknowledgement not stored";

impl<T: Transport> Connection<T> {
    /// A SEND's message, or an ACK/NACK's settlement, is durable (or could not be made so).
    pub(super) async fn confirmed(
        &mut self,
        u: Unconfirmed,
        r: Result<(), PublishError>,
    ) -> Result<(), Fatal> {
        match r {
            Ok(()) => {
                if let Some(r) = u.receipt {
                    let f = Frame::new(Command::Receipt).with_header("receipt-id", r);
                    self.write(Outgoing::Frame(f)).await?;
                    self.flush().await?;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(what = %u.dest_text, error = %e, "{}", u.refused);
                let mut f = fatal(u.refused, format!("{}: {e}", u.dest_text));
                f.receipt = u.receipt;
                Err(f)
            }
        }
    }

    /// What a RECEIPT must wait for besides its own frame's work: the settlements since
    /// the last RECEIPT, when one of them wrote to the store or (clustered) was sent to
    /// a shared queue's cluster — a message whose ACK was receipted never comes back.
    pub(super) fn settlements_owed(&mut self) -> Confirmation {
        let core = self.shared.router.core();
        let mut owed = if std::mem::take(&mut self.settled_durable) {
            core.settlements_durable()
        } else {
            Confirmation::default()
        };
        if !self.settled_shared.is_empty() {
            let queues = std::mem::take(&mut self.settled_shared);
            owed.extend(core.settlements_sent(queues.iter().map(String::as_str)));
        }
        owed
    }

    /// Answers a frame handled at once (no pipelining): its RECEIPT, if it asked for
    /// one, once every earlier settlement is durable.
    pub(super) async fn receipt(&mut self, frame: &Frame) -> Result<(), Fatal> {
        if let Some(r) = frame.header("receipt") {
            let owed = self.settlements_owed();
            if !owed.is_ready() {
                owed.wait().await.map_err(|e| {
                    tracing::warn!(error = %e, "{SETTLE_REFUSED}");
                    fatal(SETTLE_REFUSED, format!("earlier ACK or NACK frames: {e}"))
                })?;
            }
            let f = Frame::new(Command::Receipt).with_header("receipt-id", r);
            self.write(Outgoing::Frame(f)).await?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Answers a SEND, ACK or NACK: handled while earlier receipts may still be waiting,
    /// its RECEIPT goes behind them (in order), once `confirmation` and every earlier
    /// settlement are durable.
    pub(super) async fn answer(
        &mut self,
        f: &Frame,
        mut confirmation: Confirmation,
        what: String,
    ) -> Result<(), Fatal> {
        let Some(receipt) = f.header("receipt") else {
            return Ok(());
        };
        confirmation.extend(self.settlements_owed());
        if self.confirmations.must_wait(&confirmation) {
            let answer = Unconfirmed {
                receipt: Some(receipt.to_owned()),
                refused: SETTLE_REFUSED,
                dest_text: if what.is_empty() {
                    "earlier ACK or NACK frames".into()
                } else {
                    what
                },
            };
            self.confirmations.push(answer, confirmation);
            return Ok(());
        }
        self.receipt(f).await
    }
}
