#!/usr/bin/env python3
"""Writes a corpus of report cases built from docs/REPORT-FORMAT.md by a
stranger's builder (report_builder.py), to be judged by the reference (Rust)
verifier and by verify_report.py: tests/tests/report_python.rs asserts both
give each case the verdict stated here.

It reaches rules the shared vectors do not exercise: give-ups, late frames,
counter rollovers and resets, exclusions, a withheld reference side, a device
without interval, a channel whose kind changes, biogas pairing gaps, rice
tubes across a chain, a device that goes quiet; and a tamper case for every
reason label the vectors lack.

Usage: report_corpus.py OUTDIR
Writes OUTDIR/gateway.pub.jwk, OUTDIR/registry.json and, per case,
OUTDIR/<good|tamper>/<case>/NN.jws + expect.json in the layout of
shared/tests/vectors (S13): {"what", "reason": null} for a good case,
{"what", "reason", "file"} for a tamper case. Files are reproducible (keys
derived from a fixed seed).
"""

import copy
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_report as vr  # noqa: E402
from report_builder import ENERGY, MIN, T0, Site, b64, binding, energy_frame, finish  # noqa: E402

HOUR = 3_600_000


class Carry:
    """What the next report of a chain must continue from (S11)."""

    def __init__(self):
        self.after = {}
        self.baselines = {}
        self.awd = {}
        self.prev_hash = vr.ZERO_HASH
        self.seq = 0
        self.end = None

    def advance(self, r, jws):
        for c in r["continuity"]:
            self.after[c["device"]] = c["last_seq"]
        for s in r["series"]:
            if s["counter"] is not None:
                self.baselines[(s["device"], s["channel"])] = s["counter"]["last"]
        for c in r["calculations"]:
            if c["methodology"] == "rice_awd":
                self.awd[c["id"]] = c["awd_end"]
        self.prev_hash = hashlib.sha256(jws).hexdigest()
        self.seq = r["header"]["seq"]
        self.end = r["header"]["period"]["end_ms"]


def make_site():
    s = Site("gw-py-01", seed="report_corpus")
    s.add_device("pv-1")
    s.add_device("pv-old", calibration=("2025-01-01", "2026-01-01"))
    s.add_device("pv-noiv", interval=None)
    s.add_device("grid", signed=False, kind="modbus_meter")
    s.add_device("pump", kind="irrigation_pump")
    for d in ("gas", "ch4", "tp"):
        s.add_device(d, interval=MIN, modulus=None, kind="digester", calibration=None)
    for d in ("tube-1", "tube-2"):
        s.add_device(d, interval=HOUR, modulus=None, kind="paddy_water_level", calibration=None)
    s.add_device("tube-old", interval=HOUR, modulus=None, kind="paddy_water_level",
                 calibration=("2025-01-01", "2025-12-01"))
    return s


PV_CALC = ("pv", "solar_pv", [binding("generation", "pv-1", "energy", "energy"),
                              binding("import", "grid", "energy", "energy")], {"ef": "0.5113"}, None)
BIOGAS_PARAMS = {"gwp_ch4": "28", "rho_ch4": "0.716", "destruction_efficiency": "0.9"}
RICE_PARAMS = {"area_ha": "2.5", "ef_c": "1.3", "sf_p": "1", "sf_o": "1", "sf_w_baseline": "1",
               "sf_w_single": "0.6", "sf_w_multiple": "0.52", "gwp_ch4": "28", "drainage_min_days": "0.1",
               "dry_threshold_mm": "-150"}


def ramp(start, n, step=25):
    return [start + i * step for i in range(n)]


def pv_chain(s, n=2):
    """A plain PV chain: pv-1 (generation) and grid (import), one frame each
    per 60 s period, six samples 10 s apart."""
    out, carry = [], Carry()
    for k in range(n):
        start = T0 + k * MIN
        frames = [energy_frame(s, "pv-1", k + 1, start, ramp(10_000 + 150 * k, 6)),
                  energy_frame(s, "grid", k + 1, start, ramp(500 + 30 * k, 6, 5))]
        r = s.report(k + 1, start, start + MIN, frames, calcs=[PV_CALC], after=carry.after,
                     baselines=carry.baselines, prev_hash=carry.prev_hash, device_ids=["grid", "pv-1"])
        j = s.sign(r)
        carry.advance(r, j)
        out.append((r, j))
    return out


