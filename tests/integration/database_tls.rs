//! Database TLS: a MariaDB that accepts only TLS connections, with a certificate from a CA
//! this test makes, reached with `EVTRACK_DATABASE_CA` (a file or the PEM text); the
//! wrong CA and no TLS are refused; a database elsewhere without TLS is refused before any
//! connection is tried.

use evtrack::Config;
use evtrack::config::{DatabaseTls, Secret};
use evtrack::store::Store;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a server certificate it signed for 127.0.0.1 and localhost.
struct Certificates {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn make_certificates() -> Certificates {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    let server_pem = server.signed_by(&server_key, &issuer).expect("server certificate").pem();
    Certificates { ca_pem, server_pem, server_key_pem: server_key.serialize_pem() }
}

/// A throwaway MariaDB on a free port that requires TLS (`require_secure_transport`).
struct TlsOnlyMariaDb {
    child: Child,
    dir: PathBuf,
    port: u16,
    ca_pem: String,
}

impl TlsOnlyMariaDb {
    fn start() -> Self {
        let certificates = make_certificates();
        // Short: a socket path must stay under 108 bytes.
        let dir = PathBuf::from(format!("/tmp/evt-tls-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        for (name, text) in [
            ("ca.pem", &certificates.ca_pem),
            ("server.pem", &certificates.server_pem),
            ("server.key", &certificates.server_key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write certificate");
        }
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0"));
        let user: &[&str] = if as_root { &["--user=root"] } else { &[] };
        let installed = Command::new(binary("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(user)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db runs (infra/dev.sh test installs mariadb-server)");
        assert!(installed.success(), "mariadb-install-db failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let child = Command::new(binary("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(user)
            .args(["--bind-address=127.0.0.1", &format!("--port={port}"), "--skip-name-resolve", "--skip-log-bin"])
            .arg(format!("--socket={}", dir.join("s.sock").display()))
            .arg(format!("--pid-file={}", dir.join("d.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg("--require-secure-transport=ON")
            .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
            .arg(format!("--ssl-cert={}", dir.join("server.pem").display()))
            .arg(format!("--ssl-key={}", dir.join("server.key").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let server = Self { child, dir, port, ca_pem: certificates.ca_pem };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not listen: {}", server.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> Secret<String> {
        Secret::new(format!("mysql://root@127.0.0.1:{}/evtrack_tls", self.port))
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for TlsOnlyMariaDb {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Debian installs the server in /usr/sbin, which is not on every user's PATH.
fn binary(name: &str) -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin").join(name);
    if sbin.exists() { sbin } else { PathBuf::from(name) }
}

fn with_ca(pem: &str) -> DatabaseTls {
    DatabaseTls { ca_pem: Some(pem.as_bytes().to_vec()), insecure: false }
}

#[tokio::test]
async fn the_database_is_reached_over_tls_verified_by_the_given_ca_and_not_otherwise() {
    let server = TlsOnlyMariaDb::start();
    let url = server.url();
    // The CA as PEM text: the database is created, migrated and used over TLS.
    Store::create_database(&url, &with_ca(&server.ca_pem)).await.expect("create over TLS");
    let store = Store::connect(&url, &with_ca(&server.ca_pem), 2).expect("pool");
    let applied = store.migrate().await.unwrap_or_else(|err| panic!("migrate over TLS: {err}\n{}", server.error_log()));
    assert!(!applied.is_empty());
    store.close().await;

    // The CA as a file, through the settings the functions read.
    let ca_file = server.dir.join("ca.pem").display().to_string();
    let config = Config::with_overrides(&[("EVTRACK_DATABASE_URL", url.expose()), ("EVTRACK_DATABASE_CA", &ca_file)])
        .expect("config");
    let store = Store::from_config(&config).expect("pool");
    assert!(store.migrate().await.expect("over TLS").is_empty(), "already migrated");
    store.close().await;

    // Another CA's certificate does not verify the server; without TLS the server refuses.
    let stranger = make_certificates().ca_pem;
    let wrong = Store::connect(&url, &with_ca(&stranger), 1).expect("pool").migrate().await;
    assert!(wrong.is_err(), "a certificate from another CA is refused");
    let plain = Store::connect(&url, &DatabaseTls::default(), 1).expect("pool").migrate().await;
    assert!(plain.is_err(), "the server requires TLS");
}

#[tokio::test]
async fn a_database_elsewhere_without_tls_is_refused_before_connecting_unless_allowed() {
    let remote = [("EVTRACK_DATABASE_URL", "mysql://evtrack:pw@db.example.internal:3306/evtrack")];
    let config = Config::with_overrides(&remote).expect("config");
    let refused = Store::from_config(&config).err().expect("refused");
    assert!(refused.to_string().contains("EVTRACK_DATABASE_CA"), "{refused}");
    let mut allowed = remote.to_vec();
    allowed.push(("EVTRACK_DATABASE_INSECURE", "1"));
    assert!(Store::from_config(&Config::with_overrides(&allowed).expect("config")).is_ok());
    let bad_ca = [remote[0], ("EVTRACK_DATABASE_CA", "/nonexistent/ca.pem")];
    let err = Config::with_overrides(&bad_ca).expect_err("a CA file that cannot be read");
    assert!(err.to_string().contains("cannot read the file"), "{err}");
}
