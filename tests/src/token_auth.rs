//! A token-auth front for the test registry: the distribution token flow
//! (`401` + `WWW-Authenticate: Bearer realm=…` → token endpoint → retry with
//! `Authorization: Bearer`) in front of the real registry, which it proxies.
//! The real registry only offers htpasswd (basic) auth without a JWT signing
//! setup, so this is how the bearer path is exercised end to end.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub const USER: &str = "token-user";
pub const PASSWORD: &str = "token-password";
/// An OAuth2 refresh token the token endpoint accepts (CRI `identity_token`).
pub const REFRESH_TOKEN: &str = "refresh-secret";

pub struct TokenAuthRegistry {
    pub addr: String,
    issued: Arc<Mutex<HashSet<String>>>,
    raw: Arc<Mutex<HashMap<String, (String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenAuthRegistry {
    /// Starts on a random 127.0.0.1 port, proxying to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TokenAuthRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let issued: Arc<Mutex<HashSet<String>>> = Arc::default();
        let raw: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
        let state = Arc::new(State {
            raw: raw.clone(),
            upstream: format!("http://{upstream}"),
            realm: format!("http://{addr}/token"),
            issued: issued.clone(),
            http: reqwest::Client::new(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        TokenAuthRegistry { addr, issued, raw, task }
    }

    /// Serves `body` at `path` as is, without auth: for manifests the real
    /// registry will not store (Docker schema 1).
    pub fn serve_raw(&self, path: &str, content_type: &str, body: &str) {
        self.raw.lock().expect("lock").insert(path.to_string(), (content_type.to_string(), body.to_string()));
    }

    /// Issues a token directly, as a CRI `registry_token` would carry.
    pub fn issue(&self) -> String {
        let token = format!("tok-{}", self.issued.lock().expect("lock").len() + 1000);
        self.issued.lock().expect("lock").insert(token.clone());
        token
    }
}

impl Drop for TokenAuthRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    raw: Arc<Mutex<HashMap<String, (String, String)>>>,
    upstream: String,
    realm: String,
    issued: Arc<Mutex<HashSet<String>>>,
    http: reqwest::Client,
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

fn new_token(state: &State) -> String {
    let mut issued = state.issued.lock().expect("lock");
    let token = format!("tok-{}", issued.len() + 1);
    issued.insert(token.clone());
    token
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    use base64::Engine as _;
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    let canned = state.raw.lock().ok().and_then(|r| r.get(&path).cloned());
    if let Some((content_type, body)) = canned {
        let mut r = reply(StatusCode::OK, &body);
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert("content-type", v);
        }
        return Ok(r);
    }
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if path == "/token" {
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
        if req.method() == hyper::Method::POST {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let form = String::from_utf8_lossy(&body).to_string();
            if form.contains("grant_type=refresh_token") && form.contains(&format!("refresh_token={REFRESH_TOKEN}")) {
                let t = new_token(&state);
                return Ok(reply(StatusCode::OK, &format!(r#"{{"access_token":"{t}"}}"#)));
            }
            return Ok(reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_grant"}"#));
        }
        if auth == expected {
            let t = new_token(&state);
            return Ok(reply(StatusCode::OK, &format!(r#"{{"token":"{t}"}}"#)));
        }
        return Ok(reply(StatusCode::UNAUTHORIZED, r#"{"details":"bad credentials"}"#));
    }
    let token_ok =
        auth.strip_prefix("Bearer ").is_some_and(|t| state.issued.lock().map(|i| i.contains(t)).unwrap_or(false));
    if !token_ok {
        let repo = path.trim_start_matches("/v2/").split("/manifests/").next().unwrap_or("").split("/blobs/").next();
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        let challenge = format!(
            r#"Bearer realm="{}",service="gantry-test",scope="repository:{}:pull""#,
            state.realm,
            repo.unwrap_or("")
        );
        r.headers_mut().insert("www-authenticate", challenge.parse().expect("header"));
        return Ok(r);
    }
    let mut upstream = state.http.get(format!("{}{}", state.upstream, path));
    if let Some(a) = req.headers().get("accept") {
        upstream = upstream.header("accept", a.clone());
    }
    let Ok(resp) = upstream.send().await else { return Ok(reply(StatusCode::BAD_GATEWAY, "upstream down")) };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get("content-type").cloned();
    let body = resp.bytes().await.unwrap_or_default();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        if let Ok(v) = ct.to_str() {
            if let Ok(v) = v.parse() {
                r.headers_mut().insert("content-type", v);
            }
        }
    }
    Ok(r)
}
