#!/usr/bin/env python3
"""Imports the OWASP Core Rule Set's request rules into `../src/crs.rs`.

Usage: `python3 import.py /path/to/coreruleset > ../src/crs.rs`

Reads `rules/REQUEST-9*.conf` of families 913 (scanners), 921 (protocol
attacks) and 930-944 (LFI, RFI, RCE, PHP, generic, XSS, SQLi, session
fixation, Java) and writes each rule the waf engine can run as an entry of a
static table: its id, paranoia level, severity, message, targets and
excluded targets, transformations and operator, with `@pmFromFile` data
files inlined. A rule is left out when it is a chain, does not block (a
`pass` rule that only sets variables), or reads something the engine has
not (transaction variables, counts, uploaded files); the generated file
lists those ids with the reason. Targets the engine has not (FILES) are dropped
from a rule that has others.
"""

import os
import re
import subprocess
import sys

FAMILIES = ("913", "921", "930", "931", "932", "933", "934", "941", "942", "943", "944")

# CRS variable -> the engine's `Target`.
TARGETS = {
    "ARGS": "Target::Args",
    "ARGS_NAMES": "Target::ArgNames",
    "ARGS_GET": "Target::QueryArgs",
    "ARGS_GET_NAMES": "Target::QueryArgNames",
    "REQUEST_COOKIES": "Target::Cookies",
    "REQUEST_COOKIES_NAMES": "Target::CookieNames",
    "REQUEST_HEADERS": "Target::Headers",
    "REQUEST_HEADERS_NAMES": "Target::HeaderNames",
    "REQUEST_FILENAME": "Target::Filename",
    "REQUEST_BASENAME": "Target::Basename",
    "REQUEST_URI_RAW": "Target::Uri",
    "REQUEST_URI": "Target::Uri",
    "REQUEST_LINE": "Target::RequestLine",
    "REQUEST_BODY": "Target::Body",
    "QUERY_STRING": "Target::QueryString",
    "XML": "Target::Xml",
}
# Targets the engine has not; dropped from a rule.
ABSENT = ("FILES", "FILES_NAMES")

TRANSFORMS = {
    "urlDecodeUni": "UrlDecodeUni",
    "utf8toUnicode": "Utf8ToUnicode",
    "htmlEntityDecode": "HtmlEntityDecode",
    "jsDecode": "JsDecode",
    "cssDecode": "CssDecode",
    "escapeSeqDecode": "EscapeSeqDecode",
    "base64Decode": "Base64Decode",
    "lowercase": "Lowercase",
    "removeNulls": "RemoveNulls",
    "removeWhitespace": "RemoveWhitespace",
    "compressWhitespace": "CompressWhitespace",
    "replaceComments": "ReplaceComments",
    "removeCommentsChar": "RemoveCommentsChar",
    "cmdLine": "CmdLine",
    "normalizePath": "NormalizePath",
    "normalizePathWin": "NormalizePathWin",
}

SEVERITIES = {"CRITICAL": "Critical", "ERROR": "Error", "WARNING": "Warning", "NOTICE": "Notice"}


def logical_lines(text):
    """The directives of a .conf file, continuation lines joined."""
    buf = ""
    for line in text.splitlines():
        line = line.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        yield (buf + line).strip()
        buf = ""


def words(line):
    """A directive's words; a double-quoted one without its quotes (`\\"` is a quote)."""
    out, i, n = [], 0, len(line)
    while i < n:
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            j, cur = i + 1, ""
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] == '"':
                    cur += '"'
                    j += 2
                    continue
                cur += line[j]
                j += 1
            out.append(cur)
            i = j + 1
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            out.append(line[i:j])
            i = j
    return out


def actions(text):
    """`id:1,t:none,tag:'x'` -> [("id", "1"), ("t", "none"), ("tag", "x")]."""
    parts, cur, quoted = [], "", False
    for c in text:
        if c == "'":
            quoted = not quoted
        if c == "," and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    out = []
    for part in parts:
        key, _, value = part.partition(":")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out.append((key.strip(), value))
    return out


def rust_str(s):
    """`s` as a Rust string literal: raw, unless it has characters one cannot
    see (CRS's lists have zero-width spaces), which are escaped."""
    if not s.isprintable():
        escaped = "".join(
            c if c.isprintable() and c not in '"\\' else f"\\u{{{ord(c):x}}}" for c in s
        )
        return f'"{escaped}"'
    hashes = "#"
    while '"' + hashes in s:
        hashes += "#"
    return f'r{hashes}"{s}"{hashes}'


def data_file(crs, name):
    with open(os.path.join(crs, "rules", name), encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]


class Skip(Exception):
    pass


def targets(spec):
    """The `targets` and `exclude` of a rule's variables."""
    include, exclude = [], []
    for var in spec.split("|"):
        negated = var.startswith("!")
        var = var.lstrip("!")
        if var.startswith("&"):
            raise Skip("counts a collection")
        name, _, selector = var.partition(":")
        if name in ABSENT:
            continue
        if name not in TARGETS:
            raise Skip(f"reads {name}")
        if negated:
            if not selector or name not in ("REQUEST_HEADERS", "REQUEST_COOKIES", "ARGS", "ARGS_NAMES"):
                raise Skip(f"excludes {var}")
            if selector.startswith("/") and selector.endswith("/"):
                exclude.append(f"Exclude::Pattern({TARGETS[name]}, {rust_str(selector[1:-1])})")
            else:
                exclude.append(f"Exclude::Exact({TARGETS[name]}, {rust_str(selector.lower())})")
            continue
        if name == "XML":
            # `XML:/*` (texts) and `XML://@*` (attribute values): one target.
            if TARGETS[name] not in include:
                include.append(TARGETS[name])
            continue
        if selector:
            if name != "REQUEST_HEADERS" or selector.startswith("/"):
                raise Skip(f"selects {var}")
            include.append(f"Target::Header({rust_str(selector.lower())})")
        else:
            include.append(TARGETS[name])
    if not include:
        raise Skip("reads nothing the engine has")
    return include, exclude


