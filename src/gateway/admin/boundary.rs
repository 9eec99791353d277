//! The browser boundary. Loopback is not a trust boundary against the user's own browser: any
//! web page can send a `text/plain` POST to `127.0.0.1:8082` without a CORS preflight, and with
//! DNS rebinding (`Host: evil.example:8082`) it can read the answers too. So every request must
//! be addressed to the gateway by a name that cannot be rebound, must not come from a foreign
//! page (`Origin`, `Sec-Fetch-Site`), and a model call must carry a JSON content type, which a
//! browser will not send cross-site without a preflight the gateway never grants.

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};

use crate::gateway::ir::{ApiError, ErrorKind};

/// The host names (without port) that address this gateway besides loopback names and IP
/// literals: the host of the configured `gateway.url`.
#[derive(Debug, Clone, Default)]
pub struct OwnHosts(Vec<String>);

impl OwnHosts {
    pub fn from_url(url: &str) -> OwnHosts {
        let host = url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_ascii_lowercase));
        OwnHosts(host.into_iter().collect())
    }

    /// Whether `host` (a `Host` header's name part) is this gateway: an IP literal (a page
    /// cannot rebind one), `localhost` or a name under it, or the configured host.
    fn admits(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || ends_with_ignoring_case(host, ".localhost")
            || bare.parse::<std::net::IpAddr>().is_ok()
            || self.0.iter().any(|own| own.eq_ignore_ascii_case(host))
    }
}

static SEC_FETCH_SITE: axum::http::HeaderName =
    axum::http::HeaderName::from_static("sec-fetch-site");

/// Refuse what a browser page could send: a foreign `Host`, a foreign `Origin`, or a
/// cross-site fetch.
pub fn check(headers: &HeaderMap, own: &OwnHosts) -> Result<(), ApiError> {
    let host = match headers.get(HOST) {
        // HTTP/1.0 clients may send none; browsers always do.
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| refuse("a Host header that is not text"))?;
            let name = host_name(text);
            if !own.admits(name) {
                return Err(refuse(&format!(
                    "Host `{}`: the gateway answers only to 127.0.0.1, localhost, [::1] or its configured gateway.url (a page using DNS rebinding sends its own name)",
                    shorten(text)
                )));
            }
            Some(text)
        }
    };
    if let Some(site) = headers.get(&SEC_FETCH_SITE).and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refuse(&format!(
            "a {site} request from a web page (Sec-Fetch-Site); only agents and the gateway's own pages may call it"
        )));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = host.is_some_and(|host| {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        });
        if !same {
            return Err(refuse(&format!(
                "a request from the web page at Origin `{}`; only agents and the gateway's own pages may call it",
                shorten(origin)
            )));
        }
    }
    Ok(())
}

/// A model call's body must be declared JSON: `text/plain`, forms and a missing type are what
/// a browser sends cross-site without asking first.
pub fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let json = declared.is_some_and(|t| {
        let media = t.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json") || ends_with_ignoring_case(media, "+json")
    });
    if json {
        return Ok(());
    }
    Err(ApiError {
        status: 415,
        kind: ErrorKind::InvalidRequest,
        message: format!(
            "model calls need `Content-Type: application/json` (got {}); agents and SDKs send it, web pages cannot without the gateway's consent",
            declared.map_or("none".to_string(), |t| format!("`{}`", shorten(t)))
        ),
        retry_after: None,
    })
}

fn ends_with_ignoring_case(text: &str, suffix: &str) -> bool {
    text.len() > suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `host:port`, `[v6]:port` or `host` -> the name part.
fn host_name(text: &str) -> &str {
    if text.starts_with('[') {
        return text
            .split(']')
            .next()
            .map_or(text, |h| &text[..h.len() + 1]);
    }
    text.rsplit_once(':').map_or(text, |(name, _)| name)
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

fn refuse(what: &str) -> ApiError {
    ApiError::new(ErrorKind::Permission, format!("refused {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn loopback_names_pass_and_rebinding_names_and_foreign_pages_do_not() {
        let own = OwnHosts::from_url("http://clutch.internal:8082");
        for host in [
            "127.0.0.1:8082",
            "localhost:8082",
            "[::1]:8082",
            "clutch.internal:8082",
            "LOCALHOST",
            "a.localhost:1",
        ] {
            assert!(check(&headers(&[("host", host)]), &own).is_ok(), "{host}");
        }
        for host in [
            "evil.example:8082",
            "127.0.0.1.nip.io:8082",
            "localhost.evil.example",
        ] {
            let error = check(&headers(&[("host", host)]), &own).unwrap_err();
            assert_eq!(error.status, 403, "{host}");
        }
        let ok_origin = headers(&[
            ("host", "127.0.0.1:8082"),
            ("origin", "http://127.0.0.1:8082"),
        ]);
        assert!(check(&ok_origin, &own).is_ok());
        for origin in ["https://evil.example", "null", "http://localhost:3000"] {
            let h = headers(&[("host", "127.0.0.1:8082"), ("origin", origin)]);
            assert!(check(&h, &own).is_err(), "{origin}");
        }
        let cross = headers(&[("host", "127.0.0.1:8082"), ("sec-fetch-site", "cross-site")]);
        assert!(check(&cross, &own).is_err());
    }

    #[test]
    fn only_json_bodies_make_model_calls() {
        assert!(check_json(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(
            check_json(&headers(&[(
                "content-type",
                "application/json; charset=utf-8"
            )]))
            .is_ok()
        );
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                check_json(&headers(&[("content-type", t)]))
                    .unwrap_err()
                    .status,
                415
            );
        }
        assert!(check_json(&HeaderMap::new()).is_err());
    }
}
