"""Writes the JWK fixtures (public and private) for rsa.key, leaf.key (P-256) and ed25519.key; run by gen.sh."""
import base64, json
from cryptography.hazmat.primitives import serialization

def b64(n, size=None):
    if isinstance(n, int):
        size = size or (n.bit_length() + 7) // 8
        n = n.to_bytes(size, "big")
    return base64.urlsafe_b64encode(n).rstrip(b"=").decode()

def load(p):
    return serialization.load_pem_private_key(open(p, "rb").read(), None)

out = {}
k = load("rsa.key"); pn = k.private_numbers(); pub = pn.public_numbers
out["rsa"] = {"kty": "RSA", "n": b64(pub.n), "e": b64(pub.e)}
out["rsa-private"] = dict(out["rsa"], d=b64(pn.d), p=b64(pn.p), q=b64(pn.q), dp=b64(pn.dmp1), dq=b64(pn.dmq1), qi=b64(pn.iqmp))
k = load("leaf.key"); pn = k.private_numbers()
out["ec"] = {"kty": "EC", "crv": "P-256", "x": b64(pn.public_numbers.x, 32), "y": b64(pn.public_numbers.y, 32)}
out["ec-private"] = dict(out["ec"], d=b64(pn.private_value, 32))
k = load("ed25519.key")
raw_pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
raw = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
out["ed25519"] = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw_pub)}
out["ed25519-private"] = dict(out["ed25519"], d=b64(raw))
for name, jwk in out.items():
    open(f"{name}.jwk", "w").write(json.dumps(jwk) + "\n")
