#!/usr/bin/env python3
"""Checks that .dockerignore keeps the image's build context to what the build needs.

The file must be an allow-list: `*` first (everything ignored), then `!` lines re-including
only the build's inputs. Fails if target/, .git, certs/ (private keys), configs/ (settings are
mounted, not baked; editing them must not rebuild the image) or deploy/ come back in, or if an
input the build needs (the manifests, the lock file, the crates, the migrations) is left out.
"""
import sys

NEVER = ("target", ".git", "certs", "configs", "deploy", "scripts", "docs")
NEEDED = ("Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "crates", "migrations")

lines = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.strip().startswith("#")]
problems = []
if not lines or lines[0] != "*":
    problems.append("the first pattern must be `*` (an allow-list)")
included = [l[1:].strip("/") for l in lines if l.startswith("!")]
for inc in included:
    top = inc.split("/", 1)[0]
    if top in NEVER or top.startswith("*"):
        problems.append(f"`!{inc}` puts {top} back into the build context")
for need in NEEDED:
    if need not in included:
        problems.append(f"`!{need}` is missing: the build needs it")
for p in problems:
    print(f"{sys.argv[1]}: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
