//! The certificate/key functions: outputs compared byte for byte with Go's (golden files made with
//! Go 1.26's crypto/x509 and encoding/pem the way ESO's pkg/template/v2 calls them), PKCS#12 encoding
//! by round trip (and through `openssl pkcs12` when it is installed), and errors that carry no input.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::crypto::{self, CryptoError, pem_decode, pem_encode};
use super::{Template, Value};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("testdata/", $name)).as_slice()
    };
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn data() -> Value {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("bundle", fixture!("bundle.pem")),
        ("leafcrt", fixture!("leaf.crt")),
        ("leafkey", fixture!("leaf.key")),
        ("intercrt", fixture!("inter.crt")),
        ("rootcrt", fixture!("root.crt")),
        ("rsajwk", fixture!("rsa.jwk")),
        ("rsaprivjwk", fixture!("rsa-private.jwk")),
        ("ecjwk", fixture!("ec.jwk")),
        ("ecprivjwk", fixture!("ec-private.jwk")),
        ("edjwk", fixture!("ed25519.jwk")),
        ("edprivjwk", fixture!("ed25519-private.jwk")),
    ] {
        m.insert(k.to_owned(), Value::from_bytes(v.to_vec()));
    }
    for (k, v) in [
        ("modern", fixture!("modern.p12")),
        ("nopass", fixture!("nopass.p12")),
        ("legacy", fixture!("legacy.p12")),
    ] {
        m.insert(k.to_owned(), Value::Str(b64(v)));
    }
    Value::Map(m.into())
}

fn render(src: &str) -> Vec<u8> {
    let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
    t.execute(&data()).unwrap_or_else(|e| panic!("exec {src:?}: {e}"))
}

