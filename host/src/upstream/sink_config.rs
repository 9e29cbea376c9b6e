//! [`SinkConfig`]: one sink as the configuration file (`[[sink]]`, tagged by `kind`) or a flag names it. An unknown
//! kind, or an option another kind takes, is a parse error that lists what is valid.

use std::path::PathBuf;

use serde::Deserialize;

/// One sink, by kind.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SinkConfig {
    /// Alertmanager v2 (`kind = "alertmanager"`).
    Alertmanager(Endpoint),
    /// OpenStack Masakari (`kind = "masakari"`).
    Masakari(MasakariConfig),
    /// The StarlingX VIM, or the controller's relay in front of it (`kind = "starlingx-vim"`).
    StarlingxVim(VimConfig),
    /// A CloudEvents webhook (`kind = "webhook"`).
    Webhook(WebhookConfig),
}

/// What every sink has: where it is, its name, its request timeout.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Base URL (Alertmanager, Masakari API, VIM) or the full URL (webhook).
    pub url: String,
    /// A name for its cursor and its log lines (default: kind and URL).
    pub name: Option<String>,
    /// Seconds each request may take (default 10).
    pub timeout_secs: Option<u64>,
    /// PEM file of the CA(s) that signed the receiver's certificate, trusted besides the system's and Mozilla's
    /// roots (a private cloud's CA).
    pub ca_file: Option<PathBuf>,
}

/// The StarlingX VIM, or `vigild relay` on the controller.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VimConfig {
    /// The VIM's guest REST API (`http://127.0.0.1:30002` on the controller) or the relay's.
    pub url: String,
    /// See [`Endpoint::name`].
    pub name: Option<String>,
    /// See [`Endpoint::timeout_secs`].
    pub timeout_secs: Option<u64>,
    /// See [`Endpoint::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// A file with the bearer token the relay expects from nodes.
    pub token_file: Option<PathBuf>,
}

/// A CloudEvents webhook.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The full URL.
    pub url: String,
    /// See [`Endpoint::name`].
    pub name: Option<String>,
    /// See [`Endpoint::timeout_secs`].
    pub timeout_secs: Option<u64>,
    /// See [`Endpoint::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// A file with a bearer token.
    pub token_file: Option<PathBuf>,
    /// CloudEvents content mode: `structured` (default: the whole event as `application/cloudevents+json`) or
    /// `binary` (the attributes as `ce-*` headers, the record as the `application/json` body).
    #[serde(default)]
    pub content_mode: ContentMode,
}

/// How a webhook carries a CloudEvent (CloudEvents 1.0, HTTP protocol binding).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContentMode {
    /// One JSON document with the attributes and `data`.
    #[default]
    Structured,
    /// Attributes in `ce-` headers, `data` as the body.
    Binary,
}

/// OpenStack Masakari, with Keystone v3 (`auth_url`, `username`, `password_file`, `user_domain_name`,
/// `project_name`, `project_domain_name`, `region_name`, as masakari-monitors names them).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MasakariConfig {
    /// The Masakari API's base URL.
    pub url: String,
    /// See [`Endpoint::name`].
    pub name: Option<String>,
    /// See [`Endpoint::timeout_secs`].
    pub timeout_secs: Option<u64>,
    /// See [`Endpoint::ca_file`] (Keystone is reached with the same trust).
    pub ca_file: Option<PathBuf>,
    /// Keystone v3; without it, no token is sent (a noauth API).
    pub auth_url: Option<String>,
    /// Keystone user.
    pub username: Option<String>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// The user's domain (default `Default`).
    pub user_domain_name: Option<String>,
    /// The project.
    pub project_name: Option<String>,
    /// The project's domain (default `Default`).
    pub project_domain_name: Option<String>,
    /// The region (informational).
    pub region_name: Option<String>,
    /// Notify every loss, not only those whose guest asked for `reboot` or `stop`.
    #[serde(default)]
    pub all_losses: bool,
}

/// The kinds, as a flag or the file names them.
pub const SINK_KINDS: &[&str] = &["alertmanager", "masakari", "starlingx-vim", "webhook"];

impl SinkConfig {
    /// A sink from a command-line flag (`--alertmanager URL`, ...): `kind` is one of [`SINK_KINDS`].
    pub fn from_flag(kind: &str, url: &str) -> Result<Self, String> {
        let url = url.to_string();
        let endpoint = Endpoint { url: url.clone(), name: None, timeout_secs: None, ca_file: None };
        Ok(match kind {
            "alertmanager" => SinkConfig::Alertmanager(endpoint),
            "starlingx-vim" => SinkConfig::StarlingxVim(VimConfig {
                url,
                name: None,
                timeout_secs: None,
                ca_file: None,
                token_file: None,
            }),
            "webhook" => SinkConfig::Webhook(WebhookConfig {
                url,
                name: None,
                timeout_secs: None,
                ca_file: None,
                token_file: None,
                content_mode: ContentMode::Structured,
            }),
            "masakari" => SinkConfig::Masakari(MasakariConfig {
                url,
                name: None,
                timeout_secs: None,
                ca_file: None,
                auth_url: None,
                username: None,
                password_file: None,
                user_domain_name: None,
                project_name: None,
                project_domain_name: None,
                region_name: None,
                all_losses: false,
            }),
            other => return Err(format!("sink kind {other:?}: one of {}", SINK_KINDS.join(", "))),
        })
    }

