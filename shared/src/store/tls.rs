//! How the store reaches its database: a database on this machine in the clear (or over its
//! socket), any other only over TLS verified against the CA the operator gives
//! (`EVTRACK_DATABASE_CA`) or, with `require_ssl=true` in the URL, the public roots — unless
//! the operator explicitly allows plain TCP (`EVTRACK_DATABASE_INSECURE=1`).

use super::StoreError;
use crate::config::{DatabaseTls, Secret, is_loopback_host};
use mysql_async::{Opts, OptsBuilder};

/// The connection options for `url` under `tls`, or why the URL may not be used.
pub(super) fn connection_options(url: &Secret<String>, tls: &DatabaseTls) -> Result<Opts, StoreError> {
    let opts = Opts::from_url(url.expose())?;
    let host = opts.ip_or_hostname().to_string();
    let local = is_loopback_host(&host);
    let ssl = match (&tls.ca_pem, opts.ssl_opts()) {
        // Only the given CA is trusted; a loopback address would otherwise switch to the
        // server's socket, where no TLS is negotiated.
        (Some(ca), given) => Some(
            given
                .cloned()
                .unwrap_or_default()
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true),
        ),
        (None, given) => given.cloned(),
    };
    let verified = ssl.as_ref().is_some_and(|ssl| !ssl.accept_invalid_certs() && !ssl.skip_domain_validation());
    if !local && !verified && !tls.insecure {
        let why = if ssl.is_some() { "with TLS that does not verify the server" } else { "without TLS" };
        return Err(StoreError::Config(format!(
            "the database at {host} is not on this machine and would be reached {why}: set EVTRACK_DATABASE_CA \
             to its CA (a PEM file or text; e.g. the RDS bundle), or add require_ssl=true to EVTRACK_DATABASE_URL \
             for a publicly trusted certificate; EVTRACK_DATABASE_INSECURE=1 allows it anyway"
        )));
    }
    let prefer_socket = ssl.is_none() && opts.prefer_socket();
    Ok(OptsBuilder::from_opts(opts).ssl_opts(ssl).prefer_socket(prefer_socket).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::SslOpts;

    fn options(url: &str, tls: &DatabaseTls) -> Result<Opts, StoreError> {
        connection_options(&Secret::new(url.to_string()), tls)
    }

    #[test]
    fn a_database_elsewhere_needs_verified_tls_or_an_explicit_insecure() {
        let none = DatabaseTls::default();
        assert!(options("mysql://u:p@127.0.0.1:3306/db", &none).is_ok(), "loopback in the clear");
        assert!(options("mysql://u:p@localhost/db", &none).is_ok());
        let refused = options("mysql://u:p@db.example.internal:3306/db", &none).expect_err("refused");
        assert!(refused.to_string().contains("EVTRACK_DATABASE_CA"), "{refused}");
        let unverified = "mysql://u:p@10.0.0.5/db?require_ssl=true&verify_ca=false";
        assert!(options(unverified, &none).is_err(), "TLS that verifies nothing is refused too");
        let public_roots = options("mysql://u:p@10.0.0.5/db?require_ssl=true", &none).expect("verified TLS");
        assert!(public_roots.ssl_opts().is_some());
        let with_ca = DatabaseTls { ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()), insecure: false };
        let opts = options("mysql://u:p@10.0.0.5/db", &with_ca).expect("CA given");
        assert!(opts.ssl_opts().is_some_and(SslOpts::disable_built_in_roots), "only the given CA");
        let insecure = DatabaseTls { ca_pem: None, insecure: true };
        assert!(options("mysql://u:p@10.0.0.5/db", &insecure).expect("allowed").ssl_opts().is_none());
    }

    #[test]
    fn a_ca_given_for_a_loopback_database_means_tls_not_the_socket() {
        let with_ca = DatabaseTls { ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()), insecure: false };
        let opts = options("mysql://u:p@127.0.0.1:3306/db", &with_ca).expect("ok");
        assert!(!opts.prefer_socket() && opts.ssl_opts().is_some());
    }
}
