//! Device certificates as the registry accepts them: a PEM certificate whose
//! subject names its tenant.
//!
//! A certificate is not a secret: a device shows it to every server it
//! connects to. Registering one by fingerprint alone would let any tenant
//! claim a certificate issued for another tenant's device (and take its
//! connections), or probe which certificates exist elsewhere. So the
//! registry takes the certificate itself, and registers it only in the
//! tenant its subject's organization (`O=`) names. The operator's client CA,
//! which the MQTT TLS listener verifies every client certificate against,
//! vouches for that name: a tenant cannot make a certificate with another
//! tenant's name that the listener would accept.
//!
//! Pure parsing, no I/O; [`crate::Registry::register_certificate`] uses it.

use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, pem};

use crate::error::RegistryError;
use crate::store::TokenHash;

/// The largest PEM text accepted: a device certificate is 1 to 2 KiB.
pub const MAX_CERTIFICATE_PEM_BYTES: usize = 16 * 1024;

/// id-at-organizationName (RFC 4519).
const ORGANIZATION_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// What the registry keeps of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCertificate {
    /// SHA-256 of the DER certificate: what the TLS listener computes.
    pub fingerprint: TokenHash,
    /// The organization names (`O=`) of its subject.
    pub organizations: Vec<String>,
    /// Its validity window, in nanoseconds since the epoch.
    pub not_before_ns: i64,
    /// See `not_before_ns`.
    pub not_after_ns: i64,
}

/// Parses the first `CERTIFICATE` block of PEM text.
pub fn parse_certificate_pem(text: &str) -> Result<ParsedCertificate, RegistryError> {
    let invalid = |why: &str| RegistryError::invalid("certificate_pem", why);
    if text.len() > MAX_CERTIFICATE_PEM_BYTES {
        return Err(invalid(&format!(
            "longer than {MAX_CERTIFICATE_PEM_BYTES} bytes: give only the device certificate"
        )));
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text
        .find(BEGIN)
        .ok_or_else(|| invalid("no PEM CERTIFICATE block (-----BEGIN CERTIFICATE-----)"))?;
    let end = text[start..]
        .find(END)
        .map(|at| start + at + END.len())
        .ok_or_else(|| invalid("the PEM CERTIFICATE block has no END line"))?;
    let (_, der) = pem::decode_vec(&text.as_bytes()[start..end])
        .map_err(|e| invalid(&format!("not valid PEM: {e}")))?;
    let cert = Certificate::from_der(&der)
        .map_err(|e| invalid(&format!("not an X.509 certificate: {e}")))?;
    let fingerprint: TokenHash = Sha256::digest(&der).into();
    let mut organizations = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != ORGANIZATION_NAME {
                continue;
            }
            let name = Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    PrintableStringRef::try_from(&atv.value).map(|s| s.as_str().to_owned())
                })
                .map_err(|_| {
                    invalid("the subject organization (O=) is not a UTF-8 or printable string")
                })?;
            organizations.push(name);
        }
    }
    let validity = &cert.tbs_certificate.validity;
    let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    Ok(ParsedCertificate {
        fingerprint,
        organizations,
        not_before_ns: ns(validity.not_before.to_unix_duration()),
        not_after_ns: ns(validity.not_after.to_unix_duration()),
    })
}

impl ParsedCertificate {
    /// Checks that the certificate is issued for `tenant` (its subject has
    /// `O=<tenant>` and no other organization) and has not expired at `now`.
    pub fn check_for(&self, tenant: &str, now_ns: i64) -> Result<(), RegistryError> {
        match self.organizations.as_slice() {
            [one] if one == tenant => {}
            [] => {
                return Err(RegistryError::invalid(
                    "certificate_pem",
                    format!(
                        "the certificate's subject names no tenant: issue it with the tenant as \
                         its organization, e.g. -subj \"/O={tenant}/CN=<device>\""
                    ),
                ));
            }
            _ => {
                return Err(RegistryError::invalid(
                    "certificate_pem",
                    format!(
                        "the certificate is issued for another tenant: its subject organization \
                         (O=) must be exactly {tenant:?}"
                    ),
                ));
            }
        }
        if self.not_after_ns <= now_ns {
            return Err(RegistryError::invalid(
                "certificate_pem",
                "the certificate has expired (notAfter is in the past)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_with(organizations: &[&str]) -> (String, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for o in organizations {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "d1");
        let cert = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der_and_organization_is_read() {
        let (pem, der) = pem_with(&["acme"]);
        let parsed = parse_certificate_pem(&pem).unwrap();
        assert_eq!(parsed.fingerprint, <[u8; 32]>::from(Sha256::digest(&der)));
        assert_eq!(parsed.organizations, vec!["acme".to_owned()]);
        parsed.check_for("acme", 0).unwrap();
        let other = parsed.check_for("globex", 0).unwrap_err().to_string();
        assert!(other.contains("invalid certificate_pem"), "{other}");
    }

    #[test]
    fn a_chain_registers_its_first_certificate() {
        let (first, der) = pem_with(&["acme"]);
        let (second, _) = pem_with(&["globex"]);
        let parsed = parse_certificate_pem(&format!("junk\n{first}{second}")).unwrap();
        assert_eq!(parsed.fingerprint, <[u8; 32]>::from(Sha256::digest(&der)));
    }

    #[test]
    fn no_organization_or_two_are_refused() {
        let none = parse_certificate_pem(&pem_with(&[]).0).unwrap();
        assert!(none.check_for("acme", 0).is_err());
        let two = parse_certificate_pem(&pem_with(&["acme", "globex"]).0).unwrap();
        assert!(two.check_for("acme", 0).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error_not_a_panic() {
        for text in [
            "",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let e = parse_certificate_pem(text).unwrap_err();
            assert!(matches!(e, RegistryError::Invalid(_)), "{text:?}: {e}");
        }
        let huge = "A".repeat(MAX_CERTIFICATE_PEM_BYTES + 1);
        assert!(parse_certificate_pem(&huge).is_err());
    }
}
