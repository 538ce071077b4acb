//! The web dashboard: a page, its script and its style, built into the
//! binary and served on the RPC port at `/dashboard`, and the one-time
//! login codes that let a browser in.
//!
//! The page holds no data: it asks the JSON-RPC API, like any program, with
//! the RPC token as the Bearer header. It gets the token by trading a
//! one-time code (`dashboard_login`, which needs the token, so only someone
//! who can read the cookie gets one) at `POST /dashboard/login`, the code in
//! a header. `p2pstore-cli dashboard` puts the code in the link's fragment,
//! which browsers never send anywhere; the page drops it from the address
//! bar at once. Live updates come over the same port's WebSocket, the token
//! offered as the `bearer.<token>` subprotocol since browsers cannot set
//! headers on a WebSocket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonrpsee::server::{HttpBody, HttpResponse};
use p2pstore_rpc::DASHBOARD_PATH;

use crate::crypto::random_bytes;
use crate::error::{Error, Result};

/// How long a login code can be used.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(60);
/// Codes outstanding at once; the oldest go first.
const MAX_LOGIN_CODES: usize = 16;
/// The header `POST /dashboard/login` carries the code in.
pub const LOGIN_HEADER: &str = "x-p2pstore-login";

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const FAVICON_SVG: &str = include_str!("dashboard/favicon.svg");

/// Login codes issued and not yet used, with when they lapse.
#[derive(Default)]
pub struct Logins {
    codes: Mutex<HashMap<String, Instant>>,
}

impl Logins {
    pub fn issue(&self) -> Result<String> {
        let code = hex::encode(random_bytes::<16>()?);
        let mut codes = self
            .codes
            .lock()
            .map_err(|_| Error::Internal("login codes poisoned".into()))?;
        let now = Instant::now();
        codes.retain(|_, until| *until > now);
        while codes.len() >= MAX_LOGIN_CODES {
            let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(c, _)| c.clone())
            else {
                break;
            };
            codes.remove(&oldest);
        }
        codes.insert(code.clone(), now + LOGIN_CODE_TTL);
        Ok(code)
    }

    /// Uses `code` up: true once, if it was issued and has not lapsed.
    pub fn redeem(&self, code: &str) -> bool {
        let Ok(mut codes) = self.codes.lock() else {
            return false;
        };
        codes
            .remove(code)
            .is_some_and(|until| until > Instant::now())
    }
}

fn response(status: http::StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut resp = HttpResponse::new(HttpBody::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // Nothing from elsewhere: no CDN, no inline script, no framing.
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The dashboard's answer to `req`, or None when it is not a dashboard
/// request (it goes on to the RPC server and its token check).
pub fn answer<B>(req: &http::Request<B>, logins: &Logins, token: &str) -> Option<HttpResponse> {
    let path = req.uri().path();
    let rest = path.strip_prefix(DASHBOARD_PATH)?;
    use http::{Method, StatusCode};
    Some(match (req.method(), rest) {
        (&Method::GET, "" | "/") => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            INDEX_HTML.into(),
        ),
        (&Method::GET, "/app.js") => response(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            APP_JS.into(),
        ),
        (&Method::GET, "/style.css") => {
            response(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS.into())
        }
        (&Method::GET, "/favicon.svg") => {
            response(StatusCode::OK, "image/svg+xml", FAVICON_SVG.into())
        }
        (&Method::POST, "/login") => {
            let code = req
                .headers()
                .get(LOGIN_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if logins.redeem(code) {
                response(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "token": token }).to_string(),
                )
            } else {
                response(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "this login link was used or has expired: run `p2pstore-cli dashboard` for a new one\n".into(),
                )
            }
        }
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_code_works_once() {
        let logins = Logins::default();
        let code = logins.issue().unwrap();
        assert!(!logins.redeem("not a code"));
        assert!(logins.redeem(&code));
        assert!(!logins.redeem(&code), "used up");
    }

    #[test]
    fn outstanding_codes_are_bounded_oldest_first() {
        let logins = Logins::default();
        let first = logins.issue().unwrap();
        for _ in 0..MAX_LOGIN_CODES {
            logins.issue().unwrap();
        }
        assert!(!logins.redeem(&first), "the oldest went");
        assert_eq!(logins.codes.lock().unwrap().len(), MAX_LOGIN_CODES);
    }
}
