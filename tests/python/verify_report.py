#!/usr/bin/env python3
"""Independent verifier of MRV Gateway signed reports (report schema 2).

Usage:
    verify_report.py --keys GATEWAY.pub.jwk [--keys ...] --devices REGISTRY.json
                     [--allow-mid-chain] REPORT.jws...

Written from the normative specification docs/REPORT-FORMAT.md alone (not
from the Rust code), to show that a third party can implement the format.
Section numbers below (S3, S6, ...) are that document's.

It recomputes everything a report claims: the JWS (S3), the JCS form of the
payload, the object's shape (S4), the device registry check (S10), the
RFC 6962 Merkle root over the readings (S5), every device signature over the
rebuilt canonical binary frame (S2), per-device frame continuity (S7), the
series aggregates, counters and gaps (S6), the calculations from their
bindings with exclusions, completeness and the four methodologies in exact
rational arithmetic (S9), and the chain of each gateway's reports in seq
order (S11).

Output: one JSON object per report on stdout, in the order given:
    {"file": ..., "ok": true, "report_id": ..., "calculations":
        {id: {"er_exact": ..., "inputs": {...}, ...}}, ...}
    {"file": ..., "ok": false, "reason": <the spec's reason label>, "detail": ...}
Exit status: 0 when every report is valid, 1 when one is not, 2 on a usage
error (unreadable key or registry file).

Dependencies: the standard library, `cryptography` (Ed25519) and `joserfc`
(JWK import and thumbprints, and a second, independent check of each JWS).
"""

import argparse
import base64
import bisect
import datetime
import hashlib
import json
import math
import re
import sys
import warnings
import zlib
from fractions import Fraction

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jws as joserfc_jws
from joserfc.jwk import OKPKey

# ---------------------------------------------------------------------------
# S1 conventions: tables
# ---------------------------------------------------------------------------

QUANTITIES = {
    # name: (wire code, unit string)
    "energy": (1, "Wh"),
    "power": (2, "mW"),
    "water_volume": (3, "mL"),
    "gas_volume": (4, "mL"),
    "water_level": (5, "mm"),
    "ch4_fraction": (6, "0.01%vol"),
    "temperature": (7, "0.01degC"),
    "pressure": (8, "Pa"),
    "status": (9, "bool"),
    "run_time": (10, "s"),
    "voltage": (11, "mV"),
    "current": (12, "mA"),
    "frequency": (13, "mHz"),
    "count": (14, "1"),
}
KINDS = {"instant": 0, "counter": 1, "delta": 2}
EVENT_KINDS = {
    "gateway_started", "gateway_stopped", "clock_jump", "buffer_full", "buffer_recovered",
    "buffer_repaired", "device_offline", "device_online", "config_changed", "frame_rejected",
    "signature_rejected", "modbus_exception", "modbus_timeout", "upload_rejected", "frames_given_up",
    "broker_session_lost", "modbus_unreachable", "modbus_link_error", "modbus_recovered",
    "modbus_bad_value", "buffer_reopened", "disk_space_low", "disk_space_critical",
    "disk_space_recovered", "lorawan_session_reset", "lorawan_uplinks_lost",
    "upload_backlog_high", "upload_backlog_cleared",
}

Q_UNAVAILABLE = 0x01
Q_OUT_OF_RANGE = 0x02
Q_COUNTER_RESET = 0x10

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U32_MAX = 2**32 - 1
# S1: integers are compared exactly as 64-bit integers; one that fits no
# 64-bit type cannot be a report's (spec gap G-1-f: per-field signedness).
INT_MIN, INT_LIMIT = -(2**63), 2**64
DAY_MS = 86_400_000
ZERO_HASH = "0" * 64

ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
B64URL_RE = re.compile(r"^[A-Za-z0-9_\-]*$")
DECIMAL_RE = re.compile(r"^-?([0-9]+)(?:\.([0-9]+))?$")
DATE_RE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
RFC3339_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

# S9.2: methodology -> role -> (quantity, allowed kinds, side)
ENERGY_KINDS = ("counter", "delta")
ROLES = {
    "solar_pv": {
        "generation": ("energy", ENERGY_KINDS, "reference"),
        "export": ("energy", ENERGY_KINDS, "reference"),
        "import": ("energy", ENERGY_KINDS, "project"),
        "consumption": ("energy", ENERGY_KINDS, "project"),
    },
    "solar_pump": {
        "pump_energy": ("energy", ENERGY_KINDS, "reference"),
        "grid_import": ("energy", ENERGY_KINDS, "project"),
        "water_volume": ("water_volume", ENERGY_KINDS, "info"),
    },
    "biogas_digester": {
        "gas_volume": ("gas_volume", ENERGY_KINDS, "reference"),
        "ch4_fraction": ("ch4_fraction", ("instant",), "pairing"),
        "temperature": ("temperature", ("instant",), "pairing"),
        "pressure": ("pressure", ("instant",), "pairing"),
        "flame": ("status", ("instant",), "pairing"),
    },
    "rice_awd": {
        "water_level": ("water_level", ("instant",), "reference"),
    },
}
ALL_ROLES = {role for roles in ROLES.values() for role in roles}
BIOGAS_REQUIRED = ("gas_volume", "ch4_fraction", "temperature", "pressure")

# S9.2: the direction a device kind implies, and the directions each energy
# role accepts. Kinds not listed imply no direction (spec gap G-9.2-c).
KIND_DIRECTION = {"solar_meter": "generation", "irrigation_pump": "consumption"}
ROLE_DIRECTIONS = {
    "generation": ("generation", "export"),
    "export": ("export",),
    "import": ("import",),
    "grid_import": ("import",),
    "consumption": ("consumption", "import"),
    "pump_energy": ("consumption",),
}

# S9.1: the conservative-treatment statement, compared byte for byte. The
# spec gives it only by reference to the Rust source (spec gap G-9.1-a); the
# text here is the one the report vectors carry (shared/tests/vectors/).
TREATMENT = (
    "Missing data earns no credit: only usable samples count; counter steps spanning a gap "
    "(> 1.5 nominal intervals) or a reset are not credited on the reference side, while subtracted "
    "(project-side) energy counts every measured increase; a period in which a subtracted input has "
    "no usable data earns no credit; digester intervals without CH4, temperature and pressure data "
    "(or without flame) are not credited; AWD credits only observed time and only the drainage events "
    "already shown; devices unregistered or out of calibration are excluded; per-interval "
    "normalisations round down; amounts are exact (a crediting total rounds down once)."
)

# Reason labels this verifier can give (S10, S11, S12).
REASONS = {
    "malformed", "unsupported_alg", "unknown_kid", "bad_signature",
    "unsupported_schema", "kid_mismatch",
    "device_not_registered", "device_key_not_registered",
    "device_unsigned_mismatch", "device_key_mismatch",
    "frame_order", "reading_count_mismatch", "merkle_mismatch",
    "late_flag_mismatch", "unknown_device", "device_signature_missing",
    "device_signature_invalid", "bad_key",
    "bad_give_up_event", "continuity_repeat", "continuity_hole",
    "continuity_mismatch",
    "series_mismatch", "aggregate_mismatch",
    "binding_invalid", "invalid_date", "calculation_mismatch",
    "seq_gap", "replay", "prev_hash_mismatch",
    "period_discontinuity", "baseline_mismatch", "continuity_chain",
    "awd_chain_mismatch",
}


class Reject(Exception):
    """A report is invalid: `reason` is the spec's label, `detail` says where."""

    def __init__(self, reason, detail):
        assert reason in REASONS, reason
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


class UsageError(Exception):
    """A key or registry file given to the verifier is unusable."""


# ---------------------------------------------------------------------------
# Encodings: base64url, JCS, varint/zigzag, frames, Merkle
# ---------------------------------------------------------------------------


def b64url_decode(s):
    """RFC 4648 S5 without padding, strictly: only the alphabet, no padding,
    a length that is not 1 mod 4, unused trailing bits zero (so one encoding
    per byte string). Returns None when `s` is not such a string."""
    if not isinstance(s, str) or not B64URL_RE.fullmatch(s) or len(s) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if b64url_encode(raw) != s:
        return None
    return raw


