#!/usr/bin/env bash
# Refresh assets/disposable/domains.txt from the npm package `disposable-email-domains`
# (github.com/ivolo/disposable-email-domains, MIT).
#
# Usage: scripts/refresh-disposable.sh [VERSION]     (default: the package's `latest` tag)
#
# Takes index.json (exact domains: written as is) and wildcard.json (domains whose subdomains
# are all disposable: written `*.domain`, matching the domain and its subdomains), converts
# IDNs to ASCII (punycode) with Node's url.domainToASCII, lowercases, drops anything that is
# not a plain LDH domain, sorts (LC_ALL=C) and de-duplicates. index.json holds some public
# suffixes (edu.pl, my.id): matched exactly, they never deny the domains registered under them. Then rewrites the version and date in
# assets/disposable/PROVENANCE.md. Needs: npm, node, tar.
set -euo pipefail

pkg=disposable-email-domains
version=${1:-$(npm view "$pkg" version)}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/assets/disposable"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$pkg@$version" >/dev/null && tar xzf "$pkg-$version.tgz")

node - "$work/package" >"$work/domains.txt" <<'JS'
const path = require("path");
const { domainToASCII } = require("url");
const dir = process.argv[2];
const all = [
  ...require(path.join(dir, "index.json")).map((d) => ["", d]),
  ...require(path.join(dir, "wildcard.json")).map((d) => ["*.", d]),
];
const ldh = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;
const seen = new Set();
let dropped = 0;
for (const [prefix, raw] of all) {
  const d = domainToASCII(String(raw).trim()).toLowerCase().replace(/\.$/, "");
  if (!ldh.test(d) || /^[0-9]+$/.test(d.split(".").pop())) { dropped++; continue; }
  seen.add(prefix + d);
}
// A wildcard entry covers the domain itself: its exact twin is dropped.
const out = [...seen].filter((d) => d.startsWith("*.") || !seen.has("*." + d));
process.stdout.write(out.join("\n") + "\n");
if (dropped) process.stderr.write(`dropped ${dropped} entries that are not plain domains\n`);
JS

LC_ALL=C sort -u "$work/domains.txt" >"$out/domains.txt"
count=$(wc -l <"$out/domains.txt")
today=$(date -u +%F)
if [ -f "$out/PROVENANCE.md" ]; then
  sed -i -E \
    -e "s/^(- Version: ).*/\1$version/" \
    -e "s/^(- Taken: ).*/\1$today/" \
    -e "s/^(- Domains: ).*/\1$count/" \
    "$out/PROVENANCE.md"
fi
echo "wrote $count domains from $pkg@$version to $out/domains.txt"
