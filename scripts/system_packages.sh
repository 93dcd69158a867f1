# Sourced by test.sh: the Debian packages the camera tests use (tests/test_camera.py): QEMU and a static busybox to
# boot a VM with the kernel's virtual V4L2 camera (from Debian's linux-image-amd64, which tests/camera_vm.py
# downloads once with apt-get download), Debian's OpenCV, built with GStreamer, for pipelines, and Debian's Chromium
# for the browser tests of the evaluation report (tests/test_report.py).
# Installs what is missing where it may (root, or password-less sudo); otherwise says what to install (the camera
# tests then skip, except under CI, where they fail).
RDEDGE_SYSTEM_PACKAGES="qemu-system-x86 busybox-static python3-opencv python3-venv gstreamer1.0-plugins-base gstreamer1.0-plugins-good chromium"
rdedge_sudo=""
[ "$(id -u)" = 0 ] || rdedge_sudo="sudo -n"
rdedge_may_install() { command -v apt-get >/dev/null 2>&1 && { [ -z "$rdedge_sudo" ] || sudo -n true 2>/dev/null; }; }
rdedge_missing=""
if command -v dpkg >/dev/null 2>&1; then
  for p in $RDEDGE_SYSTEM_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || rdedge_missing="$rdedge_missing $p"; done
fi
# shellcheck disable=SC2086
if [ -n "$rdedge_missing" ]; then
  if rdedge_may_install; then
    echo "[rdedge] installing Debian packages for the camera tests:$rdedge_missing"
    DEBIAN_FRONTEND=noninteractive $rdedge_sudo apt-get install -y -q --no-install-recommends $rdedge_missing >/dev/null \
      || { $rdedge_sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
           $rdedge_sudo apt-get install -y -q --no-install-recommends $rdedge_missing >/dev/null; } \
      || echo "[rdedge] could not install:$rdedge_missing (camera tests will say so)"
  else
    echo "[rdedge] camera tests need: apt-get install$rdedge_missing"
  fi
fi
# camera_vm.py downloads the kernel package with apt-get download: make sure apt's package lists know it.
if command -v apt-cache >/dev/null 2>&1 && ! apt-cache show linux-image-amd64 >/dev/null 2>&1 && rdedge_may_install; then
  $rdedge_sudo apt-get update -q >/dev/null || echo "[rdedge] apt-get update failed (camera tests will say so)"
fi