def b64url_encode(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jcs_string(s):
    """ECMAScript JSON.stringify string escaping (RFC 8785 S3.2.2.2)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(v):
    """RFC 8785 canonical JSON of a value holding only objects, arrays,
    strings, integers, booleans and null (S3). Returns a str."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return jcs_string(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        # Members sorted by the UTF-16 code units of their names; UTF-16BE
        # bytes compare in the same order as the code units.
        items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(jcs_string(k) + ":" + jcs(x) for k, x in items) + "}"
    raise TypeError("not a report value: %r" % (v,))


def jcs_bytes(v):
    return jcs(v).encode("utf-8")


def same(a, b):
    """Equality of JSON values that tells `true` from `1`."""
    return jcs(a) == jcs(b)


def varint(n):
    """Unsigned LEB128, minimal (S2.1)."""
    if n < 0 or n >= 2**64:
        raise ValueError("varint out of range: %d" % n)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def zigzag(v):
    """Signed 64-bit -> unsigned: (v << 1) ^ (v >> 63), arithmetic shift."""
    if v < I64_MIN or v > I64_MAX:
        raise ValueError("zigzag out of range: %d" % v)
    return ((v << 1) ^ (v >> 63)) & (2**64 - 1)


def short_bytes(s):
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ValueError("string longer than 255 bytes")
    return bytes([len(b)]) + b


def frame_signing_bytes(site, rec):
    """The canonical binary frame (version 1) of a report's frame record, up
    to and including its CRC, with the signature flag set (S2.1, S2.2)."""
    has_base = rec["base_time_ms"] is not None
    flags = 0x01 | (0x02 if has_base else 0)
    body = bytearray()
    body += short_bytes(site)
    body += short_bytes(rec["device"])
    body += varint(rec["seq"])
    body += varint(rec["boot"])
    body += short_bytes(rec["firmware"])
    if has_base:
        body += varint(rec["base_time_ms"])
    body.append(len(rec["channels"]))
    for c in rec["channels"]:
        body += short_bytes(c["id"])
        body.append(QUANTITIES[c["quantity"]][0])
        body.append(KINDS[c["kind"]])
    body += varint(len(rec["samples"]))
    for idx, offset, value, quality in rec["samples"]:
        body.append(idx)
        body += varint(offset)
        body += varint(zigzag(value))
        body.append(quality)
    head = b"MF" + bytes([1, flags]) + len(body).to_bytes(4, "little")
    signed = head + bytes(body)
    return signed + zlib.crc32(signed).to_bytes(4, "little")


def merkle_root(leaf_data):
    """RFC 6962 S2.1 Merkle tree hash over a list of leaf byte strings."""
    level = [hashlib.sha256(b"\x00" + d).digest() for d in leaf_data]
    if not level:
        return hashlib.sha256(b"").digest()
    return _mth(level, 0, len(level))


def _mth(hashes, lo, hi):
    n = hi - lo
    if n == 1:
        return hashes[lo]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes, lo, lo + k) + _mth(hashes, lo + k, hi)).digest()


# ---------------------------------------------------------------------------
# Numbers, amounts, dates
# ---------------------------------------------------------------------------


def parse_decimal(s):
    """A decimal parameter `[-]D[.D]`, at most 30 digits (S1); None if not."""
    if not isinstance(s, str):
        return None
    m = DECIMAL_RE.fullmatch(s)
    if not m:
        return None
    digits = len(m.group(1)) + len(m.group(2) or "")
    if digits > 30:
        return None
    return Fraction(s)


def format_exact(q):
    """An exact amount: "n" or "n/d" in lowest terms (S1)."""
    q = Fraction(q)
    if q.denominator == 1:
        return str(q.numerator)
    return "%d/%d" % (q.numerator, q.denominator)


