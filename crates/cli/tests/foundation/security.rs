//! The hub's TLS identity, secrets at rest, and the handshake flood.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ganglion_core::{InviteCode, Secret};
use ganglion_node::Error;
use ganglion_node::tls::{HubTarget, connect, fingerprint};
use ganglion_proto::v1;
use ganglion_proto::v1::hub_client::HubClient;
use tonic::Code;

use crate::common::*;

fn target(hub: &Hub, fp: &str, bind_ip: Option<IpAddr>) -> HubTarget {
    HubTarget {
        addr: hub.endpoints.grpc.clone(),
        cert_sha256: fp.to_owned(),
        bind_ip,
    }
}

/// The certificate file's DER, from its PEM.
fn pem_der(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).unwrap();
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(b64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_serves_tls_with_the_published_fingerprint() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let fp = hub.endpoints.cert_sha256.clone();
    assert_eq!(fp.len(), 64);
    assert_eq!(
        fingerprint(&pem_der(&hub.dir.join("tls/hub.crt"))),
        fp,
        "endpoints.json publishes the SHA-256 of the certificate on disk"
    );

    // The published fingerprint is accepted, and the channel works (Join answers).
    let channel = connect(&target(&hub, &fp, None))
        .await
        .expect("pinned connect");
    let status = HubClient::new(channel)
        .join(v1::JoinRequest {
            invite_secret: Secret::generate().encode(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Any other fingerprint is refused during the TLS handshake.
    let wrong = "ab".repeat(32);
    match connect(&target(&hub, &wrong, None)).await {
        Err(Error::CertificateMismatch { expected, got }) => {
            assert_eq!(expected, wrong);
            assert_eq!(got, fp, "the error names the certificate actually seen");
        }
        other => panic!("expected CertificateMismatch, got {other:?}"),
    }

    // A join whose invite pins another certificate fails cleanly, creates no
    // state dir, and leaves the invite unused.
    let invite = hub.invite(&[]);
    let mut code = InviteCode::parse(&invite).unwrap();
    code.cert_sha256 = wrong.clone();
    let forged = code.encode();
    let line = tokio::task::block_in_place(|| s.join_fails(&forged, "pinned", &[]));
    assert!(line.contains("certificate"), "{line}");
    assert!(line.contains(&wrong) && line.contains(&fp), "{line}");
    let invites = tokio::task::block_in_place(|| hub.invites());
    assert_eq!(invites[0]["state"], "pending", "{invites:?}");
    assert!(tokio::task::block_in_place(|| hub.nodes()).is_empty());
}

/// Everything a secret may look like on disk: raw bytes, base64url, hex.
fn forms(name: &str, secret: &Secret) -> Vec<(String, Vec<u8>)> {
    let text = secret.encode();
    let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        (format!("{name} (raw)"), raw),
        (format!("{name} (base64url)"), text.into_bytes()),
        (format!("{name} (hex)"), hex.into_bytes()),
    ]
}

/// The names of `needles` found in any file under `root` (except `skip`).
fn scan(
    root: &std::path::Path,
    skip: &[&std::path::Path],
    needles: &[(String, Vec<u8>)],
) -> Vec<String> {
    let files = files_under(root, skip);
    assert!(
        files.iter().any(|f| f.ends_with("hub.db")),
        "scan covers the database: {files:?}"
    );
    let mut found = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for (what, needle) in needles {
            if contains(&bytes, needle) {
                found.push(format!("{what} in {}", f.display()));
            }
        }
    }
    found
}

#[test]
fn no_secret_is_stored_in_plain_text() {
    let s = Scene::new();
    let mut hub = s.hub("hub", &[]);
    let token_file = hub.dir.join("admin.token");
    let admin = Secret::decode(&hub.admin_token()).expect("admin token is a secret");

    let unused = hub.invite(&["--name", "later"]);
    let used = hub.invite(&[]);
    let revoked = hub.json(&["invite", "create"]);
    hub.ok(&["invite", "revoke", revoked["id"].as_str().unwrap()]);
    let _node = s.join(&used, "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    let credential = std::fs::read_to_string(s.state_dir("n1").join("credential")).unwrap();
    let credential = Secret::decode(&credential).unwrap();

    let mut needles = forms("admin token", &admin);
    needles.extend(forms("node credential", &credential));
    for (name, inv) in [
        ("unused invite", unused.as_str()),
        ("used invite", used.as_str()),
        ("revoked invite", revoked["invite"].as_str().unwrap()),
    ] {
        needles.extend(forms(name, &InviteCode::parse(inv).unwrap().secret));
        needles.push((format!("{name} (string)"), inv.as_bytes().to_vec()));
    }

    // The scanner does find a secret where one is: the admin token's own file.
    let own = scan(&hub.dir, &[], &needles);
    assert!(
        own.iter()
            .any(|f| f.starts_with("admin token (base64url) in")),
        "{own:?}"
    );

    // While running (hub.db, -wal, -shm) and after a clean shutdown.
    let found = scan(&hub.dir, &[&token_file], &needles);
    assert!(found.is_empty(), "secrets at rest: {found:?}");
    assert_eq!(hub.terminate().code(), Some(0));
    let found = scan(&hub.dir, &[&token_file], &needles);
    assert!(
        found.is_empty(),
        "secrets at rest after shutdown: {found:?}"
    );
    // Nor in the hub's own log.
    let log = hub.proc.stderr().into_bytes();
    let logged: Vec<_> = needles
        .iter()
        .filter(|(_, n)| contains(&log, n))
        .map(|(w, _)| w)
        .collect();
    assert!(logged.is_empty(), "secrets in the hub log: {logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_is_rate_limited_and_good_nodes_keep_working() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let fp = hub.endpoints.cert_sha256.clone();
    let _early = s.join(&hub.invite(&[]), "early", &["--name", "early"]);
    tokio::task::block_in_place(|| hub.wait_status("early", "online", READY));

    let bad_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let channel = connect(&target(&hub, &fp, Some(bad_ip))).await.unwrap();
    let mut client = HubClient::new(channel);
    let mut codes = Vec::new();
    for i in 0..40 {
        let secret = if i % 2 == 0 {
            "garbage".to_owned()
        } else {
            Secret::generate().encode()
        };
        let st = client
            .join(v1::JoinRequest {
                invite_secret: secret,
                name: format!("flood-{i}"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        codes.push(st.code());
    }
    let first_limited = codes
        .iter()
        .position(|c| *c == Code::ResourceExhausted)
        .unwrap_or_else(|| panic!("never rate-limited: {codes:?}"));
    assert!(
        (20..=26).contains(&first_limited),
        "limited after {first_limited} failures (burst 20): {codes:?}"
    );
    assert!(
        codes[..first_limited]
            .iter()
            .all(|c| matches!(c, Code::InvalidArgument | Code::Unauthenticated)),
        "{codes:?}"
    );
    assert!(
        codes[first_limited..]
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count()
            >= 10,
        "{codes:?}"
    );

    // A bad bearer on an authenticated method is limited too.
    let mut req = tonic::Request::new(v1::SyncConfigurationRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", Secret::generate().encode())
            .parse()
            .unwrap(),
    );
    let st = client.sync_configuration(req).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    // A valid invite still joins from this address (issue 12: the limiter
    // never refuses a valid credential), and its credential works there.
    let valid = tokio::task::block_in_place(|| hub.invite(&[]));
    let joined = client
        .join(v1::JoinRequest {
            invite_secret: InviteCode::parse(&valid).unwrap().secret.encode(),
            name: "limited".into(),
            ..Default::default()
        })
        .await
        .expect("a valid invite joins from an address over its budget")
        .into_inner();
    let mut req = tonic::Request::new(v1::SyncConfigurationRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", joined.credential).parse().unwrap(),
    );
    let config = client
        .sync_configuration(req)
        .await
        .expect("valid credential");
    assert_eq!(config.into_inner().name, "limited");
    // Bad attempts from it are still limited.
    let st = client
        .join(v1::JoinRequest {
            invite_secret: Secret::generate().encode(),
            name: "again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");

    // Meanwhile, from 127.0.0.1, a good node joins and the old one stays online.
    tokio::task::block_in_place(|| {
        let mut good = s.join(&hub.invite(&[]), "good", &["--name", "good"]);
        hub.wait_status("good", "online", READY);
        good.assert_running();
        assert_eq!(hub.node("early").unwrap()["status"], "online");
    });
    let metrics = tokio::task::block_in_place(|| {
        http(
            &hub.endpoints.http,
            "GET",
            "/metrics",
            Some(&format!("Bearer {}", hub.admin_token())),
            "",
        )
    });
    assert_eq!(metrics.0, 200);
    assert!(metrics.1.contains("auth"), "{}", metrics.1);
}

/// Issue 12 item 11: a secret given as a flag is visible to every local user
/// (`ps`, `/proc/PID/cmdline`); the CLI says so and names the safe ways. The
/// same token from the environment draws no warning.
#[test]
fn an_admin_token_given_as_a_flag_is_warned_about() {
    // No hub listens on the discard port: the command fails either way, after
    // the warning (which comes before anything is sent).
    let hub = ["--hub", "http://127.0.0.1:9"];
    let out = command()
        .args(["nodes", "ls"])
        .args(hub)
        .args(["--admin-token", "not-a-real-token"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("warning: --admin-token on the command line")
            && err.contains("GANGLION_ADMIN_TOKEN"),
        "{err}"
    );
    let out = command()
        .args(["nodes", "ls"])
        .args(hub)
        .env("GANGLION_ADMIN_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("warning:"), "{err}");
    assert_error(&out);
}
