//! ESO's certificate and key template functions (ESO v0.16.2 `pkg/template/v2`: `pem.go`,
//! `pem_chain.go`, `pkcs12.go`, `jwk.go`), byte for byte where ESO's output is deterministic.
//!
//! Go's encodings are rebuilt here rather than taken from RustCrypto's encoders, because they differ
//! where it shows in a Secret: Go writes Ed25519 PKCS#8 as version 1 without the public key, an EC
//! `ECPrivateKey` inside PKCS#8 without the curve parameters, and re-encodes every private key it
//! parses. PEM decoding ports Go 1.26's `encoding/pem.Decode` (the toolchain ESO v0.16.2 is built with
//! here) so that junk, headers and odd line endings are kept or skipped exactly as ESO does.
//!
//! Errors never carry input bytes: they name the function's argument, a block number or a JWK field
//! name keyferry knows, never a value read from the input.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha1::Digest as _;
use zeroize::Zeroizing;

use crate::decode::b64_encode;

/// A failure of a certificate/key function. Carries no input bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CryptoError {
    #[error("error filtering pem: found junk")]
    Junk,
    #[error("no PEM block in the {arg} argument")]
    NoPem { arg: &'static str },
    #[error("data after PEM block {block} of the {arg} argument is not a PEM block")]
    TrailingData { arg: &'static str, block: usize },
    #[error("PEM block {block} is not an X.509 certificate")]
    BadCertificate { block: usize },
    #[error("no leaf certificate found")]
    NoLeaf,
    #[error("found multiple leaf or disjunct certificates")]
    Disjunct,
    #[error("constructing chain resulted in cycle")]
    Cycle,
    #[error("unable to decode pkcs12: {reason}")]
    Pkcs12 { reason: &'static str },
    #[error("unable to encode pkcs12: {reason}")]
    Pkcs12Encode { reason: &'static str },
    #[error("unable to parse private key type")]
    ParsePrivateKey,
    #[error("private key: {reason}")]
    PrivateKey { reason: &'static str },
    #[error("jwk: {reason}")]
    Jwk { reason: &'static str },
    #[error("jwk: field {field:?}: {reason}")]
    JwkField {
        field: &'static str,
        reason: &'static str,
    },
}

type Result<T> = std::result::Result<T, CryptoError>;

// ---------------------------------------------------------------------------------------------
// PEM, as Go's encoding/pem.

/// A PEM block. `Debug` shows the type and sizes only: the bytes may be a private key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) kind: Vec<u8>,
    pub(crate) headers: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("kind", &String::from_utf8_lossy(&self.kind))
            .field("headers", &self.headers.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const PEM_EOL: &[u8] = b"-----";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn trim_right_blank(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Go's `bytes.TrimSpace` (ASCII whitespace; PEM headers are ASCII in practice).
fn trim_space(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Go's `getLine`: the first `\n`- or `\r\n`-terminated line without trailing blanks, the rest, and
/// how many bytes were consumed.
fn get_line(data: &[u8]) -> (&[u8], &[u8], usize) {
    let (end, next) = match data.iter().position(|&b| b == b'\n') {
        None => (data.len(), data.len()),
        Some(i) if i > 0 && data[i - 1] == b'\r' => (i - 1, i + 1),
        Some(i) => (i, i + 1),
    };
    (trim_right_blank(&data[..end]), &data[next..], next)
}

/// Go's `base64.StdEncoding.Decode`: newlines are skipped, padding is required, trailing bits are not
/// checked.
fn go_std_b64_decode(data: &[u8]) -> Option<Vec<u8>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let clean: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    ENGINE.decode(clean).ok()
}

/// Go 1.26's `pem.Decode`: the next block and the rest after it, or `None` when no block is left.
pub(crate) fn pem_decode(data: &[u8]) -> Option<(Block, &[u8])> {
    let mut rest = data;
    // Offsets are relative to `rest` and may go negative as Go's do; every slice is checked.
    let mut end_trailer_index: isize = 0;
    loop {
        let skip = usize::try_from(end_trailer_index).ok()?;
        rest = rest.get(skip..)?;
        let end_found = find(rest, PEM_END)?;
        end_trailer_index = isize::try_from(end_found + PEM_END.len()).ok()?;
        let Some(begin) = rfind(&rest[..end_found], &PEM_START[1..]) else {
            continue;
        };
        if begin > 0 && rest[begin - 1] != b'\n' {
            continue;
        }
        let advance = begin + PEM_START.len() - 1;
        rest = &rest[advance..];
        let mut end_index = isize::try_from(end_found).ok()? - isize::try_from(advance).ok()?;
        end_trailer_index -= isize::try_from(advance).ok()?;

        let (type_line, after, consumed) = get_line(rest);
        rest = after;
        end_index -= isize::try_from(consumed).ok()?;
        end_trailer_index -= isize::try_from(consumed).ok()?;
        let Some(kind) = type_line.strip_suffix(PEM_EOL) else {
            continue;
        };

        let mut headers = BTreeMap::new();
        loop {
            if rest.is_empty() {
                return None;
            }
            let (line, next, consumed) = get_line(rest);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            headers.insert(
                trim_space(&line[..colon]).to_vec(),
                trim_space(&line[colon + 1..]).to_vec(),
            );
            rest = next;
            end_index -= isize::try_from(consumed).ok()?;
            end_trailer_index -= isize::try_from(consumed).ok()?;
        }
        if !headers.is_empty() && end_index < 0 {
            continue;
        }

        let Some(end_trailer) = usize::try_from(end_trailer_index)
            .ok()
            .and_then(|i| rest.get(i..))
        else {
            continue;
        };
        let trailer_len = kind.len() + PEM_EOL.len();
        if end_trailer.len() < trailer_len {
            continue;
        }
        let (end_trailer, rest_of_end_line) = end_trailer.split_at(trailer_len);
        if !end_trailer.starts_with(kind) || !end_trailer.ends_with(PEM_EOL) {
            continue;
        }
        if !get_line(rest_of_end_line).0.is_empty() {
            continue;
        }

        let mut bytes = Vec::new();
        if end_index > 0 {
            let body: Vec<u8> = rest[..usize::try_from(end_index).ok()?]
                .iter()
                .copied()
                .filter(|b| *b != b' ' && *b != b'\t')
                .collect();
            match go_std_b64_decode(&body) {
                Some(b) => bytes = b,
                None => continue,
            }
        }
        // Go's `-1`: the END line may have matched without its leading newline (empty block).
        let from = usize::try_from(end_index + isize::try_from(PEM_END.len()).ok()? - 1).ok()?;
        let (_, after, _) = get_line(rest.get(from..)?);
        return Some((
            Block {
                kind: kind.to_vec(),
                headers,
                bytes: Zeroizing::new(bytes),
            },
            after,
        ));
    }
}

/// Go's `pem.Encode`: headers with `Proc-Type` first then sorted, base64 in 64-column lines.
pub(crate) fn pem_encode(block: &Block, out: &mut Vec<u8>) {
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(&block.kind);
    out.extend_from_slice(b"-----\n");
    if !block.headers.is_empty() {
        const PROC_TYPE: &[u8] = b"Proc-Type";
        let mut write = |k: &[u8], v: &[u8]| {
            out.extend_from_slice(k);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.push(b'\n');
        };
        if let Some(v) = block.headers.get(PROC_TYPE) {
            write(PROC_TYPE, v);
        }
        for (k, v) in block.headers.iter().filter(|(k, _)| k.as_slice() != PROC_TYPE) {
            write(k, v);
        }
        out.push(b'\n');
    }
    let b64 = Zeroizing::new(b64_encode(&block.bytes));
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(&block.kind);
    out.extend_from_slice(b"-----\n");
}

fn pem_of(kind: &str, der: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    pem_encode(
        &Block {
            kind: kind.as_bytes().to_vec(),
            headers: BTreeMap::new(),
            bytes: Zeroizing::new(der.to_vec()),
        },
        &mut out,
    );
    out
}

/// Every block in `input`, in order, and whatever could not be decoded after the last one.
fn pem_blocks(input: &[u8]) -> (Vec<Block>, &[u8]) {
    let mut blocks = Vec::new();
    let mut data = input;
    while let Some((block, rest)) = pem_decode(data) {
        blocks.push(block);
        data = rest;
    }
    (blocks, data)
}

/// `filterPEM pemType input`: the blocks of that type (case-insensitive), re-encoded.
pub(crate) fn filter_pem(pem_type: &str, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (blocks, rest) = pem_blocks(input);
    let mut out = Zeroizing::new(Vec::new());
    let wanted = pem_type.to_lowercase();
    for b in blocks
        .iter()
        .filter(|b| String::from_utf8_lossy(&b.kind).to_lowercase() == wanted)
    {
        pem_encode(b, &mut out);
    }
    if out.is_empty() && !rest.is_empty() {
        return Err(CryptoError::Junk);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Certificates and chains (pem_chain.go).

/// A parsed certificate: its DER and the key identifiers chain ordering compares. `None` is Go's nil.
struct Cert {
    der: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
}

impl Cert {
    fn parse(der: &[u8], block: usize) -> Result<Cert> {
        use x509_parser::extensions::ParsedExtension;
        let bad = || CryptoError::BadCertificate { block };
        let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| bad())?;
        if !rest.is_empty() {
            return Err(bad());
        }
        let (mut ski, mut aki) = (None, None);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        Ok(Cert {
            der: der.to_vec(),
            subject_key_id: ski,
            authority_key_id: aki,
        })
    }

    /// Go's `bytes.Equal(a.AuthorityKeyId, b.SubjectKeyId)`: nil equals empty.
    fn signed_by(&self, issuer: &Cert) -> bool {
        self.authority_key_id.as_deref().unwrap_or_default()
            == issuer.subject_key_id.as_deref().unwrap_or_default()
    }

    fn is_root(&self) -> bool {
        self.authority_key_id.is_none() || self.signed_by(self)
    }
}

/// Every PEM block of `input` parsed as a certificate, whatever its type (as ESO's `pemToNodes`).
fn pem_certs(input: &[u8]) -> Result<Vec<Cert>> {
    pem_blocks(input)
        .0
        .iter()
        .enumerate()
        .map(|(i, b)| Cert::parse(&b.bytes, i + 1))
        .collect()
}

/// ESO's `fetchX509CertChains`: leaf first, each followed by its issuer, by key identifiers.
fn order_chain(mut certs: Vec<Cert>) -> Result<Vec<Cert>> {
    let n = certs.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut is_parent = vec![false; n];
    for i in 0..n {
        for j in 0..n {
            if i != j && certs[i].signed_by(&certs[j]) {
                is_parent[j] = true;
                parent[i] = Some(j);
                break;
            }
        }
    }
    let mut leaf = None;
    for (i, p) in is_parent.iter().enumerate() {
        if !p {
            if leaf.is_some() {
                return Err(CryptoError::Disjunct);
            }
            leaf = Some(i);
        }
    }
    let mut cur = leaf.ok_or(CryptoError::NoLeaf)?;
    let mut order = vec![cur];
    while let Some(p) = parent[cur] {
        if order.len() >= n {
            return Err(CryptoError::Cycle);
        }
        order.push(p);
        cur = p;
    }
    let mut slots: Vec<Option<Cert>> = certs.drain(..).map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

fn certs_pem(certs: &[Cert]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in certs {
        out.extend_from_slice(&pem_of("CERTIFICATE", &c.der));
    }
    out
}

/// `filterCertChain certType input`: the `leaf`, `intermediate` or `root` certificates of a chain.
pub(crate) fn filter_cert_chain(cert_type: &str, input: &[u8]) -> Result<Vec<u8>> {
    let ordered = order_chain(pem_certs(input)?)?;
    Ok(match cert_type {
        "leaf" => {
            let c = &ordered[0];
            if c.authority_key_id.is_some() && !c.signed_by(c) {
                certs_pem(&ordered[..1])
            } else {
                Vec::new()
            }
        }
        "intermediate" => {
            let mid: Vec<Cert> = ordered.into_iter().skip(1).take_while(|c| !c.is_root()).collect();
            certs_pem(&mid)
        }
        "root" => match ordered.last() {
            Some(c) if c.is_root() => certs_pem(std::slice::from_ref(c)),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Minimal DER: reading (strict definite lengths, low tag numbers) and writing.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

/// One TLV: tag, content, and what follows it.
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value's content.
fn der_items(mut content: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut items = Vec::new();
    while !content.is_empty() {
        let (tag, value, rest) = der_read(content)?;
        items.push((tag, value));
        content = rest;
    }
    Some(items)
}

/// A whole input that is exactly one TLV with `tag`.
fn der_expect(input: &[u8], tag: u8) -> Option<&[u8]> {
    match der_read(input)? {
        (t, content, []) if t == tag => Some(content),
        _ => None,
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn der_seq(parts: &[&[u8]]) -> Vec<u8> {
    der_tlv(SEQUENCE, &parts.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes, minimally encoded.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = &magnitude[magnitude.iter().take_while(|b| **b == 0).count()..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(INTEGER, &content)
}

fn der_small_int(v: u8) -> Vec<u8> {
    der_tlv(INTEGER, &[v])
}

// OID contents (without tag and length).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_X25519: &[u8] = &[0x2b, 0x65, 0x6e];

// ---------------------------------------------------------------------------------------------
// Private and public keys, in Go's encodings.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_oid(oid: &[u8]) -> Option<Curve> {
        match oid {
            OID_P256 => Some(Curve::P256),
            OID_P384 => Some(Curve::P384),
            OID_P521 => Some(Curve::P521),
            _ => None,
        }
    }

    fn from_jwk(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::P521 => OID_P521,
        }
    }

    fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The uncompressed public point of scalar `d` (big-endian, at most `size` bytes).
    fn public_of(self, d: &[u8]) -> Option<Vec<u8>> {
        use p256::elliptic_curve::sec1::ToSec1Point;
        macro_rules! derive {
            ($c:ident) => {
                $c::SecretKey::from_slice(d)
                    .ok()
                    .map(|k| k.public_key().to_sec1_point(false).as_bytes().to_vec())
            };
        }
        match self {
            Curve::P256 => derive!(p256),
            Curve::P384 => derive!(p384),
            Curve::P521 => derive!(p521),
        }
    }

    /// Whether `point` (SEC 1 uncompressed) is a valid point on the curve.
    fn valid_point(self, point: &[u8]) -> bool {
        match self {
            Curve::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
            Curve::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
            Curve::P521 => p521::PublicKey::from_sec1_bytes(point).is_ok(),
        }
    }
}

/// A private key as Go holds it after parsing. Not printable.
enum PrivateKey {
    /// The PKCS#1 `RSAPrivateKey` DER, re-encoded.
    Rsa(Zeroizing<Vec<u8>>),
    /// Scalar (left-padded to the curve size) and its uncompressed public point.
    Ec {
        curve: Curve,
        d: Zeroizing<Vec<u8>>,
        public: Vec<u8>,
    },
    Ed25519(Zeroizing<Vec<u8>>),
    X25519(Zeroizing<Vec<u8>>),
}

fn bad_key(reason: &'static str) -> CryptoError {
    CryptoError::PrivateKey { reason }
}

/// Go's `ParsePKCS1PrivateKey` (two-prime keys; the CRT values are kept as given).
fn parse_pkcs1(der: &[u8]) -> Result<PrivateKey> {
    let bad = || bad_key("not a PKCS#1 RSA private key");
    let items = der_expect(der, SEQUENCE).and_then(der_items).ok_or_else(bad)?;
    if items.len() != 9 || items.iter().any(|(t, _)| *t != INTEGER) || items[0].1 != [0] {
        return Err(bad());
    }
    if items[1..]
        .iter()
        .any(|(_, v)| v.first().is_none_or(|b| b & 0x80 != 0))
    {
        return Err(bad());
    }
    let parts: Vec<Vec<u8>> = items.iter().map(|(_, v)| der_uint(v)).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(PrivateKey::Rsa(Zeroizing::new(der_seq(&refs))))
}

/// Go's `parseECPrivateKey`: the curve from PKCS#8 (`named`) or from the key's own parameters; the
/// public point is derived from the scalar, as Go does, whatever the key carries.
fn parse_sec1(der: &[u8], named: Option<Curve>) -> Result<PrivateKey> {
    let bad = || bad_key("not an EC private key");
    let items = der_expect(der, SEQUENCE).and_then(der_items).ok_or_else(bad)?;
    let [(INTEGER, [1]), (OCTET_STRING, d), tail @ ..] = items.as_slice() else {
        return Err(bad());
    };
    let own = tail
        .iter()
        .find(|(t, _)| *t == 0xa0)
        .map(|(_, v)| {
            der_expect(v, OID)
                .and_then(Curve::from_oid)
                .ok_or_else(|| bad_key("unsupported elliptic curve"))
        })
        .transpose()?;
    let curve = named.or(own).ok_or_else(|| bad_key("no elliptic curve named"))?;
    // Go accepts (and drops) leading zero padding beyond the curve size.
    let mut d: &[u8] = d;
    while d.len() > curve.size() && d[0] == 0 {
        d = &d[1..];
    }
    if d.len() > curve.size() {
        return Err(bad_key("invalid elliptic curve private key value"));
    }
    let mut padded = Zeroizing::new(vec![0u8; curve.size()]);
    padded[curve.size() - d.len()..].copy_from_slice(d);
    let public = curve
        .public_of(&padded)
        .ok_or_else(|| bad_key("invalid elliptic curve private key value"))?;
    Ok(PrivateKey::Ec {
        curve,
        d: padded,
        public,
    })
}

/// Go's `ParsePKCS8PrivateKey`: RSA, ECDSA (P-256/384/521), Ed25519, X25519.
fn parse_pkcs8(der: &[u8]) -> Result<PrivateKey> {
    let bad = || bad_key("not a PKCS#8 private key");
    let items = der_expect(der, SEQUENCE).and_then(der_items).ok_or_else(bad)?;
    let [(INTEGER, _), (SEQUENCE, algo), (OCTET_STRING, key), ..] = items.as_slice() else {
        return Err(bad());
    };
    let algo = der_items(algo).ok_or_else(bad)?;
    let Some((OID, oid)) = algo.first().copied() else {
        return Err(bad());
    };
    match oid {
        OID_RSA => parse_pkcs1(key),
        OID_EC => {
            let curve = match algo.get(1) {
                Some((OID, c)) => Curve::from_oid(c).ok_or_else(|| bad_key("unsupported elliptic curve"))?,
                _ => return Err(bad_key("no elliptic curve named")),
            };
            parse_sec1(key, Some(curve))
        }
        OID_ED25519 | OID_X25519 => {
            let seed = der_expect(key, OCTET_STRING)
                .filter(|s| s.len() == 32)
                .ok_or_else(|| bad_key("invalid Ed25519/X25519 private key"))?;
            let seed = Zeroizing::new(seed.to_vec());
            Ok(if oid == OID_ED25519 {
                PrivateKey::Ed25519(seed)
            } else {
                PrivateKey::X25519(seed)
            })
        }
        _ => Err(bad_key("unsupported private key algorithm")),
    }
}

/// ESO's `parsePrivateKey`: PKCS#1, then PKCS#8, then SEC 1.
fn parse_any_private_key(der: &[u8]) -> Result<PrivateKey> {
    parse_pkcs1(der)
        .or_else(|_| parse_pkcs8(der))
        .or_else(|_| parse_sec1(der, None))
        .map_err(|_| CryptoError::ParsePrivateKey)
}

impl PrivateKey {
    /// Go's `MarshalPKCS8PrivateKey`.
    fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        let version = der_small_int(0);
        let (algo, key) = match self {
            PrivateKey::Rsa(pkcs1) => (
                der_seq(&[&der_tlv(OID, OID_RSA), &der_tlv(NULL, &[])]),
                Zeroizing::new(der_tlv(OCTET_STRING, pkcs1)),
            ),
            PrivateKey::Ec { curve, d, public } => {
                // ECPrivateKey without the curve parameters (Go passes a nil OID inside PKCS#8).
                let mut bits = vec![0u8];
                bits.extend_from_slice(public);
                let ec = Zeroizing::new(der_seq(&[
                    &der_small_int(1),
                    &der_tlv(OCTET_STRING, d),
                    &der_tlv(0xa1, &der_tlv(BIT_STRING, &bits)),
                ]));
                (
                    der_seq(&[&der_tlv(OID, OID_EC), &der_tlv(OID, curve.oid())]),
                    Zeroizing::new(der_tlv(OCTET_STRING, &ec)),
                )
            }
            PrivateKey::Ed25519(seed) | PrivateKey::X25519(seed) => {
                let oid = if matches!(self, PrivateKey::Ed25519(_)) {
                    OID_ED25519
                } else {
                    OID_X25519
                };
                let inner = Zeroizing::new(der_tlv(OCTET_STRING, seed));
                (
                    der_seq(&[&der_tlv(OID, oid)]),
                    Zeroizing::new(der_tlv(OCTET_STRING, &inner)),
                )
            }
        };
        Zeroizing::new(der_seq(&[&version, &algo, &key]))
    }
}

/// A SubjectPublicKeyInfo (Go's `MarshalPKIXPublicKey`).
fn spki(algo: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    der_seq(&[algo, &der_tlv(BIT_STRING, &bits)])
}

// ---------------------------------------------------------------------------------------------
// PKCS#12 (pkcs12.go).

fn p12_error(e: &p12_keystore::error::Error) -> CryptoError {
    use p12_keystore::error::Error as E;
    CryptoError::Pkcs12 {
        reason: match e {
            E::MacError(_) | E::UnpadError => "wrong password or damaged data",
            E::InvalidParameters => "unsupported parameters (iteration count over 1,000,000?)",
            E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm | E::UnsupportedContentType => {
                "unsupported encryption or MAC algorithm"
            }
            _ => "not a PKCS#12 archive (DER)",
        },
    }
}

/// go-pkcs12's `DecodeChain`: the one private key, the first certificate (the leaf) and the others.
fn decode_chain(input: &[u8], password: &str) -> Result<(PrivateKey, Vec<Cert>)> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(input, password).map_err(|e| p12_error(&e))?;
    if archive.keys.len() > 1 {
        return Err(CryptoError::Pkcs12 {
            reason: "expected exactly one key bag",
        });
    }
    let certs = archive
        .certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Cert::parse(c.cert.as_der(), i + 1).map_err(|_| CryptoError::Pkcs12 {
                reason: "a certificate bag holds no valid X.509 certificate",
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if certs.is_empty() {
        return Err(CryptoError::Pkcs12 {
            reason: "certificate missing",
        });
    }
    let key = archive.keys.first().ok_or(CryptoError::Pkcs12 {
        reason: "private key missing",
    })?;
    Ok((parse_pkcs8(key.key.as_der())?, certs))
}

/// `pkcs12keyPass pass input`: the private key as a PKCS#8 `PRIVATE KEY` PEM block.
pub(crate) fn pkcs12_key(password: &str, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (key, _) = decode_chain(input, password)?;
    Ok(pem_of("PRIVATE KEY", &key.to_pkcs8()))
}

/// `pkcs12certPass pass input`: the leaf and CA certificates, ordered leaf → root when they form one
/// chain, else as stored.
pub(crate) fn pkcs12_cert(password: &str, input: &[u8]) -> Result<Vec<u8>> {
    let (_, certs) = decode_chain(input, password)?;
    let raw = certs_pem(&certs);
    Ok(match order_chain(certs) {
        Ok(ordered) => certs_pem(&ordered),
        Err(_) => raw,
    })
}

/// `pemToPkcs12Pass cert key pass` (`full`: `fullPemToPkcs12Pass`, every further block of `cert` a CA
/// certificate): base64 of a PKCS#12 in go-pkcs12's `Modern` profile (PBES2 AES-256-CBC, PBKDF2 and MAC
/// with SHA-256, 2048 iterations). Salts and IVs are random, so the output differs on every call.
pub(crate) fn pem_to_pkcs12(cert: &[u8], key: &[u8], password: &str, full: bool) -> Result<String> {
    let (leaf, mut rest) = pem_decode(cert).ok_or(CryptoError::NoPem { arg: "certificate" })?;
    let mut certs = vec![Cert::parse(&leaf.bytes, 1)?];
    while full && !rest.is_empty() {
        let (ca, after) = pem_decode(rest).ok_or(CryptoError::TrailingData {
            arg: "certificate",
            block: certs.len(),
        })?;
        certs.push(Cert::parse(&ca.bytes, certs.len() + 1)?);
        rest = after;
    }
    let (key_block, _) = pem_decode(key).ok_or(CryptoError::NoPem { arg: "key" })?;
    let key = parse_any_private_key(&key_block.bytes)?;
    let encode_err = |reason| CryptoError::Pkcs12Encode { reason };
    let key = p12_keystore::PrivateKey::from_der(&key.to_pkcs8())
        .map_err(|_| encode_err("private key not accepted"))?;
    let local_key_id = sha1::Sha1::digest(&certs[0].der).to_vec();
    let chain = certs
        .iter()
        .map(|c| p12_keystore::Certificate::from_der(&c.der))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| encode_err("certificate not accepted"))?;
    let mut store = p12_keystore::KeyStore::new();
    // go-pkcs12 writes no friendlyName; Java names such an entry "1", so keyferry's alias is the same.
    store.add_entry(
        "1",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            local_key_id,
            key,
            chain,
        )),
    );
    let pfx = store
        .writer(password)
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(2048)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
        .mac_iterations(2048)
        .write()
        .map_err(|_| encode_err("writing failed"))?;
    Ok(b64_encode(&pfx))
}

// ---------------------------------------------------------------------------------------------
// JWK (jwk.go, lestrrat-go/jwx v2 `ParseKey` + Go's x509 marshalling).

fn jwk_err(reason: &'static str) -> CryptoError {
    CryptoError::Jwk { reason }
}

/// jwx's base64: URL or standard alphabet, padded or not.
fn jwk_b64(
    obj: &serde_json::Map<String, serde_json::Value>,
    field: &'static str,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let Some(v) = obj.get(field) else {
        return Ok(None);
    };
    let s = v.as_str().ok_or(CryptoError::JwkField {
        field,
        reason: "not a string",
    })?;
    let url: Zeroizing<String> = Zeroizing::new(
        s.chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect(),
    );
    ENGINE
        .decode(url.as_bytes())
        .map(|b| Some(Zeroizing::new(b)))
        .map_err(|_| CryptoError::JwkField {
            field,
            reason: "not base64url",
        })
}

fn jwk_req(
    obj: &serde_json::Map<String, serde_json::Value>,
    field: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    jwk_b64(obj, field)?.ok_or(CryptoError::JwkField {
        field,
        reason: "missing",
    })
}

/// A JWK: its public key (as SubjectPublicKeyInfo) and, for private JWKs, its private key.
struct Jwk {
    public: Vec<u8>,
    private: Option<PrivateKey>,
}

fn parse_jwk(input: &[u8]) -> Result<Jwk> {
    let json: serde_json::Value = serde_json::from_slice(input).map_err(|_| jwk_err("not a JSON object"))?;
    let obj = json.as_object().ok_or_else(|| jwk_err("not a JSON object"))?;
    let kty = obj
        .get("kty")
        .and_then(|v| v.as_str())
        .ok_or_else(|| jwk_err("no \"kty\""))?;
    match kty {
        "RSA" => {
            let (n, e) = (jwk_req(obj, "n")?, jwk_req(obj, "e")?);
            let public = spki(
                &der_seq(&[&der_tlv(OID, OID_RSA), &der_tlv(NULL, &[])]),
                &der_seq(&[&der_uint(&n), &der_uint(&e)]),
            );
            let private = match jwk_b64(obj, "d")? {
                None => None,
                Some(d) => {
                    let mut parts = vec![der_small_int(0), der_uint(&n), der_uint(&e), der_uint(&d)];
                    for f in ["p", "q", "dp", "dq", "qi"] {
                        parts.push(der_uint(&jwk_req(obj, f)?));
                    }
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    Some(PrivateKey::Rsa(Zeroizing::new(der_seq(&refs))))
                }
            };
            Ok(Jwk { public, private })
        }
        "EC" => {
            let curve = obj
                .get("crv")
                .and_then(|v| v.as_str())
                .and_then(Curve::from_jwk)
                .ok_or(CryptoError::JwkField {
                    field: "crv",
                    reason: "not P-256, P-384 or P-521",
                })?;
            let coord = |field| -> Result<Vec<u8>> {
                let v = jwk_req(obj, field)?;
                if v.len() > curve.size() {
                    return Err(CryptoError::JwkField {
                        field,
                        reason: "longer than the curve's coordinates",
                    });
                }
                let mut out = vec![0u8; curve.size() - v.len()];
                out.extend_from_slice(&v);
                Ok(out)
            };
            let mut point = vec![4u8];
            point.extend(coord("x")?);
            point.extend(coord("y")?);
            if !curve.valid_point(&point) {
                return Err(jwk_err("invalid elliptic curve public key"));
            }
            let public = spki(
                &der_seq(&[&der_tlv(OID, OID_EC), &der_tlv(OID, curve.oid())]),
                &point,
            );
            let private = match jwk_b64(obj, "d")? {
                None => None,
                Some(d) => {
                    let key = parse_sec1(
                        &der_seq(&[&der_small_int(1), &der_tlv(OCTET_STRING, &d)]),
                        Some(curve),
                    )
                    .map_err(|_| jwk_err("invalid elliptic curve private key"))?;
                    if matches!(&key, PrivateKey::Ec { public, .. } if *public != point) {
                        return Err(jwk_err("\"d\" does not match \"x\" and \"y\""));
                    }
                    Some(key)
                }
            };
            Ok(Jwk { public, private })
        }
        "OKP" => {
            // jwx yields its own X25519 types, which Go's x509 cannot marshal: ESO fails those too.
            if obj.get("crv").and_then(|v| v.as_str()) != Some("Ed25519") {
                return Err(CryptoError::JwkField {
                    field: "crv",
                    reason: "only Ed25519 can be marshalled",
                });
            }
            let x = jwk_req(obj, "x")?;
            let public = spki(&der_seq(&[&der_tlv(OID, OID_ED25519)]), &x);
            let private = match jwk_b64(obj, "d")? {
                None => None,
                Some(d) if d.len() == 32 => Some(PrivateKey::Ed25519(d)),
                Some(_) => {
                    return Err(CryptoError::JwkField {
                        field: "d",
                        reason: "not 32 bytes",
                    });
                }
            };
            Ok(Jwk { public, private })
        }
        "oct" => Err(jwk_err("symmetric keys have no PEM form")),
        _ => Err(CryptoError::JwkField {
            field: "kty",
            reason: "not RSA, EC or OKP",
        }),
    }
}

/// `jwkPublicKeyPem jwk`: a `PUBLIC KEY` block. As in ESO, a private JWK is refused (Go's x509 does not
/// marshal a private key as a public one).
pub(crate) fn jwk_public_key_pem(input: &[u8]) -> Result<Vec<u8>> {
    let jwk = parse_jwk(input)?;
    if jwk.private.is_some() {
        return Err(jwk_err(
            "a private key has no PKIX public key form (use a public JWK)",
        ));
    }
    Ok(pem_of("PUBLIC KEY", &jwk.public).to_vec())
}

/// `jwkPrivateKeyPem jwk`: a PKCS#8 `PRIVATE KEY` block.
pub(crate) fn jwk_private_key_pem(input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let key = parse_jwk(input)?
        .private
        .ok_or_else(|| jwk_err("a public key has no private key form"))?;
    Ok(pem_of("PRIVATE KEY", &key.to_pkcs8()))
}
