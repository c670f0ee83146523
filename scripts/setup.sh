#!/usr/bin/env bash
# Installs what webm-relay needs and is missing (Debian/Ubuntu), then builds it.
# Safe to run again: it installs only what is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gst-launch-1.0 >/dev/null || need+=(gstreamer1.0-tools)
# The elements the default pipeline and the tests use, by the package that ships them.
if command -v gst-inspect-1.0 >/dev/null; then
  gst-inspect-1.0 videotestsrc >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-base)
  gst-inspect-1.0 vp8enc >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-good)
  gst-inspect-1.0 av1enc >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-bad)
else
  need+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
fi
if [ "${1:-}" = "--test" ]; then
  command -v ffmpeg >/dev/null || need+=(ffmpeg)
  command -v mkvinfo >/dev/null || need+=(mkvtoolnix)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # test/proxies: real proxies with the configs in deploy/, a certificate for their TLS, and players.
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v varnishd >/dev/null || need+=(varnish)
  command -v openssl >/dev/null || need+=(openssl)
  command -v mpv >/dev/null || need+=(mpv)
  command -v cvlc >/dev/null || need+=(vlc-bin vlc-plugin-base)
  # The player tests run in all three engines: Firefox (driven over WebDriver BiDi by
  # puppeteer-core), WebKitGTK's MiniBrowser (through WebKitWebDriver, under Xvfb).
  [ -x /usr/bin/firefox-esr ] || need+=(firefox-esr)
  command -v WebKitWebDriver >/dev/null || need+=(webkit2gtk-driver)
  [ -x /usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser ] || need+=(libwebkit2gtk-4.1-0)
  command -v Xvfb >/dev/null || need+=(xvfb)
  # test/engines/networks: network namespaces, veth and tc.
  command -v tc >/dev/null || need+=(iproute2)
  # VP8/VP9 decoding in WebKitGTK's media backend (GStreamer).
  gst-inspect-1.0 vp8dec >/dev/null 2>&1 || need+=(gstreamer1.0-plugins-good)
  # Where a hung browser's web process waits, printed by the engine tests (test/helpers/engines.ts).
  command -v gdb >/dev/null || need+=(gdb)
  # The Varnish tier's tests (test/segments) compile their VCL with cc.
  command -v cc >/dev/null || need+=(gcc libc6-dev)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
