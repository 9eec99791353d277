//! How the gateway reaches a provider on the user's network: directly, or through the HTTP
//! proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read as
//! curl reads them), and over TLS that trusts the system's CA store (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` honoured) as well as the built-in web PKI roots, so a corporate proxy or a
//! TLS-inspecting firewall works as it does for curl.
//!
//! Loopback destinations are never sent to a proxy: a proxy cannot reach the user's own
//! machine, and a local model server must keep working when `HTTPS_PROXY` is set globally.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP to the provider, or to the proxy in front of it.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl ProxyConnector {
    pub fn new(direct: HttpConnector) -> ProxyConnector {
        ProxyConnector {
            direct,
            proxies: Arc::new(Matcher::from_env()),
        }
    }
}

/// A connection to a provider. `forwarded` marks a plain-HTTP request sent to a forward
/// proxy, which then needs the absolute URL in its request line.
pub struct Stream {
    io: TokioIo<tokio::net::TcpStream>,
    forwarded: bool,
}

/// Whether `uri` names this machine (`localhost` or a loopback address).
pub fn is_loopback(uri: &Uri) -> bool {
    match uri.host() {
        Some(host) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// [`is_loopback`] for a URL as text; one that does not parse is not on this machine.
pub fn is_loopback_url(url: &str) -> bool {
    url.parse::<Uri>().is_ok_and(|uri| is_loopback(&uri))
}

/// `host:port` of a proxy, never its credentials.
fn shown(proxy: &Uri) -> String {
    match (proxy.host(), proxy.port_u16()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => "the configured proxy".into(),
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = if is_loopback(&dst) {
            None
        } else {
            self.proxies.intercept(&dst)
        };
        let mut direct = self.direct.clone();
        Box::pin(async move {
            let Some(proxy) = intercept else {
                let io = direct.call(dst).await?;
                return Ok(Stream {
                    io,
                    forwarded: false,
                });
            };
            let https = dst.scheme_str() == Some("https");
            if !https && proxy.basic_auth().is_none() {
                let io = direct
                    .call(proxy.uri().clone())
                    .await
                    .map_err(|e| format!("cannot reach the proxy {}: {e}", shown(proxy.uri())))?;
                return Ok(Stream {
                    io,
                    forwarded: true,
                });
            }
            // HTTPS, or a proxy that wants credentials, which only the CONNECT request can
            // carry here: a tunnel.
            let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
            let host = dst.host().unwrap_or_default().to_string();
            let io = tunnel.call(dst).await.map_err(|e| {
                let mut text = format!(
                    "the proxy {} did not open a tunnel to {host}: {e}",
                    shown(proxy.uri())
                );
                if let Some(inner) = std::error::Error::source(&e) {
                    text.push_str(&format!(" ({inner})"));
                }
                text
            })?;
            Ok(Stream {
                io,
                forwarded: false,
            })
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The TLS settings for provider connections.
pub fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(SystemRoots::new(provider.clone()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// Standard web PKI verification against the system store plus the built-in roots. Reading
/// the system store takes tens of milliseconds of CPU, so it is read at the first TLS
/// handshake rather than at start: a gateway serving only local providers never pays it,
/// and start-up is not slowed.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Arc<OnceLock<Arc<WebPkiServerVerifier>>>,
}

impl SystemRoots {
    fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> SystemRoots {
        SystemRoots {
            provider,
            verifier: Arc::new(OnceLock::new()),
        }
    }

    fn get(&self) -> &WebPkiServerVerifier {
        self.verifier.get_or_init(|| build_verifier(&self.provider))
    }
}

fn build_verifier(provider: &Arc<rustls::crypto::CryptoProvider>) -> Arc<WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("system CA store: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates");
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("a root store with the built-in roots is never empty")
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
