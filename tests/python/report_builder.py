#!/usr/bin/env python3
"""Builds MRV Gateway reports (schema 2) from the rules of
docs/REPORT-FORMAT.md, for tests: a site with a gateway key and device keys
(deterministic from a seed), frames signed by their devices, and reports
whose derived members (late flags, Merkle root, continuity, series,
calculations) are computed by the verifier's pure functions and then signed
by the gateway. Tests tamper with them before or after `finish()`.

Figures a builder computes are what the Python verifier's reading of the
document gives; tests check them against hand-worked values, and
tests/tests/report_python.rs has the Rust verifier judge them.
"""

import base64
import copy
import hashlib
import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_report as vr  # noqa: E402


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pub_bytes(priv):
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


T0 = 1767225600000  # 2026-01-01T00:00:00Z
MIN = 60_000


class Site:
    """A gateway key, devices with their keys, and a registry."""

    def __init__(self, gateway="gw-1", seed=None):
        self.gateway = gateway
        self.kid = gateway + "-2026"
        self.seed = seed
        self.gw_key = self.new_key("gateway/" + gateway)
        self.devices = {}  # id -> (record, private key or None)
        self.rekeys = 0

    def new_key(self, name):
        """A fresh key; with a seed, derived from it (reproducible files)."""
        if self.seed is None:
            return Ed25519PrivateKey.generate()
        self.rekeys = getattr(self, "rekeys", 0) + 1
        return Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(("%s/%s/%d" % (self.seed, name, self.rekeys)).encode()).digest())

    def add_device(self, dev_id, signed=True, interval=10_000, modulus=2**32, kind="solar_meter",
                   calibration=("2025-06-01", "2030-06-01")):
        key = self.new_key("device/" + dev_id) if signed else None
        rec = {
            "id": dev_id, "kind": kind, "serial": "SN-" + dev_id, "meter_class": "class 1",
            "calibration": None if calibration is None else {
                "certificate": "CAL-" + dev_id, "calibrated_on": calibration[0], "due_on": calibration[1]},
            "signing": "unsigned" if key is None else {"ed25519": {"kid": "k-" + dev_id, "x": b64(pub_bytes(key))}},
            "sample_interval_ms": interval, "counter_modulus": modulus,
        }
        self.devices[dev_id] = (rec, key)

    def registry(self):
        out = []
        for dev_id, (rec, key) in sorted(self.devices.items()):
            if key is None:
                out.append({"id": dev_id, "unsigned": True})
            else:
                out.append({"id": dev_id, "keys": [{"jwk": {"kty": "OKP", "crv": "Ed25519",
                                                            "x": b64(pub_bytes(key)), "kid": "whatever"},
                                                    "valid_from": "2025-01-01T00:00:00Z", "valid_until": None}]})
        return {"devices": out}

    def jwk(self):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(pub_bytes(self.gw_key)), "kid": self.kid}

    def frame(self, dev_id, seq, base, channels, samples, received=None):
        rec = {"device": dev_id, "seq": seq, "boot": 1, "firmware": "fw-1.0", "base_time_ms": base,
               "received_ms": received if received is not None else (base or T0) + 1000,
               "channels": [{"id": c, "quantity": q, "kind": k} for c, q, k in channels],
               "samples": [list(s) for s in samples], "sig": None, "late": False}
        self.sign_frame(rec)
        return rec

    def sign_frame(self, rec, site="site-1"):
        key = self.devices[rec["device"]][1]
        rec["sig"] = None if key is None else b64(key.sign(vr.frame_signing_bytes(site, rec)))

    def report(self, seq, start, end, frames, events=(), calcs=(), after=None, baselines=None,
               prev_hash=vr.ZERO_HASH, device_ids=None):
        """A complete report: derived members recomputed by the spec's rules
        (through the verifier's pure functions; the tests check figures by hand)."""
        device_ids = sorted(device_ids if device_ids is not None else self.devices)
        r = {
            "header": {"schema": 2, "report_id": "%s-%012d" % (self.gateway, seq), "site": "site-1",
                       "project": "P-1", "methodology": "test", "gateway": self.gateway, "kid": self.kid,
                       "period": {"start_ms": start, "end_ms": end}, "seq": seq, "prev_hash": prev_hash,
                       "clock": {"source": "ntp", "last_sync_ms": start, "max_skew_ms": 3}},
            "devices": [copy.deepcopy(self.devices[d][0]) for d in device_ids],
            "continuity": [], "series": [],
            "readings": {"count": 0, "merkle_root": "", "frames": sorted(frames, key=lambda f: (f["device"], f["seq"]))},
            "events": list(events), "calculations": [],
        }
        finish(r, calcs, after or {}, baselines or {})
        return r

    def sign(self, report):
        header = {"alg": "EdDSA", "kid": self.kid, "typ": "mrv-report+jws"}
        si = b64(vr.jcs_bytes(header)) + "." + b64(vr.jcs_bytes(report))
        return (si + "." + b64(self.gw_key.sign(si.encode()))).encode()


def finish(r, calcs=None, after=None, baselines=None):
    """(Re)compute the derived members of report `r`: late flags, Merkle,
    continuity, series and calculations. `calcs` are (id, methodology,
    bindings, parameters, awd_start) or None to keep r's calculations' claims."""
    start = r["header"]["period"]["start_ms"]
    for f in r["readings"]["frames"]:
        f["late"] = vr.sample_time(f, f["samples"][0][1]) < start
    leaves = [vr.jcs_bytes([f["device"], f["seq"], i, f["channels"][s[0]]["id"], vr.sample_time(f, s[1]), s[2], s[3]])
              for f in r["readings"]["frames"] for i, s in enumerate(f["samples"])]
    r["readings"]["count"] = len(leaves)
    r["readings"]["merkle_root"] = vr.merkle_root(leaves).hex()
    if after is None:
        after = {c["device"]: c["after_seq"] for c in r["continuity"]}
    r["continuity"] = vr.continuity_records(r, after)
    collected = vr.collect_series(r)
    if baselines is None:
        baselines = {(s["device"], s["channel"]): s["counter"]["baseline"] for s in r["series"] if s["counter"]}
    stated = {k: {"counter": {"baseline": b}} for k, b in baselines.items()}
    r["series"] = vr.compute_series(r, collected, stated)
    series = {(s["device"], s["channel"]): s for s in r["series"]}
    ctx = vr.CalcContext(r, collected, series)
    if calcs is None:
        calcs = [(c["id"], c["methodology"], c["bindings"], c["parameters"], c["awd_start"])
                 for c in r["calculations"]]
    out = []
    for cid, meth, bindings, params, awd_start in calcs:
        c = {"id": cid, "methodology": meth, "bindings": bindings,
             "parameters": {k: {"value": v, "unit": "u", "source": "s"} for k, v in params.items()}
             if params and not isinstance(next(iter(params.values())), dict) else params,
             "awd_start": awd_start, "treatment": vr.TREATMENT}
        c.update(vr.recompute_calculation(ctx, c))
        out.append(c)
    r["calculations"] = out


def binding(role, device, channel, quantity, group=""):
    b = {"role": role, "device": device, "channel": channel, "quantity": quantity}
    if group:
        b["group"] = group
    return b


ENERGY = [("energy", "energy", "counter")]


def energy_frame(site, dev, seq, start, values, step=10_000, quality=None):
    samples = [(0, i * step, v, (quality or {}).get(i, 0)) for i, v in enumerate(values)]
    return site.frame(dev, seq, start, ENERGY, samples)


