//! Bearer-token authentication for the RPC port, bitcoind-style: a fresh
//! random token in `<datadir>/.cookie` (mode 0600) at every start. Anyone who
//! can read the data dir can control the node; nobody else can.
//!
//! The token comes as `Authorization: Bearer <token>`, or, on a WebSocket
//! upgrade (browsers cannot set headers there), as the subprotocol
//! `bearer.<token>` beside `p2pstore`. The dashboard's static files and its
//! one-time login ([`super::dashboard`]) are answered before the check.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonrpsee::server::{HttpBody, HttpResponse};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::dashboard::{self, Logins};
use crate::crypto::random_bytes;
use crate::error::Result;
use crate::keys::write_private_file;

/// Writes a new cookie file and returns its token.
pub fn write_cookie(path: &Path) -> Result<String> {
    let token = hex::encode(random_bytes::<32>()?);
    write_private_file(path, token.as_bytes())?;
    Ok(token)
}

/// The subprotocol a browser's WebSocket asks for, the token offered
/// beside it as `bearer.<token>`.
pub const WS_PROTOCOL: &str = "p2pstore";
const WS_BEARER_PREFIX: &str = "bearer.";

#[derive(Clone)]
pub struct BearerAuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    token: String,
    expected: Vec<u8>,
    logins: Arc<Logins>,
}

impl BearerAuthLayer {
    pub fn new(token: &str, logins: Arc<Logins>) -> Self {
        BearerAuthLayer {
            shared: Arc::new(Shared {
                token: token.to_string(),
                expected: format!("Bearer {token}").into_bytes(),
                logins,
            }),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The WebSocket subprotocols a request offers.
fn ws_protocols<B>(req: &http::Request<B>) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

impl Shared {
    /// Whether the request offers the token as a WebSocket subprotocol.
    fn ws_bearer<B>(&self, req: &http::Request<B>) -> bool {
        ws_protocols(req)
            .filter_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
            .any(|t| bool::from(t.as_bytes().ct_eq(self.token.as_bytes())))
    }
}

impl<S, B> Service<http::Request<B>> for BearerAuth<S>
where
    S: Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let s = &self.shared;
        if let Some(resp) = dashboard::answer(&req, &s.logins, &s.token) {
            return Box::pin(async move { Ok(resp) });
        }
        let bearer = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(s.expected.as_slice())));
        if bearer {
            Box::pin(self.inner.call(req))
        } else if s.ws_bearer(&req) {
            // The token goes no further than this check. A browser must
            // hear one of the subprotocols it offered chosen, or it drops
            // the socket; a client that offered only the token hears none.
            let offered = ws_protocols(&req).any(|p| p == WS_PROTOCOL);
            req.headers_mut()
                .remove(http::header::SEC_WEBSOCKET_PROTOCOL);
            let call = self.inner.call(req);
            Box::pin(async move {
                let mut resp = call.await?;
                if offered && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    resp.headers_mut().insert(
                        http::header::SEC_WEBSOCKET_PROTOCOL,
                        http::HeaderValue::from_static(WS_PROTOCOL),
                    );
                }
                Ok(resp)
            })
        } else {
            let mut resp = HttpResponse::new(HttpBody::from(
                "unauthorized: send Authorization: Bearer <token from the data dir's .cookie>\n",
            ));
            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            Box::pin(async move { Ok(resp) })
        }
    }
}
