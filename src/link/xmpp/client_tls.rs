//! TLS for the client link: rustls with aws-lc-rs, the provider the rest of the build
//! uses (no second TLS stack, no OpenSSL).
//!
//! Which certificates are trusted: by default the system's, through the same platform
//! verifier the AMQP link uses. With `ca_file`, those certificates instead, verified as
//! trust anchors the usual way; and a server certificate that is itself listed in the
//! file is accepted as it is, so that a server with a self-signed certificate (common
//! on private servers, and the test servers) can be trusted by pinning exactly that
//! certificate, without turning verification off.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The client configuration; `ca_pem` replaces the system's certificates.
pub(super) fn config(ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match ca_pem {
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| e.to_string())?,
        ),
        Some(pem) => Arc::new(CaFile::new(pem, Arc::clone(&provider))?),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts the certificates of a `ca_file`: as trust anchors, and each one as a server
/// certificate of its own.
#[derive(Debug)]
struct CaFile {
    listed: Vec<CertificateDer<'static>>,
    anchors: Arc<WebPkiServerVerifier>,
}

impl CaFile {
    fn new(pem: &str, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let listed = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad certificate: {e}"))?;
        if listed.is_empty() {
            return Err("no certificate found".into());
        }
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(listed.iter().cloned());
        if added == 0 {
            return Err("no certificate usable as a trust anchor".into());
        }
        let anchors = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { listed, anchors })
    }
}

impl ServerCertVerifier for CaFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Exactly a certificate the operator listed: trusted as it is (the handshake
        // signature, checked below, still proves the server holds its key).
        if self
            .listed
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.anchors
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.anchors.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.anchors.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.anchors.supported_verify_schemes()
    }
}
