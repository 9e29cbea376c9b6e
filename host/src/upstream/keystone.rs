//! [`Keystone`]: an OpenStack Identity v3 client: a project-scoped token by password (`POST /v3/auth/tokens`, the
//! token in `X-Subject-Token`), kept until a minute before its `expires_at` and dropped on a 401 or a new password;
//! and the validation of someone else's token (`GET /v3/auth/tokens` with `X-Subject-Token`: 200 valid, 404 not),
//! as a service validates the tokens it is called with. Used by the Masakari sink and by `vigild relay`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::secret::SecretFile;

/// A Keystone v3 client with a password.
pub struct Keystone {
    url: String,
    username: String,
    password: SecretFile,
    user_domain: String,
    project: String,
    project_domain: String,
    http: reqwest::Client,
    token: Option<(String, SystemTime)>,
}

/// The Keystone options of a client's configuration (a sink, the compute API), all optional: no `auth_url`, no
/// Keystone (a noauth service).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeystoneOptions<'a> {
    /// Keystone v3.
    pub auth_url: Option<&'a str>,
    /// The user.
    pub username: Option<&'a str>,
    /// A file holding the password.
    pub password_file: Option<&'a Path>,
    /// The user's domain (default `Default`).
    pub user_domain_name: Option<&'a str>,
    /// The project.
    pub project_name: Option<&'a str>,
    /// The project's domain (default `Default`).
    pub project_domain_name: Option<&'a str>,
}

/// Why there is no answer from Keystone (worth a retry).
#[derive(Debug)]
pub struct KeystoneError(pub String);

impl Keystone {
    /// A client for `url` (with or without its `/v3`), user `username` in `user_domain`, scoped to `project` in
    /// `project_domain`, its password in `password_file`.
    pub fn new(
        url: &str,
        username: &str,
        password_file: &Path,
        (user_domain, project, project_domain): (&str, &str, &str),
        http: reqwest::Client,
    ) -> Result<Self, String> {
        Ok(Keystone {
            // `.../v3` or not, as operators write it: the token path is added once
            url: url.trim_end_matches('/').trim_end_matches("/v3").to_string(),
            username: username.to_string(),
            password: SecretFile::open(password_file)?,
            user_domain: user_domain.to_string(),
            project: project.to_string(),
            project_domain: project_domain.to_string(),
            http,
            token: None,
        })
    }

    /// A client from a configuration's options (`None` without `auth_url`); `what` names the table in errors.
    pub fn from_options(what: &str, o: KeystoneOptions<'_>, http: reqwest::Client) -> Result<Option<Self>, String> {
        let Some(url) = o.auth_url else { return Ok(None) };
        let missing = |name: &str| format!("{what}: auth_url needs {name}");
        Keystone::new(
            url,
            o.username.ok_or_else(|| missing("username"))?,
            o.password_file.ok_or_else(|| missing("password_file"))?,
            (
                o.user_domain_name.unwrap_or("Default"),
                o.project_name.ok_or_else(|| missing("project_name"))?,
                o.project_domain_name.unwrap_or("Default"),
            ),
            http,
        )
        .map(Some)
    }

    /// Forgets the token (a 401 said it is no good).
    pub fn expire(&mut self) {
        self.token = None;
    }

    /// A valid token of our own.
    pub async fn token(&mut self) -> Result<String, KeystoneError> {
        let (password, rotated) = self.password.get();
        let password = password.to_string();
        if rotated {
            self.token = None; // a new password: a new token
        }
        if let Some((t, exp)) = &self.token {
            if SystemTime::now() + Duration::from_secs(60) < *exp {
                return Ok(t.clone());
            }
        }
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": self.username, "domain": { "name": self.user_domain }, "password": password } } },
            "scope": { "project": { "name": self.project, "domain": { "name": self.project_domain } } }
        }});
        let r = self
            .http
            .post(format!("{}/v3/auth/tokens", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| KeystoneError(format!("keystone: {}", e.without_url())))?;
        let code = r.status().as_u16();
        if !(200..300).contains(&code) {
            return Err(KeystoneError(format!("keystone: HTTP {code}")));
        }
        let token = r
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| KeystoneError("keystone: no X-Subject-Token".into()))?;
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let expires = v["token"]["expires_at"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next().unwrap_or(s)).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(600));
        self.token = Some((token.clone(), expires));
        Ok(token)
    }

    /// Whether `subject` is a valid token (Keystone's `GET /v3/auth/tokens`: 200 valid, 404 not; our own token is
    /// renewed once on a 401).
    pub async fn validate(&mut self, subject: &str) -> Result<bool, KeystoneError> {
        for _ in 0..2 {
            let own = self.token().await?;
            let r = self
                .http
                .get(format!("{}/v3/auth/tokens", self.url))
                .header("X-Auth-Token", own)
                .header("X-Subject-Token", subject)
                .send()
                .await
                .map_err(|e| KeystoneError(format!("keystone: {}", e.without_url())))?;
            match r.status().as_u16() {
                200..=299 => return Ok(true),
                404 => return Ok(false),
                401 => self.expire(),
                code => return Err(KeystoneError(format!("keystone: HTTP {code} validating a token"))),
            }
        }
        Err(KeystoneError("keystone refused our own token twice".into()))
    }
}
