"""Realistic CSV files of form responses in the upload format (multilingual text, quotes, commas,
newlines inside cells, several forms), for demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import csv
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta

FORMS = {
    "household-survey-2024": ["village", "household_size", "water_source", "notes"],
    "clinic-visit": ["patient_age", "symptoms", "temperature_c", "notes"],
    "crop-yield": ["district", "crop", "yield_kg", "notes"],
}
QUESTIONS = sorted({q for qs in FORMS.values() for q in qs})
TEXT = ["ok", "needs follow-up", "Zoë's farm, near the river", 'said "yes"', "multi\nline note",
        "नमस्ते", "مرحبا", "你好", "=1+1 looks like a formula", "comma, separated", ""]
VALUES = {
    "village": ["Kibera", "Dharavi", "São Paulo", "Ñuñoa", "Łódź"],
    "water_source": ["well", "river", "tap", "rain"],
    "symptoms": ["fever", "cough", "none", "fever, cough"],
    "district": ["North", "South", "East", "West"],
    "crop": ["maize", "rice", "cassava", "millet"],
}


def answer(question: str, rng: random.Random) -> str:
    if question in VALUES:
        return rng.choice(VALUES[question])
    if question in ("household_size", "patient_age"):
        return str(rng.randint(1, 90))
    if question == "temperature_c":
        return f"{rng.uniform(35.5, 40.5):.1f}"
    if question == "yield_kg":
        return f"{rng.uniform(10, 5000):.2f}"
    return rng.choice(TEXT)


def write_responses(out, count: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["response_id", "form_id", "submitted_at", *QUESTIONS])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    forms = list(FORMS)
    for _ in range(count):
        form = rng.choice(forms)
        submitted = start + timedelta(seconds=rng.randint(0, 365 * 24 * 3600))
        own = FORMS[form]
        writer.writerow([
            uuid.UUID(int=rng.getrandbits(128), version=4),
            form,
            submitted.isoformat().replace("+00:00", "Z"),
            *[answer(q, rng) if q in own else "" for q in QUESTIONS],
        ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a realistic CSV of N form responses.")
    parser.add_argument("count", nargs="?", type=int, default=20000, help="number of responses (default 20000)")
    parser.add_argument("--out", default="data/responses.csv", help="output path, '-' for stdout")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("count must not be negative")
    if args.out == "-":
        write_responses(sys.stdout, args.count, args.seed)
        return 0
    import pathlib

    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        write_responses(out, args.count, args.seed)
    print(f"wrote {args.count} responses to {path}")
    return 0


def csv_bytes(count: int, seed: int = 42) -> bytes:
    import io

    out = io.StringIO(newline="")
    write_responses(out, count, seed)
    return out.getvalue().encode("utf-8")
