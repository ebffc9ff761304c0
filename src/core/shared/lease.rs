//! Leases: something only one router of a cluster may do at a time (the XMPP link: a
//! server takes one component connection per domain). A router asks for a lease by
//! name ([`Core::lease`](crate::core::Core::lease)) and gets a [`Lease`] that says, as
//! it changes, who holds it: this router, another one (named), or nobody known (the
//! cluster cannot be asked). Alone, a router always holds every lease.
//!
//! The holder keeps the lease by renewing it; a holder that cannot renew for a while
//! steps down (its [`Lease::lost`] resolves) before any other router can take the
//! lease, so two routers never act as holders at once while their clocks run at the
//! same rate. A router that dies holds the lease until it times out; one that stops
//! cleanly [`release`](Lease::release)s it for the next at once, and a holder that
//! cannot do the leased work from where it runs (the XMPP server unreachable from this
//! router) [steps aside](Lease::step_aside) for a while, letting another router try.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

/// Who holds a lease, as this router knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This router.
    Us,
    /// Another router, by node name.
    Other(String),
    /// Nobody known: not taken yet, or the cluster cannot be asked.
    Unknown,
}

/// What a [`Lease`] asks of the task keeping it.
#[derive(Debug)]
pub enum LeaseAsk {
    /// Give the lease up for good (answered once done): shutdown.
    Release(oneshot::Sender<()>),
    /// Give the lease up if held, and do not contend for it for this long.
    StepAside(Duration),
}

/// A lease this router contends for (see the module docs). Dropped, it is given up
/// as by [`release`](Self::release), without waiting.
#[derive(Debug)]
pub struct Lease {
    name: String,
    holder: watch::Receiver<Holder>,
    /// To the keeper; `None` alone.
    asks: Option<mpsc::UnboundedSender<LeaseAsk>>,
}

impl Lease {
    /// A lease that is always this router's: a router running alone.
    pub fn alone(name: &str) -> Self {
        let (tx, holder) = watch::channel(Holder::Us);
        // The receiver outlives the sender: the value stays `Us` for good.
        drop(tx);
        Self {
            name: name.to_owned(),
            holder,
            asks: None,
        }
    }

    /// A lease kept by a cluster task: `holder` follows who holds it, `asks` reach the
    /// task.
    pub fn kept(
        name: &str,
        holder: watch::Receiver<Holder>,
        asks: mpsc::UnboundedSender<LeaseAsk>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            holder,
            asks: Some(asks),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds it now.
    pub fn holder(&self) -> Holder {
        self.holder.borrow().clone()
    }

    /// Resolves once this router holds the lease (at once if it does).
    pub async fn held(&mut self) {
        if self.holder.wait_for(|h| *h == Holder::Us).await.is_err() {
            // The keeper is gone (shutdown): never held again.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this router no longer holds the lease (never, alone).
    pub async fn lost(&mut self) {
        if self.holder.wait_for(|h| *h != Holder::Us).await.is_err() {
            // No keeper: alone (held for good), or shut down (nothing left to lose).
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when who holds the lease changes (never, alone).
    pub async fn changed(&mut self) {
        if self.holder.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether other routers contend for it (clustered); alone, never.
    pub fn is_contended(&self) -> bool {
        self.asks.is_some()
    }

    /// Gives the lease up if held and stops contending for `pause`, so another router
    /// takes it (nothing alone).
    pub fn step_aside(&self, pause: Duration) {
        if let Some(asks) = &self.asks {
            let _ = asks.send(LeaseAsk::StepAside(pause));
        }
    }

    /// Gives the lease up (if held) so another router takes it without waiting for it
    /// to time out; resolves once the cluster was told, or could not be.
    pub async fn release(mut self) {
        let Some(asks) = self.asks.take() else {
            return;
        };
        let (done, given_up) = oneshot::channel();
        if asks.send(LeaseAsk::Release(done)).is_ok() {
            let _ = given_up.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn alone_the_lease_is_held_for_good() {
        let mut lease = Lease::alone("x");
        assert!(!lease.is_contended());
        lease.step_aside(Duration::from_secs(1));
        assert_eq!(lease.holder(), Holder::Us);
        lease.held().await;
        let lost = tokio::time::timeout(Duration::from_millis(20), lease.lost()).await;
        assert!(lost.is_err(), "a lone router never loses a lease");
        lease.release().await;
    }

    #[tokio::test]
    async fn a_kept_lease_follows_its_keeper_and_is_released_through_it() {
        let (tx, rx) = watch::channel(Holder::Other("b".into()));
        let (asks, mut asked) = mpsc::unbounded_channel();
        let mut lease = Lease::kept("x", rx, asks);
        assert!(lease.is_contended());
        assert_eq!(lease.holder(), Holder::Other("b".into()));
        tx.send_replace(Holder::Us);
        lease.held().await;
        tx.send_replace(Holder::Unknown);
        lease.lost().await;
        lease.step_aside(Duration::from_secs(3));
        let keeper = tokio::spawn(async move {
            assert!(
                matches!(asked.recv().await, Some(LeaseAsk::StepAside(d)) if d == Duration::from_secs(3))
            );
            let Some(LeaseAsk::Release(done)) = asked.recv().await else {
                panic!("a release");
            };
            done.send(()).unwrap();
        });
        lease.release().await;
        keeper.await.unwrap();
    }
}