    /// The kind's name, as in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Alertmanager(_) => "alertmanager",
            SinkConfig::Masakari(_) => "masakari",
            SinkConfig::StarlingxVim(_) => "starlingx-vim",
            SinkConfig::Webhook(_) => "webhook",
        }
    }

    /// What every kind has, whatever the kind.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            SinkConfig::Alertmanager(e) => e.clone(),
            SinkConfig::StarlingxVim(v) => Endpoint {
                url: v.url.clone(),
                name: v.name.clone(),
                timeout_secs: v.timeout_secs,
                ca_file: v.ca_file.clone(),
            },
            SinkConfig::Masakari(m) => Endpoint {
                url: m.url.clone(),
                name: m.name.clone(),
                timeout_secs: m.timeout_secs,
                ca_file: m.ca_file.clone(),
            },
            SinkConfig::Webhook(w) => Endpoint {
                url: w.url.clone(),
                name: w.name.clone(),
                timeout_secs: w.timeout_secs,
                ca_file: w.ca_file.clone(),
            },
        }
    }

    /// Its cursor's name, which is also its name in logs and metrics: the configured `name`, else the kind and
    /// the URL's host and port. Never the whole URL: user info, path and query can hold secrets (a webhook's token,
    /// a password), and a rotated secret must not make a new cursor that replays the spool.
    pub fn cursor_name(&self) -> String {
        let e = self.endpoint();
        e.name.unwrap_or_else(|| format!("{}:{}", self.kind(), host_of(&e.url)))
    }

    /// The names of `sinks` ([`cursor_name`](Self::cursor_name)), made unique: a second sink of one kind on one
    /// host is `NAME#2`, and so on, in the order of the configuration.
    pub fn unique_names(sinks: &[SinkConfig]) -> Vec<String> {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        sinks
            .iter()
            .map(|s| {
                let name = s.cursor_name();
                let n = seen.entry(name.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    name
                } else {
                    format!("{name}#{n}")
                }
            })
            .collect()
    }

    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.endpoint().url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("sink {}: url must be http:// or https://", self.kind()));
        }
        if let SinkConfig::Masakari(m) = self {
            if m.auth_url.is_some() && (m.username.is_none() || m.password_file.is_none()) {
                return Err("masakari: auth_url needs username and password_file".into());
            }
        }
        Ok(())
    }
}

/// `host[:port]` of a URL, without user info, path or query (`?` when it does not parse).
fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => "?".into(),
        },
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        sink: Vec<SinkConfig>,
    }

    #[test]
    fn an_unknown_kind_is_a_parse_error_that_lists_the_kinds() {
        let Err(e) = toml::from_str::<File>("[[sink]]\nkind = \"alertmanger\"\nurl = \"http://x\"\n") else {
            panic!("parsed")
        };
        let e = e.to_string();
        for k in SINK_KINDS {
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn an_option_of_another_kind_is_refused() {
        let r = toml::from_str::<File>("[[sink]]\nkind = \"alertmanager\"\nurl = \"http://x\"\ntoken_file = \"/t\"\n");
        assert!(r.is_err_and(|e| e.to_string().contains("token_file")));
        let ok = toml::from_str::<File>("[[sink]]\nkind = \"webhook\"\nurl = \"http://x\"\ntoken_file = \"/t\"\n");
        assert!(
            matches!(ok.map(|f| f.sink), Ok(v) if matches!(&v[..], [SinkConfig::Webhook(w)] if w.token_file.is_some()))
        );
    }

    #[test]
    fn default_names_hold_no_secret_and_survive_a_rotated_one() {
        let a = SinkConfig::from_flag("webhook", "https://user:pw@hooks.example:8443/T0K3N/x?sig=abc").unwrap();
        assert_eq!(a.cursor_name(), "webhook:hooks.example:8443");
        let b = SinkConfig::from_flag("webhook", "https://user:new@hooks.example:8443/R0TATED/x?sig=def").unwrap();
        assert_eq!(a.cursor_name(), b.cursor_name(), "a new secret is the same cursor");
        let c = SinkConfig::from_flag("alertmanager", "http://am1:9093").unwrap();
        let d = SinkConfig::from_flag("alertmanager", "http://am1:9093/other").unwrap();
        assert_eq!(
            SinkConfig::unique_names(&[a, c, d]),
            ["webhook:hooks.example:8443", "alertmanager:am1:9093", "alertmanager:am1:9093#2"]
        );
    }

    #[test]
    fn flags_make_each_kind_and_refuse_others() {
        for k in SINK_KINDS {
            assert_eq!(SinkConfig::from_flag(k, "http://h").map(|s| s.kind()), Ok(*k));
        }
        assert!(SinkConfig::from_flag("vitrage", "http://h").is_err());
    }
}
