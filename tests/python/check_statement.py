#!/usr/bin/env python3
"""Checks a crediting statement pack (receiver/src/statement) with tools we
did not write: openpyxl reads the workbook back; the totals are recomputed
from the reports' JWS payloads with Python's exact fractions, rounded down
once; every file's SHA-256 is checked against MANIFEST.sha256.

Usage: check_statement.py PACK_DIR
Prints one JSON line {"reports", "er_exact", "er_decimal", "er_tonnes"} and
exits 0 when everything agrees; otherwise prints what differs and exits 1.
"""
import base64
import csv
import hashlib
import json
import math
import os
import sys
from fractions import Fraction

import openpyxl


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def frac(text):
    # "n" or "n/d" (docs/REPORT-FORMAT.md section 1).
    if "/" in text:
        n, d = text.split("/")
        return Fraction(int(n), int(d))
    return Fraction(int(text))


def floor_decimal(x, places):
    scaled = math.floor(x * 10**places)
    sign = "-" if scaled < 0 else ""
    a = abs(scaled)
    return f"{sign}{a // 10**places}.{a % 10**places:0{places}d}"


def exact_text(x):
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def main(pack):
    # 1. The manifest covers every file and every hash matches.
    listed = {}
    with open(os.path.join(pack, "MANIFEST.sha256"), encoding="utf-8") as f:
        for line in f:
            h, rel = line.rstrip("\n").split("  ", 1)
            listed[rel] = h
    for root, _, files in os.walk(pack):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), pack)
            if rel in ("MANIFEST.sha256", "STATEMENT.note"):
                continue
            if rel not in listed:
                fail(f"{rel} is not in the manifest")
            with open(os.path.join(pack, rel), "rb") as g:
                if hashlib.sha256(g.read()).hexdigest() != listed[rel]:
                    fail(f"{rel}: SHA-256 differs from the manifest")
    # 2. The exact ER from the reports themselves.
    re_sum, pe_sum, er_sum, n, per_report = Fraction(0), Fraction(0), Fraction(0), 0, {}
    for rel in sorted(listed):
        if not (rel.startswith("reports/") and rel.endswith(".jws")):
            continue
        with open(os.path.join(pack, rel), "rb") as g:
            parts = g.read().decode("ascii").strip().split(".")
        payload = json.loads(b64url(parts[1]))
        n += 1
        for c in payload["calculations"]:
            re_sum += frac(c["re"]["exact"])
            pe_sum += frac(c["pe"]["exact"])
            er_sum += frac(c["er"]["exact"])
            per_report[(payload["header"]["report_id"], c["id"])] = c["er"]["exact"]
    want = {
        "reports": n,
        "er_exact": exact_text(er_sum),
        "er_decimal": floor_decimal(er_sum, 6),
        "er_tonnes": math.floor(er_sum),
    }
    # 3. The workbook, read back by openpyxl.
    wb = openpyxl.load_workbook(os.path.join(pack, "statement.xlsx"), read_only=True)
    for sheet in ("Summary", "Parameters", "Calculation", "Completeness", "Gaps and events"):
        if sheet not in wb.sheetnames:
            fail(f"workbook has no sheet {sheet!r} ({wb.sheetnames})")
    summary = {r[0]: r[1] for r in wb["Summary"].iter_rows(min_row=2, values_only=True)}
    got_summary = {
        "reports": summary["Reports counted"],
        "er_exact": summary["ER exact (tCO2e)"],
        "er_decimal": summary["ER rounded down once, 6 decimals (tCO2e)"],
        "er_tonnes": summary["ER rounded down once, whole tonnes (tCO2e)"],
    }
    if got_summary != want:
        fail(f"Summary sheet {got_summary} != recomputed {want}")
    rows = list(wb["Calculation"].iter_rows(values_only=True))
    header = rows[0]
    col = {h: i for i, h in enumerate(header)}
    totals = {r[0]: r for r in rows[1:] if r[0] and str(r[0]).startswith("Period total")}
    er_col = col["ER (tCO2e, exact)"]
    re_col = col["RE (tCO2e, exact)"]
    pe_col = col["PE (tCO2e, exact)"]
    got_calc = (
        totals["Period total (exact sum)"][er_col],
        totals["Period total, rounded down once (6 decimals)"][er_col],
        totals["Period total, rounded down once (whole tonnes)"][er_col],
    )
    if got_calc != (want["er_exact"], want["er_decimal"], want["er_tonnes"]):
        fail(f"Calculation sheet total {got_calc} != recomputed {want}")
    if totals["Period total (exact sum)"][re_col] != exact_text(re_sum):
        fail("Calculation sheet RE total differs")
    if totals["Period total (exact sum)"][pe_col] != exact_text(pe_sum):
        fail("Calculation sheet PE total differs")
    # Every report's row is its payload's ER, and nothing else is counted.
    seen = {}
    for r in rows[1:]:
        if r[0] and str(r[0]).startswith("Period total"):
            continue
        seen[(r[col["Report"]], r[col["Calculation"]])] = r[er_col]
    if seen != per_report:
        fail(f"Calculation rows differ from the reports: {len(seen)} rows, {len(per_report)} report calculations")
    # 4. The CSV says the same.
    with open(os.path.join(pack, "csv", "calculation.csv"), newline="", encoding="utf-8") as f:
        crow = {r[0]: r for r in csv.reader(f) if r and r[0].startswith("Period total")}
    if crow["Period total, rounded down once (whole tonnes)"][er_col] != str(want["er_tonnes"]):
        fail("calculation.csv total differs")
    # 5. totals.json too.
    with open(os.path.join(pack, "totals.json"), encoding="utf-8") as f:
        t = json.load(f)
    if (t["amounts"]["er"]["exact"], t["amounts"]["er"]["decimal"], t["amounts"]["er"]["tonnes"]) != (
        want["er_exact"], want["er_decimal"], want["er_tonnes"]):
        fail("totals.json differs")
    print(json.dumps(want))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