def format_floor6(q):
    """A floor decimal: rounded toward -inf to exactly 6 decimals (S1)."""
    n = math.floor(Fraction(q) * 10**6)
    sign = "-" if n < 0 else ""
    n = abs(n)
    return "%s%d.%06d" % (sign, n // 10**6, n % 10**6)


def amount(q):
    return {"exact": format_exact(q), "decimal": format_floor6(q)}


EPOCH = datetime.date(1970, 1, 1)


def parse_date_ms(s):
    """A strict `YYYY-MM-DD` Gregorian date -> ms of 00:00 UTC, or None."""
    if not isinstance(s, str):
        return None
    m = DATE_RE.fullmatch(s)
    if not m:
        return None
    try:
        d = datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return (d - EPOCH).days * DAY_MS


def parse_rfc3339_ms(s):
    """An RFC 3339 date-time -> exact Unix milliseconds (Fraction), or None.
    Leap seconds (:60) are refused (spec gap G-10-b)."""
    if not isinstance(s, str):
        return None
    m = RFC3339_RE.fullmatch(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    if hh > 23 or mi > 59 or ss > 59:
        return None
    try:
        day = datetime.date(y, mo, d)
    except ValueError:
        return None
    frac = Fraction(m.group(7)[1:]) / 10 ** len(m.group(7)[1:]) if m.group(7) else Fraction(0)
    off = m.group(8)
    offset_min = 0
    if off not in ("Z", "z"):
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            return None
        offset_min = (oh * 60 + om) * (1 if off[0] == "+" else -1)
    seconds = (day - EPOCH).days * 86400 + hh * 3600 + mi * 60 + ss - offset_min * 60
    return (seconds + frac) * 1000


# ---------------------------------------------------------------------------
# JSON parsing and the report's shape (S4)
# ---------------------------------------------------------------------------


def _no_float(s):
    raise ValueError("non-integer number %s" % s)


def _no_constant(s):
    raise ValueError("non-JSON constant %s" % s)


def _pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate member %r" % k)
        obj[k] = v
    return obj


def parse_json(raw):
    """Strict JSON of report values: UTF-8, integers only, no duplicates."""
    text = raw.decode("utf-8")
    return json.loads(text, parse_float=_no_float, parse_constant=_no_constant, object_pairs_hook=_pairs)


def bad(where, what):
    raise Reject("malformed", "%s: %s" % (where, what))


def is_int(v):
    return type(v) is int


def want_obj(v, where, required, optional=()):
    if not isinstance(v, dict):
        bad(where, "expected an object")
    for k in required:
        if k not in v:
            bad(where, "missing member %r" % k)
    extra = set(v) - set(required) - set(optional)
    if extra:
        bad(where, "unknown member(s) %s" % ", ".join(sorted(extra)))
    return v


def want_list(v, where):
    if not isinstance(v, list):
        bad(where, "expected an array")
    return v


def want_int(v, where, lo=None, hi=None, null=False):
    if v is None and null:
        return v
    if not is_int(v):
        bad(where, "expected an integer%s" % (" or null" if null else ""))
    if lo is not None and v < lo:
        bad(where, "%d is below %d" % (v, lo))
    if hi is not None and v > hi:
        bad(where, "%d is above %d" % (v, hi))
    return v


U8, U32, U64 = (0, 2**8 - 1), (0, 2**32 - 1), (0, 2**64 - 1)
I64 = (I64_MIN, I64_MAX)


def want_num(v, where, ty, null=False):
    """An integer of a 64/32/8-bit type (spec gap A3: the types are the
    reference implementation's, found by probing, to be stated in S4)."""
    return want_int(v, where, lo=ty[0], hi=ty[1], null=null)


def want_str(v, where, null=False):
    if v is None and null:
        return v
    if not isinstance(v, str):
        bad(where, "expected a string%s" % (" or null" if null else ""))
    return v


def want_bool(v, where):
    if not isinstance(v, bool):
        bad(where, "expected a boolean")
    return v


def want_enum(v, where, names):
    if not isinstance(v, str) or v not in names:
        bad(where, "unknown value %r" % (v,))
    return v


def want_id(v, where):
    if not isinstance(v, str) or not ID_RE.fullmatch(v):
        bad(where, "not an identifier (1-32 bytes of A-Z a-z 0-9 _ . -): %r" % (v,))
    return v


def check_int_range(v, where="payload"):
    """No integer that fits no 64-bit integer type (S1)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, int):
        if not INT_MIN <= v < INT_LIMIT:
            bad(where, "integer outside 64 bits: %d" % v)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            check_int_range(x, "%s[%d]" % (where, i))
    elif isinstance(v, dict):
        for k, x in v.items():
            check_int_range(x, "%s.%s" % (where, k))


def validate_report(r):
    """S12 step 3: every object closed, every member of its type, every
    enumeration known (S4, S6-S9). The value rules of step 5 and those with
    their own reason label are left to the later steps."""
    want_obj(r, "report", ["header", "devices", "continuity", "series", "readings", "events", "calculations"])

    h = want_obj(r["header"], "header", ["schema", "report_id", "site", "project", "methodology",
                                         "gateway", "kid", "period", "seq", "prev_hash", "clock"])
    want_num(h["schema"], "header.schema", U32)
    want_id(h["site"], "header.site")
    want_str(h["project"], "header.project")
    want_str(h["methodology"], "header.methodology")
    want_id(h["gateway"], "header.gateway")
    want_str(h["kid"], "header.kid")
    p = want_obj(h["period"], "header.period", ["start_ms", "end_ms"])
    want_num(p["start_ms"], "header.period.start_ms", U64)
    want_num(p["end_ms"], "header.period.end_ms", U64)
    want_num(h["seq"], "header.seq", U64)
    want_str(h["report_id"], "header.report_id")
    # Hex members are strings compared with the recomputed hex (a non-hex
    # value is a mismatch, not malformed: spec gap A13).
    want_str(h["prev_hash"], "header.prev_hash")
    c = want_obj(h["clock"], "header.clock", ["source", "last_sync_ms", "max_skew_ms"])
    want_str(c["source"], "header.clock.source")
    want_num(c["last_sync_ms"], "header.clock.last_sync_ms", U64, null=True)
    want_num(c["max_skew_ms"], "header.clock.max_skew_ms", I64)

    for i, d in enumerate(want_list(r["devices"], "devices")):
        w = "devices[%d]" % i
        want_obj(d, w, ["id", "kind", "serial", "meter_class", "calibration", "signing",
                        "sample_interval_ms", "counter_modulus"])
        want_id(d["id"], w + ".id")
        want_str(d["kind"], w + ".kind")
        want_str(d["serial"], w + ".serial")
        want_str(d["meter_class"], w + ".meter_class")
        if d["calibration"] is not None:
            cal = want_obj(d["calibration"], w + ".calibration", ["certificate", "calibrated_on", "due_on"])
            want_str(cal["certificate"], w + ".calibration.certificate")
            # The dates' validity is checked in step 5 (reason invalid_date).
            want_str(cal["calibrated_on"], w + ".calibration.calibrated_on")
            want_str(cal["due_on"], w + ".calibration.due_on")
        s = d["signing"]
        if s != "unsigned":
            want_obj(s, w + ".signing", ["ed25519"])
            e = want_obj(s["ed25519"], w + ".signing.ed25519", ["kid", "x"])
            want_str(e["kid"], w + ".signing.ed25519.kid")
            # An x that is not 32 bytes of base64url is device_key_mismatch (S10).
            want_str(e["x"], w + ".signing.ed25519.x")
        want_num(d["sample_interval_ms"], w + ".sample_interval_ms", U64, null=True)
        want_num(d["counter_modulus"], w + ".counter_modulus", U64, null=True)

    for i, cr in enumerate(want_list(r["continuity"], "continuity")):
        w = "continuity[%d]" % i
        want_obj(cr, w, ["device", "after_seq", "first_seq", "last_seq", "frames", "given_up"])
        want_id(cr["device"], w + ".device")
        want_num(cr["after_seq"], w + ".after_seq", U64)
        want_num(cr["first_seq"], w + ".first_seq", U64, null=True)
        want_num(cr["last_seq"], w + ".last_seq", U64)
        want_num(cr["frames"], w + ".frames", U64)
        for j, g in enumerate(want_list(cr["given_up"], w + ".given_up")):
            want_obj(g, "%s.given_up[%d]" % (w, j), ["first", "last"])
            want_num(g["first"], "%s.given_up[%d].first" % (w, j), U64)
            want_num(g["last"], "%s.given_up[%d].last" % (w, j), U64)

    for i, s in enumerate(want_list(r["series"], "series")):
        validate_series(s, "series[%d]" % i)

    rd = want_obj(r["readings"], "readings", ["count", "merkle_root", "frames"])
    want_num(rd["count"], "readings.count", U64)
    want_str(rd["merkle_root"], "readings.merkle_root")
    for i, f in enumerate(want_list(rd["frames"], "readings.frames")):
        validate_frame(f, "readings.frames[%d]" % i)

    for i, e in enumerate(want_list(r["events"], "events")):
        w = "events[%d]" % i
        want_obj(e, w, ["time_ms", "kind", "detail"], ["device", "seqs"])
        want_num(e["time_ms"], w + ".time_ms", U64)
        want_str(e["kind"], w + ".kind")
        if e["kind"] not in EVENT_KINDS:
            bad(w + ".kind", "unknown event kind %r (spec gap G-8-c)" % e["kind"])
        want_str(e["detail"], w + ".detail")
        if "device" in e:
            want_id(e["device"], w + ".device")
        if "seqs" in e:
            sq = want_obj(e["seqs"], w + ".seqs", ["first", "last"])
            want_num(sq["first"], w + ".seqs.first", U64)
            want_num(sq["last"], w + ".seqs.last", U64)

    for i, calc in enumerate(want_list(r["calculations"], "calculations")):
        validate_calculation(calc, "calculations[%d]" % i)


def validate_point(v, where):
    if v is None:
        return
    want_obj(v, where, ["time_ms", "value"])
    want_num(v["time_ms"], where + ".time_ms", U64)
    want_num(v["value"], where + ".value", I64)


def validate_series(s, w):
    want_obj(s, w, ["device", "channel", "quantity", "kind", "unit", "expected", "received", "usable",
                    "first_ms", "last_ms", "sum", "min", "max", "counter", "gaps"])
    want_id(s["device"], w + ".device")
    want_id(s["channel"], w + ".channel")
    want_enum(s["quantity"], w + ".quantity", QUANTITIES)
    want_enum(s["kind"], w + ".kind", KINDS)
    want_str(s["unit"], w + ".unit")
    for k in ("expected", "first_ms", "last_ms"):
        want_num(s[k], "%s.%s" % (w, k), U64, null=True)
    for k in ("sum", "min", "max"):
        want_num(s[k], "%s.%s" % (w, k), I64, null=True)
    want_num(s["received"], w + ".received", U64)
    want_num(s["usable"], w + ".usable", U64)
    if s["counter"] is not None:
        c = want_obj(s["counter"], w + ".counter", ["baseline", "last", "delta", "gap_delta", "resets", "rollovers"])
        validate_point(c["baseline"], w + ".counter.baseline")
        validate_point(c["last"], w + ".counter.last")
        for k in ("delta", "gap_delta"):
            want_num(c[k], "%s.counter.%s" % (w, k), I64)
        for k in ("resets", "rollovers"):
            want_num(c[k], "%s.counter.%s" % (w, k), U32)
    for j, g in enumerate(want_list(s["gaps"], w + ".gaps")):
        gw = "%s.gaps[%d]" % (w, j)
        want_obj(g, gw, ["start_ms", "end_ms", "reason"])
        want_num(g["start_ms"], gw + ".start_ms", U64)
        want_num(g["end_ms"], gw + ".end_ms", U64)
        want_str(g["reason"], gw + ".reason")


def validate_frame(f, w):
    want_obj(f, w, ["device", "seq", "boot", "firmware", "base_time_ms", "received_ms", "channels",
                    "samples", "sig", "late"])
    want_id(f["device"], w + ".device")
    want_num(f["seq"], w + ".seq", U64)
    want_num(f["boot"], w + ".boot", U32)
    want_str(f["firmware"], w + ".firmware")
    want_num(f["base_time_ms"], w + ".base_time_ms", U64, null=True)
    want_num(f["received_ms"], w + ".received_ms", U64)
    for j, c in enumerate(want_list(f["channels"], w + ".channels")):
        cw = "%s.channels[%d]" % (w, j)
        want_obj(c, cw, ["id", "quantity", "kind"])
        want_id(c["id"], cw + ".id")
        want_enum(c["quantity"], cw + ".quantity", QUANTITIES)
        want_enum(c["kind"], cw + ".kind", KINDS)
    for j, smp in enumerate(want_list(f["samples"], w + ".samples")):
        sw = "%s.samples[%d]" % (w, j)
        if not isinstance(smp, list) or len(smp) != 4:
            bad(sw, "expected [channel_index, offset_ms, value, quality]")
        for x, ty, what in zip(smp, (U8, U32, I64, U8), ("channel_index", "offset_ms", "value", "quality")):
            want_num(x, "%s %s" % (sw, what), ty)
    want_str(f["sig"], w + ".sig", null=True)
    if f["sig"] is not None and b64url_decode(f["sig"]) is None:
        bad(w + ".sig", "not base64url (spec gap A12)")
    want_bool(f["late"], w + ".late")


def check_frame_rules(f, w):
    """S4.6: a frame record obeys the binary frame's rules (S2.1), signed or
    not (step 5, `malformed`)."""
    # boot, offset_ms and value ranges are their types (checked in step 3).
    want_int(f["seq"], w + ".seq", lo=1)
    if len(f["firmware"].encode("utf-8", "surrogatepass")) > 32:
        bad(w + ".firmware", "longer than 32 bytes")
    chans = f["channels"]
    if not 1 <= len(chans) <= 255:
        bad(w + ".channels", "%d channels (1..=255)" % len(chans))
    ids = set()
    for j, c in enumerate(chans):
        if c["id"] in ids:
            bad("%s.channels[%d].id" % (w, j), "channel id %r twice in one frame" % c["id"])
        ids.add(c["id"])
    samples = f["samples"]
    if not 1 <= len(samples) <= 4096:
        bad(w + ".samples", "%d samples (1..=4096)" % len(samples))
    for j, s in enumerate(samples):
        sw = "%s.samples[%d]" % (w, j)
        want_int(s[0], sw + "[0] channel_index", hi=len(chans) - 1)
        want_int(s[3], sw + "[3] quality", hi=0x7F)
        if chans[s[0]]["quantity"] == "status" and s[2] not in (0, 1):
            bad(sw, "a status value is 0 or 1, not %d" % s[2])


def check_values(r):
    """S12 step 5: value rules (`malformed`), calibration dates
    (`invalid_date`), frame rules (`malformed`), frame order (`frame_order`)."""
    h = r["header"]
    p = h["period"]
    if not p["start_ms"] < p["end_ms"]:
        bad("header.period", "start_ms %d not before end_ms %d" % (p["start_ms"], p["end_ms"]))
    if h["report_id"] != "%s-%012d" % (h["gateway"], h["seq"]):
        bad("header.report_id", "%r is not <gateway>-<seq as at least 12 digits>" % h["report_id"])
    for i, d in enumerate(r["devices"]):
        w = "devices[%d]" % i
        want_int(d["sample_interval_ms"], w + ".sample_interval_ms", lo=1, null=True)
        want_int(d["counter_modulus"], w + ".counter_modulus", lo=2, null=True)
    for i, e in enumerate(r["events"]):
        if "seqs" in e and e["kind"] != "frames_given_up":
            bad("events[%d].seqs" % i, "only frames_given_up events carry seqs")
    ids = [d["id"] for d in r["devices"]]
    for a, b in zip(ids, ids[1:]):
        if not a < b:
            bad("devices", "not sorted by id and unique (%r then %r)" % (a, b))
    times = [e["time_ms"] for e in r["events"]]
    for i, (a, b) in enumerate(zip(times, times[1:])):
        if b < a:
            bad("events[%d]" % (i + 1), "events not sorted by time_ms")
    for d in r["devices"]:
        check_calibration_dates(d)
    frames = r["readings"]["frames"]
    for i, f in enumerate(frames):
        check_frame_rules(f, "readings.frames[%d]" % i)
    for a, b in zip(frames, frames[1:]):
        if not (a["device"], a["seq"]) < (b["device"], b["seq"]):
            raise Reject("frame_order", "frame %s/%d then %s/%d: not sorted by (device, seq) and unique"
                         % (a["device"], a["seq"], b["device"], b["seq"]))


def validate_calculation(c, w):
    want_obj(c, w, ["id", "methodology", "bindings", "parameters", "inputs", "completeness",
                    "awd_start", "awd_end", "re", "pe", "er", "excluded", "treatment"])
    want_str(c["id"], w + ".id")
    want_enum(c["methodology"], w + ".methodology", ROLES)
    for j, b in enumerate(want_list(c["bindings"], w + ".bindings")):
        bw = "%s.bindings[%d]" % (w, j)
        want_obj(b, bw, ["role", "device", "channel", "quantity"], ["group"])
        want_enum(b["role"], bw + ".role", ALL_ROLES)
        want_id(b["device"], bw + ".device")
        want_id(b["channel"], bw + ".channel")
        want_enum(b["quantity"], bw + ".quantity", QUANTITIES)
        if "group" in b:
            want_str(b["group"], bw + ".group")
            if b["group"] == "":
                # S4: an empty group is omitted; the canonical payload has no "".
                bad(bw + ".group", 'an empty group is omitted, not ""')
    params = c["parameters"]
    if not isinstance(params, dict):
        bad(w + ".parameters", "expected an object")
    for name, pv in params.items():
        pw = "%s.parameters.%s" % (w, name)
        want_obj(pv, pw, ["value", "unit", "source"])
        want_str(pv["value"], pw + ".value")
        want_str(pv["unit"], pw + ".unit")
        want_str(pv["source"], pw + ".source")
    if not isinstance(c["inputs"], dict):
        bad(w + ".inputs", "expected an object")
    for name, iv in c["inputs"].items():
        want_str(iv, "%s.inputs.%s" % (w, name))
    for j, cp in enumerate(want_list(c["completeness"], w + ".completeness")):
        cw = "%s.completeness[%d]" % (w, j)
        want_obj(cp, cw, ["role", "device", "channel", "expected", "received", "usable", "gap_ms"])
        want_str(cp["role"], cw + ".role")
        want_str(cp["device"], cw + ".device")
        want_str(cp["channel"], cw + ".channel")
        want_num(cp["expected"], cw + ".expected", U64, null=True)
        want_num(cp["received"], cw + ".received", U64)
        want_num(cp["usable"], cw + ".usable", U64)
        want_num(cp["gap_ms"], cw + ".gap_ms", U64, null=True)
    for k in ("awd_start", "awd_end"):
        if c[k] is None:
            continue
        if not isinstance(c[k], dict):
            bad("%s.%s" % (w, k), "expected an object or null")
        for tube, st in c[k].items():
            tw = "%s.%s[%r]" % (w, k, tube)
            want_obj(st, tw, ["dry_since_ms", "counted", "drainage_events"])
            want_num(st["dry_since_ms"], tw + ".dry_since_ms", U64, null=True)
            want_bool(st["counted"], tw + ".counted")
            want_num(st["drainage_events"], tw + ".drainage_events", U32)
    for k in ("re", "pe", "er"):
        a = want_obj(c[k], "%s.%s" % (w, k), ["exact", "decimal"])
        want_str(a["exact"], "%s.%s.exact" % (w, k))
        want_str(a["decimal"], "%s.%s.decimal" % (w, k))
    for j, e in enumerate(want_list(c["excluded"], w + ".excluded")):
        ew = "%s.excluded[%d]" % (w, j)
        want_obj(e, ew, ["device", "reason"])
        want_str(e["device"], ew + ".device")
        want_str(e["reason"], ew + ".reason")
    want_str(c["treatment"], w + ".treatment")


# ---------------------------------------------------------------------------
# Trust: gateway keys and the device registry (S10)
# ---------------------------------------------------------------------------


class GatewayKeys:
    """The trusted gateway keys. A JWS `kid` finds the JWK whose `kid` member
    equals it or, failing that, whose RFC 7638 thumbprint does (S3)."""

    def __init__(self):
        self.by_kid = {}
        self.by_thumbprint = {}

    def find(self, kid):
        return self.by_kid.get(kid, self.by_thumbprint.get(kid))


def load_gateway_keys(paths):
    """GatewayKeys from JWK or JWK Set files."""
    keys = GatewayKeys()
    for path in paths:
        try:
            with open(path, "rb") as fh:
                doc = parse_json(fh.read())
        except (OSError, ValueError) as e:
            raise UsageError("--keys %s: %s" % (path, e))
        jwks = doc["keys"] if isinstance(doc, dict) and "keys" in doc else [doc]
        if not isinstance(jwks, list):
            raise UsageError("--keys %s: keys is not an array" % path)
        for jwk in jwks:
            raw = ed25519_jwk_bytes(jwk, "--keys %s" % path)
            kid = jwk.get("kid")
            if kid is not None:
                if not isinstance(kid, str):
                    raise UsageError("--keys %s: kid is not a string" % path)
                if keys.by_kid.get(kid, raw) != raw:
                    raise UsageError("--keys %s: two different keys with kid %r" % (path, kid))
                keys.by_kid[kid] = raw
            keys.by_thumbprint[OKPKey.import_key(jwk).thumbprint()] = raw
    return keys


def ed25519_jwk_bytes(jwk, where):
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise UsageError("%s: not an Ed25519 OKP JWK" % where)
    if "d" in jwk:
        raise UsageError("%s: holds a private key (d); give public keys only" % where)
    raw = b64url_decode(jwk.get("x"))
    if raw is None or len(raw) != 32:
        raise UsageError("%s: x is not 32 bytes of base64url" % where)
    try:
        OKPKey.import_key(jwk)  # the JOSE library must agree it is a key
    except Exception as e:  # noqa: BLE001 - any refusal is a usage error
        raise UsageError("%s: joserfc refuses the key: %s" % (where, e))
    return raw


def load_registry(path):
    """device id -> {"unsigned": True} or {"keys": [(x, from_ms, until_ms)]}."""
    try:
        with open(path, "rb") as fh:
            doc = parse_json(fh.read())
    except (OSError, ValueError) as e:
        raise UsageError("--devices %s: %s" % (path, e))
    if not isinstance(doc, dict) or set(doc) != {"devices"} or not isinstance(doc["devices"], list):
        raise UsageError("--devices %s: expected {\"devices\": [...]}" % path)
    reg = {}
    for i, d in enumerate(doc["devices"]):
        w = "--devices %s: devices[%d]" % (path, i)
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not ID_RE.fullmatch(d["id"]):
            raise UsageError("%s: needs an identifier `id`" % w)
        if d["id"] in reg:
            raise UsageError("%s: device %r listed twice" % (w, d["id"]))
        if set(d) == {"id", "unsigned"} and d["unsigned"] is True:
            reg[d["id"]] = {"unsigned": True}
            continue
        if set(d) != {"id", "keys"} or not isinstance(d["keys"], list) or not d["keys"]:
            raise UsageError("%s: expected {id, keys: [..]} or {id, unsigned: true}" % w)
        keys = []
        for j, k in enumerate(d["keys"]):
            kw = "%s.keys[%d]" % (w, j)
            if not isinstance(k, dict) or "jwk" not in k or not set(k) <= {"jwk", "valid_from", "valid_until"}:
                raise UsageError("%s: expected {jwk, valid_from?, valid_until?}" % kw)
            raw = ed25519_jwk_bytes(k["jwk"], kw + ".jwk")
            bounds = []
            for b in ("valid_from", "valid_until"):
                if k.get(b) is None:
                    bounds.append(None)
                    continue
                t = parse_rfc3339_ms(k[b])
                if t is None:
                    raise UsageError("%s.%s: not an RFC 3339 time: %r" % (kw, b, k[b]))
                bounds.append(t)
            keys.append((raw, bounds[0], bounds[1]))
        reg[d["id"]] = {"keys": keys}
    return reg


def check_registry(report, registry):
    """S10: every device record of the report against the trusted registry."""
    start = report["header"]["period"]["start_ms"]
    end = report["header"]["period"]["end_ms"]
    for d in report["devices"]:
        entry = registry.get(d["id"])
        if entry is None and d["kind"] == "unregistered" and d["signing"] == "unsigned":
            continue  # a device the gateway did not know: it earns nothing (S9.4)
        if entry is None:
            raise Reject("device_not_registered", "device %s is not in the registry" % d["id"])
        listed = d["signing"]
        if entry.get("unsigned"):
            if listed != "unsigned":
                raise Reject("device_key_not_registered",
                             "device %s is registered unsigned but the report lists a key" % d["id"])
            continue
        if listed == "unsigned":
            raise Reject("device_unsigned_mismatch",
                         "device %s is registered with keys but the report lists it unsigned" % d["id"])
        x = b64url_decode(listed["ed25519"]["x"])
        covering = [raw for raw, lo, hi in entry["keys"]
                    if (lo is None or lo <= start) and (hi is None or end <= hi)]
        if x not in covering:
            raise Reject("device_key_mismatch",
                         "device %s: listed key %s is not a registered key covering the period"
                         % (d["id"], listed["ed25519"]["x"]))


# ---------------------------------------------------------------------------
# S6 series
# ---------------------------------------------------------------------------


def sample_time(frame, offset):
    return frame["received_ms"] if frame["base_time_ms"] is None else frame["base_time_ms"] + offset


def usable(quality):
    return not quality & (Q_UNAVAILABLE | Q_OUT_OF_RANGE)


class Collected:
    """One (device, channel): its quantity and kind and its samples, sorted
    by time stably, as (time_ms, value, quality)."""

    def __init__(self, device, channel, quantity, kind):
        self.device = device
        self.channel = channel
        self.quantity = quantity
        self.kind = kind
        self.samples = []

    def usable_samples(self):
        return [s for s in self.samples if usable(s[2])]


def collect_series(report):
    """S6 steps 1-2. Returns {(device, channel): Collected}."""
    out = {}
    for f in report["readings"]["frames"]:
        # A series exists for every channel a frame names (spec gap G-6-a);
        # its quantity and kind are the first naming frame's.
        for c in f["channels"]:
            key = (f["device"], c["id"])
            if key not in out:
                out[key] = Collected(f["device"], c["id"], c["quantity"], c["kind"])
        for idx, offset, value, quality in f["samples"]:
            c = f["channels"][idx]
            s = out[(f["device"], c["id"])]
            if c["quantity"] == s.quantity and c["kind"] == s.kind:
                s.samples.append((sample_time(f, offset), value, quality))
    for s in out.values():
        s.samples.sort(key=lambda t: t[0])  # list.sort is stable
    return out


def counter_walk(usable_samples, baseline, iv, modulus):
    """S6 counter aggregate. Returns (aggregate dict, steps) where steps are
    (time_ms, increase or None, gap, reset) for each step after `prev` is set."""
    tol = (3 * iv) // 2 if iv is not None else None
    prev = None if baseline is None else (baseline["time_ms"], baseline["value"])
    delta = gap_delta = resets = rollovers = 0
    steps = []
    for t, v, q in usable_samples:
        if prev is None:
            prev = (t, v)
            continue
        gap = iv is not None and max(0, t - prev[0]) > tol
        reset_flag = bool(q & Q_COUNTER_RESET)
        d = None
        if v >= prev[1] and not reset_flag:
            d = v - prev[1]
        elif not reset_flag and modulus is not None and prev[1] - v > modulus // 2:
            rollovers += 1
            d = v + modulus - prev[1]
            if d < 0 or d > I64_MAX:  # only values beyond the modulus go negative
                d = None
                resets += 1
        else:
            resets += 1
        if d is not None:
            if gap:
                gap_delta += d
            else:
                delta += d
        steps.append((t, d, gap, d is None))
        prev = (t, v)
    last = None if prev is None else {"time_ms": prev[0], "value": prev[1]}
    agg = {"baseline": baseline, "last": last, "delta": delta, "gap_delta": gap_delta,
           "resets": resets, "rollovers": rollovers}
    return agg, steps


def compute_gaps(series, iv, start, end):
    tol = (3 * iv) // 2
    gaps = []
    covered = start
    for t, _, q in series.samples:
        if not usable(q) or not start <= t < end:
            continue
        if t - covered > tol:
            gaps.append([covered, t])
        covered = max(covered, t)
    if end - covered > tol:
        gaps.append([covered, end])
    unusable_times = [t for t, _, q in series.samples if not usable(q)]  # sorted
    out = []
    for a, b in gaps:
        i = bisect.bisect_left(unusable_times, a)
        reason = "unusable_quality" if i < len(unusable_times) and unusable_times[i] <= b else "no_data"
        out.append({"start_ms": a, "end_ms": b, "reason": reason})
    return out


def compute_series(report, collected, stated_by_key):
    """S6 step 3: the series the report must hold, sorted by (device, channel)."""
    devices = {d["id"]: d for d in report["devices"]}
    start = report["header"]["period"]["start_ms"]
    end = report["header"]["period"]["end_ms"]
    out = []
    for key in sorted(collected):
        s = collected[key]
        dev = devices.get(s.device)
        iv = dev["sample_interval_ms"] if dev else None
        modulus = dev["counter_modulus"] if dev else None
        us = s.usable_samples()
        values = [v for _, v, _ in us]
        counter = None
        if s.kind == "counter":
            stated = stated_by_key.get(key)
            baseline = None
            if stated is not None and isinstance(stated.get("counter"), dict):
                baseline = stated["counter"]["baseline"]
            counter, _ = counter_walk(us, baseline, iv, modulus)
        out.append({
            "device": s.device,
            "channel": s.channel,
            "quantity": s.quantity,
            "kind": s.kind,
            "unit": QUANTITIES[s.quantity][1],
            "expected": (end - start) // iv if iv is not None else None,
            "received": len(s.samples),
            "usable": len(us),
            "first_ms": s.samples[0][0] if s.samples else None,
            "last_ms": s.samples[-1][0] if s.samples else None,
            "sum": None if s.kind == "counter" else sum(values),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "counter": counter,
            "gaps": compute_gaps(s, iv, start, end) if iv is not None else [],
        })
    return out


def check_series(report, collected):
    stated = report["series"]
    stated_by_key = {}
    for s in stated:
        stated_by_key.setdefault((s["device"], s["channel"]), s)
    expected = compute_series(report, collected, stated_by_key)
    want_keys = [(s["device"], s["channel"]) for s in expected]
    have_keys = [(s["device"], s["channel"]) for s in stated]
    if want_keys != have_keys:
        missing = sorted(set(want_keys) - set(have_keys))
        extra = sorted(set(have_keys) - set(want_keys))
        if missing or extra:
            detail = "missing %s; unexpected %s" % (
                ["%s/%s" % k for k in missing], ["%s/%s" % k for k in extra])
        else:
            detail = "series not sorted by (device, channel) and unique"
        raise Reject("series_mismatch", detail)
    for want, have in zip(expected, stated):
        for k in want:
            if not same(want[k], have[k]):
                raise Reject("aggregate_mismatch", "series %s/%s: %s is %s, recomputed %s" % (
                    want["device"], want["channel"], k, jcs(have[k]), jcs(want[k])))
    return {(s["device"], s["channel"]): s for s in expected}


# ---------------------------------------------------------------------------
# S7 continuity
# ---------------------------------------------------------------------------


def give_up_ranges(report):
    """device -> [(first, last)] of its frames_given_up events (S7, S8)."""
    out = {}
    for i, e in enumerate(report["events"]):
        if e["kind"] != "frames_given_up":
            continue
        sq = e.get("seqs")
        if "device" not in e or sq is None or not 1 <= sq["first"] <= sq["last"]:
            raise Reject("bad_give_up_event", "events[%d] (frames_given_up at %d): %s" % (
                i, e["time_ms"], "no device" if "device" not in e else "no valid seqs range"))
        out.setdefault(e["device"], []).append((sq["first"], sq["last"]))
    return out


def continuity_records(report, after_seq):
    """The continuity records a report must hold given each device's stated
    `after_seq` (S7); raises on a repeat or a hole."""
    items = {}
    for f in report["readings"]["frames"]:
        items.setdefault(f["device"], []).append((f["seq"], f["seq"], 1))
    for dev, ranges in give_up_ranges(report).items():
        for a, b in ranges:
            items.setdefault(dev, []).append((a, b, 0))
    devices = set(items) | {d for d, a in after_seq.items() if a > 0}
    records = []
    for dev in sorted(devices):
        after = after_seq.get(dev, 0)
        pos = after
        its = sorted(items.get(dev, []))
        for first, last, kind in its:
            what = "frame %d" % first if kind else "give-up %d..%d" % (first, last)
            if first <= pos:
                raise Reject("continuity_repeat", "device %s: %s at or below seq %d already accounted for"
                             % (dev, what, pos))
            if first > pos + 1:
                raise Reject("continuity_hole", "device %s: seqs %d..%d missing and not given up (before %s)"
                             % (dev, pos + 1, first - 1, what))
            pos = last
        records.append({
            "device": dev,
            "after_seq": after,
            "first_seq": its[0][0] if its else None,
            "last_seq": pos,
            "frames": sum(1 for it in its if it[2]),
            "given_up": [{"first": a, "last": b} for a, b, k in its if not k],
        })
    return records


def check_continuity(report):
    give_up_ranges(report)  # bad_give_up_event comes before the rest
    after = {}
    for cr in report["continuity"]:
        after.setdefault(cr["device"], cr["after_seq"])
    expected = continuity_records(report, after)
    if not same(expected, report["continuity"]):
        want = {cr["device"]: cr for cr in expected}
        for cr in report["continuity"]:
            if cr["device"] not in want:
                raise Reject("continuity_mismatch", "record for device %s which has nothing to account for"
                             % cr["device"])
            if not same(cr, want[cr["device"]]):
                raise Reject("continuity_mismatch", "device %s: stated %s, recomputed %s"
                             % (cr["device"], jcs(cr), jcs(want[cr["device"]])))
        raise Reject("continuity_mismatch", "records missing, repeated or out of order: stated devices %s, "
                     "expected %s" % ([c["device"] for c in report["continuity"]],
                                      [c["device"] for c in expected]))
    return expected


# ---------------------------------------------------------------------------
# S9 calculations
# ---------------------------------------------------------------------------


def binding_key(b):
    return (b["role"], b["device"], b["channel"], b.get("group", ""))


def check_bindings(calc, devices):
    meth = calc["methodology"]
    roles = ROLES[meth]
    bs = calc["bindings"]
    cid = calc["id"]
    keys = [binding_key(b) for b in bs]
    for a, b in zip(keys, keys[1:]):
        if not a < b:
            raise Reject("binding_invalid", "%s: bindings not sorted and unique (%s then %s)" % (cid, a, b))
    seen = set()
    for b in bs:
        where = "%s: binding %s %s/%s" % (cid, b["role"], b["device"], b["channel"])
        if b["role"] not in roles:
            raise Reject("binding_invalid", "%s: role is not one of %s's" % (where, meth))
        if b["quantity"] != roles[b["role"]][0]:
            raise Reject("binding_invalid", "%s: quantity %s, the role takes %s"
                         % (where, b["quantity"], roles[b["role"]][0]))
        if b["device"] not in devices:
            raise Reject("binding_invalid", "%s: device not in devices" % where)
        direction = KIND_DIRECTION.get(devices[b["device"]]["kind"])
        accepted = ROLE_DIRECTIONS.get(b["role"])
        if direction is not None and accepted is not None and direction not in accepted:
            raise Reject("binding_invalid", "%s: a %s device (%s) cannot be bound as %s"
                         % (where, devices[b["device"]]["kind"], direction, b["role"]))
        dc = (b["device"], b["channel"])
        if dc in seen:
            raise Reject("binding_invalid", "%s: (device, channel) bound twice" % where)
        seen.add(dc)
        if meth != "biogas_digester" and b.get("group", "") != "":
            raise Reject("binding_invalid", "%s: group %r outside biogas" % (where, b["group"]))
    count = {}
    for b in bs:
        count[b["role"]] = count.get(b["role"], 0) + 1
    if meth == "solar_pv" and count.get("generation", 0) + count.get("export", 0) < 1:
        raise Reject("binding_invalid", "%s: no generation or export binding" % cid)
    if meth == "solar_pump" and count.get("pump_energy", 0) < 1:
        raise Reject("binding_invalid", "%s: no pump_energy binding" % cid)
    if meth == "rice_awd" and count.get("water_level", 0) < 1:
        raise Reject("binding_invalid", "%s: no water_level binding" % cid)
    if meth == "biogas_digester":
        groups = {}
        for b in bs:
            g = groups.setdefault(b.get("group", ""), {})
            g[b["role"]] = g.get(b["role"], 0) + 1
        if not groups:
            raise Reject("binding_invalid", "%s: no group" % cid)
        for name, g in sorted(groups.items()):
            for role in BIOGAS_REQUIRED:
                if g.get(role, 0) != 1:
                    raise Reject("binding_invalid", "%s: group %r has %d %s bindings (exactly 1)"
                                 % (cid, name, g.get(role, 0), role))
            if g.get("flame", 0) > 1:
                raise Reject("binding_invalid", "%s: group %r has %d flame bindings (at most 1)"
                             % (cid, name, g["flame"]))


def check_calibration_dates(device):
    cal = device["calibration"]
    if cal is None:
        return None
    on = parse_date_ms(cal["calibrated_on"])
    due = parse_date_ms(cal["due_on"])
    if on is None:
        raise Reject("invalid_date", "device %s: calibration.calibrated_on %r is not a valid date"
                     % (device["id"], cal["calibrated_on"]))
    if due is None:
        raise Reject("invalid_date", "device %s: calibration.due_on %r is not a valid date"
                     % (device["id"], cal["due_on"]))
    return on, due


def param(calc, name, lo=None, hi=None):
    p = calc["parameters"].get(name)
    v = parse_decimal(p["value"]) if p is not None else None
    if v is None:
        raise Reject("calculation_mismatch", "%s: parameter %s missing or not a decimal" % (calc["id"], name))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Reject("calculation_mismatch", "%s: parameter %s = %s outside [%s, %s]"
                     % (calc["id"], name, p["value"], lo, hi))
    return v


class CalcContext:
    """What a calculation is recomputed from: the report, its recomputed
    series and collected samples."""

    def __init__(self, report, collected, series):
        self.report = report
        self.devices = {d["id"]: d for d in report["devices"]}
        self.collected = collected
        self.series = series
        self.start = report["header"]["period"]["start_ms"]
        self.end = report["header"]["period"]["end_ms"]


def recompute_calculation(ctx, calc):
    """S9.3-S9.5: returns the members a calculation must state."""
    roles = ROLES[calc["methodology"]]
    bs = calc["bindings"]
    period = ctx.end - ctx.start

    # S9.4 exclusions (per device).
    excluded = set()
    for b in bs:
        dev = ctx.devices[b["device"]]
        dates = check_calibration_dates(dev)  # valid: checked in step 5
        if dev["kind"] == "unregistered":
            excluded.add((dev["id"], "unregistered"))
        elif dates is not None and ctx.start < dates[0]:
            excluded.add((dev["id"], "calibration_not_yet_valid"))
        elif dates is not None and ctx.end > dates[1]:
            excluded.add((dev["id"], "calibration_expired"))
        s = ctx.series.get((b["device"], b["channel"]))
        if s is not None and (s["quantity"] != b["quantity"] or s["kind"] not in roles[b["role"]][1]):
            excluded.add((dev["id"], "binding_series_mismatch"))
    excluded_devices = {d for d, _ in excluded}
    withheld = False
    for b in bs:
        if roles[b["role"]][2] != "project":
            continue
        s = ctx.series.get((b["device"], b["channel"]))
        if b["device"] in excluded_devices or s is None or s["usable"] == 0:
            excluded.add((b["device"], "subtracted_input_missing"))
            withheld = True
    excluded_list = [{"device": d, "reason": r} for d, r in sorted(excluded)]

    # S9.3 completeness.
    completeness = []
    for b in bs:
        iv = ctx.devices[b["device"]]["sample_interval_ms"]
        s = ctx.series.get((b["device"], b["channel"]))
        if s is not None:
            gap_ms = sum(g["end_ms"] - g["start_ms"] for g in s["gaps"]) if iv is not None else None
            row = (s["expected"], s["received"], s["usable"], gap_ms)
        else:
            row = (period // iv if iv is not None else None, 0, 0, period if iv is not None else None)
        completeness.append({"role": b["role"], "device": b["device"], "channel": b["channel"],
                             "expected": row[0], "received": row[1], "usable": row[2], "gap_ms": row[3]})

    live = [b for b in bs if b["device"] not in excluded_devices]
    meth = calc["methodology"]
    awd_end = None
    if meth in ("solar_pv", "solar_pump"):
        inputs, re_, pe = solar(ctx, calc, live, roles, withheld)
    elif meth == "biogas_digester":
        inputs, re_, pe = biogas(ctx, calc, excluded_devices)
    else:
        inputs, re_, pe, awd_end = rice(ctx, calc, live, completeness, bs)
    return {
        "inputs": inputs,
        "completeness": completeness,
        "re": amount(re_),
        "pe": amount(pe),
        "er": amount(re_ - pe),
        "excluded": excluded_list,
        "awd_end": awd_end,
    }


def credited(s):
    return s["counter"]["delta"] if s["kind"] == "counter" else s["sum"]


def measured(s):
    if s["kind"] == "counter":
        return s["counter"]["delta"] + s["counter"]["gap_delta"]
    return s["sum"]


def solar(ctx, calc, live, roles, withheld):
    ref = proj = info = 0
    for b in live:
        s = ctx.series.get((b["device"], b["channel"]))
        if s is None:
            continue
        side = roles[b["role"]][2]
        if side == "reference":
            ref += credited(s)
        elif side == "project":
            proj += measured(s)
        else:
            info += measured(s)
    ef = param(calc, "ef" if calc["methodology"] == "solar_pv" else "ef_displaced")
    inputs = {}
    if withheld:
        inputs["withheld_re_energy_wh"] = str(ref)
        ref = 0
    inputs["re_energy_wh"] = str(ref)
    inputs["pe_energy_wh"] = str(proj)
    if calc["methodology"] == "solar_pump" and any(b["role"] == "water_volume" for b in calc["bindings"]):
        inputs["water_volume_ml"] = str(info)
    return inputs, Fraction(ref, 10**6) * ef, Fraction(proj, 10**6) * ef


def latest(points, times, t, max_age):
    i = bisect.bisect_right(times, t)
    if i == 0:
        return None
    pt, v = points[i - 1]
    return v if t - pt <= max_age else None


def biogas(ctx, calc, excluded_devices):
    gwp = param(calc, "gwp_ch4")
    rho = param(calc, "rho_ch4")
    de = param(calc, "destruction_efficiency", 0, 1)
    groups = {}
    for b in calc["bindings"]:
        groups.setdefault(b.get("group", ""), {})[b["role"]] = b
    tot = {"gas_volume_ml": 0, "gas_normal_ml": 0, "ch4_normal_ml": 0, "unpaired_ml": 0, "unflared_ml": 0}
    for name in sorted(groups):
        g = groups[name]
        if any(b["device"] in excluded_devices for b in g.values()):
            continue

        def samples_of(b):
            c = ctx.collected.get((b["device"], b["channel"]))
            return c if c is not None and c.quantity == b["quantity"] else None

        gb = g["gas_volume"]
        gas = samples_of(gb)
        gdev = ctx.devices[gb["device"]]
        intervals = []
        if gas is not None and gas.kind == "counter":
            stated = ctx.series[(gb["device"], gb["channel"])]
            _, steps = counter_walk(gas.usable_samples(), stated["counter"]["baseline"],
                                    gdev["sample_interval_ms"], gdev["counter_modulus"])
            intervals = [(t, d) for t, d, gap, reset in steps if d is not None and not gap and not reset]
        elif gas is not None and gas.kind == "delta":
            intervals = [(t, v) for t, v, _ in gas.usable_samples()]
        max_age = 3 * gdev["sample_interval_ms"] if gdev["sample_interval_ms"] is not None else 300000

        pairing = {}
        for role in ("ch4_fraction", "temperature", "pressure", "flame"):
            if role not in g:
                continue
            c = samples_of(g[role])
            pts = [(t, v) for t, v, _ in c.usable_samples()] if c is not None else []
            pairing[role] = (pts, [t for t, _ in pts])

        for t, v in intervals:
            tot["gas_volume_ml"] += v
            w, temp, pres = (latest(*pairing[r], t, max_age) for r in ("ch4_fraction", "temperature", "pressure"))
            if w is None or temp is None or pres is None:
                tot["unpaired_ml"] += v
            elif "flame" in pairing and latest(*pairing["flame"], t, max_age) != 1:
                tot["unflared_ml"] += v
            elif 27315 + temp <= 0 or pres <= 0 or v < 0:
                tot["unpaired_ml"] += v
            else:
                vn = (v * pres * 27315) // (101325 * (27315 + temp))
                tot["gas_normal_ml"] += vn
                tot["ch4_normal_ml"] += (vn * min(max(w, 0), 10000)) // 10000
    inputs = {k: str(v) for k, v in tot.items()}
    re_ = Fraction(tot["ch4_normal_ml"], 10**9) * rho * de * gwp
    return inputs, re_, Fraction(0)


def rice(ctx, calc, live, completeness, bindings):
    names = ["area_ha", "ef_c", "sf_p", "sf_o", "sf_w_baseline", "sf_w_single", "sf_w_multiple",
             "gwp_ch4", "drainage_min_days", "dry_threshold_mm"]
    p = {n: param(calc, n) for n in names}
    thr = math.floor(p["dry_threshold_mm"])
    min_dry_ms = math.floor(p["drainage_min_days"] * DAY_MS)
    tubes = [b for b in live if b["role"] == "water_level"]
    # Every water_level binding, excluded or not, has its share of the field.
    n = max(1, sum(1 for b in bindings if b["role"] == "water_level"))
    tube_area = p["area_ha"] / n
    start_states = calc["awd_start"]
    if start_states is None:
        raise Reject("calculation_mismatch", "%s: awd_start is null for rice_awd" % calc["id"])
    awd_end = {k: dict(v) for k, v in start_states.items()}
    gap_by_binding = {(c["device"], c["channel"]): c["gap_ms"] for c in completeness}
    inputs = {"tubes": str(len(tubes))}
    re_ = pe = Fraction(0)
    period = ctx.end - ctx.start
    for b in tubes:
        key = "%s/%s" % (b["device"], b["channel"])
        st = dict(start_states.get(key, {"dry_since_ms": None, "counted": False, "drainage_events": 0}))
        c = ctx.collected.get((b["device"], b["channel"]))
        us = c.usable_samples() if c is not None and c.quantity == b["quantity"] else []
        for t, level, _ in us:
            if level < thr:
                if st["dry_since_ms"] is None:
                    st["dry_since_ms"] = t
                if not st["counted"] and t - st["dry_since_ms"] > min_dry_ms:
                    st["counted"] = True
                    st["drainage_events"] += 1
            else:
                st["dry_since_ms"] = None
                st["counted"] = False
        awd_end[key] = st
        gap_ms = gap_by_binding[(b["device"], b["channel"])]
        # Without an interval coverage cannot be established: nothing observed.
        observed = 0 if not us or gap_ms is None else period - gap_ms
        events = st["drainage_events"]
        sf_w = p["sf_w_baseline"] if events == 0 else p["sf_w_single"] if events == 1 else p["sf_w_multiple"]
        days = Fraction(observed, DAY_MS)
        base = tube_area * days * p["ef_c"] * p["sf_p"] * p["sf_o"] * p["gwp_ch4"] / 1000
        re_ += base * p["sf_w_baseline"]
        pe += base * sf_w
        inputs["observed_ms:" + key] = str(observed)
        inputs["drainage_events:" + key] = str(events)
    return inputs, re_, pe, awd_end


def check_calculations(report, collected, series):
    calcs = report["calculations"]
    ids = [c["id"] for c in calcs]
    for a, b in zip(ids, ids[1:]):
        if not a < b:
            raise Reject("malformed", "calculations not sorted by id and unique (%r then %r)" % (a, b))
    ctx = CalcContext(report, collected, series)
    verdicts = {}
    for calc in calcs:
        cid = calc["id"]
        check_bindings(calc, ctx.devices)
        want = recompute_calculation(ctx, calc)
        for member in ("inputs", "completeness", "re", "pe", "er", "excluded", "awd_end"):
            if not same(want[member], calc[member]):
                raise Reject("calculation_mismatch", "%s: %s is %s, recomputed %s"
                             % (cid, member, jcs(calc[member]), jcs(want[member])))
        if calc["treatment"] != TREATMENT:
            raise Reject("calculation_mismatch", "%s: treatment text differs from the specified one" % cid)
        verdicts[cid] = {
            "methodology": calc["methodology"],
            "er_exact": want["er"]["exact"],
            "er_decimal": want["er"]["decimal"],
            "unit": "tCO2e",
            "re_exact": want["re"]["exact"],
            "pe_exact": want["pe"]["exact"],
            "inputs": want["inputs"],
            "parameters": {k: v["value"] + " " + v["unit"] for k, v in sorted(calc["parameters"].items())},
            "completeness": want["completeness"],
            "excluded": want["excluded"],
        }
    return verdicts


# ---------------------------------------------------------------------------
# S3 + S12: one report
# ---------------------------------------------------------------------------


class Verified:
    """A report that passed steps 1-10, with what the chain check needs."""

    def __init__(self, path, stored, report, collected, series, continuity, calcs):
        self.path = path
        self.collected = collected
        self.stored = stored
        self.hash = hashlib.sha256(stored).hexdigest()
        self.report = report
        self.header = report["header"]
        self.series = series  # recomputed, by (device, channel)
        self.continuity = continuity
        self.calcs = calcs


def read_stored(path):
    with open(path, "rb") as fh:
        data = fh.read()
    # S3: the stored bytes are the compact JWS and nothing else (a trailing
    # newline is malformed, checked by the split below).
    return data


def verify_container(stored, gateway_keys):
    """S12 steps 1-3 (container part): returns (jws header, payload bytes)."""
    try:
        text = stored.decode("ascii")
    except UnicodeDecodeError:
        raise Reject("malformed", "the report is not ASCII")
    parts = text.split(".")
    if len(parts) != 3:
        raise Reject("malformed", "not three base64url parts separated by '.'")
    raw = [b64url_decode(p) for p in parts]
    if any(r is None for r in raw):
        raise Reject("malformed", "part %d is not base64url" % [r is None for r in raw].index(True))
    try:
        header = parse_json(raw[0])
    except ValueError as e:
        raise Reject("malformed", "JWS header: %s" % e)
    if not isinstance(header, dict):
        raise Reject("malformed", "JWS header is not an object")
    if not isinstance(header.get("alg"), str):
        raise Reject("malformed", "JWS header has no string alg")
    if header["alg"] not in ("EdDSA", "Ed25519"):
        raise Reject("unsupported_alg", "alg %r" % (header["alg"],))
    if not isinstance(header.get("kid"), str):
        raise Reject("malformed", "JWS header has no string kid")
    if "crit" in header:
        raise Reject("malformed", "JWS header has crit")
    key = gateway_keys.find(header["kid"])
    if key is None:
        raise Reject("unknown_kid", "no trusted gateway key with kid %r" % header["kid"])
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(raw[2], signing_input)
    except (InvalidSignature, ValueError):
        raise Reject("bad_signature", "gateway signature does not verify with kid %r" % header["kid"])
    # Second opinion from a JOSE library over the same bytes.
    jwk = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key)})
    try:
        with warnings.catch_warnings():
            # joserfc warns that "EdDSA" is deprecated by RFC 9864; S3
            # requires accepting it, so the warning is only noise.
            warnings.simplefilter("ignore")
            # S3: members other than alg, kid and crit are ignored.
            registry = joserfc_jws.JWSRegistry(algorithms=[header["alg"]], strict_check_header=False)
            obj = joserfc_jws.deserialize_compact(stored, jwk, algorithms=[header["alg"]], registry=registry)
    except Exception as e:  # noqa: BLE001 - any refusal is reported
        raise Reject("bad_signature", "joserfc refuses the JWS that cryptography accepted: %s" % e)
    if obj.payload != raw[1]:
        raise Reject("malformed", "joserfc and base64url disagree on the payload")
    return header, raw[1]


def verify_report(path, stored, gateway_keys, registry):
    """S12 steps 1-10. Returns Verified or raises Reject."""
    header, payload = verify_container(stored, gateway_keys)
    try:
        report = parse_json(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise Reject("malformed", "payload: %s" % e)
    # A report of another schema is named as such before its shape is judged.
    if isinstance(report, dict) and isinstance(report.get("header"), dict):
        schema = report["header"].get("schema")
        if is_int(schema) and schema != 2:
            raise Reject("unsupported_schema", "schema %d (this verifier knows 2)" % schema)
    check_int_range(report)
    validate_report(report)
    if report["header"]["schema"] != 2:
        raise Reject("unsupported_schema", "schema %r" % report["header"]["schema"])
    if jcs_bytes(report) != payload:
        raise Reject("malformed", "payload is not the JCS canonical form of its object")
    if report["header"]["kid"] != header["kid"]:
        raise Reject("kid_mismatch", "header.kid %r, JWS kid %r" % (report["header"]["kid"], header["kid"]))

    # Step 4: registry.
    check_registry(report, registry)

    # Step 5.
    check_values(report)
    period = report["header"]["period"]
    frames = report["readings"]["frames"]

    # Step 6: Merkle.
    leaves = []
    for f in frames:
        for i, (idx, offset, value, quality) in enumerate(f["samples"]):
            leaf = [f["device"], f["seq"], i, f["channels"][idx]["id"], sample_time(f, offset), value, quality]
            leaves.append(jcs_bytes(leaf))
    if report["readings"]["count"] != len(leaves):
        raise Reject("reading_count_mismatch", "readings.count %d, samples %d"
                     % (report["readings"]["count"], len(leaves)))
    root = merkle_root(leaves).hex()
    if root != report["readings"]["merkle_root"]:
        raise Reject("merkle_mismatch", "merkle_root %s, recomputed %s" % (report["readings"]["merkle_root"], root))

    # Step 7: per frame.
    devices = {d["id"]: d for d in report["devices"]}
    site = report["header"]["site"]
    for f in frames:
        where = "frame %s/%d" % (f["device"], f["seq"])
        first_t = sample_time(f, f["samples"][0][1])
        if f["late"] != (first_t < period["start_ms"]):
            raise Reject("late_flag_mismatch", "%s: late is %s, first sample at %d, period starts %d"
                         % (where, jcs(f["late"]), first_t, period["start_ms"]))
        dev = devices.get(f["device"])
        if dev is None:
            raise Reject("unknown_device", "%s: device not in devices" % where)
        if dev["signing"] == "unsigned":
            if f["sig"] is not None:
                raise Reject("malformed", "%s: sig on a frame of an unsigned device" % where)
            continue
        if f["sig"] is None:
            raise Reject("device_signature_missing", "%s: no sig" % where)
        sig = b64url_decode(f["sig"])
        x = b64url_decode(dev["signing"]["ed25519"]["x"])
        try:
            pub = Ed25519PublicKey.from_public_bytes(x)
        except ValueError:
            raise Reject("bad_key", "device %s: listed key is not an Ed25519 public key" % f["device"])
        try:
            if sig is None or len(sig) != 64:
                raise InvalidSignature()
            pub.verify(sig, frame_signing_bytes(site, f))
        except InvalidSignature:
            raise Reject("device_signature_invalid", "%s: device signature does not verify" % where)

    # Steps 8-10.
    continuity = check_continuity(report)
    collected = collect_series(report)
    series = check_series(report, collected)
    calcs = check_calculations(report, collected, series)
    return Verified(path, stored, report, collected, series, continuity, calcs)


# ---------------------------------------------------------------------------
# S11 chain
# ---------------------------------------------------------------------------


class ChainState:
    """What the accepted reports of one gateway have established."""

    def __init__(self):
        self.accepted = {}  # seq -> Verified
        self.last = None  # the latest accepted Verified
        self.points = {}  # (device, channel) -> last usable point
        self.last_seq = {}  # device -> last_seq accounted for
        self.awd_end = {}  # calculation id -> awd_end of the latest report with it

    def accept(self, v):
        self.accepted[v.header["seq"]] = v
        self.last = v
        for key, s in v.series.items():
            if s["counter"] is not None:
                self.points[key] = s["counter"]["last"]
        for cr in v.continuity:
            self.last_seq[cr["device"]] = cr["last_seq"]
        for c in v.report["calculations"]:
            if c["methodology"] == "rice_awd":
                self.awd_end[c["id"]] = c["awd_end"]


def chain_check(state, v, allow_mid):
    """S11 for report `v` against the accepted state. Returns warnings."""
    h = v.header
    warnings = []
    if state.last is None:
        if h["seq"] != 1 or h["prev_hash"] != ZERO_HASH:
            if not allow_mid:
                if h["seq"] != 1:
                    raise Reject("seq_gap", "the chain of %s starts at seq %d, not 1 (--allow-mid-chain "
                                 "to verify a slice)" % (h["gateway"], h["seq"]))
                raise Reject("prev_hash_mismatch", "seq 1 with prev_hash %s, not 64 zeros" % h["prev_hash"])
            warnings.append("MID-CHAIN: the chain of %s is verified from seq %d; its stated prev_hash, "
                            "counter baselines, continuity after_seq and awd_start are taken as given"
                            % (h["gateway"], h["seq"]))
            return warnings
    else:
        if h["seq"] <= state.last.header["seq"]:
            prev = state.accepted.get(h["seq"])
            what = ""
            if prev is not None:
                what = ("; the same bytes as %s (a re-send)" % prev.path if prev.stored == v.stored
                        else "; a DIFFERENT report than the accepted %s (equivocation)" % prev.path)
            raise Reject("replay", "%s seq %d is at or below the accepted seq %d%s"
                         % (h["gateway"], h["seq"], state.last.header["seq"], what))
        if h["seq"] != state.last.header["seq"] + 1:
            raise Reject("seq_gap", "%s seq %d follows accepted seq %d"
                         % (h["gateway"], h["seq"], state.last.header["seq"]))
        if h["prev_hash"] != state.last.hash:
            raise Reject("prev_hash_mismatch", "prev_hash %s, the report hash of seq %d is %s"
                         % (h["prev_hash"], state.last.header["seq"], state.last.hash))
        if h["period"]["start_ms"] != state.last.header["period"]["end_ms"]:
            raise Reject("period_discontinuity", "period starts %d, the previous ended %d"
                         % (h["period"]["start_ms"], state.last.header["period"]["end_ms"]))
    for key, s in sorted(v.series.items()):
        if s["counter"] is None:
            continue
        want = state.points.get(key)
        if not same(s["counter"]["baseline"], want):
            raise Reject("baseline_mismatch", "series %s/%s: baseline %s, the chain's last usable point %s"
                         % (key[0], key[1], jcs(s["counter"]["baseline"]), jcs(want)))
    records = {cr["device"]: cr for cr in v.continuity}
    for cr in v.continuity:
        want = state.last_seq.get(cr["device"], 0)
        if cr["after_seq"] != want:
            raise Reject("continuity_chain", "device %s: after_seq %d, the chain's last_seq %d"
                         % (cr["device"], cr["after_seq"], want))
    for dev in sorted(state.last_seq):
        if dev not in records:
            raise Reject("continuity_chain", "device %s (last_seq %d) has no continuity record"
                         % (dev, state.last_seq[dev]))
    for c in v.report["calculations"]:
        if c["methodology"] != "rice_awd":
            continue
        want = state.awd_end.get(c["id"], {})
        if not same(c["awd_start"], want):
            raise Reject("awd_chain_mismatch", "%s: awd_start %s, the previous awd_end %s"
                         % (c["id"], jcs(c["awd_start"]), jcs(want)))
    return warnings


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def run(paths, gateway_keys, registry, allow_mid):
    verdicts = [None] * len(paths)
    verified = []
    for i, path in enumerate(paths):
        try:
            stored = read_stored(path)
        except OSError as e:
            verdicts[i] = {"file": path, "ok": False, "reason": "malformed", "detail": "cannot read: %s" % e}
            continue
        try:
            v = verify_report(path, stored, gateway_keys, registry)
        except Reject as e:
            verdicts[i] = {"file": path, "ok": False, "reason": e.reason, "detail": e.detail}
            continue
        v.index = i
        verified.append(v)

    by_gateway = {}
    for v in verified:
        by_gateway.setdefault(v.header["gateway"], []).append(v)
    for gateway, vs in sorted(by_gateway.items()):
        vs.sort(key=lambda v: (v.header["seq"], v.index))
        state = ChainState()
        for v in vs:
            try:
                warnings = chain_check(state, v, allow_mid)
            except Reject as e:
                verdicts[v.index] = {"file": v.path, "ok": False, "reason": e.reason, "detail": e.detail}
                continue
            state.accept(v)
            h = v.header
            verdicts[v.index] = {
                "file": v.path,
                "ok": True,
                "report_id": h["report_id"],
                "gateway": h["gateway"],
                "seq": h["seq"],
                "site": h["site"],
                "period": h["period"],
                "hash": v.hash,
                "readings": v.report["readings"]["count"],
                "frames": len(v.report["readings"]["frames"]),
                "calculations": v.calcs,
                "continuity": v.continuity,
                "given_up": [e for e in v.report["events"] if e["kind"] == "frames_given_up"],
                "warnings": warnings,
            }
    return verdicts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", action="append", required=True, metavar="GATEWAY.pub.jwk",
                    help="trusted gateway public key (JWK or JWK Set); repeat for several gateways")
    ap.add_argument("--devices", required=True, metavar="REGISTRY.json", help="the trusted device registry (S10)")
    ap.add_argument("--allow-mid-chain", action="store_true",
                    help="let each gateway's chain start at a later seq, taking its stated baselines as given")
    ap.add_argument("reports", nargs="+", metavar="REPORT.jws")
    args = ap.parse_args(argv)
    try:
        keys = load_gateway_keys(args.keys)
        registry = load_registry(args.devices)
    except UsageError as e:
        print("verify_report.py: %s" % e, file=sys.stderr)
        return 2
    verdicts = run(args.reports, keys, registry, args.allow_mid_chain)
    for v in verdicts:
        print(json.dumps(v, sort_keys=True))
    return 0 if all(v["ok"] for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
