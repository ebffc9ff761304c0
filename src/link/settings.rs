//! The settings every link kind has (reconnect delays, counts, the dead-letter queue,
//! secrets), read and checked one way for all of them.

/// Settings every link kind shares, checked alike; problems go to `errors` as
/// `HERE.KEY: …`.
pub(crate) struct SettingsCheck<'a> {
    pub here: String,
    pub errors: &'a mut Vec<String>,
}

impl SettingsCheck<'_> {
    /// A duration setting (`200ms`, `30s`, `5m`), or its default.
    pub fn duration(
        &mut self,
        key: &str,
        text: Option<String>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match text {
            None => default,
            Some(t) => crate::duration::parse_duration(&t).unwrap_or_else(|e| {
                self.errors.push(format!("{}.{key}: {e}", self.here));
                default
            }),
        }
    }

    /// The reconnect delays: the first (default 200ms) and the cap (default 30s), the cap
    /// raised to the first when given below it.
    pub fn reconnect(
        &mut self,
        initial: Option<String>,
        max: Option<String>,
    ) -> (std::time::Duration, std::time::Duration) {
        let initial = self.duration(
            "reconnect_initial",
            initial,
            std::time::Duration::from_millis(200),
        );
        let max = self.duration("reconnect_max", max, std::time::Duration::from_secs(30));
        (initial, max.max(initial))
    }

    /// A count that must be at least 1, or its default.
    pub fn count(&mut self, key: &str, v: Option<usize>, default: usize) -> usize {
        let v = v.unwrap_or(default);
        if v == 0 {
            self.errors
                .push(format!("{}.{key}: must be at least 1", self.here));
        }
        v.max(1)
    }

    /// The dead-letter queue's name: given, or `dead.LINK`.
    pub fn dead_letter(&mut self, link: &str, given: Option<String>) -> String {
        let name = given.unwrap_or_else(|| format!("dead.{link}"));
        if let Err(e) = crate::core::validate_name(&name) {
            self.errors
                .push(format!("{}.dead_letter: `{name}`: {e}", self.here));
        }
        name
    }

    /// A secret given inline, by environment variable, or by file (relative to the
    /// settings file): at most one of them, else `conflict` is reported. `keys` names
    /// the env and file keys.
    pub fn secret(
        &mut self,
        keys: [&str; 2],
        given: (Option<String>, Option<String>, Option<String>),
        base: &std::path::Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
        conflict: &str,
    ) -> Option<String> {
        let here = self.here.clone();
        match given {
            (None, None, None) => None,
            (Some(s), None, None) => Some(s),
            (None, Some(var), None) => lookup_env(&var).or_else(|| {
                self.errors.push(format!(
                    "{here}.{}: environment variable `{var}` is not set",
                    keys[0]
                ));
                None
            }),
            (None, None, Some(f)) => match std::fs::read_to_string(base.join(&f)) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    self.errors
                        .push(format!("{here}.{}: cannot read `{f}`: {e}", keys[1]));
                    None
                }
            },
            _ => {
                self.errors.push(format!("{here}: {conflict}"));
                None
            }
        }
    }
}
