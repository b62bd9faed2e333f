#!/usr/bin/env bash
# Sets up everything from a machine that has only Node.js and npm, then runs the main job.
#   bash setup.sh            install, then run `cxr quickstart` and `cxr demo` on the built-in defaults
#   bash setup.sh --no-run   install only (CI uses this)
# What it installs: Bun (from npm) if absent, the workspace packages, on Linux without a usable
# WebGPU adapter Mesa's software Vulkan driver (lavapipe), and what the tests need: Debian's numpy,
# scikit-learn, torch, torchvision, redis-server and chromium (as root; else it prints the commands).
set -euo pipefail
cd "$(dirname "$0")"

BUN_VERSION=1.3.14
run_main=1
for argument in "$@"; do
  case "$argument" in
    --no-run) run_main=0 ;;
    *) echo "setup.sh: unknown option $argument (use --no-run)" >&2; exit 2 ;;
  esac
done

say() { printf '\n== %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: Node.js and npm are required (https://nodejs.org or your package manager)." >&2
  exit 1
fi

if ! command -v bun >/dev/null 2>&1; then
  say "Installing Bun $BUN_VERSION from npm"
  if [ "$(id -u)" = 0 ]; then
    npm install -g --allow-scripts=bun "bun@$BUN_VERSION" 2>/dev/null || npm install -g "bun@$BUN_VERSION"
  else
    npm install --prefix "$HOME/.local" -g "bun@$BUN_VERSION"
    export PATH="$HOME/.local/bin:$PATH"
    echo "Bun went to ~/.local/bin; add it to PATH in your shell profile."
  fi
fi
bun --version >/dev/null || { echo "setup.sh: the bun binary does not run (its npm postinstall must run)" >&2; exit 1; }

say "Installing packages (bun install)"
# better-sqlite3 (the server's job store under Node) compiles from source when no prebuilt binary
# can be downloaded. Bun then falls back to `bunx node-gyp@latest`, which fails on Node 20: give it
# npm's own node-gyp and the Node headers npm is configured with (or /usr/include/node).
npm_gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
if ! command -v node-gyp >/dev/null 2>&1 && [ -f "$npm_gyp" ]; then
  gyp_bin=$(mktemp -d)
  ln -s "$npm_gyp" "$gyp_bin/node-gyp"
  export PATH="$gyp_bin:$PATH"
fi
node_headers=$(npm config get nodedir 2>/dev/null || true)
if { [ -z "$node_headers" ] || [ "$node_headers" = undefined ]; } && [ -f /usr/include/node/node.h ]; then
  node_headers=/usr
fi
if [ -n "$node_headers" ] && [ "$node_headers" != undefined ]; then export npm_config_nodedir="$node_headers"; fi
bun install --frozen-lockfile

adapter_ok() { bun packages/cli/src/main.ts doctor >/tmp/cxr-doctor.$$ 2>&1; }

install_lavapipe() {
  # Debian 12's own Mesa (22.3) lavapipe is rejected by Dawn; Mesa 25 from bookworm-backports works.
  . /etc/os-release
  export DEBIAN_FRONTEND=noninteractive
  if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/backports.list
    apt-get update -q
    apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers libvulkan1
  else
    apt-get update -q
    apt-get install -y -q mesa-vulkan-drivers libvulkan1
  fi
}

if [ "$(uname -s)" = Linux ] && ! adapter_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "No WebGPU adapter: installing Mesa's lavapipe Vulkan driver"
    install_lavapipe
  else
    cat /tmp/cxr-doctor.$$
    echo
    echo "Run as root (or with sudo) to install the driver, e.g. on Debian 12:"
    echo '  echo "deb http://deb.debian.org/debian bookworm-backports main" | sudo tee /etc/apt/sources.list.d/backports.list'
    echo "  sudo apt-get update && sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1"
    rm -f /tmp/cxr-doctor.$$
    exit 1
  fi
fi
rm -f /tmp/cxr-doctor.$$

# What the tests need beyond Bun: Debian's numpy, scikit-learn, torch and torchvision for
# /usr/bin/python3 (reference implementations the evaluation, UNet, text encoder and DenseNet are
# compared against), redis-server (the multi-machine worker test) and chromium (the web page test).
TEST_PACKAGES="python3-numpy python3-sklearn python3-torch python3-torchvision redis-server chromium"
test_tools_ok() {
  /usr/bin/python3 -c "import numpy, sklearn, torch, torchvision" >/dev/null 2>&1 &&
    [ -x /usr/bin/redis-server ] && [ -x /usr/bin/chromium ]
}
if ! test_tools_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Installing what the tests compare against and drive ($TEST_PACKAGES)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q $TEST_PACKAGES >/dev/null
  else
    echo "setup.sh: the tests need Debian's $TEST_PACKAGES; install them with"
    echo "  sudo apt-get install -y $TEST_PACKAGES"
  fi
fi

# CLIP's published vocabulary (openai/CLIP, MIT licence), so that the tokenizer test also checks
# token ids against the real 49,408-token vocabulary; without network access it is skipped.
if [ ! -f .cache/clip-vocab/vocab.json ]; then
  say "CLIP's vocabulary for the tokenizer test (cxr model clip-vocab --download)"
  bun packages/cli/src/main.ts model clip-vocab --download --out .cache/clip-vocab 2>&1 | grep -v "artificially reduced" ||
    echo "setup.sh: no CLIP vocabulary (see above); the real-vocabulary tokenizer test will be skipped"
fi

say "WebGPU adapter"
bun packages/cli/src/main.ts doctor 2>&1 | grep -v "artificially reduced"

if [ "$run_main" = 1 ]; then
  say "Main job: cxr quickstart (built-in phantom data, defaults)"
  bun packages/cli/src/main.ts quickstart
  say "Main job: cxr demo (the shipped generator through the HTTP API)"
  bun packages/cli/src/main.ts demo
fi
