//! Where to connect and how: the PostgreSQL URL, with TLS chosen by its `sslmode` as libpq
//! chooses it.
//!
//! - `disable`: never TLS.
//! - `allow`, `prefer`: TLS when the server offers it, its certificate not checked.
//! - `require`: TLS or no connection; the certificate is not checked, unless `sslrootcert`
//!   names a file of trusted certificates (then as `verify-ca`, as libpq does).
//! - `verify-ca`: TLS with a certificate signed by a trusted authority: the ones in
//!   `sslrootcert` (a PEM file), else the system's.
//! - `verify-full`: `verify-ca`, and the certificate names the host connected to.
//!
//! Without `sslmode`: `prefer`, except to a loopback address or a Unix socket, where encryption
//! protects nothing and would cost every batch a little: there, `disable`.

use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A PostgreSQL server to connect to: the URL's settings and the TLS its `sslmode` asks for.
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Config`'s own Debug redacts the password.
        f.debug_struct("Target")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses a libpq URL (`postgres://user@host:port/db?sslmode=…&sslrootcert=…`).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut sslmode, mut rootcert) = (None, None);
        // The other settings are passed on as written, for tokio-postgres to decode.
        let mut rest: Vec<&str> = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let decoded = url::form_urlencoded::parse(piece.as_bytes()).next();
            match decoded {
                Some((key, value)) if key == "sslmode" => sslmode = Some(value.into_owned()),
                Some((key, value)) if key == "sslrootcert" => rootcert = Some(value.into_owned()),
                _ => rest.push(piece),
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("the PostgreSQL URL is not valid: {e}"))?;
        let (mode, check) = match sslmode.as_deref() {
            None if is_local(&config) => (SslMode::Disable, Check::Nothing),
            Some("disable") => (SslMode::Disable, Check::Nothing),
            None | Some("allow" | "prefer") => (SslMode::Prefer, Check::Nothing),
            Some("require") if rootcert.is_some() => (SslMode::Require, Check::Chain),
            Some("require") => (SslMode::Require, Check::Nothing),
            Some("verify-ca") => (SslMode::Require, Check::Chain),
            Some("verify-full") => (SslMode::Require, Check::ChainAndName),
            Some(other) => bail!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ),
        };
        config.ssl_mode(mode);
        let tls = tls_config(check, rootcert.as_deref())?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// Connects one client, its connection driven by a task on the current runtime.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

/// What is checked of the server's certificate, when TLS is used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Every host of `config` is a loopback address or a Unix socket.
fn is_local(config: &Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

fn tls_config(check: Check, rootcert: Option<&str>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?;
    let chain = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let roots = Arc::new(trusted_roots(rootcert)?);
            if check == Check::ChainAndName {
                return Ok(builder.with_root_certificates(roots).with_no_client_auth());
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context("cannot set up TLS")?;
            Some(verifier)
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Lenient { provider, chain }))
        .with_no_client_auth())
}

/// The certificates of the PEM file `rootcert`, else the system's.
fn trusted_roots(rootcert: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certificates: Vec<CertificateDer<'static>> = match rootcert {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .with_context(|| format!("cannot read the certificates of sslrootcert={path}"))?,
        None => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        match rootcert {
            Some(path) => bail!("sslrootcert={path} holds no certificate"),
            None => bail!(
                "no trusted certificate authority found on this system: name one with \
                 sslrootcert=FILE"
            ),
        }
    }
    Ok(roots)
}

/// The certificate checks short of `verify-full`: none (`prefer`, `require`: the connection is
/// encrypted, not authenticated), or with `chain` (`verify-ca`) a chain to a trusted authority,
/// whatever name the certificate was issued for. Handshake signatures are checked always.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        (self.provider.signature_verification_algorithms).supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> SslMode {
        Target::parse(url).unwrap().config.get_ssl_mode()
    }

    #[test]
    fn sslmode_is_read_as_libpq_reads_it() {
        assert_eq!(mode("postgres://u@db.example:5432/f"), SslMode::Prefer);
        assert_eq!(mode("postgres://u@127.0.0.1:5432/f"), SslMode::Disable);
        assert_eq!(mode("postgres://u@localhost/f"), SslMode::Disable);
        assert_eq!(mode("postgres://u@[::1]:5432/f"), SslMode::Disable);
        assert_eq!(
            mode("postgres://u@127.0.0.1/f?sslmode=prefer"),
            SslMode::Prefer
        );
        assert_eq!(
            mode("postgres://u@127.0.0.1/f?sslmode=require"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://u@db.example/f?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://u@db.example/f?sslmode=allow"),
            SslMode::Prefer
        );
        // Other settings survive the ones read here.
        let target =
            Target::parse("postgres://u@h/f?application_name=a%20b&sslmode=require").unwrap();
        assert_eq!(target.config.get_application_name(), Some("a b"));
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_bad_sslmode_or_root_file_is_a_clear_error() {
        let err = |url: &str| Target::parse(url).expect_err(url).to_string();
        assert!(err("postgres://u@h/f?sslmode=always").contains("not one of disable"));
        assert!(
            err("postgres://u@h/f?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .contains("sslrootcert=/nonexistent.pem")
        );
    }
}
