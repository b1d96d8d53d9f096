#!/usr/bin/env bash
# Proves the floor of the `dodopayments` peer range (^2.22.0: 2.22.0 is the first release with the
# credit-entitlement API and the credit.* webhooks, per the SDK's CHANGELOG). Installs the oldest
# 2.22.x release the registry has into .test-output/dodo-floor, typechecks the package's sources
# (the testing kit aside: it is typed to the current SDK) against it, and runs the SDK-facing
# tests with `dodopayments` resolved to it. Needs the registry; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

FLOOR_LINE="${DODO_FLOOR_LINE:-~2.22.0}"
DIR=.test-output/dodo-floor

# The oldest release of the floor's minor line (npm would pick the newest).
VERSION="$(npm view "dodopayments@${FLOOR_LINE}" version --json | node -e '
  const versions = [].concat(JSON.parse(require("fs").readFileSync(0, "utf8")));
  const key = (v) => v.split(".").map(Number);
  versions.sort((a, b) => { const [x, y] = [key(a), key(b)]; return x[0] - y[0] || x[1] - y[1] || x[2] - y[2]; });
  process.stdout.write(versions[0]);
')"
echo "dodopayments floor: ${VERSION} (oldest of ${FLOOR_LINE})"

rm -rf "$DIR"
mkdir -p "$DIR/install"
(cd "$DIR/install" && echo '{"name":"dodo-floor","private":true}' > package.json &&
  npm install "dodopayments@${VERSION}" --no-audit --no-fund --ignore-scripts --silent)

# A tree where `src` resolves `dodopayments` to the floor and every other dependency to the repo's.
mkdir -p "$DIR/node_modules"
mv "$DIR/install/node_modules/dodopayments" "$DIR/node_modules/dodopayments"
for entry in node_modules/* node_modules/.bin; do
  name="$(basename "$entry")"
  [ "$name" = dodopayments ] && continue
  case "$name" in
    @*)
      mkdir -p "$DIR/node_modules/$name"
      for scoped in "$entry"/*; do ln -s "$PWD/$scoped" "$DIR/node_modules/$name/$(basename "$scoped")"; done
      ;;
    *) ln -s "$PWD/$entry" "$DIR/node_modules/$name" ;;
  esac
done
ln -s "$PWD/src" "$DIR/src"
cat > "$DIR/tsconfig.json" <<'JSON'
{
  "extends": "../../tsconfig.json",
  "compilerOptions": { "preserveSymlinks": true, "noEmit": true, "paths": {} },
  "include": ["src"],
  "exclude": ["src/testing"]
}
JSON

echo "==> typecheck of src against dodopayments@${VERSION}"
npx tsc -p "$DIR/tsconfig.json"

echo "==> SDK-facing tests with dodopayments@${VERSION}"
npx vitest run --config tools/dodo-floor.vitest.config.ts \
  test/testing/dodo-emulator-credits.test.ts \
  test/testing/dodo-emulator-usage.test.ts \
  test/testing/dodo-emulator-commerce.test.ts \
  test/testing/dodo-emulator-webhooks.test.ts \
  test/dodo-webhooks \
  test/setup/api-account.test.ts \
  test/setup/exactness.test.ts \
  test/reliability/dodo-outage.test.ts \
  test/money-path/require-credits.test.ts