def cases(s):
    c = []

    def add(name, what, files, reason=None, at=None):
        c.append((name, what, [f if isinstance(f, bytes) else s.sign(f) for f in files], reason, at))

    chain = pv_chain(s, 3)
    add("pv_chain", "a plain PV chain of three", [j for _, j in chain])

    # --- good: give-up, late frame --------------------------------------
    carry = Carry()
    r1 = s.report(1, T0, T0 + MIN, [energy_frame(s, "pv-1", 1, T0, ramp(100, 3)),
                                    energy_frame(s, "pv-1", 2, T0 + 30_000, ramp(175, 3)),
                                    energy_frame(s, "grid", 1, T0, ramp(10, 6, 1))],
                  calcs=[PV_CALC], device_ids=["grid", "pv-1"])
    j1 = s.sign(r1)
    carry.advance(r1, j1)
    give_up = {"time_ms": T0 + MIN + 5000, "kind": "frames_given_up", "device": "pv-1",
               "seqs": {"first": 3, "last": 3}, "detail": "operator: meter swapped, frame 3 lost"}
    late_grid = energy_frame(s, "grid", 2, T0 + MIN - 5000, ramp(16, 6, 1))  # starts 5 s before the period
    r2 = s.report(2, T0 + MIN, T0 + 2 * MIN,
                  [energy_frame(s, "pv-1", 4, T0 + MIN + 30_000, ramp(400, 3)), late_grid],
                  events=[{"time_ms": T0 + MIN + 1000, "kind": "device_online", "device": "pv-1", "detail": "back"},
                          give_up], calcs=[PV_CALC], after=carry.after, baselines=carry.baselines,
                  prev_hash=carry.prev_hash, device_ids=["grid", "pv-1"])
    assert r2["readings"]["frames"][0]["late"] and r2["continuity"][1]["given_up"] == [{"first": 3, "last": 3}]
    add("giveup_and_late_frame", "pv-1 frame 3 given up by the operator (its time is a gap), a late grid frame",
        [j1, r2])

    # --- good: rollover and reset ----------------------------------------
    f = s.frame("pv-1", 1, T0, ENERGY, [(0, 0, 2**32 - 40, 0), (0, 10_000, 2**32 - 10, 0), (0, 20_000, 15, 0),
                                        (0, 30_000, 100, vr.Q_COUNTER_RESET), (0, 40_000, 130, 0),
                                        (0, 50_000, 120, 0)])
    r = s.report(1, T0, T0 + MIN, [f, energy_frame(s, "grid", 1, T0, ramp(1, 6, 1))], calcs=[PV_CALC],
                 device_ids=["grid", "pv-1"])
    assert r["series"][1]["counter"]["rollovers"] == 1 and r["series"][1]["counter"]["resets"] == 2
    add("counter_rollover_and_reset", "pv-1's counter rolls over 2^32, then restarts (counter_reset), then falls",
        [r])

    # --- good: exclusions, withheld -------------------------------------
    calc = ("pv", "solar_pv", [binding("generation", "pv-1", "energy", "energy"),
                               binding("generation", "pv-old", "energy", "energy"),
                               binding("import", "grid", "energy", "energy")], {"ef": "0.5113"}, None)
    grid_dead = s.frame("grid", 1, T0, ENERGY, [(0, i * 10_000, 0, vr.Q_UNAVAILABLE) for i in range(6)])
    r = s.report(1, T0, T0 + MIN, [energy_frame(s, "pv-1", 1, T0, ramp(1000, 6)),
                                   energy_frame(s, "pv-old", 1, T0, ramp(50, 6)), grid_dead],
                 calcs=[calc], device_ids=["grid", "pv-1", "pv-old"])
    assert r["calculations"][0]["excluded"] == [{"device": "grid", "reason": "subtracted_input_missing"},
                                                {"device": "pv-old", "reason": "calibration_expired"}]
    add("excluded_and_withheld", "pv-old out of calibration; the grid import has no usable sample: "
        "the reference side is withheld", [r])

    # --- good: a device without interval, a channel changing kind --------
    r = s.report(1, T0, T0 + MIN, [energy_frame(s, "pv-noiv", 1, T0, ramp(7, 6)),
                                   s.frame("pv-1", 1, T0, ENERGY, [(0, 0, 10, 0), (0, 10_000, 20, 0)]),
                                   s.frame("pv-1", 2, T0 + 20_000, [("energy", "energy", "delta")],
                                           [(0, 0, 5, 0), (0, 10_000, 5, 0)])],
                 calcs=[("pv", "solar_pv", [binding("generation", "pv-1", "energy", "energy"),
                                            binding("generation", "pv-noiv", "energy", "energy")], {"ef": "1"},
                         None)], device_ids=["pv-1", "pv-noiv"])
    assert r["series"][0]["received"] == 2 and r["series"][1]["expected"] is None
    add("no_interval_and_kind_change", "pv-noiv has no sample interval; pv-1's channel turns from counter to "
        "delta (those samples stay out of the series)", [r])

    # --- good: biogas with a delta gas series and pairing gaps ----------
    gas = s.frame("gas", 1, T0, [("vol", "gas_volume", "delta")],
                  [(0, i * MIN, 20_000 + 1000 * i, 0) for i in range(5)])
    ch4 = s.frame("ch4", 1, T0, [("ch4", "ch4_fraction", "instant")],
                  [(0, 0, 5500, 0), (0, MIN, 5600, vr.Q_OUT_OF_RANGE), (0, 4 * MIN, 5800, 0)])
    tp = s.frame("tp", 1, T0, [("t", "temperature", "instant"), ("p", "pressure", "instant"),
                               ("flame", "status", "instant")],
                 [(0, 0, 3000, 0), (1, 0, 101_000, 0), (2, 0, 1, 0), (2, 2 * MIN, 0, 0), (2, 3 * MIN, 1, 0)])
    bs = [binding("ch4_fraction", "ch4", "ch4", "ch4_fraction", "main"),
          binding("flame", "tp", "flame", "status", "main"),
          binding("gas_volume", "gas", "vol", "gas_volume", "main"),
          binding("pressure", "tp", "p", "pressure", "main"),
          binding("temperature", "tp", "t", "temperature", "main")]
    r = s.report(1, T0, T0 + 5 * MIN, [gas, ch4, tp], calcs=[("biogas", "biogas_digester", bs, BIOGAS_PARAMS, None)],
                 device_ids=["ch4", "gas", "tp"])
    inp = r["calculations"][0]["inputs"]
    assert inp["unpaired_ml"] != "0" and inp["unflared_ml"] != "0", inp
    add("biogas_pairing_and_flame", "delta gas series; CH4 stale for some minutes, T/P too old later, flame out "
        "for a minute", [r])

    # --- good: rice over a chain, one tube excluded, a device going quiet --
    carry = Carry()
    rice_bs = [binding("water_level", d, "lvl", "water_level") for d in ("tube-1", "tube-2", "tube-old")]
    files = []
    levels = {"tube-1": [20, -160, -170, -180, -190, -200], "tube-2": [30, 30, 30, 30, 30, 30],
              "tube-old": [-300] * 6}
    for k in range(2):
        start = T0 + k * 6 * HOUR
        frames = [s.frame(d, k + 1, start, [("lvl", "water_level", "instant")],
                          [(0, h * HOUR, levels[d][h] - 10 * k, 0) for h in range(6)])
                  for d in ("tube-1", "tube-old")]
        if k == 0:  # tube-2 reports only in the first period
            frames.append(s.frame("tube-2", 1, start, [("lvl", "water_level", "instant")],
                                  [(0, h * HOUR, levels["tube-2"][h], 0) for h in range(6)]))
        r = s.report(k + 1, start, start + 6 * HOUR, frames,
                     calcs=[("rice", "rice_awd", rice_bs, RICE_PARAMS, carry.awd.get("rice", {}))],
                     after=carry.after, baselines=carry.baselines, prev_hash=carry.prev_hash,
                     device_ids=["tube-1", "tube-2", "tube-old"])
        j = s.sign(r)
        carry.advance(r, j)
        files.append(r)
    assert files[1]["continuity"][1] == {"device": "tube-2", "after_seq": 1, "first_seq": None, "last_seq": 1,
                                         "frames": 0, "given_up": []}
    add("rice_chain_quiet_tube", "rice over two periods: tube-1 drains, tube-2 goes quiet, tube-old is out of "
        "calibration (keeps its share)", files)

    # --- good: a LoRaWAN tube with lost uplinks and a rejoin (docs/LORAWAN.md) --
    # The two lorawan_* kinds are informative (REPORT-FORMAT §8): the lost
    # uplinks are a no_data gap of the series (hours 1 to 4), the events say why.
    lvl = [("lvl", "water_level", "instant")]
    tube_frames = [s.frame("tube-1", i + 1, T0 + h * HOUR, lvl, [(0, 0, v, 0)])
                   for i, (h, v) in enumerate([(0, 20), (1, -160), (4, -170), (5, -180)])]
    lora_events = [
        {"time_ms": T0 + 4 * HOUR + 1000, "kind": "lorawan_uplinks_lost", "device": "tube-1",
         "detail": "fCnt 13..=14 (2 uplinks) lost: devEui a84041000181c0d3, epoch 0, "
                   "between 2026-01-01T01:00:00Z and 2026-01-01T04:00:00Z (mapping paddy-awd)"},
        {"time_ms": T0 + 4 * HOUR + 2000, "kind": "lorawan_session_reset", "device": "tube-1",
         "detail": "join: devEui a84041000181c0d3, epoch 1, last fCnt 15, new session, "
                   "devAddr 00e1a2b3 -> 01f7c9d2 (mapping paddy-awd)"},
    ]
    r = s.report(1, T0, T0 + 6 * HOUR, tube_frames, events=lora_events,
                 calcs=[("rice", "rice_awd", [binding("water_level", "tube-1", "lvl", "water_level")],
                         RICE_PARAMS, {})], device_ids=["tube-1"])
    assert [(g["start_ms"], g["end_ms"], g["reason"]) for g in r["series"][0]["gaps"]] == \
        [(T0 + HOUR, T0 + 4 * HOUR, "no_data")]
    add("lorawan_lost_uplinks_and_rejoin", "a LoRaWAN tube: 2 uplinks lost (a no_data gap) and a rejoin, "
        "recorded as lorawan_uplinks_lost and lorawan_session_reset", [r])

    # --- good: pump with water, a new device joining the chain ----------
    pump_calc = ("pump", "solar_pump", [binding("pump_energy", "pump", "energy", "energy"),
                                        binding("water_volume", "pump", "water", "water_volume")],
                 {"ef_displaced": "0.8"}, None)
    pump_ch = [("energy", "energy", "counter"), ("water", "water_volume", "counter")]
    carry = Carry()
    files = []
    for k in range(2):
        start = T0 + k * MIN
        frames = [s.frame("pump", k + 1, start, pump_ch,
                          [(i % 2, (i // 2) * 10_000, (1000 if i % 2 else 50) * (6 * k + i // 2 + 1), 0)
                           for i in range(12)])]
        ids = ["pump"]
        if k == 1:
            frames.append(energy_frame(s, "pv-1", 1, start, ramp(5, 6)))
            ids.append("pv-1")
        r = s.report(k + 1, start, start + MIN, frames, calcs=[pump_calc], after=carry.after,
                     baselines=carry.baselines, prev_hash=carry.prev_hash, device_ids=ids)
        j = s.sign(r)
        carry.advance(r, j)
        files.append(r)
    add("pump_and_a_device_joining", "a solar pump with its water meter; pv-1 appears in report 2", files)

    # --- tamper: container ----------------------------------------------
    base, base_j = chain[0]

    def with_header(header, report=base, key=s.gw_key):
        si = b64(vr.jcs_bytes(header)) + "." + b64(vr.jcs_bytes(report))
        return (si + "." + b64(key.sign(si.encode()))).encode()

    add("alg_hs256", "JWS alg HS256", [with_header({"alg": "HS256", "kid": s.kid})], "unsupported_alg", 0)
    add("alg_missing", "JWS header without alg", [with_header({"kid": s.kid})], "malformed", 0)
    add("crit_header", "JWS header with crit", [with_header({"alg": "EdDSA", "kid": s.kid, "crit": ["exp"]})],
        "malformed", 0)
    other = Site("gw-other", seed="report_corpus/other")
    add("unknown_kid", "signed by a key nobody trusts", [with_header({"alg": "EdDSA", "kid": other.kid},
                                                                     key=other.gw_key)], "unknown_kid", 0)
    add("wrong_key_for_kid", "the trusted kid, another key's signature",
        [with_header({"alg": "EdDSA", "kid": s.kid}, key=other.gw_key)], "bad_signature", 0)
    add("trailing_newline", "the stored report with a trailing newline", [base_j + b"\n"], "malformed", 0)
    add("other_header_members_ignored", "alg Ed25519 and an extra header member (both accepted)",
        [with_header({"alg": "Ed25519", "kid": s.kid, "typ": "x", "zz": 1})])

    def tampered(fn, report=base, refinish=False):
        r = copy.deepcopy(report)
        fn(r)
        if refinish:
            finish(r)
        return r

    # --- tamper: object --------------------------------------------------
    add("schema_3", "header.schema 3", [tampered(lambda r: r["header"].update(schema=3))], "unsupported_schema", 0)
    add("kid_mismatch", "header.kid differs from the JWS kid",
        [tampered(lambda r: r["header"].update(kid="gw-py-01-2025"))], "kid_mismatch", 0)
    add("unknown_member", "an unknown member in the header",
        [tampered(lambda r: r["header"].update(note="x"))], "malformed", 0)
    add("unknown_event_kind", "an event of a kind the document does not define",
        [tampered(lambda r: r["events"].append({"time_ms": T0, "kind": "gateway_exploded", "detail": "?"}))],
        "malformed", 0)
    add("explicit_empty_group", 'a binding with "group": ""',
        [tampered(lambda r: r["calculations"][0]["bindings"][0].update(group=""))], "malformed", 0)
    add("seqs_on_other_event", "seqs on a device_offline event",
        [tampered(lambda r: r["events"].append({"time_ms": T0, "kind": "device_offline", "device": "pv-1",
                                                "seqs": {"first": 1, "last": 1}, "detail": "x"}))],
        "malformed", 0)
    add("devices_unsorted", "device records out of order", [tampered(lambda r: r["devices"].reverse())],
        "malformed", 0)
    add("modulus_one", "a counter modulus of 1", [tampered(lambda r: r["devices"][0].update(counter_modulus=1))],
        "malformed", 0)
    add("report_id_wrong", "report_id of another seq",
        [tampered(lambda r: r["header"].update(report_id="gw-py-01-000000000002"))], "malformed", 0)

    def status_two(r):
        f = r["readings"]["frames"][0]
        f["channels"].append({"id": "on", "quantity": "status", "kind": "instant"})
        f["samples"].append([1, 0, 2, 0])
    add("status_value_two", "a status sample of value 2 on the unsigned grid meter",
        [tampered(status_two, refinish=True)], "malformed", 0)
    add("sig_on_unsigned_frame", "a sig on the unsigned grid meter's frame",
        [tampered(lambda r: r["readings"]["frames"][0].update(sig=r["readings"]["frames"][1]["sig"]))],
        "malformed", 0)
    add("unbound_device_bad_date", "a listed device no calculation binds has due_on 2027-02-30",
        [tampered(lambda r: r["devices"].append(dict(copy.deepcopy(s.devices["pv-old"][0]),
                                                     calibration={"certificate": "C", "calibrated_on": "2025-01-01",
                                                                  "due_on": "2027-02-30"})))],
        "invalid_date", 0)
    add("unsigned_device_with_key", "the unsigned grid meter listed with pv-1's key",
        [tampered(lambda r: r["devices"][0].update(signing=copy.deepcopy(r["devices"][1]["signing"])))],
        "device_key_not_registered", 0)
    add("frames_unsorted", "frames out of (device, seq) order, all recomputed",
        [tampered(lambda r: r["readings"]["frames"].reverse(), refinish=True)], "frame_order", 0)
    add("count_off", "readings.count one too many",
        [tampered(lambda r: r["readings"].update(count=r["readings"]["count"] + 1))], "reading_count_mismatch", 0)
    add("late_flag_wrong", "a frame flagged late that is not",
        [tampered(lambda r: r["readings"]["frames"][1].update(late=True))], "late_flag_mismatch", 0)

    def drop_grid_record(r):
        r["devices"] = [d for d in r["devices"] if d["id"] != "grid"]
        r["calculations"] = []
        finish(r, calcs=[])
    add("frame_of_unlisted_device", "the grid meter's record removed, its frames kept",
        [tampered(drop_grid_record)], "unknown_device", 0)
    add("sig_missing", "pv-1's frame without its sig",
        [tampered(lambda r: r["readings"]["frames"][1].update(sig=None))], "device_signature_missing", 0)
    add("continuity_count_wrong", "a continuity record counting 2 frames",
        [tampered(lambda r: r["continuity"][1].update(frames=2))], "continuity_mismatch", 0)
    add("series_missing", "pv-1's series removed", [tampered(lambda r: r["series"].pop())], "series_mismatch", 0)
    add("aggregate_wrong", "pv-1's counter delta raised by 1",
        [tampered(lambda r: r["series"][1]["counter"].update(delta=r["series"][1]["counter"]["delta"] + 1))],
        "aggregate_mismatch", 0)
    add("pv_meter_as_export", "pv-1 (a solar meter: generation) bound as export",
        [tampered(lambda r: r["calculations"][0]["bindings"][0].update(role="export"))], "binding_invalid", 0)

    biog = c[[x[0] for x in c].index("biogas_pairing_and_flame")]
    biog_r = vr.parse_json(vr.b64url_decode(biog[2][0].split(b".")[1].decode()))
    add("destruction_efficiency_above_one", "biogas DE 1.5",
        [tampered(lambda r: r["calculations"][0]["parameters"]["destruction_efficiency"].update(value="1.5"),
                  report=biog_r)], "calculation_mismatch", 0)
    add("treatment_changed", "the treatment text shortened",
        [tampered(lambda r: r["calculations"][0].update(treatment="Missing data earns no credit."))],
        "calculation_mismatch", 0)

    # --- tamper: chain ---------------------------------------------------
    (r1, j1), (r2, j2), (r3, j3) = chain
    add("replay", "report 2 given twice", [j1, j2, j2], "replay", 2)
    add("chain_starts_at_2", "a chain from seq 2 (no mid-chain flag)", [j2, j3], "seq_gap", 0)
    add("prev_hash_wrong", "report 2's prev_hash not report 1's hash",
        [j1, tampered(lambda x: x["header"].update(prev_hash="ab" * 32), report=r2)], "prev_hash_mismatch", 1)

    def shifted(x):
        x["header"]["period"]["start_ms"] += 1000
        finish(x)
    add("period_gap", "report 2 starts 1 s after report 1 ended", [j1, tampered(shifted, report=r2)],
        "period_discontinuity", 1)

    def baseline_moved(x):
        x["series"][1]["counter"]["baseline"]["value"] -= 25
        finish(x)
    add("baseline_moved", "report 2's pv-1 baseline lowered by 25 Wh, all recomputed",
        [j1, tampered(baseline_moved, report=r2)], "baseline_mismatch", 1)

    def grid_dropped(x):
        x["readings"]["frames"] = [f for f in x["readings"]["frames"] if f["device"] != "grid"]
        x["series"] = [sr for sr in x["series"] if sr["device"] != "grid"]
        x["continuity"] = [cr for cr in x["continuity"] if cr["device"] != "grid"]
        x["devices"] = [d for d in x["devices"] if d["id"] != "grid"]
        finish(x, calcs=[("pv", "solar_pv", [binding("generation", "pv-1", "energy", "energy")], {"ef": "0.5113"},
                          None)])
    add("device_vanishes", "report 2 without the grid meter at all (no record), recomputed",
        [j1, tampered(grid_dropped, report=r2)], "continuity_chain", 1)

    rice = c[[x[0] for x in c].index("rice_chain_quiet_tube")]
    rice2 = vr.parse_json(vr.b64url_decode(rice[2][1].split(b".")[1].decode()))

    def awd_reset(x):
        finish(x, calcs=[("rice", "rice_awd", rice_bs, RICE_PARAMS, {})])
    add("awd_state_reset", "rice report 2 starts its tubes from {} instead of report 1's end state",
        [rice[2][0], tampered(awd_reset, report=rice2)], "awd_chain_mismatch", 1)
    return c


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    s = make_site()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gateway.pub.jwk"), "w") as fh:
        json.dump(s.jwk(), fh, indent=1)
    with open(os.path.join(out, "registry.json"), "w") as fh:
        json.dump(s.registry(), fh, indent=1)
    for name, what, files, reason, at in cases(s):
        d = os.path.join(out, "good" if reason is None else "tamper", name)
        os.makedirs(d, exist_ok=True)
        for i, f in enumerate(files):
            with open(os.path.join(d, "%02d.jws" % (i + 1)), "wb") as fh:
                fh.write(f)
        expect = {"what": what, "reason": reason}
        if reason is not None:
            expect["file"] = "%02d.jws" % (at + 1)
        with open(os.path.join(d, "expect.json"), "w") as fh:
            json.dump(expect, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
