//! The `auth:` section: users, their permissions, the anonymous policy, and who may use
//! the admin API.

use std::sync::Arc;

use super::ConfigError;
use super::raw::RawAuth;
use crate::admin::AdminAccess;
use crate::auth::{Auth, Permissions, Rule, User};

/// The users and permissions of `auth:`; admin users and admin token digests go to
/// `admin`.
pub(super) fn validate(
    a: RawAuth,
    shown: &str,
    admin: &mut AdminAccess,
    errors: &mut Vec<ConfigError>,
) -> Auth {
    let mut auth = Auth::default();
    if let Some(anon) = a.anonymous {
        auth.anonymous = anon;
    }
    let rules = |list: &Option<Vec<String>>,
                 what: &str,
                 errors: &mut Vec<ConfigError>|
     -> Option<Vec<Rule>> {
        list.as_ref().map(|l| {
            l.iter()
                .filter_map(|r| match Rule::parse(r) {
                    Ok(rule) => Some(rule),
                    Err(e) => {
                        errors.push(ConfigError(format!("{shown}: {what}: `{r}`: {e}")));
                        None
                    }
                })
                .collect()
        })
    };
    let all = Permissions::all();
    auth.anonymous_perms = Arc::new(Permissions {
        publish: rules(&a.anonymous_publish, "auth.anonymous_publish", errors)
            .unwrap_or(all.publish.clone()),
        subscribe: rules(&a.anonymous_subscribe, "auth.anonymous_subscribe", errors)
            .unwrap_or(all.subscribe.clone()),
    });
    for (name, u) in a.users {
        // What anonymous clients own (durable subscriptions, MQTT client ids) is
        // owned as `anonymous`: a user of that name would own it too.
        if name == "anonymous" {
            errors.push(ConfigError(format!(
                "{shown}: auth.users.anonymous: the name `anonymous` is reserved for clients without a login"
            )));
            continue;
        }
        if !u.password_hash.starts_with("$argon2") {
            errors.push(ConfigError(format!(
                "{shown}: auth.users.{name}.password_hash: not an argon2 hash (make one with `switchboard passwd`)"
            )));
            continue;
        }
        let perms = Permissions {
            publish: rules(&u.publish, &format!("auth.users.{name}.publish"), errors)
                .unwrap_or(all.publish.clone()),
            subscribe: rules(
                &u.subscribe,
                &format!("auth.users.{name}.subscribe"),
                errors,
            )
            .unwrap_or(all.subscribe.clone()),
        };
        if u.admin == Some(true) {
            admin.users.insert(name.clone());
        }
        auth.users.insert(
            name,
            User {
                password_hash: u.password_hash,
                perms: Arc::new(perms),
            },
        );
    }
    for t in a.admin_tokens.iter().flatten() {
        match crate::admin::parse_token_digest(t) {
            Ok(d) => admin.tokens.push(d),
            Err(e) => errors.push(ConfigError(format!("{shown}: auth.admin_tokens: {e}"))),
        }
    }
    auth
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Settings;

    #[test]
    fn anonymous_is_no_user_name() {
        let yaml = "auth:\n  users:\n    anonymous:\n      password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw\"\n";
        let errors = Settings::from_yaml(yaml, "t.yaml", Path::new(".")).unwrap_err();
        assert!(
            errors[0].to_string().contains("`anonymous` is reserved"),
            "{errors:?}"
        );
    }
}
