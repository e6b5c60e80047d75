//! A webhook receiver on 127.0.0.1 for the delivery tests: a real HTTP server that records
//! every request and answers as it is told: at once, with an error, slowly, or not at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What it was answered (0: no answer).
    pub answered: u16,
    pub at: Instant,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How to answer one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// Answers 200 after this long.
    Slow(Duration),
    /// Never answers.
    Silent,
    /// Drops the connection without an answer.
    Reset,
}

type Script = Box<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// A receiver: `script(webhook-id, attempt number from 0)` says how to answer.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub async fn start(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let receiver = Receiver {
            addr: listener.local_addr().expect("its address"),
            got: Arc::default(),
            script: Arc::new(Mutex::new(Box::new(script))),
        };
        let app = Router::new()
            .route("/hook", post(answer))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers from now on as `script` says.
    pub fn set(&self, script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) {
        *self.script.lock().expect("script") = Box::new(script);
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    /// Waits until `done` holds of what it got, for at most `limit`.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver waited {limit:?}; it got {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let attempt = {
        let got = r.got.lock().expect("got");
        got.iter().filter(|g| g.id == id).count()
    };
    let reply = (r.script.lock().expect("script"))(&id, attempt);
    let status = match reply {
        Reply::Ok => 204,
        Reply::Slow(_) => 200,
        Reply::Status(s) => s,
        Reply::TooMany(_) => 429,
        Reply::Silent | Reply::Reset => 0,
    };
    r.got.lock().expect("got").push(Got {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered: status,
        at: Instant::now(),
    });
    match reply {
        Reply::Ok => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(s) => StatusCode::from_u16(s)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Reply::TooMany(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK.into_response()
        }
        Reply::Silent => std::future::pending().await,
        // Unwinding the connection's task closes it without an answer, and without the panic
        // hook's message.
        Reply::Reset => std::panic::resume_unwind(Box::new("reset")),
    }
}

/// Whether a request's signature verifies under `secret` (`whsec_…`), by the Standard Webhooks
/// rule, computed here apart from the code under test.
pub fn verifies(got: &Got, secret: &str) -> bool {
    let key = BASE64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("a base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{}.{}.", got.id, got.timestamp).as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    got.signature.split(' ').any(|s| s == expected)
}

/// The attempts per id, in arrival order.
pub fn by_id(got: &[Got]) -> HashMap<String, Vec<Got>> {
    let mut out: HashMap<String, Vec<Got>> = HashMap::new();
    for g in got {
        out.entry(g.id.clone()).or_default().push(g.clone());
    }
    out
}
