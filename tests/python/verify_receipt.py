#!/usr/bin/env python3
"""An independent check of the receiver's log receipts, written from
docs/RECEIVER-API.md section 4 alone (Python standard library plus
`cryptography` for Ed25519).

Usage: verify_receipt.py RECEIPT.json REPORT_FILE VERIFIER_KEY
       verify_receipt.py --consistency CONSISTENCY.json VERIFIER_KEY

Prints "OK ..." and exits 0, or prints "INVALID <why>" and exits 1.
"""
import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Invalid(Exception):
    pass


def parse_verifier(vkey):
    name, key_id, key = vkey.split("+", 2)
    raw = base64.b64decode(key, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise Invalid("verifier key is not Ed25519")
    want = hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4]
    if want.hex() != key_id:
        raise Invalid("verifier key id does not match")
    return name, struct.unpack(">I", want)[0], Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note, vkey):
    name, key_id, pub = parse_verifier(vkey)
    if not note.endswith("\n") or "\n\n" not in note:
        raise Invalid("not a signed note")
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    ok = False
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise Invalid("bad signature line")
        who, b64 = line[2:].split(" ", 1)
        blob = base64.b64decode(b64, validate=True)
        if who != name or struct.unpack(">I", blob[:4])[0] != key_id:
            continue
        try:
            pub.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise Invalid("checkpoint signature does not verify")
        ok = True
    if not ok:
        raise Invalid("no signature by the trusted key")
    lines = text[:-1].split("\n")
    if lines[0] != name:
        raise Invalid("origin is not the key name")
    return int(lines[1]), base64.b64decode(lines[2], validate=True)


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, size, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m, n, proof, old_root, new_root):
    if m == n:
        return not proof and old_root == new_root
    if m == 0 or m > n or not proof:
        return m == 0 and not proof
    path = ([old_root] if m & (m - 1) == 0 else []) + proof
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def main(argv):
    try:
        if argv[1] == "--consistency":
            c = json.load(open(argv[2]))
            vkey = argv[3]
            m, old_root = open_note(c["old_checkpoint"], vkey)
            n, new_root = open_note(c["new_checkpoint"], vkey)
            p = c["proof"]
            if (p["old_size"], p["new_size"]) != (m, n):
                raise Invalid("proof sizes differ from the checkpoints")
            proof = [bytes.fromhex(h) for h in p["proof"]]
            if not verify_consistency(m, n, proof, old_root, new_root):
                raise Invalid("consistency proof does not verify")
            print(f"OK consistent {m} -> {n}")
            return 0
        receipt = json.load(open(argv[1]))
        report = open(argv[2], "rb").read()
        vkey = argv[3]
        if hashlib.sha256(report).hexdigest() != receipt["report_hash"]:
            raise Invalid("the receipt is for another report")
        size, root = open_note(receipt["checkpoint"], vkey)
        if size != receipt["tree_size"]:
            raise Invalid("tree size differs from the checkpoint")
        leaf = hashlib.sha256(b"\x00" + bytes.fromhex(receipt["report_hash"])).digest()
        proof = [bytes.fromhex(h) for h in receipt["inclusion_proof"]]
        if not verify_inclusion(leaf, receipt["log_index"], size, proof, root):
            raise Invalid("inclusion proof does not verify")
        print(f"OK entry {receipt['log_index']} of {size}")
        return 0
    except Invalid as e:
        print(f"INVALID {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
