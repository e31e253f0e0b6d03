#!/usr/bin/env python3
"""Independent verifier of an MRV Gateway signed report.

Usage: verify_report.py REPORT.jws GATEWAY.pub.jwk

Written against the specifications, not the Rust code:
- JWS compact (RFC 7515) with Ed25519 (RFC 8037), checked twice: with the
  joserfc JOSE library and directly with `cryptography` over the stored bytes;
- the readings' Merkle root (RFC 6962: leaf = SHA-256(0x00 || leaf),
  node = SHA-256(0x01 || left || right), split at the largest power of two
  below n), leaves = JCS of [device, frame_seq, sample_index, channel,
  time_ms, value, quality] (integers and ASCII identifiers only, so
  json.dumps with compact separators is the RFC 8785 form);
- every device signature: the frame's canonical binary bytes are rebuilt
  from the report (docs: mrv_shared::wire::binary) and checked with the
  device key the report lists.

Prints one JSON object; exit status 0 when everything checks, 1 otherwise.
"""

import base64
import hashlib
import json
import sys
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jws
from joserfc.jwk import OKPKey

QUANTITY_CODES = {
    "energy": 1, "power": 2, "water_volume": 3, "gas_volume": 4,
    "water_level": 5, "ch4_fraction": 6, "temperature": 7, "pressure": 8,
    "status": 9, "run_time": 10, "voltage": 11, "current": 12,
    "frequency": 13, "count": 14,
}
KIND_CODES = {"instant": 0, "counter": 1, "delta": 2}


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(hashes):
    """RFC 6962 MTH, recursive definition."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(merkle_root(hashes[:k]), merkle_root(hashes[k:]))


def sample_time(frame, offset):
    if frame["base_time_ms"] is None:
        return frame["received_ms"]
    return frame["base_time_ms"] + offset


def leaves(report):
    out = []
    for f in report["readings"]["frames"]:
        for i, (ch, offset, value, quality) in enumerate(f["samples"]):
            channel = f["channels"][ch]["id"]
            leaf = [f["device"], f["seq"], i, channel, sample_time(f, offset), value, quality]
            out.append(leaf_hash(json.dumps(leaf, separators=(",", ":")).encode()))
    return out


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def zigzag(n):
    return (n << 1) if n >= 0 else ((-n) << 1) - 1


def text(s):
    b = s.encode()
    return bytes([len(b)]) + b


def frame_signing_bytes(site, f):
    """Canonical binary frame (version 1) up to its CRC, signed flag set."""
    flags = 0x01 | (0x02 if f["base_time_ms"] is not None else 0)
    body = bytearray()
    body += text(site) + text(f["device"]) + varint(f["seq"]) + varint(f["boot"]) + text(f["firmware"])
    if f["base_time_ms"] is not None:
        body += varint(f["base_time_ms"])
    body.append(len(f["channels"]))
    for c in f["channels"]:
        body += text(c["id"]) + bytes([QUANTITY_CODES[c["quantity"]], KIND_CODES[c["kind"]]])
    body += varint(len(f["samples"]))
    for ch, offset, value, quality in f["samples"]:
        body.append(ch)
        body += varint(offset) + varint(zigzag(value))
        body.append(quality)
    head = b"MF" + bytes([1, flags]) + len(body).to_bytes(4, "little")
    signed = head + bytes(body)
    return signed + zlib.crc32(signed).to_bytes(4, "little")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    data = open(sys.argv[1], "rb").read()
    jwk = json.load(open(sys.argv[2]))
    problems = []

    # 1. JOSE library.
    key = OKPKey.import_key(jwk)
    obj = jws.deserialize_compact(data, key, algorithms=["EdDSA", "Ed25519"])
    payload = obj.payload
    header = obj.protected
    if header.get("kid") != jwk.get("kid"):
        problems.append("kid differs from the key's")

    # 2. Raw Ed25519 over the stored bytes.
    h, p, s = data.decode("ascii").strip().split(".")
    pub = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    try:
        pub.verify(b64url_decode(s), (h + "." + p).encode("ascii"))
    except InvalidSignature:
        problems.append("gateway signature invalid (cryptography)")
    if b64url_decode(p) != payload:
        problems.append("payload differs between joserfc and raw decoding")

    report = json.loads(payload)
    # 3. Merkle root and count.
    hashes = leaves(report)
    root = merkle_root(hashes).hex()
    if root != report["readings"]["merkle_root"]:
        problems.append("merkle root mismatch")
    if len(hashes) != report["readings"]["count"]:
        problems.append("reading count mismatch")

    # 4. Device signatures.
    devices = {d["id"]: d for d in report["devices"]}
    checked = 0
    for f in report["readings"]["frames"]:
        signing = devices[f["device"]]["signing"]
        if signing == "unsigned":
            continue
        dev_key = Ed25519PublicKey.from_public_bytes(b64url_decode(signing["ed25519"]["x"]))
        try:
            dev_key.verify(b64url_decode(f["sig"]), frame_signing_bytes(report["header"]["site"], f))
            checked += 1
        except (InvalidSignature, TypeError):
            problems.append("device signature invalid: %s seq %d" % (f["device"], f["seq"]))

    print(json.dumps({
        "report_id": report["header"]["report_id"],
        "seq": report["header"]["seq"],
        "alg": header.get("alg"),
        "kid": header.get("kid"),
        "readings": len(hashes),
        "merkle_root": root,
        "device_signatures_checked": checked,
        "sha256": hashlib.sha256(data).hexdigest(),
        "er_exact": {c["id"]: c["er"]["exact"] for c in report["calculations"]},
        "problems": problems,
    }))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
