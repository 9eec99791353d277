//! `/dashboard`: one page, embedded in the binary (no CDN, works offline), that reads the
//! admin API. It is behind the admin token like the API it reads: `xx dashboard` gives a URL
//! with the token, which the gateway trades for a same-site, HTTP-only cookie and a redirect
//! to the bare URL (as Jupyter does), so the token does not stay in the address bar or history.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;

use super::token;
use crate::gateway::Gateway;

const PAGE: &str = include_str!("dashboard.html");

/// The cookie that carries the admin token for the dashboard's own requests.
pub const COOKIE: &str = "clutch_admin";

/// The admin token from a `Cookie` header, if it carries one.
pub fn token_in_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

pub fn respond(gateway: &Gateway, query: Option<&str>, headers: &HeaderMap) -> Response {
    let offered = query.and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value)
    });
    if let Some(offered) = offered {
        if token::matches(&gateway.admin_token, offered) {
            return Response::builder()
                .status(303)
                .header("location", "/dashboard")
                .header(
                    "set-cookie",
                    format!("{COOKIE}={offered}; Path=/; HttpOnly; SameSite=Strict"),
                )
                .header("cache-control", "no-store")
                .body(Body::empty())
                .expect("static parts");
        }
        return refused(
            "That link's token is not this gateway's (it changes when the admin-token file is made again).",
        );
    }
    if !super::presents_token(gateway, headers) {
        return refused("This page needs the gateway's admin token.");
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header(
            "content-security-policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        )
        .header("x-frame-options", "DENY")
        .body(Body::from(PAGE))
        .expect("static parts")
}

fn refused(why: &str) -> Response {
    Response::builder()
        .status(401)
        .header("content-type", "text/html; charset=utf-8")
        .body(Body::from(format!(
            "<!doctype html><meta charset=utf-8><title>clutch gateway</title><p>{why} Run <code>xx dashboard</code> to open it with the token.</p>"
        )))
        .expect("static parts")
}