def operator(crs, op):
    negated = op.startswith("!")
    op = op.lstrip("!")
    if not op.startswith("@"):
        op = "@rx " + op
    name, _, arg = op.partition(" ")
    if name == "@rx":
        value = f"Operator::Rx({rust_str(arg)})"
    elif name == "@detectSQLi":
        value = "Operator::DetectSqli"
    elif name == "@detectXSS":
        value = "Operator::DetectXss"
    elif name == "@pm":
        value = "Operator::Pm(&[" + ", ".join(rust_str(w) for w in arg.split()) + "])"
    elif name == "@pmFromFile":
        phrases = [p for f in arg.split() for p in data_file(crs, f)]
        value = "Operator::Pm(&[" + ", ".join(rust_str(p) for p in phrases) + "])"
    elif name == "@contains":
        value = f"Operator::Contains({rust_str(arg)})"
    else:
        raise Skip(f"uses {name}")
    if "%{" in arg:
        raise Skip("expands a variable in its operator")
    return value, negated


def rule(crs, words_, acts):
    spec, op = words_[1], words_[2]
    keys = [k for k, _ in acts]
    if "chain" in keys:
        raise Skip("a chain")
    if "block" not in keys:
        raise Skip("does not block")
    values = dict(acts)
    severity = SEVERITIES.get(values.get("severity", "").upper())
    if severity is None:
        raise Skip("no severity")
    level = [v.rsplit("/", 1)[1] for k, v in acts if k == "tag" and v.startswith("paranoia-level/")]
    if not level:
        raise Skip("no paranoia level")
    transforms = []
    for k, v in acts:
        if k != "t" or v == "none":
            continue
        if v not in TRANSFORMS:
            raise Skip(f"transforms with {v}")
        transforms.append(f"Transform::{TRANSFORMS[v]}")
    include, exclude = targets(spec)
    op_value, negated = operator(crs, op)
    return (
        "    RuleDef {\n"
        f"        id: {values['id']},\n"
        f"        paranoia: {level[0]},\n"
        f"        severity: Severity::{severity},\n"
        f"        msg: {rust_str(values.get('msg', ''))},\n"
        f"        targets: &[{', '.join(include)}],\n"
        f"        exclude: &[{', '.join(exclude)}],\n"
        f"        transforms: &[{', '.join(transforms)}],\n"
        f"        multi_match: {'true' if 'multiMatch' in keys else 'false'},\n"
        f"        negated: {'true' if negated else 'false'},\n"
        f"        operator: {op_value},\n"
        "    },\n"
    )


def main():
    crs = sys.argv[1]
    version = subprocess.run(
        ["git", "-C", crs, "describe", "--tags", "--always"], capture_output=True, text=True
    ).stdout.strip()
    entries, skipped = [], []
    for file in sorted(os.listdir(os.path.join(crs, "rules"))):
        if not (file.startswith("REQUEST-") and file.endswith(".conf") and file[8:11] in FAMILIES):
            continue
        with open(os.path.join(crs, "rules", file), encoding="utf-8") as f:
            text = f.read()
        in_chain = False
        for line in logical_lines(text):
            if not line.startswith("SecRule"):
                continue
            w = words(line)
            acts = actions(w[3]) if len(w) > 3 else []
            starts_chain = any(k == "chain" for k, _ in acts)
            if in_chain:
                in_chain = starts_chain
                continue
            in_chain = starts_chain
            rule_id = dict(acts).get("id")
            # The families' own paranoia-level gates (9xx011..9xx018).
            if rule_id is None or "skipAfter" in dict(acts):
                continue
            try:
                entries.append(rule(crs, w, acts))
            except Skip as why:
                skipped.append(f"{rule_id} ({why})")
    out = sys.stdout
    out.write(
        "//! The OWASP Core Rule Set's request rules the engine runs: written by\n"
        f"//! `crs/import.py` from CRS {version or 'unknown'}; do not edit. CRS is\n"
        "//! Apache-2.0 licensed (`crs/LICENSE`); its regular expressions, phrase\n"
        "//! lists, ids, paranoia levels and severities are copied unchanged.\n"
        "//!\n"
        "//! Left out:\n"
    )
    for i in range(0, len(skipped), 4):
        out.write("//! " + ", ".join(skipped[i : i + 4]) + ("," if i + 4 < len(skipped) else ".") + "\n")
    out.write(
        "\nuse crate::rule::{Exclude, Operator, RuleDef, Severity, Target};\n"
        "use crate::transform::Transform;\n\n"
        f"/// The {len(entries)} imported rules, in CRS's order.\n"
        "pub(crate) static RULES: &[RuleDef] = &[\n"
    )
    out.write("".join(entries))
    out.write("];\n")


if __name__ == "__main__":
    main()
