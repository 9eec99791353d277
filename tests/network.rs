//! The gateway on a corporate network: it reaches providers through the proxy that
//! `HTTPS_PROXY` / `HTTP_PROXY` name, trusts a CA that only the system store's override
//! (`SSL_CERT_FILE`) adds, and keeps loopback providers off the proxy.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::fake_upstream::FakeUpstream;
use support::gateway::{ProcessGateway, configure, free_port, http_agent};
use support::network::{ConnectProxy, TlsFront};

const NAME: &str = "api.corp-upstream.test";

fn config_for(home: &std::path::Path, port: u16, base_url: &str) {
    let config = format!(
        "[gateway]\nurl = \"http://127.0.0.1:{port}\"\nauto_start = false\nconnect_timeout_secs = 5\nfirst_byte_timeout_secs = 10\ntotal_timeout_secs = 20\n\n[providers.corp]\nbase_url = \"{base_url}\"\nformat = \"chat\"\napi_key = \"upstream-secret-key\"\n"
    );
    let profile = "default_tier = \"middle\"\n[tiers.big]\nmodel = \"corp|m\"\n[tiers.middle]\nmodel = \"corp|m\"\n[tiers.small]\nmodel = \"corp|m\"\n";
    configure(home, &config, &[("default", profile)]);
}

fn chat(gateway: &ProcessGateway) -> (u16, Value) {
    let mut response = http_agent()
        .post(&format!("{}/v1/chat/completions", gateway.url))
        .send(
            json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
        .unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn the_gateway_reaches_a_tls_provider_through_the_proxy_trusting_ssl_cert_file() {
    let fake = FakeUpstream::start("through the proxy");
    let backend = fake.url().trim_start_matches("http://").parse().unwrap();
    let tls = TlsFront::start(NAME, backend);
    let proxy = ConnectProxy::start(HashMap::from([(NAME.to_string(), tls.addr)]));
    let home = tempfile::tempdir().unwrap();
    let ca = home.path().join("corp-ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let port = free_port();
    config_for(
        home.path(),
        port,
        &format!("https://{NAME}:{}/v1", tls.addr.port()),
    );

    let gateway = ProcessGateway::start_with_env(
        home.path(),
        port,
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    let (status, body) = chat(&gateway);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "through the proxy",
        "{body}"
    );
    let tunnel = format!("CONNECT {NAME}:{} HTTP/1.1", tls.addr.port());
    assert!(proxy.seen().contains(&tunnel), "{:?}", proxy.seen());
    drop(gateway);

    // The same CA not in the store: the handshake is refused, and the error says why.
    let gateway = ProcessGateway::start_with_env(
        home.path(),
        port,
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    let (status, body) = chat(&gateway);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.to_string()
            .contains("The provider's TLS certificate is not trusted here: set SSL_CERT_FILE"),
        "{body}"
    );
    assert_eq!(fake.model_calls().len(), 1, "only the trusted call arrived");
}

#[test]
fn plain_http_goes_to_the_forward_proxy_and_loopback_never_does() {
    let fake = FakeUpstream::start("forwarded");
    let backend = fake.url().trim_start_matches("http://").parse().unwrap();
    let proxy = ConnectProxy::start(HashMap::from([(NAME.to_string(), backend)]));
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    config_for(
        home.path(),
        port,
        &format!("http://{NAME}:{}/v1", backend.port()),
    );
    let env = [
        ("HTTP_PROXY", proxy.url()),
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", String::new()),
        ("no_proxy", String::new()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = ProcessGateway::start_with_env(home.path(), port, &env);
    let (status, body) = chat(&gateway);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "forwarded");
    let forwarded = format!(
        "POST http://{NAME}:{}/v1/chat/completions HTTP/1.1",
        backend.port()
    );
    assert!(proxy.seen().contains(&forwarded), "{:?}", proxy.seen());
    drop(gateway);

    // A local model server: reached directly though the proxy variables are set.
    config_for(home.path(), port, &format!("{}/v1", fake.url()));
    let gateway = ProcessGateway::start_with_env(home.path(), port, &env);
    let before = proxy.seen().len();
    let (status, body) = chat(&gateway);
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());
}
