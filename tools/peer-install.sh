#!/usr/bin/env bash
# Proves that the packed package installs next to the current major of every peer, as a user's
# `npm install express-llm-billing express dodopayments ioredis` does in a fresh folder: npm
# resolves the whole tree against the registry, peer ranges included, and fails with ERESOLVE on
# a conflict. `--dry-run` resolves without downloading. Needs `npm run build` first.
#   tools/peer-install.sh              every peer at its `latest` dist-tag
#   tools/peer-install.sh ioredis@5    …with these versions instead (the older supported majors)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

tarball="$(npm pack --silent --pack-destination "$scratch" | tail -n 1)"
# Every peer of package.json at `latest`, unless an argument names a version for it.
mapfile -t peers < <(node -e '
  const overrides = new Map(process.argv.slice(1).map((spec) => [spec.replace(/(.)@.*$/, "$1"), spec]));
  for (const name of Object.keys(require("./package.json").peerDependencies ?? {}))
    console.log(overrides.get(name) ?? `${name}@latest`);
' "$@")

cd "$scratch"
printf '{ "name": "fresh-app", "version": "1.0.0", "private": true }\n' >package.json
echo "npm install $tarball ${peers[*]}"
npm install --dry-run --no-audit --no-fund --loglevel=error "./$tarball" "${peers[@]}" >install.log 2>&1 || {
  cat install.log
  echo "FAILED: the package does not install next to ${peers[*]}" >&2
  exit 1
}
# What npm chose for each peer, so the log shows the majors that were proven.
for peer in "${peers[@]}"; do
  name="${peer%@*}"
  grep -E "^add ${name} " install.log || { cat install.log; echo "FAILED: npm did not add ${name}" >&2; exit 1; }
done
