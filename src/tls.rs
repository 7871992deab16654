//! The one TLS client configuration of a process, shared by its HTTP clients (the WeChat client
//! and the control-plane client of a worker). Each reqwest client would otherwise parse the
//! system's root certificates into a store of its own (~150 KiB of heap each), and a machine
//! runs hundreds of workers.

use std::sync::{Arc, OnceLock};

/// The shared configuration, built on first use: the system's root certificates (what
/// reqwest's `rustls-tls-native-roots` loads), every TLS version rustls offers, ALPN `h2` then
/// `http/1.1` (what reqwest offers with HTTP/2 enabled).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(build())).clone()
}

fn build() -> rustls::ClientConfig {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    // Native stores often hold a few certificates rustls cannot parse; skipping them is what
    // reqwest does too.
    let (valid, invalid) = roots.add_parsable_certificates(loaded.certs);
    if valid == 0 {
        tracing::warn!(
            invalid,
            errors = loaded.errors.len(),
            "no usable root certificates found; https connections will fail"
        );
    } else {
        tracing::debug!(valid, invalid, "root certificates loaded");
    }
    // The provider an application installed, else ring (the one this build links).
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("ring supports every rustls protocol version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_and_shared() {
        let a = client_config();
        let b = client_config();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // reqwest accepts it as a preconfigured rustls config.
        reqwest::Client::builder()
            .use_preconfigured_tls((*a).clone())
            .build()
            .expect("reqwest takes the shared config");
    }
}