/// The error message, without its position.
fn fails(src: &str) -> String {
    let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
    let e = t.execute(&data()).map(|_| ()).expect_err(src);
    assert!(e.pos.line > 0, "{src}: {e}");
    e.message
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn filter_pem_matches_go() {
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "CERTIFICATE" }}"#),
        fixture!("golden/filter-certificate.pem")
    );
    // Case-insensitive, like Go's strings.EqualFold.
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "private key" }}"#),
        fixture!("golden/filter-private-key.pem")
    );
    // No block of that type but whole blocks only: empty, no error.
    assert_eq!(render(r#"{{ .bundle | filterPEM "EC PRIVATE KEY" }}"#), b"");
    assert_eq!(
        fails(r#"{{ "not pem at all" | filterPEM "CERTIFICATE" }}"#),
        "filterPEM: error filtering pem: found junk"
    );
}

#[test]
fn pem_codec_follows_go() {
    // CRLF, trailing blanks, indented body, headers (Proc-Type first on output), junk around.
    let input = b"junk\r\n-----BEGIN X-----\r\nZ-Key: z\r\nProc-Type: 4,ENCRYPTED\r\nA: 1\r\n\r\n  aGVs\tbG8= \r\n-----END X-----  \r\ntail";
    let (block, rest) = pem_decode(input).expect("a block");
    assert_eq!(block.kind, b"X");
    assert_eq!(&block.bytes[..], b"hello");
    assert_eq!(rest, b"tail");
    let mut out = Vec::new();
    pem_encode(&block, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nA: 1\nZ-Key: z\n\naGVsbG8=\n-----END X-----\n"
    );
    // An empty block, a BEGIN without END before a good block, bad base64 skipped.
    let (b, _) = pem_decode(b"-----BEGIN E-----\n-----END E-----\n").expect("empty block");
    assert!(b.bytes.is_empty());
    let (b, _) = pem_decode(b"-----BEGIN A-----\n-----BEGIN B-----\naGk=\n-----END B-----\n").expect("B");
    assert_eq!(b.kind, b"B");
    assert!(pem_decode(b"-----BEGIN A-----\n!!!!\n-----END A-----\n").is_none());
    assert!(pem_decode(b"-----BEGIN A-----\naGk=\n-----END B-----\n").is_none());
    // 64-column lines.
    let long = crypto::Block {
        kind: b"L".to_vec(),
        headers: BTreeMap::new(),
        bytes: zeroize::Zeroizing::new(vec![0u8; 60]),
    };
    let mut out = Vec::new();
    pem_encode(&long, &mut out);
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines[1].len(), 64);
    assert_eq!(lines[2].len(), 16);
}

#[test]
fn filter_cert_chain_orders_by_key_identifiers() {
    let (leaf, inter, root) = (fixture!("leaf.crt"), fixture!("inter.crt"), fixture!("root.crt"));
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "CERTIFICATE" | filterCertChain "leaf" }}"#),
        leaf
    );
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "CERTIFICATE" | filterCertChain "intermediate" }}"#),
        inter
    );
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "CERTIFICATE" | filterCertChain "root" }}"#),
        root
    );
    assert_eq!(render(r#"{{ .rootcrt | filterCertChain "leaf" }}"#), b"");
    assert_eq!(render(r#"{{ .leafcrt | filterCertChain "intermediate" }}"#), b"");
    assert_eq!(
        render(r#"{{ .bundle | filterPEM "CERTIFICATE" | filterCertChain "other" }}"#),
        b""
    );
    // Every block must be a certificate; two leaves are disjunct.
    assert_eq!(
        fails(r#"{{ .bundle | filterCertChain "leaf" }}"#),
        "filterCertChain: PEM block 3 is not an X.509 certificate"
    );
    assert_eq!(
        fails(r#"{{ printf "%s%s" .leafcrt .rootcrt | filterCertChain "leaf" }}"#),
        "filterCertChain: found multiple leaf or disjunct certificates"
    );
    assert_eq!(
        fails(r#"{{ "" | filterCertChain "leaf" }}"#),
        "filterCertChain: no leaf certificate found"
    );
}

#[test]
fn pkcs12_decoding_matches_go() {
    let chain = cat(&[fixture!("leaf.crt"), fixture!("inter.crt"), fixture!("root.crt")]);
    let key = fixture!("golden/leaf-pkcs8.pem");
    assert_eq!(
        render(r#"{{ .modern | b64dec | pkcs12keyPass "fixture-p12-pw" }}"#),
        key
    );
    assert_eq!(
        render(r#"{{ .modern | b64dec | pkcs12certPass "fixture-p12-pw" }}"#),
        chain
    );
    assert_eq!(render(r#"{{ .nopass | b64dec | pkcs12key }}"#), key);
    assert_eq!(render(r#"{{ .nopass | b64dec | pkcs12cert }}"#), chain);
    // Legacy 3DES/SHA-1 archives (older OpenSSL, Windows) read too.
    assert_eq!(
        render(r#"{{ .legacy | b64dec | pkcs12keyPass "fixture-p12-pw" }}"#),
        fixture!("golden/rsa-pkcs8.pem")
    );
    assert_eq!(
        render(r#"{{ .legacy | b64dec | pkcs12certPass "fixture-p12-pw" }}"#),
        fixture!("rsa.crt")
    );
    assert_eq!(
        fails(r#"{{ .modern | b64dec | pkcs12keyPass "wrong" }}"#),
        "pkcs12keyPass: unable to decode pkcs12: wrong password or damaged data"
    );
    assert_eq!(
        fails(r#"{{ .leafcrt | pkcs12cert }}"#),
        "pkcs12cert: unable to decode pkcs12: not a PKCS#12 archive (DER)"
    );
}

/// Decodes with `openssl pkcs12` when it is installed; `None` when it is not.
fn openssl_read(p12: &[u8], pass: &str, what: &[&str]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["pkcs12", "-passin", &format!("pass:{pass}"), "-noenc"])
        .args(what)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(p12).ok()?;
    let out = child.wait_with_output().ok()?;
    assert!(out.status.success(), "openssl pkcs12 refused keyferry's archive");
    Some(out.stdout)
}

#[test]
fn pkcs12_encoding_round_trips() {
    let chain = cat(&[fixture!("leaf.crt"), fixture!("inter.crt"), fixture!("root.crt")]);
    let key = fixture!("golden/leaf-pkcs8.pem");
    let p12 =
        render(r#"{{ fullPemToPkcs12Pass (printf "%s%s%s" .leafcrt .intercrt .rootcrt) .leafkey "pw" }}"#);
    let der = base64::engine::general_purpose::STANDARD.decode(&p12).unwrap();
    assert_eq!(crypto::pkcs12_key("pw", &der).unwrap().as_slice(), key);
    assert_eq!(crypto::pkcs12_cert("pw", &der).unwrap(), chain);
    // Randomized (salts, IVs): two encodings differ.
    assert_ne!(
        p12,
        render(r#"{{ fullPemToPkcs12Pass (printf "%s%s%s" .leafcrt .intercrt .rootcrt) .leafkey "pw" }}"#)
    );
    let single = render(r#"{{ pemToPkcs12 .leafcrt .leafkey | b64dec | pkcs12cert }}"#);
    assert_eq!(single, fixture!("leaf.crt"));
    assert_eq!(
        render(r#"{{ pemToPkcs12Pass .leafcrt .leafkey "x" | b64dec | pkcs12keyPass "x" }}"#),
        key
    );
    assert_eq!(
        render(r#"{{ fullPemToPkcs12 .leafcrt .leafkey | b64dec | pkcs12key }}"#),
        key
    );
    // An RSA key given as PKCS#1 ("RSA PRIVATE KEY") comes back as PKCS#8, as Go re-encodes it.
    let rsa_pkcs8 = fixture!("golden/rsa-pkcs8.pem");
    let (block, _) = pem_decode(rsa_pkcs8).unwrap();
    let pkcs1 = pkcs8_inner(&block.bytes);
    let mut pkcs1_pem = Vec::new();
    pem_encode(
        &crypto::Block {
            kind: b"RSA PRIVATE KEY".to_vec(),
            headers: BTreeMap::new(),
            bytes: zeroize::Zeroizing::new(pkcs1),
        },
        &mut pkcs1_pem,
    );
    let p12 = crypto::pem_to_pkcs12(fixture!("rsa.crt"), &pkcs1_pem, "", false).unwrap();
    let der = base64::engine::general_purpose::STANDARD.decode(&p12).unwrap();
    assert_eq!(crypto::pkcs12_key("", &der).unwrap().as_slice(), rsa_pkcs8);

    // OpenSSL reads keyferry's archives, with and without a password.
    let p12 =
        render(r#"{{ fullPemToPkcs12Pass (printf "%s%s%s" .leafcrt .intercrt .rootcrt) .leafkey "pw" }}"#);
    let der = base64::engine::general_purpose::STANDARD.decode(&p12).unwrap();
    if let Some(certs) = openssl_read(&der, "pw", &["-nokeys"]) {
        let certs = crypto::filter_pem("CERTIFICATE", &certs).unwrap();
        assert_eq!(certs.as_slice(), chain.as_slice());
        let keys = openssl_read(&der, "pw", &["-nocerts"]).unwrap();
        assert_eq!(crypto::filter_pem("PRIVATE KEY", &keys).unwrap().as_slice(), key);
        let nopass = render(r#"{{ pemToPkcs12 .leafcrt .leafkey }}"#);
        let der = base64::engine::general_purpose::STANDARD.decode(&nopass).unwrap();
        let keys = openssl_read(&der, "", &["-nocerts"]).unwrap();
        assert_eq!(crypto::filter_pem("PRIVATE KEY", &keys).unwrap().as_slice(), key);
    }
}

/// The privateKey OCTET STRING of a PKCS#8 structure (test helper; fixed-shape input).
fn pkcs8_inner(der: &[u8]) -> Vec<u8> {
    // SEQUENCE { INTEGER 0, SEQUENCE {..}, OCTET STRING {..} } with long-form lengths.
    fn tlv(d: &[u8]) -> (usize, usize) {
        let first = d[1];
        if first < 0x80 {
            (2, usize::from(first))
        } else {
            let n = usize::from(first & 0x7f);
            (
                2 + n,
                d[2..2 + n].iter().fold(0, |a, b| (a << 8) | usize::from(*b)),
            )
        }
    }
    let (h, _) = tlv(der);
    let mut p = h;
    for _ in 0..2 {
        let (h, l) = tlv(&der[p..]);
        p += h + l;
    }
    let (h, l) = tlv(&der[p..]);
    der[p + h..p + h + l].to_vec()
}

#[test]
fn pem_to_pkcs12_errors_name_the_argument() {
    assert_eq!(
        fails(r#"{{ pemToPkcs12 "x" .leafkey }}"#),
        "pemToPkcs12: no PEM block in the certificate argument"
    );
    assert_eq!(
        fails(r#"{{ pemToPkcs12 .leafcrt "x" }}"#),
        "pemToPkcs12: no PEM block in the key argument"
    );
    assert_eq!(
        fails(r#"{{ pemToPkcs12 .leafcrt .leafcrt }}"#),
        "pemToPkcs12: unable to parse private key type"
    );
    assert_eq!(
        fails(r#"{{ pemToPkcs12 .leafkey .leafkey }}"#),
        "pemToPkcs12: PEM block 1 is not an X.509 certificate"
    );
    // As ESO: anything after the last block of fullPemToPkcs12's certificate must be a block.
    assert_eq!(
        fails(r#"{{ fullPemToPkcs12 (printf "%s\n" .leafcrt) .leafkey }}"#),
        "fullPemToPkcs12: data after PEM block 1 of the certificate argument is not a PEM block"
    );
}

#[test]
fn jwk_to_pem_matches_go() {
    for (name, public, private) in [
        ("rsa", "rsajwk", "rsaprivjwk"),
        ("leaf", "ecjwk", "ecprivjwk"),
        ("ed25519", "edjwk", "edprivjwk"),
    ] {
        let want_pub = match name {
            "rsa" => fixture!("golden/rsa-public.pem"),
            "leaf" => fixture!("golden/leaf-public.pem"),
            _ => fixture!("golden/ed25519-public.pem"),
        };
        let want_priv = match name {
            "rsa" => fixture!("golden/rsa-pkcs8.pem"),
            "leaf" => fixture!("golden/leaf-pkcs8.pem"),
            _ => fixture!("golden/ed25519-pkcs8.pem"),
        };
        assert_eq!(
            render(&format!("{{{{ .{public} | jwkPublicKeyPem }}}}")),
            want_pub,
            "{name}"
        );
        assert_eq!(
            render(&format!("{{{{ .{private} | jwkPrivateKeyPem }}}}")),
            want_priv,
            "{name}"
        );
        // As ESO (Go's x509): a private JWK has no public PEM, a public JWK no private one.
        assert!(fails(&format!("{{{{ .{private} | jwkPublicKeyPem }}}}")).contains("jwk: a private key"));
        assert!(fails(&format!("{{{{ .{public} | jwkPrivateKeyPem }}}}")).contains("jwk: a public key"));
    }
    assert_eq!(
        fails(r#"{{ `{"kty":"oct","k":"AAAA"}` | jwkPublicKeyPem }}"#),
        "jwkPublicKeyPem: jwk: symmetric keys have no PEM form"
    );
    assert_eq!(
        fails(r#"{{ `{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}` | jwkPublicKeyPem }}"#),
        "jwkPublicKeyPem: jwk: invalid elliptic curve public key"
    );
    assert_eq!(
        fails(r#"{{ `{"kty":"RSA","e":"AQAB"}` | jwkPublicKeyPem }}"#),
        "jwkPublicKeyPem: jwk: field \"n\": missing"
    );
}

#[test]
fn errors_carry_no_input() {
    const CANARY: &str = "CANARY-7f3a9c";
    let cases = [
        format!(r#"{{{{ "{CANARY}" | filterPEM "CERTIFICATE" }}}}"#),
        format!(
            r#"{{{{ "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n" | filterCertChain "leaf" }}}}"#,
            b64(CANARY.as_bytes())
        ),
        format!(r#"{{{{ "{CANARY}" | pkcs12keyPass "{CANARY}" }}}}"#),
        format!(r#"{{{{ .modern | b64dec | pkcs12certPass "{CANARY}" }}}}"#),
        format!(r#"{{{{ pemToPkcs12Pass .leafcrt "{CANARY}" "{CANARY}" }}}}"#),
        format!(r#"{{{{ `{{"kty":"{CANARY}"}}` | jwkPublicKeyPem }}}}"#),
        format!(r#"{{{{ `{{"kty":"EC","crv":"{CANARY}"}}` | jwkPrivateKeyPem }}}}"#),
        format!(r#"{{{{ `{{"kty":"RSA","n":"{CANARY}","e":"AQAB"}}` | jwkPublicKeyPem }}}}"#),
    ];
    for src in &cases {
        let msg = fails(src);
        assert!(!msg.contains(CANARY), "{src}: {msg}");
        assert!(!msg.contains(&b64(CANARY.as_bytes())[..12]), "{src}: {msg}");
    }
    // Debug of a block shows sizes, not bytes.
    let (block, _) = pem_decode(fixture!("leaf.key")).unwrap();
    let shown = format!("{block:?}");
    assert!(!shown.contains("MIG") && shown.contains("PRIVATE KEY"), "{shown}");
    let _: Option<CryptoError> = None;
}
