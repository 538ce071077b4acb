//! Bearer-token authentication for the RPC port, bitcoind-style: a fresh
//! random token in `<datadir>/.cookie` (mode 0600) at every start. Anyone who
//! can read the data dir can control the node; nobody else can.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonrpsee::server::{HttpBody, HttpResponse};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use crate::crypto::random_bytes;
use crate::error::Result;
use crate::keys::write_private_file;

/// Writes a new cookie file and returns its token.
pub fn write_cookie(path: &Path) -> Result<String> {
    let token = hex::encode(random_bytes::<32>()?);
    write_private_file(path, token.as_bytes())?;
    Ok(token)
}

#[derive(Clone)]
pub struct BearerAuthLayer {
    expected: Arc<Vec<u8>>,
}

impl BearerAuthLayer {
    pub fn new(token: &str) -> Self {
        BearerAuthLayer {
            expected: Arc::new(format!("Bearer {token}").into_bytes()),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    expected: Arc<Vec<u8>>,
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ok = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.expected.as_slice())));
        if ok {
            Box::pin(self.inner.call(req))
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
