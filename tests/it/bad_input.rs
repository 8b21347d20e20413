//! Bad input a user can produce: malformed HTTP, bodies that are not UTF-8,
//! header values that are not text, and a recording that cannot be written.
//! Each gets a clear answer; the server keeps serving; nothing is lost.

use crate::support::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn malformed_http_gets_400_and_the_server_keeps_serving() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    for garbage in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    }
    assert_eq!(
        post(&proxy.url("/v1/chat/completions"), CHAT).await.status,
        StatusCode::OK
    );
    assert_eq!(mock.calls(), 1, "garbage never reached the upstream");
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_forwarded_as_is_and_keyed_as_bytes() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let url = proxy.url("/v1/chat/completions");
    let body: &[u8] = b"{\"model\":\"m\",\"x\":\"\xff\xfe\"}";
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-test-dummy"),
    ];
    let first = send(http::Method::POST, &url, &headers, body.to_vec()).await;
    assert_eq!(first.cache(), "miss");
    assert_eq!(&mock.seen()[0].body[..], body);
    let second = send(http::Method::POST, &url, &headers, body.to_vec()).await;
    assert_eq!(second.cache(), "hit");
    assert_eq!(second.body, first.body);
}

#[tokio::test]
async fn an_override_header_that_is_not_text_is_a_400() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url(), "").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-llmtape-mode: r\xe9play\r\n".to_vec();
    request.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{CHAT}",
            CHAT.len()
        )
        .as_bytes(),
    );
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("x-llmtape-mode"), "{text}");
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn a_recording_that_cannot_be_written_still_answers_the_client() {
    // A fixtures folder where the route's directory is a file: every write
    // fails, as on a full or read-only disk.
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(fixtures.join("chat.completions"), "in the way").unwrap();
    let proxy = TestProxy::start_fixtures(&mock.url(), "mode = \"auto\"\n", &fixtures).await;
    let url = proxy.url("/v1/chat/completions");
    let first = post(&url, CHAT).await;
    assert_eq!((first.status, first.cache()), (StatusCode::OK, "miss"));
    assert!(first.json()["choices"][0]["message"]["content"]
        .as_str()
        .is_some());
    let second = post(&url, CHAT).await;
    assert_eq!(second.cache(), "miss", "nothing was recorded");
    assert_eq!(
        std::fs::read_to_string(fixtures.join("chat.completions")).unwrap(),
        "in the way"
    );
}
