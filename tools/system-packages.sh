#!/usr/bin/env bash
# The Debian/Ubuntu packages moodstream needs, installed when missing (`make listen`, `make test`).
#   tools/system-packages.sh run    PortAudio (sound devices), ffmpeg (--url)
#   tools/system-packages.sh test   and what the tests use: a JACK dummy server, the ALSA jack
#                                   plugin and aplay (a paced microphone), liblo's oscdump,
#                                   Chromium (the web view in a real browser)
# Says what it installs (through sudo when not root); without apt-get, names what to install.
set -euo pipefail
need=()
have_command() { command -v "$1" >/dev/null 2>&1; }
# Not `grep -q`: it stops at the first match, ldconfig then dies of SIGPIPE, and pipefail reads
# the library as missing (17 runs of 200 with both cores busy), so a second `make` installed again.
have_library() { ldconfig -p 2>/dev/null | grep -F "$1" >/dev/null; }
have_library libportaudio.so.2 || need+=(libportaudio2)
have_command ffmpeg || need+=(ffmpeg)
if [ "${1:-run}" = test ]; then
  have_command jackd || need+=(jackd2)
  have_command aplay || need+=(alsa-utils)
  ls /usr/lib/*/alsa-lib/libasound_module_pcm_jack.so >/dev/null 2>&1 || need+=(libasound2-plugins)
  have_command oscdump || need+=(liblo-tools)
  have_command chromium || have_command chromium-browser || need+=(chromium)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! have_command apt-get; then
  echo "moodstream needs these system packages (their Debian names): ${need[*]}." >&2
  echo "Install them with your system's package manager (e.g. macOS: brew install portaudio ffmpeg), then run make again." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "moodstream: installing system packages: ${need[*]}" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
