#!/usr/bin/env bash
# Regenerates the certificate/key fixtures for the crypto template functions (run once; the output is
# committed, tests never run this). A root CA, an intermediate and a leaf (P-256, 100-year validity),
# an RSA-2048 key, PKCS#12 bundles in the modern (PBES2/AES) and legacy (3DES) encodings.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl ecparam -name prime256v1 -genkey -noout -out root.key.sec1
openssl pkcs8 -topk8 -nocrypt -in root.key.sec1 -out root.key && rm root.key.sec1
openssl req -x509 -new -key root.key -sha256 -days $days -subj "/CN=keyferry fixture root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "subjectKeyIdentifier=hash" \
  -addext "authorityKeyIdentifier=keyid:always" -out root.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out inter.key
openssl req -new -key inter.key -subj "/CN=keyferry fixture intermediate" -out inter.csr
printf 'basicConstraints=critical,CA:TRUE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n' > ca.ext
openssl x509 -req -in inter.csr -CA root.crt -CAkey root.key -CAcreateserial -days $days -sha256 \
  -extfile ca.ext -out inter.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key
openssl req -new -key leaf.key -subj "/CN=app.example.internal" -out leaf.csr
printf 'basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\nsubjectAltName=DNS:app.example.internal\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA inter.crt -CAkey inter.key -CAcreateserial -days $days -sha256 \
  -extfile leaf.ext -out leaf.crt
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key
openssl genpkey -algorithm ED25519 -out ed25519.key
# Bundle: leaf, root, intermediate (out of order on purpose), with the leaf key in between.
cat leaf.crt root.crt leaf.key inter.crt > bundle.pem
cat inter.crt root.crt > cas.pem
openssl pkcs12 -export -inkey leaf.key -in leaf.crt -certfile cas.pem -passout pass:fixture-p12-pw -out modern.p12
openssl pkcs12 -export -inkey leaf.key -in leaf.crt -certfile cas.pem -passout pass: -out nopass.p12
openssl req -x509 -new -key rsa.key -sha256 -days $days -subj "/CN=keyferry fixture rsa" -out rsa.crt
openssl pkcs12 -export -inkey rsa.key -in rsa.crt -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 \
  -passout pass:fixture-p12-pw -out legacy.p12
python3 jwk.py
rm -f ./*.csr ./*.srl ./*.ext ./*.srl cas.pem
