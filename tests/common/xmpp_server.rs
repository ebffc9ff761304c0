//! The XMPP servers the tests run against — Prosody and ejabberd, serving the same names
//! (domain `localhost`, component `bridge.localhost` with secret `bridgesecret`, MUC
//! `conference.localhost`) on their own ports — and [`on_both_servers!`], which runs a
//! test on each.

use std::process::Command;
use std::time::Duration;

use super::{Daemon, http_json, wait_until};

/// An XMPP server the tests run against, and its ports on loopback.
pub struct Server {
    /// `prosody` or `ejabberd`: the lock's name and the `scripts/setup` capability.
    pub name: &'static str,
    /// Its control script in scripts/peers/ (`start`, `stop`, `adduser JID PASS`).
    pub ctl: &'static str,
    pub c2s: u16,
    pub component: u16,
}

pub const PROSODY: Server = Server {
    name: "prosody",
    ctl: concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/prosody-ctl.sh"),
    c2s: 5222,
    component: 5347,
};

pub const EJABBERD: Server = Server {
    name: "ejabberd",
    ctl: concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/ejabberd-ctl.sh"),
    c2s: 5223,
    component: 5348,
};

/// Generates, for each test function `f(&Server)`, the tests `prosody::f` and
/// `ejabberd::f`; `needs "…"` names what else they need besides the server.
#[macro_export]
macro_rules! on_both_servers {
    (needs $also:literal; $($name:ident),* $(,)?) => {
        mod prosody {
            $(
                #[test]
                #[cfg_attr(
                    not(peers),
                    ignore = concat!("needs Prosody, ", $also, ": run scripts/test")
                )]
                fn $name() { super::$name(&$crate::common::xmpp_server::PROSODY) }
            )*
        }
        mod ejabberd {
            $(
                #[test]
                #[cfg_attr(
                    not(peers),
                    ignore = concat!("needs ejabberd, ", $also, ": run scripts/test")
                )]
                fn $name() { super::$name(&$crate::common::xmpp_server::EJABBERD) }
            )*
        }
    };
}

impl Server {
    /// The server's self-signed certificate, which a bot trusts through `ca_file`.
    pub fn cert(&self) -> String {
        let (var, default) = match self.name {
            "prosody" => ("PROSODY_DIR", "/tmp/prosody-test"),
            _ => ("EJABBERD_DIR", "/tmp/ejabberd-test"),
        };
        let dir = std::env::var(var).unwrap_or_else(|_| default.into());
        format!("{dir}/certs/localhost.crt")
    }

    /// Closes `bot`'s session on the server, as an operator would (also the session the
    /// server keeps for resumption while the bot is away); returns what the server's
    /// tool said.
    pub fn close_session(&self, bot: &str) -> String {
        let out = match self.name {
            "prosody" => Command::new(self.ctl)
                .args(["shell", &format!("c2s:close('{bot}')")])
                .output(),
            _ => {
                let (user, host) = bot.split_once('@').unwrap();
                Command::new(self.ctl)
                    .args(["ctl", "kick_user", user, host])
                    .output()
            }
        }
        .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component)
    }

    /// The server's exclusive test lock (and a check that it answers).
    pub fn lock(&self) -> super::PeerLock {
        super::peer_lock(
            self.name,
            true,
            &self.component_addr(),
            &format!("scripts/setup {}", self.name),
        )
    }

    /// Stops and starts the server; returns once the router's link has noticed and
    /// reconnected.
    pub fn restart(&self, d: &Daemon) {
        assert!(
            Command::new(self.ctl)
                .arg("stop")
                .status()
                .unwrap()
                .success()
        );
        wait_until(Duration::from_secs(15), "link lost", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/links");
            (v[0]["state"] != "connected").then_some(())
        });
        assert!(
            Command::new(self.ctl)
                .arg("start")
                .status()
                .unwrap()
                .success()
        );
        wait_until(Duration::from_secs(30), "link back", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/links");
            (v[0]["state"] == "connected" && v[0]["counters"]["reconnects"].as_u64() >= Some(1))
                .then_some(())
        });
    }

    /// A fresh account on the server; returns (jid, password).
    pub fn user(&self, p: &str) -> (String, String) {
        let jid = format!("{}@localhost", p.to_lowercase());
        let ok = Command::new(self.ctl)
            .args(["adduser", &jid, "pw"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{} adduser {jid}", self.ctl);
        (jid, "pw".into())
    }

    /// The link's settings for this server (the start of `links.im.xmpp`).
    pub fn link(&self) -> String {
        format!(
            "links:\n  im:\n    xmpp:\n      server: \"{}\"\n      domain: bridge.localhost\n",
            self.component_addr()
        )
    }
}
