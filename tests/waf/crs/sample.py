#!/usr/bin/env python3
"""Writes the sample of the OWASP CRS regression tests that `tests/suite/waf.rs`
replays through the gateway.

Usage: `python3 sample.py /path/to/coreruleset` (from this directory; needs PyYAML).

For each rule of the families below, takes the first tests (in the rule's
file order) whose every stage expects a rule to fire (`expect_ids`), at most
PER_RULE[family] of them, and writes them in go-ftw's format to
`<REQUEST-9xx-…>/<rule>.yaml`, as in CRS's `tests/regression/tests/`. Values
are kept as the strings CRS wrote (YAML's base loader: no `1234` read as a
number); only ids are written as numbers. Also writes `paranoia-levels.txt`:
each sampled rule's paranoia level (its `paranoia-level/N` tag in CRS's
`rules/`), which the replay runs it at.
"""

import os
import re
import shutil
import subprocess
import sys

import yaml

PER_RULE = {
    "913": 2, "921": 2, "930": 4, "931": 3, "932": 2, "933": 3,
    "934": 2, "941": 5, "942": 5, "944": 3,
}


def positive(test):
    return all((s.get("output", {}).get("log") or {}).get("expect_ids") for s in test["stages"])


def ids(value):
    return [int(v) for v in value] if isinstance(value, list) else value


def paranoia_levels(crs):
    """Rule id -> its paranoia level, from CRS's rule files."""
    levels = {}
    rules = os.path.join(crs, "rules")
    for name in os.listdir(rules):
        if not name.endswith(".conf"):
            continue
        with open(os.path.join(rules, name), encoding="utf-8") as f:
            for chunk in f.read().split("SecRule ")[1:]:
                rule_id = re.search(r"\bid:(\d+)", chunk)
                level = re.search(r"paranoia-level/(\d)", chunk)
                if rule_id and level:
                    levels[int(rule_id.group(1))] = int(level.group(1))
    return levels


def main():
    crs = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(crs, "tests", "regression", "tests")
    version = subprocess.run(
        ["git", "-C", crs, "describe", "--tags", "--always"], capture_output=True, text=True
    ).stdout.strip()
    total = 0
    levels = paranoia_levels(crs)
    sampled = []
    for family_dir in sorted(os.listdir(root)):
        family = family_dir[8:11]
        if not family_dir.startswith("REQUEST-") or family not in PER_RULE:
            continue
        out_dir = os.path.join(here, family_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        for name in sorted(os.listdir(os.path.join(root, family_dir))):
            with open(os.path.join(root, family_dir, name), encoding="utf-8") as f:
                doc = yaml.load(f, Loader=yaml.BaseLoader)
            if not doc or "tests" not in doc:
                continue
            tests = [t for t in doc["tests"] if positive(t)][: PER_RULE[family]]
            if not tests:
                continue
            for test in tests:
                test["test_id"] = int(test["test_id"])
                for stage in test["stages"]:
                    log = stage["output"]["log"]
                    for key in ("expect_ids", "no_expect_ids"):
                        if key in log:
                            log[key] = ids(log[key])
                total += len(test["stages"])
            doc["rule_id"] = int(doc["rule_id"])
            sampled.append(int(name.split(".")[0]))
            doc["tests"] = tests
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(f"# From OWASP CRS {version}, {family_dir}/{name} (Apache-2.0).\n")
                yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True, width=1000)
    with open(os.path.join(here, "paranoia-levels.txt"), "w", encoding="utf-8") as f:
        f.write("# rule paranoia-level, from OWASP CRS's rules/ (see sample.py)\n")
        for rule_id in sorted(sampled):
            f.write(f"{rule_id} {levels[rule_id]}\n")
    print(f"{total} stages", file=sys.stderr)


if __name__ == "__main__":
    main()
