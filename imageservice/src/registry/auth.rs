//! Registry credentials and the `WWW-Authenticate` challenge flow
//! (distribution token auth, OAuth2 refresh tokens, HTTP basic).

use base64::Engine as _;

/// What the kubelet handed us for one pull (CRI `AuthConfig`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token realm.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A bearer token to send to the registry as is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    // Never log secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username})"),
            Credentials::IdentityToken { username, .. } => write!(f, "IdentityToken({username})"),
            Credentials::RegistryToken(_) => write!(f, "RegistryToken"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("auth field is not base64 of \"user:password\"")]
    BadAuthField,
}

impl Credentials {
    /// Builds credentials from CRI `AuthConfig` fields, in the precedence
    /// containerd uses: registry token, identity token, auth, user/password.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Self, CredentialsError> {
        if !registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(registry_token.to_string()));
        }
        if !identity_token.is_empty() {
            return Ok(Credentials::IdentityToken {
                username: username.to_string(),
                token: identity_token.to_string(),
            });
        }
        if !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| CredentialsError::BadAuthField)?;
            let decoded = String::from_utf8(decoded).map_err(|_| CredentialsError::BadAuthField)?;
            let (u, p) = decoded.split_once(':').ok_or(CredentialsError::BadAuthField)?;
            return Ok(Credentials::Basic { username: u.to_string(), password: p.to_string() });
        }
        if !username.is_empty() || !password.is_empty() {
            return Ok(Credentials::Basic { username: username.to_string(), password: password.to_string() });
        }
        Ok(Credentials::Anonymous)
    }

    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(params);
    let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    } else {
        None
    }
}

/// `k="v", k2=v2` with quoted values that may contain commas and escapes.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        out.push((key.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None, "a bearer challenge needs a realm");
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn credentials_follow_cri_precedence() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        assert_eq!(
            Credentials::from_cri("", "", &auth, "", "").unwrap(),
            Credentials::Basic { username: "u".into(), password: "p:w".into() }
        );
        assert_eq!(
            Credentials::from_cri("a", "b", &auth, "", "tok").unwrap(),
            Credentials::RegistryToken("tok".into())
        );
        assert_eq!(Credentials::from_cri("", "", "", "", "").unwrap(), Credentials::Anonymous);
        assert_eq!(Credentials::from_cri("", "", "%%%", "", ""), Err(CredentialsError::BadAuthField));
        assert!(!format!("{:?}", Credentials::from_cri("u", "secret", "", "", "").unwrap()).contains("secret"));
    }
}
