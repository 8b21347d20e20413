//! The optional TLS listener: HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with a
//! certificate from config, and a clear start error for unusable files.

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

/// Writes a self-signed certificate for localhost / 127.0.0.1; returns
/// (cert path, key path, certificate DER).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.der().to_vec())
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate_over_h1_and_h2() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let toml = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let proxy = TestProxy::start(&mock.url(), &toml).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let request = Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
            .unwrap();
        let response = tokio::time::timeout(WAIT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2, "ALPN picks h2");
        bodies.push((
            response.headers()["x-llmtape-cache"]
                .to_str()
                .unwrap()
                .to_string(),
            tokio::time::timeout(WAIT, response.into_body().collect())
                .await
                .expect("body in time")
                .unwrap()
                .to_bytes(),
        ));
    }
    assert_eq!(
        (bodies[0].0.as_str(), bodies[1].0.as_str()),
        ("miss", "hit")
    );
    assert_eq!(bodies[0].1, bodies[1].1);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = self_signed(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = \"empty.pem\"\n",
        cert.display().to_string()
    );
    std::fs::write(dir.path().join("tls.toml"), config).unwrap();
    let mut cmd = llmtape(dir.path());
    cmd.args(["serve", "--config", "tls.toml"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert!(
        stderr.contains("empty.pem") && stderr.contains("TLS"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
