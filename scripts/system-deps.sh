#!/usr/bin/env bash
# System packages the project uses when it can: libpcap (kernel BPF filters for the wire capture).
# Without root or apt everything still works (the capture falls back to a Python-side filter);
# this script then says so and exits 0.
set -u
packages=(libpcap0.8)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root or no apt-get; skipping ${missing[*]} (the harness degrades gracefully)"
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
if ! (apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || \
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1)); then
  echo "system-deps: could not install ${missing[*]}; continuing without them"
fi
exit 0
