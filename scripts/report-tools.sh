#!/usr/bin/env bash
# Tools the `hil run` report and its browser test use, installed when the machine allows it:
#   - Allure 3 (npm `allure@3`) and playwright-core (npm), into .hil/tools (never global);
#   - Debian's chromium (the browser test) and a CJK font (fonts-wqy-zenhei: the Chinese
#     receipt images), with apt when root.
# Idempotent and never fatal: whatever cannot be installed is reported and skipped (the HTML
# report, the browser test and CJK glyphs then degrade with a clear message). Fast (no network)
# when everything is present. Override the tools dir with HIL_TOOLS_DIR.
set -u
cd "$(dirname "$0")/.."
tools="${HIL_TOOLS_DIR:-.hil/tools}"
say() { echo "report-tools: $*"; }

# --- npm tools -----------------------------------------------------------------------------
npm_pkgs=()
[ -x "$tools/node_modules/.bin/allure" ] || npm_pkgs+=("allure@3")
[ -f "$tools/node_modules/playwright-core/package.json" ] || npm_pkgs+=("playwright-core@1")
if [ ${#npm_pkgs[@]} -eq 0 ]; then
  say "allure and playwright-core present in $tools"
elif ! command -v npm >/dev/null 2>&1; then
  say "no npm; skipping ${npm_pkgs[*]} (install Node.js/npm for the Allure HTML report)"
else
  say "installing ${npm_pkgs[*]} into $tools"
  mkdir -p "$tools"
  # playwright-core never downloads a browser; the test uses Debian's /usr/bin/chromium.
  if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 600 npm install --prefix "$tools" \
      --no-audit --no-fund --loglevel=error "${npm_pkgs[@]}" >"$tools/npm-install.log" 2>&1; then
    say "npm install failed (see $tools/npm-install.log); continuing without ${npm_pkgs[*]}"
  else
    say "installed ${npm_pkgs[*]}"
  fi
fi

# --- Debian packages -------------------------------------------------------------------------
apt_pkgs=(chromium fonts-wqy-zenhei)
missing=()
for pkg in "${apt_pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "${apt_pkgs[*]} present"
elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "not root or no apt-get; skipping ${missing[*]} (browser test skips, CJK falls back)"
else
  say "installing ${missing[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  if ! (apt_install >/dev/null 2>&1 || (timeout 300 apt-get update -q >/dev/null 2>&1 && \
        apt_install >/dev/null 2>&1)); then
    say "could not install ${missing[*]}; continuing without them"
  else
    say "installed ${missing[*]}"
  fi
fi
exit 0
