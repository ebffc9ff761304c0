//! The `cluster:` section (and `--cluster`/`--node`): join a NATS JetStream cluster
//! for membership and the cluster-wide route table (docs/cluster.md). Absent, the
//! router runs alone and opens no NATS connection.

use super::ConfigError;
use super::raw::RawCluster;

/// Replicas of the cluster's KV buckets when the settings do not say.
pub const DEFAULT_REPLICAS: usize = 3;

/// Where the cluster is and who this router is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// NATS server URLs (`nats://HOST:PORT`).
    pub servers: Vec<String>,
    /// This router's name in the cluster (its key in `SB_NODES`); empty until set.
    pub node: String,
    /// Replicas of the buckets this router creates (1..5), capped at the servers known.
    pub replicas: usize,
    /// Put before every bucket name, so several clusters (or test runs) can share one
    /// NATS cluster.
    pub prefix: String,
}

/// Splits `nats://HOST:PORT[,nats://HOST:PORT…]` and checks each URL's shape.
pub fn parse_servers(list: &str) -> Result<Vec<String>, String> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if servers.is_empty() {
        return Err("no NATS server given (expected nats://HOST:PORT[,nats://HOST:PORT…])".into());
    }
    for s in &servers {
        let Some(rest) = s.strip_prefix("nats://") else {
            return Err(format!("`{s}`: expected nats://HOST:PORT"));
        };
        let port_ok = rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("`{s}`: expected nats://HOST:PORT"));
        }
    }
    Ok(servers)
}

/// A node name is a KV key and shows in logs: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_node(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(token_byte) {
        return Err(format!(
            "node name `{name}`: 1 to 64 letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl ClusterSettings {
    /// Settings for `servers` with everything else on its default.
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            node: String::new(),
            replicas: DEFAULT_REPLICAS,
            prefix: String::new(),
        }
    }

    /// Applies `--cluster URLS` and `--node NAME` over the settings file's section.
    pub fn from_args(
        file: Option<ClusterSettings>,
        servers: Option<&str>,
        node: Option<&str>,
    ) -> Result<Option<ClusterSettings>, ConfigError> {
        let mut cluster = file;
        if let Some(list) = servers {
            let servers =
                parse_servers(list).map_err(|e| ConfigError(format!("--cluster: {e}")))?;
            cluster
                .get_or_insert_with(|| ClusterSettings::new(Vec::new()))
                .servers = servers;
        }
        if let Some(n) = node {
            let c = cluster.as_mut().ok_or_else(|| {
                ConfigError("--node needs --cluster (or a `cluster:` section)".into())
            })?;
            check_node(n).map_err(|e| ConfigError(format!("--node: {e}")))?;
            c.node = n.to_owned();
        }
        if let Some(c) = &cluster
            && c.servers.is_empty()
        {
            return Err(ConfigError(
                "cluster mode needs its NATS servers (--cluster or cluster.servers)".into(),
            ));
        }
        Ok(cluster)
    }
}

/// Validates `cluster:`; servers and node may also come from the command line.
pub(super) fn validate(
    raw: RawCluster,
    shown: &str,
    errors: &mut Vec<ConfigError>,
) -> ClusterSettings {
    let mut c = ClusterSettings::new(Vec::new());
    if let Some(list) = raw.servers {
        match parse_servers(&list.join(",")) {
            Ok(s) => c.servers = s,
            Err(e) => errors.push(ConfigError(format!("{shown}: cluster.servers: {e}"))),
        }
    }
    if let Some(n) = raw.node {
        match check_node(&n) {
            Ok(()) => c.node = n,
            Err(e) => errors.push(ConfigError(format!("{shown}: cluster.node: {e}"))),
        }
    }
    if let Some(r) = raw.replicas {
        if (1..=5).contains(&r) {
            c.replicas = r;
        } else {
            errors.push(ConfigError(format!(
                "{shown}: cluster.replicas must be 1 to 5 (got {r})"
            )));
        }
    }
    if let Some(p) = raw.prefix {
        if p.len() <= 32 && p.bytes().all(token_byte) {
            c.prefix = p;
        } else {
            errors.push(ConfigError(format!(
                "{shown}: cluster.prefix `{p}`: at most 32 letters, digits, `_` or `-`"
            )));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::path::Path;

    #[test]
    fn servers_and_names() {
        assert_eq!(
            parse_servers("nats://127.0.0.1:4222, nats://h:4223").unwrap(),
            ["nats://127.0.0.1:4222", "nats://h:4223"]
        );
        assert!(parse_servers("").is_err());
        assert!(parse_servers("127.0.0.1:4222").is_err());
        assert!(parse_servers("nats://h").is_err());
        assert!(check_node("router-a_1").is_ok());
        assert!(check_node("").is_err());
        assert!(check_node("a.b").is_err());
        assert!(check_node(&"x".repeat(65)).is_err());
    }

    #[test]
    fn section_and_arguments() {
        let yaml = "cluster:\n  servers: [nats://127.0.0.1:4222]\n  node: a\n  replicas: 1\n  prefix: T1_\n";
        let s = Settings::from_yaml(yaml, "t.yaml", Path::new(".")).unwrap();
        let c = s.cluster.clone().unwrap();
        assert_eq!(
            (c.node.as_str(), c.replicas, c.prefix.as_str()),
            ("a", 1, "T1_")
        );
        let c = ClusterSettings::from_args(s.cluster, Some("nats://h:1,nats://h:2"), Some("b"))
            .unwrap()
            .unwrap();
        assert_eq!((c.servers.len(), c.node.as_str()), (2, "b"));
        let bad = "cluster:\n  node: a.b\n  replicas: 7\n  prefix: \"a b\"\n";
        let errs = Settings::from_yaml(bad, "t.yaml", Path::new(".")).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(Settings::embedded_default().cluster.is_none());
        assert_eq!(ClusterSettings::from_args(None, None, None), Ok(None));
        assert!(ClusterSettings::from_args(None, None, Some("a")).is_err());
    }
}
